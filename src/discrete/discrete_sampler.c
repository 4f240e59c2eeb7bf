/* Samplers of factorized generators on [V]^d: the exact mixture step, the Euler step of
 * flow_matching, Euler on direct rates; corrector, eta stochasticity, purity, temperature,
 * fixed positions, intermediate states, progress. See docs/discrete.md for the math. */
#include "discrete/discrete_impl.h"
#include "core/rng_impl.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

typedef struct ds_impl {
    double temp, corr, eta;
    int purity;
    int64_t chunk;      /* rows per model call, 0: all */
    dfm_corrector_fn cfn;
    void *cud;
} ds_impl;

#define LANES 8


/* Sum of nonnegative finite rates except index skip; *bad set for NaN, Inf or negative. */
DFM_CLONES
static double rate_sum(const float *u, size_t n, int *bad)
{
    double acc[LANES] = {0, 0, 0, 0, 0, 0, 0, 0};
    int b[LANES] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        for (int k = 0; k < LANES; k++) {
            float v = u[i + k];
            b[k] |= !(v >= 0.0f) | (v == INFINITY);
            acc[k] += (double)v;
        }
    }
    double s = 0.0;
    int bb = 0;
    for (; i < n; i++) {
        float v = u[i];
        bb |= !(v >= 0.0f) | (v == INFINITY);
        s += (double)v;
    }
    for (int k = 0; k < LANES; k++) { s += acc[k]; bb |= b[k]; }
    *bad = bb;
    return s;
}

/* ---- options ---- */

static void ds_destroy(dfm_sampler *s)
{
    dfm__free(&s->b.mem, s->impl);
    s->impl = NULL;
}

static int ds_set_int(dfm_sampler *s, int opt, int64_t v)
{
    ds_impl *im = (ds_impl *)s->impl;
    if (opt == DFM_OPT_DS_CHUNK_ROWS) {
        if (v < DFM_CHUNK_AUTO)
            return dfm__fail(&s->b, DFM_EINVAL, "chunk rows must be >= 0 or DFM_CHUNK_AUTO, got %lld",
                             (long long)v);
        im->chunk = v;
        return 0;
    }
    if (opt != DFM_OPT_DS_PURITY) return DFM_EUNSUPPORTED;
    if (v != 0 && v != 1) return dfm__fail(&s->b, DFM_EINVAL, "purity must be 0 or 1");
    if (v) {
        if (s->gen->param != DFM_PARAM_LOGITS || s->method != DFM_METHOD_EXACT)
            return dfm__fail(&s->b, DFM_EINVAL,
                             "purity sampling needs posterior logits and DFM_METHOD_EXACT");
        if (dfm__mixture_of(s->gen->path)->source != DFM_SOURCE_MASK)
            return dfm__fail(&s->b, DFM_EINVAL, "purity sampling needs a mask source");
    }
    im->purity = (int)v;
    return 0;
}

static int ds_get_int(const dfm_sampler *s, int opt, int64_t *v)
{
    if (opt == DFM_OPT_DS_CHUNK_ROWS) { *v = ((const ds_impl *)s->impl)->chunk; return 0; }
    if (opt != DFM_OPT_DS_PURITY) return DFM_EUNSUPPORTED;
    *v = ((const ds_impl *)s->impl)->purity;
    return 0;
}

static int ds_set_double(dfm_sampler *s, int opt, double v)
{
    ds_impl *im = (ds_impl *)s->impl;
    if (opt != DFM_OPT_DS_TEMPERATURE && opt != DFM_OPT_DS_CORRECTOR && opt != DFM_OPT_DS_ETA)
        return DFM_EUNSUPPORTED;
    if (s->gen->param != DFM_PARAM_LOGITS)
        return dfm__fail(&s->b, DFM_EINVAL, "option %d applies to posterior-logit generators only", opt);
    if (opt == DFM_OPT_DS_TEMPERATURE) {
        if (!(v > 0.0) || !isfinite(v) || !((float)(1.0 / v) < INFINITY))
            return dfm__fail(&s->b, DFM_EINVAL, "temperature must be finite and > 0 (1/T a finite float), got %g", v);
        im->temp = v;
        return 0;
    }
    if (!(v >= 0.0) || !isfinite(v))
        return dfm__fail(&s->b, DFM_EINVAL, "%s must be finite and >= 0, got %g",
                         opt == DFM_OPT_DS_ETA ? "eta" : "the corrector weight", v);
    if (opt == DFM_OPT_DS_ETA) im->eta = v; else im->corr = v;
    return 0;
}

