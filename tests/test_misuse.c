/* Misuse that must fail loudly (docs/errors.md, docs/threading.md): every case asserts the
 * status code, that the message names the problem, and that outputs and inputs are untouched.
 * Runs under valgrind and ThreadSanitizer too (mk/reliability.mk). */
#include "testutil.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define V 4       /* vocabulary, mask token V - 1 */
#define D 3       /* coordinates */
#define ROWS 4
#define NSTEPS 8

static void assert_msg(const char *msg, const char *needle)
{
    ck_assert_msg(msg && strstr(msg, needle), "message \"%s\" does not contain \"%s\"",
                  msg ? msg : "(null)", needle);
}

/* ---- handles used by the cases ---- */

static dfm_path *mixture_path(int source)
{
    dfm_space *sp;
    dfm_scheduler *sc;
    dfm_path *p;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, V, D, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_condot(&sc, NULL), 0);
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, sc, source, V - 1, NULL, NULL), 0);
    dfm_space_free(sp);
    dfm_scheduler_free(sc);
    return p;
}

static dfm_sampler *ds_sampler(int method)
{
    dfm_path *p = mixture_path(DFM_SOURCE_MASK);
    dfm_generator *g;
    dfm_sampler *s;
    ck_assert_int_eq(dfm_generator_create_factorized(&g, p, DFM_PARAM_LOGITS, NULL), 0);
    ck_assert_int_eq(dfm_sampler_create(&s, g, method, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_steps(s, NSTEPS), 0);
    dfm_generator_free(g);
    dfm_path_free(p);
    return s;
}

static dfm_path *affine_path(size_t dim)
{
    dfm_space *sp;
    dfm_scheduler *sc;
    dfm_path *p;
    ck_assert_int_eq(dfm_space_create_euclidean(&sp, dim, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_condot(&sc, NULL), 0);
    ck_assert_int_eq(dfm_path_create_affine(&p, sp, sc, NULL), 0);
    dfm_space_free(sp);
    dfm_scheduler_free(sc);
    return p;
}

static dfm_sampler *cs_sampler(int method)
{
    dfm_path *p = affine_path(2);
    dfm_generator *g;
    dfm_sampler *s;
    ck_assert_int_eq(dfm_generator_create_velocity(&g, p, DFM_PARAM_VELOCITY, NULL), 0);
    ck_assert_int_eq(dfm_sampler_create(&s, g, method, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_steps(s, NSTEPS), 0);
    dfm_generator_free(g);
    dfm_path_free(p);
    return s;
}

static dfm_sampler *ct_sampler(void)
{
    dfm_space *sp;
    dfm_generator *g;
    dfm_sampler *s;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, 3, 2, NULL), 0);
    ck_assert_int_eq(dfm_generator_create_rate_matrix(&g, NULL, sp, DFM_PARAM_RATES, NULL), 0);
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_EULER, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_steps(s, NSTEPS), 0);
    dfm_generator_free(g);
    dfm_space_free(sp);
    return s;
}

static dfm_sampler *gm_sampler(void)
{
    dfm_path *p = mixture_path(DFM_SOURCE_MASK);
    dfm_generator *g, *gg;
    dfm_sampler *s;
    ck_assert_int_eq(dfm_generator_create_factorized(&g, p, DFM_PARAM_LOGITS, NULL), 0);
    ck_assert_int_eq(dfm_generator_create_guidance(&gg, g, NULL, 0.5, NULL), 0);
    ck_assert_int_eq(dfm_sampler_create(&s, gg, DFM_METHOD_EULER, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_steps(s, NSTEPS), 0);
    dfm_generator_free(gg);
    dfm_generator_free(g);
    dfm_path_free(p);
    return s;
}

/* ---- a model that misbehaves on demand ---- */

enum action {
    ACT_NONE, ACT_SET_GRID, ACT_SET_STEPS, ACT_SET_INT, ACT_SET_DOUBLE, ACT_RUN, ACT_FREE,
    ACT_SET_CORRECTOR, ACT_QUERY, ACT_STOP, ACT_NESTED_OTHER, ACT_LOGLIK
};

typedef struct ctx {
    dfm_sampler *s;        /* the handle the callback misuses */
    dfm_sampler *other;    /* another sampler, run from inside (ACT_NESTED_OTHER) */
    enum action act;
    int at_call;           /* act on this model call (0-based) */
    int calls;
    int status;            /* what the misused call returned */
    char msg[DFM_ERROR_MAX];
    int64_t stat_seen;     /* DFM_STAT_MODEL_CALLS read from inside */
} ctx;

static int inner_model(const dfm_model_io *io, void *ud);

/* A context that misuses s with act at model call at_call (0-based; -1: never). */
static ctx misuse_ctx(dfm_sampler *s, enum action act, int at_call)
{
    ctx c;
    memset(&c, 0, sizeof c);
    c.s = s;
    c.act = act;
    c.at_call = at_call;
    return c;
}

/* Argument descriptors the tests fill the same way; each test then sets what it is about. */
static dfm_loglik_args loglik_args(dfm_model_fn model, void *data, size_t rows, const float *x1,
                                   size_t n_probes, double *logp)
{
    dfm_loglik_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = model;
    a.model_data = data;
    a.rows = rows;
    a.x1 = x1;
    a.n_probes = n_probes;
    a.logp = logp;
    return a;
}

static void misuse(ctx *c)
{
    static const double grid[3] = {0.0, 0.5, 1.0};
    int32_t tok[ROWS * D];
    dfm_run_args ra;
    memset(&ra, 0, sizeof ra);
    ra.struct_size = sizeof ra;
    ra.model = inner_model;
    ra.rows = 1;
    ra.tokens = tok;
    ra.draw_source = 1;
    switch (c->act) {
    case ACT_SET_GRID: c->status = dfm_sampler_set_grid(c->s, grid, 3); break;
    case ACT_SET_STEPS: c->status = dfm_sampler_set_steps(c->s, 2); break;
    case ACT_SET_INT: c->status = dfm_sampler_set_int(c->s, DFM_OPT_SEED, 99); break;
    case ACT_SET_DOUBLE: c->status = dfm_sampler_set_double(c->s, DFM_OPT_DS_TEMPERATURE, 2.0); break;
    case ACT_SET_CORRECTOR: c->status = dfm_sampler_set_corrector(c->s, NULL, NULL); break;
    case ACT_RUN: c->status = dfm_sampler_run(c->s, &ra); break;
    case ACT_FREE: dfm_sampler_free(c->s); c->status = -1; break;
    case ACT_QUERY: {
        int64_t v;
        double x;
        c->status = dfm_sampler_get_int(c->s, DFM_OPT_SEED, &v) |
                    dfm_sampler_get_stat(c->s, DFM_STAT_MODEL_CALLS, &c->stat_seen) |
                    dfm_sampler_callback_status(c->s) | (dfm_sampler_method(c->s) == 0);
        if (dfm_sampler_get_double(c->s, DFM_OPT_DS_TEMPERATURE, &x) == 0) c->status |= x != 1.0;
        break;
    }
    case ACT_STOP: dfm_sampler_request_stop(c->s); c->status = 0; break;
    case ACT_NESTED_OTHER: c->status = dfm_sampler_run(c->other, &ra); break;
    case ACT_LOGLIK: {
        dfm_loglik_args la;
        float x1[2] = {0, 0};
        double lp;
        memset(&la, 0, sizeof la);
        la.struct_size = sizeof la;
        la.model = inner_model;
        la.rows = 1;
        la.x1 = x1;
        la.n_probes = 1;
        la.logp = &lp;
        c->status = dfm_sampler_log_likelihood(c->s, &la);
        break;
    }
    case ACT_NONE: break;
    }
    if (c->act != ACT_FREE && c->act != ACT_NONE)
        snprintf(c->msg, sizeof c->msg, "%s", dfm_sampler_last_error(c->s));
}

/* Uniform logits (or zero velocity / unit rates): every kind of sampler accepts them. */
static void fill_out(const dfm_model_io *io, float v)
{
    for (size_t j = 0; j < io->rows * io->out_stride; j++) io->out[j] = v;
}

static int inner_model(const dfm_model_io *io, void *ud)
{
    (void)ud;
    fill_out(io, 0.0f);
    return 0;
}

static int misuse_model(const dfm_model_io *io, void *ud)
{
    ctx *c = (ctx *)ud;
    if (c->calls++ == c->at_call) misuse(c);
    fill_out(io, io->reals ? 0.0f : 0.5f);
    return 0;
}

static void init_tokens(int32_t *tok, size_t n)
{
    for (size_t j = 0; j < n; j++) tok[j] = V - 1;
}

static dfm_run_args ds_args(ctx *c, int32_t *tok)
{
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = misuse_model;
    a.model_data = c;
    a.rows = ROWS;
    a.tokens = tok;
    return a;
}

/* Reference: the same run without misuse. */
static void ds_reference(int32_t *ref)
{
    dfm_sampler *s = ds_sampler(DFM_METHOD_EXACT);
    ctx c;
    memset(&c, 0, sizeof c);
    c.at_call = -1;
    init_tokens(ref, ROWS * D);
    dfm_run_args a = ds_args(&c, ref);
    ck_assert_int_eq(dfm_sampler_run(s, &a), 0);
    dfm_sampler_free(s);
}

/* ---- 1. re-entrancy ---- */

static const struct { enum action act; const char *name; } reconfig[] = {
    {ACT_SET_GRID, "dfm_sampler_set_grid"}, {ACT_SET_STEPS, "dfm_sampler_set_steps"},
    {ACT_SET_INT, "dfm_sampler_set_int"}, {ACT_SET_DOUBLE, "dfm_sampler_set_double"},
    {ACT_SET_CORRECTOR, "dfm_sampler_set_corrector"}, {ACT_RUN, "dfm_sampler_run"},
};

START_TEST(test_reconfigure_inside_model)
{
    int32_t ref[ROWS * D], tok[ROWS * D];
    ds_reference(ref);
    dfm_sampler *s = ds_sampler(DFM_METHOD_EXACT);
    ctx c = misuse_ctx(s, reconfig[_i].act, 2);
    init_tokens(tok, ROWS * D);
    dfm_run_args a = ds_args(&c, tok);
    ck_assert_int_eq(dfm_sampler_run(s, &a), 0);
    ck_assert_int_eq(c.status, DFM_ESTATE);
    assert_msg(c.msg, reconfig[_i].name);
    assert_msg(c.msg, "from inside a callback");
    assert_msg(c.msg, "dfm_sampler_run");
    /* the refused call changed nothing: same samples as the clean run, no error left */
    ck_assert_int_eq(memcmp(tok, ref, sizeof tok), 0);
    ck_assert_str_eq(dfm_sampler_last_error(s), "");
    int64_t v;
    ck_assert_int_eq(dfm_sampler_get_stat(s, DFM_STAT_MODEL_CALLS, &v), 0);
    ck_assert_int_eq(v, NSTEPS);
    /* after the run the handle is configurable again */
    ck_assert_int_eq(dfm_sampler_set_steps(s, 2), 0);
    dfm_sampler_free(s);
}
END_TEST

START_TEST(test_free_inside_model)
{
    int32_t tok[ROWS * D], before[ROWS * D];
    dfm_sampler *s = ds_sampler(DFM_METHOD_EXACT);
    ctx c = misuse_ctx(s, ACT_FREE, 1);
    init_tokens(tok, ROWS * D);
    memcpy(before, tok, sizeof tok);
    dfm_run_args a = ds_args(&c, tok);
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ESTATE);
    assert_msg(dfm_sampler_last_error(s), "dfm_sampler_free");
    assert_msg(dfm_sampler_last_error(s), "ignored");
    ck_assert_int_eq(memcmp(tok, before, sizeof tok), 0);
    /* the handle lives on and still runs */
    c.act = ACT_NONE;
    ck_assert_int_eq(dfm_sampler_run(s, &a), 0);
    dfm_sampler_free(s);
}
END_TEST

