/* The joint sampler of superposition and product generators: one model call per branch and
 * step for all parts; discrete parts take the exact mixture step or an Euler step in the
 * (superposed, clamped) rates, continuous parts an Euler(-Maruyama) step with the superposed
 * drift and diffusion (docs/gm.md). */
#include "gm/gm_impl.h"
#include "continuous/continuous_impl.h"
#include "discrete/discrete_impl.h"
#include "core/rng_impl.h"

#include <math.h>

/* Random streams of the joint sampler (keyed by the part's seed). */
#define GM_STREAM_STEP 0x38u /* discrete: jump coin + target, coord = token in part, step = i */
#define GM_STREAM_SRC  0x39u /* discrete: source draw (draw_source), step = 0 */

typedef struct comp {
    const dfm_generator *g;
    int kind;     /* C_LOGITS, C_RATES, C_BWD, C_CONT */
    int branch;
    size_t off;   /* offset of its slice in the branch's output row */
    size_t wi;    /* index into the block's weights */
} comp;

enum { C_LOGITS, C_RATES, C_BWD, C_CONT };

typedef struct block {
    dfm__gm_slot sl;
    int cont;
    int exact;               /* plain logits leaf stepped with the exact mixture step */
    size_t nc;
    comp c[DFM__GM_MAXP];
    const dfm__gm_sup *sup;  /* weights source, or NULL (weight 1) */
    uint64_t seed;
    const dfm_path *path;    /* the block's path (source, kappa) */
} block;

typedef struct gm_samp {
    size_t nb;
    block b[DFM__GM_MAXP];
    size_t bstride[2];
    size_t nt, nr, nparts;
    int product;
    int stages;              /* 1, or 2 (midpoint) / 4 (RK4) for drift-only continuous runs */
    dfm_part_time_fn ptfn;   /* per-part sampling times (product generators), or NULL */
    void *ptud;
    int64_t last_clamped;
} gm_samp;

static int comp_kind(const dfm_generator *g)
{
    if (dfm__gm_is_bwd(g)) return C_BWD;
    if (g->kind == DFM_GEN_FACTORIZED) return g->param == DFM_PARAM_LOGITS ? C_LOGITS : C_RATES;
    return C_CONT;
}

/* Fill block k from generator g at slot sl with branch offsets mo (MAIN) and uo (UNCOND). */
static void build_block(block *bk, const dfm_generator *g, const dfm__gm_slot *sl, size_t mo,
                        size_t uo)
{
    int cont;
    bk->sl = *sl;
    dfm__gm_steppable(g, &cont, NULL);
    bk->cont = cont;
    bk->path = g->path;
    if (dfm__gm_is_sup(g)) {
        const dfm__gm_sup *s = (const dfm__gm_sup *)g->impl;
        bk->sup = s;
        bk->nc = s->n;
        for (size_t k = 0; k < s->n; k++) {
            bk->c[k].g = s->comp[k];
            bk->c[k].kind = comp_kind(s->comp[k]);
            bk->c[k].branch = s->branch[k] ? 1 : 0;
            bk->c[k].off = (s->branch[k] ? uo : mo) + s->off[k];
            bk->c[k].wi = k;
        }
    } else {
        bk->sup = NULL;
        bk->nc = 1;
        bk->c[0].g = g;
        bk->c[0].kind = comp_kind(g);
        bk->c[0].branch = 0;
        bk->c[0].off = mo;
        bk->c[0].wi = 0;
    }
}

static void gs_destroy(dfm_sampler *s)
{
    dfm__free(&s->b.mem, s->impl);
    s->impl = NULL;
}

static int gs_get_int(const dfm_sampler *s, int opt, int64_t *v)
{
    (void)s; (void)opt; (void)v;
    return DFM_EUNSUPPORTED;
}

/* ---- per-step kernels ---- */

typedef struct err_rec { int code; size_t row, coord; } err_rec;

typedef struct step_ctx {
    dfm_sampler *s;
    const gm_samp *gs;
    const dfm_run_args *a;
    const block *bk;
    int32_t *tok;            /* rows x nt */
    double *re;              /* rows x nr */
    const float *out[2];     /* rows x bstride[b] */
    const double *w;         /* block weights at t */
    uint32_t step;
    double h;
    /* discrete */
    double F[DFM__GM_MAXP];  /* integrated time factor per component (may be +inf) */
    double kt, kh;           /* kappa at t and t + h of the block path (exact step) */
    int final;               /* a logits component reaches kappa = 1 at the step's end */
    /* continuous */
    double A[DFM__GM_MAXP], B[DFM__GM_MAXP];
    double G2;               /* superposed g^2 (clamped at 0) */
    double *kout;            /* Runge-Kutta stage: write the drift here instead of stepping */
    double *scratch;         /* per thread: 3 V doubles (discrete) or nr floats (continuous) */
    size_t scr_per;
    int64_t *jumps, *clamped;
    err_rec *err;
} step_ctx;