static int ds_get_double(const dfm_sampler *s, int opt, double *v)
{
    const ds_impl *im = (const ds_impl *)s->impl;
    switch (opt) {
    case DFM_OPT_DS_TEMPERATURE: *v = im->temp; return 0;
    case DFM_OPT_DS_CORRECTOR: *v = im->corr; return 0;
    case DFM_OPT_DS_ETA: *v = im->eta; return 0;
    default: return DFM_EUNSUPPORTED;
    }
}

/* ---- one step over a range of rows ---- */

typedef struct ds_err { int code; size_t row, coord; long y; } ds_err;
typedef struct ds_conf { float conf; int32_t idx; } ds_conf;

typedef struct step_ctx {
    const dfm_sampler *s;
    const dfm__mixture *m;
    const dfm_run_args *a;
    int32_t *state;          /* the whole batch */
    const float *out;        /* model output of the current chunk, indexed by r - row0 */
    size_t row0;             /* first batch row of the current chunk */
    size_t nblk, nitems;     /* coordinate blocks per row; work items of the chunk */
    size_t d, V, stride;
    float *scratch;          /* nthreads x V */
    ds_conf *conf;           /* nthreads x d (purity) */
    ds_err *err;             /* per tid */
    int64_t *jumps;          /* per tid */
    uint32_t step;
    int method, param, final_draw, extra, purity;
    float scale;             /* 1 / temperature */
    double h, pj;            /* step length; exact-step jump probability */
    double A, B;             /* Euler: rate on p (y != x) and on p0; exact: the extra part only */
} step_ctx;

/* Records an error at (row r, coordinate i) unless this thread already has a lower one. */
static int fail_at(step_ctx *c, int tid, int code, size_t r, size_t i, long y)
{
    const ds_err *e = &c->err[tid];
    if (e->code && (e->row < r || (e->row == r && e->coord <= i))) return code;
    c->err[tid].code = code;
    c->err[tid].row = r;
    c->err[tid].coord = i;
    c->err[tid].y = y;
    return code;
}

/* Draw from the weights w (total tot) excluding index x; -1 when no mass is left. */
static int32_t draw_except(float *w, size_t V, double tot, int32_t x, double u)
{
    double ex = tot - (double)w[x];
    if (!(ex > 0.0)) return -1;
    w[x] = 0.0f;
    int32_t y = dfm__draw_weights_f(w, V, ex, u);
    return w[y] > 0.0f ? y : -1;
}

/* Jump with the added rates lam_a on p (weights w, total tot) and lam_b on p0, over h. */
static int32_t extra_jump(const step_ctx *c, float *w, double tot, int32_t x, uint64_t grow,
                          uint32_t i, double lam_a, double lam_b, double uc, double uk)
{
    double lam = lam_a + lam_b;
    if (!(lam > 0.0) || !(uc < -expm1(-c->h * lam))) return x;
    double ut = dfm__uniform(c->s->b.seed, DFM__DS_STREAM_EXTRA_TGT, grow, i, c->step);
    if (lam_b <= 0.0 || uk * lam < lam_a) {
        int32_t y = draw_except(w, c->V, tot, x, ut);
        return y < 0 ? x : y;
    }
    return dfm__mix_source_draw_except(c->m, x, ut);
}

static int cmp_conf(const void *pa, const void *pb)
{
    const ds_conf *a = (const ds_conf *)pa, *b = (const ds_conf *)pb;
    if (a->conf != b->conf) return a->conf > b->conf ? -1 : 1;
    return a->idx < b->idx ? -1 : (a->idx > b->idx);
}

