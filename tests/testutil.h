/* Shared helpers for libdfm's Check suites: statistical bounds and small exact targets.
 * Header-only; every suite includes it. */
#ifndef DFM_TESTUTIL_H
#define DFM_TESTUTIL_H

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dfm/dfm.h"

/* Upper quantile of chi-square with k degrees of freedom at p = 1e-4 (Wilson-Hilferty, z=3.719):
 * a correct sampler fails a test at a fixed seed with probability about 1e-4. */
static inline double tu_chi2_bound(int k)
{
    double z = 3.719, a = 2.0 / (9.0 * k);
    double c = 1.0 - a + z * sqrt(a);
    return k * c * c * c;
}

/* Pearson chi-square of counts against probabilities p over n cells (cells with expected < 1e-12
 * must have zero counts; those with tiny expectation are pooled into one cell). Returns the
 * statistic and the degrees of freedom through *dof. */
static inline double tu_chi2(const long *counts, const double *p, int n, long total, int *dof)
{
    double stat = 0.0, pool_e = 0.0, pool_o = 0.0;
    int k = 0;
    for (int i = 0; i < n; i++) {
        double e = p[i] * (double)total;
        if (p[i] < 1e-12) {
            if (counts[i] > 0) { *dof = 1; return INFINITY; }
            continue;
        }
        if (e < 5.0) { pool_e += e; pool_o += (double)counts[i]; continue; }
        stat += ((double)counts[i] - e) * ((double)counts[i] - e) / e;
        k++;
    }
    if (pool_e > 0.0) { stat += (pool_o - pool_e) * (pool_o - pool_e) / pool_e; k++; }
    *dof = k > 1 ? k - 1 : 1;
    return stat;
}

/* Total variation distance between an empirical histogram and p. */
static inline double tu_tv(const long *counts, const double *p, int n, long total)
{
    double tv = 0.0;
    for (int i = 0; i < n; i++) tv += fabs((double)counts[i] / (double)total - p[i]);
    return 0.5 * tv;
}

#define TU_ASSERT_CHI2(counts, p, n, total)                                                     \
    do {                                                                                        \
        int dof_;                                                                               \
        double st_ = tu_chi2((counts), (p), (n), (total), &dof_);                               \
        ck_assert_msg(st_ < tu_chi2_bound(dof_), "chi2 = %g exceeds bound %g (dof %d)", st_,     \
                      tu_chi2_bound(dof_), dof_);                                               \
    } while (0)

/* Runs a suite and returns the number of failures (used by every test main). */
static inline int tu_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed;
}

/* A TCase with a generous timeout (statistical tests run many samples). */
static inline TCase *tu_tcase(const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 300);
    return tc;
}

/* Test-size knob (docs/reliability.md): DFM_TEST_SCALE = s (an integer 1..1000, default 1) divides
 * the sample counts of the statistical suites, so that the instrumented runs (valgrind,
 * sanitizers) stay affordable. Every bound stays valid because it is computed from the count
 * actually drawn: chi-square bounds depend only on the degrees of freedom, and fixed
 * tolerances on a mean or a total variation are widened by sqrt(n_full / n) with tu_tol.
 * With s = 1 (make check) every suite runs at full size and full power. */
static inline long tu_scale(void)
{
    static long cached = 0;
    if (cached == 0) {
        const char *e = getenv("DFM_TEST_SCALE");
        long v = e ? strtol(e, NULL, 10) : 1;
        if (v < 1) v = 1;
        if (v > 1000) v = 1000;
        cached = v;
    }
    return cached;
}

/* A sample count n of a statistical test, divided by the scale (at least min_n, at most n). */
static inline size_t tu_count_min(size_t n, size_t min_n)
{
    size_t m = n / (size_t)tu_scale();
    if (m < min_n) m = min_n;
    return m < n ? m : n;
}
static inline size_t tu_count(size_t n) { return tu_count_min(n, 1); }

/* A statistical tolerance tol calibrated for n_full samples, for the n samples actually drawn:
 * standard errors grow like 1 / sqrt(n). */
static inline double tu_tol(double tol, size_t n_full, size_t n)
{
    return n >= n_full || n == 0 ? tol : tol * sqrt((double)n_full / (double)n);
}

/* A path-sample argument descriptor over tokens (x0 drawn from the source; others NULL). */
static inline dfm_path_sample_args tu_sample_args(size_t rows, const double *t,
                                                  const int32_t *x1, int32_t *xt)
{
    dfm_path_sample_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = rows;
    a.t = t;
    a.x1_tokens = x1;
    a.xt_tokens = xt;
    return a;
}

/* A loss argument descriptor over tokens (the members the token losses read; others NULL). */
static inline dfm_loss_args tu_loss_args(size_t rows, const double *t, const int32_t *x1,
                                         const int32_t *xt, const float *out, float *grad,
                                         double *values, double *loss)
{
    dfm_loss_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = rows;
    a.t = t;
    a.x1_tokens = x1;
    a.xt_tokens = xt;
    a.out = out;
    a.grad = grad;
    a.values = values;
    a.loss = loss;
    return a;
}

#endif
