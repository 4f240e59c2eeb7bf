/* Rate-matrix generators on finite spaces and the factorized metric-path generator, with their
 * samplers: Euler, exact uniformization / thinning (Campbell et al. 2022, "A Continuous Time
 * Framework for Discrete Denoising Models", §4; Lewis & Shedler 1979 thinning) and Gillespie
 * (Gillespie 1977). Random streams (keyed by seed, global row, coordinate, counter):
 *   0xC1 source draws, 0xC2 Euler steps (counter = interval), 0xC3 thinning accept / destination
 *   and 0xC4 candidate times (counter = the row's candidate count), 0xC5 Gillespie holding
 *   times and destinations (counter = the row's event count). */
#include "ctmc/ctmc_impl.h"
#include "core/rng_impl.h"

#include <math.h>
#include <stdio.h>

#define STREAM_SOURCE 0xC1u
#define STREAM_EULER  0xC2u
#define STREAM_ACCEPT 0xC3u
#define STREAM_CAND   0xC4u
#define STREAM_GILL   0xC5u

typedef struct ctgen {
    int32_t V;
    size_t d, S;
    size_t n_dest;   /* rate matrix: S; factorized: d * V */
    int factorized;
} ctgen;

/* ---- generator handle ---- */

static void gen_destroy(dfm_generator *g)
{
    dfm__free(&g->b.mem, g->impl);
    g->impl = NULL;
}

static int gen_clone(dfm_generator *dst, const dfm_generator *src)
{
    ctgen *c = (ctgen *)dfm__calloc(&dst->b.mem, 1, sizeof *c);
    if (!c) return DFM_ENOMEM;
    *c = *(const ctgen *)src->impl;
    dst->impl = c;
    return 0;
}

static int gen_sampler_init(dfm_sampler *s, int method);

static const dfm__gen_ops gen_ops = {gen_destroy, gen_clone, gen_sampler_init, NULL, NULL, NULL,
                                     NULL};

static int space_vd(const dfm_space *sp, int32_t *V, size_t *d)
{
    dfm_space_part info;
    if (!sp || dfm_space_n_parts(sp) != 1 || dfm_space_part_info(sp, 0, &info) ||
        info.kind != DFM_SPACE_DISCRETE)
        return DFM_EINVAL;
    *V = info.vocab;
    *d = info.dim;
    return 0;
}

int dfm_generator_create_rate_matrix(dfm_generator **out, const dfm_path *path,
                                     const dfm_space *space, int param, const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (path) space = &path->space;
    int32_t V;
    size_t d;
    if (!space) return dfm__error(DFM_EINVAL, "%s: give a path or a space", __func__);
    if (space_vd(space, &V, &d))
        return dfm__error(DFM_EINVAL, "%s: the space must be a single discrete part", __func__);
    size_t S = dfm__ct_states(V, d);
    if (!S)
        return dfm__error(DFM_ELIMIT, "%s: V^d = %ld^%zu states exceed DFM_CTMC_MAX_STATES (%d)",
                          __func__, (long)V, d, DFM_CTMC_MAX_STATES);
    if (param != DFM_PARAM_STATE_LOGITS && param != DFM_PARAM_RATES)
        return dfm__error(DFM_EINVAL, "%s: param must be DFM_PARAM_STATE_LOGITS or "
                          "DFM_PARAM_RATES, got %d", __func__, param);
    if (path && path->kind != DFM_PATH_FINITE && path->kind != DFM_PATH_METRIC)
        return dfm__error(DFM_EINVAL, "%s: the path must be a finite or metric path (kind %d)",
                          __func__, path->kind);
    if (param == DFM_PARAM_STATE_LOGITS && !path)
        return dfm__error(DFM_EINVAL, "%s: DFM_PARAM_STATE_LOGITS needs a finite or metric path",
                          __func__);
    ctgen *c;
    dfm_generator *g;
    int st = dfm__gen_new(&g, DFM_GEN_RATE_MATRIX, param, S, &gen_ops, path, mem);
    if (st) return st;
    c = (ctgen *)dfm__calloc(&g->b.mem, 1, sizeof *c);
    if (!c) {
        dfm_generator_free(g);
        return dfm__error(DFM_ENOMEM, "%s: cannot allocate the generator", __func__);
    }
    c->V = V; c->d = d; c->S = S; c->n_dest = S; c->factorized = 0;
    g->impl = c;
    *out = g;
    return 0;
}

int dfm_generator_create_metric(dfm_generator **out, const dfm_path *path,
                                const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!path) return dfm__null(__func__, "path");
    if (path->kind != DFM_PATH_METRIC)
        return dfm__error(DFM_EINVAL, "%s: the path must be a metric path (kind %d)", __func__,
                          path->kind);
    const dfm__ctpath *m = dfm__ctpath_of(path);
    size_t n;
    if (dfm__mul(m->d, (size_t)m->V, &n) || n > (size_t)INT32_MAX)
        return dfm__error(DFM_EOVERFLOW, "%s: d x V exceeds 2^31 - 1", __func__);
    dfm_generator *g;
    int st = dfm__gen_new(&g, DFM_GEN_FACTORIZED, DFM_PARAM_LOGITS, n, &gen_ops, path, mem);
    if (st) return st;
    ctgen *c = (ctgen *)dfm__calloc(&g->b.mem, 1, sizeof *c);
    if (!c) {
        dfm_generator_free(g);
        return dfm__error(DFM_ENOMEM, "%s: cannot allocate the generator", __func__);
    }
    c->V = m->V; c->d = m->d; c->S = m->S; c->n_dest = n; c->factorized = 1;
    g->impl = c;
    *out = g;
    return 0;
}

/* ---- sampler data ---- */

typedef struct ctsamp {
    double bound;    /* DFM_OPT_CT_RATE_BOUND (0: computed) */
    double safety;   /* DFM_OPT_CT_BOUND_SAFETY */
    double tmax;     /* DFM_OPT_CT_TMAX */
    int64_t max_events;
} ctsamp;