static int purity_row(step_ctx *c, size_t r, int tid)
{
    const dfm_run_args *a = c->a;
    uint64_t seed = c->s->b.seed, grow = (uint64_t)(a->row_offset + r);
    int32_t *x = c->state + r * c->d;
    const float *z0 = c->out + (r - c->row0) * c->stride;
    float *w = c->scratch + (size_t)tid * c->V;
    ds_conf *cf = c->conf + (size_t)tid * c->d;
    int32_t mask = c->m->mask;
    size_t nm = 0;
    for (size_t i = 0; i < c->d; i++) {
        if (a->fixed && a->fixed[r * c->d + i]) continue;
        const float *z = z0 + i * c->V;
        int bad;
        float mx = dfm__max_check(z, c->V, &bad);
        if (bad || mx == -INFINITY) return fail_at(c, tid, DFM_ENUMERIC, r, i, -1);
        if (x[i] != mask) continue;
        double tot = dfm__exp_shift_sum(z, c->V, mx, c->scale, w);
        double ex = tot - (double)w[mask];
        w[mask] = 0.0f;
        float best = 0.0f;
        for (size_t y = 0; y < c->V; y++) best = w[y] > best ? w[y] : best;
        /* no mass off the mask: least confident; an error only if it must be unmasked */
        cf[nm].conf = ex > 0.0 ? (float)((double)best / ex) : -1.0f;
        cf[nm].idx = (int32_t)i;
        nm++;
    }
    if (nm == 0) return 0;
    double e = (double)nm * c->pj, fl = floor(e);
    size_t n = (size_t)fl;
    if (dfm__uniform(seed, DFM__DS_STREAM_PURITY, grow, 0, c->step) < e - fl) n++;
    if (n > nm) n = nm;
    if (n == 0) return 0;
    qsort(cf, nm, sizeof *cf, cmp_conf);
    for (size_t k = 0; k < n; k++) {
        size_t i = (size_t)cf[k].idx;
        const float *z = z0 + i * c->V;
        int bad;
        float mx = dfm__max_check(z, c->V, &bad);
        double tot = dfm__exp_shift_sum(z, c->V, mx, c->scale, w);
        double u1, u2;
        dfm__uniform2(seed, DFM__DS_STREAM_STEP, grow, (uint32_t)i, c->step, &u1, &u2);
        int32_t y = draw_except(w, c->V, tot, mask, u2);
        if (y < 0) return fail_at(c, tid, DFM_ENUMERIC, r, i, mask);
        x[i] = y;
        c->jumps[tid]++;
    }
    return 0;
}

/* Coordinates [i0, i1) of row r for one step; returns 0 or the status recorded by fail_at. */
static int step_row(step_ctx *c, size_t r, size_t i0, size_t i1, int tid, int64_t *jumps)
{
    const dfm_run_args *a = c->a;
    uint64_t seed = c->s->b.seed;
    float *w = c->scratch + (size_t)tid * c->V;
    const size_t d = c->d, V = c->V;
    uint64_t grow = (uint64_t)(a->row_offset + r);
    int32_t *x = c->state + r * d;
    const float *z0 = c->out + (r - c->row0) * c->stride;
    const uint8_t *fx = a->fixed ? a->fixed + r * d : NULL;
    for (size_t i = i0; i < i1; i++) {
        if (fx && fx[i]) continue;
        const float *z = z0 + i * V;
        int32_t xi = x[i], y = xi;
        double u1, u2;
        if (c->param == DFM_PARAM_RATES) {
            int bad1 = 0, bad2 = 0;
            double lam = rate_sum(z, (size_t)xi, &bad1) + rate_sum(z + xi + 1, V - (size_t)xi - 1, &bad2);
            if (bad1 | bad2) {
                long yb = 0;
                for (size_t k = 0; k < V; k++)
                    if (k != (size_t)xi && (!(z[k] >= 0.0f) || z[k] == INFINITY)) { yb = (long)k; break; }
                return fail_at(c, tid, DFM_ENUMERIC, r, i, yb);
            }
            if (!(lam > 0.0)) continue;
            dfm__uniform2(seed, DFM__DS_STREAM_STEP, grow, (uint32_t)i, c->step, &u1, &u2);
            if (!(u1 < -expm1(-c->h * lam))) continue;
            memcpy(w, z, V * sizeof(float));
            w[xi] = 0.0f; /* the diagonal entry is ignored, whatever it holds */
            int32_t t = dfm__draw_weights_f(w, V, lam, u2);
            if (w[t] > 0.0f) y = t;
        } else {
            int bad;
            float mx = dfm__max_check(z, V, &bad);
            if (bad || mx == -INFINITY) return fail_at(c, tid, DFM_ENUMERIC, r, i, -1);
            dfm__uniform2(seed, DFM__DS_STREAM_STEP, grow, (uint32_t)i, c->step, &u1, &u2);
            if (c->method == DFM_METHOD_EXACT) {
                if (u1 < c->pj) {
                    double tot = dfm__exp_shift_sum(z, V, mx, c->scale, w);
                    y = dfm__draw_weights_f(w, V, tot, u2);
                } else if (c->extra) {
                    double tot = dfm__exp_shift_sum(z, V, mx, c->scale, w);
                    double px = (double)w[xi] / tot, ue1, ue2;
                    dfm__uniform2(seed, DFM__DS_STREAM_EXTRA, grow, (uint32_t)i, c->step, &ue1, &ue2);
                    y = extra_jump(c, w, tot, xi, grow, (uint32_t)i, c->A * (1.0 - px),
                                   c->B * (1.0 - dfm__mix_p0(c->m, xi)), ue1, ue2);
                }
            } else if (c->final_draw) { /* Euler, last step: x_t = the x1 sample */
                double tot = dfm__exp_shift_sum(z, V, mx, c->scale, w);
                y = dfm__draw_weights_f(w, V, tot, u2);
            } else {
                /* Euler exactly as flow_matching's MixtureDiscreteEulerSolver: draw x1 ~ p,
                 * conditional rates u(y) = A delta(y, x1) + B p0(y) for y != x^i, jump with
                 * probability 1 - exp(-h lambda), lambda = A [x1 != x^i] + B (1 - p0(x^i)),
                 * target drawn from u. The coin u1 is drawn first: when it cannot fire even
                 * for the larger lambda, x1 is not needed (same law, no softmax). */
                double lb = c->B * (1.0 - dfm__mix_p0(c->m, xi)), l1 = c->A + lb;
                if (l1 > 0.0 && u1 < -expm1(-c->h * l1)) {
                    double tot = dfm__exp_shift_sum(z, V, mx, c->scale, w);
                    int32_t x1 = dfm__draw_weights_f(w, V, tot, u2);
                    double lam = x1 != xi ? l1 : lb;
                    if (x1 != xi && lb <= 0.0) {
                        y = x1;
                    } else if (lam > 0.0 && u1 < -expm1(-c->h * lam)) {
                        double uk, ut;
                        dfm__uniform2(seed, DFM__DS_STREAM_EXTRA, grow, (uint32_t)i, c->step, &uk, &ut);
                        if (x1 != xi && uk * lam < c->A) y = x1;
                        else y = dfm__mix_source_draw_except(c->m, xi, ut);
                    }
                }
            }
        }
        if (y != xi) { x[i] = y; (*jumps)++; }
    }
    return 0;
}

