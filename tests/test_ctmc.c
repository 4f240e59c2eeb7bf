/* ctmc: exp(hQ), Kolmogorov propagation, finite and metric paths, rate-matrix samplers
 * (Euler, uniformization, Gillespie) against exact targets, the Bregman loss, bad input. */
#include "testutil.h"

#include <stdio.h>

/* ---------- helpers ---------- */

static double max_abs_diff(const double *a, const double *b, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double v = fabs(a[i] - b[i]);
        if (v > m) m = v;
    }
    return m;
}

/* small deterministic generator of test numbers */
static double lcg(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (double)((*s >> 8) & 0xFFFFFF) / 16777216.0;
}

static void random_generator(size_t n, double *Q, unsigned seed, double scale)
{
    unsigned s = seed;
    for (size_t i = 0; i < n; i++) {
        double sum = 0.0;
        for (size_t j = 0; j < n; j++) {
            if (i == j) continue;
            Q[i * n + j] = scale * lcg(&s);
            sum += Q[i * n + j];
        }
        Q[i * n + i] = -sum;
    }
}

/* ---------- exp(hQ) ---------- */

START_TEST(expm_two_state_closed_form)
{
    dfm_ctmc *w = NULL;
    ck_assert_int_eq(dfm_ctmc_create(&w, 2, NULL), 0);
    const double a = 0.7, b = 2.3;
    double Q[4] = {-a, a, b, -b}, K[4];
    const double hs[] = {0.0, 1e-6, 0.01, 0.3, 1.0, 4.0, 50.0, 1e3};
    for (size_t k = 0; k < sizeof hs / sizeof hs[0]; k++) {
        double h = hs[k], e = exp(-(a + b) * h), s = a + b;
        double ex[4] = {(b + a * e) / s, (a - a * e) / s, (b - b * e) / s, (a + b * e) / s};
        ck_assert_int_eq(dfm_ctmc_kernel(w, Q, h, K), 0);
        ck_assert_msg(max_abs_diff(K, ex, 4) < 1e-13, "h = %g: err %g", h, max_abs_diff(K, ex, 4));
        double E[4];
        ck_assert_int_eq(dfm_ctmc_expm(w, Q, h, E), 0);
        ck_assert_msg(max_abs_diff(E, ex, 4) < 1e-13, "expm h = %g", h);
    }
    /* a rotation: exp(h [[0, -1], [1, 0]]) = [[cos, -sin], [sin, cos]] (not a generator) */
    double Rm[4] = {0, -1, 1, 0}, E[4];
    ck_assert_int_eq(dfm_ctmc_expm(w, Rm, 2.5, E), 0);
    double ex[4] = {cos(2.5), -sin(2.5), sin(2.5), cos(2.5)};
    ck_assert(max_abs_diff(E, ex, 4) < 1e-13);
    dfm_ctmc_free(w);
}
END_TEST

START_TEST(expm_uniform_rate_chain)
{
    const size_t ns[] = {3, 17, 64};
    for (size_t k = 0; k < 3; k++) {
        size_t n = ns[k];
        dfm_ctmc *w = NULL;
        ck_assert_int_eq(dfm_ctmc_create(&w, n, NULL), 0);
        double *Q = calloc(n * n, sizeof(double)), *K = calloc(n * n, sizeof(double));
        const double r = 0.37;
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++) Q[i * n + j] = i == j ? -(double)(n - 1) * r : r;
        const double ts[] = {0.05, 0.5, 2.0, 30.0};
        for (size_t q = 0; q < 4; q++) {
            double t = ts[q], e = exp(-(double)n * r * t);
            ck_assert_int_eq(dfm_ctmc_kernel(w, Q, t, K), 0);
            for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < n; j++) {
                    double ex = i == j ? 1.0 / n + (1.0 - 1.0 / n) * e : (1.0 - e) / n;
                    ck_assert_msg(fabs(K[i * n + j] - ex) < 1e-13, "n %zu t %g", n, t);
                }
        }
        free(Q);
        free(K);
        dfm_ctmc_free(w);
    }
}
END_TEST

static int const_rates(double t, double *Q, size_t n, void *ud)
{
    (void)t;
    memcpy(Q, ud, n * n * sizeof(double));
    return 0;
}

START_TEST(expm_vs_small_steps_and_stochastic)
{
    const size_t n = 12;
    double Q[144], K[144], P[144], T[144];
    random_generator(n, Q, 7u, 1.5);
    dfm_ctmc *w = NULL;
    ck_assert_int_eq(dfm_ctmc_create(&w, n, NULL), 0);
    const double h = 0.8;
    ck_assert_int_eq(dfm_ctmc_kernel(w, Q, h, K), 0);
    /* many small Euler steps: (I + hQ/N)^N -> exp(hQ), error O(1/N) */
    const int N = (int)tu_count(20000); /* DFM_TEST_SCALE (testutil.h): the bound follows 1/N */
    for (size_t i = 0; i < n * n; i++) P[i] = (i % (n + 1)) == 0 ? 1.0 : 0.0;
    for (int s = 0; s < N; s++) {
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++) {
                double acc = P[i * n + j];
                for (size_t l = 0; l < n; l++) acc += P[i * n + l] * Q[l * n + j] * h / N;
                T[i * n + j] = acc;
            }
        memcpy(P, T, sizeof P);
    }
    ck_assert_msg(max_abs_diff(K, P, n * n) < 2e-4 * (20000.0 / N), "euler err %g", max_abs_diff(K, P, n * n));
    /* RK4 with constant Q (the ODE path) agrees to high accuracy */
    double I[144];
    for (size_t i = 0; i < n * n; i++) I[i] = (i % (n + 1)) == 0 ? 1.0 : 0.0;
    ck_assert_int_eq(dfm_ctmc_propagate_ode(w, I, n, const_rates, Q, 0.0, h, 400, P), 0);
    ck_assert_msg(max_abs_diff(K, P, n * n) < 1e-10, "rk4 err %g", max_abs_diff(K, P, n * n));
    /* propagate == p0 K */
    double p0[12], pt[12];
    for (size_t i = 0; i < n; i++) p0[i] = 1.0 / n;
    ck_assert_int_eq(dfm_ctmc_propagate(w, p0, 1, Q, h, pt), 0);
    for (size_t j = 0; j < n; j++) {
        double acc = 0.0;
        for (size_t i = 0; i < n; i++) acc += p0[i] * K[i * n + j];
        ck_assert(fabs(acc - pt[j]) < 1e-14);
    }
    dfm_ctmc_free(w);
    /* stiff generators over many scales: stochastic rows */
    const size_t m = 40;
    double *A = calloc(m * m, sizeof(double)), *B = calloc(m * m, sizeof(double));
    ck_assert_int_eq(dfm_ctmc_create(&w, m, NULL), 0);
    unsigned sd = 3u;
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < m; j++)
            if (i != j) A[i * m + j] = pow(10.0, 6.0 * lcg(&sd) - 3.0) * (lcg(&sd) < 0.5);
    const double hs[] = {1e-4, 0.1, 3.0, 100.0};
    for (size_t k = 0; k < 4; k++) {
        ck_assert_int_eq(dfm_ctmc_kernel(w, A, hs[k], B), 0);
        for (size_t i = 0; i < m; i++) {
            double s = 0.0;
            for (size_t j = 0; j < m; j++) {
                ck_assert(B[i * m + j] >= 0.0);
                s += B[i * m + j];
            }
            ck_assert_msg(fabs(s - 1.0) < 1e-12, "row %zu sums to %.17g", i, s);
        }
    }
    free(A);
    free(B);
    dfm_ctmc_free(w);
    /* a dense 256-state generator: p0 exp(hQ) vs RK4 */
    const size_t L = 256;
    double *G = calloc(L * L, sizeof(double)), *q0 = calloc(L, sizeof(double)),
           *qa = calloc(L, sizeof(double)), *qb = calloc(L, sizeof(double));
    random_generator(L, G, 9u, 4.0 / (double)L);
    for (size_t i = 0; i < L; i++) q0[i] = (double)(i % 5) / (2.0 * (double)L);
    ck_assert_int_eq(dfm_ctmc_create(&w, L, NULL), 0);
    ck_assert_int_eq(dfm_ctmc_propagate(w, q0, 1, G, 3.0, qa), 0);
    ck_assert_int_eq(dfm_ctmc_propagate_ode(w, q0, 1, const_rates, G, 0.0, 3.0, 300, qb), 0);
    ck_assert_msg(max_abs_diff(qa, qb, L) < 1e-12, "err %g", max_abs_diff(qa, qb, L));
    free(G); free(q0); free(qa); free(qb);
    dfm_ctmc_free(w);
}
END_TEST

