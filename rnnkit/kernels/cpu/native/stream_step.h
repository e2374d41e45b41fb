/* One time step for a few independent streams (streaming inference, batch 1..16):
 * the recurrent layer's whole step in one call, its weights read once for all streams.
 *
 * At batch 1 a step is a matrix-vector product over the layer's weights (2 MB at
 * H=256) plus ~10 pointwise ops; through torch that is two GEMM calls sized for
 * matrices (the vendor GEMM reads a row vector at half the memory bandwidth a
 * plain dot product gets) and a dispatch per op. Here the weights are one
 * row-major [W_ih | W_hh] (G, I + S) the caller keeps (rnnkit/nn/native_step.py), so
 * each gate row is one contiguous dot product with [x, h], and four rows at a time,
 * kept in L1, meet every stream's vector. (Panels of gate rows read as one sequential
 * stream, as gemm_pack lays them out, were 20% faster in a loop of steps alone but no
 * faster between Python's steps, where the cache is the limit.)
 *
 * Included twice by steps.c (float / double). No gradients: the caller uses this
 * only where nothing is differentiated. Each step's `work` is scratch of the size its
 * comment gives (NULL: on the step's stack, up to STREAM_STACK_REALS values).
 */

#ifndef STREAM_STACK_REALS
/* scratch values a step takes on its own stack when the caller passes work = NULL
 * (32 KB of floats: up to H ~ 1300), sparing the caller an allocation per step */
#define STREAM_STACK_REALS 8192
#endif

#ifndef STREAM_PARALLEL_MIN
/* fewest weights (M * K) worth splitting a GEMV over threads: each thread then streams
 * its own rows (from its own cache, from the second step on); below, the fork costs more */
#define STREAM_PARALLEL_MIN (1L << 16)
#endif

/* Y (B, M; rows ldy apart) = V (B, K; rows ldv apart) W^T (W (M, K), rows ldw apart)
 * (+ b): four rows of W per pass, each pass over every stream's vector while the rows are
 * in L1, so the weights are read once whatever B. The passes split over `threads` for
 * large W. On one thread an odd `sweep` runs the rows last to first: a stream alternates,
 * so each step starts on the rows the previous one ended with, still in cache, where
 * weights a little larger than the cache would otherwise all come from the next level
 * every step (same sums either way: only the order of rows). */
/* gemv_rows' pass over rows m..m+3 for every stream */
static INLINE void NAME(gemv_quad)(long m, long K, long ldw, const real* W, long B, const real* V, long ldv,
                                   real* Y, long ldy) {
    const real *w0 = W + m * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
    for (long s = 0; s < B; s++) {
        const real* v = V + s * ldv;
        real s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        SIMD_SUM(s0, s1, s2, s3)
        for (long k = 0; k < K; k++) {
            real vk = v[k];
            s0 += w0[k] * vk; s1 += w1[k] * vk; s2 += w2[k] * vk; s3 += w3[k] * vk;
        }
        real* y = Y + s * ldy + m;
        y[0] = s0; y[1] = s1; y[2] = s2; y[3] = s3;
    }
}

static void NAME(gemv_rows)(long M, long K, long ldw, const real* W, long B, const real* V, long ldv,
                            const real* b, real* Y, long ldy, long threads, long sweep) {
    long quads = M / 4;
    if (threads > 1 && M * K >= STREAM_PARALLEL_MIN) {  /* threads keep their own rows: no alternation */
#pragma omp parallel for num_threads(threads) schedule(static)
        for (long i = 0; i < quads; i++)
            NAME(gemv_quad)(4 * i, K, ldw, W, B, V, ldv, Y, ldy);
    } else {  /* no OpenMP call at all (its runtime's code is one more thing to fetch at batch 1) */
        const int backwards = sweep & 1;
        for (long i = 0; i < quads; i++)
            NAME(gemv_quad)(4 * (backwards ? quads - 1 - i : i), K, ldw, W, B, V, ldv, Y, ldy);
    }
    for (long m = 4 * quads; m < M; m++)
        for (long s = 0; s < B; s++) {
            const real *w = W + m * ldw, *v = V + s * ldv;
            real acc = 0;
            SIMD_SUM(acc)
            for (long k = 0; k < K; k++) acc += w[k] * v[k];
            Y[s * ldy + m] = acc;
        }
    if (b)
        for (long s = 0; s < B; s++)
            for (long j = 0; j < M; j++) Y[s * ldy + j] += b[j];
}

