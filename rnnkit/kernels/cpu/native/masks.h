/* Zoneout's per-step keep masks (rnnkit/nn/regularization.py, bernoulli_mask): T*B*S
 * Bernoulli draws per state and forward, which through torch's generator cost about as
 * much as the zoned time loop's pointwise work. Here they come from one 64-bit seed
 * (drawn from torch's generator by the caller, so runs stay reproducible and resumable)
 * through SplitMix64 (Steele, Lea & Flood 2014; the seeding generator of xoshiro):
 * word i = mix(seed + (i + 1) * golden), and element e is True when the 16 bits
 * [16 (e mod 4), 16 (e mod 4) + 16) of word e / 4 are below `threshold` (the rate in
 * units of 2^-16). regularization.py computes the same bits with torch ops where this
 * library is not used (other devices, no compiler, torch.compile): same seed, same mask.
 *
 * Included twice by steps.c (the float and double names do the same). */

static INLINE unsigned long long NAME(splitmix64)(unsigned long long seed, unsigned long long i) {
    unsigned long long z = seed + (i + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void NAME(bernoulli_mask)(long n, long seed, long threshold, unsigned char* out) {
    const unsigned long long s = (unsigned long long)seed, thr = (unsigned long long)threshold;
    const long words = n / 4;
    SIMD
    for (long i = 0; i < words; i++) {
        unsigned long long z = NAME(splitmix64)(s, (unsigned long long)i);
        out[4 * i] = (z & 0xFFFF) < thr;
        out[4 * i + 1] = ((z >> 16) & 0xFFFF) < thr;
        out[4 * i + 2] = ((z >> 32) & 0xFFFF) < thr;
        out[4 * i + 3] = (z >> 48) < thr;
    }
    if (4 * words < n) {
        unsigned long long z = NAME(splitmix64)(s, (unsigned long long)words);
        for (long e = 4 * words; e < n; e++, z >>= 16) out[e] = (z & 0xFFFF) < thr;
    }
}
