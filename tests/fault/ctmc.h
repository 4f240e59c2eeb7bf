/* Fault scenarios of the rate-matrix module: the dfm_ctmc workspace (exp, kernel, propagation),
 * finite and metric paths, rate-matrix and metric generators, the Bregman loss and the CTMC
 * samplers. Included by tests/test_faults.c. */
#include "modcommon.h"

#define FXT_V 3
#define FXT_D 2
#define FXT_S 9
#define FXT_MV 4

/* p_t(x | x1) = (1 - t^2) / S + t^2 delta(x, x1) */
static int fxt_cond(double t, int32_t x1, double *p, double *dp, size_t n, void *u)
{
    int r = u ? fxm_tick((fxm *)u, FXM_OTHER) : 0;
    if (r) return r;
    double k = t * t, dk = 2.0 * t;
    for (size_t x = 0; x < n; x++) {
        p[x] = (1.0 - k) / (double)n + ((int32_t)x == x1 ? k : 0.0);
        dp[x] = -dk / (double)n + ((int32_t)x == x1 ? dk : 0.0);
    }
    return 0;
}

static int fxt_dist(int32_t x1, double *d, int32_t vocab, void *u)
{
    int r = u ? fxm_tick((fxm *)u, FXM_OTHER) : 0;
    if (r) return r;
    for (int32_t x = 0; x < vocab; x++) d[x] = fabs((double)(x - x1));
    return 0;
}

static dfm_space *fxt_space(size_t V)
{
    dfm_space *sp = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, V, FXT_D, NULL), 0);
    return sp;
}

static dfm_path *fxt_finite(fxm *m, const dfm_allocator *mem)
{
    dfm_space *sp = fxt_space(FXT_V);
    dfm_path *p = NULL;
    ck_assert_int_eq(dfm_path_create_finite(&p, sp, fxt_cond, m, mem), 0);
    dfm_space_free(sp);
    return p;
}

static dfm_path *fxt_metric(fxm *m, const dfm_allocator *mem)
{
    dfm_space *sp = fxt_space(FXT_MV);
    dfm_scheduler *sc = fxm_scheduler(m);
    dfm_path *p = NULL;
    ck_assert_int_eq(dfm_path_create_metric(&p, sp, sc, 1.5, NULL, fxt_dist, NULL, mem), 0);
    dfm_scheduler_free(sc);
    dfm_space_free(sp);
    return p;
}

/* ---- workspace ---- */

static void fxt_generator(double *Q, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) Q[i * n + j] = i == j ? 0.0 : 0.1 + 0.05 * (double)((i + 2 * j) % 5);
}

static int sc_t_create(fx *f)
{
    FX_DECL;
    dfm_ctmc *w;
    FX_POISON_OUT(w);
    int st = FX_CALL(f, dfm_ctmc_create(&w, 5, &f->mem));
    fx_check_out(f, st, w);
    dfm_ctmc_free(w);
    return st;
}

/* op: 0 expm, 1 kernel, 2 propagate, 3 propagate_ode */
static int fxt_work(fx *f, fxm *m, int op)
{
    FX_DECL;
    enum { n = 6 };
    dfm_ctmc *w = NULL;
    ck_assert_int_eq(dfm_ctmc_create(&w, n, &f->mem), 0);
    double Q[n * n], E[n * n], p0[2 * n];
    fxt_generator(Q, n);
    for (int i = 0; i < 2 * n; i++) p0[i] = (i % n == 0 || i % n == 3) ? 0.5 : 0.0;
    fx_fill(E, sizeof E);
    int st;
    if (op == 0) st = FX_CALL(f, dfm_ctmc_expm(w, Q, 0.7, E));
    else if (op == 1) st = FX_CALL(f, dfm_ctmc_kernel(w, Q, 1.3, E));
    else if (op == 2) st = FX_CALL(f, dfm_ctmc_propagate(w, p0, 2, Q, 0.4, E));
    else st = 0;
    (void)m;
    if (st) {
        ck_assert_msg(fx_unchanged(E, sizeof E), "%s: output written on failure", f->name);
        ck_assert(dfm_ctmc_last_error(w)[0] != '\0');
    }
    f->raw_seen = dfm_ctmc_callback_status(w);
    dfm_ctmc_free(w);
    return st;
}
static int sc_t_expm(fx *f) { return fxt_work(f, NULL, 0); }
static int sc_t_kernel(fx *f) { return fxt_work(f, NULL, 1); }
static int sc_t_propagate(fx *f) { return fxt_work(f, NULL, 2); }

