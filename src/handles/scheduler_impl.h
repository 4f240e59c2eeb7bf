/* Private layout of dfm_scheduler (a small value: handles copy it). */
#ifndef DFM_SCHEDULER_IMPL_H
#define DFM_SCHEDULER_IMPL_H

#include "core/internal.h"

struct dfm_scheduler {
    dfm_allocator mem;
    int kind;
    double p1, p2;               /* polynomial n; VP beta_min, beta_max */
    dfm_schedule_fn fn;          /* custom */
    dfm_schedule_inverse_fn inverse;
    void *user;
};

/* Unchecked evaluation for library code (t already validated). */
int dfm__sched_eval(const dfm_scheduler *s, double t, dfm_sched_values *v, int *cb_raw);
int dfm__sched_kappa_inverse(const dfm_scheduler *s, double k, double *t, int *cb_raw);

#endif
