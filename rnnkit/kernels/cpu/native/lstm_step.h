/* The LSTM's time loops: one step's pointwise work forward and backward (rows on
 * OpenMP threads), and the whole-sequence loops that alternate it with the recurrent
 * GEMM of gemm.h (lstm_sequence, lstm_backward_sequence, at the end).
 *
 * Included twice by steps.c, with `real` = float / double and NAME(x) adding the
 * suffix _f32 / _f64.
 *
 * Layouts, row-major and contiguous: gates (B, 4H) in the order i, f, g, o; cell
 * and hidden vectors (B, H); per-row statistics of the layer norms (B). A NULL
 * pointer means "absent" (no mask, no dy, no carry, ...).
 *
 * Forward (see rnnkit/cells/lstm.py for the equations):
 *   a   = xp + beta_x + rec           or gamma_x LN(xp) + beta_x + gamma_h LN(rec)    (LN)
 *        xp the raw input projection W_ih x_t, beta_x the shift b_ih + b_hh (the input norm's
 *        with LN, which runs here too)
 *   i   = s(a_i + w_ci c_prev)   f = s(a_f + w_cf c_prev)   g = tanh(a_g)
 *   c   = f c_prev + i g
 *   o   = s(a_o + w_co c)        u = tanh(c)  or tanh(gamma_c LN(c) + beta_c)
 *   m   = o u
 * A keeps (i, f, g, o), C keeps c, U keeps u, M gets m. A padded row (mask 0)
 * keeps the previous state: C = c_prev and, with CARRY_H, M = h_prev.
 *
 * Backward, given dm (the gradient wrt m) and dc (wrt c, from the later step):
 *   da_o = dm u o (1 - o)             dchat = dm o (1 - u^2)
 *   dc'  = dc + LN_c^T(dchat) + da_o w_co      (LN_c^T = identity without LN)
 *   da_i = dc' g i (1 - i)   da_f = dc' c_prev f (1 - f)   da_g = dc' i (1 - g^2)
 *   dc_prev = dc' f + da_i w_ci + da_f w_cf
 * and with LN, dHP = LN_h^T(dA) (the gradient wrt rec), then dA = LN_x^T(dA) in place
 * (the gradient wrt the raw xp). Padded rows pass dc through and get dA = 0.
 */

/* Clamped so exp never overflows (the results differ from the exact ones by less
 * than 1e-17 there); a NaN fails both tests and goes through as NaN. tanh: see steps.c. */
static inline real NAME(clamp)(real x) { return x < -40 ? -40 : (x > 40 ? 40 : x); }
static inline real NAME(sigm)(real x) { return 1 / (1 + EXPF(-NAME(clamp)(x))); }
static inline real NAME(tanh)(real x) { return TANHF(x); }

/* sig, th (n) = the loops' sigmoid and tanh of x (n): exported for the accuracy tests */
void NAME(activations)(long n, const real* x, real* sig, real* th) {
    for (long j = 0; j < n; j++) {
        sig[j] = NAME(sigm)(x[j]);
        th[j] = NAME(tanh)(x[j]);
    }
}

/* Zoneout (Krueger et al. 2017) of one unit: mode 1 (training) keeps `old` where the
 * mask k is 1 (a select: exact); mode 2 (evaluation) is torch.lerp(new, old, k), k the
 * rate. zone_kept / zone_update split a zoned state's gradient into the part that goes
 * straight to the previous state and the part that goes into the step's new value. */
static inline real NAME(zone)(real new_, real old, real k, long mode) {
    if (mode == 1) return k != 0 ? old : new_;
    return k < (real)0.5 ? new_ + k * (old - new_) : old - (old - new_) * (1 - k);
}
static inline real NAME(zone_kept)(real d, real k, long mode) { return mode == 1 ? (k != 0 ? d : 0) : k * d; }
static inline real NAME(zone_update)(real d, real k, long mode) { return mode == 1 ? (k != 0 ? 0 : d) : (1 - k) * d; }

/* Software prefetch of the rows a loop will read AHEAD rows on (or, across steps, the
 * first AHEAD rows of the next step, while the GEMM runs): a (T, B, 4H) row is 2 KB at
 * H128 and the hardware prefetcher stops at each 4 KB page, so the layer-norm loops
 * waited on memory at the start of rows (perf: most of the backward's samples on the
 * first loads of x and W_hh h). B32 T100 H128 forward+backward, each call right after
 * torch.nn.LSTM's, in one process against the same loops without: layer norm -1.6 to
 * -2.0%, peephole 0 to -1% (2-core AVX-512 Xeon). */
#define AHEAD 2
static inline void NAME(prefetch)(const real* p, long n, int write) {
    if (!p) return;
    for (long j = 0; j < n; j += 64 / (long)sizeof(real))
        if (write) __builtin_prefetch(p + j, 1, 2);
        else __builtin_prefetch(p + j, 0, 2);
}

