/* The run of a sampler of a factorized generator on [V]^d, in named phases: validate, draw the
 * source, then per step: set up the step's coefficients, call the model (on chunks of rows, or
 * only on the rows that changed for a time-independent model), step the rows with the step's
 * kernel, record. The kernels of the exact mixture step, flow_matching's Euler step and Euler on
 * direct rates are here; the unmasking engine and remasking are in ds_reveal.c, tau-leaping and
 * theta-trapezoidal in ds_leap.c. docs/discrete.md has the math. */
#include "discrete/ds_sampler.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

/* ---- the kernels of the exact step, Euler and Euler on rates ---- */

/* Jump with the added rates lam_a on p (weights w, total tot) and lam_b on p0, over h. */
static int32_t extra_jump(const step_ctx *c, float *w, double tot, int32_t x, uint64_t grow,
                          uint32_t i, double lam_a, double lam_b, double uc, double uk)
{
    double lam = lam_a + lam_b;
    if (!(lam > 0.0) || !(uc < -expm1(-c->h * lam))) return x;
    double ut = dfm__uniform(c->s->b.seed, DFM__DS_STREAM_EXTRA_TGT, grow, i, c->step);
    if (lam_b <= 0.0 || uk * lam < lam_a) {
        int32_t y = dfm__ds_draw_except(w, c->V, tot, x, ut);
        return y < 0 ? x : y;
    }
    return dfm__mix_source_draw_except(c->m, x, ut);
}

/* Direct rates: jump with probability 1 - exp(-h lambda) to a target drawn in proportion. */
static int rates_coord(step_ctx *c, const float *z, int32_t xi, size_t r, size_t i, int tid,
                       uint64_t grow, int32_t *y)
{
    size_t V = c->V;
    int bad1 = 0, bad2 = 0;
    double lam = dfm__ds_rate_sum(z, (size_t)xi, &bad1) +
                 dfm__ds_rate_sum(z + xi + 1, V - (size_t)xi - 1, &bad2);
    if (bad1 | bad2) {
        long yb = 0;
        for (size_t k = 0; k < V; k++)
            if (k != (size_t)xi && (!(z[k] >= 0.0f) || z[k] == INFINITY)) { yb = (long)k; break; }
        return dfm__ds_fail_at(c, tid, DFM_ENUMERIC, r, i, yb);
    }
    if (!(lam > 0.0)) return 0;
    double u1, u2;
    dfm__uniform2(c->s->b.seed, DFM__DS_STREAM_STEP, grow, (uint32_t)i, c->step, &u1, &u2);
    if (!(u1 < -expm1(-c->h * lam))) return 0;
    float *w = c->scr[tid].w;
    memcpy(w, z, V * sizeof(float));
    w[xi] = 0.0f; /* the diagonal entry is ignored, whatever it holds */
    int32_t t = dfm__draw_weights_f(w, V, lam, u2);
    if (w[t] > 0.0f) *y = t;
    return 0;
}

/* Euler exactly as flow_matching's MixtureDiscreteEulerSolver: draw x1 ~ p, conditional rates
 * u(y) = A delta(y, x1) + B p0(y) for y != x^i, jump with probability 1 - exp(-h lambda),
 * lambda = A [x1 != x^i] + B (1 - p0(x^i)), target drawn from u. The coin u1 is drawn first:
 * when it cannot fire even for the larger lambda, x1 is not needed (same law, no softmax). */
static int32_t euler_coord(const step_ctx *c, const float *z, float mx, int32_t xi, uint64_t grow,
                           uint32_t i, double u1, double u2, int tid)
{
    double lb = c->B * (1.0 - dfm__mix_p0(c->m, xi)), l1 = c->A + lb;
    if (!(l1 > 0.0 && u1 < -expm1(-c->h * l1))) return xi;
    float *w = c->scr[tid].w;
    double tot = dfm__ds_posterior(c, z, mx, w, c->scr[tid].list);
    int32_t x1 = dfm__draw_weights_f(w, c->V, tot, u2);
    double lam = x1 != xi ? l1 : lb;
    if (x1 != xi && lb <= 0.0) return x1;
    if (!(lam > 0.0 && u1 < -expm1(-c->h * lam))) return xi;
    double uk, ut;
    dfm__uniform2(c->s->b.seed, DFM__DS_STREAM_EXTRA, grow, i, c->step, &uk, &ut);
    if (x1 != xi && uk * lam < c->A) return x1;
    return dfm__mix_source_draw_except(c->m, xi, ut);
}

