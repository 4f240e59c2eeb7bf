/* Fault scenarios of the discrete module (mixture paths, factorized generators, their samplers).
 * Included by tests/test_faults.c; see tests/fault/fault.h for the contract. */
#include "modcommon.h"

#define FXD_D 3

/* Mixture path on [V]^3 (mask: V = 4, mask token 3; uniform and custom: V = 3). */
static dfm_path *fxd_path(int source, fxm *m, const dfm_allocator *mem)
{
    size_t V = source == DFM_SOURCE_MASK ? 4 : 3;
    static const double p0[3] = {0.5, 0.2, 0.3};
    dfm_space *sp = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, V, FXD_D, NULL), 0);
    dfm_scheduler *sc = fxm_scheduler(m);
    dfm_path *p = NULL;
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, sc, source, 3,
                                             source == DFM_SOURCE_CUSTOM ? p0 : NULL, mem), 0);
    dfm_scheduler_free(sc);
    dfm_space_free(sp);
    return p;
}

static dfm_generator *fxd_gen(int source, int param, fxm *m, const dfm_allocator *mem)
{
    dfm_path *p = fxd_path(source, m, NULL);
    dfm_generator *g = NULL;
    ck_assert_int_eq(dfm_generator_create_factorized(&g, p, param, mem), 0);
    dfm_path_free(p);
    return g;
}

/* ---- creation ---- */

static int fxd_create_mixture(fx *f, int source)
{
    FX_DECL;
    size_t V = source == DFM_SOURCE_MASK ? 4 : 3;
    static const double p0[3] = {0.5, 0.2, 0.3};
    dfm_space *sp = NULL;
    dfm_scheduler *sc = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, V, FXD_D, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_cosine(&sc, NULL), 0);
    dfm_path *p;
    FX_POISON_OUT(p);
    int st = FX_CALL(f, dfm_path_create_mixture(&p, sp, sc, source, 3,
                                                source == DFM_SOURCE_CUSTOM ? p0 : NULL, &f->mem));
    fx_check_out(f, st, p);
    if (!st) ck_assert_int_eq(dfm_path_kind(p), DFM_PATH_MIXTURE);
    dfm_path_free(p);
    dfm_scheduler_free(sc);
    dfm_space_free(sp);
    return st;
}
static int sc_d_mixture_mask(fx *f) { return fxd_create_mixture(f, DFM_SOURCE_MASK); }
static int sc_d_mixture_uniform(fx *f) { return fxd_create_mixture(f, DFM_SOURCE_UNIFORM); }
static int sc_d_mixture_custom(fx *f) { return fxd_create_mixture(f, DFM_SOURCE_CUSTOM); }

static int sc_d_mixture_clone(fx *f)
{
    FX_DECL;
    dfm_path *p = fxd_path(DFM_SOURCE_CUSTOM, NULL, NULL), *c;
    FX_POISON_OUT(c);
    int st = FX_CALL(f, dfm_path_clone(&c, p, &f->mem));
    fx_check_out(f, st, c);
    dfm_path_free(c);
    dfm_path_free(p);
    return st;
}

static int fxd_create_factorized(fx *f, int param)
{
    FX_DECL;
    dfm_path *p = fxd_path(DFM_SOURCE_MASK, NULL, NULL);
    dfm_generator *g;
    FX_POISON_OUT(g);
    int st = FX_CALL(f, dfm_generator_create_factorized(&g, p, param, &f->mem));
    fx_check_out(f, st, g);
    if (!st) ck_assert_uint_eq(dfm_generator_out_stride(g), FXD_D * 4);
    dfm_generator_free(g);
    dfm_path_free(p);
    return st;
}
static int sc_d_factorized_logits(fx *f) { return fxd_create_factorized(f, DFM_PARAM_LOGITS); }
static int sc_d_factorized_rates(fx *f) { return fxd_create_factorized(f, DFM_PARAM_RATES); }

static int sc_d_factorized_clone(fx *f)
{
    FX_DECL;
    dfm_generator *g = fxd_gen(DFM_SOURCE_UNIFORM, DFM_PARAM_LOGITS, NULL, NULL), *c;
    FX_POISON_OUT(c);
    int st = FX_CALL(f, dfm_generator_clone(&c, g, &f->mem));
    fx_check_out(f, st, c);
    dfm_generator_free(c);
    dfm_generator_free(g);
    return st;
}

