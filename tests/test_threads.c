/* Concurrency (docs/promises.md, thread safety): several host threads at once, each with its own
 * handles, all sharing immutable spaces and schedulers, while the library's internal threads run
 * (dfm_rng_fill with 2 threads). Every result must equal the single-threaded reference computed
 * first. Built normally by `make check` and under ThreadSanitizer by `make check-tsan`.
 *
 * Modules add work items to the `jobs` table: a job receives the shared objects and its thread
 * index, must create any handle it writes to itself (one handle per thread), may read the shared
 * handles, and returns a 64-bit digest of its results that must not depend on the thread. */
#include "testutil.h"

#include <pthread.h>

#define N_HOST_THREADS 4
#define N_REPEAT 3

typedef struct shared {
    const dfm_space *disc, *eucl, *prod;
    const dfm_scheduler *sched[6];
    int n_sched;
} shared;

typedef uint64_t (*job_fn)(const shared *sh, int thread);

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h;
}
static uint64_t mix_double(uint64_t h, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    return mix(h, v);
}

/* Thread-safe custom scheduler: no shared mutable state. */
static int custom_sched(double t, dfm_sched_values *v, void *u)
{
    const double *scale = (const double *)u;
    v->alpha = t * *scale; v->sigma = 1.0 - t * *scale; v->d_alpha = *scale; v->d_sigma = -*scale;
    return 0;
}
static int custom_inverse(double k, double *t, void *u)
{
    *t = k / *(const double *)u;
    return 0;
}
static const double custom_scale = 1.0;

/* Shared schedulers evaluated on a grid, plus kappa inverses. */
static uint64_t job_schedulers(const shared *sh, int thread)
{
    (void)thread;
    uint64_t h = 1;
    for (int k = 0; k < sh->n_sched; k++) {
        dfm_scheduler *c = NULL; /* concurrent copies of a shared scheduler */
        ck_assert_int_eq(dfm_scheduler_clone(&c, sh->sched[k], NULL), 0);
        ck_assert_int_eq(dfm_scheduler_kind(c), dfm_scheduler_kind(sh->sched[k]));
        dfm_sched_values vc;
        ck_assert_int_eq(dfm_scheduler_eval(c, 0.25, &vc, NULL), 0);
        h = mix_double(h, vc.alpha);
        dfm_scheduler_free(c);
        for (int i = 0; i <= 64; i++) {
            dfm_sched_values v;
            int raw = 0;
            ck_assert_int_eq(dfm_scheduler_eval(sh->sched[k], i / 64.0, &v, &raw), 0);
            h = mix_double(mix_double(h, v.alpha), v.sigma);
            h = mix_double(mix_double(h, v.d_alpha), v.d_sigma);
            double t;
            if (dfm_scheduler_kappa_inverse(sh->sched[k], v.alpha, &t, &raw) == 0)
                h = mix_double(h, t);
        }
    }
    return h;
}

/* Shared spaces read concurrently; private spaces, products and clones made per thread. */
static uint64_t job_spaces(const shared *sh, int thread)
{
    (void)thread;
    uint64_t h = 2;
    dfm_space *c = NULL, *p = NULL;
    ck_assert_int_eq(dfm_space_clone(&c, sh->prod, NULL), 0);
    const dfm_space *parts[3] = {sh->disc, c, sh->eucl};
    ck_assert_int_eq(dfm_space_create_product(&p, parts, 3, NULL), 0);
    h = mix(h, dfm_space_n_tokens(p));
    h = mix(h, dfm_space_n_reals(p));
    for (size_t j = 0; j < dfm_space_n_tokens(p); j++) h = mix(h, (uint64_t)dfm_space_token_vocab(p, j));
    int32_t tok[16];
    for (int i = 0; i < 16; i++) tok[i] = i % 5;
    size_t bad = 0;
    h = mix(h, (uint64_t)dfm_space_check_tokens(sh->disc, tok, 16 / dfm_space_n_tokens(sh->disc), &bad));
    h = mix(h, bad);
    dfm_space_free(p);
    dfm_space_free(c);
    return h;
}

