/* libdfm: discrete module (see docs/discrete.md). */
#ifndef DFM_DISCRETE_H
#define DFM_DISCRETE_H

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

/* Sources of a mixture path (frozen). */
#define DFM_SOURCE_MASK    1 /* p0 = delta(mask_token): every coordinate starts masked */
#define DFM_SOURCE_UNIFORM 2 /* p0 uniform over the vocabulary */
#define DFM_SOURCE_CUSTOM  3 /* p0 given as a probability vector over the vocabulary */

/** Mixture path on a discrete space [V]^d (Gat et al. 2024):
 * p_t(x^i | x1) = (1 - kappa_t) p0(x^i) + kappa_t delta(x^i, x1^i), kappa_t = alpha_t of sched.
 * space: a single discrete part. source: DFM_SOURCE_*. mask_token: the mask id for
 * DFM_SOURCE_MASK (0 <= mask_token < V; usually V - 1), ignored otherwise. p0: V probabilities
 * for DFM_SOURCE_CUSTOM (nonnegative, finite, summing to 1 within 1e-6; copied), NULL otherwise.
 * The space and scheduler are copied. */
DFM_API int dfm_path_create_mixture(dfm_path **out, const dfm_space *space,
                                    const dfm_scheduler *sched, int source, int32_t mask_token,
                                    const double *p0, const dfm_allocator *mem);


/* ---- factorized generators (see docs/discrete.md) ---- */

/** Factorized generator on the mixture path's space [V]^d (Gat et al. 2024; Campbell et al. 2024).
 * param DFM_PARAM_LOGITS: the model writes posterior logits of p_{1|t}(. | x) for every coordinate,
 * out_stride = d * V (row-major [d][V]); the marginal rate is
 * u^i(y, x) = kappa'/(1 - kappa) p_{1|t}^i(y | x) for y != x^i.
 * param DFM_PARAM_RATES: the model writes the rates u^i(y, x) directly, out_stride = d * V;
 * entries y != x^i must be finite and >= 0 (DFM_ENUMERIC otherwise), the diagonal is ignored.
 * path must be a DFM_PATH_MIXTURE path (copied). DFM_EINVAL for NULL or a bad param,
 * DFM_EUNSUPPORTED for another path kind, DFM_EOVERFLOW when d * V overflows. */
DFM_API int dfm_generator_create_factorized(dfm_generator **out, const dfm_path *path, int param,
                                            const dfm_allocator *mem);

/** Marginal rates from posterior logits, the analogue of flow_matching's posterior_to_velocity:
 * rates[r][i][y] = kappa'_t/(1 - kappa_t) (softmax(logits[r][i])(y) - delta(y, tokens[r][i])),
 * so each [r][i] row sums to 0 (the diagonal is minus the total jump rate).
 * g: a DFM_GEN_FACTORIZED generator with DFM_PARAM_LOGITS. t: rows times in [0, 1) with
 * kappa_t < 1. tokens: rows x d, logits and rates: rows x d x V (rates may not alias logits).
 * Errors (message on g): DFM_EINVAL (NULL, wrong generator), DFM_ERANGE (t outside [0, 1],
 * kappa_t = 1, token outside [0, V)), DFM_ENUMERIC (NaN/+Inf or all -Inf logits, named by row
 * and coordinate), DFM_ECALLBACK (custom scheduler). rates is written only on success.
 * Thread safety: g is used for its error buffer, so one call per generator at a time. */
DFM_API int dfm_mixture_rates(dfm_generator *g, size_t rows, const double *t,
                              const int32_t *tokens, const float *logits, float *rates);

/* ---- samplers of factorized generators ----
 * dfm_sampler_create(&s, g, method, mem) with g factorized:
 *   DFM_PARAM_LOGITS: DFM_METHOD_EXACT (exact mixture step, the default choice),
 *                     DFM_METHOD_EULER (flow_matching's MixtureDiscreteEulerSolver step),
 *                     DFM_METHOD_TAU_LEAPING, DFM_METHOD_THETA_TRAPEZOIDAL (second order);
 *   DFM_PARAM_RATES:  DFM_METHOD_EULER or DFM_METHOD_TAU_LEAPING (the same step: jump with
 *                     probability 1 - exp(-h lambda)), DFM_METHOD_THETA_TRAPEZOIDAL.
 * Sampler options (module range 100-199; discrete samplers use 150-179): */
#define DFM_OPT_DS_TEMPERATURE 150 /* double > 0 (default 1): p_{1|t} = softmax(logits / T) */
#define DFM_OPT_DS_CORRECTOR   151 /* double c >= 0 (default 0): divergence-free corrector weight */
#define DFM_OPT_DS_ETA         152 /* double eta >= 0 (default 0): detailed-balance stochasticity */
#define DFM_OPT_DS_PURITY      153 /* int 0/1 (default 0): purity unmasking (mask source, EXACT) */
#define DFM_OPT_DS_CHUNK_ROWS  154 /* int: rows per model call (default 0 = the whole batch), or
                                      * DFM_CHUNK_AUTO; see docs/discrete.md */
#define DFM_CHUNK_AUTO (-1)          /* about 1 MiB of model output per thread per call */
/* Unmasking (mask source, DFM_PARAM_LOGITS, DFM_METHOD_EXACT; docs/discrete.md "Unmasking"): */
#define DFM_OPT_DS_ORDER       155 /* int DFM_ORDER_* (default DFM_ORDER_RANDOM): which masked
                                    * positions are revealed first */
