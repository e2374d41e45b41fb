/* The GRU variants' pointwise steps (rnnkit/kernels/cpu/gru.py), for one
 * element type (included twice by steps.c, like lstm_step.h). Rows in parallel.
 * h = the previous state (B, H), A the gate activations, xp the input projection
 * with both biases folded in; a padded row (mask 0) keeps its state.
 *
 * Reset-before (gates r, z, n; two GEMMs per step, so two calls each way):
 *   gates:  r = s(xp_r + (W_r h)), z = s(xp_z + (W_z h)), RH = r h
 *   state:  n = tanh(xp_n + (W_n RH)), h' = (1 - z) n + z h
 *   backward, dh = grad wrt h' (+ dy):
 *   gates:  dA_z = dh (h - n) z (1 - z), dA_n = dh (1 - z)(1 - n^2), P = dh z
 *   reset:  (given dRH = dA_n W_n) dA_r = dRH h r (1 - r), P += dRH r
 *   then dh_prev = P + [dA_r, dA_z] W_rz (GEMM). Padded rows: dA = 0, P = dh.
 *
 * Simplified (gates u, n): u = s(xp_u + (W_u h)), n = tanh(xp_n + (W_n h)),
 *   h' = u n + (1 - u) h; backward dA_u = dh (n - h) u (1 - u), dA_n = dh u (1 - n^2),
 *   P = dh (1 - u), dh_prev = P + dA W_hh.
 *
 * Recurrent dropout (drop, B x H): the products with W_hh see h * drop (RH = r h drop),
 * the update mixes h itself; so dh_prev = P + drop (dA W), with reset-before's dRH r
 * (Q) inside the dropped part. Zoneout of h (mode zh: 1 a byte keep mask per step,
 * 2 the rate): h_t = zone(h', h); its gradient splits into the part into h' and the
 * kept part, which joins P.
 */

/* A padded row of a backward step: no gate saw it (dA = 0), dh passes through (P). */
static inline void NAME(gru_pass_through)(long H, long gates, const real* g, const real* dy, real* P,
                                          real* dA) {
    for (long j = 0; j < H; j++) P[j] = g[j] + dy[j];
    for (long j = 0; j < gates * H; j++) dA[j] = 0;
}

static void NAME(gru_rb_forward_gates)(long B, long H, long threads, const real* xp, const real* rec,
                                const real* h, real* A, real* RH) {
    PARALLEL_ROWS(threads)
    for (long b = 0; b < B; b++) {
        const real *x = xp + b * 3 * H, *r = rec + b * 2 * H, *hb = h + b * H;
        real *a = A + b * 3 * H, *rh = RH + b * H;
        SIMD
        for (long j = 0; j < H; j++) {
            real rg = NAME(sigm)(x[j] + r[j]), zg = NAME(sigm)(x[H + j] + r[H + j]);
            a[j] = rg; a[H + j] = zg; rh[j] = rg * hb[j];
        }
    }
}

static void NAME(gru_rb_forward_state)(long B, long H, long threads, const real* xp, const real* nrec,
                                const real* h, const unsigned char* mask, real* A, real* Y) {
    PARALLEL_ROWS(threads)
    for (long b = 0; b < B; b++) {
        const real *x = xp + b * 3 * H + 2 * H, *r = nrec + b * H, *hb = h + b * H;
        real *a = A + b * 3 * H, *y = Y + b * H;
        if (mask && !mask[b]) {
            for (long j = 0; j < H; j++) { a[2 * H + j] = 0; y[j] = hb[j]; }
            continue;
        }
        SIMD
        for (long j = 0; j < H; j++) {
            real n = NAME(tanh)(x[j] + r[j]), z = a[H + j];
            a[2 * H + j] = n; y[j] = (1 - z) * n + z * hb[j];
        }
    }
}

