/* Generic functions of the polymorphic handles: lifetime, copies, options, error detail. */
#include "handles/handles.h"

#include <math.h>
#include <stdio.h>

int dfm__handle_new(void **out, size_t size, const dfm_allocator *mem)
{
    dfm_allocator m;
    *out = NULL;
    if (dfm__mem_init(&m, mem)) return DFM_EINVAL;
    dfm_base *b = (dfm_base *)dfm__calloc(&m, 1, size);
    if (!b) return dfm__error(DFM_ENOMEM, "cannot allocate a handle (%zu bytes)", size);
    dfm__base_init(b, &m);
    *out = b;
    return 0;
}

static void release(dfm_base *b)
{
    dfm__pool_free(b);
    dfm_allocator m = b->mem;
    dfm__free(&m, b);
}

int dfm__path_new(dfm_path **out, int kind, const dfm__path_ops *ops, const dfm_space *space,
                  const dfm_scheduler *sched, const dfm_allocator *mem)
{
    void *h;
    int st = dfm__handle_new(&h, sizeof(dfm_path), mem);
    if (st) return st;
    dfm_path *p = (dfm_path *)h;
    p->kind = kind;
    p->ops = ops;
    if (space) { p->space = *space; p->space.mem = p->b.mem; }
    if (sched) { p->sched = *sched; p->sched.mem = p->b.mem; p->has_sched = 1; }
    *out = p;
    return 0;
}

/* ---- path ---- */

void dfm_path_free(dfm_path *p)
{
    if (!p || dfm__refuse_free(&p->b, __func__)) return;
    if (p->ops && p->ops->destroy) p->ops->destroy(p);
    release(&p->b);
}

int dfm_path_clone(dfm_path **out, const dfm_path *p, const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!p) return dfm__null(__func__, "p");
    dfm_path *q;
    int st = dfm__path_new(&q, p->kind, p->ops, &p->space, p->has_sched ? &p->sched : NULL, mem);
    if (st) return st;
    q->b.nthreads = p->b.nthreads;
    q->b.spin_us = p->b.spin_us;
    q->b.seed = p->b.seed;
    if (p->ops->clone_impl) {
        st = p->ops->clone_impl(q, p);
        if (st) {
            q->ops = NULL;
            release(&q->b);
            return dfm__error(st, "%s: cannot copy the path's data (%s)", __func__,
                              dfm_strerror(st));
        }
    }
    *out = q;
    return 0;
}

int dfm_path_kind(const dfm_path *p) { return p ? p->kind : 0; }
const dfm_space *dfm_path_space(const dfm_path *p) { return p ? &p->space : NULL; }
const dfm_scheduler *dfm_path_scheduler(const dfm_path *p)
{
    return p && p->has_sched ? &p->sched : NULL;
}
const char *dfm_path_last_error(const dfm_path *p) { return p ? p->b.err : "NULL handle"; }
int dfm_path_callback_status(const dfm_path *p) { return p ? p->b.cb_raw : 0; }

static int unknown_get(const char *fn, const char *kind, int opt, int type);

int dfm_path_set_int(dfm_path *p, int option, int64_t value)
{
    if (!p) return dfm__null(__func__, "p");
    DFM__NOT_RUNNING(&p->b);
    dfm__clear(&p->b);
    int st = dfm__base_set_int(&p->b, option, value);
    if (st != DFM_EUNSUPPORTED) return st;
    if (p->ops->set_int) {
        st = p->ops->set_int(p, option, value);
        if (st != DFM_EUNSUPPORTED) return st;
    }
    return dfm__fail(&p->b, DFM_EINVAL, "unknown path option %d", option);
}

int dfm_path_get_int(const dfm_path *p, int option, int64_t *value)
{
    if (!p || !value) return dfm__null(__func__, "p or value");
    int st = dfm__base_get_int(&p->b, option, value);
    if (st == DFM_EUNSUPPORTED) return unknown_get(__func__, "path", option, 0);
    return st;
}

int dfm_path_sample(dfm_path *p, const dfm_path_sample_args *a)
{
    if (!p) return dfm__null(__func__, "p");
    int st = dfm__enter(&p->b, __func__);
    if (st) return st;
    return dfm__leave(&p->b, dfm__path_sample(p, a));
}

/* Every call over rows of states checks, before touching them, that the rows fit: the host's
 * tokens and reals and the library's per-row copies of them (up to 32 bytes per coordinate,
 * 64 per row: the scratch size computations that follow cannot overflow). */
static int rows_fit_state(dfm_base *b, size_t rows, size_t n_tokens, size_t n_reals)
{
    size_t per;
    if (dfm__mul(n_tokens + n_reals, 32, &per) || per > SIZE_MAX - 64)
        return dfm__fail(b, DFM_EOVERFLOW, "the row size overflows");
    return dfm__rows_fit(b, rows, per + 64, "the tokens and reals");
}

