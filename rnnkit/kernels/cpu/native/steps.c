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

enum { PEEPHOLE = 1, LAYER_NORM = 2, CARRY_H = 4, RECOMPUTE = 8 };

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

/* tanh for float: Cephes' odd polynomial for |x| < 0.625 (where 1 - 2 / (e^2x + 1)
 * cancels: ~1e-3 relative error at 1e-5), that formula above; both are computed and
 * one selected, so the loops still vectorise. NaN takes the second branch and stays
 * NaN; x is clamped to 40 only inside the exp (tanh(40) is 1 in float). */
static inline float fast_tanhf(float x) {
    float z = x * x;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z
                    + 1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
    float e = fast_expf(2.0f * (x < -40.0f ? -40.0f : (x > 40.0f ? 40.0f : x)));
    float large = 1.0f - 2.0f / (e + 1.0f);
    return __builtin_fabsf(x) < 0.625f ? small : large;
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