/* Per-thread evaluation scratch with a lazily filled per-time table of conditionals. */
typedef struct tscratch {
    dfm_base eb;      /* error detail of this thread */
    size_t bad_row;   /* row of the first failure */
    double t;         /* time of the table (NAN: none) */
    double beta, dbeta;
    uint8_t *filled;  /* per x1 (finite: S; metric: V) */
    double *tab;      /* finite: S x 2S (p, dp); metric: V x V probs */
    double *post;     /* S (rate matrix) or V (factorized) */
    double *pb;       /* finite without table: 2S */
    double *crow;     /* S */
    double *rates;    /* n_dest */
    double *rates2;   /* n_dest */
} tscratch;

typedef struct runctx {
    dfm_sampler *s;
    const dfm_run_args *a;
    const ctgen *c;
    dfm_path *path;         /* the generator's path (may be NULL) */
    const dfm__ctpath *m;
    int param;
    int finite_table;
    tscratch *ts;
    int nthr;
    /* state */
    int32_t *cur;           /* rows x d */
    /* requests */
    size_t nreq;
    size_t *req_row;        /* request -> row */
    double *req_t;
    int32_t *req_tok;       /* nreq x d */
    float *out;             /* nreq x out_stride */
    int step;
} runctx;

static int ts_alloc(runctx *R, tscratch *ts)
{
    const ctgen *c = R->c;
    const dfm_allocator *mem = &R->s->b.mem;
    dfm__base_init(&ts->eb, mem);
    ts->t = NAN;
    size_t S = c->S, V = (size_t)c->V;
    ts->rates = (double *)dfm__calloc(mem, c->n_dest, sizeof(double));
    ts->rates2 = (double *)dfm__calloc(mem, c->n_dest, sizeof(double));
    if (!ts->rates || !ts->rates2) return DFM_ENOMEM;
    if (R->param == DFM_PARAM_RATES) return 0;
    if (c->factorized || R->path->kind == DFM_PATH_METRIC) {
        ts->filled = (uint8_t *)dfm__calloc(mem, V, 1);
        ts->tab = (double *)dfm__calloc(mem, V * V, sizeof(double));
        ts->post = (double *)dfm__calloc(mem, c->factorized ? V : S, sizeof(double));
        if (!ts->filled || !ts->tab || !ts->post) return DFM_ENOMEM;
    } else {
        ts->post = (double *)dfm__calloc(mem, S, sizeof(double));
        ts->crow = (double *)dfm__calloc(mem, S, sizeof(double));
        ts->filled = (uint8_t *)dfm__calloc(mem, S, 1);
        if (R->finite_table) ts->tab = (double *)dfm__calloc(mem, 2 * S * S, sizeof(double));
        else ts->pb = (double *)dfm__calloc(mem, 2 * S, sizeof(double));
        if (!ts->post || !ts->crow || !ts->filled || (!ts->tab && !ts->pb)) return DFM_ENOMEM;
    }
    return 0;
}

static void ts_free(const dfm_allocator *mem, tscratch *ts)
{
    dfm__free(mem, ts->filled);
    dfm__free(mem, ts->tab);
    dfm__free(mem, ts->post);
    dfm__free(mem, ts->pb);
    dfm__free(mem, ts->crow);
    dfm__free(mem, ts->rates);
    dfm__free(mem, ts->rates2);
}

/* Set the scratch's time; metric paths get beta. */
static int ts_time(runctx *R, tscratch *ts, double t)
{
    if (t == ts->t) return 0;
    if (R->param == DFM_PARAM_RATES) { ts->t = t; return 0; }
    size_t n = (R->c->factorized || R->path->kind == DFM_PATH_METRIC) ? (size_t)R->c->V : R->c->S;
    memset(ts->filled, 0, n);
    ts->t = NAN;
    if (R->path->kind == DFM_PATH_METRIC) {
        int st = dfm__metric_beta(R->path, &ts->eb, t, &ts->beta, &ts->dbeta);
        if (st) return st;
        if (!isfinite(ts->dbeta))
            return dfm__fail(&ts->eb, DFM_ENUMERIC,
                             "metric rates diverge at t = %g (lower DFM_OPT_CT_TMAX)", t);
    }
    ts->t = t;
    return 0;
}

static const double *metric_tab(runctx *R, tscratch *ts, int32_t x1)
{
    size_t V = (size_t)R->c->V;
    double *row = ts->tab + (size_t)x1 * V;
    if (!ts->filled[x1]) {
        dfm__metric_probs(R->m, ts->beta, x1, row);
        ts->filled[x1] = 1;
    }
    return row;
}

static int finite_get(runctx *R, tscratch *ts, int32_t x1, const double **p, const double **dp)
{
    size_t S = R->c->S;
    double *buf = R->finite_table ? ts->tab + (size_t)x1 * 2 * S : ts->pb;
    if (!R->finite_table || !ts->filled[x1]) {
        int st = dfm__finite_cond(&ts->eb, R->path, ts->t, x1, buf, buf + S);
        if (st) return st;
        if (R->finite_table) ts->filled[x1] = 1;
    }
    *p = buf;
    *dp = buf + S;
    return 0;
}

/* Softmax of n float logits into double probabilities. */
static int posterior(dfm_base *eb, const float *z, size_t n, double *post, size_t row)
{
    double lse;
    float zmax;
    if (dfm__logsumexp(z, n, &lse, &zmax))
        return dfm__fail(eb, DFM_ENUMERIC,
                         "row %zu: model logits contain NaN or +Inf, or are all -Inf", row);
    for (size_t i = 0; i < n; i++) post[i] = exp((double)z[i] - lse);
    return 0;
}

/* DFM_ENUMERIC (message on ts->eb) when the model left out[req][e0..e1) unwritten, else 0. */
static int unwritten(runctx *R, tscratch *ts, size_t req, size_t e0, size_t e1)
{
    return dfm__fail_unwritten(&ts->eb, "model", R->out, R->nreq, R->s->gen->out_stride, 1, req,
                               e0, e1, R->a->row_offset + R->req_row[req]);
}

