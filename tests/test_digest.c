/* Same samples everywhere (docs/promises.md): fixed sampler configurations whose outputs are
 * compared with the reference committed in tests/digests.h. Tokens must be identical (a 64-bit
 * FNV-1a digest of every token, saved state and jump count); reals are stored whole and must
 * agree within the ULP bound stated beside each entry. The same reference holds for x86-64 with
 * gcc and clang, with the AVX kernels and with the portable ones (test_digest_portable links a
 * copy of the library built with -DDFM_NO_CLONES), and for aarch64 under qemu-user
 * (make check-aarch64); each configuration runs with 1 and 2 threads.
 *
 * The models use float and double arithmetic only (no libm), so the reference does not depend
 * on the C library of the test itself. After an intended change of the samples, regenerate the
 * reference with `DFM_DIGEST_PRINT=1 _build/tests/test_digest > tests/digests.h` and say why in
 * the commit. */
#include "testutil.h"

#include <stdint.h>
#include <stdio.h>

typedef struct dg_tokens { const char *name; uint64_t digest; } dg_tokens;
typedef struct dg_reals {
    const char *name;
    int ulp_bound;       /* largest allowed distance in units in the last place, per value */
    size_t n;
    const float *values;
    int64_t steps;       /* DFM_STAT_STEPS of the run, exact */
} dg_reals;

/* ULP bounds (docs/promises.md): RK4 sees no libm call, so its reals are bit-identical; DOPRI5's
 * step sizes come from pow, which C libraries may round differently in the last place: a step
 * size one double ulp apart moves a float result by at most a few float ulps (measured: 0 on
 * x86-64 and aarch64 with glibc 2.36). */
#define DG_ULP_RK4 0
#define DG_ULP_DOPRI5 4

#include "digests.h"

static int printing(void) { return getenv("DFM_DIGEST_PRINT") != NULL; }

/* ---- digests ---- */

static uint64_t fnv_u32(uint64_t h, uint32_t v)
{
    for (int k = 0; k < 4; k++) { /* little-endian bytes on every host */
        h ^= (v >> (8 * k)) & 0xFFu;
        h *= 0x100000001B3ULL;
    }
    return h;
}

static uint64_t fnv_tokens(uint64_t h, const int32_t *x, size_t n)
{
    for (size_t i = 0; i < n; i++) h = fnv_u32(h, (uint32_t)x[i]);
    return h;
}

#define FNV_INIT 0xCBF29CE484222325ULL

/* Distance in units in the last place between two finite floats (0 for equal values). */
static int64_t ulp_dist(float a, float b)
{
    int32_t ia, ib;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    int64_t la = ia < 0 ? (int64_t)INT32_MIN - ia : ia; /* monotone in the float's value */
    int64_t lb = ib < 0 ? (int64_t)INT32_MIN - ib : ib;
    return la > lb ? la - lb : lb - la;
}

static void check_tokens(const char *name, uint64_t got)
{
    if (printing()) { printf("    {\"%s\", 0x%016llXULL},\n", name, (unsigned long long)got); return; }
    for (size_t i = 0; i < sizeof dg_tokens_ref / sizeof dg_tokens_ref[0]; i++)
        if (!strcmp(dg_tokens_ref[i].name, name)) {
            ck_assert_msg(got == dg_tokens_ref[i].digest, "%s: token digest 0x%016llX, reference 0x%016llX",
                          name, (unsigned long long)got, (unsigned long long)dg_tokens_ref[i].digest);
            return;
        }
    ck_abort_msg("%s: no reference in tests/digests.h", name);
}

static void print_reals(const char *name, const float *x, size_t n, int64_t steps)
{
    printf("static const float dg_%s[%zu] = {\n", name, n);
    for (size_t i = 0; i < n; i++)
        printf("%s%af,%s", i % 4 ? " " : "    ", (double)x[i], i % 4 == 3 || i + 1 == n ? "\n" : "");
    printf("};\n#define DG_%s_STEPS %lld\n", name, (long long)steps);
}