/* Coordinates [i0, i1) of row r for one step; returns 0 or the status recorded by fail_at. */
static int step_row(step_ctx *c, size_t r, size_t i0, size_t i1, int tid, int64_t *jumps)
{
    const dfm_run_args *a = c->a;
    uint64_t seed = c->s->b.seed;
    float *w = c->scr[tid].w;
    uint32_t *list = c->scr[tid].list;
    const size_t d = c->d, V = c->V;
    uint64_t grow = (uint64_t)(a->row_offset + r);
    int32_t *x = c->state + r * d;
    const float *z0 = c->out[r];
    const uint8_t *fx = a->fixed ? a->fixed + r * d : NULL;
    for (size_t i = i0; i < i1; i++) {
        if (fx && fx[i]) continue;
        const float *z = z0 + i * V;
        int32_t xi = x[i], y = xi;
        if (c->param == DFM_PARAM_RATES) {
            int st = rates_coord(c, z, xi, r, i, tid, grow, &y);
            if (st) return st;
        } else {
            int bad;
            double u1, u2;
            float mx = dfm__max_check(z, V, &bad);
            if (bad || mx == -INFINITY) return dfm__ds_fail_at(c, tid, DFM_ENUMERIC, r, i, -1);
            dfm__uniform2(seed, DFM__DS_STREAM_STEP, grow, (uint32_t)i, c->step, &u1, &u2);
            if (c->final_draw) { /* Euler's last step, a step ending at kappa = 1: x1 */
                double tot = dfm__ds_posterior(c, z, mx, w, list);
                y = dfm__draw_weights_f(w, V, tot, u2);
            } else if (c->method == DFM_METHOD_EXACT) {
                if (u1 < c->pj) {
                    double tot = dfm__ds_posterior(c, z, mx, w, list);
                    y = dfm__draw_weights_f(w, V, tot, u2);
                } else if (c->extra) {
                    double tot = dfm__ds_posterior(c, z, mx, w, list);
                    double px = (double)w[xi] / tot, ue1, ue2;
                    dfm__uniform2(seed, DFM__DS_STREAM_EXTRA, grow, (uint32_t)i, c->step, &ue1, &ue2);
                    y = extra_jump(c, w, tot, xi, grow, (uint32_t)i, c->A * (1.0 - px),
                                   c->B * (1.0 - dfm__mix_p0(c->m, xi)), ue1, ue2);
                }
            } else {
                y = euler_coord(c, z, mx, xi, grow, (uint32_t)i, u1, u2, tid);
            }
        }
        if (y != xi) { x[i] = y; (*jumps)++; }
    }
    return 0;
}

/* Work items, claimed dynamically by the threads: blocks of DS_BLOCK coordinates of a row (whole
 * rows for the unmasking engine), numbered from the last block backwards, since the model wrote
 * the last rows last and they are the ones still in cache. A failing item does not stop the
 * others: each thread keeps its lowest bad (row, coordinate). */
#define DS_BLOCK 32

static int step_items(void *vctx, size_t begin, size_t end, int tid)
{
    step_ctx *c = (step_ctx *)vctx;
    int64_t jumps = 0;
    int st = 0;
    for (size_t j = begin; j < end; j++) {
        size_t item = c->nitems - 1 - j;
        int rs;
        if (c->kind == DS_K_REVEAL) {
            rs = dfm__ds_reveal_row(c, c->row0 + item, tid);
        } else {
            size_t r = c->row0 + item / c->nblk, i0 = (item % c->nblk) * DS_BLOCK;
            size_t i1 = c->d - i0 < DS_BLOCK ? c->d : i0 + DS_BLOCK;
            switch (c->kind) {
            case DS_K_REMASK: rs = dfm__ds_remask_row(c, r, i0, i1, tid, &jumps); break;
            case DS_K_LEAP: rs = dfm__ds_leap_row(c, r, i0, i1, tid, &jumps); break;
            case DS_K_STAGE2: rs = dfm__ds_stage2_row(c, r, i0, i1, tid, &jumps); break;
            default: rs = step_row(c, r, i0, i1, tid, &jumps); break;
            }
        }
        if (rs) st = rs;
    }
    c->jumps[tid] += jumps;
    return st;
}

/* ---- the run's plan and buffers ---- */

typedef struct run_plan {
    size_t d, V, stride, rows, n, nsteps, chunk, nblocks;
    int nt, logits, engine, remask, trap, cache;
} run_plan;

typedef struct run_buf {
    int32_t *state, *saved, *prev, *lasttok, *gtok;
    double *tv;
    float *out, *out2, *stage, *w;
    const float **rowp, **rowp2, **latest;
    size_t *gidx, *lidx;
    uint32_t *list;
    ds_cand *cand;
    ds_scratch *scr;
    ds_err *err;
    int64_t *jumps, *clamped;
} run_buf;

static void free_buf(dfm_sampler *s, run_buf *b)
{
    void *p[] = {b->state, b->saved, b->prev, b->lasttok, b->gtok, b->tv, b->out, b->out2,
                 b->stage, b->w, (void *)b->rowp, (void *)b->rowp2, (void *)b->latest, b->gidx,
                 b->lidx, b->list, b->cand, b->scr, b->err, b->jumps, b->clamped};
    for (size_t k = 0; k < sizeof p / sizeof p[0]; k++) dfm__free(&s->b.mem, p[k]);
}

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

