/* Generator matching across processes: product (multimodal) spaces sampled jointly against an
 * exact joint target, superpositions (flow + diffusion, forward + corrector, two rate
 * generators) against exact targets, guidance and its clamping count, the training step
 * (gradient vs finite differences, reproducibility, a small end-to-end training), the general
 * GM loss, and bad input. */
#include "testutil.h"

#include <stdio.h>

#define MASK 4 /* discrete parts: data tokens 0..3, mask 4 (V = 5) */

static dfm_scheduler *condot(void)
{
    dfm_scheduler *s = NULL;
    ck_assert_int_eq(dfm_scheduler_create_condot(&s, NULL), DFM_OK);
    return s;
}

static dfm_path *mixture_path_src(size_t d, int source)
{
    dfm_space *sp;
    ck_assert_int_eq(dfm_space_create_discrete(&sp, source == DFM_SOURCE_MASK ? 5 : 4, d, NULL),
                     DFM_OK);
    dfm_scheduler *s = condot();
    dfm_path *p;
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, s, source, MASK, NULL, NULL), DFM_OK);
    dfm_space_free(sp);
    dfm_scheduler_free(s);
    return p;
}

static dfm_path *mixture_path(size_t d) { return mixture_path_src(d, DFM_SOURCE_MASK); }

static dfm_path *affine_path(size_t D)
{
    dfm_space *sp;
    ck_assert_int_eq(dfm_space_create_euclidean(&sp, D, NULL), DFM_OK);
    dfm_scheduler *s = condot();
    dfm_path *p;
    ck_assert_int_eq(dfm_path_create_affine(&p, sp, s, NULL), DFM_OK);
    dfm_space_free(sp);
    dfm_scheduler_free(s);
    return p;
}

/* ---------------- multimodal target: token k selects the mean of a 1-D Gaussian ----------- */

static const double JPI[4] = {0.1, 0.2, 0.3, 0.4};
static const double JMU[4] = {-3.0, -1.0, 1.0, 3.0};
static const double JS = 0.5;

typedef struct joint_model {
    int ignore_real; /* deliberately wrong: the token posterior ignores the real part */
    long calls;
} joint_model;

/* Token first (t in [0, 1/2]), then the real (t in [1/2, 1]). */
static int token_first(double t, double *pt, size_t n, void *ud)
{
    (void)ud;
    if (n != 2) return 4;
    pt[0] = fmin(1.0, 2.0 * t);
    pt[1] = fmax(0.0, 2.0 * t - 1.0);
    return 0;
}

/* Exact joint posterior over k given (z, y), the token at time tz and the real at time ty
 * (CondOT on both parts). */
static void joint_post(double tz, double ty, int32_t z, double y, int ignore_real, double w[4])
{
    double V = ty * ty * JS * JS + (1 - ty) * (1 - ty), mx = -INFINITY, lw[4];
    for (int k = 0; k < 4; k++) {
        double pz = z == MASK ? 1 - tz : (z == k ? tz : 0.0);
        lw[k] = pz > 0 ? log(JPI[k]) + log(pz) : -INFINITY;
        if (!ignore_real) lw[k] += -0.5 * (y - ty * JMU[k]) * (y - ty * JMU[k]) / V;
        if (lw[k] > mx) mx = lw[k];
    }
    double s = 0;
    for (int k = 0; k < 4; k++) { w[k] = exp(lw[k] - mx); s += w[k]; }
    for (int k = 0; k < 4; k++) w[k] /= s;
}

static double joint_x1(double t, double y, const double w[4])
{
    double V = t * t * JS * JS + (1 - t) * (1 - t), e = 0;
    for (int k = 0; k < 4; k++) e += w[k] * (JMU[k] + t * JS * JS * (y - t * JMU[k]) / V);
    return e;
}

/* Product model: out = [5 logits of the token | E[X1 | x_t] of the real]. */
static int joint_fn(const dfm_model_io *io, void *ud)
{
    joint_model *m = (joint_model *)ud;
    m->calls++;
    if (io->out_stride != 6 || io->n_tokens != 1 || io->n_reals != 1 || io->n_part_t != 2)
        return 77;
    for (size_t r = 0; r < io->rows; r++) {
        double tz = io->part_t[2 * r], ty = io->part_t[2 * r + 1], w[4], wy[4];
        int32_t z = io->tokens[r];
        double y = io->reals[r];
        joint_post(tz, ty, z, y, m->ignore_real, w);
        joint_post(tz, ty, z, y, 0, wy);
        float *o = io->out + 6 * r;
        for (int k = 0; k < 4; k++) o[k] = w[k] > 0 ? (float)log(w[k]) : -INFINITY;
        o[4] = -INFINITY;
        o[5] = (float)joint_x1(ty, y, wy);
    }
    return 0;
}

/* sde: the real part is a superposition of the flow and a diffusion sharing one output. */
static dfm_generator *joint_generator(int sde)
{
    dfm_path *pd = mixture_path(1), *pc = affine_path(1);
    dfm_generator *gd, *gc, *g;
    ck_assert_int_eq(dfm_generator_create_factorized(&gd, pd, DFM_PARAM_LOGITS, NULL), DFM_OK);
    ck_assert_int_eq(dfm_generator_create_velocity(&gc, pc, DFM_PARAM_X1, NULL), DFM_OK);
    if (sde) {
        dfm_generator *gs, *sup;
        ck_assert_int_eq(dfm_generator_create_diffusion(&gs, pc, DFM_PARAM_X1, 0.7, NULL), DFM_OK);
        const dfm_generator *cs[2] = {gc, gs};
        double w[2] = {0.4, 0.6};
        ck_assert_int_eq(dfm_generator_create_superposition(&sup, cs, w, 2, NULL), DFM_OK);
        ck_assert_int_eq(dfm_generator_superposition_set_input(sup, 1, DFM_BRANCH_MAIN, 0), DFM_OK);
        dfm_generator_free(gs);
        dfm_generator_free(gc);
        gc = sup;
    }
    const dfm_generator *parts[2] = {gd, gc};
    ck_assert_int_eq(dfm_generator_create_product(&g, parts, 2, NULL), DFM_OK);
    ck_assert_int_eq(dfm_generator_kind(g), DFM_GEN_PRODUCT);
    ck_assert_uint_eq(dfm_generator_out_stride(g), 6);
    ck_assert_uint_eq(dfm_generator_n_parts(g), 2);
    dfm_generator_free(gd);
    dfm_generator_free(gc);
    dfm_path_free(pd);
    dfm_path_free(pc);
    return g;
}

/* Samples rows of the joint target and checks the token law and the per-token moments. */
static int run_joint(int method, int ignore_real, size_t steps, int check, int sde)
{
    /* DFM_TEST_SCALE shrinks the runs that must pass; a wrong model keeps full power. */
    const size_t R = ignore_real ? 20000 : tu_count_min(20000, 2000);
    dfm_generator *g = joint_generator(sde & 1);
    if (sde & 2) ck_assert_int_eq(dfm_generator_set_part_time_fn(g, token_first, NULL), DFM_OK);
    dfm_sampler *s;
    ck_assert_int_eq(dfm_sampler_create(&s, g, method, NULL), DFM_OK);
    ck_assert_int_eq(dfm_sampler_set_steps(s, steps), DFM_OK);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_SEED, 1234), DFM_OK);
    int32_t *tok = calloc(R, sizeof *tok);
    float *re = calloc(R, sizeof *re);
    joint_model m = {ignore_real, 0};
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = joint_fn;
    a.model_data = &m;
    a.rows = R;
    a.tokens = tok;
    a.reals = re;
    a.draw_source = 1;
    int st = dfm_sampler_run(s, &a);
    ck_assert_msg(st == DFM_OK, "run: %s", dfm_sampler_last_error(s));
    ck_assert_int_eq(m.calls, (long)steps); /* one model call per step for both parts */
    long cnt[4] = {0};
    double sum[4] = {0}, sq[4] = {0};
    for (size_t r = 0; r < R; r++) {
        ck_assert_int_lt(tok[r], 4);
        cnt[tok[r]]++;
        sum[tok[r]] += re[r];
        sq[tok[r]] += (double)re[r] * re[r];
    }
    int bad = 0;
    int dof;
    double chi = tu_chi2(cnt, JPI, 4, (long)R, &dof);
    if (getenv("GM_DEBUG")) {
        fprintf(stderr, "joint chi2 %g bound %g:", chi, tu_chi2_bound(dof));
        for (int k = 0; k < 4; k++)
            fprintf(stderr, " [%g %g]", sum[k] / cnt[k] - JMU[k],
                    sq[k] / cnt[k] - (sum[k] / cnt[k]) * (sum[k] / cnt[k]) - JS * JS);
        fprintf(stderr, "\n");
    }
    if (chi >= tu_chi2_bound(dof)) bad = 1;
    for (int k = 0; k < 4; k++) {
        double n = (double)cnt[k], mean = sum[k] / n, var = sq[k] / n - mean * mean;
        /* 4.5 standard errors plus 0.02 for the time discretisation of Euler on the real part */
        if (fabs(mean - JMU[k]) > 4.5 * JS / sqrt(n) + 0.02) bad = 1;
        if (fabs(var - JS * JS) > 4.5 * JS * JS * sqrt(2.0 / n) + 0.02) bad = 1;
        if (check)
            ck_assert_msg(!bad, "token %d: n %g mean %g var %g chi2 %g", k, n, mean, var, chi);
    }
    free(tok);
    free(re);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    return bad;
}

START_TEST(multimodal_joint_exact)
{
    run_joint(DFM_METHOD_EXACT, 0, 200, 1, 0);
}
END_TEST

START_TEST(multimodal_joint_euler)
{
    /* Euler in the rates on the token (for a mask source it coincides with the exact step),
     * Euler-Maruyama on a flow + diffusion superposition for the real part */
    run_joint(DFM_METHOD_EULER, 0, 200, 1, 1);
}
END_TEST

START_TEST(multimodal_part_times)
{
    /* each part on its own clock: the token is generated first, then the real given it */
    run_joint(DFM_METHOD_EXACT, 0, 400, 1, 2);
}
END_TEST

START_TEST(multimodal_wrong_model_fails)
{
    /* A token posterior that ignores the real part gets the token law right (its marginal is
     * right) but not the dependence: the same bounds must fail. */
    ck_assert_int_eq(run_joint(DFM_METHOD_EXACT, 1, 200, 0, 0), 1);
}
END_TEST