/* mean and 1 / sqrt(var + eps) of x (n), biased variance as torch's layer_norm */
static void NAME(moments)(const real* x, long n, real eps, real* mean, real* rstd) {
    real s = 0, v = 0;
    SIMD_SUM(s)
    for (long j = 0; j < n; j++) s += x[j];
    real mu = s / n;
    SIMD_SUM(v)
    for (long j = 0; j < n; j++) { real d = x[j] - mu; v += d * d; }
    *mean = mu;
    *rstd = 1 / SQRTF(v / n + eps);
}

/* moments of two rows x and r of n (even) values at once: four sums running side by
 * side (each row's two halves) instead of one after another, each adding onto the
 * last (the add's latency, not the loads, bounds a single sum). */
static void NAME(moments2)(const real* x, const real* r, long n, real eps, real* mean_x, real* rstd_x,
                           real* mean_r, real* rstd_r) {
    const long h = n / 2;
    real sx0 = 0, sx1 = 0, sr0 = 0, sr1 = 0;
    SIMD_SUM(sx0, sx1, sr0, sr1)
    for (long j = 0; j < h; j++) { sx0 += x[j]; sx1 += x[h + j]; sr0 += r[j]; sr1 += r[h + j]; }
    real mx = (sx0 + sx1) / n, mr = (sr0 + sr1) / n;
    real vx0 = 0, vx1 = 0, vr0 = 0, vr1 = 0;
    SIMD_SUM(vx0, vx1, vr0, vr1)
    for (long j = 0; j < h; j++) {
        real a = x[j] - mx, b = x[h + j] - mx, c = r[j] - mr, d = r[h + j] - mr;
        vx0 += a * a; vx1 += b * b; vr0 += c * c; vr1 += d * d;
    }
    *mean_x = mx;
    *rstd_x = 1 / SQRTF((vx0 + vx1) / n + eps);
    *mean_r = mr;
    *rstd_r = 1 / SQRTF((vr0 + vr1) / n + eps);
}

/* dx of y = gamma * xhat (+ beta), xhat = (x - mean) rstd, given dy; accumulates
 * d_gamma += dy xhat (and d_beta += dy when given). work: n scratch values. */
static void NAME(norm_backward)(const real* dy, const real* x, long n, real mean, real rstd,
                                const real* gamma, real* d_gamma, real* d_beta, real* work,
                                real* dx) {
    real s1 = 0, s2 = 0;
    SIMD_SUM(s1, s2)
    for (long j = 0; j < n; j++) {
        real xhat = (x[j] - mean) * rstd, dxhat = dy[j] * gamma[j];
        d_gamma[j] += dy[j] * xhat;
        work[j] = dxhat;
        s1 += dxhat;
        s2 += dxhat * xhat;
    }
    if (d_beta)
        for (long j = 0; j < n; j++) d_beta[j] += dy[j];
    s1 /= n;
    s2 /= n;
    SIMD
    for (long j = 0; j < n; j++) dx[j] = rstd * (work[j] - s1 - (x[j] - mean) * rstd * s2);
}

/* Both 4H norms of a layer-norm row at once, given da (the gradient wrt a = gamma_x
 * LN(x) + beta_x + gamma_h LN(r)): dr gets the gradient wrt r and dx the one wrt x
 * (each may be da, r or x itself: element j is read before it is written);
 * d_gamma_x, d_beta_x, d_gamma_h accumulate. One pass for the four sums and the
 * parameter gradients, one for the two outputs (norm_backward twice took five, and
 * read da twice). */
static void NAME(norm2_backward)(const real* da, const real* x, const real* r, long n, real mean_x, real rstd_x,
                                 real mean_r, real rstd_r, const real* gamma_x, const real* gamma_r,
                                 real* d_gamma_x, real* d_beta_x, real* d_gamma_r, real* dr, real* dx) {
    real s1x = 0, s2x = 0, s1r = 0, s2r = 0;
    SIMD_SUM(s1x, s2x, s1r, s2r)
    for (long j = 0; j < n; j++) {
        real d = da[j], xhat = (x[j] - mean_x) * rstd_x, rhat = (r[j] - mean_r) * rstd_r;
        real gx = d * gamma_x[j], gr = d * gamma_r[j];
        d_gamma_x[j] += d * xhat;
        d_beta_x[j] += d;
        d_gamma_r[j] += d * rhat;
        s1x += gx; s2x += gx * xhat;
        s1r += gr; s2r += gr * rhat;
    }
    s1x /= n; s2x /= n; s1r /= n; s2r /= n;
    SIMD
    for (long j = 0; j < n; j++) {
        real d = da[j], xhat = (x[j] - mean_x) * rstd_x, rhat = (r[j] - mean_r) * rstd_r;
        dr[j] = rstd_r * (d * gamma_r[j] - s1r - rhat * s2r);
        dx[j] = rstd_x * (d * gamma_x[j] - s1x - xhat * s2x);
    }
}

/* a = gamma_x LN(x) + beta_x + gamma_h LN(r) over one row of G, given both norms'
 * statistics (the forward's, and the backward's recomputation of the gates) */
