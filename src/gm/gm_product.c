/* Product (multimodal) paths, generators and losses: each part keeps its own path, generator
 * or loss; the product gathers part k's slices of tokens, reals and model output, runs the
 * part, and scatters the results back (docs/gm.md). */
#include "gm/gm_impl.h"

#include <math.h>
#include <stdio.h>

/* ---- part slices ---- */

/* Copy columns [off, off + n) of rows x width src into rows x n dst (and back). */
static void gather(void *dst, const void *src, size_t rows, size_t width, size_t off, size_t n,
                   size_t es)
{
    if (!n) return;
    for (size_t r = 0; r < rows; r++)
        memcpy((char *)dst + r * n * es, (const char *)src + (r * width + off) * es, n * es);
}
static void scatter(void *dst, const void *src, size_t rows, size_t width, size_t off, size_t n,
                    size_t es)
{
    if (!n) return;
    for (size_t r = 0; r < rows; r++)
        memcpy((char *)dst + (r * width + off) * es, (const char *)src + r * n * es, n * es);
}

/* ---- product path ---- */

static void pp_destroy(dfm_path *p)
{
    dfm__gm_ppath *pp = (dfm__gm_ppath *)p->impl;
    if (!pp) return;
    for (size_t k = 0; k < pp->n; k++) dfm_path_free(pp->parts[k]);
    dfm__free(&p->b.mem, pp);
    p->impl = NULL;
}

static int pp_clone(dfm_path *dst, const dfm_path *src)
{
    const dfm__gm_ppath *s = (const dfm__gm_ppath *)src->impl;
    dfm__gm_ppath *d = (dfm__gm_ppath *)dfm__calloc(&dst->b.mem, 1, sizeof *d);
    if (!d) return DFM_ENOMEM;
    dst->impl = d;
    memcpy(d->slot, s->slot, sizeof d->slot);
    for (size_t k = 0; k < s->n; k++) {
        int st = dfm_path_clone(&d->parts[k], s->parts[k], &dst->b.mem);
        if (st) { pp_destroy(dst); return st; }
        d->n = k + 1;
    }
    return 0;
}

/* Scratch of a product path sample: the whole outputs (written to the host only on success),
 * one part's inputs and outputs, and the part's times. */
typedef struct pp_scratch {
    char *blk;
    float *px0o;                     /* part's x0 out (its own block) */
    double *tk;                      /* rows: the part's times */
    int32_t *xt_t, *x1_t, *x0_t, *pxt;
    float *xt_r, *tg_r, *x0o_r, *x1_r, *x0_r, *pxr, *ptg;
} pp_scratch;

static int pp_scratch_alloc(dfm_path *p, size_t rows, pp_scratch *w)
{
    size_t nt = p->space.n_tokens, nr = p->space.n_reals;
    size_t bytes = rows * (nt * 4 * sizeof(int32_t) + nr * 7 * sizeof(float) + sizeof(double));
    memset(w, 0, sizeof *w);
    w->blk = (char *)dfm__alloc(&p->b.mem, bytes ? bytes : 1);
    if (!w->blk) return dfm__fail_nomem(&p->b, "product sampling scratch", rows, DFM__HINT_ROWS);
    w->tk = (double *)w->blk; /* doubles first: every block below stays aligned */
    w->xt_t = (int32_t *)(w->tk + rows);
    w->x1_t = w->xt_t + rows * nt;
    w->x0_t = w->x1_t + rows * nt;
    w->pxt = w->x0_t + rows * nt;
    w->xt_r = (float *)(w->pxt + rows * nt);
    w->tg_r = w->xt_r + rows * nr;
    w->x0o_r = w->tg_r + rows * nr;
    w->x1_r = w->x0o_r + rows * nr;
    w->x0_r = w->x1_r + rows * nr;
    w->pxr = w->x0_r + rows * nr;
    w->ptg = w->pxr + rows * nr;
    w->px0o = (float *)dfm__alloc(&p->b.mem, rows * (nr ? nr : 1) * sizeof(float));
    if (!w->px0o) {
        dfm__free(&p->b.mem, w->blk);
        return dfm__fail_nomem(&p->b, "product sampling scratch", rows, DFM__HINT_ROWS);
    }
    return 0;
}

/* Part arguments: part k's slices of the host's inputs, its outputs in the scratch. */
static void pp_part_args(const dfm_path *p, const dfm_path_sample_args *a, const dfm__gm_slot *sl,
                         pp_scratch *w, dfm_path_sample_args *pa)
{
    size_t rows = a->rows, nt = p->space.n_tokens, nr = p->space.n_reals;
    memset(pa, 0, sizeof *pa);
    pa->struct_size = sizeof *pa;
    pa->rows = rows;
    pa->row_offset = a->row_offset;
    pa->draw = a->draw;
    pa->t = w->tk;
    if (sl->n_tok) {
        gather(w->x1_t, a->x1_tokens, rows, nt, sl->tok_off, sl->n_tok, sizeof(int32_t));
        pa->x1_tokens = w->x1_t;
        if (a->x0_tokens) {
            gather(w->x0_t, a->x0_tokens, rows, nt, sl->tok_off, sl->n_tok, sizeof(int32_t));
            pa->x0_tokens = w->x0_t;
        }
        pa->xt_tokens = w->pxt;
    }
    if (sl->n_real) {
        gather(w->x1_r, a->x1_reals, rows, nr, sl->real_off, sl->n_real, sizeof(float));
        pa->x1_reals = w->x1_r;
        if (a->x0_reals) {
            gather(w->x0_r, a->x0_reals, rows, nr, sl->real_off, sl->n_real, sizeof(float));
            pa->x0_reals = w->x0_r;
        }
        pa->xt_reals = w->pxr;
        pa->target_reals = a->target_reals ? w->ptg : NULL;
        pa->x0_reals_out = w->px0o;
    }
}