/* Factorized generator: per free coordinate i, the posterior over x1^i weights the metric
 * path's conditional rates out of tok[i] (beta' p(v) [d(x1, z) - d(x1, v)]_+). */
static int rates_factorized(runctx *R, tscratch *ts, size_t req, const int32_t *tok,
                            const float *out, double *rates)
{
    const ctgen *c = R->c;
    size_t row = R->req_row[req], d = c->d, V = (size_t)c->V;
    size_t grow = R->a->row_offset + row;
    const double *dd = R->m->dist;
    int st;
    for (size_t i = 0; i < d; i++) {
        if (R->a->fixed && R->a->fixed[row * d + i]) continue;
        if ((st = posterior(&ts->eb, out + i * V, V, ts->post, grow)))
            return unwritten(R, ts, req, i * V, i * V + V) ? DFM_ENUMERIC : st;
        size_t z = (size_t)tok[i];
        double *ri = rates + i * V;
        for (size_t x1 = 0; x1 < V; x1++) {
            double w = ts->post[x1];
            if (w <= 0.0) continue;
            const double *pr = metric_tab(R, ts, (int32_t)x1), *dx = dd + x1 * V;
            double dz = dx[z], wb = w * ts->dbeta;
            for (size_t v = 0; v < V; v++) {
                double g = dz - dx[v];
                if (g > 0.0) ri[v] += wb * pr[v] * g;
            }
        }
        ri[z] = 0.0;
    }
    return 0;
}

/* Rate matrix, DFM_PARAM_RATES: the model's row of rates out of state x (finite, >= 0). */
static int rates_from_model(runctx *R, tscratch *ts, size_t req, int32_t x, const float *out,
                            double *rates)
{
    size_t S = R->c->S, grow = R->a->row_offset + R->req_row[req];
    for (size_t y = 0; y < S; y++) {
        if (y == (size_t)x) continue;
        double q = (double)out[y];
        if ((!isfinite(q) || q < 0.0) && unwritten(R, ts, req, y, y + 1))
            return DFM_ENUMERIC;
        if (!isfinite(q) || q < 0.0)
            return dfm__fail(&ts->eb, DFM_ENUMERIC,
                             "row %zu at t = %g: model rate from state %d to state %zu is "
                             "%g (must be finite and >= 0)", grow, R->req_t[req], (int)x, y, q);
        rates[y] = q;
    }
    return 0;
}

/* Rate matrix on a metric path: the posterior over joint x1 weights the per-coordinate metric
 * rates out of the state x (one coordinate changes per jump). */
static void rates_metric_joint(runctx *R, tscratch *ts, const int32_t *tok, int32_t x,
                               double *rates)
{
    const ctgen *c = R->c;
    size_t d = c->d, V = (size_t)c->V, S = c->S;
    const double *dd = R->m->dist;
    for (size_t x1 = 0; x1 < S; x1++) {
        double w = ts->post[x1];
        if (w <= 0.0) continue;
        int32_t rem = (int32_t)x1;
        size_t stride = 1;
        for (size_t i = d; i-- > 0;) {
            size_t a1 = (size_t)(rem % c->V), zi = (size_t)tok[i];
            rem /= c->V;
            const double *pr = metric_tab(R, ts, (int32_t)a1), *dx = dd + a1 * V;
            double dz = dx[zi], wb = w * ts->dbeta;
            for (size_t v = 0; v < V; v++) {
                double g = dz - dx[v];
                if (g > 0.0)
                    rates[(size_t)x + (v - zi) * stride] += wb * pr[v] * g;
            }
            stride *= V;
        }
    }
}

/* Rate matrix, DFM_PARAM_STATE_LOGITS: softmax of the model's logits over x1, then the
 * posterior-weighted conditional rates (kinetic-optimal on a finite path, metric otherwise). */
static int rates_from_posterior(runctx *R, tscratch *ts, size_t req, const int32_t *tok,
                                int32_t x, const float *out, double *rates)
{
    size_t S = R->c->S, grow = R->a->row_offset + R->req_row[req];
    int st;
    if ((st = posterior(&ts->eb, out, S, ts->post, grow)))
        return unwritten(R, ts, req, 0, S) ? DFM_ENUMERIC : st;
    if (R->path->kind == DFM_PATH_FINITE) {
        for (size_t x1 = 0; x1 < S; x1++) {
            double w = ts->post[x1];
            if (w <= 0.0) continue;
            const double *p, *dp;
            if ((st = finite_get(R, ts, (int32_t)x1, &p, &dp))) return st;
            dfm__kinetic_row(p, dp, S, (size_t)x, ts->crow);
            for (size_t y = 0; y < S; y++) rates[y] += w * ts->crow[y];
        }
    } else {
        rates_metric_joint(R, ts, tok, x, rates);
    }
    rates[x] = 0.0;
    return 0;
}

/* Rate matrix: no jump may change a fixed coordinate of the row. */
static void rates_drop_fixed(runctx *R, size_t row, int32_t x, double *rates)
{
    size_t d = R->c->d, V = (size_t)R->c->V, S = R->c->S;
    const uint8_t *fx = R->a->fixed + row * d;
    for (size_t y = 0; y < S; y++) {
        if (rates[y] == 0.0) continue;
        size_t yy = y, xx = (size_t)x;
        for (size_t i = d; i-- > 0;) {
            if (fx[i] && yy % V != xx % V) { rates[y] = 0.0; break; }
            yy /= V;
            xx /= V;
        }
    }
}

/* Rates out of the row's state into every destination (rates[dest], 0 for the current state and
 * for destinations that change a fixed coordinate) and their total. */