/* A member of the other modality (documented "must be NULL"). */
static int must_be_null(dfm_base *b, const void *v, const char *name, const char *why)
{
    return v ? dfm__fail(b, DFM_EINVAL, "args->%s must be NULL: %s", name, why) : 0;
}

#define NO_TOKENS "the space has no tokens"
#define NO_REALS "the space has no reals"

/* An output sharing memory with another argument. */
static int overlaps(dfm_base *b, const void *out, size_t nout, const char *oname, const void *in,
                    size_t nin, const char *iname)
{
    if (!dfm__overlap(out, nout, in, nin)) return 0;
    return dfm__fail(b, DFM_EINVAL, "args->%s overlaps args->%s: an output may not share memory "
                     "with another argument", oname, iname);
}

static int path_args_check(dfm_path *p, const dfm_path_sample_args *a)
{
    dfm_base *b = &p->b;
    size_t nt = p->space.n_tokens, nr = p->space.n_reals;
    int st = 0;
    if (!nt)
        st = must_be_null(b, a->x1_tokens, "x1_tokens", NO_TOKENS) ||
             must_be_null(b, a->x0_tokens, "x0_tokens", NO_TOKENS) ||
             must_be_null(b, a->xt_tokens, "xt_tokens", NO_TOKENS);
    if (!st && !nr)
        st = must_be_null(b, a->x1_reals, "x1_reals", NO_REALS) ||
             must_be_null(b, a->x0_reals, "x0_reals", NO_REALS) ||
             must_be_null(b, a->xt_reals, "xt_reals", NO_REALS) ||
             must_be_null(b, a->target_reals, "target_reals", NO_REALS) ||
             must_be_null(b, a->x0_reals_out, "x0_reals_out", NO_REALS);
    if (st) return DFM_EINVAL;
    if ((st = rows_fit_state(b, a->rows, nt, nr)) != 0) return st;
    size_t bt = a->rows * nt * sizeof(int32_t), br = a->rows * nr * sizeof(float);
    size_t btime = a->rows * sizeof(double);
    const struct { const void *p; size_t n; const char *name; } out[] = {
        {a->xt_tokens, bt, "xt_tokens"}, {a->xt_reals, br, "xt_reals"},
        {a->target_reals, br, "target_reals"}, {a->x0_reals_out, br, "x0_reals_out"}},
                                                                   in[] = {
        {a->x1_tokens, bt, "x1_tokens"}, {a->x0_tokens, bt, "x0_tokens"},
        {a->x1_reals, br, "x1_reals"}, {a->x0_reals, br, "x0_reals"}, {a->t, btime, "t"}};
    for (size_t i = 0; i < 4; i++) {
        for (size_t j = 0; j < 5; j++)
            if (overlaps(b, out[i].p, out[i].n, out[i].name, in[j].p, in[j].n, in[j].name))
                return DFM_EINVAL;
        for (size_t j = 0; j < i; j++)
            if (overlaps(b, out[i].p, out[i].n, out[i].name, out[j].p, out[j].n, out[j].name))
                return DFM_EINVAL;
    }
    return 0;
}

int dfm__path_sample(dfm_path *p, const dfm_path_sample_args *a)
{
    if (!a) return dfm__fail(&p->b, DFM_EINVAL, "args is NULL");
    if (a->struct_size < sizeof(size_t) * 3)
        return dfm__fail(&p->b, DFM_EINVAL, "args->struct_size is too small");
    if (a->rows && !a->t) return dfm__fail(&p->b, DFM_EINVAL, "args->t is NULL");
    int cst = path_args_check(p, a);
    if (cst) return cst;
    for (size_t r = 0; r < a->rows; r++)
        if (!dfm__time_ok(a->t[r]))
            return dfm__fail(&p->b, DFM_ERANGE, "t[%zu] = %g is outside [0, 1]", r, a->t[r]);
    if (!p->ops->sample) return dfm__fail(&p->b, DFM_EUNSUPPORTED, "path kind cannot sample");
    int pst = dfm__pool_prepare(&p->b, p->b.nthreads);
    if (pst) return pst;
    int st = p->ops->sample(p, a);
    dfm__pool_park(&p->b);
    return st;
}

/* ---- generator ---- */

int dfm__gen_new(dfm_generator **out, int kind, int param, size_t out_stride,
                 const dfm__gen_ops *ops, const dfm_path *path, const dfm_allocator *mem)
{
    void *h;
    int st = dfm__handle_new(&h, sizeof(dfm_generator), mem);
    if (st) return st;
    dfm_generator *g = (dfm_generator *)h;
    g->kind = kind;
    g->param = param;
    g->out_stride = out_stride;
    g->ops = ops;
    if (path) {
        st = dfm_path_clone(&g->path, path, &g->b.mem);
        if (st) { release(&g->b); return st; }
    }
    *out = g;
    return 0;
}