/* Which options combine, and the sizes of the run. */
static int check_modes(dfm_sampler *s, run_plan *p)
{
    const ds_impl *im = (const ds_impl *)s->impl;
    int extra_cfg = im->eta > 0.0 || im->corr > 0.0 || im->cfn != NULL;
    p->engine = p->logits && (im->order || im->count || im->block_len || im->greedy) && !im->remask;
    p->remask = p->logits && im->remask;
    if (p->engine && extra_cfg)
        return dfm__fail(&s->b, DFM_EINVAL, "unmasking orders and counts (purity sampling) cannot be "
                         "combined with eta or a corrector");
    if (p->remask && (im->order || im->count || im->block_len))
        return dfm__fail(&s->b, DFM_EINVAL, "remasking needs the random order, the coin count and no blocks");
    if (p->remask && extra_cfg)
        return dfm__fail(&s->b, DFM_EINVAL, "remasking cannot be combined with eta or a corrector");
    if (p->remask && im->remask == DFM_REMASK_LOOP) {
        if (!(im->loop_start < im->loop_end))
            return dfm__fail(&s->b, DFM_EINVAL, "the loop must start before it ends (start %g, end %g)",
                             im->loop_start, im->loop_end);
        double t;
        if (dfm__sched_kappa_inverse(&s->gen->path->sched, 0.5, &t, NULL) == DFM_EUNSUPPORTED)
            return dfm__fail(&s->b, DFM_EUNSUPPORTED, "the loop schedule needs a scheduler with kappa^-1");
    }
    p->nblocks = 0;
    if (p->engine && im->block_len > 0) {
        uint64_t L = (uint64_t)im->block_len;
        p->nblocks = L >= p->d ? 1 : (size_t)((p->d + L - 1) / L);
        if (p->nsteps < p->nblocks)
            return dfm__fail(&s->b, DFM_EINVAL, "block-wise unmasking needs at least one step per block "
                             "(%zu steps, %zu blocks)", p->nsteps, p->nblocks);
    }
    return 0;
}

static int validate(dfm_sampler *s, const dfm_run_args *a, run_plan *p)
{
    const ds_impl *im = (const ds_impl *)s->impl;
    const dfm_generator *g = s->gen;
    const dfm__mixture *m = dfm__mixture_of(g->path);
    memset(p, 0, sizeof *p);
    p->d = g->path->space.n_tokens;
    p->V = (size_t)m->vocab;
    p->stride = g->out_stride;
    p->rows = a->rows;
    p->nsteps = dfm__sampler_nsteps(s);
    p->logits = g->param == DFM_PARAM_LOGITS;
    p->trap = s->method == DFM_METHOD_THETA_TRAPEZOIDAL;
    p->cache = im->time_indep;
    int st = dfm__check_run_common(s, a, p->d, 0);
    if (st) return st;
    if (a->reals) return dfm__fail(&s->b, DFM_EINVAL, "args->reals must be NULL on a discrete space");
    if (s->grid && !(s->grid[1] > s->grid[0]))
        return dfm__fail(&s->b, DFM_EINVAL, "discrete samplers need an increasing time grid");
    if ((st = check_modes(s, p)) != 0) return st;
    if (p->rows == 0) return 0;
    if (dfm__mul(p->rows, p->d, &p->n)) return dfm__fail(&s->b, DFM_EOVERFLOW, "rows x d overflows");
    for (size_t j = 0; j < (a->draw_source && !a->fixed ? 0 : p->n); j++) {
        if (a->draw_source && !a->fixed[j]) continue;
        if (a->tokens[j] < 0 || (size_t)a->tokens[j] >= p->V)
            return dfm__fail(&s->b, DFM_ERANGE, "tokens[row %zu][coord %zu] = %d is outside [0, %zu)",
                             j / p->d, j % p->d, (int)a->tokens[j], p->V);
    }
    p->nt = s->b.nthreads < 1 ? 1 : s->b.nthreads;
    p->chunk = ds_chunk_rows(im->chunk, p->rows, p->stride, p->nt);
    return 0;
}