static int rec_err(step_ctx *c, int tid, int code, size_t r, size_t i)
{
    if (!c->err[tid].code) { c->err[tid].code = code; c->err[tid].row = r; c->err[tid].coord = i; }
    return code;
}

static int disc_rows(void *vctx, size_t begin, size_t end, int tid)
{
    step_ctx *c = (step_ctx *)vctx;
    const block *bk = c->bk;
    const dfm_run_args *a = c->a;
    const size_t nt = c->gs->nt, d = bk->sl.n_tok;
    const int32_t V = dfm__space_vocab(&bk->path->space, 0);
    const dfm__mixture *mx = dfm__mixture_of(bk->path);
    double *lam = c->scratch + (size_t)tid * c->scr_per, *inf = lam + V;
    float *pf = (float *)(inf + V);
    int64_t jumps = 0, clamped = 0;
    for (size_t r = begin; r < end; r++) {
        uint64_t grow = (uint64_t)(a->row_offset + r);
        int32_t *x = c->tok + r * nt + bk->sl.tok_off;
        const uint8_t *fx = a->fixed ? a->fixed + r * nt + bk->sl.tok_off : NULL;
        for (size_t i = 0; i < d; i++) {
            if (fx && fx[i]) continue;
            int32_t xi = x[i], y = xi;
            double u1, u2;
            dfm__uniform2(bk->seed, GM_STREAM_STEP, grow, (uint32_t)i, c->step, &u1, &u2);
            if (bk->exact) {
                const float *z = c->out[0] + r * c->gs->bstride[0] + bk->c[0].off + i * (size_t)V;
                int bad;
                float mxz = dfm__max_check(z, (size_t)V, &bad);
                if (bad || mxz == -INFINITY) return rec_err(c, tid, DFM_ENUMERIC, r, i);
                double pj = c->kt >= 1.0 ? 0.0 : (c->kh - c->kt) / (1.0 - c->kt);
                if (u1 < pj) {
                    int32_t t1;
                    if (dfm__categorical_logits(z, (size_t)V, 1.0, u2, pf, &t1))
                        return rec_err(c, tid, DFM_ENUMERIC, r, i);
                    y = t1;
                }
            } else {
                for (int32_t v = 0; v < V; v++) lam[v] = inf[v] = 0.0;
                int any_inf = 0;
                for (size_t k = 0; k < bk->nc; k++) {
                    const comp *cp = &bk->c[k];
                    double wk = c->w[cp->wi], F = c->F[k];
                    if (wk == 0.0 || F == 0.0 || (c->final && !isinf(F))) continue;
                    int isinf_ = isinf(F);
                    double *dst = isinf_ ? inf : lam;
                    double f = isinf_ ? wk : wk * F;
                    /* An infinite integrated rate mixes the token to the component's own
                     * stationary law: p_{1|t} (logits) or p0 (backward), x included. */
                    if (cp->kind == C_BWD) {
                        if (mx->source == DFM_SOURCE_MASK) {
                            if (isinf_ || xi != mx->mask) { dst[mx->mask] -= f; any_inf |= isinf_; }
                        } else {
                            for (int32_t v = 0; v < V; v++)
                                if ((isinf_ || v != xi) && mx->p0[v] > 0.0) {
                                    dst[v] -= f * mx->p0[v];
                                    any_inf |= isinf_;
                                }
                        }
                        continue;
                    }
                    const float *z = c->out[cp->branch] + r * c->gs->bstride[cp->branch] + cp->off +
                                     i * (size_t)V;
                    if (cp->kind == C_RATES) {
                        for (int32_t v = 0; v < V; v++) {
                            if (v == xi) continue;
                            if (!(z[v] >= 0.0f) || z[v] == INFINITY)
                                return rec_err(c, tid, DFM_ENUMERIC, r, i);
                            dst[v] += f * (double)z[v];
                        }
                    } else {
                        int bad;
                        float zmax = dfm__max_check(z, (size_t)V, &bad);
                        if (bad || zmax == -INFINITY) return rec_err(c, tid, DFM_ENUMERIC, r, i);
                        /* vectorised softmax: p(v) = pf[v] / tot */
                        double sc = f / dfm__exp_shift_sum(z, (size_t)V, zmax, 1.0f, pf);
                        for (int32_t v = 0; v < V; v++)
                            if (isinf_ || v != xi) dst[v] += sc * (double)pf[v];
                        any_inf |= isinf_;
                    }
                }
                double tot = 0.0;
                int sure = 0;
                if (any_inf)
                    for (int32_t v = 0; v < V; v++)
                        if (v != xi && inf[v] > 0.0) sure = 1;
                if (sure) { /* jump surely: the new value (x included) drawn from the mix */
                    for (int32_t v = 0; v < V; v++) {
                        if (v != xi && (inf[v] < 0.0 || (inf[v] == 0.0 && lam[v] < 0.0)))
                            clamped++;
                        lam[v] = inf[v] > 0.0 ? inf[v] : 0.0;
                        tot += lam[v];
                    }
                } else {
                    for (int32_t v = 0; v < V; v++) {
                        if (v == xi) { lam[v] = 0.0; continue; }
                        if (inf[v] < 0.0) { clamped++; lam[v] = 0.0; continue; }
                        if (lam[v] < 0.0) { clamped++; lam[v] = 0.0; }
                        if (!isfinite(lam[v])) return rec_err(c, tid, DFM_ENUMERIC, r, i);
                        tot += lam[v];
                    }
                }
                if (tot > 0.0 && (sure || u1 < -expm1(-tot))) {
                    double target = u2 * tot, acc = 0.0;
                    int32_t last = -1;
                    for (int32_t v = 0; v < V; v++) {
                        if (lam[v] <= 0.0) continue;
                        acc += lam[v];
                        last = v;
                        if (acc > target) break;
                    }
                    if (last >= 0) y = last;
                }
            }
            if (y != xi) { x[i] = y; jumps++; }
        }
    }
    c->jumps[tid] += jumps;
    c->clamped[tid] += clamped;
    return 0;
}

