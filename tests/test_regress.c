/* Regressions: one test per bug found by the sanitizers, fault injection or fuzzing
 * (docs/reliability.md). Each names the harness or target that found it. */
#include "testutil.h"

#include <float.h>

/* fuzz_space: dfm_space_check_tokens reported the first bad token of the first discrete part
 * over all rows instead of the first bad token in flat order, when a product space has two
 * discrete parts and an earlier row is bad in the later part. */
START_TEST(check_tokens_reports_first_bad_in_flat_order)
{
    dfm_space *a = NULL, *b = NULL, *p = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&a, 3, 2, NULL), 0);
    ck_assert_int_eq(dfm_space_create_discrete(&b, 5, 1, NULL), 0);
    const dfm_space *parts[2] = {a, b};
    ck_assert_int_eq(dfm_space_create_product(&p, parts, 2, NULL), 0);
    /* row 0: part a ok, part b bad (flat 2); row 1: part a bad (flat 3). */
    const int32_t tok[6] = {0, 2, 7, 3, 0, 1};
    size_t bad = 99;
    ck_assert_int_eq(dfm_space_check_tokens(p, tok, 2, &bad), DFM_ERANGE);
    ck_assert_uint_eq(bad, 2);
    dfm_space_free(p);
    dfm_space_free(b);
    dfm_space_free(a);
}
END_TEST

/* fuzz_scheduler: the VP kappa inverse computed 2 (B - b) T as (2 (B - b)) T, which is Inf x 0
 * = NaN at kappa = 1 when beta_max is near DBL_MAX, and returned t = NaN (the final clamp let
 * NaN through). It now uses u = 2T / (b + hypot(b, sqrt(2T (B - b)))). */