/* [x_b, h_b] of every stream into V (B, I + S) */
static INLINE void NAME(join)(long B, long I, long S, const real* x, const real* h, real* V) {
    for (long b = 0; b < B; b++) {
        real* v = V + b * (I + S);
        for (long k = 0; k < I; k++) v[k] = x[b * I + k];
        for (long k = 0; k < S; k++) v[I + k] = h[b * S + k];
    }
}

/* The three steps take what changes every call first (x, the state in and out), then the
 * layer's constants (kept by the caller as one bound argument list), then the call's
 * scratch. */

/* LSTM (optionally with peepholes: w_ci, w_cf, w_co not NULL), B streams:
 * a = W [x; h] + b, gates i f g o, c' = f c + i g, h' = o tanh(c').
 * work: B (I + 5H) values. h_out/c_out may not alias h/c. */
void NAME(lstm_stream_step)(long B, long I, long H, long threads, long sweep,
                            const real* x, const real* h, const real* c, real* h_out, real* c_out,
                            const real* W, const real* bias, const real* w_ci, const real* w_cf,
                            const real* w_co, real* work) {
    real stack[work ? 1 : STREAM_STACK_REALS];
    if (!work) work = stack;
    const long K = I + H, G = 4 * H;
    real *V = work, *A = work + B * K;
    NAME(join)(B, I, H, x, h, V);
    NAME(gemv_rows)(G, K, K, W, B, V, K, bias, A, G, threads, sweep);
    for (long b = 0; b < B; b++) {
        const real *a = A + b * G, *cp = c + b * H;
        real *hn = h_out + b * H, *cn = c_out + b * H;
        if (w_ci) {
            SIMD
            for (long j = 0; j < H; j++) {
                real i = NAME(sigm)(a[j] + w_ci[j] * cp[j]), f = NAME(sigm)(a[H + j] + w_cf[j] * cp[j]);
                real cj = f * cp[j] + i * NAME(tanh)(a[2 * H + j]);
                cn[j] = cj;
                hn[j] = NAME(sigm)(a[3 * H + j] + w_co[j] * cj) * NAME(tanh)(cj);
            }
        } else {
            SIMD
            for (long j = 0; j < H; j++) {
                real i = NAME(sigm)(a[j]), f = NAME(sigm)(a[H + j]);
                real cj = f * cp[j] + i * NAME(tanh)(a[2 * H + j]);
                cn[j] = cj;
                hn[j] = NAME(sigm)(a[3 * H + j]) * NAME(tanh)(cj);
            }
        }
    }
}

/* Layer-norm LSTM (Ba et al. 2016), optionally with peepholes (w_ci, w_cf, w_co not
 * NULL), B streams: the training kernel's forward row (lstm_step.h) on this step's two
 * products, a = LN(W_ih x) gamma_x + shift + LN(W_hh h) gamma_h, c' = f c + i g,
 * h' = o tanh(LN(c') gamma_c + beta_c). W: row-major [W_ih | W_hh] (4H, I + H), its two
 * halves read as two products (each has its own norm); shift: b_ih + b_hh (never NULL).
 * work: 8BH + 5H values. */
void NAME(lstm_ln_stream_step)(long B, long I, long H, long threads, long sweep,
                               const real* x, const real* h, const real* c, real* h_out, real* c_out,
                               real eps, const real* W, const real* shift, const real* gamma_x,
                               const real* gamma_h, const real* gamma_c, const real* beta_c,
                               const real* w_ci, const real* w_cf, const real* w_co, real* work) {
    real stack[work ? 1 : STREAM_STACK_REALS];
    if (!work) work = stack;
    const long G = 4 * H, K = I + H;
    real *XP = work, *HP = work + B * G, *a = work + 2 * B * G, *u = a + G;
    NAME(gemv_rows)(G, I, K, W, B, x, I, 0, XP, G, threads, sweep);
    NAME(gemv_rows)(G, H, K, W + I, B, h, H, 0, HP, G, threads, sweep);
    for (long b = 0; b < B; b++) {
        const real *cp = c + b * H, *xp = XP + b * G, *hp = HP + b * G;
        real mx, rx, mh, rh, mc, rc;  /* the norms' moments: the backward's, not needed here */
        if (w_ci)
            NAME(forward_row)(H, 1, 1, eps, xp, gamma_x, shift, &mx, &rx, hp, gamma_h, &mh, &rh, cp, w_ci, w_cf,
                              w_co, gamma_c, beta_c, &mc, &rc, a, c_out + b * H, u, h_out + b * H);
        else
            NAME(forward_row)(H, 0, 1, eps, xp, gamma_x, shift, &mx, &rx, hp, gamma_h, &mh, &rh, cp, 0, 0, 0,
                              gamma_c, beta_c, &mc, &rc, a, c_out + b * H, u, h_out + b * H);
    }
}