START_TEST(test_queries_inside_model)
{
    int32_t tok[ROWS * D];
    dfm_sampler *s = ds_sampler(DFM_METHOD_EXACT);
    ctx c = misuse_ctx(s, ACT_QUERY, 3);
    init_tokens(tok, ROWS * D);
    dfm_run_args a = ds_args(&c, tok);
    ck_assert_int_eq(dfm_sampler_run(s, &a), 0);
    ck_assert_int_eq(c.status, 0);
    ck_assert_int_eq(c.stat_seen, 4); /* the calls of this run so far, this one included */
    dfm_sampler_free(s);
}
END_TEST

/* A run on another handle from inside the model: allowed, and its statistics stay its own. */
START_TEST(test_nested_other_handle_stats)
{
    int32_t tok[ROWS * D];
    dfm_sampler *s = ds_sampler(DFM_METHOD_EXACT), *o = ds_sampler(DFM_METHOD_EXACT);
    ck_assert_int_eq(dfm_sampler_set_steps(o, 5), 0);
    ctx c = misuse_ctx(s, ACT_NESTED_OTHER, 0);
    c.other = o;
    init_tokens(tok, ROWS * D);
    dfm_run_args a = ds_args(&c, tok);
    ck_assert_int_eq(dfm_sampler_run(s, &a), 0);
    ck_assert_int_eq(c.status, 0);
    int64_t outer, inner;
    ck_assert_int_eq(dfm_sampler_get_stat(s, DFM_STAT_MODEL_CALLS, &outer), 0);
    ck_assert_int_eq(dfm_sampler_get_stat(o, DFM_STAT_MODEL_CALLS, &inner), 0);
    ck_assert_int_eq(outer, NSTEPS);
    ck_assert_int_eq(inner, 5);
    dfm_sampler_free(o);
    dfm_sampler_free(s);
}
END_TEST

/* Every sampler kind refuses reconfiguration, nested runs and frees from its model. */
typedef dfm_sampler *(*maker)(void);
static dfm_sampler *mk_ds(void) { return ds_sampler(DFM_METHOD_EULER); }
static dfm_sampler *mk_cs(void) { return cs_sampler(DFM_METHOD_RK4); }
static dfm_sampler *mk_dopri(void) { return cs_sampler(DFM_METHOD_DOPRI5); }
static dfm_sampler *mk_ct(void) { return ct_sampler(); }
static dfm_sampler *mk_gm(void) { return gm_sampler(); }
static const maker makers[] = {mk_ds, mk_cs, mk_dopri, mk_ct, mk_gm};

static int run_kind(dfm_sampler *s, ctx *c, int32_t *tok, float *re)
{
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = misuse_model;
    a.model_data = c;
    a.rows = 2;
    if (dfm_sampler_method(s) == DFM_METHOD_RK4 || dfm_sampler_method(s) == DFM_METHOD_DOPRI5)
        a.reals = re;
    else
        a.tokens = tok;
    return dfm_sampler_run(s, &a);
}

START_TEST(test_every_sampler_kind)
{
    static const struct { enum action act; const char *name; int run_status; } acts[] = {
        {ACT_SET_STEPS, "dfm_sampler_set_steps", 0}, {ACT_SET_GRID, "dfm_sampler_set_grid", 0},
        {ACT_RUN, "dfm_sampler_run", 0}, {ACT_FREE, "dfm_sampler_free", DFM_ESTATE},
    };
    for (size_t k = 0; k < sizeof acts / sizeof acts[0]; k++) {
        dfm_sampler *s = makers[_i]();
        int32_t tok[2 * D] = {1, 1, 1, 1, 1, 1};
        float re[4] = {9, 9, 9, 9};
        ctx c = misuse_ctx(s, acts[k].act, 1);
        int st = run_kind(s, &c, tok, re);
        ck_assert_msg(st == acts[k].run_status, "kind %d, %s: run returned %d (%s)", _i,
                      acts[k].name, st, dfm_sampler_last_error(s));
        if (acts[k].act == ACT_FREE) {
            assert_msg(dfm_sampler_last_error(s), "dfm_sampler_free");
            for (int j = 0; j < 2 * D; j++) ck_assert_int_eq(tok[j], 1);
            for (int j = 0; j < 4; j++) ck_assert(re[j] == 9.0f);
        } else {
            ck_assert_int_eq(c.status, DFM_ESTATE);
            assert_msg(c.msg, acts[k].name);
            int64_t v;
            ck_assert_int_eq(dfm_sampler_get_stat(s, DFM_STAT_STEPS, &v), 0);
            if (dfm_sampler_method(s) != DFM_METHOD_DOPRI5) ck_assert_int_eq(v, NSTEPS);
        }
        dfm_sampler_free(s);
    }
}
END_TEST

START_TEST(test_log_likelihood_reentry)
{
    static const struct { enum action act; const char *name; } acts[] = {
        {ACT_SET_GRID, "dfm_sampler_set_grid"}, {ACT_LOGLIK, "dfm_sampler_log_likelihood"},
        {ACT_FREE, "dfm_sampler_free"},
    };
    for (size_t k = 0; k < 3; k++) {
        dfm_sampler *s = cs_sampler(DFM_METHOD_RK4);
        ctx c = misuse_ctx(s, acts[k].act, 1);
        float x1[4] = {0.5f, -0.5f, 1.0f, 0.0f};
        double lp[2] = {123.0, 123.0};
        dfm_loglik_args la = loglik_args(misuse_model, &c, 2, x1, 2, lp);
        int st = dfm_sampler_log_likelihood(s, &la);
        if (acts[k].act == ACT_FREE) {
            ck_assert_int_eq(st, DFM_ESTATE);
            assert_msg(dfm_sampler_last_error(s), "dfm_sampler_free");
            ck_assert(lp[0] == 123.0 && lp[1] == 123.0);
        } else {
            ck_assert_int_eq(st, 0);
            ck_assert_int_eq(c.status, DFM_ESTATE);
            assert_msg(c.msg, acts[k].name);
            assert_msg(c.msg, "dfm_sampler_log_likelihood");
        }
        int64_t v;
        ck_assert_int_eq(dfm_sampler_get_stat(s, DFM_STAT_MODEL_CALLS, &v), 0);
        /* RK4: 4 stages x (1 + 2 x 2 probes) per step; a free stops the run after step 0 */
        ck_assert_int_eq(v, k == 2 ? 4 * 5 : 4 * NSTEPS * 5);
        dfm_sampler_free(s);
    }
}
END_TEST

/* ---- losses, paths, trainers, generators, workspaces ---- */

typedef struct hctx {
    int what;
    void *h;
    int status;
    char msg[DFM_ERROR_MAX];
    int done;
} hctx;

/* A custom condot scheduler whose callback misuses the handle in user_data once. */
static int misuse_sched(double t, dfm_sched_values *v, void *ud)
{
    hctx *c = (hctx *)ud;
    if (c->h && !c->done) {
        c->done = 1;
        switch (c->what) {
        case 0: c->status = dfm_path_set_int((dfm_path *)c->h, DFM_OPT_SEED, 1);
            snprintf(c->msg, sizeof c->msg, "%s", dfm_path_last_error((dfm_path *)c->h)); break;
        case 1: dfm_path_free((dfm_path *)c->h); break;
        case 2: c->status = dfm_loss_set_int((dfm_loss *)c->h, DFM_OPT_REDUCTION, DFM_REDUCE_SUM);
            snprintf(c->msg, sizeof c->msg, "%s", dfm_loss_last_error((dfm_loss *)c->h)); break;
        case 3: dfm_loss_free((dfm_loss *)c->h); break;
        case 4: c->status = dfm_generator_set_int((dfm_generator *)c->h, DFM_OPT_THREADS, 2);
            snprintf(c->msg, sizeof c->msg, "%s", dfm_generator_last_error((dfm_generator *)c->h));
            break;
        case 5: dfm_generator_free((dfm_generator *)c->h); break;
        }
    }
    v->alpha = t;
    v->sigma = 1.0 - t;
    v->d_alpha = 1.0;
    v->d_sigma = -1.0;
    return 0;
}

static dfm_path *custom_mixture(hctx *c)
{
    dfm_space *sp;
    dfm_scheduler *sc;
    dfm_path *p;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, V, D, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_custom(&sc, misuse_sched, NULL, c, NULL), 0);
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, sc, DFM_SOURCE_MASK, V - 1, NULL, NULL), 0);
    dfm_space_free(sp);
    dfm_scheduler_free(sc);
    return p;
}

START_TEST(test_path_sample_reentry)
{
    for (int what = 0; what < 2; what++) {
        hctx c;
        memset(&c, 0, sizeof c);
        c.what = what;
        dfm_path *p = custom_mixture(&c);
        c.h = p;
        double t[2] = {0.3, 0.6};
        int32_t x1[2 * D] = {0, 1, 2, 1, 0, 2}, xt[2 * D] = {9, 9, 9, 9, 9, 9};
        dfm_path_sample_args a = tu_sample_args(2, t, x1, xt);
        int st = dfm_path_sample(p, &a);
        if (what == 0) {
            ck_assert_int_eq(st, 0);
            ck_assert_int_eq(c.status, DFM_ESTATE);
            assert_msg(c.msg, "dfm_path_set_int");
            assert_msg(c.msg, "dfm_path_sample");
        } else {
            ck_assert_int_eq(st, DFM_ESTATE);
            assert_msg(dfm_path_last_error(p), "dfm_path_free");
            for (int j = 0; j < 2 * D; j++) ck_assert_int_eq(xt[j], 9);
        }
        int64_t seed;
        ck_assert_int_eq(dfm_path_get_int(p, DFM_OPT_SEED, &seed), 0);
        ck_assert_int_eq(seed, 0);
        c.h = NULL;
        dfm_path_free(p);
    }
}
END_TEST