static INLINE void NAME(ln_preact)(long G, const real* x, const real* gamma_x, const real* beta_x, real mean_x,
                                   real rstd_x, const real* r, const real* gamma_h, real mean_h, real rstd_h,
                                   real* a) {
    SIMD
    for (long j = 0; j < G; j++)
        a[j] = gamma_x[j] * ((x[j] - mean_x) * rstd_x) + beta_x[j] + gamma_h[j] * ((r[j] - mean_h) * rstd_h);
}

/* One row of the forward; peep and ln are compile-time constants at every call
 * site (INLINE), so each flag combination gets its own loops: a runtime test inside
 * a SIMD loop becomes masked loads of the absent (NULL) weights, which AMD CPUs
 * execute ~4x slower (measured). */
static INLINE void NAME(forward_row)(long H, const int peep, const int ln, real eps,
                                     const real* x, const real* gamma_x, const real* beta_x,
                                     real* mean_x, real* rstd_x, const real* r, const real* gamma_h,
                                     real* mean_h, real* rstd_h, const real* cp,
                                     const real* w_ci, const real* w_cf, const real* w_co,
                                     const real* gamma_c, const real* beta_c, real* mean_c, real* rstd_c,
                                     real* a, real* c, real* u, real* m) {
    const long G = 4 * H;
    if (ln) {  /* a = LN_x(x) + LN_h(r): x the raw input projection W_ih x_t, r = W_hh h */
        real mu, rs, mu_x, rs_x;
        NAME(moments2)(x, r, G, eps, &mu_x, &rs_x, &mu, &rs);
        *mean_x = mu_x;
        *rstd_x = rs_x;
        *mean_h = mu;
        *rstd_h = rs;
        NAME(ln_preact)(G, x, gamma_x, beta_x, mu_x, rs_x, r, gamma_h, mu, rs, a);
    } else {  /* beta_x: the summed biases b_ih + b_hh (zeros without), added here, not in the GEMM */
        SIMD
        for (long j = 0; j < G; j++) a[j] = x[j] + beta_x[j] + r[j];
    }
    SIMD
    for (long j = 0; j < H; j++) {
        real ai = a[j], af = a[H + j];
        if (peep) { ai += w_ci[j] * cp[j]; af += w_cf[j] * cp[j]; }
        real i = NAME(sigm)(ai), f = NAME(sigm)(af), g = NAME(tanh)(a[2 * H + j]);
        a[j] = i; a[H + j] = f; a[2 * H + j] = g;
        c[j] = f * cp[j] + i * g;
    }
    real mu = 0, rs = 1;
    if (ln) {
        NAME(moments)(c, H, eps, &mu, &rs);
        *mean_c = mu;
        *rstd_c = rs;
    }
    SIMD
    for (long j = 0; j < H; j++) {
        real ao = a[3 * H + j];
        if (peep) ao += w_co[j] * c[j];
        real chat = c[j];
        if (ln) chat = gamma_c[j] * ((c[j] - mu) * rs) + beta_c[j];
        real o = NAME(sigm)(ao), t = NAME(tanh)(chat);
        a[3 * H + j] = o; u[j] = t; m[j] = o * t;
    }
}

#define FORWARD_ROW(PEEP, LN) NAME(forward_row)(H, PEEP, LN, eps, xp + b * G, gamma_x, beta_x, \
    ln ? mean_x + b : 0, ln ? rstd_x + b : 0, rec + b * G, gamma_h, \
    ln ? mean_h + b : 0, ln ? rstd_h + b : 0, c_prev + b * H, w_ci, w_cf, w_co, gamma_c, beta_c, \
    ln ? mean_c + b : 0, ln ? rstd_c + b : 0, A + b * G, C + b * H, U + b * H, M + b * H)

static void NAME(lstm_forward)(long B, long H, long flags, long threads, real eps,
                        const real* xp, const real* gamma_x, const real* beta_x, real* mean_x, real* rstd_x,
                        const real* rec, const real* gamma_h, real* mean_h, real* rstd_h,
                        const real* c_prev, const real* w_ci, const real* w_cf, const real* w_co,
                        const real* gamma_c, const real* beta_c, real* mean_c, real* rstd_c,
                        const unsigned char* mask, const real* h_prev,
                        real* A, real* C, real* U, real* M,
                        long zh, long zc, const unsigned char* kh, const unsigned char* kc,
                        real zh_rate, real zc_rate, real* CN) {
    const long G = 4 * H;
    const int peep = flags & PEEPHOLE, ln = flags & LAYER_NORM;
    PARALLEL_ROWS(threads)
    for (long b = 0; b < B; b++) {
        if (b + AHEAD < B) NAME(prefetch)(xp + (b + AHEAD) * G, G, 0);
        if (peep && ln) FORWARD_ROW(1, 1);
        else if (peep) FORWARD_ROW(1, 0);
        else if (ln) FORWARD_ROW(0, 1);
        else FORWARD_ROW(0, 0);
        if (zc) {  /* zoneout of c: the backward needs the cell's own c' (kept in CN) */
            real *c = C + b * H, *cn = CN + b * H;
            const real* cp = c_prev + b * H;
            for (long j = 0; j < H; j++) {
                cn[j] = c[j];
                c[j] = NAME(zone)(c[j], cp[j], zc == 1 ? (real)kc[b * H + j] : zc_rate, zc);
            }
        }
        if (zh) {
            real* m = M + b * H;
            const real* hp = h_prev + b * H;
            for (long j = 0; j < H; j++) m[j] = NAME(zone)(m[j], hp[j], zh == 1 ? (real)kh[b * H + j] : zh_rate, zh);
        }
        if (mask && !mask[b]) {  /* padded: the state passes through */
            for (long j = 0; j < H; j++) C[b * H + j] = c_prev[b * H + j];
            if (flags & CARRY_H)
                for (long j = 0; j < H; j++) M[b * H + j] = h_prev[b * H + j];
        }
    }
}
#undef FORWARD_ROW

