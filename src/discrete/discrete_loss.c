/* Discrete losses on mixture paths (generalized KL, cross-entropy), the training-time sampler for
 * t and the discrete ELBO estimator. See docs/discrete_loss.md for the math and references.
 *
 * Evaluation runs in two phases over rows (dfm__parallel_for): phase A streams every counted
 * coordinate's logits forwards once to find its max and to reject NaN/+Inf (so nothing is
 * written when the input is bad); phase B, rows backwards so that it starts with what phase A
 * left in cache, computes exp(z - max) straight into the host's gradient buffer, the loss value
 * in double and then rescales that buffer in place into the gradient (the row of V floats is
 * still in L1). Per-coordinate values are summed per row, then rows in order, so the
 * loss is bit-identical for any thread count. */
#include "discrete/discrete_impl.h"
#include "core/rng_impl.h"

#include <float.h>
#include <math.h>

/* Random streams used here (documented in docs/discrete_loss.md). */
#define STREAM_ELBO_T 41 /* ELBO stratified times: (seed, 41, row, k, draw) */
#define STREAM_ELBO_X 42 /* ELBO x_t draws: (seed, 42, row, k * d + i, draw) */

typedef struct dl_impl {
    dfm_path *path;   /* owned copy of the mixture path */
    int only_changed; /* cross-entropy: count only x_t != x1 */
} dl_impl;

static const dfm__loss_ops gkl_ops;
static const dfm__loss_ops ce_ops;

/* ---- kernels ---- */

#define LANES 8

#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 9)
#define DL_VEC 1
typedef float dl_v8f __attribute__((vector_size(32)));
typedef int32_t dl_v8i __attribute__((vector_size(32)));
typedef float dl_v4f __attribute__((vector_size(16)));
typedef double dl_v4d __attribute__((vector_size(32)));
#endif

DFM_CLONES
static void dl_scale(float *g, size_t n, float s)
{
    size_t j = 0;
#ifdef DL_VEC
    const dl_v8f zero = {0, 0, 0, 0, 0, 0, 0, 0};
    const dl_v8f sv = zero + s;
    for (; j + 8 <= n; j += 8) {
        dl_v8f v;
        memcpy(&v, g + j, sizeof v);
        v *= sv;
        memcpy(g + j, &v, sizeof v);
    }
#endif
    for (; j < n; j++) g[j] *= s;
}

/* Everything one evaluation needs (shared by dfm_loss_eval and the ELBO). */
typedef struct dl_eval {
    const float *out;
    float *grad;            /* NULL: value only */
    const int32_t *x1, *xt; /* xt NULL for cross-entropy without only_changed */
    const uint8_t *fixed;
    size_t d, stride;
    int32_t V;
    int gkl, only_changed;
    const double *c;        /* per-row kappa'/(1-kappa) (generalized KL) */
    double w;               /* gradient weight (1/count for the mean) */
    float *mx;              /* rows x d maxima from phase A, or NULL */
    double *vals;           /* rows x d per-coordinate values */
    double *rowsum;         /* rows */
    size_t *bad;            /* rows: first bad coordinate, or SIZE_MAX */
    int *bad_what;          /* rows: 1 NaN/+Inf, 2 every logit -Inf, 3 p(x1) = 0 */
    float *scratch;         /* nthreads x V */
} dl_eval;

/* Asks for the next coordinate's logits ahead of time: each coordinate is a separate 4 KB
 * stream for V = 1024, and hardware prefetchers stop at page boundaries. */
static inline void dl_prefetch(const float *z, size_t V)
{
#if defined(__GNUC__)
    for (size_t j = 0; j < V; j += 16) __builtin_prefetch(z + j, 0, 3);
#else
    (void)z; (void)V;
#endif
}

static inline int dl_counted(const dl_eval *e, size_t k)
{
    if (e->fixed && e->fixed[k]) return 0;
    if (e->only_changed && e->xt[k] == e->x1[k]) return 0;
    return 1;
}

/* Checks one coordinate's logits; returns 0 or a dl_eval.bad_what code, and the max in *m. */
static inline int dl_check_coord(const dl_eval *e, const float *z, size_t k, float *m)
{
    int bad;
    *m = dfm__max_check(z, (size_t)e->V, &bad);
    if (bad) return 1;
    if (*m == -INFINITY) return 2;
    int need_b = !e->gkl || e->xt[k] != e->x1[k];
    if (need_b && z[e->x1[k]] == -INFINITY) return 3;
    return 0;
}

/* Phase A: validate and record maxima. */
static int dl_phase_a(void *ctx, size_t r0, size_t r1, int tid)
{
    (void)tid;
    dl_eval *e = (dl_eval *)ctx;
    int st = 0;
    for (size_t r = r0; r < r1; r++) {
        for (size_t i = 0; i < e->d; i++) {
            size_t k = r * e->d + i;
            if (!dl_counted(e, k)) continue;
            float m;
            int w = dl_check_coord(e, e->out + r * e->stride + i * (size_t)e->V, k, &m);
            if (w && e->bad[r] == SIZE_MAX) { e->bad[r] = i; e->bad_what[r] = w; st = DFM_ENUMERIC; }
            e->mx[k] = m;
        }
    }
    return st;
}