/* Part k's outputs into their slices of the whole outputs. */
static void pp_part_scatter(const dfm_path *p, const dfm_path_sample_args *a,
                            const dfm__gm_slot *sl, pp_scratch *w)
{
    size_t rows = a->rows, nt = p->space.n_tokens, nr = p->space.n_reals;
    if (sl->n_tok) scatter(w->xt_t, w->pxt, rows, nt, sl->tok_off, sl->n_tok, sizeof(int32_t));
    if (sl->n_real) {
        scatter(w->xt_r, w->pxr, rows, nr, sl->real_off, sl->n_real, sizeof(float));
        if (a->target_reals)
            scatter(w->tg_r, w->ptg, rows, nr, sl->real_off, sl->n_real, sizeof(float));
        scatter(w->x0o_r, w->px0o, rows, nr, sl->real_off, sl->n_real, sizeof(float));
    }
}

/* Every part succeeded: the whole outputs go to the host. */
static void pp_commit(const dfm_path *p, const dfm_path_sample_args *a, const pp_scratch *w)
{
    size_t rows = a->rows, nt = p->space.n_tokens, nr = p->space.n_reals;
    if (nt) memcpy(a->xt_tokens, w->xt_t, rows * nt * sizeof(int32_t));
    if (nr) {
        memcpy(a->xt_reals, w->xt_r, rows * nr * sizeof(float));
        if (a->target_reals) memcpy(a->target_reals, w->tg_r, rows * nr * sizeof(float));
        if (a->x0_reals_out) memcpy(a->x0_reals_out, w->x0o_r, rows * nr * sizeof(float));
    }
}

/* Sample every part on its slices (part k at part_t[r][k], or at t[r]), then write back. */
static int pp_sample_impl(dfm_path *p, const dfm_path_sample_args *a, const double *part_t)
{
    const dfm__gm_ppath *pp = (const dfm__gm_ppath *)p->impl;
    size_t rows = a->rows, nt = p->space.n_tokens, nr = p->space.n_reals, n = pp->n;
    if (rows == 0) return 0;
    size_t tmp;
    if (dfm__mul3(rows, nt + nr + 1, 8, &tmp))
        return dfm__fail(&p->b, DFM_EOVERFLOW, "rows x row size overflows");
    if (nt && (!a->x1_tokens || !a->xt_tokens))
        return dfm__fail(&p->b, DFM_EINVAL, "args->x1_tokens / xt_tokens is NULL");
    if (nr && (!a->x1_reals || !a->xt_reals))
        return dfm__fail(&p->b, DFM_EINVAL, "args->x1_reals / xt_reals is NULL");
    pp_scratch w;
    int st = pp_scratch_alloc(p, rows, &w);
    if (st) return st;
    for (size_t k = 0; k < n && !st; k++) {
        dfm_path *q = pp->parts[k];
        q->b.seed = dfm__gm_part_seed(p->b.seed, k);
        q->b.nthreads = p->b.nthreads;
        q->b.spin_us = p->b.spin_us;
        for (size_t r = 0; r < rows; r++) w.tk[r] = part_t ? part_t[r * n + k] : a->t[r];
        dfm_path_sample_args pa;
        pp_part_args(p, a, &pp->slot[k], &w, &pa);
        st = dfm_path_sample(q, &pa);
        if (st) {
            p->b.cb_raw = q->b.cb_raw;
            st = dfm__fail(&p->b, st, "part %zu: %s", k, q->b.err);
            break;
        }
        pp_part_scatter(p, a, &pp->slot[k], &w);
    }
    if (!st) pp_commit(p, a, &w);
    dfm__free(&p->b.mem, w.px0o);
    dfm__free(&p->b.mem, w.blk);
    return st;
}

static int pp_sample(dfm_path *p, const dfm_path_sample_args *a)
{
    return pp_sample_impl(p, a, NULL);
}

static const dfm__path_ops pp_ops = {pp_destroy, pp_clone, pp_sample, NULL};

int dfm__gm_is_product_path(const dfm_path *p) { return p && p->ops == &pp_ops; }
const dfm__gm_ppath *dfm__gm_ppath_of(const dfm_path *p)
{
    return dfm__gm_is_product_path(p) ? (const dfm__gm_ppath *)p->impl : NULL;
}