/* Work items of a chunk, claimed dynamically by the threads: blocks of DS_BLOCK coordinates of
 * a row (whole rows under purity), numbered from the chunk's last block backwards, since the
 * model wrote the last rows last and they are the ones still in cache. A failing item does not
 * stop the others: each thread keeps its lowest bad (row, coordinate). */
#define DS_BLOCK 32

static int step_items(void *vctx, size_t begin, size_t end, int tid)
{
    step_ctx *c = (step_ctx *)vctx;
    int64_t jumps = 0;
    int st = 0;
    for (size_t j = begin; j < end; j++) {
        size_t item = c->nitems - 1 - j;
        int rs;
        if (c->purity) {
            rs = purity_row(c, c->row0 + item, tid);
        } else {
            size_t r = c->row0 + item / c->nblk, i0 = (item % c->nblk) * DS_BLOCK;
            size_t i1 = c->d - i0 < DS_BLOCK ? c->d : i0 + DS_BLOCK;
            rs = step_row(c, r, i0, i1, tid, &jumps);
        }
        if (rs) st = rs;
    }
    c->jumps[tid] += jumps;
    return st;
}

/* ---- run ---- */

/* Rows per model call: all (0), the host's count, or DFM_CHUNK_AUTO: about 1 MiB of model
 * output per thread (a core's L2 on current x86-64 and ARM servers holds it), and at least one
 * row per thread. */
static size_t ds_chunk_rows(int64_t opt, size_t rows, size_t stride, int nt)
{
    if (opt > 0) return (uint64_t)opt < (uint64_t)rows ? (size_t)opt : rows;
    if (opt == 0) return rows;
    size_t row_bytes = stride * sizeof(float), per = (size_t)1 << 20;
    size_t per_thread = row_bytes >= per ? 1 : per / row_bytes;
    size_t c = per_thread > rows / (size_t)nt ? rows : per_thread * (size_t)nt;
    return c < 1 ? 1 : (c > rows ? rows : c);
}

