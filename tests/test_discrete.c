/* Discrete module: mixture path, factorized generators and their samplers, measured against
 * exact targets (DESIGN.md §4): a known q on a small [V]^d whose exact posterior, computed by
 * enumeration, is the model. */
#include "ds_target.h"

static void check_q(int source, int sched_kind, int method, size_t steps, double corr, double eta,
                    int purity, double temp_check)
{
    target T;
    target_init(&T, 3, source, sched_kind);
    dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, method);
    ck_assert_int_eq(dfm_sampler_set_steps(s, steps), 0);
    if (corr > 0) ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_DS_CORRECTOR, corr), 0);
    if (eta > 0) ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_DS_ETA, eta), 0);
    if (purity) ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_DS_PURITY, 1), 0);
    (void)temp_check;
    long hist[MAXS], saved[MAXS];
    double st[1] = {0.5}, pt[MAXS];
    run_hist(s, &T, NS, hist, st, 1, saved, NULL);
    TU_ASSERT_CHI2(hist, T.q, 27, NS);
    if (!purity) {
        marginal_pt(&T, 0.5, pt); /* the law of x_t halfway is p_t too */
        TU_ASSERT_CHI2(saved, pt, ipow(T.V, T.d), NS);
    } else {
        /* purity changes which positions are unmasked, not how many: mean masks = d (1 - kappa) */
        double masks = 0.0;
        for (int a = 0; a < 64; a++) {
            int x[3];
            decode(a, 4, 3, x);
            masks += (double)saved[a] * ((x[0] == 3) + (x[1] == 3) + (x[2] == 3));
        }
        masks /= NS;
        ck_assert_msg(fabs(masks - 1.5) < tu_tol(0.03, NS_FULL, (size_t)NS), "mean masked positions %g, want 1.5", masks);
    }
    int64_t calls = 0, jumps = 0;
    dfm_sampler_get_stat(s, DFM_STAT_MODEL_CALLS, &calls);
    dfm_sampler_get_stat(s, DFM_STAT_JUMPS, &jumps);
    ck_assert_int_eq(calls, (int64_t)steps);
    ck_assert_int_gt(jumps, NS);
    dfm_sampler_free(s);
    dfm_scheduler_free(T.sched);
}

START_TEST(exact_step_mask_condot) { check_q(DFM_SOURCE_MASK, DFM_SCHED_CONDOT, DFM_METHOD_EXACT, 200, 0, 0, 0, 0); }
END_TEST
START_TEST(exact_step_mask_cosine) { check_q(DFM_SOURCE_MASK, DFM_SCHED_COSINE, DFM_METHOD_EXACT, 200, 0, 0, 0, 0); }
END_TEST
START_TEST(exact_step_uniform_condot) { check_q(DFM_SOURCE_UNIFORM, DFM_SCHED_CONDOT, DFM_METHOD_EXACT, 200, 0, 0, 0, 0); }
END_TEST
START_TEST(exact_step_custom_poly) { check_q(DFM_SOURCE_CUSTOM, DFM_SCHED_POLYNOMIAL, DFM_METHOD_EXACT, 200, 0, 0, 0, 0); }
END_TEST
START_TEST(euler_mask_condot) { check_q(DFM_SOURCE_MASK, DFM_SCHED_CONDOT, DFM_METHOD_EULER, 400, 0, 0, 0, 0); }
END_TEST
START_TEST(euler_uniform_cosine) { check_q(DFM_SOURCE_UNIFORM, DFM_SCHED_COSINE, DFM_METHOD_EULER, 400, 0, 0, 0, 0); }
END_TEST
START_TEST(euler_custom_condot) { check_q(DFM_SOURCE_CUSTOM, DFM_SCHED_CONDOT, DFM_METHOD_EULER, 400, 0, 0, 0, 0); }
END_TEST
START_TEST(euler_corrector_uniform) { check_q(DFM_SOURCE_UNIFORM, DFM_SCHED_CONDOT, DFM_METHOD_EULER, 400, 1.0, 0, 0, 0); }
END_TEST
START_TEST(exact_corrector_mask) { check_q(DFM_SOURCE_MASK, DFM_SCHED_CONDOT, DFM_METHOD_EXACT, 400, 1.0, 0, 0, 0); }
END_TEST
START_TEST(exact_eta_mask) { check_q(DFM_SOURCE_MASK, DFM_SCHED_CONDOT, DFM_METHOD_EXACT, 400, 0, 2.0, 0, 0); }
END_TEST
START_TEST(euler_eta_custom_condot) { check_q(DFM_SOURCE_CUSTOM, DFM_SCHED_CONDOT, DFM_METHOD_EULER, 400, 0, 2.0, 0, 0); }
END_TEST
START_TEST(exact_eta_uniform_cosine) { check_q(DFM_SOURCE_UNIFORM, DFM_SCHED_COSINE, DFM_METHOD_EXACT, 400, 0, 2.0, 0, 0); }
END_TEST
START_TEST(exact_corrector_eta_custom) { check_q(DFM_SOURCE_CUSTOM, DFM_SCHED_CONDOT, DFM_METHOD_EXACT, 400, 0.5, 1.0, 0, 0); }
END_TEST
START_TEST(purity_mask) { check_q(DFM_SOURCE_MASK, DFM_SCHED_CONDOT, DFM_METHOD_EXACT, 200, 0, 0, 1, 0); }
END_TEST

static int corr_fn(double t, double *c, void *ud)
{
    (void)ud;
    *c = 2.0 * t * (1.0 - t);
    return 0;
}

START_TEST(corrector_callback)
{
    target T;
    target_init(&T, 3, DFM_SOURCE_UNIFORM, DFM_SCHED_CONDOT);
    dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, DFM_METHOD_EULER);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 400), 0);
    ck_assert_int_eq(dfm_sampler_set_corrector(s, corr_fn, NULL), 0);
    long hist[MAXS];
    run_hist(s, &T, NS, hist, NULL, 0, NULL, NULL);
    TU_ASSERT_CHI2(hist, T.q, 27, NS);
    dfm_sampler_free(s);
    dfm_scheduler_free(T.sched);
}
END_TEST