START_TEST(vp_kappa_inverse_extreme_betas)
{
    dfm_scheduler *s = NULL;
    double t = -1.0;
    ck_assert_int_eq(dfm_scheduler_create_vp(&s, 0.0, 1.7976931348623157e308, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_kappa_inverse(s, 1.0, &t, NULL), 0);
    ck_assert(t == 1.0);
    dfm_scheduler_free(s);
    ck_assert_int_eq(dfm_scheduler_create_vp(&s, 1e300, 1e300, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_kappa_inverse(s, 1.0, &t, NULL), 0);
    ck_assert(t == 1.0);
    dfm_scheduler_free(s);
    /* The usual betas still round-trip to 1e-12, also near kappa = 1 (no cancellation). */
    const double betas[3][2] = {{0.1, 20.0}, {0.0, 5.0}, {2.0, 2.0}};
    for (int b = 0; b < 3; b++) {
        ck_assert_int_eq(dfm_scheduler_create_vp(&s, betas[b][0], betas[b][1], NULL), 0);
        for (int i = 0; i <= 100; i++) {
            double t0 = i == 100 ? 1.0 - 1e-9 : i / 100.0;
            dfm_sched_values v;
            ck_assert_int_eq(dfm_scheduler_eval(s, t0, &v, NULL), 0);
            if (v.alpha <= 0.0) continue;
            ck_assert_int_eq(dfm_scheduler_kappa_inverse(s, v.alpha, &t, NULL), 0);
            ck_assert_msg(fabs(t - t0) < 1e-9 * (1.0 + 1.0 / (v.d_alpha > 1e-3 ? 1.0 : 1e-3)),
                          "betas %g %g: t %g -> %g", betas[b][0], betas[b][1], t0, t);
        }
        dfm_scheduler_free(s);
    }
}
END_TEST

/* fuzz_rng: dfm_rng_fill with cols == 0 and a huge row count looped over every row (a hang of
 * 2^64 empty iterations); an empty fill now returns at once. An optimising build may delete the
 * empty loop, so the instrumented builds (check-asan, and fuzz-regress with the committed input
 * tests/fuzz/corpus/rng/regress-fill-empty-hang) are where this test bites. */
START_TEST(rng_fill_empty_with_huge_rows)
{
    float sentinel = 3.0f;
    ck_assert_int_eq(dfm_rng_fill(1, 0, DFM_DRAW_UNIFORM, 0, SIZE_MAX, 0, 0, 2, &sentinel), 0);
    ck_assert_int_eq(dfm_rng_fill(1, 0, DFM_DRAW_NORMAL, 0, (size_t)1 << 60, 0, 0, 1, NULL), 0);
    ck_assert(sentinel == 3.0f);
}
END_TEST

/* fuzz_rng (UBSan): a -Inf logit at a huge temperature made (z - max) * scale = -Inf x 0 = NaN
 * in the float exp kernel, which then converted NaN to int (undefined; in practice a garbage
 * weight, so an index of probability 0 could be drawn). -Inf logits have weight 0 at every
 * temperature. */
START_TEST(categorical_neg_inf_logit_huge_temperature)
{
    float z[2000];
    for (int i = 0; i < 2000; i++) z[i] = i % 3 == 0 ? -INFINITY : (float)(i % 5);
    const double temps[3] = {1e300, 1e40, 1e38};
    for (int k = 0; k < 3; k++) {
        for (uint64_t r = 0; r < 300; r++) {
            int32_t out = -1;
            ck_assert_int_eq(dfm_rng_categorical(1, 0, r, 0, 0, z, 3, temps[k], &out), 0);
            ck_assert_msg(out == 1 || out == 2, "temperature %g drew index %d", temps[k], out);
            ck_assert_int_eq(dfm_rng_categorical(1, 0, r, 0, 0, z, 2000, temps[k], &out), 0);
            ck_assert_msg(out % 3 != 0, "temperature %g drew index %d of a -Inf logit", temps[k], out);
        }
    }
}
END_TEST

/* test_faults (callback injection): dfm_loss_discrete_elbo ignored a failing custom scheduler
 * in two places and returned success: (1) the probe of kappa^{-1} that chooses between sampling
 * in kappa and in t (a failing inverse counted as "has an inverse"); (2) without an inverse, the
 * second evaluation at each drawn t (its status was not read, and kappa came from an
 * uninitialised struct). Both now give DFM_ECALLBACK with the raw value on the loss. */
typedef struct elbo_cb { int calls, fail_at, raw; } elbo_cb;

static int elbo_sched(double t, dfm_sched_values *v, void *u)
{
    elbo_cb *c = (elbo_cb *)u;
    if (++c->calls == c->fail_at) return c->raw = 4242;
    v->alpha = t; v->sigma = 1.0 - t; v->d_alpha = 1.0; v->d_sigma = -1.0;
    return 0;
}

static int elbo_inv(double k, double *t, void *u)
{
    elbo_cb *c = (elbo_cb *)u;
    if (++c->calls == c->fail_at) return c->raw = -4243;
    *t = k;
    return 0;
}

static int elbo_model(const dfm_model_io *io, void *u)
{
    (void)u;
    for (size_t i = 0; i < io->rows * io->out_stride; i++) io->out[i] = (float)(i % 3);
    return 0;
}

static int elbo_with(elbo_cb *c, int with_inverse, double *nelbo)
{
    dfm_space *sp = NULL;
    dfm_scheduler *sc = NULL;
    dfm_path *p = NULL;
    dfm_loss *l = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, 3, 2, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_custom(&sc, elbo_sched, with_inverse ? elbo_inv : NULL,
                                                 c, NULL), 0);
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, sc, DFM_SOURCE_UNIFORM, 0, NULL, NULL), 0);
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
    int32_t x1[4] = {0, 1, 2, 0};
    dfm_elbo_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = 2; a.x1_tokens = x1; a.n_t = 2; a.model = elbo_model; a.nelbo = nelbo;
    int st = dfm_loss_discrete_elbo(l, &a);
    if (st == DFM_ECALLBACK) ck_assert_int_eq(dfm_loss_callback_status(l), c->raw);
    dfm_loss_free(l);
    dfm_path_free(p);
    dfm_scheduler_free(sc);
    dfm_space_free(sp);
    return st;
}