void dfm_generator_free(dfm_generator *g)
{
    if (!g || dfm__refuse_free(&g->b, __func__)) return;
    if (g->ops && g->ops->destroy) g->ops->destroy(g);
    dfm_path_free(g->path);
    release(&g->b);
}

int dfm_generator_clone(dfm_generator **out, const dfm_generator *g, const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!g) return dfm__null(__func__, "g");
    dfm_generator *q;
    int st = dfm__gen_new(&q, g->kind, g->param, g->out_stride, g->ops, g->path, mem);
    if (st) return st;
    q->b.nthreads = g->b.nthreads;
    q->b.spin_us = g->b.spin_us;
    q->b.seed = g->b.seed;
    if (g->ops->clone_impl) {
        st = g->ops->clone_impl(q, g);
        if (st) {
            q->ops = NULL;
            dfm_generator_free(q);
            return dfm__error(st, "%s: cannot copy the generator's data (%s)", __func__,
                              dfm_strerror(st));
        }
    }
    *out = q;
    return 0;
}

int dfm_generator_kind(const dfm_generator *g) { return g ? g->kind : 0; }
int dfm_generator_parameterization(const dfm_generator *g) { return g ? g->param : 0; }
size_t dfm_generator_out_stride(const dfm_generator *g) { return g ? g->out_stride : 0; }
const dfm_path *dfm_generator_path(const dfm_generator *g) { return g ? g->path : NULL; }
const char *dfm_generator_last_error(const dfm_generator *g) { return g ? g->b.err : "NULL handle"; }
int dfm_generator_callback_status(const dfm_generator *g) { return g ? g->b.cb_raw : 0; }

/* Option plumbing shared by the handle kinds: base options first, then the kind's. An option
 * the handle knows under the other type gets a message saying so (type_of: 'i', 'd' or 0). */
#define TYPE_OF(h, opt, extra_int)                                                              \
    do {                                                                                       \
        int64_t i_;                                                                            \
        double d_;                                                                             \
        if (dfm__base_get_int(&(h)->b, (opt), &i_) == 0 || (extra_int)) return 'i';            \
        if ((h)->ops && (h)->ops->get_int && (h)->ops->get_int((h), (opt), &i_) == 0)           \
            return 'i';                                                                        \
        if ((h)->ops && (h)->ops->get_double && (h)->ops->get_double((h), (opt), &d_) == 0)     \
            return 'd';                                                                        \
        return 0;                                                                              \
    } while (0)

static int unknown_option(dfm_base *b, const char *kind, int opt, int type, const char *setter)
{
    if (type == 'i')
        return dfm__fail(b, DFM_EINVAL, "option %d is an integer option of this %s: use "
                         "dfm_%s_set_int", opt, kind, setter);
    if (type == 'd')
        return dfm__fail(b, DFM_EINVAL, "option %d is a double option of this %s: use "
                         "dfm_%s_set_double", opt, kind, setter);
    return dfm__fail(b, DFM_EINVAL, "unknown %s option %d", kind, opt);
}

static int unknown_get(const char *fn, const char *kind, int opt, int type)
{
    if (type == 'i')
        return dfm__error(DFM_EINVAL, "%s: option %d is an integer option of this %s: use "
                          "dfm_%s_get_int", fn, opt, kind, kind);
    if (type == 'd')
        return dfm__error(DFM_EINVAL, "%s: option %d is a double option of this %s: use "
                          "dfm_%s_get_double", fn, opt, kind, kind);
    return dfm__error(DFM_EINVAL, "%s: unknown %s option %d", fn, kind, opt);
}