typedef struct run_buf {
    int32_t *state, *saved;
    double *tv;
    float *out, *scratch;
    ds_conf *conf;
    ds_err *err;
    int64_t *jumps;
} run_buf;

static void free_buf(dfm_sampler *s, run_buf *b)
{
    dfm__free(&s->b.mem, b->state);
    dfm__free(&s->b.mem, b->saved);
    dfm__free(&s->b.mem, b->tv);
    dfm__free(&s->b.mem, b->out);
    dfm__free(&s->b.mem, b->scratch);
    dfm__free(&s->b.mem, b->conf);
    dfm__free(&s->b.mem, b->err);
    dfm__free(&s->b.mem, b->jumps);
}

/* kappa, kappa' at t with checks. */
static int kappa_at(dfm_sampler *s, double t, double *k, double *dk)
{
    dfm_sched_values v;
    int raw = 0, st = dfm__sched_eval(&s->gen->path->sched, t, &v, &raw);
    if (st == DFM_ECALLBACK) return dfm__fail_callback(&s->b, raw, "scheduler");
    if (st || !(v.alpha >= 0.0 && v.alpha <= 1.0))
        return dfm__fail(&s->b, DFM_ENUMERIC, "kappa(t = %g) is not a number in [0, 1]", t);
    *k = v.alpha;
    *dk = v.d_alpha;
    return 0;
}