START_TEST(test_loss_eval_reentry)
{
    for (int what = 2; what < 4; what++) {
        hctx c;
        memset(&c, 0, sizeof c);
        c.what = what;
        dfm_path *p = custom_mixture(&c);
        dfm_loss *l;
        ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
        c.h = l;
        double t[1] = {0.5}, loss = -7.0;
        int32_t x1[D] = {0, 1, 2}, xt[D] = {0, 3, 3};
        float out[D * V], grad[D * V];
        for (int j = 0; j < D * V; j++) { out[j] = 0.1f * (float)j; grad[j] = 5.0f; }
        dfm_loss_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.rows = 1;
        a.t = t;
        a.x1_tokens = x1;
        a.xt_tokens = xt;
        a.out = out;
        a.grad = grad;
        a.loss = &loss;
        int st = dfm_loss_eval(l, &a);
        if (what == 2) {
            ck_assert_int_eq(st, 0);
            ck_assert_int_eq(c.status, DFM_ESTATE);
            assert_msg(c.msg, "dfm_loss_set_int");
            assert_msg(c.msg, "dfm_loss_eval");
            int64_t red;
            ck_assert_int_eq(dfm_loss_get_int(l, DFM_OPT_REDUCTION, &red), 0);
            ck_assert_int_eq(red, DFM_REDUCE_MEAN);
        } else {
            ck_assert_int_eq(st, DFM_ESTATE);
            assert_msg(dfm_loss_last_error(l), "dfm_loss_free");
            ck_assert(loss == -7.0);
            for (int j = 0; j < D * V; j++) ck_assert(grad[j] == 5.0f);
        }
        c.h = NULL;
        dfm_loss_free(l);
        dfm_path_free(p);
    }
}
END_TEST

START_TEST(test_mixture_rates_reentry)
{
    for (int what = 4; what < 6; what++) {
        hctx c;
        memset(&c, 0, sizeof c);
        c.what = what;
        dfm_path *p = custom_mixture(&c);
        dfm_generator *g;
        ck_assert_int_eq(dfm_generator_create_factorized(&g, p, DFM_PARAM_LOGITS, NULL), 0);
        c.h = g;
        double t[1] = {0.5};
        int32_t x[D] = {0, 3, 3};
        float z[D * V], rates[D * V];
        for (int j = 0; j < D * V; j++) { z[j] = 0.0f; rates[j] = 5.0f; }
        int st = dfm_mixture_rates(g, 1, t, x, z, rates);
        if (what == 4) {
            ck_assert_int_eq(st, 0);
            ck_assert_int_eq(c.status, DFM_ESTATE);
            assert_msg(c.msg, "dfm_generator_set_int");
            assert_msg(c.msg, "dfm_mixture_rates");
        } else {
            ck_assert_int_eq(st, DFM_ESTATE);
            assert_msg(dfm_generator_last_error(g), "dfm_generator_free");
            for (int j = 0; j < D * V; j++) ck_assert(rates[j] == 5.0f);
        }
        c.h = NULL;
        dfm_generator_free(g);
        dfm_path_free(p);
    }
}
END_TEST

/* ELBO: the model frees or reconfigures the loss. */
typedef struct ectx { dfm_loss *l; int free_it; int status; char msg[DFM_ERROR_MAX]; int n; } ectx;

static int elbo_model(const dfm_model_io *io, void *ud)
{
    ectx *c = (ectx *)ud;
    if (c->n++ == 0) {
        if (c->free_it) {
            dfm_loss_free(c->l);
        } else {
            c->status = dfm_loss_set_double(c->l, 12345, 1.0);
            snprintf(c->msg, sizeof c->msg, "%s", dfm_loss_last_error(c->l));
        }
    }
    fill_out(io, 0.0f);
    return 0;
}

START_TEST(test_elbo_reentry)
{
    for (int free_it = 0; free_it < 2; free_it++) {
        dfm_path *p = mixture_path(DFM_SOURCE_MASK);
        dfm_loss *l;
        ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
        ectx c;
        memset(&c, 0, sizeof c);
        c.l = l;
        c.free_it = free_it;
        int32_t x1[2 * D] = {0, 1, 2, 2, 1, 0};
        double nelbo[2] = {-1.0, -1.0};
        dfm_elbo_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.rows = 2;
        a.x1_tokens = x1;
        a.n_t = 2;
        a.model = elbo_model;
        a.user_data = &c;
        a.nelbo = nelbo;
        int st = dfm_loss_discrete_elbo(l, &a);
        if (free_it) {
            ck_assert_int_eq(st, DFM_ESTATE);
            assert_msg(dfm_loss_last_error(l), "dfm_loss_free");
            assert_msg(dfm_loss_last_error(l), "dfm_loss_discrete_elbo");
            ck_assert(nelbo[0] == -1.0 && nelbo[1] == -1.0);
        } else {
            ck_assert_int_eq(st, 0);
            ck_assert_int_eq(c.status, DFM_ESTATE);
            assert_msg(c.msg, "dfm_loss_set_double");
        }
        dfm_loss_free(l);
        dfm_path_free(p);
    }
}
END_TEST

/* Trainer: forward reconfigures, re-enters or frees the trainer. */
typedef struct tctx { dfm_trainer *tr; int what; int status; char msg[DFM_ERROR_MAX]; } tctx;

static int train_fwd(const dfm_model_io *io, void *ud);

static dfm_train_args train_args(tctx *c, const float *x1, double *loss)
{
    dfm_train_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = 2;
    a.x1_reals = x1;
    a.forward = train_fwd;
    a.user_data = c;
    a.loss = loss;
    return a;
}

static int train_fwd(const dfm_model_io *io, void *ud)
{
    tctx *c = (tctx *)ud;
    static const float x1[4] = {1, 2, 3, 4};
    double l2;
    switch (c->what) {
    case 0: c->status = dfm_trainer_set_double(c->tr, DFM_OPT_GM_TIME_EPS, 0.5); break;
    case 1: {
        tctx c2 = {NULL, -1, 0, ""};
        dfm_train_args a = train_args(&c2, x1, &l2);
        c->status = dfm_trainer_step(c->tr, &a);
        break;
    }
    case 2: c->status = dfm_trainer_set_step(c->tr, 100); break;
    case 3: dfm_trainer_free(c->tr); break;
    default: break;
    }
    if (c->what >= 0 && c->what != 3)
        snprintf(c->msg, sizeof c->msg, "%s", dfm_trainer_last_error(c->tr));
    fill_out(io, 0.0f);
    return 0;
}

START_TEST(test_trainer_reentry)
{
    static const char *names[] = {"dfm_trainer_set_double", "dfm_trainer_step",
                                  "dfm_trainer_set_step", "dfm_trainer_free"};
    dfm_path *p = affine_path(2);
    dfm_generator *g;
    dfm_loss *l;
    ck_assert_int_eq(dfm_generator_create_velocity(&g, p, DFM_PARAM_VELOCITY, NULL), 0);
    ck_assert_int_eq(dfm_loss_create_mse(&l, g, NULL), 0);
    for (int what = 0; what < 4; what++) {
        dfm_trainer *tr;
        ck_assert_int_eq(dfm_trainer_create(&tr, p, l, NULL), 0);
        tctx c;
        memset(&c, 0, sizeof c);
        c.tr = tr;
        c.what = what;
        float x1[4] = {1, 2, 3, 4};
        double loss = -3.0;
        dfm_train_args a = train_args(&c, x1, &loss);
        int st = dfm_trainer_step(tr, &a);
        if (what == 3) {
            ck_assert_int_eq(st, DFM_ESTATE);
            assert_msg(dfm_trainer_last_error(tr), names[what]);
            ck_assert(loss == -3.0);
            ck_assert_int_eq(dfm_trainer_step_count(tr), 0);
        } else {
            ck_assert_int_eq(st, 0);
            ck_assert_int_eq(c.status, DFM_ESTATE);
            assert_msg(c.msg, names[what]);
            assert_msg(c.msg, "dfm_trainer_step");
            ck_assert_int_eq(dfm_trainer_step_count(tr), 1);
            double eps;
            ck_assert_int_eq(dfm_trainer_get_double(tr, DFM_OPT_GM_TIME_EPS, &eps), 0);
            ck_assert(eps == 1e-3);
        }
        dfm_trainer_free(tr);
    }
    dfm_loss_free(l);
    dfm_generator_free(g);
    dfm_path_free(p);
}
END_TEST

/* Kolmogorov workspace: the rate callback reuses or frees the workspace that integrates. */
typedef struct wctx { dfm_ctmc *w; int what; int status; int n; } wctx;

static int rate_fn(double t, double *Q, size_t n, void *ud)
{
    wctx *c = (wctx *)ud;
    (void)t;
    if (c->n++ == 0) {
        double K[4];
        if (c->what == 0) c->status = dfm_ctmc_kernel(c->w, Q, 0.1, K);
        else dfm_ctmc_free(c->w);
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) Q[i * n + j] = i == j ? 0.0 : 1.0;
    return 0;
}

START_TEST(test_ctmc_reentry)
{
    for (int what = 0; what < 2; what++) {
        dfm_ctmc *w;
        ck_assert_int_eq(dfm_ctmc_create(&w, 2, NULL), 0);
        wctx c = {w, what, 0, 0};
        double p0[2] = {1.0, 0.0}, pt[2] = {-1.0, -1.0};
        int st = dfm_ctmc_propagate_ode(w, p0, 1, rate_fn, &c, 0.0, 1.0, 4, pt);
        if (what == 0) {
            ck_assert_int_eq(st, 0);
            ck_assert_int_eq(c.status, DFM_ESTATE);
        } else {
            ck_assert_int_eq(st, DFM_ESTATE);
            assert_msg(dfm_ctmc_last_error(w), "dfm_ctmc_free");
            ck_assert(pt[0] == -1.0 && pt[1] == -1.0);
        }
        ck_assert(p0[0] == 1.0 && p0[1] == 0.0);
        dfm_ctmc_free(w);
    }
}
END_TEST

/* ---- 4. stop requests ---- */

START_TEST(test_stop_before_run)
{
    int32_t tok[ROWS * D], before[ROWS * D];
    dfm_sampler *s = ds_sampler(DFM_METHOD_EXACT);
    ctx c;
    memset(&c, 0, sizeof c);
    c.at_call = -1;
    init_tokens(tok, ROWS * D);
    memcpy(before, tok, sizeof tok);
    dfm_run_args a = ds_args(&c, tok);
    dfm_sampler_request_stop(s);
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ESTOPPED);
    assert_msg(dfm_sampler_last_error(s), "stop was requested before");
    ck_assert_int_eq(c.calls, 0);
    ck_assert_int_eq(memcmp(tok, before, sizeof tok), 0);
    /* the request was consumed: the next run goes through */
    ck_assert_int_eq(dfm_sampler_run(s, &a), 0);
    ck_assert_int_eq(c.calls, NSTEPS);
    dfm_sampler_free(s);
}
END_TEST

