/* Core: versions, status strings, allocators, spaces, schedulers and the generic handles. */
#include "testutil.h"

#include <stdio.h>

START_TEST(version_agrees)
{
    ck_assert_uint_eq(dfm_version_number(), DFM_VERSION_NUMBER);
    ck_assert_str_eq(dfm_version_string(), DFM_VERSION_STRING);
    char buf[32];
    snprintf(buf, sizeof buf, "%d.%d.%d", DFM_VERSION_MAJOR, DFM_VERSION_MINOR, DFM_VERSION_PATCH);
    ck_assert_str_eq(buf, dfm_version_string());
}
END_TEST

START_TEST(strerror_every_code)
{
    ck_assert_int_eq(dfm_status_count(), DFM_STATUS_COUNT);
    for (int c = 0; c < DFM_STATUS_COUNT; c++) {
        const char *m = dfm_strerror(c);
        ck_assert_ptr_nonnull(m);
        ck_assert_msg(strlen(m) > 3, "code %d", c);
        ck_assert_str_ne(m, "unknown status code");
        for (int d = 0; d < c; d++) ck_assert_str_ne(m, dfm_strerror(d));
    }
    ck_assert_str_eq(dfm_strerror(-1), "unknown status code");
    ck_assert_str_eq(dfm_strerror(DFM_STATUS_COUNT), "unknown status code");
    ck_assert_str_eq(dfm_strerror(1 << 30), "unknown status code");
}
END_TEST

/* A counting allocator that can fail the n-th allocation. */
typedef struct counting { long allocs, frees, fail_at; } counting;
static void *c_alloc(size_t n, void *op)
{
    counting *c = (counting *)op;
    if (c->fail_at && c->allocs + 1 == c->fail_at) return NULL;
    c->allocs++;
    return malloc(n);
}
static void c_free(void *p, void *op) { ((counting *)op)->frees++; free(p); }

START_TEST(allocator_is_used_and_balanced)
{
    counting c = {0, 0, 0};
    dfm_allocator a = {c_alloc, c_free, &c};
    dfm_space *sp = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, 4, 3, &a), 0);
    dfm_scheduler *s = NULL;
    ck_assert_int_eq(dfm_scheduler_create_cosine(&s, &a), 0);
    ck_assert_int_gt(c.allocs, 1);
    dfm_space_free(sp);
    dfm_scheduler_free(s);
    ck_assert_int_eq(c.allocs, c.frees);
    /* A failing allocator: DFM_ENOMEM and *out NULL. */
    c.fail_at = c.allocs + 1;
    sp = (dfm_space *)&c;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, 4, 3, &a), DFM_ENOMEM);
    ck_assert_ptr_null(sp);
    /* A half-set allocator is rejected. */
    dfm_allocator bad = {c_alloc, NULL, &c};
    ck_assert_int_eq(dfm_space_create_discrete(&sp, 4, 3, &bad), DFM_EINVAL);
    ck_assert_ptr_null(sp);
}
END_TEST

