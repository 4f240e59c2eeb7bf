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

#endif
