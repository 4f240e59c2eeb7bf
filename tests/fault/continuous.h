/* Fault scenarios of the continuous module (affine paths, velocity / diffusion generators, the
 * MSE loss, ODE / SDE samplers, the log-likelihood). Included by tests/test_faults.c. */
#include "modcommon.h"

#define FXC_D 2

static dfm_path *fxc_path(fxm *m, const dfm_allocator *mem)
{
    dfm_space *sp = NULL;
    ck_assert_int_eq(dfm_space_create_euclidean(&sp, FXC_D, NULL), 0);
    dfm_scheduler *sc = fxm_scheduler(m);
    dfm_path *p = NULL;
    ck_assert_int_eq(dfm_path_create_affine(&p, sp, sc, mem), 0);
    dfm_scheduler_free(sc);
    dfm_space_free(sp);
    return p;
}

static int fxc_g(double t, double *g, void *u)
{
    int r = fxm_tick((fxm *)u, FXM_OTHER);
    if (r) return r;
    *g = 0.5 + 0.25 * t;
    return 0;
}

/* kind 0 velocity, 1 diffusion (g const), 2 diffusion with g(t) */
static dfm_generator *fxc_gen(fxm *m, int kind, int param, const dfm_allocator *mem)
{
    dfm_path *p = fxc_path(m, NULL);
    dfm_generator *g = NULL;
    if (kind == 0) ck_assert_int_eq(dfm_generator_create_velocity(&g, p, param, mem), 0);
    else ck_assert_int_eq(dfm_generator_create_diffusion(&g, p, param, 0.7, mem), 0);
    if (kind == 2) ck_assert_int_eq(dfm_generator_set_diffusion_fn(g, fxc_g, m), 0);
    dfm_path_free(p);
    return g;
}

/* ---- creation ---- */