static int fxd_sampler_create(fx *f, int param, int method)
{
    dfm_generator *g = fxd_gen(DFM_SOURCE_MASK, param, NULL, NULL);
    int st = fxm_sampler_create(f, g, method);
    dfm_generator_free(g);
    return st;
}
static int sc_d_sampler_exact(fx *f) { return fxd_sampler_create(f, DFM_PARAM_LOGITS, DFM_METHOD_EXACT); }
static int sc_d_sampler_euler(fx *f) { return fxd_sampler_create(f, DFM_PARAM_LOGITS, DFM_METHOD_EULER); }
static int sc_d_sampler_euler_rates(fx *f) { return fxd_sampler_create(f, DFM_PARAM_RATES, DFM_METHOD_EULER); }

static int sc_d_sampler_set_grid(fx *f)
{
    FX_DECL;
    dfm_generator *g = fxd_gen(DFM_SOURCE_MASK, DFM_PARAM_LOGITS, NULL, NULL);
    dfm_sampler *s = NULL;
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_EXACT, &f->mem), 0);
    const double grid[4] = {0.0, 0.2, 0.7, 1.0};
    int st = FX_CALL(f, dfm_sampler_set_grid(s, grid, 4));
    dfm_sampler_free(s);
    dfm_generator_free(g);
    return st;
}

/* ---- run paths ---- */

static int fxd_path_sample(fx *f, fxm *m, int threads, int given_x0)
{
    FX_DECL;
    enum { R = 6 };
    dfm_path *p = fxd_path(DFM_SOURCE_CUSTOM, m, &f->mem);
    ck_assert_int_eq(dfm_path_set_int(p, DFM_OPT_THREADS, threads), 0);
    int32_t x1[R * FXD_D], x0[R * FXD_D], xt[R * FXD_D];
    double t[R];
    for (int i = 0; i < R * FXD_D; i++) { x1[i] = i % 3; x0[i] = (i + 1) % 3; }
    for (int r = 0; r < R; r++) t[r] = r / (double)R;
    fx_fill(xt, sizeof xt);
    dfm_path_sample_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = R; a.t = t; a.x1_tokens = x1; a.xt_tokens = xt;
    if (given_x0) a.x0_tokens = x0;
    int st = FX_CALL(f, dfm_path_sample(p, &a));
    if (st) ck_assert_msg(fx_unchanged(xt, sizeof xt), "%s: xt written on failure", f->name);
    f->raw_seen = dfm_path_callback_status(p);
    dfm_path_free(p);
    return st;
}
static int sc_d_path_sample(fx *f) { return fxd_path_sample(f, NULL, 1, 0); }
static int sc_d_path_sample_t2(fx *f) { return fxd_path_sample(f, NULL, 2, 1); }

static int fxd_mixture_rates(fx *f, fxm *m)
{
    FX_DECL;
    dfm_generator *g = fxd_gen(DFM_SOURCE_UNIFORM, DFM_PARAM_LOGITS, m, &f->mem);
    enum { R = 3, N = R * FXD_D * 3 };
    float logits[N], rates[N];
    int32_t tok[R * FXD_D];
    double t[R] = {0.1, 0.4, 0.8};
    for (int i = 0; i < N; i++) logits[i] = 0.25f * (float)(i % 7);
    for (int i = 0; i < R * FXD_D; i++) tok[i] = i % 3;
    fx_fill(rates, sizeof rates);
    int st = FX_CALL(f, dfm_mixture_rates(g, R, t, tok, logits, rates));
    if (st) ck_assert_msg(fx_unchanged(rates, sizeof rates), "%s: rates written on failure", f->name);
    f->raw_seen = dfm_generator_callback_status(g);
    dfm_generator_free(g);
    return st;
}
static int sc_d_mixture_rates(fx *f) { return fxd_mixture_rates(f, NULL); }

static int fxd_corrector(double t, double *c, void *u)
{
    int r = fxm_tick((fxm *)u, FXM_OTHER);
    if (r) return r;
    *c = t * (1.0 - t);
    return 0;
}