int dfm_path_create_product(dfm_path **out, const dfm_path *const *parts, size_t n,
                            const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!parts) return dfm__null(__func__, "parts");
    if (n == 0 || n > DFM__GM_MAXP)
        return dfm__error(DFM_EINVAL, "%s: n must be in [1, %d], got %zu", __func__, DFM__GM_MAXP,
                          n);
    const dfm_space *sp[DFM__GM_MAXP];
    for (size_t k = 0; k < n; k++) {
        if (!parts[k]) return dfm__error(DFM_EINVAL, "%s: parts[%zu] is NULL", __func__, k);
        if (!parts[k]->ops || !parts[k]->ops->sample)
            return dfm__error(DFM_EINVAL, "%s: parts[%zu] (kind %d) cannot sample", __func__, k,
                              parts[k]->kind);
        sp[k] = &parts[k]->space;
    }
    dfm_space *prod;
    int st = dfm_space_create_product(&prod, sp, n, mem);
    if (st) return st;
    dfm_path *p;
    st = dfm__path_new(&p, DFM_PATH_PRODUCT, &pp_ops, prod, NULL, mem);
    dfm_space_free(prod);
    if (st) return st;
    dfm__gm_ppath *pp = (dfm__gm_ppath *)dfm__calloc(&p->b.mem, 1, sizeof *pp);
    if (!pp) {
        dfm_path_free(p);
        return dfm__error(DFM_ENOMEM, "%s: cannot allocate the path", __func__);
    }
    p->impl = pp;
    dfm__gm_slots(sp, NULL, n, pp->slot);
    for (size_t k = 0; k < n; k++) {
        st = dfm_path_clone(&pp->parts[k], parts[k], &p->b.mem);
        if (st) { dfm_path_free(p); return st; }
        pp->n = k + 1;
    }
    *out = p;
    return 0;
}

size_t dfm_path_n_parts(const dfm_path *p)
{
    if (!p) return 0;
    const dfm__gm_ppath *pp = dfm__gm_ppath_of(p);
    return pp ? pp->n : 1;
}

const dfm_path *dfm_path_part(const dfm_path *p, size_t k)
{
    const dfm__gm_ppath *pp = dfm__gm_ppath_of(p);
    if (!pp) return k == 0 ? p : NULL;
    return k < pp->n ? pp->parts[k] : NULL;
}

static int check_times(dfm_base *b, const double *t, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (!dfm__time_ok(t[i]))
            return dfm__fail(b, DFM_ERANGE, "%s[%zu] = %g is outside [0, 1]", what, i, t[i]);
    return 0;
}

static int path_sample_parts(dfm_path *p, const dfm_path_sample_args *a, const double *part_t)
{
    if (!part_t) return dfm__path_sample(p, a);
    if (!a) return dfm__fail(&p->b, DFM_EINVAL, "args is NULL");
    if (a->struct_size < sizeof(size_t) * 3)
        return dfm__fail(&p->b, DFM_EINVAL, "args->struct_size is too small");
    size_t n = dfm_path_n_parts(p), cnt;
    if (dfm__mul(a->rows, n, &cnt)) return dfm__fail(&p->b, DFM_EOVERFLOW, "rows x parts overflows");
    int st = check_times(&p->b, part_t, cnt, "part_t");
    if (st) return st;
    if (!dfm__gm_is_product_path(p)) {
        dfm_path_sample_args b = *a;
        b.t = part_t;
        return dfm__path_sample(p, &b);
    }
    if (a->rows && !a->t) return dfm__fail(&p->b, DFM_EINVAL, "args->t is NULL");
    return pp_sample_impl(p, a, part_t);
}

int dfm_path_sample_parts(dfm_path *p, const dfm_path_sample_args *a, const double *part_t)
{
    if (!p) return dfm__null(__func__, "p");
    int st = dfm__enter(&p->b, __func__);
    if (st) return st;
    return dfm__leave(&p->b, path_sample_parts(p, a, part_t));
}

/* ---- product generator ---- */

static void pg_destroy(dfm_generator *g)
{
    dfm__gm_pgen *pg = (dfm__gm_pgen *)g->impl;
    if (!pg) return;
    for (size_t k = 0; k < pg->n; k++) dfm_generator_free(pg->parts[k]);
    dfm__free(&g->b.mem, pg);
    g->impl = NULL;
}

static int pg_clone(dfm_generator *dst, const dfm_generator *src)
{
    const dfm__gm_pgen *s = (const dfm__gm_pgen *)src->impl;
    dfm__gm_pgen *d = (dfm__gm_pgen *)dfm__calloc(&dst->b.mem, 1, sizeof *d);
    if (!d) return DFM_ENOMEM;
    *d = *s;
    d->n = 0;
    dst->impl = d;
    for (size_t k = 0; k < s->n; k++) {
        int st = dfm_generator_clone(&d->parts[k], s->parts[k], &dst->b.mem);
        if (st) { pg_destroy(dst); return st; }
        d->n = k + 1;
    }
    return 0;
}

static const dfm__gen_ops pg_ops = {pg_destroy, pg_clone, dfm__gm_sampler_init, NULL, NULL, NULL,
                                    NULL};

