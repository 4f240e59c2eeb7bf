/* The softmax kernels behind every discrete sampler and loss (src/catdraw.c), checked against a
 * scalar statement of their arithmetic: whichever code path this machine runs (portable vector
 * code, AVX2 or AVX-512), the maxima, the finiteness flags, every exp(z - max) value and the
 * double total must be bit-identical to it, so that samples and gradients do not depend on the
 * machine. This suite links the static library: the kernels are internal, not API. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>

float dfm__max_check(const float *z, size_t n, int *bad);
double dfm__exp_shift_sum(const float *src, size_t n, float shift, float scale, float *dst);

/* One lane of the 8-lane exp2 (src/catdraw.c exp2_v8), as scalar float operations. */
static float ref_exp2_lane(float y)
{
    union { float f; int32_t i; uint32_t u; } a, e, v;
    int keep = y > -126.0f;
    if (!keep) y = 0.0f;
    volatile float t = y + 12582912.0f; /* volatile: keep the two roundings */
    float n = t - 12582912.0f;
    float f = y - n;
    float q = 1.3390863314270973e-3f;
    q = q * f + 9.6760317683219910e-3f;
    q = q * f + 5.5503569543361664e-2f;
    q = q * f + 2.4022106826305390e-1f;
    q = q * f + 6.9314718246459961e-1f;
    q = q * f + 1.0000001192092896f;
    e.i = ((int32_t)n + 127) * (1 << 23);
    a.f = q * e.f;
    v.u = keep ? a.u : 0u;
    return v.f;
}

/* The scalar tail exp (src/catdraw.c expf_nonpos). */
static float ref_expf_tail(float x)
{
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    float xc = x >= -87.0f ? x : -87.0f;
    volatile float t = xc * log2e + 12582912.0f;
    float n = t - 12582912.0f;
    float r = xc - n * ln2_hi - n * ln2_lo;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { uint32_t u; float f; } s;
    s.u = (uint32_t)((int32_t)n + 127) << 23;
    float v = p * s.f;
    return x >= -87.0f ? v : 0.0f;
}

/* exp_shift_sum's contract: blocks of 128 with 8 float lane sums, each block added in double as
 * (l0 + l4 + l1 + l5) + (l2 + l6 + l3 + l7) (pairs first), then the scalar tail. */
static double ref_exp_shift_sum(const float *src, size_t n, float shift, float scale, float *dst)
{
    const float k = scale * 1.44269504088896341f;
    double total = 0.0;
    size_t i = 0;
    while (i + 8 <= n) {
        size_t end = n - i >= 128 ? i + 128 : n;
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (; i + 8 <= end; i += 8)
            for (int l = 0; l < 8; l++) {
                float v = ref_exp2_lane((src[i + (size_t)l] - shift) * k);
                dst[i + (size_t)l] = v;
                acc[l] += v;
            }
        double s0 = (double)acc[0] + (double)acc[4], s1 = (double)acc[1] + (double)acc[5];
        double s2 = (double)acc[2] + (double)acc[6], s3 = (double)acc[3] + (double)acc[7];
        total += (s0 + s1) + (s2 + s3);
    }
    for (; i < n; i++) {
        float v = ref_expf_tail((src[i] - shift) * scale);
        dst[i] = v;
        total += (double)v;
    }
    return total;
}

static uint64_t rs = 0x9E3779B97F4A7C15ULL;
static double urand(void)
{
    rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
    return (double)(rs >> 11) / 9007199254740992.0;
}

START_TEST(max_check_exact)
{
    float z[2600];
    for (int trial = 0; trial < 3000; trial++) {
        size_t n = 1 + (size_t)(urand() * 2599.0);
        float want = -INFINITY;
        int want_bad = 0, kind = trial % 5;
        for (size_t i = 0; i < n; i++) {
            z[i] = (float)(urand() * 40.0 - 20.0);
            if (kind == 1 && urand() < 0.3) z[i] = -INFINITY;
            if (kind == 4) z[i] = -INFINITY;
        }
        if (kind == 2) z[(size_t)(urand() * (double)n)] = NAN;
        if (kind == 3) z[(size_t)(urand() * (double)n)] = INFINITY;
        for (size_t i = 0; i < n; i++) {
            want_bad |= (z[i] != z[i]) || z[i] == INFINITY;
            if (z[i] > want) want = z[i];
        }
        int bad = -1;
        float got = dfm__max_check(z, n, &bad);
        ck_assert_msg((bad != 0) == want_bad, "n %zu kind %d: bad %d, want %d", n, kind, bad, want_bad);
        if (!want_bad) ck_assert_msg(got == want, "n %zu kind %d: max %g, want %g", n, kind, got, want);
    }
}
END_TEST

START_TEST(exp_shift_sum_bit_identical)
{
    static float z[2600], got[2600], want[2600];
    const float scales[4] = {1.0f, 0.5f, 3.0f, 1e-3f};
    for (int trial = 0; trial < 2000; trial++) {
        size_t n = 1 + (size_t)(urand() * 2599.0);
        if (trial < 64) n = (size_t)trial + 1; /* every tail length */
        float spread = trial % 3 == 0 ? 200.0f : 12.0f, mx = -INFINITY;
        for (size_t i = 0; i < n; i++) {
            z[i] = (float)(urand() - 0.5) * spread;
            if (trial % 7 == 0 && urand() < 0.2) z[i] = -INFINITY;
            if (z[i] > mx) mx = z[i];
        }
        if (mx == -INFINITY) { z[0] = 0.0f; mx = 0.0f; }
        float sc = scales[trial % 4];
        double tw = ref_exp_shift_sum(z, n, mx, sc, want);
        double tg = dfm__exp_shift_sum(z, n, mx, sc, got);
        ck_assert_msg(memcmp(got, want, n * sizeof(float)) == 0, "n %zu: values differ", n);
        ck_assert_msg(memcmp(&tg, &tw, sizeof tg) == 0, "n %zu: total %.17g, want %.17g", n, tg, tw);
    }
}
END_TEST

int main(void)
{
    Suite *su = suite_create("kernels");
    TCase *tc = tu_tcase("kernels");
    tcase_add_test(tc, max_check_exact);
    tcase_add_test(tc, exp_shift_sum_bit_identical);
    suite_add_tcase(su, tc);
    return tu_run(su);
}