/* ---------- a finite path with a known target (S = 27) ---------- */

#define FV 3
#define FD 3
#define FS 27

typedef struct fin {
    double u[FS];   /* source */
    double q[FS];   /* target */
    int fail;       /* make the path callback fail */
} fin;

/* p_t(x | x1) = (1 - k) u(x) + k delta(x, x1), k = t^2 */
static int fin_cond(double t, int32_t x1, double *p, double *dp, size_t n, void *ud)
{
    fin *f = (fin *)ud;
    if (f->fail) return 42;
    double k = t * t, dk = 2.0 * t;
    for (size_t x = 0; x < n; x++) {
        p[x] = (1.0 - k) * f->u[x] + ((int32_t)x == x1 ? k : 0.0);
        dp[x] = -dk * f->u[x] + ((int32_t)x == x1 ? dk : 0.0);
    }
    return 0;
}

static void fin_marginal(const fin *f, double t, double *p)
{
    double k = t * t;
    for (int x = 0; x < FS; x++) p[x] = (1.0 - k) * f->u[x] + k * f->q[x];
}

static void fin_init(fin *f)
{
    unsigned s = 11u;
    double su = 0.0, sq = 0.0;
    for (int x = 0; x < FS; x++) {
        f->u[x] = 0.2 + lcg(&s);
        f->q[x] = (x % 7 == 3) ? 0.0 : 0.05 + lcg(&s) * lcg(&s) * 3.0;
        su += f->u[x];
        sq += f->q[x];
    }
    for (int x = 0; x < FS; x++) { f->u[x] /= su; f->q[x] /= sq; }
    f->fail = 0;
}

static int flat3(const int32_t *x) { return (x[0] * FV + x[1]) * FV + x[2]; }

/* Exact posterior logits over the 27 states: log q(x1) + log p_t(x | x1). */
static int fin_model(const dfm_model_io *io, void *ud)
{
    fin *f = (fin *)ud;
    ck_assert_uint_eq(io->n_tokens, FD);
    ck_assert_uint_eq(io->out_stride, FS);
    for (size_t r = 0; r < io->rows; r++) {
        int x = flat3(io->tokens + r * FD);
        double k = io->t[r] * io->t[r];
        for (int x1 = 0; x1 < FS; x1++) {
            double p = (1.0 - k) * f->u[x] + (x == x1 ? k : 0.0);
            double w = f->q[x1] * p;
            io->out[r * FS + x1] = w > 0.0 ? (float)log(w) : -INFINITY;
        }
    }
    return 0;
}

typedef struct fin_ode { dfm_path *path; fin *f; } fin_ode;

/* The marginal generator Q_t(x, y) = sum_x1 Q_t(x, y | x1) p_{1|t}(x1 | x), test side. */
static int fin_marginal_rates(double t, double *Q, size_t n, void *ud)
{
    fin_ode *o = (fin_ode *)ud;
    static double C[FS * FS];
    double k = t * t, post[FS][FS];
    for (int x = 0; x < FS; x++) {
        double z = 0.0;
        for (int x1 = 0; x1 < FS; x1++) {
            post[x][x1] = o->f->q[x1] * ((1.0 - k) * o->f->u[x] + (x == x1 ? k : 0.0));
            z += post[x][x1];
        }
        for (int x1 = 0; x1 < FS; x1++) post[x][x1] /= z;
    }
    memset(Q, 0, n * n * sizeof(double));
    for (int x1 = 0; x1 < FS; x1++) {
        if (dfm_path_cond_rates(o->path, t, x1, C)) return 1;
        for (int x = 0; x < FS; x++)
            for (int y = 0; y < FS; y++)
                if (y != x) Q[x * n + y] += post[x][x1] * C[x * FS + y];
    }
    return 0;
}

START_TEST(finite_path_kolmogorov)
{
    fin f;
    fin_init(&f);
    dfm_space *sp = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, FV, FD, NULL), 0);
    dfm_path *p = NULL;
    ck_assert_int_eq(dfm_path_create_finite(&p, sp, fin_cond, &f, NULL), 0);
    ck_assert_int_eq(dfm_path_kind(p), DFM_PATH_FINITE);
    /* conditional: the kinetic rates generate p_t(.|x1) exactly: dp/dt = p Q */
    double pr[FS], pp[FS], pm[FS], C[FS * FS];
    for (int x1 = 0; x1 < FS; x1 += 5) {
        const double ts[] = {0.1, 0.5, 0.9};
        for (int k = 0; k < 3; k++) {
            double t = ts[k], e = 1e-5;
            ck_assert_int_eq(dfm_path_cond_probs(p, t, x1, pr), 0);
            ck_assert_int_eq(dfm_path_cond_probs(p, t + e, x1, pp), 0);
            ck_assert_int_eq(dfm_path_cond_probs(p, t - e, x1, pm), 0);
            ck_assert_int_eq(dfm_path_cond_rates(p, t, x1, C), 0);
            for (int y = 0; y < FS; y++) {
                double acc = 0.0;
                for (int x = 0; x < FS; x++) acc += pr[x] * C[x * FS + y];
                ck_assert_msg(fabs(acc - (pp[y] - pm[y]) / (2 * e)) < 1e-7, "x1 %d t %g", x1, t);
            }
        }
    }
    /* marginal: Kolmogorov from p_0 = u reproduces the analytic p_t */
    dfm_ctmc *w = NULL;
    ck_assert_int_eq(dfm_ctmc_create(&w, FS, NULL), 0);
    fin_ode o = {p, &f};
    const double ts[] = {0.3, 0.6, 0.9};
    for (int k = 0; k < 3; k++) {
        double pt[FS], ex[FS];
        ck_assert_int_eq(dfm_ctmc_propagate_ode(w, f.u, 1, fin_marginal_rates, &o, 0.0, ts[k], 200,
                                                pt), 0);
        fin_marginal(&f, ts[k], ex);
        ck_assert_msg(max_abs_diff(pt, ex, FS) < 1e-8, "t %g err %g", ts[k],
                      max_abs_diff(pt, ex, FS));
        /* and a deliberately wrong target does not */
        fin g = f;
        for (int x = 0; x < FS; x++) g.q[x] = 1.0 / FS;
        fin_marginal(&g, ts[k], ex);
        ck_assert(max_abs_diff(pt, ex, FS) > 1e-3);
    }
    /* path sample matches p_t(.|x1) */
    const size_t N = tu_count(40000);
    int32_t *x1 = malloc(N * FD * sizeof(int32_t)), *xt = malloc(N * FD * sizeof(int32_t));
    double *t = malloc(N * sizeof(double));
    for (size_t r = 0; r < N; r++) { x1[r * FD] = 2; x1[r * FD + 1] = 0; x1[r * FD + 2] = 1; t[r] = 0.6; }
    dfm_path_sample_args a = tu_sample_args(N, t, x1, xt);
    ck_assert_int_eq(dfm_path_sample(p, &a), 0);
    long cnt[FS] = {0};
    for (size_t r = 0; r < N; r++) cnt[flat3(xt + r * FD)]++;
    ck_assert_int_eq(dfm_path_cond_probs(p, 0.6, (2 * FV + 0) * FV + 1, pr), 0);
    TU_ASSERT_CHI2(cnt, pr, FS, (long)N);
    free(x1); free(xt); free(t);
    dfm_ctmc_free(w);
    dfm_path_free(p);
    dfm_space_free(sp);
}
END_TEST