#define DFM_OPT_DS_COUNT       156 /* int DFM_COUNT_* (default DFM_COUNT_COINS): how many per step */
#define DFM_OPT_DS_BLOCK_LEN   157 /* int >= 0 (default 0 = off): block-wise semi-autoregressive
                                    * unmasking, blocks of this many positions left to right */
#define DFM_OPT_DS_THRESHOLD   158 /* double in (0, 1] (default 0.9): DFM_COUNT_THRESHOLD's tau */
#define DFM_OPT_DS_GREEDY      159 /* int 0/1 (default 0): reveal the most probable token */
/* Posterior shaping (logits generators, every method): */
#define DFM_OPT_DS_TOP_K       160 /* int >= 0 (default 0 = off): keep the k most probable tokens */
#define DFM_OPT_DS_TOP_P       161 /* double in (0, 1] (default 1 = off): nucleus mass */
#define DFM_OPT_DS_MIN_P       162 /* double in [0, 1] (default 0 = off): keep p >= min_p max p */
/* Remasking (ReMDM; mask source, DFM_PARAM_LOGITS, DFM_METHOD_EXACT): */
#define DFM_OPT_DS_REMASK      163 /* int DFM_REMASK_* (default DFM_REMASK_NONE) */
#define DFM_OPT_DS_REMASK_ETA  164 /* double in [0, 1] (default 0.02): the schedule's eta */
#define DFM_OPT_DS_LOOP_START  165 /* double in (0, 1) (default 0.45): loop window start time */
#define DFM_OPT_DS_LOOP_END    166 /* double in (0, 1) (default 0.95): loop window end time */
#define DFM_OPT_DS_LOOP_KAPPA  167 /* double in (0, 1) (default 0.9): kappa held in the loop */
#define DFM_OPT_DS_THETA       168 /* double in (0, 1) (default 0.5): theta-trapezoidal stage */
#define DFM_OPT_DS_TIME_INDEPENDENT 169 /* int 0/1 (default 0): the model ignores t, so a row
                                    * whose tokens did not change is not sent to it again */

/* DFM_OPT_DS_ORDER values (frozen). */
#define DFM_ORDER_RANDOM     0 /* uniformly random: the exact mixture step's law */
#define DFM_ORDER_CONFIDENCE 1 /* largest max_y p(y) first */
#define DFM_ORDER_MARGIN     2 /* largest p(top 1) - p(top 2) first */
#define DFM_ORDER_ENTROPY    3 /* lowest entropy of p first */
/* DFM_OPT_DS_COUNT values (frozen). */
#define DFM_COUNT_COINS         0 /* each masked position with probability
                                   * (kappa_{t+h} - kappa_t) / (1 - kappa_t): the exact step */
#define DFM_COUNT_SCHEDULE      1 /* the expected count, randomised rounding */
#define DFM_COUNT_SCHEDULE_CEIL 2 /* the expected count rounded up (LLaDA's even split) */
#define DFM_COUNT_THRESHOLD     3 /* every position with max_y p(y) > tau, at least one (Fast-dLLM) */
/* DFM_OPT_DS_REMASK values (frozen). */
#define DFM_REMASK_NONE    0
#define DFM_REMASK_CAP     1 /* sigma_t = min(eta, sigma_max) */
#define DFM_REMASK_RESCALE 2 /* sigma_t = eta sigma_max */
#define DFM_REMASK_LOOP    3 /* kappa held at LOOP_KAPPA over [LOOP_START, LOOP_END), remasking
                              * with sigma = min(eta, sigma_max) there */

/** Time-dependent corrector weight c(t) >= 0 (finite); return 0, or nonzero to fail the run
 * with DFM_ECALLBACK. */
typedef int (*dfm_corrector_fn)(double t, double *c, void *user_data);

/** Use fn(t) as the corrector weight instead of the DFM_OPT_DS_CORRECTOR constant (fn NULL: back
 * to the constant). user_data is stored, not owned. DFM_EUNSUPPORTED when s is not a sampler of a
 * factorized generator with posterior logits. */
DFM_API int dfm_sampler_set_corrector(dfm_sampler *s, dfm_corrector_fn fn, void *user_data);

/** What a step callback sees after each step of a sampler of a factorized generator; appended
 * to only. tokens is the sampler's current state, rows x n_tokens, valid during the call. */
typedef struct dfm_step_view {
    size_t struct_size;       /* sizeof(dfm_step_view) as libdfm knows it */
    int step;                 /* the step just done, 0-based */
    int n_steps;
    double t;                 /* the time reached */
    size_t rows;              /* the run's rows */
    size_t row_offset;        /* the run's row_offset */
    size_t n_tokens;
    const int32_t *tokens;    /* rows x n_tokens, read-only */
    int64_t changed;          /* tokens changed by this step */
} dfm_step_view;

/** Per-step callback: return 0 to continue, nonzero to stop the run (DFM_ESTOPPED; the value
 * stays queryable with dfm_sampler_callback_status). It may call the getters of s and
 * dfm_sampler_request_stop, nothing else on s. */
typedef int (*dfm_step_fn)(const dfm_step_view *view, void *user_data);

/** Call fn after every step of the runs of s (fn NULL: no callback). user_data is stored, not
 * owned. DFM_EUNSUPPORTED when s is not a sampler of a factorized generator. */
DFM_API int dfm_sampler_set_step_callback(dfm_sampler *s, dfm_step_fn fn, void *user_data);

#ifdef __cplusplus
}
#endif
#endif