/* d = 1: the exact step has no error at all, even with 3 steps. */
START_TEST(exact_step_is_exact_d1)
{
    int sources[3] = {DFM_SOURCE_MASK, DFM_SOURCE_UNIFORM, DFM_SOURCE_CUSTOM};
    for (int k = 0; k < 3; k++) {
        target T;
        target_init(&T, 1, sources[k], k == 1 ? DFM_SCHED_COSINE : DFM_SCHED_CONDOT);
        dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, DFM_METHOD_EXACT);
        ck_assert_int_eq(dfm_sampler_set_steps(s, 3), 0);
        long hist[MAXS];
        long n = (long)tu_count(50000);
        run_hist(s, &T, (size_t)n, hist, NULL, 0, NULL, NULL);
        TU_ASSERT_CHI2(hist, T.q, 3, n);
        dfm_sampler_free(s);
        dfm_scheduler_free(T.sched);
    }
}
END_TEST

/* d = 1: the law after n steps of a sampler is computable exactly by propagating its one-step
 * kernel, so few-step Euler (flow_matching's semantics, with corrector and eta) and the exact
 * step with added rates are checked against their exact finite-step laws. */
static void d1_law(const target *T, int method, int n, double c, double eta, double *law)
{
    int V = T->V;
    for (int x = 0; x < V; x++) law[x] = T->p0[x];
    for (int i = 0; i < n; i++) {
        double t0 = (double)i / n, t1 = (double)(i + 1) / n, h = t1 - t0;
        dfm_sched_values v0, v1;
        dfm_scheduler_eval(T->sched, t0, &v0, NULL);
        dfm_scheduler_eval(T->sched, t1, &v1, NULL);
        double k0 = v0.alpha, dk0 = v0.d_alpha, k1 = v1.alpha, om = 1.0 - k0;
        double A = ((method == DFM_METHOD_EULER ? 1.0 + c : c) * dk0 + eta * k0) / om;
        double B = (k0 > 0.0 ? c * dk0 / k0 : 0.0) + eta;
        double next[8] = {0};
        for (int x = 0; x < V; x++) {
            if (law[x] <= 0.0) continue;
            double p[8], Z = 0.0, K[8] = {0};
            for (int y = 0; y < V; y++) {
                p[y] = y < T->qV ? T->q[y] * pt_cond(T, k0, x, y) : 0.0;
                Z += p[y];
            }
            for (int y = 0; y < V; y++) p[y] /= Z;
            if (method == DFM_METHOD_EULER && i == n - 1) {
                for (int y = 0; y < V; y++) K[y] = p[y];
            } else if (method == DFM_METHOD_EULER) {
                double lb = B * (1.0 - T->p0[x]);
                for (int x1 = 0; x1 < V; x1++) {
                    double lam = (x1 != x ? A : 0.0) + lb;
                    if (p[x1] <= 0.0 || lam <= 0.0) continue;
                    double pj = -expm1(-h * lam);
                    for (int y = 0; y < V; y++)
                        if (y != x) K[y] += p[x1] * pj * ((y == x1 ? A : 0.0) + B * T->p0[y]) / lam;
                }
            } else {
                double pj = (k1 - k0) / om;
                for (int y = 0; y < V; y++) K[y] += pj * p[y];
                double le = A * (1.0 - p[x]) + B * (1.0 - T->p0[x]);
                if ((c > 0.0 || eta > 0.0) && le > 0.0) {
                    double pe = -expm1(-h * le);
                    for (int y = 0; y < V; y++)
                        if (y != x) K[y] += (1.0 - pj) * pe * (A * p[y] + B * T->p0[y]) / le;
                }
            }
            double stay = 1.0;
            for (int y = 0; y < V; y++) if (y != x) stay -= K[y];
            K[x] = stay;
            for (int y = 0; y < V; y++) next[y] += law[x] * K[y];
        }
        for (int y = 0; y < V; y++) law[y] = next[y];
    }
}

START_TEST(few_steps_exact_laws_d1)
{
    struct { int source, sched, method; double c, eta; } cs[5] = {
        {DFM_SOURCE_UNIFORM, DFM_SCHED_COSINE, DFM_METHOD_EULER, 0.0, 0.0},
        {DFM_SOURCE_CUSTOM, DFM_SCHED_CONDOT, DFM_METHOD_EULER, 1.0, 0.5},
        {DFM_SOURCE_MASK, DFM_SCHED_CONDOT, DFM_METHOD_EULER, 0.0, 1.0},
        {DFM_SOURCE_UNIFORM, DFM_SCHED_CONDOT, DFM_METHOD_EXACT, 0.5, 1.0},
        {DFM_SOURCE_CUSTOM, DFM_SCHED_POLYNOMIAL, DFM_METHOD_EXACT, 2.0, 0.0},
    };
    for (int k = 0; k < 5; k++) {
        target T;
        target_init(&T, 1, cs[k].source, cs[k].sched);
        dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, cs[k].method);
        ck_assert_int_eq(dfm_sampler_set_steps(s, 4), 0);
        ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_DS_CORRECTOR, cs[k].c), 0);
        ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_DS_ETA, cs[k].eta), 0);
        long hist[MAXS];
        long n = (long)tu_count(60000);
        run_hist(s, &T, (size_t)n, hist, NULL, 0, NULL, NULL);
        double law[8];
        d1_law(&T, cs[k].method, 4, cs[k].c, cs[k].eta, law);
        if (cs[k].method == DFM_METHOD_EXACT) { /* sanity: the exact step's law is q itself */
            double tv = 0.0;
            for (int y = 0; y < 3; y++) tv += fabs(law[y] - T.q[y]);
            ck_assert_msg(cs[k].c > 0 || cs[k].eta > 0 || tv < 1e-12, "exact law differs from q");
        }
        TU_ASSERT_CHI2(hist, law, 3, n);
        dfm_sampler_free(s);
        dfm_scheduler_free(T.sched);
    }
}
END_TEST