/* Elman RNN, B streams: h' = act(W [x; h] + b), act tanh (relu = 0) or relu (relu = 1).
 * work: B (I + 2H) values. */
void NAME(rnn_stream_step)(long B, long I, long H, long threads, long sweep,
                           const real* x, const real* h, real* h_out,
                           long relu, const real* W, const real* bias, real* work) {
    real stack[work ? 1 : STREAM_STACK_REALS];
    if (!work) work = stack;
    const long K = I + H;
    real *V = work, *A = work + B * K;
    NAME(join)(B, I, H, x, h, V);
    NAME(gemv_rows)(H, K, K, W, B, V, K, bias, A, H, threads, sweep);
    for (long j = 0; j < B * H; j++) {
        real aj = A[j];
        h_out[j] = relu ? (aj > 0 ? aj : (aj != aj ? aj : 0)) : NAME(tanh)(aj);
    }
}

/* GRU, B streams, gates in the cell's order; W_i (G H, I), W_h (G H, H), b_i, b_h (G H) or
 * NULL, G = 3 (2 for simplified). variant 0 = reset_after, as torch.nn.GRU: r = s(xr + hr),
 * z = s(xz + hz), n = tanh(xn + r hn), h' = (1 - z) n + z h; 1 = reset_before (Cho et al.
 * 2014): n = tanh(xn + W_hn (r h) + b_hn), the recurrent product split around r; 2 =
 * simplified (an update gate only): u = s(xu + hu), n = tanh(xn + hn), h' = h + u (n - h).
 * work: 7BH values. */
void NAME(gru_stream_step)(long B, long I, long H, long threads, long sweep,
                           const real* x, const real* h, real* h_out,
                           long variant, const real* W_i, const real* W_h, const real* b_i, const real* b_h,
                           real* work) {
    real stack[work ? 1 : STREAM_STACK_REALS];
    if (!work) work = stack;
    const long G = (variant == 2 ? 2 : 3) * H, L = 3 * H;  /* L: the scratch rows' stride */
    real *GI = work, *GH = work + B * L, *RH = work + 2 * B * L;
    NAME(gemv_rows)(G, I, I, W_i, B, x, I, b_i, GI, L, threads, sweep);
    /* reset_before needs r before the candidate's product: its first two gates first */
    NAME(gemv_rows)(variant == 1 ? 2 * H : G, H, H, W_h, B, h, H, b_h, GH, L, threads, sweep);
    if (variant == 1) {
        for (long b = 0; b < B; b++) {
            const real *gi = GI + b * L, *hp = h + b * H;
            real *gh = GH + b * L, *rh = RH + b * H;
            SIMD
            for (long j = 0; j < H; j++) {
                gh[j] = NAME(sigm)(gi[j] + gh[j]);                 /* r */
                rh[j] = gh[j] * hp[j];
            }
        }
        NAME(gemv_rows)(H, H, H, W_h + 2 * H * H, B, RH, H, b_h ? b_h + 2 * H : 0, GH + 2 * H, L, threads, sweep);
    }
    for (long b = 0; b < B; b++) {
        const real *gi = GI + b * L, *gh = GH + b * L, *hp = h + b * H;
        real* hn = h_out + b * H;
        if (variant == 2) {
            SIMD
            for (long j = 0; j < H; j++) {
                real u = NAME(sigm)(gi[j] + gh[j]), n = NAME(tanh)(gi[H + j] + gh[H + j]);
                hn[j] = hp[j] + u * (n - hp[j]);
            }
            continue;
        }
        SIMD
        for (long j = 0; j < H; j++) {
            real z = NAME(sigm)(gi[H + j] + gh[H + j]), n;
            if (variant == 0)
                n = NAME(tanh)(gi[2 * H + j] + NAME(sigm)(gi[j] + gh[j]) * gh[2 * H + j]);
            else  /* r already applied inside the product */
                n = NAME(tanh)(gi[2 * H + j] + gh[2 * H + j]);
            hn[j] = n + z * (hp[j] - n);
        }
    }
}