static int sc_c_affine_create(fx *f)
{
    FX_DECL;
    dfm_space *sp = NULL;
    dfm_scheduler *sc = NULL;
    ck_assert_int_eq(dfm_space_create_euclidean(&sp, 3, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_vp(&sc, 0.1, 20.0, NULL), 0);
    dfm_path *p;
    FX_POISON_OUT(p);
    int st = FX_CALL(f, dfm_path_create_affine(&p, sp, sc, &f->mem));
    fx_check_out(f, st, p);
    if (!st) ck_assert_int_eq(dfm_path_kind(p), DFM_PATH_AFFINE);
    dfm_path_free(p);
    dfm_scheduler_free(sc);
    dfm_space_free(sp);
    return st;
}

static int sc_c_affine_clone(fx *f)
{
    FX_DECL;
    dfm_path *p = fxc_path(NULL, NULL), *c;
    FX_POISON_OUT(c);
    int st = FX_CALL(f, dfm_path_clone(&c, p, &f->mem));
    fx_check_out(f, st, c);
    dfm_path_free(c);
    dfm_path_free(p);
    return st;
}

static int fxc_create_gen(fx *f, int kind, int param)
{
    FX_DECL;
    dfm_path *p = fxc_path(NULL, NULL);
    dfm_generator *g;
    FX_POISON_OUT(g);
    int st = kind == 0 ? FX_CALL(f, dfm_generator_create_velocity(&g, p, param, &f->mem))
                       : FX_CALL(f, dfm_generator_create_diffusion(&g, p, param, 0.5, &f->mem));
    fx_check_out(f, st, g);
    if (!st) ck_assert_int_eq(dfm_generator_parameterization(g), param);
    dfm_generator_free(g);
    dfm_path_free(p);
    return st;
}
static int sc_c_velocity_v(fx *f) { return fxc_create_gen(f, 0, DFM_PARAM_VELOCITY); }
static int sc_c_velocity_x1(fx *f) { return fxc_create_gen(f, 0, DFM_PARAM_X1); }
static int sc_c_velocity_eps(fx *f) { return fxc_create_gen(f, 0, DFM_PARAM_EPSILON); }
static int sc_c_velocity_score(fx *f) { return fxc_create_gen(f, 0, DFM_PARAM_SCORE); }
static int sc_c_diffusion(fx *f) { return fxc_create_gen(f, 1, DFM_PARAM_VELOCITY); }
static int sc_c_diffusion_x1(fx *f) { return fxc_create_gen(f, 1, DFM_PARAM_X1); }

static int sc_c_gen_clone(fx *f)
{
    FX_DECL;
    dfm_generator *g = fxc_gen(NULL, 2, DFM_PARAM_VELOCITY, NULL), *c;
    dfm_scheduler *cos = NULL;
    ck_assert_int_eq(dfm_scheduler_create_cosine(&cos, NULL), 0);
    ck_assert_int_eq(dfm_generator_set_sampling_scheduler(g, cos), 0);
    dfm_scheduler_free(cos);
    FX_POISON_OUT(c);
    int st = FX_CALL(f, dfm_generator_clone(&c, g, &f->mem));
    fx_check_out(f, st, c);
    dfm_generator_free(c);
    dfm_generator_free(g);
    return st;
}

static int sc_c_set_sampling_scheduler(fx *f)
{
    FX_DECL;
    dfm_generator *g = fxc_gen(NULL, 0, DFM_PARAM_X1, &f->mem);
    dfm_scheduler *cos = NULL;
    ck_assert_int_eq(dfm_scheduler_create_cosine(&cos, NULL), 0);
    int st = FX_CALL(f, dfm_generator_set_sampling_scheduler(g, cos));
    dfm_scheduler_free(cos);
    if (!st) ck_assert_int_eq(dfm_generator_set_sampling_scheduler(g, NULL), 0);
    dfm_generator_free(g);
    return st;
}

static int sc_c_set_diffusion_fn(fx *f)
{
    FX_DECL;
    fxm m = fxm_make(f, 0, FXM_VELOCITY);
    dfm_generator *g = fxc_gen(NULL, 1, DFM_PARAM_VELOCITY, &f->mem);
    int st = FX_CALL(f, dfm_generator_set_diffusion_fn(g, fxc_g, &m));
    dfm_generator_free(g);
    return st;
}

static int sc_c_mse_create(fx *f)
{
    FX_DECL;
    dfm_generator *g = fxc_gen(NULL, 0, DFM_PARAM_EPSILON, NULL);
    dfm_loss *l;
    FX_POISON_OUT(l);
    int st = FX_CALL(f, dfm_loss_create_mse(&l, g, &f->mem));
    fx_check_out(f, st, l);
    if (!st) ck_assert_int_eq(dfm_loss_kind(l), DFM_LOSS_MSE);
    dfm_loss_free(l);
    dfm_generator_free(g);
    return st;
}

static int sc_c_mse_clone(fx *f)
{
    FX_DECL;
    dfm_generator *g = fxc_gen(NULL, 1, DFM_PARAM_SCORE, NULL);
    dfm_loss *l = NULL, *c;
    ck_assert_int_eq(dfm_loss_create_mse(&l, g, NULL), 0);
    FX_POISON_OUT(c);
    int st = FX_CALL(f, dfm_loss_clone(&c, l, &f->mem));
    fx_check_out(f, st, c);
    dfm_loss_free(c);
    dfm_loss_free(l);
    dfm_generator_free(g);
    return st;
}

static int fxc_sampler_create(fx *f, int kind, int method)
{
    dfm_generator *g = fxc_gen(NULL, kind, DFM_PARAM_VELOCITY, NULL);
    int st = fxm_sampler_create(f, g, method);
    dfm_generator_free(g);
    return st;
}
static int sc_c_sampler_euler(fx *f) { return fxc_sampler_create(f, 0, DFM_METHOD_EULER); }
static int sc_c_sampler_midpoint(fx *f) { return fxc_sampler_create(f, 0, DFM_METHOD_MIDPOINT); }
static int sc_c_sampler_rk4(fx *f) { return fxc_sampler_create(f, 0, DFM_METHOD_RK4); }
static int sc_c_sampler_dopri5(fx *f) { return fxc_sampler_create(f, 0, DFM_METHOD_DOPRI5); }
static int sc_c_sampler_em(fx *f) { return fxc_sampler_create(f, 2, DFM_METHOD_EULER_MARUYAMA); }

/* ---- run paths ---- */

static int fxc_path_sample(fx *f, fxm *m, int threads, int given_x0)
{
    FX_DECL;
    enum { R = 5, N = R * FXC_D };
    dfm_path *p = fxc_path(m, &f->mem);
    ck_assert_int_eq(dfm_path_set_int(p, DFM_OPT_THREADS, threads), 0);
    float x1[N], x0[N], xt[N], tg[N], x0o[N];
    double t[R] = {0.0, 0.25, 0.5, 0.75, 1.0};
    for (int i = 0; i < N; i++) { x1[i] = 0.5f * (float)i; x0[i] = -0.25f * (float)i; }
    fx_fill(xt, sizeof xt); fx_fill(tg, sizeof tg); fx_fill(x0o, sizeof x0o);
    dfm_path_sample_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = R; a.t = t; a.x1_reals = x1; a.xt_reals = xt; a.target_reals = tg;
    a.x0_reals_out = x0o;
    if (given_x0) a.x0_reals = x0;
    int st = FX_CALL(f, dfm_path_sample(p, &a));
    if (st)
        ck_assert_msg(fx_unchanged(xt, sizeof xt) && fx_unchanged(tg, sizeof tg) &&
                      fx_unchanged(x0o, sizeof x0o), "%s: outputs written on failure", f->name);
    f->raw_seen = dfm_path_callback_status(p);
    dfm_path_free(p);
    return st;
}
static int sc_c_path_sample(fx *f) { return fxc_path_sample(f, NULL, 1, 0); }
static int sc_c_path_sample_t2(fx *f) { return fxc_path_sample(f, NULL, 2, 1); }

static int fxc_convert(fx *f, fxm *m, int from, int to)
{
    FX_DECL;
    enum { R = 4, N = R * FXC_D };
    dfm_path *p = fxc_path(m, &f->mem);
    double t[R] = {0.1, 0.3, 0.6, 0.9};
    float xt[N], in[N], out[N];
    for (int i = 0; i < N; i++) { xt[i] = 0.3f * (float)i - 1.0f; in[i] = 0.1f * (float)i; }
    fx_fill(out, sizeof out);
    int st = FX_CALL(f, dfm_affine_convert(p, from, to, R, t, xt, in, out));
    if (st) ck_assert_msg(fx_unchanged(out, sizeof out), "%s: out written on failure", f->name);
    f->raw_seen = dfm_path_callback_status(p);
    dfm_path_free(p);
    return st;
}
static int sc_c_convert(fx *f) { return fxc_convert(f, NULL, DFM_PARAM_X1, DFM_PARAM_VELOCITY); }
static int sc_c_convert_score(fx *f) { return fxc_convert(f, NULL, DFM_PARAM_SCORE, DFM_PARAM_EPSILON); }

static int fxc_mse_eval(fx *f, fxm *m, int param, int threads)
{
    FX_DECL;
    enum { R = 4, N = R * FXC_D };
    dfm_generator *g = fxc_gen(m, 0, param, NULL);
    dfm_loss *l = NULL;
    ck_assert_int_eq(dfm_loss_create_mse(&l, g, &f->mem), 0);
    dfm_generator_free(g);
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_THREADS, threads), 0);
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_REDUCTION, DFM_REDUCE_NONE), 0);
    double t[R] = {0.1, 0.3, 0.6, 0.9}, values[N], loss;
    float x0[N], x1[N], xt[N], out[N], grad[N];
    for (int i = 0; i < N; i++) {
        x0[i] = 0.2f * (float)i; x1[i] = 1.0f - 0.1f * (float)i; xt[i] = 0.5f; out[i] = 0.25f * (float)i;
    }
    fx_fill(values, sizeof values); fx_fill(&loss, sizeof loss); fx_fill(grad, sizeof grad);
    dfm_loss_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = R; a.t = t; a.x0_reals = x0; a.x1_reals = x1; a.xt_reals = xt; a.out = out;
    a.grad = grad; a.values = values; a.loss = &loss;
    int st = FX_CALL(f, dfm_loss_eval(l, &a));
    if (st)
        ck_assert_msg(fx_unchanged(values, sizeof values) && fx_unchanged(&loss, sizeof loss) &&
                      fx_unchanged(grad, sizeof grad), "%s: outputs written on failure", f->name);
    else ck_assert(isfinite(loss));
    f->raw_seen = dfm_loss_callback_status(l);
    dfm_loss_free(l);
    return st;
}
static int sc_c_mse_eval(fx *f) { return fxc_mse_eval(f, NULL, DFM_PARAM_VELOCITY, 1); }
static int sc_c_mse_eval_t2(fx *f) { return fxc_mse_eval(f, NULL, DFM_PARAM_SCORE, 2); }