/* A layer-norm row's gates a = (i, f, g, o) and u = tanh(LN_c(c)) again, as forward_row
 * made them, from what the backward reads anyway: the raw rows x (W_ih x_t) and r
 * (W_hh h), c_prev, c and the norms' statistics. With RECOMPUTE the forward keeps
 * neither A nor U for every step: two fewer (T, B, 4H) and (T, B, H) streams written
 * forward and read back, for five activations per unit recomputed. */
static INLINE void NAME(recompute_row)(long H, const int peep, const real* x, const real* gamma_x,
                                       const real* beta_x, real mean_x, real rstd_x, const real* r,
                                       const real* gamma_h, real mean_h, real rstd_h, const real* cp,
                                       const real* c, const real* w_ci, const real* w_cf, const real* w_co,
                                       const real* gamma_c, const real* beta_c, real mean_c, real rstd_c,
                                       real* a, real* u) {
    NAME(ln_preact)(4 * H, x, gamma_x, beta_x, mean_x, rstd_x, r, gamma_h, mean_h, rstd_h, a);
    SIMD
    for (long j = 0; j < H; j++) {
        real ai = a[j], af = a[H + j], ao = a[3 * H + j];
        if (peep) { ai += w_ci[j] * cp[j]; af += w_cf[j] * cp[j]; ao += w_co[j] * c[j]; }
        a[j] = NAME(sigm)(ai); a[H + j] = NAME(sigm)(af); a[2 * H + j] = NAME(tanh)(a[2 * H + j]);
        a[3 * H + j] = NAME(sigm)(ao);
        u[j] = NAME(tanh)(gamma_c[j] * ((c[j] - mean_c) * rstd_c) + beta_c[j]);
    }
}

/* One unpadded row of the backward (constant peep/ln at each call: see forward_row).
 * dm: the gradient wrt m (consumed; may be dchat's storage); dc: in place. */
static INLINE void NAME(backward_row)(long H, const int peep, const int ln, const real* dm,
                                      const real* a, const real* c, const real* cp, const real* u,
                                      const real* w_ci, const real* w_cf, const real* w_co,
                                      const real* gamma_c, real mean_c, real rstd_c,
                                      real* d_gamma_c, real* d_beta_c, real* d_peep, real* dc, real* da,
                                      real* work) {
    real *dchat = work, *dcn = work + H, *scratch = work + 2 * H;
    SIMD
    for (long j = 0; j < H; j++) {
        real o = a[3 * H + j];
        real dao = dm[j] * u[j] * o * (1 - o);
        da[3 * H + j] = dao;
        dcn[j] = dm[j] * o * (1 - u[j] * u[j]);
        if (peep) d_peep[2 * H + j] += dao * c[j];  /* w_co saw this step's own c */
    }
    if (ln) {
        for (long j = 0; j < H; j++) dchat[j] = dcn[j];
        NAME(norm_backward)(dchat, c, H, mean_c, rstd_c, gamma_c, d_gamma_c, d_beta_c, scratch, dcn);
    }
    SIMD
    for (long j = 0; j < H; j++) {
        real i = a[j], f = a[H + j], g = a[2 * H + j];
        real d = dcn[j] + dc[j];
        if (peep) d += da[3 * H + j] * w_co[j];
        real dai = d * g * i * (1 - i), daf = d * cp[j] * f * (1 - f);
        da[j] = dai;
        da[H + j] = daf;
        if (peep) {  /* w_ci, w_cf saw the previous c */
            d_peep[j] += dai * cp[j];
            d_peep[H + j] += daf * cp[j];
        }
        da[2 * H + j] = d * i * (1 - g * g);
        real dcp = d * f;
        if (peep) dcp += dai * w_ci[j] + daf * w_cf[j];
        dc[j] = dcp;
    }
}

#define BACKWARD_ROW(PEEP, LN) NAME(backward_row)(H, PEEP, LN, dm, a, C + b * H, \
    c_prev + b * H, u, w_ci, w_cf, w_co, gamma_c, ln ? mean_c[b] : 0, ln ? rstd_c[b] : 1, \
    ln ? acc + G : 0, ln ? acc + 2 * G : 0, PEEP ? acc + G + H : 0, dc + b * H, d_gates, work)
