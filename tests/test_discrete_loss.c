/* Discrete losses (generalized KL, cross-entropy), the training-time t sampler and the discrete
 * ELBO: hand-computed values, finite-difference gradients, reductions, fixed positions, thread
 * independence, bad input, distributions of t, and tightness of the ELBO on an exact posterior. */
#include "testutil.h"

#include <float.h>
#include <stdint.h>
#include <stdio.h>

#define PI_ 3.14159265358979323846

static dfm_path *make_path(int32_t V, size_t d, int source, int32_t mask, int sched_kind)
{
    dfm_space *sp = NULL;
    dfm_scheduler *s = NULL;
    dfm_path *p = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, V, d, NULL), 0);
    if (sched_kind == DFM_SCHED_COSINE) ck_assert_int_eq(dfm_scheduler_create_cosine(&s, NULL), 0);
    else ck_assert_int_eq(dfm_scheduler_create_condot(&s, NULL), 0);
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, s, source, mask, NULL, NULL), 0);
    dfm_space_free(sp);
    dfm_scheduler_free(s);
    return p;
}

/* Reference in double: the DESIGN.md formula with an exact softmax. */
static double ref_gkl(const float *z, int V, int a, int b, double c)
{
    double m = -INFINITY, s = 0.0;
    for (int j = 0; j < V; j++) m = z[j] > m ? z[j] : m;
    for (int j = 0; j < V; j++) s += exp((double)z[j] - m);
    double pa = exp((double)z[a] - m) / s, lpb = (double)z[b] - m - log(s);
    double dl = a == b ? 1.0 : 0.0;
    return -c * (pa - dl + (1.0 - dl) * lpb);
}

static double ref_ce(const float *z, int V, int b)
{
    double m = -INFINITY, s = 0.0;
    for (int j = 0; j < V; j++) m = z[j] > m ? z[j] : m;
    for (int j = 0; j < V; j++) s += exp((double)z[j] - m);
    return -((double)z[b] - m - log(s));
}

static uint64_t lcg = 12345;
static double urand(void)
{
    lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(lcg >> 11) * (1.0 / 9007199254740992.0);
}

#define CLOSE(x, y, tol) ck_assert_msg(fabs((x) - (y)) <= (tol) * (1.0 + fabs(y)), \
                                       "%s = %.12g, expected %.12g", #x, (double)(x), (double)(y))

START_TEST(gkl_hand_values)
{
    dfm_path *p = make_path(3, 2, DFM_SOURCE_UNIFORM, 0, DFM_SCHED_CONDOT);
    dfm_loss *l = NULL;
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
    ck_assert_int_eq(dfm_loss_kind(l), DFM_LOSS_GENERALIZED_KL);
    /* t = 0.5, kappa = t: c = 1/(1 - 0.5) = 2. Coordinate 0: p = (1/6, 2/6, 3/6), x_t = 2,
     * x1 = 1: l = -2 (1/2 + log 1/3). Coordinate 1: p = 1/3 each, x_t = x1 = 0: l = 4/3. */
    float z[6] = {0.0f, (float)log(2.0), (float)log(3.0), 1.0f, 1.0f, 1.0f};
    double t = 0.5, loss = 0, vals[2];
    int32_t x1[2] = {1, 0}, xt[2] = {2, 0};
    float g[6];
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_REDUCTION, DFM_REDUCE_NONE), 0);
    dfm_loss_args a = tu_loss_args(1, &t, x1, xt, z, g, vals, &loss);
    ck_assert_int_eq(dfm_loss_eval(l, &a), 0);
    CLOSE(vals[0], -1.0 + 2.0 * log(3.0), 1e-6);
    CLOSE(vals[1], 4.0 / 3.0, 1e-6);
    CLOSE(loss, 1.0 / 3.0 + 2.0 * log(3.0), 1e-6);
    /* Gradient: c (p_a + 1 - delta) p_j - c p_a [j = a] - c (1 - delta) [j = b]. */
    double ge[6] = {0.5, -1.0, 0.5, -4.0 / 9.0, 2.0 / 9.0, 2.0 / 9.0};
    for (int j = 0; j < 6; j++) CLOSE(g[j], ge[j], 1e-6);
    /* Mean: divided by the 2 counted coordinates. */
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_REDUCTION, DFM_REDUCE_MEAN), 0);
    ck_assert_int_eq(dfm_loss_eval(l, &a), 0);
    CLOSE(loss, (1.0 / 3.0 + 2.0 * log(3.0)) / 2.0, 1e-6);
    for (int j = 0; j < 6; j++) CLOSE(g[j], ge[j] / 2.0, 1e-6);
    /* t = 0 is fine (c = 1). */
    t = 0.0;
    ck_assert_int_eq(dfm_loss_eval(l, &a), 0);
    CLOSE(loss, (1.0 / 3.0 + 2.0 * log(3.0)) / 4.0, 1e-6);
    dfm_loss_free(l);
    dfm_path_free(p);
}
END_TEST