static int fxt_rate_fn(double t, double *Q, size_t n, void *u)
{
    int r = fxm_tick((fxm *)u, FXM_OTHER);
    if (r) return r;
    fxt_generator(Q, n);
    for (size_t i = 0; i < n * n; i++) Q[i] *= 1.0 + t;
    return 0;
}

static int fxt_ode(fx *f, int ticks)
{
    FX_DECL;
    enum { n = 5 };
    fxm m = fxm_make(f, ticks, FXM_RATES);
    dfm_ctmc *w = NULL;
    ck_assert_int_eq(dfm_ctmc_create(&w, n, &f->mem), 0);
    double p0[2 * n], pt[2 * n];
    for (int i = 0; i < 2 * n; i++) p0[i] = i % n == 1 ? 1.0 : 0.0;
    fx_fill(pt, sizeof pt);
    int st = FX_CALL(f, dfm_ctmc_propagate_ode(w, p0, 2, fxt_rate_fn, &m, 0.0, 1.0, 3, pt));
    if (st) ck_assert_msg(fx_unchanged(pt, sizeof pt), "%s: output written on failure", f->name);
    f->raw_seen = dfm_ctmc_callback_status(w);
    dfm_ctmc_free(w);
    return st;
}
static int sc_t_propagate_ode(fx *f) { return fxt_ode(f, 0); }
static int sc_t_cb_propagate_ode(fx *f) { return fxt_ode(f, FXM_OTHER); }

/* ---- paths ---- */

static int sc_t_finite_create(fx *f)
{
    FX_DECL;
    dfm_space *sp = fxt_space(FXT_V);
    dfm_path *p;
    FX_POISON_OUT(p);
    int st = FX_CALL(f, dfm_path_create_finite(&p, sp, fxt_cond, NULL, &f->mem));
    fx_check_out(f, st, p);
    if (!st) ck_assert_int_eq(dfm_path_kind(p), DFM_PATH_FINITE);
    dfm_path_free(p);
    dfm_space_free(sp);
    return st;
}

/* by_fn: distance callback (ticks when m ticks FXM_OTHER) or a matrix */
static int fxt_metric_create(fx *f, fxm *m, int by_fn)
{
    FX_DECL;
    dfm_space *sp = fxt_space(FXT_MV);
    dfm_scheduler *sc = NULL;
    ck_assert_int_eq(dfm_scheduler_create_polynomial(&sc, 2.0, NULL), 0);
    double dist[FXT_MV * FXT_MV];
    for (int x = 0; x < FXT_MV; x++)
        for (int y = 0; y < FXT_MV; y++) dist[x * FXT_MV + y] = fabs((double)(x - y));
    dfm_path *p;
    FX_POISON_OUT(p);
    int st = by_fn ? FX_CALL(f, dfm_path_create_metric(&p, sp, sc, 2.0, NULL, fxt_dist, m, &f->mem))
                   : FX_CALL(f, dfm_path_create_metric(&p, sp, sc, 2.0, dist, NULL, NULL, &f->mem));
    fx_check_out(f, st, p);
    if (!st) ck_assert_int_eq(dfm_path_kind(p), DFM_PATH_METRIC);
    dfm_path_free(p);
    dfm_scheduler_free(sc);
    dfm_space_free(sp);
    return st;
}
static int sc_t_metric_create(fx *f) { return fxt_metric_create(f, NULL, 0); }
static int sc_t_metric_create_fn(fx *f) { return fxt_metric_create(f, NULL, 1); }
static int sc_t_cb_metric_distance(fx *f)
{
    fxm m = fxm_make(f, FXM_OTHER, FXM_LOGITS);
    return fxt_metric_create(f, &m, 1);
}

