/* libdfm: generator matching across processes (see docs/gm.md): product (multimodal) paths,
 * generators and losses; superposition of generators and classifier-free guidance; the
 * training step; a general generator-matching loss for host-defined conditional generators. */
#ifndef DFM_GM_H
#define DFM_GM_H

#include "common.h"
#include "space.h"
#include "scheduler.h"
#include "path.h"
#include "generator.h"
#include "loss.h"
#include "sampler.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Random-stream seeds of product parts: part k of a product path samples with the seed
 * seed ^ (DFM_GM_PART_SEED_MUL * (k + 1)) so that parts of one kind draw independently. */
#define DFM_GM_PART_SEED_MUL 0x9E3779B97F4A7C15ull

/* ---- product (multimodal) spaces ---- */

/** DFM_PATH_PRODUCT from n (1..DFM_MAX_PARTS) part paths (each copied; any kind with a
 * sampler: mixture, affine, metric, finite). The space is the product of the parts' spaces in
 * order: part k's tokens follow the tokens of parts < k, its reals the reals of parts < k.
 * dfm_path_sample samples every part at the row's time t. */
DFM_API int dfm_path_create_product(dfm_path **out, const dfm_path *const *parts, size_t n,
                                    const dfm_allocator *mem);
/** Number of parts of a product path (1 for any other path, 0 for NULL). */
DFM_API size_t dfm_path_n_parts(const dfm_path *p);
/** Part k of a product path (the path's own copy), or NULL. */
DFM_API const dfm_path *dfm_path_part(const dfm_path *p, size_t k);
/** dfm_path_sample with per-part times: part k of row r at part_t[r * n_parts + k] (each in
 * [0, 1]); part_t NULL: every part at args->t (args->t must still be given). */
DFM_API int dfm_path_sample_parts(dfm_path *p, const dfm_path_sample_args *args,
                                  const double *part_t);

/** DFM_GEN_PRODUCT from n part generators (copied), one per part: factorized mixture
 * generators (logits or rates), velocity and diffusion generators, and superpositions of
 * those. The model is called once per stage with the whole row (all tokens, all reals) and
 * writes out[rows][out_stride], out_stride = sum of the parts' strides, part k's output in
 * its slice (parts in order). Parameterization DFM_PARAM_MIXED. */
DFM_API int dfm_generator_create_product(dfm_generator **out, const dfm_generator *const *parts,
                                         size_t n, const dfm_allocator *mem);
/** Per-part sampling times: write part_t[k] = tau_k(t) in [0, 1] for the n_parts parts at the
 * sampler's time t (nondecreasing in t). Return 0, nonzero to fail (DFM_ECALLBACK). */
typedef int (*dfm_part_time_fn)(double t, double *part_t, size_t n_parts, void *user_data);
/** Gives each part of a product generator its own sampling time: in the step t -> t', part k
 * moves from tau_k(t) to tau_k(t') and the model sees io->part_t = tau(t) (NULL fn: every
 * part at t). One-stage methods only (EXACT, EULER, EULER_MARUYAMA). user_data not owned. */
DFM_API int dfm_generator_set_part_time_fn(dfm_generator *g, dfm_part_time_fn fn,
                                           void *user_data);
/** Number of parts of a product generator (1 otherwise, 0 for NULL). */
DFM_API size_t dfm_generator_n_parts(const dfm_generator *g);

/** DFM_LOSS_PRODUCT: sum_k weights[k] L_k, L_k the loss of part k (copied) evaluated on part
 * k's slices of the tokens, reals and model output (out_stride = sum of the parts' strides);
 * its gradient goes to part k's slice of grad, times weights[k]. product_path gives the part
 * layout (DFM_PATH_PRODUCT with n parts, or any path when n == 1). weights: n finite values
 * (NULL: all 1). Part losses must fit their part: DFM_EINVAL with a message otherwise. */
DFM_API int dfm_loss_create_product(dfm_loss **out, const dfm_path *product_path,
                                    const dfm_loss *const *parts, const double *weights,
                                    size_t n, const dfm_allocator *mem);
/** dfm_loss_eval with per-part times (rows x n_parts, or NULL: args->t for every part).
 * Works on any loss; for a non-product loss n_parts = 1. */
DFM_API int dfm_loss_eval_parts(dfm_loss *l, const dfm_loss_args *args, const double *part_t);

/* ---- superposition and guidance ---- */

/** Weights of a superposition as a function of t: write n finite weights. Return 0, nonzero to
 * fail (DFM_ECALLBACK). */
typedef int (*dfm_weight_fn)(double t, double *weights, size_t n, void *user_data);