START_TEST(ce_hand_values)
{
    dfm_path *p = make_path(3, 2, DFM_SOURCE_MASK, 2, DFM_SCHED_CONDOT);
    dfm_loss *l = NULL, *lc = NULL;
    ck_assert_int_eq(dfm_loss_create_cross_entropy(&l, p, 0, NULL), 0);
    ck_assert_int_eq(dfm_loss_create_cross_entropy(&lc, p, 1, NULL), 0);
    ck_assert_int_eq(dfm_loss_kind(l), DFM_LOSS_CROSS_ENTROPY);
    float z[6] = {0.0f, (float)log(2.0), (float)log(3.0), 1.0f, 1.0f, 1.0f};
    double t = 0.3, loss = 0;
    int32_t x1[2] = {1, 0}, xt[2] = {2, 0};
    float g[6];
    dfm_loss_args a = tu_loss_args(1, &t, x1, NULL, z, g, NULL, &loss);
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_REDUCTION, DFM_REDUCE_SUM), 0);
    ck_assert_int_eq(dfm_loss_eval(l, &a), 0); /* x_t not needed */
    CLOSE(loss, 2.0 * log(3.0), 1e-6);
    double ge[6] = {1.0 / 6.0, 1.0 / 3.0 - 1.0, 0.5, 1.0 / 3.0 - 1.0, 1.0 / 3.0, 1.0 / 3.0};
    for (int j = 0; j < 6; j++) CLOSE(g[j], ge[j], 1e-6);
    /* only_changed: coordinate 1 (x_t = x1) is not counted; the mean is over 1 coordinate. */
    ck_assert_int_eq(dfm_loss_eval(lc, &a), DFM_EINVAL); /* needs x_t */
    ck_assert_ptr_nonnull(strstr(dfm_loss_last_error(lc), "xt_tokens"));
    a.xt_tokens = xt;
    ck_assert_int_eq(dfm_loss_eval(lc, &a), 0);
    CLOSE(loss, log(3.0), 1e-6);
    for (int j = 0; j < 3; j++) CLOSE(g[j], ge[j], 1e-6);
    for (int j = 3; j < 6; j++) ck_assert(g[j] == 0.0f);
    /* Nothing counted: mean is 0 and the gradient 0. */
    xt[0] = 1;
    ck_assert_int_eq(dfm_loss_eval(lc, &a), 0);
    ck_assert(loss == 0.0);
    for (int j = 0; j < 6; j++) ck_assert(g[j] == 0.0f);
    dfm_loss_free(l);
    dfm_loss_free(lc);
    dfm_path_free(p);
}
END_TEST

/* Random problem: logits, tokens, times. */
typedef struct prob {
    size_t rows, d;
    int V;
    float *z;
    int32_t *x1, *xt;
    uint8_t *fixed;
    double *t;
} prob;

static prob make_prob(size_t rows, size_t d, int V, double scale)
{
    prob q;
    q.rows = rows; q.d = d; q.V = V;
    q.z = (float *)malloc(rows * d * (size_t)V * sizeof(float));
    q.x1 = (int32_t *)malloc(rows * d * sizeof(int32_t));
    q.xt = (int32_t *)malloc(rows * d * sizeof(int32_t));
    q.fixed = (uint8_t *)calloc(rows * d, 1);
    q.t = (double *)malloc(rows * sizeof(double));
    for (size_t k = 0; k < rows * d * (size_t)V; k++) q.z[k] = (float)(scale * (2.0 * urand() - 1.0));
    for (size_t k = 0; k < rows * d; k++) {
        q.x1[k] = (int32_t)(urand() * V);
        q.xt[k] = urand() < 0.4 ? q.x1[k] : (int32_t)(urand() * V);
    }
    for (size_t r = 0; r < rows; r++) q.t[r] = 0.95 * urand();
    return q;
}

/* Data never holds the mask token of a mask-source path (the losses refuse it). */
static void unmask_x1(prob *q, int32_t mask)
{
    for (size_t k = 0; k < q->rows * q->d; k++)
        if (q->x1[k] == mask) q->x1[k] = (mask + 1) % q->V;
}

static void free_prob(prob *q)
{
    free(q->z); free(q->x1); free(q->xt); free(q->fixed); free(q->t);
}

START_TEST(gkl_agrees_with_formula)
{
    /* Both schedulers: c = kappa'/(1-kappa) with kappa = t, and with kappa = sin(pi t / 2). */
    for (int sk = 0; sk < 2; sk++) {
        int kind = sk ? DFM_SCHED_COSINE : DFM_SCHED_CONDOT;
        dfm_path *p = make_path(37, 5, DFM_SOURCE_UNIFORM, 0, kind);
        dfm_loss *l = NULL, *ce = NULL;
        ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
        ck_assert_int_eq(dfm_loss_create_cross_entropy(&ce, p, 0, NULL), 0);
        ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_REDUCTION, DFM_REDUCE_NONE), 0);
        ck_assert_int_eq(dfm_loss_set_int(ce, DFM_OPT_REDUCTION, DFM_REDUCE_NONE), 0);
        prob q = make_prob(6, 5, 37, 8.0);
        if (sk) /* large logits: differences to the max must keep their precision */
            for (size_t k = 0; k < 6 * 5 * 37; k++) q.z[k] += 3000.0f * (float)(1 + k / 37 % 3);
        double vals[30], cev[30], loss;
        dfm_loss_args a = tu_loss_args(6, q.t, q.x1, q.xt, q.z, NULL, vals, &loss);
        ck_assert_int_eq(dfm_loss_eval(l, &a), 0);
        a.values = cev;
        ck_assert_int_eq(dfm_loss_eval(ce, &a), 0);
        for (size_t r = 0; r < 6; r++) {
            double t = q.t[r], c;
            if (sk) c = (PI_ / 2) * cos(PI_ * t / 2) / (1.0 - sin(PI_ * t / 2));
            else c = 1.0 / (1.0 - t);
            for (size_t i = 0; i < 5; i++) {
                size_t k = r * 5 + i;
                CLOSE(vals[k], ref_gkl(q.z + k * 37, 37, q.xt[k], q.x1[k], c), 2e-6);
                CLOSE(cev[k], ref_ce(q.z + k * 37, 37, q.x1[k]), 2e-6);
            }
        }
        free_prob(&q);
        dfm_loss_free(l);
        dfm_loss_free(ce);
        dfm_path_free(p);
    }
}
END_TEST

/* Central finite differences of the library's loss (double) against its gradient. */
static void fd_check(dfm_loss *l, prob *q, int reduction)
{
    size_t nz = q->rows * q->d * (size_t)q->V;
    float *g = (float *)malloc(nz * sizeof(float));
    double *vals = (double *)malloc(q->rows * q->d * sizeof(double));
    double loss, lp, lm;
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_REDUCTION, reduction), 0);
    dfm_loss_args a = tu_loss_args(q->rows, q->t, q->x1, q->xt, q->z, g, vals, &loss);
    a.fixed = q->fixed;
    ck_assert_int_eq(dfm_loss_eval(l, &a), 0);
    dfm_loss_args b = a;
    b.grad = NULL;
    double maxerr = 0.0;
    for (size_t k = 0; k < nz; k++) {
        float z0 = q->z[k];
        float zp = z0 + 1e-2f, zm = z0 - 1e-2f;
        q->z[k] = zp; b.loss = &lp;
        ck_assert_int_eq(dfm_loss_eval(l, &b), 0);
        q->z[k] = zm; b.loss = &lm;
        ck_assert_int_eq(dfm_loss_eval(l, &b), 0);
        q->z[k] = z0;
        double fd = (lp - lm) / ((double)zp - (double)zm);
        double err = fabs(fd - g[k]) / (1e-2 + fabs(fd));
        if (err > maxerr) maxerr = err;
        ck_assert_msg(fabs(fd - g[k]) <= 2e-3 * (fabs(fd) + 1e-2),
                      "logit %zu: grad %.8g, finite difference %.8g", k, (double)g[k], fd);
    }
    free(g);
    free(vals);
}