START_TEST(joint_intermediate_states)
{
    /* saved states: P(token still masked at t) = 1 - kappa_t = 1 - t, on and off the grid;
     * the saved real at t has mean E[X_t] = t E[X1] */
    const size_t R = tu_count_min(20000, 2000);
    dfm_generator *g = joint_generator(0);
    dfm_sampler *s;
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_EXACT, NULL), DFM_OK);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 40), DFM_OK);
    double st[3] = {0.25, 0.5, 0.63};
    int32_t *tok = calloc(R, sizeof *tok), *stok = calloc(3 * R, sizeof *stok);
    float *re = calloc(R, sizeof *re), *sre = calloc(3 * R, sizeof *sre);
    joint_model m = {0, 0};
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = joint_fn;
    a.model_data = &m;
    a.rows = R;
    a.tokens = tok;
    a.reals = re;
    a.draw_source = 1;
    a.save_times = st;
    a.n_save = 3;
    a.saved_tokens = stok;
    a.saved_reals = sre;
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_OK);
    ck_assert_int_eq(m.calls, 41); /* 0.63 splits one step */
    double mean1 = 0;
    for (int k = 0; k < 4; k++) mean1 += JPI[k] * JMU[k];
    for (int q = 0; q < 3; q++) {
        long masked = 0;
        double sum = 0;
        for (size_t r = 0; r < R; r++) {
            masked += stok[q * R + r] == MASK;
            sum += sre[q * R + r];
        }
        double f = (double)masked / (double)R, p = 1 - st[q];
        ck_assert_msg(fabs(f - p) < 4.5 * sqrt(p * (1 - p) / (double)R),
                      "t = %g: masked %g, want %g", st[q], f, p);
        double sd = sqrt(st[q] * st[q] * 4.0 + (1 - st[q]) * (1 - st[q])); /* generous */
        ck_assert_msg(fabs(sum / (double)R - st[q] * mean1) < 4.5 * sd / sqrt((double)R) + 0.01,
                      "t = %g: mean %g want %g", st[q], sum / (double)R, st[q] * mean1);
    }
    free(tok); free(stok); free(re); free(sre);
    dfm_sampler_free(s);
    dfm_generator_free(g);
}
END_TEST

START_TEST(joint_reproducible_any_split)
{
    /* bit-identical for 1 or 2 threads and for a batch split into two calls */
    const size_t R = 600;
    int32_t *tok[3];
    float *re[3];
    for (int v = 0; v < 3; v++) {
        dfm_generator *g = joint_generator(1);
        dfm_sampler *s;
        ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_EXACT, NULL), DFM_OK);
        ck_assert_int_eq(dfm_sampler_set_steps(s, 20), DFM_OK);
        dfm_sampler_set_int(s, DFM_OPT_SEED, 5);
        dfm_sampler_set_int(s, DFM_OPT_THREADS, v == 1 ? 2 : 1);
        tok[v] = calloc(R, sizeof(int32_t));
        re[v] = calloc(R, sizeof(float));
        joint_model m = {0, 0};
        for (int half = 0; half < (v == 2 ? 2 : 1); half++) {
            size_t r0 = v == 2 ? half * R / 2 : 0, n = v == 2 ? R / 2 : R;
            dfm_run_args a;
            memset(&a, 0, sizeof a);
            a.struct_size = sizeof a;
            a.model = joint_fn;
            a.model_data = &m;
            a.rows = n;
            a.row_offset = r0;
            a.tokens = tok[v] + r0;
            a.reals = re[v] + r0;
            a.draw_source = 1;
            ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_OK);
        }
        dfm_sampler_free(s);
        dfm_generator_free(g);
    }
    for (int v = 1; v < 3; v++) {
        ck_assert(memcmp(tok[0], tok[v], R * sizeof(int32_t)) == 0);
        ck_assert(memcmp(re[0], re[v], R * sizeof(float)) == 0);
    }
    for (int v = 0; v < 3; v++) { free(tok[v]); free(re[v]); }
}
END_TEST

/* ---------------- continuous: flow + diffusion superposition ---------------- */

static const double CW[2] = {0.35, 0.65}, CM[2] = {-1.5, 1.0}, CS[2] = {0.4, 0.6};

static double cgmm_x1(double t, double y)
{
    double lw[2], mx = -INFINITY, V[2];
    for (int k = 0; k < 2; k++) {
        V[k] = t * t * CS[k] * CS[k] + (1 - t) * (1 - t);
        lw[k] = log(CW[k]) - 0.5 * log(V[k]) - 0.5 * (y - t * CM[k]) * (y - t * CM[k]) / V[k];
        if (lw[k] > mx) mx = lw[k];
    }
    double z = 0, e = 0;
    for (int k = 0; k < 2; k++) { lw[k] = exp(lw[k] - mx); z += lw[k]; }
    for (int k = 0; k < 2; k++)
        e += lw[k] / z * (CM[k] + t * CS[k] * CS[k] * (y - t * CM[k]) / V[k]);
    return e;
}

typedef struct cmodel { int copies; long calls; double offset; } cmodel;

/* E[X1 | x_t] written `copies` times (one per component's slice). */
static int cgmm_fn(const dfm_model_io *io, void *ud)
{
    cmodel *m = (cmodel *)ud;
    m->calls++;
    if (io->out_stride != (size_t)m->copies) return 5;
    for (size_t r = 0; r < io->rows; r++)
        for (int c = 0; c < m->copies; c++)
            io->out[r * io->out_stride + c] = (float)(cgmm_x1(io->t[r], io->reals[r]) + m->offset);
    return 0;
}

static double cgmm_cdf(double x)
{
    double c = 0;
    for (int k = 0; k < 2; k++) c += CW[k] * 0.5 * erfc(-(x - CM[k]) / (CS[k] * sqrt(2.0)));
    return c;
}

/* Chi-square of samples against the GMM on 16 bins; returns the statistic / bound ratio. */
static double cgmm_chi(const float *x, size_t n)
{
    enum { NB = 16 };
    long cnt[NB] = {0};
    double p[NB], lo = -3.0, hi = 3.0, w = (hi - lo) / (NB - 2);
    for (int b = 0; b < NB; b++) {
        double a = b == 0 ? -INFINITY : lo + (b - 1) * w, c = b == NB - 1 ? INFINITY : lo + b * w;
        p[b] = (b == NB - 1 ? 1.0 : cgmm_cdf(c)) - (b == 0 ? 0.0 : cgmm_cdf(a));
    }
    for (size_t i = 0; i < n; i++) {
        int b = x[i] < lo ? 0 : (int)((x[i] - lo) / w) + 1;
        if (b > NB - 1) b = NB - 1;
        cnt[b]++;
    }
    int dof;
    double chi = tu_chi2(cnt, p, NB, (long)n, &dof);
    return chi / tu_chi2_bound(dof);
}

static int ramp_w(double t, double *w, size_t n, void *ud)
{
    (void)ud;
    if (n != 2) return 3;
    w[0] = t;       /* flow weight grows */
    w[1] = 1.0 - t; /* diffusion weight shrinks */
    return 0;
}

static double run_flow_diffusion(int shared, int use_fn, double wsum)
{
    const size_t R = wsum == 1.0 ? tu_count_min(20000, 2000) : 20000;
    dfm_path *p = affine_path(1);
    dfm_generator *gv, *gd, *g;
    ck_assert_int_eq(dfm_generator_create_velocity(&gv, p, DFM_PARAM_X1, NULL), DFM_OK);
    ck_assert_int_eq(dfm_generator_create_diffusion(&gd, p, DFM_PARAM_X1, 0.8, NULL), DFM_OK);
    const dfm_generator *cs[2] = {gv, gd};
    double w[2] = {0.5 * wsum, 0.5 * wsum};
    ck_assert_int_eq(dfm_generator_create_superposition(&g, cs, w, 2, NULL), DFM_OK);
    ck_assert_int_eq(dfm_generator_kind(g), DFM_GEN_SUPERPOSITION);
    ck_assert_uint_eq(dfm_generator_out_stride(g), 2);
    if (shared) {
        ck_assert_int_eq(dfm_generator_superposition_set_input(g, 1, DFM_BRANCH_MAIN, 0), DFM_OK);
        ck_assert_uint_eq(dfm_generator_out_stride(g), 1);
    }
    if (use_fn) ck_assert_int_eq(dfm_generator_set_weight_fn(g, ramp_w, NULL), DFM_OK);
    dfm_sampler *s;
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_EULER_MARUYAMA, NULL), DFM_OK);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 400), DFM_OK);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_SEED, 99), DFM_OK);
    float *x = calloc(R, sizeof *x);
    cmodel m = {shared ? 1 : 2, 0, 0.0};
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = cgmm_fn;
    a.model_data = &m;
    a.rows = R;
    a.reals = x;
    a.draw_source = 1;
    ck_assert_msg(dfm_sampler_run(s, &a) == DFM_OK, "%s", dfm_sampler_last_error(s));
    double r = cgmm_chi(x, R);
    if (getenv("GM_DEBUG")) fprintf(stderr, "flow+diffusion chi2/bound %g\n", r);
    free(x);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    dfm_generator_free(gv);
    dfm_generator_free(gd);
    dfm_path_free(p);
    return r;
}

START_TEST(superposition_flow_diffusion)
{
    double r1 = run_flow_diffusion(0, 0, 1.0), r2 = run_flow_diffusion(1, 0, 1.0),
           r3 = run_flow_diffusion(1, 1, 1.0);
    ck_assert_msg(r1 < 1.0 && r2 < 1.0 && r3 < 1.0, "chi2/bound %g %g %g", r1, r2, r3);
    ck_assert(r1 == r2); /* one shared output = the same output written twice */
    /* weights summing to 0.9 do not generate the path: the same bound must fail */
    ck_assert_double_gt(run_flow_diffusion(1, 0, 0.9), 1.0);
}
END_TEST

/* ------------ discrete exact target on [4]^2 (uniform source, CondOT) ------------
 * A uniform source (not the mask): with a mask source any unmasking schedule reaches the exact
 * law when the posterior is exact, so a wrong rate scale would go unnoticed. */

static const double Q2[16] = {0.02, 0.10, 0.03, 0.05, 0.08, 0.01, 0.12, 0.04,
                              0.06, 0.09, 0.02, 0.07, 0.11, 0.03, 0.05, 0.12};

/* Marginal posterior logits of each coordinate given x_t (2 tokens) at time t. */
static void q2_post(double t, const int32_t *x, double post[2][4])
{
    double tot = 0;
    memset(post, 0, sizeof(double) * 8);
    for (int s = 0; s < 16; s++) {
        int x1[2] = {s / 4, s % 4};
        double w = Q2[s];
        for (int i = 0; i < 2; i++) w *= 0.25 * (1 - t) + (x[i] == x1[i] ? t : 0.0);
        for (int i = 0; i < 2; i++) post[i][x1[i]] += w;
        tot += w;
    }
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 4; k++) post[i][k] /= tot;
}

