/* The training step (time, x0 and x_t drawn by libdfm; forward and backward by the host) and
 * the general generator-matching loss for host-defined conditional generators (docs/gm.md). */
#include "gm/gm_impl.h"

#include <math.h>

/* ---- trainer ---- */

struct dfm_trainer {
    dfm_base b;
    dfm_path *path;
    dfm_loss *loss;
    int time_kind, part_times;
    double eps, p1, p2;
    uint64_t step;
    char *scratch;  /* batch buffers, grown on demand and kept */
    size_t cap;
};

int dfm_trainer_create(dfm_trainer **out, const dfm_path *path, const dfm_loss *loss,
                       const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!path || !loss) return dfm__null(__func__, "path or loss");
    char why[160];
    if (loss->kind == DFM_LOSS_PRODUCT) {
        if (!dfm__gm_loss_matches(loss, path))
            return dfm__error(DFM_EINVAL, "%s: the product loss's parts do not match the path's "
                              "parts", __func__);
    } else if (!dfm__gm_loss_fits(loss, &path->space, why, sizeof why)) {
        return dfm__error(DFM_EINVAL, "%s: the loss does not fit the path: %s", __func__, why);
    }
    void *h;
    int st = dfm__handle_new(&h, sizeof(dfm_trainer), mem);
    if (st) return st;
    dfm_trainer *tr = (dfm_trainer *)h;
    tr->time_kind = DFM_TIME_UNIFORM;
    tr->eps = 1e-3;
    tr->p2 = 1.0;
    st = dfm_path_clone(&tr->path, path, &tr->b.mem);
    if (!st) st = dfm_loss_clone(&tr->loss, loss, &tr->b.mem);
    if (st) { dfm_trainer_free(tr); return st; }
    *out = tr;
    return 0;
}

void dfm_trainer_free(dfm_trainer *tr)
{
    if (!tr || dfm__refuse_free(&tr->b, __func__)) return;
    dfm_path_free(tr->path);
    dfm_loss_free(tr->loss);
    dfm__free(&tr->b.mem, tr->scratch);
    dfm__pool_free(&tr->b);
    dfm_allocator m = tr->b.mem;
    dfm__free(&m, tr);
}

const char *dfm_trainer_last_error(const dfm_trainer *tr) { return tr ? tr->b.err : "NULL handle"; }
int dfm_trainer_callback_status(const dfm_trainer *tr) { return tr ? tr->b.cb_raw : 0; }
uint64_t dfm_trainer_step_count(const dfm_trainer *tr) { return tr ? tr->step : 0; }

int dfm_trainer_set_step(dfm_trainer *tr, uint64_t step)
{
    if (!tr) return dfm__null(__func__, "tr");
    DFM__NOT_RUNNING(&tr->b);
    dfm__clear(&tr->b);
    tr->step = step;
    return 0;
}

size_t dfm_trainer_n_times(const dfm_trainer *tr)
{
    if (!tr) return 0;
    return tr->part_times ? dfm_path_n_parts(tr->path) : 1;
}

/* Trainer options by type, for the message of a call with the wrong one. */
static int tr_int_option(int opt)
{
    return opt == DFM_OPT_THREADS || opt == DFM_OPT_SEED || opt == DFM_OPT_SPIN_US ||
           opt == DFM_OPT_REDUCTION || opt == DFM_OPT_GM_TIME_KIND || opt == DFM_OPT_GM_PART_TIMES;
}

static int tr_double_option(int opt)
{
    return opt == DFM_OPT_GM_TIME_EPS || opt == DFM_OPT_GM_TIME_P1 || opt == DFM_OPT_GM_TIME_P2;
}