static int eval_rates(runctx *R, tscratch *ts, size_t req, double *rates, double *lam)
{
    const ctgen *c = R->c;
    size_t row = R->req_row[req], d = c->d;
    const int32_t *tok = R->req_tok + req * d;
    const float *out = R->out + req * R->s->gen->out_stride;
    double t = R->req_t[req];
    int st;
    memset(rates, 0, c->n_dest * sizeof(double));
    if ((st = ts_time(R, ts, t))) return st;
    if (c->factorized) {
        if ((st = rates_factorized(R, ts, req, tok, out, rates))) return st;
    } else {
        int32_t x = dfm__ct_flat(tok, c->V, d);
        if (R->param == DFM_PARAM_RATES) st = rates_from_model(R, ts, req, x, out, rates);
        else st = rates_from_posterior(R, ts, req, tok, x, out, rates);
        if (st) return st;
        if (R->a->fixed) rates_drop_fixed(R, row, x, rates);
    }
    double tot = 0.0;
    for (size_t j = 0; j < c->n_dest; j++) tot += rates[j];
    if (!isfinite(tot))
        return dfm__fail(&ts->eb, DFM_ENUMERIC, "row %zu at t = %g: total jump rate is %g",
                         R->a->row_offset + row, t, tot);
    *lam = tot;
    return 0;
}

/* Inverse-CDF destination from rates with total lam, u in [0, 1). */
static size_t draw_dest(const double *rates, size_t n, double lam, double u)
{
    double target = u * lam, acc = 0.0;
    size_t last = 0;
    for (size_t j = 0; j < n; j++) {
        if (rates[j] <= 0.0) continue;
        acc += rates[j];
        last = j;
        if (target < acc) return j;
    }
    return last;
}

static void apply_dest(const ctgen *c, int32_t *tok, size_t dest)
{
    if (c->factorized) tok[dest / (size_t)c->V] = (int32_t)(dest % (size_t)c->V);
    else dfm__ct_unflat((int32_t)dest, c->V, c->d, tok);
}

/* Call the model on the pending requests. */
static int call_model(runctx *R)
{
    if (R->nreq == 0) return 0;
    dfm_sampler *s = R->s;
    dfm_model_io io;
    memset(&io, 0, sizeof io);
    io.struct_size = sizeof io;
    io.rows = R->nreq;
    io.row_offset = R->a->row_offset;
    io.t = R->req_t;
    io.tokens = R->req_tok;
    io.n_tokens = R->c->d;
    io.out = R->out;
    io.out_stride = s->gen->out_stride;
    io.branch = DFM_BRANCH_MAIN;
    io.step = R->step;
    s->stats[DFM_STAT_MODEL_CALLS]++;
    dfm__out_prefill(R->out, R->nreq * s->gen->out_stride, 1);
    int raw = R->a->model(&io, R->a->model_data);
    if (raw) return dfm__fail_callback(&s->b, raw, "model");
    return 0;
}

static void push_req(runctx *R, size_t row, double t)
{
    size_t k = R->nreq++, d = R->c->d;
    R->req_row[k] = row;
    R->req_t[k] = t;
    memcpy(R->req_tok + k * d, R->cur + row * d, d * sizeof(int32_t));
}

/* Report the error of the failing thread with the lowest row. */
static int report(runctx *R, int st)
{
    int best = -1;
    for (int k = 0; k < R->nthr; k++)
        if (R->ts[k].eb.err[0] && (best < 0 || R->ts[k].bad_row < R->ts[best].bad_row)) best = k;
    if (best >= 0) {
        snprintf(R->s->b.err, sizeof R->s->b.err, "%s", R->ts[best].eb.err);
        if (R->ts[best].eb.cb_raw) R->s->b.cb_raw = R->ts[best].eb.cb_raw;
    }
    return st;
}

/* Threads for one round: small rounds run on the calling thread (spawning would cost more than
 * the work; results do not depend on it). */
static int work_threads(const runctx *R)
{
    double work = (double)R->nreq * (double)R->c->n_dest;
    if (R->param == DFM_PARAM_STATE_LOGITS || R->c->factorized) work *= (double)R->c->V;
    return work >= 131072.0 ? R->nthr : 1;
}

/* ---- Euler ---- */

typedef struct euler_ctx {
    runctx *R;
    double h;
    uint32_t counter;
    int64_t clamped[DFM_MAX_THREADS];
    int64_t jumps[DFM_MAX_THREADS];
} euler_ctx;

static int euler_range(void *vctx, size_t b, size_t e, int tid)
{
    euler_ctx *E = (euler_ctx *)vctx;
    runctx *R = E->R;
    tscratch *ts = &R->ts[tid];
    const ctgen *c = R->c;
    for (size_t r = b; r < e; r++) {
        double lam;
        int st = eval_rates(R, ts, r, ts->rates, &lam);
        if (st) { ts->bad_row = r; return st; }
        uint64_t grow = R->a->row_offset + r;
        int32_t *tok = R->cur + r * c->d;
        if (c->factorized) {
            size_t V = (size_t)c->V;
            for (size_t i = 0; i < c->d; i++) {
                const double *ri = ts->rates + i * V;
                double li = 0.0;
                for (size_t v = 0; v < V; v++) li += ri[v];
                if (li <= 0.0) continue;
                double u1, u2;
                dfm__uniform2(R->s->b.seed, STREAM_EULER, grow, (uint32_t)i, E->counter, &u1, &u2);
                if (u1 < -expm1(-E->h * li)) {
                    tok[i] = (int32_t)draw_dest(ri, V, li, u2);
                    E->jumps[tid]++;
                }
            }
        } else {
            if (lam <= 0.0) continue;
            double u = dfm__uniform(R->s->b.seed, STREAM_EULER, grow, 0, E->counter);
            double pj = E->h * lam;
            size_t dest;
            if (pj > 1.0) {
                E->clamped[tid]++;
                dest = draw_dest(ts->rates, c->n_dest, lam, u);
            } else {
                if (u >= pj) continue;
                dest = draw_dest(ts->rates, c->n_dest, lam, u / pj);
            }
            apply_dest(c, tok, dest);
            E->jumps[tid]++;
        }
    }
    return 0;
}