static void hist_tokens(const int32_t *tok, size_t rows, long *cnt)
{
    memset(cnt, 0, FS * sizeof(long));
    for (size_t r = 0; r < rows; r++) cnt[flat3(tok + r * FD)]++;
}

static void run_finite_sampler(int method, size_t nsteps, size_t N_full, double tol_full)
{
    /* the wrong-target check (exact samplers) needs ~1000 */
    const size_t N = tu_count_min(N_full, tol_full > 0 ? 500 : 2000);
    const double tol_tv = tol_full > 0 ? tu_tol(tol_full, N_full, N) : 0.0;
    fin f;
    fin_init(&f);
    dfm_space *sp = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, FV, FD, NULL), 0);
    dfm_path *p = NULL;
    ck_assert_int_eq(dfm_path_create_finite(&p, sp, fin_cond, &f, NULL), 0);
    dfm_generator *g = NULL;
    ck_assert_int_eq(dfm_generator_create_rate_matrix(&g, p, NULL, DFM_PARAM_STATE_LOGITS, NULL), 0);
    ck_assert_uint_eq(dfm_generator_out_stride(g), FS);
    dfm_sampler *s = NULL;
    ck_assert_int_eq(dfm_sampler_create(&s, g, method, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_steps(s, nsteps), 0);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_SEED, 1234), 0);
    int32_t *tok = calloc(N * FD, sizeof(int32_t)), *saved = calloc(N * FD, sizeof(int32_t));
    double st = 0.5;
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = fin_model; a.model_data = &f;
    a.rows = N; a.tokens = tok; a.draw_source = 1;
    a.save_times = &st; a.n_save = 1; a.saved_tokens = saved;
    int rc = dfm_sampler_run(s, &a);
    ck_assert_msg(rc == 0, "%s", dfm_sampler_last_error(s));
    long cnt[FS];
    double ex[FS], tmax;
    ck_assert_int_eq(dfm_sampler_get_double(s, DFM_OPT_CT_TMAX, &tmax), 0);
    hist_tokens(saved, N, cnt);
    fin_marginal(&f, 0.5, ex);
    if (tol_tv > 0) ck_assert_msg(tu_tv(cnt, ex, FS, (long)N) < tol_tv, "tv %g", tu_tv(cnt, ex, FS, (long)N));
    else TU_ASSERT_CHI2(cnt, ex, FS, (long)N);
    hist_tokens(tok, N, cnt);
    fin_marginal(&f, tmax, ex);
    if (tol_tv > 0) ck_assert_msg(tu_tv(cnt, ex, FS, (long)N) < tol_tv, "tv %g", tu_tv(cnt, ex, FS, (long)N));
    else TU_ASSERT_CHI2(cnt, ex, FS, (long)N);
    /* a deliberately wrong target fails the same bound */
    if (tol_tv <= 0) {
        fin g2 = f;
        for (int x = 0; x < FS; x++) g2.q[x] = 0.5 * f.q[x] + 0.5 / FS;
        fin_marginal(&g2, tmax, ex);
        int dof;
        ck_assert(tu_chi2(cnt, ex, FS, (long)N, &dof) > tu_chi2_bound(dof));
    }
    int64_t v;
    ck_assert_int_eq(dfm_sampler_get_stat(s, DFM_STAT_JUMPS, &v), 0);
    ck_assert_int_gt(v, 0);
    free(tok); free(saved);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    dfm_path_free(p);
    dfm_space_free(sp);
}

START_TEST(finite_uniformization_matches_path)
{
    run_finite_sampler(DFM_METHOD_UNIFORMIZATION, 8, 20000, 0.0);
}
END_TEST

START_TEST(finite_euler_converges)
{
    /* Euler with a fine grid lands close to the target (O(h) bias) */
    run_finite_sampler(DFM_METHOD_EULER, 200, 20000, 0.03);
}
END_TEST

/* ---------- homogeneous chain: Gillespie, uniformization, Euler vs exp(tQ) ---------- */

#define HS 6
typedef struct hom { double Q[HS * HS]; int bad; int fail; long calls; } hom;

static int hom_model(const dfm_model_io *io, void *ud)
{
    hom *h = (hom *)ud;
    h->calls++;
    if (h->fail) return 7;
    for (size_t r = 0; r < io->rows; r++) {
        int x = io->tokens[r];
        for (int y = 0; y < HS; y++) io->out[r * HS + y] = (float)h->Q[x * HS + y];
        if (h->bad == 1 && x == 2) io->out[r * HS + 4] = -0.5f;
        if (h->bad == 2 && x == 1) io->out[r * HS + 3] = NAN;
    }
    return 0;
}

static void hom_init(hom *h)
{
    memset(h, 0, sizeof *h);
    random_generator(HS, h->Q, 5u, 1.2);
    for (int x = 0; x < HS; x++) h->Q[x * HS + x] = 99.0; /* the diagonal is ignored */
}

static void hom_run(int method, size_t steps, size_t N, double bound, long *c_half, long *c_one,
                    dfm_sampler **keep)
{
    hom h;
    hom_init(&h);
    dfm_space *sp = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, HS, 1, NULL), 0);
    dfm_generator *g = NULL;
    ck_assert_int_eq(dfm_generator_create_rate_matrix(&g, NULL, sp, DFM_PARAM_RATES, NULL), 0);
    dfm_sampler *s = NULL;
    ck_assert_int_eq(dfm_sampler_create(&s, g, method, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_steps(s, steps), 0);
    ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_CT_TMAX, 1.0), 0);
    if (bound > 0) ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_CT_RATE_BOUND, bound), 0);
    int32_t *tok = calloc(N, sizeof(int32_t)), *saved = calloc(N, sizeof(int32_t));
    double st = 0.5;
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = hom_model; a.model_data = &h;
    a.rows = N; a.tokens = tok;
    a.save_times = &st; a.n_save = 1; a.saved_tokens = saved;
    ck_assert_msg(dfm_sampler_run(s, &a) == 0, "%s", dfm_sampler_last_error(s));
    memset(c_half, 0, HS * sizeof(long));
    memset(c_one, 0, HS * sizeof(long));
    for (size_t r = 0; r < N; r++) { c_half[saved[r]]++; c_one[tok[r]]++; }
    free(tok); free(saved);
    if (keep) *keep = s; else dfm_sampler_free(s);
    dfm_generator_free(g);
    dfm_space_free(sp);
}

