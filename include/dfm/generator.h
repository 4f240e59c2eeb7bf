/* libdfm: generators (generic part). A generator turns model output into dynamics: velocities
 * (ODE), diffusions (SDE), factorized rates on [V]^d, rate matrices on finite spaces, and
 * superpositions of these. Kind-specific creators live in the module headers. */
#ifndef DFM_GENERATOR_H
#define DFM_GENERATOR_H

#include "common.h"
#include "path.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dfm_generator dfm_generator;

/* Generator kinds (frozen). */
#define DFM_GEN_FACTORIZED    1 /* per-token rates on [V]^d (mixture or metric path) */
#define DFM_GEN_VELOCITY      2 /* ODE velocity on R^D */
#define DFM_GEN_DIFFUSION     3 /* SDE on R^D */
#define DFM_GEN_RATE_MATRIX   4 /* full rate matrix on a finite space */
#define DFM_GEN_SUPERPOSITION 5 /* weighted sum of generators on one space */
#define DFM_GEN_PRODUCT       6 /* one generator per part of a product space */

/* Parameterizations: what the model's output means (frozen). */
#define DFM_PARAM_LOGITS     1 /* posterior logits p_{1|t} over each token's vocabulary */
#define DFM_PARAM_RATES      2 /* direct rates (per-token rates, or rate-matrix rows) */
#define DFM_PARAM_VELOCITY   3 /* velocity u_t(x) */
#define DFM_PARAM_X1         4 /* x1-prediction E[X1 | X_t = x] */
#define DFM_PARAM_EPSILON    5 /* epsilon (= x0) prediction */
#define DFM_PARAM_SCORE      6 /* score grad log p_t(x) */
#define DFM_PARAM_STATE_LOGITS 7 /* posterior logits over the S states of a finite space */
#define DFM_PARAM_MIXED      8 /* product generators: each part has its own */

DFM_API void dfm_generator_free(dfm_generator *g);
DFM_API int dfm_generator_clone(dfm_generator **out, const dfm_generator *g,
                                const dfm_allocator *mem);
DFM_API int dfm_generator_kind(const dfm_generator *g);
DFM_API int dfm_generator_parameterization(const dfm_generator *g);
/** Floats per row the model writes (dfm_model_io.out_stride); 0 for NULL. */
DFM_API size_t dfm_generator_out_stride(const dfm_generator *g);
/** The generator's own copy of its path (valid while it lives), or NULL. */
DFM_API const dfm_path *dfm_generator_path(const dfm_generator *g);
DFM_API const char *dfm_generator_last_error(const dfm_generator *g);
DFM_API int dfm_generator_callback_status(const dfm_generator *g);
DFM_API int dfm_generator_set_int(dfm_generator *g, int option, int64_t value);
DFM_API int dfm_generator_get_int(const dfm_generator *g, int option, int64_t *value);
DFM_API int dfm_generator_set_double(dfm_generator *g, int option, double value);
DFM_API int dfm_generator_get_double(const dfm_generator *g, int option, double *value);

#ifdef __cplusplus
}
#endif
#endif