/* opts: 1 save times, 2 descending grid, 4 sampling scheduler (cosine), 8 X1 param on a grid
 * inside (0, 1) */
static int fxc_run(fx *f, int ticks, int kind, int method, int threads, int opts, int progress)
{
    fxm m = fxm_make(f, ticks, FXM_VELOCITY);
    int param = (opts & 8) ? DFM_PARAM_X1 : DFM_PARAM_VELOCITY;
    dfm_generator *g = fxc_gen(&m, kind, param, NULL);
    if (opts & 4) {
        dfm_scheduler *cos = NULL;
        ck_assert_int_eq(dfm_scheduler_create_cosine(&cos, NULL), 0);
        ck_assert_int_eq(dfm_generator_set_sampling_scheduler(g, cos), 0);
        dfm_scheduler_free(cos);
    }
    dfm_sampler *s = NULL;
    ck_assert_int_eq(dfm_sampler_create(&s, g, method, &f->mem), 0);
    dfm_generator_free(g);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_THREADS, threads), 0);
    if (opts & 2) {
        const double grid[4] = {1.0, 0.6, 0.3, 0.0};
        ck_assert_int_eq(dfm_sampler_set_grid(s, grid, 4), 0);
    } else if (opts & 8) {
        const double grid[4] = {0.05, 0.3, 0.6, 0.95};
        ck_assert_int_eq(dfm_sampler_set_grid(s, grid, 4), 0);
    } else {
        ck_assert_int_eq(dfm_sampler_set_steps(s, 3), 0);
    }
    if (method == DFM_METHOD_DOPRI5) {
        ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_ATOL, 1e-3), 0);
        ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_RTOL, 1e-3), 0);
    }
    fxm_run_spec sp;
    memset(&sp, 0, sizeof sp);
    sp.rows = 6; sp.n_reals = FXC_D; sp.vocab = 1;
    sp.draw_source = !(opts & 2); sp.n_save = (opts & 1) ? 2 : 0; sp.descending = (opts & 2) != 0;
    sp.progress = progress;
    int st = fxm_run(f, s, &m, &sp);
    dfm_sampler_free(s);
    return st;
}
static int sc_c_run_euler(fx *f) { return fxc_run(f, 0, 0, DFM_METHOD_EULER, 1, 1, 0); }
static int sc_c_run_midpoint(fx *f) { return fxc_run(f, 0, 0, DFM_METHOD_MIDPOINT, 2, 1 | 4, 0); }
static int sc_c_run_rk4(fx *f) { return fxc_run(f, 0, 0, DFM_METHOD_RK4, 1, 1 | 8, 0); }
static int sc_c_run_rk4_back(fx *f) { return fxc_run(f, 0, 0, DFM_METHOD_RK4, 2, 1 | 2, 0); }
static int sc_c_run_dopri5(fx *f) { return fxc_run(f, 0, 0, DFM_METHOD_DOPRI5, 2, 1, 0); }
static int sc_c_run_em(fx *f) { return fxc_run(f, 0, 2, DFM_METHOD_EULER_MARUYAMA, 1, 1, 0); }
static int sc_c_run_em_t2(fx *f) { return fxc_run(f, 0, 1, DFM_METHOD_EULER_MARUYAMA, 2, 1 | 4, 0); }

