/* libdfm: state spaces. Discrete [V]^d (int32 tokens), Euclidean R^D (float), and products of
 * such parts (multimodal). A space is immutable after creation and may be shared. */
#ifndef DFM_SPACE_H
#define DFM_SPACE_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dfm_space dfm_space;

#define DFM_SPACE_DISCRETE  1
#define DFM_SPACE_EUCLIDEAN 2
#define DFM_SPACE_PRODUCT   3

/** Limits (function twins below). */
#define DFM_MAX_VOCAB 0x40000000 /* 2^30 */
#define DFM_MAX_PARTS 64

/** One part of a space. Tokens of part p occupy tokens[offset .. offset + dim) of a row
 * (discrete), reals occupy reals[offset .. offset + dim) (Euclidean). */
typedef struct dfm_space_part {
    int kind;       /* DFM_SPACE_DISCRETE or DFM_SPACE_EUCLIDEAN */
    int32_t vocab;  /* discrete: vocabulary size V; Euclidean: 0 */
    size_t dim;     /* coordinates in this part */
    size_t offset;  /* first coordinate in the row's token or real array */
} dfm_space_part;

/** [vocab]^d: 2 <= vocab <= DFM_MAX_VOCAB, d >= 1. */
DFM_API int dfm_space_create_discrete(dfm_space **out, int32_t vocab, size_t d,
                                      const dfm_allocator *mem);
/** R^dim, dim >= 1. */
DFM_API int dfm_space_create_euclidean(dfm_space **out, size_t dim, const dfm_allocator *mem);
/** Product of n (1..DFM_MAX_PARTS) spaces, in order; product parts are flattened. The parts are
 * copied: they may be freed right after. */
DFM_API int dfm_space_create_product(dfm_space **out, const dfm_space *const *parts, size_t n,
                                     const dfm_allocator *mem);
DFM_API int dfm_space_clone(dfm_space **out, const dfm_space *s, const dfm_allocator *mem);
DFM_API void dfm_space_free(dfm_space *s);

/** DFM_SPACE_DISCRETE / _EUCLIDEAN for single-part spaces, DFM_SPACE_PRODUCT for products of two
 * or more parts, 0 for NULL. */
DFM_API int dfm_space_kind(const dfm_space *s);
/** Tokens per row (sum of the discrete parts' dims); 0 for NULL. */
DFM_API size_t dfm_space_n_tokens(const dfm_space *s);
/** Reals per row (sum of the Euclidean parts' dims); 0 for NULL. */
DFM_API size_t dfm_space_n_reals(const dfm_space *s);
DFM_API size_t dfm_space_n_parts(const dfm_space *s);
DFM_API int dfm_space_part_info(const dfm_space *s, size_t part, dfm_space_part *info);
/** Vocabulary of token coordinate j (0 <= j < n_tokens); 0 when out of range. */
DFM_API int32_t dfm_space_token_vocab(const dfm_space *s, size_t j);
/** Checks rows x n_tokens tokens lie in their vocabularies. DFM_ERANGE on the first bad one,
 * whose flat index goes to *bad (if not NULL). */
DFM_API int dfm_space_check_tokens(const dfm_space *s, const int32_t *tokens, size_t rows,
                                   size_t *bad);
DFM_API int32_t dfm_max_vocab(void);
DFM_API int dfm_max_parts(void);

#ifdef __cplusplus
}
#endif
#endif