/* Phase B: values (and gradient). Validates inline when there is no phase A (e->mx NULL). */
static int dl_phase_b(void *ctx, size_t r0, size_t r1, int tid)
{
    dl_eval *e = (dl_eval *)ctx;
    const size_t V = (size_t)e->V;
    float *scr = e->scratch + (size_t)tid * V;
    int st = 0;
    /* Rows backwards: phase A read them forwards, so the last ones are still in cache. A bad
     * row (no phase A) does not stop the loop: the lowest bad row of the range is recorded. */
    for (size_t r = r1; r-- > r0;) {
        double rs = 0.0;
        double c = e->gkl ? e->c[r] : 1.0;
        double wc = e->w * c;
        for (size_t i = 0; i < e->d; i++) {
            size_t k = r * e->d + i;
            const float *z = e->out + r * e->stride + i * V;
            float *g = e->grad ? e->grad + r * e->stride + i * V : scr;
            if (i + 1 < e->d) dl_prefetch(z + V, V);
            else if (r > r0) dl_prefetch(e->out + (r - 1) * e->stride, V);
            if (!dl_counted(e, k)) {
                e->vals[k] = 0.0;
                if (e->grad) memset(g, 0, V * sizeof(float));
                continue;
            }
            float m;
            if (e->mx) {
                m = e->mx[k];
            } else {
                int w = dl_check_coord(e, z, k, &m);
                if (w) { e->bad[r] = i; e->bad_what[r] = w; st = DFM_ENUMERIC; break; }
            }
            /* The two logits the value needs are read first: grad may alias out (in place). */
            int32_t b = e->x1[k], a = e->gkl ? e->xt[k] : b;
            double za = (double)z[a] - (double)m, zb = (double)z[b] - (double)m;
            double S = dfm__exp_shift_sum(z, V, m, 1.0f, g);
            double logS = log(S);
            double lpb = zb - logS;
            double v;
            if (e->gkl) {
                double pa = exp(za - logS);
                if (a == b) {
                    v = c * (1.0 - pa);
                    if (e->grad) {
                        double K = wc * pa;
                        dl_scale(g, V, (float)(K / S));
                        g[a] = (float)(K * pa - wc * pa);
                    }
                } else {
                    v = -c * (pa + lpb);
                    if (e->grad) {
                        double K = wc * (pa + 1.0);
                        dl_scale(g, V, (float)(K / S));
                        g[a] = (float)(K * pa - wc * pa);
                        g[b] = (float)(K * exp(lpb) - wc);
                    }
                }
            } else {
                v = -lpb;
                if (e->grad) {
                    dl_scale(g, V, (float)(e->w / S));
                    g[b] = (float)(e->w * (exp(lpb) - 1.0));
                }
            }
            e->vals[k] = v;
            rs += v;
        }
        e->rowsum[r] = rs;
    }
    return st;
}

static const char *bad_text(int what)
{
    switch (what) {
    case 1: return "contain NaN or +Inf";
    case 2: return "are all -Inf";
    default: return "give p(x1) = 0 (a -Inf logit at the data token): the loss is infinite";
    }
}

/* Runs the phases; on DFM_ENUMERIC reports the lowest bad row (global index row_base + r). */
static int dl_run(dfm_loss *l, dl_eval *e, size_t rows, size_t row_base, int two_phase)
{
    for (size_t r = 0; r < rows; r++) e->bad[r] = SIZE_MAX;
    int nt = l->b.nthreads;
    int st = 0;
    if (two_phase) st = dfm__parallel_for(&l->b, nt, rows, dl_phase_a, e);
    if (!st) st = dfm__parallel_for(&l->b, nt, rows, dl_phase_b, e);
    if (st == DFM_ENUMERIC) {
        for (size_t r = 0; r < rows; r++)
            if (e->bad[r] != SIZE_MAX) {
                size_t e0 = e->bad[r] * (size_t)e->V;
                /* (a product's part in place: the product reruns it on a copy for this) */
                if (!l->row_stride &&
                    dfm__fail_unwritten(&l->b, "model", e->out, rows, e->stride, (size_t)e->V, r,
                                        e0, e0 + (size_t)e->V, row_base + r))
                    return DFM_ENUMERIC;
                return dfm__fail(&l->b, DFM_ENUMERIC, "logits out[row %zu][coord %zu] %s",
                                 row_base + r, e->bad[r], bad_text(e->bad_what[r]));
            }
    }
    if (st) return dfm__fail(&l->b, st, "loss evaluation failed");
    return 0;
}