/* Temperature T: with d = 1 and a mask source the exact step draws x1 from q^(1/T) / Z. */
START_TEST(temperature_d1)
{
    target T;
    target_init(&T, 1, DFM_SOURCE_MASK, DFM_SCHED_CONDOT);
    dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, DFM_METHOD_EXACT);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 5), 0);
    ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_DS_TEMPERATURE, 0.5), 0);
    double tv;
    ck_assert_int_eq(dfm_sampler_get_double(s, DFM_OPT_DS_TEMPERATURE, &tv), 0);
    ck_assert(tv == 0.5);
    long hist[MAXS];
    long n = (long)tu_count(50000);
    run_hist(s, &T, (size_t)n, hist, NULL, 0, NULL, NULL);
    double p[3], z = 0.0;
    for (int j = 0; j < 3; j++) { p[j] = T.q[j] * T.q[j]; z += p[j]; }
    for (int j = 0; j < 3; j++) p[j] /= z;
    TU_ASSERT_CHI2(hist, p, 3, n);
    dfm_sampler_free(s);
    dfm_scheduler_free(T.sched);
}
END_TEST

/* Product target, 4 steps: the exact step has no error, so final and intermediate laws are
 * exact; an off-by-one time in the model or the step fails this at once. */
START_TEST(exact_step_few_steps_product)
{
    int sources[3] = {DFM_SOURCE_MASK, DFM_SOURCE_UNIFORM, DFM_SOURCE_CUSTOM};
    int scheds[3] = {DFM_SCHED_CONDOT, DFM_SCHED_COSINE, DFM_SCHED_POLYNOMIAL};
    for (int k = 0; k < 3; k++) {
        target T;
        target_init(&T, 3, sources[k], scheds[k]);
        make_q_product(&T);
        dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, DFM_METHOD_EXACT);
        ck_assert_int_eq(dfm_sampler_set_steps(s, 4), 0);
        double st[1] = {0.5};
        long hist[MAXS], saved[MAXS];
        long n = (long)tu_count(40000);
        run_hist(s, &T, (size_t)n, hist, st, 1, saved, NULL);
        double pt[MAXS];
        marginal_pt(&T, 0.5, pt);
        TU_ASSERT_CHI2(saved, pt, ipow(T.V, T.d), n);
        TU_ASSERT_CHI2(hist, T.q, 27, n);
        dfm_sampler_free(s);
        dfm_scheduler_free(T.sched);
    }
}
END_TEST

/* Intermediate marginals at save times match p_t (exact step, also uniform source + grid). */
START_TEST(intermediate_marginals)
{
    int sources[2] = {DFM_SOURCE_MASK, DFM_SOURCE_UNIFORM};
    for (int k = 0; k < 2; k++) {
        target T;
        target_init(&T, 3, sources[k], DFM_SCHED_CONDOT);
        dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, DFM_METHOD_EXACT);
        double grid[201];
        for (int i = 0; i <= 200; i++) grid[i] = (double)i / 200.0;
        ck_assert_int_eq(dfm_sampler_set_grid(s, grid, 201), 0);
        double st[2] = {0.3, 0.7};
        long hist[MAXS], saved[2 * MAXS];
        run_hist(s, &T, NS, hist, st, 2, saved, NULL);
        int SV = ipow(T.V, T.d);
        for (int j = 0; j < 2; j++) {
            double pt[MAXS];
            marginal_pt(&T, st[j], pt);
            TU_ASSERT_CHI2(saved + j * SV, pt, SV, NS);
        }
        TU_ASSERT_CHI2(hist, T.q, 27, NS);
        dfm_sampler_free(s);
        dfm_scheduler_free(T.sched);
    }
}
END_TEST

START_TEST(direct_rates_euler)
{
    target T;
    target_init(&T, 3, DFM_SOURCE_UNIFORM, DFM_SCHED_CONDOT);
    dfm_sampler *s = target_sampler(&T, DFM_PARAM_RATES, DFM_METHOD_EULER);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 800), 0);
    long hist[MAXS];
    run_hist(s, &T, NS, hist, NULL, 0, NULL, exact_rates_model);
    TU_ASSERT_CHI2(hist, T.q, 27, NS);
    dfm_sampler_free(s);
    dfm_scheduler_free(T.sched);
}
END_TEST

/* Fixed positions: coordinate 0 fixed to 2, the rest follows q( . | x^0 = 2). */
START_TEST(fixed_positions)
{
    target T;
    target_init(&T, 3, DFM_SOURCE_MASK, DFM_SCHED_CONDOT);
    T.fixed_coord = 0; /* the model conditions on the fixed coordinate */
    dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, DFM_METHOD_EXACT);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 200), 0);
    size_t n = NS;
    int32_t *tok = calloc(n * 3, sizeof(int32_t));
    uint8_t *fx = calloc(n * 3, 1);
    for (size_t r = 0; r < n; r++) { tok[r * 3] = 2; fx[r * 3] = 1; tok[r * 3 + 1] = 77; }
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = exact_model;
    a.model_data = &T;
    a.rows = n;
    a.tokens = tok;
    a.draw_source = 1;
    a.fixed = fx;
    ck_assert_int_eq(dfm_sampler_run(s, &a), 0);
    long hist[9] = {0};
    double cond[9] = {0}, z = 0.0;
    for (int x1 = 0; x1 < 3; x1++)
        for (int x2 = 0; x2 < 3; x2++) { cond[x1 + 3 * x2] = T.q[2 + 3 * x1 + 9 * x2]; z += cond[x1 + 3 * x2]; }
    for (int j = 0; j < 9; j++) cond[j] /= z;
    long bad = 0;
    for (size_t r = 0; r < n; r++) {
        if (tok[r * 3] != 2 || tok[r * 3 + 1] >= 3 || tok[r * 3 + 2] >= 3) { bad++; continue; }
        hist[tok[r * 3 + 1] + 3 * tok[r * 3 + 2]]++;
    }
    ck_assert_int_eq(bad, 0);
    TU_ASSERT_CHI2(hist, cond, 9, (long)n);
    free(tok);
    free(fx);
    dfm_sampler_free(s);
    dfm_scheduler_free(T.sched);
}
END_TEST

