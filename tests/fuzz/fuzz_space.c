/* libFuzzer harness: spaces. The input is a program of operations on a pool of spaces (create
 * discrete / Euclidean / product with arbitrary sizes, clone, free, queries, token checks), run
 * with an allocator that fails where the input says. Invariants: documented statuses only, *out
 * NULL on failure, sizes consistent with the parts, dfm_space_check_tokens agrees with a direct
 * check, no leak (LeakSanitizer and the allocator's live count). */
#include "fuzz_input.h"

#define POOL 8

static void check_space(const dfm_space *s)
{
    size_t n = dfm_space_n_parts(s), nt = 0, nr = 0;
    FZ_ASSERT(n >= 1 && n <= DFM_MAX_PARTS);
    int kind = dfm_space_kind(s);
    FZ_ASSERT(n == 1 ? (kind == DFM_SPACE_DISCRETE || kind == DFM_SPACE_EUCLIDEAN)
                     : kind == DFM_SPACE_PRODUCT);
    for (size_t p = 0; p < n; p++) {
        dfm_space_part q;
        FZ_ASSERT(dfm_space_part_info(s, p, &q) == 0);
        FZ_ASSERT(q.dim >= 1);
        if (q.kind == DFM_SPACE_DISCRETE) {
            FZ_ASSERT(q.vocab >= 2 && q.vocab <= DFM_MAX_VOCAB);
            FZ_ASSERT(q.offset == nt);
            nt += q.dim;
        } else {
            FZ_ASSERT(q.kind == DFM_SPACE_EUCLIDEAN && q.vocab == 0);
            FZ_ASSERT(q.offset == nr);
            nr += q.dim;
        }
    }
    FZ_ASSERT(nt == dfm_space_n_tokens(s));
    FZ_ASSERT(nr == dfm_space_n_reals(s));
    dfm_space_part q;
    FZ_ASSERT(dfm_space_part_info(s, n, &q) == DFM_ERANGE);
    FZ_ASSERT(dfm_space_part_info(s, 0, NULL) == DFM_EINVAL);
    FZ_ASSERT(dfm_space_token_vocab(s, nt) == 0);
}