/* opts: 1 corrector + eta, 2 purity, 4 corrector callback, 8 fixed positions, 16 grid */
static int fxd_run(fx *f, int ticks, int source, int param, int method, int threads, int opts,
                   int n_save, int progress)
{
    fxm m = fxm_make(f, ticks, param == DFM_PARAM_RATES ? FXM_RATES : FXM_LOGITS);
    dfm_generator *g = fxd_gen(source, param, &m, NULL);
    dfm_sampler *s = NULL;
    ck_assert_int_eq(dfm_sampler_create(&s, g, method, &f->mem), 0);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 3), 0);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_THREADS, threads), 0);
    if (opts & 1) {
        ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_DS_CORRECTOR, 0.5), 0);
        ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_DS_ETA, 0.7), 0);
    }
    if (opts & 2) ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_DS_PURITY, 1), 0);
    if (opts & 4) ck_assert_int_eq(dfm_sampler_set_corrector(s, fxd_corrector, &m), 0);
    if (opts & 16) {
        const double grid[4] = {0.0, 0.3, 0.6, 1.0};
        ck_assert_int_eq(dfm_sampler_set_grid(s, grid, 4), 0);
    }
    fxm_run_spec sp;
    memset(&sp, 0, sizeof sp);
    sp.rows = 7; sp.n_tokens = FXD_D; sp.vocab = source == DFM_SOURCE_MASK ? 4 : 3;
    sp.draw_source = 1; sp.n_save = n_save; sp.with_fixed = (opts & 8) != 0;
    sp.progress = progress;
    int st = fxm_run(f, s, &m, &sp);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    return st;
}
static int sc_d_run_exact(fx *f) { return fxd_run(f, 0, DFM_SOURCE_MASK, DFM_PARAM_LOGITS, DFM_METHOD_EXACT, 1, 16, 2, 0); }
static int sc_d_run_exact_t2(fx *f) { return fxd_run(f, 0, DFM_SOURCE_MASK, DFM_PARAM_LOGITS, DFM_METHOD_EXACT, 2, 2 | 8, 1, 0); }
static int sc_d_run_exact_corr(fx *f) { return fxd_run(f, 0, DFM_SOURCE_CUSTOM, DFM_PARAM_LOGITS, DFM_METHOD_EXACT, 1, 1, 1, 0); }
static int sc_d_run_euler(fx *f) { return fxd_run(f, 0, DFM_SOURCE_UNIFORM, DFM_PARAM_LOGITS, DFM_METHOD_EULER, 2, 1 | 8, 2, 0); }
static int sc_d_run_euler_corrfn(fx *f) { return fxd_run(f, 0, DFM_SOURCE_MASK, DFM_PARAM_LOGITS, DFM_METHOD_EULER, 1, 4, 0, 0); }
static int sc_d_run_euler_rates(fx *f) { return fxd_run(f, 0, DFM_SOURCE_UNIFORM, DFM_PARAM_RATES, DFM_METHOD_EULER, 1, 0, 1, 0); }
static int sc_d_run_euler_rates_t2(fx *f) { return fxd_run(f, 0, DFM_SOURCE_MASK, DFM_PARAM_RATES, DFM_METHOD_EULER, 2, 8, 2, 0); }

/* ---- callback scenarios ---- */

static int sc_d_cb_model_exact(fx *f) { return fxd_run(f, FXM_MODEL, DFM_SOURCE_MASK, DFM_PARAM_LOGITS, DFM_METHOD_EXACT, 2, 2, 1, 0); }
static int sc_d_cb_model_euler(fx *f) { return fxd_run(f, FXM_MODEL, DFM_SOURCE_UNIFORM, DFM_PARAM_LOGITS, DFM_METHOD_EULER, 1, 1, 1, 0); }
static int sc_d_cb_model_rates(fx *f) { return fxd_run(f, FXM_MODEL, DFM_SOURCE_CUSTOM, DFM_PARAM_RATES, DFM_METHOD_EULER, 2, 0, 0, 0); }
static int sc_d_cb_progress(fx *f) { return fxd_run(f, FXM_PROGRESS, DFM_SOURCE_MASK, DFM_PARAM_LOGITS, DFM_METHOD_EXACT, 1, 0, 1, 1); }
static int sc_d_cb_corrector(fx *f) { return fxd_run(f, FXM_OTHER, DFM_SOURCE_UNIFORM, DFM_PARAM_LOGITS, DFM_METHOD_EULER, 2, 4, 1, 0); }
static int sc_d_cb_corrector_exact(fx *f) { return fxd_run(f, FXM_OTHER, DFM_SOURCE_MASK, DFM_PARAM_LOGITS, DFM_METHOD_EXACT, 1, 4, 0, 0); }
static int sc_d_cb_sched_exact(fx *f) { return fxd_run(f, FXM_SCHED, DFM_SOURCE_MASK, DFM_PARAM_LOGITS, DFM_METHOD_EXACT, 1, 1, 1, 0); }
static int sc_d_cb_sched_euler(fx *f) { return fxd_run(f, FXM_SCHED, DFM_SOURCE_UNIFORM, DFM_PARAM_RATES, DFM_METHOD_EULER, 2, 0, 1, 0); }
static int sc_d_cb_sched_path_sample(fx *f)
{
    fxm m = fxm_make(f, FXM_SCHED, FXM_LOGITS);
    return fxd_path_sample(f, &m, 2, 0);
}
static int sc_d_cb_sched_mixture_rates(fx *f)
{
    fxm m = fxm_make(f, FXM_SCHED, FXM_LOGITS);
    return fxd_mixture_rates(f, &m);
}

