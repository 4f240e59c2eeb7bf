/* Exact targets of the discrete samplers' suites (DESIGN.md §4): a known q on a small [V]^d
 * whose exact posterior, computed by enumeration, is the model. Included by test_discrete.c and
 * test_infer.c (define DS_MAXS first for a larger space). */
#ifndef DFM_DS_TARGET_H
#define DFM_DS_TARGET_H

#include "testutil.h"

#include <stdio.h>

#ifndef DS_MAXS
#define DS_MAXS 128 /* states of the largest test space (4^3 = 64, 5^3 = 125) */
#endif
#define MAXS DS_MAXS

/* ---- exact target ---- */
typedef struct target {
    int V;         /* space vocabulary (includes the mask token for the mask source) */
    int d;
    int qV;        /* data vocabulary: q lives on [qV]^d */
    double q[MAXS];/* q over [qV]^d, index sum x^i qV^i */
    int source;
    int mask;
    double p0[8];  /* source over [V] */
    dfm_scheduler *sched;
    double t_shift; /* deliberately wrong model time (manual checks only) */
    int fixed_coord;/* conditional target: coord fixed_coord == fixed_val (or -1) */
    int fixed_val;
    long calls;
} target;

static const struct target *g_table_T;
static inline int ipow(int b, int e) { int r = 1; while (e--) r *= b; return r; }

static inline void decode(int idx, int base, int d, int *x)
{
    for (int i = 0; i < d; i++) { x[i] = idx % base; idx /= base; }
}

static inline double kappa_of(const target *T, double t)
{
    dfm_sched_values v;
    if (dfm_scheduler_eval(T->sched, t, &v, NULL)) return NAN; /* no ck_assert in hot loops */
    return v.alpha;
}

/* p_t(x^i | x1^i) of the mixture path */
static inline double pt_cond(const target *T, double k, int x, int x1)
{
    return (1.0 - k) * T->p0[x] + (x == x1 ? k : 0.0);
}

/* The exact posterior marginals as logits for one state x_t at kappa k. */
static inline int posterior_logits(const target *T, double k, const int32_t *xt, float *out)
{
    int S = ipow(T->qV, T->d);
    double marg[8][8];
    memset(marg, 0, sizeof marg);
    double Z = 0.0;
    for (int s = 0; s < S; s++) {
        int x1[8];
        decode(s, T->qV, T->d, x1);
        double w = T->q[s];
        for (int i = 0; i < T->d && w > 0.0; i++)
            w *= i == T->fixed_coord ? (double)(xt[i] == x1[i]) : pt_cond(T, k, xt[i], x1[i]);
        if (w <= 0.0) continue;
        Z += w;
        for (int i = 0; i < T->d; i++) marg[i][x1[i]] += w;
    }
    for (int i = 0; i < T->d; i++)
        for (int y = 0; y < T->V; y++)
            out[i * T->V + y] = (Z > 0.0 && marg[i][y] > 0.0) ? (float)log(marg[i][y] / Z) : -INFINITY;
    return Z > 0.0 ? 0 : 99; /* 99: an impossible state, never reached by a correct sampler */
}

/* The model: exact posterior logits, tabulated over all states whenever t changes. */
static float g_table[MAXS * 32];
static int g_table_ok[MAXS];
static double g_table_t = -1.0;

static inline int exact_model(const dfm_model_io *io, void *ud)
{
    target *T = (target *)ud;
    T->calls++;
    size_t w = (size_t)(T->d * T->V);
    for (size_t r = 0; r < io->rows; r++) {
        double t = io->t[r] + T->t_shift;
        if (t > 1.0) t = 1.0;
        if (t != g_table_t || g_table_T != T) {
            double k = kappa_of(T, t);
            int SV = ipow(T->V, T->d);
            for (int a = 0; a < SV; a++) {
                int x[8];
                int32_t xi[8];
                decode(a, T->V, T->d, x);
                for (int i = 0; i < T->d; i++) xi[i] = x[i];
                g_table_ok[a] = posterior_logits(T, k, xi, g_table + (size_t)a * w) == 0;
            }
            g_table_t = t;
            g_table_T = T;
        }
        const int32_t *xt = io->tokens + r * io->n_tokens;
        int idx = 0;
        for (int i = T->d - 1; i >= 0; i--) idx = idx * T->V + xt[i];
        if (!g_table_ok[idx]) return 99;
        memcpy(io->out + r * io->out_stride, g_table + (size_t)idx * w, w * sizeof(float));
    }
    return 0;
}

