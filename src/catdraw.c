/* Vectorisable exp, log-sum-exp and exact categorical draws from logits. These are the inner
 * loops of every discrete sampler and loss, so they are written for the auto-vectoriser and
 * multiversioned (DFM_CLONES). */
#include "internal.h"
#include "rng_impl.h"

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

/* Explicit 8-lane accumulators let the compiler vectorise the reductions without -ffast-math
 * (which would also drop the NaN checks). Sums are kept in double, as the draw requires. */
#define LANES 8

DFM_CLONES
double dfm__exp_shift_sum(const float *src, size_t n, float shift, float scale, float *dst)
{
    double acc[LANES] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        for (int k = 0; k < LANES; k++) {
            float v = expf_nonpos((src[i + k] - shift) * scale);
            dst[i + k] = v;
            acc[k] += (double)v;
        }
    }
    double total = 0.0;
    for (; i < n; i++) {
        float v = expf_nonpos((src[i] - shift) * scale);
        dst[i] = v;
        total += (double)v;
    }
    for (int k = 0; k < LANES; k++) total += acc[k];
    return total;
}

/* Max and a finiteness check in one pass: bad != 0 when a NaN or +Inf is present. */
DFM_CLONES
static float max_and_check(const float *z, size_t n, int *bad)
{
    float m[LANES];
    int b[LANES];
    for (int k = 0; k < LANES; k++) { m[k] = -INFINITY; b[k] = 0; }
    size_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        for (int k = 0; k < LANES; k++) {
            float v = z[i + k];
            b[k] |= (v != v) | (v == INFINITY);
            m[k] = v > m[k] ? v : m[k];
        }
    }
    float mm = -INFINITY;
    int bb = 0;
    for (; i < n; i++) {
        float v = z[i];
        bb |= (v != v) | (v == INFINITY);
        mm = v > mm ? v : mm;
    }
    for (int k = 0; k < LANES; k++) {
        bb |= b[k];
        mm = m[k] > mm ? m[k] : mm;
    }
    *bad = bb;
    return mm;
}

int dfm__logsumexp(const float *z, size_t n, double *lse, float *zmax)
{
    int bad;
    float m = max_and_check(z, n, &bad);
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
    float m = max_and_check(z, n, &bad);
    if (bad || m == -INFINITY) return DFM_ENUMERIC;
    for (size_t j = 0; j < n; j++)
        if (z[j] == m) { *out = (int32_t)j; return 0; }
    return DFM_ENUMERIC;
}

DFM_CLONES
static double block_sum(const float *w, size_t n)
{
    double acc[LANES] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++) acc[k] += (double)w[i + k];
    double s = 0.0;
    for (; i < n; i++) s += (double)w[i];
    for (int k = 0; k < LANES; k++) s += acc[k];
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
    float m = max_and_check(z, n, &bad);
    if (bad || m == -INFINITY) return DFM_ENUMERIC;
    float scale = (float)(1.0 / temp);
    if (!(scale < INFINITY)) return dfm__argmax(z, n, out);
    double total = dfm__exp_shift_sum(z, n, m, scale, scratch);
    *out = dfm__draw_weights_f(scratch, n, total, u);
    return 0;
}