static int alloc_buf(dfm_sampler *s, const dfm_run_args *a, const run_plan *p, run_buf *b)
{
    const dfm_allocator *mem = &s->b.mem;
    size_t nt = (size_t)p->nt, nout, nsc, nsave = 0, nstage = 0, ngt = 0;
    size_t slot_rows = p->cache ? p->rows : p->chunk;
    if (dfm__mul(slot_rows, p->stride, &nout) || dfm__mul(nt, 2 * p->V, &nsc) ||
        (a->n_save && dfm__mul(a->n_save, p->n, &nsave)) ||
        (p->cache && (dfm__mul(p->chunk, p->stride, &nstage) || dfm__mul(p->chunk, p->d, &ngt))))
        return dfm__fail(&s->b, DFM_EOVERFLOW, "buffer sizes overflow");
    b->state = (int32_t *)dfm__calloc(mem, p->n, sizeof(int32_t));
    b->tv = (double *)dfm__calloc(mem, p->rows, sizeof(double));
    b->out = (float *)dfm__calloc(mem, nout, sizeof(float));
    b->w = (float *)dfm__calloc(mem, nsc, sizeof(float));
    b->list = (uint32_t *)dfm__calloc(mem, nt * p->V, sizeof(uint32_t));
    b->scr = (ds_scratch *)dfm__calloc(mem, nt, sizeof(ds_scratch));
    b->rowp = (const float **)dfm__calloc(mem, p->rows, sizeof(float *));
    b->err = (ds_err *)dfm__calloc(mem, nt, sizeof(ds_err));
    b->jumps = (int64_t *)dfm__calloc(mem, nt, sizeof(int64_t));
    b->clamped = (int64_t *)dfm__calloc(mem, nt, sizeof(int64_t));
    int ok = b->state && b->tv && b->out && b->w && b->list && b->scr && b->rowp && b->err &&
             b->jumps && b->clamped;
    if (nsave) ok &= (b->saved = (int32_t *)dfm__calloc(mem, nsave, sizeof(int32_t))) != NULL;
    if (p->engine) ok &= (b->cand = (ds_cand *)dfm__calloc(mem, nt * p->d, sizeof(ds_cand))) != NULL;
    if (p->trap) {
        ok &= (b->out2 = (float *)dfm__calloc(mem, nout, sizeof(float))) != NULL;
        ok &= (b->rowp2 = (const float **)dfm__calloc(mem, p->rows, sizeof(float *))) != NULL;
        ok &= (b->prev = (int32_t *)dfm__calloc(mem, p->n, sizeof(int32_t))) != NULL;
    }
    if (p->cache) {
        ok &= (b->stage = (float *)dfm__calloc(mem, nstage, sizeof(float))) != NULL;
        ok &= (b->gtok = (int32_t *)dfm__calloc(mem, ngt, sizeof(int32_t))) != NULL;
        ok &= (b->lasttok = (int32_t *)dfm__calloc(mem, p->n, sizeof(int32_t))) != NULL;
        ok &= (b->gidx = (size_t *)dfm__calloc(mem, p->chunk, sizeof(size_t))) != NULL;
        ok &= (b->lidx = (size_t *)dfm__calloc(mem, p->chunk, sizeof(size_t))) != NULL;
        ok &= (b->latest = (const float **)dfm__calloc(mem, p->rows, sizeof(float *))) != NULL;
    }
    if (!ok) { /* the model output (chunk_rows x d x V) or the batch's states */
        int logits = dfm__alloc_failed() == nout * sizeof(float);
        return dfm__fail_nomem(&s->b, logits ? "model output" : "sampler state",
                               logits ? slot_rows : p->rows,
                               logits && !p->cache ? "lower DFM_OPT_DS_CHUNK_ROWS"
                                                   : DFM__HINT_ROWS);
    }
    for (size_t k = 0; k < nt; k++) {
        b->scr[k].w = b->w + k * 2 * p->V;
        b->scr[k].list = b->list + k * p->V;
        b->scr[k].cand = b->cand ? b->cand + k * p->d : NULL;
    }
    if (p->cache) memset(b->lasttok, 0xff, p->n * sizeof(int32_t)); /* no row was sent yet */
    return 0;
}

/* ---- the step's coefficients ---- */

typedef struct step_times { double t0, t1, tm, rho; } step_times;

static int corrector_at(dfm_sampler *s, double t, double *c)
{
    const ds_impl *im = (const ds_impl *)s->impl;
    *c = im->corr;
    if (!im->cfn) return 0;
    int rc = im->cfn(t, c, im->cud);
    if (rc) return dfm__fail_callback(&s->b, rc, "corrector");
    if (!(*c >= 0.0) || !isfinite(*c))
        return dfm__fail(&s->b, DFM_ENUMERIC, "corrector c(%g) = %g is not finite and >= 0", t, *c);
    return 0;
}

/* Rates on p (A) and on p0 (B) of the generator with corrector c and eta (docs/discrete.md);
 * fwd = 0 leaves out the forward part kappa'/(1 - kappa) (the exact step takes it exactly). */
static void rate_coefs(double k, double dk, double corr, double eta, int fwd, double *A, double *B)
{
    *A = ((fwd ? 1.0 + corr : corr) * dk + eta * k) / (1.0 - k);
    *B = (k > 0.0 ? corr * dk / k : 0.0) + eta;
}

/* Step b of nb blocks starts at floor(b n / nb) (n steps; b, nb < 2^31 so nothing overflows). */
static size_t block_start(size_t b, size_t n, size_t nb)
{
    return b * (n / nb) + (b * (n % nb)) / nb;
}

/* The unmasking engine: order, count and the active block with its own share of the steps and
 * its block-local schedule. */
static int setup_reveal(dfm_sampler *s, const run_plan *p, size_t i, step_ctx *c)
{
    const ds_impl *im = (const ds_impl *)s->impl;
    c->kind = DS_K_REVEAL;
    c->order = im->order;
    c->count = im->count;
    c->greedy = im->greedy;
    c->threshold = im->threshold;
    c->lo = 0;
    c->hi = p->d;
    c->last = i + 1 == p->nsteps;
    if (!p->nblocks) return 0;
    size_t nb = p->nblocks, n = p->nsteps, b = (size_t)((double)i * (double)nb / (double)n);
    if (b >= nb) b = nb - 1;
    while (b + 1 < nb && block_start(b + 1, n, nb) <= i) b++;
    while (b > 0 && block_start(b, n, nb) > i) b--;
    size_t s0 = block_start(b, n, nb), K = block_start(b + 1, n, nb) - s0, j = i - s0;
    size_t L = (size_t)im->block_len;
    c->lo = b * L;
    c->hi = p->d - c->lo < L ? p->d : c->lo + L;
    c->last = j + 1 == K;
    double k0 = 0.0, k1 = 0.0, dk = 0.0; /* -O3 cannot see kappa_at set them */
    int st;
    if ((st = kappa_at(s, (double)j / (double)K, &k0, &dk)) ||
        (st = kappa_at(s, j + 1 == K ? 1.0 : (double)(j + 1) / (double)K, &k1, &dk)))
        return st;
    c->pj = k0 < 1.0 ? (k1 - k0) / (1.0 - k0) : 1.0;
    c->pj = c->pj > 1.0 ? 1.0 : (c->pj < 0.0 ? 0.0 : c->pj);
    return 0;
}

