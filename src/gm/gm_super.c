/* Superposition of generators on one space (weights, weight functions, branch inputs) and
 * classifier-free guidance (docs/gm.md). */
#include "gm/gm_impl.h"

#include <math.h>

/* ---- superposition ---- */

static void sup_destroy(dfm_generator *g)
{
    dfm__gm_sup *s = (dfm__gm_sup *)g->impl;
    if (!s) return;
    for (size_t k = 0; k < s->n; k++) dfm_generator_free(s->comp[k]);
    dfm__free(&g->b.mem, s);
    g->impl = NULL;
}

static int sup_clone(dfm_generator *dst, const dfm_generator *src)
{
    const dfm__gm_sup *s = (const dfm__gm_sup *)src->impl;
    dfm__gm_sup *d = (dfm__gm_sup *)dfm__calloc(&dst->b.mem, 1, sizeof *d);
    if (!d) return DFM_ENOMEM;
    *d = *s;
    d->n = 0;
    dst->impl = d;
    for (size_t k = 0; k < s->n; k++) {
        int st = dfm_generator_clone(&d->comp[k], s->comp[k], &dst->b.mem);
        if (st) { sup_destroy(dst); return st; }
        d->n = k + 1;
    }
    return 0;
}

static const dfm__gen_ops sup_ops = {sup_destroy, sup_clone, dfm__gm_sampler_init, NULL, NULL,
                                     NULL, NULL};

static void sup_layout(dfm_generator *g)
{
    dfm__gm_sup *s = (dfm__gm_sup *)g->impl;
    s->bstride[0] = s->bstride[1] = 0;
    for (size_t k = 0; k < s->n; k++) {
        int b = s->branch[k] ? 1 : 0;
        if (s->share[k] >= 0) { s->off[k] = s->off[s->share[k]]; continue; }
        s->off[k] = s->bstride[b];
        s->bstride[b] += s->comp[k]->out_stride;
    }
    g->out_stride = s->bstride[0];
}

static int same_space(const dfm_space *a, const dfm_space *b)
{
    if (a->n_tokens != b->n_tokens || a->n_reals != b->n_reals) return 0;
    for (size_t j = 0; j < a->n_tokens; j++)
        if (dfm__space_vocab(a, j) != dfm__space_vocab(b, j)) return 0;
    return 1;
}

int dfm_generator_create_superposition(dfm_generator **out, const dfm_generator *const *gens,
                                       const double *weights, size_t n, const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!gens) return dfm__null(__func__, "gens");
    if (n == 0 || n > DFM__GM_MAXP)
        return dfm__error(DFM_EINVAL, "%s: n must be in [1, %d], got %zu", __func__, DFM__GM_MAXP,
                          n);
    int cont0 = -1, param = 0;
    size_t total = 0;
    for (size_t k = 0; k < n; k++) {
        int cont;
        if (!gens[k] || !gens[k]->path)
            return dfm__error(DFM_EINVAL, "%s: gens[%zu] is NULL or has no path", __func__, k);
        if (!dfm__gm_leaf_kind(gens[k], &cont))
            return dfm__error(DFM_EUNSUPPORTED, "%s: gens[%zu] (kind %d) cannot be superposed",
                              __func__, k, gens[k]->kind);
        if (cont0 >= 0 && cont != cont0)
            return dfm__error(DFM_EINVAL, "%s: gens[%zu] mixes continuous and discrete "
                              "components", __func__, k);
        if (!same_space(&gens[k]->path->space, &gens[0]->path->space))
            return dfm__error(DFM_EINVAL, "%s: gens[%zu] is on another space than gens[0]",
                              __func__, k);
        if (weights && !isfinite(weights[k]))
            return dfm__error(DFM_EINVAL, "%s: weights[%zu] = %g is not finite", __func__, k,
                              weights[k]);
        cont0 = cont;
        param = k == 0 ? gens[k]->param : (param == gens[k]->param ? param : DFM_PARAM_MIXED);
        if (total > SIZE_MAX - gens[k]->out_stride)
            return dfm__error(DFM_EOVERFLOW, "%s: the output size overflows", __func__);
        total += gens[k]->out_stride;
    }
    dfm_generator *g;
    int st = dfm__gen_new(&g, DFM_GEN_SUPERPOSITION, param, total, &sup_ops, gens[0]->path, mem);
    if (st) return st;
    dfm__gm_sup *s = (dfm__gm_sup *)dfm__calloc(&g->b.mem, 1, sizeof *s);
    if (!s) {
        dfm_generator_free(g);
        return dfm__error(DFM_ENOMEM, "%s: cannot allocate the generator", __func__);
    }
    g->impl = s;
    s->cont = cont0;
    g->b.nthreads = gens[0]->b.nthreads;
    g->b.spin_us = gens[0]->b.spin_us;
    g->b.seed = gens[0]->b.seed;
    for (size_t k = 0; k < n; k++) {
        s->w[k] = weights ? weights[k] : 1.0 / (double)n;
        s->branch[k] = DFM_BRANCH_MAIN;
        s->share[k] = -1;
        st = dfm_generator_clone(&s->comp[k], gens[k], &g->b.mem);
        if (st) { dfm_generator_free(g); return st; }
        s->n = k + 1;
    }
    sup_layout(g);
    *out = g;
    return 0;
}