START_TEST(test_stop_inside_model)
{
    int32_t tok[ROWS * D], before[ROWS * D];
    dfm_sampler *s = ds_sampler(DFM_METHOD_EXACT);
    ctx c = misuse_ctx(s, ACT_STOP, 2);
    init_tokens(tok, ROWS * D);
    memcpy(before, tok, sizeof tok);
    dfm_run_args a = ds_args(&c, tok);
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ESTOPPED);
    assert_msg(dfm_sampler_last_error(s), "stop requested");
    assert_msg(dfm_sampler_last_error(s), "after step 2");
    ck_assert_int_eq(c.calls, 3);
    ck_assert_int_eq(memcmp(tok, before, sizeof tok), 0);
    ck_assert_int_eq(dfm_sampler_callback_status(s), 0);
    dfm_sampler_free(s);
}
END_TEST

static int stop_at_1(int step, int n_steps, double t, void *ud)
{
    (void)n_steps;
    (void)t;
    (void)ud;
    return step == 1 ? 7 : 0;
}

START_TEST(test_progress_value_kept)
{
    for (int k = 0; k < 5; k++) {
        dfm_sampler *s = makers[k]();
        int32_t tok[2 * D] = {1, 1, 1, 1, 1, 1};
        float re[4] = {9, 9, 9, 9};
        ctx c;
        memset(&c, 0, sizeof c);
        c.at_call = -1;
        dfm_run_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.model = misuse_model;
        a.model_data = &c;
        a.rows = 2;
        if (k == 1 || k == 2) a.reals = re; else a.tokens = tok;
        a.progress = stop_at_1;
        ck_assert_msg(dfm_sampler_run(s, &a) == DFM_ESTOPPED, "kind %d: %s", k,
                      dfm_sampler_last_error(s));
        ck_assert_int_eq(dfm_sampler_callback_status(s), 7);
        assert_msg(dfm_sampler_last_error(s), "progress callback returned 7");
        for (int j = 0; j < 2 * D; j++) ck_assert_int_eq(tok[j], 1);
        for (int j = 0; j < 4; j++) ck_assert(re[j] == 9.0f);
        dfm_sampler_free(s);
    }
}
END_TEST

/* dfm_sampler_request_stop from another thread while the run is in progress. */
typedef struct xctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int in_model, requested, calls;
    dfm_sampler *s;
} xctx;

static int blocking_model(const dfm_model_io *io, void *ud)
{
    xctx *x = (xctx *)ud;
    pthread_mutex_lock(&x->mu);
    if (++x->calls == 3) {
        x->in_model = 1;
        pthread_cond_broadcast(&x->cv);
        while (!x->requested) pthread_cond_wait(&x->cv, &x->mu);
    }
    pthread_mutex_unlock(&x->mu);
    fill_out(io, 0.5f);
    return 0;
}

static void *stopper(void *arg)
{
    xctx *x = (xctx *)arg;
    pthread_mutex_lock(&x->mu);
    while (!x->in_model) pthread_cond_wait(&x->cv, &x->mu);
    pthread_mutex_unlock(&x->mu);
    dfm_sampler_request_stop(x->s); /* the run is in progress: it is inside the model */
    pthread_mutex_lock(&x->mu);
    x->requested = 1;
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
    return NULL;
}

START_TEST(test_stop_from_other_thread)
{
    int32_t tok[ROWS * D], before[ROWS * D];
    dfm_sampler *s = ds_sampler(DFM_METHOD_EXACT);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_THREADS, 2), 0);
    xctx x;
    memset(&x, 0, sizeof x);
    pthread_mutex_init(&x.mu, NULL);
    pthread_cond_init(&x.cv, NULL);
    x.s = s;
    init_tokens(tok, ROWS * D);
    memcpy(before, tok, sizeof tok);
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = blocking_model;
    a.model_data = &x;
    a.rows = ROWS;
    a.tokens = tok;
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, stopper, &x), 0);
    int st = dfm_sampler_run(s, &a);
    pthread_join(th, NULL);
    ck_assert_int_eq(st, DFM_ESTOPPED);
    assert_msg(dfm_sampler_last_error(s), "after step 2");
    ck_assert_int_eq(x.calls, 3);
    ck_assert_int_eq(memcmp(tok, before, sizeof tok), 0);
    /* consumed: the next run completes */
    x.requested = 1;
    ck_assert_int_eq(dfm_sampler_run(s, &a), 0);
    pthread_mutex_destroy(&x.mu);
    pthread_cond_destroy(&x.cv);
    dfm_sampler_free(s);
}
END_TEST

/* ---- 2. a model that does not write its output ---- */

enum wmode { W_ALL, W_NOTHING, W_ROW0_ONLY, W_SKIP_ONE, W_NAN };

typedef struct wctx2 {
    enum wmode mode;
    size_t skip;      /* entry of row 1 left unwritten (W_SKIP_ONE) or NaN (W_NAN) */
    float value;      /* what the model writes */
} wctx2;

static int writer_model(const dfm_model_io *io, void *ud)
{
    const wctx2 *w = (const wctx2 *)ud;
    if (w->mode == W_NOTHING) return 0;
    for (size_t r = 0; r < io->rows; r++) {
        if (w->mode == W_ROW0_ONLY && r + io->row_offset > 0) continue;
        for (size_t j = 0; j < io->out_stride; j++) {
            if (w->mode == W_SKIP_ONE && r + io->row_offset == 1 && j == w->skip) continue;
            io->out[r * io->out_stride + j] =
                w->mode == W_NAN && r + io->row_offset == 1 && j == w->skip ? NAN : w->value;
        }
    }
    return 0;
}

static dfm_sampler *ds_rates_sampler(void)
{
    dfm_path *p = mixture_path(DFM_SOURCE_MASK);
    dfm_generator *g;
    dfm_sampler *s;
    ck_assert_int_eq(dfm_generator_create_factorized(&g, p, DFM_PARAM_RATES, NULL), 0);
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_EULER, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_steps(s, NSTEPS), 0);
    dfm_generator_free(g);
    dfm_path_free(p);
    return s;
}

static dfm_sampler *sde_sampler(void)
{
    dfm_path *p = affine_path(2);
    dfm_generator *g;
    dfm_sampler *s;
    ck_assert_int_eq(dfm_generator_create_diffusion(&g, p, DFM_PARAM_VELOCITY, 0.5, NULL), 0);
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_EULER_MARUYAMA, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_steps(s, NSTEPS), 0);
    dfm_generator_free(g);
    dfm_path_free(p);
    return s;
}

static dfm_sampler *ds_exact_chunked(void)
{
    dfm_sampler *s = ds_sampler(DFM_METHOD_EXACT);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_DS_CHUNK_ROWS, 1), 0);
    return s;
}

/* Sampler kinds with: the value a valid output holds, an entry of row 1 the sampler validates
 * and marks (the discrete sampler, and guidance on a discrete space, mark the first and last
 * logit of each token), whether the space is continuous. */
static const struct {
    maker make;
    float value;
    size_t skip;
    int reals;
    const char *name;
} wkinds[] = {
    {mk_ds, 0.0f, 2 * V + V - 1, 0, "discrete euler"},
    {ds_exact_chunked, 0.0f, 2 * V + V - 1, 0, "discrete exact, one row per call"},
    {ds_rates_sampler, 0.5f, 2 * V + 0, 0, "discrete rates"},
    {mk_cs, 0.0f, 1, 1, "ode rk4"},
    {mk_dopri, 0.0f, 1, 1, "ode dopri5"},
    {sde_sampler, 0.0f, 1, 1, "sde"},
    {mk_ct, 0.5f, 8, 0, "rate matrix"},
    {mk_gm, 0.0f, 2 * V + V - 1, 0, "guidance"},
};
#define N_WKINDS ((int)(sizeof wkinds / sizeof wkinds[0]))

static int run_writer(dfm_sampler *s, int k, wctx2 *w, int32_t *tok, float *re)
{
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = writer_model;
    a.model_data = w;
    a.rows = 2;
    if (wkinds[k].reals) a.reals = re; else a.tokens = tok;
    return dfm_sampler_run(s, &a);
}

START_TEST(test_unwritten_output)
{
    static const struct { enum wmode mode; const char *needle; } cases[] = {
        {W_NOTHING, "model callback wrote nothing"},
        {W_ROW0_ONLY, "model callback wrote nothing for row 1"},
        {W_SKIP_ONE, "wrote only part of row 1: out[row 1][entry "},
        {W_NAN, NULL},
    };
    for (size_t q = 0; q < sizeof cases / sizeof cases[0]; q++) {
        dfm_sampler *s = wkinds[_i].make();
        int32_t tok[2 * D] = {1, 1, 1, 1, 1, 1};
        float re[4] = {0.25f, 0.5f, 0.75f, 1.0f};
        wctx2 w = {cases[q].mode, wkinds[_i].skip, wkinds[_i].value};
        int st = run_writer(s, _i, &w, tok, re);
        const char *msg = dfm_sampler_last_error(s);
        ck_assert_msg(st == DFM_ENUMERIC, "%s, case %zu: status %d (%s)", wkinds[_i].name, q, st,
                      msg);
        if (cases[q].needle) {
            assert_msg(msg, cases[q].needle);
            if (cases[q].mode == W_SKIP_ONE) {
                char e[32];
                snprintf(e, sizeof e, "[entry %zu]", wkinds[_i].skip);
                assert_msg(msg, e);
            }
        } else {
            ck_assert_msg(!strstr(msg, "wrote"), "%s: a NaN the model wrote is reported as "
                          "unwritten: %s", wkinds[_i].name, msg);
        }
        for (int j = 0; j < 2 * D; j++) ck_assert_int_eq(tok[j], 1);
        ck_assert(re[0] == 0.25f && re[1] == 0.5f && re[2] == 0.75f && re[3] == 1.0f);
        /* the same sampler with a model that writes everything succeeds */
        w.mode = W_ALL;
        ck_assert_int_eq(run_writer(s, _i, &w, tok, re), 0);
        memcpy(tok, (int32_t[]){1, 1, 1, 1, 1, 1}, sizeof tok);
        memcpy(re, (float[]){0.25f, 0.5f, 0.75f, 1.0f}, sizeof re);
        dfm_sampler_free(s);
    }
}
END_TEST

START_TEST(test_unwritten_log_likelihood)
{
    dfm_sampler *s = cs_sampler(DFM_METHOD_MIDPOINT);
    wctx2 w = {W_NOTHING, 0, 0.0f};
    float x1[4] = {0.5f, -0.5f, 1.0f, 0.0f};
    double lp[2] = {123.0, 123.0};
    dfm_loglik_args la = loglik_args(writer_model, &w, 2, x1, 2, lp);
    ck_assert_int_eq(dfm_sampler_log_likelihood(s, &la), DFM_ENUMERIC);
    assert_msg(dfm_sampler_last_error(s), "model callback wrote nothing");
    ck_assert(lp[0] == 123.0 && lp[1] == 123.0);
    w.mode = W_SKIP_ONE;
    w.skip = 1;
    ck_assert_int_eq(dfm_sampler_log_likelihood(s, &la), DFM_ENUMERIC);
    assert_msg(dfm_sampler_last_error(s), "out[row 1][entry 1]");
    ck_assert(lp[0] == 123.0 && lp[1] == 123.0);
    dfm_sampler_free(s);
}
END_TEST