START_TEST(elbo_reports_failing_scheduler_callbacks)
{
    double nelbo[2] = {-1.0, -1.0};
    /* with an inverse: call 1 is the source-term eval at t = 0, call 2 the kappa^{-1} probe */
    elbo_cb c = {0, 2, 0};
    ck_assert_int_eq(elbo_with(&c, 1, nelbo), DFM_ECALLBACK);
    ck_assert(nelbo[0] == -1.0 && nelbo[1] == -1.0);
    /* without: 1 source term, 2 the weight at the first drawn t, 3 kappa at that t */
    for (int k = 1; k <= 8; k++) {
        elbo_cb d = {0, k, 0};
        ck_assert_msg(elbo_with(&d, 0, nelbo) == DFM_ECALLBACK, "call %d failed unnoticed", k);
        ck_assert(nelbo[0] == -1.0 && nelbo[1] == -1.0);
    }
    elbo_cb ok = {0, 0, 0};
    ck_assert_int_eq(elbo_with(&ok, 0, nelbo), 0);
    ck_assert(isfinite(nelbo[0]) && isfinite(nelbo[1]));
}
END_TEST

/* fuzz_discrete: dfm_mixture_rates returned success with +-Inf rates when kappa'/(1 - kappa)
 * overflows float (polynomial scheduler with exponent 1/2 at a subnormal t: kappa' ~ 1e161), and
 * would have returned negative off-diagonal rates for a decreasing custom kappa. Both are now
 * DFM_ENUMERIC with rates untouched. */
static int decreasing_kappa(double t, dfm_sched_values *v, void *u)
{
    (void)u;
    v->alpha = 0.5 - 0.25 * t; v->sigma = 1.0 - v->alpha; v->d_alpha = -0.25; v->d_sigma = 0.25;
    return 0;
}