int dfm_generator_create_product(dfm_generator **out, const dfm_generator *const *parts, size_t n,
                                 const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!parts) return dfm__null(__func__, "parts");
    if (n == 0 || n > DFM__GM_MAXP)
        return dfm__error(DFM_EINVAL, "%s: n must be in [1, %d], got %zu", __func__, DFM__GM_MAXP,
                          n);
    const dfm_path *paths[DFM__GM_MAXP];
    const dfm_space *sp[DFM__GM_MAXP];
    size_t strides[DFM__GM_MAXP], total = 0, utotal = 0;
    for (size_t k = 0; k < n; k++) {
        int cont;
        if (!parts[k]) return dfm__error(DFM_EINVAL, "%s: parts[%zu] is NULL", __func__, k);
        if (!dfm__gm_steppable(parts[k], &cont, NULL))
            return dfm__error(DFM_EUNSUPPORTED, "%s: parts[%zu] (generator kind %d) cannot be a "
                              "part", __func__, k, parts[k]->kind);
        if (!parts[k]->path)
            return dfm__error(DFM_EINVAL, "%s: parts[%zu] has no path", __func__, k);
        paths[k] = parts[k]->path;
        sp[k] = &parts[k]->path->space;
        strides[k] = dfm__gm_branch_stride(parts[k], DFM_BRANCH_MAIN);
        if (total > SIZE_MAX - strides[k])
            return dfm__error(DFM_EOVERFLOW, "%s: the output size overflows", __func__);
        total += strides[k];
        utotal += dfm__gm_branch_stride(parts[k], DFM_BRANCH_UNCOND);
    }
    dfm_path *pp;
    int st = dfm_path_create_product(&pp, paths, n, mem);
    if (st) return st;
    dfm_generator *g;
    st = dfm__gen_new(&g, DFM_GEN_PRODUCT, DFM_PARAM_MIXED, total, &pg_ops, pp, mem);
    dfm_path_free(pp);
    if (st) return st;
    dfm__gm_pgen *pg = (dfm__gm_pgen *)dfm__calloc(&g->b.mem, 1, sizeof *pg);
    if (!pg) {
        dfm_generator_free(g);
        return dfm__error(DFM_ENOMEM, "%s: cannot allocate the generator", __func__);
    }
    g->impl = pg;
    dfm__gm_slots(sp, strides, n, pg->slot);
    size_t uo = 0;
    for (size_t k = 0; k < n; k++) {
        pg->uoff[k] = uo;
        uo += dfm__gm_branch_stride(parts[k], DFM_BRANCH_UNCOND);
        st = dfm_generator_clone(&pg->parts[k], parts[k], &g->b.mem);
        if (st) { dfm_generator_free(g); return st; }
        pg->n = k + 1;
    }
    pg->bstride[0] = total;
    pg->bstride[1] = utotal;
    *out = g;
    return 0;
}

int dfm_generator_set_part_time_fn(dfm_generator *g, dfm_part_time_fn fn, void *user_data)
{
    if (!g) return dfm__null(__func__, "g");
    DFM__NOT_RUNNING(&g->b);
    dfm__clear(&g->b);
    if (!dfm__gm_is_pgen(g))
        return dfm__fail(&g->b, DFM_EUNSUPPORTED, "not a product generator");
    dfm__gm_pgen *pg = (dfm__gm_pgen *)g->impl;
    pg->ptfn = fn;
    pg->ptud = fn ? user_data : NULL;
    return 0;
}

size_t dfm_generator_n_parts(const dfm_generator *g)
{
    if (!g) return 0;
    return dfm__gm_is_pgen(g) ? ((const dfm__gm_pgen *)g->impl)->n : 1;
}

/* ---- product loss ---- */

typedef struct dfm__gm_ploss {
    size_t n;
    dfm_loss *parts[DFM__GM_MAXP];
    double w[DFM__GM_MAXP];
    dfm__gm_slot slot[DFM__GM_MAXP];
    size_t n_tokens, n_reals;
    char *scratch;   /* kept between evaluations (not copied by clones) */
    size_t cap;
    int grad_in_place; /* set by dfm__gm_loss_eval_in_place for one call */
} dfm__gm_ploss;

static void pl_destroy(dfm_loss *l)
{
    dfm__gm_ploss *pl = (dfm__gm_ploss *)l->impl;
    if (!pl) return;
    for (size_t k = 0; k < pl->n; k++) dfm_loss_free(pl->parts[k]);
    dfm__free(&l->b.mem, pl->scratch);
    dfm__free(&l->b.mem, pl);
    l->impl = NULL;
}

static int pl_clone(dfm_loss *dst, const dfm_loss *src)
{
    const dfm__gm_ploss *s = (const dfm__gm_ploss *)src->impl;
    dfm__gm_ploss *d = (dfm__gm_ploss *)dfm__calloc(&dst->b.mem, 1, sizeof *d);
    if (!d) return DFM_ENOMEM;
    *d = *s;
    d->n = 0;
    d->scratch = NULL;
    d->cap = 0;
    d->grad_in_place = 0;
    dst->impl = d;
    for (size_t k = 0; k < s->n; k++) {
        int st = dfm_loss_clone(&d->parts[k], s->parts[k], &dst->b.mem);
        if (st) { pl_destroy(dst); return st; }
        d->n = k + 1;
    }
    return 0;
}

/* Parts that run in place: the discrete losses read their slice of the host's output with the
 * product's row stride (dfm_loss.row_stride) and write their gradient the same way, so their
 * logits are never copied; the other parts get gathered copies of their slices. */
