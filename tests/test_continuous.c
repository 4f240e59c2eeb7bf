/* Continuous module: affine paths, conversions, MSE loss, ODE/SDE samplers and the
 * log-likelihood, measured against closed-form Gaussian and Gaussian-mixture targets. */
#include "testutil.h"

#include <stdio.h>

/* ---------- closed-form targets ---------- */

/* Gaussian mixture in 2-D with isotropic components: q = sum_k w_k N(m_k, s_k^2 I). */
#define NK 2
static const double MW[NK] = {0.3, 0.7};
static const double MM[NK][2] = {{-2.0, 0.0}, {2.0, 1.0}};
static const double MS[NK] = {0.5, 0.7};

typedef struct target {
    const dfm_scheduler *sched; /* training scheduler */
    int param;                  /* what the model outputs */
    int gaussian;               /* 1: single Gaussian with full covariance (below) */
    int nan_at_step;            /* >= 0: return NaN at this model step */
    int fail;                   /* nonzero: return this from the model */
    long calls;
} target;

/* Single Gaussian N(GM, GS) with a full 2x2 covariance. */
static const double GM[2] = {1.0, -0.5};
static const double GS[2][2] = {{0.8, 0.3}, {0.3, 0.5}};

static void inv2(const double a[2][2], double r[2][2])
{
    double det = a[0][0] * a[1][1] - a[0][1] * a[1][0];
    r[0][0] = a[1][1] / det; r[1][1] = a[0][0] / det;
    r[0][1] = -a[0][1] / det; r[1][0] = -a[1][0] / det;
}

/* E[X1 | x] and E[X0 | x] at scheduler values v for the current target. */
static void posterior(const target *tg, const dfm_sched_values *v, const double x[2], double e1[2],
                      double e0[2])
{
    double a = v->alpha, s = v->sigma;
    if (tg->gaussian) {
        /* Cov(X_t) = a^2 S + s^2 I; E[X1|x] = m + a S C^{-1} (x - a m); E[X0|x] = s C^{-1}(x - a m) */
        double C[2][2], Ci[2][2], r[2];
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) C[i][j] = a * a * GS[i][j] + (i == j ? s * s : 0.0);
        inv2(C, Ci);
        for (int i = 0; i < 2; i++) r[i] = x[i] - a * GM[i];
        double q[2] = {Ci[0][0] * r[0] + Ci[0][1] * r[1], Ci[1][0] * r[0] + Ci[1][1] * r[1]};
        for (int i = 0; i < 2; i++) {
            e1[i] = GM[i] + a * (GS[i][0] * q[0] + GS[i][1] * q[1]);
            e0[i] = s * q[i];
        }
        return;
    }
    double lw[NK], mx = -INFINITY;
    for (int k = 0; k < NK; k++) {
        double V = a * a * MS[k] * MS[k] + s * s, d2 = 0.0;
        for (int i = 0; i < 2; i++) d2 += (x[i] - a * MM[k][i]) * (x[i] - a * MM[k][i]);
        lw[k] = log(MW[k]) - log(V) - 0.5 * d2 / V;
        if (lw[k] > mx) mx = lw[k];
    }
    double z = 0.0;
    for (int k = 0; k < NK; k++) { lw[k] = exp(lw[k] - mx); z += lw[k]; }
    e1[0] = e1[1] = e0[0] = e0[1] = 0.0;
    for (int k = 0; k < NK; k++) {
        double p = lw[k] / z, V = a * a * MS[k] * MS[k] + s * s;
        for (int i = 0; i < 2; i++) {
            double r = x[i] - a * MM[k][i];
            e1[i] += p * (MM[k][i] + a * MS[k] * MS[k] / V * r);
            e0[i] += p * s / V * r;
        }
    }
}

static int model_fn(const dfm_model_io *io, void *ud)
{
    target *tg = (target *)ud;
    tg->calls++;
    if (tg->fail) return tg->fail;
    for (size_t r = 0; r < io->rows; r++) {
        dfm_sched_values v;
        if (dfm_scheduler_eval(tg->sched, io->t[r], &v, NULL)) return 99;
        double x[2] = {io->reals[2 * r], io->reals[2 * r + 1]}, e1[2], e0[2];
        posterior(tg, &v, x, e1, e0);
        for (int i = 0; i < 2; i++) {
            double o;
            switch (tg->param) {
            case DFM_PARAM_X1: o = e1[i]; break;
            case DFM_PARAM_EPSILON: o = e0[i]; break;
            case DFM_PARAM_SCORE: o = -e0[i] / v.sigma; break;
            default: /* (at sigma = 0, E[X0 | x] = 0 and an infinite sigma' drops out) */
                o = v.d_alpha * e1[i] + (e0[i] != 0.0 ? v.d_sigma * e0[i] : 0.0);
                break;
            }
            io->out[2 * r + i] = (float)o;
        }
    }
    if (tg->nan_at_step >= 0 && io->step == tg->nan_at_step) io->out[1] = NAN;
    return 0;
}

static dfm_path *make_path(dfm_scheduler *s)
{
    dfm_space *sp;
    dfm_path *p;
    ck_assert_int_eq(dfm_space_create_euclidean(&sp, 2, NULL), 0);
    ck_assert_int_eq(dfm_path_create_affine(&p, sp, s, NULL), 0);
    dfm_space_free(sp);
    return p;
}

static dfm_sampler *make_sampler(dfm_scheduler *s, int param, int diffusion, double g, int method)
{
    dfm_path *p = make_path(s);
    dfm_generator *gen;
    if (diffusion) ck_assert_int_eq(dfm_generator_create_diffusion(&gen, p, param, g, NULL), 0);
    else ck_assert_int_eq(dfm_generator_create_velocity(&gen, p, param, NULL), 0);
    dfm_sampler *smp;
    ck_assert_int_eq(dfm_sampler_create(&smp, gen, method, NULL), 0);
    dfm_generator_free(gen);
    dfm_path_free(p);
    return smp;
}

static dfm_run_args run_args(target *tg, float *x, size_t rows)
{
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = model_fn;
    a.model_data = tg;
    a.rows = rows;
    a.reals = x;
    return a;
}

/* Means, covariance and mode weights of samples against the mixture, with 4.5-sigma bounds
 * (plus a discretisation allowance tol). */
static void check_mixture(const float *x, size_t n, double tol)
{
    double mean[2] = {0, 0}, m2[2][2] = {{0, 0}, {0, 0}};
    long cnt[NK] = {0, 0};
    for (size_t r = 0; r < n; r++) {
        for (int i = 0; i < 2; i++) mean[i] += x[2 * r + i];
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) m2[i][j] += (double)x[2 * r + i] * x[2 * r + j];
        double d0 = hypot(x[2 * r] - MM[0][0], x[2 * r + 1] - MM[0][1]);
        double d1 = hypot(x[2 * r] - MM[1][0], x[2 * r + 1] - MM[1][1]);
        cnt[d0 < d1 ? 0 : 1]++;
    }
    /* exact moments */
    double em[2] = {0, 0}, e2[2][2] = {{0, 0}, {0, 0}};
    for (int k = 0; k < NK; k++)
        for (int i = 0; i < 2; i++) {
            em[i] += MW[k] * MM[k][i];
            for (int j = 0; j < 2; j++)
                e2[i][j] += MW[k] * (MM[k][i] * MM[k][j] + (i == j ? MS[k] * MS[k] : 0.0));
        }
    for (int i = 0; i < 2; i++) {
        mean[i] /= (double)n;
        double var = e2[i][i] - em[i] * em[i];
        double b = 4.5 * sqrt(var / (double)n) + tol;
        ck_assert_msg(fabs(mean[i] - em[i]) < b, "mean[%d] = %g, exact %g (bound %g)", i, mean[i],
                      em[i], b);
    }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            double c = m2[i][j] / (double)n - mean[i] * mean[j];
            double ec = e2[i][j] - em[i] * em[j];
            /* sd of a sample covariance <= sqrt(E[(xi xj)^2] / n); bound it generously by
             * the fourth moments of the mixture (|x| <= 5 with overwhelming probability). */
            double b = 4.5 * sqrt((e2[i][i] * e2[j][j] * 3.0) / (double)n) + 2.0 * tol;
            ck_assert_msg(fabs(c - ec) < b, "cov[%d][%d] = %g, exact %g (bound %g)", i, j, c, ec, b);
        }
    /* per mode: mean m_k and variance s_k^2 per coordinate (sd s_k^2 sqrt(2 / n_k)) */
    for (int k = 0; k < NK; k++) {
        double km[2] = {0, 0}, kv[2] = {0, 0};
        long nk = 0;
        for (size_t r = 0; r < n; r++) {
            double d0 = hypot(x[2 * r] - MM[0][0], x[2 * r + 1] - MM[0][1]);
            double d1 = hypot(x[2 * r] - MM[1][0], x[2 * r + 1] - MM[1][1]);
            if ((d0 < d1 ? 0 : 1) != k) continue;
            nk++;
            for (int i = 0; i < 2; i++) { km[i] += x[2 * r + i]; kv[i] += (double)x[2 * r + i] * x[2 * r + i]; }
        }
        for (int i = 0; i < 2; i++) {
            km[i] /= (double)nk;
            kv[i] = kv[i] / (double)nk - km[i] * km[i];
            double s2 = MS[k] * MS[k];
            double bm = 4.5 * MS[k] / sqrt((double)nk) + tol;
            double bv = 4.5 * s2 * sqrt(2.0 / (double)nk) + 2.0 * tol;
            ck_assert_msg(fabs(km[i] - MM[k][i]) < bm, "mode %d mean[%d] = %g, exact %g (bound %g)",
                          k, i, km[i], MM[k][i], bm);
            ck_assert_msg(fabs(kv[i] - s2) < bv, "mode %d var[%d] = %g, exact %g (bound %g)", k, i,
                          kv[i], s2, bv);
        }
    }
    long tot = (long)n;
    double p[NK];
    for (int k = 0; k < NK; k++) p[k] = MW[k];
    TU_ASSERT_CHI2(cnt, p, NK, tot);
}