/* c = kappa'/(1 - kappa) at t (< 1). */
static int dl_coef(dfm_loss *l, const dfm_path *p, double t, size_t r, double *c)
{
    if (!(t < 1.0))
        return dfm__fail(&l->b, DFM_ERANGE,
                         "t[%zu] = %g: the generalized KL weight kappa'/(1-kappa) is infinite at "
                         "t = 1 (draw t on [0, 1-eps])", r, t);
    dfm_sched_values v;
    int raw = 0;
    int st = dfm__sched_eval(&p->sched, t, &v, &raw);
    if (st == DFM_ECALLBACK) return dfm__fail_callback(&l->b, raw, "scheduler");
    if (st) return dfm__fail(&l->b, st, "scheduler evaluation failed at t = %g", t);
    if (!isfinite(v.alpha) || !isfinite(v.d_alpha))
        return dfm__fail(&l->b, DFM_ENUMERIC, "scheduler gives non-finite kappa at t = %g", t);
    if (!(v.alpha < 1.0))
        return dfm__fail(&l->b, DFM_ERANGE,
                         "kappa(t[%zu] = %g) = %g: the weight kappa'/(1-kappa) is infinite", r, t,
                         v.alpha);
    if (v.d_alpha < 0.0)
        return dfm__fail(&l->b, DFM_ENUMERIC, "kappa' = %g < 0 at t = %g", v.d_alpha, t);
    *c = v.d_alpha / (1.0 - v.alpha);
    if (!isfinite(*c))
        return dfm__fail(&l->b, DFM_ENUMERIC, "kappa'/(1-kappa) is not finite at t = %g", t);
    return 0;
}

/* Rows of d tokens (and, for the ELBO, V logits per token) fit in a buffer. */
static int dl_rows_fit(dfm_loss *l, size_t rows, size_t d, size_t V)
{
    size_t per;
    if (dfm__mul3(d, V + 2, 2 * sizeof(double), &per) || per > SIZE_MAX - 64)
        return dfm__fail(&l->b, DFM_EOVERFLOW, "the row size overflows");
    return dfm__rows_fit(&l->b, rows, per + 64, "the tokens and scratch");
}

/* Tokens in [0, V); the data (x1, the path's mask given) may not hold the mask token where it
 * is counted: a masked datum has no target. */
static int dl_check_tokens(dfm_loss *l, const int32_t *x, size_t n, size_t d, int32_t V,
                           const char *what)
{
    const dfm__mixture *mx = dfm__mixture_of(((dl_impl *)l->impl)->path);
    int32_t mask = what[1] == '1' && mx->source == DFM_SOURCE_MASK ? mx->mask : -1;
    for (size_t k = 0; k < n; k++) {
        if (x[k] < 0 || x[k] >= V)
            return dfm__fail(&l->b, DFM_ERANGE, "%s[row %zu][coord %zu] = %d is outside [0, %d)",
                             what, k / d, k % d, (int)x[k], (int)V);
        if (x[k] == mask)
            return dfm__fail(&l->b, DFM_ERANGE, "%s[row %zu][coord %zu] = %d is the mask token: "
                             "data may not hold it", what, k / d, k % d, (int)x[k]);
    }
    return 0;
}

/* ---- eval ---- */

static int dl_eval_op(dfm_loss *l, const dfm_loss_args *a)
{
    dl_impl *im = (dl_impl *)l->impl;
    const dfm_path *p = im->path;
    const dfm__mixture *mx = dfm__mixture_of(p);
    const int gkl = l->kind == DFM_LOSS_GENERALIZED_KL;
    const int only = !gkl && im->only_changed;
    const size_t d = p->space.n_tokens, rows = a->rows;
    const int32_t V = mx->vocab;
    size_t n = rows * d; /* fits: dfm_loss_eval checked */
    if (rows && !a->x1_tokens) return dfm__fail(&l->b, DFM_EINVAL, "args->x1_tokens is NULL");
    if (rows && (gkl || only) && !a->xt_tokens)
        return dfm__fail(&l->b, DFM_EINVAL, "args->xt_tokens is NULL");
    int st = dl_check_tokens(l, a->x1_tokens, n, d, V, "x1_tokens");
    if (!st && (gkl || only)) st = dl_check_tokens(l, a->xt_tokens, n, d, V, "xt_tokens");
    if (st) return st;

    dl_eval e;
    memset(&e, 0, sizeof e);
    e.out = a->out;
    e.grad = a->grad;
    e.x1 = a->x1_tokens;
    e.xt = (gkl || only) ? a->xt_tokens : NULL;
    e.fixed = a->fixed;
    e.d = d;
    e.stride = l->row_stride ? l->row_stride : l->out_stride;
    e.V = V;
    e.gkl = gkl;
    e.only_changed = only;

    size_t count = 0;
    for (size_t k = 0; k < n; k++) count += (size_t)dl_counted(&e, k);

    const dfm_allocator *m = &l->b.mem;
    int nt = dfm__parallel_width(l->b.nthreads, rows);
    double *c = (double *)dfm__calloc(m, rows ? rows : 1, sizeof(double));
    double *rowsum = (double *)dfm__calloc(m, rows ? rows : 1, sizeof(double));
    size_t *bad = (size_t *)dfm__calloc(m, rows ? rows : 1, sizeof(size_t));
    int *bad_what = (int *)dfm__calloc(m, rows ? rows : 1, sizeof(int));
    double *vals = (double *)dfm__calloc(m, n ? n : 1, sizeof(double));
    float *mxs = a->grad ? (float *)dfm__calloc(m, n ? n : 1, sizeof(float)) : NULL;
    float *scr = (float *)dfm__calloc(m, (size_t)nt, (size_t)V * sizeof(float));
    if (!c || !rowsum || !bad || !bad_what || !vals || (a->grad && !mxs) || !scr) {
        st = dfm__fail_nomem(&l->b, "loss scratch", rows, DFM__HINT_ROWS);
        goto done;
    }
    if (gkl)
        for (size_t r = 0; r < rows && !st; r++) st = dl_coef(l, p, a->t[r], r, &c[r]);
    if (st) goto done;
    e.c = c;
    e.w = (l->reduction == DFM_REDUCE_MEAN && count) ? 1.0 / (double)count : 1.0;
    e.mx = mxs;
    e.vals = vals;
    e.rowsum = rowsum;
    e.bad = bad;
    e.bad_what = bad_what;
    e.scratch = scr;
    st = dl_run(l, &e, rows, 0, a->grad != NULL);
    if (st) goto done;
    double total = 0.0;
    for (size_t r = 0; r < rows; r++) total += rowsum[r];
    if (l->reduction == DFM_REDUCE_MEAN) total = count ? total / (double)count : 0.0;
    if (l->reduction == DFM_REDUCE_NONE && n) memcpy(a->values, vals, n * sizeof(double));
    *a->loss = total;
done:
    dfm__free(m, c);
    dfm__free(m, rowsum);
    dfm__free(m, bad);
    dfm__free(m, bad_what);
    dfm__free(m, vals);
    dfm__free(m, mxs);
    dfm__free(m, scr);
    return st;
}