static int fxt_path_clone(fx *f, int metric)
{
    FX_DECL;
    dfm_path *p = metric ? fxt_metric(NULL, NULL) : fxt_finite(NULL, NULL), *c;
    FX_POISON_OUT(c);
    int st = FX_CALL(f, dfm_path_clone(&c, p, &f->mem));
    fx_check_out(f, st, c);
    dfm_path_free(c);
    dfm_path_free(p);
    return st;
}
static int sc_t_finite_clone(fx *f) { return fxt_path_clone(f, 0); }
static int sc_t_metric_clone(fx *f) { return fxt_path_clone(f, 1); }

/* op 0 cond_probs, 1 cond_rates */
static int fxt_cond_call(fx *f, fxm *m, int metric, int op)
{
    FX_DECL;
    dfm_path *p = metric ? fxt_metric(m, &f->mem) : fxt_finite(m, &f->mem);
    double out[FXT_S * FXT_S];
    size_t n = metric ? FXT_MV : FXT_S;
    fx_fill(out, sizeof out);
    int st = op == 0 ? FX_CALL(f, dfm_path_cond_probs(p, 0.4, 2, out))
                     : FX_CALL(f, dfm_path_cond_rates(p, 0.4, 2, out));
    if (st) ck_assert_msg(fx_unchanged(out, sizeof out), "%s: output written on failure", f->name);
    else ck_assert(fx_unchanged(out + (op == 0 ? n : n * n), sizeof out - (op == 0 ? n : n * n) * sizeof(double)));
    f->raw_seen = dfm_path_callback_status(p);
    dfm_path_free(p);
    return st;
}
static int sc_t_finite_probs(fx *f) { return fxt_cond_call(f, NULL, 0, 0); }
static int sc_t_finite_rates(fx *f) { return fxt_cond_call(f, NULL, 0, 1); }
static int sc_t_metric_probs(fx *f) { return fxt_cond_call(f, NULL, 1, 0); }
static int sc_t_metric_rates(fx *f) { return fxt_cond_call(f, NULL, 1, 1); }

static int fxt_path_sample(fx *f, fxm *m, int metric, int threads)
{
    FX_DECL;
    enum { R = 5 };
    dfm_path *p = metric ? fxt_metric(m, &f->mem) : fxt_finite(m, &f->mem);
    ck_assert_int_eq(dfm_path_set_int(p, DFM_OPT_THREADS, threads), 0);
    int32_t x1[R * FXT_D], xt[R * FXT_D];
    double t[R] = {0.0, 0.2, 0.5, 0.8, 1.0};
    for (int i = 0; i < R * FXT_D; i++) x1[i] = i % FXT_V;
    fx_fill(xt, sizeof xt);
    dfm_path_sample_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = R; a.t = t; a.x1_tokens = x1; a.xt_tokens = xt;
    int st = FX_CALL(f, dfm_path_sample(p, &a));
    if (st) ck_assert_msg(fx_unchanged(xt, sizeof xt), "%s: xt written on failure", f->name);
    f->raw_seen = dfm_path_callback_status(p);
    dfm_path_free(p);
    return st;
}
static int sc_t_finite_sample(fx *f) { return fxt_path_sample(f, NULL, 0, 1); }
static int sc_t_metric_sample_t2(fx *f) { return fxt_path_sample(f, NULL, 1, 2); }

/* ---- generators and loss ---- */