#define OPT_SET(h, opt, val, fn, kind, type_of)                                                \
    do {                                                                                       \
        if (!(h)) return dfm__null(__func__, #h);                                              \
        DFM__NOT_RUNNING(&(h)->b);                                                             \
        dfm__clear(&(h)->b);                                                                   \
        int st_ = DFM_EUNSUPPORTED;                                                            \
        if ((h)->ops && (h)->ops->fn) st_ = (h)->ops->fn((h), (opt), (val));                   \
        if (st_ != DFM_EUNSUPPORTED) return st_;                                               \
        return unknown_option(&(h)->b, kind, (opt), type_of((h), (opt)), kind);                \
    } while (0)

#define OPT_GET(h, opt, val, fn, kind, type_of)                                                \
    do {                                                                                       \
        if (!(h) || !(val)) return dfm__null(__func__, #h " or value");                        \
        int st_ = DFM_EUNSUPPORTED;                                                            \
        if ((h)->ops && (h)->ops->fn) st_ = (h)->ops->fn((h), (opt), (val));                   \
        if (st_ == DFM_EUNSUPPORTED) return unknown_get(__func__, kind, (opt), type_of((h), (opt))); \
        return st_;                                                                            \
    } while (0)

static int gen_type(const dfm_generator *g, int opt) { TYPE_OF(g, opt, 0); }

int dfm_generator_set_int(dfm_generator *g, int option, int64_t value)
{
    if (g) {
        DFM__NOT_RUNNING(&g->b);
        dfm__clear(&g->b);
        int st = dfm__base_set_int(&g->b, option, value);
        if (st != DFM_EUNSUPPORTED) return st;
    }
    OPT_SET(g, option, value, set_int, "generator", gen_type);
}

int dfm_generator_get_int(const dfm_generator *g, int option, int64_t *value)
{
    if (g && value && dfm__base_get_int(&g->b, option, value) == 0) return 0;
    OPT_GET(g, option, value, get_int, "generator", gen_type);
}

int dfm_generator_set_double(dfm_generator *g, int option, double value)
{
    OPT_SET(g, option, value, set_double, "generator", gen_type);
}

int dfm_generator_get_double(const dfm_generator *g, int option, double *value)
{
    OPT_GET(g, option, value, get_double, "generator", gen_type);
}

/* ---- loss ---- */

int dfm__loss_new(dfm_loss **out, int kind, const dfm__loss_ops *ops, const dfm_generator *gen,
                  const dfm_allocator *mem)
{
    void *h;
    int st = dfm__handle_new(&h, sizeof(dfm_loss), mem);
    if (st) return st;
    dfm_loss *l = (dfm_loss *)h;
    l->kind = kind;
    l->ops = ops;
    l->reduction = DFM_REDUCE_MEAN;
    if (gen) {
        st = dfm_generator_clone(&l->gen, gen, &l->b.mem);
        if (st) { release(&l->b); return st; }
        l->out_stride = gen->out_stride;
        if (gen->path) {
            l->n_tokens = gen->path->space.n_tokens;
            l->n_reals = gen->path->space.n_reals;
        }
    }
    *out = l;
    return 0;
}

void dfm_loss_free(dfm_loss *l)
{
    if (!l || dfm__refuse_free(&l->b, __func__)) return;
    if (l->ops && l->ops->destroy) l->ops->destroy(l);
    dfm_generator_free(l->gen);
    release(&l->b);
}

int dfm_loss_clone(dfm_loss **out, const dfm_loss *l, const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!l) return dfm__null(__func__, "l");
    dfm_loss *q;
    int st = dfm__loss_new(&q, l->kind, l->ops, l->gen, mem);
    if (st) return st;
    q->b.nthreads = l->b.nthreads;
    q->b.spin_us = l->b.spin_us;
    q->b.seed = l->b.seed;
    q->reduction = l->reduction;
    q->out_stride = l->out_stride;
    q->n_tokens = l->n_tokens;
    q->n_reals = l->n_reals;
    if (l->ops->clone_impl) {
        st = l->ops->clone_impl(q, l);
        if (st) {
            q->ops = NULL;
            dfm_loss_free(q);
            return dfm__error(st, "%s: cannot copy the loss's data (%s)", __func__,
                              dfm_strerror(st));
        }
    }
    *out = q;
    return 0;
}

int dfm_loss_kind(const dfm_loss *l) { return l ? l->kind : 0; }
const char *dfm_loss_last_error(const dfm_loss *l) { return l ? l->b.err : "NULL handle"; }
int dfm_loss_callback_status(const dfm_loss *l) { return l ? l->b.cb_raw : 0; }

static int loss_type(const dfm_loss *l, int opt) { TYPE_OF(l, opt, opt == DFM_OPT_REDUCTION); }

int dfm_loss_set_int(dfm_loss *l, int option, int64_t value)
{
    if (l) {
        DFM__NOT_RUNNING(&l->b);
        dfm__clear(&l->b);
        int st = dfm__base_set_int(&l->b, option, value);
        if (st != DFM_EUNSUPPORTED) return st;
        if (option == DFM_OPT_REDUCTION) {
            if (value < DFM_REDUCE_MEAN || value > DFM_REDUCE_NONE)
                return dfm__fail(&l->b, DFM_EINVAL, "unknown reduction %lld", (long long)value);
            l->reduction = (int)value;
            return 0;
        }
    }
    OPT_SET(l, option, value, set_int, "loss", loss_type);
}

int dfm_loss_get_int(const dfm_loss *l, int option, int64_t *value)
{
    if (l && value) {
        if (dfm__base_get_int(&l->b, option, value) == 0) return 0;
        if (option == DFM_OPT_REDUCTION) { *value = l->reduction; return 0; }
    }
    OPT_GET(l, option, value, get_int, "loss", loss_type);
}

int dfm_loss_set_double(dfm_loss *l, int option, double value)
{
    OPT_SET(l, option, value, set_double, "loss", loss_type);
}

int dfm_loss_get_double(const dfm_loss *l, int option, double *value)
{
    OPT_GET(l, option, value, get_double, "loss", loss_type);
}

int dfm_loss_eval(dfm_loss *l, const dfm_loss_args *a)
{
    if (!l) return dfm__null(__func__, "l");
    int st = dfm__enter(&l->b, __func__);
    if (st) return st;
    return dfm__leave(&l->b, dfm__loss_eval(l, a));
}

static int loss_args_check(dfm_loss *l, const dfm_loss_args *a)
{
    dfm_base *b = &l->b;
    size_t nt = l->n_tokens, nr = l->n_reals, S = l->out_stride;
    int st = 0;
    if (!nt)
        st = must_be_null(b, a->x1_tokens, "x1_tokens", NO_TOKENS) ||
             must_be_null(b, a->xt_tokens, "xt_tokens", NO_TOKENS) ||
             must_be_null(b, a->fixed, "fixed", NO_TOKENS);
    if (!st && !nr)
        st = must_be_null(b, a->x0_reals, "x0_reals", NO_REALS) ||
             must_be_null(b, a->x1_reals, "x1_reals", NO_REALS) ||
             must_be_null(b, a->xt_reals, "xt_reals", NO_REALS);
    if (st) return DFM_EINVAL;
    size_t per;
    if (dfm__mul(S, 4 * sizeof(float), &per) || per > SIZE_MAX / 2 - 64)
        return dfm__fail(b, DFM_EOVERFLOW, "the row size overflows");
    if ((st = rows_fit_state(b, a->rows, nt, nr)) != 0 ||
        (st = dfm__rows_fit(b, a->rows, per + 16, "the model output and gradient")) != 0)
        return st;
    size_t bo = a->rows * S * sizeof(float), bt = a->rows * nt * sizeof(int32_t);
    size_t br = a->rows * nr * sizeof(float), bv = a->rows * (nt + nr) * sizeof(double);
    /* discrete losses document grad == out (the gradient replaces the logits) */
    int same = (const void *)a->grad == (const void *)a->out &&
               (l->kind == DFM_LOSS_GENERALIZED_KL || l->kind == DFM_LOSS_CROSS_ENTROPY);
    const struct { const void *p; size_t n; const char *name; } in[] = {
        {a->out, same ? 0 : bo, "out"}, {a->x1_tokens, bt, "x1_tokens"},
        {a->xt_tokens, bt, "xt_tokens"}, {a->fixed, a->rows * nt, "fixed"},
        {a->x0_reals, br, "x0_reals"}, {a->x1_reals, br, "x1_reals"},
        {a->xt_reals, br, "xt_reals"}, {a->t, a->rows * sizeof(double), "t"}};
    size_t bvals = l->reduction == DFM_REDUCE_NONE ? bv : 0;
    for (size_t j = 0; j < sizeof in / sizeof in[0]; j++)
        if (overlaps(b, a->grad, bo, "grad", in[j].p, in[j].n, in[j].name) ||
            overlaps(b, a->values, bvals, "values", in[j].p, in[j].n, in[j].name) ||
            overlaps(b, a->loss, sizeof(double), "loss", in[j].p, in[j].n, in[j].name))
            return DFM_EINVAL;
    if (overlaps(b, a->values, bvals, "values", a->grad, bo, "grad") ||
        overlaps(b, a->loss, sizeof(double), "loss", a->grad, bo, "grad") ||
        overlaps(b, a->loss, sizeof(double), "loss", a->values, bvals, "values"))
        return DFM_EINVAL;
    return 0;
}

int dfm__loss_eval(dfm_loss *l, const dfm_loss_args *a)
{
    if (!a) return dfm__fail(&l->b, DFM_EINVAL, "args is NULL");
    if (a->struct_size < sizeof(dfm_loss_args))
        return dfm__fail(&l->b, DFM_EINVAL, "args->struct_size is too small");
    if (!a->loss) return dfm__fail(&l->b, DFM_EINVAL, "args->loss is NULL");
    if (a->rows && !a->out) return dfm__fail(&l->b, DFM_EINVAL, "args->out is NULL");
    if (a->rows && !a->t) return dfm__fail(&l->b, DFM_EINVAL, "args->t is NULL");
    if (l->reduction == DFM_REDUCE_NONE && a->rows && !a->values)
        return dfm__fail(&l->b, DFM_EINVAL, "reduction none needs args->values");
    int cst = loss_args_check(l, a);
    if (cst) return cst;
    for (size_t r = 0; r < a->rows; r++)
        if (!dfm__time_ok(a->t[r]))
            return dfm__fail(&l->b, DFM_ERANGE, "t[%zu] = %g is outside [0, 1]", r, a->t[r]);
    if (!l->ops->eval) return dfm__fail(&l->b, DFM_EUNSUPPORTED, "loss kind cannot evaluate");
    int pst = dfm__pool_prepare(&l->b, l->b.nthreads);
    if (pst) return pst;
    int st = l->ops->eval(l, a);
    dfm__pool_park(&l->b);
    return st;
}

/* ---- sampler ---- */

static const char *kind_name(int kind)
{
    static const char *const n[] = {"?", "factorized", "velocity", "diffusion", "rate-matrix",
                                    "superposition", "product"};
    return kind >= 1 && kind <= DFM_GEN_PRODUCT ? n[kind] : n[0];
}

static const char *param_name(int p)
{
    static const char *const n[] = {"?", "posterior logits", "direct rates", "velocities",
                                    "x1 predictions", "epsilon predictions", "scores",
                                    "state posterior logits", "mixed outputs"};
    return p >= 1 && p <= DFM_PARAM_MIXED ? n[p] : n[0];
}

#define LAST_METHOD DFM_METHOD_THETA_TRAPEZOIDAL

static const char *method_name(int m)
{
    static const char *const n[] = {"an unknown method", "DFM_METHOD_EXACT", "DFM_METHOD_EULER",
                                    "DFM_METHOD_MIDPOINT", "DFM_METHOD_RK4", "DFM_METHOD_DOPRI5",
                                    "DFM_METHOD_EULER_MARUYAMA", "DFM_METHOD_UNIFORMIZATION",
                                    "DFM_METHOD_GILLESPIE", "DFM_METHOD_TAU_LEAPING",
                                    "DFM_METHOD_THETA_TRAPEZOIDAL"};
    return m >= 1 && m <= LAST_METHOD ? n[m] : n[0];
}

/* The message of a method the generator does not offer: the methods it does offer, found by
 * trying each on s (whose failed initialisation is undone first). */
static void no_method(dfm_sampler *s, const dfm_generator *g, int method)
{
    char list[160] = "";
    size_t len = 0;
    for (int m = 1; m <= LAST_METHOD; m++) {
        if (s->ops && s->ops->destroy) s->ops->destroy(s);
        s->ops = NULL;
        s->impl = NULL;
        if (m == method || g->ops->sampler_init(s, m) != 0) continue;
        int w = snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "", method_name(m));
        if (w > 0 && (size_t)w < sizeof list - len) len += (size_t)w;
    }
    if (s->ops && s->ops->destroy) s->ops->destroy(s);
    s->ops = NULL;
    s->impl = NULL;
    dfm__error(DFM_EUNSUPPORTED, "dfm_sampler_create: a %s generator of %s has no method %d "
               "(%s)%s%s", kind_name(g->kind), param_name(g->param), method, method_name(method),
               len ? "; it offers " : "", list);
}