enum { STEPS = 200 };

typedef struct dmodel {
    int layout[4]; /* per slice: 0 logits, 1 rates */
    int n;
    long calls;
    const double *cond_q, *uncond_q; /* guidance: fixed posteriors */
    long expect_clamped;             /* guidance: clamped entries expected at this step */
    double w;
} dmodel;

static int q2_fn(const dfm_model_io *io, void *ud)
{
    dmodel *m = (dmodel *)ud;
    m->calls++;
    if (io->out_stride != (size_t)(8 * m->n)) return 6;
    for (size_t r = 0; r < io->rows; r++) {
        double post[2][4], t = io->t[r];
        const int32_t *x = io->tokens + 2 * r;
        q2_post(t, x, post);
        for (int c = 0; c < m->n; c++) {
            float *o = io->out + r * io->out_stride + 8 * c;
            for (int i = 0; i < 2; i++)
                for (int y = 0; y < 4; y++) {
                    double p = post[i][y];
                    if (m->layout[c] == 0) o[4 * i + y] = p > 0 ? (float)log(p) : -INFINITY;
                    else o[4 * i + y] = y == x[i] ? 0.0f : (float)(p / (1 - t));
                }
        }
    }
    return 0;
}

static void q2_check(dfm_generator *g, dmodel *m, int method, size_t steps, int expect_ok)
{
    const size_t R = expect_ok ? tu_count_min(20000, 2000) : 20000;
    dfm_sampler *s;
    ck_assert_int_eq(dfm_sampler_create(&s, g, method, NULL), DFM_OK);
    ck_assert_int_eq(dfm_sampler_set_steps(s, steps), DFM_OK);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_SEED, 7), DFM_OK);
    int32_t *tok = malloc(2 * R * sizeof *tok);
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = q2_fn;
    a.model_data = m;
    a.rows = R;
    a.tokens = tok;
    a.draw_source = 1;
    ck_assert_msg(dfm_sampler_run(s, &a) == DFM_OK, "%s", dfm_sampler_last_error(s));
    long cnt[16] = {0}, masked = 0;
    for (size_t r = 0; r < R; r++) {
        if (tok[2 * r] >= 4 || tok[2 * r + 1] >= 4) { masked++; continue; }
        cnt[tok[2 * r] * 4 + tok[2 * r + 1]]++;
    }
    int dof = 15;
    double chi = masked ? INFINITY : tu_chi2(cnt, Q2, 16, (long)R, &dof);
    if (getenv("GM_DEBUG")) fprintf(stderr, "q2 chi2 %g bound %g\n", chi, tu_chi2_bound(dof));
    if (expect_ok)
        ck_assert_msg(chi < tu_chi2_bound(dof), "chi2 %g bound %g", chi, tu_chi2_bound(dof));
    else
        ck_assert_msg(chi > tu_chi2_bound(dof), "a wrong generator passed: chi2 %g", chi);
    free(tok);
    dfm_sampler_free(s);
}

START_TEST(superposition_forward_corrector)
{
    dfm_path *p = mixture_path_src(2, DFM_SOURCE_UNIFORM);
    dfm_generator *gf, *gb, *g;
    ck_assert_int_eq(dfm_generator_create_factorized(&gf, p, DFM_PARAM_LOGITS, NULL), DFM_OK);
    ck_assert_int_eq(dfm_generator_create_mixture_backward(&gb, p, NULL), DFM_OK);
    ck_assert_uint_eq(dfm_generator_out_stride(gb), 0);
    dfm_sampler *bad;
    ck_assert_int_eq(dfm_sampler_create(&bad, gb, DFM_METHOD_EULER, NULL), DFM_EUNSUPPORTED);
    const dfm_generator *cs[2] = {gf, gb};
    double w[2] = {1.0 + 2.0, -2.0}; /* corrector c = 2: u = u_fwd + c (u_fwd - u_bwd) */
    ck_assert_int_eq(dfm_generator_create_superposition(&g, cs, w, 2, NULL), DFM_OK);
    dmodel m = {{0}, 1, 0, NULL, NULL, 0, 0};
    q2_check(g, &m, DFM_METHOD_EULER, STEPS, 1);
    dfm_generator_free(g);
    /* a backward weight of the wrong sign breaks the marginals (and is clamped) */
    double wrong[2] = {1.0, 1.5};
    ck_assert_int_eq(dfm_generator_create_superposition(&g, cs, wrong, 2, NULL), DFM_OK);
    q2_check(g, &m, DFM_METHOD_EULER, STEPS, 0);
    dfm_generator_free(g);
    dfm_generator_free(gf);
    dfm_generator_free(gb);
    dfm_path_free(p);
}
END_TEST

static int half_w(double t, double *w, size_t n, void *ud)
{
    (void)ud;
    w[0] = 0.2 + 0.6 * t;
    w[1] = 1.0 - w[0];
    (void)n;
    return 0;
}

START_TEST(superposition_two_rate_generators)
{
    dfm_path *p = mixture_path_src(2, DFM_SOURCE_UNIFORM);
    dfm_generator *gl, *gr, *g;
    ck_assert_int_eq(dfm_generator_create_factorized(&gl, p, DFM_PARAM_LOGITS, NULL), DFM_OK);
    ck_assert_int_eq(dfm_generator_create_factorized(&gr, p, DFM_PARAM_RATES, NULL), DFM_OK);
    const dfm_generator *cs[2] = {gl, gr};
    double w[2] = {0.3, 0.7};
    ck_assert_int_eq(dfm_generator_create_superposition(&g, cs, w, 2, NULL), DFM_OK);
    ck_assert_uint_eq(dfm_generator_out_stride(g), 16);
    ck_assert_int_eq(dfm_generator_parameterization(g), DFM_PARAM_MIXED);
    dmodel m = {{0, 1}, 2, 0, NULL, NULL, 0, 0};
    q2_check(g, &m, DFM_METHOD_EULER, STEPS, 1);
    ck_assert_int_eq(m.calls, STEPS);
    ck_assert_int_eq(dfm_generator_set_weight_fn(g, half_w, NULL), DFM_OK);
    q2_check(g, &m, DFM_METHOD_EULER, STEPS, 1);
    dfm_sampler *s;
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_EXACT, NULL), DFM_EUNSUPPORTED);
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_RK4, NULL), DFM_EUNSUPPORTED);
    dfm_generator_free(g);
    /* weights summing to 0.8 do not generate the path: the bound must fail */
    double wrong[2] = {0.3, 0.5};
    ck_assert_int_eq(dfm_generator_create_superposition(&g, cs, wrong, 2, NULL), DFM_OK);
    q2_check(g, &m, DFM_METHOD_EULER, STEPS, 0);
    dfm_generator_free(g);
    dfm_generator_free(gl);
    dfm_generator_free(gr);
    dfm_path_free(p);
}
END_TEST

/* ---------------- guidance ---------------- */

static const double PC[4] = {0.7, 0.1, 0.1, 0.1}, PU[4] = {0.1, 0.5, 0.3, 0.1};

typedef struct gmodel {
    double w;
    long expect; /* clamped entries the next step should report */
    long calls[2];
    int mismatch;
    dfm_sampler *s;
} gmodel;

static int guide_fn(const dfm_model_io *io, void *ud)
{
    gmodel *m = (gmodel *)ud;
    const double *p = io->branch == DFM_BRANCH_MAIN ? PC : PU;
    m->calls[io->branch]++;
    if (io->out_stride != 10) return 8;
    if (io->branch == DFM_BRANCH_MAIN) m->expect = 0;
    for (size_t r = 0; r < io->rows; r++) {
        for (int i = 0; i < 2; i++) {
            int32_t x = io->tokens[2 * r + i];
            for (int y = 0; y < 5; y++) {
                if (x != MASK) { /* unmasked: both branches are sure of the token */
                    io->out[r * 10 + 5 * i + y] = y == x ? 0.0f : -INFINITY;
                    continue;
                }
                io->out[r * 10 + 5 * i + y] = y < 4 ? (float)log(p[y]) : -INFINITY;
                if (io->branch == DFM_BRANCH_MAIN && y < 4 && y != x &&
                    (1 + m->w) * PC[y] - m->w * PU[y] < 0)
                    m->expect++;
            }
        }
    }
    return 0;
}

static int guide_progress(int step, int n, double t, void *ud)
{
    gmodel *m = (gmodel *)ud;
    int64_t c;
    (void)n; (void)t; (void)step;
    if (dfm_sampler_step_clamped(m->s, &c) != DFM_OK || c != m->expect) m->mismatch++;
    return 0;
}

START_TEST(guidance_rates_clamped)
{
    dfm_path *p = mixture_path(2);
    dfm_generator *gf, *g;
    ck_assert_int_eq(dfm_generator_create_factorized(&gf, p, DFM_PARAM_LOGITS, NULL), DFM_OK);
    ck_assert_int_eq(dfm_generator_create_guidance(&g, gf, NULL, 1.5, NULL), DFM_OK);
    ck_assert_uint_eq(dfm_generator_branch_stride(g, DFM_BRANCH_MAIN), 10);
    ck_assert_uint_eq(dfm_generator_branch_stride(g, DFM_BRANCH_UNCOND), 10);
    dfm_sampler *s;
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_EULER, NULL), DFM_OK);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 50), DFM_OK);
    const size_t R = tu_count_min(20000, 2000);
    int32_t *tok = malloc(2 * R * sizeof *tok);
    gmodel m = {1.5, 0, {0, 0}, 0, s};
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = guide_fn;
    a.model_data = &m;
    a.rows = R;
    a.tokens = tok;
    a.draw_source = 1;
    a.progress = guide_progress;
    a.progress_data = &m;
    ck_assert_msg(dfm_sampler_run(s, &a) == DFM_OK, "%s", dfm_sampler_last_error(s));
    ck_assert_int_eq(m.mismatch, 0);
    ck_assert_int_eq(m.calls[0], 50);
    ck_assert_int_eq(m.calls[1], 50);
    int64_t total;
    ck_assert_int_eq(dfm_sampler_get_stat(s, DFM_STAT_CLAMPED, &total), DFM_OK);
    /* step 0: every token is masked, and (1 + w) PC - w PU < 0 at y = 1 and 2 */
    ck_assert_int_gt(total, (int64_t)(2 * 2 * R));
    /* guided law per token: proportional to max(0, (1 + w) PC - w PU) */
    double gp[4], z = 0;
    for (int y = 0; y < 4; y++) { gp[y] = fmax(0.0, 2.5 * PC[y] - 1.5 * PU[y]); z += gp[y]; }
    for (int y = 0; y < 4; y++) gp[y] /= z;
    long cnt[4] = {0};
    for (size_t r = 0; r < R; r++) {
        ck_assert_int_lt(tok[2 * r], 4);
        cnt[tok[2 * r]]++;
    }
    TU_ASSERT_CHI2(cnt, gp, 4, (long)R);
    free(tok);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    dfm_generator_free(gf);
    dfm_path_free(p);
}
END_TEST