/* The RNG with internal threads (2) inside each host thread, and categorical draws. */
static uint64_t job_rng(const shared *sh, int thread)
{
    (void)sh; (void)thread;
    enum { R = 64, C = 33 };
    float *buf = (float *)malloc(sizeof(float) * R * C);
    ck_assert_ptr_nonnull(buf);
    uint64_t h = 3;
    for (int kind = DFM_DRAW_UNIFORM; kind <= DFM_DRAW_NORMAL; kind++) {
        ck_assert_int_eq(dfm_rng_fill(11, 3, kind, 1000, R, C, 7, 2, buf), 0);
        for (int i = 0; i < R * C; i++) h = mix_double(h, buf[i]);
    }
    float logits[300];
    for (int i = 0; i < 300; i++) logits[i] = (float)((i * 37) % 11) - 5.0f;
    for (uint64_t r = 0; r < 200; r++) {
        int32_t out = -1;
        ck_assert_int_eq(dfm_rng_categorical(5, 1, r, 0, 0, logits, 300, 0.7, &out), 0);
        h = mix(h, (uint64_t)out);
    }
    free(buf);
    return h;
}

static const job_fn jobs[] = {
    job_schedulers,
    job_spaces,
    job_rng,
    /* modules: add jobs here (one line each) */
};
#define N_JOBS ((int)(sizeof jobs / sizeof jobs[0]))

typedef struct worker {
    const shared *sh;
    int thread;
    uint64_t digest[N_JOBS];
} worker;

static void *work(void *arg)
{
    worker *w = (worker *)arg;
    for (int rep = 0; rep < N_REPEAT; rep++)
        for (int j = 0; j < N_JOBS; j++) {
            /* Threads start on different jobs so that different code runs at the same time. */
            int k = (j + w->thread) % N_JOBS;
            uint64_t d = jobs[k](w->sh, w->thread);
            if (rep == 0) w->digest[k] = d;
            else if (w->digest[k] != d) w->digest[k] = 0; /* not reproducible */
        }
    return NULL;
}

START_TEST(threads_agree_with_serial)
{
    dfm_space *disc = NULL, *eucl = NULL, *prod = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&disc, 5, 4, NULL), 0);
    ck_assert_int_eq(dfm_space_create_euclidean(&eucl, 3, NULL), 0);
    const dfm_space *pp[2] = {disc, eucl};
    ck_assert_int_eq(dfm_space_create_product(&prod, pp, 2, NULL), 0);
    shared sh = {disc, eucl, prod, {NULL}, 0};
    dfm_scheduler *s[6] = {NULL};
    ck_assert_int_eq(dfm_scheduler_create_condot(&s[0], NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_polynomial(&s[1], 3.0, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_cosine(&s[2], NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_linear_vp(&s[3], NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_vp(&s[4], 0.1, 20.0, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_custom(&s[5], custom_sched, custom_inverse,
                                                 (void *)&custom_scale, NULL), 0);
    for (int k = 0; k < 6; k++) sh.sched[k] = s[k];
    sh.n_sched = 6;

    uint64_t ref[N_JOBS];
    for (int j = 0; j < N_JOBS; j++) ref[j] = jobs[j](&sh, 0);

    pthread_t th[N_HOST_THREADS];
    worker w[N_HOST_THREADS];
    for (int i = 0; i < N_HOST_THREADS; i++) {
        w[i].sh = &sh;
        w[i].thread = i;
        ck_assert_int_eq(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < N_HOST_THREADS; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N_HOST_THREADS; i++)
        for (int j = 0; j < N_JOBS; j++)
            ck_assert_msg(w[i].digest[j] == ref[j], "thread %d job %d: digest differs", i, j);

    for (int k = 0; k < 6; k++) dfm_scheduler_free(s[k]);
    dfm_space_free(prod);
    dfm_space_free(eucl);
    dfm_space_free(disc);
}
END_TEST

/* Internal threads: dfm_rng_fill gives identical output for 1..8 threads and any row split. */
START_TEST(internal_threads_split_invariant)
{
    enum { R = 97, C = 13 };
    float a[R * C], b[R * C];
    ck_assert_int_eq(dfm_rng_fill(99, 2, DFM_DRAW_NORMAL, 5, R, C, 3, 1, a), 0);
    for (int nt = 2; nt <= 8; nt++) {
        memset(b, 0, sizeof b);
        ck_assert_int_eq(dfm_rng_fill(99, 2, DFM_DRAW_NORMAL, 5, 40, C, 3, nt, b), 0);
        ck_assert_int_eq(dfm_rng_fill(99, 2, DFM_DRAW_NORMAL, 45, R - 40, C, 3, nt, b + 40 * C), 0);
        ck_assert_msg(memcmp(a, b, sizeof a) == 0, "threads %d differ", nt);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("threads");
    TCase *tc = tu_tcase("threads");
    tcase_add_test(tc, threads_agree_with_serial);
    tcase_add_test(tc, internal_threads_split_invariant);
    suite_add_tcase(s, tc);
    return tu_run(s) ? EXIT_FAILURE : EXIT_SUCCESS;
}