START_TEST(gradients_match_finite_differences)
{
    for (int kind = 0; kind < 3; kind++) {
        dfm_path *p = make_path(7, 3, DFM_SOURCE_MASK, 6, kind == 2 ? DFM_SCHED_COSINE
                                                                    : DFM_SCHED_CONDOT);
        dfm_loss *l = NULL;
        if (kind == 1) ck_assert_int_eq(dfm_loss_create_cross_entropy(&l, p, 1, NULL), 0);
        else ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
        prob q = make_prob(3, 3, 7, 2.0);
        unmask_x1(&q, 6);
        q.fixed[4] = 1;
        fd_check(l, &q, DFM_REDUCE_MEAN);
        fd_check(l, &q, DFM_REDUCE_SUM);
        fd_check(l, &q, DFM_REDUCE_NONE);
        free_prob(&q);
        dfm_loss_free(l);
        dfm_path_free(p);
    }
}
END_TEST

START_TEST(reductions_and_fixed_positions)
{
    const size_t R = 4, D = 6;
    const int V = 11;
    dfm_path *p = make_path(V, D, DFM_SOURCE_MASK, V - 1, DFM_SCHED_CONDOT);
    dfm_loss *l = NULL;
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
    prob q = make_prob(R, D, V, 3.0);
    unmask_x1(&q, V - 1);
    size_t nz = R * D * V;
    float *gs = malloc(nz * 4), *gm = malloc(nz * 4), *gn = malloc(nz * 4);
    double vals[24], ls, lm, ln;
    for (size_t k = 0; k < R * D; k += 5) q.fixed[k] = 1;
    size_t count = 0;
    for (size_t k = 0; k < R * D; k++) count += !q.fixed[k];
    dfm_loss_args a = tu_loss_args(R, q.t, q.x1, q.xt, q.z, gs, vals, &ls);
    a.fixed = q.fixed;
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_REDUCTION, DFM_REDUCE_SUM), 0);
    ck_assert_int_eq(dfm_loss_eval(l, &a), 0);
    a.grad = gm; a.loss = &lm;
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_REDUCTION, DFM_REDUCE_MEAN), 0);
    ck_assert_int_eq(dfm_loss_eval(l, &a), 0);
    a.grad = gn; a.loss = &ln;
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_REDUCTION, DFM_REDUCE_NONE), 0);
    ck_assert_int_eq(dfm_loss_eval(l, &a), 0);
    double s = 0.0;
    for (size_t k = 0; k < R * D; k++) {
        if (q.fixed[k]) ck_assert(vals[k] == 0.0);
        s += vals[k];
    }
    CLOSE(ln, s, 1e-12);
    CLOSE(ls, s, 1e-12);
    CLOSE(lm, s / (double)count, 1e-12);
    for (size_t k = 0; k < nz; k++) {
        ck_assert(gn[k] == gs[k]);
        CLOSE(gm[k], gs[k] / (double)count, 1e-6);
        if (q.fixed[k / V]) ck_assert(gs[k] == 0.0f && gm[k] == 0.0f);
    }
    /* Fixed positions are not even read: garbage logits there are fine. */
    q.z[0] = NAN;
    a.grad = gs; a.loss = &ls;
    ck_assert_int_eq(dfm_loss_eval(l, &a), 0);
    CLOSE(ls, s, 1e-12);
    /* Dropping the fixed positions equals evaluating the free ones one row at a time. */
    free(gs); free(gm); free(gn);
    free_prob(&q);
    dfm_loss_free(l);
    dfm_path_free(p);
}
END_TEST

START_TEST(thread_independence)
{
    const size_t R = 9, D = 13;
    const int V = 70;
    dfm_path *p = make_path(V, D, DFM_SOURCE_UNIFORM, 0, DFM_SCHED_CONDOT);
    for (int kind = 0; kind < 2; kind++) {
        dfm_loss *l = NULL;
        if (kind) ck_assert_int_eq(dfm_loss_create_cross_entropy(&l, p, 0, NULL), 0);
        else ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
        prob q = make_prob(R, D, V, 5.0);
        size_t nz = R * D * V;
        float *g1 = malloc(nz * 4), *g2 = malloc(nz * 4);
        double l1, l2;
        dfm_loss_args a = tu_loss_args(R, q.t, q.x1, q.xt, q.z, g1, NULL, &l1);
        ck_assert_int_eq(dfm_loss_eval(l, &a), 0);
        for (int th = 2; th <= 4; th++) {
            ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_THREADS, th), 0);
            a.grad = g2; a.loss = &l2;
            ck_assert_int_eq(dfm_loss_eval(l, &a), 0);
            ck_assert(memcmp(&l1, &l2, sizeof l1) == 0);
            ck_assert(memcmp(g1, g2, nz * 4) == 0);
            /* Value-only path (no phase A) gives the same loss. */
            a.grad = NULL;
            ck_assert_int_eq(dfm_loss_eval(l, &a), 0);
            ck_assert(memcmp(&l1, &l2, sizeof l1) == 0);
        }
        /* In place: grad may be the logits buffer itself. */
        float *zz = malloc(nz * 4);
        memcpy(zz, q.z, nz * 4);
        a.out = zz; a.grad = zz; a.loss = &l2;
        ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_THREADS, 1), 0);
        ck_assert_int_eq(dfm_loss_eval(l, &a), 0);
        ck_assert(memcmp(&l1, &l2, sizeof l1) == 0);
        ck_assert(memcmp(g1, zz, nz * 4) == 0);
        free(zz);
        a.out = q.z;
        /* A clone evaluates identically. */
        dfm_loss *c = NULL;
        ck_assert_int_eq(dfm_loss_clone(&c, l, NULL), 0);
        a.grad = g2;
        ck_assert_int_eq(dfm_loss_eval(c, &a), 0);
        ck_assert(memcmp(&l1, &l2, sizeof l1) == 0);
        dfm_loss_free(c);
        free(g1); free(g2);
        free_prob(&q);
        dfm_loss_free(l);
    }
    dfm_path_free(p);
}
END_TEST