static void check_reals(const char *name, const float *x, size_t n, int64_t steps)
{
    if (printing()) { print_reals(name, x, n, steps); return; }
    for (size_t i = 0; i < sizeof dg_reals_ref / sizeof dg_reals_ref[0]; i++) {
        const dg_reals *r = &dg_reals_ref[i];
        if (strcmp(r->name, name)) continue;
        ck_assert_uint_eq(n, r->n);
        ck_assert_msg(steps == r->steps, "%s: %lld steps, reference %lld", name, (long long)steps,
                      (long long)r->steps);
        int64_t worst = 0;
        size_t at = 0;
        for (size_t j = 0; j < n; j++) {
            int64_t d = ulp_dist(x[j], r->values[j]);
            if (d > worst) { worst = d; at = j; }
        }
        ck_assert_msg(worst <= r->ulp_bound, "%s: value %zu is %.9g, reference %.9g: %lld ulp (bound %d)",
                      name, at, (double)x[at], (double)r->values[at], (long long)worst, r->ulp_bound);
        return;
    }
    ck_abort_msg("%s: no reference in tests/digests.h", name);
}

/* ---- discrete: mixture path, exact step ---- */

#define DV_MASK 6   /* vocabulary with the mask token 5 */
#define DV_UNIF 7
#define DD 16
#define DROWS 64

/* Logits from integer arithmetic on the row's tokens, the coordinate and the value, and the
 * time: exact in float on every machine. The mask token (if any) gets -inf. */
static int ds_model(const dfm_model_io *io, void *ud)
{
    const int *mask = (const int *)ud;
    int V = (int)(io->out_stride / io->n_tokens);
    for (size_t r = 0; r < io->rows; r++) {
        const int32_t *x = io->tokens + r * io->n_tokens;
        uint32_t s = 0;
        for (size_t i = 0; i < io->n_tokens; i++) s = s * 31u + (uint32_t)x[i];
        float t = (float)io->t[r];
        for (size_t i = 0; i < io->n_tokens; i++)
            for (int y = 0; y < V; y++) {
                uint32_t h = (s ^ (uint32_t)(i * 7u + (size_t)y * 13u)) % 17u;
                float z = (float)h * 0.37f - t * (float)y * 0.5f + (float)((i + (size_t)y) % 3) * t;
                io->out[r * io->out_stride + i * (size_t)V + (size_t)y] = y == *mask ? -INFINITY : z;
            }
    }
    return 0;
}

static uint64_t ds_run(int source, int V, size_t steps, double corrector, int threads)
{
    int mask = source == DFM_SOURCE_MASK ? V - 1 : -1;
    dfm_space *sp = NULL;
    dfm_scheduler *sc = NULL;
    dfm_path *p = NULL;
    dfm_generator *g = NULL;
    dfm_sampler *s = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, V, DD, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_condot(&sc, NULL), 0);
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, sc, source, mask < 0 ? 0 : mask, NULL, NULL), 0);
    ck_assert_int_eq(dfm_generator_create_factorized(&g, p, DFM_PARAM_LOGITS, NULL), 0);
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_EXACT, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_SEED, 20240611), 0);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_THREADS, threads), 0);
    ck_assert_int_eq(dfm_sampler_set_steps(s, steps), 0);
    if (corrector > 0.0) ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_DS_CORRECTOR, corrector), 0);
    int32_t tok[DROWS * DD], saved[2 * DROWS * DD];
    const double st[2] = {0.25, 0.5};
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = ds_model;
    a.model_data = &mask;
    a.rows = DROWS;
    a.tokens = tok;
    a.draw_source = 1;
    a.save_times = st;
    a.n_save = 2;
    a.saved_tokens = saved;
    ck_assert_msg(dfm_sampler_run(s, &a) == 0, "%s", dfm_sampler_last_error(s));
    int64_t jumps = 0;
    ck_assert_int_eq(dfm_sampler_get_stat(s, DFM_STAT_JUMPS, &jumps), 0);
    for (size_t i = 0; i < DROWS * DD; i++) ck_assert(tok[i] >= 0 && tok[i] < V && tok[i] != mask);
    uint64_t h = fnv_tokens(FNV_INIT, tok, DROWS * DD);
    h = fnv_tokens(h, saved, 2 * DROWS * DD);
    h = fnv_u32(fnv_u32(h, (uint32_t)jumps), (uint32_t)((uint64_t)jumps >> 32));
    dfm_sampler_free(s);
    dfm_generator_free(g);
    dfm_path_free(p);
    dfm_scheduler_free(sc);
    dfm_space_free(sp);
    return h;
}

static void ds_case(const char *name, int source, int V, size_t steps, double corrector)
{
    uint64_t h1 = ds_run(source, V, steps, corrector, 1);
    if (!printing()) ck_assert_msg(ds_run(source, V, steps, corrector, 2) == h1, "%s: threads change the samples", name);
    check_tokens(name, h1);
}