static void hom_exact(double t, double *row0)
{
    hom h;
    hom_init(&h);
    dfm_ctmc *w = NULL;
    double K[HS * HS];
    ck_assert_int_eq(dfm_ctmc_create(&w, HS, NULL), 0);
    ck_assert_int_eq(dfm_ctmc_kernel(w, h.Q, t, K), 0);
    memcpy(row0, K, HS * sizeof(double));
    dfm_ctmc_free(w);
}

START_TEST(homogeneous_exact_samplers_match_expm)
{
    const size_t N = tu_count_min(40000, 8000); /* the wrong-time check needs ~20000 in all */
    long ch[HS], c1[HS];
    double eh[HS], e1[HS];
    hom_exact(0.5, eh);
    hom_exact(1.0, e1);
    int methods[3] = {DFM_METHOD_GILLESPIE, DFM_METHOD_UNIFORMIZATION, DFM_METHOD_UNIFORMIZATION};
    double bounds[3] = {0.0, 0.0, 20.0};
    long pooled[HS] = {0};
    for (int m = 0; m < 3; m++) {
        hom_run(methods[m], 4, N, bounds[m], ch, c1, NULL);
        TU_ASSERT_CHI2(ch, eh, HS, (long)N);
        TU_ASSERT_CHI2(c1, e1, HS, (long)N);
        for (int x = 0; x < HS; x++) pooled[x] += c1[x];
    }
    /* the three exact samplers share one law: pooled, they pass too, and exp at the wrong time
     * fails the same bound */
    TU_ASSERT_CHI2(pooled, e1, HS, 3 * (long)N);
    double wrong[HS];
    hom_exact(1.2, wrong);
    int dof;
    double chi_wrong = tu_chi2(pooled, wrong, HS, 3 * (long)N, &dof);
    ck_assert_msg(chi_wrong > tu_chi2_bound(dof), "wrong time passes: chi2 %g", chi_wrong);
}
END_TEST

START_TEST(homogeneous_euler_converges_and_clamps)
{
    const size_t N = tu_count_min(40000, 4000); /* coarse vs fine needs a few thousand */
    long ch[HS], c1[HS];
    double e1[HS];
    hom_exact(1.0, e1);
    dfm_sampler *s = NULL;
    hom_run(DFM_METHOD_EULER, 2, N, 0.0, ch, c1, &s);
    double tv_coarse = tu_tv(c1, e1, HS, (long)N);
    int64_t clamped = 0;
    ck_assert_int_eq(dfm_sampler_get_stat(s, DFM_STAT_CLAMPED, &clamped), 0);
    ck_assert_int_gt(clamped, 0); /* h = 0.5, total rates up to ~4: clamps */
    dfm_sampler_free(s);
    hom_run(DFM_METHOD_EULER, 256, N, 0.0, ch, c1, &s);
    double tv_fine = tu_tv(c1, e1, HS, (long)N);
    ck_assert_int_eq(dfm_sampler_get_stat(s, DFM_STAT_CLAMPED, &clamped), 0);
    ck_assert_int_eq(clamped, 0);
    dfm_sampler_free(s);
    ck_assert_msg(tv_fine < tu_tol(0.012, 40000, N) && tv_coarse > 2 * tv_fine, "tv coarse %g fine %g", tv_coarse,
                  tv_fine);
}
END_TEST

/* ---------- results independent of threads and batch split ---------- */

/* time-dependent dense rates Q_t(x, y) = (1 + sin(3 t + x + 2y)) */
static int td_model(const dfm_model_io *io, void *ud)
{
    (void)ud;
    for (size_t r = 0; r < io->rows; r++)
        for (int y = 0; y < HS; y++)
            io->out[r * HS + y] = (float)(1.0 + sin(3.0 * io->t[r] + io->tokens[r] + 2.0 * y));
    return 0;
}

static int td_rates(double t, double *Q, size_t n, void *ud)
{
    (void)ud;
    for (size_t x = 0; x < n; x++)
        for (size_t y = 0; y < n; y++)
            Q[x * n + y] = (double)(float)(1.0 + sin(3.0 * t + (double)x + 2.0 * (double)y));
    return 0;
}

START_TEST(inhomogeneous_uniformization_and_split)
{
    dfm_space *sp = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, HS, 1, NULL), 0);
    dfm_generator *g = NULL;
    ck_assert_int_eq(dfm_generator_create_rate_matrix(&g, NULL, sp, DFM_PARAM_RATES, NULL), 0);
    dfm_sampler *s = NULL;
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_UNIFORMIZATION, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 5), 0);
    ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_CT_TMAX, 1.0), 0);
    const size_t N = tu_count(40000);
    int32_t *t1 = calloc(N, 4), *t2 = calloc(N, 4);
    for (size_t r = 0; r < N; r++) t1[r] = t2[r] = (int32_t)(r % 2);
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = td_model;
    a.rows = N; a.tokens = t1;
    ck_assert_msg(dfm_sampler_run(s, &a) == 0, "%s", dfm_sampler_last_error(s));
    /* Kolmogorov reference from p0 = (1/2, 1/2, 0, ...) */
    dfm_ctmc *w = NULL;
    ck_assert_int_eq(dfm_ctmc_create(&w, HS, NULL), 0);
    double p0[HS] = {0.5, 0.5, 0, 0, 0, 0}, p1[HS];
    ck_assert_int_eq(dfm_ctmc_propagate_ode(w, p0, 1, td_rates, NULL, 0.0, 1.0, 200, p1), 0);
    long cnt[HS] = {0};
    for (size_t r = 0; r < N; r++) cnt[t1[r]]++;
    TU_ASSERT_CHI2(cnt, p1, HS, (long)N);
    /* two threads, and the batch split in two shards: identical samples */
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_THREADS, 2), 0);
    a.rows = N / 3; a.tokens = t2;
    ck_assert_int_eq(dfm_sampler_run(s, &a), 0);
    a.rows = N - N / 3; a.tokens = t2 + N / 3; a.row_offset = N / 3;
    ck_assert_int_eq(dfm_sampler_run(s, &a), 0);
    ck_assert(memcmp(t1, t2, N * 4) == 0);
    free(t1); free(t2);
    dfm_ctmc_free(w);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    dfm_space_free(sp);
}
END_TEST

/* ---------- metric-induced path ---------- */

#define MV 5
#define MD 2
#define MS 25
#define MC 2.0

typedef struct met { double q[MS]; } met;

static double mdist(int x, int y) { return fabs((double)(x - y)); }

static void met_probs(double t, int a, double *p)
{
    double beta = MC * t / (1.0 - t), z = 0.0;
    for (int v = 0; v < MV; v++) z += p[v] = exp(-beta * mdist(v, a));
    for (int v = 0; v < MV; v++) p[v] /= z;
}