#define RECOMPUTE_ROW(PEEP) NAME(recompute_row)(H, PEEP, xp + b * G, gamma_x, beta_x, mean_x[b], rstd_x[b], \
    rec + b * G, gamma_h, mean_h[b], rstd_h[b], c_prev + b * H, C + b * H, w_ci, w_cf, w_co, gamma_c, beta_c, \
    mean_c[b], rstd_c[b], gates, u_row)

/* Per thread k (of `threads`): work + k WORK(H) scratch values and the parameter
 * gradients summed over rows and steps in sums + k * SUMS_ROWS * 4H: [d gamma_h (4H) |
 * d gamma_c, d w_ci, d w_cf, d w_co (H each) | d beta_c (H of 4H) | d gamma_x (4H) |
 * d beta_x (4H): the shift's, with or without LN] (layer norm: the gammas; peepholes: the w's), added to (the
 * caller sums over threads: a fixed order, so deterministic). Summed here, in the loop,
 * rather than after it from dA and C: that would read both (T, B, 4H) and (T, B, H)
 * again. With layer norm, xp is the raw input projection (T, B, 4H) the forward
 * normalised (mean_x, rstd_x its statistics) and dA comes out wrt it. With RECOMPUTE
 * (layer norm only) A and U hold one step, unread: each row's gates and u are recomputed
 * (recompute_row, with the shifts beta_x and beta_c), and dA may be xp itself. */
#define SUMS_ROWS 5
#define WORK(H) (4 * (H) + 3 * 4 * (H))
static void NAME(lstm_backward)(long B, long H, long flags, long threads,
                         const real* g_in, const real* dy, const real* carry, const unsigned char* carry_mask,
                         real* dm_out,
                         const real* A, const real* C, const real* c_prev, const real* U,
                         const real* w_ci, const real* w_cf, const real* w_co,
                         const real* gamma_c, const real* mean_c, const real* rstd_c,
                         const real* rec, const real* gamma_h, const real* mean_h, const real* rstd_h,
                         real* dHP, real* sums, const real* xp, const real* gamma_x, const real* beta_x,
                         const real* mean_x, const real* rstd_x, const real* beta_c,
                         const unsigned char* mask, real* dc, real* dA, real* scratch,
                         long zh, long zc, const unsigned char* kh, const unsigned char* kc,
                         real zh_rate, real zc_rate, real* hk) {
    const long G = 4 * H;
    const int peep = flags & PEEPHOLE, ln = flags & LAYER_NORM, recompute = flags & RECOMPUTE;
    PARALLEL_ROWS(threads)
    for (long b = 0; b < B; b++) {
        /* work: backward_row's 2H + G | dc_kept H | recomputed gates G, u H | their gradient G */
        real* work = scratch + THREAD_ID * WORK(H);
        real* dc_kept = work + 2 * H + G;
        real* acc = sums ? sums + THREAD_ID * SUMS_ROWS * G : 0;
        /* dm = g_in + dy (+ the later padded step's dm): separate loops, no tests inside */
        real* dm = dm_out ? dm_out + b * H : work;
        for (long j = 0; j < H; j++) dm[j] = g_in[b * H + j];
        if (dy)
            for (long j = 0; j < H; j++) dm[j] += dy[b * H + j];
        if (carry && !carry_mask[b])
            for (long j = 0; j < H; j++) dm[j] += carry[b * H + j];
        real* da = dA + b * G;
        if (mask && !mask[b]) {  /* padded: no gate saw this step; dc passes through */
            for (long j = 0; j < G; j++) da[j] = 0;
            if (zh)
                for (long j = 0; j < H; j++) hk[b * H + j] = 0;
            if (ln)
                for (long j = 0; j < G; j++) dHP[b * G + j] = 0;
            continue;
        }
        if (zh)  /* zoned-out units of h hand their gradient straight to h_{t-1} (via hk) */
            for (long j = 0; j < H; j++) {
                real d = dm[j], k = zh == 1 ? (real)kh[b * H + j] : zh_rate;
                hk[b * H + j] = NAME(zone_kept)(d, k, zh);
                dm[j] = NAME(zone_update)(d, k, zh);
            }
        if (zc)
            for (long j = 0; j < H; j++) {
                real d = dc[b * H + j], k = zc == 1 ? (real)kc[b * H + j] : zc_rate;
                dc_kept[j] = NAME(zone_kept)(d, k, zc);
                dc[b * H + j] = NAME(zone_update)(d, k, zc);
            }
        if (b + AHEAD < B) {  /* the rows read (and written over) AHEAD rows on */
            NAME(prefetch)(recompute ? 0 : A + (b + AHEAD) * G, G, 1);
            NAME(prefetch)(ln ? xp + (b + AHEAD) * G : 0, G, 1);
            NAME(prefetch)(ln ? rec + (b + AHEAD) * G : 0, G, 1);
        }
        const real *a = A + b * G, *u = U + b * H;
        real* d_gates = da;  /* the gates' gradient; with layer norm then taken through both norms */
        if (recompute) {
            real *gates = dc_kept + H, *u_row = gates + G;
            if (peep) RECOMPUTE_ROW(1);
            else RECOMPUTE_ROW(0);
            a = gates, u = u_row, d_gates = u_row + H;  /* da may be x's own row: read below */
        }
        if (peep && ln) BACKWARD_ROW(1, 1);
        else if (peep) BACKWARD_ROW(1, 0);
        else if (ln) BACKWARD_ROW(0, 1);
        else BACKWARD_ROW(0, 0);
        if (ln)  /* through both input norms: dHP gets the gradient wrt W_hh h, da wrt W_ih x_t */
            NAME(norm2_backward)(d_gates, xp + b * G, rec + b * G, G, mean_x[b], rstd_x[b], mean_h[b], rstd_h[b],
                                 gamma_x, gamma_h, acc + 3 * G, acc + 4 * G, acc, dHP + b * G, da);
        else if (acc) {  /* the shift's (the biases') gradient, summed while da is in cache */
            real* d_shift = acc + 4 * G;
            SIMD
            for (long j = 0; j < G; j++) d_shift[j] += da[j];
        }
        if (zc)
            for (long j = 0; j < H; j++) dc[b * H + j] += dc_kept[j];
    }
}
#undef BACKWARD_ROW
#undef RECOMPUTE_ROW