START_TEST(discrete_exact_mask) { ds_case("ds_exact_mask", DFM_SOURCE_MASK, DV_MASK, 32, 0.0); }
END_TEST
START_TEST(discrete_exact_uniform) { ds_case("ds_exact_uniform", DFM_SOURCE_UNIFORM, DV_UNIF, 24, 0.0); }
END_TEST
/* the corrector's jump probability 1 - exp(-h lambda) comes from libm's expm1 */
START_TEST(discrete_exact_uniform_corrector) { ds_case("ds_exact_uniform_corr", DFM_SOURCE_UNIFORM, DV_UNIF, 24, 1.0); }
END_TEST

/* ---- continuous: ODE on a closed-form velocity ---- */

#define CD 3
#define CROWS 32

/* x0 ~ N(0, I), x1 ~ N(mu, diag(s^2)), x_t = t x1 + (1 - t) x0: the marginal velocity is
 * mu + (x - t mu) (t s^2 - (1 - t)) / ((1 - t)^2 + t^2 s^2), arithmetic only. */
static int ode_model(const dfm_model_io *io, void *ud)
{
    (void)ud;
    static const double mu[CD] = {1.0, -2.0, 0.5}, s2[CD] = {0.25, 2.25, 1.0};
    for (size_t r = 0; r < io->rows; r++) {
        double t = io->t[r], u = 1.0 - t;
        for (size_t i = 0; i < CD; i++) {
            double x = (double)io->reals[r * CD + i];
            double v = mu[i] + (x - t * mu[i]) * (t * s2[i] - u) / (u * u + t * t * s2[i]);
            io->out[r * io->out_stride + i] = (float)v;
        }
    }
    return 0;
}

static int64_t ode_run(int method, int threads, float *x)
{
    dfm_space *sp = NULL;
    dfm_scheduler *sc = NULL;
    dfm_path *p = NULL;
    dfm_generator *g = NULL;
    dfm_sampler *s = NULL;
    ck_assert_int_eq(dfm_space_create_euclidean(&sp, CD, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_condot(&sc, NULL), 0);
    ck_assert_int_eq(dfm_path_create_affine(&p, sp, sc, NULL), 0);
    ck_assert_int_eq(dfm_generator_create_velocity(&g, p, DFM_PARAM_VELOCITY, NULL), 0);
    ck_assert_int_eq(dfm_sampler_create(&s, g, method, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_SEED, 77), 0);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_THREADS, threads), 0);
    if (method == DFM_METHOD_RK4) ck_assert_int_eq(dfm_sampler_set_steps(s, 16), 0);
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = ode_model;
    a.rows = CROWS;
    a.reals = x;
    a.draw_source = 1;
    ck_assert_msg(dfm_sampler_run(s, &a) == 0, "%s", dfm_sampler_last_error(s));
    int64_t steps = 0;
    ck_assert_int_eq(dfm_sampler_get_stat(s, DFM_STAT_STEPS, &steps), 0);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    dfm_path_free(p);
    dfm_scheduler_free(sc);
    dfm_space_free(sp);
    return steps;
}

static void ode_case(const char *name, int method)
{
    float x1[CROWS * CD], x2[CROWS * CD];
    int64_t steps = ode_run(method, 1, x1);
    if (!printing()) {
        ck_assert_int_eq(ode_run(method, 2, x2), steps);
        ck_assert_msg(!memcmp(x1, x2, sizeof x1), "%s: threads change the samples", name);
    }
    check_reals(name, x1, CROWS * CD, steps);
}

START_TEST(ode_rk4) { ode_case("ode_rk4", DFM_METHOD_RK4); }
END_TEST
/* DOPRI5's step-size controller uses libm's pow */
START_TEST(ode_dopri5) { ode_case("ode_dopri5", DFM_METHOD_DOPRI5); }
END_TEST

/* ---- CTMC: uniformization on time-dependent direct rates ---- */

#define CS 6
#define CTROWS 256

/* Q_t(x, y) = (1 + ((3x + 5y) mod 7) / 4) (1 + t) / 2: arithmetic only. */
static int ctmc_model(const dfm_model_io *io, void *ud)
{
    (void)ud;
    for (size_t r = 0; r < io->rows; r++) {
        int x = io->tokens[r];
        double t = io->t[r];
        for (int y = 0; y < CS; y++)
            io->out[r * io->out_stride + (size_t)y] = (float)((1.0 + ((3 * x + 5 * y) % 7) * 0.25) * (1.0 + t) * 0.5);
    }
    return 0;
}