/* The update gate's backward, both variants in one: reset-before's z keeps the old
 * state (h' = z h + (1 - z) n), the simplified GRU's u takes the new one (h' = u n +
 * (1 - u) h). Fills the gate's and the candidate's slots of dA (at q_at, n_at in each
 * row of G values) and P = dh k, the part of dh_{t-1} that bypasses W_hh (k: the kept
 * fraction). `keeps` is a constant at each call (INLINE), so the loop has no branch. */
static INLINE void NAME(gru_update_backward_rows)(long B, long H, long threads, const int keeps, long G,
                                                  long q_at, long n_at, const real* g, const real* dy,
                                                  const real* A, const real* h,
                                                  const unsigned char* mask, real* dA, real* P,
                                                  long zh, const unsigned char* kh, real zh_rate) {
    PARALLEL_ROWS(threads)
    for (long b = 0; b < B; b++) {
        const real *gb = g + b * H, *dyb = dy + b * H, *a = A + b * G, *hb = h + b * H;
        real *da = dA + b * G, *p = P + b * H;
        if (mask && !mask[b]) {
            NAME(gru_pass_through)(H, G / H, gb, dyb, p, da);
            continue;
        }
        SIMD
        for (long j = 0; j < H; j++) {
            real d = gb[j] + dyb[j], q = a[q_at + j], n = a[n_at + j], zoned = 0;
            if (zh) {  /* zoneout: the kept share bypasses the cell */
                real k = zh == 1 ? (real)kh[b * H + j] : zh_rate;
                zoned = NAME(zone_kept)(d, k, zh);
                d = NAME(zone_update)(d, k, zh);
            }
            real kept = keeps ? q : 1 - q, taken = keeps ? 1 - q : q;
            da[q_at + j] = keeps ? d * (hb[j] - n) * q * (1 - q) : d * (n - hb[j]) * q * (1 - q);
            da[n_at + j] = d * taken * (1 - n * n);
            p[j] = d * kept + zoned;
        }
    }
}

static void NAME(gru_rb_backward_gates)(long B, long H, long threads, const real* g, const real* dy,
                                        const real* A, const real* h, const unsigned char* mask,
                                        real* dA, real* P, long zh, const unsigned char* kh, real zh_rate) {
    NAME(gru_update_backward_rows)(B, H, threads, 1, 3 * H, H, 2 * H, g, dy, A, h, mask, dA, P, zh, kh, zh_rate);
}

/* h: the state as W_hh saw it (h drop with recurrent dropout); P: where dRH r goes
 * (added; Q with recurrent dropout, zeroed first, else P itself) */
static void NAME(gru_rb_backward_reset)(long B, long H, long threads, const real* drh, const real* A,
                                 const real* h, const unsigned char* mask, real* dA, real* P, int fresh) {
    PARALLEL_ROWS(threads)
    for (long b = 0; b < B; b++) {
        real* p = P + b * H;
        if (fresh)
            for (long j = 0; j < H; j++) p[j] = 0;
        if (mask && !mask[b]) continue;  /* dA_r stays 0, P = dh */
        const real *d = drh + b * H, *a = A + b * 3 * H, *hb = h + b * H;
        real* da = dA + b * 3 * H;
        SIMD
        for (long j = 0; j < H; j++) {
            real r = a[j];
            da[j] = d[j] * hb[j] * r * (1 - r);
            p[j] += d[j] * r;
        }
    }
}

/* y = zone(y, h) per unit (zoneout of the new state), real rows only */
static void NAME(gru_zone_forward)(long B, long H, const real* h, const unsigned char* mask, long zh,
                                   const unsigned char* kh, real zh_rate, real* Y) {
    for (long b = 0; b < B; b++) {
        if (mask && !mask[b]) continue;
        for (long j = 0; j < H; j++)
            Y[b * H + j] = NAME(zone)(Y[b * H + j], h[b * H + j], zh == 1 ? (real)kh[b * H + j] : zh_rate, zh);
    }
}