static int cont_rows(void *vctx, size_t begin, size_t end, int tid)
{
    step_ctx *c = (step_ctx *)vctx;
    const block *bk = c->bk;
    const dfm_run_args *a = c->a;
    const size_t nr = c->gs->nr, D = bk->sl.n_real;
    float *z = (float *)(c->scratch + (size_t)tid * c->scr_per);
    double sq = sqrt(c->G2 * c->h);
    for (size_t r = begin; r < end; r++) {
        double *x = c->re + r * nr + bk->sl.real_off;
        for (size_t k = 0; k < bk->nc; k++) {
            const comp *cp = &bk->c[k];
            const float *y = c->out[cp->branch] + r * c->gs->bstride[cp->branch] + cp->off;
            if (!dfm__all_finite_f(y, D)) {
                size_t j = 0;
                while (j < D && isfinite(y[j])) j++;
                return rec_err(c, tid, DFM_ENUMERIC, r, j);
            }
        }
        if (sq > 0.0 && !c->kout)
            dfm__normal_row(bk->seed, DFM_STREAM_SDE_NOISE, a->row_offset + r, c->step, D, z);
        for (size_t j = 0; j < D; j++) {
            double xj = x[j], dr = 0.0;
            for (size_t k = 0; k < bk->nc; k++) {
                const comp *cp = &bk->c[k];
                const float *y = c->out[cp->branch] + r * c->gs->bstride[cp->branch] + cp->off;
                dr += c->w[cp->wi] * (c->A[k] * xj + c->B[k] * (double)y[j]);
            }
            if (c->kout) c->kout[r * nr + bk->sl.real_off + j] = dr;
            else x[j] = xj + c->h * dr + (sq > 0.0 ? sq * (double)z[j] : 0.0);
        }
    }
    (void)tid;
    return 0;
}

/* ---- run ---- */

static int kappa_at(dfm_sampler *s, const dfm_path *p, double t, dfm_sched_values *v)
{
    int raw = 0, st = dfm__sched_eval(&p->sched, t, v, &raw);
    if (st == DFM_ECALLBACK) return dfm__fail_callback(&s->b, raw, "scheduler");
    if (st || !(v->alpha >= 0.0 && v->alpha <= 1.0) || !isfinite(v->d_alpha))
        return dfm__fail(&s->b, DFM_ENUMERIC, "kappa(t = %g) is not in [0, 1]", t);
    return 0;
}

static int block_weights(dfm_sampler *s, const block *bk, double t, double *w)
{
    if (!bk->sup) { w[0] = 1.0; return 0; }
    const dfm__gm_sup *sp = bk->sup;
    if (!sp->wfn) { memcpy(w, sp->w, sp->n * sizeof(double)); return 0; }
    int raw = sp->wfn(t, w, sp->n, sp->wud);
    if (raw) return dfm__fail_callback(&s->b, raw, "superposition weight function");
    for (size_t k = 0; k < sp->n; k++)
        if (!isfinite(w[k]))
            return dfm__fail(&s->b, DFM_ENUMERIC, "weight %zu at t = %g is not finite", k, t);
    return 0;
}