/* Guidance of two logits components takes a fused pass (both softmaxes, the clamped combination,
 * its total and counts); a superposition holding a rates component takes the general one. With
 * the rates component at weight 0 both realise the same generator, so for one seed they must
 * give the same tokens, jumps and clamped counts: vocabularies of 300 (blocks, vector tails) and
 * 7, mask and uniform sources, a weight function that switches the unconditional branch off
 * early on (one active component), the final step into kappa = 1, 1 and 2 threads. */

typedef struct fmodel { size_t d, V; } fmodel;

static int fast_fn(const dfm_model_io *io, void *ud)
{
    const fmodel *m = (const fmodel *)ud;
    const size_t dV = m->d * m->V;
    for (size_t r = 0; r < io->rows; r++) {
        float *o = io->out + r * io->out_stride;
        for (size_t i = 0; i < m->d; i++) {
            uint32_t x = (uint32_t)io->tokens[r * m->d + i];
            for (size_t v = 0; v < m->V; v++) {
                uint32_t h = (uint32_t)(r + io->row_offset) * 2654435761u ^ (uint32_t)i * 40503u ^
                             (uint32_t)v * 2246822519u ^ x * 3266489917u ^
                             (uint32_t)io->step * 668265263u;
                h ^= h >> 15;
                h *= 2246822519u;
                h ^= h >> 13;
                float z = (float)(h % 1000u) * 0.005f - 2.0f;
                if (io->branch == DFM_BRANCH_MAIN && (v * 7 + i) % 11 == 3) z = -INFINITY;
                if (io->branch == DFM_BRANCH_UNCOND && v % 5 == 1) z += 2.0f;
                o[i * m->V + v] = z;
                if (io->out_stride == 2 * dV) o[dV + i * m->V + v] = 0.25f; /* rates, weight 0 */
            }
        }
    }
    return 0;
}

static int late_w2(double t, double *w, size_t n, void *ud)
{
    double g = t < 0.3 ? 0.0 : 1.5;
    (void)ud;
    w[0] = 1.0 + g;
    w[1] = -g;
    if (n == 3) w[2] = 0.0;
    return 0;
}

static void fast_run(dfm_generator *g, fmodel *m, size_t R, int threads, int32_t *tok,
                     int64_t st[2])
{
    dfm_sampler *s;
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_EULER, NULL), DFM_OK);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 10), DFM_OK);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_SEED, 11), DFM_OK);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_THREADS, threads), DFM_OK);
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = fast_fn;
    a.model_data = m;
    a.rows = R;
    a.tokens = tok;
    a.draw_source = 1;
    ck_assert_msg(dfm_sampler_run(s, &a) == DFM_OK, "%s", dfm_sampler_last_error(s));
    ck_assert_int_eq(dfm_sampler_get_stat(s, DFM_STAT_JUMPS, &st[0]), DFM_OK);
    ck_assert_int_eq(dfm_sampler_get_stat(s, DFM_STAT_CLAMPED, &st[1]), DFM_OK);
    dfm_sampler_free(s);
}

START_TEST(guidance_fast_path_matches_general)
{
    static const struct { size_t V, d; int source; } cases[] = {
        {300, 3, DFM_SOURCE_MASK}, {7, 4, DFM_SOURCE_UNIFORM}};
    const size_t R = 64;
    for (size_t q = 0; q < 2; q++) {
        fmodel m = {cases[q].d, cases[q].V};
        dfm_space *sp;
        dfm_scheduler *sc = condot();
        dfm_path *p;
        ck_assert_int_eq(dfm_space_create_discrete(&sp, (int32_t)m.V, m.d, NULL), DFM_OK);
        ck_assert_int_eq(dfm_path_create_mixture(&p, sp, sc, cases[q].source, (int32_t)m.V - 1,
                                                 NULL, NULL), DFM_OK);
        dfm_generator *gl, *gr, *gfast, *ggen;
        ck_assert_int_eq(dfm_generator_create_factorized(&gl, p, DFM_PARAM_LOGITS, NULL), DFM_OK);
        ck_assert_int_eq(dfm_generator_create_factorized(&gr, p, DFM_PARAM_RATES, NULL), DFM_OK);
        ck_assert_int_eq(dfm_generator_create_guidance(&gfast, gl, NULL, 1.5, NULL), DFM_OK);
        const dfm_generator *cs[3] = {gl, gl, gr};
        const double w[3] = {2.5, -1.5, 0.0};
        ck_assert_int_eq(dfm_generator_create_superposition(&ggen, cs, w, 3, NULL), DFM_OK);
        ck_assert_int_eq(dfm_generator_superposition_set_input(ggen, 1, DFM_BRANCH_UNCOND, -1),
                         DFM_OK);
        for (int wf = 0; wf < 2; wf++) {
            if (wf) {
                ck_assert_int_eq(dfm_generator_set_weight_fn(gfast, late_w2, NULL), DFM_OK);
                ck_assert_int_eq(dfm_generator_set_weight_fn(ggen, late_w2, NULL), DFM_OK);
            }
            int32_t *t0 = malloc(R * m.d * sizeof *t0), *t1 = malloc(R * m.d * sizeof *t1);
            int64_t s0[2], s1[2];
            fast_run(ggen, &m, R, 1, t0, s0);
            ck_assert_int_gt(s0[0], 0);
            ck_assert_int_gt(s0[1], 0);
            for (int th = 1; th <= 2; th++) {
                fast_run(gfast, &m, R, th, t1, s1);
                ck_assert_msg(memcmp(t0, t1, R * m.d * sizeof *t0) == 0,
                              "V %zu, weight fn %d, %d threads: tokens differ", m.V, wf, th);
                ck_assert_int_eq(s0[0], s1[0]);
                ck_assert_int_eq(s0[1], s1[1]);
            }
            free(t0);
            free(t1);
        }
        dfm_generator_free(ggen);
        dfm_generator_free(gfast);
        dfm_generator_free(gr);
        dfm_generator_free(gl);
        dfm_path_free(p);
        dfm_scheduler_free(sc);
        dfm_space_free(sp);
    }
}
END_TEST

static int const_vel(const dfm_model_io *io, void *ud)
{
    (void)ud;
    for (size_t r = 0; r < io->rows; r++)
        io->out[r] = io->branch == DFM_BRANCH_MAIN ? 1.0f : -1.0f;
    return 0;
}

static int linear_vel(const dfm_model_io *io, void *ud)
{
    (void)ud;
    for (size_t r = 0; r < io->rows; r++) /* cond: -x, uncond: +x */
        io->out[r] = io->branch == DFM_BRANCH_MAIN ? -io->reals[r] : io->reals[r];
    return 0;
}

START_TEST(guidance_velocity)
{
    dfm_path *p = affine_path(1);
    dfm_generator *gv, *g;
    ck_assert_int_eq(dfm_generator_create_velocity(&gv, p, DFM_PARAM_VELOCITY, NULL), DFM_OK);
    ck_assert_int_eq(dfm_generator_create_guidance(&g, gv, gv, 2.0, NULL), DFM_OK);
    dfm_sampler *s;
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_EULER, NULL), DFM_OK);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 4), DFM_OK);
    float x[3] = {0.0f, 1.0f, -2.0f};
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = const_vel;
    a.rows = 3;
    a.reals = x;
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_OK);
    /* v = (1 + 2) * 1 - 2 * (-1) = 5 over unit time */
    ck_assert_float_eq_tol(x[0], 5.0f, 1e-5f);
    ck_assert_float_eq_tol(x[1], 6.0f, 1e-5f);
    ck_assert_float_eq_tol(x[2], 3.0f, 1e-5f);
    int64_t calls;
    dfm_sampler_get_stat(s, DFM_STAT_MODEL_CALLS, &calls);
    ck_assert_int_eq(calls, 8);
    dfm_sampler_free(s);
    /* guided v = (1 + 1)(-x) - 1 (x) = -3x: x(1) = x(0) e^-3, with midpoint and RK4 */
    dfm_generator *g1;
    ck_assert_int_eq(dfm_generator_create_guidance(&g1, gv, NULL, 1.0, NULL), DFM_OK);
    const int methods[2] = {DFM_METHOD_MIDPOINT, DFM_METHOD_RK4};
    const double tol[2] = {2e-3, 1e-6};
    for (int q = 0; q < 2; q++) {
        ck_assert_int_eq(dfm_sampler_create(&s, g1, methods[q], NULL), DFM_OK);
        ck_assert_int_eq(dfm_sampler_set_steps(s, 20), DFM_OK);
        float y[2] = {1.0f, -0.5f};
        a.model = linear_vel;
        a.rows = 2;
        a.reals = y;
        ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_OK);
        ck_assert_double_eq_tol(y[0], exp(-3.0), tol[q] + 1e-7);
        ck_assert_double_eq_tol(y[1], -0.5 * exp(-3.0), tol[q] + 1e-7);
        dfm_sampler_get_stat(s, DFM_STAT_MODEL_CALLS, &calls);
        ck_assert_int_eq(calls, 20 * (q ? 4 : 2) * 2);
        dfm_sampler_free(s);
    }
    dfm_generator_free(g1);
    dfm_generator_free(g);
    dfm_generator_free(gv);
    dfm_path_free(p);
}
END_TEST

/* ---------------- training step ---------------- */

typedef struct tmodel {
    int perturb;   /* index into out to perturb, -1 none */
    double eps;
    float *grad;   /* captured gradient */
    size_t n_out;
    float *out_copy;
    int fail_backward;
    long fwd, bwd;
} tmodel;

/* A deterministic function of the inputs for every output entry. */
static int tfwd(const dfm_model_io *io, void *ud)
{
    tmodel *m = (tmodel *)ud;
    m->fwd++;
    for (size_t r = 0; r < io->rows; r++) {
        double t0 = io->part_t ? io->part_t[r * io->n_part_t] : io->t[r];
        for (size_t j = 0; j < io->out_stride; j++) {
            double v = sin(1.3 * (double)j + 2.1 * t0 + 0.7 * (double)r);
            if (io->n_tokens) v += 0.3 * (double)io->tokens[r * io->n_tokens + (j / 5) % io->n_tokens];
            if (io->n_reals) v += 0.2 * io->reals[r * io->n_reals];
            io->out[r * io->out_stride + j] = (float)v;
        }
    }
    if (m->perturb >= 0) io->out[m->perturb] += (float)m->eps;
    m->n_out = io->rows * io->out_stride;
    return 0;
}

