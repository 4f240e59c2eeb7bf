/* libdfm: schedulers, the time functions of a probability path (DESIGN.md §3).
 * A scheduler is immutable after creation and may be shared between threads. */
#ifndef DFM_SCHEDULER_H
#define DFM_SCHEDULER_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dfm_scheduler dfm_scheduler;

/* Scheduler kinds (frozen values). */
#define DFM_SCHED_CONDOT     1 /* alpha = t, sigma = 1 - t */
#define DFM_SCHED_POLYNOMIAL 2 /* alpha = t^n, sigma = 1 - t^n, n > 0 */
#define DFM_SCHED_COSINE     3 /* alpha = sin(pi t / 2), sigma = cos(pi t / 2) */
#define DFM_SCHED_LINEAR_VP  4 /* alpha = t, sigma = sqrt(1 - t^2) */
#define DFM_SCHED_VP         5 /* variance preserving with beta_min, beta_max */
#define DFM_SCHED_CUSTOM     6 /* host callback */

/** Values of a scheduler at one time. kappa (discrete mixture paths) is alpha. */
typedef struct dfm_sched_values {
    double alpha, sigma, d_alpha, d_sigma;
} dfm_sched_values;

/** Host scheduler: fill *out for time t in [0, 1]; return 0, or nonzero to fail (DFM_ECALLBACK). */
typedef int (*dfm_schedule_fn)(double t, dfm_sched_values *out, void *user_data);
/** Optional inverse of alpha (kappa^{-1}): *t such that alpha(*t) = kappa. */
typedef int (*dfm_schedule_inverse_fn)(double kappa, double *t, void *user_data);

DFM_API int dfm_scheduler_create_condot(dfm_scheduler **out, const dfm_allocator *mem);
/** n > 0 and finite. */
DFM_API int dfm_scheduler_create_polynomial(dfm_scheduler **out, double n,
                                            const dfm_allocator *mem);
DFM_API int dfm_scheduler_create_cosine(dfm_scheduler **out, const dfm_allocator *mem);
DFM_API int dfm_scheduler_create_linear_vp(dfm_scheduler **out, const dfm_allocator *mem);
/** 0 <= beta_min <= beta_max, finite, beta_max > 0 (the usual values are 0.1 and 20). */
DFM_API int dfm_scheduler_create_vp(dfm_scheduler **out, double beta_min, double beta_max,
                                    const dfm_allocator *mem);
/** fn is required, inverse may be NULL; user_data is stored and passed back (not owned). The
 * callbacks may be called from several threads at once when the scheduler is shared. */
DFM_API int dfm_scheduler_create_custom(dfm_scheduler **out, dfm_schedule_fn fn,
                                        dfm_schedule_inverse_fn inverse, void *user_data,
                                        const dfm_allocator *mem);
/** A copy with its own allocator (NULL: malloc/free). */
DFM_API int dfm_scheduler_clone(dfm_scheduler **out, const dfm_scheduler *s,
                                const dfm_allocator *mem);
DFM_API void dfm_scheduler_free(dfm_scheduler *s);

/** One of DFM_SCHED_*, or 0 for NULL. */
DFM_API int dfm_scheduler_kind(const dfm_scheduler *s);
/** Values at t in [0, 1]. DFM_ERANGE for t outside, DFM_ECALLBACK (raw value in *cb_raw when
 * not NULL) when a custom callback fails, DFM_ENUMERIC when it returns non-finite values.
 * *out is written only on success. At t = 1 derivatives that are infinite (linear-VP d_sigma)
 * are returned as -INFINITY. */
DFM_API int dfm_scheduler_eval(const dfm_scheduler *s, double t, dfm_sched_values *out,
                               int *cb_raw);
/** kappa^{-1}: the t in [0, 1] with alpha(t) = kappa, for kappa in [alpha(0), alpha(1)].
 * DFM_EUNSUPPORTED for a custom scheduler without an inverse. */
DFM_API int dfm_scheduler_kappa_inverse(const dfm_scheduler *s, double kappa, double *t,
                                        int *cb_raw);

#ifdef __cplusplus
}
#endif
#endif