static void NAME(gru_s_forward)(long B, long H, long threads, const real* xp, const real* rec,
                         const real* h, const unsigned char* mask, real* A, real* Y) {
    PARALLEL_ROWS(threads)
    for (long b = 0; b < B; b++) {
        const real *x = xp + b * 2 * H, *r = rec + b * 2 * H, *hb = h + b * H;
        real *a = A + b * 2 * H, *y = Y + b * H;
        SIMD
        for (long j = 0; j < H; j++) {
            real u = NAME(sigm)(x[j] + r[j]), n = NAME(tanh)(x[H + j] + r[H + j]);
            a[j] = u; a[H + j] = n; y[j] = u * n + (1 - u) * hb[j];
        }
        if (mask && !mask[b])
            for (long j = 0; j < H; j++) y[j] = hb[j];
    }
}

static void NAME(gru_s_backward)(long B, long H, long threads, const real* g, const real* dy,
                                 const real* A, const real* h, const unsigned char* mask, real* dA,
                                 real* P, long zh, const unsigned char* kh, real zh_rate) {
    NAME(gru_update_backward_rows)(B, H, threads, 0, 2 * H, 0, H, g, dy, A, h, mask, dA, P, zh, kh, zh_rate);
}

/* The forward over a whole sequence in one call (like lstm_sequence, rows b0 .. b0 + nb
 * of B, and ROWS): flags' RESET_BEFORE for the reset-before GRU (P_a = packed W_rz, P_b =
 * packed W_n), else the simplified one (P_a = packed W_hh). Y (T, B, H) gets the states; with `store`
 * A (T, B, G*H) and RH (T, B, H; reset-before) keep every step for the backward,
 * without they hold one step. rec: (B, 2H) scratch. vendor: as lstm_sequence's (with
 * it the P_ are the plain weight blocks). */
void NAME(gru_sequence)(long T, long B, long b0, long nb, long H, long flags, long threads, long pw_threads,
                        long reverse, long store, const void* vendor, const real* xp, const real* P_a, const real* P_b,
                        const real* h0, const unsigned char* mask, real* Y, real* A, real* RH,
                        real* rec, const real* drop, real* hd, long zh, const unsigned char* kh,
                        real zh_rate) {
    if (flags & ROWS) {
        ROW_BLOCKS(threads, NAME(gru_sequence)(T, B, block_b0, block_nb, H, flags & ~ROWS, 1, 1, reverse, store,
                   vendor, xp, P_a, P_b, h0, mask, Y, A, RH, rec, drop, hd, zh, kh, zh_rate));
        return;
    }
    const int reset_before = flags & RESET_BEFORE;
    const long GH = (reset_before ? 3 : 2) * H;
    /* rows b0 .. b0 + nb of B (the caller: 0, B; see lstm_step.h's ROW_BLOCKS); rec: the
     * block's own 2H rows, which the second (B, H) product reuses */
    xp += b0 * GH, h0 += b0 * H, Y += b0 * H, A += b0 * GH, rec += b0 * 2 * H;
    if (mask) mask += b0;
    if (RH) RH += b0 * H;
    if (drop) drop += b0 * H, hd += b0 * H;
    if (kh) kh += b0 * H;
    for (long s = 0; s < T; s++) {
        long t = reverse ? T - 1 - s : s, prev = reverse ? t + 1 : t - 1, k = store ? t : 0;
        const real *h = s ? Y + prev * B * H : h0, *x = xp + t * B * GH;
        const unsigned char* m = mask ? mask + t * B : 0;
        real *a = A + k * B * GH, *y = Y + t * B * H;
        const real* h_in = h;
        if (drop) {  /* recurrent dropout: the products with W_hh see h * drop */
            for (long i = 0; i < nb * H; i++) hd[i] = h[i] * drop[i];
            h_in = hd;
        }
        NAME(gemm_any)(vendor, nb, 2 * H, H, H, threads, h_in, P_a, 0, rec);
        if (reset_before) {
            real* rh = RH + k * B * H;
            NAME(gru_rb_forward_gates)(nb, H, pw_threads, x, rec, h_in, a, rh);
            NAME(gemm_any)(vendor, nb, H, H, H, threads, rh, P_b, 0, rec);
            NAME(gru_rb_forward_state)(nb, H, pw_threads, x, rec, h, m, a, y);
        } else {
            NAME(gru_s_forward)(nb, H, pw_threads, x, rec, h, m, a, y);
        }
        if (zh)
            NAME(gru_zone_forward)(nb, H, h, m, zh, kh + t * B * H * (zh == 1), zh_rate, y);
    }
}