int dfm_trainer_set_int(dfm_trainer *tr, int option, int64_t value)
{
    if (!tr) return dfm__null(__func__, "tr");
    DFM__NOT_RUNNING(&tr->b);
    dfm__clear(&tr->b);
    int st = dfm__base_set_int(&tr->b, option, value);
    if (st != DFM_EUNSUPPORTED) return st;
    switch (option) {
    case DFM_OPT_REDUCTION:
        st = dfm_loss_set_int(tr->loss, option, value);
        if (st) return dfm__fail(&tr->b, st, "%s", tr->loss->b.err);
        return 0;
    case DFM_OPT_GM_TIME_KIND:
        if (value < DFM_TIME_UNIFORM || value > DFM_TIME_STRATIFIED)
            return dfm__fail(&tr->b, DFM_EINVAL, "unknown time distribution %lld", (long long)value);
        tr->time_kind = (int)value;
        return 0;
    case DFM_OPT_GM_PART_TIMES:
        if (value != 0 && value != 1)
            return dfm__fail(&tr->b, DFM_EINVAL, "DFM_OPT_GM_PART_TIMES is 0 or 1");
        tr->part_times = (int)value;
        return 0;
    default:
        if (tr_double_option(option))
            return dfm__fail(&tr->b, DFM_EINVAL, "option %d is a double option of this trainer: "
                             "use dfm_trainer_set_double", option);
        return dfm__fail(&tr->b, DFM_EINVAL, "unknown trainer option %d", option);
    }
}

int dfm_trainer_get_int(const dfm_trainer *tr, int option, int64_t *value)
{
    if (!tr || !value) return dfm__null(__func__, "tr or value");
    if (dfm__base_get_int(&tr->b, option, value) == 0) return 0;
    switch (option) {
    case DFM_OPT_REDUCTION: *value = tr->loss->reduction; return 0;
    case DFM_OPT_GM_TIME_KIND: *value = tr->time_kind; return 0;
    case DFM_OPT_GM_PART_TIMES: *value = tr->part_times; return 0;
    default:
        return dfm__error(DFM_EINVAL, "%s: %s trainer option %d%s", __func__,
                          tr_double_option(option) ? "a double" : "unknown", option,
                          tr_double_option(option) ? ": use dfm_trainer_get_double" : "");
    }
}

int dfm_trainer_set_double(dfm_trainer *tr, int option, double value)
{
    if (!tr) return dfm__null(__func__, "tr");
    DFM__NOT_RUNNING(&tr->b);
    dfm__clear(&tr->b);
    switch (option) {
    case DFM_OPT_GM_TIME_EPS:
        if (!(value >= 0.0 && value < 1.0))
            return dfm__fail(&tr->b, DFM_EINVAL, "eps must be in [0, 1), got %g", value);
        tr->eps = value;
        return 0;
    case DFM_OPT_GM_TIME_P1:
        if (!isfinite(value)) return dfm__fail(&tr->b, DFM_EINVAL, "p1 must be finite");
        tr->p1 = value;
        return 0;
    case DFM_OPT_GM_TIME_P2:
        if (!(value >= 0.0) || !isfinite(value))
            return dfm__fail(&tr->b, DFM_EINVAL, "p2 must be finite and >= 0");
        tr->p2 = value;
        return 0;
    default:
        if (tr_int_option(option))
            return dfm__fail(&tr->b, DFM_EINVAL, "option %d is an integer option of this "
                             "trainer: use dfm_trainer_set_int", option);
        return dfm__fail(&tr->b, DFM_EINVAL, "unknown trainer option %d", option);
    }
}

int dfm_trainer_get_double(const dfm_trainer *tr, int option, double *value)
{
    if (!tr || !value) return dfm__null(__func__, "tr or value");
    switch (option) {
    case DFM_OPT_GM_TIME_EPS: *value = tr->eps; return 0;
    case DFM_OPT_GM_TIME_P1: *value = tr->p1; return 0;
    case DFM_OPT_GM_TIME_P2: *value = tr->p2; return 0;
    default:
        return dfm__error(DFM_EINVAL, "%s: %s trainer option %d%s", __func__,
                          tr_int_option(option) ? "an integer" : "unknown", option,
                          tr_int_option(option) ? ": use dfm_trainer_get_int" : "");
    }
}