/* Rows in parallel (flag ROWS): a batch row's recurrence reads no other row, so each
 * OpenMP thread runs the whole time loop over its own block of rows b0 .. b0 + nb, its
 * GEMMs and pointwise steps on one thread, with no fork, join or barrier per step (the
 * GEMM and pointwise step each forked and joined the team at every step, and the tiny
 * per-step GEMMs split their panels, not their rows). The sequence functions call
 * themselves once per block, inside ROW_BLOCKS (block `block_`: rows block_b0 ..
 * block_b0 + block_nb), without ROWS; without OpenMP, once for all their rows. */
#ifdef _OPENMP
#define ROW_BLOCKS(threads, CALL) do { \
        PRAGMA(omp parallel num_threads(threads)) \
        { const long block_ = omp_get_thread_num(), blocks_ = omp_get_num_threads(); \
          const long block_b0 = b0 + nb * block_ / blocks_, block_nb = b0 + nb * (block_ + 1) / blocks_ - block_b0; \
          CALL; } \
    } while (0)
#else
#define ROW_BLOCKS(threads, CALL) do { const long block_ = 0, block_b0 = b0, block_nb = nb; CALL; } while (0)
#endif

/* The forward over a whole sequence in one call: per step the recurrent GEMM on the
 * packed W_hh, the pointwise step and, with a projection (P_hr not NULL), its GEMM,
 * with no return to Python in between. Y (T, B, R) gets the states, C (T, B, H) the
 * cells. With `store` (a backward will follow) A (T, B, 4H), U (T, B, H), M (T, B, H;
 * projection only), HP (T, B, 4H; layer norm only: W_hh h) and stats (6, T, B: mean_h,
 * rstd_h, mean_c, rstd_c, mean_x, rstd_x) keep
 * every step; without, they hold one step, reused (HP may then be NULL: rec is used), and
 * C two: step t's cell is at C + (t & 1) B H. With RECOMPUTE (layer norm, store) A and U
 * hold one step: the backward recomputes them (lstm_backward).
 * rec: one step's GEMM output (B, 4H). flags as lstm_forward's; threads for the
 * GEMMs, pw_threads for the pointwise step (one for small steps: a fork costs more).
 * vendor: NULL, P_hh / P_hr packed by gemm_pack; or a BLAS ?gemm_ address, P_hh / P_hr
 * the plain weights (see gemm_any). It runs rows b0 .. b0 + nb of B (the caller: 0, B); with
 * ROWS, blocks of them in parallel (ROW_BLOCKS). */
