/* The samplers of factorized generators, inside the discrete module: the handle's options, the
 * per-step context the row kernels read, and the kernels themselves. docs/discrete.md has the
 * math. Call graph (no loops): ds_options.c (options, ops table) -> discrete_sampler.c (the run:
 * validate, draw source, model calls, step, record) -> ds_reveal.c (unmasking orders, counts,
 * remasking), ds_leap.c (tau-leaping, theta-trapezoidal) -> ds_shape.c (posterior shaping,
 * scores, draws) and the exact / Euler kernels in discrete_sampler.c. */
#ifndef DFM_DS_SAMPLER_H
#define DFM_DS_SAMPLER_H

#include "discrete/discrete_impl.h"
#include "core/rng_impl.h"

/* Random streams of the sampler beyond those of discrete_impl.h. */
#define DFM__DS_STREAM_ORDER  0x28u /* random order keys (counted reveals), coord i, step i */
#define DFM__DS_STREAM_STAGE2 0x29u /* theta-trapezoidal second stage: coin + target, step i */

/* Options of a sampler of a factorized generator (docs/discrete.md). */
typedef struct ds_impl {
    double temp, corr, eta;
    int64_t chunk;             /* rows per model call, 0: all, DFM_CHUNK_AUTO */
    dfm_corrector_fn cfn;
    void *cud;
    int order, count, greedy, remask, time_indep;
    int64_t block_len, top_k;
    double threshold, top_p, min_p;
    double remask_eta, loop_start, loop_end, loop_kappa, theta;
    dfm_step_fn step_fn;
    void *step_ud;
} ds_impl;

/* The row kernel a step runs. */
enum {
    DS_K_STEP = 0, /* exact step, flow_matching's Euler, Euler on rates (per coordinate) */
    DS_K_REVEAL,   /* unmasking engine: orders, counts, blocks, greedy (per row) */
    DS_K_REMASK,   /* ReMDM: remask revealed positions, unmask masked ones (per coordinate) */
    DS_K_LEAP,     /* tau-leaping, and the first stage of theta-trapezoidal (per coordinate) */
    DS_K_STAGE2    /* the second stage of theta-trapezoidal (per coordinate) */
};

typedef struct ds_err { int code; size_t row, coord; long y; } ds_err;
typedef struct ds_cand { double score; float conf; int32_t idx; } ds_cand;

/* Shaping of a posterior held as float weights: top-k, then top-p, then min-p. */
typedef struct ds_shape {
    int on;
    int64_t top_k;             /* 0: off */
    double top_p, min_p;       /* 1, 0: off */
} ds_shape;

/* Per-thread scratch of the row kernels. */
typedef struct ds_scratch {
    float *w;                  /* 2 V weights */
    uint32_t *list;            /* V indices (shaping selection) */
    ds_cand *cand;             /* d candidates (unmasking engine) */
} ds_scratch;

typedef struct step_ctx {
    const dfm_sampler *s;
    const dfm__mixture *m;
    const dfm_run_args *a;
    int32_t *state;            /* the whole batch */
    const int32_t *prev;       /* theta-trapezoidal: the state before the first stage */
    const float *const *out;   /* per batch row: its model output (first stage) */
    const float *const *out2;  /* per batch row: the second stage's model output */
    size_t row0, nitems;       /* first batch row of the work; work items */
    size_t nblk;               /* coordinate blocks per row (per-coordinate kernels) */
    size_t d, V, stride;
    ds_scratch *scr;           /* per thread */
    ds_err *err;               /* per thread */
    int64_t *jumps, *clamped;  /* per thread */
    uint32_t step;
    int kind, method, param, final_draw, extra;
    float scale;               /* 1 / temperature */
    double h, pj, A, B;        /* step length; exact jump probability; rates on p and on p0 */
    ds_shape shape;
    /* unmasking engine */
    int order, count, greedy, last;
    double threshold;
    size_t lo, hi;             /* coordinates of the active block */
    /* remasking */
    double sigma, qu;          /* remask probability; unmask probability of a masked position */
    /* theta-trapezoidal */
    double A2, B2, alpha1, alpha2, hfrac; /* rates at rho; stage weights; stage length / h */
} step_ctx;

/* ds_shape.c: validity, shaping, draws and scores. */
/* Records an error at (row r, coordinate i) unless this thread already has a lower one. */
int dfm__ds_fail_at(step_ctx *c, int tid, int code, size_t r, size_t i, long y);
/* Applies c->shape to the weights w (total tot) and returns the new total; entries removed
 * are set to 0. A no-op (tot returned) when shaping is off. */
double dfm__ds_shape(const step_ctx *c, float *w, double tot, uint32_t *list);
/* The token drawn from the weights w (total tot, already shaped) with u, or the greedy one;
 * -1 when no mass is left. */
int32_t dfm__ds_pick(const step_ctx *c, const float *w, double tot, double u);
/* Draw from the weights w (total tot) excluding index x; -1 when no mass is left. */
int32_t dfm__ds_draw_except(float *w, size_t V, double tot, int32_t x, double u);
/* Softmax weights of logits z at the step's temperature into w, shaped; returns the total.
 * z must have passed the max / finiteness check (mx its max). */
double dfm__ds_posterior(const step_ctx *c, const float *z, float mx, float *w, uint32_t *list);
/* Sum of the rates except index skip; *bad set for NaN, Inf or negative entries. */
double dfm__ds_rate_sum(const float *u, size_t n, int *bad);

/* ds_reveal.c: the unmasking engine on row r; the ReMDM step on coordinates [i0, i1). */
int dfm__ds_reveal_row(step_ctx *c, size_t r, int tid);
int dfm__ds_remask_row(step_ctx *c, size_t r, size_t i0, size_t i1, int tid, int64_t *jumps);
/* ds_leap.c: tau-leaping (also the first stage) and the second stage of theta-trapezoidal. */
int dfm__ds_leap_row(step_ctx *c, size_t r, size_t i0, size_t i1, int tid, int64_t *jumps);
int dfm__ds_stage2_row(step_ctx *c, size_t r, size_t i0, size_t i1, int tid, int64_t *jumps);

/* discrete_sampler.c: the run (the ops table's run). */
int dfm__ds_run(dfm_sampler *s, const dfm_run_args *a);

#endif
