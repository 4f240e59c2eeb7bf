/* Discrete mixture path (Gat et al. 2024, "Discrete Flow Matching"):
 * p_t(x^i | x1) = (1 - kappa_t) p0(x^i) + kappa_t delta(x^i, x1^i), kappa_t = alpha_t. */
#include "discrete/discrete_impl.h"
#include "core/rng_impl.h"

#include <math.h>

static void mix_destroy(dfm_path *p)
{
    dfm__mixture *m = (dfm__mixture *)p->impl;
    if (!m) return;
    dfm__free(&p->b.mem, m->p0);
    dfm__free(&p->b.mem, m->cdf);
    dfm__free(&p->b.mem, m);
    p->impl = NULL;
}

/* Fill m (already zeroed, source/vocab/mask set) with its probability arrays from p0. */
static int mix_fill(const dfm_allocator *mem, dfm__mixture *m, const double *p0)
{
    size_t V = (size_t)m->vocab;
    if (m->source == DFM_SOURCE_MASK) return 0;
    m->p0 = (double *)dfm__calloc(mem, V, sizeof(double));
    if (!m->p0) return DFM_ENOMEM;
    if (m->source == DFM_SOURCE_UNIFORM) {
        for (size_t j = 0; j < V; j++) m->p0[j] = 1.0 / (double)V;
        return 0;
    }
    m->cdf = (double *)dfm__calloc(mem, V, sizeof(double));
    if (!m->cdf) return DFM_ENOMEM;
    double acc = 0.0;
    for (size_t j = 0; j < V; j++) {
        m->p0[j] = p0[j];
        acc += p0[j];
        m->cdf[j] = acc;
    }
    /* normalise exactly (the input sums to 1 within 1e-6) */
    for (size_t j = 0; j < V; j++) { m->p0[j] /= acc; m->cdf[j] /= acc; }
    m->cdf[V - 1] = 1.0;
    return 0;
}

static int mix_clone(dfm_path *dst, const dfm_path *src)
{
    const dfm__mixture *s = dfm__mixture_of(src);
    dfm__mixture *m = (dfm__mixture *)dfm__calloc(&dst->b.mem, 1, sizeof(dfm__mixture));
    if (!m) return DFM_ENOMEM;
    m->source = s->source;
    m->vocab = s->vocab;
    m->mask = s->mask;
    dst->impl = m;
    int st = mix_fill(&dst->b.mem, m, s->p0);
    if (st) { mix_destroy(dst); return st; }
    return 0;
}

typedef struct sample_ctx {
    const dfm_path *p;
    const dfm_path_sample_args *a;
    const double *kappa;
    size_t d;
} sample_ctx;

static int sample_rows(void *vctx, size_t begin, size_t end, int tid)
{
    (void)tid;
    const sample_ctx *c = (const sample_ctx *)vctx;
    const dfm__mixture *m = dfm__mixture_of(c->p);
    const dfm_path_sample_args *a = c->a;
    uint64_t seed = c->p->b.seed;
    for (size_t r = begin; r < end; r++) {
        uint64_t grow = (uint64_t)(a->row_offset + r);
        double k = c->kappa[r];
        const int32_t *x1 = a->x1_tokens + r * c->d;
        const int32_t *x0 = a->x0_tokens ? a->x0_tokens + r * c->d : NULL;
        int32_t *xt = a->xt_tokens + r * c->d;
        for (size_t i = 0; i < c->d; i++) {
            double u = dfm__uniform(seed, DFM__DS_STREAM_PATH_MIX, grow, (uint32_t)i, a->draw);
            if (u < k) { xt[i] = x1[i]; continue; }
            if (x0) { xt[i] = x0[i]; continue; }
            double v = dfm__uniform(seed, DFM__DS_STREAM_PATH_X0, grow, (uint32_t)i, a->draw);
            xt[i] = dfm__mix_source_draw(m, v);
        }
    }
    return 0;
}