static int fxc_log_p0(const float *x0, size_t rows, size_t dim, double *logp, void *u)
{
    int r = fxm_tick((fxm *)u, FXM_OTHER);
    if (r) return r;
    for (size_t i = 0; i < rows; i++) {
        double s = 0.0;
        for (size_t j = 0; j < dim; j++) s += (double)x0[i * dim + j] * x0[i * dim + j];
        logp[i] = -0.5 * s - 0.9189385332046727 * (double)dim;
    }
    return 0;
}

static int fxc_div(const dfm_model_io *io, double *div, void *u)
{
    int r = fxm_tick((fxm *)u, FXM_OTHER);
    if (r) return r;
    for (size_t i = 0; i < io->rows; i++) div[i] = -0.5 * (double)io->n_reals;
    return 0;
}

/* which: 0 exact divergence, 1 Hutchinson (threads 2), ticking callbacks per ticks;
 * other_kind for FXM_OTHER: 0 divergence, 1 log p0 */
static int fxc_loglik(fx *f, int ticks, int hutch, int other_is_logp0, int method, int progress)
{
    FX_DECL;
    enum { R = 3, N = R * FXC_D };
    fxm m = fxm_make(f, ticks, FXM_VELOCITY);
    fxm quiet = fxm_make(f, 0, FXM_VELOCITY);
    dfm_generator *g = fxc_gen(&m, 0, DFM_PARAM_VELOCITY, NULL);
    dfm_sampler *s = NULL;
    ck_assert_int_eq(dfm_sampler_create(&s, g, method, &f->mem), 0);
    dfm_generator_free(g);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 3), 0);
    if (hutch) ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_THREADS, 2), 0);
    float x1[N], x0o[N];
    double logp[R], var[R];
    for (int i = 0; i < N; i++) x1[i] = 0.4f * (float)i - 1.0f;
    fx_fill(x0o, sizeof x0o); fx_fill(logp, sizeof logp); fx_fill(var, sizeof var);
    dfm_loglik_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = fxm_model; a.model_data = &m;
    if (!hutch) { a.divergence = fxc_div; a.divergence_data = other_is_logp0 ? &quiet : &m; }
    a.log_p0 = fxc_log_p0; a.log_p0_data = other_is_logp0 ? &m : &quiet;
    a.rows = R; a.row_offset = 2; a.x1 = x1; a.n_probes = 2;
    a.logp = logp; a.logp_var = var; a.x0_out = x0o;
    if (progress) { a.progress = fxm_progress; a.progress_data = &m; }
    int st = FX_CALL(f, dfm_sampler_log_likelihood(s, &a));
    if (st) {
        ck_assert_msg(fx_unchanged(x0o, sizeof x0o) && fx_unchanged(logp, sizeof logp) &&
                      fx_unchanged(var, sizeof var), "%s: outputs written on failure", f->name);
        ck_assert(dfm_sampler_last_error(s)[0] != '\0');
    } else {
        for (int r = 0; r < R; r++) ck_assert(isfinite(logp[r]));
    }
    f->raw_seen = dfm_sampler_callback_status(s);
    dfm_sampler_free(s);
    return st;
}
static int sc_c_loglik_exact(fx *f) { return fxc_loglik(f, 0, 0, 0, DFM_METHOD_RK4, 0); }
static int sc_c_loglik_hutch(fx *f) { return fxc_loglik(f, 0, 1, 0, DFM_METHOD_MIDPOINT, 0); }
static int sc_c_loglik_dopri5(fx *f) { return fxc_loglik(f, 0, 1, 0, DFM_METHOD_DOPRI5, 0); }

