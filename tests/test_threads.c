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
#include <sys/wait.h>
#include <unistd.h>

#define N_HOST_THREADS 4
#define N_REPEAT 3

typedef struct shared {
    const dfm_space *disc, *eucl, *prod;
    const dfm_space *fin; /* [3]^2 for the rate-matrix jobs */
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

/* ---- modules: one handle of each kind per thread, internal threads (DFM_OPT_THREADS = 2) ---- */

/* Pure model callbacks (no shared mutable state): logits, rates or velocities from the inputs. */
static int th_model(const dfm_model_io *io, void *u)
{
    const int kind = *(const int *)u; /* 0 logits, 1 rates, 2 velocity */
    for (size_t r = 0; r < io->rows; r++)
        for (size_t j = 0; j < io->out_stride; j++) {
            float v;
            int32_t tok = io->tokens && io->n_tokens ? io->tokens[r * io->n_tokens + j % io->n_tokens] : 0;
            if (kind == 2) v = -0.5f * io->reals[r * io->n_reals + j] + (float)io->t[r];
            else if (kind == 1) v = 0.2f + 0.1f * (float)((j + (size_t)tok) % 3);
            else v = 0.3f * (float)((j * 7 + (size_t)tok) % 5) - (float)io->t[r];
            io->out[r * io->out_stride + j] = v;
        }
    return 0;
}
static const int th_logits = 0, th_rates = 1, th_velocity = 2;

static uint64_t mix_tokens(uint64_t h, const int32_t *t, size_t n)
{
    for (size_t i = 0; i < n; i++) h = mix(h, (uint64_t)(uint32_t)t[i]);
    return h;
}
static uint64_t mix_floats(uint64_t h, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) h = mix_double(h, x[i]);
    return h;
}

static dfm_sampler *th_sampler(const dfm_generator *g, int method, size_t steps)
{
    dfm_sampler *s = NULL;
    ck_assert_int_eq(dfm_sampler_create(&s, g, method, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_steps(s, steps), 0);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_THREADS, 2), 0);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_SEED, 77), 0);
    return s;
}

static void th_run(dfm_sampler *s, const int *kind, size_t rows, int32_t *tok, float *re,
                   int draw_source)
{
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = th_model; a.model_data = (void *)kind;
    a.rows = rows; a.tokens = tok; a.reals = re; a.draw_source = draw_source;
    ck_assert_msg(dfm_sampler_run(s, &a) == 0, "%s", dfm_sampler_last_error(s));
}

/* Discrete: mixture path sampling, exact and Euler samplers, the generalized KL and the ELBO. */
static uint64_t job_discrete(const shared *sh, int thread)
{
    (void)thread;
    enum { R = 40, D = 4, V = 5 };
    uint64_t h = 4;
    dfm_path *p = NULL;
    ck_assert_int_eq(dfm_path_create_mixture(&p, sh->disc, sh->sched[2], DFM_SOURCE_MASK, V - 1,
                                             NULL, NULL), 0);
    ck_assert_int_eq(dfm_path_set_int(p, DFM_OPT_THREADS, 2), 0);
    int32_t x1[R * D], xt[R * D], tok[R * D];
    double t[R];
    for (int i = 0; i < R * D; i++) x1[i] = i % (V - 1);
    for (int r = 0; r < R; r++) t[r] = r / (double)R;
    dfm_path_sample_args pa = tu_sample_args(R, t, x1, xt);
    ck_assert_int_eq(dfm_path_sample(p, &pa), 0);
    h = mix_tokens(h, xt, R * D);
    dfm_generator *g = NULL;
    ck_assert_int_eq(dfm_generator_create_factorized(&g, p, DFM_PARAM_LOGITS, NULL), 0);
    int methods[2] = {DFM_METHOD_EXACT, DFM_METHOD_EULER};
    for (int m = 0; m < 2; m++) {
        dfm_sampler *s = th_sampler(g, methods[m], 8);
        ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_DS_ETA, 0.5), 0);
        th_run(s, &th_logits, R, tok, NULL, 1);
        h = mix_tokens(h, tok, R * D);
        dfm_sampler_free(s);
    }
    dfm_loss *l = NULL;
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_THREADS, 2), 0);
    float out[R * D * V], grad[R * D * V];
    for (int i = 0; i < R * D * V; i++) out[i] = 0.1f * (float)(i % 13) - 0.5f;
    for (int r = 0; r < R; r++) t[r] = 0.9 * r / (double)R;
    double loss = 0.0;
    dfm_loss_args la;
    memset(&la, 0, sizeof la);
    la.struct_size = sizeof la; la.rows = R; la.t = t; la.x1_tokens = x1; la.xt_tokens = xt;
    la.out = out; la.grad = grad; la.loss = &loss;
    ck_assert_int_eq(dfm_loss_eval(l, &la), 0);
    h = mix_double(mix_floats(h, grad, R * D * V), loss);
    double nelbo[R];
    dfm_elbo_args ea;
    memset(&ea, 0, sizeof ea);
    ea.struct_size = sizeof ea; ea.rows = R; ea.x1_tokens = x1; ea.n_t = 2; ea.chunk_rows = 16;
    ea.model = th_model; ea.user_data = (void *)&th_logits; ea.nelbo = nelbo;
    ck_assert_msg(dfm_loss_discrete_elbo(l, &ea) == 0, "%s", dfm_loss_last_error(l));
    for (int r = 0; r < R; r++) h = mix_double(h, nelbo[r]);
    dfm_loss_free(l);
    dfm_generator_free(g);
    dfm_path_free(p);
    return h;
}