int dfm_sampler_create(dfm_sampler **out, const dfm_generator *g, int method,
                       const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!g || !g->ops) return dfm__null(__func__, "g");
    if (!g->ops->sampler_init)
        return dfm__error(DFM_EUNSUPPORTED, "%s: a %s generator has no sampler (it only "
                          "serves inside a superposition)", __func__, kind_name(g->kind));
    void *h;
    int st = dfm__handle_new(&h, sizeof(dfm_sampler), mem);
    if (st) return st;
    dfm_sampler *s = (dfm_sampler *)h;
    s->method = method;
    s->n_steps = 64;
    s->b.nthreads = g->b.nthreads;
    s->b.spin_us = g->b.spin_us;
    s->b.seed = g->b.seed;
    st = dfm_generator_clone(&s->gen, g, &s->b.mem);
    if (st == 0) {
        st = g->ops->sampler_init(s, method);
        if (st == DFM_EUNSUPPORTED) no_method(s, g, method);
        else if (st) dfm__error(st, "%s: cannot set up the sampler (%s)", __func__, dfm_strerror(st));
    }
    if (st) {
        dfm_sampler_free(s);
        return st;
    }
    *out = s;
    return 0;
}

void dfm_sampler_free(dfm_sampler *s)
{
    if (!s) return;
    if (dfm__refuse_free(&s->b, __func__)) { /* the run stops after this step */
        dfm_sampler_request_stop(s);
        return;
    }
    if (s->ops && s->ops->destroy) s->ops->destroy(s);
    dfm_generator_free(s->gen);
    dfm__free(&s->b.mem, s->grid);
    release(&s->b);
}