/* kappa of the loop schedule: linear to kappa_on over [0, start), held over [start, end),
 * linear to 1 over [end, 1]. */
static double loop_kappa(const ds_impl *im, double t)
{
    if (t < im->loop_start) return im->loop_kappa * t / im->loop_start;
    if (t < im->loop_end) return im->loop_kappa;
    return im->loop_kappa + (1.0 - im->loop_kappa) * (t - im->loop_end) / (1.0 - im->loop_end);
}

/* ReMDM (Wang et al. 2025, eq. 7 translated to t = 0 noise): remask a revealed position with
 * probability sigma <= sigma_max = min(1, (1 - kappa_{t+h}) / kappa_t), unmask a masked one with
 * probability (kappa_{t+h} - (1 - sigma) kappa_t) / (1 - kappa_t): kappa_{t+h} of the positions
 * are revealed after the step, for every sigma in [0, sigma_max]. */
static int setup_remask(dfm_sampler *s, step_ctx *c, double t0, double t1, double *k0, double *k1,
                        double *tm)
{
    const ds_impl *im = (const ds_impl *)s->impl;
    int in_loop = 0;
    c->kind = DS_K_REMASK;
    c->greedy = im->greedy;
    if (im->remask == DFM_REMASK_LOOP) {
        *k0 = loop_kappa(im, t0);
        *k1 = loop_kappa(im, t1);
        in_loop = t0 >= im->loop_start && t0 < im->loop_end;
        int raw = 0, st = dfm__sched_kappa_inverse(&s->gen->path->sched, *k0, tm, &raw);
        if (st == DFM_ECALLBACK) return dfm__fail_callback(&s->b, raw, "scheduler inverse");
        if (st) return dfm__fail(&s->b, DFM_ENUMERIC, "kappa^-1(%g) failed", *k0);
    }
    double smax = *k0 > 0.0 ? (1.0 - *k1) / *k0 : 1.0, eta = im->remask_eta;
    smax = smax > 1.0 ? 1.0 : (smax < 0.0 ? 0.0 : smax);
    if (im->remask == DFM_REMASK_RESCALE) c->sigma = eta * smax;
    else if (im->remask == DFM_REMASK_CAP || in_loop) c->sigma = eta < smax ? eta : smax;
    else c->sigma = 0.0;
    double qu = *k0 < 1.0 ? (*k1 - (1.0 - c->sigma) * *k0) / (1.0 - *k0) : 1.0;
    c->qu = qu > 1.0 ? 1.0 : (qu < 0.0 ? 0.0 : qu);
    return 0;
}

/* tau-leaping and theta-trapezoidal: rates frozen at the step's start (and at rho = t + theta h
 * for the second stage). A logits step that ends at kappa = 1, where the rates integrate to
 * infinity, is a draw from the posterior instead. */
static int setup_leap(dfm_sampler *s, const run_plan *p, step_ctx *c, double k0, double dk0,
                      double k1, double corr, step_times *tt)
{
    const ds_impl *im = (const ds_impl *)s->impl;
    int trap = p->trap;
    if (p->logits && (!(k1 < 1.0) || !(k0 < 1.0))) {
        c->final_draw = 1;
        return 0;
    }
    if (!p->logits && !trap) return 0; /* tau-leaping on direct rates: the Euler step */
    c->kind = DS_K_LEAP;
    c->hfrac = trap ? im->theta : 1.0;
    if (p->logits) rate_coefs(k0, dk0, corr, im->eta, 1, &c->A, &c->B);
    if (!trap) return 0;
    double th = im->theta;
    tt->rho = tt->t0 + th * c->h;
    c->alpha1 = 1.0 / (2.0 * th * (1.0 - th));
    c->alpha2 = ((1.0 - th) * (1.0 - th) + th * th) / (2.0 * th * (1.0 - th));
    if (!p->logits) return 0;
    double kr = 0.0, dkr = 0.0, cr = 0.0; /* -O3 cannot see kappa_at set them */
    int st;
    if ((st = kappa_at(s, tt->rho, &kr, &dkr)) || (st = corrector_at(s, tt->rho, &cr))) return st;
    if (!(kr < 1.0)) return dfm__fail(&s->b, DFM_ENUMERIC, "kappa(%g) = 1 inside a step", tt->rho);
    rate_coefs(kr, dkr, cr, im->eta, 1, &c->A2, &c->B2);
    return 0;
}

