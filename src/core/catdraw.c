/* Vectorisable exp, log-sum-exp and exact categorical draws from logits. These are the inner
 * loops of every discrete sampler and loss, so they are written for the auto-vectoriser and
 * multiversioned (DFM_CLONES). */
#include "core/internal.h"
#include "core/rng_impl.h"

#include <float.h>
#include <math.h>

/* exp(x) for x <= 0 in float: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, degree-6 Taylor
 * polynomial (relative error < 2e-7), scale by 2^n through the exponent bits. x < -87 and NaN
 * give 0. */
static inline float expf_nonpos(float x)
{
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    const float magic = 12582912.0f; /* 1.5 * 2^23: rounds to nearest integer */
    /* Written so that NaN (from -Inf x 0 when a -Inf logit meets scale 0 at a huge
     * temperature) takes the x < -87 branch: weight 0, and no NaN-to-int conversion. */
    float xc = x >= -87.0f ? x : -87.0f;
    float n = (xc * log2e + magic) - magic;
    float r = xc - n * ln2_hi - n * ln2_lo;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t e = (int32_t)n + 127;
    union { uint32_t u; float f; } s;
    s.u = (uint32_t)e << 23;
    float v = p * s.f;
    return x >= -87.0f ? v : 0.0f;
}

/* Vector kernels with GCC/Clang vector extensions: the auto-vectoriser does not turn the
 * exponential's bit manipulation and the reductions into SIMD code without -ffast-math (which
 * would also drop the NaN checks). With DFM_CLONES the same code is compiled for AVX2 and for
 * the baseline (where a 32-byte vector is two SSE registers). Sums are kept in double across
 * blocks of 128 elements (16 float terms per lane within a block). */
#if defined(__GNUC__)
#define VEC 1
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));

/* 2^y for 8 lanes with y <= 0: y = n + f, |f| <= 1/2, a degree-5 minimax polynomial for 2^f
 * (relative error < 2e-7 in 2^y; the float rounding of y = (z - max) * scale * log2(e) adds a
 * relative error of |y| * 4e-8: measured below 1e-6 for z - max in [-10, 0] and below 4e-6 down
 * to -80); lanes with y <= -126 give exactly 0. */
static inline __attribute__((always_inline)) void exp2_v8(v8f *yv)
{
    v8f y = *yv;
    const v8f zero = {0, 0, 0, 0, 0, 0, 0, 0};
    const v8f lo = zero - 126.0f, magic = zero + 12582912.0f;
    v8i keep = y > lo;
    y = (v8f)((v8i)y & keep);
    v8f n = (y + magic) - magic;
    v8f f = y - n;
    v8f q = zero + 1.3390863314270973e-3f;
    q = q * f + 9.6760317683219910e-3f;
    q = q * f + 5.5503569543361664e-2f;
    q = q * f + 2.4022106826305390e-1f;
    q = q * f + 6.9314718246459961e-1f;
    q = q * f + 1.0000001192092896f;
    v8i e = (__builtin_convertvector(n, v8i) + 127) << 23;
    v8f v = q * (v8f)e;
    *yv = (v8f)((v8i)v & keep);
}

static inline __attribute__((always_inline)) double hsum_v8f_d(const v8f *a)
{
    v4f h0, h1;
    memcpy(&h0, a, sizeof h0);
    memcpy(&h1, (const char *)a + sizeof h0, sizeof h1);
    v4d s = __builtin_convertvector(h0, v4d) + __builtin_convertvector(h1, v4d);
    return (s[0] + s[1]) + (s[2] + s[3]);
}
#endif

DFM_CLONES
static double exp_shift_sum_generic(const float *src, size_t n, float shift, float scale, float *dst)
{
    const float l2e = 1.44269504088896341f;
    double total = 0.0;
    size_t i = 0;
#ifdef VEC
    const v8f zero = {0, 0, 0, 0, 0, 0, 0, 0};
    const v8f sh = zero + shift, k = zero + scale * l2e;
    while (i + 8 <= n) {
        size_t end = n - i >= 128 ? i + 128 : n;
        v8f acc = zero;
        for (; i + 8 <= end; i += 8) {
            v8f x;
            memcpy(&x, src + i, sizeof x);
            v8f v = (x - sh) * k;
            exp2_v8(&v);
            memcpy(dst + i, &v, sizeof v);
            acc += v;
        }
        total += hsum_v8f_d(&acc);
    }
#endif
    for (; i < n; i++) {
        float v = expf_nonpos((src[i] - shift) * scale);
        dst[i] = v;
        total += (double)v;
    }
    return total;
}

