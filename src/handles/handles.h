/* Private layouts of the polymorphic handles (path, generator, loss, sampler). Each module
 * supplies an ops table for its kinds and keeps its own data behind impl. The generic
 * functions in handles.c (free, clone, options, last_error) dispatch through the tables. */
#ifndef DFM_HANDLES_H
#define DFM_HANDLES_H

#include "core/internal.h"
#include "handles/scheduler_impl.h"
#include "handles/space_impl.h"

typedef struct dfm__path_ops {
    void (*destroy)(dfm_path *p);                        /* free p->impl (may be NULL) */
    int (*clone_impl)(dfm_path *dst, const dfm_path *src); /* deep-copy impl; dst->b.mem set */
    int (*sample)(dfm_path *p, const dfm_path_sample_args *a); /* args already NULL-checked */
    int (*set_int)(dfm_path *p, int opt, int64_t v);     /* kind options, may be NULL */
} dfm__path_ops;

struct dfm_path {
    dfm_base b;
    int kind;
    const dfm__path_ops *ops;
    dfm_space space;          /* copies: handles never borrow */
    dfm_scheduler sched;
    int has_sched;
    void *impl;
};

typedef struct dfm__gen_ops {
    void (*destroy)(dfm_generator *g);
    int (*clone_impl)(dfm_generator *dst, const dfm_generator *src);
    /* Set s->ops and s->impl for method; return DFM_EUNSUPPORTED if the kind lacks it. */
    int (*sampler_init)(dfm_sampler *s, int method);
    int (*set_int)(dfm_generator *g, int opt, int64_t v);
    int (*get_int)(const dfm_generator *g, int opt, int64_t *v);
    int (*set_double)(dfm_generator *g, int opt, double v);
    int (*get_double)(const dfm_generator *g, int opt, double *v);
} dfm__gen_ops;

struct dfm_generator {
    dfm_base b;
    int kind;
    int param;
    size_t out_stride;
    const dfm__gen_ops *ops;
    dfm_path *path;           /* owned copy, or NULL */
    void *impl;
};

typedef struct dfm__loss_ops {
    void (*destroy)(dfm_loss *l);
    int (*clone_impl)(dfm_loss *dst, const dfm_loss *src);
    int (*eval)(dfm_loss *l, const dfm_loss_args *a); /* args NULL-checked for a, out, loss */
    int (*set_int)(dfm_loss *l, int opt, int64_t v);
    int (*get_int)(const dfm_loss *l, int opt, int64_t *v);
    int (*set_double)(dfm_loss *l, int opt, double v);
    int (*get_double)(const dfm_loss *l, int opt, double *v);
} dfm__loss_ops;

struct dfm_loss {
    dfm_base b;
    int kind;
    int reduction;
    size_t out_stride;
    size_t row_stride;        /* 0, or the row stride of out and grad for the discrete losses:
                                 a product loss runs such a part in place on its slice */
    const dfm__loss_ops *ops;
    dfm_generator *gen;       /* owned copy, or NULL (losses built on a generator) */
    size_t n_tokens, n_reals; /* the loss's space (the other modality's args must be NULL) */
    void *impl;
};

typedef struct dfm__sampler_ops {
    void (*destroy)(dfm_sampler *s);
    int (*run)(dfm_sampler *s, const dfm_run_args *a); /* a, a->model NULL-checked */
    int (*set_int)(dfm_sampler *s, int opt, int64_t v);
    int (*get_int)(const dfm_sampler *s, int opt, int64_t *v);
    int (*set_double)(dfm_sampler *s, int opt, double v);
    int (*get_double)(const dfm_sampler *s, int opt, double *v);
} dfm__sampler_ops;

#define DFM__N_STATS 8

struct dfm_sampler {
    dfm_base b;
    int method;
    const dfm__sampler_ops *ops;
    dfm_generator *gen;       /* owned copy */
    size_t n_steps;           /* uniform grid when grid == NULL */
    double *grid;             /* host grid (n_grid points) or NULL */
    size_t n_grid;
    int stop;                 /* dfm_sampler_request_stop (atomic: any thread may request) */
    int64_t stats[DFM__N_STATS];
    void *impl;
};

/* Allocate a zeroed handle of the given size with a validated allocator and init its base.
 * (Every handle struct starts with dfm_base.) */
int dfm__handle_new(void **out, size_t size, const dfm_allocator *mem);
/* Path construction helper: copies space and (optional) scheduler into the path. */
int dfm__path_new(dfm_path **out, int kind, const dfm__path_ops *ops, const dfm_space *space,
                  const dfm_scheduler *sched, const dfm_allocator *mem);
/* Generator construction helper: clones path (may be NULL) into the generator. */
int dfm__gen_new(dfm_generator **out, int kind, int param, size_t out_stride,
                 const dfm__gen_ops *ops, const dfm_path *path, const dfm_allocator *mem);
/* Loss construction helper: clones gen (may be NULL). */
int dfm__loss_new(dfm_loss **out, int kind, const dfm__loss_ops *ops, const dfm_generator *gen,
                  const dfm_allocator *mem);

/* Sampler time grid: number of steps and the i-th time (0 <= i <= n_steps). */
static inline size_t dfm__sampler_nsteps(const dfm_sampler *s)
{
    return s->grid ? s->n_grid - 1 : s->n_steps;
}
static inline double dfm__sampler_time(const dfm_sampler *s, size_t i)
{
    if (s->grid) return s->grid[i];
    return i == s->n_steps ? 1.0 : (double)i / (double)s->n_steps;
}
/* A stop request (dfm_sampler_request_stop, possibly from another thread) is pending. */
static inline int dfm__stop_requested(const dfm_sampler *s)
{
#if defined(__GNUC__)
    return __atomic_load_n(&s->stop, __ATOMIC_ACQUIRE);
#else
    return *(const volatile int *)&s->stop;
#endif
}
/* End of a sampler step: the progress callback (a nonzero value stops the run with
 * DFM_ESTOPPED and is kept as the callback status), then a pending stop request. */
int dfm__step_done(dfm_sampler *s, dfm_progress_fn fn, void *data, int step, int n_steps,
                   double t);
/* Start and end of a sampler run (dfm_sampler_run, dfm_sampler_log_likelihood): dfm__enter,
 * statistics reset, a stop requested while no run was in progress honoured (DFM_ESTOPPED);
 * the end clears the stop request and calls dfm__leave. */
int dfm__sampler_enter(dfm_sampler *s, const char *call);
int dfm__sampler_leave(dfm_sampler *s, int st);
/* Unguarded bodies of dfm_path_sample and dfm_loss_eval, for public calls that already
 * entered the handle (dfm_path_sample_parts, dfm_loss_eval_parts). */
int dfm__path_sample(dfm_path *p, const dfm_path_sample_args *a);
int dfm__loss_eval(dfm_loss *l, const dfm_loss_args *a);
/* Validates save_times against the grid direction; returns 0 or an error on s. */
int dfm__check_run_common(dfm_sampler *s, const dfm_run_args *a, size_t n_tokens, size_t n_reals);

#endif