static int euler_interval(runctx *R, double a, double b, uint32_t counter)
{
    dfm_sampler *s = R->s;
    R->nreq = 0;
    for (size_t r = 0; r < R->a->rows; r++) push_req(R, r, a);
    int st = call_model(R);
    if (st) return st;
    euler_ctx E;
    memset(&E, 0, sizeof E);
    E.R = R;
    E.h = b - a;
    E.counter = counter;
    st = dfm__parallel_for(&R->s->b, work_threads(R), R->a->rows, euler_range, &E);
    if (st) return report(R, st);
    for (int k = 0; k < DFM_MAX_THREADS; k++) {
        s->stats[DFM_STAT_CLAMPED] += E.clamped[k];
        s->stats[DFM_STAT_JUMPS] += E.jumps[k];
    }
    return 0;
}

/* ---- exact samplers: per-row state machines ---- */

enum { PH_BOUND = 0, PH_SIM, PH_RATE, PH_DONE };

typedef struct rowst {
    double tau;      /* current time */
    double E;        /* bound horizon end */
    double B;        /* rate bound on [tau, E] */
    double lam0;     /* total rate at tau (valid when has0) */
    double lamE;
    double tc;       /* candidate time */
    int has0;
    int phase;
    uint32_t cand;   /* candidate times drawn (thinning) / events (Gillespie) */
    uint32_t cid;    /* counter of the pending candidate */
} rowst;

typedef struct exact_ctx {
    runctx *R;
    rowst *rs;
    size_t *first_req;   /* row -> first request of this round, or SIZE_MAX */
    double b;            /* interval end (clamped to tmax) */
    int gill;
    int64_t jumps[DFM_MAX_THREADS], rejected[DFM_MAX_THREADS];
} exact_ctx;

#define NONE ((size_t)-1)

/* Draw candidates until one needs a rate evaluation, or the horizon ends. */
static void thin_advance(exact_ctx *X, size_t r, rowst *q)
{
    runctx *R = X->R;
    const ctsamp *cs = (const ctsamp *)R->s->impl;
    uint64_t grow = R->a->row_offset + r;
    {
        double tc = q->E;
        if (q->B > 0.0) {
            double u = dfm__uniform(R->s->b.seed, STREAM_CAND, grow, 0, q->cand);
            q->cid = q->cand++;
            tc = q->tau - log1p(-u) / q->B;
        }
        if (tc < q->E) {
            q->tc = tc;
            q->phase = PH_RATE;
            return;
        }
        /* horizon reached without a candidate */
        q->tau = q->E;
        if (cs->bound > 0.0 || q->E >= X->b) {
            if (cs->bound <= 0.0) { q->lam0 = q->lamE; q->has0 = 1; }
            q->tau = X->b;
            q->phase = PH_DONE;
            return;
        }
        q->lam0 = q->lamE;
        q->has0 = 1;
        q->E = X->b;
        q->phase = PH_BOUND;
    }
}

/* More candidate events than DFM_OPT_CT_MAX_EVENTS in row r. */
static int too_many_events(exact_ctx *X, tscratch *ts, size_t r)
{
    const ctsamp *cs = (const ctsamp *)X->R->s->impl;
    ts->bad_row = r;
    return dfm__fail(&ts->eb, DFM_ELIMIT,
                     "row %zu: more than %lld candidate events (DFM_OPT_CT_MAX_EVENTS)",
                     (size_t)(X->R->a->row_offset + r), (long long)cs->max_events);
}

/* Gillespie: the rates at tau (request k), the holding time and the event's destination. */
static int gillespie_event(exact_ctx *X, tscratch *ts, size_t r, size_t k, int tid)
{
    runctx *R = X->R;
    const ctsamp *cs = (const ctsamp *)R->s->impl;
    const ctgen *c = R->c;
    rowst *q = &X->rs[r];
    uint64_t grow = R->a->row_offset + r;
    double lam;
    int st;
    if ((st = eval_rates(R, ts, k, ts->rates, &lam))) { ts->bad_row = r; return st; }
    if ((int64_t)q->cand >= cs->max_events) return too_many_events(X, ts, r);
    double u1, u2;
    dfm__uniform2(R->s->b.seed, STREAM_GILL, grow, 0, q->cand, &u1, &u2);
    q->cand++;
    double tn = lam > 0.0 ? q->tau - log1p(-u1) / lam : INFINITY;
    if (tn >= X->b) { q->tau = X->b; q->phase = PH_DONE; return 0; }
    apply_dest(c, R->cur + r * c->d, draw_dest(ts->rates, c->n_dest, lam, u2));
    X->jumps[tid]++;
    q->tau = tn;
    q->phase = PH_RATE;
    return 0;
}

/* Thinning, PH_BOUND: the total rates at tau (unless known) and at the horizon end E give the
 * bound B = safety x max; a horizon with B x len > 8 is halved first (fewer wasted candidates). */
static int thin_bound(exact_ctx *X, tscratch *ts, size_t r, size_t k)
{
    runctx *R = X->R;
    const ctsamp *cs = (const ctsamp *)R->s->impl;
    rowst *q = &X->rs[r];
    double lam;
    int st;
    if (!q->has0) {
        if ((st = eval_rates(R, ts, k, ts->rates, &lam))) { ts->bad_row = r; return st; }
        q->lam0 = lam;
        q->has0 = 1;
        k++;
    }
    if ((st = eval_rates(R, ts, k, ts->rates, &lam))) { ts->bad_row = r; return st; }
    q->lamE = lam;
    double mx = q->lam0 > lam ? q->lam0 : lam;
    double B = cs->safety * mx, len = q->E - q->tau;
    if (B * len > 8.0 && len > 1e-12 * (1.0 + q->tau)) {
        q->E = q->tau + 0.5 * len;
        return 0;
    }
    q->B = B;
    thin_advance(X, r, q);
    return 0;
}

/* Thinning, PH_RATE: the candidate at tc is accepted with probability lam / B and jumps; then
 * the next candidate (host bound) or a new bound from tc. */
