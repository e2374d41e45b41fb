/* One time step for a few independent streams (streaming inference, batch 1..4):
 * the recurrent layer's whole step in one call, weights read once per stream.
 *
 * At batch 1 a step is a matrix-vector product over the layer's weights (2 MB at
 * H=256) plus ~10 pointwise ops; through torch that is two GEMM calls sized for
 * matrices (the vendor GEMM reads a row vector at half the memory bandwidth a
 * plain dot product gets) and a dispatch per op. Here the weights are one
 * row-major [W_ih | W_hh] (G, I + S) the caller keeps (rnnkit/nn/native_step.py), so
 * each gate row is one contiguous dot product with [x, h]. (Panels of gate rows read as
 * one sequential stream, as gemm_pack lays them out, were 20% faster in a loop of steps
 * alone but no faster between Python's steps, where the cache is the limit.)
 *
 * Included twice by steps.c (float / double). No gradients: the caller uses this
 * only where nothing is differentiated.
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

/* y (M) = W (M, K; rows ldw apart) v (K) (+ b): four rows per pass so each load of v serves four rows;
 * the passes split over `threads` for large W. On one thread an odd `sweep` runs the rows
 * last to first: a stream alternates, so each step starts on the rows the previous one
 * ended with, still in cache, where weights a little larger than the cache would otherwise
 * all come from the next level every step (same sums either way: only the order of rows). */
static void NAME(gemv_rows)(long M, long K, long ldw, const real* W, const real* v, const real* b, real* y,
                            long threads, long sweep) {
    long quads = M / 4;
    int parallel = threads > 1 && M * K >= STREAM_PARALLEL_MIN;
    int backwards = (sweep & 1) && !parallel;  /* threads keep their own rows: no alternation */
#pragma omp parallel for num_threads(threads) if (parallel) schedule(static)
    for (long i = 0; i < quads; i++) {
        long m = 4 * (backwards ? quads - 1 - i : i);
        const real *w0 = W + m * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
        real s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        SIMD_SUM(s0, s1, s2, s3)
        for (long k = 0; k < K; k++) {
            real vk = v[k];
            s0 += w0[k] * vk; s1 += w1[k] * vk; s2 += w2[k] * vk; s3 += w3[k] * vk;
        }
        y[m] = s0; y[m + 1] = s1; y[m + 2] = s2; y[m + 3] = s3;
    }
    for (long m = 4 * quads; m < M; m++) {
        const real* w = W + m * ldw;
        real s = 0;
        SIMD_SUM(s)
        for (long k = 0; k < K; k++) s += w[k] * v[k];
        y[m] = s;
    }
    if (b)
        for (long j = 0; j < M; j++) y[j] += b[j];
}

/* [x_b, h_b] of stream b into v (I + S) */
static INLINE void NAME(join)(long I, long S, const real* x, const real* h, real* v) {
    for (long k = 0; k < I; k++) v[k] = x[k];
    for (long k = 0; k < S; k++) v[I + k] = h[k];
}

/* The three steps take what changes every call first (x, the state in and out), then the
 * layer's constants (kept by the caller as one bound argument list), then the call's
 * scratch. */

/* LSTM (optionally with peepholes: w_ci, w_cf, w_co not NULL), B streams:
 * a = W [x; h] + b, gates i f g o, c' = f c + i g, h' = o tanh(c').
 * work: I + H + 4H scratch values (NULL: on the stack, up to STREAM_STACK_REALS).
 * h_out/c_out may not alias h/c. */