START_TEST(bad_input)
{
    const int V = 5;
    dfm_path *p = make_path(V, 3, DFM_SOURCE_MASK, 4, DFM_SCHED_CONDOT);
    dfm_loss *l = (dfm_loss *)1;
    ck_assert_int_eq(dfm_loss_create_generalized_kl(NULL, p, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, NULL, NULL), DFM_EINVAL);
    ck_assert_ptr_null(l);
    ck_assert_int_eq(dfm_loss_create_cross_entropy(&l, NULL, 0, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
    prob q = make_prob(2, 3, V, 2.0);
    unmask_x1(&q, 4);
    float g[30], g0[30];
    for (int j = 0; j < 30; j++) g[j] = g0[j] = -7.0f;
    double loss = 42.0;
    dfm_loss_args a = tu_loss_args(2, q.t, q.x1, q.xt, q.z, g, NULL, &loss);
    ck_assert_int_eq(dfm_loss_eval(NULL, &a), DFM_EINVAL);
    ck_assert_int_eq(dfm_loss_eval(l, NULL), DFM_EINVAL);
    a.x1_tokens = NULL;
    ck_assert_int_eq(dfm_loss_eval(l, &a), DFM_EINVAL);
    ck_assert_ptr_nonnull(strstr(dfm_loss_last_error(l), "x1_tokens"));
    a.x1_tokens = q.x1;
    a.xt_tokens = NULL;
    ck_assert_int_eq(dfm_loss_eval(l, &a), DFM_EINVAL);
    a.xt_tokens = q.xt;
    /* Tokens out of range. */
    int32_t keep = q.x1[4];
    q.x1[4] = V;
    ck_assert_int_eq(dfm_loss_eval(l, &a), DFM_ERANGE);
    ck_assert_ptr_nonnull(strstr(dfm_loss_last_error(l), "x1_tokens[row 1][coord 1] = 5"));
    q.x1[4] = keep;
    keep = q.xt[2];
    q.xt[2] = -1;
    ck_assert_int_eq(dfm_loss_eval(l, &a), DFM_ERANGE);
    ck_assert_ptr_nonnull(strstr(dfm_loss_last_error(l), "xt_tokens[row 0][coord 2] = -1"));
    q.xt[2] = keep;
    /* NaN / +Inf logits: row and coordinate in the message. */
    float zk = q.z[1 * 15 + 2 * V + 3];
    q.z[1 * 15 + 2 * V + 3] = NAN;
    ck_assert_int_eq(dfm_loss_eval(l, &a), DFM_ENUMERIC);
    ck_assert_ptr_nonnull(strstr(dfm_loss_last_error(l), "out[row 1][coord 2]"));
    a.grad = NULL;
    ck_assert_int_eq(dfm_loss_eval(l, &a), DFM_ENUMERIC);
    ck_assert_ptr_nonnull(strstr(dfm_loss_last_error(l), "out[row 1][coord 2]"));
    /* Two bad rows: the lowest row and coordinate is reported, with or without a gradient and
     * for 1 or 2 threads (rows are scanned in different orders by the two phases). */
    float zk0 = q.z[0 * 15 + 1 * V + 0];
    q.z[0 * 15 + 1 * V + 0] = NAN;
    for (int th = 1; th <= 2; th++) {
        ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_THREADS, th), 0);
        a.grad = NULL;
        ck_assert_int_eq(dfm_loss_eval(l, &a), DFM_ENUMERIC);
        ck_assert_msg(strstr(dfm_loss_last_error(l), "out[row 0][coord 1]") != NULL, "%s",
                      dfm_loss_last_error(l));
        a.grad = g;
        ck_assert_int_eq(dfm_loss_eval(l, &a), DFM_ENUMERIC);
        ck_assert_ptr_nonnull(strstr(dfm_loss_last_error(l), "out[row 0][coord 1]"));
    }
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_THREADS, 1), 0);
    q.z[0 * 15 + 1 * V + 0] = zk0;
    a.grad = g;
    q.z[1 * 15 + 2 * V + 3] = INFINITY;
    ck_assert_int_eq(dfm_loss_eval(l, &a), DFM_ENUMERIC);
    /* -Inf is probability 0: fine except at the data token when it counts. */
    q.z[1 * 15 + 2 * V + 3] = -INFINITY;
    q.x1[5] = 3;
    q.xt[5] = 1;
    ck_assert_int_eq(dfm_loss_eval(l, &a), DFM_ENUMERIC);
    ck_assert_ptr_nonnull(strstr(dfm_loss_last_error(l), "infinite"));
    for (int j = 0; j < 30; j++) ck_assert(g[j] == g0[j]);
    ck_assert(loss == 42.0);
    q.xt[5] = 3; /* x_t = x1 with p(x1) = 0: l = c, finite */
    ck_assert_int_eq(dfm_loss_eval(l, &a), 0);
    ck_assert(isfinite(loss));
    ck_assert(g[1 * 15 + 2 * V + 3] == 0.0f);
    for (int j = 0; j < 30; j++) g[j] = g0[j];
    loss = 42.0;
    q.z[1 * 15 + 2 * V + 3] = zk;
    /* t = 1: the weight is infinite. */
    q.t[1] = 1.0;
    ck_assert_int_eq(dfm_loss_eval(l, &a), DFM_ERANGE);
    ck_assert_ptr_nonnull(strstr(dfm_loss_last_error(l), "t = 1"));
    q.t[1] = 1.5;
    ck_assert_int_eq(dfm_loss_eval(l, &a), DFM_ERANGE);
    q.t[1] = NAN;
    ck_assert_int_eq(dfm_loss_eval(l, &a), DFM_ERANGE);
    for (int j = 0; j < 30; j++) ck_assert(g[j] == g0[j]);
    ck_assert(loss == 42.0);
    /* Reduction none without values. */
    q.t[1] = 0.5;
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_REDUCTION, DFM_REDUCE_NONE), 0);
    ck_assert_int_eq(dfm_loss_eval(l, &a), DFM_EINVAL);
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_REDUCTION, 7), DFM_EINVAL);
    /* Inputs never modified. */
    prob q2 = make_prob(2, 3, V, 2.0);
    (void)q2;
    free_prob(&q2);
    free_prob(&q);
    dfm_loss_free(l);
    dfm_path_free(p);
}
END_TEST