/* BPTT through a whole sequence in one call (after gru_sequence with store): P_aT packs
 * W_rz^T (H, 2H) (simplified: W_hh^T), P_bT packs W_n^T (H, H). Fills dA (T, B, G*H);
 * grad (B, H) goes from dh_T to the gradient wrt h0 in place. P, drh: (B, H) scratch. */
void NAME(gru_backward_sequence)(long T, long B, long b0, long nb, long H, long flags, long threads,
                                 long pw_threads, long reverse, const void* vendor, const real* P_aT, const real* P_bT,
                                 const real* dy, const unsigned char* mask, const real* h0,
                                 const real* A, const real* Y, real* dA, real* grad, real* P,
                                 real* drh, const real* drop, real* hd, real* Q, long zh,
                                 const unsigned char* kh, real zh_rate) {
    if (flags & ROWS) {
        ROW_BLOCKS(threads, NAME(gru_backward_sequence)(T, B, block_b0, block_nb, H, flags & ~ROWS, 1, 1, reverse,
                   vendor, P_aT, P_bT, dy, mask, h0, A, Y, dA, grad, P, drh, drop, hd, Q, zh, kh, zh_rate));
        return;
    }
    const int reset_before = flags & RESET_BEFORE;
    const long GH = (reset_before ? 3 : 2) * H;
    /* rows b0 .. b0 + nb, as gru_sequence's */
    dy += b0 * H, h0 += b0 * H, A += b0 * GH, Y += b0 * H, dA += b0 * GH, grad += b0 * H, P += b0 * H;
    drh += b0 * H, Q += b0 * H;
    if (mask) mask += b0;
    if (drop) drop += b0 * H, hd += b0 * H;
    if (kh) kh += b0 * H;
    for (long s = T - 1; s >= 0; s--) {
        long t = reverse ? T - 1 - s : s, prev = reverse ? t + 1 : t - 1;
        const real *h = s ? Y + prev * B * H : h0, *a = A + t * B * GH, *d = dy + t * B * H;
        const unsigned char* m = mask ? mask + t * B : 0;
        real* da = dA + t * B * GH;
        const unsigned char* k = zh == 1 ? kh + t * B * H : 0;
        const real* h_in = h;
        if (drop) {
            for (long i = 0; i < nb * H; i++) hd[i] = h[i] * drop[i];
            h_in = hd;
        }
        if (reset_before) {
            NAME(gru_rb_backward_gates)(nb, H, pw_threads, grad, d, a, h, m, da, P, zh, k, zh_rate);
            NAME(gemm_any)(vendor, nb, H, H, GH, threads, da + 2 * H, P_bT, 0, drh);  /* dRH = dA_n W_n */
            NAME(gru_rb_backward_reset)(nb, H, pw_threads, drh, a, h_in, m, da, drop ? Q : P, drop != 0);
        } else {
            NAME(gru_s_backward)(nb, H, pw_threads, grad, d, a, h, m, da, P, zh, k, zh_rate);
        }
        if (!drop) {
            NAME(gemm_any)(vendor, nb, H, 2 * H, GH, threads, da, P_aT, P, grad);  /* P + dA_rz W_rz */
        } else {  /* P + drop (Q + dA_rz W_rz): only the products with W_hh saw the mask */
            NAME(gemm_any)(vendor, nb, H, 2 * H, GH, threads, da, P_aT, reset_before ? Q : 0, grad);
            for (long i = 0; i < nb * H; i++) grad[i] = P[i] + drop[i] * grad[i];
        }
    }
}