/* ---- lifetime ---- */

static void dl_destroy(dfm_loss *l)
{
    dl_impl *im = (dl_impl *)l->impl;
    if (!im) return;
    dfm_path_free(im->path);
    dfm__free(&l->b.mem, im);
    l->impl = NULL;
}

static int dl_clone(dfm_loss *dst, const dfm_loss *src)
{
    const dl_impl *s = (const dl_impl *)src->impl;
    dl_impl *im = (dl_impl *)dfm__calloc(&dst->b.mem, 1, sizeof(dl_impl));
    if (!im) return DFM_ENOMEM;
    im->only_changed = s->only_changed;
    int st = dfm_path_clone(&im->path, s->path, &dst->b.mem);
    if (st) { dfm__free(&dst->b.mem, im); return st; }
    dst->impl = im;
    return 0;
}

static const dfm__loss_ops gkl_ops = {dl_destroy, dl_clone, dl_eval_op, NULL, NULL, NULL, NULL};
static const dfm__loss_ops ce_ops = {dl_destroy, dl_clone, dl_eval_op, NULL, NULL, NULL, NULL};

static int dl_create(dfm_loss **out, int kind, const dfm__loss_ops *ops, const dfm_path *path,
                     int only_changed, const dfm_allocator *mem)
{
    if (!out) return dfm__error(DFM_EINVAL, "dfm_loss_create: out is NULL");
    *out = NULL;
    if (!path) return dfm__error(DFM_EINVAL, "dfm_loss_create: the path is NULL");
    if (path->kind != DFM_PATH_MIXTURE || !path->impl || !path->has_sched)
        return dfm__error(DFM_EINVAL, "dfm_loss_create: discrete losses need a mixture path "
                          "(kind %d)", path->kind);
    const dfm__mixture *mx = dfm__mixture_of(path);
    size_t stride;
    if (mx->vocab <= 0 || path->space.n_tokens == 0)
        return dfm__error(DFM_EINVAL, "dfm_loss_create: the path's space has no tokens");
    if (dfm__mul(path->space.n_tokens, (size_t)mx->vocab, &stride))
        return dfm__error(DFM_EOVERFLOW, "dfm_loss_create: d x V overflows");
    dfm_loss *l;
    int st = dfm__loss_new(&l, kind, ops, NULL, mem);
    if (st) return st;
    l->out_stride = stride;
    l->n_tokens = path->space.n_tokens;
    l->b.nthreads = path->b.nthreads;
    l->b.spin_us = path->b.spin_us;
    l->b.seed = path->b.seed;
    dl_impl *im = (dl_impl *)dfm__calloc(&l->b.mem, 1, sizeof(dl_impl));
    if (!im) {
        dfm_loss_free(l);
        return dfm__error(DFM_ENOMEM, "dfm_loss_create: cannot allocate the loss");
    }
    im->only_changed = only_changed != 0;
    l->impl = im;
    st = dfm_path_clone(&im->path, path, &l->b.mem);
    if (st) { dfm_loss_free(l); return st; }
    *out = l;
    return 0;
}

int dfm_loss_create_generalized_kl(dfm_loss **out, const dfm_path *mixture_path,
                                   const dfm_allocator *mem)
{
    return dl_create(out, DFM_LOSS_GENERALIZED_KL, &gkl_ops, mixture_path, 0, mem);
}

int dfm_loss_create_cross_entropy(dfm_loss **out, const dfm_path *mixture_path, int only_changed,
                                  const dfm_allocator *mem)
{
    return dl_create(out, DFM_LOSS_CROSS_ENTROPY, &ce_ops, mixture_path, only_changed, mem);
}

/* ---- training-time sampler ---- */