START_TEST(mixture_rates_overflowing_or_negative_coefficient)
{
    dfm_space *sp = NULL;
    dfm_scheduler *sc[2] = {NULL, NULL};
    ck_assert_int_eq(dfm_space_create_discrete(&sp, 2, 1, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_polynomial(&sc[0], 0.5, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_custom(&sc[1], decreasing_kappa, NULL, NULL, NULL), 0);
    const double ts[2] = {4.9406564584124654e-324, 0.3};
    for (int k = 0; k < 2; k++) {
        dfm_path *p = NULL;
        dfm_generator *g = NULL;
        ck_assert_int_eq(dfm_path_create_mixture(&p, sp, sc[k], DFM_SOURCE_UNIFORM, 0, NULL, NULL), 0);
        ck_assert_int_eq(dfm_generator_create_factorized(&g, p, DFM_PARAM_LOGITS, NULL), 0);
        const float logits[2] = {-2.875f, 0.0f};
        const int32_t tok[1] = {0};
        float rates[2] = {7.0f, 7.0f};
        ck_assert_int_eq(dfm_mixture_rates(g, 1, &ts[k], tok, logits, rates), DFM_ENUMERIC);
        ck_assert(rates[0] == 7.0f && rates[1] == 7.0f);
        ck_assert_ptr_nonnull(strstr(dfm_generator_last_error(g), "kappa'"));
        /* an ordinary time still works */
        const double t1 = 0.5;
        ck_assert_int_eq(dfm_mixture_rates(g, 1, &t1, tok, logits, rates), k ? DFM_ENUMERIC : 0);
        if (!k) ck_assert(isfinite(rates[0]) && rates[1] > 0.0f && rates[0] == -rates[1]);
        dfm_generator_free(g);
        dfm_path_free(p);
    }
    dfm_scheduler_free(sc[0]);
    dfm_scheduler_free(sc[1]);
    dfm_space_free(sp);
}
END_TEST

/* fuzz_continuous: dfm_path_sample on an affine path returned success with -Inf in the target
 * velocity for finite data near FLT_MAX (cosine: kappa' = pi/2, x1 = -FLT_MAX), and a kappa'
 * finite in double but beyond FLT_MAX (polynomial 1/2 at a subnormal t) became Inf, then
 * Inf x 0 = NaN. Now DFM_ENUMERIC, outputs untouched; ordinary inputs unaffected. */
START_TEST(affine_sample_float_overflow)
{
    dfm_space *sp = NULL;
    dfm_scheduler *cosine = NULL, *poly = NULL;
    dfm_path *p = NULL, *q = NULL;
    ck_assert_int_eq(dfm_space_create_euclidean(&sp, 2, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_cosine(&cosine, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_polynomial(&poly, 0.5, NULL), 0);
    ck_assert_int_eq(dfm_path_create_affine(&p, sp, cosine, NULL), 0);
    ck_assert_int_eq(dfm_path_create_affine(&q, sp, poly, NULL), 0);
    float x1[2] = {-FLT_MAX, 0.5f}, x0[2] = {0.0f, 0.0f}, xt[2] = {9.0f, 9.0f}, tg[2] = {9.0f, 9.0f};
    double t = 0.0;
    dfm_path_sample_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = 1; a.t = &t; a.x1_reals = x1; a.xt_reals = xt; a.target_reals = tg;
    ck_assert_int_eq(dfm_path_sample(p, &a), DFM_ENUMERIC);
    ck_assert(xt[0] == 9.0f && xt[1] == 9.0f && tg[0] == 9.0f && tg[1] == 9.0f);
    x1[0] = 0.0f;
    t = 4.9406564584124654e-324;
    a.x0_reals = x0;
    ck_assert_int_eq(dfm_path_sample(q, &a), DFM_ENUMERIC);
    ck_assert(xt[0] == 9.0f && tg[0] == 9.0f);
    t = 0.25;
    ck_assert_int_eq(dfm_path_sample(q, &a), 0);
    ck_assert(isfinite(tg[0]) && isfinite(tg[1]) && tg[1] == 0.5f);
    a.x0_reals = NULL;
    x1[0] = 1e30f;
    ck_assert_int_eq(dfm_path_sample(p, &a), 0);
    ck_assert(isfinite(xt[0]) && isfinite(tg[0]));
    dfm_path_free(q);
    dfm_path_free(p);
    dfm_scheduler_free(poly);
    dfm_scheduler_free(cosine);
    dfm_space_free(sp);
}
END_TEST

/* fuzz_ctmc: dfm_path_cond_rates returned success with +Inf rates where kappa' is infinite (a
 * metric path with the polynomial scheduler of exponent 1/2 at t = 0); the samplers already
 * refused this. Now DFM_ENUMERIC, Q untouched; t > 0 still works. */
START_TEST(metric_cond_rates_infinite_kappa_derivative)
{
    dfm_space *sp = NULL;
    dfm_scheduler *poly = NULL;
    dfm_path *p = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, 3, 1, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_polynomial(&poly, 0.5, NULL), 0);
    const double dist[9] = {0, 1, 2, 1, 0, 1, 2, 1, 0};
    ck_assert_int_eq(dfm_path_create_metric(&p, sp, poly, 1.0, dist, NULL, NULL, NULL), 0);
    double Q[9];
    for (int i = 0; i < 9; i++) Q[i] = 5.0;
    ck_assert_int_eq(dfm_path_cond_rates(p, 0.0, 0, Q), DFM_ENUMERIC);
    for (int i = 0; i < 9; i++) ck_assert(Q[i] == 5.0);
    ck_assert_int_eq(dfm_path_cond_rates(p, 0.3, 0, Q), 0);
    for (int i = 0; i < 9; i++) ck_assert(isfinite(Q[i]));
    dfm_path_free(p);
    dfm_scheduler_free(poly);
    dfm_space_free(sp);
}
END_TEST

/* fuzz_handles (UBSan, real kinds): the generalized KL / cross-entropy with DFM_REDUCE_NONE and
 * rows = 0 called memcpy(values = NULL, ..., 0), undefined behaviour (values may be NULL when
 * there are no rows). Caught by check-asan. */
START_TEST(discrete_loss_reduce_none_zero_rows)
{
    dfm_space *sp = NULL;
    dfm_scheduler *sc = NULL;
    dfm_path *p = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, 4, 3, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_condot(&sc, NULL), 0);
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, sc, DFM_SOURCE_MASK, 3, NULL, NULL), 0);
    for (int k = 0; k < 2; k++) {
        dfm_loss *l = NULL;
        if (k == 0) ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
        else ck_assert_int_eq(dfm_loss_create_cross_entropy(&l, p, 0, NULL), 0);
        ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_REDUCTION, DFM_REDUCE_NONE), 0);
        double loss = -1.0;
        dfm_loss_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.loss = &loss;
        ck_assert_int_eq(dfm_loss_eval(l, &a), 0);
        ck_assert(loss == 0.0);
        dfm_loss_free(l);
    }
    dfm_path_free(p);
    dfm_scheduler_free(sc);
    dfm_space_free(sp);
}
END_TEST

