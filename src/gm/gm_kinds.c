/* The generator kinds of the module and what the joint sampler can step: the kind tests
 * (superposition, product, backward mixture), the backward-time mixture generator itself (a
 * leaf with no model output), the leaves a superposition or product may hold, the stride of a
 * generator's slice in each branch's model call, and the slot table of product rows
 * (docs/gm.md). The lowest file of the module: it calls no other file of gm/. */
#include "gm/gm_impl.h"
#include "continuous/continuous_impl.h"

/* ---- layout ---- */

void dfm__gm_slots(const dfm_space *const *spaces, const size_t *strides, size_t n,
                   dfm__gm_slot *slot)
{
    size_t to = 0, ro = 0, oo = 0;
    for (size_t k = 0; k < n; k++) {
        slot[k].tok_off = to;
        slot[k].n_tok = spaces[k]->n_tokens;
        slot[k].real_off = ro;
        slot[k].n_real = spaces[k]->n_reals;
        slot[k].out_off = oo;
        slot[k].stride = strides ? strides[k] : 0;
        to += slot[k].n_tok;
        ro += slot[k].n_real;
        oo += slot[k].stride;
    }
}

/* ---- backward mixture generator: no model output, only usable inside a superposition ---- */

static const dfm__gen_ops bwd_ops = {NULL, NULL, NULL, NULL, NULL, NULL, NULL};

int dfm__gm_is_bwd(const dfm_generator *g) { return g && g->ops == &bwd_ops; }

int dfm_generator_create_mixture_backward(dfm_generator **out, const dfm_path *path,
                                          const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!path) return dfm__null(__func__, "path");
    if (path->kind != DFM_PATH_MIXTURE)
        return dfm__error(DFM_EUNSUPPORTED, "%s: the path must be a mixture path (kind %d)",
                          __func__, path->kind);
    return dfm__gen_new(out, DFM_GEN_FACTORIZED, DFM_PARAM_RATES, 0, &bwd_ops, path, mem);
}

/* ---- kinds ---- */

/* Only dfm_generator_create_superposition / _product make these kinds (and clones keep them);
 * testing the kind rather than the ops table keeps the tables, which name the joint sampler,
 * out of this file. */
int dfm__gm_is_sup(const dfm_generator *g) { return g && g->kind == DFM_GEN_SUPERPOSITION; }
int dfm__gm_is_pgen(const dfm_generator *g) { return g && g->kind == DFM_GEN_PRODUCT; }

size_t dfm__gm_branch_stride(const dfm_generator *g, int b)
{
    if (dfm__gm_is_sup(g)) return ((const dfm__gm_sup *)g->impl)->bstride[b ? 1 : 0];
    if (dfm__gm_is_pgen(g)) return ((const dfm__gm_pgen *)g->impl)->bstride[b ? 1 : 0];
    return b == DFM_BRANCH_MAIN ? g->out_stride : 0;
}

int dfm__gm_leaf_kind(const dfm_generator *g, int *cont)
{
    if (dfm__gm_is_bwd(g)) { *cont = 0; return 1; }
    if (g->kind == DFM_GEN_FACTORIZED && g->path && g->path->kind == DFM_PATH_MIXTURE &&
        (g->param == DFM_PARAM_LOGITS || g->param == DFM_PARAM_RATES)) {
        *cont = 0;
        return 1;
    }
    if ((g->kind == DFM_GEN_VELOCITY || g->kind == DFM_GEN_DIFFUSION) && g->path &&
        g->path->kind == DFM_PATH_AFFINE && g->impl &&
        !((const dfm__cgen *)g->impl)->has_tr) {
        *cont = 1;
        return 1;
    }
    return 0;
}

int dfm__gm_steppable(const dfm_generator *g, int *cont, dfm_base *err)
{
    (void)err;
    if (!g) return 0;
    if (dfm__gm_is_sup(g)) { *cont = ((const dfm__gm_sup *)g->impl)->cont; return 2; }
    return dfm__gm_leaf_kind(g, cont);
}