int dfm_generator_set_weight_fn(dfm_generator *g, dfm_weight_fn fn, void *user_data)
{
    if (!g) return dfm__null(__func__, "g");
    DFM__NOT_RUNNING(&g->b);
    dfm__clear(&g->b);
    if (!dfm__gm_is_sup(g))
        return dfm__fail(&g->b, DFM_EUNSUPPORTED, "not a superposition generator");
    dfm__gm_sup *s = (dfm__gm_sup *)g->impl;
    s->wfn = fn;
    s->wud = fn ? user_data : NULL;
    return 0;
}

int dfm_generator_superposition_set_input(dfm_generator *g, size_t k, int branch,
                                          int64_t share_with)
{
    if (!g) return dfm__null(__func__, "g");
    DFM__NOT_RUNNING(&g->b);
    dfm__clear(&g->b);
    if (!dfm__gm_is_sup(g))
        return dfm__fail(&g->b, DFM_EUNSUPPORTED, "not a superposition generator");
    dfm__gm_sup *s = (dfm__gm_sup *)g->impl;
    if (k >= s->n)
        return dfm__fail(&g->b, DFM_EINVAL, "component %zu does not exist (%zu components)", k,
                         s->n);
    if (branch != DFM_BRANCH_MAIN && branch != DFM_BRANCH_UNCOND)
        return dfm__fail(&g->b, DFM_EINVAL, "unknown branch %d", branch);
    if (share_with < -1 || share_with >= (int64_t)k)
        return dfm__fail(&g->b, DFM_EINVAL, "share_with must be -1 or an earlier component");
    if (share_with >= 0) {
        size_t j = (size_t)share_with;
        if (s->branch[j] != branch || s->share[j] >= 0)
            return dfm__fail(&g->b, DFM_EINVAL,
                             "component %zu must read its own slice of the same branch", j);
        if (s->comp[j]->out_stride != s->comp[k]->out_stride)
            return dfm__fail(&g->b, DFM_EINVAL,
                             "components %zu and %zu have different output sizes (%zu, %zu)", j,
                             k, s->comp[j]->out_stride, s->comp[k]->out_stride);
    }
    for (size_t q = k + 1; q < s->n; q++)
        if (s->share[q] == (int)k && (branch != s->branch[k] || share_with >= 0))
            return dfm__fail(&g->b, DFM_EINVAL, "component %zu reads component %zu's slice", q, k);
    s->branch[k] = branch;
    s->share[k] = (int)share_with;
    sup_layout(g);
    return 0;
}

size_t dfm_generator_branch_stride(const dfm_generator *g, int branch)
{
    if (!g || (branch != DFM_BRANCH_MAIN && branch != DFM_BRANCH_UNCOND)) return 0;
    return dfm__gm_branch_stride(g, branch);
}

int dfm_generator_create_guidance(dfm_generator **out, const dfm_generator *cond,
                                  const dfm_generator *uncond, double w, const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!cond) return dfm__null(__func__, "cond");
    if (!isfinite(w)) return dfm__error(DFM_EINVAL, "%s: w must be finite, got %g", __func__, w);
    const dfm_generator *gs[2] = {cond, uncond ? uncond : cond};
    double ws[2] = {1.0 + w, -w};
    dfm_generator *g;
    int st = dfm_generator_create_superposition(&g, gs, ws, 2, mem);
    if (st) return st;
    st = dfm_generator_superposition_set_input(g, 1, DFM_BRANCH_UNCOND, -1);
    if (st) {
        dfm__error(st, "%s: %s", __func__, g->b.err);
        dfm_generator_free(g);
        return st;
    }
    *out = g;
    return 0;
}