/* Time factors of a discrete block over [t, t + h]. */
static int disc_factors(dfm_sampler *s, step_ctx *c, double t, double tn)
{
    const block *bk = c->bk;
    for (size_t k = 0; k < bk->nc; k++) {
        const comp *cp = &bk->c[k];
        if (cp->kind == C_RATES) { c->F[k] = tn - t; continue; }
        dfm_sched_values v0, v1;
        int st;
        if ((st = kappa_at(s, cp->g->path, t, &v0))) return st;
        if ((st = kappa_at(s, cp->g->path, tn, &v1))) return st;
        if (k == 0) { c->kt = v0.alpha; c->kh = v1.alpha; }
        if (cp->kind == C_LOGITS && v1.alpha >= 1.0 && v0.alpha < 1.0) c->final = 1;
        if (cp->kind == C_LOGITS) /* int kappa'/(1 - kappa) = log((1 - k0) / (1 - k1)) */
            c->F[k] = v0.alpha >= 1.0 ? 0.0
                      : (v1.alpha >= 1.0 ? INFINITY : log1p(-v0.alpha) - log1p(-v1.alpha));
        else /* backward: int kappa'/kappa = log(k1 / k0) */
            c->F[k] = v1.alpha <= 0.0 ? 0.0
                      : (v0.alpha <= 0.0 ? INFINITY : log(v1.alpha) - log(v0.alpha));
    }
    return 0;
}

static int cont_coefs(dfm_sampler *s, step_ctx *c, double t, int64_t *clamped)
{
    const block *bk = c->bk;
    double G2 = 0.0;
    for (size_t k = 0; k < bk->nc; k++) {
        const comp *cp = &bk->c[k];
        double g = 0.0, gg = 0.0;
        int st;
        if (cp->g->kind == DFM_GEN_DIFFUSION) {
            if ((st = dfm__cgen_g(&s->b, cp->g, t, &g))) return st;
            gg = 0.5 * g * g;
        }
        dfm__acoef co;
        if ((st = dfm__cgen_coef(&s->b, cp->g, t, gg, &co))) return st;
        c->A[k] = co.A;
        c->B[k] = co.B;
        G2 += c->w[cp->wi] * g * g;
    }
    if (G2 < 0.0) { *clamped += (int64_t)(c->a->rows * bk->sl.n_real); G2 = 0.0; }
    c->G2 = G2;
    return 0;
}

static int call_model(dfm_sampler *s, const dfm_run_args *a, int branch, double t, int step,
                      const double *tv, const double *pt, const int32_t *tok, const float *re,
                      float *out, size_t stride)
{
    const gm_samp *gs = (const gm_samp *)s->impl;
    dfm_model_io io;
    memset(&io, 0, sizeof io);
    io.struct_size = sizeof io;
    io.rows = a->rows;
    io.row_offset = a->row_offset;
    io.t = tv;
    io.tokens = gs->nt ? tok : NULL;
    io.n_tokens = gs->nt;
    io.reals = gs->nr ? re : NULL;
    io.n_reals = gs->nr;
    io.out = out;
    io.out_stride = stride;
    io.branch = branch;
    io.step = step;
    io.part_t = pt;
    io.n_part_t = gs->nparts;
    s->stats[DFM_STAT_MODEL_CALLS]++;
    int raw = a->model(&io, a->model_data);
    if (raw) return dfm__fail_callback(&s->b, raw, "model");
    (void)t;
    return 0;
}

/* Part times at t from the host's map, validated. */
static int part_times(dfm_sampler *s, double t, double *out)
{
    gm_samp *gs = (gm_samp *)s->impl;
    int raw = gs->ptfn(t, out, gs->nparts, gs->ptud);
    if (raw) return dfm__fail_callback(&s->b, raw, "part time function");
    for (size_t k = 0; k < gs->nparts; k++)
        if (!dfm__time_ok(out[k]))
            return dfm__fail(&s->b, DFM_ERANGE, "part %zu's time at t = %g is %g, outside [0, 1]",
                             k, t, out[k]);
    return 0;
}