static int thin_candidate(exact_ctx *X, tscratch *ts, size_t r, size_t k, int tid)
{
    runctx *R = X->R;
    const ctsamp *cs = (const ctsamp *)R->s->impl;
    const ctgen *c = R->c;
    rowst *q = &X->rs[r];
    uint64_t grow = R->a->row_offset + r;
    double lam;
    int st;
    if ((st = eval_rates(R, ts, k, ts->rates, &lam))) { ts->bad_row = r; return st; }
    if (lam > q->B * (1.0 + 1e-12)) {
        ts->bad_row = r;
        return dfm__fail(&ts->eb, DFM_ELIMIT,
                         "row %zu: total jump rate %.17g at t = %.17g exceeds the %s rate "
                         "bound "
                         "%.17g", (size_t)grow, lam, q->tc,
                         cs->bound > 0.0 ? "host" : "computed", q->B);
    }
    if ((int64_t)q->cand >= cs->max_events) return too_many_events(X, ts, r);
    double ua, ud;
    dfm__uniform2(R->s->b.seed, STREAM_ACCEPT, grow, 0, q->cid, &ua, &ud);
    q->tau = q->tc;
    if (ua * q->B < lam) {
        apply_dest(c, R->cur + r * c->d, draw_dest(ts->rates, c->n_dest, lam, ud));
        X->jumps[tid]++;
        if (cs->bound > 0.0) {
            thin_advance(X, r, q);
        } else {
            q->has0 = 0;
            q->E = X->b;
            q->phase = PH_BOUND;
        }
    } else {
        X->rejected[tid]++;
        thin_advance(X, r, q);
    }
    return 0;
}

/* One round of the rows that made requests: each advances its state machine by one phase. */
static int exact_range(void *vctx, size_t b, size_t e, int tid)
{
    exact_ctx *X = (exact_ctx *)vctx;
    tscratch *ts = &X->R->ts[tid];
    for (size_t r = b; r < e; r++) {
        size_t k = X->first_req[r];
        if (k == NONE) continue;
        int st;
        if (X->gill) st = gillespie_event(X, ts, r, k, tid);
        else if (X->rs[r].phase == PH_BOUND) st = thin_bound(X, ts, r, k);
        else st = thin_candidate(X, ts, r, k, tid); /* PH_RATE: a candidate at tc */
        if (st) return st;
    }
    return 0;
}

static int exact_interval(runctx *R, exact_ctx *X, double a, double b)
{
    dfm_sampler *s = R->s;
    const ctsamp *cs = (const ctsamp *)s->impl;
    size_t rows = R->a->rows;
    X->b = b;
    for (size_t r = 0; r < rows; r++) {
        rowst *q = &X->rs[r];
        q->tau = a;
        if (X->gill) { q->phase = PH_RATE; continue; }
        if (cs->bound > 0.0) {
            q->B = cs->bound;
            q->E = b;
            thin_advance(X, r, q);
        } else {
            q->E = b;
            q->phase = PH_BOUND;
        }
    }
    for (;;) {
        R->nreq = 0;
        for (size_t r = 0; r < rows; r++) {
            rowst *q = &X->rs[r];
            X->first_req[r] = NONE;
            if (q->phase == PH_DONE) continue;
            X->first_req[r] = R->nreq;
            if (X->gill) {
                push_req(R, r, q->tau);
            } else if (q->phase == PH_BOUND) {
                if (!q->has0) push_req(R, r, q->tau);
                push_req(R, r, q->E);
            } else {
                push_req(R, r, q->tc);
            }
        }
        if (R->nreq == 0) return 0;
        int st = call_model(R);
        if (st) return st;
        memset(X->jumps, 0, sizeof X->jumps);
        memset(X->rejected, 0, sizeof X->rejected);
        st = dfm__parallel_for(&R->s->b, work_threads(R), rows, exact_range, X);
        for (int k = 0; k < DFM_MAX_THREADS; k++) {
            s->stats[DFM_STAT_JUMPS] += X->jumps[k];
            s->stats[DFM_STAT_REJECTED] += X->rejected[k];
        }
        if (st) return report(R, st);
    }
}

/* ---- run ---- */

static int draw_source(runctx *R)
{
    dfm_sampler *s = R->s;
    const ctgen *c = R->c;
    size_t d = c->d, rows = R->a->rows;
    if (!R->path)
        return dfm__fail(&s->b, DFM_EINVAL, "draw_source needs a generator with a path");
    double t0 = dfm__sampler_time(s, 0);
    if (R->path->kind == DFM_PATH_METRIC) {
        size_t V = (size_t)c->V;
        double *pr = R->ts[0].rates; /* n_dest >= V */
        double beta, dbeta;
        int st = dfm__metric_beta(R->path, &s->b, t0, &beta, &dbeta);
        if (st) return st;
        dfm__metric_probs(R->m, beta, 0, pr);
        for (size_t r = 0; r < rows; r++)
            for (size_t i = 0; i < d; i++) {
                double u = dfm__uniform(s->b.seed, STREAM_SOURCE, R->a->row_offset + r,
                                        (uint32_t)i, 0);
                R->cur[r * d + i] = (int32_t)draw_dest(pr, V, 1.0, u);
            }
        return 0;
    }
    size_t S = c->S;
    double *buf = (double *)dfm__calloc(&s->b.mem, 2 * S, sizeof(double));
    if (!buf) return dfm__fail(&s->b, DFM_ENOMEM, "cannot allocate scratch");
    int st = dfm__finite_cond(&s->b, R->path, t0, 0, buf, buf + S);
    if (!st) {
        double tot = 0.0;
        for (size_t x = 0; x < S; x++) tot += buf[x];
        for (size_t r = 0; r < rows; r++) {
            double u = dfm__uniform(s->b.seed, STREAM_SOURCE, R->a->row_offset + r, 0, 0);
            dfm__ct_unflat((int32_t)draw_dest(buf, S, tot, u), c->V, d, R->cur + r * d);
        }
    }
    dfm__free(&s->b.mem, buf);
    return st;
}