/* kind 0 state logits on a finite path, 1 state logits on a metric path, 2 direct rates without
 * a path, 3 direct rates on a finite path, 4 metric factorized */
static dfm_generator *fxt_gen(fxm *m, int kind, const dfm_allocator *mem)
{
    dfm_generator *g = NULL;
    if (kind == 2) {
        dfm_space *sp = fxt_space(FXT_V);
        ck_assert_int_eq(dfm_generator_create_rate_matrix(&g, NULL, sp, DFM_PARAM_RATES, mem), 0);
        dfm_space_free(sp);
        return g;
    }
    dfm_path *p = (kind == 1 || kind == 4) ? fxt_metric(m, NULL) : fxt_finite(m, NULL);
    if (kind == 4) ck_assert_int_eq(dfm_generator_create_metric(&g, p, mem), 0);
    else
        ck_assert_int_eq(dfm_generator_create_rate_matrix(&g, p, NULL, kind == 3 ? DFM_PARAM_RATES
                                                          : DFM_PARAM_STATE_LOGITS, mem), 0);
    dfm_path_free(p);
    return g;
}

static int fxt_gen_create(fx *f, int kind)
{
    FX_DECL;
    dfm_space *sp = fxt_space(FXT_V);
    dfm_path *p = (kind == 1 || kind == 4) ? fxt_metric(NULL, NULL) : fxt_finite(NULL, NULL);
    dfm_generator *g;
    FX_POISON_OUT(g);
    int st;
    if (kind == 4) st = FX_CALL(f, dfm_generator_create_metric(&g, p, &f->mem));
    else if (kind == 2) st = FX_CALL(f, dfm_generator_create_rate_matrix(&g, NULL, sp, DFM_PARAM_RATES, &f->mem));
    else st = FX_CALL(f, dfm_generator_create_rate_matrix(&g, p, NULL, kind == 3 ? DFM_PARAM_RATES
                                                          : DFM_PARAM_STATE_LOGITS, &f->mem));
    fx_check_out(f, st, g);
    if (!st) ck_assert_int_eq(dfm_generator_kind(g), kind == 4 ? DFM_GEN_FACTORIZED : DFM_GEN_RATE_MATRIX);
    dfm_generator_free(g);
    dfm_path_free(p);
    dfm_space_free(sp);
    return st;
}
static int sc_t_gen_state_finite(fx *f) { return fxt_gen_create(f, 0); }
static int sc_t_gen_state_metric(fx *f) { return fxt_gen_create(f, 1); }
static int sc_t_gen_rates(fx *f) { return fxt_gen_create(f, 2); }
static int sc_t_gen_rates_finite(fx *f) { return fxt_gen_create(f, 3); }
static int sc_t_gen_metric(fx *f) { return fxt_gen_create(f, 4); }

static int fxt_gen_clone(fx *f, int kind)
{
    FX_DECL;
    dfm_generator *g = fxt_gen(NULL, kind, NULL), *c;
    FX_POISON_OUT(c);
    int st = FX_CALL(f, dfm_generator_clone(&c, g, &f->mem));
    fx_check_out(f, st, c);
    dfm_generator_free(c);
    dfm_generator_free(g);
    return st;
}
static int sc_t_gen_clone_state(fx *f) { return fxt_gen_clone(f, 0); }
static int sc_t_gen_clone_metric(fx *f) { return fxt_gen_clone(f, 4); }

static int sc_t_bregman_create(fx *f)
{
    FX_DECL;
    dfm_generator *g = fxt_gen(NULL, 3, NULL);
    dfm_loss *l;
    FX_POISON_OUT(l);
    int st = FX_CALL(f, dfm_loss_create_bregman_rates(&l, g, &f->mem));
    fx_check_out(f, st, l);
    if (!st) ck_assert_int_eq(dfm_loss_kind(l), DFM_LOSS_BREGMAN_RATES);
    dfm_loss_free(l);
    dfm_generator_free(g);
    return st;
}