#define FAULT_ALLOC_DISCRETE                                              \
    {"path_create_mixture_mask", sc_d_mixture_mask, 1, 0, 0},              \
    {"path_create_mixture_uniform", sc_d_mixture_uniform, 1, 0, 0},        \
    {"path_create_mixture_custom", sc_d_mixture_custom, 2, 0, 0},          \
    {"path_clone_mixture", sc_d_mixture_clone, 2, 0, 0},                   \
    {"path_sample_mixture", sc_d_path_sample, 1, 0, 0},                    \
    {"path_sample_mixture_x0_threads2", sc_d_path_sample_t2, 1, 0, 0},     \
    {"generator_create_factorized_logits", sc_d_factorized_logits, 2, 0, 0}, \
    {"generator_create_factorized_rates", sc_d_factorized_rates, 2, 0, 0}, \
    {"generator_clone_factorized", sc_d_factorized_clone, 2, 0, 0},        \
    {"mixture_rates", sc_d_mixture_rates, 1, 0, 0},                        \
    {"sampler_create_exact", sc_d_sampler_exact, 2, 0, 0},                 \
    {"sampler_create_euler_logits", sc_d_sampler_euler, 2, 0, 0},          \
    {"sampler_create_euler_rates", sc_d_sampler_euler_rates, 2, 0, 0},     \
    {"sampler_set_grid_discrete", sc_d_sampler_set_grid, 1, 0, 0},         \
    {"sampler_run_exact_grid_save", sc_d_run_exact, 3, 0, 0},              \
    {"sampler_run_exact_purity_fixed_threads2", sc_d_run_exact_t2, 3, 0, 0}, \
    {"sampler_run_exact_corrector_eta", sc_d_run_exact_corr, 3, 0, 0},     \
    {"sampler_run_euler_corrector_eta_threads2", sc_d_run_euler, 3, 0, 0}, \
    {"sampler_run_euler_corrector_fn", sc_d_run_euler_corrfn, 3, 0, 0},    \
    {"sampler_run_euler_rates", sc_d_run_euler_rates, 3, 0, 0},            \
    {"sampler_run_euler_rates_fixed_threads2", sc_d_run_euler_rates_t2, 3, 0, 0},

#define FAULT_CB_DISCRETE                                                 \
    {"discrete_run_exact_model", sc_d_cb_model_exact, 3, 0, 1},            \
    {"discrete_run_euler_model", sc_d_cb_model_euler, 3, 0, 1},            \
    {"discrete_run_euler_rates_model", sc_d_cb_model_rates, 3, 0, 1},      \
    {"discrete_run_progress", sc_d_cb_progress, 3, DFM_ESTOPPED, 0},       \
    {"discrete_run_euler_corrector_fn", sc_d_cb_corrector, 3, 0, 1},       \
    {"discrete_run_exact_corrector_fn", sc_d_cb_corrector_exact, 2, 0, 1}, \
    {"discrete_run_exact_custom_scheduler", sc_d_cb_sched_exact, 3, 0, 1}, \
    {"discrete_run_euler_rates_custom_scheduler", sc_d_cb_sched_euler, 3, 0, 1}, \
    {"discrete_path_sample_custom_scheduler", sc_d_cb_sched_path_sample, 1, 0, 1}, \
    {"discrete_mixture_rates_custom_scheduler", sc_d_cb_sched_mixture_rates, 1, 0, 1},