/* Max and a finiteness check in one pass: bad != 0 when a NaN or +Inf is present. Four
 * independent accumulators: one select chain would cost its latency per 8 floats. */
DFM_CLONES
static float max_check_generic(const float *z, size_t n, int *bad)
{
    float mm = -INFINITY;
    int bb = 0;
    size_t i = 0;
#ifdef VEC
    const v8f zero = {0, 0, 0, 0, 0, 0, 0, 0};
    const v8f inf = zero + INFINITY;
    v8f m0 = zero - INFINITY, m1 = m0, m2 = m0, m3 = m0;
    v8i b0 = {0, 0, 0, 0, 0, 0, 0, 0}, b1 = b0;
#define DFM_MAXSTEP(mv, bv, off)                                                                   \
    do {                                                                                           \
        v8f x;                                                                                     \
        memcpy(&x, z + i + (off), sizeof x);                                                       \
        bv |= (x != x) | (x == inf);                                                               \
        v8i gt = x > mv;                                                                           \
        mv = (v8f)(((v8i)x & gt) | ((v8i)mv & ~gt));                                               \
    } while (0)
    for (; i + 32 <= n; i += 32) {
        DFM_MAXSTEP(m0, b0, 0);
        DFM_MAXSTEP(m1, b1, 8);
        DFM_MAXSTEP(m2, b0, 16);
        DFM_MAXSTEP(m3, b1, 24);
    }
    for (; i + 8 <= n; i += 8) DFM_MAXSTEP(m0, b0, 0);
#undef DFM_MAXSTEP
    v8i g1 = m1 > m0, g3 = m3 > m2;
    m0 = (v8f)(((v8i)m1 & g1) | ((v8i)m0 & ~g1));
    m2 = (v8f)(((v8i)m3 & g3) | ((v8i)m2 & ~g3));
    g1 = m2 > m0;
    m0 = (v8f)(((v8i)m2 & g1) | ((v8i)m0 & ~g1));
    b0 |= b1;
    for (int k = 0; k < 8; k++) {
        bb |= b0[k];
        mm = m0[k] > mm ? m0[k] : mm;
    }
#endif
    for (; i < n; i++) {
        float v = z[i];
        bb |= (v != v) | (v == INFINITY);
        mm = v > mm ? v : mm;
    }
    *bad = bb;
    return mm;
}

/* ---- x86-64: AVX2 and AVX-512 kernels, chosen at run time ----
 * The max uses the hardware max instruction (the portable select chain costs twice the
 * instructions) with NaN caught by an unordered compare; +Inf shows up as the max. The
 * AVX-512 exp computes the same float operations as the 8-lane code and adds its two halves to
 * the 8-lane accumulator in the same order, so sums, draws and gradients are bit-identical on
 * every x86-64 machine. */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && !defined(DFM_NO_CLONES) \
    && (defined(__clang__) ? (__clang_major__ >= 14) : (__GNUC__ >= 9))
#define X86_DISPATCH 1
#include <immintrin.h>

#define T_AVX2 __attribute__((target("avx2")))
#define T_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw")))

T_AVX2 static float max_check_avx2(const float *z, size_t n, int *bad)
{
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    __m256 u0 = _mm256_setzero_ps(), u1 = u0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 a = _mm256_loadu_ps(z + i), b = _mm256_loadu_ps(z + i + 8);
        __m256 c = _mm256_loadu_ps(z + i + 16), d = _mm256_loadu_ps(z + i + 24);
        m0 = _mm256_max_ps(a, m0);
        m1 = _mm256_max_ps(b, m1);
        m2 = _mm256_max_ps(c, m2);
        m3 = _mm256_max_ps(d, m3);
        u0 = _mm256_or_ps(u0, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
        u1 = _mm256_or_ps(u1, _mm256_cmp_ps(c, d, _CMP_UNORD_Q));
    }
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_loadu_ps(z + i);
        m0 = _mm256_max_ps(a, m0);
        u0 = _mm256_or_ps(u0, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
    }
    m0 = _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3));
    int bb = _mm256_movemask_ps(_mm256_or_ps(u0, u1)) != 0;
    float buf[8], mm = -INFINITY;
    _mm256_storeu_ps(buf, m0);
    for (int k = 0; k < 8; k++) mm = buf[k] > mm ? buf[k] : mm;
    for (; i < n; i++) {
        float v = z[i];
        bb |= v != v;
        mm = v > mm ? v : mm;
    }
    *bad = bb | (mm == INFINITY);
    return mm;
}

