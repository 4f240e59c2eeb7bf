/* Fault injection (docs/reliability.md): every create and run path is driven with an allocator
 * that fails its n-th allocation, n = 1, 2, ... until the call succeeds, and every call that runs
 * host callbacks with a callback failing at its k-th call, k = 1, 2, ... Each injected failure
 * must give the documented status (DFM_ENOMEM / DFM_ECALLBACK), report the raw callback value,
 * leave the outputs unwritten and leak nothing.
 *
 * Modules plug in without editing this file: tests/fault/<module>.h defines its scenario
 * functions and the macros FAULT_ALLOC_<MODULE> / FAULT_CB_<MODULE> (table entries); the
 * includes and table slots below pick them up when the file exists. */
#include "testutil.h"
#include "fault/fault.h"

#include <math.h>
#include <stdio.h>

#if defined(__has_include)
#  if __has_include("fault/discrete.h")
#    include "fault/discrete.h"
#  endif
#  if __has_include("fault/dloss.h")
#    include "fault/dloss.h"
#  endif
#  if __has_include("fault/continuous.h")
#    include "fault/continuous.h"
#  endif
#  if __has_include("fault/ctmc.h")
#    include "fault/ctmc.h"
#  endif
#  if __has_include("fault/gm.h")
#    include "fault/gm.h"
#  endif
#  if __has_include("fault/extra.h")
#    include "fault/extra.h"
#  endif
#endif

/* ---------------- foundation: allocation scenarios ---------------- */

static int sc_space_discrete(fx *f)
{
    FX_DECL;
    dfm_space *s;
    FX_POISON_OUT(s);
    int st = FX_CALL(f, dfm_space_create_discrete(&s, 7, 5, &f->mem));
    fx_check_out(f, st, s);
    if (!st) ck_assert_uint_eq(dfm_space_n_tokens(s), 5);
    dfm_space_free(s);
    return st;
}

static int sc_space_euclidean(fx *f)
{
    FX_DECL;
    dfm_space *s;
    FX_POISON_OUT(s);
    int st = FX_CALL(f, dfm_space_create_euclidean(&s, 3, &f->mem));
    fx_check_out(f, st, s);
    dfm_space_free(s);
    return st;
}

static int sc_space_product(fx *f)
{
    FX_DECL;
    dfm_space *a = NULL, *b = NULL, *p;
    ck_assert_int_eq(dfm_space_create_discrete(&a, 4, 2, &f->mem), 0);
    ck_assert_int_eq(dfm_space_create_euclidean(&b, 3, &f->mem), 0);
    const dfm_space *parts[2] = {a, b};
    FX_POISON_OUT(p);
    int st = FX_CALL(f, dfm_space_create_product(&p, parts, 2, &f->mem));
    fx_check_out(f, st, p);
    if (!st) ck_assert_uint_eq(dfm_space_n_parts(p), 2);
    dfm_space_free(a);
    dfm_space_free(b);
    dfm_space_free(p);
    return st;
}

static int sc_space_clone(fx *f)
{
    FX_DECL;
    dfm_space *a = NULL, *c;
    ck_assert_int_eq(dfm_space_create_discrete(&a, 9, 4, NULL), 0);
    FX_POISON_OUT(c);
    int st = FX_CALL(f, dfm_space_clone(&c, a, &f->mem));
    fx_check_out(f, st, c);
    dfm_space_free(a);
    dfm_space_free(c);
    return st;
}

static int sched_const(double t, dfm_sched_values *v, void *u)
{
    (void)u;
    v->alpha = t; v->sigma = 1.0 - t; v->d_alpha = 1.0; v->d_sigma = -1.0;
    return 0;
}

/* Creates a scheduler of the given kind with the counting allocator. */
static int sched_create(fx *f, int kind, dfm_scheduler **s)
{
    switch (kind) {
    case DFM_SCHED_CONDOT: return dfm_scheduler_create_condot(s, &f->mem);
    case DFM_SCHED_POLYNOMIAL: return dfm_scheduler_create_polynomial(s, 2.5, &f->mem);
    case DFM_SCHED_COSINE: return dfm_scheduler_create_cosine(s, &f->mem);
    case DFM_SCHED_LINEAR_VP: return dfm_scheduler_create_linear_vp(s, &f->mem);
    case DFM_SCHED_VP: return dfm_scheduler_create_vp(s, 0.1, 20.0, &f->mem);
    default: return dfm_scheduler_create_custom(s, sched_const, NULL, NULL, &f->mem);
    }
}