/* Direct rates model: u^i(y, x) = kappa'/(1 - kappa) p_{1|t}^i(y | x), y != x^i. */
static inline int exact_rates_model(const dfm_model_io *io, void *ud)
{
    target *T = (target *)ud;
    int rc = exact_model(io, ud);
    if (rc) return rc;
    for (size_t r = 0; r < io->rows; r++) {
        dfm_sched_values v;
        dfm_scheduler_eval(T->sched, io->t[r], &v, NULL);
        double c = v.d_alpha / (1.0 - v.alpha);
        float *out = io->out + r * io->out_stride;
        for (int i = 0; i < T->d; i++)
            for (int y = 0; y < T->V; y++) {
                float z = out[i * T->V + y];
                out[i * T->V + y] = y == io->tokens[r * io->n_tokens + i] ? NAN /* ignored */
                                                                          : (float)(c * exp(z));
            }
    }
    return 0;
}

static inline void make_q(target *T)
{
    int S = ipow(T->qV, T->d);
    double tot = 0.0;
    for (int s = 0; s < S; s++) {
        int x[8];
        decode(s, T->qV, T->d, x);
        double w = 0.2 + (double)((x[0] + 2 * x[1 % T->d] + x[0] * x[(2) % T->d]) % 5);
        if (T->d > 1 && x[0] == x[1]) w += 3.0;
        T->q[s] = w;
        tot += w;
    }
    for (int s = 0; s < S; s++) T->q[s] /= tot;
}

/* A product q (independent coordinates): the posterior factorizes, so the exact step is exact
 * for any number of steps. */
static inline void make_q_product(target *T)
{
    const double m[3][3] = {{0.6, 0.1, 0.3}, {0.15, 0.25, 0.6}, {0.3, 0.5, 0.2}};
    int S = ipow(T->qV, T->d);
    for (int s = 0; s < S; s++) {
        int x[8];
        decode(s, T->qV, T->d, x);
        double w = 1.0;
        for (int i = 0; i < T->d; i++) w *= m[i % 3][x[i]];
        T->q[s] = w;
    }
}

static inline dfm_scheduler *make_sched(int kind)
{
    dfm_scheduler *s = NULL;
    if (kind == DFM_SCHED_CONDOT) ck_assert_int_eq(dfm_scheduler_create_condot(&s, NULL), 0);
    if (kind == DFM_SCHED_POLYNOMIAL) ck_assert_int_eq(dfm_scheduler_create_polynomial(&s, 2.0, NULL), 0);
    if (kind == DFM_SCHED_COSINE) ck_assert_int_eq(dfm_scheduler_create_cosine(&s, NULL), 0);
    return s;
}

/* A target on [3]^d with the given source (mask: V = 4, mask token 3). */
static inline void target_init(target *T, int d, int source, int sched_kind)
{
    memset(T, 0, sizeof *T);
    T->d = d;
    T->qV = 3;
    T->source = source;
    T->fixed_coord = -1;
    if (source == DFM_SOURCE_MASK) { T->V = 4; T->mask = 3; T->p0[3] = 1.0; }
    else if (source == DFM_SOURCE_UNIFORM) { T->V = 3; for (int j = 0; j < 3; j++) T->p0[j] = 1.0 / 3; }
    else { T->V = 3; T->p0[0] = 0.5; T->p0[1] = 0.2; T->p0[2] = 0.3; }
    T->sched = make_sched(sched_kind);
    make_q(T);
    g_table_T = NULL;
    if (getenv("DS_TSHIFT")) T->t_shift = atof(getenv("DS_TSHIFT"));
}