T_AVX512 static float max_check_avx512(const float *z, size_t n, int *bad)
{
    __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    __mmask16 u0 = 0, u1 = 0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 a = _mm512_loadu_ps(z + i), b = _mm512_loadu_ps(z + i + 16);
        __m512 c = _mm512_loadu_ps(z + i + 32), d = _mm512_loadu_ps(z + i + 48);
        m0 = _mm512_max_ps(a, m0);
        m1 = _mm512_max_ps(b, m1);
        m2 = _mm512_max_ps(c, m2);
        m3 = _mm512_max_ps(d, m3);
        u0 |= _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q);
        u1 |= _mm512_cmp_ps_mask(c, d, _CMP_UNORD_Q);
    }
    for (; i + 16 <= n; i += 16) {
        __m512 a = _mm512_loadu_ps(z + i);
        m0 = _mm512_max_ps(a, m0);
        u0 |= _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
    }
    m0 = _mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3));
    int bb = (u0 | u1) != 0;
    float mm = _mm512_reduce_max_ps(m0);
    for (; i < n; i++) {
        float v = z[i];
        bb |= v != v;
        mm = v > mm ? v : mm;
    }
    *bad = bb | (mm == INFINITY);
    return mm;
}

/* exp2_v8 on 16 lanes: the same rounding of y to an integer (nearest, ties to even), the same
 * polynomial without fused multiply-adds, and an exact scaling by 2^n, so every lane's value
 * equals the 8-lane code's. */
T_AVX512 static inline __m512 exp2_v16(__m512 y, __mmask16 *keep_out)
{
    __mmask16 keep = _mm512_cmp_ps_mask(y, _mm512_set1_ps(-126.0f), _CMP_GT_OQ);
    y = _mm512_maskz_mov_ps(keep, y);
    __m512 nn = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(y, nn);
    __m512 q = _mm512_set1_ps(1.3390863314270973e-3f);
    q = _mm512_add_ps(_mm512_mul_ps(q, f), _mm512_set1_ps(9.6760317683219910e-3f));
    q = _mm512_add_ps(_mm512_mul_ps(q, f), _mm512_set1_ps(5.5503569543361664e-2f));
    q = _mm512_add_ps(_mm512_mul_ps(q, f), _mm512_set1_ps(2.4022106826305390e-1f));
    q = _mm512_add_ps(_mm512_mul_ps(q, f), _mm512_set1_ps(6.9314718246459961e-1f));
    q = _mm512_add_ps(_mm512_mul_ps(q, f), _mm512_set1_ps(1.0000001192092896f));
    *keep_out = keep;
    return _mm512_maskz_scalef_ps(keep, q, nn);
}

T_AVX512 static double exp_shift_sum_avx512(const float *src, size_t n, float shift, float scale,
                                            float *dst)
{
    const float l2e = 1.44269504088896341f;
    const __m512 sh = _mm512_set1_ps(shift), k = _mm512_set1_ps(scale * l2e);
    double total = 0.0;
    size_t i = 0;
    /* Blocks of 128 as in the 8-lane code; 16-lane steps while two 8-lane steps fit. */
    while (i + 8 <= n) {
        size_t end = n - i >= 128 ? i + 128 : n;
        __m256 acc = _mm256_setzero_ps();
        __mmask16 kk;
        for (; i + 16 <= end; i += 16) {
            __m512 v = exp2_v16(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(src + i), sh), k), &kk);
            _mm512_storeu_ps(dst + i, v);
            acc = _mm256_add_ps(acc, _mm512_castps512_ps256(v));
            acc = _mm256_add_ps(acc, _mm512_extractf32x8_ps(v, 1));
        }
        if (i + 8 <= end) { /* one 8-lane step left in this block */
            __m512 x = _mm512_maskz_loadu_ps((__mmask16)0xFF, src + i);
            __m512 v = exp2_v16(_mm512_mul_ps(_mm512_sub_ps(x, sh), k), &kk);
            _mm512_mask_storeu_ps(dst + i, (__mmask16)0xFF, v);
            acc = _mm256_add_ps(acc, _mm512_castps512_ps256(v));
            i += 8;
        }
        __m128 h0 = _mm256_castps256_ps128(acc), h1 = _mm256_extractf128_ps(acc, 1);
        __m256d sd = _mm256_add_pd(_mm256_cvtps_pd(h0), _mm256_cvtps_pd(h1));
        /* (s0 + s1) + (s2 + s3) as in hsum_v8f_d */
        double b4[4];
        _mm256_storeu_pd(b4, sd);
        total += (b4[0] + b4[1]) + (b4[2] + b4[3]);
    }
    for (; i < n; i++) {
        float v = expf_nonpos((src[i] - shift) * scale);
        dst[i] = v;
        total += (double)v;
    }
    return total;
}