static void met_marginal(const met *m, double t, double *p)
{
    double pa[MV][MV];
    for (int a = 0; a < MV; a++) met_probs(t, a, pa[a]);
    for (int x = 0; x < MS; x++) {
        p[x] = 0.0;
        for (int x1 = 0; x1 < MS; x1++) p[x] += m->q[x1] * pa[x1 / MV][x / MV] * pa[x1 % MV][x % MV];
    }
}

/* exact joint posterior over x1, computed in log space (no underflow near t = 1) */
static void met_post(const met *m, double t, const int32_t *x, double *post)
{
    double beta = MC * t / (1.0 - t), lz[MV], mx = -INFINITY, z = 0.0;
    for (int a = 0; a < MV; a++) {
        double s = 0.0;
        for (int v = 0; v < MV; v++) s += exp(-beta * (mdist(v, a) - 0.0));
        lz[a] = log(s);
    }
    for (int x1 = 0; x1 < MS; x1++) {
        int a0 = x1 / MV, a1 = x1 % MV;
        post[x1] = m->q[x1] > 0 ? log(m->q[x1]) - beta * (mdist(x[0], a0) + mdist(x[1], a1)) -
                                      lz[a0] - lz[a1]
                                : -INFINITY;
        if (post[x1] > mx) mx = post[x1];
    }
    for (int x1 = 0; x1 < MS; x1++) z += post[x1] = exp(post[x1] - mx);
    for (int x1 = 0; x1 < MS; x1++) post[x1] /= z;
}

/* factorized: per-token marginal posterior logits */
static int met_model_tok(const dfm_model_io *io, void *ud)
{
    met *m = (met *)ud;
    for (size_t r = 0; r < io->rows; r++) {
        double post[MS], marg[MD][MV];
        memset(marg, 0, sizeof marg);
        met_post(m, io->t[r], io->tokens + r * MD, post);
        for (int x1 = 0; x1 < MS; x1++) { marg[0][x1 / MV] += post[x1]; marg[1][x1 % MV] += post[x1]; }
        for (int i = 0; i < MD; i++)
            for (int v = 0; v < MV; v++)
                io->out[r * MD * MV + i * MV + v] = marg[i][v] > 0 ? (float)log(marg[i][v]) : -INFINITY;
    }
    return 0;
}

/* flattened: posterior over the 25 states */
static int met_model_state(const dfm_model_io *io, void *ud)
{
    met *m = (met *)ud;
    for (size_t r = 0; r < io->rows; r++) {
        double post[MS];
        met_post(m, io->t[r], io->tokens + r * MD, post);
        for (int x1 = 0; x1 < MS; x1++)
            io->out[r * MS + x1] = post[x1] > 0 ? (float)log(post[x1]) : -INFINITY;
    }
    return 0;
}

static int dist_cb(int32_t x1, double *d, int32_t V, void *ud)
{
    (void)ud;
    for (int x = 0; x < V; x++) d[x] = mdist(x, x1);
    return 0;
}

static dfm_path *make_metric(int use_cb)
{
    dfm_space *sp = NULL;
    dfm_scheduler *sc = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, MV, MD, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_condot(&sc, NULL), 0);
    double D[MV * MV];
    for (int x = 0; x < MV; x++)
        for (int y = 0; y < MV; y++) D[x * MV + y] = mdist(x, y);
    dfm_path *p = NULL;
    ck_assert_int_eq(dfm_path_create_metric(&p, sp, sc, MC, use_cb ? NULL : D,
                                            use_cb ? dist_cb : NULL, NULL, NULL), 0);
    dfm_space_free(sp);
    dfm_scheduler_free(sc);
    return p;
}

START_TEST(metric_rates_satisfy_kolmogorov)
{
    dfm_path *p = make_metric(1);
    ck_assert_int_eq(dfm_path_kind(p), DFM_PATH_METRIC);
    double pr[MV], pp[MV], pm[MV], Q[MV * MV], ref[MV];
    const double ts[] = {0.05, 0.3, 0.6, 0.9};
    for (int a = 0; a < MV; a++)
        for (int k = 0; k < 4; k++) {
            double t = ts[k], e = 1e-6;
            ck_assert_int_eq(dfm_path_cond_probs(p, t, a, pr), 0);
            met_probs(t, a, ref);
            ck_assert(max_abs_diff(pr, ref, MV) < 1e-14);
            ck_assert_int_eq(dfm_path_cond_probs(p, t + e, a, pp), 0);
            ck_assert_int_eq(dfm_path_cond_probs(p, t - e, a, pm), 0);
            ck_assert_int_eq(dfm_path_cond_rates(p, t, a, Q), 0);
            for (int y = 0; y < MV; y++) {
                double acc = 0.0, fd = (pp[y] - pm[y]) / (2 * e);
                for (int x = 0; x < MV; x++) acc += pr[x] * Q[x * MV + y];
                ck_assert_msg(fabs(acc - fd) < 1e-6 * (1 + fabs(fd)), "a %d t %g y %d: %g vs %g", a,
                              t, y, acc, fd);
            }
        }
    /* at t = 1 the path is a point mass and the rates diverge */
    ck_assert_int_eq(dfm_path_cond_probs(p, 1.0, 3, pr), 0);
    ck_assert(pr[3] == 1.0 && pr[2] == 0.0);
    ck_assert_int_eq(dfm_path_cond_rates(p, 1.0, 3, Q), DFM_ERANGE);
    ck_assert_str_ne(dfm_path_last_error(p), "");
    dfm_path_free(p);
}
END_TEST

static void met_target(met *m)
{
    unsigned s = 99u;
    double z = 0.0;
    for (int x = 0; x < MS; x++) { m->q[x] = (x % 6 == 1) ? 0.0 : lcg(&s) * lcg(&s) + 0.02; z += m->q[x]; }
    for (int x = 0; x < MS; x++) m->q[x] /= z;
}

static void met_sample(int flattened, int method, size_t steps)
{
    met m;
    met_target(&m);
    dfm_path *p = make_metric(0);
    dfm_generator *g = NULL;
    if (flattened)
        ck_assert_int_eq(dfm_generator_create_rate_matrix(&g, p, NULL, DFM_PARAM_STATE_LOGITS, NULL), 0);
    else
        ck_assert_int_eq(dfm_generator_create_metric(&g, p, NULL), 0);
    dfm_sampler *s = NULL;
    ck_assert_int_eq(dfm_sampler_create(&s, g, method, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_steps(s, steps), 0);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_THREADS, 2), 0);
    const size_t N = tu_count_min(20000, 2000); /* the wrong-target check needs ~1000 */
    int32_t *tok = calloc(N * MD, 4), *saved = calloc(N * MD, 4);
    double st = 0.6;
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = flattened ? met_model_state : met_model_tok;
    a.model_data = &m;
    a.rows = N; a.tokens = tok; a.draw_source = 1;
    a.save_times = &st; a.n_save = 1; a.saved_tokens = saved;
    ck_assert_msg(dfm_sampler_run(s, &a) == 0, "%s", dfm_sampler_last_error(s));
    long c1[MS] = {0}, ch[MS] = {0};
    for (size_t r = 0; r < N; r++) {
        c1[tok[r * MD] * MV + tok[r * MD + 1]]++;
        ch[saved[r * MD] * MV + saved[r * MD + 1]]++;
    }
    double ex[MS], tmax;
    ck_assert_int_eq(dfm_sampler_get_double(s, DFM_OPT_CT_TMAX, &tmax), 0);
    met_marginal(&m, 0.6, ex);
    TU_ASSERT_CHI2(ch, ex, MS, (long)N);
    TU_ASSERT_CHI2(c1, m.q, MS, (long)N);
    /* a wrong target (t = 0.5 instead of 0.6) fails */
    met_marginal(&m, 0.5, ex);
    int dof;
    ck_assert(tu_chi2(ch, ex, MS, (long)N, &dof) > tu_chi2_bound(dof));
    free(tok); free(saved);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    dfm_path_free(p);
}