/* fuzz_continuous: DOPRI5's automatic first step was 0.01 d0 / d1 = Inf / Inf = NaN for huge
 * states with a tiny relative tolerance, and the model was called at t = NaN (the model
 * contract promises t in [0, 1]). The starting step now falls back to 1e-6. */
typedef struct t_guard { long calls, bad; } t_guard;

static int guarded_velocity(const dfm_model_io *io, void *u)
{
    t_guard *g = (t_guard *)u;
    g->calls++;
    for (size_t r = 0; r < io->rows; r++) {
        if (!(io->t[r] >= 0.0 && io->t[r] <= 1.0)) g->bad++;
        for (size_t j = 0; j < io->out_stride; j++) io->out[r * io->out_stride + j] = 1e30f;
    }
    return 0;
}

START_TEST(dopri5_first_step_never_nan_time)
{
    dfm_space *sp = NULL;
    dfm_scheduler *sc = NULL;
    dfm_path *p = NULL;
    dfm_generator *g = NULL;
    dfm_sampler *s = NULL;
    ck_assert_int_eq(dfm_space_create_euclidean(&sp, 2, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_condot(&sc, NULL), 0);
    ck_assert_int_eq(dfm_path_create_affine(&p, sp, sc, NULL), 0);
    ck_assert_int_eq(dfm_generator_create_velocity(&g, p, DFM_PARAM_VELOCITY, NULL), 0);
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_DOPRI5, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_ATOL, 0.0), 0);
    ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_RTOL, 1e-300), 0);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_MAX_STEPS, 50), 0);
    float x[4] = {1e30f, -1e30f, 3e30f, 2e30f};
    t_guard tg = {0, 0};
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = guarded_velocity; a.model_data = &tg; a.rows = 2; a.reals = x;
    int st = dfm_sampler_run(s, &a);
    ck_assert(st >= 0 && st < DFM_STATUS_COUNT);
    ck_assert_int_gt(tg.calls, 0);
    ck_assert_int_eq(tg.bad, 0);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    dfm_path_free(p);
    dfm_scheduler_free(sc);
    dfm_space_free(sp);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("regress");
    TCase *tc = tu_tcase("regress");
    tcase_set_timeout(tc, 30); /* a regression of a hang fails instead of waiting */
    tcase_add_test(tc, check_tokens_reports_first_bad_in_flat_order);
    tcase_add_test(tc, vp_kappa_inverse_extreme_betas);
    tcase_add_test(tc, rng_fill_empty_with_huge_rows);
    tcase_add_test(tc, categorical_neg_inf_logit_huge_temperature);
    tcase_add_test(tc, elbo_reports_failing_scheduler_callbacks);
    tcase_add_test(tc, mixture_rates_overflowing_or_negative_coefficient);
    tcase_add_test(tc, affine_sample_float_overflow);
    tcase_add_test(tc, metric_cond_rates_infinite_kappa_derivative);
    tcase_add_test(tc, discrete_loss_reduce_none_zero_rows);
    tcase_add_test(tc, dopri5_first_step_never_nan_time);
    suite_add_tcase(s, tc);
    return tu_run(s) ? EXIT_FAILURE : EXIT_SUCCESS;
}