int dfm_time_sample(uint64_t seed, uint32_t draw, int kind, double p1, double p2, double eps,
                    uint64_t row_offset, size_t rows, double *t)
{
    if (rows && !t) return dfm__null(__func__, "t");
    if (!(eps >= 0.0 && eps < 1.0))
        return dfm__error(DFM_EINVAL, "%s: eps must be in [0, 1), got %g", __func__, eps);
    double hi = 1.0 - eps;
    if (kind == DFM_TIME_LOGIT_NORMAL) {
        if (!isfinite(p1) || !isfinite(p2) || p2 < 0.0)
            return dfm__error(DFM_EINVAL, "%s: the logit-normal needs a finite mean p1 and a "
                              "finite p2 >= 0, got %g, %g", __func__, p1, p2);
        for (size_t r = 0; r < rows; r++) {
            double zz = p1 + p2 * dfm__normal(seed, DFM_STREAM_TIME, row_offset + r, 0, draw);
            double v = 1.0 / (1.0 + exp(-zz));
            t[r] = v > hi ? hi : v;
        }
        return 0;
    }
    if (kind == DFM_TIME_UNIFORM) {
        for (size_t r = 0; r < rows; r++)
            t[r] = hi * dfm__uniform(seed, DFM_STREAM_TIME, row_offset + r, 0, draw);
        return 0;
    }
    if (kind == DFM_TIME_STRATIFIED) {
        if (!(p1 >= 0.0) || p1 != floor(p1) || p1 > 9007199254740992.0)
            return dfm__error(DFM_EINVAL, "%s: p1 (the number of strata) must be an integer "
                              ">= 0, got %g", __func__, p1);
        uint64_t ns = p1 == 0.0 ? (uint64_t)rows : (uint64_t)p1;
        if (ns == 0) return 0;
        for (size_t r = 0; r < rows; r++) {
            uint64_t g = row_offset + r;
            double u = dfm__uniform(seed, DFM_STREAM_TIME, g, 0, draw);
            double v = ((double)(p1 == 0.0 ? r : g % ns) + u) / (double)ns;
            v *= hi;
            t[r] = v > hi ? hi : v;
        }
        return 0;
    }
    return dfm__error(DFM_EINVAL, "%s: unknown kind %d", __func__, kind);
}

/* ---- discrete ELBO ---- */

/* Source term KL(p_0(.|x1^i) || p0) of one coordinate with kappa_0 = k0 > 0 (uniform/custom). */
static double elbo_source_term(double k0, double p0b)
{
    double a = (1.0 - k0) * p0b + k0;
    double rest = (1.0 - k0) * (1.0 - p0b);
    double v = a * log(a / p0b);
    if (rest > 0.0) v += rest * log1p(-k0);
    return v;
}

/* One ELBO call: the path's pieces, the per-row accumulators and one chunk's buffers. */
typedef struct elbo_ctx {
    dfm_loss *l;
    const dfm_elbo_args *a;
    const dfm_path *p;
    const dfm__mixture *mx;
    size_t d, V, n, chunk;    /* n = rows x d; chunk: rows per model call */
    double k0;                /* kappa_0 */
    int use_kappa;            /* draw kappa (the scheduler has an inverse), else t */
    double *mean, *m2, *src;  /* rows: Welford mean and M2 of the n_t terms, source term */
    double *tt, *c, *rowsum;  /* chunk: times given to the model, weights, row sums */
    size_t *bad;              /* chunk (dl_eval) */
    int *bad_what;            /* chunk (dl_eval) */
    double *vals;             /* chunk x d */
    int32_t *xt;              /* chunk x d */
    float *outb;              /* chunk x d x V logits */
    float *scr;               /* nthreads x V */
    double *cdf;              /* custom source: cumulative p0 */
} elbo_ctx;

/* Arguments, sizes and tokens; fills E's path pieces. rows = 0 is valid (nothing to do). */
static int elbo_check_args(dfm_loss *l, const dfm_elbo_args *a, elbo_ctx *E)
{
    if (l->ops != &gkl_ops)
        return dfm__fail(&l->b, DFM_EUNSUPPORTED, "the ELBO needs a generalized-KL loss handle");
    if (!a) return dfm__fail(&l->b, DFM_EINVAL, "args is NULL");
    if (a->struct_size < sizeof(dfm_elbo_args))
        return dfm__fail(&l->b, DFM_EINVAL, "args->struct_size is too small");
    if (!a->model) return dfm__fail(&l->b, DFM_EINVAL, "args->model is NULL");
    if (a->n_t == 0) return dfm__fail(&l->b, DFM_EINVAL, "args->n_t must be >= 1");
    const size_t rows = a->rows;
    if (rows == 0) return 0;
    if (!a->x1_tokens) return dfm__fail(&l->b, DFM_EINVAL, "args->x1_tokens is NULL");
    if (!a->nelbo) return dfm__fail(&l->b, DFM_EINVAL, "args->nelbo is NULL");

    dl_impl *im = (dl_impl *)l->impl;
    E->l = l;
    E->a = a;
    E->p = im->path;
    E->mx = dfm__mixture_of(E->p);
    E->d = E->p->space.n_tokens;
    E->V = (size_t)E->mx->vocab;
    size_t kd;
    if (dl_rows_fit(l, rows, E->d, 0)) return DFM_EOVERFLOW;
    E->n = rows * E->d;
    if (dfm__overlap(a->nelbo, rows * sizeof(double), a->std_error, rows * sizeof(double)) ||
        dfm__overlap(a->nelbo, rows * sizeof(double), a->x1_tokens, E->n * sizeof(int32_t)) ||
        dfm__overlap(a->std_error, rows * sizeof(double), a->x1_tokens, E->n * sizeof(int32_t)))
        return dfm__fail(&l->b, DFM_EINVAL, "args->nelbo, args->std_error and args->x1_tokens "
                         "may not share memory");
    if (dfm__mul(a->n_t, E->d, &kd) || kd > UINT32_MAX)
        return dfm__fail(&l->b, DFM_ELIMIT, "n_t x d must stay below 2^32");
    return dl_check_tokens(l, a->x1_tokens, E->n, E->d, E->mx->vocab, "x1_tokens");
}