/** DFM_GEN_SUPERPOSITION: L = sum_k w_k L_k over n (1..DFM_MAX_PARTS) generators of one space
 * (copied): all continuous (velocity / diffusion generators on affine paths, no sampling
 * scheduler) or all discrete (factorized mixture generators, mixture backward generators).
 * weights: n finite values (any sign; NULL: all 1/n). Output layout: per model branch, the
 * concatenation of the components' outputs in component order (see
 * dfm_generator_superposition_set_input); out_stride is the DFM_BRANCH_MAIN stride. */
DFM_API int dfm_generator_create_superposition(dfm_generator **out,
                                               const dfm_generator *const *gens,
                                               const double *weights, size_t n,
                                               const dfm_allocator *mem);
/** Replaces the constant weights by fn(t) (NULL: back to the constants). Not owned. */
DFM_API int dfm_generator_set_weight_fn(dfm_generator *g, dfm_weight_fn fn, void *user_data);
/** Which model call feeds component k: branch (DFM_BRANCH_MAIN or DFM_BRANCH_UNCOND) and
 * share_with = -1 (its own slice) or an earlier component j < k of the same branch and
 * out_stride whose slice it reads (one output shared by several generators). */
DFM_API int dfm_generator_superposition_set_input(dfm_generator *g, size_t k, int branch,
                                                  int64_t share_with);
/** Floats per row of the model call with the given branch (0 when that branch is not used). */
DFM_API size_t dfm_generator_branch_stride(const dfm_generator *g, int branch);
/** Classifier-free guidance (1 + w) L_cond - w L_uncond as a superposition: cond reads the
 * DFM_BRANCH_MAIN call, uncond (NULL: a copy of cond) the DFM_BRANCH_UNCOND call. w finite. */
DFM_API int dfm_generator_create_guidance(dfm_generator **out, const dfm_generator *cond,
                                          const dfm_generator *uncond, double w,
                                          const dfm_allocator *mem);
/** The backward-time generator of a mixture path, u(y, x) = kappa'/kappa [delta_x(y) - p0(y)]
 * (Gat et al. 2024): needs no model output (out_stride 0). Its rates are negative off the
 * diagonal, so it is only usable inside a superposition, e.g. (1 + c) forward - c backward
 * = the corrector. */
DFM_API int dfm_generator_create_mixture_backward(dfm_generator **out, const dfm_path *path,
                                                  const dfm_allocator *mem);
/** Rate entries (or diffusion coefficients) clamped at zero in the last completed step of a
 * superposition / product sampler (readable from the progress callback). */
DFM_API int dfm_sampler_step_clamped(const dfm_sampler *s, int64_t *count);

/* ---- the training step ---- */

/** Backward callback: io is the forward call's descriptor (io->out holds the forward output),
 * grad (rows x out_stride) is dLoss/dout. Return 0, nonzero to fail (DFM_ECALLBACK). */
typedef int (*dfm_backward_fn)(const dfm_model_io *io, const float *grad, void *user_data);

typedef struct dfm_trainer dfm_trainer;

/* Trainer options (generator matching ids 400-499, frozen). */
#define DFM_OPT_GM_TIME_KIND  400 /* int DFM_TIME_* (discrete_loss.h; default uniform) */
#define DFM_OPT_GM_TIME_EPS   401 /* double in [0, 1): t <= 1 - eps (default 1e-3) */
#define DFM_OPT_GM_TIME_P1    402 /* double: logit-normal mean / strata count (default 0) */
#define DFM_OPT_GM_TIME_P2    403 /* double >= 0: logit-normal std (default 1) */
#define DFM_OPT_GM_PART_TIMES 404 /* int 0/1: independent time per product part (default 0) */

/** A trainer for loss on path (both copied). The loss's out_stride is the model's. */
DFM_API int dfm_trainer_create(dfm_trainer **out, const dfm_path *path, const dfm_loss *loss,
                               const dfm_allocator *mem);