/* Draw t (and per-part times) and x_t for the current step into the given buffers.
 * pt gets rows x n_parts times (always filled). */
static int draw(dfm_trainer *tr, size_t rows, size_t row_offset, const int32_t *x1t,
                const float *x1r, const int32_t *x0t, const float *x0r, double *t, double *pt,
                double *tcol,
                int32_t *xtt, float *xtr, float *x0o)
{
    size_t np = dfm_path_n_parts(tr->path);
    uint32_t drawn = (uint32_t)tr->step;
    int st = dfm_time_sample(tr->b.seed, drawn, tr->time_kind, tr->p1, tr->p2, tr->eps,
                             row_offset, rows, t);
    if (st) return dfm__fail(&tr->b, st, "time sampling failed (check DFM_OPT_GM_TIME_*)");
    if (tr->part_times && np > 1) {
        /* column 0 is the row time; column k > 0 part k's own draw (seed of part k). */
        for (size_t k = 0; k < np; k++) {
            if (k == 0) { for (size_t r = 0; r < rows; r++) pt[r * np] = t[r]; continue; }
            st = dfm_time_sample(dfm__gm_part_seed(tr->b.seed, k), drawn, tr->time_kind, tr->p1,
                                 tr->p2, tr->eps, row_offset, rows, tcol);
            if (st) return dfm__fail(&tr->b, st, "time sampling failed");
            for (size_t r = 0; r < rows; r++) pt[r * np + k] = tcol[r];
        }
    } else {
        for (size_t r = 0; r < rows; r++)
            for (size_t k = 0; k < np; k++) pt[r * np + k] = t[r];
    }
    dfm_path_sample_args pa;
    memset(&pa, 0, sizeof pa);
    pa.struct_size = sizeof pa;
    pa.rows = rows;
    pa.row_offset = row_offset;
    pa.draw = drawn;
    pa.t = t;
    if (tr->path->space.n_tokens) { /* members of the absent modality stay NULL */
        pa.x1_tokens = x1t;
        pa.x0_tokens = x0t;
        pa.xt_tokens = xtt;
    }
    if (tr->path->space.n_reals) {
        pa.x1_reals = x1r;
        pa.x0_reals = x0r;
        pa.xt_reals = xtr;
        pa.x0_reals_out = x0o;
    }
    tr->path->b.seed = tr->b.seed;
    tr->path->b.nthreads = tr->b.nthreads;
    tr->path->b.spin_us = tr->b.spin_us;
    st = dfm_path_sample_parts(tr->path, &pa, tr->part_times && np > 1 ? pt : NULL);
    if (st) {
        tr->b.cb_raw = tr->path->b.cb_raw;
        return dfm__fail(&tr->b, st, "path: %s", tr->path->b.err);
    }
    return 0;
}

typedef struct tbuf {
    char *blk;
    double *t, *pt, *values;
    int32_t *xtt;
    float *xtr, *x0o, *out, *grad;
} tbuf;

static int tbuf_alloc(dfm_trainer *tr, size_t rows, tbuf *b)
{
    size_t nt = tr->path->space.n_tokens, nr = tr->path->space.n_reals,
           np = dfm_path_n_parts(tr->path), S = tr->loss->out_stride, tmp;
    memset(b, 0, sizeof *b);
    if (np + 2 * nt + 3 * nr + 2 > SIZE_MAX / 16 - S)
        return dfm__fail(&tr->b, DFM_EOVERFLOW, "the row size overflows");
    tmp = 8 * (np + 2 * nt + 3 * nr + 2 * S + 2);
    if (dfm__rows_fit(&tr->b, rows, tmp, "the training batch")) return DFM_EOVERFLOW;
    size_t bytes = sizeof(double) * rows * (2 + np + nt + nr) +
                   sizeof(int32_t) * rows * nt + sizeof(float) * rows * (3 * nr + 2 * S) + 16;
    if (bytes > tr->cap) {
        char *nb = (char *)dfm__alloc(&tr->b.mem, bytes);
        if (!nb) return dfm__fail_nomem(&tr->b, "training batch", rows, DFM__HINT_ROWS);
        dfm__free(&tr->b.mem, tr->scratch);
        tr->scratch = nb;
        tr->cap = bytes;
    }
    b->blk = tr->scratch;
    b->t = (double *)b->blk;
    b->pt = b->t + rows;
    b->values = b->pt + rows * np;
    b->xtr = (float *)(b->values + rows * (nt + nr));
    b->x0o = b->xtr + rows * nr;
    b->out = b->x0o + rows * nr;
    b->grad = b->out + rows * S;
    b->xtt = (int32_t *)(b->grad + rows * S);
    return 0;
}