/* kappa_0 (the source term is 0 when it is 0), and whether to sample in kappa: when the
 * scheduler has an inverse (finite variance), else in t. */
static int elbo_kappa0(elbo_ctx *E)
{
    dfm_loss *l = E->l;
    const dfm_path *p = E->p;
    dfm_sched_values v0;
    int raw = 0;
    int st = dfm__sched_eval(&p->sched, 0.0, &v0, &raw);
    if (st == DFM_ECALLBACK) return dfm__fail_callback(&l->b, raw, "scheduler");
    if (st) return dfm__fail(&l->b, st, "scheduler evaluation failed at t = 0");
    const double k0 = v0.alpha;
    if (!(k0 >= 0.0 && k0 < 1.0))
        return dfm__fail(&l->b, DFM_ENUMERIC, "kappa_0 = %g is outside [0, 1)", k0);
    if (k0 > 0.0 && E->mx->source == DFM_SOURCE_MASK)
        return dfm__fail(&l->b, DFM_EUNSUPPORTED,
                         "kappa_0 = %g > 0 with the mask source: the bound is infinite", k0);
    E->k0 = k0;
    double tprobe;
    raw = 0;
    st = dfm__sched_kappa_inverse(&p->sched, 0.5 * (1.0 + k0), &tprobe, &raw);
    if (st == DFM_ECALLBACK) return dfm__fail_callback(&l->b, raw, "scheduler inverse callback");
    E->use_kappa = st != DFM_EUNSUPPORTED;
    return 0;
}

/* Scratch for rows and one chunk (and the custom source's CDF). */
static int elbo_alloc(elbo_ctx *E)
{
    dfm_loss *l = E->l;
    const dfm_allocator *m = &l->b.mem;
    const size_t rows = E->a->rows, V = E->V;
    size_t chunk = E->a->chunk_rows && E->a->chunk_rows < rows ? E->a->chunk_rows : rows;
    size_t cn, cout;
    if (dfm__mul(chunk, E->d, &cn) || dfm__mul(cn, V, &cout))
        return dfm__fail(&l->b, DFM_EOVERFLOW, "chunk_rows x d x V overflows");
    E->chunk = chunk;
    int nt = dfm__parallel_width(l->b.nthreads, chunk);
    int custom = E->mx->source == DFM_SOURCE_CUSTOM;
    E->mean = (double *)dfm__calloc(m, rows, sizeof(double));
    E->m2 = (double *)dfm__calloc(m, rows, sizeof(double));
    E->src = (double *)dfm__calloc(m, rows, sizeof(double));
    E->tt = (double *)dfm__calloc(m, chunk, sizeof(double));
    E->c = (double *)dfm__calloc(m, chunk, sizeof(double));
    E->rowsum = (double *)dfm__calloc(m, chunk, sizeof(double));
    E->bad = (size_t *)dfm__calloc(m, chunk, sizeof(size_t));
    E->bad_what = (int *)dfm__calloc(m, chunk, sizeof(int));
    E->vals = (double *)dfm__calloc(m, cn, sizeof(double));
    E->xt = (int32_t *)dfm__calloc(m, cn, sizeof(int32_t));
    E->outb = (float *)dfm__calloc(m, cout, sizeof(float));
    E->scr = (float *)dfm__calloc(m, (size_t)nt, V * sizeof(float));
    E->cdf = custom ? (double *)dfm__calloc(m, V, sizeof(double)) : NULL;
    if (!E->mean || !E->m2 || !E->src || !E->tt || !E->c || !E->rowsum || !E->bad ||
        !E->bad_what || !E->vals || !E->xt || !E->outb || !E->scr || (custom && !E->cdf))
        return dfm__fail_nomem(&l->b, "ELBO scratch", chunk, "lower args->chunk_rows");
    if (E->cdf) {
        double acc = 0.0;
        for (size_t j = 0; j < V; j++) { acc += E->mx->p0[j]; E->cdf[j] = acc; }
    }
    return 0;
}