START_TEST(space_layouts)
{
    dfm_space *d = NULL, *e = NULL, *p = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&d, 10, 3, NULL), 0);
    ck_assert_int_eq(dfm_space_create_euclidean(&e, 2, NULL), 0);
    const dfm_space *parts[3] = {d, e, d};
    ck_assert_int_eq(dfm_space_create_product(&p, parts, 3, NULL), 0);
    dfm_space_free(d);
    dfm_space_free(e);
    ck_assert_int_eq(dfm_space_kind(p), DFM_SPACE_PRODUCT);
    ck_assert_uint_eq(dfm_space_n_tokens(p), 6);
    ck_assert_uint_eq(dfm_space_n_reals(p), 2);
    ck_assert_uint_eq(dfm_space_n_parts(p), 3);
    dfm_space_part info;
    ck_assert_int_eq(dfm_space_part_info(p, 2, &info), 0);
    ck_assert_int_eq(info.kind, DFM_SPACE_DISCRETE);
    ck_assert_uint_eq(info.offset, 3);
    ck_assert_int_eq(dfm_space_part_info(p, 3, &info), DFM_ERANGE);
    ck_assert_int_eq(dfm_space_token_vocab(p, 5), 10);
    ck_assert_int_eq(dfm_space_token_vocab(p, 6), 0);
    int32_t tok[12] = {0, 1, 2, 3, 4, 5, 9, 9, 9, 9, 10, 0};
    size_t bad = 0;
    ck_assert_int_eq(dfm_space_check_tokens(p, tok, 1, &bad), 0);
    ck_assert_int_eq(dfm_space_check_tokens(p, tok, 2, &bad), DFM_ERANGE);
    ck_assert_uint_eq(bad, 10);
    dfm_space_free(p);
    /* Bad input. */
    dfm_space *x = (dfm_space *)1;
    ck_assert_int_eq(dfm_space_create_discrete(&x, 1, 3, NULL), DFM_EINVAL);
    ck_assert_ptr_null(x);
    ck_assert_int_eq(dfm_space_create_discrete(&x, 4, 0, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_space_create_euclidean(&x, 0, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_space_create_product(&x, NULL, 1, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_space_create_discrete(NULL, 4, 3, NULL), DFM_EINVAL);
    ck_assert_uint_eq(dfm_space_n_tokens(NULL), 0);
    dfm_space_free(NULL);
}
END_TEST

/* Derivatives by central differences and the closed forms at a few points. */
static void check_sched(dfm_scheduler *s, double a0, double a1)
{
    dfm_sched_values v, vp, vm;
    ck_assert_int_eq(dfm_scheduler_eval(s, 0.0, &v, NULL), 0);
    ck_assert_double_eq_tol(v.alpha, a0, 1e-12);
    ck_assert_int_eq(dfm_scheduler_eval(s, 1.0, &v, NULL), 0);
    ck_assert_double_eq_tol(v.alpha, a1, 1e-12);
    for (double t = 0.05; t < 0.96; t += 0.1) {
        const double h = 1e-6;
        ck_assert_int_eq(dfm_scheduler_eval(s, t, &v, NULL), 0);
        ck_assert_int_eq(dfm_scheduler_eval(s, t + h, &vp, NULL), 0);
        ck_assert_int_eq(dfm_scheduler_eval(s, t - h, &vm, NULL), 0);
        ck_assert_double_eq_tol(v.d_alpha, (vp.alpha - vm.alpha) / (2 * h), 1e-6);
        ck_assert_double_eq_tol(v.d_sigma, (vp.sigma - vm.sigma) / (2 * h), 1e-6);
        double back;
        if (dfm_scheduler_kappa_inverse(s, v.alpha, &back, NULL) == 0)
            ck_assert_double_eq_tol(back, t, 1e-9);
    }
    ck_assert_int_eq(dfm_scheduler_eval(s, 1.5, &v, NULL), DFM_ERANGE);
    ck_assert_int_eq(dfm_scheduler_eval(s, -0.1, &v, NULL), DFM_ERANGE);
    ck_assert_int_eq(dfm_scheduler_eval(s, NAN, &v, NULL), DFM_ERANGE);
}

static int my_sched(double t, dfm_sched_values *o, void *u)
{
    if (t > 0.99 && u) return 42;
    o->alpha = t * t; o->sigma = 1 - t * t; o->d_alpha = 2 * t; o->d_sigma = -2 * t;
    return 0;
}

START_TEST(schedulers_closed_forms)
{
    dfm_scheduler *s;
    ck_assert_int_eq(dfm_scheduler_create_condot(&s, NULL), 0);
    check_sched(s, 0, 1);
    dfm_scheduler_free(s);
    ck_assert_int_eq(dfm_scheduler_create_polynomial(&s, 3.0, NULL), 0);
    check_sched(s, 0, 1);
    dfm_sched_values v;
    dfm_scheduler_eval(s, 0.5, &v, NULL);
    ck_assert_double_eq_tol(v.alpha, 0.125, 1e-15);
    ck_assert_double_eq_tol(v.d_alpha, 0.75, 1e-15);
    dfm_scheduler_free(s);
    ck_assert_int_eq(dfm_scheduler_create_cosine(&s, NULL), 0);
    check_sched(s, 0, 1);
    dfm_scheduler_free(s);
    ck_assert_int_eq(dfm_scheduler_create_linear_vp(&s, NULL), 0);
    check_sched(s, 0, 1);
    dfm_scheduler_eval(s, 0.6, &v, NULL);
    ck_assert_double_eq_tol(v.sigma, 0.8, 1e-15);
    dfm_scheduler_free(s);
    ck_assert_int_eq(dfm_scheduler_create_vp(&s, 0.1, 20.0, NULL), 0);
    check_sched(s, exp(-0.5 * (0.5 * 19.9 + 0.1)), 1);
    dfm_scheduler_free(s);
    ck_assert_int_eq(dfm_scheduler_create_custom(&s, my_sched, NULL, NULL, NULL), 0);
    check_sched(s, 0, 1);
    double back;
    ck_assert_int_eq(dfm_scheduler_kappa_inverse(s, 0.5, &back, NULL), DFM_EUNSUPPORTED);
    dfm_scheduler_free(s);
    int raw = 0, dummy = 1;
    ck_assert_int_eq(dfm_scheduler_create_custom(&s, my_sched, NULL, &dummy, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_eval(s, 0.995, &v, &raw), DFM_ECALLBACK);
    ck_assert_int_eq(raw, 42);
    dfm_scheduler *c;
    ck_assert_int_eq(dfm_scheduler_clone(&c, s, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_kind(c), DFM_SCHED_CUSTOM);
    dfm_scheduler_free(s);
    ck_assert_int_eq(dfm_scheduler_eval(c, 0.5, &v, NULL), 0);
    dfm_scheduler_free(c);
    /* Bad parameters. */
    s = (dfm_scheduler *)1;
    ck_assert_int_eq(dfm_scheduler_create_polynomial(&s, -1.0, NULL), DFM_EINVAL);
    ck_assert_ptr_null(s);
    ck_assert_int_eq(dfm_scheduler_create_polynomial(&s, NAN, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_scheduler_create_vp(&s, 5.0, 1.0, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_scheduler_create_custom(&s, NULL, NULL, NULL, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_scheduler_eval(NULL, 0.5, &v, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_scheduler_kind(NULL), 0);
    dfm_scheduler_free(NULL);
}
END_TEST

START_TEST(generic_handles_reject_null)
{
    ck_assert_int_eq(dfm_path_kind(NULL), 0);
    ck_assert_ptr_nonnull(dfm_path_last_error(NULL));
    ck_assert_ptr_nonnull(dfm_sampler_last_error(NULL));
    ck_assert_ptr_nonnull(dfm_loss_last_error(NULL));
    ck_assert_ptr_nonnull(dfm_generator_last_error(NULL));
    ck_assert_int_eq(dfm_path_sample(NULL, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_sampler_run(NULL, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_loss_eval(NULL, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_sampler_set_steps(NULL, 3), DFM_EINVAL);
    dfm_sampler *s = (dfm_sampler *)1;
    ck_assert_int_eq(dfm_sampler_create(&s, NULL, DFM_METHOD_EULER, NULL), DFM_EINVAL);
    ck_assert_ptr_null(s);
    dfm_path_free(NULL);
    dfm_generator_free(NULL);
    dfm_loss_free(NULL);
    dfm_sampler_free(NULL);
    ck_assert_uint_eq(dfm_generator_out_stride(NULL), 0);
    ck_assert_int_eq(dfm_max_threads(), DFM_MAX_THREADS);
    ck_assert_int_eq(dfm_max_vocab(), DFM_MAX_VOCAB);
    ck_assert_int_eq(dfm_max_parts(), DFM_MAX_PARTS);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("core");
    TCase *tc = tu_tcase("core");
    tcase_add_test(tc, version_agrees);
    tcase_add_test(tc, strerror_every_code);
    tcase_add_test(tc, allocator_is_used_and_balanced);
    tcase_add_test(tc, space_layouts);
    tcase_add_test(tc, schedulers_closed_forms);
    tcase_add_test(tc, generic_handles_reject_null);
    suite_add_tcase(s, tc);
    return tu_run(s) ? 1 : 0;
}
