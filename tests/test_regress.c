/* Regressions: one test per bug found by the sanitizers, fault injection or fuzzing
 * (docs/reliability.md). Each names the harness or target that found it. */
#include "testutil.h"

/* fuzz_space: dfm_space_check_tokens reported the first bad token of the first discrete part
 * over all rows instead of the first bad token in flat order, when a product space has two
 * discrete parts and an earlier row is bad in the later part. */
START_TEST(check_tokens_reports_first_bad_in_flat_order)
{
    dfm_space *a = NULL, *b = NULL, *p = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&a, 3, 2, NULL), 0);
    ck_assert_int_eq(dfm_space_create_discrete(&b, 5, 1, NULL), 0);
    const dfm_space *parts[2] = {a, b};
    ck_assert_int_eq(dfm_space_create_product(&p, parts, 2, NULL), 0);
    /* row 0: part a ok, part b bad (flat 2); row 1: part a bad (flat 3). */
    const int32_t tok[6] = {0, 2, 7, 3, 0, 1};
    size_t bad = 99;
    ck_assert_int_eq(dfm_space_check_tokens(p, tok, 2, &bad), DFM_ERANGE);
    ck_assert_uint_eq(bad, 2);
    dfm_space_free(p);
    dfm_space_free(b);
    dfm_space_free(a);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("regress");
    TCase *tc = tu_tcase("regress");
    tcase_add_test(tc, check_tokens_reports_first_bad_in_flat_order);
    suite_add_tcase(s, tc);
    return tu_run(s) ? EXIT_FAILURE : EXIT_SUCCESS;
}