START_TEST(metric_factorized_uniformization_reproduces_target)
{
    met_sample(0, DFM_METHOD_UNIFORMIZATION, 8);
}
END_TEST

START_TEST(metric_flattened_rate_matrix_reproduces_target)
{
    met_sample(1, DFM_METHOD_UNIFORMIZATION, 8);
}
END_TEST

START_TEST(metric_factorized_euler_converges)
{
    met m;
    met_target(&m);
    dfm_path *p = make_metric(0);
    dfm_generator *g = NULL;
    ck_assert_int_eq(dfm_generator_create_metric(&g, p, NULL), 0);
    ck_assert_uint_eq(dfm_generator_out_stride(g), MD * MV);
    dfm_sampler *s = NULL;
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_EULER, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 100), 0);
    const size_t N = tu_count(10000);
    int32_t *tok = calloc(N * MD, 4);
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = met_model_tok; a.model_data = &m;
    a.rows = N; a.tokens = tok; a.draw_source = 1;
    ck_assert_msg(dfm_sampler_run(s, &a) == 0, "%s", dfm_sampler_last_error(s));
    long c1[MS] = {0};
    for (size_t r = 0; r < N; r++) c1[tok[r * MD] * MV + tok[r * MD + 1]]++;
    ck_assert_msg(tu_tv(c1, m.q, MS, (long)N) < tu_tol(0.05, 10000, N), "tv %g", tu_tv(c1, m.q, MS, (long)N));
    free(tok);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    dfm_path_free(p);
}
END_TEST

START_TEST(fixed_coordinates_never_change)
{
    met m;
    met_target(&m);
    dfm_path *p = make_metric(0);
    for (int flat = 0; flat < 2; flat++)
        for (int meth = 0; meth < 3; meth++) {
            const int methods[3] = {DFM_METHOD_EULER, DFM_METHOD_UNIFORMIZATION,
                                    DFM_METHOD_GILLESPIE};
            dfm_generator *g = NULL;
            if (flat)
                ck_assert_int_eq(dfm_generator_create_rate_matrix(&g, p, NULL,
                                                                  DFM_PARAM_STATE_LOGITS, NULL), 0);
            else
                ck_assert_int_eq(dfm_generator_create_metric(&g, p, NULL), 0);
            dfm_sampler *s = NULL;
            ck_assert_int_eq(dfm_sampler_create(&s, g, methods[meth], NULL), 0);
            ck_assert_int_eq(dfm_sampler_set_steps(s, 8), 0);
            enum { N = 400 };
            int32_t tok[N * MD];
            uint8_t fx[N * MD];
            for (int r = 0; r < N; r++) {
                tok[r * MD] = 0; tok[r * MD + 1] = r % MV;
                fx[r * MD] = 0; fx[r * MD + 1] = 1;
            }
            dfm_run_args a;
            memset(&a, 0, sizeof a);
            a.struct_size = sizeof a;
            a.model = flat ? met_model_state : met_model_tok; a.model_data = &m;
            a.rows = N; a.tokens = tok; a.fixed = fx; a.draw_source = 1;
            ck_assert_msg(dfm_sampler_run(s, &a) == 0, "%s", dfm_sampler_last_error(s));
            int moved = 0;
            for (int r = 0; r < N; r++) {
                ck_assert_int_eq(tok[r * MD + 1], r % MV);
                moved += tok[r * MD] != 0;
            }
            ck_assert_int_gt(moved, N / 4);
            dfm_sampler_free(s);
            dfm_generator_free(g);
        }
    dfm_path_free(p);
}
END_TEST

/* ---------- Bregman loss ---------- */

START_TEST(bregman_value_and_gradient)
{
    double a[5] = {0.3, 0.0, 2.0, 1.1, 0.7}, b[5] = {0.5, 0.2, 1.5, 1.1, 2.0}, g[5], v;
    ck_assert_int_eq(dfm_bregman_rates(a, b, 5, &v, g), 0);
    double ex = 0.0;
    for (int y = 0; y < 5; y++) ex += (a[y] > 0 ? a[y] * log(a[y] / b[y]) : 0.0) - a[y] + b[y];
    ck_assert(fabs(v - ex) < 1e-14);
    for (int y = 0; y < 5; y++) {
        double bp[5], bm[5], vp, vm, e = 1e-6;
        memcpy(bp, b, sizeof b); memcpy(bm, b, sizeof b);
        bp[y] += e; bm[y] -= e;
        dfm_bregman_rates(a, bp, 5, &vp, NULL);
        dfm_bregman_rates(a, bm, 5, &vm, NULL);
        ck_assert(fabs((vp - vm) / (2 * e) - g[y]) < 1e-7);
    }
    b[2] = 0.0;
    ck_assert_int_eq(dfm_bregman_rates(a, b, 5, &v, g), DFM_ENUMERIC);

    /* the loss handle: targets are the metric path's conditional rates */
    dfm_path *p = make_metric(0);
    dfm_generator *gen = NULL;
    ck_assert_int_eq(dfm_generator_create_rate_matrix(&gen, p, NULL, DFM_PARAM_RATES, NULL), 0);
    dfm_loss *l = NULL;
    ck_assert_int_eq(dfm_loss_create_bregman_rates(&l, gen, NULL), 0);
    ck_assert_int_eq(dfm_loss_kind(l), DFM_LOSS_BREGMAN_RATES);
    enum { R = 3 };
    int32_t x1[R * MD] = {0, 4, 2, 2, 3, 1}, xt[R * MD] = {1, 4, 0, 2, 3, 3};
    double t[R] = {0.2, 0.5, 0.8}, loss;
    float out[R * MS], grad[R * MS];
    unsigned sd = 5u;
    for (size_t i = 0; i < R * MS; i++) out[i] = (float)(0.2 + lcg(&sd));
    dfm_loss_args la;
    memset(&la, 0, sizeof la);
    la.struct_size = sizeof la;
    la.rows = R; la.t = t; la.x1_tokens = x1; la.xt_tokens = xt; la.out = out; la.grad = grad;
    la.loss = &loss;
    ck_assert_msg(dfm_loss_eval(l, &la) == 0, "%s", dfm_loss_last_error(l));
    /* reference value: per-coordinate conditional rates of the path */
    double ref = 0.0, Q[MV * MV];
    for (size_t r = 0; r < R; r++) {
        int xs = xt[r * MD] * MV + xt[r * MD + 1];
        for (int y = 0; y < MS; y++) {
            if (y == xs) continue;
            double ay = 0.0;
            int dif0 = y / MV != xt[r * MD], dif1 = y % MV != xt[r * MD + 1];
            if (dif0 && !dif1) {
                dfm_path_cond_rates(p, t[r], x1[r * MD], Q);
                ay = Q[xt[r * MD] * MV + y / MV];
            } else if (dif1 && !dif0) {
                dfm_path_cond_rates(p, t[r], x1[r * MD + 1], Q);
                ay = Q[xt[r * MD + 1] * MV + y % MV];
            }
            double by = out[r * MS + y];
            ref += (ay > 0 ? ay * log(ay / by) : 0.0) - ay + by;
        }
    }
    ck_assert_msg(fabs(loss - ref / R) < 1e-6 * (1 + fabs(ref)), "loss %g ref %g", loss, ref / R);
    /* gradient vs central differences */
    for (size_t i = 0; i < R * MS; i += 7) {
        float keep = out[i];
        double lp, lm, e = 1e-3;
        out[i] = (float)(keep + e); la.grad = NULL; la.loss = &lp;
        ck_assert_int_eq(dfm_loss_eval(l, &la), 0);
        double ep = (double)out[i] - keep;
        out[i] = (float)(keep - e); la.loss = &lm;
        ck_assert_int_eq(dfm_loss_eval(l, &la), 0);
        double em = keep - (double)out[i];
        out[i] = keep;
        double fd = (lp - lm) / (ep + em);
        ck_assert_msg(fabs(fd - grad[i]) < 2e-3 * (1 + fabs(fd)), "i %zu fd %g grad %g", i, fd,
                      (double)grad[i]);
    }
    /* bad input: a zero model rate where the target is positive; t = 1 */
    la.grad = grad; la.loss = &loss;
    float o2[R * MS];
    memcpy(o2, out, sizeof out);
    for (size_t i = 0; i < R * MS; i++) o2[i] = 0.0f;
    la.out = o2;
    ck_assert_int_eq(dfm_loss_eval(l, &la), DFM_ENUMERIC);
    ck_assert_ptr_nonnull(strstr(dfm_loss_last_error(l), "row 0"));
    la.out = out;
    t[1] = 1.0;
    ck_assert_int_eq(dfm_loss_eval(l, &la), DFM_ERANGE);
    dfm_loss_free(l);
    dfm_generator_free(gen);
    dfm_path_free(p);
}
END_TEST