/* Continuous: affine path sampling, RK4 / Euler-Maruyama runs, the MSE loss, the likelihood. */
static uint64_t job_continuous(const shared *sh, int thread)
{
    (void)thread;
    enum { R = 24, D = 3 };
    uint64_t h = 5;
    dfm_path *p = NULL;
    ck_assert_int_eq(dfm_path_create_affine(&p, sh->eucl, sh->sched[4], NULL), 0);
    ck_assert_int_eq(dfm_path_set_int(p, DFM_OPT_THREADS, 2), 0);
    float x1[R * D], xt[R * D], tg[R * D], x0[R * D], re[R * D];
    double t[R];
    for (int i = 0; i < R * D; i++) x1[i] = 0.1f * (float)(i % 17) - 0.7f;
    for (int r = 0; r < R; r++) t[r] = 0.05 + 0.9 * r / (double)R;
    dfm_path_sample_args pa;
    memset(&pa, 0, sizeof pa);
    pa.struct_size = sizeof pa; pa.rows = R; pa.t = t; pa.x1_reals = x1; pa.xt_reals = xt;
    pa.target_reals = tg; pa.x0_reals_out = x0;
    ck_assert_int_eq(dfm_path_sample(p, &pa), 0);
    h = mix_floats(mix_floats(h, xt, R * D), tg, R * D);
    dfm_generator *g = NULL, *gd = NULL;
    ck_assert_int_eq(dfm_generator_create_velocity(&g, p, DFM_PARAM_VELOCITY, NULL), 0);
    dfm_sampler *s = th_sampler(g, DFM_METHOD_RK4, 6);
    th_run(s, &th_velocity, R, NULL, re, 1);
    h = mix_floats(h, re, R * D);
    double logp[R];
    dfm_loglik_args la;
    memset(&la, 0, sizeof la);
    la.struct_size = sizeof la; la.model = th_model; la.model_data = (void *)&th_velocity;
    la.rows = R; la.x1 = x1; la.n_probes = 2; la.logp = logp;
    ck_assert_msg(dfm_sampler_log_likelihood(s, &la) == 0, "%s", dfm_sampler_last_error(s));
    for (int r = 0; r < R; r++) h = mix_double(h, logp[r]);
    dfm_sampler_free(s);
    ck_assert_int_eq(dfm_generator_create_diffusion(&gd, p, DFM_PARAM_VELOCITY, 0.5, NULL), 0);
    s = th_sampler(gd, DFM_METHOD_EULER_MARUYAMA, 6);
    th_run(s, &th_velocity, R, NULL, re, 1);
    h = mix_floats(h, re, R * D);
    dfm_sampler_free(s);
    dfm_loss *l = NULL;
    ck_assert_int_eq(dfm_loss_create_mse(&l, g, NULL), 0);
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_THREADS, 2), 0);
    float grad[R * D];
    double loss = 0.0;
    dfm_loss_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a; a.rows = R; a.t = t; a.x0_reals = x0; a.x1_reals = x1;
    a.xt_reals = xt; a.out = tg; a.grad = grad; a.loss = &loss;
    ck_assert_int_eq(dfm_loss_eval(l, &a), 0);
    h = mix_double(mix_floats(h, grad, R * D), loss);
    dfm_loss_free(l);
    dfm_generator_free(gd);
    dfm_generator_free(g);
    dfm_path_free(p);
    return h;
}