static int tbwd(const dfm_model_io *io, const float *grad, void *ud)
{
    tmodel *m = (tmodel *)ud;
    m->bwd++;
    if (m->fail_backward) return m->fail_backward;
    if (m->grad) memcpy(m->grad, grad, io->rows * io->out_stride * sizeof(float));
    if (m->out_copy) memcpy(m->out_copy, io->out, io->rows * io->out_stride * sizeof(float));
    return 0;
}

/* Product trainer: a mixture part [5]^2 (generalized KL) and an affine part R^2 (MSE). */
static dfm_trainer *make_trainer(dfm_path **pp_out)
{
    dfm_path *pd = mixture_path(2), *pc = affine_path(2), *pp;
    const dfm_path *parts[2] = {pd, pc};
    ck_assert_int_eq(dfm_path_create_product(&pp, parts, 2, NULL), DFM_OK);
    ck_assert_int_eq(dfm_path_kind(pp), DFM_PATH_PRODUCT);
    ck_assert_uint_eq(dfm_path_n_parts(pp), 2);
    dfm_loss *lk, *lm, *lp;
    dfm_generator *gv;
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&lk, pd, NULL), DFM_OK);
    ck_assert_int_eq(dfm_generator_create_velocity(&gv, pc, DFM_PARAM_VELOCITY, NULL), DFM_OK);
    ck_assert_int_eq(dfm_loss_create_mse(&lm, gv, NULL), DFM_OK);
    const dfm_loss *ls[2] = {lk, lm};
    double w[2] = {0.7, 1.3};
    ck_assert_int_eq(dfm_loss_create_product(&lp, pp, ls, w, 2, NULL), DFM_OK);
    dfm_trainer *tr;
    ck_assert_int_eq(dfm_trainer_create(&tr, pp, lp, NULL), DFM_OK);
    dfm_loss_free(lk);
    dfm_loss_free(lm);
    dfm_loss_free(lp);
    dfm_generator_free(gv);
    dfm_path_free(pd);
    dfm_path_free(pc);
    if (pp_out) *pp_out = pp; else dfm_path_free(pp);
    return tr;
}

enum { TR = 8 };
static int32_t TX1T[TR * 2];
static float TX1R[TR * 2];

static void init_batch(void)
{
    for (int i = 0; i < TR * 2; i++) {
        TX1T[i] = (i * 7 + 3) % 4;
        TX1R[i] = (float)(0.5 * sin(i * 1.7));
    }
}

static double train_once(dfm_trainer *tr, tmodel *m)
{
    dfm_train_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = TR;
    a.x1_tokens = TX1T;
    a.x1_reals = TX1R;
    a.forward = tfwd;
    a.backward = tbwd;
    a.user_data = m;
    double loss = NAN;
    a.loss = &loss;
    ck_assert_msg(dfm_trainer_step(tr, &a) == DFM_OK, "%s", dfm_trainer_last_error(tr));
    return loss;
}

START_TEST(train_gradient_fd)
{
    init_batch();
    for (int pt = 0; pt < 2; pt++) {
        dfm_trainer *tr = make_trainer(NULL);
        ck_assert_int_eq(dfm_trainer_set_int(tr, DFM_OPT_SEED, 5), DFM_OK);
        ck_assert_int_eq(dfm_trainer_set_int(tr, DFM_OPT_GM_PART_TIMES, pt), DFM_OK);
        ck_assert_uint_eq(dfm_trainer_n_times(tr), pt ? 2 : 1);
        const size_t S = 10 + 2, N = TR * S;
        float *grad = calloc(N, sizeof *grad);
        tmodel m = {-1, 0, grad, 0, NULL, 0, 0, 0};
        double l0 = train_once(tr, &m);
        ck_assert(isfinite(l0));
        ck_assert_int_eq(m.n_out, (long)N);
        ck_assert_uint_eq(dfm_trainer_step_count(tr), 1);
        int checked = 0;
        for (size_t j = 0; j < N; j += 3) {
            double h = 1e-2, lp, lm;
            tmodel q = {(int)j, h, NULL, 0, NULL, 0, 0, 0};
            dfm_trainer_set_step(tr, 0);
            lp = train_once(tr, &q);
            q.eps = -h;
            dfm_trainer_set_step(tr, 0);
            lm = train_once(tr, &q);
            double fd = (lp - lm) / (2 * h);
            ck_assert_msg(fabs(fd - grad[j]) < 2e-3 + 1e-2 * fabs(fd),
                          "entry %zu: grad %g fd %g", j, grad[j], fd);
            checked++;
        }
        ck_assert_int_gt(checked, 20);
        free(grad);
        dfm_trainer_free(tr);
    }
}
END_TEST

START_TEST(train_reproducible)
{
    init_batch();
    const size_t N = TR * 12;
    double l[2][3];
    float *g[2][3], *o[2][3];
    for (int run = 0; run < 2; run++) {
        dfm_trainer *tr = make_trainer(NULL);
        dfm_trainer_set_int(tr, DFM_OPT_SEED, 42);
        dfm_trainer_set_int(tr, DFM_OPT_THREADS, run ? 2 : 1);
        dfm_trainer_set_int(tr, DFM_OPT_GM_TIME_KIND, DFM_TIME_LOGIT_NORMAL);
        dfm_trainer_set_int(tr, DFM_OPT_GM_PART_TIMES, 1);
        for (int k = 0; k < 3; k++) {
            g[run][k] = calloc(N, sizeof(float));
            o[run][k] = calloc(N, sizeof(float));
            tmodel m = {-1, 0, g[run][k], 0, o[run][k], 0, 0, 0};
            l[run][k] = train_once(tr, &m);
        }
        ck_assert_uint_eq(dfm_trainer_step_count(tr), 3);
        dfm_trainer_free(tr);
    }
    for (int k = 0; k < 3; k++) {
        ck_assert(memcmp(&l[0][k], &l[1][k], sizeof(double)) == 0);
        ck_assert(memcmp(g[0][k], g[1][k], N * sizeof(float)) == 0);
        ck_assert(memcmp(o[0][k], o[1][k], N * sizeof(float)) == 0);
        if (k) ck_assert(l[0][k] != l[0][k - 1]); /* each step draws anew */
        free(g[0][k]); free(g[1][k]); free(o[0][k]); free(o[1][k]);
    }
}
END_TEST

START_TEST(train_draw_primitives)
{
    /* dfm_trainer_draw + dfm_loss_eval_parts reproduce dfm_trainer_step's loss */
    init_batch();
    dfm_path *pp;
    dfm_trainer *tr = make_trainer(&pp);
    dfm_trainer_set_int(tr, DFM_OPT_SEED, 3);
    dfm_trainer_set_int(tr, DFM_OPT_GM_PART_TIMES, 1);
    double t[TR], pt[TR * 2];
    int32_t xt[TR * 2];
    float xr[TR * 2], x0[TR * 2], out[TR * 12];
    dfm_train_draw_args d;
    memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    d.rows = TR;
    d.x1_tokens = TX1T;
    d.x1_reals = TX1R;
    d.t = t;
    d.part_t = pt;
    d.xt_tokens = xt;
    d.xt_reals = xr;
    d.x0_reals_out = x0;
    ck_assert_int_eq(dfm_trainer_draw(tr, &d), DFM_OK);
    for (int r = 0; r < TR; r++) {
        ck_assert(t[r] == pt[2 * r]);
        ck_assert(pt[2 * r] >= 0 && pt[2 * r] <= 0.999 && pt[2 * r + 1] <= 0.999);
    }
    ck_assert(pt[1] != pt[0]);
    dfm_model_io io;
    memset(&io, 0, sizeof io);
    io.struct_size = sizeof io;
    io.rows = TR;
    io.t = t;
    io.tokens = xt;
    io.n_tokens = 2;
    io.reals = xr;
    io.n_reals = 2;
    io.out = out;
    io.out_stride = 12;
    io.part_t = pt;
    io.n_part_t = 2;
    tmodel m = {-1, 0, NULL, 0, NULL, 0, 0, 0};
    tfwd(&io, &m);
    /* the loss handle: rebuild the product loss on the same path */
    dfm_loss *lk, *lm, *lp;
    dfm_generator *gv;
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&lk, dfm_path_part(pp, 0), NULL), DFM_OK);
    ck_assert_int_eq(dfm_generator_create_velocity(&gv, dfm_path_part(pp, 1), DFM_PARAM_VELOCITY, NULL), DFM_OK);
    ck_assert_int_eq(dfm_loss_create_mse(&lm, gv, NULL), DFM_OK);
    const dfm_loss *ls[2] = {lk, lm};
    double w[2] = {0.7, 1.3};
    ck_assert_int_eq(dfm_loss_create_product(&lp, pp, ls, w, 2, NULL), DFM_OK);
    double loss;
    dfm_loss_args la;
    memset(&la, 0, sizeof la);
    la.struct_size = sizeof la;
    la.rows = TR;
    la.t = t;
    la.x1_tokens = TX1T;
    la.xt_tokens = xt;
    la.x0_reals = x0;
    la.x1_reals = TX1R;
    la.xt_reals = xr;
    la.out = out;
    la.loss = &loss;
    ck_assert_msg(dfm_loss_eval_parts(lp, &la, pt) == DFM_OK, "%s", dfm_loss_last_error(lp));
    tmodel m2 = {-1, 0, NULL, 0, NULL, 0, 0, 0};
    double ls_step = train_once(tr, &m2);
    ck_assert_double_eq_tol(loss, ls_step, 1e-12 * fabs(loss) + 1e-12);
    dfm_loss_free(lk); dfm_loss_free(lm); dfm_loss_free(lp);
    dfm_generator_free(gv);
    dfm_path_free(pp);
    dfm_trainer_free(tr);
}
END_TEST

/* Product trainer with the parts in either order (tokens_first 0: the logits slice starts after
 * the reals'), weights 0.7 / 1.3. */
static dfm_trainer *make_trainer_ordered(int tokens_first, dfm_loss **lp_out)
{
    dfm_path *pd = mixture_path(2), *pc = affine_path(2), *pp;
    const dfm_path *parts[2] = {tokens_first ? pd : pc, tokens_first ? pc : pd};
    ck_assert_int_eq(dfm_path_create_product(&pp, parts, 2, NULL), DFM_OK);
    dfm_loss *lk, *lm, *lp;
    dfm_generator *gv;
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&lk, pd, NULL), DFM_OK);
    ck_assert_int_eq(dfm_generator_create_velocity(&gv, pc, DFM_PARAM_VELOCITY, NULL), DFM_OK);
    ck_assert_int_eq(dfm_loss_create_mse(&lm, gv, NULL), DFM_OK);
    const dfm_loss *ls[2] = {tokens_first ? lk : lm, tokens_first ? lm : lk};
    double w[2] = {0.7, 1.3};
    ck_assert_int_eq(dfm_loss_create_product(&lp, pp, ls, w, 2, NULL), DFM_OK);
    dfm_trainer *tr;
    ck_assert_int_eq(dfm_trainer_create(&tr, pp, lp, NULL), DFM_OK);
    dfm_loss_free(lk); dfm_loss_free(lm);
    dfm_generator_free(gv);
    dfm_path_free(pd); dfm_path_free(pc); dfm_path_free(pp);
    *lp_out = lp;
    return tr;
}