/* The other modality's members must be NULL (docs/gm.md). */
static int tr_modality(dfm_trainer *tr, const int32_t *x1t, const int32_t *x0t,
                       const uint8_t *fixed, const float *x1r, const float *x0r)
{
    const char *bad = NULL;
    if (!tr->path->space.n_tokens)
        bad = x1t ? "x1_tokens" : x0t ? "x0_tokens" : fixed ? "fixed" : NULL;
    if (!bad && !tr->path->space.n_reals) bad = x1r ? "x1_reals" : x0r ? "x0_reals" : NULL;
    if (!bad) return 0;
    return dfm__fail(&tr->b, DFM_EINVAL, "args->%s must be NULL: the space has no %s", bad,
                     bad[3] == 't' || bad[0] == 'f' ? "tokens" : "reals");
}

static int trainer_draw(dfm_trainer *tr, const dfm_train_draw_args *a)
{
    if (!a) return dfm__fail(&tr->b, DFM_EINVAL, "args is NULL");
    if (a->struct_size < sizeof(dfm_train_draw_args))
        return dfm__fail(&tr->b, DFM_EINVAL, "args->struct_size is too small");
    size_t nt = tr->path->space.n_tokens, nr = tr->path->space.n_reals, rows = a->rows;
    size_t nts = dfm_trainer_n_times(tr), np = dfm_path_n_parts(tr->path);
    if (rows == 0) return 0;
    if (tr_modality(tr, a->x1_tokens, a->x0_tokens, NULL, a->x1_reals, a->x0_reals))
        return DFM_EINVAL;
    if (!a->t) return dfm__fail(&tr->b, DFM_EINVAL, "args->t is NULL");
    if (nt && (!a->x1_tokens || !a->xt_tokens))
        return dfm__fail(&tr->b, DFM_EINVAL, "args->x1_tokens / xt_tokens is NULL");
    if (nr && (!a->x1_reals || !a->xt_reals))
        return dfm__fail(&tr->b, DFM_EINVAL, "args->x1_reals / xt_reals is NULL");
    tbuf b;
    int st = tbuf_alloc(tr, rows, &b);
    if (st) return st;
    st = draw(tr, rows, a->row_offset, a->x1_tokens, a->x1_reals, a->x0_tokens, a->x0_reals, b.t,
              b.pt, b.values, b.xtt, b.xtr, b.x0o);
    if (!st) {
        memcpy(a->t, b.t, rows * sizeof(double));
        if (a->part_t)
            for (size_t r = 0; r < rows; r++)
                for (size_t k = 0; k < nts; k++) a->part_t[r * nts + k] = b.pt[r * np + k];
        if (nt) memcpy(a->xt_tokens, b.xtt, rows * nt * sizeof(int32_t));
        if (nr) memcpy(a->xt_reals, b.xtr, rows * nr * sizeof(float));
        if (nr && a->x0_reals_out) memcpy(a->x0_reals_out, b.x0o, rows * nr * sizeof(float));
    }
    return st;
}

int dfm_trainer_draw(dfm_trainer *tr, const dfm_train_draw_args *a)
{
    if (!tr) return dfm__null(__func__, "tr");
    int st = dfm__enter(&tr->b, __func__);
    if (st) return st;
    return dfm__leave(&tr->b, trainer_draw(tr, a));
}