/* log s(x) without underflow, in double (a few values a step) */
static inline real NAME(log_sigm)(real x) {
    double v = (double)x;
    return (real)((v < 0 ? v : 0) - log1p(exp(-fabs(v))));
}

/* The minimal RNNs (Feng et al. 2024), whose gates read only x: h' = a h + b with
 * minGRU (gates 2: z, h~): a = s(-k_z), b = s(k_z) g(k_h);
 * minLSTM (gates 3: f, i, h~): d = log s(k_i) - log s(k_f), a = s(-d), b = s(d) g(k_h);
 * g(k) = k + 0.5 (k >= 0) or s(k) when `positive`, else k. W (G H, I), bias (G H) or NULL.
 * work: 3BH values. */
void NAME(min_rnn_stream_step)(long B, long I, long H, long threads, long sweep,
                               const real* x, const real* h, real* h_out,
                               long gates, long positive, const real* W, const real* bias, real* work) {
    real stack[work ? 1 : STREAM_STACK_REALS];
    if (!work) work = stack;
    const long G = gates * H;
    NAME(gemv_rows)(G, I, I, W, B, x, I, bias, work, G, threads, sweep);
    for (long b = 0; b < B; b++) {
        const real *k = work + b * G, *kh = k + (gates - 1) * H, *hp = h + b * H;
        real* hn = h_out + b * H;
        for (long j = 0; j < H; j++) {
            real cand = positive ? (kh[j] >= 0 ? kh[j] + (real)0.5 : NAME(sigm)(kh[j])) : kh[j];
            real d = gates == 2 ? k[j] : NAME(log_sigm)(k[H + j]) - NAME(log_sigm)(k[j]);
            hn[j] = NAME(sigm)(d) * cand + NAME(sigm)(-d) * hp[j];
        }
    }
}

#ifndef STREAM_CONSTS_DEFINED
#define STREAM_CONSTS_DEFINED
/* One layer's stream-step constants, whatever its kind, so a caller holding several
 * kinds calls them all through stream_step_any (the C++ step guard, step_guard.cpp):
 * kind 0 lstm, 1 lstm_ln, 2 rnn, 3 gru, 4 min_rnn; opt: the kind's option arguments
 * (rnn: relu; gru: variant; min_rnn: gates, positive); eps: the layer norms'; p: the
 * kind's constant pointers in its function's order (NULL for an absent weight). */
typedef struct { long kind, opt[2]; double eps; const void* p[10]; } stream_consts;
#endif

/* The step of the layer `k` describes (its function above, same arguments); c, c_out:
 * the cell state for the LSTMs, unused otherwise. */
void NAME(stream_step_any)(const stream_consts* k, long B, long I, long H, long threads, long sweep,
                           const real* x, const real* h, const real* c, real* h_out, real* c_out, real* work) {
    const real* const* p = (const real* const*)k->p;
    switch (k->kind) {
    case 0:
        NAME(lstm_stream_step)(B, I, H, threads, sweep, x, h, c, h_out, c_out, p[0], p[1], p[2], p[3], p[4], work);
        break;
    case 1:
        NAME(lstm_ln_stream_step)(B, I, H, threads, sweep, x, h, c, h_out, c_out, (real)k->eps, p[0], p[1], p[2],
                                  p[3], p[4], p[5], p[6], p[7], p[8], work);
        break;
    case 2:
        NAME(rnn_stream_step)(B, I, H, threads, sweep, x, h, h_out, k->opt[0], p[0], p[1], work);
        break;
    case 3:
        NAME(gru_stream_step)(B, I, H, threads, sweep, x, h, h_out, k->opt[0], p[0], p[1], p[2], p[3], work);
        break;
    case 4:
        NAME(min_rnn_stream_step)(B, I, H, threads, sweep, x, h, h_out, k->opt[0], k->opt[1], p[0], p[1], work);
        break;
    }
}