START_TEST(test_unwritten_elbo)
{
    dfm_path *p = mixture_path(DFM_SOURCE_MASK);
    dfm_loss *l;
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
    wctx2 w = {W_NOTHING, 0, 0.0f};
    int32_t x1[2 * D] = {0, 1, 2, 2, 1, 0};
    double nelbo[2] = {-1.0, -1.0};
    dfm_elbo_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = 2;
    a.x1_tokens = x1;
    a.n_t = 2;
    a.model = writer_model;
    a.user_data = &w;
    a.nelbo = nelbo;
    ck_assert_int_eq(dfm_loss_discrete_elbo(l, &a), DFM_ENUMERIC);
    assert_msg(dfm_loss_last_error(l), "model callback wrote nothing");
    ck_assert(nelbo[0] == -1.0 && nelbo[1] == -1.0);
    w.mode = W_ALL;
    ck_assert_int_eq(dfm_loss_discrete_elbo(l, &a), 0);
    dfm_loss_free(l);
    dfm_path_free(p);
}
END_TEST

/* The trainer's forward callback: its output goes to the loss, which names what is missing. */
START_TEST(test_unwritten_forward)
{
    static const char *needles[] = {"wrote nothing: its whole output",
                                    "wrote nothing for row 1", "out[row 1][entry 1]"};
    dfm_path *p = affine_path(2);
    dfm_generator *g;
    dfm_loss *l;
    ck_assert_int_eq(dfm_generator_create_velocity(&g, p, DFM_PARAM_VELOCITY, NULL), 0);
    ck_assert_int_eq(dfm_loss_create_mse(&l, g, NULL), 0);
    dfm_trainer *tr;
    ck_assert_int_eq(dfm_trainer_create(&tr, p, l, NULL), 0);
    for (int m = 0; m < 3; m++) {
        wctx2 w = {(enum wmode)(W_NOTHING + m), 1, 0.0f};
        float x1[4] = {1, 2, 3, 4};
        double loss = -3.0;
        dfm_train_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.rows = 2;
        a.x1_reals = x1;
        a.forward = writer_model;
        a.user_data = &w;
        a.loss = &loss;
        ck_assert_int_eq(dfm_trainer_step(tr, &a), DFM_ENUMERIC);
        assert_msg(dfm_trainer_last_error(tr), needles[m]);
        ck_assert(loss == -3.0);
        ck_assert_int_eq(dfm_trainer_step_count(tr), 0);
    }
    dfm_trainer_free(tr);
    dfm_loss_free(l);
    dfm_generator_free(g);
    dfm_path_free(p);
}
END_TEST

/* ---- 3. creation errors carry a reason: dfm_last_error ---- */

START_TEST(test_last_error_creators)
{
    dfm_space *sp = (dfm_space *)&sp; /* not NULL: the creator must reset it */
    ck_assert_int_eq(dfm_space_create_discrete(&sp, 1, 8, NULL), DFM_EINVAL);
    ck_assert_ptr_null(sp);
    assert_msg(dfm_last_error(), "dfm_space_create_discrete");
    assert_msg(dfm_last_error(), "vocab must be in [2, ");
    assert_msg(dfm_last_error(), "got 1");

    /* a sampler method the generator does not offer */
    dfm_path *p = mixture_path(DFM_SOURCE_MASK);
    dfm_generator *g;
    dfm_sampler *s = (dfm_sampler *)&s;
    ck_assert_int_eq(dfm_generator_create_factorized(&g, p, DFM_PARAM_LOGITS, NULL), 0);
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_MIDPOINT, NULL), DFM_EUNSUPPORTED);
    ck_assert_ptr_null(s);
    assert_msg(dfm_last_error(), "no method 3 (DFM_METHOD_MIDPOINT)");
    assert_msg(dfm_last_error(), "offers DFM_METHOD_EXACT, DFM_METHOD_EULER");
    dfm_generator_free(g);

    /* a custom p0 summing to 1.5 */
    dfm_space *d4;
    dfm_scheduler *sc;
    dfm_path *q = (dfm_path *)&q;
    const double p0[V] = {0.5, 0.5, 0.25, 0.25};
    ck_assert_int_eq(dfm_space_create_discrete(&d4, V, D, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_condot(&sc, NULL), 0);
    ck_assert_int_eq(dfm_path_create_mixture(&q, d4, sc, DFM_SOURCE_CUSTOM, 0, p0, NULL),
                     DFM_EINVAL);
    ck_assert_ptr_null(q);
    assert_msg(dfm_last_error(), "p0 sums to 1.5");
    ck_assert(p0[0] == 0.5 && p0[3] == 0.25);

    /* dfm_time_sample with eps = 1 */
    double t[3] = {7, 7, 7};
    ck_assert_int_eq(dfm_time_sample(0, 0, DFM_TIME_UNIFORM, 0, 0, 1.0, 0, 3, t), DFM_EINVAL);
    assert_msg(dfm_last_error(), "eps must be in [0, 1), got 1");
    ck_assert(t[0] == 7 && t[1] == 7 && t[2] == 7);

    /* a half-set allocator, a NULL handle, a metric path with an invalid distance */
    dfm_scheduler_free(sc);
    dfm_allocator half = {NULL, NULL, NULL};
    ck_assert_int_eq(dfm_scheduler_create_cosine(&sc, &half), DFM_EINVAL);
    assert_msg(dfm_last_error(), "allocator needs both alloc and free");
    ck_assert_ptr_null(sc);
    ck_assert_int_eq(dfm_sampler_run(NULL, NULL), DFM_EINVAL);
    assert_msg(dfm_last_error(), "dfm_sampler_run: s is NULL");
    dfm_scheduler_create_condot(&sc, NULL);
    double dist[V * V];
    for (int x = 0; x < V; x++)
        for (int y = 0; y < V; y++) dist[x * V + y] = x == y ? 0.0 : 1.0;
    dist[1 * V + 2] = -1.0;
    ck_assert_int_eq(dfm_path_create_metric(&q, d4, sc, 1.0, dist, NULL, NULL, NULL), DFM_EINVAL);
    assert_msg(dfm_last_error(), "d(1, 2) = -1");
    dfm_scheduler_free(sc);
    dfm_space_free(d4);
    dfm_path_free(p);
}
END_TEST

START_TEST(test_last_error_rules)
{
    /* handle calls set it too, to the handle's own message */
    dfm_sampler *s = ds_sampler(DFM_METHOD_EXACT);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 0), DFM_EINVAL);
    ck_assert_str_eq(dfm_last_error(), dfm_sampler_last_error(s));
    assert_msg(dfm_last_error(), "n_steps must be in [1, 2^31)");
    /* successful calls leave it unchanged */
    ck_assert_int_eq(dfm_sampler_set_steps(s, 4), 0);
    ck_assert_str_eq(dfm_sampler_last_error(s), "");
    assert_msg(dfm_last_error(), "n_steps must be in [1, 2^31)");
    /* getters on const handles have no message buffer: dfm_last_error holds it */
    int64_t v = 42;
    ck_assert_int_eq(dfm_sampler_get_int(s, 12345, &v), DFM_EINVAL);
    assert_msg(dfm_last_error(), "dfm_sampler_get_int: unknown sampler option 12345");
    ck_assert_int_eq(v, 42);
    ck_assert_int_eq(dfm_sampler_get_stat(s, 99, &v), DFM_EINVAL);
    assert_msg(dfm_last_error(), "unknown statistic 99");
    dfm_sampler_free(s);
}
END_TEST

/* The message is per thread: a failure on one thread does not change another's. */
typedef struct tl_ctx {
    pthread_barrier_t *bar;
    int32_t vocab;
    char seen[DFM_ERROR_MAX];
} tl_ctx;

static void *tl_thread(void *arg)
{
    tl_ctx *c = (tl_ctx *)arg;
    dfm_space *sp;
    dfm_space_create_discrete(&sp, c->vocab, 1, NULL); /* fails, naming its vocab */
    pthread_barrier_wait(c->bar); /* both have failed */
    pthread_barrier_wait(c->bar);
    snprintf(c->seen, sizeof c->seen, "%s", dfm_last_error());
    return NULL;
}

START_TEST(test_last_error_per_thread)
{
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 2);
    tl_ctx a = {&bar, 1, ""}, b = {&bar, -5, ""};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, tl_thread, &b), 0);
    tl_thread(&a);
    pthread_join(th, NULL);
    pthread_barrier_destroy(&bar);
    assert_msg(a.seen, "got 1");
    assert_msg(b.seen, "got -5");
    ck_assert_ptr_null(strstr(a.seen, "got -5"));
}
END_TEST

/* ---- 4. options of the wrong type ---- */

START_TEST(test_option_types)
{
    dfm_sampler *s = ds_sampler(DFM_METHOD_EXACT);
    double x = -1.0;
    int64_t v = -1;
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_DS_TEMPERATURE, 2), DFM_EINVAL);
    assert_msg(dfm_sampler_last_error(s), "option 150 is a double option of this sampler: use "
               "dfm_sampler_set_double");
    ck_assert_int_eq(dfm_sampler_get_double(s, DFM_OPT_DS_TEMPERATURE, &x), 0);
    ck_assert(x == 1.0);
    ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_THREADS, 2.0), DFM_EINVAL);
    assert_msg(dfm_sampler_last_error(s), "option 1 is an integer option of this sampler");
    ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_DS_PURITY, 1.0), DFM_EINVAL);
    assert_msg(dfm_sampler_last_error(s), "option 153 is an integer option");
    ck_assert_int_eq(dfm_sampler_get_int(s, DFM_OPT_DS_CORRECTOR, &v), DFM_EINVAL);
    assert_msg(dfm_last_error(), "option 151 is a double option of this sampler: use "
               "dfm_sampler_get_double");
    ck_assert_int_eq(v, -1);
    ck_assert_int_eq(dfm_sampler_set_int(s, 12345, 1), DFM_EINVAL);
    assert_msg(dfm_sampler_last_error(s), "unknown sampler option 12345");
    dfm_sampler_free(s);

    dfm_path *p = mixture_path(DFM_SOURCE_MASK);
    dfm_loss *l;
    ck_assert_int_eq(dfm_loss_create_cross_entropy(&l, p, 0, NULL), 0);
    ck_assert_int_eq(dfm_loss_set_double(l, DFM_OPT_REDUCTION, 1.0), DFM_EINVAL);
    assert_msg(dfm_loss_last_error(l), "option 3 is an integer option of this loss");
    dfm_loss_free(l);
    dfm_path_free(p);

    dfm_path *ap = affine_path(2);
    dfm_generator *g;
    ck_assert_int_eq(dfm_generator_create_diffusion(&g, ap, DFM_PARAM_VELOCITY, 1.0, NULL), 0);
    ck_assert_int_eq(dfm_generator_set_int(g, DFM_OPT_DIFFUSION_G, 2), DFM_EINVAL);
    assert_msg(dfm_generator_last_error(g), "option 304 is a double option of this generator");
    dfm_loss *ml;
    ck_assert_int_eq(dfm_loss_create_mse(&ml, g, NULL), 0);
    dfm_trainer *tr;
    ck_assert_int_eq(dfm_trainer_create(&tr, ap, ml, NULL), 0);
    ck_assert_int_eq(dfm_trainer_set_int(tr, DFM_OPT_GM_TIME_EPS, 0), DFM_EINVAL);
    assert_msg(dfm_trainer_last_error(tr), "option 401 is a double option of this trainer");
    ck_assert_int_eq(dfm_trainer_set_double(tr, DFM_OPT_GM_TIME_KIND, 1.0), DFM_EINVAL);
    assert_msg(dfm_trainer_last_error(tr), "option 400 is an integer option of this trainer");
    dfm_trainer_free(tr);
    dfm_loss_free(ml);
    dfm_generator_free(g);
    dfm_path_free(ap);
}
END_TEST

