/* A small GEMM for the per-step recurrent products: out (B, G) = x (B, K) W^T (+ add),
 * with W (G, K) packed once per sequence into panels of NR rows ([K][NR] each), so
 * every step streams the panels contiguously. Register tiles of 6 (2, 1) x NR outputs
 * (GCC/clang vector extensions); panels are split over the OpenMP threads, each
 * thread's panels staying in its own cache from step to step. Included twice by
 * steps.c (float, double).
 *
 * Vector width: 64 bytes where the compiler targets AVX-512 (-march=native on such a
 * CPU defines __AVX512F__; 32 zmm registers hold the twelve accumulators easily),
 * else 32 bytes (AVX2: the twelve accumulators, two weight vectors and a broadcast
 * fill the 16 ymm registers). -DRNNKIT_VEC_BYTES=64 (or 32, 16) forces a width: GCC
 * lowers wider vectors than the target has to several narrower operations, so the
 * 64-byte code can be built and tested on an AVX2 CPU. The panel width follows
 * (NR = two vectors); Python asks gemm_panel_width for it.
 *
 * The alternatives: the BLAS torch links (MKL, OpenBLAS), its Fortran ?gemm_ on the
 * plain row-major weight (gemm_vendor), or MKL's packed-weight GEMM (gemm_vendor_packed),
 * called through addresses Python hands over (no BLAS headers here). Which one a sequence uses is chosen in Python (see
 * rnnkit/kernels/cpu/native/__init__.py, gemm_choice); gemm_any dispatches. */

#ifndef RNNKIT_VEC_BYTES
#ifdef __AVX512F__
#define RNNKIT_VEC_BYTES 64
#else
#define RNNKIT_VEC_BYTES 32
#endif
#endif
#define VL (RNNKIT_VEC_BYTES / (long)sizeof(real))  /* lanes per vector */
#define NR (2 * VL)                                  /* panel width: two vectors */
#ifndef KC
/* K per block of a panel (KC NR values: 64 KB at 512 bits): every row tile reuses the block from L1,
 * where a whole panel of a large K (512 x 32 floats) spilled to L2 for each tile. B32 K512
 * G2048: 626 -> 528-564 us a product (this Xeon); -DKC= sets it. */
#define KC 256
#endif
typedef real NAME(vec) __attribute__((vector_size(RNNKIT_VEC_BYTES)));

