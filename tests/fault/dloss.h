/* Fault scenarios of the discrete losses (generalized KL, cross-entropy) and the discrete ELBO.
 * Included by tests/test_faults.c after discrete.h (uses fxd_path). */
#include "modcommon.h"

static int fxl_create(fx *f, int kind)
{
    FX_DECL;
    dfm_path *p = fxd_path(kind == 2 ? DFM_SOURCE_UNIFORM : DFM_SOURCE_MASK, NULL, NULL);
    dfm_loss *l;
    FX_POISON_OUT(l);
    int st = kind == 0 ? FX_CALL(f, dfm_loss_create_generalized_kl(&l, p, &f->mem))
                       : FX_CALL(f, dfm_loss_create_cross_entropy(&l, p, kind == 2, &f->mem));
    fx_check_out(f, st, l);
    if (!st) ck_assert_int_eq(dfm_loss_kind(l), kind ? DFM_LOSS_CROSS_ENTROPY : DFM_LOSS_GENERALIZED_KL);
    dfm_loss_free(l);
    dfm_path_free(p);
    return st;
}
static int sc_l_create_gkl(fx *f) { return fxl_create(f, 0); }
static int sc_l_create_ce(fx *f) { return fxl_create(f, 1); }
static int sc_l_create_ce_changed(fx *f) { return fxl_create(f, 2); }

static int sc_l_clone(fx *f)
{
    FX_DECL;
    dfm_path *p = fxd_path(DFM_SOURCE_CUSTOM, NULL, NULL);
    dfm_loss *l = NULL, *c;
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_REDUCTION, DFM_REDUCE_SUM), 0);
    FX_POISON_OUT(c);
    int st = FX_CALL(f, dfm_loss_clone(&c, l, &f->mem));
    fx_check_out(f, st, c);
    if (!st) {
        int64_t v = -1;
        ck_assert_int_eq(dfm_loss_get_int(c, DFM_OPT_REDUCTION, &v), 0);
        ck_assert_int_eq(v, DFM_REDUCE_SUM);
    }
    dfm_loss_free(c);
    dfm_loss_free(l);
    dfm_path_free(p);
    return st;
}

/* kind 0: GKL (reduce none, grad, threads), 1: CE only_changed (mean, no grad). */
static int fxl_eval(fx *f, fxm *m, int kind, int threads)
{
    FX_DECL;
    enum { R = 5, D = FXD_D, V = 4, NO = R * D * V };
    dfm_path *p = fxd_path(DFM_SOURCE_MASK, m, NULL);
    dfm_loss *l = NULL;
    if (kind == 0) ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, &f->mem), 0);
    else ck_assert_int_eq(dfm_loss_create_cross_entropy(&l, p, 1, &f->mem), 0);
    dfm_path_free(p);
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_THREADS, threads), 0);
    if (kind == 0) ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_REDUCTION, DFM_REDUCE_NONE), 0);
    double t[R] = {0.0, 0.2, 0.5, 0.7, 0.9};
    int32_t x1[R * D], xt[R * D];
    uint8_t fixed[R * D];
    float out[NO], grad[NO];
    double values[R * D], loss;
    for (int i = 0; i < R * D; i++) { x1[i] = i % 3; xt[i] = i % 2 ? 3 : i % 3; fixed[i] = i == 4; }
    for (int i = 0; i < NO; i++) out[i] = 0.5f * (float)(i % 5) - 1.0f;
    fx_fill(grad, sizeof grad);
    fx_fill(values, sizeof values);
    fx_fill(&loss, sizeof loss);
    dfm_loss_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = R; a.t = t; a.x1_tokens = x1; a.xt_tokens = xt; a.fixed = fixed; a.out = out;
    a.grad = kind == 0 ? grad : NULL;
    a.values = kind == 0 ? values : NULL;
    a.loss = &loss;
    int st = FX_CALL(f, dfm_loss_eval(l, &a));
    if (st) {
        ck_assert_msg(fx_unchanged(grad, sizeof grad) && fx_unchanged(values, sizeof values) &&
                      fx_unchanged(&loss, sizeof loss), "%s: outputs written on failure", f->name);
        ck_assert(dfm_loss_last_error(l)[0] != '\0');
    } else {
        ck_assert(isfinite(loss));
    }
    f->raw_seen = dfm_loss_callback_status(l);
    dfm_loss_free(l);
    return st;
}
static int sc_l_eval_gkl(fx *f) { return fxl_eval(f, NULL, 0, 1); }
static int sc_l_eval_gkl_t2(fx *f) { return fxl_eval(f, NULL, 0, 2); }
static int sc_l_eval_ce(fx *f) { return fxl_eval(f, NULL, 1, 2); }