/* Rate matrices: the workspace, a metric path with its factorized and flattened samplers, direct
 * rates with Gillespie, the Bregman loss on a finite path. */
static int th_cond(double t, int32_t x1, double *p, double *dp, size_t n, void *u)
{
    (void)u;
    double k = t * t, dk = 2.0 * t;
    for (size_t x = 0; x < n; x++) {
        p[x] = (1.0 - k) / (double)n + ((int32_t)x == x1 ? k : 0.0);
        dp[x] = -dk / (double)n + ((int32_t)x == x1 ? dk : 0.0);
    }
    return 0;
}

static uint64_t job_ctmc(const shared *sh, int thread)
{
    (void)thread;
    enum { R = 30, D = 2, V = 3, S = 9 };
    uint64_t h = 6;
    dfm_ctmc *w = NULL;
    double Q[S * S], K[S * S];
    for (int i = 0; i < S * S; i++) Q[i] = 0.1 * (double)((i * 5) % 7);
    ck_assert_int_eq(dfm_ctmc_create(&w, S, NULL), 0);
    ck_assert_int_eq(dfm_ctmc_kernel(w, Q, 0.8, K), 0);
    for (int i = 0; i < S * S; i++) h = mix_double(h, K[i]);
    dfm_ctmc_free(w);
    dfm_path *pm = NULL, *pf = NULL;
    double dist[V * V];
    for (int x = 0; x < V; x++)
        for (int y = 0; y < V; y++) dist[x * V + y] = x > y ? x - y : y - x;
    ck_assert_int_eq(dfm_path_create_metric(&pm, sh->fin, sh->sched[0], 1.5, dist, NULL, NULL,
                                            NULL), 0);
    ck_assert_int_eq(dfm_path_create_finite(&pf, sh->fin, th_cond, NULL, NULL), 0);
    int32_t tok[R * D];
    dfm_generator *g = NULL;
    ck_assert_int_eq(dfm_generator_create_metric(&g, pm, NULL), 0);
    int methods[2] = {DFM_METHOD_EULER, DFM_METHOD_UNIFORMIZATION};
    for (int m = 0; m < 2; m++) {
        dfm_sampler *s = th_sampler(g, methods[m], 5);
        ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_CT_TMAX, 0.9), 0);
        th_run(s, &th_logits, R, tok, NULL, 1);
        h = mix_tokens(h, tok, R * D);
        dfm_sampler_free(s);
    }
    dfm_generator_free(g);
    ck_assert_int_eq(dfm_generator_create_rate_matrix(&g, pf, NULL, DFM_PARAM_STATE_LOGITS, NULL), 0);
    dfm_sampler *s = th_sampler(g, DFM_METHOD_UNIFORMIZATION, 5);
    th_run(s, &th_logits, R, tok, NULL, 1);
    h = mix_tokens(h, tok, R * D);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    ck_assert_int_eq(dfm_generator_create_rate_matrix(&g, NULL, sh->fin, DFM_PARAM_RATES, NULL), 0);
    s = th_sampler(g, DFM_METHOD_GILLESPIE, 5);
    for (int i = 0; i < R * D; i++) tok[i] = i % V;
    th_run(s, &th_rates, R, tok, NULL, 0);
    h = mix_tokens(h, tok, R * D);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    ck_assert_int_eq(dfm_generator_create_rate_matrix(&g, pf, NULL, DFM_PARAM_RATES, NULL), 0);
    dfm_loss *l = NULL;
    ck_assert_int_eq(dfm_loss_create_bregman_rates(&l, g, NULL), 0);
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_THREADS, 2), 0);
    int32_t x1[R * D];
    float out[R * S], grad[R * S];
    double t[R], loss = 0.0;
    for (int i = 0; i < R * D; i++) x1[i] = (i * 2) % V;
    for (int i = 0; i < R * S; i++) out[i] = 0.3f + 0.1f * (float)(i % 4);
    for (int r = 0; r < R; r++) t[r] = 0.9 * r / (double)R;
    dfm_loss_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a; a.rows = R; a.t = t; a.x1_tokens = x1; a.xt_tokens = tok;
    a.out = out; a.grad = grad; a.loss = &loss;
    ck_assert_msg(dfm_loss_eval(l, &a) == 0, "%s", dfm_loss_last_error(l));
    h = mix_double(mix_floats(h, grad, R * S), loss);
    dfm_loss_free(l);
    dfm_generator_free(g);
    dfm_path_free(pf);
    dfm_path_free(pm);
    return h;
}