/* ---- callback scenarios ---- */
static int sc_c_cb_model_euler(fx *f) { return fxc_run(f, FXM_MODEL, 0, DFM_METHOD_EULER, 1, 1, 0); }
static int sc_c_cb_model_midpoint(fx *f) { return fxc_run(f, FXM_MODEL, 0, DFM_METHOD_MIDPOINT, 2, 1, 0); }
static int sc_c_cb_model_rk4(fx *f) { return fxc_run(f, FXM_MODEL, 0, DFM_METHOD_RK4, 1, 2, 0); }
static int sc_c_cb_model_dopri5(fx *f) { return fxc_run(f, FXM_MODEL, 0, DFM_METHOD_DOPRI5, 2, 1, 0); }
static int sc_c_cb_model_em(fx *f) { return fxc_run(f, FXM_MODEL, 1, DFM_METHOD_EULER_MARUYAMA, 1, 1, 0); }
static int sc_c_cb_progress(fx *f) { return fxc_run(f, FXM_PROGRESS, 0, DFM_METHOD_RK4, 1, 1, 1); }
static int sc_c_cb_g(fx *f) { return fxc_run(f, FXM_OTHER, 2, DFM_METHOD_EULER_MARUYAMA, 2, 1, 0); }
static int sc_c_cb_sched_run(fx *f) { return fxc_run(f, FXM_SCHED, 0, DFM_METHOD_MIDPOINT, 1, 1 | 8, 0); }
static int sc_c_cb_sched_transform(fx *f) { return fxc_run(f, FXM_SCHED, 0, DFM_METHOD_EULER, 2, 4, 0); }
static int sc_c_cb_sched_em(fx *f) { return fxc_run(f, FXM_SCHED, 2, DFM_METHOD_EULER_MARUYAMA, 1, 0, 0); }
static int sc_c_cb_sched_path_sample(fx *f)
{
    fxm m = fxm_make(f, FXM_SCHED, FXM_VELOCITY);
    return fxc_path_sample(f, &m, 2, 0);
}
static int sc_c_cb_sched_convert(fx *f)
{
    fxm m = fxm_make(f, FXM_SCHED, FXM_VELOCITY);
    return fxc_convert(f, &m, DFM_PARAM_EPSILON, DFM_PARAM_X1);
}
static int sc_c_cb_sched_mse(fx *f)
{
    fxm m = fxm_make(f, FXM_SCHED, FXM_VELOCITY);
    return fxc_mse_eval(f, &m, DFM_PARAM_VELOCITY, 2);
}
static int sc_c_cb_loglik_model(fx *f) { return fxc_loglik(f, FXM_MODEL, 0, 0, DFM_METHOD_RK4, 0); }
static int sc_c_cb_loglik_model_hutch(fx *f) { return fxc_loglik(f, FXM_MODEL, 1, 0, DFM_METHOD_EULER, 0); }
static int sc_c_cb_loglik_div(fx *f) { return fxc_loglik(f, FXM_OTHER, 0, 0, DFM_METHOD_MIDPOINT, 0); }
static int sc_c_cb_loglik_logp0(fx *f) { return fxc_loglik(f, FXM_OTHER, 0, 1, DFM_METHOD_EULER, 0); }
static int sc_c_cb_loglik_progress(fx *f) { return fxc_loglik(f, FXM_PROGRESS, 1, 0, DFM_METHOD_RK4, 1); }
static int sc_c_cb_loglik_sched(fx *f) { return fxc_loglik(f, FXM_SCHED, 0, 0, DFM_METHOD_RK4, 0); }