/* ---- training-time sampler ---- */

static int cmp_d(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static double phi(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }

/* Kolmogorov-Smirnov statistic of sorted samples against a CDF with kind-specific parameters. */
static double ks(double *x, size_t n, int kind, double mu, double sd, double hi)
{
    qsort(x, n, sizeof(double), cmp_d);
    double D = 0.0;
    for (size_t k = 0; k < n; k++) {
        double F;
        if (kind == DFM_TIME_LOGIT_NORMAL)
            F = x[k] >= hi ? 1.0 : phi((log(x[k] / (1.0 - x[k])) - mu) / sd);
        else
            F = x[k] / hi;
        double lo = F - (double)k / n, up = (double)(k + 1) / n - F;
        if (x[k] >= hi) up = 0.0, lo = 0.0, F = 1.0; /* the atom at the clip */
        if (lo > D) D = lo;
        if (up > D) D = up;
    }
    return D;
}

START_TEST(time_sampler_distributions)
{
    const size_t n = tu_count_min(20000, 1000); /* DFM_TEST_SCALE; >= 1000: splits at row 777 */
    double *t = malloc(n * sizeof(double)), *t2 = malloc(n * sizeof(double));
    const double bound = 1.95 / sqrt((double)n); /* KS at p = 0.001 */
    /* Uniform on [0, 1 - eps]. */
    ck_assert_int_eq(dfm_time_sample(7, 3, DFM_TIME_UNIFORM, 0, 0, 1e-3, 0, n, t), 0);
    for (size_t r = 0; r < n; r++) ck_assert(t[r] >= 0.0 && t[r] <= 1.0 - 1e-3);
    ck_assert_double_lt(ks(t, n, DFM_TIME_UNIFORM, 0, 0, 1.0 - 1e-3), bound);
    /* Logit-normal, clipped at 1 - eps: mass above the clip sits at the clip. */
    double mu = 0.8, sd = 1.3, eps = 0.05;
    ck_assert_int_eq(dfm_time_sample(7, 3, DFM_TIME_LOGIT_NORMAL, mu, sd, eps, 0, n, t), 0);
    size_t at_clip = 0;
    for (size_t r = 0; r < n; r++) {
        ck_assert(t[r] >= 0.0 && t[r] <= 1.0 - eps);
        at_clip += t[r] == 1.0 - eps;
    }
    double pc = 1.0 - phi((log((1 - eps) / eps) - mu) / sd);
    ck_assert_double_lt(fabs((double)at_clip / n - pc), 4.0 * sqrt(pc * (1 - pc) / n));
    ck_assert_double_lt(ks(t, n, DFM_TIME_LOGIT_NORMAL, mu, sd, 1.0 - eps), bound);
    /* Stratified: n strata over the global rows, one draw per stratum, uniform overall; the
     * same values whatever the split. */
    ck_assert_int_eq(dfm_time_sample(9, 1, DFM_TIME_STRATIFIED, (double)n, 0, 0.0, 0, n, t), 0);
    for (size_t r = 0; r < n; r++)
        ck_assert(t[r] >= (double)r / n && t[r] <= (double)(r + 1) / n);
    ck_assert_int_eq(dfm_time_sample(9, 1, DFM_TIME_STRATIFIED, (double)n, 0, 0.0, 0, 777, t2), 0);
    ck_assert_int_eq(dfm_time_sample(9, 1, DFM_TIME_STRATIFIED, (double)n, 0, 0.0, 777, n - 777,
                                     t2 + 777), 0);
    ck_assert(memcmp(t, t2, n * sizeof(double)) == 0);
    ck_assert_double_lt(ks(t, n, DFM_TIME_UNIFORM, 0, 0, 1.0), bound);
    /* Split independence and a fresh draw counter. */
    ck_assert_int_eq(dfm_time_sample(5, 2, DFM_TIME_LOGIT_NORMAL, 0, 1, 0.0, 0, 100, t), 0);
    ck_assert_int_eq(dfm_time_sample(5, 2, DFM_TIME_LOGIT_NORMAL, 0, 1, 0.0, 40, 60, t2), 0);
    ck_assert(memcmp(t + 40, t2, 60 * sizeof(double)) == 0);
    ck_assert_int_eq(dfm_time_sample(5, 3, DFM_TIME_LOGIT_NORMAL, 0, 1, 0.0, 40, 60, t2), 0);
    ck_assert(memcmp(t + 40, t2, 60 * sizeof(double)) != 0);
    /* Bad input leaves t alone. */
    t[0] = -3.0;
    ck_assert_int_eq(dfm_time_sample(1, 0, DFM_TIME_UNIFORM, 0, 0, 0.0, 0, 1, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_time_sample(1, 0, 9, 0, 0, 0.0, 0, 1, t), DFM_EINVAL);
    ck_assert_int_eq(dfm_time_sample(1, 0, DFM_TIME_UNIFORM, 0, 0, 1.0, 0, 1, t), DFM_EINVAL);
    ck_assert_int_eq(dfm_time_sample(1, 0, DFM_TIME_UNIFORM, 0, 0, NAN, 0, 1, t), DFM_EINVAL);
    ck_assert_int_eq(dfm_time_sample(1, 0, DFM_TIME_LOGIT_NORMAL, 0, -1, 0.0, 0, 1, t), DFM_EINVAL);
    ck_assert_int_eq(dfm_time_sample(1, 0, DFM_TIME_LOGIT_NORMAL, NAN, 1, 0.0, 0, 1, t), DFM_EINVAL);
    ck_assert_int_eq(dfm_time_sample(1, 0, DFM_TIME_STRATIFIED, 2.5, 0, 0.0, 0, 1, t), DFM_EINVAL);
    ck_assert(t[0] == -3.0);
    ck_assert_int_eq(dfm_time_sample(1, 0, DFM_TIME_UNIFORM, 0, 0, 0.0, 0, 0, NULL), 0);
    free(t);
    free(t2);
}
END_TEST

/* ---- ELBO on an exact posterior ---- */

/* q over [3]^2 (strongly correlated), mask token 3 (V = 4) or the uniform source (V = 3). */
static const double Q[9] = {0.30, 0.02, 0.08, 0.05, 0.20, 0.05, 0.03, 0.07, 0.20};

typedef struct post_ctx {
    int mask;         /* 1: mask source (V = 4, mask 3); 0: p0 source (V = 3) */
    int product;      /* 1: use the product of q's marginals instead of q */
    int fail_at;      /* call index that fails (0: never) */
    int calls;
    const dfm_scheduler *sched; /* kappa = alpha of this scheduler (NULL: kappa = t) */
    const double *p0; /* source probabilities when !mask (NULL: uniform) */
} post_ctx;

static int posterior_model(const dfm_model_io *io, void *ud)
{
    post_ctx *pc = (post_ctx *)ud;
    pc->calls++;
    if (pc->fail_at && pc->calls == pc->fail_at) return -17;
    int V = pc->mask ? 4 : 3;
    double qq[9];
    for (int k = 0; k < 9; k++) qq[k] = Q[k];
    if (pc->product) {
        double m0[3] = {0}, m1[3] = {0};
        for (int k = 0; k < 9; k++) { m0[k / 3] += Q[k]; m1[k % 3] += Q[k]; }
        for (int k = 0; k < 9; k++) qq[k] = m0[k / 3] * m1[k % 3];
    }
    for (size_t r = 0; r < io->rows; r++) {
        double kap = io->t[r];
        if (pc->sched) {
            dfm_sched_values sv;
            if (dfm_scheduler_eval(pc->sched, io->t[r], &sv, NULL)) return 99;
            kap = sv.alpha;
        }
        const int32_t *x = io->tokens + r * 2;
        double w[9], s = 0.0;
        for (int k = 0; k < 9; k++) {
            int y[2] = {k / 3, k % 3};
            double pr = qq[k];
            for (int i = 0; i < 2; i++) {
                double pt;
                if (pc->mask) pt = (x[i] == 3 ? 1.0 - kap : 0.0) + (x[i] == y[i] ? kap : 0.0);
                else pt = (1.0 - kap) * (pc->p0 ? pc->p0[x[i]] : 1.0 / 3.0) + (x[i] == y[i] ? kap : 0.0);
                pr *= pt;
            }
            w[k] = pr;
            s += pr;
        }
        for (int i = 0; i < 2; i++) {
            float *o = io->out + r * io->out_stride + (size_t)i * V;
            double mg[3] = {0, 0, 0};
            for (int k = 0; k < 9; k++) mg[i ? k % 3 : k / 3] += w[k] / s;
            for (int j = 0; j < 3; j++) o[j] = mg[j] > 0 ? (float)log(mg[j]) : -INFINITY;
            if (pc->mask) o[3] = -INFINITY;
        }
    }
    return 0;
}

/* Mean and standard error over the reps rows of each of the 9 data points. */
static void run_elbo(dfm_loss *l, post_ctx *pc, size_t reps, size_t n_t, double *mean, double *se)
{
    size_t rows = 9 * reps;
    int32_t *x1 = malloc(rows * 2 * sizeof(int32_t));
    double *ne = malloc(rows * sizeof(double));
    for (size_t r = 0; r < rows; r++) { x1[2 * r] = (int32_t)((r % 9) / 3); x1[2 * r + 1] = (int32_t)(r % 3); }
    dfm_elbo_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = rows;
    a.x1_tokens = x1;
    a.n_t = n_t;
    a.chunk_rows = 500;
    a.model = posterior_model;
    a.user_data = pc;
    a.nelbo = ne;
    ck_assert_int_eq(dfm_loss_discrete_elbo(l, &a), 0);
    for (int k = 0; k < 9; k++) {
        double s = 0, s2 = 0;
        for (size_t j = 0; j < reps; j++) { double v = ne[j * 9 + k]; s += v; s2 += v * v; }
        mean[k] = s / reps;
        se[k] = sqrt((s2 / reps - mean[k] * mean[k]) / (reps - 1));
    }
    free(x1);
    free(ne);
}

START_TEST(elbo_tight_for_exact_masked_posterior)
{
    dfm_path *p = make_path(4, 2, DFM_SOURCE_MASK, 3, DFM_SCHED_CONDOT);
    dfm_loss *l = NULL;
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_SEED, 11), 0);
    post_ctx pc = {1, 0, 0, 0, NULL, NULL};
    double mean[9], se[9], mp[9], sp[9];
    run_elbo(l, &pc, 1500, 8, mean, se);
    /* The product-of-marginals model is the exact posterior of the product distribution. */
    post_ctx pp = {1, 1, 0, 0, NULL, NULL};
    run_elbo(l, &pp, 1500, 8, mp, sp);
    double m0[3] = {0}, m1[3] = {0};
    for (int k = 0; k < 9; k++) { m0[k / 3] += Q[k]; m1[k % 3] += Q[k]; }
    int separated = 0;
    for (int k = 0; k < 9; k++) {
        double target = -log(Q[k]), tp = -log(m0[k / 3] * m1[k % 3]);
        ck_assert_msg(fabs(mean[k] - target) < 4.0 * se[k], "x1 %d: nelbo %g +- %g, -log q %g",
                      k, mean[k], se[k], target);
        ck_assert_msg(fabs(mp[k] - tp) < 4.0 * sp[k], "x1 %d: product nelbo %g +- %g, target %g",
                      k, mp[k], sp[k], tp);
        /* The bound has the power to tell the two models apart. */
        separated += fabs(mp[k] - target) > 4.0 * sp[k];
    }
    ck_assert_int_ge(separated, 6);
    dfm_loss_free(l);
    dfm_path_free(p);
}
END_TEST