static const job_fn jobs[] = {
    job_schedulers,
    job_spaces,
    job_rng,
    job_discrete,
    job_continuous,
    job_ctmc,
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
    dfm_space *fin = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&fin, 3, 2, NULL), 0);
    shared sh = {disc, eucl, prod, fin, {NULL}, 0};
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
    dfm_space_free(fin);
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

/* The per-handle worker pool (docs/threading.md): one sampler and one loss run many times while
 * their thread count changes up and down and the spin budget is 0 or large; every run equals the
 * one-thread reference. After fork() the child runs the same handles (it gets a fresh pool) and
 * the parent keeps using its own. */
#if defined(__SANITIZE_THREAD__)
#  define TH_NO_FORK 1
#elif defined(__has_feature)
#  if __has_feature(thread_sanitizer)
#    define TH_NO_FORK 1
#  endif
#endif

typedef struct pool_fix {
    dfm_space *sp; dfm_scheduler *sc; dfm_path *p; dfm_generator *g; dfm_sampler *s; dfm_loss *l;
} pool_fix;
enum { PR = 37, PD = 6, PV = 7 };

static void pool_run(pool_fix *f, int32_t *tok, float *grad, double *loss)
{
    th_run(f->s, &th_logits, PR, tok, NULL, 1);
    static float out[PR * PD * PV];
    int32_t x1[PR * PD], xt[PR * PD];
    double t[PR];
    for (int i = 0; i < PR * PD * PV; i++) out[i] = 0.05f * (float)(i % 17) - 0.4f;
    for (int i = 0; i < PR * PD; i++) { x1[i] = i % (PV - 1); xt[i] = i % 3 ? x1[i] : PV - 1; }
    for (int r = 0; r < PR; r++) t[r] = 0.9 * r / (double)PR;
    dfm_loss_args la;
    memset(&la, 0, sizeof la);
    la.struct_size = sizeof la; la.rows = PR; la.t = t; la.x1_tokens = x1; la.xt_tokens = xt;
    la.out = out; la.grad = grad; la.loss = loss;
    ck_assert_msg(dfm_loss_eval(f->l, &la) == 0, "%s", dfm_loss_last_error(f->l));
}

static void pool_threads(pool_fix *f, int n, int spin)
{
    ck_assert_int_eq(dfm_sampler_set_int(f->s, DFM_OPT_THREADS, n), 0);
    ck_assert_int_eq(dfm_loss_set_int(f->l, DFM_OPT_THREADS, n), 0);
    ck_assert_int_eq(dfm_sampler_set_int(f->s, DFM_OPT_SPIN_US, spin), 0);
    ck_assert_int_eq(dfm_loss_set_int(f->l, DFM_OPT_SPIN_US, spin), 0);
}