/* The step's arguments. */
static int step_check(dfm_trainer *tr, const dfm_train_args *a)
{
    if (!a) return dfm__fail(&tr->b, DFM_EINVAL, "args is NULL");
    if (a->struct_size < sizeof(dfm_train_args))
        return dfm__fail(&tr->b, DFM_EINVAL, "args->struct_size is too small");
    if (!a->forward) return dfm__fail(&tr->b, DFM_EINVAL, "args->forward is NULL");
    if (!a->loss) return dfm__fail(&tr->b, DFM_EINVAL, "args->loss is NULL");
    if (a->rows == 0) return dfm__fail(&tr->b, DFM_EINVAL, "a training step needs rows > 0");
    if (tr_modality(tr, a->x1_tokens, a->x0_tokens, a->fixed, a->x1_reals, a->x0_reals))
        return DFM_EINVAL;
    if (tr->path->space.n_tokens && !a->x1_tokens)
        return dfm__fail(&tr->b, DFM_EINVAL, "args->x1_tokens is NULL");
    if (tr->path->space.n_reals && !a->x1_reals)
        return dfm__fail(&tr->b, DFM_EINVAL, "args->x1_reals is NULL");
    return 0;
}

/* The forward call on the drawn batch; its output is marked unwritten first (the entries the
 * loss checks for the mark). */
static int step_forward(dfm_trainer *tr, const dfm_train_args *a, const tbuf *b, dfm_model_io *io)
{
    size_t nt = tr->path->space.n_tokens, nr = tr->path->space.n_reals;
    memset(io, 0, sizeof *io);
    io->struct_size = sizeof *io;
    io->rows = a->rows;
    io->row_offset = a->row_offset;
    io->t = b->t;
    io->tokens = nt ? b->xtt : NULL;
    io->n_tokens = nt;
    io->reals = nr ? b->xtr : NULL;
    io->n_reals = nr;
    io->out = b->out;
    io->out_stride = tr->loss->out_stride;
    io->branch = DFM_BRANCH_MAIN;
    io->step = -1;
    io->part_t = b->pt;
    io->n_part_t = dfm_path_n_parts(tr->path);
    dfm__gm_loss_prefill(tr->loss, nt, b->out, a->rows);
    int raw = a->forward(io, a->user_data);
    if (raw) return dfm__fail_callback(&tr->b, raw, "forward");
    return dfm__callback_freed();
}

/* The loss at the drawn batch and the forward output; its gradient into b->grad. */
static int step_loss(dfm_trainer *tr, const dfm_train_args *a, const tbuf *b, double *loss)
{
    size_t nt = tr->path->space.n_tokens, nr = tr->path->space.n_reals;
    dfm_loss_args la;
    memset(&la, 0, sizeof la);
    la.struct_size = sizeof la;
    la.rows = a->rows;
    la.t = b->t;
    la.x1_tokens = a->x1_tokens;
    la.xt_tokens = nt ? b->xtt : NULL;
    la.fixed = a->fixed;
    la.x0_reals = nr ? b->x0o : NULL;
    la.x1_reals = a->x1_reals;
    la.xt_reals = nr ? b->xtr : NULL;
    la.out = b->out;
    la.grad = b->grad;
    la.values = b->values;
    la.loss = loss;
    tr->loss->b.nthreads = tr->b.nthreads;
    tr->loss->b.spin_us = tr->b.spin_us;
    int parts = tr->part_times && dfm_path_n_parts(tr->path) > 1;
    int st = dfm__gm_loss_eval_in_place(tr->loss, &la, parts ? b->pt : NULL);
    if (st) {
        tr->b.cb_raw = tr->loss->b.cb_raw;
        return dfm__fail(&tr->b, st, "loss: %s", tr->loss->b.err);
    }
    return 0;
}

/* Draw, forward, loss, backward; the loss, times and step count are written on success. The
 * gradient goes from the loss to the backward callback in the trainer's scratch. */