static void sample_mixture(dfm_scheduler *s, int param, int method, size_t steps, double tol,
                           const dfm_scheduler *sampling)
{
    const size_t n = tu_count(8000); /* DFM_TEST_SCALE (testutil.h); bounds below use n */
    target tg = {s, param, 0, -1, 0, 0};
    dfm_path *p = make_path(s);
    dfm_generator *gen;
    ck_assert_int_eq(dfm_generator_create_velocity(&gen, p, param, NULL), 0);
    if (sampling) ck_assert_int_eq(dfm_generator_set_sampling_scheduler(gen, sampling), 0);
    dfm_sampler *smp;
    ck_assert_int_eq(dfm_sampler_create(&smp, gen, method, NULL), 0);
    dfm_generator_free(gen);
    dfm_path_free(p);
    ck_assert_int_eq(dfm_sampler_set_int(smp, DFM_OPT_SEED, 1234), 0);
    if (method == DFM_METHOD_DOPRI5) {
        ck_assert_int_eq(dfm_sampler_set_double(smp, DFM_OPT_ATOL, 1e-5), 0);
        ck_assert_int_eq(dfm_sampler_set_double(smp, DFM_OPT_RTOL, 1e-5), 0);
    } else if (steps) {
        ck_assert_int_eq(dfm_sampler_set_steps(smp, steps), 0);
    }
    if (param != DFM_PARAM_VELOCITY) {
        /* x1 needs sigma > 0 (stop before 1), epsilon / score need alpha > 0 (start after 0) */
        double grid[65];
        for (int i = 0; i <= 64; i++) grid[i] = 1e-3 + (1.0 - 2e-3) * i / 64.0;
        ck_assert_int_eq(dfm_sampler_set_grid(smp, grid, 65), 0);
    }
    float *x = (float *)calloc(2 * n, sizeof(float));
    dfm_run_args a = run_args(&tg, x, n);
    a.draw_source = 1;
    int st = dfm_sampler_run(smp, &a);
    ck_assert_msg(st == 0, "run: %s", dfm_sampler_last_error(smp));
    int64_t calls;
    dfm_sampler_get_stat(smp, DFM_STAT_MODEL_CALLS, &calls);
    ck_assert_int_eq(calls, tg.calls);
    check_mixture(x, n, tol);
    free(x);
    dfm_sampler_free(smp);
}

START_TEST(mixture_ode_samplers_condot)
{
    dfm_scheduler *s;
    ck_assert_int_eq(dfm_scheduler_create_condot(&s, NULL), 0);
    sample_mixture(s, DFM_PARAM_VELOCITY, DFM_METHOD_EULER, 200, 0.03, NULL);
    sample_mixture(s, DFM_PARAM_VELOCITY, DFM_METHOD_MIDPOINT, 32, 0.01, NULL);
    sample_mixture(s, DFM_PARAM_VELOCITY, DFM_METHOD_RK4, 16, 0.01, NULL);
    sample_mixture(s, DFM_PARAM_VELOCITY, DFM_METHOD_DOPRI5, 0, 0.005, NULL);
    sample_mixture(s, DFM_PARAM_X1, DFM_METHOD_RK4, 32, 0.01, NULL);
    sample_mixture(s, DFM_PARAM_EPSILON, DFM_METHOD_RK4, 0, 0.01, NULL);
    sample_mixture(s, DFM_PARAM_SCORE, DFM_METHOD_RK4, 0, 0.01, NULL);
    dfm_scheduler_free(s);
}
END_TEST

START_TEST(mixture_ode_samplers_cosine)
{
    dfm_scheduler *s;
    ck_assert_int_eq(dfm_scheduler_create_cosine(&s, NULL), 0);
    sample_mixture(s, DFM_PARAM_VELOCITY, DFM_METHOD_EULER, 200, 0.03, NULL);
    sample_mixture(s, DFM_PARAM_VELOCITY, DFM_METHOD_RK4, 16, 0.01, NULL);
    sample_mixture(s, DFM_PARAM_VELOCITY, DFM_METHOD_DOPRI5, 0, 0.005, NULL);
    dfm_scheduler_free(s);
    /* VP (source at t = 0 is N(alpha_0 x1, sigma_0^2) with alpha_0 = 0.0066: close to N(0, I)) */
    ck_assert_int_eq(dfm_scheduler_create_vp(&s, 0.1, 20.0, NULL), 0);
    sample_mixture(s, DFM_PARAM_VELOCITY, DFM_METHOD_RK4, 64, 0.02, NULL);
    sample_mixture(s, DFM_PARAM_EPSILON, DFM_METHOD_DOPRI5, 0, 0.02, NULL);
    dfm_scheduler_free(s);
}
END_TEST

