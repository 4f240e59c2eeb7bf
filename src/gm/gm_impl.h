/* Private definitions of the generator-matching module (product paths, generators and losses,
 * superpositions, the joint sampler, the trainer). */
#ifndef DFM_GM_IMPL_H
#define DFM_GM_IMPL_H

#include "handles/handles.h"

#define DFM__GM_MAXP DFM_MAX_PARTS

/* Layout of one part inside a product row. */
typedef struct dfm__gm_slot {
    size_t tok_off, n_tok;   /* token range */
    size_t real_off, n_real; /* real range */
    size_t out_off, stride;  /* model output slice (DFM_BRANCH_MAIN call) */
} dfm__gm_slot;

/* DFM_PATH_PRODUCT data. */
typedef struct dfm__gm_ppath {
    size_t n;
    dfm_path *parts[DFM__GM_MAXP];
    dfm__gm_slot slot[DFM__GM_MAXP];
} dfm__gm_ppath;

/* Superposition data. */
typedef struct dfm__gm_sup {
    size_t n;
    int cont;                       /* 1: continuous components, 0: discrete */
    dfm_generator *comp[DFM__GM_MAXP];
    double w[DFM__GM_MAXP];
    int branch[DFM__GM_MAXP];
    int share[DFM__GM_MAXP];        /* -1 or an earlier component */
    size_t off[DFM__GM_MAXP];       /* offset of the component's slice in its branch's call */
    size_t bstride[2];              /* stride of the MAIN / UNCOND calls */
    dfm_weight_fn wfn;
    void *wud;
} dfm__gm_sup;

/* Product generator data. */
typedef struct dfm__gm_pgen {
    size_t n;
    dfm_generator *parts[DFM__GM_MAXP];
    dfm__gm_slot slot[DFM__GM_MAXP];
    size_t uoff[DFM__GM_MAXP];      /* offset of part k's slice in the UNCOND call */
    size_t bstride[2];
    dfm_part_time_fn ptfn;          /* per-part sampling times, or NULL */
    void *ptud;
} dfm__gm_pgen;

/* ---- gm_kinds.c: kinds, leaves, strides, slots (calls no other file of gm/) ---- */
/* Build the slot table of n spaces (outputs get strides[k]; strides may be NULL). */
void dfm__gm_slots(const dfm_space *const *spaces, const size_t *strides, size_t n,
                   dfm__gm_slot *slot);
int dfm__gm_is_sup(const dfm_generator *g);
int dfm__gm_is_bwd(const dfm_generator *g);
int dfm__gm_is_pgen(const dfm_generator *g);
/* Stride of g's slice in the call of branch b (plain generators: MAIN only). */
size_t dfm__gm_branch_stride(const dfm_generator *g, int b);
/* 1 if g is a leaf a superposition or product may hold: factorized mixture (logits or rates),
 * backward mixture, velocity or diffusion without a sampling scheduler; *cont = its modality. */
int dfm__gm_leaf_kind(const dfm_generator *g, int *cont);
/* 1 if g is a leaf the joint sampler can step (dfm__gm_leaf_kind); 2 for a superposition of
 * those; 0 otherwise. *cont = its modality. */
int dfm__gm_steppable(const dfm_generator *g, int *cont, dfm_base *err);
/* Seed of product part k. */
static inline uint64_t dfm__gm_part_seed(uint64_t seed, size_t k)
{
    return seed ^ (DFM_GM_PART_SEED_MUL * (uint64_t)(k + 1));
}

/* ---- gm_product.c: product paths, generators and losses ---- */
int dfm__gm_is_product_path(const dfm_path *p);
const dfm__gm_ppath *dfm__gm_ppath_of(const dfm_path *p);
/* 1 if loss q fits a part with space sp (else a reason in why); parts of a product loss. */
int dfm__gm_loss_fits(const dfm_loss *q, const dfm_space *sp, char *why, size_t nwhy);
size_t dfm__gm_loss_n_parts(const dfm_loss *l);
/* 1 if product loss l has the part layout of path p. */
int dfm__gm_loss_matches(const dfm_loss *l, const dfm_path *p);
/* dfm_loss_eval_parts where args->grad is the caller's scratch, which a failing call may leave
 * written: a product loss writes its parts' gradients there directly. */
int dfm__gm_loss_eval_in_place(dfm_loss *l, const dfm_loss_args *a, const double *part_t);
/* Marks the rows x out_stride model output of loss l (on a space of n_tokens tokens) unwritten:
 * the entries l's checks read for the mark (dfm__out_prefill). */
void dfm__gm_loss_prefill(const dfm_loss *l, size_t n_tokens, float *out, size_t rows);

/* ---- gm_sampler.c: the joint sampler, reached from the generators' ops tables only ---- */
int dfm__gm_sampler_init(dfm_sampler *s, int method);

#endif