/* Same samples for 1 or 2 threads and for one batch or two halves with row_offset. */
static void run_rows(dfm_sampler *s, target *T, int32_t *tok, size_t n, size_t off)
{
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = exact_model;
    a.model_data = T;
    a.rows = n;
    a.row_offset = off;
    a.tokens = tok;
    a.draw_source = 1;
    ck_assert_int_eq(dfm_sampler_run(s, &a), 0);
}

START_TEST(reproducible_any_split)
{
    int methods[2] = {DFM_METHOD_EXACT, DFM_METHOD_EULER};
    for (int k = 0; k < 2; k++) {
        target T;
        target_init(&T, 3, DFM_SOURCE_UNIFORM, DFM_SCHED_CONDOT);
        dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, methods[k]);
        dfm_sampler_set_steps(s, 16);
        dfm_sampler_set_double(s, DFM_OPT_DS_ETA, 0.5);
        size_t n = 101;
        int32_t a1[303], a2[303], a3[303], a4[303];
        run_rows(s, &T, a1, n, 0);
        run_rows(s, &T, a4, n, 0);
        ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_THREADS, 2), 0);
        run_rows(s, &T, a2, n, 0);
        ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_THREADS, 1), 0);
        run_rows(s, &T, a3, 40, 0);
        run_rows(s, &T, a3 + 120, 61, 40);
        ck_assert_mem_eq(a1, a4, sizeof a1);
        ck_assert_mem_eq(a1, a2, sizeof a1);
        ck_assert_mem_eq(a1, a3, sizeof a1);
        ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_SEED, 99), 0);
        run_rows(s, &T, a2, n, 0);
        ck_assert(memcmp(a1, a2, sizeof a1) != 0);
        dfm_sampler_free(s);
        dfm_scheduler_free(T.sched);
    }
}
END_TEST

/* Chunked model calls (DFM_OPT_DS_CHUNK_ROWS): every chunking and thread count gives the same
 * samples; the model sees consecutive row ranges of at most the chunk size, in order; a bad
 * output in a later chunk is reported by its batch row and leaves the tokens untouched. */
typedef struct chunk_spy { target *T; dfm_model_fn inner; size_t max_rows, next_row; int step;
                           long calls; int order_ok; size_t bad_row; } chunk_spy;
static int chunk_spy_model(const dfm_model_io *io, void *ud)
{
    chunk_spy *c = (chunk_spy *)ud;
    if (io->step != c->step) { c->step = io->step; c->next_row = 0; }
    if (io->row_offset != c->next_row) c->order_ok = 0;
    c->next_row = io->row_offset + io->rows;
    if (io->rows > c->max_rows) c->max_rows = io->rows;
    c->calls++;
    int rc = c->inner(io, c->T);
    if (rc) return rc;
    if (c->bad_row != (size_t)-1 && io->step == 1 && c->bad_row >= io->row_offset &&
        c->bad_row < io->row_offset + io->rows)
        io->out[(c->bad_row - io->row_offset) * io->out_stride + 2 * (size_t)c->T->V + 1] = NAN;
    return 0;
}

static void chunk_run(dfm_sampler *s, chunk_spy *c, int32_t *tok, size_t n)
{
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = chunk_spy_model;
    a.model_data = c;
    a.rows = n;
    a.tokens = tok;
    a.draw_source = 1;
    c->max_rows = 0;
    c->calls = 0;
    c->order_ok = 1;
    c->step = -1;
    ck_assert_msg(dfm_sampler_run(s, &a) == 0, "%s", dfm_sampler_last_error(s));
}

