/* Counter-based random numbers: reproducibility, independence of threads and splits, and the
 * distributions of uniform, normal and categorical draws (chi-square at fixed seeds). */
#include "testutil.h"

START_TEST(philox_known_answer)
{
    /* Philox-4x32-10 known-answer vectors (Random123 kat_vectors): counter 0, key 0 and
     * counter/key all ones. dfm_rng_block puts coord, step, row_lo, row_hi|stream<<24 in the
     * counter and the seed in the key. */
    uint32_t w[4];
    dfm_rng_block(0, 0, 0, 0, 0, w);
    ck_assert_uint_eq(w[0], 0x6627e8d5u);
    ck_assert_uint_eq(w[1], 0xe169c58du);
    ck_assert_uint_eq(w[2], 0xbc57ac4cu);
    ck_assert_uint_eq(w[3], 0x9b00dbd8u);
    dfm_rng_block(0xffffffffffffffffull, 0xff, 0xffffffffffffffull, 0xffffffffu, 0xffffffffu, w);
    ck_assert_uint_eq(w[0], 0x408f276du);
    ck_assert_uint_eq(w[1], 0x41c83b0eu);
    ck_assert_uint_eq(w[2], 0xa20bc7c6u);
    ck_assert_uint_eq(w[3], 0x6d5451fdu);
}
END_TEST

START_TEST(reproducible_and_keyed)
{
    double a = dfm_rng_uniform(7, 1, 5, 3, 2);
    ck_assert(a == dfm_rng_uniform(7, 1, 5, 3, 2));
    ck_assert(a != dfm_rng_uniform(8, 1, 5, 3, 2));
    ck_assert(a != dfm_rng_uniform(7, 2, 5, 3, 2));
    ck_assert(a != dfm_rng_uniform(7, 1, 6, 3, 2));
    ck_assert(a != dfm_rng_uniform(7, 1, 5, 4, 2));
    ck_assert(a != dfm_rng_uniform(7, 1, 5, 3, 3));
    ck_assert(a != dfm_rng_uniform(7, 1, 5 + (1ull << 33), 3, 2));
}
END_TEST