static int fxt_bregman_eval(fx *f, fxm *m, int threads)
{
    FX_DECL;
    enum { R = 4 };
    dfm_generator *g = fxt_gen(m, 3, NULL);
    dfm_loss *l = NULL;
    ck_assert_int_eq(dfm_loss_create_bregman_rates(&l, g, &f->mem), 0);
    dfm_generator_free(g);
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_THREADS, threads), 0);
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_REDUCTION, DFM_REDUCE_NONE), 0);
    double t[R] = {0.1, 0.3, 0.5, 0.9}, values[R * FXT_D], loss;
    int32_t x1[R * FXT_D], xt[R * FXT_D];
    float out[R * FXT_S], grad[R * FXT_S];
    for (int i = 0; i < R * FXT_D; i++) { x1[i] = i % 3; xt[i] = (i + 1) % 3; }
    for (int i = 0; i < R * FXT_S; i++) out[i] = 0.5f + 0.25f * (float)(i % 3);
    fx_fill(values, sizeof values); fx_fill(&loss, sizeof loss); fx_fill(grad, sizeof grad);
    dfm_loss_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = R; a.t = t; a.x1_tokens = x1; a.xt_tokens = xt; a.out = out; a.grad = grad;
    a.values = values; a.loss = &loss;
    int st = FX_CALL(f, dfm_loss_eval(l, &a));
    if (st)
        ck_assert_msg(fx_unchanged(values, sizeof values) && fx_unchanged(&loss, sizeof loss) &&
                      fx_unchanged(grad, sizeof grad), "%s: outputs written on failure", f->name);
    f->raw_seen = dfm_loss_callback_status(l);
    dfm_loss_free(l);
    return st;
}
static int sc_t_bregman_eval(fx *f) { return fxt_bregman_eval(f, NULL, 1); }
static int sc_t_bregman_eval_t2(fx *f) { return fxt_bregman_eval(f, NULL, 2); }
static int sc_t_cb_bregman_path(fx *f)
{
    fxm m = fxm_make(f, FXM_OTHER, FXM_RATES);
    return fxt_bregman_eval(f, &m, 1);
}

/* ---- samplers ---- */

static int fxt_sampler_create(fx *f, int kind, int method)
{
    dfm_generator *g = fxt_gen(NULL, kind, NULL);
    int st = fxm_sampler_create(f, g, method);
    dfm_generator_free(g);
    return st;
}
static int sc_t_s_state_euler(fx *f) { return fxt_sampler_create(f, 0, DFM_METHOD_EULER); }
static int sc_t_s_state_unif(fx *f) { return fxt_sampler_create(f, 0, DFM_METHOD_UNIFORMIZATION); }
static int sc_t_s_rates_gillespie(fx *f) { return fxt_sampler_create(f, 2, DFM_METHOD_GILLESPIE); }
static int sc_t_s_metric_euler(fx *f) { return fxt_sampler_create(f, 4, DFM_METHOD_EULER); }
static int sc_t_s_metric_unif(fx *f) { return fxt_sampler_create(f, 4, DFM_METHOD_UNIFORMIZATION); }
static int sc_t_s_metric_gillespie(fx *f) { return fxt_sampler_create(f, 4, DFM_METHOD_GILLESPIE); }