START_TEST(chunked_model_calls)
{
    /* exact + eta, Euler + corrector, purity, direct rates */
    const int method[4] = {DFM_METHOD_EXACT, DFM_METHOD_EULER, DFM_METHOD_EXACT, DFM_METHOD_EULER};
    const int source[4] = {DFM_SOURCE_UNIFORM, DFM_SOURCE_CUSTOM, DFM_SOURCE_MASK, DFM_SOURCE_MASK};
    const int param[4] = {DFM_PARAM_LOGITS, DFM_PARAM_LOGITS, DFM_PARAM_LOGITS, DFM_PARAM_RATES};
    const int64_t chunks[5] = {1, 7, 50, DFM_CHUNK_AUTO, 1000};
    enum { N = 101, STEPS = 12 };
    for (int v = 0; v < 4; v++) {
        target T;
        target_init(&T, 3, source[v], DFM_SCHED_CONDOT);
        dfm_sampler *s = target_sampler(&T, param[v], method[v]);
        dfm_sampler_set_steps(s, STEPS);
        if (v == 0) ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_DS_ETA, 0.7), 0);
        if (v == 1) ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_DS_CORRECTOR, 0.5), 0);
        if (v == 2) ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_DS_PURITY, 1), 0);
        chunk_spy c = {&T, param[v] == DFM_PARAM_RATES ? exact_rates_model : exact_model,
                       0, 0, -1, 0, 1, (size_t)-1};
        int32_t ref[N * 3], tok[N * 3];
        chunk_run(s, &c, ref, N);
        ck_assert_int_eq(c.calls, STEPS);
        ck_assert_uint_eq(c.max_rows, N);
        for (int k = 0; k < 5; k++)
            for (int th = 1; th <= 3; th++) {
                ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_DS_CHUNK_ROWS, chunks[k]), 0);
                ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_THREADS, th), 0);
                chunk_run(s, &c, tok, N);
                ck_assert_msg(memcmp(ref, tok, sizeof ref) == 0, "variant %d chunk %lld threads %d",
                              v, (long long)chunks[k], th);
                ck_assert(c.order_ok);
                if (chunks[k] > 0) {
                    size_t ch = (size_t)chunks[k] < N ? (size_t)chunks[k] : N;
                    ck_assert_uint_eq(c.max_rows, ch);
                    ck_assert_int_eq(c.calls, STEPS * (long)((N + ch - 1) / ch));
                } else { /* AUTO: about 1 MiB per thread, here all rows */
                    ck_assert_uint_eq(c.max_rows, N);
                }
                int64_t got = 0;
                ck_assert_int_eq(dfm_sampler_get_stat(s, DFM_STAT_MODEL_CALLS, &got), 0);
                ck_assert_int_eq(got, c.calls);
            }
        dfm_sampler_free(s);
        dfm_scheduler_free(T.sched);
    }

    /* a NaN logit in batch row 37 (chunk 8, so the fifth call): the error names row 37; the
     * tokens keep their entry values */
    target T;
    target_init(&T, 3, DFM_SOURCE_MASK, DFM_SCHED_CONDOT);
    dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, DFM_METHOD_EXACT);
    dfm_sampler_set_steps(s, STEPS);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_DS_CHUNK_ROWS, 8), 0);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_THREADS, 2), 0);
    chunk_spy c = {&T, exact_model, 0, 0, -1, 0, 1, 37};
    int32_t tok[N * 3], keep[N * 3];
    for (int j = 0; j < N * 3; j++) tok[j] = keep[j] = T.mask;
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = chunk_spy_model;
    a.model_data = &c;
    a.rows = N;
    a.tokens = tok;
    c.step = -1;
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ENUMERIC);
    ck_assert_msg(strstr(dfm_sampler_last_error(s), "[row 37][coord 2]") != NULL, "%s",
                  dfm_sampler_last_error(s));
    ck_assert_mem_eq(tok, keep, sizeof tok);
    /* option bounds */
    int64_t v = 0;
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_DS_CHUNK_ROWS, -2), DFM_EINVAL);
    ck_assert_int_eq(dfm_sampler_get_int(s, DFM_OPT_DS_CHUNK_ROWS, &v), 0);
    ck_assert_int_eq(v, 8);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_DS_CHUNK_ROWS, DFM_CHUNK_AUTO), 0);
    ck_assert_int_eq(dfm_sampler_get_int(s, DFM_OPT_DS_CHUNK_ROWS, &v), 0);
    ck_assert_int_eq(v, DFM_CHUNK_AUTO);
    dfm_sampler_free(s);
    dfm_scheduler_free(T.sched);
}
END_TEST

/* dfm_path_sample: x_t ~ p_t(. | x1) per coordinate, and x0 given is used. */
START_TEST(path_sample_marginals)
{
    target T;
    target_init(&T, 3, DFM_SOURCE_CUSTOM, DFM_SCHED_COSINE);
    dfm_path *p = target_path(&T);
    size_t n = tu_count(30000);
    int32_t *x1 = calloc(n * 3, 4), *xt = calloc(n * 3, 4), *x0 = calloc(n * 3, 4);
    double *t = calloc(n, sizeof(double));
    for (size_t r = 0; r < n; r++) {
        t[r] = 0.4;
        for (int i = 0; i < 3; i++) { x1[r * 3 + i] = i; x0[r * 3 + i] = 2 - i; }
    }
    dfm_path_sample_args a = tu_sample_args(n, t, x1, xt);
    ck_assert_int_eq(dfm_path_sample(p, &a), 0);
    double k = kappa_of(&T, 0.4);
    for (int i = 0; i < 3; i++) {
        long h[3] = {0};
        double pr[3];
        for (size_t r = 0; r < n; r++) h[xt[r * 3 + i]]++;
        for (int y = 0; y < 3; y++) pr[y] = pt_cond(&T, k, y, i);
        TU_ASSERT_CHI2(h, pr, 3, (long)n);
    }
    /* given x0: x_t^i is x1^i or x0^i only, with P(x1) = kappa */
    a.x0_tokens = x0;
    a.draw = 5;
    ck_assert_int_eq(dfm_path_sample(p, &a), 0);
    long from1[3] = {0};
    long bad = 0;
    for (size_t r = 0; r < n; r++)
        for (int i = 0; i < 3; i++) {
            int v = xt[r * 3 + i];
            if (!(v == i || v == 2 - i)) bad++;
            if (i != 1 && v == i) from1[i]++;
        }
    ck_assert_int_eq(bad, 0);
    long hb[2] = {from1[0], (long)n - from1[0]};
    double pb[2] = {k, 1.0 - k};
    TU_ASSERT_CHI2(hb, pb, 2, (long)n);
    /* same draw counter and rows: identical; row_offset keys the streams */
    int32_t *xt2 = calloc(n * 3, 4);
    a.xt_tokens = xt2;
    ck_assert_int_eq(dfm_path_set_int(p, DFM_OPT_THREADS, 2), 0);
    ck_assert_int_eq(dfm_path_sample(p, &a), 0);
    ck_assert_mem_eq(xt, xt2, n * 3 * 4);
    free(xt2);
    free(x1); free(xt); free(x0); free(t);
    dfm_path_free(p);
    dfm_scheduler_free(T.sched);
}
END_TEST