static int setup_step(dfm_sampler *s, const run_plan *p, size_t i, step_ctx *c, step_times *tt)
{
    const ds_impl *im = (const ds_impl *)s->impl;
    double t0 = dfm__sampler_time(s, i), t1 = dfm__sampler_time(s, i + 1);
    double k0 = 0.0, dk0 = 0.0, k1 = 0.0, dk1 = 0.0, corr = 0.0; /* -O3: set by the calls below */
    int st;
    if ((st = kappa_at(s, t0, &k0, &dk0)) || (st = kappa_at(s, t1, &k1, &dk1))) return st;
    if (k1 < k0) return dfm__fail(&s->b, DFM_ENUMERIC, "kappa decreases between t = %g and %g", t0, t1);
    if ((st = corrector_at(s, t0, &corr)) != 0) return st;
    c->step = (uint32_t)i;
    c->h = t1 - t0;
    c->kind = DS_K_STEP;
    c->final_draw = c->extra = 0;
    c->A = c->B = c->A2 = c->B2 = 0.0;
    c->hfrac = 1.0;
    tt->t0 = tt->tm = tt->rho = t0;
    tt->t1 = t1;
    if (p->logits && s->method == DFM_METHOD_EXACT) {
        if (p->remask && (st = setup_remask(s, c, t0, t1, &k0, &k1, &tt->tm)) != 0) return st;
        double om = 1.0 - k0;
        c->pj = om > 0.0 ? (k1 - k0) / om : 0.0;
        if (c->pj > 1.0) c->pj = 1.0;
        if (p->engine && (st = setup_reveal(s, p, i, c)) != 0) return st;
        if (!p->engine && !p->remask && (corr > 0.0 || im->eta > 0.0) && om > 0.0) {
            rate_coefs(k0, dk0, corr, im->eta, 0, &c->A, &c->B);
            c->extra = 1;
        }
    } else if (p->logits && s->method == DFM_METHOD_EULER) {
        if (i + 1 == p->nsteps || !(k0 < 1.0)) c->final_draw = 1;
        else rate_coefs(k0, dk0, corr, im->eta, 1, &c->A, &c->B);
    } else if (s->method != DFM_METHOD_EULER) {
        if ((st = setup_leap(s, p, c, k0, dk0, k1, corr, tt)) != 0) return st;
    }
    double co[4] = {c->A, c->B, c->A2, c->B2};
    for (int k = 0; k < 4; k++)
        if (!isfinite(co[k]) || co[k] < 0.0)
            return dfm__fail(&s->b, DFM_ENUMERIC,
                             "rate coefficients are not finite at t = %g (kappa' = %g); use the exact "
                             "step or a grid avoiding this time", t0, dk0);
    return 0;
}

/* ---- model calls and the kernels over rows ---- */

static int report_error(dfm_sampler *s, const run_plan *p, const run_buf *b, int st, size_t i,
                        const float *const *outp)
{
    const ds_err *e = NULL;
    for (int k = 0; k < p->nt; k++)
        if (b->err[k].code && (!e || b->err[k].row < e->row ||
                               (b->err[k].row == e->row && b->err[k].coord < e->coord)))
            e = &b->err[k];
    size_t e0 = e ? e->coord * p->V + (p->logits ? 0 : (size_t)e->y) : 0;
    if (e && dfm__fail_unwritten(&s->b, "model", outp[e->row], 1, p->stride, p->V, 0, e0,
                                 p->logits ? e0 + p->V : e0 + 1, e->row))
        return DFM_ENUMERIC;
    if (e && !p->logits)
        return dfm__fail(&s->b, e->code, "model rate out[row %zu][coord %zu] to token %ld is "
                         "negative, NaN or Inf (step %zu)", e->row, e->coord, e->y, i);
    if (e && e->y >= 0)
        return dfm__fail(&s->b, e->code, "model posterior out[row %zu][coord %zu] puts no mass "
                         "off the mask token (step %zu)", e->row, e->coord, i);
    if (e)
        return dfm__fail(&s->b, e->code, "model logits out[row %zu][coord %zu] contain NaN/+Inf "
                         "or are all -Inf (step %zu)", e->row, e->coord, i);
    return dfm__fail(&s->b, st, "step %zu failed", i);
}

static int run_kernel(dfm_sampler *s, const run_plan *p, const run_buf *b, step_ctx *c, size_t r0,
                      size_t nr)
{
    c->row0 = r0;
    c->nitems = c->kind == DS_K_REVEAL ? nr : nr * c->nblk;
    int st = dfm__parallel_dynamic(&s->b, p->nt, c->nitems, 1, step_items, c);
    if (!st) return 0;
    return report_error(s, p, b, st, c->step, c->kind == DS_K_STAGE2 ? b->rowp2 : b->rowp);
}

/* One model call on nr rows: consecutive batch rows from r0 (gidx NULL), or the global rows
 * gidx[0..nr) whose tokens were gathered into tok. */
static int call_model(dfm_sampler *s, const dfm_run_args *a, const run_plan *p, run_buf *b,
                      size_t r0, size_t nr, const size_t *gidx, const int32_t *tok, float *out,
                      double t, size_t step)
{
    for (size_t r = 0; r < nr; r++) b->tv[r] = t;
    dfm_model_io io;
    memset(&io, 0, sizeof io);
    io.struct_size = sizeof io;
    io.rows = nr;
    io.row_offset = gidx ? gidx[0] : a->row_offset + r0;
    io.t = b->tv;
    io.tokens = tok;
    io.n_tokens = p->d;
    io.out = out;
    io.out_stride = p->stride;
    io.branch = DFM_BRANCH_MAIN;
    io.step = (int)step;
    io.row_index = gidx;
    s->stats[DFM_STAT_MODEL_CALLS]++;
    s->stats[DFM_STAT_MODEL_ROWS] += (int64_t)nr;
    dfm__out_prefill(out, nr * p->stride, p->V);
    int rc = a->model(&io, a->model_data);
    if (rc) return dfm__fail_callback(&s->b, rc, "model");
    return 0;
}

