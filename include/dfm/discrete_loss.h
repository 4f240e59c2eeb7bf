/* libdfm: discrete losses, training-time sampling and the discrete ELBO (see docs/discrete_loss.md). */
#ifndef DFM_DISCRETE_LOSS_H
#define DFM_DISCRETE_LOSS_H

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

/** Generalized KL loss of a discrete mixture path (Gat et al. 2024; Lipman et al. 2024 §7).
 * The model output is posterior logits z, rows x (d * V) (out_stride = d * V); per coordinate,
 * with p = softmax(z^i) and c = kappa'_t / (1 - kappa_t):
 *   l_i = -c [p(x_t^i) - delta(x1^i, x_t^i) + (1 - delta(x1^i, x_t^i)) log p(x1^i)].
 * path: a DFM_PATH_MIXTURE path (copied: the loss keeps its own copy). Times must be < 1
 * (c is infinite at t = 1): DFM_ERANGE otherwise. Reductions: DFM_OPT_REDUCTION. */
DFM_API int dfm_loss_create_generalized_kl(dfm_loss **out, const dfm_path *mixture_path,
                                           const dfm_allocator *mem);

/** Cross-entropy -log p_{1|t}(x1^i) on posterior logits (out_stride = d * V). With only_changed
 * nonzero, only positions where x_t^i != x1^i are counted (args->xt_tokens is then required).
 * path: a DFM_PATH_MIXTURE path (copied). */
DFM_API int dfm_loss_create_cross_entropy(dfm_loss **out, const dfm_path *mixture_path,
                                          int only_changed, const dfm_allocator *mem);

/* Training-time distributions of t (dfm_time_sample). Values are frozen. */
#define DFM_TIME_UNIFORM      0 /* uniform on [0, 1 - eps] */
#define DFM_TIME_LOGIT_NORMAL 1 /* sigmoid(p1 + p2 N(0, 1)), clipped to [0, 1 - eps] */
#define DFM_TIME_STRATIFIED   2 /* ((g mod n) + u_g) / n scaled to [0, 1 - eps], n = p1 strata */

/** The random stream (see rng.h) dfm_time_sample draws from. */
#define DFM_STREAM_TIME 40

/** Fills t[rows] with training times. Row r uses the uniform/normal keyed by
 * (seed, DFM_STREAM_TIME, row_offset + r, 0, draw), so results are reproducible and do not depend
 * on how a batch is split into calls. kind: DFM_TIME_*. p1, p2: the logit-normal mean and standard
 * deviation (p2 >= 0); for DFM_TIME_STRATIFIED p1 is the number of strata n (an integer >= 1; the
 * global row g falls in stratum g mod n) or 0 for n = rows (then the split matters); unused
 * otherwise. eps in [0, 1). Every t is in [0, 1 - eps].
 * DFM_EINVAL: t NULL with rows > 0, unknown kind, bad eps/p1/p2. t is written only on success. */
DFM_API int dfm_time_sample(uint64_t seed, uint32_t draw, int kind, double p1, double p2,
                            double eps, uint64_t row_offset, size_t rows, double *t);

/** Arguments of dfm_loss_discrete_elbo; appended to only. set struct_size = sizeof(dfm_elbo_args). */
typedef struct dfm_elbo_args {
    size_t struct_size;
    size_t rows;               /* sequences */
    size_t row_offset;         /* global index of row 0 (random streams are keyed by it) */
    uint32_t draw;             /* a counter the host bumps per call */
    const int32_t *x1_tokens;  /* rows x d data sequences */
    const uint8_t *fixed;      /* rows x d, nonzero: position given (never noised, not counted), or NULL */
    size_t n_t;                /* stratified times per sequence (>= 1) */
    size_t chunk_rows;         /* rows per model call (0: all rows in one call) */
    dfm_model_fn model;        /* returns posterior logits, out_stride = d * V */
    void *user_data;
    double *nelbo;             /* out: rows estimates of the negative ELBO (nats) */
    double *std_error;         /* out (may be NULL): rows standard errors of those estimates */
} dfm_elbo_args;

/** Negative ELBO of each sequence under the model (Gat et al. 2024; Shi et al. 2024):
 *   -log q_model(x1) <= KL(p_0(.|x1) || p0) + int_0^1 E_{x_t ~ p_t(.|x1)} sum_i l_i dt,
 * l_i the generalized KL above, estimated with n_t stratified times per sequence and x_t drawn
 * from the path. l must be a generalized-KL loss handle. The source term is 0 when kappa_0 = 0
 * (every built-in scheduler but VP); it is added exactly for uniform and custom sources, and is
 * DFM_EUNSUPPORTED for the mask source with kappa_0 > 0 (the bound is then infinite).
 * The model is called on the calling thread with rows x d tokens (chunk_rows at a time), n_t
 * times per chunk; a nonzero return gives DFM_ECALLBACK (raw value: dfm_loss_callback_status).
 * Errors: DFM_EINVAL, DFM_ERANGE (tokens), DFM_ENUMERIC (NaN/+Inf logits), DFM_ENOMEM,
 * DFM_EOVERFLOW. Outputs are written only on success. */
DFM_API int dfm_loss_discrete_elbo(dfm_loss *l, const dfm_elbo_args *args);

#ifdef __cplusplus
}
#endif
#endif