static int trainer_step(dfm_trainer *tr, const dfm_train_args *a)
{
    int st = step_check(tr, a);
    if (st) return st;
    size_t nt = tr->path->space.n_tokens, rows = a->rows;
    size_t np = dfm_path_n_parts(tr->path), nts = dfm_trainer_n_times(tr);
    tbuf b;
    st = tbuf_alloc(tr, rows, &b);
    if (st) return st;
    st = draw(tr, rows, a->row_offset, a->x1_tokens, a->x1_reals, a->x0_tokens, a->x0_reals, b.t,
              b.pt, b.values, b.xtt, b.xtr, b.x0o);
    if (!st && a->fixed) /* fixed positions are given: never noised */
        for (size_t j = 0; j < rows * nt; j++)
            if (a->fixed[j]) b.xtt[j] = a->x1_tokens[j];
    dfm_model_io io;
    if (!st) st = step_forward(tr, a, &b, &io);
    double loss = 0.0;
    if (!st) st = step_loss(tr, a, &b, &loss);
    if (!st && a->backward) {
        int raw = a->backward(&io, b.grad, a->user_data);
        if (raw) st = dfm__fail_callback(&tr->b, raw, "backward");
        else st = dfm__callback_freed();
    }
    if (!st) {
        *a->loss = loss;
        if (a->t_out)
            for (size_t r = 0; r < rows; r++)
                for (size_t k = 0; k < nts; k++) a->t_out[r * nts + k] = b.pt[r * np + k];
        tr->step++;
    }
    return st;
}

int dfm_trainer_step(dfm_trainer *tr, const dfm_train_args *a)
{
    if (!tr) return dfm__null(__func__, "tr");
    int st = dfm__enter(&tr->b, __func__);
    if (st) return st;
    return dfm__leave(&tr->b, trainer_step(tr, a));
}

/* ---- general generator-matching loss ---- */

typedef struct gml {
    int kind;
    dfm_cond_target_fn fn;
    void *user;
    dfm_space space;
} gml;

static void gml_destroy(dfm_loss *l)
{
    dfm__free(&l->b.mem, l->impl);
    l->impl = NULL;
}

static int gml_clone(dfm_loss *dst, const dfm_loss *src)
{
    gml *d = (gml *)dfm__alloc(&dst->b.mem, sizeof(gml));
    if (!d) return DFM_ENOMEM;
    *d = *(const gml *)src->impl;
    dst->impl = d;
    return 0;
}

/* Sizes, and for rates the tokens (present, in range); *Vmax = the largest vocabulary. */
static int gml_check(dfm_loss *l, const dfm_loss_args *a, size_t *Vmax)
{
    const gml *g = (const gml *)l->impl;
    size_t rows = a->rows, S = l->out_stride, nt = g->space.n_tokens, nr = g->space.n_reals;
    size_t tmp;
    *Vmax = 1;
    if (dfm__mul3(rows, S + nt + nr + 1, 8, &tmp))
        return dfm__fail(&l->b, DFM_EOVERFLOW, "rows x row size overflows");
    if (g->kind != DFM_GM_RATES) return 0;
    if (rows && (!a->xt_tokens || !a->x1_tokens))
        return dfm__fail(&l->b, DFM_EINVAL, "args->xt_tokens / x1_tokens is NULL");
    size_t bad;
    if (dfm_space_check_tokens(&g->space, a->xt_tokens, rows, &bad))
        return dfm__fail(&l->b, DFM_ERANGE, "xt_tokens[row %zu][coord %zu] is out of range",
                         bad / nt, bad % nt);
    for (size_t j = 0; j < nt; j++)
        if ((size_t)dfm__space_vocab(&g->space, j) > *Vmax)
            *Vmax = (size_t)dfm__space_vocab(&g->space, j);
    return 0;
}