static int ds_run_inner(dfm_sampler *s, const dfm_run_args *a, run_buf *b)
{
    ds_impl *im = (ds_impl *)s->impl;
    const dfm_generator *g = s->gen;
    const dfm__mixture *m = dfm__mixture_of(g->path);
    size_t d = g->path->space.n_tokens, V = (size_t)m->vocab, stride = g->out_stride;
    size_t rows = a->rows, n, nsteps = dfm__sampler_nsteps(s);
    int st = dfm__check_run_common(s, a, d, 0);
    if (st) return st;
    if (a->reals) return dfm__fail(&s->b, DFM_EINVAL, "args->reals must be NULL on a discrete space");
    if (s->grid && !(s->grid[1] > s->grid[0]))
        return dfm__fail(&s->b, DFM_EINVAL, "discrete samplers need an increasing time grid");
    int logits = g->param == DFM_PARAM_LOGITS;
    int purity = logits && im->purity;
    int extra_cfg = im->eta > 0.0 || im->corr > 0.0 || im->cfn != NULL;
    if (purity && extra_cfg)
        return dfm__fail(&s->b, DFM_EINVAL, "purity sampling cannot be combined with eta or a corrector");
    if (rows == 0) return 0;
    if (dfm__mul(rows, d, &n)) return dfm__fail(&s->b, DFM_EOVERFLOW, "rows x d overflows");
    for (size_t j = 0; j < n; j++) {
        if (a->draw_source && !(a->fixed && a->fixed[j])) continue;
        if (a->tokens[j] < 0 || (size_t)a->tokens[j] >= V)
            return dfm__fail(&s->b, DFM_ERANGE, "tokens[row %zu][coord %zu] = %d is outside [0, %zu)",
                             j / d, j % d, (int)a->tokens[j], V);
    }
    int nt = s->b.nthreads < 1 ? 1 : s->b.nthreads;
    size_t chunk = ds_chunk_rows(im->chunk, rows, stride, nt);
    size_t nout, nsc, nsave = 0;
    if (dfm__mul(chunk, stride, &nout) || dfm__mul((size_t)nt, V, &nsc) ||
        (a->n_save && dfm__mul(a->n_save, n, &nsave)))
        return dfm__fail(&s->b, DFM_EOVERFLOW, "buffer sizes overflow");
    b->state = (int32_t *)dfm__calloc(&s->b.mem, n, sizeof(int32_t));
    b->tv = (double *)dfm__calloc(&s->b.mem, rows, sizeof(double));
    b->out = (float *)dfm__calloc(&s->b.mem, nout, sizeof(float));
    b->scratch = (float *)dfm__calloc(&s->b.mem, nsc, sizeof(float));
    b->err = (ds_err *)dfm__calloc(&s->b.mem, (size_t)nt, sizeof(ds_err));
    b->jumps = (int64_t *)dfm__calloc(&s->b.mem, (size_t)nt, sizeof(int64_t));
    if (nsave) b->saved = (int32_t *)dfm__calloc(&s->b.mem, nsave, sizeof(int32_t));
    if (purity) b->conf = (ds_conf *)dfm__calloc(&s->b.mem, (size_t)nt * d, sizeof(ds_conf));
    if (!b->state || !b->tv || !b->out || !b->scratch || !b->err || !b->jumps ||
        (nsave && !b->saved) || (purity && !b->conf))
        return dfm__fail(&s->b, DFM_ENOMEM, "cannot allocate the sampler buffers");

    memcpy(b->state, a->tokens, n * sizeof(int32_t));
    if (a->draw_source) {
        for (size_t j = 0; j < n; j++) {
            if (a->fixed && a->fixed[j]) continue;
            double u = dfm__uniform(s->b.seed, DFM__DS_STREAM_SRC, (uint64_t)(a->row_offset + j / d),
                                    (uint32_t)(j % d), 0);
            b->state[j] = dfm__mix_source_draw(m, u);
        }
    }

    step_ctx c;
    memset(&c, 0, sizeof c);
    c.s = s; c.m = m; c.a = a; c.state = b->state; c.out = b->out;
    c.d = d; c.V = V; c.stride = stride; c.scratch = b->scratch; c.conf = b->conf;
    c.err = b->err; c.jumps = b->jumps; c.method = s->method; c.param = g->param;
    c.purity = purity;
    c.nblk = (d + DS_BLOCK - 1) / DS_BLOCK;
    c.scale = (float)(1.0 / im->temp);

    size_t ks = 0;
    for (size_t i = 0; i < nsteps; i++) {
        double t0 = dfm__sampler_time(s, i), t1 = dfm__sampler_time(s, i + 1);
        while (ks < a->n_save && a->save_times[ks] < t1) {
            memcpy(b->saved + ks * n, b->state, n * sizeof(int32_t));
            ks++;
        }
        double k0 = 0.0, dk0 = 0.0, k1 = 0.0, dk1 = 0.0; /* -O3 cannot see kappa_at set them */
        if ((st = kappa_at(s, t0, &k0, &dk0)) || (st = kappa_at(s, t1, &k1, &dk1))) return st;
        if (k1 < k0)
            return dfm__fail(&s->b, DFM_ENUMERIC, "kappa decreases between t = %g and %g", t0, t1);
        double corr = im->corr;
        if (im->cfn) {
            int rc = im->cfn(t0, &corr, im->cud);
            if (rc) return dfm__fail_callback(&s->b, rc, "corrector");
            if (!(corr >= 0.0) || !isfinite(corr))
                return dfm__fail(&s->b, DFM_ENUMERIC, "corrector c(%g) = %g is not finite and >= 0", t0, corr);
        }
        int last = i + 1 == nsteps;
        c.step = (uint32_t)i;
        c.h = t1 - t0;
        c.final_draw = 0;
        c.extra = 0;
        c.A = c.B = 0.0;
        double om = 1.0 - k0;
        if (logits && s->method == DFM_METHOD_EXACT) {
            c.pj = om > 0.0 ? (k1 - k0) / om : 0.0;
            if (c.pj > 1.0) c.pj = 1.0;
            if (!purity && (corr > 0.0 || im->eta > 0.0) && om > 0.0) {
                c.A = (corr * dk0 + im->eta * k0) / om;
                c.B = (k0 > 0.0 ? corr * dk0 / k0 : 0.0) + im->eta;
                c.extra = 1;
            }
        } else if (logits) {
            if (last || !(om > 0.0)) {
                c.final_draw = 1;
            } else {
                c.A = ((1.0 + corr) * dk0 + im->eta * k0) / om;
                c.B = (k0 > 0.0 ? corr * dk0 / k0 : 0.0) + im->eta;
            }
        }
        if (!isfinite(c.A) || !isfinite(c.B) || c.A < 0.0 || c.B < 0.0)
            return dfm__fail(&s->b, DFM_ENUMERIC,
                             "rate coefficients are not finite at t = %g (kappa' = %g); use the exact "
                             "step or a grid avoiding this time", t0, dk0);
        for (size_t r = 0; r < rows; r++) b->tv[r] = t0;
        /* The model sees the batch in chunks of rows; each chunk is stepped while its logits
         * are still in cache. Rows are independent, so the chunking never changes results. */
        for (size_t r0 = 0; r0 < rows; r0 += chunk) {
            size_t cr = rows - r0 < chunk ? rows - r0 : chunk;
            dfm_model_io io;
            memset(&io, 0, sizeof io);
            io.struct_size = sizeof io;
            io.rows = cr;
            io.row_offset = a->row_offset + r0;
            io.t = b->tv + r0;
            io.tokens = b->state + r0 * d;
            io.n_tokens = d;
            io.out = b->out;
            io.out_stride = stride;
            io.branch = DFM_BRANCH_MAIN;
            io.step = (int)i;
            s->stats[DFM_STAT_MODEL_CALLS]++;
            int rc = a->model(&io, a->model_data);
            if (rc) return dfm__fail_callback(&s->b, rc, "model");
            c.row0 = r0;
            c.nitems = purity ? cr : cr * c.nblk;
            st = dfm__parallel_dynamic(&s->b, nt, c.nitems, 1, step_items, &c);
            if (st) break;
        }
        if (st) {
            const ds_err *e = NULL;
            for (int k = 0; k < nt; k++)
                if (b->err[k].code && (!e || b->err[k].row < e->row ||
                                       (b->err[k].row == e->row && b->err[k].coord < e->coord)))
                    e = &b->err[k];
            if (e && g->param == DFM_PARAM_RATES)
                return dfm__fail(&s->b, e->code, "model rate of row %zu coord %zu to token %ld is "
                                 "negative, NaN or Inf (step %zu)", e->row, e->coord, e->y, i);
            if (e && e->y >= 0)
                return dfm__fail(&s->b, e->code, "model posterior of row %zu coord %zu puts no mass "
                                 "off the mask token (step %zu)", e->row, e->coord, i);
            if (e)
                return dfm__fail(&s->b, e->code, "model logits of row %zu coord %zu contain NaN/+Inf "
                                 "or are all -Inf (step %zu)", e->row, e->coord, i);
            return dfm__fail(&s->b, st, "step %zu failed", i);
        }
        s->stats[DFM_STAT_STEPS]++;
        if ((st = dfm__step_done(s, a->progress, a->progress_data, (int)i, (int)nsteps, t1)))
            return st;
    }
    while (ks < a->n_save) {
        memcpy(b->saved + ks * n, b->state, n * sizeof(int32_t));
        ks++;
    }
    int64_t jumps = 0;
    for (int k = 0; k < nt; k++) jumps += b->jumps[k];
    s->stats[DFM_STAT_JUMPS] = jumps;
    memcpy(a->tokens, b->state, n * sizeof(int32_t));
    if (nsave) memcpy(a->saved_tokens, b->saved, nsave * sizeof(int32_t));
    return 0;
}