/* ---------- bad input ---------- */

START_TEST(bad_input_is_reported)
{
    /* S too large */
    dfm_space *big = NULL, *sp = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&big, 2, 13, NULL), 0);
    size_t S;
    ck_assert_int_eq(dfm_ctmc_n_states(big, &S), DFM_ELIMIT);
    dfm_generator *g = NULL;
    ck_assert_int_eq(dfm_generator_create_rate_matrix(&g, NULL, big, DFM_PARAM_RATES, NULL),
                     DFM_ELIMIT);
    ck_assert_ptr_null(g);
    fin f;
    fin_init(&f);
    dfm_path *p = NULL;
    ck_assert_int_eq(dfm_path_create_finite(&p, big, fin_cond, &f, NULL), DFM_ELIMIT);
    dfm_ctmc *w = NULL;
    ck_assert_int_eq(dfm_ctmc_create(&w, 5000, NULL), DFM_ELIMIT);
    ck_assert_ptr_null(w);
    ck_assert_uint_eq(dfm_ctmc_max_states(), DFM_CTMC_MAX_STATES);
    dfm_space_free(big);

    /* NaN / negative off-diagonal entries in a kernel request; inputs untouched */
    ck_assert_int_eq(dfm_ctmc_create(&w, 3, NULL), 0);
    double Q[9] = {0, 1, 2, 1, 0, NAN, 0, 0, 0}, Qc[9], K[9] = {5, 5, 5, 5, 5, 5, 5, 5, 5};
    memcpy(Qc, Q, sizeof Q);
    ck_assert_int_eq(dfm_ctmc_kernel(w, Q, 1.0, K), DFM_ENUMERIC);
    ck_assert_ptr_nonnull(strstr(dfm_ctmc_last_error(w), "Q[1][2]"));
    ck_assert(K[0] == 5.0 && memcmp(Q, Qc, sizeof Q) == 0);
    Q[5] = -1.0;
    ck_assert_int_eq(dfm_ctmc_kernel(w, Q, 1.0, K), DFM_ENUMERIC);
    ck_assert_int_eq(dfm_ctmc_kernel(w, NULL, 1.0, K), DFM_EINVAL);
    ck_assert_int_eq(dfm_ctmc_kernel(NULL, Q, 1.0, K), DFM_EINVAL);
    Q[5] = 1.0;
    ck_assert_int_eq(dfm_ctmc_kernel(w, Q, -1.0, K), DFM_EINVAL);
    ck_assert_int_eq(dfm_ctmc_expm(w, Q, 1.0, (double *)Q), DFM_EINVAL);
    dfm_ctmc_free(w);

    /* a failing rate callback in the ODE */
    ck_assert_int_eq(dfm_ctmc_create(&w, FS, NULL), 0);
    ck_assert_int_eq(dfm_space_create_discrete(&sp, FV, FD, NULL), 0);
    ck_assert_int_eq(dfm_path_create_finite(&p, sp, fin_cond, &f, NULL), 0);
    fin_ode o = {p, &f};
    double pt[FS];
    f.fail = 1;
    ck_assert_int_eq(dfm_ctmc_propagate_ode(w, f.u, 1, fin_marginal_rates, &o, 0.0, 0.5, 4, pt),
                     DFM_ECALLBACK);
    ck_assert_int_eq(dfm_ctmc_callback_status(w), 1);
    dfm_ctmc_free(w);
    /* a failing path callback inside a sampler and inside path sampling */
    ck_assert_int_eq(dfm_generator_create_rate_matrix(&g, p, NULL, DFM_PARAM_STATE_LOGITS, NULL), 0);
    dfm_sampler *s = NULL;
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_UNIFORMIZATION, NULL), 0);
    int32_t tok[4 * FD] = {0}, tokc[4 * FD];
    memcpy(tokc, tok, sizeof tok);
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = fin_model; a.model_data = &f; a.rows = 4; a.tokens = tok;
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ECALLBACK);
    ck_assert_int_eq(dfm_sampler_callback_status(s), 42);
    ck_assert(memcmp(tok, tokc, sizeof tok) == 0);
    f.fail = 0;
    /* tokens out of range */
    tok[2] = 3;
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ERANGE);
    tok[2] = 0;
    /* unsupported method */
    dfm_sampler *s2 = NULL;
    ck_assert_int_eq(dfm_sampler_create(&s2, g, DFM_METHOD_RK4, NULL), DFM_EUNSUPPORTED);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    dfm_path_free(p);
    dfm_space_free(sp);

    /* model rates: negative, NaN, a failing model, a host rate bound that is exceeded */
    ck_assert_int_eq(dfm_space_create_discrete(&sp, HS, 1, NULL), 0);
    ck_assert_int_eq(dfm_generator_create_rate_matrix(&g, NULL, sp, DFM_PARAM_RATES, NULL), 0);
    dfm_generator *g_bad = NULL;
    ck_assert_int_eq(dfm_generator_create_rate_matrix(&g_bad, NULL, sp, DFM_PARAM_STATE_LOGITS,
                                                      NULL), DFM_EINVAL);
    ck_assert_ptr_null(g_bad);
    const int methods[3] = {DFM_METHOD_EULER, DFM_METHOD_UNIFORMIZATION, DFM_METHOD_GILLESPIE};
    hom h;
    hom_init(&h);
    int32_t ht[8] = {0, 1, 2, 3, 4, 5, 2, 1}, htc[8];
    memcpy(htc, ht, sizeof ht);
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = hom_model; a.model_data = &h; a.rows = 8; a.tokens = ht;
    for (int m = 0; m < 3; m++) {
        ck_assert_int_eq(dfm_sampler_create(&s, g, methods[m], NULL), 0);
        h.bad = 1;
        ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ENUMERIC);
        ck_assert_ptr_nonnull(strstr(dfm_sampler_last_error(s), "from state 2 to state 4"));
        h.bad = 2;
        ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ENUMERIC);
        ck_assert_ptr_nonnull(strstr(dfm_sampler_last_error(s), "from state 1 to state 3"));
        h.bad = 0;
        h.fail = 1;
        ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ECALLBACK);
        ck_assert_int_eq(dfm_sampler_callback_status(s), 7);
        h.fail = 0;
        ck_assert(memcmp(ht, htc, sizeof ht) == 0);
        ck_assert_int_eq(dfm_sampler_run(NULL, &a), DFM_EINVAL);
        ck_assert_int_eq(dfm_sampler_run(s, NULL), DFM_EINVAL);
        /* draw_source without a path */
        a.draw_source = 1;
        ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_EINVAL);
        a.draw_source = 0;
        dfm_sampler_free(s);
    }
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_UNIFORMIZATION, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_CT_RATE_BOUND, 0.5), 0);
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ELIMIT);
    ck_assert_ptr_nonnull(strstr(dfm_sampler_last_error(s), "exceeds the host rate bound"));
    ck_assert(memcmp(ht, htc, sizeof ht) == 0);
    ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_CT_RATE_BOUND, -1.0), DFM_EINVAL);
    ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_CT_TMAX, 0.0), DFM_EINVAL);
    ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_CT_BOUND_SAFETY, 0.5), DFM_EINVAL);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    dfm_space_free(sp);

    /* metric path: invalid distances */
    dfm_scheduler *sc = NULL;
    ck_assert_int_eq(dfm_scheduler_create_condot(&sc, NULL), 0);
    ck_assert_int_eq(dfm_space_create_discrete(&sp, 3, 2, NULL), 0);
    double D[9] = {0, 1, 2, 1, 0, 1, 2, 1, 0};
    ck_assert_int_eq(dfm_path_create_metric(&p, sp, sc, 1.0, D, NULL, NULL, NULL), 0);
    dfm_path_free(p);
    D[1] = 0.0;
    ck_assert_int_eq(dfm_path_create_metric(&p, sp, sc, 1.0, D, NULL, NULL, NULL), DFM_EINVAL);
    D[1] = NAN;
    ck_assert_int_eq(dfm_path_create_metric(&p, sp, sc, 1.0, D, NULL, NULL, NULL), DFM_EINVAL);
    D[1] = 1.0;
    ck_assert_int_eq(dfm_path_create_metric(&p, sp, sc, 0.0, D, NULL, NULL, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_path_create_metric(&p, sp, sc, 1.0, D, dist_cb, NULL, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_path_create_metric(&p, sp, NULL, 1.0, D, NULL, NULL, NULL), DFM_EINVAL);
    ck_assert_ptr_null(p);
    dfm_scheduler_free(sc);
    dfm_space_free(sp);

    /* kinetic rates and flattening */
    double pr[3] = {0.5, 0.5, 0.0}, dp[3] = {-1, 0.5, 0.5}, KQ[9];
    ck_assert_int_eq(dfm_ctmc_kinetic_rates(pr, dp, 3, KQ), 0);
    pr[0] = NAN;
    ck_assert_int_eq(dfm_ctmc_kinetic_rates(pr, dp, 3, KQ), DFM_ENUMERIC);
    ck_assert_int_eq(dfm_space_create_discrete(&sp, 4, 3, NULL), 0);
    int32_t tk[6] = {1, 2, 3, 0, 0, 1}, st2[2], back[6];
    ck_assert_int_eq(dfm_ctmc_flatten(sp, tk, 2, st2), 0);
    ck_assert_int_eq(st2[0], 1 * 16 + 2 * 4 + 3);
    ck_assert_int_eq(st2[1], 1);
    ck_assert_int_eq(dfm_ctmc_unflatten(sp, st2, 2, back), 0);
    ck_assert(memcmp(tk, back, sizeof tk) == 0);
    tk[0] = 4;
    ck_assert_int_eq(dfm_ctmc_flatten(sp, tk, 2, st2), DFM_ERANGE);
    st2[0] = 64;
    ck_assert_int_eq(dfm_ctmc_unflatten(sp, st2, 2, back), DFM_ERANGE);
    dfm_space_free(sp);
}
END_TEST

/* ---------- save times, progress and stop ---------- */

static int stop_at_2(int step, int n, double t, void *ud)
{
    (void)n; (void)t;
    ++*(int *)ud;
    return step == 2;
}

START_TEST(progress_stops_and_leaves_tokens)
{
    dfm_space *sp = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, HS, 1, NULL), 0);
    dfm_generator *g = NULL;
    ck_assert_int_eq(dfm_generator_create_rate_matrix(&g, NULL, sp, DFM_PARAM_RATES, NULL), 0);
    dfm_sampler *s = NULL;
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_GILLESPIE, NULL), 0);
    hom h;
    hom_init(&h);
    int32_t tok[16] = {0};
    int calls = 0;
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = hom_model; a.model_data = &h; a.rows = 16; a.tokens = tok;
    a.progress = stop_at_2; a.progress_data = &calls;
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ESTOPPED);
    ck_assert_int_eq(calls, 3);
    for (int i = 0; i < 16; i++) ck_assert_int_eq(tok[i], 0);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    dfm_space_free(sp);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ctmc");
    TCase *tc = tu_tcase("ctmc");
    tcase_add_test(tc, expm_two_state_closed_form);
    tcase_add_test(tc, expm_uniform_rate_chain);
    tcase_add_test(tc, expm_vs_small_steps_and_stochastic);
    tcase_add_test(tc, finite_path_kolmogorov);
    tcase_add_test(tc, finite_uniformization_matches_path);
    tcase_add_test(tc, finite_euler_converges);
    tcase_add_test(tc, homogeneous_exact_samplers_match_expm);
    tcase_add_test(tc, homogeneous_euler_converges_and_clamps);
    tcase_add_test(tc, inhomogeneous_uniformization_and_split);
    tcase_add_test(tc, metric_rates_satisfy_kolmogorov);
    tcase_add_test(tc, metric_factorized_uniformization_reproduces_target);
    tcase_add_test(tc, metric_flattened_rate_matrix_reproduces_target);
    tcase_add_test(tc, metric_factorized_euler_converges);
    tcase_add_test(tc, fixed_coordinates_never_change);
    tcase_add_test(tc, bregman_value_and_gradient);
    tcase_add_test(tc, bad_input_is_reported);
    tcase_add_test(tc, progress_stops_and_leaves_tokens);
    suite_add_tcase(s, tc);
    return tu_run(s) ? 1 : 0;
}
