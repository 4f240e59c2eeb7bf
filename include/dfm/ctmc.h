/* libdfm: ctmc module (see docs/ctmc.md). Continuous-time Markov chains on finite state spaces:
 * rate-matrix generators, Kolmogorov forward propagation (exp(hQ) and an ODE integrator), exact
 * simulation (uniformization / thinning, Gillespie), Euler, metric-induced paths (Shaul et al.
 * 2024), general finite conditional paths with kinetic-optimal rates, and the Bregman
 * generator-matching loss on direct rates. */
#ifndef DFM_CTMC_H
#define DFM_CTMC_H

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

/** Largest number of states S of a dense finite space ([V]^d flattened, S = V^d). Larger spaces
 * are refused with DFM_ELIMIT. Also the largest vocabulary of a metric-induced path. */
#define DFM_CTMC_MAX_STATES 4096
/** Function twin of DFM_CTMC_MAX_STATES. */
DFM_API size_t dfm_ctmc_max_states(void);

/* ---- flattening [V]^d <-> S = V^d states (coordinate 0 most significant) ---- */

/** *n_states = V^d for a single-part discrete space. DFM_EINVAL for NULL or a non-discrete
 * space, DFM_ELIMIT when V^d > DFM_CTMC_MAX_STATES. */
DFM_API int dfm_ctmc_n_states(const dfm_space *space, size_t *n_states);
/** states[r] = sum_i tokens[r*d + i] V^(d-1-i). DFM_ERANGE for a token outside [0, V) (states
 * untouched). */
DFM_API int dfm_ctmc_flatten(const dfm_space *space, const int32_t *tokens, size_t rows,
                             int32_t *states);
/** Inverse of dfm_ctmc_flatten. DFM_ERANGE for a state outside [0, S). */
DFM_API int dfm_ctmc_unflatten(const dfm_space *space, const int32_t *states, size_t rows,
                               int32_t *tokens);

/* ---- Kolmogorov forward propagation (workspace handle) ---- */

typedef struct dfm_ctmc dfm_ctmc;

/** Time-dependent rate matrix for dfm_ctmc_propagate_ode: fill Q (n x n row-major) at time t.
 * Only off-diagonal entries are read (finite, >= 0); the diagonal is derived. Return 0, or
 * nonzero to fail (DFM_ECALLBACK). */
typedef int (*dfm_rate_matrix_fn)(double t, double *Q, size_t n, void *user_data);

/** A workspace for n states (1 <= n <= DFM_CTMC_MAX_STATES, else DFM_ELIMIT). Scratch for exp is
 * allocated at the first call that needs it (8 n^2 doubles). One thread at a time. */
DFM_API int dfm_ctmc_create(dfm_ctmc **out, size_t n, const dfm_allocator *mem);
DFM_API void dfm_ctmc_free(dfm_ctmc *w);
DFM_API const char *dfm_ctmc_last_error(const dfm_ctmc *w);
DFM_API int dfm_ctmc_callback_status(const dfm_ctmc *w);
/** E = exp(h A) for any real n x n matrix A (scaling and squaring, Pade degree 3..13, Higham
 * 2005). A and E may not alias. DFM_ENUMERIC for non-finite input or result. */
DFM_API int dfm_ctmc_expm(dfm_ctmc *w, const double *A, double h, double *E);
/** K = exp(h Q) for a generator Q (off-diagonal finite and >= 0; the diagonal is ignored and
 * derived as minus the off-diagonal row sum), h >= 0. K is row-stochastic: round-off negatives
 * are set to 0 and rows renormalised. */
DFM_API int dfm_ctmc_kernel(dfm_ctmc *w, const double *Q, double h, double *K);
/** pt = p0 exp(h Q) for m row vectors p0 (m x n), Q a generator as in dfm_ctmc_kernel. */
DFM_API int dfm_ctmc_propagate(dfm_ctmc *w, const double *p0, size_t m, const double *Q,
                               double h, double *pt);
/** pt = p(t1) for dp/dt = p Q(t), p(t0) = p0 (m x n), by classical RK4 with n_steps uniform steps
 * (Q evaluated at t, t + h/2, t + h). t0 <= t1 (both finite). */
DFM_API int dfm_ctmc_propagate_ode(dfm_ctmc *w, const double *p0, size_t m,
                                   dfm_rate_matrix_fn fn, void *user_data, double t0, double t1,
                                   size_t n_steps, double *pt);

/** The kinetic-optimal generator of a path with probabilities p (n) and time derivative dp (n):
 * Q(z, x) = [dp(x) p(z) - dp(z) p(x)]_+ / p(z) for x != z (0 when p(z) = 0), diagonal = minus
 * the row sum (DESIGN.md §3; Shaul et al. 2024). Q is n x n. DFM_ENUMERIC for non-finite or
 * negative p. */
DFM_API int dfm_ctmc_kinetic_rates(const double *p, const double *dp, size_t n, double *Q);

/** Bregman divergence D(a, b) = sum_y a_y log(a_y / b_y) - a_y + b_y (0 log 0 = 0) and its
 * gradient wrt b, grad_y = 1 - a_y / b_y (grad may be NULL). a, b >= 0 finite; DFM_ENUMERIC when
 * some b_y = 0 < a_y (infinite divergence) or an entry is invalid. */
DFM_API int dfm_bregman_rates(const double *a, const double *b, size_t n, double *value,
                              double *grad);

/* ---- paths ---- */

/** Host description of a conditional path on S states: fill p[x] = p_t(x | x1) and
 * dp[x] = d/dt p_t(x | x1) for every state x (n_states entries each), x1 a flattened state.
 * Return 0, or nonzero to fail (DFM_ECALLBACK). Called on the thread that runs the operation. */