void NAME(lstm_sequence)(long T, long B, long b0, long nb, long H, long R, long flags, long threads,
                         long pw_threads, long reverse, long store, real eps, const void* vendor, const real* xp,
                         const real* P_hh, const real* P_hr,
                         const real* h0, const real* c0, const real* gamma_x, const real* beta_x, const real* gamma_h,
                         const real* w_ci, const real* w_cf, const real* w_co,
                         const real* gamma_c, const real* beta_c, const unsigned char* mask,
                         real* Y, real* C, real* A, real* U, real* M, real* HP, real* stats,
                         real* rec, const real* drop, real* hd, long zh, long zc,
                         const unsigned char* kh, const unsigned char* kc, real zh_rate, real zc_rate,
                         real* CN) {
    if (flags & ROWS) {
        ROW_BLOCKS(threads, NAME(lstm_sequence)(T, B, block_b0, block_nb, H, R, flags & ~ROWS, 1, 1, reverse, store,
                   eps, vendor, xp, P_hh, P_hr, h0, c0, gamma_x, beta_x, gamma_h, w_ci, w_cf, w_co, gamma_c, beta_c,
                   mask, Y, C, A, U, M, HP, stats, rec, drop, hd, zh, zc, kh, kc, zh_rate, zc_rate, CN));
        return;
    }
    const long G = 4 * H, Ts = store ? T : 1;
    /* rows b0 .. b0 + nb: every per-row array starts at row b0 (strides stay B rows) */
    xp += b0 * G, h0 += b0 * R, c0 += b0 * H, Y += b0 * R, C += b0 * H, A += b0 * G, U += b0 * H;
    rec += b0 * G, stats += b0;
    if (mask) mask += b0;
    if (M) M += b0 * H;
    if (HP) HP += b0 * G;
    if (drop) drop += b0 * R, hd += b0 * R;
    if (kh) kh += b0 * H;
    if (kc) kc += b0 * H;
    if (CN) CN += b0 * H;
    for (long s = 0; s < T; s++) {
        long t = reverse ? T - 1 - s : s, prev = reverse ? t + 1 : t - 1, k = store ? t : 0;
        const long ka = (flags & RECOMPUTE) ? 0 : k;  /* A's and U's step: the backward recomputes them */
        /* without store, C holds two steps (this one and the one before), alternating */
        const long ct = store ? t : t & 1, cp = store ? prev : prev & 1;
        const real *h = s ? Y + prev * B * R : h0, *c = s ? C + cp * B * H : c0;
        const unsigned char* m = mask ? mask + t * B : 0;
        real *y = Y + t * B * R, *r = (HP && store) ? HP + t * B * G : rec, *st = stats + k * B;
        const real* operand = h;
        if (drop) {  /* recurrent dropout: the state enters W_hh times its mask */
            for (long i = 0; i < nb * R; i++) hd[i] = h[i] * drop[i];
            operand = hd;
        }
        NAME(prefetch)(xp + t * B * G, (nb < AHEAD ? nb : AHEAD) * G, 0);  /* while the GEMM runs */
        NAME(gemm_any)(vendor, nb, G, R, R, threads, operand, P_hh, 0, r);
        NAME(lstm_forward)(nb, H, flags, pw_threads, eps, xp + t * B * G, gamma_x, beta_x, st + 4 * Ts * B,
                           st + 5 * Ts * B, r, gamma_h, st, st + Ts * B,
                           c, w_ci, w_cf, w_co, gamma_c, beta_c, st + 2 * Ts * B, st + 3 * Ts * B,
                           m, h, A + ka * B * G, C + ct * B * H, U + ka * B * H, P_hr ? M + k * B * H : y,
                           zh, zc, kh ? kh + t * B * H : 0, kc ? kc + t * B * H : 0, zh_rate, zc_rate,
                           CN ? CN + k * B * H : 0);
        if (P_hr) {
            NAME(gemm_any)(vendor, nb, R, H, H, threads, M + k * B * H, P_hr, 0, y);
            for (long b = 0; m && b < nb; b++)  /* padded: the state passes through */
                if (!m[b])
                    for (long j = 0; j < R; j++) y[b * R + j] = h[b * R + j];
        }
    }
}


/* Backpropagation through a whole sequence in one call (after lstm_sequence with
 * store), the step of lstm_backward plus the GEMMs: P_hhT packs W_hh^T (R, 4H) (or is W_hh^T itself, with vendor: see lstm_sequence) so
 * that a GEMM gives dh_{t-1} = src W_hh (src = dA, or dHP with layer norm), P_hrT
 * packs W_hr^T (H, R): dm = DH_t W_hr. Fills dA, DH (T, B, R: the gradient wrt each
 * state, as it entered its step; NULL without projection or mask: not kept), dHP; dc (B, H) goes from dc_T to dc_0 in place and
 * grad (B, R) from dh_T to the gradient wrt h0 before the first step's padding carry
 * (the caller adds that). sums, scratch: as lstm_backward's. dm: B * H scratch. Rows b0 ..
 * b0 + nb, as lstm_sequence; with ROWS, block k in thread k's share of sums and scratch. */
