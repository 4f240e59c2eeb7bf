/* State spaces: discrete [V]^d, Euclidean R^D and their products. */
#include "core/internal.h"
#include "handles/space_impl.h"

static int alloc_space(dfm_space **out, const dfm_allocator *mem)
{
    dfm_allocator m;
    if (dfm__mem_init(&m, mem)) return DFM_EINVAL;
    dfm_space *s = (dfm_space *)dfm__calloc(&m, 1, sizeof *s);
    if (!s) return dfm__error(DFM_ENOMEM, "cannot allocate a space (%zu bytes)", sizeof *s);
    s->mem = m;
    *out = s;
    return 0;
}

int dfm_space_create_discrete(dfm_space **out, int32_t vocab, size_t d, const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (vocab < 2 || vocab > DFM_MAX_VOCAB)
        return dfm__error(DFM_EINVAL, "%s: vocab must be in [2, %d], got %ld", __func__,
                          DFM_MAX_VOCAB, (long)vocab);
    if (d == 0 || d > (size_t)INT32_MAX)
        return dfm__error(DFM_EINVAL, "%s: d must be in [1, 2^31), got %zu", __func__, d);
    int st = alloc_space(out, mem);
    if (st) return st;
    dfm_space *s = *out;
    s->n_parts = 1;
    s->n_tokens = d;
    s->parts[0].kind = DFM_SPACE_DISCRETE;
    s->parts[0].vocab = vocab;
    s->parts[0].dim = d;
    return 0;
}

int dfm_space_create_euclidean(dfm_space **out, size_t dim, const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (dim == 0 || dim > (size_t)INT32_MAX)
        return dfm__error(DFM_EINVAL, "%s: dim must be in [1, 2^31), got %zu", __func__, dim);
    int st = alloc_space(out, mem);
    if (st) return st;
    dfm_space *s = *out;
    s->n_parts = 1;
    s->n_reals = dim;
    s->parts[0].kind = DFM_SPACE_EUCLIDEAN;
    s->parts[0].dim = dim;
    return 0;
}

int dfm_space_create_product(dfm_space **out, const dfm_space *const *parts, size_t n,
                             const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!parts) return dfm__null(__func__, "parts");
    if (n == 0) return dfm__error(DFM_EINVAL, "%s: n must be >= 1", __func__);
    size_t total = 0, nt = 0, nr = 0;
    for (size_t i = 0; i < n; i++) {
        if (!parts[i]) return dfm__error(DFM_EINVAL, "%s: parts[%zu] is NULL", __func__, i);
        total += parts[i]->n_parts;
        if (total > DFM_MAX_PARTS)
            return dfm__error(DFM_ELIMIT, "%s: more than %d parts after flattening", __func__,
                              DFM_MAX_PARTS);
        nt += parts[i]->n_tokens;
        nr += parts[i]->n_reals;
        if (nt > (size_t)INT32_MAX || nr > (size_t)INT32_MAX)
            return dfm__error(DFM_EOVERFLOW, "%s: more than 2^31 - 1 tokens or reals per row",
                              __func__);
    }
    int st = alloc_space(out, mem);
    if (st) return st;
    dfm_space *s = *out;
    for (size_t i = 0; i < n; i++) {
        for (size_t p = 0; p < parts[i]->n_parts; p++) {
            dfm_space_part q = parts[i]->parts[p];
            if (q.kind == DFM_SPACE_DISCRETE) { q.offset = s->n_tokens; s->n_tokens += q.dim; }
            else { q.offset = s->n_reals; s->n_reals += q.dim; }
            s->parts[s->n_parts++] = q;
        }
    }
    return 0;
}

int dfm_space_clone(dfm_space **out, const dfm_space *s, const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!s) return dfm__null(__func__, "s");
    int st = alloc_space(out, mem);
    if (st) return st;
    dfm_allocator m = (*out)->mem;
    **out = *s;
    (*out)->mem = m;
    return 0;
}

void dfm_space_free(dfm_space *s)
{
    if (s) {
        dfm_allocator m = s->mem;
        dfm__free(&m, s);
    }
}

int dfm_space_kind(const dfm_space *s)
{
    if (!s) return 0;
    return s->n_parts == 1 ? s->parts[0].kind : DFM_SPACE_PRODUCT;
}

size_t dfm_space_n_tokens(const dfm_space *s) { return s ? s->n_tokens : 0; }
size_t dfm_space_n_reals(const dfm_space *s) { return s ? s->n_reals : 0; }
size_t dfm_space_n_parts(const dfm_space *s) { return s ? s->n_parts : 0; }

int dfm_space_part_info(const dfm_space *s, size_t part, dfm_space_part *info)
{
    if (!s || !info) return dfm__null(__func__, "s or info");
    if (part >= s->n_parts)
        return dfm__error(DFM_ERANGE, "%s: part %zu does not exist (%zu parts)", __func__, part,
                          s->n_parts);
    *info = s->parts[part];
    return 0;
}

int32_t dfm_space_token_vocab(const dfm_space *s, size_t j)
{
    if (!s || j >= s->n_tokens) return 0;
    return dfm__space_vocab(s, j);
}

int dfm_space_check_tokens(const dfm_space *s, const int32_t *tokens, size_t rows, size_t *bad)
{
    if (!s) return dfm__null(__func__, "s");
    if (!tokens && rows && s->n_tokens) return dfm__null(__func__, "tokens");
    /* Rows outer, parts in token order inner: the first bad token in flat order is reported. */
    for (size_t r = 0; r < rows; r++) {
        for (size_t p = 0; p < s->n_parts; p++) {
            const dfm_space_part *q = &s->parts[p];
            if (q->kind != DFM_SPACE_DISCRETE) continue;
            const int32_t *row = tokens + r * s->n_tokens + q->offset;
            for (size_t j = 0; j < q->dim; j++) {
                if (row[j] < 0 || row[j] >= q->vocab) {
                    if (bad) *bad = r * s->n_tokens + q->offset + j;
                    return dfm__error(DFM_ERANGE, "%s: tokens[row %zu][coord %zu] = %ld is "
                                      "outside [0, %ld)", __func__, r, q->offset + j,
                                      (long)row[j], (long)q->vocab);
                }
            }
        }
    }
    return 0;
}

int32_t dfm_max_vocab(void) { return DFM_MAX_VOCAB; }
int dfm_max_parts(void) { return DFM_MAX_PARTS; }
