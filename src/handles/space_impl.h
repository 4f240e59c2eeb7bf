/* Private layout of dfm_space (a small value: handles copy it). */
#ifndef DFM_SPACE_IMPL_H
#define DFM_SPACE_IMPL_H

#include "core/internal.h"

struct dfm_space {
    dfm_allocator mem;
    size_t n_parts;
    size_t n_tokens, n_reals;
    dfm_space_part parts[DFM_MAX_PARTS];
};

/* Vocabulary of token j (j < n_tokens); binary-free linear scan over parts. */
static inline int32_t dfm__space_vocab(const dfm_space *s, size_t j)
{
    for (size_t p = 0; p < s->n_parts; p++) {
        const dfm_space_part *q = &s->parts[p];
        if (q->kind == DFM_SPACE_DISCRETE && j >= q->offset && j < q->offset + q->dim)
            return q->vocab;
    }
    return 0;
}

#endif