START_TEST(elbo_bound_uniform_source)
{
    dfm_path *p = make_path(3, 2, DFM_SOURCE_UNIFORM, 0, DFM_SCHED_CONDOT);
    dfm_loss *l = NULL;
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
    post_ctx pc = {0, 0, 0, 0, NULL, NULL};
    double mean[9], se[9];
    run_elbo(l, &pc, 800, 8, mean, se);
    for (int k = 0; k < 9; k++)
        ck_assert_msg(mean[k] + 4.0 * se[k] >= -log(Q[k]), "x1 %d: nelbo %g +- %g < -log q %g",
                      k, mean[k], se[k], -log(Q[k]));
    dfm_loss_free(l);
    dfm_path_free(p);
}
END_TEST

START_TEST(elbo_other_schedulers_and_sources)
{
    dfm_space *sp = NULL;
    dfm_scheduler *cs = NULL, *vp = NULL;
    ck_assert_int_eq(dfm_scheduler_create_cosine(&cs, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_vp(&vp, 0.1, 20.0, NULL), 0);
    double mean[9], se[9];
    /* Cosine kappa, mask source: still tight (the model sees t = kappa^{-1}(kappa)). */
    ck_assert_int_eq(dfm_space_create_discrete(&sp, 4, 2, NULL), 0);
    dfm_path *p = NULL;
    dfm_loss *l = NULL;
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, cs, DFM_SOURCE_MASK, 3, NULL, NULL), 0);
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
    post_ctx pc = {1, 0, 0, 0, cs, NULL};
    run_elbo(l, &pc, 1200, 8, mean, se);
    for (int k = 0; k < 9; k++)
        ck_assert_msg(fabs(mean[k] + log(Q[k])) < 4.0 * se[k], "x1 %d: nelbo %g +- %g, -log q %g",
                      k, mean[k], se[k], -log(Q[k]));
    dfm_loss_free(l);
    dfm_path_free(p);
    /* VP has kappa_0 > 0: with the mask source the bound is infinite. */
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, vp, DFM_SOURCE_MASK, 3, NULL, NULL), 0);
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
    int32_t x1[2] = {0, 1};
    double ne = 5.0;
    dfm_elbo_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = 1;
    a.x1_tokens = x1;
    a.n_t = 4;
    a.model = posterior_model;
    a.user_data = &pc;
    a.nelbo = &ne;
    ck_assert_int_eq(dfm_loss_discrete_elbo(l, &a), DFM_EUNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(dfm_loss_last_error(l), "kappa_0"));
    ck_assert(ne == 5.0);
    dfm_loss_free(l);
    dfm_path_free(p);
    dfm_space_free(sp);
    /* Custom p0 with CondOT, and uniform with VP (source term added): valid upper bounds. */
    static const double p0[3] = {0.5, 0.3, 0.2};
    ck_assert_int_eq(dfm_space_create_discrete(&sp, 3, 2, NULL), 0);
    for (int v = 0; v < 2; v++) {
        dfm_scheduler *s = NULL;
        if (v) s = vp; else ck_assert_int_eq(dfm_scheduler_create_condot(&s, NULL), 0);
        ck_assert_int_eq(dfm_path_create_mixture(&p, sp, s, v ? DFM_SOURCE_UNIFORM : DFM_SOURCE_CUSTOM,
                                                 0, v ? NULL : p0, NULL), 0);
        ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
        post_ctx pu = {0, 0, 0, 0, s, v ? NULL : p0};
        run_elbo(l, &pu, 600, 8, mean, se);
        for (int k = 0; k < 9; k++)
            ck_assert_msg(mean[k] + 4.0 * se[k] >= -log(Q[k]), "x1 %d: nelbo %g +- %g < %g", k,
                          mean[k], se[k], -log(Q[k]));
        if (!v) dfm_scheduler_free(s);
        dfm_loss_free(l);
        dfm_path_free(p);
    }
    dfm_space_free(sp);
    dfm_scheduler_free(cs);
    dfm_scheduler_free(vp);
}
END_TEST