static void elbo_free(elbo_ctx *E)
{
    if (!E->l) return;
    const dfm_allocator *m = &E->l->b.mem;
    dfm__free(m, E->mean);
    dfm__free(m, E->m2);
    dfm__free(m, E->src);
    dfm__free(m, E->tt);
    dfm__free(m, E->c);
    dfm__free(m, E->rowsum);
    dfm__free(m, E->bad);
    dfm__free(m, E->bad_what);
    dfm__free(m, E->vals);
    dfm__free(m, E->xt);
    dfm__free(m, E->outb);
    dfm__free(m, E->scr);
    dfm__free(m, E->cdf);
}

/* Source term KL(p_0(.|x1) || p0) per row, summed over the free coordinates (kappa_0 > 0). */
static int elbo_source_terms(elbo_ctx *E)
{
    const dfm_elbo_args *a = E->a;
    const dfm__mixture *mx = E->mx;
    const size_t d = E->d;
    if (!(E->k0 > 0.0)) return 0;
    for (size_t k = 0; k < E->n; k++) {
        if (a->fixed && a->fixed[k]) continue;
        int32_t b = a->x1_tokens[k];
        double pb = mx->source == DFM_SOURCE_UNIFORM ? 1.0 / (double)E->V : mx->p0[b];
        if (!(pb > 0.0))
            return dfm__fail(&E->l->b, DFM_EUNSUPPORTED,
                             "x1_tokens[row %zu][coord %zu] = %d has p0 = 0 and kappa_0 > 0: the bound is "
                             "infinite", k / d, k % d, (int)b);
        E->src[k / d] += elbo_source_term(E->k0, pb);
    }
    return 0;
}

/* Draw k of chunk row r (global row g): the stratified kappa (or t without kappa^{-1}), the time
 * tt[r] the model sees, the weight c[r], and 1 - kappa in *om (computed without cancellation). */
static int elbo_draw_time(elbo_ctx *E, size_t r0, size_t r, uint64_t g, size_t k, double *om)
{
    dfm_loss *l = E->l;
    const dfm_elbo_args *a = E->a;
    const dfm_path *p = E->p;
    int raw;
    double u = dfm__uniform(l->b.seed, STREAM_ELBO_T, g, (uint32_t)k, a->draw);
    double vv = ((double)k + u) / (double)a->n_t;
    if (E->use_kappa) {
        /* kappa = 1 - (1 - kappa_0) s^2, s = 1 - v: density 1/(2 sqrt((1-k0)(1-kappa)))
         * on [kappa_0, 1); the integrand kappa'/(1-kappa) E[h] dt becomes E[h] dkappa /
         * (1 - kappa), so each draw contributes (2 / s) sum_i h_i. */
        double sv = 1.0 - vv;
        if (sv < DBL_EPSILON) sv = DBL_EPSILON;
        *om = (1.0 - E->k0) * sv * sv;
        double t;
        raw = 0;
        int st = dfm__sched_kappa_inverse(&p->sched, 1.0 - *om, &t, &raw);
        if (st == DFM_ECALLBACK)
            return dfm__fail_callback(&l->b, raw, "scheduler inverse callback");
        if (st || !(t >= 0.0 && t <= 1.0))
            return dfm__fail(&l->b, DFM_ENUMERIC, "kappa^{-1}(%g) failed", 1.0 - *om);
        E->tt[r] = t;
        E->c[r] = 2.0 / sv;
        return 0;
    }
    double t = vv < 1.0 ? vv : 1.0 - DBL_EPSILON / 2.0;
    E->tt[r] = t;
    int st = dl_coef(l, p, t, r0 + r, &E->c[r]);
    if (st) return st;
    dfm_sched_values v;
    raw = 0;
    st = dfm__sched_eval(&p->sched, t, &v, &raw); /* a host callback may fail */
    if (st == DFM_ECALLBACK) return dfm__fail_callback(&l->b, raw, "scheduler callback");
    if (st) return dfm__fail(&l->b, st, "scheduler evaluation failed at t = %g", t);
    *om = 1.0 - v.alpha;
    return 0;
}

/* x_t ~ p_t(.|x1) for chunk row r: each free coordinate keeps x1 with probability kappa, else
 * takes a source draw (mask token, uniform, or inverse CDF of a custom p0). */
static void elbo_draw_xt(elbo_ctx *E, const int32_t *x1, const uint8_t *fx, size_t r, uint64_t g,
                         size_t k, double om)
{
    const dfm__mixture *mx = E->mx;
    const size_t d = E->d, V = E->V;
    const double *cdf = E->cdf;
    int32_t *xt = E->xt;
    for (size_t i = 0; i < d; i++) {
        size_t q = r * d + i;
        if (fx && fx[q]) { xt[q] = x1[q]; continue; }
        uint32_t w[4];
        dfm__rng_block(E->l->b.seed, STREAM_ELBO_X, g, (uint32_t)(k * d + i), E->a->draw, w);
        double u1 = dfm__u53(w[0], w[1]), u2 = dfm__u53(w[2], w[3]);
        if (u1 >= om) { xt[q] = x1[q]; continue; }
        if (mx->source == DFM_SOURCE_MASK) {
            xt[q] = mx->mask;
        } else if (mx->source == DFM_SOURCE_UNIFORM) {
            size_t j = (size_t)(u2 * (double)V);
            xt[q] = (int32_t)(j < V ? j : V - 1);
        } else {
            double target = u2 * cdf[V - 1];
            size_t lo = 0, hi = V - 1;
            while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (cdf[mid] > target) hi = mid; else lo = mid + 1;
            }
            while (lo > 0 && mx->p0[lo] <= 0.0) lo--; /* rounding at the top */
            xt[q] = (int32_t)lo;
        }
    }
}