static int sc_sched(fx *f, int kind)
{
    FX_DECL;
    dfm_scheduler *s;
    FX_POISON_OUT(s);
    int st = FX_CALL(f, sched_create(f, kind, &s));
    fx_check_out(f, st, s);
    if (!st) ck_assert_int_eq(dfm_scheduler_kind(s), kind);
    dfm_scheduler_free(s);
    return st;
}
static int sc_sched_condot(fx *f) { return sc_sched(f, DFM_SCHED_CONDOT); }
static int sc_sched_polynomial(fx *f) { return sc_sched(f, DFM_SCHED_POLYNOMIAL); }
static int sc_sched_cosine(fx *f) { return sc_sched(f, DFM_SCHED_COSINE); }
static int sc_sched_linear_vp(fx *f) { return sc_sched(f, DFM_SCHED_LINEAR_VP); }
static int sc_sched_vp(fx *f) { return sc_sched(f, DFM_SCHED_VP); }
static int sc_sched_custom(fx *f) { return sc_sched(f, DFM_SCHED_CUSTOM); }

static int sc_sched_clone(fx *f)
{
    FX_DECL;
    dfm_scheduler *a = NULL, *c;
    ck_assert_int_eq(dfm_scheduler_create_vp(&a, 0.5, 10.0, NULL), 0);
    FX_POISON_OUT(c);
    int st = FX_CALL(f, dfm_scheduler_clone(&c, a, &f->mem));
    fx_check_out(f, st, c);
    if (!st) {
        dfm_sched_values v1, v2;
        ck_assert_int_eq(dfm_scheduler_eval(a, 0.3, &v1, NULL), 0);
        ck_assert_int_eq(dfm_scheduler_eval(c, 0.3, &v2, NULL), 0);
        ck_assert(v1.alpha == v2.alpha && v1.sigma == v2.sigma);
    }
    dfm_scheduler_free(a);
    dfm_scheduler_free(c);
    return st;
}

/* ---------------- foundation: callback scenarios ---------------- */

static int sched_ticking(double t, dfm_sched_values *v, void *u)
{
    int r = fx_tick((fx *)u);
    if (r) return r;
    return sched_const(t, v, NULL);
}

static int sched_inverse_ticking(double k, double *t, void *u)
{
    int r = fx_tick((fx *)u);
    if (r) return r;
    *t = k;
    return 0;
}

/* A custom scheduler evaluated on a grid of times: the k-th evaluation fails. */
static int sc_cb_sched_eval(fx *f)
{
    dfm_scheduler *s = NULL;
    ck_assert_int_eq(dfm_scheduler_create_custom(&s, sched_ticking, sched_inverse_ticking, f,
                                                 &f->mem), 0);
    int st = 0;
    fx_arm(f);
    for (int i = 0; i <= 8 && st == 0; i++) {
        dfm_sched_values v;
        memset(&v, 0xa5, sizeof v);
        int raw = 0;
        st = dfm_scheduler_eval(s, i / 8.0, &v, &raw);
        if (st) {
            ck_assert_msg(fx_unchanged(&v, sizeof v), "%s: output written on failure", f->name);
            f->raw_seen = raw;
        } else {
            ck_assert(v.alpha == i / 8.0);
        }
    }
    fx_disarm(f);
    dfm_scheduler_free(s);
    return st;
}

static int sc_cb_sched_inverse(fx *f)
{
    dfm_scheduler *s = NULL;
    ck_assert_int_eq(dfm_scheduler_create_custom(&s, sched_ticking, sched_inverse_ticking, f,
                                                 &f->mem), 0);
    int st = 0;
    fx_arm(f);
    for (int i = 0; i <= 4 && st == 0; i++) {
        double t = -42.0;
        int raw = 0;
        st = dfm_scheduler_kappa_inverse(s, i / 4.0, &t, &raw);
        if (st) {
            ck_assert_msg(t == -42.0, "%s: output written on failure", f->name);
            f->raw_seen = raw;
        }
    }
    fx_disarm(f);
    dfm_scheduler_free(s);
    return st;
}

/* ---------------- tables ---------------- */