START_TEST(schedule_transform_keeps_the_target)
{
    /* A model trained on CondOT sampled with the cosine and polynomial schedulers. */
    dfm_scheduler *s, *c, *pl;
    ck_assert_int_eq(dfm_scheduler_create_condot(&s, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_cosine(&c, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_polynomial(&pl, 2.0, NULL), 0);
    sample_mixture(s, DFM_PARAM_VELOCITY, DFM_METHOD_RK4, 32, 0.01, c);
    sample_mixture(s, DFM_PARAM_X1, DFM_METHOD_DOPRI5, 0, 0.01, pl);
    dfm_scheduler_free(s);
    dfm_scheduler_free(c);
    dfm_scheduler_free(pl);
}
END_TEST

START_TEST(schedule_transform_same_endpoints)
{
    /* Transforming CondOT into itself must give back the same velocity field: compare single
     * Euler steps of both generators. */
    dfm_scheduler *s, *c;
    ck_assert_int_eq(dfm_scheduler_create_condot(&s, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_cosine(&c, NULL), 0);
    target tg = {s, DFM_PARAM_VELOCITY, 1, -1, 0, 0};
    /* Exact flow map under the cosine scheduler from the same x0: the transformed sampler must
     * land on the Gaussian target's flow map too (map x0 -> m + S^{1/2}-like affine map). */
    dfm_path *p = make_path(s);
    dfm_generator *g1, *g2;
    ck_assert_int_eq(dfm_generator_create_velocity(&g1, p, DFM_PARAM_VELOCITY, NULL), 0);
    ck_assert_int_eq(dfm_generator_create_velocity(&g2, p, DFM_PARAM_VELOCITY, NULL), 0);
    ck_assert_int_eq(dfm_generator_set_sampling_scheduler(g2, c), 0);
    dfm_sampler *s1, *s2;
    ck_assert_int_eq(dfm_sampler_create(&s1, g1, DFM_METHOD_DOPRI5, NULL), 0);
    ck_assert_int_eq(dfm_sampler_create(&s2, g2, DFM_METHOD_DOPRI5, NULL), 0);
    for (int k = 0; k < 2; k++) {
        dfm_sampler *sm = k ? s2 : s1;
        ck_assert_int_eq(dfm_sampler_set_double(sm, DFM_OPT_ATOL, 1e-8), 0);
        ck_assert_int_eq(dfm_sampler_set_double(sm, DFM_OPT_RTOL, 1e-8), 0);
    }
    float x1[8] = {0.3f, -1.2f, 1.5f, 0.1f, -0.7f, 0.9f, 2.0f, -2.0f};
    float x2[8];
    memcpy(x2, x1, sizeof x1);
    dfm_run_args a = run_args(&tg, x1, 4);
    ck_assert_int_eq(dfm_sampler_run(s1, &a), 0);
    a.reals = x2;
    ck_assert_msg(dfm_sampler_run(s2, &a) == 0, "%s", dfm_sampler_last_error(s2));
    /* Both schedules share the marginals and (Gaussian, linear flow map) the same endpoint map. */
    for (int i = 0; i < 8; i++) ck_assert_msg(fabs(x1[i] - x2[i]) < 2e-4, "%d: %g vs %g", i, x1[i], x2[i]);
    dfm_sampler_free(s1); dfm_sampler_free(s2);
    dfm_generator_free(g1); dfm_generator_free(g2);
    dfm_path_free(p);
    dfm_scheduler_free(s); dfm_scheduler_free(c);
}
END_TEST

static void sde_case(dfm_scheduler *s, int param, double g, dfm_diffusion_fn gfn, size_t steps)
{
    const size_t n = tu_count(8000); /* DFM_TEST_SCALE (testutil.h); bounds below use n */
    target tg = {s, param, 0, -1, 0, 0};
    dfm_path *p = make_path(s);
    dfm_generator *gen;
    ck_assert_int_eq(dfm_generator_create_diffusion(&gen, p, param, g, NULL), 0);
    if (gfn) ck_assert_int_eq(dfm_generator_set_diffusion_fn(gen, gfn, NULL), 0);
    dfm_sampler *smp;
    ck_assert_int_eq(dfm_sampler_create(&smp, gen, DFM_METHOD_RK4, NULL), DFM_EUNSUPPORTED);
    ck_assert_ptr_null(smp);
    ck_assert_int_eq(dfm_sampler_create(&smp, gen, DFM_METHOD_EULER_MARUYAMA, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_int(smp, DFM_OPT_SEED, 77), 0);
    double grid[401];
    for (size_t i = 0; i <= steps; i++) grid[i] = 0.999 * (double)i / (double)steps;
    ck_assert_int_eq(dfm_sampler_set_grid(smp, grid, steps + 1), 0);
    float *x = (float *)calloc(2 * n, sizeof(float));
    dfm_run_args a = run_args(&tg, x, n);
    a.draw_source = 1;
    int st = dfm_sampler_run(smp, &a);
    ck_assert_msg(st == 0, "run: %s", dfm_sampler_last_error(smp));
    check_mixture(x, n, 0.05);
    free(x);
    dfm_sampler_free(smp);
    dfm_generator_free(gen);
    dfm_path_free(p);
}

static int g_decay(double t, double *g, void *ud)
{
    (void)ud;
    *g = 1.5 * (1.0 - t);
    return 0;
}

START_TEST(mixture_sde_sampler)
{
    dfm_scheduler *s;
    ck_assert_int_eq(dfm_scheduler_create_condot(&s, NULL), 0);
    sde_case(s, DFM_PARAM_VELOCITY, 0.7, NULL, 400);
    sde_case(s, DFM_PARAM_X1, 0.0, g_decay, 400);
    dfm_scheduler_free(s);
}
END_TEST

START_TEST(sde_backwards_reaches_the_source)
{
    /* Data -> noise with a descending grid: drift v - g^2/2 score; the result is N(0, I). */
    const size_t n = tu_count(8000); /* DFM_TEST_SCALE (testutil.h); bounds below use n */
    dfm_scheduler *s;
    ck_assert_int_eq(dfm_scheduler_create_condot(&s, NULL), 0);
    target tg = {s, DFM_PARAM_VELOCITY, 0, -1, 0, 0};
    dfm_sampler *smp = make_sampler(s, DFM_PARAM_VELOCITY, 1, 0.8, DFM_METHOD_EULER_MARUYAMA);
    double grid[401];
    for (int i = 0; i <= 400; i++) grid[i] = 0.999 * (1.0 - i / 400.0);
    ck_assert_int_eq(dfm_sampler_set_grid(smp, grid, 401), 0);
    float *x = (float *)malloc(2 * n * sizeof(float));
    for (size_t r = 0; r < n; r++) {
        int k = dfm_rng_uniform(11, 0, r, 0, 0) < MW[0] ? 0 : 1;
        for (int i = 0; i < 2; i++) {
            double a = 0.999, sg = 0.001; /* exact draw from p_{0.999} */
            x[2 * r + i] = (float)(a * (MM[k][i] + MS[k] * dfm_rng_normal(11, 1, r, i, 0)) +
                                   sg * dfm_rng_normal(11, 2, r, i, 0));
        }
    }
    dfm_run_args a = run_args(&tg, x, n);
    ck_assert_msg(dfm_sampler_run(smp, &a) == 0, "%s", dfm_sampler_last_error(smp));
    for (int i = 0; i < 2; i++) {
        double m = 0, v = 0;
        for (size_t r = 0; r < n; r++) { m += x[2 * r + i]; v += (double)x[2 * r + i] * x[2 * r + i]; }
        m /= (double)n;
        v = v / (double)n - m * m;
        ck_assert_msg(fabs(m) < 4.5 / sqrt((double)n) + 0.03, "mean %g", m);
        ck_assert_msg(fabs(v - 1.0) < 4.5 * sqrt(2.0 / (double)n) + 0.05, "var %g", v);
    }
    free(x);
    dfm_sampler_free(smp);
    dfm_scheduler_free(s);
}
END_TEST

START_TEST(sde_noise_matters)
{
    /* With g = 0 the SDE sampler is Euler; with g > 0 the paths differ but the target holds. */
    dfm_scheduler *s;
    ck_assert_int_eq(dfm_scheduler_create_condot(&s, NULL), 0);
    target tg = {s, DFM_PARAM_VELOCITY, 0, -1, 0, 0};
    dfm_sampler *e = make_sampler(s, DFM_PARAM_VELOCITY, 0, 0, DFM_METHOD_EULER);
    dfm_sampler *m = make_sampler(s, DFM_PARAM_VELOCITY, 1, 0.0, DFM_METHOD_EULER_MARUYAMA);
    dfm_sampler_set_steps(e, 20);
    dfm_sampler_set_steps(m, 20);
    float x1[8] = {0.3f, -1.2f, 1.5f, 0.1f, -0.7f, 0.9f, 2.0f, -2.0f}, x2[8];
    memcpy(x2, x1, sizeof x1);
    dfm_run_args a = run_args(&tg, x1, 4);
    ck_assert_int_eq(dfm_sampler_run(e, &a), 0);
    a.reals = x2;
    ck_assert_int_eq(dfm_sampler_run(m, &a), 0);
    for (int i = 0; i < 8; i++) ck_assert_float_eq_tol(x1[i], x2[i], 1e-6);
    dfm_sampler_free(e);
    dfm_sampler_free(m);
    dfm_scheduler_free(s);
}
END_TEST

/* ---------- convergence orders on the single Gaussian (exact flow map) ---------- */

/* Exact flow map of CondOT for N(GM, GS): x_t = a m + C_t^{1/2} x0 ... for a full covariance
 * the marginal-velocity flow is x_t = a m + L_t x0 with L_t = (a^2 S + s^2 I)^{1/2} (S, I
 * commute). At t = 1: m + S^{1/2} x0. */
static void sqrt2(const double a[2][2], double r[2][2])
{
    double s = sqrt(a[0][0] * a[1][1] - a[0][1] * a[1][0]);
    double t = sqrt(a[0][0] + a[1][1] + 2.0 * s);
    r[0][0] = (a[0][0] + s) / t; r[1][1] = (a[1][1] + s) / t;
    r[0][1] = a[0][1] / t; r[1][0] = a[1][0] / t;
}

static const dfm_scheduler *MAP_SCHED;

static void exact_map(double t, const double x0[2], double out[2])
{
    dfm_sched_values v;
    dfm_scheduler_eval(MAP_SCHED, t, &v, NULL);
    double a = v.alpha, s = v.sigma, C[2][2], L[2][2];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) C[i][j] = a * a * GS[i][j] + (i == j ? s * s : 0.0);
    sqrt2(C, L);
    for (int i = 0; i < 2; i++) out[i] = a * GM[i] + L[i][0] * x0[0] + L[i][1] * x0[1];
}

static double FLOW_T = 1.0;

static double flow_error(dfm_scheduler *s, int method, size_t steps)
{
    target tg = {s, DFM_PARAM_VELOCITY, 1, -1, 0, 0};
    dfm_sampler *smp = make_sampler(s, DFM_PARAM_VELOCITY, 0, 0, method);
    double grid[257];
    for (size_t i = 0; i <= steps; i++) grid[i] = FLOW_T * (double)i / (double)steps;
    ck_assert_int_eq(dfm_sampler_set_grid(smp, grid, steps + 1), 0);
    double x0[4][2] = {{0.3, -1.2}, {1.5, 0.1}, {-0.7, 0.9}, {2.0, -2.0}};
    float x[8];
    for (int i = 0; i < 8; i++) x[i] = (float)x0[i / 2][i % 2];
    dfm_run_args a = run_args(&tg, x, 4);
    ck_assert_int_eq(dfm_sampler_run(smp, &a), 0);
    int64_t calls;
    dfm_sampler_get_stat(smp, DFM_STAT_MODEL_CALLS, &calls);
    int per = method == DFM_METHOD_EULER ? 1 : method == DFM_METHOD_MIDPOINT ? 2 : 4;
    ck_assert_int_eq(calls, (int64_t)(per * steps));
    double err = 0.0;
    for (int r = 0; r < 4; r++) {
        double e[2];
        exact_map(FLOW_T, x0[r], e);
        for (int i = 0; i < 2; i++) err = fmax(err, fabs(x[2 * r + i] - e[i]));
    }
    dfm_sampler_free(smp);
    return err;
}

START_TEST(convergence_orders)
{
    dfm_scheduler *s;
    ck_assert_int_eq(dfm_scheduler_create_cosine(&s, NULL), 0);
    MAP_SCHED = s;
    FLOW_T = 0.8;
    /* The matrix square root flow is curved: exact map check at t = 1 with many RK4 steps. */
    ck_assert_double_lt(flow_error(s, DFM_METHOD_RK4, 64), 2e-6);
    double e8 = flow_error(s, DFM_METHOD_EULER, 8), e16 = flow_error(s, DFM_METHOD_EULER, 16),
           e32 = flow_error(s, DFM_METHOD_EULER, 32);
    double p1 = log2(e8 / e16), p2 = log2(e16 / e32);
    ck_assert_msg(fabs(p1 - 1.0) < 0.25 && fabs(p2 - 1.0) < 0.2, "Euler orders %g %g (%g %g %g)",
                  p1, p2, e8, e16, e32);
    double m4 = flow_error(s, DFM_METHOD_MIDPOINT, 4), m8 = flow_error(s, DFM_METHOD_MIDPOINT, 8),
           m16 = flow_error(s, DFM_METHOD_MIDPOINT, 16);
    ck_assert_msg(fabs(log2(m8 / m16) - 2.0) < 0.3, "midpoint order %g (%g %g %g)",
                  log2(m8 / m16), m4, m8, m16);
    double r2 = flow_error(s, DFM_METHOD_RK4, 3), r4 = flow_error(s, DFM_METHOD_RK4, 6),
           r8 = flow_error(s, DFM_METHOD_RK4, 12);
    double q1 = log2(r2 / r4), q2 = log2(r4 / r8);
    ck_assert_msg(fabs(q2 - 4.0) < 0.5 && fabs(q1 - 4.0) < 0.5, "RK4 orders %g %g (%g %g %g)", q1, q2, r2, r4,
                  r8);
    dfm_scheduler_free(s);
}
END_TEST

START_TEST(dopri5_tolerance_and_stats)
{
    dfm_scheduler *s;
    ck_assert_int_eq(dfm_scheduler_create_condot(&s, NULL), 0);
    MAP_SCHED = s;
    FLOW_T = 1.0;
    target tg = {s, DFM_PARAM_VELOCITY, 1, -1, 0, 0};
    double prev_err = 1.0;
    int64_t prev_calls = 0;
    for (int k = 0; k < 3; k++) {
        double tol = k == 0 ? 1e-3 : k == 1 ? 1e-5 : 1e-7;
        dfm_sampler *smp = make_sampler(s, DFM_PARAM_VELOCITY, 0, 0, DFM_METHOD_DOPRI5);
        ck_assert_int_eq(dfm_sampler_set_double(smp, DFM_OPT_ATOL, tol), 0);
        ck_assert_int_eq(dfm_sampler_set_double(smp, DFM_OPT_RTOL, tol), 0);
        double x0[2] = {0.3, -1.2}, e[2];
        float x[2] = {0.3f, -1.2f};
        dfm_run_args a = run_args(&tg, x, 1);
        ck_assert_int_eq(dfm_sampler_run(smp, &a), 0);
        exact_map(1.0, x0, e);
        double err = fmax(fabs(x[0] - e[0]), fabs(x[1] - e[1]));
        int64_t calls, steps, rej;
        dfm_sampler_get_stat(smp, DFM_STAT_MODEL_CALLS, &calls);
        dfm_sampler_get_stat(smp, DFM_STAT_STEPS, &steps);
        dfm_sampler_get_stat(smp, DFM_STAT_REJECTED, &rej);
        ck_assert_int_eq(calls, tg.calls);
        tg.calls = 0;
        /* 6 calls per attempted step plus the first evaluation and the starting-step probe */
        ck_assert_int_eq(calls, 6 * (steps + rej) + 2);
        ck_assert_msg(err < 50 * tol + 1e-6, "tol %g: err %g", tol, err);
        ck_assert_msg(err <= prev_err * 1.01 + 1e-6, "error does not shrink");
        ck_assert_int_ge(calls, prev_calls);
        prev_err = err;
        prev_calls = calls;
        dfm_sampler_free(smp);
    }
    dfm_scheduler_free(s);
}
END_TEST

START_TEST(save_times_and_descending_grid)
{
    dfm_scheduler *s;
    ck_assert_int_eq(dfm_scheduler_create_condot(&s, NULL), 0);
    MAP_SCHED = s;
    FLOW_T = 1.0;
    target tg = {s, DFM_PARAM_VELOCITY, 1, -1, 0, 0};
    double x0[2][2] = {{0.3, -1.2}, {1.5, 0.1}};
    const double st[3] = {0.0, 0.5, 0.53};
    for (int m = 0; m < 2; m++) {
        int method = m ? DFM_METHOD_DOPRI5 : DFM_METHOD_RK4;
        dfm_sampler *smp = make_sampler(s, DFM_PARAM_VELOCITY, 0, 0, method);
        dfm_sampler_set_steps(smp, 20);
        if (m) {
            dfm_sampler_set_double(smp, DFM_OPT_ATOL, 1e-8);
            dfm_sampler_set_double(smp, DFM_OPT_RTOL, 1e-8);
        }
        float x[4], saved[3 * 4];
        for (int i = 0; i < 4; i++) x[i] = (float)x0[i / 2][i % 2];
        dfm_run_args a = run_args(&tg, x, 2);
        a.save_times = st;
        a.n_save = 3;
        a.saved_reals = saved;
        ck_assert_int_eq(dfm_sampler_run(smp, &a), 0);
        for (int k = 0; k < 3; k++)
            for (int r = 0; r < 2; r++) {
                double e[2];
                exact_map(st[k], x0[r], e);
                for (int i = 0; i < 2; i++)
                    ck_assert_msg(fabs(saved[k * 4 + 2 * r + i] - e[i]) < 1e-5,
                                  "method %d save %d: %g vs %g", method, k,
                                  saved[k * 4 + 2 * r + i], e[i]);
            }
        if (!m) {
            /* 20 grid steps + 1 inserted point (0.55), 4 stages each */
            int64_t calls;
            dfm_sampler_get_stat(smp, DFM_STAT_MODEL_CALLS, &calls);
            ck_assert_int_eq(calls, 4 * 21);
        }
        /* Descending grid: data -> noise recovers x0. */
        double grid[33];
        for (int i = 0; i <= 32; i++) grid[i] = 1.0 - i / 32.0;
        ck_assert_int_eq(dfm_sampler_set_grid(smp, grid, 33), 0);
        dfm_run_args b = run_args(&tg, x, 2);
        ck_assert_int_eq(dfm_sampler_run(smp, &b), 0);
        for (int i = 0; i < 4; i++)
            ck_assert_msg(fabs(x[i] - x0[i / 2][i % 2]) < 1e-4, "%g vs %g", x[i], x0[i / 2][i % 2]);
        /* draw_source with a descending grid is refused */
        b.draw_source = 1;
        ck_assert_int_eq(dfm_sampler_run(smp, &b), DFM_EINVAL);
        dfm_sampler_free(smp);
    }
    dfm_scheduler_free(s);
}
END_TEST

/* ---------- path, conversions, loss ---------- */

START_TEST(path_sample_affine)
{
    dfm_scheduler *sc[3];
    ck_assert_int_eq(dfm_scheduler_create_condot(&sc[0], NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_vp(&sc[1], 0.1, 20.0, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_polynomial(&sc[2], 3.0, NULL), 0);
    for (int k = 0; k < 3; k++) {
        dfm_space *sp;
        ck_assert_int_eq(dfm_space_create_euclidean(&sp, 70, NULL), 0); /* not a multiple of 4 */
        dfm_path *p;
        ck_assert_int_eq(dfm_path_create_affine(&p, sp, sc[k], NULL), 0);
        ck_assert_int_eq(dfm_path_kind(p), DFM_PATH_AFFINE);
        const size_t R = 300, D = 70, N = R * D;
        float *x1 = malloc(N * 4), *xt = malloc(N * 4), *tg = malloc(N * 4), *x0 = malloc(N * 4);
        float *xt2 = malloc(N * 4), *x02 = malloc(N * 4);
        double *t = malloc(R * 8);
        for (size_t i = 0; i < N; i++) x1[i] = (float)sin(0.37 * (double)i);
        for (size_t r = 0; r < R; r++) t[r] = (double)r / (double)R; /* VP: no target at t = 1 */
        dfm_path_sample_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.rows = R;
        a.t = t;
        a.x1_reals = x1;
        a.xt_reals = xt;
        a.target_reals = tg;
        a.x0_reals_out = x0;
        a.draw = 5;
        ck_assert_int_eq(dfm_path_set_int(p, DFM_OPT_SEED, 99), 0);
        ck_assert_msg(dfm_path_sample(p, &a) == 0, "%s", dfm_path_last_error(p));
        double m = 0, v = 0, err = 0;
        for (size_t r = 0; r < R; r++) {
            dfm_sched_values sv;
            dfm_scheduler_eval(sc[k], t[r], &sv, NULL);
            for (size_t j = 0; j < D; j++) {
                size_t i = r * D + j;
                m += x0[i]; v += (double)x0[i] * x0[i];
                err = fmax(err, fabs(xt[i] - (sv.alpha * x1[i] + sv.sigma * x0[i])));
                err = fmax(err, fabs(tg[i] - (sv.d_alpha * x1[i] + sv.d_sigma * x0[i])) /
                                    (1.0 + fabs(sv.d_alpha) + fabs(sv.d_sigma)));
            }
        }
        m /= (double)N; v = v / (double)N - m * m;
        ck_assert_double_lt(err, 1e-5);
        ck_assert_msg(fabs(m) < 4.5 / sqrt((double)N), "mean %g", m);
        ck_assert_msg(fabs(v - 1.0) < 4.5 * sqrt(2.0 / (double)N), "var %g", v);
        /* Given coupling: x0 used as is. Split batch + 2 threads give the same draws. */
        a.x0_reals = x0;
        a.x0_reals_out = NULL;
        a.xt_reals = xt2;
        a.target_reals = NULL;
        ck_assert_int_eq(dfm_path_sample(p, &a), 0);
        ck_assert_int_eq(memcmp(xt, xt2, N * 4), 0);
        a.x0_reals = NULL;
        a.x0_reals_out = x02;
        ck_assert_int_eq(dfm_path_set_int(p, DFM_OPT_THREADS, 2), 0);
        a.rows = 100;
        ck_assert_int_eq(dfm_path_sample(p, &a), 0);
        a.rows = 200; a.row_offset = 100; a.t = t + 100; a.x1_reals = x1 + 100 * D;
        a.xt_reals = xt2 + 100 * D; a.x0_reals_out = x02 + 100 * D;
        ck_assert_int_eq(dfm_path_sample(p, &a), 0);
        ck_assert_int_eq(memcmp(x0, x02, N * 4), 0);
        ck_assert_int_eq(memcmp(xt, xt2, N * 4), 0);
        /* bad input leaves outputs untouched */
        memset(xt2, 0, N * 4);
        a.row_offset = 0; a.rows = R; a.t = t; a.x1_reals = x1; a.xt_reals = xt2;
        a.x0_reals_out = x02;
        t[3] = 1.5;
        ck_assert_int_eq(dfm_path_sample(p, &a), DFM_ERANGE);
        ck_assert_ptr_nonnull(strstr(dfm_path_last_error(p), "outside"));
        t[3] = 0.5;
        x1[7] = NAN;
        ck_assert_int_eq(dfm_path_sample(p, &a), DFM_ENUMERIC);
        for (size_t i = 0; i < N; i++) ck_assert(xt2[i] == 0.0f);
        x1[7] = 0.0f;
        a.x1_reals = NULL;
        ck_assert_int_eq(dfm_path_sample(p, &a), DFM_EINVAL);
        free(x1); free(xt); free(tg); free(x0); free(xt2); free(x02); free(t);
        dfm_path_free(p);
        dfm_space_free(sp);
    }
    /* linear VP: the target at t = 1 has an infinite derivative */
    dfm_scheduler *lv;
    ck_assert_int_eq(dfm_scheduler_create_linear_vp(&lv, NULL), 0);
    dfm_path *p = make_path(lv);
    float x1[2] = {1, 2}, xt[2], tg[2];
    double t1 = 1.0;
    dfm_path_sample_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a; a.rows = 1; a.t = &t1; a.x1_reals = x1; a.xt_reals = xt;
    a.target_reals = tg;
    ck_assert_int_eq(dfm_path_sample(p, &a), DFM_ERANGE);
    a.target_reals = NULL;
    ck_assert_int_eq(dfm_path_sample(p, &a), 0);
    ck_assert_float_eq(xt[0], 1.0f);
    dfm_path_free(p);
    dfm_scheduler_free(lv);
    for (int k = 0; k < 3; k++) dfm_scheduler_free(sc[k]);
    /* creation errors */
    dfm_space *ds;
    dfm_scheduler *cs;
    ck_assert_int_eq(dfm_space_create_discrete(&ds, 4, 3, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_condot(&cs, NULL), 0);
    p = (dfm_path *)1;
    ck_assert_int_eq(dfm_path_create_affine(&p, ds, cs, NULL), DFM_EINVAL);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(dfm_path_create_affine(&p, NULL, cs, NULL), DFM_EINVAL);
    dfm_space_free(ds);
    dfm_scheduler_free(cs);
}
END_TEST

static const int PARAMS[4] = {DFM_PARAM_VELOCITY, DFM_PARAM_X1, DFM_PARAM_EPSILON, DFM_PARAM_SCORE};

static double truth(int param, const dfm_sched_values *v, double x1, double x0)
{
    switch (param) {
    case DFM_PARAM_VELOCITY: return v->d_alpha * x1 + v->d_sigma * x0;
    case DFM_PARAM_X1: return x1;
    case DFM_PARAM_EPSILON: return x0;
    default: return -x0 / v->sigma;
    }
}

START_TEST(normal_draws_histogram)
{
    /* x0 drawn by the path: chi-square against N(0, 1) on 14 bins, and pairs of coordinates
     * (r cos, r sin of one Box-Muller pair: coords l and 32 + l) uncorrelated. */
    dfm_scheduler *sc;
    ck_assert_int_eq(dfm_scheduler_create_condot(&sc, NULL), 0);
    dfm_space *sp;
    ck_assert_int_eq(dfm_space_create_euclidean(&sp, 64, NULL), 0);
    dfm_path *p;
    ck_assert_int_eq(dfm_path_create_affine(&p, sp, sc, NULL), 0);
    const size_t R = 1000, N = R * 64;
    float *x1 = calloc(N, 4), *xt = malloc(N * 4), *x0 = malloc(N * 4);
    double *t = calloc(R, 8);
    dfm_path_sample_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a; a.rows = R; a.t = t; a.x1_reals = x1; a.xt_reals = xt;
    a.x0_reals_out = x0;
    ck_assert_int_eq(dfm_path_sample(p, &a), 0);
    long cnt[14] = {0};
    double pr[14];
    for (int b = 0; b < 14; b++) {
        double lo = b == 0 ? -INFINITY : -3.0 + 0.5 * (b - 1), hi = b == 13 ? INFINITY : -3.0 + 0.5 * b;
        pr[b] = 0.5 * (erfc(-hi / sqrt(2.0)) - erfc(-lo / sqrt(2.0)));
    }
    double cxy = 0.0;
    for (size_t i = 0; i < N; i++) {
        int b = x0[i] < -3.0f ? 0 : x0[i] >= 3.0f ? 13 : 1 + (int)((x0[i] + 3.0f) / 0.5f);
        cnt[b]++;
        ck_assert(xt[i] == x0[i]); /* t = 0: x_t = x0 */
        if (i % 64 < 32) cxy += (double)x0[i] * x0[i + 32];
    }
    TU_ASSERT_CHI2(cnt, pr, 14, (long)N);
    cxy /= (double)(N / 2);
    ck_assert_msg(fabs(cxy) < 4.5 / sqrt((double)(N / 2)), "pair correlation %g", cxy);
    free(x1); free(xt); free(x0); free(t);
    dfm_path_free(p);
    dfm_space_free(sp);
    dfm_scheduler_free(sc);
}
END_TEST

START_TEST(conversions_round_trip)
{
    dfm_scheduler *sc[3];
    ck_assert_int_eq(dfm_scheduler_create_condot(&sc[0], NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_cosine(&sc[1], NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_vp(&sc[2], 0.1, 20.0, NULL), 0);
    enum { R = 16 };
    for (int k = 0; k < 3; k++) {
        dfm_path *p = make_path(sc[k]);
        double t[R];
        float x1[2 * R], x0[2 * R], xt[2 * R], rep[4][2 * R];
        for (int r = 0; r < R; r++) {
            t[r] = 0.05 + 0.9 * r / (R - 1.0);
            dfm_sched_values v;
            dfm_scheduler_eval(sc[k], t[r], &v, NULL);
            for (int i = 0; i < 2; i++) {
                x1[2 * r + i] = (float)(1.3 * sin(r + 3.0 * i));
                x0[2 * r + i] = (float)cos(2.0 * r + i);
                xt[2 * r + i] = (float)(v.alpha * x1[2 * r + i] + v.sigma * x0[2 * r + i]);
                for (int q = 0; q < 4; q++)
                    rep[q][2 * r + i] = (float)truth(PARAMS[q], &v, x1[2 * r + i], x0[2 * r + i]);
            }
        }
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++) {
                float out[2 * R], back[2 * R];
                int st = dfm_affine_convert(p, PARAMS[a], PARAMS[b], R, t, xt, rep[a], out);
                ck_assert_msg(st == 0, "%s", dfm_path_last_error(p));
                for (int i = 0; i < 2 * R; i++) {
                    double sc_ = 1.0 + fabs(rep[b][i]);
                    ck_assert_msg(fabs(out[i] - rep[b][i]) < 2e-3 * sc_, "sched %d %d->%d [%d]: %g vs %g",
                                  k, PARAMS[a], PARAMS[b], i, out[i], rep[b][i]);
                }
                ck_assert_int_eq(dfm_affine_convert(p, PARAMS[b], PARAMS[a], R, t, xt, out, back), 0);
                for (int i = 0; i < 2 * R; i++)
                    ck_assert_msg(fabs(back[i] - rep[a][i]) < 2e-3 * (1.0 + fabs(rep[a][i])),
                                  "round trip %d->%d->%d", PARAMS[a], PARAMS[b], PARAMS[a]);
            }
        dfm_path_free(p);
    }
    /* Endpoints: CondOT t = 1 has sigma = 0, t = 0 has alpha = 0. */
    dfm_path *p = make_path(sc[0]);
    double t1[1] = {1.0}, t0[1] = {0.0};
    float xt[2] = {1, 2}, in[2] = {0.5f, 0.5f}, out[2] = {7, 7};
    ck_assert_int_eq(dfm_affine_convert(p, DFM_PARAM_X1, DFM_PARAM_EPSILON, 1, t1, xt, in, out), DFM_ERANGE);
    ck_assert_ptr_nonnull(strstr(dfm_path_last_error(p), "undefined"));
    ck_assert_int_eq(dfm_affine_convert(p, DFM_PARAM_EPSILON, DFM_PARAM_SCORE, 1, t1, xt, in, out), DFM_ERANGE);
    ck_assert_int_eq(dfm_affine_convert(p, DFM_PARAM_EPSILON, DFM_PARAM_X1, 1, t0, xt, in, out), DFM_ERANGE);
    ck_assert(out[0] == 7.0f && out[1] == 7.0f);
    /* defined at the endpoints: velocity <-> x1 at t = 0, x1 -> velocity at t = 0 */
    ck_assert_int_eq(dfm_affine_convert(p, DFM_PARAM_VELOCITY, DFM_PARAM_X1, 1, t0, xt, in, out), 0);
    ck_assert_float_eq_tol(out[0], 0.5f + 1.0f, 1e-6); /* x1 = v + x_t at t = 0 */
    ck_assert_int_eq(dfm_affine_convert(p, DFM_PARAM_VELOCITY, DFM_PARAM_EPSILON, 1, t1, xt, in, out), 0);
    double tbad[1] = {1.5};
    ck_assert_int_eq(dfm_affine_convert(p, DFM_PARAM_X1, DFM_PARAM_VELOCITY, 1, tbad, xt, in, out), DFM_ERANGE);
    ck_assert_int_eq(dfm_affine_convert(p, 42, DFM_PARAM_VELOCITY, 1, t0, xt, in, out), DFM_EINVAL);
    ck_assert_int_eq(dfm_affine_convert(p, DFM_PARAM_X1, DFM_PARAM_VELOCITY, 1, t0, NULL, in, out), DFM_EINVAL);
    in[0] = NAN;
    ck_assert_int_eq(dfm_affine_convert(p, DFM_PARAM_X1, DFM_PARAM_VELOCITY, 1, t0, xt, in, out), DFM_ENUMERIC);
    dfm_path_free(p);
    for (int k = 0; k < 3; k++) dfm_scheduler_free(sc[k]);
}
END_TEST

START_TEST(loss_gradient_matches_finite_differences)
{
    dfm_scheduler *sc;
    ck_assert_int_eq(dfm_scheduler_create_cosine(&sc, NULL), 0);
    dfm_path *p = make_path(sc);
    enum { R = 6, N = 2 * R };
    double t[R];
    float x1[N], x0[N], out[N], grad[N];
    for (int r = 0; r < R; r++) t[r] = 0.1 + 0.15 * r;
    for (int i = 0; i < N; i++) {
        x1[i] = (float)sin(1.7 * i);
        x0[i] = (float)cos(0.9 * i);
        out[i] = (float)(0.3 * sin(2.3 * i + 1.0));
    }
    for (int q = 0; q < 4; q++) {
        dfm_generator *g;
        ck_assert_int_eq(dfm_generator_create_velocity(&g, p, PARAMS[q], NULL), 0);
        dfm_loss *l;
        ck_assert_int_eq(dfm_loss_create_mse(&l, g, NULL), 0);
        ck_assert_int_eq(dfm_loss_kind(l), DFM_LOSS_MSE);
        for (int red = 0; red < 3; red++) {
            ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_REDUCTION, red), 0);
            double loss, values[N], lp, lm;
            dfm_loss_args a;
            memset(&a, 0, sizeof a);
            a.struct_size = sizeof a;
            a.rows = R; a.t = t; a.x0_reals = x0; a.x1_reals = x1; a.out = out;
            a.grad = grad; a.loss = &loss; a.values = values;
            ck_assert_msg(dfm_loss_eval(l, &a) == 0, "%s", dfm_loss_last_error(l));
            /* value against the formula */
            double ref = 0.0;
            for (int r = 0; r < R; r++) {
                dfm_sched_values v;
                dfm_scheduler_eval(sc, t[r], &v, NULL);
                for (int i = 0; i < 2; i++) {
                    double e = out[2 * r + i] - truth(PARAMS[q], &v, x1[2 * r + i], x0[2 * r + i]);
                    ref += e * e;
                    if (red == DFM_REDUCE_NONE)
                        ck_assert_double_eq_tol(values[2 * r + i], e * e, 1e-5 * (1 + e * e));
                }
            }
            if (red == DFM_REDUCE_MEAN) ref /= N;
            ck_assert_double_eq_tol(loss, ref, 1e-5 * (1 + ref));
            for (int i = 0; i < N; i++) {
                float keep = out[i];
                double hstep = 1e-2;
                a.grad = NULL;
                out[i] = (float)(keep + hstep); a.loss = &lp; dfm_loss_eval(l, &a);
                out[i] = (float)(keep - hstep); a.loss = &lm; dfm_loss_eval(l, &a);
                out[i] = keep;
                double fd = (lp - lm) / (2 * hstep);
                ck_assert_msg(fabs(fd - grad[i]) < 1e-3 * (1 + fabs(fd)),
                              "param %d red %d grad[%d] = %g, fd %g", PARAMS[q], red, i, grad[i], fd);
                a.grad = grad; a.loss = &loss;
            }
        }
        /* NaN output: DFM_ENUMERIC, grad untouched */
        float g2[N];
        for (int i = 0; i < N; i++) g2[i] = 5.0f;
        out[3] = NAN;
        double loss = 7.0;
        dfm_loss_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.rows = R; a.t = t; a.x0_reals = x0; a.x1_reals = x1; a.out = out; a.grad = g2;
        a.loss = &loss;
        ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_REDUCTION, DFM_REDUCE_MEAN), 0);
        ck_assert_int_eq(dfm_loss_eval(l, &a), DFM_ENUMERIC);
        ck_assert_ptr_nonnull(strstr(dfm_loss_last_error(l), "model output"));
        for (int i = 0; i < N; i++) ck_assert(g2[i] == 5.0f);
        ck_assert(loss == 7.0);
        out[3] = (float)(0.3 * sin(2.3 * 3 + 1.0));
        /* the score target is undefined at sigma = 0 */
        double tt = t[R - 1];
        t[R - 1] = 1.0;
        {
            int st = dfm_loss_eval(l, &a);
            if (PARAMS[q] == DFM_PARAM_SCORE) ck_assert_int_eq(st, DFM_ERANGE);
            else ck_assert_int_eq(st, 0);
        }
        t[R - 1] = tt;
        a.x0_reals = NULL;
        ck_assert_int_eq(dfm_loss_eval(l, &a), DFM_EINVAL);
        dfm_loss_free(l);
        dfm_generator_free(g);
    }
    dfm_path_free(p);
    dfm_scheduler_free(sc);
}
END_TEST

/* ---------- log-likelihood ---------- */

static int div_fn(const dfm_model_io *io, double *div, void *ud)
{
    const target *tg = (const target *)ud;
    for (size_t r = 0; r < io->rows; r++) {
        dfm_sched_values v;
        dfm_scheduler_eval(tg->sched, io->t[r], &v, NULL);
        /* Jacobian of the Gaussian velocity: (a a' S + s s' I)(a^2 S + s^2 I)^{-1} */
        double a = v.alpha, s = v.sigma, N[2][2], C[2][2], Ci[2][2];
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) {
                N[i][j] = a * v.d_alpha * GS[i][j] + (i == j ? s * v.d_sigma : 0.0);
                C[i][j] = a * a * GS[i][j] + (i == j ? s * s : 0.0);
            }
        inv2(C, Ci);
        div[r] = 0.0;
        for (int i = 0; i < 2; i++)
            for (int k = 0; k < 2; k++) div[r] += N[i][k] * Ci[k][i];
    }
    return 0;
}

static double gauss_logpdf(const float *x)
{
    double Si[2][2], r[2] = {x[0] - GM[0], x[1] - GM[1]};
    inv2(GS, Si);
    double q = r[0] * (Si[0][0] * r[0] + Si[0][1] * r[1]) + r[1] * (Si[1][0] * r[0] + Si[1][1] * r[1]);
    double det = GS[0][0] * GS[1][1] - GS[0][1] * GS[1][0];
    return -log(2 * 3.14159265358979323846) - 0.5 * log(det) - 0.5 * q;
}

START_TEST(log_likelihood_gaussian)
{
    dfm_scheduler *s;
    ck_assert_int_eq(dfm_scheduler_create_condot(&s, NULL), 0);
    target tg = {s, DFM_PARAM_VELOCITY, 1, -1, 0, 0};
    float x1[8] = {1.0f, -0.5f, 2.0f, 0.3f, 0.1f, -1.5f, 1.4f, 0.2f};
    for (int m = 0; m < 2; m++) {
        dfm_sampler *smp = make_sampler(s, DFM_PARAM_VELOCITY, 0, 0,
                                        m ? DFM_METHOD_DOPRI5 : DFM_METHOD_RK4);
        dfm_sampler_set_steps(smp, 32);
        double logp[4], var[4];
        dfm_loglik_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.model = model_fn; a.model_data = &tg;
        a.divergence = div_fn; a.divergence_data = &tg;
        a.rows = 4; a.x1 = x1; a.logp = logp; a.logp_var = var;
        ck_assert_msg(dfm_sampler_log_likelihood(smp, &a) == 0, "%s", dfm_sampler_last_error(smp));
        for (int r = 0; r < 4; r++) {
            double e = gauss_logpdf(x1 + 2 * r);
            ck_assert_msg(fabs(logp[r] - e) < 1e-4, "exact div row %d: %g vs %g", r, logp[r], e);
            ck_assert(var[r] == 0.0);
        }
        /* Hutchinson with finite differences: unbiased, variance reported and consistent. */
        a.divergence = NULL;
        a.n_probes = 8;
        ck_assert_int_eq(dfm_sampler_set_int(smp, DFM_OPT_SEED, 5), 0);
        ck_assert_msg(dfm_sampler_log_likelihood(smp, &a) == 0, "%s", dfm_sampler_last_error(smp));
        for (int r = 0; r < 4; r++) {
            double e = gauss_logpdf(x1 + 2 * r);
            ck_assert_msg(var[r] > 0.0 && isfinite(var[r]), "var %g", var[r]);
            ck_assert_msg(fabs(logp[r] - e) < 5.0 * sqrt(var[r]) + 2e-3, "hutchinson row %d: %g vs %g "
                          "(sd %g)", r, logp[r], e, sqrt(var[r]));
        }
        dfm_sampler_free(smp);
    }
    /* Many rows: the Hutchinson average over rows of (estimate - exact) is near 0. */
    {
        enum { R = 400 };
        float *xs = malloc(2 * R * sizeof(float));
        double *lp = malloc(R * 8), *vr = malloc(R * 8);
        for (int r = 0; r < R; r++) { xs[2 * r] = (float)(GM[0] + sin(r)); xs[2 * r + 1] = (float)(GM[1] + cos(1.3 * r)); }
        dfm_sampler *smp = make_sampler(s, DFM_PARAM_VELOCITY, 0, 0, DFM_METHOD_RK4);
        dfm_sampler_set_steps(smp, 16);
        dfm_loglik_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.model = model_fn; a.model_data = &tg;
        a.rows = R; a.x1 = xs; a.logp = lp; a.logp_var = vr; a.n_probes = 2;
        ck_assert_int_eq(dfm_sampler_log_likelihood(smp, &a), 0);
        double bias = 0.0, vsum = 0.0;
        for (int r = 0; r < R; r++) { bias += lp[r] - gauss_logpdf(xs + 2 * r); vsum += vr[r]; }
        ck_assert_msg(fabs(bias / R) < 4.5 * sqrt(vsum) / R + 1e-3, "bias %g", bias / R);
        /* the same with 2 threads is bit-identical */
        double *lp2 = malloc(R * 8);
        a.logp = lp2;
        dfm_sampler_set_int(smp, DFM_OPT_THREADS, 2);
        ck_assert_int_eq(dfm_sampler_log_likelihood(smp, &a), 0);
        ck_assert_int_eq(memcmp(lp, lp2, R * 8), 0);
        /* bad input */
        a.n_probes = 0;
        ck_assert_int_eq(dfm_sampler_log_likelihood(smp, &a), DFM_EINVAL);
        a.n_probes = 1; a.fd_eps = -1;
        ck_assert_int_eq(dfm_sampler_log_likelihood(smp, &a), DFM_EINVAL);
        a.fd_eps = 0; a.x1 = NULL;
        ck_assert_int_eq(dfm_sampler_log_likelihood(smp, &a), DFM_EINVAL);
        free(xs); free(lp); free(vr); free(lp2);
        dfm_sampler_free(smp);
    }
    dfm_scheduler_free(s);
}
END_TEST

/* ---------- bad input, threads ---------- */

static int stop_at_3(int step, int n, double t, void *ud)
{
    (void)n; (void)t; (void)ud;
    return step == 3;
}

static int blowup(const dfm_model_io *io, void *ud)
{
    (void)ud;
    for (size_t r = 0; r < io->rows; r++) {
        double d = 0.5 - io->t[r];
        io->out[r] = (float)(1.0 / (d * d));
    }
    return 0;
}

static int g_negative(double t, double *g, void *ud)
{
    (void)ud;
    *g = t > 0.5 ? -1.0 : 0.5;
    return 0;
}

static int g_fails(double t, double *g, void *ud)
{
    (void)ud;
    *g = 0.5;
    return t > 0.5 ? 23 : 0;
}

static int sched_fails(double t, dfm_sched_values *v, void *ud)
{
    (void)ud;
    v->alpha = t; v->sigma = 1 - t; v->d_alpha = 1; v->d_sigma = -1;
    return t > 0.5 ? 31 : 0;
}

START_TEST(bad_callbacks)
{
    dfm_scheduler *s, *cs;
    ck_assert_int_eq(dfm_scheduler_create_condot(&s, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_custom(&cs, sched_fails, NULL, NULL, NULL), 0);
    target tg = {s, DFM_PARAM_VELOCITY, 0, -1, 0, 0};
    float x[4] = {0.1f, 0.2f, 0.3f, 0.4f}, keep[4];
    memcpy(keep, x, sizeof x);
    dfm_run_args a = run_args(&tg, x, 2);
    /* g(t) negative -> DFM_ENUMERIC; g(t) failing -> DFM_ECALLBACK with its raw value */
    dfm_path *p = make_path(s);
    dfm_generator *g;
    ck_assert_int_eq(dfm_generator_create_diffusion(&g, p, DFM_PARAM_VELOCITY, 0.5, NULL), 0);
    ck_assert_int_eq(dfm_generator_set_diffusion_fn(g, g_negative, NULL), 0);
    dfm_sampler *smp;
    ck_assert_int_eq(dfm_sampler_create(&smp, g, DFM_METHOD_EULER_MARUYAMA, NULL), 0);
    ck_assert_int_eq(dfm_sampler_run(smp, &a), DFM_ENUMERIC);
    ck_assert_ptr_nonnull(strstr(dfm_sampler_last_error(smp), "g("));
    dfm_sampler_free(smp);
    ck_assert_int_eq(dfm_generator_set_diffusion_fn(g, g_fails, NULL), 0);
    ck_assert_int_eq(dfm_sampler_create(&smp, g, DFM_METHOD_EULER_MARUYAMA, NULL), 0);
    ck_assert_int_eq(dfm_sampler_run(smp, &a), DFM_ECALLBACK);
    ck_assert_int_eq(dfm_sampler_callback_status(smp), 23);
    ck_assert_int_eq(memcmp(x, keep, sizeof x), 0);
    dfm_sampler_free(smp);
    dfm_generator_free(g);
    dfm_path_free(p);
    /* a failing custom scheduler in the path, the loss and a sampler */
    p = make_path(cs);
    ck_assert_int_eq(dfm_generator_create_velocity(&g, p, DFM_PARAM_X1, NULL), 0);
    ck_assert_int_eq(dfm_sampler_create(&smp, g, DFM_METHOD_RK4, NULL), 0);
    ck_assert_int_eq(dfm_sampler_run(smp, &a), DFM_ECALLBACK);
    ck_assert_int_eq(dfm_sampler_callback_status(smp), 31);
    ck_assert_int_eq(memcmp(x, keep, sizeof x), 0);
    dfm_loss *l;
    ck_assert_int_eq(dfm_loss_create_mse(&l, g, NULL), 0);
    double t[2] = {0.2, 0.7}, loss = 3.0;
    float out[4] = {0, 0, 0, 0}, gr[4] = {9, 9, 9, 9};
    dfm_loss_args la;
    memset(&la, 0, sizeof la);
    la.struct_size = sizeof la; la.rows = 2; la.t = t; la.x0_reals = x; la.x1_reals = x;
    la.out = out; la.grad = gr; la.loss = &loss;
    ck_assert_int_eq(dfm_loss_eval(l, &la), DFM_ECALLBACK);
    ck_assert_int_eq(dfm_loss_callback_status(l), 31);
    ck_assert(gr[0] == 9.0f && loss == 3.0);
    t[1] = -0.1;
    ck_assert_int_eq(dfm_loss_eval(l, &la), DFM_ERANGE);
    dfm_path_sample_args pa;
    memset(&pa, 0, sizeof pa);
    float xt[4];
    t[1] = 0.9;
    pa.struct_size = sizeof pa; pa.rows = 2; pa.t = t; pa.x1_reals = x; pa.xt_reals = xt;
    ck_assert_int_eq(dfm_path_sample(p, &pa), DFM_ECALLBACK);
    ck_assert_int_eq(dfm_path_callback_status(p), 31);
    dfm_loss_free(l);
    dfm_sampler_free(smp);
    dfm_generator_free(g);
    dfm_path_free(p);
    dfm_scheduler_free(cs);
    dfm_scheduler_free(s);
}
END_TEST

START_TEST(bad_input)
{
    dfm_scheduler *s;
    ck_assert_int_eq(dfm_scheduler_create_condot(&s, NULL), 0);
    const int methods[5] = {DFM_METHOD_EULER, DFM_METHOD_MIDPOINT, DFM_METHOD_RK4,
                            DFM_METHOD_DOPRI5, DFM_METHOD_EULER_MARUYAMA};
    for (int m = 0; m < 5; m++) {
        target tg = {s, DFM_PARAM_VELOCITY, 0, 2, 0, 0};
        dfm_sampler *smp = make_sampler(s, DFM_PARAM_VELOCITY, m == 4, 0.5, methods[m]);
        float x[4] = {0.1f, 0.2f, 0.3f, 0.4f}, keep[4];
        memcpy(keep, x, sizeof x);
        dfm_run_args a = run_args(&tg, x, 2);
        ck_assert_int_eq(dfm_sampler_run(smp, &a), DFM_ENUMERIC);
        ck_assert_ptr_nonnull(strstr(dfm_sampler_last_error(smp), "non-finite"));
        ck_assert_int_eq(memcmp(x, keep, sizeof x), 0);
        tg.nan_at_step = -1;
        tg.fail = 17;
        ck_assert_int_eq(dfm_sampler_run(smp, &a), DFM_ECALLBACK);
        ck_assert_int_eq(dfm_sampler_callback_status(smp), 17);
        ck_assert_int_eq(memcmp(x, keep, sizeof x), 0);
        tg.fail = 0;
        a.progress = stop_at_3;
        ck_assert_int_eq(dfm_sampler_run(smp, &a), DFM_ESTOPPED);
        ck_assert_int_eq(memcmp(x, keep, sizeof x), 0);
        a.progress = NULL;
        a.reals = NULL;
        ck_assert_int_eq(dfm_sampler_run(smp, &a), DFM_EINVAL);
        a.reals = x;
        double sv[2] = {0.5, 0.4};
        float saved[8];
        a.save_times = sv; a.n_save = 2; a.saved_reals = saved;
        ck_assert_int_eq(dfm_sampler_run(smp, &a), DFM_EINVAL);
        sv[0] = 1.5;
        ck_assert_int_eq(dfm_sampler_run(smp, &a), DFM_ERANGE);
        a.n_save = 0;
        double grid[3] = {0.0, 0.5, 1.2};
        ck_assert_int_eq(dfm_sampler_set_grid(smp, grid, 3), DFM_ERANGE);
        ck_assert_int_eq(dfm_sampler_run(smp, NULL), DFM_EINVAL);
        dfm_sampler_free(smp);
    }
    /* tolerances */
    dfm_sampler *d5 = make_sampler(s, DFM_PARAM_VELOCITY, 0, 0, DFM_METHOD_DOPRI5);
    ck_assert_int_eq(dfm_sampler_set_double(d5, DFM_OPT_ATOL, -1e-3), DFM_EINVAL);
    ck_assert_ptr_nonnull(strstr(dfm_sampler_last_error(d5), "atol"));
    ck_assert_int_eq(dfm_sampler_set_double(d5, DFM_OPT_RTOL, NAN), DFM_EINVAL);
    ck_assert_int_eq(dfm_sampler_set_double(d5, DFM_OPT_RTOL, INFINITY), DFM_EINVAL);
    ck_assert_int_eq(dfm_sampler_set_int(d5, DFM_OPT_MAX_STEPS, 0), DFM_EINVAL);
    double v;
    ck_assert_int_eq(dfm_sampler_get_double(d5, DFM_OPT_ATOL, &v), 0);
    ck_assert_double_eq(v, 1e-6);
    /* step-size underflow: a velocity blowing up at t = 0.5 */
    dfm_space *sp1;
    dfm_path *p1;
    dfm_generator *g1;
    dfm_sampler *u;
    ck_assert_int_eq(dfm_space_create_euclidean(&sp1, 1, NULL), 0);
    ck_assert_int_eq(dfm_path_create_affine(&p1, sp1, s, NULL), 0);
    ck_assert_int_eq(dfm_generator_create_velocity(&g1, p1, DFM_PARAM_VELOCITY, NULL), 0);
    ck_assert_int_eq(dfm_sampler_create(&u, g1, DFM_METHOD_DOPRI5, NULL), 0);
    float x = 0.0f;
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a; a.model = blowup; a.rows = 1; a.reals = &x;
    int st = dfm_sampler_run(u, &a);
    ck_assert_msg(st == DFM_ELIMIT, "status %d: %s", st, dfm_sampler_last_error(u));
    ck_assert_ptr_nonnull(strstr(dfm_sampler_last_error(u), "underflow"));
    ck_assert(x == 0.0f);
    /* attempted-step limit */
    ck_assert_int_eq(dfm_sampler_set_int(u, DFM_OPT_MAX_STEPS, 5), 0);
    ck_assert_int_eq(dfm_sampler_run(u, &a), DFM_ELIMIT);
    dfm_sampler_free(u);
    /* method / generator mismatch, NULLs */
    dfm_sampler *bad = (dfm_sampler *)1;
    ck_assert_int_eq(dfm_sampler_create(&bad, g1, DFM_METHOD_EULER_MARUYAMA, NULL), DFM_EUNSUPPORTED);
    ck_assert_ptr_null(bad);
    dfm_generator *gb = (dfm_generator *)1;
    ck_assert_int_eq(dfm_generator_create_velocity(&gb, p1, DFM_PARAM_LOGITS, NULL), DFM_EINVAL);
    ck_assert_ptr_null(gb);
    ck_assert_int_eq(dfm_generator_create_diffusion(&gb, p1, DFM_PARAM_VELOCITY, -1.0, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_generator_create_velocity(&gb, NULL, DFM_PARAM_VELOCITY, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_generator_set_diffusion_fn(g1, g_decay, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_generator_set_sampling_scheduler(NULL, s), DFM_EINVAL);
    ck_assert_int_eq(dfm_loss_create_mse(NULL, g1, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_sampler_log_likelihood(NULL, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_generator_create_diffusion(&gb, p1, DFM_PARAM_VELOCITY, 1.0, NULL), 0);
    ck_assert_int_eq(dfm_generator_set_double(gb, DFM_OPT_DIFFUSION_G, -2.0), DFM_EINVAL);
    ck_assert_int_eq(dfm_generator_set_double(gb, DFM_OPT_DIFFUSION_G, 2.0), 0);
    ck_assert_int_eq(dfm_generator_get_double(gb, DFM_OPT_DIFFUSION_G, &v), 0);
    ck_assert_double_eq(v, 2.0);
    dfm_generator_free(gb);
    dfm_generator_free(g1);
    dfm_path_free(p1);
    dfm_space_free(sp1);
    dfm_sampler_free(d5);
    dfm_scheduler_free(s);
}
END_TEST

START_TEST(thread_count_independence)
{
    dfm_scheduler *s;
    ck_assert_int_eq(dfm_scheduler_create_condot(&s, NULL), 0);
    const int methods[3] = {DFM_METHOD_RK4, DFM_METHOD_DOPRI5, DFM_METHOD_EULER_MARUYAMA};
    enum { R = 257 };
    for (int m = 0; m < 3; m++) {
        target tg = {s, DFM_PARAM_VELOCITY, 0, -1, 0, 0};
        dfm_sampler *smp = make_sampler(s, DFM_PARAM_VELOCITY, m == 2, 0.8, methods[m]);
        dfm_sampler_set_steps(smp, 10);
        dfm_sampler_set_int(smp, DFM_OPT_SEED, 3);
        float a1[2 * R], a2[2 * R], a3[2 * R];
        dfm_run_args a = run_args(&tg, a1, R);
        a.draw_source = 1;
        ck_assert_int_eq(dfm_sampler_run(smp, &a), 0);
        ck_assert_int_eq(dfm_sampler_set_int(smp, DFM_OPT_THREADS, 2), 0);
        a.reals = a2;
        ck_assert_int_eq(dfm_sampler_run(smp, &a), 0);
        ck_assert_int_eq(memcmp(a1, a2, sizeof a1), 0);
        if (m == 2) {
            /* a split batch (row_offset) gives the same SDE samples */
            a.reals = a3; a.rows = 100;
            ck_assert_int_eq(dfm_sampler_run(smp, &a), 0);
            a.reals = a3 + 200; a.rows = R - 100; a.row_offset = 100;
            ck_assert_int_eq(dfm_sampler_run(smp, &a), 0);
            ck_assert_int_eq(memcmp(a1, a3, sizeof a1), 0);
        }
        dfm_sampler_free(smp);
    }
    /* loss */
    dfm_path *p = make_path(s);
    dfm_generator *g;
    ck_assert_int_eq(dfm_generator_create_velocity(&g, p, DFM_PARAM_VELOCITY, NULL), 0);
    dfm_loss *l;
    ck_assert_int_eq(dfm_loss_create_mse(&l, g, NULL), 0);
    float x0[2 * R], x1[2 * R], out[2 * R], g1[2 * R], g2[2 * R];
    double t[R], l1, l2;
    for (int i = 0; i < 2 * R; i++) { x0[i] = (float)sin(i); x1[i] = (float)cos(i); out[i] = (float)sin(3.0 * i); }
    for (int r = 0; r < R; r++) t[r] = r / (R - 1.0);
    dfm_loss_args la;
    memset(&la, 0, sizeof la);
    la.struct_size = sizeof la; la.rows = R; la.t = t; la.x0_reals = x0; la.x1_reals = x1;
    la.out = out; la.grad = g1; la.loss = &l1;
    ck_assert_int_eq(dfm_loss_eval(l, &la), 0);
    dfm_loss_set_int(l, DFM_OPT_THREADS, 2);
    la.grad = g2; la.loss = &l2;
    ck_assert_int_eq(dfm_loss_eval(l, &la), 0);
    ck_assert(l1 == l2);
    ck_assert_int_eq(memcmp(g1, g2, sizeof g1), 0);
    dfm_loss_free(l);
    dfm_generator_free(g);
    dfm_path_free(p);
    dfm_scheduler_free(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("continuous");
    TCase *tc = tu_tcase("continuous");
    tcase_add_test(tc, path_sample_affine);
    tcase_add_test(tc, normal_draws_histogram);
    tcase_add_test(tc, conversions_round_trip);
    tcase_add_test(tc, loss_gradient_matches_finite_differences);
    tcase_add_test(tc, convergence_orders);
    tcase_add_test(tc, dopri5_tolerance_and_stats);
    tcase_add_test(tc, save_times_and_descending_grid);
    tcase_add_test(tc, mixture_ode_samplers_condot);
    tcase_add_test(tc, mixture_ode_samplers_cosine);
    tcase_add_test(tc, schedule_transform_keeps_the_target);
    tcase_add_test(tc, schedule_transform_same_endpoints);
    tcase_add_test(tc, mixture_sde_sampler);
    tcase_add_test(tc, sde_noise_matters);
    tcase_add_test(tc, sde_backwards_reaches_the_source);
    tcase_add_test(tc, log_likelihood_gaussian);
    tcase_add_test(tc, bad_input);
    tcase_add_test(tc, bad_callbacks);
    tcase_add_test(tc, thread_count_independence);
    suite_add_tcase(s, tc);
    return tu_run(s) ? 1 : 0;
}