#define FAULT_ALLOC_CONTINUOUS                                            \
    {"path_create_affine", sc_c_affine_create, 1, 0, 0},                   \
    {"path_clone_affine", sc_c_affine_clone, 1, 0, 0},                     \
    {"path_sample_affine_drawn_x0", sc_c_path_sample, 1, 0, 0},            \
    {"path_sample_affine_given_x0_threads2", sc_c_path_sample_t2, 1, 0, 0}, \
    {"affine_convert_x1_to_velocity", sc_c_convert, 1, 0, 0},              \
    {"affine_convert_score_to_epsilon", sc_c_convert_score, 1, 0, 0},      \
    {"generator_create_velocity", sc_c_velocity_v, 1, 0, 0},               \
    {"generator_create_velocity_x1", sc_c_velocity_x1, 1, 0, 0},           \
    {"generator_create_velocity_epsilon", sc_c_velocity_eps, 1, 0, 0},     \
    {"generator_create_velocity_score", sc_c_velocity_score, 1, 0, 0},     \
    {"generator_create_diffusion", sc_c_diffusion, 1, 0, 0},               \
    {"generator_create_diffusion_x1", sc_c_diffusion_x1, 1, 0, 0},         \
    {"generator_clone_diffusion_fn_sampling_sched", sc_c_gen_clone, 1, 0, 0}, \
    {"generator_set_sampling_scheduler", sc_c_set_sampling_scheduler, 0, 0, 0}, \
    {"generator_set_diffusion_fn", sc_c_set_diffusion_fn, 0, 0, 0},        \
    {"loss_create_mse", sc_c_mse_create, 1, 0, 0},                         \
    {"loss_clone_mse", sc_c_mse_clone, 1, 0, 0},                           \
    {"loss_eval_mse", sc_c_mse_eval, 1, 0, 0},                             \
    {"loss_eval_mse_score_threads2", sc_c_mse_eval_t2, 1, 0, 0},           \
    {"sampler_create_ode_euler", sc_c_sampler_euler, 1, 0, 0},             \
    {"sampler_create_midpoint", sc_c_sampler_midpoint, 1, 0, 0},           \
    {"sampler_create_rk4", sc_c_sampler_rk4, 1, 0, 0},                     \
    {"sampler_create_dopri5", sc_c_sampler_dopri5, 1, 0, 0},               \
    {"sampler_create_euler_maruyama", sc_c_sampler_em, 1, 0, 0},           \
    {"sampler_run_ode_euler_save", sc_c_run_euler, 1, 0, 0},               \
    {"sampler_run_midpoint_transform_threads2", sc_c_run_midpoint, 1, 0, 0}, \
    {"sampler_run_rk4_x1_grid", sc_c_run_rk4, 1, 0, 0},                    \
    {"sampler_run_rk4_descending_threads2", sc_c_run_rk4_back, 1, 0, 0},   \
    {"sampler_run_dopri5_threads2", sc_c_run_dopri5, 1, 0, 0},             \
    {"sampler_run_euler_maruyama_gfn", sc_c_run_em, 1, 0, 0},              \
    {"sampler_run_euler_maruyama_transform_threads2", sc_c_run_em_t2, 1, 0, 0}, \
    {"sampler_log_likelihood_exact_rk4", sc_c_loglik_exact, 1, 0, 0},      \
    {"sampler_log_likelihood_hutchinson_threads2", sc_c_loglik_hutch, 1, 0, 0}, \
    {"sampler_log_likelihood_dopri5", sc_c_loglik_dopri5, 1, 0, 0},