int dfm_sampler_method(const dfm_sampler *s) { return s ? s->method : 0; }
const char *dfm_sampler_last_error(const dfm_sampler *s) { return s ? s->b.err : "NULL handle"; }
int dfm_sampler_callback_status(const dfm_sampler *s) { return s ? s->b.cb_raw : 0; }

int dfm_sampler_set_steps(dfm_sampler *s, size_t n_steps)
{
    if (!s) return dfm__null(__func__, "s");
    DFM__NOT_RUNNING(&s->b);
    dfm__clear(&s->b);
    if (n_steps == 0 || n_steps > (size_t)INT32_MAX)
        return dfm__fail(&s->b, DFM_EINVAL, "n_steps must be in [1, 2^31), got %zu", n_steps);
    dfm__free(&s->b.mem, s->grid);
    s->grid = NULL;
    s->n_grid = 0;
    s->n_steps = n_steps;
    return 0;
}

int dfm_sampler_set_grid(dfm_sampler *s, const double *grid, size_t n)
{
    if (!s) return dfm__null(__func__, "s");
    DFM__NOT_RUNNING(&s->b);
    dfm__clear(&s->b);
    if (!grid) return dfm__fail(&s->b, DFM_EINVAL, "grid is NULL");
    if (n < 2 || n - 1 > (size_t)INT32_MAX)
        return dfm__fail(&s->b, DFM_EINVAL, "a grid needs at least 2 times, got %zu", n);
    int dir = grid[1] > grid[0] ? 1 : -1;
    for (size_t i = 0; i < n; i++) {
        if (!dfm__time_ok(grid[i]))
            return dfm__fail(&s->b, DFM_ERANGE, "grid[%zu] = %g is outside [0, 1]", i, grid[i]);
        if (i > 0 && !(dir > 0 ? grid[i] > grid[i - 1] : grid[i] < grid[i - 1]))
            return dfm__fail(&s->b, DFM_EINVAL, "grid is not strictly monotone at index %zu", i);
    }
    size_t bytes;
    if (dfm__mul(n, sizeof(double), &bytes))
        return dfm__fail(&s->b, DFM_EOVERFLOW, "grid too long");
    double *g = (double *)dfm__alloc(&s->b.mem, bytes);
    if (!g) return dfm__fail(&s->b, DFM_ENOMEM, "cannot allocate the grid");
    memcpy(g, grid, bytes);
    dfm__free(&s->b.mem, s->grid);
    s->grid = g;
    s->n_grid = n;
    return 0;
}