/* ---- 5. sizes: overflow before any loop, refused allocations say what and how much ---- */

/* An allocator that refuses blocks above 256 MiB: a huge request fails cleanly, as it would on
 * a machine without that much memory, and nothing is allocated for real. */
static void *cap_alloc(size_t n, void *op)
{
    (void)op;
    return n > ((size_t)256 << 20) ? NULL : malloc(n);
}
static void cap_free(void *p, void *op)
{
    (void)op;
    free(p);
}
static const dfm_allocator capped = {cap_alloc, cap_free, NULL};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int never_model(const dfm_model_io *io, void *ud)
{
    (void)io;
    (void)ud;
    return 5; /* reached only when the allocations went through */
}

#define HUGE_ROWS (SIZE_MAX / 8)

/* Every kind of sampler run: rows x row size overflows, detected before the tokens are read. */
START_TEST(test_size_overflow_samplers)
{
    for (int k = 0; k < 5; k++) {
        dfm_sampler *s = makers[k]();
        int32_t tok[2 * D] = {1, 1, 1, 1, 1, 1};
        float re[4] = {9, 9, 9, 9};
        dfm_run_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.model = never_model;
        a.rows = HUGE_ROWS;
        if (k == 1 || k == 2) a.reals = re; else a.tokens = tok;
        double t0 = now_s();
        int st = dfm_sampler_run(s, &a);
        ck_assert_msg(st == DFM_EOVERFLOW, "kind %d: %d (%s)", k, st, dfm_sampler_last_error(s));
        ck_assert(now_s() - t0 < 1.0);
        assert_msg(dfm_sampler_last_error(s), "overflows");
        assert_msg(dfm_sampler_last_error(s), "rows = ");
        ck_assert_str_eq(dfm_last_error(), dfm_sampler_last_error(s));
        for (int j = 0; j < 2 * D; j++) ck_assert_int_eq(tok[j], 1);
        for (int j = 0; j < 4; j++) ck_assert(re[j] == 9.0f);
        dfm_sampler_free(s);
    }
}
END_TEST

/* The case: rows = SIZE_MAX / 160 + 1 with draw_source spun in the token check for
 * minutes. It overflows the row budget (160 bytes per row of 3 tokens); a smaller count that
 * does not fails at once on its first (refused) allocation, which the message sizes. */
START_TEST(test_size_draw_source_fast)
{
    const size_t counts[2] = {SIZE_MAX / 160 + 1, SIZE_MAX / 400};
    for (int k = 0; k < 2; k++) {
        dfm_sampler *s = ds_sampler(DFM_METHOD_EXACT);
        int32_t tok[2 * D] = {1, 1, 1, 1, 1, 1};
        dfm_run_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.model = never_model;
        a.rows = counts[k];
        a.tokens = tok;
        a.draw_source = 1;
        double t0 = now_s();
        int st = dfm_sampler_run(s, &a);
        ck_assert_msg(now_s() - t0 < 1.0, "took %g s", now_s() - t0);
        const char *msg = dfm_sampler_last_error(s);
        char want[64];
        if (k == 0) {
            ck_assert_msg(st == DFM_EOVERFLOW, "%d (%s)", st, msg);
            snprintf(want, sizeof want, "rows = %zu overflows", counts[k]);
        } else {
            ck_assert_msg(st == DFM_ENOMEM, "%d (%s)", st, msg);
            assert_msg(msg, "cannot allocate ");
            assert_msg(msg, " bytes of ");
            snprintf(want, sizeof want, "for %zu rows", counts[k]);
        }
        assert_msg(msg, want);
        for (int j = 0; j < 2 * D; j++) ck_assert_int_eq(tok[j], 1);
        dfm_sampler_free(s);
    }
}
END_TEST

/* The other entry points over rows. */
START_TEST(test_size_overflow_calls)
{
    /* path sample: mixture and affine */
    dfm_path *mp = mixture_path(DFM_SOURCE_MASK), *ap = affine_path(2);
    double t[2] = {0.5, 0.5};
    int32_t x1[2 * D] = {0, 1, 2, 0, 1, 2}, xt[2 * D] = {9, 9, 9, 9, 9, 9};
    float r1[4] = {1, 2, 3, 4}, rt[4] = {9, 9, 9, 9};
    dfm_path_sample_args pa = tu_sample_args(HUGE_ROWS, t, x1, xt);
    ck_assert_int_eq(dfm_path_sample(mp, &pa), DFM_EOVERFLOW);
    assert_msg(dfm_path_last_error(mp), "overflows");
    pa.x1_tokens = NULL;
    pa.xt_tokens = NULL;
    pa.x1_reals = r1;
    pa.xt_reals = rt;
    ck_assert_int_eq(dfm_path_sample(ap, &pa), DFM_EOVERFLOW);
    assert_msg(dfm_path_last_error(ap), "overflows");

    /* loss eval: generalized KL and MSE */
    dfm_loss *gkl, *mse;
    dfm_generator *vg;
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&gkl, mp, NULL), 0);
    ck_assert_int_eq(dfm_generator_create_velocity(&vg, ap, DFM_PARAM_VELOCITY, NULL), 0);
    ck_assert_int_eq(dfm_loss_create_mse(&mse, vg, NULL), 0);
    float out[2 * D * V] = {0}, grad[2 * D * V];
    for (int j = 0; j < 2 * D * V; j++) grad[j] = 5.0f;
    double loss = -7.0;
    dfm_loss_args la = tu_loss_args(HUGE_ROWS, t, x1, x1, out, grad, NULL, &loss);
    ck_assert_int_eq(dfm_loss_eval(gkl, &la), DFM_EOVERFLOW);
    assert_msg(dfm_loss_last_error(gkl), "overflows");
    la.x1_tokens = la.xt_tokens = NULL;
    la.x0_reals = r1;
    la.x1_reals = r1;
    la.xt_reals = r1;
    ck_assert_int_eq(dfm_loss_eval(mse, &la), DFM_EOVERFLOW);
    assert_msg(dfm_loss_last_error(mse), "overflows");
    ck_assert(loss == -7.0);
    for (int j = 0; j < 2 * D * V; j++) ck_assert(grad[j] == 5.0f);

    /* ELBO */
    double nelbo[2] = {-1, -1};
    dfm_elbo_args ea;
    memset(&ea, 0, sizeof ea);
    ea.struct_size = sizeof ea;
    ea.rows = HUGE_ROWS;
    ea.x1_tokens = x1;
    ea.n_t = 1;
    ea.model = never_model;
    ea.nelbo = nelbo;
    ck_assert_int_eq(dfm_loss_discrete_elbo(gkl, &ea), DFM_EOVERFLOW);
    assert_msg(dfm_loss_last_error(gkl), "overflows");
    ck_assert(nelbo[0] == -1 && nelbo[1] == -1);

    /* mixture rates */
    dfm_generator *fg;
    ck_assert_int_eq(dfm_generator_create_factorized(&fg, mp, DFM_PARAM_LOGITS, NULL), 0);
    ck_assert_int_eq(dfm_mixture_rates(fg, HUGE_ROWS, t, x1, out, grad), DFM_EOVERFLOW);
    assert_msg(dfm_generator_last_error(fg), "overflows");
    for (int j = 0; j < 2 * D * V; j++) ck_assert(grad[j] == 5.0f);

    /* trainer step */
    dfm_trainer *tr;
    ck_assert_int_eq(dfm_trainer_create(&tr, ap, mse, NULL), 0);
    dfm_train_args ta;
    memset(&ta, 0, sizeof ta);
    ta.struct_size = sizeof ta;
    ta.rows = HUGE_ROWS;
    ta.x1_reals = r1;
    ta.forward = never_model;
    ta.loss = &loss;
    ck_assert_int_eq(dfm_trainer_step(tr, &ta), DFM_EOVERFLOW);
    assert_msg(dfm_trainer_last_error(tr), "overflows");
    ck_assert_int_eq(dfm_trainer_step_count(tr), 0);

    /* flatten / unflatten of a finite space */
    dfm_space *fs;
    ck_assert_int_eq(dfm_space_create_discrete(&fs, 3, 2, NULL), 0);
    int32_t states[2] = {-5, -5};
    ck_assert_int_eq(dfm_ctmc_flatten(fs, x1, SIZE_MAX / 4, states), DFM_EOVERFLOW);
    assert_msg(dfm_last_error(), "dfm_ctmc_flatten: rows = ");
    ck_assert_int_eq(dfm_ctmc_unflatten(fs, states, SIZE_MAX / 4, xt), DFM_EOVERFLOW);
    assert_msg(dfm_last_error(), "overflows");
    ck_assert(states[0] == -5 && states[1] == -5);
    ck_assert_int_eq(dfm_ctmc_flatten(fs, x1, 2, x1 + 1), DFM_EINVAL);
    assert_msg(dfm_last_error(), "states overlaps tokens");
    dfm_space_free(fs);

    /* log-likelihood */
    dfm_sampler *s = cs_sampler(DFM_METHOD_RK4);
    double lp[2] = {123, 123};
    dfm_loglik_args ll;
    memset(&ll, 0, sizeof ll);
    ll.struct_size = sizeof ll;
    ll.model = never_model;
    ll.rows = (size_t)1 << 50;
    ll.x1 = r1;
    ll.n_probes = 1;
    ll.logp = lp;
    ck_assert_int_eq(dfm_sampler_log_likelihood(s, &ll), DFM_EOVERFLOW);
    assert_msg(dfm_sampler_last_error(s), "overflows");
    ck_assert(lp[0] == 123 && lp[1] == 123);

    for (int j = 0; j < 2 * D; j++) ck_assert_int_eq(xt[j], 9);
    for (int j = 0; j < 4; j++) ck_assert(rt[j] == 9.0f);
    dfm_sampler_free(s);
    dfm_trainer_free(tr);
    dfm_generator_free(fg);
    dfm_loss_free(mse);
    dfm_loss_free(gkl);
    dfm_generator_free(vg);
    dfm_path_free(ap);
    dfm_path_free(mp);
}
END_TEST