DFM_API void dfm_trainer_free(dfm_trainer *tr);
DFM_API const char *dfm_trainer_last_error(const dfm_trainer *tr);
DFM_API int dfm_trainer_callback_status(const dfm_trainer *tr);
/** Options: DFM_OPT_THREADS, DFM_OPT_SEED, DFM_OPT_REDUCTION, DFM_OPT_GM_*. */
DFM_API int dfm_trainer_set_int(dfm_trainer *tr, int option, int64_t value);
DFM_API int dfm_trainer_get_int(const dfm_trainer *tr, int option, int64_t *value);
DFM_API int dfm_trainer_set_double(dfm_trainer *tr, int option, double value);
DFM_API int dfm_trainer_get_double(const dfm_trainer *tr, int option, double *value);
/** The step counter (successful steps so far; the draw index of the next step). */
DFM_API uint64_t dfm_trainer_step_count(const dfm_trainer *tr);
/** Sets the step counter (resume, or redo a step). */
DFM_API int dfm_trainer_set_step(dfm_trainer *tr, uint64_t step);
/** Number of time values per row (product parts with DFM_OPT_GM_PART_TIMES, else 1). */
DFM_API size_t dfm_trainer_n_times(const dfm_trainer *tr);

/** Arguments of dfm_trainer_step; appended to only. */
typedef struct dfm_train_args {
    size_t struct_size;
    size_t rows;
    size_t row_offset;        /* global index of row 0 (random streams are keyed by it) */
    const int32_t *x1_tokens; /* rows x n_tokens data (NULL when the space has no tokens) */
    const float *x1_reals;    /* rows x n_reals data */
    const int32_t *x0_tokens; /* optional coupling (NULL: drawn from the source) */
    const float *x0_reals;    /* optional coupling (NULL: N(0, I)) */
    const uint8_t *fixed;     /* rows x n_tokens, nonzero: not counted by the loss, or NULL */
    dfm_model_fn forward;     /* fills io->out */
    dfm_backward_fn backward; /* receives dLoss/dout; may be NULL (evaluation only) */
    void *user_data;
    double *loss;             /* out: the reduced loss */
    double *t_out;            /* out (may be NULL): rows x n_times times used */
} dfm_train_args;

/** One step: t (the trainer's time distribution, draw = step counter), x0 and x_t, forward,
 * loss and gradient, backward; increments the step counter on success. */
DFM_API int dfm_trainer_step(dfm_trainer *tr, const dfm_train_args *args);

/** Arguments of dfm_trainer_draw; appended to only. */
typedef struct dfm_train_draw_args {
    size_t struct_size;
    size_t rows;
    size_t row_offset;
    const int32_t *x1_tokens;
    const float *x1_reals;
    const int32_t *x0_tokens; /* optional coupling */
    const float *x0_reals;    /* optional coupling */
    double *t;                /* out: rows row times */
    double *part_t;           /* out (may be NULL): rows x n_times */
    int32_t *xt_tokens;       /* out: rows x n_tokens */
    float *xt_reals;          /* out: rows x n_reals */
    float *x0_reals_out;      /* out (may be NULL): the x0 used (the MSE loss needs it) */
} dfm_train_draw_args;

/** The sampling half of dfm_trainer_step for hosts that drive their own loop: the same t and
 * x_t the next step would draw (does not advance the counter). */
DFM_API int dfm_trainer_draw(dfm_trainer *tr, const dfm_train_draw_args *args);

/* ---- general generator-matching loss ---- */

/** What a host conditional generator receives: fill target (rows x target_stride) with the
 * conditional generator at (t, x_t | x1, x0). All pointers valid during the call only. */
typedef struct dfm_cond_target_io {
    size_t struct_size;
    size_t rows;
    const double *t;
    const int32_t *xt_tokens; /* rows x n_tokens, or NULL */
    const int32_t *x1_tokens;
    size_t n_tokens;
    const float *xt_reals;    /* rows x n_reals, or NULL */
    const float *x1_reals;
    const float *x0_reals;
    size_t n_reals;
    float *target;
    size_t target_stride;
} dfm_cond_target_io;
typedef int (*dfm_cond_target_fn)(const dfm_cond_target_io *io, void *user_data);

/* Kinds of dfm_loss_create_gm. */
#define DFM_GM_VELOCITY 1 /* Euclidean space; target = conditional velocity; MSE */
#define DFM_GM_RATES    2 /* discrete space; target = conditional per-token rates; Bregman */

/** Generator-matching loss for a host-defined conditional generator (DFM_LOSS_MSE for
 * DFM_GM_VELOCITY: sum_j (out_j - target_j)^2, out_stride = n_reals; DFM_LOSS_BREGMAN_RATES for
 * DFM_GM_RATES: per token i, D(a, b) = sum_{y != x_t^i} a_y log(a_y / b_y) - a_y + b_y with
 * a = target, b = out, out_stride = sum of the tokens' vocabularies). fn is required. */
DFM_API int dfm_loss_create_gm(dfm_loss **out, const dfm_space *space, int kind,
                               dfm_cond_target_fn fn, void *user_data, const dfm_allocator *mem);

#ifdef __cplusplus
}
#endif
#endif