/* Drift of every (continuous) block at time tt for states y (rows x nr) into k. */
static int rk_drift(dfm_sampler *s, const dfm_run_args *a, double tt, int step, const double *y,
                    double *k, float *ref, double *tv, double *pt, float *out0, float *out1,
                    double *scr, size_t scr_per, int64_t *jumps, err_rec *errs, int nth,
                    int64_t *clamped)
{
    gm_samp *gs = (gm_samp *)s->impl;
    size_t rows = a->rows, nr = gs->nr;
    int st = 0;
    for (size_t r = 0; r < rows; r++) tv[r] = tt;
    for (size_t r = 0; r < rows * gs->nparts; r++) pt[r] = tt;
    for (size_t j = 0; j < rows * nr; j++) ref[j] = (float)y[j];
    if (gs->bstride[0] || gs->bstride[1] == 0)
        st = call_model(s, a, DFM_BRANCH_MAIN, tt, step, tv, pt, NULL, ref, out0, gs->bstride[0]);
    if (!st && gs->bstride[1])
        st = call_model(s, a, DFM_BRANCH_UNCOND, tt, step, tv, pt, NULL, ref, out1, gs->bstride[1]);
    for (size_t b = 0; b < gs->nb && !st; b++) {
        const block *bk = &gs->b[b];
        double w[DFM__GM_MAXP];
        if ((st = block_weights(s, bk, tt, w))) break;
        step_ctx c;
        memset(&c, 0, sizeof c);
        c.s = s; c.gs = gs; c.a = a; c.bk = bk; c.re = (double *)y;
        c.out[0] = out0; c.out[1] = out1; c.w = w; c.step = (uint32_t)step;
        c.scratch = scr; c.scr_per = scr_per; c.jumps = jumps; c.clamped = jumps + nth;
        c.err = errs;
        c.kout = k;
        memset(errs, 0, (size_t)nth * sizeof(err_rec));
        if ((st = cont_coefs(s, &c, tt, clamped))) break;
        dfm__parallel_for(&s->b, s->b.nthreads, rows, cont_rows, &c);
        for (int q = 0; q < nth && !st; q++)
            if (errs[q].code)
                st = dfm__fail(&s->b, errs[q].code,
                               "part %zu: invalid model output at t = %g (row %zu, coord %zu): "
                               "NaN/Inf", b, tt, errs[q].row, errs[q].coord);
    }
    return st;
}