/* A model that checks x_t against p_t(. | x1) at the t it is given (cosine kappa, mask source). */
typedef struct draw_ctx {
    const dfm_scheduler *sched;
    const int32_t *x1;
    size_t d;
    int bad_rows, rows_seen;
    double tsum;
} draw_ctx;

static int draw_model(const dfm_model_io *io, void *ud)
{
    draw_ctx *c = (draw_ctx *)ud;
    for (size_t r = 0; r < io->rows; r++) {
        dfm_sched_values v;
        if (dfm_scheduler_eval(c->sched, io->t[r], &v, NULL)) return 5;
        const int32_t *x = io->tokens + r * c->d, *x1 = c->x1 + (io->row_offset + r) * c->d;
        double masked = 0;
        for (size_t i = 0; i < c->d; i++) {
            if (x[i] == 3) masked += 1;
            else if (x[i] != x1[i]) return 6;
        }
        double sd = sqrt(v.alpha * (1 - v.alpha) / (double)c->d);
        if (fabs(masked / (double)c->d - (1 - v.alpha)) > 5 * sd + 1e-9) c->bad_rows++;
        c->rows_seen++;
        c->tsum += io->t[r];
        /* Uniform over the 3 data tokens where masked, certain where not: the exact posterior
         * of the uniform distribution on [3]^d, whose -log q is d log 3. */
        for (size_t k = 0; k < c->d * 4; k++) {
            int32_t tok = x[k / 4], j = (int32_t)(k % 4);
            int ok = tok == 3 ? j != 3 : j == tok;
            io->out[r * io->out_stride + k] = ok ? 0.0f : -INFINITY;
        }
    }
    return 0;
}