static int fxt_run(fx *f, int ticks, int kind, int method, int threads, int n_save, int progress,
                   int fixed)
{
    fxm m = fxm_make(f, ticks, kind == 2 || kind == 3 ? FXM_RATES : FXM_LOGITS);
    dfm_generator *g = fxt_gen(&m, kind, NULL);
    dfm_sampler *s = NULL;
    ck_assert_int_eq(dfm_sampler_create(&s, g, method, &f->mem), 0);
    dfm_generator_free(g);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 3), 0);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_THREADS, threads), 0);
    /* the model's logits are not a posterior: near t = 1 the metric rates ~ 1/(1-t)^2 would
     * make ~10^7 candidate events per row; stop the rates at 0.8 */
    ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_CT_TMAX, 0.8), 0);
    fxm_run_spec sp;
    memset(&sp, 0, sizeof sp);
    sp.rows = 5; sp.n_tokens = FXT_D; sp.vocab = (kind == 1 || kind == 4) ? FXT_MV : FXT_V;
    sp.draw_source = kind != 2; sp.n_save = n_save; sp.progress = progress; sp.with_fixed = fixed;
    int st = fxm_run(f, s, &m, &sp);
    dfm_sampler_free(s);
    return st;
}
static int sc_t_run_state_euler(fx *f) { return fxt_run(f, 0, 0, DFM_METHOD_EULER, 1, 2, 0, 0); }
static int sc_t_run_state_unif_t2(fx *f) { return fxt_run(f, 0, 0, DFM_METHOD_UNIFORMIZATION, 2, 1, 0, 1); }
static int sc_t_run_state_metric_unif(fx *f) { return fxt_run(f, 0, 1, DFM_METHOD_UNIFORMIZATION, 1, 1, 0, 0); }
static int sc_t_run_rates_euler(fx *f) { return fxt_run(f, 0, 2, DFM_METHOD_EULER, 2, 1, 0, 0); }
static int sc_t_run_rates_unif(fx *f) { return fxt_run(f, 0, 2, DFM_METHOD_UNIFORMIZATION, 1, 2, 0, 0); }
static int sc_t_run_rates_gillespie(fx *f) { return fxt_run(f, 0, 2, DFM_METHOD_GILLESPIE, 2, 2, 0, 1); }
static int sc_t_run_metric_euler(fx *f) { return fxt_run(f, 0, 4, DFM_METHOD_EULER, 2, 1, 0, 1); }
static int sc_t_run_metric_unif(fx *f) { return fxt_run(f, 0, 4, DFM_METHOD_UNIFORMIZATION, 1, 2, 0, 0); }
static int sc_t_run_metric_gillespie(fx *f) { return fxt_run(f, 0, 4, DFM_METHOD_GILLESPIE, 1, 0, 0, 0); }

static int sc_t_cb_model_state_euler(fx *f) { return fxt_run(f, FXM_MODEL, 0, DFM_METHOD_EULER, 1, 1, 0, 0); }
static int sc_t_cb_model_state_unif(fx *f) { return fxt_run(f, FXM_MODEL, 0, DFM_METHOD_UNIFORMIZATION, 2, 1, 0, 0); }
static int sc_t_cb_model_rates_gillespie(fx *f) { return fxt_run(f, FXM_MODEL, 2, DFM_METHOD_GILLESPIE, 1, 1, 0, 0); }
static int sc_t_cb_model_metric_euler(fx *f) { return fxt_run(f, FXM_MODEL, 4, DFM_METHOD_EULER, 2, 0, 0, 0); }
static int sc_t_cb_model_metric_unif(fx *f) { return fxt_run(f, FXM_MODEL, 4, DFM_METHOD_UNIFORMIZATION, 1, 1, 0, 0); }
static int sc_t_cb_progress(fx *f) { return fxt_run(f, FXM_PROGRESS, 0, DFM_METHOD_UNIFORMIZATION, 1, 1, 1, 0); }
static int sc_t_cb_finite_path_run(fx *f) { return fxt_run(f, FXM_OTHER, 0, DFM_METHOD_UNIFORMIZATION, 1, 1, 0, 0); }
static int sc_t_cb_finite_path_euler(fx *f) { return fxt_run(f, FXM_OTHER, 0, DFM_METHOD_EULER, 2, 0, 0, 0); }
static int sc_t_cb_sched_metric_run(fx *f) { return fxt_run(f, FXM_SCHED, 4, DFM_METHOD_UNIFORMIZATION, 2, 1, 0, 0); }
static int sc_t_cb_sched_metric_euler(fx *f) { return fxt_run(f, FXM_SCHED, 1, DFM_METHOD_EULER, 1, 1, 0, 0); }
static int sc_t_cb_finite_sample(fx *f)
{
    fxm m = fxm_make(f, FXM_OTHER, FXM_LOGITS);
    return fxt_path_sample(f, &m, 0, 2);
}
static int sc_t_cb_finite_probs(fx *f)
{
    fxm m = fxm_make(f, FXM_OTHER, FXM_LOGITS);
    return fxt_cond_call(f, &m, 0, 0);
}
static int sc_t_cb_finite_rates(fx *f)
{
    fxm m = fxm_make(f, FXM_OTHER, FXM_LOGITS);
    return fxt_cond_call(f, &m, 0, 1);
}
static int sc_t_cb_sched_metric_sample(fx *f)
{
    fxm m = fxm_make(f, FXM_SCHED, FXM_LOGITS);
    return fxt_path_sample(f, &m, 1, 1);
}
static int sc_t_cb_sched_metric_rates(fx *f)
{
    fxm m = fxm_make(f, FXM_SCHED, FXM_LOGITS);
    return fxt_cond_call(f, &m, 1, 1);
}