/* A large vocabulary: the model output of the whole batch (512 rows x 256 tokens x 1024 logits,
 * 512 MiB) is refused; the message gives the bytes and the option that lowers them, and with
 * that option lowered the run gets past its allocations (to the model, which fails on purpose). */
enum { BV = 1024, BD = 256, BROWS = 512 };

static dfm_path *big_path(void)
{
    dfm_space *sp;
    dfm_scheduler *sc;
    dfm_path *p;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, BV, BD, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_condot(&sc, NULL), 0);
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, sc, DFM_SOURCE_MASK, BV - 1, NULL, NULL), 0);
    dfm_space_free(sp);
    dfm_scheduler_free(sc);
    return p;
}

START_TEST(test_size_nomem_message)
{
    dfm_path *p = big_path();
    dfm_generator *g;
    dfm_sampler *s;
    ck_assert_int_eq(dfm_generator_create_factorized(&g, p, DFM_PARAM_LOGITS, NULL), 0);
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_EULER, &capped), 0);
    int32_t *tok = (int32_t *)malloc(BROWS * BD * sizeof(int32_t));
    for (int j = 0; j < BROWS * BD; j++) tok[j] = 7;
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = never_model;
    a.rows = BROWS;
    a.tokens = tok;
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ENOMEM);
    char want[160];
    snprintf(want, sizeof want, "cannot allocate %zu bytes of model output for %d rows; lower "
             "DFM_OPT_DS_CHUNK_ROWS", (size_t)BROWS * BD * BV * sizeof(float), BROWS);
    assert_msg(dfm_sampler_last_error(s), want);
    ck_assert_str_eq(dfm_last_error(), dfm_sampler_last_error(s));
    for (int j = 0; j < BROWS * BD; j++) ck_assert_int_eq(tok[j], 7);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_DS_CHUNK_ROWS, 64), 0);
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ECALLBACK);
    for (int j = 0; j < BROWS * BD; j++) ck_assert_int_eq(tok[j], 7);

    /* the ELBO: its logits for chunk_rows rows */
    dfm_loss *l;
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, &capped), 0);
    double nelbo[BROWS];
    for (int r = 0; r < BROWS; r++) nelbo[r] = -1.0;
    dfm_elbo_args ea;
    memset(&ea, 0, sizeof ea);
    ea.struct_size = sizeof ea;
    ea.rows = BROWS;
    ea.x1_tokens = tok;
    ea.n_t = 1;
    ea.model = never_model;
    ea.nelbo = nelbo;
    ck_assert_int_eq(dfm_loss_discrete_elbo(l, &ea), DFM_ENOMEM);
    snprintf(want, sizeof want, "cannot allocate %zu bytes of ELBO scratch for %d rows; lower "
             "args->chunk_rows", (size_t)BROWS * BD * BV * sizeof(float), BROWS);
    assert_msg(dfm_loss_last_error(l), want);
    for (int r = 0; r < BROWS; r++) ck_assert(nelbo[r] == -1.0);
    ea.chunk_rows = 64;
    ck_assert_int_eq(dfm_loss_discrete_elbo(l, &ea), DFM_ECALLBACK);
    free(tok);
    dfm_loss_free(l);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    dfm_path_free(p);
}
END_TEST

/* ---- 6. consistency: unused members, mask tokens in data, overlapping outputs ---- */

START_TEST(test_other_modality_null)
{
    dfm_path *mp = mixture_path(DFM_SOURCE_MASK), *ap = affine_path(2);
    double t[2] = {0.5, 0.5};
    int32_t x1[2 * D] = {0, 1, 2, 0, 1, 2}, xt[2 * D] = {9, 9, 9, 9, 9, 9};
    float r1[4] = {1, 2, 3, 4}, rt[4] = {9, 9, 9, 9};
    dfm_path_sample_args pa = tu_sample_args(2, t, x1, xt);
    pa.x1_reals = r1; /* a discrete path was silently ignoring it */
    ck_assert_int_eq(dfm_path_sample(mp, &pa), DFM_EINVAL);
    assert_msg(dfm_path_last_error(mp), "args->x1_reals must be NULL: the space has no reals");
    for (int j = 0; j < 2 * D; j++) ck_assert_int_eq(xt[j], 9);
    pa.x1_reals = NULL;
    ck_assert_int_eq(dfm_path_sample(mp, &pa), 0);

    memset(&pa, 0, sizeof pa);
    pa.struct_size = sizeof pa;
    pa.rows = 2;
    pa.t = t;
    pa.x1_reals = r1;
    pa.xt_reals = rt;
    pa.x0_tokens = x1;
    ck_assert_int_eq(dfm_path_sample(ap, &pa), DFM_EINVAL);
    assert_msg(dfm_path_last_error(ap), "args->x0_tokens must be NULL: the space has no tokens");
    for (int j = 0; j < 4; j++) ck_assert(rt[j] == 9.0f);

    /* losses */
    dfm_loss *gkl, *ce, *mse;
    dfm_generator *vg;
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&gkl, mp, NULL), 0);
    ck_assert_int_eq(dfm_loss_create_cross_entropy(&ce, mp, 0, NULL), 0);
    ck_assert_int_eq(dfm_generator_create_velocity(&vg, ap, DFM_PARAM_VELOCITY, NULL), 0);
    ck_assert_int_eq(dfm_loss_create_mse(&mse, vg, NULL), 0);
    float out[2 * D * V] = {0}, grad[2 * D * V];
    for (int j = 0; j < 2 * D * V; j++) grad[j] = 5.0f;
    double loss = -7.0;
    dfm_loss_args la = tu_loss_args(2, t, x1, x1, out, grad, NULL, &loss);
    la.x1_reals = r1;
    ck_assert_int_eq(dfm_loss_eval(gkl, &la), DFM_EINVAL);
    assert_msg(dfm_loss_last_error(gkl), "args->x1_reals must be NULL");
    ck_assert_int_eq(dfm_loss_eval(ce, &la), DFM_EINVAL);
    assert_msg(dfm_loss_last_error(ce), "args->x1_reals must be NULL");
    la.x1_reals = NULL;
    la.x0_reals = r1;
    la.x1_reals = r1;
    la.xt_reals = r1;
    la.x1_tokens = NULL;
    la.fixed = (const uint8_t *)x1;
    ck_assert_int_eq(dfm_loss_eval(mse, &la), DFM_EINVAL);
    assert_msg(dfm_loss_last_error(mse), "args->xt_tokens must be NULL: the space has no tokens");
    ck_assert(loss == -7.0);
    for (int j = 0; j < 2 * D * V; j++) ck_assert(grad[j] == 5.0f);

    /* trainer */
    dfm_trainer *tr;
    ck_assert_int_eq(dfm_trainer_create(&tr, ap, mse, NULL), 0);
    dfm_train_args ta;
    memset(&ta, 0, sizeof ta);
    ta.struct_size = sizeof ta;
    ta.rows = 2;
    ta.x1_reals = r1;
    ta.x1_tokens = x1;
    ta.forward = never_model;
    ta.loss = &loss;
    ck_assert_int_eq(dfm_trainer_step(tr, &ta), DFM_EINVAL);
    assert_msg(dfm_trainer_last_error(tr), "args->x1_tokens must be NULL: the space has no tokens");
    ck_assert_int_eq(dfm_trainer_step_count(tr), 0);
    ck_assert(loss == -7.0);

    /* a uniform (or mask) source has no p0 */
    dfm_space *sp;
    dfm_scheduler *sc;
    dfm_path *q = (dfm_path *)&q;
    const double p0[V] = {0.25, 0.25, 0.25, 0.25};
    ck_assert_int_eq(dfm_space_create_discrete(&sp, V, D, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_condot(&sc, NULL), 0);
    ck_assert_int_eq(dfm_path_create_mixture(&q, sp, sc, DFM_SOURCE_UNIFORM, 0, p0, NULL),
                     DFM_EINVAL);
    ck_assert_ptr_null(q);
    assert_msg(dfm_last_error(), "p0");
    dfm_scheduler_free(sc);
    dfm_space_free(sp);

    dfm_trainer_free(tr);
    dfm_loss_free(mse);
    dfm_loss_free(ce);
    dfm_loss_free(gkl);
    dfm_generator_free(vg);
    dfm_path_free(ap);
    dfm_path_free(mp);
}
END_TEST

static int zero_model(const dfm_model_io *io, void *ud)
{
    (void)ud;
    fill_out(io, 0.0f);
    return 0;
}