static int sampler_type(const dfm_sampler *s, int opt) { TYPE_OF(s, opt, 0); }

int dfm_sampler_set_int(dfm_sampler *s, int option, int64_t value)
{
    if (s) {
        DFM__NOT_RUNNING(&s->b);
        dfm__clear(&s->b);
        int st = dfm__base_set_int(&s->b, option, value);
        if (st != DFM_EUNSUPPORTED) return st;
    }
    OPT_SET(s, option, value, set_int, "sampler", sampler_type);
}

int dfm_sampler_get_int(const dfm_sampler *s, int option, int64_t *value)
{
    if (s && value && dfm__base_get_int(&s->b, option, value) == 0) return 0;
    OPT_GET(s, option, value, get_int, "sampler", sampler_type);
}

int dfm_sampler_set_double(dfm_sampler *s, int option, double value)
{
    OPT_SET(s, option, value, set_double, "sampler", sampler_type);
}

int dfm_sampler_get_double(const dfm_sampler *s, int option, double *value)
{
    OPT_GET(s, option, value, get_double, "sampler", sampler_type);
}

int dfm__check_run_common(dfm_sampler *s, const dfm_run_args *a, size_t n_tokens, size_t n_reals)
{
    if (a->rows == 0) return 0;
    if (n_tokens && !a->tokens) return dfm__fail(&s->b, DFM_EINVAL, "args->tokens is NULL");
    if (n_reals && !a->reals) return dfm__fail(&s->b, DFM_EINVAL, "args->reals is NULL");
    size_t tmp;
    int st = rows_fit_state(&s->b, a->rows, n_tokens, n_reals);
    if (st) return st;
    if (overlaps(&s->b, a->tokens, a->rows * n_tokens * sizeof(int32_t), "tokens", a->fixed,
                 a->rows * n_tokens, "fixed"))
        return DFM_EINVAL;
    if (a->n_save) {
        if (!a->save_times) return dfm__fail(&s->b, DFM_EINVAL, "args->save_times is NULL");
        if (n_tokens && !a->saved_tokens)
            return dfm__fail(&s->b, DFM_EINVAL, "args->saved_tokens is NULL");
        if (n_reals && !a->saved_reals)
            return dfm__fail(&s->b, DFM_EINVAL, "args->saved_reals is NULL");
        if (dfm__mul3(a->n_save, a->rows, (n_tokens + n_reals) * sizeof(float), &tmp) ||
            tmp > (size_t)PTRDIFF_MAX)
            return dfm__fail(&s->b, DFM_EOVERFLOW, "n_save = %zu saved states of %zu rows "
                             "overflow the largest buffer", a->n_save, a->rows);
        size_t bt = a->n_save * a->rows * n_tokens * sizeof(int32_t);
        size_t br = a->n_save * a->rows * n_reals * sizeof(float);
        if (overlaps(&s->b, a->saved_tokens, bt, "saved_tokens", a->tokens,
                     a->rows * n_tokens * sizeof(int32_t), "tokens") ||
            overlaps(&s->b, a->saved_reals, br, "saved_reals", a->reals,
                     a->rows * n_reals * sizeof(float), "reals") ||
            overlaps(&s->b, a->saved_tokens, bt, "saved_tokens", a->fixed, a->rows * n_tokens,
                     "fixed") ||
            overlaps(&s->b, a->saved_tokens, bt, "saved_tokens", a->save_times,
                     a->n_save * sizeof(double), "save_times") ||
            overlaps(&s->b, a->saved_reals, br, "saved_reals", a->save_times,
                     a->n_save * sizeof(double), "save_times"))
            return DFM_EINVAL;
        double t0 = dfm__sampler_time(s, 0), t1 = dfm__sampler_time(s, dfm__sampler_nsteps(s));
        int dir = t1 > t0 ? 1 : -1;
        for (size_t k = 0; k < a->n_save; k++) {
            double tk = a->save_times[k];
            if (!(dir > 0 ? (tk >= t0 && tk <= t1) : (tk <= t0 && tk >= t1)))
                return dfm__fail(&s->b, DFM_ERANGE, "save_times[%zu] = %g is outside the grid",
                                 k, tk);
            if (k > 0 && !(dir > 0 ? tk > a->save_times[k - 1] : tk < a->save_times[k - 1]))
                return dfm__fail(&s->b, DFM_EINVAL, "save_times must be strictly monotone");
        }
    }
    return 0;
}