START_TEST(fill_independent_of_threads_and_split)
{
    enum { R = 257, C = 33 };
    static float a[R * C], b[R * C], c[R * C];
    for (int kind = 0; kind < 2; kind++) {
        ck_assert_int_eq(dfm_rng_fill(11, 3, kind, 100, R, C, 9, 1, a), 0);
        ck_assert_int_eq(dfm_rng_fill(11, 3, kind, 100, R, C, 9, 2, b), 0);
        ck_assert_int_eq(dfm_rng_fill(11, 3, kind, 100, 100, C, 9, 3, c), 0);
        ck_assert_int_eq(dfm_rng_fill(11, 3, kind, 200, R - 100, C, 9, 5, c + 100 * C), 0);
        ck_assert_int_eq(memcmp(a, b, sizeof a), 0);
        ck_assert_int_eq(memcmp(a, c, sizeof a), 0);
    }
    ck_assert_int_eq(dfm_rng_fill(1, 0, 7, 0, 1, 1, 0, 1, a), DFM_EINVAL);
    ck_assert_int_eq(dfm_rng_fill(1, 0, 0, 0, 1, 1, 0, 0, a), DFM_EINVAL);
    ck_assert_int_eq(dfm_rng_fill(1, 0, 0, 0, 1, 1, 0, 1, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_rng_fill(1, 0, 0, 0, SIZE_MAX / 2, 3, 0, 1, a), DFM_EOVERFLOW);
}
END_TEST

START_TEST(uniform_distribution)
{
    enum { BINS = 64 };
    const int N = (int)tu_count(200000); /* DFM_TEST_SCALE (testutil.h); bounds use N */
    long counts[BINS] = {0};
    double p[BINS];
    double mean = 0.0;
    for (int i = 0; i < BINS; i++) p[i] = 1.0 / BINS;
    for (int i = 0; i < N; i++) {
        double u = dfm_rng_uniform(42, 0, (uint64_t)i, 0, 0);
        ck_assert(u >= 0.0 && u < 1.0);
        counts[(int)(u * BINS)]++;
        mean += u;
    }
    TU_ASSERT_CHI2(counts, p, BINS, N);
    ck_assert_double_eq_tol(mean / N, 0.5, 4.5 * sqrt(1.0 / 12.0 / N));
    /* Neighbouring coordinates are uncorrelated. */
    double sxy = 0.0;
    for (int i = 0; i < N; i++)
        sxy += (dfm_rng_uniform(42, 0, 0, (uint32_t)i, 0) - 0.5) *
               (dfm_rng_uniform(42, 0, 0, (uint32_t)i + 1, 0) - 0.5);
    ck_assert_double_eq_tol(sxy / N, 0.0, 4.5 / 12.0 / sqrt((double)N));
}
END_TEST

/* Standard normal CDF. */
static double phi(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }

START_TEST(normal_distribution)
{
    enum { BINS = 40 };
    const int N = (int)tu_count(200000);
    long counts[BINS] = {0};
    double p[BINS];
    double m1 = 0.0, m2 = 0.0;
    /* Bins on [-4, 4] plus two tails folded into the end bins. */
    for (int i = 0; i < BINS; i++) {
        double lo = i == 0 ? -INFINITY : -4.0 + 8.0 * i / BINS;
        double hi = i == BINS - 1 ? INFINITY : -4.0 + 8.0 * (i + 1) / BINS;
        p[i] = phi(hi) - phi(lo);
    }
    for (int i = 0; i < N; i++) {
        double z = dfm_rng_normal(5, 2, (uint64_t)i, 1, 0);
        int b = (int)floor((z + 4.0) / 8.0 * BINS);
        if (b < 0) b = 0;
        if (b >= BINS) b = BINS - 1;
        counts[b]++;
        m1 += z;
        m2 += z * z;
    }
    TU_ASSERT_CHI2(counts, p, BINS, N);
    ck_assert_double_eq_tol(m1 / N, 0.0, 4.5 / sqrt((double)N));
    ck_assert_double_eq_tol(m2 / N, 1.0, 4.5 * sqrt(2.0 / N));
}
END_TEST

START_TEST(categorical_distribution)
{
    /* Logits spanning many magnitudes, a -inf entry, and a temperature. */
    enum { K = 7 };
    const int N = (int)tu_count(200000);
    const float z[K] = {0.0f, 1.0f, -2.0f, 3.5f, -INFINITY, 0.25f, -30.0f};
    const double temps[3] = {1.0, 0.5, 2.0};
    for (int ti = 0; ti < 3; ti++) {
        double T = temps[ti], p[K], s = 0.0;
        long counts[K] = {0};
        for (int j = 0; j < K; j++) s += p[j] = exp((double)z[j] / T);
        for (int j = 0; j < K; j++) p[j] /= s;
        for (int i = 0; i < N; i++) {
            int32_t k = -1;
            ck_assert_int_eq(dfm_rng_categorical(9, 1, (uint64_t)i, 0, (uint32_t)ti, z, K, T, &k), 0);
            ck_assert(k >= 0 && k < K && k != 4);
            counts[k]++;
        }
        TU_ASSERT_CHI2(counts, p, K, N);
    }
    /* A long vector goes through the chunked path. */
    enum { V = 3000 };
    const int M = (int)tu_count(60000);
    static float zl[V];
    static double pl[V];
    static long cl[V];
    double s = 0.0;
    for (int j = 0; j < V; j++) { zl[j] = (float)(3.0 * sin(j * 0.37)); s += pl[j] = exp((double)zl[j]); }
    for (int j = 0; j < V; j++) pl[j] /= s;
    for (int i = 0; i < M; i++) {
        int32_t k;
        ck_assert_int_eq(dfm_rng_categorical(3, 0, (uint64_t)i, 0, 0, zl, V, 1.0, &k), 0);
        cl[k]++;
    }
    TU_ASSERT_CHI2(cl, pl, V, M);
}
END_TEST

START_TEST(categorical_weights_and_argmax)
{
    const double w[4] = {0.0, 2.0, 1.0, 1.0};
    long counts[4] = {0};
    const double p[4] = {0.0, 0.5, 0.25, 0.25};
    const int N = (int)tu_count(80000);
    for (int i = 0; i < N; i++) {
        int32_t k;
        ck_assert_int_eq(dfm_rng_categorical_weights(4, 0, (uint64_t)i, 0, 0, w, 4, &k), 0);
        counts[k]++;
    }
    TU_ASSERT_CHI2(counts, p, 4, N);
    const float z[3] = {1.0f, 5.0f, 5.0f};
    int32_t k = -1;
    ck_assert_int_eq(dfm_rng_categorical(1, 0, 0, 0, 0, z, 3, 0.0, &k), 0);
    ck_assert_int_eq(k, 1);
}
END_TEST

START_TEST(categorical_bad_input)
{
    const float nanz[3] = {0.0f, NAN, 1.0f};
    const float infz[3] = {0.0f, INFINITY, 1.0f};
    const float allneg[2] = {-INFINITY, -INFINITY};
    const float ok[2] = {0.0f, 0.0f};
    int32_t k = 77;
    ck_assert_int_eq(dfm_rng_categorical(1, 0, 0, 0, 0, nanz, 3, 1.0, &k), DFM_ENUMERIC);
    ck_assert_int_eq(dfm_rng_categorical(1, 0, 0, 0, 0, infz, 3, 1.0, &k), DFM_ENUMERIC);
    ck_assert_int_eq(dfm_rng_categorical(1, 0, 0, 0, 0, allneg, 2, 1.0, &k), DFM_ENUMERIC);
    ck_assert_int_eq(dfm_rng_categorical(1, 0, 0, 0, 0, ok, 2, -1.0, &k), DFM_EINVAL);
    ck_assert_int_eq(dfm_rng_categorical(1, 0, 0, 0, 0, ok, 2, NAN, &k), DFM_EINVAL);
    ck_assert_int_eq(dfm_rng_categorical(1, 0, 0, 0, 0, ok, 0, 1.0, &k), DFM_EINVAL);
    ck_assert_int_eq(dfm_rng_categorical(1, 0, 0, 0, 0, NULL, 2, 1.0, &k), DFM_EINVAL);
    ck_assert_int_eq(dfm_rng_categorical(1, 0, 0, 0, 0, ok, 2, 1.0, NULL), DFM_EINVAL);
    ck_assert_int_eq(k, 77);
    const double negw[2] = {1.0, -0.5}, zerow[2] = {0.0, 0.0}, nanw[2] = {NAN, 1.0};
    ck_assert_int_eq(dfm_rng_categorical_weights(1, 0, 0, 0, 0, negw, 2, &k), DFM_ENUMERIC);
    ck_assert_int_eq(dfm_rng_categorical_weights(1, 0, 0, 0, 0, zerow, 2, &k), DFM_ENUMERIC);
    ck_assert_int_eq(dfm_rng_categorical_weights(1, 0, 0, 0, 0, nanw, 2, &k), DFM_ENUMERIC);
    ck_assert_int_eq(k, 77);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rng");
    TCase *tc = tu_tcase("rng");
    tcase_add_test(tc, philox_known_answer);
    tcase_add_test(tc, reproducible_and_keyed);
    tcase_add_test(tc, fill_independent_of_threads_and_split);
    tcase_add_test(tc, uniform_distribution);
    tcase_add_test(tc, normal_distribution);
    tcase_add_test(tc, categorical_distribution);
    tcase_add_test(tc, categorical_weights_and_argmax);
    tcase_add_test(tc, categorical_bad_input);
    suite_add_tcase(s, tc);
    return tu_run(s) ? 1 : 0;
}