/* ---- marginal rates helper ---- */
START_TEST(mixture_rates_formula)
{
    target T;
    target_init(&T, 3, DFM_SOURCE_UNIFORM, DFM_SCHED_POLYNOMIAL);
    dfm_path *p = target_path(&T);
    dfm_generator *g = NULL;
    ck_assert_int_eq(dfm_generator_create_factorized(&g, p, DFM_PARAM_LOGITS, NULL), 0);
    float logits[2 * 9], rates[2 * 9];
    for (int j = 0; j < 18; j++) logits[j] = (float)(0.3 * j - 2.0 * (j % 3));
    logits[4] = -INFINITY;
    int32_t tok[6] = {0, 1, 2, 2, 2, 0};
    double t[2] = {0.25, 0.6};
    ck_assert_int_eq(dfm_mixture_rates(g, 2, t, tok, logits, rates), 0);
    for (int r = 0; r < 2; r++) {
        double k = t[r] * t[r], dk = 2 * t[r], c = dk / (1 - k);
        for (int i = 0; i < 3; i++) {
            const float *z = logits + (r * 3 + i) * 3;
            double m = -INFINITY, tot = 0.0, sum = 0.0;
            for (int y = 0; y < 3; y++) m = z[y] > m ? z[y] : m;
            for (int y = 0; y < 3; y++) tot += exp(z[y] - m);
            for (int y = 0; y < 3; y++) {
                double want = c * (exp(z[y] - m) / tot - (y == tok[r * 3 + i]));
                ck_assert_msg(fabs(rates[(r * 3 + i) * 3 + y] - want) < 1e-5 * (1 + fabs(want)),
                              "rate %g want %g", rates[(r * 3 + i) * 3 + y], want);
                sum += rates[(r * 3 + i) * 3 + y];
            }
            ck_assert(fabs(sum) < 1e-5);
        }
    }
    /* bad input: outputs untouched */
    float keep[18];
    memcpy(keep, rates, sizeof keep);
    logits[7] = NAN;
    ck_assert_int_eq(dfm_mixture_rates(g, 2, t, tok, logits, rates), DFM_ENUMERIC);
    ck_assert_ptr_nonnull(strstr(dfm_generator_last_error(g), "[row 0][coord 2]"));
    logits[7] = 0.0f;
    tok[4] = 3;
    ck_assert_int_eq(dfm_mixture_rates(g, 2, t, tok, logits, rates), DFM_ERANGE);
    tok[4] = 2;
    t[1] = 1.0;
    ck_assert_int_eq(dfm_mixture_rates(g, 2, t, tok, logits, rates), DFM_ERANGE);
    ck_assert_mem_eq(keep, rates, sizeof keep);
    ck_assert_int_eq(dfm_mixture_rates(NULL, 2, t, tok, logits, rates), DFM_EINVAL);
    dfm_generator_free(g);
    dfm_path_free(p);
    dfm_scheduler_free(T.sched);
}
END_TEST

/* ---- bad input ---- */
START_TEST(bad_path_creation)
{
    dfm_space *sp = NULL, *e = NULL, *prod = NULL;
    dfm_scheduler *sc = make_sched(DFM_SCHED_CONDOT);
    ck_assert_int_eq(dfm_space_create_discrete(&sp, 4, 2, NULL), 0);
    ck_assert_int_eq(dfm_space_create_euclidean(&e, 2, NULL), 0);
    const dfm_space *parts[2] = {sp, e};
    ck_assert_int_eq(dfm_space_create_product(&prod, parts, 2, NULL), 0);
    dfm_path *p = (dfm_path *)sp;
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, sc, DFM_SOURCE_MASK, 4, NULL, NULL), DFM_ERANGE);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, sc, DFM_SOURCE_MASK, -1, NULL, NULL), DFM_ERANGE);
    double neg[4] = {0.5, 0.7, -0.2, 0.0}, nan4[4] = {0.5, NAN, 0.25, 0.25}, s9[4] = {0.5, 0.2, 0.2, 0.0};
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, sc, DFM_SOURCE_CUSTOM, 0, neg, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, sc, DFM_SOURCE_CUSTOM, 0, nan4, NULL), DFM_ENUMERIC);
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, sc, DFM_SOURCE_CUSTOM, 0, s9, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, sc, DFM_SOURCE_CUSTOM, 0, NULL, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, sc, 9, 0, NULL, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_path_create_mixture(&p, prod, sc, DFM_SOURCE_UNIFORM, 0, NULL, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_path_create_mixture(&p, NULL, sc, DFM_SOURCE_UNIFORM, 0, NULL, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_path_create_mixture(NULL, sp, sc, DFM_SOURCE_UNIFORM, 0, NULL, NULL), DFM_EINVAL);
    ck_assert_ptr_null(p);
    /* path sampling errors, output untouched */
    ck_assert_int_eq(dfm_path_create_mixture(&p, sp, sc, DFM_SOURCE_MASK, 3, NULL, NULL), 0);
    dfm_path *q = NULL;
    ck_assert_int_eq(dfm_path_clone(&q, p, NULL), 0);
    ck_assert_int_eq(dfm_path_kind(q), DFM_PATH_MIXTURE);
    int32_t x1[4] = {0, 1, 2, 4}, xt[4] = {9, 9, 9, 9}, x0[4] = {3, 3, 3, 3};
    double t[2] = {0.5, 0.5};
    dfm_path_sample_args a = tu_sample_args(2, t, x1, xt);
    ck_assert_int_eq(dfm_path_sample(q, &a), DFM_ERANGE);
    ck_assert_ptr_nonnull(strstr(dfm_path_last_error(q), "row 1"));
    x1[3] = 0;
    x0[2] = -1;
    a.x0_tokens = x0;
    ck_assert_int_eq(dfm_path_sample(q, &a), DFM_ERANGE);
    t[1] = 1.5;
    x0[2] = 3;
    ck_assert_int_eq(dfm_path_sample(q, &a), DFM_ERANGE);
    t[1] = 0.5;
    for (int j = 0; j < 4; j++) ck_assert_int_eq(xt[j], 9);
    ck_assert_int_eq(dfm_path_sample(q, &a), 0);
    for (int j = 0; j < 4; j++) ck_assert(xt[j] == x1[j] || xt[j] == 3);
    /* generator on a non-mixture path kind is refused; bad param */
    dfm_generator *g = NULL;
    ck_assert_int_eq(dfm_generator_create_factorized(&g, q, 99, NULL), DFM_EINVAL);
    ck_assert_int_eq(dfm_generator_create_factorized(&g, NULL, DFM_PARAM_LOGITS, NULL), DFM_EINVAL);
    ck_assert_ptr_null(g);
    ck_assert_int_eq(dfm_generator_create_factorized(&g, q, DFM_PARAM_RATES, NULL), 0);
    dfm_sampler *s = NULL;
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_EXACT, NULL), DFM_EUNSUPPORTED);
    ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_EULER, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_DS_ETA, 1.0), DFM_EINVAL);
    ck_assert_int_eq(dfm_sampler_set_corrector(s, corr_fn, NULL), DFM_EUNSUPPORTED);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    dfm_path_free(p);
    dfm_path_free(q);
    dfm_space_free(sp);
    dfm_space_free(e);
    dfm_space_free(prod);
    dfm_scheduler_free(sc);
}
END_TEST