static const fx_scenario alloc_scenarios[] = {
    {"space_create_discrete", sc_space_discrete, 1, 0, 0},
    {"space_create_euclidean", sc_space_euclidean, 1, 0, 0},
    {"space_create_product", sc_space_product, 1, 0, 0},
    {"space_clone", sc_space_clone, 1, 0, 0},
    {"scheduler_create_condot", sc_sched_condot, 1, 0, 0},
    {"scheduler_create_polynomial", sc_sched_polynomial, 1, 0, 0},
    {"scheduler_create_cosine", sc_sched_cosine, 1, 0, 0},
    {"scheduler_create_linear_vp", sc_sched_linear_vp, 1, 0, 0},
    {"scheduler_create_vp", sc_sched_vp, 1, 0, 0},
    {"scheduler_create_custom", sc_sched_custom, 1, 0, 0},
    {"scheduler_clone", sc_sched_clone, 1, 0, 0},
    /* discrete module */
#ifdef FAULT_ALLOC_DISCRETE
    FAULT_ALLOC_DISCRETE
#endif
    /* discrete losses */
#ifdef FAULT_ALLOC_DLOSS
    FAULT_ALLOC_DLOSS
#endif
    /* continuous module */
#ifdef FAULT_ALLOC_CONTINUOUS
    FAULT_ALLOC_CONTINUOUS
#endif
    /* rate matrices / CTMC */
#ifdef FAULT_ALLOC_CTMC
    FAULT_ALLOC_CTMC
#endif
    /* generator matching */
#ifdef FAULT_ALLOC_GM
    FAULT_ALLOC_GM
#endif
#ifdef FAULT_ALLOC_EXTRA
    FAULT_ALLOC_EXTRA
#endif
};

static const fx_scenario cb_scenarios[] = {
    {"scheduler_eval_custom", sc_cb_sched_eval, 9, 0, 1},
    {"scheduler_kappa_inverse_custom", sc_cb_sched_inverse, 5, 0, 1},
#ifdef FAULT_CB_DISCRETE
    FAULT_CB_DISCRETE
#endif
#ifdef FAULT_CB_DLOSS
    FAULT_CB_DLOSS
#endif
#ifdef FAULT_CB_CONTINUOUS
    FAULT_CB_CONTINUOUS
#endif
#ifdef FAULT_CB_CTMC
    FAULT_CB_CTMC
#endif
#ifdef FAULT_CB_GM
    FAULT_CB_GM
#endif
#ifdef FAULT_CB_EXTRA
    FAULT_CB_EXTRA
#endif
};

#define N_ALLOC ((int)(sizeof alloc_scenarios / sizeof alloc_scenarios[0]))
#define N_CB ((int)(sizeof cb_scenarios / sizeof cb_scenarios[0]))

/* Safety bound: a scenario that still fails after this many points is itself broken. */
#define FX_MAX_POINTS 200000L

/* ---------------- drivers ---------------- */

/* Fails the n-th allocation of the call, n = 1, 2, ... until it succeeds with none failed. */
START_TEST(alloc_failure_every_point)
{
    const fx_scenario *sc = &alloc_scenarios[_i];
    int expect = sc->expect ? sc->expect : DFM_ENOMEM;
    fx f;
    long n;
    for (n = 1; n <= FX_MAX_POINTS; n++) {
        fx_reset(&f, sc->name);
        f.fail_at = n;
        int st = sc->fn(&f);
        ck_assert_msg(f.live == 0, "%s: %ld allocations leaked (fail at %ld, status %d)",
                      sc->name, f.live, n, st);
        if (!f.alloc_injected) {
            ck_assert_msg(st == DFM_OK, "%s: status %d without an injected failure", sc->name, st);
            ck_assert_msg(f.armed_allocs == n - 1, "%s: %ld allocations on success, expected %ld",
                          sc->name, f.armed_allocs, n - 1);
            break;
        }
        ck_assert_msg(st == expect, "%s: allocation %ld failed, status %d (%s), expected %d",
                      sc->name, n, st, dfm_strerror(st), expect);
    }
    ck_assert_msg(n <= FX_MAX_POINTS, "%s: never succeeds", sc->name);
    if (getenv("DFM_FAULT_VERBOSE")) printf("alloc %-48s %ld points\n", sc->name, n - 1);
    ck_assert_msg(n - 1 >= sc->min_points, "%s: %ld allocation points, expected at least %ld",
                  sc->name, n - 1, sc->min_points);
}
END_TEST