int dfm__sampler_enter(dfm_sampler *s, const char *call)
{
    int st = dfm__enter(&s->b, call);
    if (st) return st;
    memset(s->stats, 0, sizeof s->stats);
    if (dfm__stop_requested(s))
        return dfm__fail(&s->b, DFM_ESTOPPED, "a stop was requested before %s started", call);
    return 0;
}

int dfm__step_done(dfm_sampler *s, dfm_progress_fn fn, void *data, int step, int n_steps,
                   double t)
{
    if (fn) {
        int raw = fn(step, n_steps, t, data);
        if (raw) {
            s->b.cb_raw = raw;
            return dfm__fail(&s->b, DFM_ESTOPPED, "the progress callback returned %d after step %d "
                             "(t = %g): run stopped", raw, step, t);
        }
    }
    if (dfm__stop_requested(s))
        return dfm__fail(&s->b, DFM_ESTOPPED, "stop requested: run stopped after step %d (t = %g)",
                         step, t);
    return 0;
}

int dfm__sampler_leave(dfm_sampler *s, int st)
{
#if defined(__GNUC__)
    __atomic_store_n(&s->stop, 0, __ATOMIC_RELEASE);
#else
    *(volatile int *)&s->stop = 0;
#endif
    return dfm__leave(&s->b, st);
}

static int sampler_run(dfm_sampler *s, const dfm_run_args *a)
{
    if (!a) return dfm__fail(&s->b, DFM_EINVAL, "args is NULL");
    if (a->struct_size < sizeof(dfm_run_args))
        return dfm__fail(&s->b, DFM_EINVAL, "args->struct_size is too small");
    if (!a->model) return dfm__fail(&s->b, DFM_EINVAL, "args->model is NULL");
    if (!s->ops || !s->ops->run) return dfm__fail(&s->b, DFM_EUNSUPPORTED, "no run method");
    int pst = dfm__pool_prepare(&s->b, s->b.nthreads);
    if (pst) return pst;
    int st = s->ops->run(s, a);
    dfm__pool_park(&s->b);
    return st;
}

int dfm_sampler_run(dfm_sampler *s, const dfm_run_args *a)
{
    if (!s) return dfm__null(__func__, "s");
    int st = dfm__sampler_enter(s, __func__);
    if (st == 0) st = sampler_run(s, a);
    else if (st != DFM_ESTOPPED) return st; /* refused: s is running */
    return dfm__sampler_leave(s, st);
}

int dfm_sampler_get_stat(const dfm_sampler *s, int stat, int64_t *value)
{
    if (!s || !value) return dfm__null(__func__, "s or value");
    if (stat < 1 || stat >= DFM__N_STATS)
        return dfm__error(DFM_EINVAL, "%s: unknown statistic %d", __func__, stat);
    *value = s->stats[stat];
    return 0;
}

void dfm_sampler_request_stop(dfm_sampler *s)
{
    if (!s) return;
#if defined(__GNUC__)
    __atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
#else
    *(volatile int *)&s->stop = 1;
#endif
}