/* The trainer's product loss writes its parts' gradients in place: loss, values and gradient
 * equal dfm_loss_eval_parts on the same draws, to the bit, for either order of the parts, mean
 * and sum reductions, one and two threads. */
START_TEST(train_in_place_matches_eval)
{
    init_batch();
    for (int c = 0; c < 8; c++) {
        int tokens_first = c & 1, red = (c & 2) ? DFM_REDUCE_SUM : DFM_REDUCE_MEAN, th = 1 + (c >> 2);
        dfm_loss *lp;
        dfm_trainer *tr = make_trainer_ordered(tokens_first, &lp);
        dfm_trainer_set_int(tr, DFM_OPT_SEED, 11 + c);
        dfm_trainer_set_int(tr, DFM_OPT_GM_PART_TIMES, 1);
        dfm_trainer_set_int(tr, DFM_OPT_REDUCTION, red);
        dfm_trainer_set_int(tr, DFM_OPT_THREADS, th);
        dfm_loss_set_int(lp, DFM_OPT_REDUCTION, red);
        dfm_trainer_set_step(tr, 4);
        double t[TR], pt[TR * 2];
        int32_t xt[TR * 2];
        float xr[TR * 2], x0[TR * 2], out[TR * 12], g_eval[TR * 12], g_step[TR * 12];
        dfm_train_draw_args d;
        memset(&d, 0, sizeof d);
        d.struct_size = sizeof d;
        d.rows = TR;
        d.x1_tokens = TX1T;
        d.x1_reals = TX1R;
        d.t = t;
        d.part_t = pt;
        d.xt_tokens = xt;
        d.xt_reals = xr;
        d.x0_reals_out = x0;
        ck_assert_int_eq(dfm_trainer_draw(tr, &d), DFM_OK);
        dfm_model_io io;
        memset(&io, 0, sizeof io);
        io.struct_size = sizeof io;
        io.rows = TR;
        io.t = t;
        io.tokens = xt;
        io.n_tokens = 2;
        io.reals = xr;
        io.n_reals = 2;
        io.out = out;
        io.out_stride = 12;
        io.part_t = pt;
        io.n_part_t = 2;
        tmodel m = {-1, 0, NULL, 0, NULL, 0, 0, 0};
        tfwd(&io, &m);
        double loss_eval = NAN;
        dfm_loss_args la;
        memset(&la, 0, sizeof la);
        la.struct_size = sizeof la;
        la.rows = TR;
        la.t = t;
        la.x1_tokens = TX1T;
        la.xt_tokens = xt;
        la.x0_reals = x0;
        la.x1_reals = TX1R;
        la.xt_reals = xr;
        la.out = out;
        la.grad = g_eval;
        la.loss = &loss_eval;
        ck_assert_msg(dfm_loss_eval_parts(lp, &la, pt) == DFM_OK, "%s", dfm_loss_last_error(lp));
        tmodel m2 = {-1, 0, g_step, 0, NULL, 0, 0, 0};
        double loss_step = train_once(tr, &m2);
        ck_assert_msg(memcmp(&loss_eval, &loss_step, sizeof(double)) == 0, "case %d: %.17g vs %.17g",
                      c, loss_eval, loss_step);
        ck_assert_msg(memcmp(g_eval, g_step, sizeof g_eval) == 0, "case %d: gradients differ", c);
        dfm_loss_free(lp);
        dfm_trainer_free(tr);
    }
}
END_TEST

/* A product trainer's forward that leaves the logits slice (or part of it) unwritten, or writes
 * a NaN there: the message names it, whichever the slice's place in the row. */
static void tr_assert_msg(const char *msg, const char *needle)
{
    ck_assert_msg(msg && strstr(msg, needle), "message \"%s\" does not contain \"%s\"",
                  msg ? msg : "(null)", needle);
}

typedef struct lmodel {
    int mode;       /* 0 all, 1 no logits, 2 row 1's last logit left, 3 a NaN in row 1 */
    size_t off;     /* offset of the logits slice */
} lmodel;

static int lfwd(const dfm_model_io *io, void *ud)
{
    const lmodel *m = (const lmodel *)ud;
    for (size_t r = 0; r < io->rows; r++)
        for (size_t j = 0; j < io->out_stride; j++) {
            int logit = j >= m->off && j < m->off + 10;
            if (logit && (m->mode == 1 || (m->mode == 2 && r == 1 && j == m->off + 9))) continue;
            io->out[r * io->out_stride + j] = logit ? (float)(0.1 * (double)(j - m->off)) : 0.5f;
        }
    if (m->mode == 3) io->out[io->out_stride + m->off + 6] = NAN;
    return 0;
}

START_TEST(train_product_unwritten)
{
    static const char *needles[] = {"wrote nothing: its whole output (8 rows x 10 floats)",
                                    "out[row 1][entry 9] is unwritten",
                                    "logits out[row 1][coord 1] contain NaN"};
    init_batch();
    for (int tokens_first = 0; tokens_first < 2; tokens_first++)
        for (int mode = 0; mode < 4; mode++) {
            dfm_loss *lp;
            dfm_trainer *tr = make_trainer_ordered(tokens_first, &lp);
            lmodel m = {mode, tokens_first ? 0 : 2};
            dfm_train_args a;
            memset(&a, 0, sizeof a);
            a.struct_size = sizeof a;
            a.rows = TR;
            a.x1_tokens = TX1T;
            a.x1_reals = TX1R;
            a.forward = lfwd;
            a.user_data = &m;
            double loss = -3.0;
            a.loss = &loss;
            int st = dfm_trainer_step(tr, &a);
            if (mode == 0) {
                ck_assert_msg(st == DFM_OK, "%s", dfm_trainer_last_error(tr));
            } else {
                ck_assert_int_eq(st, DFM_ENUMERIC);
                tr_assert_msg(dfm_trainer_last_error(tr), needles[mode - 1]);
                tr_assert_msg(dfm_trainer_last_error(tr), tokens_first ? "part 0" : "part 1");
                ck_assert(loss == -3.0);
                ck_assert_uint_eq(dfm_trainer_step_count(tr), 0);
            }
            dfm_loss_free(lp);
            dfm_trainer_free(tr);
        }
}
END_TEST

/* A direct dfm_loss_eval of a product loss writes the host's gradient only on success: a bad
 * entry in either part's slice, with the other part evaluated first, leaves it untouched. */
START_TEST(product_loss_failure_leaves_grad)
{
    init_batch();
    for (int c = 0; c < 4; c++) {
        int tokens_first = c & 1, bad_logit = c >> 1;
        dfm_loss *lp;
        dfm_trainer *tr = make_trainer_ordered(tokens_first, &lp);
        size_t loff = tokens_first ? 0 : 2, roff = tokens_first ? 10 : 0;
        int32_t xt[TR * 2];
        float xr[TR * 2], x0[TR * 2], out[TR * 12], grad[TR * 12];
        double t[TR];
        for (int i = 0; i < TR * 2; i++) {
            xt[i] = MASK;
            xr[i] = 0.1f * (float)i;
            x0[i] = -0.2f * (float)i;
        }
        for (int r = 0; r < TR; r++) t[r] = 0.1 + 0.1 * r;
        for (int i = 0; i < TR * 12; i++) {
            out[i] = 0.01f * (float)i;
            grad[i] = 7.0f;
        }
        out[3 * 12 + (bad_logit ? loff + 7 : roff + 1)] = NAN;
        double loss = -3.0;
        dfm_loss_args la;
        memset(&la, 0, sizeof la);
        la.struct_size = sizeof la;
        la.rows = TR;
        la.t = t;
        la.x1_tokens = TX1T;
        la.xt_tokens = xt;
        la.x0_reals = x0;
        la.x1_reals = TX1R;
        la.xt_reals = xr;
        la.out = out;
        la.grad = grad;
        la.loss = &loss;
        ck_assert_int_eq(dfm_loss_eval(lp, &la), DFM_ENUMERIC);
        ck_assert(loss == -3.0);
        for (int i = 0; i < TR * 12; i++) ck_assert(grad[i] == 7.0f);
        out[3 * 12 + (bad_logit ? loff + 7 : roff + 1)] = 0.5f;
        ck_assert_msg(dfm_loss_eval(lp, &la) == DFM_OK, "%s", dfm_loss_last_error(lp));
        ck_assert(isfinite(loss) && grad[0] != 7.0f);
        dfm_loss_free(lp);
        dfm_trainer_free(tr);
    }
}
END_TEST

/* ---- end to end: a per-position logit table trained through dfm_trainer_step ---- */

static const double E2E_Q[3][4] = {{0.1, 0.2, 0.3, 0.4}, {0.5, 0.25, 0.15, 0.1},
                                   {0.05, 0.05, 0.6, 0.3}};

typedef struct table_model {
    float logit[3][4];
    float g[3][4];
    float lr;
} table_model;

/* Masked positions get the table, unmasked ones a point mass on their token. */
static int table_fwd(const dfm_model_io *io, void *ud)
{
    table_model *m = (table_model *)ud;
    for (size_t r = 0; r < io->rows; r++)
        for (int i = 0; i < 3; i++) {
            int32_t x = io->tokens[r * 3 + i];
            float *o = io->out + r * io->out_stride + 5 * i;
            for (int y = 0; y < 5; y++) {
                if (x == MASK) o[y] = y < 4 ? m->logit[i][y] : -INFINITY;
                else o[y] = y == x ? 0.0f : -INFINITY;
            }
        }
    return 0;
}

static int table_bwd(const dfm_model_io *io, const float *grad, void *ud)
{
    table_model *m = (table_model *)ud;
    memset(m->g, 0, sizeof m->g);
    for (size_t r = 0; r < io->rows; r++)
        for (int i = 0; i < 3; i++)
            if (io->tokens[r * 3 + i] == MASK)
                for (int y = 0; y < 4; y++) m->g[i][y] += grad[r * io->out_stride + 5 * i + y];
    for (int i = 0; i < 3; i++)
        for (int y = 0; y < 4; y++) m->logit[i][y] -= m->lr * m->g[i][y];
    return 0;
}