/* Direct check of rows x n_tokens tokens, the reference for dfm_space_check_tokens. */
static int ref_check(const dfm_space *s, const int32_t *tok, size_t rows, size_t *bad)
{
    size_t nt = dfm_space_n_tokens(s);
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < rows * nt; i++) {
        int32_t v = dfm_space_token_vocab(s, i % nt);
        if (tok[i] < 0 || tok[i] >= v) { best = i; break; }
    }
    *bad = best;
    return best == SIZE_MAX ? 0 : DFM_ERANGE;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz in;
    fz_init(&in, data, size);
    in.fail_mask = fz_u8(&in) < 32 ? fz_u64(&in) : 0;
    dfm_allocator mem = fz_allocator(&in);
    dfm_space *pool[POOL] = {NULL};
    int32_t tokens[256];

    for (int op = 0; op < 64 && !fz_empty(&in); op++) {
        int slot = (int)fz_below(&in, POOL);
        const dfm_allocator *m = fz_u8(&in) & 1 ? &mem : NULL;
        dfm_space *s = (dfm_space *)&in; /* poison: must become NULL on failure */
        int st = -1;
        switch (fz_u8(&in) % 8) {
        case 0: {
            int32_t vocab = (int32_t)fz_int(&in, -2, 300);
            size_t d = fz_size(&in, 40);
            st = dfm_space_create_discrete(&s, vocab, d, m);
            if (st == 0) FZ_ASSERT(vocab >= 2 && vocab <= DFM_MAX_VOCAB && d >= 1);
            else if (vocab >= 2 && vocab <= DFM_MAX_VOCAB && d >= 1 && d <= INT32_MAX)
                FZ_ASSERT(st == DFM_ENOMEM);
            break;
        }
        case 1: {
            size_t d = fz_size(&in, 40);
            st = dfm_space_create_euclidean(&s, d, m);
            if (st == 0) FZ_ASSERT(d >= 1);
            break;
        }
        case 2: {
            const dfm_space *parts[POOL];
            size_t n = fz_below(&in, POOL + 1), expect_parts = 0, sum_t = 0, sum_r = 0;
            int has_null = 0;
            for (size_t i = 0; i < n; i++) {
                parts[i] = pool[fz_below(&in, POOL)];
                if (!parts[i]) has_null = 1;
                else {
                    expect_parts += dfm_space_n_parts(parts[i]);
                    sum_t += dfm_space_n_tokens(parts[i]);
                    sum_r += dfm_space_n_reals(parts[i]);
                }
            }
            st = dfm_space_create_product(&s, n ? parts : NULL, n, m);
            if (n == 0) FZ_ASSERT(st == DFM_EINVAL);
            else if (has_null) /* a limit met before the NULL part may be reported first */
                FZ_ASSERT(st == DFM_EINVAL || st == DFM_ELIMIT || st == DFM_EOVERFLOW);
            else if (st == DFM_ELIMIT) FZ_ASSERT(expect_parts > DFM_MAX_PARTS);
            else if (st == DFM_EOVERFLOW) FZ_ASSERT(sum_t > INT32_MAX || sum_r > INT32_MAX);
            else if (st) FZ_ASSERT(st == DFM_ENOMEM);
            if (st == 0) {
                FZ_ASSERT(expect_parts <= DFM_MAX_PARTS && sum_t <= INT32_MAX && sum_r <= INT32_MAX);
                FZ_ASSERT(dfm_space_n_parts(s) == expect_parts);
                FZ_ASSERT(dfm_space_n_tokens(s) == sum_t && dfm_space_n_reals(s) == sum_r);
            }
            break;
        }
        case 3: {
            const dfm_space *src = pool[fz_below(&in, POOL)];
            st = dfm_space_clone(&s, src, m);
            if (!src) FZ_ASSERT(st == DFM_EINVAL);
            if (st == 0) {
                FZ_ASSERT(dfm_space_n_parts(s) == dfm_space_n_parts(src));
                FZ_ASSERT(dfm_space_n_tokens(s) == dfm_space_n_tokens(src));
            }
            break;
        }
        case 4:
            dfm_space_free(pool[slot]);
            pool[slot] = NULL;
            continue;
        case 5: {
            const dfm_space *q = pool[slot];
            size_t nt = dfm_space_n_tokens(q);
            size_t cap = sizeof tokens / sizeof tokens[0];
            size_t rows = nt && nt <= cap ? fz_below(&in, cap / nt + 1) : fz_below(&in, 2);
            if (nt > cap) rows = 0;
            for (size_t i = 0; i < rows * nt; i++) tokens[i] = (int32_t)fz_int(&in, -1, 8);
            size_t bad = SIZE_MAX, rbad = SIZE_MAX;
            int32_t copy[256];
            memcpy(copy, tokens, sizeof copy);
            st = dfm_space_check_tokens(q, rows ? tokens : NULL, rows, &bad);
            FZ_ASSERT(memcmp(copy, tokens, sizeof copy) == 0);
            if (!q) FZ_ASSERT(st == DFM_EINVAL);
            else if (rows && nt) {
                int rst = ref_check(q, tokens, rows, &rbad);
                FZ_ASSERT(st == rst);
                if (st == DFM_ERANGE) {
                    FZ_ASSERT(bad < rows * nt);
                    FZ_ASSERT(bad == rbad); /* the first bad token in flat order */
                    int32_t v = dfm_space_token_vocab(q, bad % nt);
                    FZ_ASSERT(tokens[bad] < 0 || tokens[bad] >= v);
                }
            }
            FZ_STATUS_OK(st);
            continue;
        }
        default: {
            const dfm_space *q = pool[slot];
            if (q) check_space(q);
            else {
                FZ_ASSERT(dfm_space_kind(q) == 0 && dfm_space_n_tokens(q) == 0);
                FZ_ASSERT(dfm_space_n_parts(q) == 0 && dfm_space_n_reals(q) == 0);
            }
            dfm_space_part info;
            st = dfm_space_part_info(q, fz_size(&in, 70), &info);
            FZ_STATUS_OK(st);
            (void)dfm_space_token_vocab(q, fz_size(&in, 70));
            continue;
        }
        }
        FZ_STATUS_OK(st);
        if (st) {
            FZ_ASSERT(s == NULL);
        } else {
            FZ_ASSERT(s != NULL);
            check_space(s);
            dfm_space_free(pool[slot]);
            pool[slot] = s;
        }
    }
    for (int i = 0; i < POOL; i++) dfm_space_free(pool[i]);
    FZ_ASSERT(in.live == 0);
    return 0;
}
