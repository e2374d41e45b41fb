/* The pointwise part of the fused CPU LSTM (rnnkit/kernels/cpu_lstm_native.py),
 * in float and double. Built on first use by rnnkit/kernels/native/__init__.py. */
#include <math.h>

/* the flags argument (rnnkit/kernels/cpu_lstm_native.py mirrors them) */
/* the loops that call exp: the vectoriser gives up on them unless told they are
 * free of loop-carried dependences (built with -fopenmp-simd: no OpenMP runtime) */
#define SIMD _Pragma("omp simd")
#define PRAGMA(x) _Pragma(#x)
#define SIMD_SUM(...) PRAGMA(omp simd reduction(+:__VA_ARGS__))
#define INLINE inline __attribute__((always_inline))

enum { PEEPHOLE = 1, LAYER_NORM = 2, CARRY_H = 4 };

#define real float
#define NAME(x) x##_f32
#define EXPF expf
#define SQRTF sqrtf
#include "lstm_step.h"
#undef real
#undef NAME
#undef EXPF
#undef SQRTF

#define real double
#define NAME(x) x##_f64
#define EXPF exp
#define SQRTF sqrt
#include "lstm_step.h"