/* One run: the shared context, the exact samplers' row states and the saved states. */
typedef struct ctrun {
    runctx R;
    exact_ctx X;
    int32_t *saved;    /* n_save x rows x d */
    size_t isave;      /* save times done */
    uint32_t counter;  /* sub-intervals done (keys the Euler draws) */
} ctrun;

/* Arguments: no reals, an increasing grid, tokens in range unless drawn from the source. */
static int ct_check_args(dfm_sampler *s, const dfm_run_args *a)
{
    const ctgen *c = (const ctgen *)s->gen->impl;
    size_t d = c->d, rows = a->rows, nsteps = dfm__sampler_nsteps(s);
    int st = dfm__check_run_common(s, a, d, 0);
    if (st) return st;
    if (a->reals) return dfm__fail(&s->b, DFM_EINVAL, "args->reals must be NULL (discrete space)");
    if (dfm__sampler_time(s, nsteps) < dfm__sampler_time(s, 0))
        return dfm__fail(&s->b, DFM_EINVAL, "CTMC samplers need an increasing time grid");
    if (!a->draw_source && rows) {
        for (size_t i = 0; i < rows * d; i++)
            if (a->tokens[i] < 0 || a->tokens[i] >= c->V)
                return dfm__fail(&s->b, DFM_ERANGE, "tokens[row %zu][coord %zu] = %d is outside "
                                 "[0, %d)", i / d, i % d, (int)a->tokens[i], (int)c->V);
    }
    return 0;
}

/* The context (path pieces, threads: host path callbacks run on the calling thread only), the
 * per-thread scratch, request buffers (two per row) and row states. */
static int ct_setup(ctrun *C, dfm_sampler *s, const dfm_run_args *a)
{
    runctx *R = &C->R;
    const ctgen *c = (const ctgen *)s->gen->impl;
    size_t d = c->d, rows = a->rows;
    R->s = s;
    R->a = a;
    R->c = c;
    R->path = s->gen->path;
    R->m = R->path ? dfm__ctpath_of(R->path) : NULL;
    R->param = s->gen->param;
    R->finite_table = R->path && R->path->kind == DFM_PATH_FINITE && c->S <= 1024;
    int finite_cb = R->param == DFM_PARAM_STATE_LOGITS && R->path->kind == DFM_PATH_FINITE;
    R->nthr = finite_cb ? 1 : dfm__parallel_width(s->b.nthreads, rows);
    C->X.R = R;
    C->X.gill = s->method == DFM_METHOD_GILLESPIE;
    const dfm_allocator *mem = &s->b.mem;
    size_t nreq_max = 2 * rows, ostride = s->gen->out_stride, tmp;
    if (dfm__mul3(nreq_max, ostride, sizeof(float), &tmp) || dfm__mul3(nreq_max, d, 4, &tmp))
        return dfm__fail(&s->b, DFM_EOVERFLOW, "request buffers overflow");
    R->ts = (tscratch *)dfm__calloc(mem, (size_t)R->nthr, sizeof(tscratch));
    R->cur = (int32_t *)dfm__calloc(mem, rows * d, sizeof(int32_t));
    R->req_row = (size_t *)dfm__calloc(mem, nreq_max, sizeof(size_t));
    R->req_t = (double *)dfm__calloc(mem, nreq_max, sizeof(double));
    R->req_tok = (int32_t *)dfm__calloc(mem, nreq_max * d, sizeof(int32_t));
    R->out = (float *)dfm__calloc(mem, nreq_max * ostride, sizeof(float));
    C->X.rs = (rowst *)dfm__calloc(mem, rows, sizeof(rowst));
    C->X.first_req = (size_t *)dfm__calloc(mem, rows, sizeof(size_t));
    if (a->n_save) C->saved = (int32_t *)dfm__calloc(mem, a->n_save * rows * d, sizeof(int32_t));
    if (!R->ts || !R->cur || !R->req_row || !R->req_t || !R->req_tok || !R->out || !C->X.rs ||
        !C->X.first_req || (a->n_save && !C->saved))
        return dfm__fail_nomem(&s->b, "run scratch", rows, DFM__HINT_ROWS);
    for (int k = 0; k < R->nthr; k++)
        if (ts_alloc(R, &R->ts[k]))
            return dfm__fail_nomem(&s->b, "run scratch", rows, DFM__HINT_ROWS);
    return 0;
}

static void ct_free(ctrun *C)
{
    runctx *R = &C->R;
    const dfm_allocator *mem = &R->s->b.mem;
    if (R->ts)
        for (int k = 0; k < R->nthr; k++) ts_free(mem, &R->ts[k]);
    dfm__free(mem, R->ts);
    dfm__free(mem, R->cur);
    dfm__free(mem, R->req_row);
    dfm__free(mem, R->req_t);
    dfm__free(mem, R->req_tok);
    dfm__free(mem, R->out);
    dfm__free(mem, C->X.rs);
    dfm__free(mem, C->X.first_req);
    dfm__free(mem, C->saved);
}

/* The starting tokens: the host's, or source draws where fixed coordinates keep the host's
 * values (infilling). */
static int ct_start(ctrun *C)
{
    runctx *R = &C->R;
    const dfm_run_args *a = R->a;
    size_t n = a->rows * R->c->d;
    if (!a->draw_source) {
        memcpy(R->cur, a->tokens, n * sizeof(int32_t));
        return 0;
    }
    int st = draw_source(R);
    if (st || !a->fixed) return st;
    for (size_t i = 0; i < n; i++)
        if (a->fixed[i]) {
            if (a->tokens[i] < 0 || a->tokens[i] >= R->c->V)
                return dfm__fail(&R->s->b, DFM_ERANGE, "fixed tokens[row %zu][coord %zu] = %d is "
                                 "outside [0, %d)", i / R->c->d, i % R->c->d,
                                 (int)a->tokens[i], (int)R->c->V);
            R->cur[i] = a->tokens[i];
        }
    return 0;
}