static int cpu_level(void)
{
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw"))
        return 2;
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}
#endif

float dfm__max_check(const float *z, size_t n, int *bad)
{
#ifdef X86_DISPATCH
    int lv = cpu_level();
    if (lv == 2) return max_check_avx512(z, n, bad);
    if (lv == 1) return max_check_avx2(z, n, bad);
#endif
    return max_check_generic(z, n, bad);
}

double dfm__exp_shift_sum(const float *src, size_t n, float shift, float scale, float *dst)
{
#ifdef X86_DISPATCH
    if (cpu_level() == 2) return exp_shift_sum_avx512(src, n, shift, scale, dst);
#endif
    return exp_shift_sum_generic(src, n, shift, scale, dst);
}

int dfm__logsumexp(const float *z, size_t n, double *lse, float *zmax)
{
    int bad;
    float m = dfm__max_check(z, n, &bad);
    if (bad || m == -INFINITY) return DFM_ENUMERIC;
    /* Sum without storing: reuse a small stack buffer in chunks. */
    float buf[256];
    double total = 0.0;
    for (size_t i = 0; i < n; i += 256) {
        size_t len = n - i < 256 ? n - i : 256;
        total += dfm__exp_shift_sum(z + i, len, m, 1.0f, buf);
    }
    *lse = (double)m + log(total);
    if (zmax) *zmax = m;
    return 0;
}

int dfm__argmax(const float *z, size_t n, int32_t *out)
{
    int bad;
    float m = dfm__max_check(z, n, &bad);
    if (bad || m == -INFINITY) return DFM_ENUMERIC;
    for (size_t j = 0; j < n; j++)
        if (z[j] == m) { *out = (int32_t)j; return 0; }
    return DFM_ENUMERIC;
}

DFM_CLONES
static double block_sum(const float *w, size_t n)
{
    double s = 0.0;
    size_t i = 0;
#ifdef VEC
    v8f acc = {0, 0, 0, 0, 0, 0, 0, 0};
    for (; i + 8 <= n; i += 8) {
        v8f x;
        memcpy(&x, w + i, sizeof x);
        acc += x;
    }
    s = hsum_v8f_d(&acc);
#endif
    for (; i < n; i++) s += (double)w[i];
    return s;
}

int32_t dfm__draw_weights_f(const float *w, size_t n, double total, double u)
{
    const size_t B = 64;
    double target = u * total, acc = 0.0;
    size_t last_nz = 0;
    int have_nz = 0;
    for (size_t i = 0; i < n; i += B) {
        size_t len = n - i < B ? n - i : B;
        double bs = block_sum(w + i, len);
        if (acc + bs > target) {
            for (size_t j = i; j < i + len; j++) {
                if (w[j] > 0.0f) { last_nz = j; have_nz = 1; }
                acc += (double)w[j];
                if (acc > target) return (int32_t)j;
            }
            /* Rounding between the block sum and the element sums: take the last weight seen. */
            if (have_nz) return (int32_t)last_nz;
        } else {
            if (bs > 0.0) {
                for (size_t j = i + len; j-- > i;)
                    if (w[j] > 0.0f) { last_nz = j; have_nz = 1; break; }
            }
            acc += bs;
        }
    }
    return (int32_t)last_nz; /* target == total after rounding: the last positive weight */
}

int dfm__categorical_logits(const float *z, size_t n, double temp, double u, float *scratch,
                            int32_t *out)
{
    if (temp == 0.0) return dfm__argmax(z, n, out);
    int bad;
    float m = dfm__max_check(z, n, &bad);
    if (bad || m == -INFINITY) return DFM_ENUMERIC;
    float scale = (float)(1.0 / temp);
    if (!(scale < INFINITY)) return dfm__argmax(z, n, out);
    double total = dfm__exp_shift_sum(z, n, m, scale, scratch);
    *out = dfm__draw_weights_f(scratch, n, total, u);
    return 0;
}
