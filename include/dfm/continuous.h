/* libdfm: continuous module (see docs/continuous.md). Affine Gaussian paths on R^D, the four
 * parameterizations of a model output and their conversions, ODE velocity and SDE diffusion
 * generators, the conditional flow matching (MSE) loss, ODE/SDE samplers and the
 * log-likelihood under the flow. */
#ifndef DFM_CONTINUOUS_H
#define DFM_CONTINUOUS_H

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

/* Options of the continuous module (ids 300-399, frozen). */
#define DFM_OPT_ATOL       300 /* double >= 0, DOPRI5 absolute tolerance (default 1e-6) */
#define DFM_OPT_RTOL       301 /* double >= 0, DOPRI5 relative tolerance (default 1e-6) */
#define DFM_OPT_MAX_STEPS  302 /* int >= 1, DOPRI5 attempted-step limit (default 100000) */
#define DFM_OPT_H_INIT     303 /* double >= 0, DOPRI5 first step; 0 = automatic (default) */
#define DFM_OPT_DIFFUSION_G 304 /* double >= 0, constant g of a diffusion generator */

/* Random streams used by the continuous module (keyed with the handle's seed). */
#define DFM_STREAM_AFFINE_X0    48 /* x0 ~ N(0, I) drawn by dfm_path_sample */
#define DFM_STREAM_SDE_NOISE    49 /* Euler-Maruyama increments */
#define DFM_STREAM_SOURCE       50 /* x0 drawn by a sampler run with draw_source */
#define DFM_STREAM_HUTCHINSON   51 /* Hutchinson probe vectors */

/** Affine Gaussian path on R^D (Lipman et al. 2024, §4): X_t = alpha_t X1 + sigma_t X0 with
 * X0 ~ N(0, I) or a host coupling; target_reals of dfm_path_sample receive the conditional
 * velocity alpha'_t x1 + sigma'_t x0. space: only Euclidean parts (n_tokens == 0). sched: any
 * scheduler. Both are copied. */
DFM_API int dfm_path_create_affine(dfm_path **out, const dfm_space *space,
                                   const dfm_scheduler *sched, const dfm_allocator *mem);

/** Converts a model output between parameterizations (DFM_PARAM_VELOCITY, _X1, _EPSILON,
 * _SCORE) on affine path p, given the states x_t. in, out: rows x D; xt: rows x D; t: rows.
 * in and out may alias. DFM_ERANGE when the conversion is undefined at a time (e.g. X1 ->
 * EPSILON needs sigma_t > 0, EPSILON -> X1 needs alpha_t > 0, SCORE needs sigma_t > 0), with
 * the time in the message; DFM_ENUMERIC for a non-finite input or result; DFM_EINVAL for NULL
 * or an unknown parameterization. out is written only on success. */
DFM_API int dfm_affine_convert(dfm_path *p, int from_param, int to_param, size_t rows,
                               const double *t, const float *xt, const float *in, float *out);

/** ODE generator on affine path p: the model outputs param (VELOCITY, X1, EPSILON or SCORE),
 * out_stride = D. Samplers: DFM_METHOD_EULER, _MIDPOINT, _RK4, _DOPRI5. */
DFM_API int dfm_generator_create_velocity(dfm_generator **out, const dfm_path *path, int param,
                                          const dfm_allocator *mem);
/** SDE generator dX = [v + g_t^2/2 score] dt + g_t dW with the marginals of path (Song et al.
 * 2021). g_const >= 0 and finite; replace it by a function of t with
 * dfm_generator_set_diffusion_fn. Sampler: DFM_METHOD_EULER_MARUYAMA. */
DFM_API int dfm_generator_create_diffusion(dfm_generator **out, const dfm_path *path, int param,
                                           double g_const, const dfm_allocator *mem);

/** g(t): write *g >= 0 (finite) for t in [0, 1]; return 0, nonzero to fail (DFM_ECALLBACK). */
typedef int (*dfm_diffusion_fn)(double t, double *g, void *user_data);
/** Sets g(t) of a diffusion generator (fn NULL: back to the constant). user_data is not owned. */
DFM_API int dfm_generator_set_diffusion_fn(dfm_generator *g, dfm_diffusion_fn fn,
                                           void *user_data);
/** Schedule transform: sample a model trained on the generator's path scheduler with another
 * scheduler (same marginals up to the time change t(r) with SNR_train(t) = SNR_sample(r) and a
 * scaling s_r; Lipman et al. 2024, §4.8). sched is copied; NULL removes the transform. The
 * model is then called at the training time t(r) with the scaled states x / s_r. */
DFM_API int dfm_generator_set_sampling_scheduler(dfm_generator *g, const dfm_scheduler *sched);

/** Conditional flow matching loss (DFM_LOSS_MSE) for a velocity or diffusion generator:
 * sum over coordinates of (out - target)^2, target in the parameterization's own space:
 * velocity alpha' x1 + sigma' x0, X1 x1, EPSILON x0, SCORE -x0 / sigma_t. Loss args used:
 * rows, t, x0_reals, x1_reals, out, grad (may be NULL), values (DFM_REDUCE_NONE), loss. */
DFM_API int dfm_loss_create_mse(dfm_loss **out, const dfm_generator *gen,
                                const dfm_allocator *mem);

/** Exact divergence of the model output: div[r] = sum_j d out_j / d reals_j at io->reals,
 * io->t (io->out is NULL). Return 0, nonzero to fail (DFM_ECALLBACK). */
typedef int (*dfm_divergence_fn)(const dfm_model_io *io, double *div, void *user_data);
/** Log density of the source at x0 (rows x dim); NULL in the args means N(0, I). */
typedef int (*dfm_log_p0_fn)(const float *x0, size_t rows, size_t dim, double *logp,
                             void *user_data);

/** Arguments of dfm_sampler_log_likelihood; appended to only. */
typedef struct dfm_loglik_args {
    size_t struct_size;
    dfm_model_fn model;
    void *model_data;
    dfm_divergence_fn divergence; /* exact divergence, or NULL: Hutchinson estimator */
    void *divergence_data;
    dfm_log_p0_fn log_p0;         /* NULL: standard normal */
    void *log_p0_data;
    size_t rows;
    size_t row_offset;            /* global index of row 0 (keys the probe vectors) */
    const float *x1;              /* rows x D data points */
    size_t n_probes;              /* Hutchinson probes per row (>= 1; ignored when exact) */
    double fd_eps;                /* finite-difference step of the JVPs (0: 1e-3) */
    double *logp;                 /* out: rows log-likelihoods */
    double *logp_var;             /* out (may be NULL): rows, variance of each estimate (0 exact) */
    float *x0_out;                /* out (may be NULL): rows x D, the source points reached */
    dfm_progress_fn progress;
    void *progress_data;
} dfm_loglik_args;

/** log q(x1) under the flow of a velocity generator's sampler (instantaneous change of
 * variables, Chen et al. 2018; Song et al. 2021, App. D): integrates x and the divergence from
 * t = 1 to t = 0 with the sampler's method and grid (an increasing grid is run backwards) and
 * returns log p0(x0) - int_0^1 div v_t(x_t) dt. Hutchinson: n_probes fixed Rademacher probes per
 * row, z^T J z by central differences; logp is the mean and logp_var the variance of the mean
 * over probes. Outputs are written only on success. */
DFM_API int dfm_sampler_log_likelihood(dfm_sampler *s, const dfm_loglik_args *args);

#ifdef __cplusplus
}
#endif
#endif