static int gs_run(dfm_sampler *s, const dfm_run_args *a)
{
    gm_samp *gs = (gm_samp *)s->impl;
    const size_t nt = gs->nt, nr = gs->nr, rows = a->rows;
    int st = dfm__check_run_common(s, a, nt, nr);
    if (st) return st;
    gs->last_clamped = 0;
    size_t nsteps = dfm__sampler_nsteps(s);
    double t0 = dfm__sampler_time(s, 0), t1 = dfm__sampler_time(s, nsteps);
    if (!(t1 > t0))
        return dfm__fail(&s->b, DFM_EUNSUPPORTED,
                         "superposition and product samplers run increasing grids only");
    if (rows == 0) return 0;
    for (size_t k = 0; k < gs->nb; k++)
        gs->b[k].seed = gs->product ? dfm__gm_part_seed(s->b.seed, k) : s->b.seed;
    if (!a->draw_source) {
        size_t bad;
        if (nt && dfm_space_check_tokens(&s->gen->path->space, a->tokens, rows, &bad))
            return dfm__fail(&s->b, DFM_ERANGE, "tokens[row %zu][coord %zu] = %d is out of range",
                             bad / nt, bad % nt, (int)a->tokens[bad]);
        for (size_t i = 0; i < rows * nr; i++)
            if (!isfinite(a->reals[i]))
                return dfm__fail(&s->b, DFM_ENUMERIC, "reals[row %zu][coord %zu] is not finite",
                                 i / nr, i % nr);
    }
    /* Time points: the grid merged with the save times. */
    size_t npts_max = nsteps + 1 + a->n_save, npts = 0;
    int nth = dfm__parallel_width(s->b.nthreads, rows);
    size_t Vmax = 1;
    for (size_t j = 0; j < nt; j++) {
        size_t v = (size_t)dfm__space_vocab(&s->gen->path->space, j);
        if (v > Vmax) Vmax = v;
    }
    size_t scr_per = 3 * Vmax + nr + 1;
    size_t sz_tok = rows * nt, sz_re = rows * nr, sz_o0 = rows * gs->bstride[0],
           sz_o1 = rows * gs->bstride[1], tmp;
    if (dfm__mul(rows, gs->bstride[0] + gs->bstride[1] + 2 * nt + 3 * nr + gs->nparts + 2, &tmp) ||
        dfm__mul((size_t)nth, scr_per, &tmp))
        return dfm__fail(&s->b, DFM_EOVERFLOW, "work size overflows");
    size_t bytes = sizeof(double) * (npts_max + sz_re + rows + rows * gs->nparts +
                                     (size_t)nth * scr_per + 4 * (size_t)nth) +
                   sizeof(float) * (sz_re + sz_o0 + sz_o1) + sizeof(int32_t) * sz_tok +
                   sizeof(size_t) * (npts_max + 1) + sizeof(err_rec) * (size_t)nth + 64;
    char *blk = (char *)dfm__calloc(&s->b.mem, 1, bytes);
    int32_t *saved_t = NULL;
    float *saved_r = NULL;
    if (a->n_save) {
        saved_t = nt ? (int32_t *)dfm__calloc(&s->b.mem, a->n_save * sz_tok, sizeof(int32_t)) : NULL;
        saved_r = nr ? (float *)dfm__calloc(&s->b.mem, a->n_save * sz_re, sizeof(float)) : NULL;
    }
    if (!blk || (a->n_save && ((nt && !saved_t) || (nr && !saved_r)))) {
        dfm__free(&s->b.mem, blk);
        dfm__free(&s->b.mem, saved_t);
        dfm__free(&s->b.mem, saved_r);
        return dfm__fail(&s->b, DFM_ENOMEM, "cannot allocate the sampler's work space");
    }
    double *pts = (double *)blk, *re = pts + npts_max, *tv = re + sz_re, *pt = tv + rows,
           *scr = pt + rows * gs->nparts;
    int64_t *jumps = (int64_t *)(scr + (size_t)nth * scr_per), *clamped = jumps + nth;
    err_rec *errs = (err_rec *)(clamped + 2 * nth);
    size_t *save_at = (size_t *)(errs + nth);
    float *ref = (float *)(save_at + npts_max + 1), *out0 = ref + sz_re, *out1 = out0 + sz_o0;
    int32_t *tok = (int32_t *)(out1 + sz_o1);
    {
        size_t gi = 0, si = 0;
        while (gi <= nsteps || si < a->n_save) {
            double tg = gi <= nsteps ? dfm__sampler_time(s, gi) : INFINITY;
            double ts = si < a->n_save ? a->save_times[si] : INFINITY;
            if (ts < tg) { pts[npts] = ts; save_at[npts++] = ++si; continue; }
            pts[npts] = tg;
            save_at[npts] = 0;
            if (ts == tg) save_at[npts] = ++si;
            npts++;
            gi++;
        }
    }
    /* Initial state. */
    if (a->draw_source) {
        for (size_t b = 0; b < gs->nb; b++) {
            const block *bk = &gs->b[b];
            for (size_t r = 0; r < rows; r++) {
                uint64_t grow = (uint64_t)(a->row_offset + r);
                if (!bk->cont) {
                    const dfm__mixture *mx = dfm__mixture_of(bk->path);
                    for (size_t i = 0; i < bk->sl.n_tok; i++)
                        tok[r * nt + bk->sl.tok_off + i] = dfm__mix_source_draw(
                            mx, dfm__uniform(bk->seed, GM_STREAM_SRC, grow, (uint32_t)i, 0));
                } else {
                    float *z = ref + r * nr + bk->sl.real_off;
                    dfm__normal_row(bk->seed, DFM_STREAM_SOURCE, grow, 0, bk->sl.n_real, z);
                    for (size_t j = 0; j < bk->sl.n_real; j++)
                        re[r * nr + bk->sl.real_off + j] = z[j];
                }
            }
        }
        if (a->fixed && nt) /* fixed positions keep the host's tokens */
            for (size_t i = 0; i < sz_tok; i++)
                if (a->fixed[i]) tok[i] = a->tokens[i];
    } else {
        if (nt) memcpy(tok, a->tokens, sz_tok * sizeof(int32_t));
        for (size_t i = 0; i < sz_re; i++) re[i] = a->reals[i];
    }
    if (save_at[0]) {
        size_t k = save_at[0] - 1;
        if (nt) memcpy(saved_t + k * sz_tok, tok, sz_tok * sizeof(int32_t));
        for (size_t i = 0; i < sz_re; i++) saved_r[k * sz_re + i] = (float)re[i];
    }
    double *rk = NULL; /* stages > 1: ytmp + 4 stage buffers, rows x nr each */
    if (gs->stages > 1) {
        rk = (double *)dfm__calloc(&s->b.mem, 5 * sz_re + 1, sizeof(double));
        if (!rk) st = dfm__fail(&s->b, DFM_ENOMEM, "cannot allocate the Runge-Kutta stages");
    }
    for (size_t i = 0; i + 1 < npts && !st; i++) {
        double t = pts[i], h = pts[i + 1] - t;
        if (gs->stages > 1) {
            /* midpoint: k1 at t, k2 at t + h/2 on x + h/2 k1; RK4: the classical tableau */
            static const double C4[4] = {0.0, 0.5, 0.5, 1.0}, B4[4] = {1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6};
            static const double C2[2] = {0.0, 0.5}, B2[2] = {0.0, 1.0};
            const double *cc = gs->stages == 4 ? C4 : C2, *bb = gs->stages == 4 ? B4 : B2;
            double *yt = rk, *kk = rk + sz_re;
            int64_t step_clamped = 0;
            for (int q = 0; q < gs->stages && !st; q++) {
                const double *src = q == 0 ? re : yt;
                if (q > 0) /* RK4 and midpoint: stage q reads x + c_q h k_{q-1} */
                    for (size_t j = 0; j < sz_re; j++)
                        yt[j] = re[j] + cc[q] * h * kk[(size_t)(q - 1) * sz_re + j];
                double tq = cc[q] == 1.0 ? pts[i + 1] : t + cc[q] * h;
                st = rk_drift(s, a, tq, (int)i, src, kk + (size_t)q * sz_re, ref, tv, pt, out0,
                              out1, scr, scr_per, jumps, errs, nth, &step_clamped);
            }
            if (st) break;
            for (size_t j = 0; j < sz_re; j++) {
                double inc = 0.0;
                for (int q = 0; q < gs->stages; q++) inc += bb[q] * kk[(size_t)q * sz_re + j];
                re[j] += h * inc;
            }
            gs->last_clamped = step_clamped;
            s->stats[DFM_STAT_CLAMPED] += step_clamped;
            s->stats[DFM_STAT_STEPS]++;
            if (save_at[i + 1]) {
                size_t k = save_at[i + 1] - 1;
                for (size_t j = 0; j < sz_re; j++) saved_r[k * sz_re + j] = (float)re[j];
            }
            st = dfm__step_done(s, a->progress, a->progress_data, (int)i, (int)(npts - 1),
                                pts[i + 1]);
            continue;
        }
        /* Part times of this step: tau_k(t) -> tau_k(t_next), or t -> t_next. */
        double p0[DFM__GM_MAXP], p1[DFM__GM_MAXP];
        for (size_t k = 0; k < gs->nparts; k++) { p0[k] = t; p1[k] = pts[i + 1]; }
        if (gs->ptfn && ((st = part_times(s, t, p0)) || (st = part_times(s, pts[i + 1], p1))))
            break;
        for (size_t k = 0; k < gs->nparts && gs->ptfn; k++)
            if (!(p1[k] >= p0[k])) {
                st = dfm__fail(&s->b, DFM_EINVAL, "part %zu's time decreases from %g to %g "
                               "between t = %g and %g", k, p0[k], p1[k], t, pts[i + 1]);
                break;
            }
        if (st) break;
        for (size_t r = 0; r < rows; r++) tv[r] = t;
        for (size_t r = 0; r < rows; r++)
            for (size_t k = 0; k < gs->nparts; k++) pt[r * gs->nparts + k] = p0[k];
        for (size_t j = 0; j < sz_re; j++) ref[j] = (float)re[j];
        if (gs->bstride[0] || gs->bstride[1] == 0)
            st = call_model(s, a, DFM_BRANCH_MAIN, t, (int)i, tv, pt, tok, ref, out0, gs->bstride[0]);
        if (!st && gs->bstride[1])
            st = call_model(s, a, DFM_BRANCH_UNCOND, t, (int)i, tv, pt, tok, ref, out1, gs->bstride[1]);
        int64_t step_clamped = 0;
        for (size_t b = 0; b < gs->nb && !st; b++) {
            const block *bk = &gs->b[b];
            double w[DFM__GM_MAXP], tb = p0[b], tbn = p1[b];
            if ((st = block_weights(s, bk, tb, w))) break;
            step_ctx c;
            memset(&c, 0, sizeof c);
            c.s = s; c.gs = gs; c.a = a; c.bk = bk; c.tok = tok; c.re = re;
            c.out[0] = out0; c.out[1] = out1; c.w = w; c.step = (uint32_t)i; c.h = tbn - tb;
            c.scratch = scr; c.scr_per = scr_per; c.jumps = jumps; c.clamped = clamped;
            c.err = errs;
            memset(jumps, 0, 2 * (size_t)nth * sizeof(int64_t));
            memset(errs, 0, (size_t)nth * sizeof(err_rec));
            if (bk->cont) {
                if (c.h == 0.0) continue; /* the part does not move in this step */
                if ((st = cont_coefs(s, &c, tb, &step_clamped))) break;
                dfm__parallel_for(&s->b, s->b.nthreads, rows, cont_rows, &c);
            } else {
                if (c.h == 0.0) continue;
                if ((st = disc_factors(s, &c, tb, tbn))) break;
                dfm__parallel_for(&s->b, s->b.nthreads, rows, disc_rows, &c);
            }
            for (int q = 0; q < nth; q++) {
                if (errs[q].code && !st)
                    st = dfm__fail(&s->b, errs[q].code,
                                   "part %zu: invalid model output at t = %g (row %zu, coord %zu): "
                                   "NaN/Inf, all -Inf logits or negative rates", b, t,
                                   errs[q].row, errs[q].coord);
                s->stats[DFM_STAT_JUMPS] += jumps[q];
                step_clamped += clamped[q];
            }
        }
        if (st) break;
        gs->last_clamped = step_clamped;
        s->stats[DFM_STAT_CLAMPED] += step_clamped;
        s->stats[DFM_STAT_STEPS]++;
        if (save_at[i + 1]) {
            size_t k = save_at[i + 1] - 1;
            if (nt) memcpy(saved_t + k * sz_tok, tok, sz_tok * sizeof(int32_t));
            for (size_t j = 0; j < sz_re; j++) saved_r[k * sz_re + j] = (float)re[j];
        }
        st = dfm__step_done(s, a->progress, a->progress_data, (int)i, (int)(npts - 1),
                            pts[i + 1]);
    }
    for (size_t i = 0; !st && i < sz_re; i++)
        if (!isfinite((float)re[i]))
            st = dfm__fail(&s->b, DFM_ENUMERIC, "the state overflowed (row %zu, coord %zu)",
                           i / nr, i % nr);
    if (!st) {
        if (nt) memcpy(a->tokens, tok, sz_tok * sizeof(int32_t));
        for (size_t i = 0; i < sz_re; i++) a->reals[i] = (float)re[i];
        if (a->n_save && nt) memcpy(a->saved_tokens, saved_t, a->n_save * sz_tok * sizeof(int32_t));
        if (a->n_save && nr) memcpy(a->saved_reals, saved_r, a->n_save * sz_re * sizeof(float));
    }
    dfm__free(&s->b.mem, rk);
    dfm__free(&s->b.mem, saved_t);
    dfm__free(&s->b.mem, saved_r);
    dfm__free(&s->b.mem, blk);
    return st;
}