typedef int (*dfm_cond_path_fn)(double t, int32_t x1, double *p, double *dp, size_t n_states,
                                void *user_data);

/** DFM_PATH_FINITE on a single-part discrete space [V]^d with S = V^d <= DFM_CTMC_MAX_STATES
 * (DFM_ELIMIT otherwise). The conditional generator is the kinetic-optimal one
 * (dfm_ctmc_kinetic_rates) of the host's p_t(. | x1). fn is required; user_data is not owned. */
DFM_API int dfm_path_create_finite(dfm_path **out, const dfm_space *space, dfm_cond_path_fn fn,
                                   void *user_data, const dfm_allocator *mem);

/** Distance callback for metric paths: fill d[x] = d(x, x1) for x in [0, vocab). */
typedef int (*dfm_distance_fn)(int32_t x1, double *d, int32_t vocab, void *user_data);

/** DFM_PATH_METRIC on [V]^d (single discrete part, V <= DFM_CTMC_MAX_STATES), per coordinate
 * p_t(x | x1) = softmax_x(-beta_t d(x, x1)), beta_t = c kappa_t / (1 - kappa_t), kappa = the
 * scheduler's alpha (beta_0 = 0 if kappa_0 = 0, beta_1 = +inf). The distance is a V x V matrix
 * dist[x * V + y] = d(x, y) (copied), or fn (called V times at creation and cached); exactly one
 * of them. d must be finite, d(x, x) = 0 and d(x, y) > 0 for x != y (DFM_EINVAL otherwise).
 * c > 0 finite. */
DFM_API int dfm_path_create_metric(dfm_path **out, const dfm_space *space,
                                   const dfm_scheduler *sched, double c, const double *dist,
                                   dfm_distance_fn fn, void *user_data, const dfm_allocator *mem);

/** Conditional probabilities of a finite or metric path at t in [0, 1]: FINITE: probs[x] =
 * p_t(x | x1) over the S states (x1 a flattened state); METRIC: over the V values of one
 * coordinate (x1 a token). */
DFM_API int dfm_path_cond_probs(dfm_path *p, double t, int32_t x1, double *probs);
/** The conditional generator (n x n, n = S for FINITE, V for METRIC, diagonal filled) at
 * t in [0, 1): the kinetic-optimal rates. DFM_ERANGE for t = 1 (the rates diverge). */
DFM_API int dfm_path_cond_rates(dfm_path *p, double t, int32_t x1, double *Q);

/* ---- generators ---- */

/** DFM_GEN_RATE_MATRIX on the path's space (or on space when path is NULL; give one of them,
 * the space of the path wins). param:
 *  DFM_PARAM_STATE_LOGITS: out_stride = S posterior logits p_{1|t}(x1 | x) over flattened
 *    states; Q_t(x, y) = sum_x1 Q_t(x, y | x1) p_{1|t}(x1 | x) with the path's conditional
 *    rates (path FINITE or METRIC required).
 *  DFM_PARAM_RATES: out_stride = S direct rates Q_t(x, .) for the row's state x (diagonal
 *    ignored, off-diagonal finite >= 0, else DFM_ENUMERIC); path optional.
 * The model receives the [V]^d tokens of the current state (n_tokens = d). Samplers: EULER,
 * UNIFORMIZATION, GILLESPIE. */
DFM_API int dfm_generator_create_rate_matrix(dfm_generator **out, const dfm_path *path,
                                             const dfm_space *space, int param,
                                             const dfm_allocator *mem);
/** DFM_GEN_FACTORIZED for a metric path: the model writes d x V posterior logits; the marginal
 * per-token rate z -> v at coordinate i is sum_x1 p^i_{1|t}(x1 | x) p_t(v | x1) beta'_t
 * [d(z, x1) - d(v, x1)]_+. Samplers: EULER (per-token jumps, probability 1 - exp(-h lambda)),
 * UNIFORMIZATION (exact, on the product chain), GILLESPIE. */
DFM_API int dfm_generator_create_metric(dfm_generator **out, const dfm_path *path,
                                        const dfm_allocator *mem);

/** Rate-matrix sampler options (ids 200-299). */
#define DFM_OPT_CT_RATE_BOUND 200 /* double >= 0: host bound on the total jump rate of a row
                                     (uniformization); 0 (default): computed per step */
#define DFM_OPT_CT_BOUND_SAFETY 201 /* double >= 1: computed bound = safety x max rate at the
                                       horizon's ends (default 2) */
#define DFM_OPT_CT_TMAX 202 /* double in (0, 1]: rates are never evaluated after tmax; the chain
                               holds its state on [tmax, 1] (default 1 - 1e-6) */
#define DFM_OPT_CT_MAX_EVENTS 203 /* int >= 1: candidate events per row per run before DFM_ELIMIT
                                     (default 10^7) */

/* ---- loss ---- */

/** DFM_LOSS_BREGMAN_RATES for a rate-matrix generator with DFM_PARAM_RATES and a FINITE or
 * METRIC path: per row D(a, b) with a = Q_t(x_t, . | x1) (the path's conditional rates off the
 * diagonal), b = the model's rates (args->out, S floats per row, diagonal ignored); the gradient
 * is wrt b: 1 - a_y / b_y. t must be < 1. */
DFM_API int dfm_loss_create_bregman_rates(dfm_loss **out, const dfm_generator *g,
                                          const dfm_allocator *mem);

#ifdef __cplusplus
}
#endif
#endif