START_TEST(train_end_to_end)
{
    dfm_path *p = mixture_path(3);
    dfm_loss *l;
    ck_assert_int_eq(dfm_loss_create_cross_entropy(&l, p, 1, NULL), DFM_OK);
    dfm_trainer *tr;
    ck_assert_int_eq(dfm_trainer_create(&tr, p, l, NULL), DFM_OK);
    dfm_trainer_set_int(tr, DFM_OPT_SEED, 11);
    dfm_trainer_set_int(tr, DFM_OPT_GM_TIME_KIND, DFM_TIME_STRATIFIED);
    table_model m;
    memset(&m, 0, sizeof m);
    enum { B = 256 };
    int32_t x1[B * 3];
    for (int step = 0; step < 400; step++) {
        m.lr = (float)(3.0 / (1.0 + step / 40.0)); /* decaying step size */
        for (int r = 0; r < B; r++) /* data drawn by the host from the factorized target */
            for (int i = 0; i < 3; i++) {
                double u = dfm_rng_uniform(77, 1, (uint64_t)(step * B + r), (uint32_t)i, 0), c = 0;
                int y = 0;
                for (; y < 3; y++) { c += E2E_Q[i][y]; if (u < c) break; }
                x1[r * 3 + i] = y;
            }
        dfm_train_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.rows = B;
        a.x1_tokens = x1;
        a.forward = table_fwd;
        a.backward = table_bwd;
        a.user_data = &m;
        double loss;
        a.loss = &loss;
        ck_assert_msg(dfm_trainer_step(tr, &a) == DFM_OK, "%s", dfm_trainer_last_error(tr));
    }
    /* sample the trained model */
    dfm_generator *g;
    ck_assert_int_eq(dfm_generator_create_factorized(&g, p, DFM_PARAM_LOGITS, NULL), DFM_OK);
    const dfm_generator *parts[1] = {g};
    dfm_generator *pg;
    ck_assert_int_eq(dfm_generator_create_product(&pg, parts, 1, NULL), DFM_OK);
    dfm_sampler *s;
    ck_assert_int_eq(dfm_sampler_create(&s, pg, DFM_METHOD_EXACT, NULL), DFM_OK);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 32), DFM_OK);
    const size_t R = 20000;
    int32_t *tok = malloc(R * 3 * sizeof *tok);
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = table_fwd;
    a.model_data = &m;
    a.rows = R;
    a.tokens = tok;
    a.draw_source = 1;
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_OK);
    /* stated bound: each position's law within TV 0.025 of the target */
    for (int i = 0; i < 3; i++) {
        long cnt[4] = {0};
        for (size_t r = 0; r < R; r++) cnt[tok[r * 3 + i]]++;
        double tv = tu_tv(cnt, E2E_Q[i], 4, (long)R);
        if (getenv("GM_DEBUG")) fprintf(stderr, "e2e position %d TV %g\n", i, tv);
        ck_assert_msg(tv < 0.025, "position %d: TV %g", i, tv);
    }
    free(tok);
    dfm_sampler_free(s);
    dfm_generator_free(pg);
    dfm_generator_free(g);
    dfm_trainer_free(tr);
    dfm_loss_free(l);
    dfm_path_free(p);
}
END_TEST

/* ---------------- general GM loss ---------------- */

static int vel_target(const dfm_cond_target_io *io, void *ud)
{
    (void)ud;
    for (size_t r = 0; r < io->rows; r++)
        for (size_t j = 0; j < io->n_reals; j++)
            io->target[r * io->target_stride + j] =
                io->x1_reals[r * io->n_reals + j] - io->x0_reals[r * io->n_reals + j];
    return 0;
}

static int rate_target(const dfm_cond_target_io *io, void *ud)
{
    (void)ud;
    for (size_t r = 0; r < io->rows; r++)
        for (size_t i = 0; i < io->n_tokens; i++)
            for (int y = 0; y < 5; y++)
                io->target[r * io->target_stride + 5 * i + y] =
                    io->x1_tokens[r * io->n_tokens + i] == y ? (float)(1.0 / (1.0 - io->t[r])) : 0.0f;
    return 0;
}