static inline NAME(vec) NAME(vload)(const real* p) {
    NAME(vec) v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

/* The panel width NR this library was built with (pack_panels sizes its buffer by it). */
long NAME(gemm_panel_width)(void) { return NR; }

/* P: ceil(G / NR) panels of K * NR values (rows past G are zero) */
void NAME(gemm_pack)(long G, long K, const real* W, real* P) {
    long panels = (G + NR - 1) / NR;
    for (long p = 0; p < panels; p++)
        for (long k = 0; k < K; k++)
            for (long i = 0; i < NR; i++) {
                long g = p * NR + i;
                P[(p * K + k) * NR + i] = g < G ? W[g * K + k] : 0;
            }
}

/* Stores one row of a tile: two vectors, the first `width` values (+ add). */
static inline void NAME(store_row)(NAME(vec) lo, NAME(vec) hi, real* out, const real* add, long width) {
    real buf[NR];
    __builtin_memcpy(buf, &lo, sizeof lo);
    __builtin_memcpy(buf + VL, &hi, sizeof hi);
    if (add)
        for (long j = 0; j < width; j++) out[j] = buf[j] + add[j];
    else
        for (long j = 0; j < width; j++) out[j] = buf[j];
}

/* The register tiles: N rows of x against one panel, 2N accumulators. Each row's two are
 * named variables, spelled out by the row lists (an array of them, or a loop over rows,
 * ends up in memory); 6 rows cover the FMA latency on two pipes, 12 (with 512-bit vectors,
 * whose 32 registers hold 24 accumulators) read the panel half as often per row; 2 and 1
 * take the remainder. */
#ifndef RNNKIT_TILE_MACROS
#define RNNKIT_TILE_MACROS
#define TILE_ROWS1(F) F(0)
#define TILE_ROWS2(F) TILE_ROWS1(F) F(1)
#define TILE_ROWS6(F) TILE_ROWS2(F) F(2) F(3) F(4) F(5)
#define TILE_ROWS12(F) TILE_ROWS6(F) F(6) F(7) F(8) F(9) F(10) F(11)
#define TILE_INIT(i) NAME(vec) a##i = {0}, b##i = {0}; const real* x##i = x + i * ldx;
#define TILE_FMA(i) a##i += x##i[k] * w0; b##i += x##i[k] * w1;
#define TILE_STORE(i) NAME(store_row)(a##i, b##i, out + i * ldo, add ? add + i * ldo : 0, width);
#define DEFINE_TILE(N)                                                                             \
    static inline void NAME(tile##N)(long K, const real* x, long ldx, const real* pp, real* out,   \
                                     long ldo, const real* add, long width) {                     \
        TILE_ROWS##N(TILE_INIT)                                                                    \
        for (long k = 0; k < K; k++) {                                                             \
            NAME(vec) w0 = NAME(vload)(pp + k * NR), w1 = NAME(vload)(pp + k * NR + VL);           \
            TILE_ROWS##N(TILE_FMA)                                                                 \
        }                                                                                          \
        TILE_ROWS##N(TILE_STORE)                                                                   \
    }
#endif
DEFINE_TILE(6)
DEFINE_TILE(2)
DEFINE_TILE(1)
#if RNNKIT_VEC_BYTES == 64
DEFINE_TILE(12)
#endif

/* out (B, G) = x (B, K; rows ldx apart) W^T (+ add (B, G)), W packed by gemm_pack */
void NAME(gemm_packed)(long B, long G, long K, long ldx, long threads, const real* x, const real* P,
                       const real* add, real* out) {
    long panels = (G + NR - 1) / NR;
    PARALLEL_ROWS(threads)
    for (long p = 0; p < panels; p++)
        for (long k0 = 0; k0 < K; k0 += KC) {  /* a block of the panel that stays in L1 for every row tile */
            const long kc = K - k0 < KC ? K - k0 : KC;
            const real* pp = P + (p * K + k0) * NR;
            const real* xk = x + k0;
            long g0 = p * NR, width = G - g0 < NR ? G - g0 : NR;
            real* o = out + g0;
            const real* a = k0 ? o : (add ? add + g0 : 0);  /* later blocks add onto the first's sums */
            long b = 0;
#if RNNKIT_VEC_BYTES == 64
            for (; b + 12 <= B; b += 12)
                NAME(tile12)(kc, xk + b * ldx, ldx, pp, o + b * G, G, a ? a + b * G : 0, width);
#endif
            for (; b + 6 <= B; b += 6)
                NAME(tile6)(kc, xk + b * ldx, ldx, pp, o + b * G, G, a ? a + b * G : 0, width);
            for (; b + 2 <= B; b += 2)
                NAME(tile2)(kc, xk + b * ldx, ldx, pp, o + b * G, G, a ? a + b * G : 0, width);
            for (; b < B; b++)
                NAME(tile1)(kc, xk + b * ldx, ldx, pp, o + b * G, G, a ? a + b * G : 0, width);
        }
}

/* Fortran BLAS ?gemm_ (column-major; trailing hidden string lengths are not read by
 * MKL's or OpenBLAS's gemm and are left out). LP64: 32-bit integers, as torch links. */
typedef void (*NAME(blas_gemm))(const char* ta, const char* tb, const int* m, const int* n, const int* k,
                                const real* alpha, const real* a, const int* lda, const real* b,
                                const int* ldb, const real* beta, real* c, const int* ldc);

/* out (B, G) = x (B, K; rows ldx apart) W^T (+ add), W (G, K) row-major, by the vendor
 * BLAS at address `vendor`: column-major that is out^T (G, B) = W^T' x^T, i.e.
 * gemm("T", "N", G, B, K, W (K x G, ld K), x^T (K x B, ld ldx)). Its own threads. */
static void NAME(gemm_vendor)(const void* vendor, long B, long G, long K, long ldx, const real* x,
                              const real* W, const real* add, real* out) {
    int m = (int)G, n = (int)B, k = (int)K, lda = (int)K, ldb = (int)ldx, ldc = (int)G;
    real one = 1, beta = 0;
    if (add) {
        for (long i = 0; i < B * G; i++) out[i] = add[i];
        beta = 1;
    }
    ((NAME(blas_gemm))vendor)("T", "N", &m, &n, &k, &one, W, &lda, x, &ldb, &beta, out, &ldc);
}

#ifndef RNNKIT_BLAS_DEFINED
#define RNNKIT_BLAS_DEFINED
/* What a non-NULL `vendor` points to (a struct Python keeps): the Fortran ?gemm_ (P the plain
 * weight), or MKL's cblas_?gemm_compute (P the weight packed by cblas_?gemm_pack: MKL lays it
 * out for its own micro-kernel once, as oneDNN's RNNs do; the faster choice on AVX-512 CPUs). */
struct rnnkit_blas {
    const void* gemm;
    const void* compute;
};
enum { RNNKIT_CBLAS_ROW_MAJOR = 101, RNNKIT_CBLAS_NO_TRANS = 111, RNNKIT_CBLAS_PACKED = 151 };
#endif

typedef void (*NAME(blas_compute))(int layout, int transa, int transb, int m, int n, int k, const real* a,
                                   int lda, const real* b, int ldb, real beta, real* c, int ldc);

/* out (B, G) = x (B, K; rows ldx apart) W^T (+ add) by MKL's packed-weight GEMM, P = pack(W^T)
 * (row-major, B rows). Its own threads. */
static void NAME(gemm_vendor_packed)(const void* compute, long B, long G, long K, long ldx, const real* x,
                                     const real* P, const real* add, real* out) {
    real beta = 0;
    if (add) {
        for (long i = 0; i < B * G; i++) out[i] = add[i];
        beta = 1;
    }
    ((NAME(blas_compute))compute)(RNNKIT_CBLAS_ROW_MAJOR, RNNKIT_CBLAS_NO_TRANS, RNNKIT_CBLAS_PACKED, (int)B, (int)G,
                                  (int)K, x, (int)ldx, P, (int)K, beta, out, (int)G);
}

/* The sequences' GEMM: with `vendor` NULL, P is packed (gemm_pack) and the packed GEMM
 * runs; else `vendor` is a struct rnnkit_blas and P what its GEMM takes. */
static inline void NAME(gemm_any)(const void* vendor, long B, long G, long K, long ldx, long threads,
                                  const real* x, const real* P, const real* add, real* out) {
    if (!vendor) {
        NAME(gemm_packed)(B, G, K, ldx, threads, x, P, add, out);
        return;
    }
    const struct rnnkit_blas* blas = (const struct rnnkit_blas*)vendor;
    if (blas->compute)
        NAME(gemm_vendor_packed)(blas->compute, B, G, K, ldx, x, P, add, out);
    else
        NAME(gemm_vendor)(blas->gemm, B, G, K, ldx, x, P, add, out);
}

/* gemm_any exported, for tests and for timing the two choices */
void NAME(gemm_select)(const void* vendor, long B, long G, long K, long ldx, long threads, const real* x,
                       const real* P, const real* add, real* out) {
    NAME(gemm_any)(vendor, B, G, K, ldx, threads, x, P, add, out);
}
#undef NR
#undef VL
#undef KC