static const dfm__sampler_ops gs_ops = {gs_destroy, gs_run, NULL, gs_get_int, NULL, NULL};

int dfm__gm_sampler_init(dfm_sampler *s, int method)
{
    const dfm_generator *g = s->gen;
    gm_samp *gs = (gm_samp *)dfm__calloc(&s->b.mem, 1, sizeof *gs);
    if (!gs) return DFM_ENOMEM;
    s->impl = gs;
    s->ops = &gs_ops;
    gs->nt = g->path->space.n_tokens;
    gs->nr = g->path->space.n_reals;
    if (dfm__gm_is_pgen(g)) {
        const dfm__gm_pgen *pg = (const dfm__gm_pgen *)g->impl;
        gs->nb = pg->n;
        gs->nparts = pg->n;
        gs->product = 1;
        for (size_t k = 0; k < pg->n; k++) {
            build_block(&gs->b[k], pg->parts[k], &pg->slot[k], pg->slot[k].out_off, pg->uoff[k]);
            gs->b[k].seed = dfm__gm_part_seed(s->b.seed, k);
        }
        gs->bstride[0] = pg->bstride[0];
        gs->bstride[1] = pg->bstride[1];
        gs->ptfn = pg->ptfn;
        gs->ptud = pg->ptud;
    } else {
        dfm__gm_slot sl;
        const dfm_space *sp = &g->path->space;
        dfm__gm_slots(&sp, NULL, 1, &sl);
        gs->nb = 1;
        gs->nparts = 1;
        build_block(&gs->b[0], g, &sl, 0, 0);
        gs->b[0].seed = s->b.seed;
        gs->bstride[0] = dfm__gm_branch_stride(g, 0);
        gs->bstride[1] = dfm__gm_branch_stride(g, 1);
    }
    int any_exact = 0;
    for (size_t k = 0; k < gs->nb; k++) {
        block *bk = &gs->b[k];
        if (!bk->cont) {
            bk->exact = method == DFM_METHOD_EXACT && !bk->sup && bk->c[0].kind == C_LOGITS;
            any_exact |= bk->exact;
            if (bk->path->kind != DFM_PATH_MIXTURE) return DFM_EUNSUPPORTED;
        }
    }
    gs->stages = 1;
    if (method == DFM_METHOD_MIDPOINT || method == DFM_METHOD_RK4) {
        /* drift-only continuous runs: every part continuous, no diffusion component */
        for (size_t k = 0; k < gs->nb; k++) {
            if (!gs->b[k].cont) return DFM_EUNSUPPORTED;
            for (size_t q = 0; q < gs->b[k].nc; q++)
                if (gs->b[k].c[q].g->kind == DFM_GEN_DIFFUSION) return DFM_EUNSUPPORTED;
        }
        if (gs->ptfn) return DFM_EUNSUPPORTED; /* per-part time maps: one-stage steps only */
        gs->stages = method == DFM_METHOD_RK4 ? 4 : 2;
        return 0;
    }
    if (method != DFM_METHOD_EULER && method != DFM_METHOD_EULER_MARUYAMA &&
        method != DFM_METHOD_EXACT)
        return DFM_EUNSUPPORTED;
    if (method == DFM_METHOD_EXACT && !any_exact) return DFM_EUNSUPPORTED;
    return 0;
}

int dfm_sampler_step_clamped(const dfm_sampler *s, int64_t *count)
{
    if (!s || !count) return DFM_EINVAL;
    if (s->ops != &gs_ops) return DFM_EUNSUPPORTED;
    *count = ((const gm_samp *)s->impl)->last_clamped;
    return 0;
}