START_TEST(gm_loss_velocity_and_rates)
{
    dfm_space *se, *sd;
    ck_assert_int_eq(dfm_space_create_euclidean(&se, 2, NULL), DFM_OK);
    ck_assert_int_eq(dfm_space_create_discrete(&sd, 5, 2, NULL), DFM_OK);
    dfm_loss *lv, *lr;
    ck_assert_int_eq(dfm_loss_create_gm(&lv, se, DFM_GM_VELOCITY, vel_target, NULL, NULL), DFM_OK);
    ck_assert_int_eq(dfm_loss_create_gm(&lr, se, DFM_GM_RATES, rate_target, NULL, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_loss_create_gm(&lr, sd, 9, rate_target, NULL, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_loss_create_gm(&lr, sd, DFM_GM_RATES, NULL, NULL, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_loss_create_gm(&lr, sd, DFM_GM_RATES, rate_target, NULL, NULL), DFM_OK);
    /* velocity: value and gradient against the formula */
    double t[2] = {0.3, 0.6}, loss;
    float x0[4] = {0.1f, -0.2f, 0.3f, 0.4f}, x1[4] = {1.0f, 2.0f, -1.0f, 0.5f};
    float out[4] = {0.5f, 2.0f, -1.0f, 0.0f}, grad[4];
    dfm_loss_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = 2;
    a.t = t;
    a.x0_reals = x0;
    a.x1_reals = x1;
    a.xt_reals = x1;
    a.out = out;
    a.grad = grad;
    a.loss = &loss;
    ck_assert_int_eq(dfm_loss_eval(lv, &a), DFM_OK);
    double want = 0;
    for (int j = 0; j < 4; j++) {
        double e = out[j] - (x1[j] - x0[j]);
        want += e * e;
        ck_assert_double_eq_tol(grad[j], 2 * e / 4, 1e-6);
    }
    ck_assert_double_eq_tol(loss, want / 4, 1e-9);
    /* rates: Bregman divergence summed over y != x_t, gradient 1 - a / b off the diagonal */
    int32_t xt[4] = {MASK, 2, MASK, MASK}, x1t[4] = {1, 2, 3, 0};
    float rates[20], rg[20];
    for (int j = 0; j < 20; j++) rates[j] = 0.2f + 0.1f * (float)(j % 7);
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = 2;
    a.t = t;
    a.xt_tokens = xt;
    a.x1_tokens = x1t;
    a.out = rates;
    a.grad = rg;
    a.loss = &loss;
    ck_assert_int_eq(dfm_loss_eval(lr, &a), DFM_OK);
    want = 0;
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < 2; i++)
            for (int y = 0; y < 5; y++) {
                int j = r * 10 + i * 5 + y;
                if (y == xt[r * 2 + i]) { ck_assert(rg[j] == 0.0f); continue; }
                double av = x1t[r * 2 + i] == y ? 1.0 / (1.0 - t[r]) : 0.0, b = rates[j];
                want += (av > 0 ? av * log(av / b) : 0.0) - av + b;
                ck_assert_double_eq_tol(rg[j], (1 - av / b) / 4, 1e-5);
            }
    ck_assert_double_eq_tol(loss, want / 4, 1e-6);
    /* a zero model rate where the target is positive: DFM_ENUMERIC with a message */
    rates[1] = 0.0f;
    ck_assert_int_eq(dfm_loss_eval(lr, &a), DFM_ENUMERIC);
    ck_assert(strstr(dfm_loss_last_error(lr), "out[row 0][coord 0]") != NULL);
    dfm_loss_free(lv);
    dfm_loss_free(lr);
    dfm_space_free(se);
    dfm_space_free(sd);
}
END_TEST

static int lin_fwd(const dfm_model_io *io, void *ud)
{
    (void)ud;
    for (size_t j = 0; j < io->rows * io->out_stride; j++)
        io->out[j] = 0.3f * io->reals[j] + (float)io->t[j / io->out_stride];
    return 0;
}

static int grab_grad(const dfm_model_io *io, const float *grad, void *ud)
{
    memcpy(ud, grad, io->rows * io->out_stride * sizeof(float));
    return 0;
}

START_TEST(gm_loss_in_trainer_matches_mse)
{
    /* a host conditional generator equal to CondOT's (x1 - x0) trains exactly like the MSE loss */
    dfm_path *p = affine_path(3);
    dfm_generator *gv;
    dfm_loss *lm, *lg;
    ck_assert_int_eq(dfm_generator_create_velocity(&gv, p, DFM_PARAM_VELOCITY, NULL), DFM_OK);
    ck_assert_int_eq(dfm_loss_create_mse(&lm, gv, NULL), DFM_OK);
    ck_assert_int_eq(dfm_loss_create_gm(&lg, dfm_path_space(p), DFM_GM_VELOCITY, vel_target, NULL,
                                        NULL), DFM_OK);
    float x1[12], g[2][12];
    double loss[2];
    for (int i = 0; i < 12; i++) x1[i] = (float)sin(1.0 + i);
    for (int v = 0; v < 2; v++) {
        dfm_trainer *tr;
        ck_assert_int_eq(dfm_trainer_create(&tr, p, v ? lg : lm, NULL), DFM_OK);
        dfm_trainer_set_int(tr, DFM_OPT_SEED, 21);
        dfm_train_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.rows = 4;
        a.x1_reals = x1;
        a.forward = lin_fwd;
        a.backward = grab_grad;
        a.user_data = g[v];
        a.loss = &loss[v];
        ck_assert_msg(dfm_trainer_step(tr, &a) == DFM_OK, "%s", dfm_trainer_last_error(tr));
        dfm_trainer_free(tr);
    }
    ck_assert_double_eq_tol(loss[0], loss[1], 1e-6 * fabs(loss[0]));
    for (int i = 0; i < 12; i++) ck_assert_double_eq_tol(g[0][i], g[1][i], 1e-6);
    dfm_loss_free(lm);
    dfm_loss_free(lg);
    dfm_generator_free(gv);
    dfm_path_free(p);
}
END_TEST

/* ---------------- bad input ---------------- */

static int failing_w(double t, double *w, size_t n, void *ud)
{
    (void)w; (void)n; (void)ud;
    return t > 0.3 ? 17 : (w[0] = 1.0, w[1] = 0.0, 0);
}

static int backwards_clock(double t, double *pt, size_t n, void *ud)
{
    (void)ud;
    for (size_t k = 0; k < n; k++) pt[k] = k == 1 ? 1.0 - t : t;
    return 0;
}

static int nan_fn(const dfm_model_io *io, void *ud)
{
    (void)ud;
    for (size_t j = 0; j < io->rows * io->out_stride; j++) io->out[j] = 0.0f;
    if (io->step == 2) io->out[5] = NAN;
    return 0;
}

START_TEST(bad_input)
{
    dfm_path *pd = mixture_path(1), *pc = affine_path(1);
    dfm_generator *gd, *gc, *g;
    ck_assert_int_eq(dfm_generator_create_factorized(&gd, pd, DFM_PARAM_LOGITS, NULL), DFM_OK);
    ck_assert_int_eq(dfm_generator_create_velocity(&gc, pc, DFM_PARAM_X1, NULL), DFM_OK);
    /* superposition: mixed modalities, NULLs, non-finite weights */
    const dfm_generator *mixed[2] = {gd, gc};
    ck_assert_int_eq(dfm_generator_create_superposition(&g, mixed, NULL, 2, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_generator_create_superposition(&g, NULL, NULL, 2, NULL), DFM_EINVAL);
    double nanw[1] = {NAN};
    ck_assert_int_eq(dfm_generator_create_superposition(&g, mixed, nanw, 1, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_generator_create_guidance(&g, gd, gc, 1.0, NULL), DFM_EINVAL);
    /* set_input: a share with a different output size, an unknown branch */
    const dfm_generator *two[2] = {gd, gd};
    ck_assert_int_eq(dfm_generator_create_superposition(&g, two, NULL, 2, NULL), DFM_OK);
    ck_assert_int_eq(dfm_generator_superposition_set_input(g, 1, 7, -1), DFM_EINVAL);
    ck_assert(strstr(dfm_generator_last_error(g), "branch") != NULL);
    ck_assert_int_eq(dfm_generator_superposition_set_input(g, 0, DFM_BRANCH_MAIN, 1), DFM_EINVAL);
    ck_assert_int_eq(dfm_generator_superposition_set_input(g, 5, DFM_BRANCH_MAIN, -1), DFM_EINVAL);
    dfm_generator_free(g);
    /* product loss: a part loss that does not fit its part's layout */
    dfm_path *pp;
    const dfm_path *pparts[2] = {pd, pc};
    ck_assert_int_eq(dfm_path_create_product(&pp, pparts, 2, NULL), DFM_OK);
    dfm_loss *lk, *lm, *lp;
    ck_assert_int_eq(dfm_loss_create_generalized_kl(&lk, pd, NULL), DFM_OK);
    ck_assert_int_eq(dfm_loss_create_mse(&lm, gc, NULL), DFM_OK);
    const dfm_loss *swapped[2] = {lm, lk};
    ck_assert_int_eq(dfm_loss_create_product(&lp, pp, swapped, NULL, 2, NULL), DFM_EINVAL);
    const dfm_loss *one[1] = {lk};
    ck_assert_int_eq(dfm_loss_create_product(&lp, pp, one, NULL, 1, NULL), DFM_EINVAL);
    dfm_trainer *tr;
    ck_assert_int_eq(dfm_trainer_create(&tr, pp, lk, NULL), DFM_EINVAL); /* loss for one part */
    /* per-part times outside [0, 1] */
    double t[1] = {0.5}, part_t[2] = {0.5, 1.5};
    int32_t x1t[1] = {2}, xtt[1];
    float x1r[1] = {0.3f}, xtr[1];
    dfm_path_sample_args sa;
    memset(&sa, 0, sizeof sa);
    sa.struct_size = sizeof sa;
    sa.rows = 1;
    sa.t = t;
    sa.x1_tokens = x1t;
    sa.xt_tokens = xtt;
    sa.x1_reals = x1r;
    sa.xt_reals = xtr;
    ck_assert_int_eq(dfm_path_sample_parts(pp, &sa, part_t), DFM_ERANGE);
    ck_assert(strstr(dfm_path_last_error(pp), "part_t[1]") != NULL);
    x1t[0] = 9; /* a token out of range, named with its part */
    ck_assert_int_eq(dfm_path_sample(pp, &sa), DFM_ERANGE);
    ck_assert(strstr(dfm_path_last_error(pp), "part 0") != NULL);
    /* a failing backward callback: DFM_ECALLBACK, raw value kept, counter not advanced */
    const dfm_loss *ok[2] = {lk, lm};
    ck_assert_int_eq(dfm_loss_create_product(&lp, pp, ok, NULL, 2, NULL), DFM_OK);
    ck_assert_int_eq(dfm_trainer_create(&tr, pp, lp, NULL), DFM_OK);
    init_batch();
    tmodel m = {-1, 0, NULL, 0, NULL, -31, 0, 0};
    dfm_train_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = 4;
    a.x1_tokens = TX1T;
    a.x1_reals = TX1R;
    a.forward = tfwd;
    a.backward = tbwd;
    a.user_data = &m;
    double loss = 123.0;
    a.loss = &loss;
    ck_assert_int_eq(dfm_trainer_step(tr, &a), DFM_ECALLBACK);
    ck_assert_int_eq(dfm_trainer_callback_status(tr), -31);
    ck_assert(strstr(dfm_trainer_last_error(tr), "backward") != NULL);
    ck_assert(loss == 123.0);
    ck_assert_uint_eq(dfm_trainer_step_count(tr), 0);
    a.forward = NULL;
    ck_assert_int_eq(dfm_trainer_step(tr, &a), DFM_EINVAL);
    ck_assert_int_eq(dfm_trainer_set_int(tr, DFM_OPT_GM_TIME_KIND, 9), DFM_EINVAL);
    ck_assert_int_eq(dfm_trainer_set_double(tr, DFM_OPT_GM_TIME_EPS, 1.0), DFM_EINVAL);
    dfm_trainer_free(tr);
    /* NaN model output in a joint run: DFM_ENUMERIC naming the part, tokens untouched */
    const dfm_generator *parts[2] = {gd, gc};
    ck_assert_int_eq(dfm_generator_create_product(&g, parts, 2, NULL), DFM_OK);
    dfm_sampler *s;
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_EXACT, NULL), DFM_OK);
    int32_t tok[2] = {MASK, MASK};
    float re[2] = {0.1f, 0.2f};
    dfm_run_args ra;
    memset(&ra, 0, sizeof ra);
    ra.struct_size = sizeof ra;
    ra.model = nan_fn;
    ra.rows = 2;
    ra.tokens = tok;
    ra.reals = re;
    ck_assert_int_eq(dfm_sampler_run(s, &ra), DFM_ENUMERIC);
    ck_assert(strstr(dfm_sampler_last_error(s), "part 1") != NULL);
    ck_assert(tok[0] == MASK && tok[1] == MASK && re[0] == 0.1f);
    dfm_sampler_free(s);
    /* a part clock running backwards */
    ck_assert_int_eq(dfm_generator_set_part_time_fn(g, backwards_clock, NULL), DFM_OK);
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_EXACT, NULL), DFM_OK);
    ra.model = joint_fn;
    joint_model jm = {0, 0};
    ra.model_data = &jm;
    ck_assert_int_eq(dfm_sampler_run(s, &ra), DFM_EINVAL);
    ck_assert(strstr(dfm_sampler_last_error(s), "part 1's time decreases") != NULL);
    ck_assert_int_eq(dfm_generator_set_part_time_fn(gd, backwards_clock, NULL), DFM_EUNSUPPORTED);
    /* a failing weight function: DFM_ECALLBACK with its raw value */
    dfm_generator *gsup;
    const dfm_generator *two_c[2] = {gc, gc};
    ck_assert_int_eq(dfm_generator_create_superposition(&gsup, two_c, NULL, 2, NULL), DFM_OK);
    ck_assert_int_eq(dfm_generator_set_weight_fn(gsup, failing_w, NULL), DFM_OK);
    dfm_sampler *s2;
    ck_assert_int_eq(dfm_sampler_create(&s2, gsup, DFM_METHOD_EULER, NULL), DFM_OK);
    ck_assert_int_eq(dfm_sampler_set_steps(s2, 10), DFM_OK);
    dfm_run_args wa = ra;
    wa.model = cgmm_fn;
    cmodel cm = {2, 0, 0.0};
    wa.model_data = &cm;
    wa.tokens = NULL;
    ck_assert_int_eq(dfm_sampler_run(s2, &wa), DFM_ECALLBACK);
    ck_assert_int_eq(dfm_sampler_callback_status(s2), 17);
    ck_assert(re[0] == 0.1f);
    dfm_sampler_free(s2);
    dfm_generator_free(gsup);
    /* a rate-matrix generator is not a product part */
    dfm_generator *rm;
    dfm_space *sd;
    ck_assert_int_eq(dfm_space_create_discrete(&sd, 3, 2, NULL), DFM_OK);
    ck_assert_int_eq(dfm_generator_create_rate_matrix(&rm, NULL, sd, DFM_PARAM_RATES, NULL), DFM_OK);
    const dfm_generator *rmp[1] = {rm};
    dfm_generator *bad;
    ck_assert_int_eq(dfm_generator_create_product(&bad, rmp, 1, NULL), DFM_EUNSUPPORTED);
    dfm_generator_free(rm);
    dfm_space_free(sd);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    dfm_loss_free(lk);
    dfm_loss_free(lm);
    dfm_loss_free(lp);
    dfm_path_free(pp);
    dfm_generator_free(gd);
    dfm_generator_free(gc);
    dfm_path_free(pd);
    dfm_path_free(pc);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("gm");
    TCase *tc = tu_tcase("joint_and_superposition");
    tcase_add_test(tc, multimodal_joint_exact);
    tcase_add_test(tc, multimodal_joint_euler);
    tcase_add_test(tc, multimodal_part_times);
    tcase_add_test(tc, multimodal_wrong_model_fails);
    tcase_add_test(tc, joint_reproducible_any_split);
    tcase_add_test(tc, joint_intermediate_states);
    tcase_add_test(tc, superposition_flow_diffusion);
    tcase_add_test(tc, superposition_forward_corrector);
    tcase_add_test(tc, superposition_two_rate_generators);
    tcase_add_test(tc, guidance_rates_clamped);
    tcase_add_test(tc, guidance_velocity);
    tcase_add_test(tc, guidance_fast_path_matches_general);
    suite_add_tcase(su, tc);
    TCase *tt = tu_tcase("training");
    tcase_add_test(tt, train_gradient_fd);
    tcase_add_test(tt, train_reproducible);
    tcase_add_test(tt, train_draw_primitives);
    tcase_add_test(tt, train_in_place_matches_eval);
    tcase_add_test(tt, train_product_unwritten);
    tcase_add_test(tt, product_loss_failure_leaves_grad);
    tcase_add_test(tt, train_end_to_end);
    tcase_add_test(tt, gm_loss_velocity_and_rates);
    tcase_add_test(tt, gm_loss_in_trainer_matches_mse);
    tcase_add_test(tt, bad_input);
    suite_add_tcase(su, tt);
    return tu_run(su) ? 1 : 0;
}