/* Copies the state into every remaining save slot with a time <= t. */
static void ct_save_upto(ctrun *C, double t)
{
    const dfm_run_args *a = C->R.a;
    size_t n = a->rows * C->R.c->d;
    while (C->isave < a->n_save && a->save_times[C->isave] <= t) {
        memcpy(C->saved + C->isave * n, C->R.cur, n * sizeof(int32_t));
        C->isave++;
    }
}

/* Grid step k, [ta, tb]: sub-intervals split at the save times inside (ta, tb], each clamped to
 * DFM_OPT_CT_TMAX and simulated with the method. */
static int ct_grid_step(ctrun *C, size_t k)
{
    runctx *R = &C->R;
    dfm_sampler *s = R->s;
    const dfm_run_args *a = R->a;
    const ctsamp *cs = (const ctsamp *)s->impl;
    double ta = dfm__sampler_time(s, k), tb = dfm__sampler_time(s, k + 1);
    R->step = (int)k;
    double a0 = ta;
    for (;;) {
        double b0 = tb;
        int save_here = 0;
        if (C->isave < a->n_save && a->save_times[C->isave] <= tb) {
            b0 = a->save_times[C->isave];
            save_here = 1;
        }
        double ae = a0 < cs->tmax ? a0 : cs->tmax, be = b0 < cs->tmax ? b0 : cs->tmax;
        if (be > ae) {
            int st = s->method == DFM_METHOD_EULER ? euler_interval(R, ae, be, C->counter)
                                                   : exact_interval(R, &C->X, ae, be);
            if (st) return st;
        }
        C->counter++;
        s->stats[DFM_STAT_STEPS]++;
        if (save_here) ct_save_upto(C, b0);
        a0 = b0;
        if (b0 >= tb) return 0;
    }
}

static int ct_run(dfm_sampler *s, const dfm_run_args *a)
{
    int st = ct_check_args(s, a);
    if (st || a->rows == 0) return st;
    size_t nsteps = dfm__sampler_nsteps(s), n = a->rows * ((const ctgen *)s->gen->impl)->d;
    ctrun C;
    memset(&C, 0, sizeof C);
    st = ct_setup(&C, s, a);
    if (!st) st = ct_start(&C);
    if (!st) ct_save_upto(&C, dfm__sampler_time(s, 0));
    for (size_t k = 0; k < nsteps && !st; k++) {
        st = ct_grid_step(&C, k);
        if (!st)
            st = dfm__step_done(s, a->progress, a->progress_data, (int)k, (int)nsteps,
                                dfm__sampler_time(s, k + 1));
    }
    if (!st) {
        memcpy(a->tokens, C.R.cur, n * sizeof(int32_t));
        if (a->n_save) memcpy(a->saved_tokens, C.saved, a->n_save * n * sizeof(int32_t));
    }
    ct_free(&C);
    return st;
}

/* ---- sampler options ---- */

static void samp_destroy(dfm_sampler *s)
{
    dfm__free(&s->b.mem, s->impl);
    s->impl = NULL;
}

static int samp_set_int(dfm_sampler *s, int opt, int64_t v)
{
    ctsamp *cs = (ctsamp *)s->impl;
    if (opt != DFM_OPT_CT_MAX_EVENTS) return DFM_EUNSUPPORTED;
    if (v < 1 || v > (int64_t)UINT32_MAX)
        return dfm__fail(&s->b, DFM_EINVAL, "max events must be in [1, 2^32), got %lld",
                         (long long)v);
    cs->max_events = v;
    return 0;
}

static int samp_get_int(const dfm_sampler *s, int opt, int64_t *v)
{
    if (opt != DFM_OPT_CT_MAX_EVENTS) return DFM_EUNSUPPORTED;
    *v = ((const ctsamp *)s->impl)->max_events;
    return 0;
}

static int samp_set_double(dfm_sampler *s, int opt, double v)
{
    ctsamp *cs = (ctsamp *)s->impl;
    switch (opt) {
    case DFM_OPT_CT_RATE_BOUND:
        if (!isfinite(v) || v < 0.0)
            return dfm__fail(&s->b, DFM_EINVAL, "rate bound must be finite and >= 0, got %g", v);
        cs->bound = v;
        return 0;
    case DFM_OPT_CT_BOUND_SAFETY:
        if (!isfinite(v) || v < 1.0)
            return dfm__fail(&s->b, DFM_EINVAL, "bound safety must be finite and >= 1, got %g", v);
        cs->safety = v;
        return 0;
    case DFM_OPT_CT_TMAX:
        if (!(v > 0.0 && v <= 1.0))
            return dfm__fail(&s->b, DFM_EINVAL, "tmax must be in (0, 1], got %g", v);
        cs->tmax = v;
        return 0;
    default:
        return DFM_EUNSUPPORTED;
    }
}

static int samp_get_double(const dfm_sampler *s, int opt, double *v)
{
    const ctsamp *cs = (const ctsamp *)s->impl;
    switch (opt) {
    case DFM_OPT_CT_RATE_BOUND: *v = cs->bound; return 0;
    case DFM_OPT_CT_BOUND_SAFETY: *v = cs->safety; return 0;
    case DFM_OPT_CT_TMAX: *v = cs->tmax; return 0;
    default: return DFM_EUNSUPPORTED;
    }
}

static const dfm__sampler_ops samp_ops = {samp_destroy, ct_run, samp_set_int, samp_get_int,
                                          samp_set_double, samp_get_double};

static int gen_sampler_init(dfm_sampler *s, int method)
{
    if (method != DFM_METHOD_EULER && method != DFM_METHOD_UNIFORMIZATION &&
        method != DFM_METHOD_GILLESPIE)
        return DFM_EUNSUPPORTED;
    ctsamp *cs = (ctsamp *)dfm__calloc(&s->b.mem, 1, sizeof *cs);
    if (!cs) return DFM_ENOMEM;
    cs->bound = 0.0;
    cs->safety = 2.0;
    cs->tmax = 1.0 - 1e-6;
    cs->max_events = 10000000;
    s->ops = &samp_ops;
    s->impl = cs;
    return 0;
}