static int pl_in_place(const dfm_loss *q)
{
    return q->kind == DFM_LOSS_GENERALIZED_KL || q->kind == DFM_LOSS_CROSS_ENTROPY;
}

/* The product loss's scratch (kept on the handle, grown once), carved per evaluation. */
typedef struct pl_scratch {
    double *vsum;            /* rows x ncol weighted values, host layout */
    double *tk;              /* rows: the part's times */
    double *pv;              /* the part's values */
    float *grad;             /* rows x S gradients, host layout: the host's (in place), a block
                                of the scratch, or NULL */
    float *pout, *pg;        /* a gathered part's model output and gradient (rows x stride) */
    float *x0, *x1, *xt;     /* the part's reals */
    int32_t *x1t, *xtt;      /* the part's tokens */
    uint8_t *fx;             /* the part's fixed flags */
} pl_scratch;

/* The largest stride of the parts that are gathered. */
static size_t pl_gathered_stride(const dfm__gm_ploss *pl)
{
    size_t m = 0;
    for (size_t k = 0; k < pl->n; k++)
        if (!pl_in_place(pl->parts[k]) && pl->slot[k].stride > m) m = pl->slot[k].stride;
    return m;
}

/* own_grad: the gradients are kept in the scratch until every part succeeded. */
static int pl_scratch_reserve(dfm_loss *l, size_t rows, int own_grad, pl_scratch *w)
{
    dfm__gm_ploss *pl = (dfm__gm_ploss *)l->impl;
    size_t nt = pl->n_tokens, nr = pl->n_reals, S = l->out_stride, ncol = nt + nr;
    size_t Sg = pl_gathered_stride(pl), Sh = own_grad ? S : 0;
    size_t bytes = rows * ((2 * ncol + 1) * sizeof(double) +
                           (2 * Sg + Sh + 3 * nr) * sizeof(float) + 2 * nt * sizeof(int32_t) +
                           nt) + 64;
    memset(w, 0, sizeof *w);
    if (bytes > pl->cap) { /* grown once, reused by later evaluations */
        char *nb = (char *)dfm__alloc(&l->b.mem, bytes);
        if (!nb) return dfm__fail_nomem(&l->b, "product loss scratch", rows, DFM__HINT_ROWS);
        dfm__free(&l->b.mem, pl->scratch);
        pl->scratch = nb;
        pl->cap = bytes;
    }
    w->vsum = (double *)(((uintptr_t)pl->scratch + 7) & ~(uintptr_t)7); /* doubles first */
    w->tk = w->vsum + rows * ncol;
    w->pv = w->tk + rows;
    w->pout = (float *)(w->pv + rows * ncol);
    w->pg = w->pout + rows * Sg;
    w->grad = own_grad ? w->pg + rows * Sg : NULL;
    w->x0 = w->pg + rows * (Sg + Sh);
    w->x1 = w->x0 + rows * nr;
    w->xt = w->x1 + rows * nr;
    w->x1t = (int32_t *)(w->xt + rows * nr);
    w->xtt = w->x1t + rows * nt;
    w->fx = (uint8_t *)(w->xtt + rows * nt);
    return 0;
}

/* Part k's slices of the host's tokens and reals. */
static void pl_part_inputs(const dfm__gm_ploss *pl, const dfm_loss_args *a,
                           const dfm__gm_slot *sl, const pl_scratch *w, dfm_loss_args *pa)
{
    size_t rows = a->rows, nt = pl->n_tokens, nr = pl->n_reals;
    if (sl->n_tok) {
        if (a->x1_tokens) {
            gather(w->x1t, a->x1_tokens, rows, nt, sl->tok_off, sl->n_tok, 4);
            pa->x1_tokens = w->x1t;
        }
        if (a->xt_tokens) {
            gather(w->xtt, a->xt_tokens, rows, nt, sl->tok_off, sl->n_tok, 4);
            pa->xt_tokens = w->xtt;
        }
        if (a->fixed) {
            gather(w->fx, a->fixed, rows, nt, sl->tok_off, sl->n_tok, 1);
            pa->fixed = w->fx;
        }
    }
    if (sl->n_real) {
        if (a->x0_reals) {
            gather(w->x0, a->x0_reals, rows, nr, sl->real_off, sl->n_real, 4);
            pa->x0_reals = w->x0;
        }
        if (a->x1_reals) {
            gather(w->x1, a->x1_reals, rows, nr, sl->real_off, sl->n_real, 4);
            pa->x1_reals = w->x1;
        }
        if (a->xt_reals) {
            gather(w->xt, a->xt_reals, rows, nr, sl->real_off, sl->n_real, 4);
            pa->xt_reals = w->xt;
        }
    }
}

/* Part arguments: part k's slices of the host's inputs; its model output and gradient are its
 * slice of the host's output and of w->grad (in place), or gathered copies. */
