/* libdfm: probability paths (generic part). A path joins a source p (t = 0) to the data q (t = 1)
 * and knows its conditional generator. Kind-specific creators live in discrete.h, continuous.h,
 * ctmc.h and gm.h. */
#ifndef DFM_PATH_H
#define DFM_PATH_H

#include "common.h"
#include "space.h"
#include "scheduler.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dfm_path dfm_path;

/* Path kinds (frozen). */
#define DFM_PATH_MIXTURE 1 /* discrete mixture path, [V]^d */
#define DFM_PATH_AFFINE  2 /* affine Gaussian path, R^D */
#define DFM_PATH_METRIC  3 /* metric-induced discrete path, [V]^d */
#define DFM_PATH_PRODUCT 4 /* one path per part of a product space */
#define DFM_PATH_FINITE  5 /* a path on a finite state space given by conditional rate matrices */

/** Arguments of dfm_path_sample: draw x_t ~ p_t(. | x1) for each row (and, for continuous parts,
 * the conditional target velocity). Appended to only; set struct_size = sizeof(dfm_path_sample_args).
 * Unused members (the other modality) must be NULL. */
typedef struct dfm_path_sample_args {
    size_t struct_size;
    size_t rows;
    size_t row_offset;        /* global row index of row 0 (random streams are keyed by it) */
    uint32_t draw;            /* a counter the host bumps per call (e.g. the training step) */
    const double *t;          /* rows times in [0, 1] */
    const int32_t *x1_tokens; /* rows x n_tokens data */
    const int32_t *x0_tokens; /* rows x n_tokens source samples, or NULL: drawn from the source */
    int32_t *xt_tokens;       /* out: rows x n_tokens */
    const float *x1_reals;    /* rows x n_reals data */
    const float *x0_reals;    /* rows x n_reals source samples (a coupling), or NULL: N(0, I) */
    float *xt_reals;          /* out: rows x n_reals */
    float *target_reals;      /* out (may be NULL): conditional velocity alpha' x1 + sigma' x0 */
    float *x0_reals_out;      /* out (may be NULL): the x0 used (drawn or given) */
} dfm_path_sample_args;

DFM_API void dfm_path_free(dfm_path *p);
DFM_API int dfm_path_clone(dfm_path **out, const dfm_path *p, const dfm_allocator *mem);
/** One of DFM_PATH_*, 0 for NULL. */
DFM_API int dfm_path_kind(const dfm_path *p);
/** The path's own copy of its space (valid while the path lives); NULL for NULL. */
DFM_API const dfm_space *dfm_path_space(const dfm_path *p);
/** The path's own copy of its scheduler, or NULL when it has none (products, finite paths). */
DFM_API const dfm_scheduler *dfm_path_scheduler(const dfm_path *p);
/** Message of the last failed call on this handle ("" if none); never NULL. */
DFM_API const char *dfm_path_last_error(const dfm_path *p);
/** Raw value of the last failed callback on this handle (0 if none). */
DFM_API int dfm_path_callback_status(const dfm_path *p);
/** Options: DFM_OPT_THREADS, DFM_OPT_SEED, and kind-specific ones. */
DFM_API int dfm_path_set_int(dfm_path *p, int option, int64_t value);
DFM_API int dfm_path_get_int(const dfm_path *p, int option, int64_t *value);
/** Conditional sampling (see dfm_path_sample_args). Outputs are written only on success. */
DFM_API int dfm_path_sample(dfm_path *p, const dfm_path_sample_args *args);

#ifdef __cplusplus
}
#endif
#endif
