/* The pointwise parts of the fused CPU LSTM and GRU kernels
 * (rnnkit/kernels/cpu/lstm.py, cpu/gru.py), in float and double.
 * Built on first use by rnnkit/kernels/cpu/native/__init__.py. */
#include <math.h>

/* the flags argument (rnnkit/kernels/cpu/lstm.py mirrors them) */
/* the loops that call exp: the vectoriser gives up on them unless told they are
 * free of loop-carried dependences (built with -fopenmp-simd: no OpenMP runtime) */
#define SIMD _Pragma("omp simd")
#define PRAGMA(x) _Pragma(#x)
#define SIMD_SUM(...) PRAGMA(omp simd reduction(+:__VA_ARGS__))
/* rows in parallel on the OpenMP threads torch itself uses (same libgomp, loaded
 * first by torch), static schedule: each row always on the same thread for a given
 * count, so the per-thread sums are reproducible */
#ifdef _OPENMP
#include <omp.h>
#define PARALLEL_ROWS(n) PRAGMA(omp parallel for schedule(static) num_threads(n) if(n > 1))
#define THREAD_ID omp_get_thread_num()
#else
#define PARALLEL_ROWS(n)
#define THREAD_ID 0
#endif
#define INLINE inline __attribute__((always_inline))

enum { PEEPHOLE = 1, LAYER_NORM = 2, CARRY_H = 4, RECOMPUTE = 8, ROWS = 16 };
enum { RESET_BEFORE = 1 };  /* the GRU sequences' flags: this, and ROWS */

/* exp for float, inlined so the loops vectorise without libm calls (glibc's vector
 * expf is ~5x slower per element here): Cody-Waite reduction x = n ln2 + r, |r| <=
 * ln2/2, then Cephes' degree-6 polynomial for e^r (relative error ~2e-7) times 2^n
 * built in the exponent bits. Valid for |x| <= 87; the callers clamp to 80. */
static inline float fast_expf(float x) {
    float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int i; float f; } scale = { ((int)n + 127) << 23 };
    return p * scale.f;
}

/* tanh for float: x P(x^2) / Q(x^2), degree 4 over 4 in x^2, on x clamped to [-9, 9]
 * (tanh(9) is 1 within float's half ulp). Coefficients fitted here (weighted linear least
 * squares on the relative error, iterated: Sanathanan-Koerner, then Lawson's reweighting),
 * tested in tests/kernels/cpu/test_native.py: max relative error 2.9e-7 over [-20, 20], as
 * the exp-based formula it replaced (2.6e-7), in half the instructions (0.24 against 0.48 ns
 * a value, AVX-512 Xeon): no exp, no select between a small-x polynomial and
 * 1 - 2 / (e^2x + 1). Exact at 0, odd; NaN fails both clamp tests and stays NaN. */
static inline float fast_tanhf(float x) {
    x = x < -9.0f ? -9.0f : (x > 9.0f ? 9.0f : x);
    float z = x * x;
    float p = (((1.3806096710e-08f * z + 2.0943522031e-05f) * z + 3.5163043067e-03f) * z + 1.3398605585e-01f) * z + 1.0f;
    float q = (((7.9638482475e-07f * z + 3.3192339470e-04f) * z + 2.5956215337e-02f) * z + 4.6731930971e-01f) * z + 1.0f;
    return x * p / q;
}

#define real float
#define NAME(x) x##_f32
#define EXPF fast_expf
#define TANHF fast_tanhf
#define SQRTF sqrtf
#include "gemm.h"
#include "lstm_step.h"
#include "gru_step.h"
#include "stream_step.h"
#include "masks.h"
#undef real
#undef NAME
#undef EXPF
#undef TANHF
#undef SQRTF

/* double: libm's exp and tanh (exact to an ulp; double is for gradcheck, not speed) */
#define real double
#define NAME(x) x##_f64
#define EXPF exp
#define TANHF tanh
#define SQRTF sqrt
#include "gemm.h"
#include "lstm_step.h"
#include "gru_step.h"
#include "stream_step.h"
#include "masks.h"