/* The model's posterior logits at (tt, xt) for the nr rows of the chunk at r0. */
static int elbo_call_model(elbo_ctx *E, size_t r0, size_t nr)
{
    dfm_loss *l = E->l;
    dfm_model_io io;
    memset(&io, 0, sizeof io);
    io.struct_size = sizeof io;
    io.rows = nr;
    io.row_offset = E->a->row_offset + r0;
    io.t = E->tt;
    io.tokens = E->xt;
    io.n_tokens = E->d;
    io.out = E->outb;
    io.out_stride = l->out_stride;
    io.branch = DFM_BRANCH_MAIN;
    io.step = -1;
    dfm__out_prefill(E->outb, nr * l->out_stride, E->V);
    int rc = E->a->model(&io, E->a->user_data);
    if (rc) return dfm__fail_callback(&l->b, rc, "model callback");
    return dfm__callback_freed();
}

/* Row sums of the weighted generalized-KL terms of draw k, folded into the running mean and M2
 * (Welford over the n_t terms). */
static int elbo_add_terms(elbo_ctx *E, size_t r0, size_t nr, size_t k)
{
    const size_t d = E->d;
    dl_eval e;
    memset(&e, 0, sizeof e);
    e.out = E->outb;
    e.x1 = E->a->x1_tokens + r0 * d;
    e.xt = E->xt;
    e.fixed = E->a->fixed ? E->a->fixed + r0 * d : NULL;
    e.d = d;
    e.stride = E->l->out_stride;
    e.V = (int32_t)E->V;
    e.gkl = 1;
    e.c = E->c;
    e.w = 1.0;
    e.vals = E->vals;
    e.rowsum = E->rowsum;
    e.bad = E->bad;
    e.bad_what = E->bad_what;
    e.scratch = E->scr;
    int st = dl_run(E->l, &e, nr, E->a->row_offset + r0, 0);
    if (st) return st;
    double *mean = E->mean + r0, *m2 = E->m2 + r0;
    for (size_t r = 0; r < nr; r++) {
        double x = E->rowsum[r], delta = x - mean[r];
        mean[r] += delta / (double)(k + 1);
        m2[r] += delta * (x - mean[r]);
    }
    return 0;
}

/* Draw k for the chunk of nr rows at r0: times and x_t of every row, the model, the terms. */
static int elbo_chunk_draw(elbo_ctx *E, size_t r0, size_t nr, size_t k)
{
    const size_t d = E->d;
    const int32_t *x1 = E->a->x1_tokens + r0 * d;
    const uint8_t *fx = E->a->fixed ? E->a->fixed + r0 * d : NULL;
    for (size_t r = 0; r < nr; r++) {
        uint64_t g = (uint64_t)(E->a->row_offset + r0 + r);
        double om = 0.0; /* set by elbo_draw_time on success */
        int st = elbo_draw_time(E, r0, r, g, k, &om);
        if (st) return st;
        elbo_draw_xt(E, x1, fx, r, g, k, om);
    }
    int st = elbo_call_model(E, r0, nr);
    if (!st) st = elbo_add_terms(E, r0, nr, k);
    return st;
}

/* Negative ELBO = source term + mean of the n_t draws; standard error from their spread. */
static void elbo_write(const elbo_ctx *E)
{
    const dfm_elbo_args *a = E->a;
    for (size_t r = 0; r < a->rows; r++) a->nelbo[r] = E->mean[r] + E->src[r];
    if (a->std_error)
        for (size_t r = 0; r < a->rows; r++)
            a->std_error[r] = a->n_t > 1
                ? sqrt(E->m2[r] / ((double)(a->n_t - 1) * (double)a->n_t)) : NAN;
}

static int elbo_run(dfm_loss *l, const dfm_elbo_args *a)
{
    elbo_ctx E;
    memset(&E, 0, sizeof E);
    int st = elbo_check_args(l, a, &E);
    if (st || a->rows == 0) return st;
    if ((st = elbo_kappa0(&E))) return st;
    st = elbo_alloc(&E);
    if (!st) st = elbo_source_terms(&E);
    for (size_t r0 = 0; r0 < a->rows && !st; r0 += E.chunk) {
        size_t nr = a->rows - r0 < E.chunk ? a->rows - r0 : E.chunk;
        for (size_t k = 0; k < a->n_t && !st; k++) st = elbo_chunk_draw(&E, r0, nr, k);
    }
    if (!st) elbo_write(&E);
    elbo_free(&E);
    return st;
}

int dfm_loss_discrete_elbo(dfm_loss *l, const dfm_elbo_args *a)
{
    if (!l) return dfm__null(__func__, "l");
    int st = dfm__enter(&l->b, __func__);
    if (st) return st;
    return dfm__leave(&l->b, elbo_run(l, a));
}
