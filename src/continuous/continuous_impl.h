/* Private definitions shared by the continuous module's files (affine paths, velocity and
 * diffusion generators, MSE loss, ODE/SDE samplers). */
#ifndef DFM_CONTINUOUS_IMPL_H
#define DFM_CONTINUOUS_IMPL_H

#include "handles/handles.h"

/* The element kernels (normal draws above all: 8 64-bit multiplies per instruction and
 * three-way XORs) gain from AVX-512: an extra x86-64-v4 clone where GCC offers it. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__) && \
    !defined(DFM_NO_CLONES) && __GNUC__ >= 11
#  define DFM_CLONES_V4 __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#  define DFM_CLONES_V4 DFM_CLONES
#endif

/* Affine-model coefficients at one time: with x' = x / scale and y the model output at
 * (t_model, x'), the quantity asked for (a velocity or an SDE drift) is A * x + B * y. */
typedef struct dfm__acoef {
    double t_model;  /* time passed to the model (the training scheduler's time) */
    double scale;    /* s_r: the model sees x / scale */
    double A, B;
} dfm__acoef;

/* Generator data (velocity and diffusion kinds). */
typedef struct dfm__cgen {
    int has_tr;             /* a sampling scheduler is set (schedule transform) */
    dfm_scheduler tr;
    double g_const;         /* diffusion: constant g */
    dfm_diffusion_fn gfn;   /* diffusion: g(t), or NULL */
    void *guser;
} dfm__cgen;

/* x1 and x0 predictions as linear combinations of (x_t, y) for a model output y of param under
 * scheduler values v: x1 = c1[0] x_t + c1[1] y, x0 = c0[0] x_t + c0[1] y (entries may be
 * infinite where undefined). Returns DFM_EINVAL for an unknown param. */
int dfm__affine_pair(int param, const dfm_sched_values *v, double c1[2], double c0[2]);
/* Coefficients of out = A x_t + B y converting param from -> to; DFM_ERANGE if undefined. */
int dfm__affine_convert_coef(int from, int to, const dfm_sched_values *v, double *A, double *B);
/* Coefficients of the velocity (gg == 0) or the SDE drift v + gg * score (gg = +-g^2/2) of
 * generator g at sampling time r (continuous_coef.c). Errors are recorded on b. */
int dfm__cgen_coef(dfm_base *b, const dfm_generator *g, double r, double gg, dfm__acoef *c);
/* g(t) of a diffusion generator (errors on b). */
int dfm__cgen_g(dfm_base *b, const dfm_generator *g, double t, double *gval);
/* Standard normals for one row keyed by position: coordinates 64c .. 64c + 63 come from the 16
 * Philox blocks (seed, stream, row, 16c + l, step), l < 16; Box-Muller on 24-bit uniforms with
 * both outputs (docs/continuous.md). */
void dfm__normal_row(uint64_t seed, unsigned stream, uint64_t row, uint32_t step, size_t d,
                     float *out);
/* Sampler initialisation for velocity / diffusion generators (continuous_sampler.c). */
int dfm__cont_sampler_init(dfm_sampler *s, int method);

/* Row kernels run a loop of constant trip count DFM__VB inside the row loop, then a scalar tail:
 * at -O2 GCC's cheapest vectoriser cost model only vectorises loops that need no epilogue. */
#define DFM__VB 16

/* Finite check of n floats on their exponent bits (vectorisable; continuous_path.c). */
int dfm__all_finite_f(const float *x, size_t n);

#endif