static int ds_run(dfm_sampler *s, const dfm_run_args *a)
{
    run_buf b;
    memset(&b, 0, sizeof b);
    int st = ds_run_inner(s, a, &b);
    free_buf(s, &b);
    return st;
}

static const dfm__sampler_ops ds_ops = {ds_destroy, ds_run, ds_set_int, ds_get_int, ds_set_double,
                                        ds_get_double};

int dfm__ds_sampler_init(dfm_sampler *s, int method)
{
    int param = s->gen->param;
    if (!s->gen->path || s->gen->path->kind != DFM_PATH_MIXTURE) return DFM_EUNSUPPORTED;
    if (param == DFM_PARAM_LOGITS && method != DFM_METHOD_EXACT && method != DFM_METHOD_EULER)
        return DFM_EUNSUPPORTED;
    if (param == DFM_PARAM_RATES && method != DFM_METHOD_EULER) return DFM_EUNSUPPORTED;
    ds_impl *im = (ds_impl *)dfm__calloc(&s->b.mem, 1, sizeof(ds_impl));
    if (!im) return DFM_ENOMEM;
    im->temp = 1.0;
    s->impl = im;
    s->ops = &ds_ops;
    return 0;
}

int dfm_sampler_set_corrector(dfm_sampler *s, dfm_corrector_fn fn, void *user_data)
{
    if (!s) return DFM_EINVAL;
    DFM__NOT_RUNNING(&s->b);
    dfm__clear(&s->b);
    if (s->ops != &ds_ops || s->gen->param != DFM_PARAM_LOGITS)
        return dfm__fail(&s->b, DFM_EUNSUPPORTED,
                         "a corrector needs a sampler of a factorized generator with posterior logits");
    ds_impl *im = (ds_impl *)s->impl;
    im->cfn = fn;
    im->cud = fn ? user_data : NULL;
    return 0;
}