#define FAULT_ALLOC_CTMC                                                  \
    {"ctmc_create", sc_t_create, 1, 0, 0},                                 \
    {"ctmc_expm", sc_t_expm, 1, 0, 0},                                     \
    {"ctmc_kernel", sc_t_kernel, 1, 0, 0},                                 \
    {"ctmc_propagate", sc_t_propagate, 1, 0, 0},                           \
    {"ctmc_propagate_ode", sc_t_propagate_ode, 1, 0, 0},                   \
    {"path_create_finite", sc_t_finite_create, 1, 0, 0},                   \
    {"path_create_metric_matrix", sc_t_metric_create, 1, 0, 0},           \
    {"path_create_metric_fn", sc_t_metric_create_fn, 1, 0, 0},             \
    {"path_clone_finite", sc_t_finite_clone, 1, 0, 0},                     \
    {"path_clone_metric", sc_t_metric_clone, 1, 0, 0},                     \
    {"path_cond_probs_finite", sc_t_finite_probs, 0, 0, 0},                \
    {"path_cond_rates_finite", sc_t_finite_rates, 0, 0, 0},                \
    {"path_cond_probs_metric", sc_t_metric_probs, 0, 0, 0},                \
    {"path_cond_rates_metric", sc_t_metric_rates, 0, 0, 0},                \
    {"path_sample_finite", sc_t_finite_sample, 1, 0, 0},                   \
    {"path_sample_metric_threads2", sc_t_metric_sample_t2, 1, 0, 0},       \
    {"generator_create_rate_matrix_state_finite", sc_t_gen_state_finite, 1, 0, 0}, \
    {"generator_create_rate_matrix_state_metric", sc_t_gen_state_metric, 1, 0, 0}, \
    {"generator_create_rate_matrix_rates", sc_t_gen_rates, 1, 0, 0},       \
    {"generator_create_rate_matrix_rates_finite", sc_t_gen_rates_finite, 1, 0, 0}, \
    {"generator_create_metric", sc_t_gen_metric, 1, 0, 0},                 \
    {"generator_clone_rate_matrix", sc_t_gen_clone_state, 1, 0, 0},        \
    {"generator_clone_metric", sc_t_gen_clone_metric, 1, 0, 0},            \
    {"loss_create_bregman_rates", sc_t_bregman_create, 1, 0, 0},           \
    {"loss_eval_bregman_rates", sc_t_bregman_eval, 1, 0, 0},               \
    {"loss_eval_bregman_rates_threads2", sc_t_bregman_eval_t2, 1, 0, 0},   \
    {"sampler_create_rate_matrix_euler", sc_t_s_state_euler, 1, 0, 0},     \
    {"sampler_create_rate_matrix_uniformization", sc_t_s_state_unif, 1, 0, 0}, \
    {"sampler_create_rate_matrix_gillespie", sc_t_s_rates_gillespie, 1, 0, 0}, \
    {"sampler_create_metric_euler", sc_t_s_metric_euler, 1, 0, 0},         \
    {"sampler_create_metric_uniformization", sc_t_s_metric_unif, 1, 0, 0}, \
    {"sampler_create_metric_gillespie", sc_t_s_metric_gillespie, 1, 0, 0}, \
    {"sampler_run_rate_matrix_state_euler", sc_t_run_state_euler, 1, 0, 0}, \
    {"sampler_run_rate_matrix_state_unif_fixed_threads2", sc_t_run_state_unif_t2, 1, 0, 0}, \
    {"sampler_run_rate_matrix_metric_state_unif", sc_t_run_state_metric_unif, 1, 0, 0}, \
    {"sampler_run_rate_matrix_rates_euler_threads2", sc_t_run_rates_euler, 1, 0, 0}, \
    {"sampler_run_rate_matrix_rates_unif", sc_t_run_rates_unif, 1, 0, 0},  \
    {"sampler_run_rate_matrix_gillespie_fixed_threads2", sc_t_run_rates_gillespie, 1, 0, 0}, \
    {"sampler_run_metric_euler_fixed_threads2", sc_t_run_metric_euler, 1, 0, 0}, \
    {"sampler_run_metric_uniformization", sc_t_run_metric_unif, 1, 0, 0},  \
    {"sampler_run_metric_gillespie", sc_t_run_metric_gillespie, 1, 0, 0},