/* The host's conditional generator at (t, x_t | x1, x0) into target. */
static int gml_target(dfm_loss *l, const dfm_loss_args *a, float *target)
{
    const gml *g = (const gml *)l->impl;
    dfm_cond_target_io io;
    memset(&io, 0, sizeof io);
    io.struct_size = sizeof io;
    io.rows = a->rows;
    io.t = a->t;
    io.xt_tokens = a->xt_tokens;
    io.x1_tokens = a->x1_tokens;
    io.n_tokens = g->space.n_tokens;
    io.xt_reals = a->xt_reals;
    io.x1_reals = a->x1_reals;
    io.x0_reals = a->x0_reals;
    io.n_reals = g->space.n_reals;
    io.target = target;
    io.target_stride = l->out_stride;
    int raw = a->rows ? g->fn(&io, g->user) : 0;
    if (raw) return dfm__fail_callback(&l->b, raw, "conditional target");
    return dfm__callback_freed();
}

/* Velocity row r: squared errors (out - target)^2 into vals, their gradient 2 (out - target). */
static int gml_velocity_row(dfm_loss *l, size_t r, const float *o, const float *tg, float *gr,
                            double *vals, double *total)
{
    for (size_t j = 0; j < l->out_stride; j++) {
        if (!isfinite(o[j]) && dfm__fail_unwritten(&l->b, "model", o, 1, l->out_stride, 1, 0, j,
                                                    j + 1, r))
            return DFM_ENUMERIC;
        if (!isfinite(o[j]) || !isfinite(tg[j]))
            return dfm__fail(&l->b, DFM_ENUMERIC, "%s[row %zu][coord %zu] is not finite",
                             isfinite(o[j]) ? "target" : "out", r, j);
        double e = (double)o[j] - (double)tg[j];
        vals[j] = e * e;
        *total += e * e;
        gr[j] = (float)(2.0 * e);
    }
    return 0;
}

/* Rates row r: per free token, the Bregman divergence of the target and model rates out of x_t
 * (dfm_bregman_rates on the entries y != x_t) into vals, its gradient into gr (0 at x_t). ab,
 * bb, gb: Vmax doubles each. */
static int gml_rates_row(dfm_loss *l, const dfm_loss_args *a, size_t r, const float *o,
                         const float *tg, float *gr, double *vals, double *ab, double *bb,
                         double *gb, double *total, size_t *counted)
{
    const gml *g = (const gml *)l->impl;
    size_t nt = g->space.n_tokens, off = 0;
    for (size_t i = 0; i < nt; i++) {
        size_t V = (size_t)dfm__space_vocab(&g->space, i);
        int32_t x = a->xt_tokens[r * nt + i];
        if (a->fixed && a->fixed[r * nt + i]) { off += V; continue; }
        size_t m = 0;
        for (size_t y = 0; y < V; y++) {
            if ((int32_t)y == x) continue;
            ab[m] = tg[off + y];
            bb[m] = o[off + y];
            m++;
        }
        double v;
        int bst = dfm_bregman_rates(ab, bb, m, &v, gb);
        if (bst && (dfm__fail_unwritten(&l->b, "model", o, 1, l->out_stride, 1, 0, off,
                                        off + (size_t)x, r) ||
                    dfm__fail_unwritten(&l->b, "model", o, 1, l->out_stride, 1, 0,
                                        off + (size_t)x + 1, off + V, r)))
            return DFM_ENUMERIC;
        if (bst)
            return dfm__fail(&l->b, bst, "out[row %zu][coord %zu]: invalid rates (target and model "
                             "rates must be finite and >= 0, model > 0 where the target is)",
                             r, i);
        m = 0;
        for (size_t y = 0; y < V; y++) gr[off + y] = (int32_t)y == x ? 0.0f : (float)gb[m++];
        vals[i] = v;
        *total += v;
        (*counted)++;
        off += V;
    }
    return 0;
}