/* ELBO: source 0 mask, 1 custom (exact source term); chunk_rows 0 or 2. */
static int fxl_elbo(fx *f, int ticks, int custom, size_t chunk)
{
    FX_DECL;
    enum { R = 5, D = FXD_D };
    fxm m = fxm_make(f, ticks, FXM_LOGITS);
    dfm_path *p = fxd_path(custom ? DFM_SOURCE_CUSTOM : DFM_SOURCE_MASK, &m, NULL);
    dfm_loss *l = NULL;
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, &f->mem), 0);
    dfm_path_free(p);
    int32_t x1[R * D];
    uint8_t fixed[R * D];
    for (int i = 0; i < R * D; i++) { x1[i] = (i * 5) % 3; fixed[i] = i == 7; }
    double nelbo[R], se[R];
    fx_fill(nelbo, sizeof nelbo);
    fx_fill(se, sizeof se);
    dfm_elbo_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = R; a.row_offset = 3; a.draw = 1; a.x1_tokens = x1; a.fixed = fixed;
    a.n_t = 3; a.chunk_rows = chunk; a.model = fxm_model; a.user_data = &m;
    a.nelbo = nelbo; a.std_error = se;
    int st = FX_CALL(f, dfm_loss_discrete_elbo(l, &a));
    if (st) {
        ck_assert_msg(fx_unchanged(nelbo, sizeof nelbo) && fx_unchanged(se, sizeof se),
                      "%s: outputs written on failure", f->name);
        ck_assert(dfm_loss_last_error(l)[0] != '\0');
    } else {
        for (int r = 0; r < R; r++) ck_assert(isfinite(nelbo[r]) && se[r] >= 0.0);
    }
    f->raw_seen = dfm_loss_callback_status(l);
    dfm_loss_free(l);
    return st;
}
static int sc_l_elbo_mask(fx *f) { return fxl_elbo(f, 0, 0, 0); }
static int sc_l_elbo_custom_chunks(fx *f) { return fxl_elbo(f, 0, 1, 2); }
static int sc_l_cb_elbo_model(fx *f) { return fxl_elbo(f, FXM_MODEL, 0, 2); }
static int sc_l_cb_elbo_sched(fx *f) { return fxl_elbo(f, FXM_SCHED, 1, 0); }
static int sc_l_cb_eval_sched(fx *f)
{
    fxm m = fxm_make(f, FXM_SCHED, FXM_LOGITS);
    return fxl_eval(f, &m, 0, 2);
}
static int sc_l_cb_eval_ce_sched(fx *f)
{
    fxm m = fxm_make(f, FXM_SCHED, FXM_LOGITS);
    return fxl_eval(f, &m, 1, 1);
}

#define FAULT_ALLOC_DLOSS                                                 \
    {"loss_create_generalized_kl", sc_l_create_gkl, 2, 0, 0},              \
    {"loss_create_cross_entropy", sc_l_create_ce, 2, 0, 0},                \
    {"loss_create_cross_entropy_only_changed", sc_l_create_ce_changed, 2, 0, 0}, \
    {"loss_clone_generalized_kl", sc_l_clone, 2, 0, 0},                    \
    {"loss_eval_generalized_kl", sc_l_eval_gkl, 1, 0, 0},                  \
    {"loss_eval_generalized_kl_threads2", sc_l_eval_gkl_t2, 1, 0, 0},      \
    {"loss_eval_cross_entropy_threads2", sc_l_eval_ce, 1, 0, 0},           \
    {"loss_discrete_elbo_mask", sc_l_elbo_mask, 3, 0, 0},                  \
    {"loss_discrete_elbo_custom_chunks", sc_l_elbo_custom_chunks, 3, 0, 0},

#define FAULT_CB_DLOSS                                                    \
    {"discrete_elbo_model", sc_l_cb_elbo_model, 3, 0, 1},                  \
    {"discrete_elbo_custom_scheduler", sc_l_cb_elbo_sched, 2, 0, 1},       \
    {"loss_eval_generalized_kl_custom_scheduler", sc_l_cb_eval_sched, 1, 0, 1}, \
    {"loss_eval_cross_entropy_custom_scheduler", sc_l_cb_eval_ce_sched, 0, 0, 1},