/* Fails the k-th callback call, k = 1, 2, ... until the operation completes. */
START_TEST(callback_failure_every_call)
{
    const fx_scenario *sc = &cb_scenarios[_i];
    int expect = sc->expect ? sc->expect : DFM_ECALLBACK;
    fx f;
    long k;
    for (k = 1; k <= FX_MAX_POINTS; k++) {
        fx_reset(&f, sc->name);
        f.cb_fail_at = k;
        int st = sc->fn(&f);
        ck_assert_msg(f.live == 0, "%s: %ld allocations leaked (callback %ld failed)", sc->name,
                      f.live, k);
        if (!f.cb_injected) {
            ck_assert_msg(st == DFM_OK, "%s: status %d without a failing callback", sc->name, st);
            break;
        }
        ck_assert_msg(st == expect, "%s: callback %ld failed, status %d (%s), expected %d",
                      sc->name, k, st, dfm_strerror(st), expect);
        if (sc->check_raw)
            ck_assert_msg(f.raw_seen == f.cb_raw, "%s: raw value %d reported, callback returned %d",
                          sc->name, f.raw_seen, f.cb_raw);
        ck_assert_msg(f.ticks_after_failure == 0, "%s: %ld callback calls after the failure",
                      sc->name, f.ticks_after_failure);
    }
    ck_assert_msg(k <= FX_MAX_POINTS, "%s: never completes", sc->name);
    if (getenv("DFM_FAULT_VERBOSE")) printf("callback %-45s %ld calls\n", sc->name, k - 1);
    ck_assert_msg(k - 1 >= sc->min_points, "%s: %ld callback calls, expected at least %ld",
                  sc->name, k - 1, sc->min_points);
}
END_TEST

/* The fixture itself: a deliberate leak and a wrong status are caught. */
static int sc_selftest_leak(fx *f)
{
    FX_DECL;
    dfm_space *s = NULL;
    int st = FX_CALL(f, dfm_space_create_discrete(&s, 3, 2, &f->mem));
    f->user = s; /* not freed: the fixture must see it live */
    return st;
}

START_TEST(fixture_detects_leaks)
{
    fx f;
    fx_reset(&f, "selftest");
    f.fail_at = 2; /* beyond the single allocation: the call succeeds */
    ck_assert_int_eq(sc_selftest_leak(&f), 0);
    ck_assert_int_eq(f.alloc_injected, 0);
    ck_assert_int_eq(f.live, 1);
    dfm_space_free((dfm_space *)f.user);
    ck_assert_int_eq(f.live, 0);
    fx_reset(&f, "selftest");
    f.fail_at = 1;
    ck_assert_int_eq(sc_selftest_leak(&f), DFM_ENOMEM);
    ck_assert_int_eq(f.alloc_injected, 1);
    ck_assert_int_eq(f.live, 0);
    /* fx_tick fails exactly the k-th armed call and counts later ones. */
    fx_reset(&f, "selftest");
    f.cb_fail_at = 2;
    ck_assert_int_eq(fx_tick(&f), 0); /* not armed */
    fx_arm(&f);
    ck_assert_int_eq(fx_tick(&f), 0);
    ck_assert_int_eq(fx_tick(&f), fx_raw_for(2));
    ck_assert_int_eq(fx_tick(&f), 0);
    ck_assert_int_eq(f.ticks_after_failure, 1);
}
END_TEST

/* A custom allocator that is half set is rejected everywhere, before any allocation. */
START_TEST(half_allocator_rejected)
{
    dfm_allocator half = {fx_alloc, NULL, NULL};
    dfm_space *s;
    FX_POISON_OUT(s);
    ck_assert_int_eq(dfm_space_create_discrete(&s, 3, 2, &half), DFM_EINVAL);
    ck_assert_ptr_null(s);
    dfm_scheduler *c;
    FX_POISON_OUT(c);
    ck_assert_int_eq(dfm_scheduler_create_cosine(&c, &half), DFM_EINVAL);
    ck_assert_ptr_null(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("faults");
    TCase *tc = tu_tcase("faults");
    tcase_add_test(tc, fixture_detects_leaks);
    tcase_add_test(tc, half_allocator_rejected);
    tcase_add_loop_test(tc, alloc_failure_every_point, 0, N_ALLOC);
    tcase_add_loop_test(tc, callback_failure_every_call, 0, N_CB);
    suite_add_tcase(s, tc);
    return tu_run(s) ? EXIT_FAILURE : EXIT_SUCCESS;
}