/* The host's target, then per row the velocity or rates divergence; reduced on success. */
static int gml_eval(dfm_loss *l, const dfm_loss_args *a)
{
    const gml *g = (const gml *)l->impl;
    size_t rows = a->rows, S = l->out_stride, Vmax;
    int st = gml_check(l, a, &Vmax);
    if (st) return st;
    size_t ncol = g->space.n_tokens + g->space.n_reals;
    size_t bytes = sizeof(float) * rows * 2 * S + sizeof(double) * (rows * ncol + 3 * Vmax) + 16;
    char *blk = (char *)dfm__calloc(&l->b.mem, 1, bytes);
    if (!blk) return dfm__fail_nomem(&l->b, "loss scratch", rows, DFM__HINT_ROWS);
    double *vals = (double *)blk, *ab = vals + rows * ncol, *bb = ab + Vmax, *gb = bb + Vmax;
    float *target = (float *)(gb + Vmax), *grad = target + rows * S;
    st = gml_target(l, a, target);
    double total = 0.0;
    size_t counted = 0;
    for (size_t r = 0; r < rows && !st; r++) {
        const float *o = a->out + r * S, *tg = target + r * S;
        if (g->kind == DFM_GM_VELOCITY) {
            st = gml_velocity_row(l, r, o, tg, grad + r * S, vals + r * ncol, &total);
            counted += S;
        } else {
            st = gml_rates_row(l, a, r, o, tg, grad + r * S, vals + r * ncol, ab, bb, gb, &total,
                               &counted);
        }
    }
    if (!st) {
        double scale = 1.0;
        if (l->reduction == DFM_REDUCE_MEAN) scale = counted ? 1.0 / (double)counted : 0.0;
        if (a->grad)
            for (size_t j = 0; j < rows * S; j++) a->grad[j] = (float)((double)grad[j] * scale);
        if (l->reduction == DFM_REDUCE_NONE) memcpy(a->values, vals, rows * ncol * sizeof(double));
        *a->loss = total * scale;
    }
    dfm__free(&l->b.mem, blk);
    return st;
}

static const dfm__loss_ops gml_ops = {gml_destroy, gml_clone, gml_eval, NULL, NULL, NULL, NULL};

int dfm_loss_create_gm(dfm_loss **out, const dfm_space *space, int kind, dfm_cond_target_fn fn,
                       void *user_data, const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!space || !fn) return dfm__null(__func__, "space or fn");
    size_t stride = 0;
    if (kind == DFM_GM_VELOCITY) {
        if (space->n_tokens || !space->n_reals)
            return dfm__error(DFM_EINVAL, "%s: DFM_GM_VELOCITY needs a space of reals only",
                              __func__);
        stride = space->n_reals;
    } else if (kind == DFM_GM_RATES) {
        if (space->n_reals || !space->n_tokens)
            return dfm__error(DFM_EINVAL, "%s: DFM_GM_RATES needs a space of tokens only",
                              __func__);
        for (size_t j = 0; j < space->n_tokens; j++) {
            size_t V = (size_t)dfm__space_vocab(space, j);
            if (stride > SIZE_MAX - V)
                return dfm__error(DFM_EOVERFLOW, "%s: the output size overflows", __func__);
            stride += V;
        }
    } else {
        return dfm__error(DFM_EINVAL, "%s: unknown kind %d", __func__, kind);
    }
    dfm_loss *l;
    int st = dfm__loss_new(&l, kind == DFM_GM_VELOCITY ? DFM_LOSS_MSE : DFM_LOSS_BREGMAN_RATES,
                           &gml_ops, NULL, mem);
    if (st) return st;
    gml *g = (gml *)dfm__alloc(&l->b.mem, sizeof(gml));
    if (!g) {
        dfm_loss_free(l);
        return dfm__error(DFM_ENOMEM, "%s: cannot allocate the loss", __func__);
    }
    g->kind = kind;
    g->fn = fn;
    g->user = user_data;
    g->space = *space;
    l->impl = g;
    l->out_stride = stride;
    l->n_tokens = space->n_tokens;
    l->n_reals = space->n_reals;
    *out = l;
    return 0;
}