#define FAULT_CB_CONTINUOUS                                               \
    {"continuous_run_euler_model", sc_c_cb_model_euler, 3, 0, 1},          \
    {"continuous_run_midpoint_model", sc_c_cb_model_midpoint, 6, 0, 1},    \
    {"continuous_run_rk4_model_descending", sc_c_cb_model_rk4, 12, 0, 1},  \
    {"continuous_run_dopri5_model", sc_c_cb_model_dopri5, 3, 0, 1},        \
    {"continuous_run_euler_maruyama_model", sc_c_cb_model_em, 3, 0, 1},    \
    {"continuous_run_progress", sc_c_cb_progress, 3, DFM_ESTOPPED, 0},     \
    {"continuous_run_diffusion_g", sc_c_cb_g, 3, 0, 1},                    \
    {"continuous_run_custom_scheduler", sc_c_cb_sched_run, 3, 0, 1},       \
    {"continuous_run_sampling_transform_custom_scheduler", sc_c_cb_sched_transform, 3, 0, 1}, \
    {"continuous_run_sde_custom_scheduler", sc_c_cb_sched_em, 3, 0, 1},    \
    {"continuous_path_sample_custom_scheduler", sc_c_cb_sched_path_sample, 1, 0, 1}, \
    {"continuous_affine_convert_custom_scheduler", sc_c_cb_sched_convert, 1, 0, 1}, \
    {"continuous_loss_eval_mse_custom_scheduler", sc_c_cb_sched_mse, 1, 0, 1}, \
    {"log_likelihood_model", sc_c_cb_loglik_model, 12, 0, 1},              \
    {"log_likelihood_model_hutchinson", sc_c_cb_loglik_model_hutch, 3, 0, 1}, \
    {"log_likelihood_divergence", sc_c_cb_loglik_div, 3, 0, 1},            \
    {"log_likelihood_log_p0", sc_c_cb_loglik_logp0, 1, 0, 1},              \
    {"log_likelihood_progress", sc_c_cb_loglik_progress, 3, DFM_ESTOPPED, 0}, \
    {"log_likelihood_custom_scheduler", sc_c_cb_loglik_sched, 3, 0, 1},