/* The model sees the batch in chunks of rows; each chunk is stepped while its output is still in
 * cache. Rows are independent, so the chunking never changes results. */
static int advance_chunked(dfm_sampler *s, const dfm_run_args *a, const run_plan *p, run_buf *b,
                           step_ctx *c, const step_times *tt)
{
    size_t d = p->d;
    int st = 0;
    for (size_t r0 = 0; r0 < p->rows && !st; r0 += p->chunk) {
        size_t cr = p->rows - r0 < p->chunk ? p->rows - r0 : p->chunk;
        if ((st = call_model(s, a, p, b, r0, cr, NULL, b->state + r0 * d, b->out, tt->tm, c->step)))
            return st;
        for (size_t r = 0; r < cr; r++) b->rowp[r0 + r] = b->out + r * p->stride;
        if (!(p->trap && c->kind == DS_K_LEAP)) {
            st = run_kernel(s, p, b, c, r0, cr);
            continue;
        }
        memcpy(b->prev + r0 * d, b->state + r0 * d, cr * d * sizeof(int32_t));
        if ((st = run_kernel(s, p, b, c, r0, cr)) != 0) return st;
        if ((st = call_model(s, a, p, b, r0, cr, NULL, b->state + r0 * d, b->out2, tt->rho, c->step)))
            return st;
        for (size_t r = 0; r < cr; r++) b->rowp2[r0 + r] = b->out2 + r * p->stride;
        c->kind = DS_K_STAGE2;
        st = run_kernel(s, p, b, c, r0, cr);
        c->kind = DS_K_LEAP;
    }
    return st;
}

/* Time-independent model: only the rows whose tokens differ from those of their last call are
 * sent, at most chunk rows per call; the others keep their last output. A row's outputs live in
 * its slot of set A (first stage) or B (theta-trapezoidal's second stage writes the slot that
 * does not hold the row's first-stage output). */
static float *slot_of(const run_plan *p, const run_buf *b, size_t r, int stage2)
{
    float *a = b->out + r * p->stride;
    return stage2 && b->rowp[r] == a ? b->out2 + r * p->stride : a;
}

static int cached_calls(dfm_sampler *s, const dfm_run_args *a, const run_plan *p, run_buf *b,
                        int stage2, double t, size_t step)
{
    const float **dst = stage2 ? b->rowp2 : b->rowp;
    size_t d = p->d, r = 0;
    while (r < p->rows) {
        size_t k = 0;
        for (; r < p->rows && k < p->chunk; r++) {
            if (memcmp(b->state + r * d, b->lasttok + r * d, d * sizeof(int32_t)) == 0) {
                dst[r] = b->latest[r];
                continue;
            }
            b->lidx[k] = r;
            b->gidx[k++] = a->row_offset + r;
        }
        if (!k) continue;
        int consecutive = b->lidx[k - 1] - b->lidx[0] == k - 1, direct = consecutive;
        for (size_t j = 1; j < k && direct; j++)
            direct = slot_of(p, b, b->lidx[j], stage2) == slot_of(p, b, b->lidx[0], stage2) + j * p->stride;
        const int32_t *tok = b->state + b->lidx[0] * d;
        if (!consecutive) {
            for (size_t j = 0; j < k; j++)
                memcpy(b->gtok + j * d, b->state + b->lidx[j] * d, d * sizeof(int32_t));
            tok = b->gtok;
        }
        float *out = direct ? slot_of(p, b, b->lidx[0], stage2) : b->stage;
        int st = call_model(s, a, p, b, b->lidx[0], k, consecutive ? NULL : b->gidx, tok, out, t, step);
        if (st) return st;
        for (size_t j = 0; j < k; j++) {
            size_t q = b->lidx[j];
            float *slot = slot_of(p, b, q, stage2);
            if (!direct) memcpy(slot, b->stage + j * p->stride, p->stride * sizeof(float));
            dst[q] = b->latest[q] = slot;
            memcpy(b->lasttok + q * d, b->state + q * d, d * sizeof(int32_t));
        }
    }
    return 0;
}

static int advance_cached(dfm_sampler *s, const dfm_run_args *a, const run_plan *p, run_buf *b,
                          step_ctx *c, const step_times *tt)
{
    int st = cached_calls(s, a, p, b, 0, tt->tm, c->step);
    if (st) return st;
    if (!(p->trap && c->kind == DS_K_LEAP)) return run_kernel(s, p, b, c, 0, p->rows);
    memcpy(b->prev, b->state, p->n * sizeof(int32_t));
    if ((st = run_kernel(s, p, b, c, 0, p->rows)) != 0) return st;
    if ((st = cached_calls(s, a, p, b, 1, tt->rho, c->step)) != 0) return st;
    c->kind = DS_K_STAGE2;
    st = run_kernel(s, p, b, c, 0, p->rows);
    c->kind = DS_K_LEAP;
    return st;
}