START_TEST(worker_pool)
{
    pool_fix f;
    memset(&f, 0, sizeof f);
    ck_assert_int_eq(dfm_space_create_discrete(&f.sp, PV, PD, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_cosine(&f.sc, NULL), 0);
    ck_assert_int_eq(dfm_path_create_mixture(&f.p, f.sp, f.sc, DFM_SOURCE_MASK, PV - 1, NULL, NULL), 0);
    ck_assert_int_eq(dfm_generator_create_factorized(&f.g, f.p, DFM_PARAM_LOGITS, NULL), 0);
    f.s = th_sampler(f.g, DFM_METHOD_EXACT, 16);
    ck_assert_int_eq(dfm_sampler_set_int(f.s, DFM_OPT_DS_CHUNK_ROWS, 5), 0);
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&f.l, f.p, NULL), 0);

    int64_t v = -1;
    ck_assert_int_eq(dfm_sampler_get_int(f.s, DFM_OPT_SPIN_US, &v), 0);
    ck_assert_int_eq(v, 1000);
    ck_assert_int_eq(dfm_sampler_set_int(f.s, DFM_OPT_SPIN_US, -1), DFM_EINVAL);
    ck_assert_int_eq(dfm_loss_set_int(f.l, DFM_OPT_SPIN_US, 1000001), DFM_EINVAL);

    static int32_t ref_tok[PR * PD], tok[PR * PD];
    static float ref_grad[PR * PD * PV], grad[PR * PD * PV];
    double ref_loss = 0.0, loss = 0.0;
    pool_run(&f, ref_tok, ref_grad, &ref_loss);
    const int seq[9][2] = {{2, 1000}, {4, 0}, {3, 200000}, {2, 0}, {1, 1000}, {8, 50}, {2, 1000},
                           {2, 1000}, {5, 0}};
    for (int k = 0; k < 9; k++) {
        pool_threads(&f, seq[k][0], seq[k][1]);
        for (int rep = 0; rep < 3; rep++) {
            pool_run(&f, tok, grad, &loss);
            ck_assert_msg(memcmp(tok, ref_tok, sizeof tok) == 0, "threads %d: samples differ", seq[k][0]);
            ck_assert_msg(memcmp(grad, ref_grad, sizeof grad) == 0, "threads %d: gradients differ", seq[k][0]);
            ck_assert(loss == ref_loss);
        }
    }
    /* clones inherit threads and spin, and have their own pool */
    dfm_loss *lc = NULL;
    ck_assert_int_eq(dfm_loss_clone(&lc, f.l, NULL), 0);
    ck_assert_int_eq(dfm_loss_get_int(lc, DFM_OPT_SPIN_US, &v), 0);
    ck_assert_int_eq(v, 0);
    dfm_loss *keep = f.l;
    f.l = lc;
    pool_run(&f, tok, grad, &loss);
    ck_assert(memcmp(grad, ref_grad, sizeof grad) == 0);
    f.l = keep;
    dfm_loss_free(lc);

#ifndef TH_NO_FORK
    pool_threads(&f, 2, 1000);
    pool_run(&f, tok, grad, &loss); /* the parent's workers are running */
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        memset(tok, 0, sizeof tok);
        pool_run(&f, tok, grad, &loss);
        int ok = memcmp(tok, ref_tok, sizeof tok) == 0 && memcmp(grad, ref_grad, sizeof grad) == 0;
        dfm_sampler_free(f.s);
        dfm_loss_free(f.l);
        _exit(ok ? 0 : 3);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    pool_run(&f, tok, grad, &loss);
    ck_assert(memcmp(tok, ref_tok, sizeof tok) == 0);
#endif
    dfm_loss_free(f.l);
    dfm_sampler_free(f.s);
    dfm_generator_free(f.g);
    dfm_path_free(f.p);
    dfm_scheduler_free(f.sc);
    dfm_space_free(f.sp);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("threads");
    TCase *tc = tu_tcase("threads");
    tcase_add_test(tc, threads_agree_with_serial);
    tcase_add_test(tc, internal_threads_split_invariant);
    tcase_add_test(tc, worker_pool);
    suite_add_tcase(s, tc);
    return tu_run(s) ? EXIT_FAILURE : EXIT_SUCCESS;
}