START_TEST(elbo_draws_follow_the_path)
{
    const size_t R = 300, D = 64;
    dfm_space *sp = NULL;
    dfm_scheduler *cs = NULL;
    dfm_path *p = NULL;
    dfm_loss *l = NULL;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, 4, D, NULL), 0);
    ck_assert_int_eq(dfm_scheduler_create_cosine(&cs, NULL), 0);
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, cs, DFM_SOURCE_MASK, 3, NULL, NULL), 0);
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
    int32_t *x1 = malloc(R * D * sizeof(int32_t));
    double *ne = malloc(R * sizeof(double));
    for (size_t k = 0; k < R * D; k++) x1[k] = (int32_t)(k % 3);
    draw_ctx c = {cs, x1, D, 0, 0, 0.0};
    dfm_elbo_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = R;
    a.x1_tokens = x1;
    a.n_t = 4;
    a.chunk_rows = 100;
    a.model = draw_model;
    a.user_data = &c;
    a.nelbo = ne;
    ck_assert_int_eq(dfm_loss_discrete_elbo(l, &a), 0);
    ck_assert_int_eq(c.rows_seen, (int)(R * 4));
    ck_assert_int_le(c.bad_rows, 2);
    /* The bound is tight: the mean over rows is d log 3 within a few standard errors. */
    double m = 0;
    for (size_t r = 0; r < R; r++) m += ne[r];
    m /= R;
    double s2 = 0;
    for (size_t r = 0; r < R; r++) s2 += (ne[r] - m) * (ne[r] - m);
    double se = sqrt(s2 / (R - 1) / R);
    ck_assert_msg(fabs(m - D * log(3.0)) < 4 * se, "mean nelbo %g +- %g vs %g", m, se,
                  D * log(3.0));
    free(x1);
    free(ne);
    dfm_loss_free(l);
    dfm_path_free(p);
    dfm_scheduler_free(cs);
    dfm_space_free(sp);
}
END_TEST

START_TEST(elbo_reproducible_and_errors)
{
    dfm_path *p = make_path(4, 2, DFM_SOURCE_MASK, 3, DFM_SCHED_CONDOT);
    dfm_loss *l = NULL, *ce = NULL;
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&l, p, NULL), 0);
    ck_assert_int_eq(dfm_loss_create_cross_entropy(&ce, p, 0, NULL), 0);
    int32_t x1[14] = {0, 1, 2, 2, 1, 0, 0, 0, 1, 1, 2, 0, 0, 2};
    uint8_t fixed[14] = {0};
    fixed[3] = 1;
    double n1[7], n2[7], s1[7], keep[7];
    post_ctx pc = {1, 0, 0, 0, NULL, NULL};
    dfm_elbo_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = 7;
    a.x1_tokens = x1;
    a.fixed = fixed;
    a.n_t = 5;
    a.model = posterior_model;
    a.user_data = &pc;
    a.nelbo = n1;
    a.std_error = s1;
    ck_assert_int_eq(dfm_loss_discrete_elbo(l, &a), 0);
    ck_assert_int_eq(pc.calls, 5);
    for (int r = 0; r < 7; r++) ck_assert(isfinite(n1[r]) && n1[r] >= 0.0 && s1[r] >= 0.0);
    /* Chunks, threads and split into two calls do not change the estimates. */
    a.nelbo = n2;
    a.chunk_rows = 3;
    ck_assert_int_eq(dfm_loss_set_int(l, DFM_OPT_THREADS, 2), 0);
    ck_assert_int_eq(dfm_loss_discrete_elbo(l, &a), 0);
    ck_assert(memcmp(n1, n2, sizeof n1) == 0);
    a.rows = 4;
    a.row_offset = 3;
    a.x1_tokens = x1 + 6;
    a.fixed = fixed + 6;
    ck_assert_int_eq(dfm_loss_discrete_elbo(l, &a), 0);
    ck_assert(memcmp(n1 + 3, n2, 4 * sizeof(double)) == 0);
    a.rows = 7; a.row_offset = 0; a.x1_tokens = x1; a.fixed = fixed;
    /* A failing model: DFM_ECALLBACK, raw value kept, outputs untouched. */
    memcpy(keep, n2, sizeof keep);
    pc.fail_at = pc.calls + 2;
    ck_assert_int_eq(dfm_loss_discrete_elbo(l, &a), DFM_ECALLBACK);
    ck_assert_int_eq(dfm_loss_callback_status(l), -17);
    ck_assert(memcmp(keep, n2, sizeof keep) == 0);
    pc.fail_at = 0;
    /* Bad input. */
    ck_assert_int_eq(dfm_loss_discrete_elbo(NULL, &a), DFM_EINVAL);
    ck_assert_int_eq(dfm_loss_discrete_elbo(l, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_loss_discrete_elbo(ce, &a), DFM_EUNSUPPORTED);
    a.n_t = 0;
    ck_assert_int_eq(dfm_loss_discrete_elbo(l, &a), DFM_EINVAL);
    a.n_t = 5;
    a.model = NULL;
    ck_assert_int_eq(dfm_loss_discrete_elbo(l, &a), DFM_EINVAL);
    a.model = posterior_model;
    x1[5] = 4;
    ck_assert_int_eq(dfm_loss_discrete_elbo(l, &a), DFM_ERANGE);
    x1[5] = 0;
    ck_assert(memcmp(keep, n2, sizeof keep) == 0);
    dfm_loss_free(l);
    dfm_loss_free(ce);
    dfm_path_free(p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("discrete_loss");
    TCase *tc = tu_tcase("losses");
    tcase_add_test(tc, gkl_hand_values);
    tcase_add_test(tc, ce_hand_values);
    tcase_add_test(tc, gkl_agrees_with_formula);
    tcase_add_test(tc, gradients_match_finite_differences);
    tcase_add_test(tc, reductions_and_fixed_positions);
    tcase_add_test(tc, thread_independence);
    tcase_add_test(tc, bad_input);
    suite_add_tcase(s, tc);
    TCase *tt = tu_tcase("time");
    tcase_add_test(tt, time_sampler_distributions);
    suite_add_tcase(s, tt);
    TCase *te = tu_tcase("elbo");
    tcase_add_test(te, elbo_tight_for_exact_masked_posterior);
    tcase_add_test(te, elbo_bound_uniform_source);
    tcase_add_test(te, elbo_other_schedulers_and_sources);
    tcase_add_test(te, elbo_draws_follow_the_path);
    tcase_add_test(te, elbo_reproducible_and_errors);
    suite_add_tcase(s, te);
    return tu_run(s) ? 1 : 0;
}