/* ---- the run ---- */

static void draw_source(const dfm_sampler *s, const dfm_run_args *a, const run_plan *p, run_buf *b)
{
    const dfm__mixture *m = dfm__mixture_of(s->gen->path);
    memcpy(b->state, a->tokens, p->n * sizeof(int32_t));
    if (!a->draw_source) return;
    for (size_t j = 0; j < p->n; j++) {
        if (a->fixed && a->fixed[j]) continue;
        double u = dfm__uniform(s->b.seed, DFM__DS_STREAM_SRC, (uint64_t)(a->row_offset + j / p->d),
                                (uint32_t)(j % p->d), 0);
        b->state[j] = dfm__mix_source_draw(m, u);
    }
}

static void init_ctx(const dfm_sampler *s, const dfm_run_args *a, const run_plan *p, run_buf *b,
                     step_ctx *c)
{
    const ds_impl *im = (const ds_impl *)s->impl;
    memset(c, 0, sizeof *c);
    c->s = s;
    c->m = dfm__mixture_of(s->gen->path);
    c->a = a;
    c->state = b->state;
    c->prev = b->prev;
    c->out = b->rowp;
    c->out2 = b->rowp2;
    c->d = p->d;
    c->V = p->V;
    c->stride = p->stride;
    c->scr = b->scr;
    c->err = b->err;
    c->jumps = b->jumps;
    c->clamped = b->clamped;
    c->method = s->method;
    c->param = s->gen->param;
    c->nblk = (p->d + DS_BLOCK - 1) / DS_BLOCK;
    c->scale = (float)(1.0 / im->temp);
    c->shape.top_k = im->top_k;
    c->shape.top_p = im->top_p;
    c->shape.min_p = im->min_p;
    c->shape.on = p->logits && (im->top_k > 0 || im->top_p < 1.0 || im->min_p > 0.0);
}

static int64_t total(const int64_t *v, int nt)
{
    int64_t t = 0;
    for (int k = 0; k < nt; k++) t += v[k];
    return t;
}

/* After a step: statistics, the step callback, progress and stop requests. */
static int record(dfm_sampler *s, const dfm_run_args *a, const run_plan *p, const run_buf *b,
                  size_t i, double t1, int64_t changed)
{
    const ds_impl *im = (const ds_impl *)s->impl;
    s->stats[DFM_STAT_STEPS]++;
    if (im->step_fn) {
        dfm_step_view v;
        memset(&v, 0, sizeof v);
        v.struct_size = sizeof v;
        v.step = (int)i;
        v.n_steps = (int)p->nsteps;
        v.t = t1;
        v.rows = p->rows;
        v.row_offset = a->row_offset;
        v.n_tokens = p->d;
        v.tokens = b->state;
        v.changed = changed;
        int rc = im->step_fn(&v, im->step_ud);
        if (rc) {
            int st = dfm__fail(&s->b, DFM_ESTOPPED, "stopped by the step callback after step %zu "
                               "(it returned %d)", i, rc);
            s->b.cb_raw = rc;
            return st;
        }
    }
    return dfm__step_done(s, a->progress, a->progress_data, (int)i, (int)p->nsteps, t1);
}

static int run_steps(dfm_sampler *s, const dfm_run_args *a, const run_plan *p, run_buf *b)
{
    step_ctx c;
    init_ctx(s, a, p, b, &c);
    size_t ks = 0;
    for (size_t i = 0; i < p->nsteps; i++) {
        step_times tt;
        double t1 = dfm__sampler_time(s, i + 1);
        for (; ks < a->n_save && a->save_times[ks] < t1; ks++)
            memcpy(b->saved + ks * p->n, b->state, p->n * sizeof(int32_t));
        int st = setup_step(s, p, i, &c, &tt);
        int64_t before = total(b->jumps, p->nt);
        if (!st) st = p->cache ? advance_cached(s, a, p, b, &c, &tt) : advance_chunked(s, a, p, b, &c, &tt);
        if (!st) st = record(s, a, p, b, i, t1, total(b->jumps, p->nt) - before);
        if (st) return st;
    }
    for (; ks < a->n_save; ks++) memcpy(b->saved + ks * p->n, b->state, p->n * sizeof(int32_t));
    s->stats[DFM_STAT_JUMPS] = total(b->jumps, p->nt);
    s->stats[DFM_STAT_CLAMPED] = total(b->clamped, p->nt);
    memcpy(a->tokens, b->state, p->n * sizeof(int32_t));
    if (a->n_save) memcpy(a->saved_tokens, b->saved, a->n_save * p->n * sizeof(int32_t));
    return 0;
}

int dfm__ds_run(dfm_sampler *s, const dfm_run_args *a)
{
    run_plan p;
    run_buf b;
    memset(&b, 0, sizeof b);
    int st = validate(s, a, &p);
    if (!st && p.rows) st = alloc_buf(s, a, &p, &b);
    if (!st && p.rows) {
        draw_source(s, a, &p, &b);
        st = run_steps(s, a, &p, &b);
    }
    free_buf(s, &b);
    return st;
}