static int mix_sample(dfm_path *p, const dfm_path_sample_args *a)
{
    const dfm__mixture *m = dfm__mixture_of(p);
    size_t d = p->space.n_tokens, n;
    if (a->rows == 0) return 0;
    if (!a->x1_tokens) return dfm__fail(&p->b, DFM_EINVAL, "args->x1_tokens is NULL");
    if (!a->xt_tokens) return dfm__fail(&p->b, DFM_EINVAL, "args->xt_tokens is NULL");
    if (dfm__mul(a->rows, d, &n)) return dfm__fail(&p->b, DFM_EOVERFLOW, "rows x d overflows");
    for (size_t j = 0; j < n; j++) {
        if (a->x1_tokens[j] < 0 || a->x1_tokens[j] >= m->vocab)
            return dfm__fail(&p->b, DFM_ERANGE, "x1_tokens[row %zu][coord %zu] = %d is outside [0, %d)",
                             j / d, j % d, (int)a->x1_tokens[j], (int)m->vocab);
        if (a->x0_tokens && (a->x0_tokens[j] < 0 || a->x0_tokens[j] >= m->vocab))
            return dfm__fail(&p->b, DFM_ERANGE, "x0_tokens[row %zu][coord %zu] = %d is outside [0, %d)",
                             j / d, j % d, (int)a->x0_tokens[j], (int)m->vocab);
    }
    double *kappa = (double *)dfm__calloc(&p->b.mem, a->rows, sizeof(double));
    if (!kappa) return dfm__fail_nomem(&p->b, "path times", a->rows, DFM__HINT_ROWS);
    for (size_t r = 0; r < a->rows; r++) {
        dfm_sched_values v;
        int raw = 0;
        int st = dfm__sched_eval(&p->sched, a->t[r], &v, &raw);
        if (st == DFM_ECALLBACK) { dfm__free(&p->b.mem, kappa); return dfm__fail_callback(&p->b, raw, "scheduler"); }
        if (st || !(v.alpha >= 0.0 && v.alpha <= 1.0)) {
            dfm__free(&p->b.mem, kappa);
            return dfm__fail(&p->b, DFM_ENUMERIC, "kappa(t = %g) = %g is not in [0, 1]", a->t[r],
                             st ? NAN : v.alpha);
        }
        kappa[r] = v.alpha;
    }
    sample_ctx c = {p, a, kappa, d};
    dfm__parallel_for(&p->b, p->b.nthreads, a->rows, sample_rows, &c);
    dfm__free(&p->b.mem, kappa);
    return 0;
}

static const dfm__path_ops mixture_ops = {mix_destroy, mix_clone, mix_sample, NULL};

int dfm_path_create_mixture(dfm_path **out, const dfm_space *space, const dfm_scheduler *sched,
                            int source, int32_t mask_token, const double *p0,
                            const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!space || !sched) return dfm__null(__func__, "space or sched");
    if (space->n_parts != 1 || space->parts[0].kind != DFM_SPACE_DISCRETE)
        return dfm__error(DFM_EINVAL, "%s: the space must be a single discrete part", __func__);
    int32_t V = space->parts[0].vocab;
    if (source != DFM_SOURCE_MASK && source != DFM_SOURCE_UNIFORM && source != DFM_SOURCE_CUSTOM)
        return dfm__error(DFM_EINVAL, "%s: unknown source %d", __func__, source);
    if (source == DFM_SOURCE_MASK && (mask_token < 0 || mask_token >= V))
        return dfm__error(DFM_ERANGE, "%s: mask_token %ld is outside [0, %ld)", __func__,
                          (long)mask_token, (long)V);
    if (source != DFM_SOURCE_CUSTOM && p0)
        return dfm__error(DFM_EINVAL, "%s: p0 must be NULL for the %s source (only "
                          "DFM_SOURCE_CUSTOM takes p0)", __func__,
                          source == DFM_SOURCE_MASK ? "mask" : "uniform");
    if (source == DFM_SOURCE_CUSTOM) {
        if (!p0) return dfm__null(__func__, "p0");
        double sum = 0.0;
        for (int32_t j = 0; j < V; j++) {
            if (!isfinite(p0[j]))
                return dfm__error(DFM_ENUMERIC, "%s: p0[%ld] = %g is not finite", __func__,
                                  (long)j, p0[j]);
            if (p0[j] < 0.0)
                return dfm__error(DFM_EINVAL, "%s: p0[%ld] = %g is negative", __func__, (long)j,
                                  p0[j]);
            sum += p0[j];
        }
        if (!(fabs(sum - 1.0) <= 1e-6))
            return dfm__error(DFM_EINVAL, "%s: p0 sums to %.17g, not 1 (tolerance 1e-6)",
                              __func__, sum);
    }
    dfm_path *p;
    int st = dfm__path_new(&p, DFM_PATH_MIXTURE, &mixture_ops, space, sched, mem);
    if (st) return st;
    dfm__mixture *m = (dfm__mixture *)dfm__calloc(&p->b.mem, 1, sizeof(dfm__mixture));
    if (!m) {
        dfm_path_free(p);
        return dfm__error(DFM_ENOMEM, "%s: cannot allocate the path", __func__);
    }
    m->source = source;
    m->vocab = V;
    m->mask = source == DFM_SOURCE_MASK ? mask_token : 0;
    p->impl = m;
    st = mix_fill(&p->b.mem, m, p0);
    if (st) {
        dfm_path_free(p);
        return dfm__error(st, "%s: cannot allocate the source tables", __func__);
    }
    *out = p;
    return 0;
}