typedef struct evil { target *T; int mode; int when; } evil;
static int evil_model(const dfm_model_io *io, void *ud)
{
    evil *E = (evil *)ud;
    int rc = exact_model(io, E->T);
    if (rc) return rc;
    if (io->step != E->when) return 0;
    if (E->mode == 1) io->out[1 * io->out_stride + 2 * 4 + 1] = NAN;
    if (E->mode == 2) io->out[0 * io->out_stride + 1 * 4 + 0] = INFINITY;
    if (E->mode == 3) return -17;
    if (E->mode == 4) for (int y = 0; y < 4; y++) io->out[1 * 4 + y] = -INFINITY;
    return 0;
}
static int stop_at_3(int step, int n, double t, void *ud) { (void)n; (void)t; (void)ud; return step == 3; }
static int ask_stop(int step, int n, double t, void *ud)
{
    (void)n; (void)t;
    if (step == 2) dfm_sampler_request_stop((dfm_sampler *)ud);
    return 0;
}

START_TEST(bad_run_inputs)
{
    target T;
    target_init(&T, 3, DFM_SOURCE_MASK, DFM_SCHED_CONDOT);
    dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, DFM_METHOD_EXACT);
    dfm_sampler_set_steps(s, 8);
    int32_t tok[6] = {3, 3, 3, 3, 3, 3}, keep[6];
    memcpy(keep, tok, sizeof tok);
    int32_t saved[6] = {-5, -5, -5, -5, -5, -5};
    double st[1] = {0.5};
    evil E = {&T, 0, 2};
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = evil_model;
    a.model_data = &E;
    a.rows = 2;
    a.tokens = tok;
    a.save_times = st;
    a.n_save = 1;
    a.saved_tokens = saved;
    const int codes[5] = {0, DFM_ENUMERIC, DFM_ENUMERIC, DFM_ECALLBACK, DFM_ENUMERIC};
    const char *msgs[5] = {"", "[row 1][coord 2]", "[row 0][coord 1]", "-17", "[row 0][coord 1]"};
    for (int mode = 1; mode <= 4; mode++) {
        E.mode = mode;
        int rc = dfm_sampler_run(s, &a);
        ck_assert_int_eq(rc, codes[mode]);
        ck_assert_msg(strstr(dfm_sampler_last_error(s), msgs[mode]) != NULL, "%s", dfm_sampler_last_error(s));
        ck_assert_mem_eq(tok, keep, sizeof tok);
        ck_assert_int_eq(saved[0], -5);
        if (mode == 3) ck_assert_int_eq(dfm_sampler_callback_status(s), -17);
    }
    E.mode = 0;
    /* tokens out of range */
    tok[4] = 4;
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ERANGE);
    ck_assert_ptr_nonnull(strstr(dfm_sampler_last_error(s), "row 1][coord 1]"));
    tok[4] = -1;
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ERANGE);
    tok[4] = 3;
    /* progress stop and request_stop */
    a.progress = stop_at_3;
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ESTOPPED);
    int64_t v;
    dfm_sampler_get_stat(s, DFM_STAT_STEPS, &v);
    ck_assert_int_eq(v, 4);
    a.progress = ask_stop;
    a.progress_data = s;
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ESTOPPED);
    dfm_sampler_get_stat(s, DFM_STAT_MODEL_CALLS, &v);
    ck_assert_int_eq(v, 3);
    ck_assert_mem_eq(tok, keep, sizeof tok);
    ck_assert_int_eq(saved[0], -5);
    a.progress = NULL;
    /* decreasing grid */
    double dg[3] = {1.0, 0.5, 0.0};
    ck_assert_int_eq(dfm_sampler_set_grid(s, dg, 3), 0);
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_EINVAL);
    double og[3] = {0.0, 0.5, 1.5};
    ck_assert_int_eq(dfm_sampler_set_grid(s, og, 3), DFM_ERANGE);
    /* bad options */
    ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_DS_TEMPERATURE, 0.0), DFM_EINVAL);
    ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_DS_TEMPERATURE, NAN), DFM_EINVAL);
    ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_DS_ETA, -1.0), DFM_EINVAL);
    ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_DS_CORRECTOR, INFINITY), DFM_EINVAL);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_DS_PURITY, 2), DFM_EINVAL);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_DS_PURITY, 1), 0);
    ck_assert_int_eq(dfm_sampler_set_double(s, DFM_OPT_DS_ETA, 1.0), 0);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 8), 0);
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_EINVAL);
    double dv;
    ck_assert_int_eq(dfm_sampler_get_double(s, DFM_OPT_DS_ETA, &dv), 0);
    ck_assert(dv == 1.0);
    ck_assert_int_eq(dfm_sampler_get_int(s, DFM_OPT_DS_PURITY, &v), 0);
    ck_assert_int_eq(v, 1);
    ck_assert_mem_eq(tok, keep, sizeof tok);
    dfm_sampler_free(s);
    /* purity only with a mask source; Euler refuses purity */
    target U;
    target_init(&U, 3, DFM_SOURCE_UNIFORM, DFM_SCHED_CONDOT);
    s = target_sampler(&U, DFM_PARAM_LOGITS, DFM_METHOD_EXACT);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_DS_PURITY, 1), DFM_EINVAL);
    dfm_sampler_free(s);
    s = target_sampler(&T, DFM_PARAM_LOGITS, DFM_METHOD_EULER);
    ck_assert_int_eq(dfm_sampler_set_int(s, DFM_OPT_DS_PURITY, 1), DFM_EINVAL);
    dfm_sampler_free(s);
    ck_assert_int_eq(dfm_sampler_create(&s, NULL, DFM_METHOD_EXACT, NULL), DFM_EINVAL);
    dfm_scheduler_free(T.sched);
    dfm_scheduler_free(U.sched);
}
END_TEST