static inline dfm_path *target_path(const target *T)
{
    dfm_space *sp = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, T->V, (size_t)T->d, NULL), 0);
    dfm_path *p = NULL;
    int st = dfm_path_create_mixture(&p, sp, T->sched, T->source, T->mask,
                                     T->source == DFM_SOURCE_CUSTOM ? T->p0 : NULL, NULL);
    ck_assert_int_eq(st, 0);
    dfm_space_free(sp);
    return p;
}

static inline dfm_sampler *target_sampler(const target *T, int param, int method)
{
    dfm_path *p = target_path(T);
    dfm_generator *g = NULL;
    ck_assert_int_eq(dfm_generator_create_factorized(&g, p, param, NULL), 0);
    ck_assert_uint_eq(dfm_generator_out_stride(g), (size_t)(T->d * T->V));
    dfm_sampler *s = NULL;
    ck_assert_int_eq(dfm_sampler_create(&s, g, method, NULL), 0);
    dfm_path_free(p);
    dfm_generator_free(g);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_SEED, 1234), 0);
    return s;
}

/* Runs s on n rows from the source and returns the histogram of the final states over [qV]^d
 * (asserting no leftover mask). saved (optional): n_save states at save_times, histogram over [V]^d. */
static inline void run_hist(dfm_sampler *s, target *T, size_t n, long *hist, const double *save_times,
                     size_t n_save, long *saved_hist, dfm_model_fn model)
{
    int32_t *tok = calloc(n * (size_t)T->d, sizeof(int32_t));
    int32_t *sv = n_save ? calloc(n_save * n * (size_t)T->d, sizeof(int32_t)) : NULL;
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = model ? model : exact_model;
    a.model_data = T;
    a.rows = n;
    a.tokens = tok;
    a.draw_source = 1;
    a.save_times = save_times;
    a.n_save = n_save;
    a.saved_tokens = sv;
    int st = dfm_sampler_run(s, &a);
    ck_assert_msg(st == 0, "run: %d %s", st, dfm_sampler_last_error(s));
    int S = ipow(T->qV, T->d);
    memset(hist, 0, sizeof(long) * (size_t)S);
    long bad = 0;
    for (size_t r = 0; r < n; r++) {
        int idx = 0;
        for (int i = T->d - 1; i >= 0; i--) {
            int x = tok[r * (size_t)T->d + (size_t)i];
            if (x < 0 || x >= T->qV) { bad++; x = 0; }
            idx = idx * T->qV + x;
        }
        hist[idx]++;
    }
    ck_assert_msg(bad == 0, "%ld final tokens not in the data vocabulary", bad);
    if (n_save) {
        int SV = ipow(T->V, T->d);
        memset(saved_hist, 0, sizeof(long) * n_save * (size_t)SV);
        for (size_t k = 0; k < n_save; k++)
            for (size_t r = 0; r < n; r++) {
                int idx = 0;
                for (int i = T->d - 1; i >= 0; i--) idx = idx * T->V + sv[(k * n + r) * (size_t)T->d + (size_t)i];
                saved_hist[k * (size_t)SV + (size_t)idx]++;
            }
    }
    free(tok);
    free(sv);
}

/* Exact marginal p_t over [V]^d. */
static inline void marginal_pt(const target *T, double t, double *pt)
{
    double k = kappa_of(T, t);
    int SV = ipow(T->V, T->d), S = ipow(T->qV, T->d);
    for (int a = 0; a < SV; a++) {
        int x[8];
        decode(a, T->V, T->d, x);
        double acc = 0.0;
        for (int s = 0; s < S; s++) {
            int x1[8];
            decode(s, T->qV, T->d, x1);
            double w = T->q[s];
            for (int i = 0; i < T->d; i++) w *= pt_cond(T, k, x[i], x1[i]);
            acc += w;
        }
        pt[a] = acc;
    }
}

#define NS_FULL 20000
#define NS ((long)tu_count(NS_FULL)) /* DFM_TEST_SCALE divides it (testutil.h) */

#endif