static uint64_t ctmc_run(int threads)
{
    dfm_space *sp = NULL;
    dfm_generator *g = NULL;
    dfm_sampler *s = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, CS, 1, NULL), 0);
    ck_assert_int_eq(dfm_generator_create_rate_matrix(&g, NULL, sp, DFM_PARAM_RATES, NULL), 0);
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_UNIFORMIZATION, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_SEED, 4242), 0);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_THREADS, threads), 0);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 8), 0);
    int32_t tok[CTROWS], saved[CTROWS];
    for (int r = 0; r < CTROWS; r++) tok[r] = r % CS;
    const double st = 0.5;
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = ctmc_model;
    a.rows = CTROWS;
    a.tokens = tok;
    a.save_times = &st;
    a.n_save = 1;
    a.saved_tokens = saved;
    ck_assert_msg(dfm_sampler_run(s, &a) == 0, "%s", dfm_sampler_last_error(s));
    int64_t jumps = 0, rejected = 0;
    ck_assert_int_eq(dfm_sampler_get_stat(s, DFM_STAT_JUMPS, &jumps), 0);
    ck_assert_int_eq(dfm_sampler_get_stat(s, DFM_STAT_REJECTED, &rejected), 0);
    uint64_t h = fnv_tokens(FNV_INIT, tok, CTROWS);
    h = fnv_tokens(h, saved, CTROWS);
    h = fnv_u32(fnv_u32(h, (uint32_t)jumps), (uint32_t)rejected);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    dfm_space_free(sp);
    return h;
}

START_TEST(ctmc_uniformization)
{
    uint64_t h1 = ctmc_run(1);
    if (!printing()) ck_assert_msg(ctmc_run(2) == h1, "ctmc: threads change the samples");
    check_tokens("ctmc_uniformization", h1);
}
END_TEST

/* DFM_DIGEST_PRINT=1: print a fresh tests/digests.h instead of testing (in this process, in order). */
START_TEST(print_reference)
{
    float x[CROWS * CD];
    printf("/* Reference samples of tests/test_digest.c (same on every architecture and compiler:\n"
           " * docs/promises.md). Generated by DFM_DIGEST_PRINT=1 _build/tests/test_digest. */\n");
    int64_t st_rk4 = ode_run(DFM_METHOD_RK4, 1, x);
    print_reals("ode_rk4", x, CROWS * CD, st_rk4);
    int64_t st_dp = ode_run(DFM_METHOD_DOPRI5, 1, x);
    print_reals("ode_dopri5", x, CROWS * CD, st_dp);
    printf("/* tokens, saved states and jump counts: FNV-1a 64 */\n"
           "static const dg_tokens dg_tokens_ref[] = {\n");
    check_tokens("ds_exact_mask", ds_run(DFM_SOURCE_MASK, DV_MASK, 32, 0.0, 1));
    check_tokens("ds_exact_uniform", ds_run(DFM_SOURCE_UNIFORM, DV_UNIF, 24, 0.0, 1));
    check_tokens("ds_exact_uniform_corr", ds_run(DFM_SOURCE_UNIFORM, DV_UNIF, 24, 1.0, 1));
    check_tokens("ctmc_uniformization", ctmc_run(1));
    printf("};\n/* reals: the ULP bound each value must meet (docs/promises.md) */\n"
           "static const dg_reals dg_reals_ref[] = {\n"
           "    {\"ode_rk4\", DG_ULP_RK4, sizeof dg_ode_rk4 / sizeof(float), dg_ode_rk4, DG_ode_rk4_STEPS},\n"
           "    {\"ode_dopri5\", DG_ULP_DOPRI5, sizeof dg_ode_dopri5 / sizeof(float), dg_ode_dopri5, DG_ode_dopri5_STEPS},\n"
           "};\n");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("digest");
    if (printing()) {
        TCase *tp = tu_tcase("print");
        tcase_add_test(tp, print_reference);
        suite_add_tcase(s, tp);
        SRunner *sr = srunner_create(s);
        srunner_set_fork_status(sr, CK_NOFORK);
        srunner_run_all(sr, CK_SILENT);
        int failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? 1 : 0;
    }
    TCase *tc = tu_tcase("digest");
    tcase_add_test(tc, discrete_exact_mask);
    tcase_add_test(tc, discrete_exact_uniform);
    tcase_add_test(tc, discrete_exact_uniform_corrector);
    tcase_add_test(tc, ode_rk4);
    tcase_add_test(tc, ode_dopri5);
    tcase_add_test(tc, ctmc_uniformization);
    suite_add_tcase(s, tc);
    return tu_run(s) ? 1 : 0;
}