static void pl_part_args(const dfm_loss *l, const dfm_loss_args *a, size_t k,
                         const pl_scratch *w, dfm_loss_args *pa)
{
    const dfm__gm_ploss *pl = (const dfm__gm_ploss *)l->impl;
    const dfm__gm_slot *sl = &pl->slot[k];
    dfm_loss *q = pl->parts[k];
    memset(pa, 0, sizeof *pa);
    pa->struct_size = sizeof *pa;
    pa->rows = a->rows;
    pa->t = w->tk;
    pl_part_inputs(pl, a, sl, w, pa);
    if (pl_in_place(q)) {
        q->row_stride = l->out_stride;
        pa->out = a->out ? a->out + sl->out_off : NULL; /* NULL only for rows = 0 */
        pa->grad = w->grad ? w->grad + sl->out_off : NULL;
    } else {
        gather(w->pout, a->out, a->rows, l->out_stride, sl->out_off, sl->stride, 4);
        pa->out = w->pout;
        pa->grad = w->grad ? w->pg : NULL;
    }
    pa->values = l->reduction == DFM_REDUCE_NONE ? w->pv : NULL;
}

/* Part k's values, times its weight, into their columns of the host's layout. */
static void pl_part_values(const dfm__gm_ploss *pl, const dfm__gm_slot *sl, size_t rows, double w,
                           const double *pv, double *vsum)
{
    size_t nt = pl->n_tokens, ncol = nt + pl->n_reals, pc = sl->n_tok + sl->n_real;
    for (size_t r = 0; r < rows; r++) {
        for (size_t j = 0; j < sl->n_tok; j++)
            vsum[r * ncol + sl->tok_off + j] = w * pv[r * pc + j];
        for (size_t j = 0; j < sl->n_real; j++)
            vsum[r * ncol + nt + sl->real_off + j] = w * pv[r * pc + sl->n_tok + j];
    }
}

/* An in-place part that failed on its numbers runs again on a gathered copy of its slice: its
 * message then tells an output the model never wrote (that check reads whole rows). */
static int pl_rerun_gathered(dfm_loss *l, const dfm_loss_args *a, size_t k, const pl_scratch *w,
                             const dfm_loss_args *pa)
{
    const dfm__gm_ploss *pl = (const dfm__gm_ploss *)l->impl;
    const dfm__gm_slot *sl = &pl->slot[k];
    size_t rows = a->rows, n = rows * sl->stride;
    float *buf = (float *)dfm__alloc(&l->b.mem, 2 * n * sizeof(float));
    if (!buf) return DFM_ENUMERIC; /* the first message stands */
    gather(buf, a->out, rows, l->out_stride, sl->out_off, sl->stride, 4);
    dfm_loss_args b = *pa;
    b.out = buf;
    b.grad = pa->grad ? buf + n : NULL;
    int st = dfm_loss_eval(pl->parts[k], &b);
    if (!st && b.grad) scatter(w->grad, b.grad, rows, l->out_stride, sl->out_off, sl->stride, 4);
    dfm__free(&l->b.mem, buf);
    return st;
}

/* Part k at part_t[r][k] (or t[r]) into *lk; its gradient into its slice of w->grad. */
static int pl_run_part(dfm_loss *l, const dfm_loss_args *a, const double *part_t, size_t k,
                       const pl_scratch *w, double *lk)
{
    dfm__gm_ploss *pl = (dfm__gm_ploss *)l->impl;
    const dfm__gm_slot *sl = &pl->slot[k];
    dfm_loss *q = pl->parts[k];
    size_t rows = a->rows;
    q->reduction = l->reduction;
    q->b.nthreads = l->b.nthreads;
    q->b.spin_us = l->b.spin_us;
    for (size_t r = 0; r < rows; r++) w->tk[r] = part_t ? part_t[r * pl->n + k] : a->t[r];
    dfm_loss_args pa;
    pl_part_args(l, a, k, w, &pa);
    pa.loss = lk;
    int st = dfm_loss_eval(q, &pa);
    q->row_stride = 0;
    if (st == DFM_ENUMERIC && pa.out != w->pout) st = pl_rerun_gathered(l, a, k, w, &pa);
    if (st) {
        l->b.cb_raw = q->b.cb_raw;
        return dfm__fail(&l->b, st, "part %zu: %s", k, q->b.err);
    }
    if (pa.grad && pa.grad == w->pg)
        scatter(w->grad, w->pg, rows, l->out_stride, sl->out_off, sl->stride, 4);
    if (pa.values) pl_part_values(pl, sl, rows, pl->w[k], w->pv, w->vsum);
    return 0;
}

/* Every part succeeded: weighted gradients, values and the loss go to the host. */
static void pl_commit(const dfm_loss *l, const dfm_loss_args *a, const pl_scratch *w, double total)
{
    const dfm__gm_ploss *pl = (const dfm__gm_ploss *)l->impl;
    size_t rows = a->rows, S = l->out_stride, ncol = pl->n_tokens + pl->n_reals;
    if (a->grad)
        for (size_t k = 0; k < pl->n; k++) {
            const dfm__gm_slot *sl = &pl->slot[k];
            double wk = pl->w[k];
            if (wk == 1.0 && w->grad == a->grad) continue; /* in place */
            for (size_t r = 0; r < rows; r++) {
                float *dst = a->grad + r * S + sl->out_off;
                const float *sr = w->grad + r * S + sl->out_off;
                if (wk == 1.0) memcpy(dst, sr, sl->stride * sizeof(float));
                else for (size_t j = 0; j < sl->stride; j++) dst[j] = (float)(wk * sr[j]);
            }
        }
    if (l->reduction == DFM_REDUCE_NONE) memcpy(a->values, w->vsum, rows * ncol * sizeof(double));
    *a->loss = total;
}