#define FAULT_CB_CTMC                                                     \
    {"ctmc_propagate_ode_rate_fn", sc_t_cb_propagate_ode, 3, 0, 1},        \
    {"path_create_metric_distance_fn", sc_t_cb_metric_distance, 1, 0, 0},  \
    {"ctmc_run_state_euler_model", sc_t_cb_model_state_euler, 3, 0, 1},    \
    {"ctmc_run_state_uniformization_model", sc_t_cb_model_state_unif, 2, 0, 1}, \
    {"ctmc_run_rates_gillespie_model", sc_t_cb_model_rates_gillespie, 2, 0, 1}, \
    {"ctmc_run_metric_euler_model", sc_t_cb_model_metric_euler, 3, 0, 1},  \
    {"ctmc_run_metric_uniformization_model", sc_t_cb_model_metric_unif, 2, 0, 1}, \
    {"ctmc_run_progress", sc_t_cb_progress, 3, DFM_ESTOPPED, 0},           \
    {"ctmc_run_finite_path_fn_uniformization", sc_t_cb_finite_path_run, 1, 0, 1}, \
    {"ctmc_run_finite_path_fn_euler", sc_t_cb_finite_path_euler, 1, 0, 1}, \
    {"ctmc_run_metric_custom_scheduler", sc_t_cb_sched_metric_run, 1, 0, 1}, \
    {"ctmc_run_metric_state_custom_scheduler", sc_t_cb_sched_metric_euler, 1, 0, 1}, \
    {"ctmc_path_sample_finite_path_fn", sc_t_cb_finite_sample, 1, 0, 1},   \
    {"ctmc_cond_probs_finite_path_fn", sc_t_cb_finite_probs, 1, 0, 1},     \
    {"ctmc_cond_rates_finite_path_fn", sc_t_cb_finite_rates, 1, 0, 1},     \
    {"ctmc_path_sample_metric_custom_scheduler", sc_t_cb_sched_metric_sample, 1, 0, 1}, \
    {"ctmc_cond_rates_metric_custom_scheduler", sc_t_cb_sched_metric_rates, 1, 0, 1}, \
    {"loss_eval_bregman_finite_path_fn", sc_t_cb_bregman_path, 1, 0, 1},