void NAME(lstm_stream_step)(long B, long I, long H, long threads, long sweep,
                            const real* x, const real* h, const real* c, real* h_out, real* c_out,
                            const real* W, const real* bias, const real* w_ci, const real* w_cf,
                            const real* w_co, real* work) {
    real stack[work ? 1 : STREAM_STACK_REALS];
    if (!work) work = stack;
    const long K = I + H;
    real *v = work, *a = work + K;
    for (long b = 0; b < B; b++) {
        const real* cp = c + b * H;
        real *hn = h_out + b * H, *cn = c_out + b * H;
        NAME(join)(I, H, x + b * I, h + b * H, v);
        NAME(gemv_rows)(4 * H, K, K, W, v, bias, a, threads, sweep);
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
 * work: 13H scratch values (NULL: on the stack, up to STREAM_STACK_REALS). */
void NAME(lstm_ln_stream_step)(long B, long I, long H, long threads, long sweep,
                               const real* x, const real* h, const real* c, real* h_out, real* c_out,
                               real eps, const real* W, const real* shift, const real* gamma_x,
                               const real* gamma_h, const real* gamma_c, const real* beta_c,
                               const real* w_ci, const real* w_cf, const real* w_co, real* work) {
    real stack[work ? 1 : STREAM_STACK_REALS];
    if (!work) work = stack;
    const long G = 4 * H, K = I + H;
    real *xp = work, *hp = work + G, *a = work + 2 * G, *u = work + 3 * G;
    for (long b = 0; b < B; b++) {
        const real* cp = c + b * H;
        real mx, rx, mh, rh, mc, rc;  /* the norms' moments: the backward's, not needed here */
        NAME(gemv_rows)(G, I, K, W, x + b * I, 0, xp, threads, sweep);
        NAME(gemv_rows)(G, H, K, W + I, h + b * H, 0, hp, threads, sweep);
        if (w_ci)
            NAME(forward_row)(H, 1, 1, eps, xp, gamma_x, shift, &mx, &rx, hp, gamma_h, &mh, &rh, cp, w_ci, w_cf,
                              w_co, gamma_c, beta_c, &mc, &rc, a, c_out + b * H, u, h_out + b * H);
        else
            NAME(forward_row)(H, 0, 1, eps, xp, gamma_x, shift, &mx, &rx, hp, gamma_h, &mh, &rh, cp, 0, 0, 0,
                              gamma_c, beta_c, &mc, &rc, a, c_out + b * H, u, h_out + b * H);
    }
}

/* Elman RNN, B streams: h' = act(W [x; h] + b), act tanh (relu = 0) or relu (relu = 1).
 * work: I + 2H scratch values (or NULL, as for the LSTM). */
void NAME(rnn_stream_step)(long B, long I, long H, long threads, long sweep,
                           const real* x, const real* h, real* h_out,
                           long relu, const real* W, const real* bias, real* work) {
    real stack[work ? 1 : STREAM_STACK_REALS];
    if (!work) work = stack;
    const long K = I + H;
    real *v = work, *a = work + K;
    for (long b = 0; b < B; b++) {
        real* hn = h_out + b * H;
        NAME(join)(I, H, x + b * I, h + b * H, v);
        NAME(gemv_rows)(H, K, K, W, v, bias, a, threads, sweep);
        if (relu) {
            for (long j = 0; j < H; j++) hn[j] = a[j] > 0 ? a[j] : (a[j] != a[j] ? a[j] : 0);
        } else {
            SIMD
            for (long j = 0; j < H; j++) hn[j] = NAME(tanh)(a[j]);
        }
    }
}

/* GRU as torch.nn.GRU (reset after the recurrent product): W_i (3H, I), W_h (3H, H),
 * b_i, b_h (3H) or NULL; r = s(xr + hr), z = s(xz + hz), n = tanh(xn + r hn),
 * h' = (1 - z) n + z h. work: 6H scratch values (or NULL, as for the LSTM). */
void NAME(gru_stream_step)(long B, long I, long H, long threads, long sweep,
                           const real* x, const real* h, real* h_out,
                           const real* W_i, const real* W_h, const real* b_i, const real* b_h, real* work) {
    real stack[work ? 1 : STREAM_STACK_REALS];
    if (!work) work = stack;
    real *gi = work, *gh = work + 3 * H;
    for (long b = 0; b < B; b++) {
        const real* hp = h + b * H;
        real* hn = h_out + b * H;
        NAME(gemv_rows)(3 * H, I, I, W_i, x + b * I, b_i, gi, threads, sweep);
        NAME(gemv_rows)(3 * H, H, H, W_h, hp, b_h, gh, threads, sweep);
        SIMD
        for (long j = 0; j < H; j++) {
            real r = NAME(sigm)(gi[j] + gh[j]), z = NAME(sigm)(gi[H + j] + gh[H + j]);
            real n = NAME(tanh)(gi[2 * H + j] + r * gh[2 * H + j]);
            hn[j] = n + z * (hp[j] - n);
        }
    }
}

/* The GRU variants torch.nn has no step for: variant 1 = reset_before (Cho et al. 2014:
 * n = tanh(xn + W_hn (r h) + b_hn), the recurrent product split around r), 2 = simplified
 * (an update gate only: u = s(xu + hu), n = tanh(xn + hn), h' = h + u (n - h)). W_i
 * (G H, I), W_h (G H, H), b_i, b_h (G H) or NULL, G = 3 or 2, gates in the cell's order.
 * work: 7H scratch values (or NULL, as for the LSTM). */
void NAME(gru_variant_stream_step)(long B, long I, long H, long threads, long sweep,
                                   const real* x, const real* h, real* h_out,
                                   long variant, const real* W_i, const real* W_h, const real* b_i,
                                   const real* b_h, real* work) {
    real stack[work ? 1 : STREAM_STACK_REALS];
    if (!work) work = stack;
    real *gi = work, *gh = work + 3 * H, *rh = work + 6 * H;
    const long G = variant == 2 ? 2 : 3;
    for (long b = 0; b < B; b++) {
        const real* hp = h + b * H;
        real* hn = h_out + b * H;
        NAME(gemv_rows)(G * H, I, I, W_i, x + b * I, b_i, gi, threads, sweep);
        if (variant == 2) {
            NAME(gemv_rows)(2 * H, H, H, W_h, hp, b_h, gh, threads, sweep);
            SIMD
            for (long j = 0; j < H; j++) {
                real u = NAME(sigm)(gi[j] + gh[j]), n = NAME(tanh)(gi[H + j] + gh[H + j]);
                hn[j] = hp[j] + u * (n - hp[j]);
            }
            continue;
        }
        NAME(gemv_rows)(2 * H, H, H, W_h, hp, b_h, gh, threads, sweep);  /* r and z first */
        SIMD
        for (long j = 0; j < H; j++) {
            gh[j] = NAME(sigm)(gi[j] + gh[j]);                 /* r */
            gh[H + j] = NAME(sigm)(gi[H + j] + gh[H + j]);     /* z */
            rh[j] = gh[j] * hp[j];
        }
        NAME(gemv_rows)(H, H, H, W_h + 2 * H * H, rh, b_h ? b_h + 2 * H : 0, gh + 2 * H, threads, sweep);
        SIMD
        for (long j = 0; j < H; j++) {
            real n = NAME(tanh)(gi[2 * H + j] + gh[2 * H + j]);
            hn[j] = n + gh[H + j] * (hp[j] - n);
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
 * work: 3H scratch values (or NULL, as for the LSTM). */
void NAME(min_rnn_stream_step)(long B, long I, long H, long threads, long sweep,
                               const real* x, const real* h, real* h_out,
                               long gates, long positive, const real* W, const real* bias, real* work) {
    real stack[work ? 1 : STREAM_STACK_REALS];
    if (!work) work = stack;
    for (long b = 0; b < B; b++) {
        const real* hp = h + b * H;
        real* hn = h_out + b * H;
        NAME(gemv_rows)(gates * H, I, I, W, x + b * I, bias, work, threads, sweep);
        const real* kh = work + (gates - 1) * H;
        for (long j = 0; j < H; j++) {
            real k = kh[j], cand = positive ? (k >= 0 ? k + (real)0.5 : NAME(sigm)(k)) : k;
            real d = gates == 2 ? work[j] : NAME(log_sigm)(work[H + j]) - NAME(log_sigm)(work[j]);
            hn[j] = NAME(sigm)(d) * cand + NAME(sigm)(-d) * hp[j];
        }
    }
}