/* sum_k w_k L_k: every part on its slices (part k at part_t[r][k], or at t[r]), then write back.
 * With grad_in_place the parts write their gradients straight into the host's (its scratch,
 * which a failed call may leave written); otherwise into the scratch, copied on success. (The
 * parts' slices cover every column of the gradient and vsum: no clearing needed.) */
static int pl_eval_impl(dfm_loss *l, const dfm_loss_args *a, const double *part_t)
{
    dfm__gm_ploss *pl = (dfm__gm_ploss *)l->impl;
    size_t rows = a->rows, nt = pl->n_tokens, nr = pl->n_reals, S = l->out_stride;
    size_t tmp;
    if (dfm__mul3(rows, nt + nr + S + 1, 32, &tmp))
        return dfm__fail(&l->b, DFM_EOVERFLOW, "rows x row size overflows");
    pl_scratch w;
    int st = pl_scratch_reserve(l, rows, a->grad && !pl->grad_in_place, &w);
    if (st) return st;
    if (pl->grad_in_place) w.grad = a->grad;
    double total = 0.0;
    for (size_t k = 0; k < pl->n && !st; k++) {
        double lk = 0.0;
        st = pl_run_part(l, a, part_t, k, &w, &lk);
        if (!st) total += pl->w[k] * lk;
    }
    if (!st && !isfinite(total))
        st = dfm__fail(&l->b, DFM_ENUMERIC, "the product loss is not finite");
    if (!st) pl_commit(l, a, &w, total);
    return st;
}

static int pl_eval(dfm_loss *l, const dfm_loss_args *a) { return pl_eval_impl(l, a, NULL); }

static const dfm__loss_ops pl_ops = {pl_destroy, pl_clone, pl_eval, NULL, NULL, NULL, NULL};

/* The model output a loss of this kind expects on space sp (0: unknown, not checked). */
int dfm__gm_loss_fits(const dfm_loss *q, const dfm_space *sp, char *why, size_t nwhy)
{
    int discrete = 0, cont = 0;
    size_t want = 0;
    switch (q->kind) {
    case DFM_LOSS_GENERALIZED_KL:
    case DFM_LOSS_CROSS_ENTROPY:
        discrete = 1;
        if (sp->n_parts == 1) want = sp->n_tokens * (size_t)sp->parts[0].vocab;
        break;
    case DFM_LOSS_BREGMAN_RATES: discrete = 1; break;
    case DFM_LOSS_MSE: cont = 1; want = sp->n_reals; break;
    default: break;
    }
    if (discrete && (sp->n_reals || !sp->n_tokens)) {
        snprintf(why, nwhy, "a discrete loss on a part that is not discrete");
        return 0;
    }
    if (cont && (sp->n_tokens || !sp->n_reals)) {
        snprintf(why, nwhy, "a continuous loss on a part that is not Euclidean");
        return 0;
    }
    if (want && q->out_stride != want) {
        snprintf(why, nwhy, "its model output has %zu floats per row, the part needs %zu",
                 q->out_stride, want);
        return 0;
    }
    return 1;
}

int dfm_loss_create_product(dfm_loss **out, const dfm_path *product_path,
                            const dfm_loss *const *parts, const double *weights, size_t n,
                            const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!product_path || !parts) return dfm__null(__func__, "product_path or parts");
    if (n == 0 || n > DFM__GM_MAXP)
        return dfm__error(DFM_EINVAL, "%s: n must be in [1, %d], got %zu", __func__, DFM__GM_MAXP,
                          n);
    if (dfm_path_n_parts(product_path) != n)
        return dfm__error(DFM_EINVAL, "%s: the path has %zu parts, not n = %zu", __func__,
                          dfm_path_n_parts(product_path), n);
    const dfm_space *sp[DFM__GM_MAXP];
    size_t strides[DFM__GM_MAXP], total = 0;
    for (size_t k = 0; k < n; k++) {
        const dfm_path *pk = dfm_path_part(product_path, k);
        if (!parts[k]) return dfm__error(DFM_EINVAL, "%s: parts[%zu] is NULL", __func__, k);
        sp[k] = &pk->space;
        strides[k] = parts[k]->out_stride;
        if (weights && !isfinite(weights[k]))
            return dfm__error(DFM_EINVAL, "%s: weights[%zu] = %g is not finite", __func__, k,
                              weights[k]);
        if (total > SIZE_MAX - strides[k])
            return dfm__error(DFM_EOVERFLOW, "%s: the output size overflows", __func__);
        total += strides[k];
    }
    dfm_loss *l;
    int st = dfm__loss_new(&l, DFM_LOSS_PRODUCT, &pl_ops, NULL, mem);
    if (st) return st;
    l->out_stride = total;
    l->n_tokens = product_path->space.n_tokens;
    l->n_reals = product_path->space.n_reals;
    dfm__gm_ploss *pl = (dfm__gm_ploss *)dfm__calloc(&l->b.mem, 1, sizeof *pl);
    if (!pl) {
        dfm_loss_free(l);
        return dfm__error(DFM_ENOMEM, "%s: cannot allocate the loss", __func__);
    }
    l->impl = pl;
    for (size_t k = 0; k < n; k++) {
        char why[160];
        if (!dfm__gm_loss_fits(parts[k], sp[k], why, sizeof why)) {
            dfm_loss_free(l);
            return dfm__error(DFM_EINVAL, "%s: part %zu: %s", __func__, k, why);
        }
    }
    dfm__gm_slots(sp, strides, n, pl->slot);
    pl->n_tokens = product_path->space.n_tokens;
    pl->n_reals = product_path->space.n_reals;
    for (size_t k = 0; k < n; k++) {
        pl->w[k] = weights ? weights[k] : 1.0;
        st = dfm_loss_clone(&pl->parts[k], parts[k], &l->b.mem);
        if (st) { dfm_loss_free(l); return st; }
        pl->n = k + 1;
    }
    *out = l;
    return 0;
}