static int bad_rates_model(const dfm_model_io *io, void *ud)
{
    int rc = exact_rates_model(io, ud);
    if (io->step == 1) io->out[io->out_stride + 2 * 4 + (io->tokens[io->n_tokens + 2] == 0 ? 1 : 0)] = -0.5f;
    return rc;
}

START_TEST(bad_rates)
{
    target T;
    target_init(&T, 3, DFM_SOURCE_MASK, DFM_SCHED_CONDOT);
    dfm_sampler *s = target_sampler(&T, DFM_PARAM_RATES, DFM_METHOD_EULER);
    dfm_sampler_set_steps(s, 4);
    int32_t tok[6] = {3, 3, 3, 3, 3, 3}, keep[6];
    memcpy(keep, tok, sizeof tok);
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = bad_rates_model;
    a.model_data = &T;
    a.rows = 2;
    a.tokens = tok;
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ENUMERIC);
    ck_assert_ptr_nonnull(strstr(dfm_sampler_last_error(s), "[row 1][coord 2]"));
    ck_assert_mem_eq(tok, keep, sizeof tok);
    dfm_sampler_free(s);
    dfm_scheduler_free(T.sched);
}
END_TEST

/* Every allocation goes through the handle's allocator and is released, also when an
 * allocation fails midway (DFM_ENOMEM, never a crash). */
typedef struct counting { long allocs, frees, fail_at; } counting;
static void *c_alloc(size_t n, void *op)
{
    counting *c = (counting *)op;
    if (c->fail_at && c->allocs + 1 == c->fail_at) return NULL;
    c->allocs++;
    return malloc(n);
}
static void c_free(void *p, void *op) { if (p) ((counting *)op)->frees++; free(p); }

START_TEST(allocator_balanced)
{
    target T;
    target_init(&T, 3, DFM_SOURCE_CUSTOM, DFM_SCHED_CONDOT);
    int done = 0;
    for (long fail = 1; !done && fail < 200; fail++) {
        counting c = {0, 0, fail};
        dfm_allocator al = {c_alloc, c_free, &c};
        dfm_space *sp = NULL;
        dfm_path *p = NULL;
        dfm_generator *g = NULL;
        dfm_sampler *s = NULL;
        int st = dfm_space_create_discrete(&sp, 3, 3, &al);
        if (!st) st = dfm_path_create_mixture(&p, sp, T.sched, DFM_SOURCE_CUSTOM, 0, T.p0, &al);
        if (!st) st = dfm_generator_create_factorized(&g, p, DFM_PARAM_LOGITS, &al);
        if (!st) st = dfm_sampler_create(&s, g, DFM_METHOD_EULER, &al);
        if (!st) {
            int32_t tok[12];
            double stt[1] = {0.5};
            int32_t sv[12];
            dfm_run_args a;
            memset(&a, 0, sizeof a);
            a.struct_size = sizeof a;
            a.model = exact_model;
            a.model_data = &T;
            a.rows = 4;
            a.tokens = tok;
            a.draw_source = 1;
            a.save_times = stt;
            a.n_save = 1;
            a.saved_tokens = sv;
            dfm_sampler_set_steps(s, 4);
            dfm_sampler_set_int(s, DFM_OPT_THREADS, 2);
            st = dfm_sampler_run(s, &a);
            if (!st) done = 1;
        }
        ck_assert_msg(st == 0 || st == DFM_ENOMEM, "fail_at %ld: status %d", fail, st);
        dfm_sampler_free(s);
        dfm_generator_free(g);
        dfm_path_free(p);
        dfm_space_free(sp);
        ck_assert_int_eq(c.allocs, c.frees);
    }
    ck_assert(done);
    dfm_scheduler_free(T.sched);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("discrete");
    TCase *tc = tu_tcase("samplers");
    tcase_add_test(tc, exact_step_is_exact_d1);
    tcase_add_test(tc, exact_step_few_steps_product);
    tcase_add_test(tc, temperature_d1);
    tcase_add_test(tc, few_steps_exact_laws_d1);
    tcase_add_test(tc, exact_step_mask_condot);
    tcase_add_test(tc, exact_step_mask_cosine);
    tcase_add_test(tc, exact_step_uniform_condot);
    tcase_add_test(tc, exact_step_custom_poly);
    tcase_add_test(tc, euler_mask_condot);
    tcase_add_test(tc, euler_uniform_cosine);
    tcase_add_test(tc, euler_custom_condot);
    tcase_add_test(tc, euler_corrector_uniform);
    tcase_add_test(tc, exact_corrector_mask);
    tcase_add_test(tc, corrector_callback);
    tcase_add_test(tc, exact_eta_mask);
    tcase_add_test(tc, euler_eta_custom_condot);
    tcase_add_test(tc, exact_eta_uniform_cosine);
    tcase_add_test(tc, exact_corrector_eta_custom);
    tcase_add_test(tc, purity_mask);
    tcase_add_test(tc, intermediate_marginals);
    tcase_add_test(tc, direct_rates_euler);
    tcase_add_test(tc, fixed_positions);
    tcase_add_test(tc, chunked_model_calls);
    tcase_add_test(tc, reproducible_any_split);
    suite_add_tcase(su, tc);
    TCase *tp = tu_tcase("path_and_errors");
    tcase_add_test(tp, path_sample_marginals);
    tcase_add_test(tp, mixture_rates_formula);
    tcase_add_test(tp, bad_path_creation);
    tcase_add_test(tp, bad_run_inputs);
    tcase_add_test(tp, bad_rates);
    tcase_add_test(tp, allocator_balanced);
    suite_add_tcase(su, tp);
    return tu_run(su) ? 1 : 0;
}