/* Data holding the mask token of a mask-source path has no target: every loss refuses it. */
START_TEST(test_mask_token_in_data)
{
    dfm_path *mp = mixture_path(DFM_SOURCE_MASK);
    dfm_loss *gkl, *ce;
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&gkl, mp, NULL), 0);
    ck_assert_int_eq(dfm_loss_create_cross_entropy(&ce, mp, 0, NULL), 0);
    double t[2] = {0.5, 0.5}, loss = -7.0;
    int32_t x1[2 * D] = {0, 1, 2, 0, 1, V - 1}, xt[2 * D] = {0, 3, 3, 3, 3, 3};
    float out[2 * D * V] = {0}, grad[2 * D * V];
    for (int j = 0; j < 2 * D * V; j++) grad[j] = 5.0f;
    dfm_loss_args la = tu_loss_args(2, t, x1, xt, out, grad, NULL, &loss);
    dfm_loss *ls[2] = {gkl, ce};
    for (int k = 0; k < 2; k++) {
        ck_assert_int_eq(dfm_loss_eval(ls[k], &la), DFM_ERANGE);
        assert_msg(dfm_loss_last_error(ls[k]), "x1_tokens[row 1][coord 2] = 3 is the mask token");
        ck_assert(loss == -7.0);
        for (int j = 0; j < 2 * D * V; j++) ck_assert(grad[j] == 5.0f);
    }
    x1[5] = 2;
    ck_assert_int_eq(dfm_loss_eval(gkl, &la), 0);
    x1[5] = V - 1;
    loss = -7.0;

    double nelbo[2] = {-1, -1};
    dfm_elbo_args ea;
    memset(&ea, 0, sizeof ea);
    ea.struct_size = sizeof ea;
    ea.rows = 2;
    ea.x1_tokens = x1;
    ea.n_t = 1;
    ea.model = zero_model;
    ea.nelbo = nelbo;
    ck_assert_int_eq(dfm_loss_discrete_elbo(gkl, &ea), DFM_ERANGE);
    assert_msg(dfm_loss_last_error(gkl), "x1_tokens[row 1][coord 2] = 3 is the mask token");
    ck_assert(nelbo[0] == -1 && nelbo[1] == -1);

    /* a product of the mask path (generalized KL) and an affine path (MSE), through a trainer */
    dfm_path *ap = affine_path(2), *pp;
    const dfm_path *parts[2] = {mp, ap};
    ck_assert_int_eq(dfm_path_create_product(&pp, parts, 2, NULL), 0);
    dfm_generator *vg;
    dfm_loss *mse, *lp;
    ck_assert_int_eq(dfm_generator_create_velocity(&vg, ap, DFM_PARAM_VELOCITY, NULL), 0);
    ck_assert_int_eq(dfm_loss_create_mse(&mse, vg, NULL), 0);
    const dfm_loss *pl[2] = {gkl, mse};
    ck_assert_int_eq(dfm_loss_create_product(&lp, pp, pl, NULL, 2, NULL), 0);
    dfm_trainer *tr;
    ck_assert_int_eq(dfm_trainer_create(&tr, pp, lp, NULL), 0);
    float r1[4] = {1, 2, 3, 4};
    dfm_train_args ta;
    memset(&ta, 0, sizeof ta);
    ta.struct_size = sizeof ta;
    ta.rows = 2;
    ta.x1_tokens = x1;
    ta.x1_reals = r1;
    ta.forward = zero_model;
    ta.loss = &loss;
    ck_assert_int_eq(dfm_trainer_step(tr, &ta), DFM_ERANGE);
    assert_msg(dfm_trainer_last_error(tr), "x1_tokens[row 1][coord 2] = 3 is the mask token");
    ck_assert_int_eq(dfm_trainer_step_count(tr), 0);
    ck_assert(loss == -7.0);
    x1[5] = 2;
    ck_assert_int_eq(dfm_trainer_step(tr, &ta), 0);

    dfm_trainer_free(tr);
    dfm_loss_free(lp);
    dfm_loss_free(mse);
    dfm_generator_free(vg);
    dfm_path_free(pp);
    dfm_path_free(ap);
    dfm_loss_free(ce);
    dfm_loss_free(gkl);
    dfm_path_free(mp);
}
END_TEST

START_TEST(test_overlapping_outputs)
{
    /* path sample: x_t written over x1 */
    dfm_path *mp = mixture_path(DFM_SOURCE_MASK), *ap = affine_path(2);
    double t[2] = {0.5, 0.5};
    int32_t x1[2 * D] = {0, 1, 2, 0, 1, 2};
    dfm_path_sample_args pa = tu_sample_args(2, t, x1, x1 + 1);
    ck_assert_int_eq(dfm_path_sample(mp, &pa), DFM_EINVAL);
    assert_msg(dfm_path_last_error(mp), "args->xt_tokens overlaps args->x1_tokens");
    for (int j = 0; j < 2 * D; j++) ck_assert_int_eq(x1[j], j % D);
    float r[8] = {1, 2, 3, 4, 9, 9, 9, 9};
    memset(&pa, 0, sizeof pa);
    pa.struct_size = sizeof pa;
    pa.rows = 2;
    pa.t = t;
    pa.x1_reals = r;
    pa.xt_reals = r + 4;
    pa.target_reals = r + 2;
    ck_assert_int_eq(dfm_path_sample(ap, &pa), DFM_EINVAL);
    assert_msg(dfm_path_last_error(ap), "args->target_reals overlaps args->x1_reals");
    for (int j = 0; j < 4; j++) ck_assert(r[j] == (float)(j + 1) && r[4 + j] == 9.0f);

    /* loss: the gradient may replace the logits (documented), not half of them */
    dfm_loss *gkl;
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&gkl, mp, NULL), 0);
    float out[2 * D * V + 4];
    for (int j = 0; j < 2 * D * V + 4; j++) out[j] = 0.25f;
    int32_t xt[2 * D] = {0, 3, 3, 3, 1, 3};
    double loss = -7.0;
    dfm_loss_args la = tu_loss_args(2, t, x1, xt, out, out + 4, NULL, &loss);
    ck_assert_int_eq(dfm_loss_eval(gkl, &la), DFM_EINVAL);
    assert_msg(dfm_loss_last_error(gkl), "args->grad overlaps args->out");
    for (int j = 0; j < 2 * D * V + 4; j++) ck_assert(out[j] == 0.25f);
    ck_assert(loss == -7.0);
    la.grad = out;
    ck_assert_int_eq(dfm_loss_eval(gkl, &la), 0);

    /* sampler: saved states over the batch */
    dfm_sampler *s = ds_sampler(DFM_METHOD_EXACT);
    int32_t tok[3 * ROWS * D];
    init_tokens(tok, 3 * ROWS * D);
    const double st[2] = {0.5, 1.0};
    ctx c;
    memset(&c, 0, sizeof c);
    c.at_call = -1;
    dfm_run_args a = ds_args(&c, tok);
    a.save_times = st;
    a.n_save = 2;
    a.saved_tokens = tok + ROWS * D - 1;
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_EINVAL);
    assert_msg(dfm_sampler_last_error(s), "args->saved_tokens overlaps args->tokens");
    for (int j = 0; j < 3 * ROWS * D; j++) ck_assert_int_eq(tok[j], V - 1);
    ck_assert_int_eq(c.calls, 0);
    a.saved_tokens = tok + ROWS * D;
    ck_assert_int_eq(dfm_sampler_run(s, &a), 0);

    /* mixture rates may not overwrite their logits */
    dfm_generator *g;
    ck_assert_int_eq(dfm_generator_create_factorized(&g, mp, DFM_PARAM_LOGITS, NULL), 0);
    for (int j = 0; j < 2 * D * V; j++) out[j] = 0.25f;
    ck_assert_int_eq(dfm_mixture_rates(g, 2, t, xt, out, out), DFM_EINVAL);
    assert_msg(dfm_generator_last_error(g), "rates overlaps logits");
    for (int j = 0; j < 2 * D * V; j++) ck_assert(out[j] == 0.25f);

    dfm_generator_free(g);
    dfm_sampler_free(s);
    dfm_loss_free(gkl);
    dfm_path_free(ap);
    dfm_path_free(mp);
}
END_TEST

/* One format for positions: name[row R][coord C]. */
START_TEST(test_position_messages)
{
    int32_t tok[ROWS * D];
    init_tokens(tok, ROWS * D);
    tok[1 * D + 2] = 17;
    dfm_sampler *s = ds_sampler(DFM_METHOD_EXACT);
    ctx c;
    memset(&c, 0, sizeof c);
    c.at_call = -1;
    dfm_run_args a = ds_args(&c, tok);
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ERANGE);
    assert_msg(dfm_sampler_last_error(s), "tokens[row 1][coord 2] = 17");
    dfm_sampler_free(s);

    s = ct_sampler(); /* 3 states, 2 coordinates */
    int32_t ct[4] = {0, 1, 2, 5};
    a.rows = 2;
    a.tokens = ct;
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ERANGE);
    assert_msg(dfm_sampler_last_error(s), "tokens[row 1][coord 1] = 5");
    ck_assert_int_eq(ct[3], 5);
    dfm_sampler_free(s);

    dfm_path *mp = mixture_path(DFM_SOURCE_UNIFORM);
    dfm_loss *ce;
    ck_assert_int_eq(dfm_loss_create_cross_entropy(&ce, mp, 0, NULL), 0);
    double t[2] = {0.5, 0.5}, loss = -7.0;
    int32_t x1[2 * D] = {0, 1, 2, 0, -4, 2};
    float out[2 * D * V] = {0};
    dfm_loss_args la = tu_loss_args(2, t, x1, NULL, out, NULL, NULL, &loss);
    ck_assert_int_eq(dfm_loss_eval(ce, &la), DFM_ERANGE);
    assert_msg(dfm_loss_last_error(ce), "x1_tokens[row 1][coord 1] = -4");
    /* the uniform source has no mask token: every token is data */
    x1[4] = V - 1;
    ck_assert_int_eq(dfm_loss_eval(ce, &la), 0);
    out[1 * D * V + 2 * V + 1] = NAN;
    ck_assert_int_eq(dfm_loss_eval(ce, &la), DFM_ENUMERIC);
    assert_msg(dfm_loss_last_error(ce), "out[row 1][coord 2]");
    dfm_loss_free(ce);
    dfm_path_free(mp);
}
END_TEST

static Suite *misuse_suite(void)
{
    Suite *s = suite_create("misuse");
    TCase *tc = tu_tcase("reentry");
    tcase_add_loop_test(tc, test_reconfigure_inside_model, 0,
                        (int)(sizeof reconfig / sizeof reconfig[0]));
    tcase_add_test(tc, test_free_inside_model);
    tcase_add_test(tc, test_queries_inside_model);
    tcase_add_test(tc, test_nested_other_handle_stats);
    tcase_add_loop_test(tc, test_every_sampler_kind, 0, 5);
    tcase_add_test(tc, test_log_likelihood_reentry);
    tcase_add_test(tc, test_path_sample_reentry);
    tcase_add_test(tc, test_loss_eval_reentry);
    tcase_add_test(tc, test_mixture_rates_reentry);
    tcase_add_test(tc, test_elbo_reentry);
    tcase_add_test(tc, test_trainer_reentry);
    tcase_add_test(tc, test_ctmc_reentry);
    suite_add_tcase(s, tc);
    tc = tu_tcase("stop");
    tcase_add_test(tc, test_stop_before_run);
    tcase_add_test(tc, test_stop_inside_model);
    tcase_add_test(tc, test_progress_value_kept);
    tcase_add_test(tc, test_stop_from_other_thread);
    suite_add_tcase(s, tc);
    tc = tu_tcase("unwritten");
    tcase_add_loop_test(tc, test_unwritten_output, 0, N_WKINDS);
    tcase_add_test(tc, test_unwritten_log_likelihood);
    tcase_add_test(tc, test_unwritten_elbo);
    tcase_add_test(tc, test_unwritten_forward);
    suite_add_tcase(s, tc);
    tc = tu_tcase("messages");
    tcase_add_test(tc, test_last_error_creators);
    tcase_add_test(tc, test_last_error_rules);
    tcase_add_test(tc, test_last_error_per_thread);
    tcase_add_test(tc, test_option_types);
    suite_add_tcase(s, tc);
    tc = tu_tcase("sizes");
    tcase_add_test(tc, test_size_overflow_samplers);
    tcase_add_test(tc, test_size_draw_source_fast);
    tcase_add_test(tc, test_size_overflow_calls);
    tcase_add_test(tc, test_size_nomem_message);
    suite_add_tcase(s, tc);
    tc = tu_tcase("consistency");
    tcase_add_test(tc, test_other_modality_null);
    tcase_add_test(tc, test_mask_token_in_data);
    tcase_add_test(tc, test_overlapping_outputs);
    tcase_add_test(tc, test_position_messages);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(misuse_suite()) ? 1 : 0; }