size_t dfm__gm_loss_n_parts(const dfm_loss *l)
{
    return l->ops == &pl_ops ? ((const dfm__gm_ploss *)l->impl)->n : 1;
}

int dfm__gm_loss_matches(const dfm_loss *l, const dfm_path *p)
{
    if (l->ops != &pl_ops) return 0;
    const dfm__gm_ploss *pl = (const dfm__gm_ploss *)l->impl;
    if (pl->n != dfm_path_n_parts(p)) return 0;
    for (size_t k = 0; k < pl->n; k++) {
        const dfm_space *sp = &dfm_path_part(p, k)->space;
        if (sp->n_tokens != pl->slot[k].n_tok || sp->n_reals != pl->slot[k].n_real) return 0;
    }
    return 1;
}

static int loss_eval_parts(dfm_loss *l, const dfm_loss_args *a, const double *part_t)
{
    if (!part_t) return dfm__loss_eval(l, a);
    if (!a) return dfm__fail(&l->b, DFM_EINVAL, "args is NULL");
    size_t n = l->ops == &pl_ops ? ((const dfm__gm_ploss *)l->impl)->n : 1, cnt;
    if (dfm__mul(a->rows, n, &cnt)) return dfm__fail(&l->b, DFM_EOVERFLOW, "rows x parts overflows");
    int st = check_times(&l->b, part_t, cnt, "part_t");
    if (st) return st;
    if (l->ops != &pl_ops) {
        dfm_loss_args b = *a;
        b.t = part_t;
        return dfm__loss_eval(l, &b);
    }
    /* The generic checks of dfm_loss_eval, then the product with per-part times. */
    dfm_loss_args b = *a;
    b.t = a->t ? a->t : part_t; /* row times are not used by the parts */
    if (b.struct_size < sizeof(dfm_loss_args))
        return dfm__fail(&l->b, DFM_EINVAL, "args->struct_size is too small");
    if (!b.loss) return dfm__fail(&l->b, DFM_EINVAL, "args->loss is NULL");
    if (b.rows && !b.out) return dfm__fail(&l->b, DFM_EINVAL, "args->out is NULL");
    if (l->reduction == DFM_REDUCE_NONE && b.rows && !b.values)
        return dfm__fail(&l->b, DFM_EINVAL, "reduction none needs args->values");
    return pl_eval_impl(l, &b, part_t);
}

int dfm_loss_eval_parts(dfm_loss *l, const dfm_loss_args *a, const double *part_t)
{
    if (!l) return dfm__null(__func__, "l");
    int st = dfm__enter(&l->b, __func__);
    if (st) return st;
    return dfm__leave(&l->b, loss_eval_parts(l, a, part_t));
}

int dfm__gm_loss_eval_in_place(dfm_loss *l, const dfm_loss_args *a, const double *part_t)
{
    dfm__gm_ploss *pl = l->ops == &pl_ops ? (dfm__gm_ploss *)l->impl : NULL;
    if (pl) pl->grad_in_place = 1;
    int st = dfm_loss_eval_parts(l, a, part_t);
    if (pl) pl->grad_in_place = 0;
    return st;
}

/* The entries of a part's model output its loss checks for the unwritten mark: the first and
 * the last logit of every token for the discrete losses (as the discrete sampler marks them),
 * every float for the others. */
static size_t mark_group(const dfm_loss *q, size_t n_tok, size_t stride)
{
    if (pl_in_place(q) && n_tok && stride % n_tok == 0) return stride / n_tok;
    return 1;
}

void dfm__gm_loss_prefill(const dfm_loss *l, size_t n_tokens, float *out, size_t rows)
{
    if (l->ops != &pl_ops) {
        dfm__out_prefill(out, rows * l->out_stride, mark_group(l, n_tokens, l->out_stride));
        return;
    }
    const dfm__gm_ploss *pl = (const dfm__gm_ploss *)l->impl;
    for (size_t r = 0; r < rows; r++)
        for (size_t k = 0; k < pl->n; k++) {
            const dfm__gm_slot *sl = &pl->slot[k];
            dfm__out_prefill(out + r * l->out_stride + sl->out_off, sl->stride,
                             mark_group(pl->parts[k], sl->n_tok, sl->stride));
        }
}