void NAME(lstm_backward_sequence)(long T, long B, long b0, long nb, long H, long R, long flags, long threads,
                                  long pw_threads, long reverse, const void* vendor, const real* P_hhT, const real* P_hrT,
                                  const real* dy, const unsigned char* mask, const real* c0,
                                  const real* xp, const real* gamma_x, const real* beta_x,
                                  const real* beta_c, const real* A, const real* C, const real* U, const real* HP,
                                  const real* stats, const real* w_ci, const real* w_cf,
                                  const real* w_co, const real* gamma_c, const real* gamma_h,
                                  real* dA, real* DH, real* dHP, real* dc, real* grad, real* sums,
                                  real* scratch, real* dm, const real* drop, long zh, long zc,
                                  const unsigned char* kh, const unsigned char* kc, real zh_rate,
                                  real zc_rate, const real* CN, real* hk) {
    if (flags & ROWS) {  /* each block sums into, and works in, its own thread's share */
        ROW_BLOCKS(threads, NAME(lstm_backward_sequence)(T, B, block_b0, block_nb, H, R, flags & ~ROWS, 1, 1,
                   reverse, vendor, P_hhT, P_hrT, dy, mask, c0, xp, gamma_x, beta_x, beta_c, A, C, U, HP, stats, w_ci,
                   w_cf, w_co, gamma_c, gamma_h, dA, DH, dHP, dc, grad, sums ? sums + block_ * SUMS_ROWS * 4 * H : 0,
                   scratch + block_ * WORK(H), dm, drop, zh, zc, kh, kc, zh_rate, zc_rate, CN, hk));
        return;
    }
    const long G = 4 * H;
    /* rows b0 .. b0 + nb, as lstm_sequence's */
    dy += b0 * R, c0 += b0 * H, A += b0 * G, C += b0 * H, U += b0 * H, stats += b0;
    dA += b0 * G, dc += b0 * H, grad += b0 * R, dm += b0 * H;
    if (mask) mask += b0;
    if (xp) xp += b0 * G;
    if (HP) HP += b0 * G;
    if (DH) DH += b0 * R;
    if (dHP) dHP += b0 * G;
    if (drop) drop += b0 * R;
    if (kh) kh += b0 * H;
    if (kc) kc += b0 * H;
    if (CN) CN += b0 * H;
    if (hk) hk += b0 * H;
    const int ln = flags & LAYER_NORM;
    const long one = (flags & RECOMPUTE) ? 0 : 1;  /* A and U hold one step with RECOMPUTE */
    for (long s = T - 1; s >= 0; s--) {
        long t = reverse ? T - 1 - s : s, prev = reverse ? t + 1 : t - 1, later = reverse ? t - 1 : t + 1;
        const int has_later = s < T - 1;
        const unsigned char *m = mask ? mask + t * B : 0, *ml = (mask && has_later) ? mask + later * B : 0;
        const real* c_prev = s ? C + prev * B * H : c0;
        real *dh = DH ? DH + t * B * R : 0, *da = dA + t * B * G, *dhp = ln ? dHP + t * B * G : 0;
        const real *st = stats + t * B;
        const real *mean_h = ln ? st : 0, *rstd_h = ln ? st + T * B : 0;
        const real *mean_c = ln ? st + 2 * T * B : 0, *rstd_c = ln ? st + 3 * T * B : 0;
        const real *mean_x = ln ? st + 4 * T * B : 0, *rstd_x = ln ? st + 5 * T * B : 0, *x = ln ? xp + t * B * G : 0;
        if (P_hrT) {  /* DH_t = grad + dy_t (+ the later padded step's DH), then dm = DH_t W_hr */
            for (long i = 0; i < nb * R; i++) dh[i] = grad[i] + dy[t * B * R + i];
            for (long b = 0; ml && b < nb; b++)
                if (!ml[b])
                    for (long j = 0; j < R; j++) dh[b * R + j] += DH[later * B * R + b * R + j];
            NAME(gemm_any)(vendor, nb, H, R, R, threads, dh, P_hrT, 0, dm);
            NAME(lstm_backward)(nb, H, flags, pw_threads, dm, 0, 0, 0, 0, A + one * t * B * G, C + t * B * H,
                                c_prev, U + one * t * B * H, w_ci, w_cf, w_co, gamma_c, mean_c, rstd_c,
                                ln ? HP + t * B * G : 0, gamma_h, mean_h, rstd_h, dhp, sums, x, gamma_x, beta_x,
                                mean_x, rstd_x, beta_c, m, dc, da, scratch, 0, 0, 0, 0, 0, 0, 0);
        } else {  /* lstm_backward adds grad, dy_t and the carry up into DH_t */
            NAME(lstm_backward)(nb, H, flags, pw_threads, grad, dy + t * B * R,
                                ml ? DH + later * B * R : 0, ml, dh, A + one * t * B * G,
                                (CN ? CN : C) + t * B * H, c_prev, U + one * t * B * H, w_ci, w_cf, w_co, gamma_c,
                                mean_c, rstd_c, ln ? HP + t * B * G : 0, gamma_h, mean_h, rstd_h,
                                dhp, sums, x, gamma_x, beta_x, mean_x, rstd_x, beta_c, m, dc, da, scratch, zh, zc, kh ? kh + t * B * H : 0,
                                kc ? kc + t * B * H : 0, zh_rate, zc_rate, hk);
        }
        if (s > 0) {  /* the next step's first rows, while the GEMM runs */
            const long n = (nb < AHEAD ? nb : AHEAD) * G;
            NAME(prefetch)(one ? A + prev * B * G : 0, n, 1);
            NAME(prefetch)(ln ? xp + prev * B * G : 0, n, 1);
            NAME(prefetch)(ln ? HP + prev * B * G : 0, n, 1);
        }
        NAME(gemm_any)(vendor, nb, R, G, G, threads, ln ? dhp : da, P_hhT, 0, grad);
        if (drop)  /* back through h * drop */
            for (long i = 0; i < nb * R; i++) grad[i] *= drop[i];
        if (zh)  /* and the zoned-out units' own share */
            for (long i = 0; i < nb * R; i++) grad[i] += hk[i];
    }
}

