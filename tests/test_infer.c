/* Discrete inference as masked-diffusion language models run it (docs/discrete.md): unmasking
 * orders and counts, block-wise unmasking, posterior shaping, ReMDM remasking, tau-leaping and
 * theta-trapezoidal, time-independent models (fewer model calls), the step callback. Measured
 * against exact targets: laws by chi-square with fixed seeds, convergence orders from n-step
 * laws propagated exactly over a small state space, and the documented reveal rules replayed
 * step by step from the public random streams. */
#define DS_MAXS 1100 /* 4^5 states: d = 5 with the mask source */
#include "ds_target.h"

/* ---- helpers ---- */

/* The run's states after every step, through the step callback. */
typedef struct trace {
    int32_t *states; /* (n_steps + 1) x rows x d: the entry state, then after each step */
    size_t rows, d, n_steps;
    int64_t changed_sum;
    int steps_seen;
    int stop_at;     /* return nonzero from the callback at this step (-1: never) */
} trace;

static int trace_fn(const dfm_step_view *v, void *ud)
{
    trace *tr = (trace *)ud;
    ck_assert_uint_eq(v->struct_size, sizeof *v);
    ck_assert_uint_eq(v->rows, tr->rows);
    ck_assert_uint_eq(v->n_tokens, tr->d);
    ck_assert_int_eq(v->step, tr->steps_seen);
    ck_assert_int_eq(v->n_steps, (int)tr->n_steps);
    if (tr->states)
        memcpy(tr->states + (size_t)(v->step + 1) * tr->rows * tr->d, v->tokens,
               tr->rows * tr->d * sizeof(int32_t));
    tr->changed_sum += v->changed;
    tr->steps_seen++;
    return v->step == tr->stop_at ? 42 : 0;
}

/* The mask source's exact posterior: q given the revealed positions, whatever kappa in (0, 1);
 * fixed prompt positions are revealed ones. */
static int mask_model(const dfm_model_io *io, void *ud)
{
    const target *T = (const target *)ud;
    for (size_t r = 0; r < io->rows; r++)
        if (posterior_logits(T, 0.5, io->tokens + r * io->n_tokens, io->out + r * io->out_stride))
            return 99;
    return 0;
}

/* Runs s on n rows (row_offset off) from tok (draw_source when draw), optionally fixed. */
static int run_tok(dfm_sampler *s, target *T, int32_t *tok, size_t n, size_t off, int draw,
                   const uint8_t *fixed, dfm_model_fn model, void *ud)
{
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = model ? model : T->source == DFM_SOURCE_MASK ? mask_model : exact_model;
    a.model_data = ud ? ud : T;
    a.rows = n;
    a.row_offset = off;
    a.tokens = tok;
    a.draw_source = draw;
    a.fixed = fixed;
    return dfm_sampler_run(s, &a);
}

static void set_i(dfm_sampler *s, int opt, int64_t v)
{
    int st = dfm_sampler_set_int(s, opt, v);
    ck_assert_msg(st == 0, "option %d = %lld: %s", opt, (long long)v, dfm_sampler_last_error(s));
}

static void set_d(dfm_sampler *s, int opt, double v)
{
    int st = dfm_sampler_set_double(s, opt, v);
    ck_assert_msg(st == 0, "option %d = %g: %s", opt, v, dfm_sampler_last_error(s));
}

/* ---- random order, one position per step: exact any-order autoregressive sampling ---- */

/* With the exact posterior, revealing one masked position at a time, chosen uniformly, with its
 * token drawn from its posterior marginal, is the chain rule of q in a random order: exact at any
 * step count, as long as no step reveals two positions. kappa = t with n >= d steps gives at most
 * one per step for both scheduled counts; the coins of the exact step reveal several at once and
 * fail the same check at 3 steps. */
START_TEST(random_order_one_per_step_is_exact)
{
    struct { int count; size_t steps; } cs[] = {
        {DFM_COUNT_SCHEDULE, 3}, {DFM_COUNT_SCHEDULE, 4}, {DFM_COUNT_SCHEDULE, 7},
        {DFM_COUNT_SCHEDULE, 64}, {DFM_COUNT_SCHEDULE_CEIL, 3}, {DFM_COUNT_SCHEDULE_CEIL, 5},
        {DFM_COUNT_SCHEDULE_CEIL, 40}, {DFM_COUNT_COINS, 3}};
    long n = (long)tu_count(40000);
    for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
        target T;
        target_init(&T, 3, DFM_SOURCE_MASK, DFM_SCHED_CONDOT);
        dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, DFM_METHOD_EXACT);
        set_i(s, DFM_OPT_DS_ORDER, DFM_ORDER_RANDOM);
        set_i(s, DFM_OPT_DS_COUNT, cs[k].count);
        ck_assert_int_eq(dfm_sampler_set_steps(s, cs[k].steps), 0);
        trace tr = {NULL, (size_t)n, 3, cs[k].steps, 0, 0, -1};
        ck_assert_int_eq(dfm_sampler_set_step_callback(s, trace_fn, &tr), 0);
        long hist[MAXS];
        run_hist(s, &T, (size_t)n, hist, NULL, 0, NULL, NULL);
        ck_assert_int_eq(tr.changed_sum, 3 * n); /* every position revealed once */
        int dof;
        double chi = tu_chi2(hist, T.q, 27, n, &dof);
        if (cs[k].count == DFM_COUNT_COINS)
            ck_assert_msg(chi > 5.0 * tu_chi2_bound(dof), "coins at 3 steps: chi2 %g should fail", chi);
        else
            ck_assert_msg(chi < tu_chi2_bound(dof), "count %d, %zu steps: chi2 %g > %g", cs[k].count,
                          cs[k].steps, chi, tu_chi2_bound(dof));
        dfm_sampler_free(s);
        dfm_scheduler_free(T.sched);
    }
}
END_TEST

/* The same with a prompt: coordinate 0 fixed to 2, the others follow q( . | x^0 = 2) exactly. */
START_TEST(random_order_exact_with_fixed_positions)
{
    target T;
    target_init(&T, 3, DFM_SOURCE_MASK, DFM_SCHED_CONDOT);
    T.fixed_coord = 0;
    dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, DFM_METHOD_EXACT);
    set_i(s, DFM_OPT_DS_COUNT, DFM_COUNT_SCHEDULE_CEIL);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 5), 0);
    size_t n = tu_count(40000);
    int32_t *tok = calloc(n * 3, sizeof(int32_t));
    uint8_t *fx = calloc(n * 3, 1);
    for (size_t r = 0; r < n; r++) { tok[r * 3] = 2; fx[r * 3] = 1; }
    ck_assert_int_eq(run_tok(s, &T, tok, n, 0, 1, fx, NULL, NULL), 0);
    long hist[9] = {0};
    double cond[9], z = 0.0;
    for (int j = 0; j < 9; j++) { cond[j] = T.q[2 + 3 * (j % 3) + 9 * (j / 3)]; z += cond[j]; }
    for (int j = 0; j < 9; j++) cond[j] /= z;
    for (size_t r = 0; r < n; r++) {
        ck_assert_int_eq(tok[r * 3], 2);
        ck_assert(tok[r * 3 + 1] < 3 && tok[r * 3 + 2] < 3);
        hist[tok[r * 3 + 1] + 3 * tok[r * 3 + 2]]++;
    }
    TU_ASSERT_CHI2(hist, cond, 9, (long)n);
    free(tok);
    free(fx);
    dfm_sampler_free(s);
    dfm_scheduler_free(T.sched);
}
END_TEST

/* ---- orders and counts: deterministic, independent of threads and batch split ---- */

enum { ND = 5, NR = 61, NSTEPS = 9 };

static dfm_sampler *order_sampler(target *T, int order, int count, int64_t block, int greedy)
{
    dfm_sampler *s = target_sampler(T, DFM_PARAM_LOGITS, DFM_METHOD_EXACT);
    set_i(s, DFM_OPT_DS_ORDER, order);
    set_i(s, DFM_OPT_DS_COUNT, count);
    set_i(s, DFM_OPT_DS_BLOCK_LEN, block);
    set_i(s, DFM_OPT_DS_GREEDY, greedy);
    set_d(s, DFM_OPT_DS_THRESHOLD, 0.6);
    ck_assert_int_eq(dfm_sampler_set_steps(s, NSTEPS), 0);
    return s;
}

/* A prompt: about a quarter of the positions fixed to data tokens, the rest masked. */
static void prompt(const target *T, int32_t *tok, uint8_t *fx, size_t n)
{
    for (size_t j = 0; j < n * ND; j++) {
        uint32_t h = (uint32_t)j * 2654435761u;
        fx[j] = (h >> 29) == 0 || (h >> 29) == 5;
        tok[j] = fx[j] ? (int32_t)((h >> 7) % 3) : T->mask;
    }
}

START_TEST(orders_deterministic_any_split)
{
    target T;
    target_init(&T, ND, DFM_SOURCE_MASK, DFM_SCHED_CONDOT);
    const int64_t chunks[3] = {1, 7, DFM_CHUNK_AUTO};
    int32_t init[NR * ND], ref[NR * ND], tok[NR * ND];
    uint8_t fx[NR * ND];
    prompt(&T, init, fx, NR);
    for (int order = 0; order < 4; order++)
        for (int count = 0; count < 4; count++)
            for (int blk = 0; blk < 2; blk++) {
                dfm_sampler *s = order_sampler(&T, order, count, blk ? 2 : 0, 0);
                memcpy(ref, init, sizeof ref);
                ck_assert_int_eq(run_tok(s, &T, ref, NR, 0, 0, fx, NULL, NULL), 0);
                for (size_t j = 0; j < NR * ND; j++) {
                    if (fx[j]) ck_assert_int_eq(ref[j], init[j]);
                    ck_assert_msg(ref[j] >= 0 && ref[j] < 3, "order %d count %d: a mask is left", order, count);
                }
                for (int th = 1; th <= 3; th++)
                    for (int k = 0; k < 3; k++) {
                        set_i(s, DFM_OPT_THREADS, th);
                        set_i(s, DFM_OPT_DS_CHUNK_ROWS, chunks[k]);
                        memcpy(tok, init, sizeof tok);
                        ck_assert_int_eq(run_tok(s, &T, tok, NR, 0, 0, fx, NULL, NULL), 0);
                        ck_assert_msg(memcmp(ref, tok, sizeof tok) == 0,
                                      "order %d count %d blocks %d: threads %d chunk %lld differ",
                                      order, count, blk, th, (long long)chunks[k]);
                    }
                set_i(s, DFM_OPT_THREADS, 1);
                set_i(s, DFM_OPT_DS_CHUNK_ROWS, 0);
                memcpy(tok, init, sizeof tok); /* two shards with their row_offset */
                ck_assert_int_eq(run_tok(s, &T, tok, 25, 0, 0, fx, NULL, NULL), 0);
                ck_assert_int_eq(run_tok(s, &T, tok + 25 * ND, NR - 25, 25, 0, fx + 25 * ND, NULL, NULL), 0);
                ck_assert_msg(memcmp(ref, tok, sizeof tok) == 0, "order %d count %d: shards differ", order, count);
                set_i(s, DFM_OPT_SEED, 999);
                memcpy(tok, init, sizeof tok);
                ck_assert_int_eq(run_tok(s, &T, tok, NR, 0, 0, fx, NULL, NULL), 0);
                ck_assert_msg(memcmp(ref, tok, sizeof tok) != 0, "order %d count %d: the seed is ignored", order, count);
                dfm_sampler_free(s);
            }
    dfm_scheduler_free(T.sched);
}
END_TEST

/* ---- orders and counts: every step reveals exactly what the documented rules promise ---- */

typedef struct score { double s; int i; } score;
static int cmp_score(const void *a, const void *b)
{
    const score *x = (const score *)a, *y = (const score *)b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return x->i - y->i;
}

/* The order's score of masked coordinate i given state x, and its confidence, from the exact
 * posterior (the mask token has probability 0 there). */
static double order_score(const target *T, const float *lg, int i, int order, double *conf)
{
    const float *z = lg + i * T->V;
    double p[8], Z = 0.0, b1 = 0.0, b2 = 0.0, H = 0.0;
    for (int y = 0; y < T->V; y++) { p[y] = y == T->mask ? 0.0 : exp((double)z[y]); Z += p[y]; }
    for (int y = 0; y < T->V; y++) {
        p[y] /= Z;
        if (p[y] > b1) { b2 = b1; b1 = p[y]; } else if (p[y] > b2) b2 = p[y];
        if (p[y] > 0.0) H -= p[y] * log(p[y]);
    }
    *conf = b1;
    return order == DFM_ORDER_CONFIDENCE ? b1 : order == DFM_ORDER_MARGIN ? b1 - b2 : -H;
}

/* Replays step `step` of row r from the state before (x0) to the state after (x1). */
static void check_step(const target *T, int order, int count, int blocks, size_t step, uint64_t grow,
                       const int32_t *x0, const int32_t *x1, const uint8_t *fx, long *checked_sets)
{
    const uint64_t seed = 1234;
    size_t nb = blocks ? (ND + 1) / 2 : 1, b = 0, lo = 0, hi = ND, j = step, K = NSTEPS;
    if (blocks) {
        for (b = nb; b-- > 0;) if (b * NSTEPS / nb <= step) break;
        size_t s0 = b * NSTEPS / nb, s1 = (b + 1) * NSTEPS / nb;
        lo = 2 * b; hi = lo + 2 < ND ? lo + 2 : ND; j = step - s0; K = s1 - s0;
    }
    double k0 = (double)j / (double)K, k1 = (double)(j + 1) / (double)K, pj = (k1 - k0) / (1.0 - k0);
    int last = j + 1 == K;
    float lg[ND * 8];
    ck_assert_int_eq(posterior_logits(T, 0.5, x0, lg), 0);
    score sc[ND];
    int nm = 0, nfire = 0, nabove = 0;
    for (int i = 0; i < ND; i++) {
        if (fx[i] || x0[i] != T->mask) ck_assert_int_eq(x1[i], x0[i]); /* kept */
        if (fx[i] || x0[i] != T->mask) continue;
        if ((size_t)i < lo || (size_t)i >= hi) { ck_assert_int_eq(x1[i], T->mask); continue; }
        double conf, u = dfm_rng_uniform(seed, 0x24, grow, (uint32_t)i, (uint32_t)step);
        sc[nm].i = i;
        sc[nm].s = order == DFM_ORDER_RANDOM
                 ? (count == DFM_COUNT_COINS ? (double)(u < pj)
                                             : dfm_rng_uniform(seed, 0x28, grow, (uint32_t)i, (uint32_t)step))
                 : order_score(T, lg, i, order, &conf);
        if (order == DFM_ORDER_RANDOM) order_score(T, lg, i, DFM_ORDER_CONFIDENCE, &conf);
        nfire += u < pj;
        nabove += conf > 0.6;
        if (fabs(conf - 0.6) < 1e-5 && count == DFM_COUNT_THRESHOLD) return; /* too close to call */
        nm++;
    }
    int n = nm, revealed = 0;
    double e = nm * pj;
    if (count == DFM_COUNT_COINS) n = nfire;
    if (count == DFM_COUNT_SCHEDULE)
        n = (int)floor(e) + (dfm_rng_uniform(seed, 0x27, grow, 0, (uint32_t)step) < e - floor(e));
    if (count == DFM_COUNT_SCHEDULE_CEIL) n = pj >= 1.0 ? nm : (int)ceil(e - 1e-9);
    if (count == DFM_COUNT_THRESHOLD && !last) n = nabove > 0 ? nabove : (nm > 0);
    if (n > nm) n = nm;
    for (int k = 0; k < nm; k++) revealed += x1[sc[k].i] != T->mask;
    ck_assert_msg(revealed == n, "order %d count %d blocks %d step %zu: revealed %d, promised %d",
                  order, count, blocks, step, revealed, n);
    if (count == DFM_COUNT_THRESHOLD && !last && nabove > 0) {
        for (int k = 0; k < nm; k++) {
            double conf;
            order_score(T, lg, sc[k].i, DFM_ORDER_CONFIDENCE, &conf);
            ck_assert_int_eq(x1[sc[k].i] != T->mask, conf > 0.6);
        }
        return;
    }
    qsort(sc, (size_t)nm, sizeof *sc, cmp_score);
    if (n < nm && n > 0 && fabs(sc[n - 1].s - sc[n].s) < 1e-5) return; /* a near tie: float vs double */
    for (int k = 0; k < nm; k++)
        ck_assert_msg((x1[sc[k].i] != T->mask) == (k < n), "order %d count %d: wrong positions at step %zu",
                      order, count, step);
    (*checked_sets)++;
}

START_TEST(orders_reveal_promised_counts)
{
    target T;
    target_init(&T, ND, DFM_SOURCE_MASK, DFM_SCHED_CONDOT);
    enum { R = 40 };
    int32_t init[R * ND];
    uint8_t fx[R * ND];
    prompt(&T, init, fx, R);
    int32_t *states = calloc((NSTEPS + 1) * R * ND, sizeof(int32_t));
    long checked_sets = 0;
    for (int order = 0; order < 4; order++)
        for (int count = 0; count < 4; count++)
            for (int blk = 0; blk < 2; blk++) {
                dfm_sampler *s = order_sampler(&T, order, count, blk ? 2 : 0, 0);
                trace tr = {states, R, ND, NSTEPS, 0, 0, -1};
                ck_assert_int_eq(dfm_sampler_set_step_callback(s, trace_fn, &tr), 0);
                memcpy(states, init, sizeof init);
                int32_t tok[R * ND];
                memcpy(tok, init, sizeof tok);
                ck_assert_int_eq(run_tok(s, &T, tok, R, 0, 0, fx, NULL, NULL), 0);
                ck_assert_int_eq(tr.steps_seen, NSTEPS);
                ck_assert_mem_eq(tok, states + NSTEPS * R * ND, sizeof tok);
                for (size_t st = 0; st < NSTEPS; st++)
                    for (size_t r = 0; r < R; r++)
                        check_step(&T, order, count, blk, st, r, states + (st * R + r) * ND,
                                   states + ((st + 1) * R + r) * ND, fx + r * ND, &checked_sets);
                dfm_sampler_free(s);
            }
    ck_assert_int_gt(checked_sets, 32 * R * NSTEPS / 2); /* most steps were checked in full */
    free(states);
    dfm_scheduler_free(T.sched);
}
END_TEST

/* ---- posterior shaping: the same rule in every sampler ---- */

/* d = 1 over 7 data tokens (ties at 0.2), mask source (V = 8) or uniform source (V = 7). */
static void target_d1(target *T, int source)
{
    static const double q7[7] = {0.25, 0.2, 0.2, 0.15, 0.1, 0.06, 0.04};
    memset(T, 0, sizeof *T);
    T->d = 1;
    T->qV = 7;
    T->source = source;
    T->fixed_coord = -1;
    if (source == DFM_SOURCE_MASK) { T->V = 8; T->mask = 7; T->p0[7] = 1.0; }
    else { T->V = 7; for (int j = 0; j < 7; j++) T->p0[j] = 1.0 / 7; }
    for (int j = 0; j < 7; j++) T->q[j] = q7[j];
    T->sched = make_sched(DFM_SCHED_CONDOT);
    g_table_T = NULL;
}

typedef struct shaping { double temp; int64_t k; double p, minp; } shaping;

/* The documented rule, by sorting: p ~ q^(1/T); keep the k most probable (ties: lower index);
 * then the smallest most-probable prefix whose mass reaches top_p of what is left; then the
 * tokens with p >= min_p max p; renormalise. */
static void shape_ref_n(const double *q, int n, shaping sh, double *out)
{
    score sc[64];
    double z = 0.0;
    for (int y = 0; y < n; y++) { out[y] = q[y] > 0.0 ? pow(q[y], 1.0 / sh.temp) : 0.0; z += out[y]; }
    for (int y = 0; y < n; y++) { out[y] /= z; sc[y].s = out[y]; sc[y].i = y; }
    qsort(sc, (size_t)n, sizeof *sc, cmp_score);
    int keep = n;
    if (sh.k > 0 && sh.k < keep) keep = (int)sh.k;
    double mass = 0.0, acc = 0.0;
    for (int j = 0; j < keep; j++) mass += sc[j].s;
    if (sh.p < 1.0)
        for (int j = 0; j < keep; j++) {
            acc += sc[j].s;
            if (acc >= sh.p * mass) { keep = j + 1; break; }
        }
    for (int j = keep; j < n; j++) out[sc[j].i] = 0.0;
    for (int y = 0; y < n; y++) if (out[y] < sh.minp * sc[0].s) out[y] = 0.0;
    z = 0.0;
    for (int y = 0; y < n; y++) z += out[y];
    for (int y = 0; y < n; y++) out[y] /= z;
}

static void shape_ref(const double *q, int n, shaping sh, double *out) { shape_ref_n(q, n, sh, out); }

static void set_shaping(dfm_sampler *s, shaping sh)
{
    set_d(s, DFM_OPT_DS_TEMPERATURE, sh.temp);
    set_i(s, DFM_OPT_DS_TOP_K, sh.k);
    set_d(s, DFM_OPT_DS_TOP_P, sh.p);
    set_d(s, DFM_OPT_DS_MIN_P, sh.minp);
}

START_TEST(shaping_every_sampler_d1)
{
    const shaping cases[] = {{1.0, 2, 1.0, 0.0}, {1.0, 0, 0.6, 0.0}, {1.0, 0, 0.44, 0.0},
                             {1.0, 0, 1.0, 0.7}, {1.0, 5, 0.7, 0.3}, {0.6, 0, 0.8, 0.0},
                             {1.5, 4, 0.9, 0.2}};
    /* every method; for EXACT also the unmasking engine and remasking */
    const int methods[6] = {DFM_METHOD_EXACT, DFM_METHOD_EXACT, DFM_METHOD_EXACT, DFM_METHOD_EULER,
                            DFM_METHOD_TAU_LEAPING, DFM_METHOD_THETA_TRAPEZOIDAL};
    long n = (long)tu_count(30000);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        double want[8];
        target T;
        target_d1(&T, DFM_SOURCE_MASK);
        shape_ref(T.q, 7, cases[c], want);
        for (int m = 0; m < 6; m++) {
            dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, methods[m]);
            ck_assert_int_eq(dfm_sampler_set_steps(s, 6), 0);
            set_shaping(s, cases[c]);
            if (m == 1) set_i(s, DFM_OPT_DS_PURITY, 1);
            if (m == 2) { set_i(s, DFM_OPT_DS_REMASK, DFM_REMASK_CAP); set_d(s, DFM_OPT_DS_REMASK_ETA, 0.5); }
            long hist[8];
            int32_t *tok = calloc((size_t)n, sizeof(int32_t));
            ck_assert_int_eq(run_tok(s, &T, tok, (size_t)n, 0, 1, NULL, NULL, NULL), 0);
            memset(hist, 0, sizeof hist);
            for (long r = 0; r < n; r++) { ck_assert(tok[r] >= 0 && tok[r] < 7); hist[tok[r]]++; }
            int dof;
            double chi = tu_chi2(hist, want, 7, n, &dof);
            ck_assert_msg(chi < tu_chi2_bound(dof), "case %zu method %d: chi2 %g > %g", c, m, chi,
                          tu_chi2_bound(dof));
            free(tok);
            dfm_sampler_free(s);
        }
        dfm_scheduler_free(T.sched);
    }
}
END_TEST

/* Uniform source, d = 1, 4 steps: the exact step and tau-leaping follow their documented kernels
 * with the shaped posterior p_s: exact, jump with (kappa' - kappa) / (1 - kappa) to y ~ p_s;
 * tau-leaping, rates kappa'/(1 - kappa) p_s(y), y != x; the last step draws from p_s. */
static void d1_shaped_law(const target *T, int method, int nsteps, shaping sh, double *law)
{
    int V = T->V;
    for (int x = 0; x < V; x++) law[x] = T->p0[x];
    for (int i = 0; i < nsteps; i++) {
        double k0 = (double)i / nsteps, k1 = (double)(i + 1) / nsteps, h = k1 - k0, next[8] = {0};
        for (int x = 0; x < V; x++) {
            double p[8], ps[8], K[8] = {0}, z = 0.0;
            for (int y = 0; y < V; y++) { p[y] = T->q[y] * pt_cond(T, k0, x, y); z += p[y]; }
            for (int y = 0; y < V; y++) p[y] /= z;
            shape_ref(p, V, sh, ps);
            if (method == DFM_METHOD_EXACT || i == nsteps - 1) {
                double pj = method == DFM_METHOD_EXACT ? (k1 - k0) / (1.0 - k0) : 1.0;
                for (int y = 0; y < V; y++) K[y] = pj * ps[y];
                K[x] += 1.0 - pj;
            } else {
                double A = 1.0 / (1.0 - k0), lam = A * (1.0 - ps[x]), pjump = -expm1(-h * lam);
                for (int y = 0; y < V; y++) if (y != x && lam > 0.0) K[y] = pjump * A * ps[y] / lam;
                K[x] = 1.0 - (lam > 0.0 ? pjump : 0.0);
            }
            for (int y = 0; y < V; y++) next[y] += law[x] * K[y];
        }
        for (int y = 0; y < V; y++) law[y] = next[y];
    }
}

START_TEST(shaping_uniform_source_d1)
{
    const shaping cases[2] = {{1.0, 0, 0.55, 0.0}, {0.8, 3, 1.0, 0.25}};
    const int methods[2] = {DFM_METHOD_EXACT, DFM_METHOD_TAU_LEAPING};
    long n = (long)tu_count(60000);
    for (int c = 0; c < 2; c++)
        for (int m = 0; m < 2; m++) {
            target T;
            target_d1(&T, DFM_SOURCE_UNIFORM);
            dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, methods[m]);
            ck_assert_int_eq(dfm_sampler_set_steps(s, 4), 0);
            set_shaping(s, cases[c]);
            long hist[8] = {0};
            int32_t *tok = calloc((size_t)n, sizeof(int32_t));
            ck_assert_int_eq(run_tok(s, &T, tok, (size_t)n, 0, 1, NULL, NULL, NULL), 0);
            for (long r = 0; r < n; r++) hist[tok[r]]++;
            double law[8];
            d1_shaped_law(&T, methods[m], 4, cases[c], law);
            TU_ASSERT_CHI2(hist, law, 7, n);
            free(tok);
            dfm_sampler_free(s);
            dfm_scheduler_free(T.sched);
        }
}
END_TEST

/* A larger vocabulary with ties: one exact step from the mask draws from the shaped posterior;
 * no sample falls outside the set kept by the sorting rule, and the frequencies follow it. */
enum { SHAPE_V = 64 };
static float g_fixed_logits[SHAPE_V];
static int fixed_logits_model(const dfm_model_io *io, void *ud)
{
    (void)ud;
    for (size_t r = 0; r < io->rows; r++) memcpy(io->out + r * io->out_stride, g_fixed_logits, sizeof g_fixed_logits);
    return 0;
}

START_TEST(shaping_support_matches_sort)
{
    const shaping cases[] = {{1.0, 7, 1.0, 0.0}, {1.0, 8, 1.0, 0.0}, {1.0, 0, 0.5, 0.0},
                             {1.0, 0, 0.93, 0.0}, {0.7, 12, 0.8, 0.05}, {1.3, 0, 1.0, 0.3},
                             {1.0, 40, 0.97, 0.01}};
    double q[SHAPE_V];
    uint32_t h = 99u;
    for (int y = 0; y < SHAPE_V - 1; y++) {
        h = h * 1664525u + 1013904223u;
        g_fixed_logits[y] = (float)((h >> 20) % 200) * 0.025f; /* steps of 0.025: many ties */
    }
    g_fixed_logits[SHAPE_V - 1] = -INFINITY; /* the mask token */
    for (int y = 0; y < SHAPE_V - 1; y++) q[y] = exp((double)g_fixed_logits[y]);
    long n = (long)tu_count(40000);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        double want[SHAPE_V] = {0};
        shape_ref_n(q, SHAPE_V - 1, cases[c], want);
        dfm_space *sp;
        dfm_scheduler *sc = make_sched(DFM_SCHED_CONDOT);
        dfm_path *p;
        dfm_generator *g;
        dfm_sampler *s;
        ck_assert_int_eq(dfm_space_create_discrete(&sp, SHAPE_V, 1, NULL), 0);
        ck_assert_int_eq(dfm_path_create_mixture(&p, sp, sc, DFM_SOURCE_MASK, SHAPE_V - 1, NULL, NULL), 0);
        ck_assert_int_eq(dfm_generator_create_factorized(&g, p, DFM_PARAM_LOGITS, NULL), 0);
        ck_assert_int_eq(dfm_sampler_create(&s, g, DFM_METHOD_EXACT, NULL), 0);
        ck_assert_int_eq(dfm_sampler_set_steps(s, 1), 0);
        set_shaping(s, cases[c]);
        int32_t *tok = calloc((size_t)n, sizeof(int32_t));
        dfm_run_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.model = fixed_logits_model;
        a.rows = (size_t)n;
        a.tokens = tok;
        a.draw_source = 1;
        ck_assert_int_eq(dfm_sampler_run(s, &a), 0);
        long hist[SHAPE_V] = {0};
        for (long r = 0; r < n; r++) {
            ck_assert_msg(want[tok[r]] > 0.0, "case %zu: token %d is outside the kept set", c, tok[r]);
            hist[tok[r]]++;
        }
        TU_ASSERT_CHI2(hist, want, SHAPE_V, n);
        free(tok);
        dfm_sampler_free(s);
        dfm_generator_free(g);
        dfm_path_free(p);
        dfm_space_free(sp);
        dfm_scheduler_free(sc);
    }
}
END_TEST

/* Greedy reveals take the most probable token (here token 0), in the engine and in remasking. */
START_TEST(greedy_reveals_argmax)
{
    target T;
    target_d1(&T, DFM_SOURCE_MASK);
    for (int v = 0; v < 2; v++) {
        dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, DFM_METHOD_EXACT);
        set_i(s, DFM_OPT_DS_GREEDY, 1);
        if (v) set_i(s, DFM_OPT_DS_REMASK, DFM_REMASK_RESCALE);
        else set_i(s, DFM_OPT_DS_ORDER, DFM_ORDER_MARGIN);
        int32_t tok[500];
        ck_assert_int_eq(run_tok(s, &T, tok, 500, 0, 1, NULL, NULL, NULL), 0);
        for (int r = 0; r < 500; r++) ck_assert_int_eq(tok[r], 0);
        dfm_sampler_free(s);
    }
    dfm_scheduler_free(T.sched);
}
END_TEST

/* ---- ReMDM remasking ---- */

/* The exact marginal over [V]^d at kappa k. */
static void marginal_at(const target *T, double k, double *pt)
{
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

typedef struct remask_case { int kind; double eta; } remask_case;
static const remask_case remask_cases[3] = {
    {DFM_REMASK_CAP, 0.5}, {DFM_REMASK_RESCALE, 0.7}, {DFM_REMASK_LOOP, 0.5}};

/* kappa at time t: the path's kappa = t, or the loop's (window [0.3, 0.7), kappa 0.6 there). */
static double remask_kappa(int kind, double t)
{
    if (kind != DFM_REMASK_LOOP) return t;
    if (t < 0.3) return 0.6 * t / 0.3;
    if (t < 0.7) return 0.6;
    return 0.6 + 0.4 * (t - 0.7) / 0.3;
}

static dfm_sampler *remask_sampler(target *T, remask_case rc, size_t steps)
{
    dfm_sampler *s = target_sampler(T, DFM_PARAM_LOGITS, DFM_METHOD_EXACT);
    set_i(s, DFM_OPT_DS_REMASK, rc.kind);
    set_d(s, DFM_OPT_DS_REMASK_ETA, rc.eta);
    set_d(s, DFM_OPT_DS_LOOP_START, 0.3);
    set_d(s, DFM_OPT_DS_LOOP_END, 0.7);
    set_d(s, DFM_OPT_DS_LOOP_KAPPA, 0.6);
    ck_assert_int_eq(dfm_sampler_set_steps(s, steps), 0);
    return s;
}

/* Where the posterior of a coordinate does not depend on the others (d = 1, a product q), the
 * ReMDM step keeps p_t exactly at every grid time, with the cap binding on the last steps:
 * the law at t = 0.5 and the final law are exact at 5 or 6 steps. */
START_TEST(remask_exact_laws_few_steps)
{
    for (int k = 0; k < 3; k++)
        for (int d = 1; d <= 3; d += 2) {
            target T;
            target_init(&T, d, DFM_SOURCE_MASK, DFM_SCHED_CONDOT);
            if (d == 3) make_q_product(&T);
            size_t steps = d == 1 ? 5 : 6;
            dfm_sampler *s = remask_sampler(&T, remask_cases[k], steps);
            double st[1] = {0.5}, pt[MAXS];
            long hist[MAXS], saved[MAXS], n = (long)tu_count(40000);
            run_hist(s, &T, (size_t)n, hist, st, 1, saved, NULL);
            double tsave = d == 1 ? 0.4 : 0.5; /* the largest grid time <= 0.5 */
            marginal_at(&T, remask_kappa(remask_cases[k].kind, tsave), pt);
            TU_ASSERT_CHI2(saved, pt, ipow(T.V, d), n);
            TU_ASSERT_CHI2(hist, T.q, ipow(3, d), n);
            int64_t jumps = 0;
            dfm_sampler_get_stat(s, DFM_STAT_JUMPS, &jumps);
            ck_assert_int_gt(jumps, (int64_t)d * n); /* positions were remasked and revealed again */
            dfm_sampler_free(s);
            dfm_scheduler_free(T.sched);
        }
}
END_TEST

/* A correlated q: the sampler draws the positions it unmasks together from their marginals, so
 * a step that unmasks several positions of a row at once is not exact, and remasking makes that
 * common. With the cap, sigma_t shrinks to 0 as kappa -> 1, and the many late steps that remask
 * and unmask one position at a time act as single-site Gibbs updates from exact conditionals:
 * with enough steps the law is within sampling noise of q (cap and rescale at eta 0.5 and 1,
 * 1000 steps). The loop holds kappa for a whole window and its unmasking probability is
 * sigma kappa / (1 - kappa) there: its fixed point has an O(eta) bias on such targets, within
 * noise at a small eta (docs/discrete.md "Remasking"). */
START_TEST(remask_correlated_many_steps)
{
    const remask_case cs[3] = {{DFM_REMASK_CAP, 0.5}, {DFM_REMASK_RESCALE, 1.0}, {DFM_REMASK_LOOP, 0.02}};
    const size_t steps[3] = {1000, 1000, 300};
    long n = (long)tu_count(60000);
    for (int k = 0; k < 3; k++) {
        target T;
        target_init(&T, 3, DFM_SOURCE_MASK, DFM_SCHED_CONDOT);
        dfm_sampler *s = remask_sampler(&T, cs[k], steps[k]);
        long hist[MAXS];
        run_hist(s, &T, (size_t)n, hist, NULL, 0, NULL, NULL);
        TU_ASSERT_CHI2(hist, T.q, 27, n);
        dfm_sampler_free(s);
        dfm_scheduler_free(T.sched);
    }
}
END_TEST

/* ---- tau-leaping (order 1) and theta-trapezoidal (order 2): n-step laws by enumeration ---- */

/* Two problems on [V]^2: direct rates, smooth in t, each coordinate's rates depending mildly on
 * the other coordinate (rproblem); and the mixture path's logits generator with the exact
 * posterior, on [0, 0.8] (where its rates are smooth). */
typedef struct rproblem { double base[2][3][3], g[2][3][3][3]; } rproblem;
static rproblem g_rp;

static void rp_init(void)
{
    for (int i = 0; i < 2; i++)
        for (int a = 0; a < 3; a++)
            for (int y = 0; y < 3; y++) {
                uint32_t h = (uint32_t)(i * 9 + a * 3 + y + 1) * 2654435761u;
                g_rp.base[i][a][y] = 0.5 + (double)(h >> 8) / 16777216.0;
                for (int o = 0; o < 3; o++) {
                    uint32_t h2 = (h ^ (uint32_t)(o + 7) * 40503u) * 2246822519u;
                    g_rp.g[i][a][o][y] = -0.25 + 0.5 * (double)(h2 >> 8) / 16777216.0;
                }
            }
}

/* u[i][y] for y != x[i] (0 on the diagonal). */
static void rp_rates(double t, const int32_t *x, double u[2][8])
{
    for (int i = 0; i < 2; i++)
        for (int y = 0; y < 3; y++)
            u[i][y] = y == x[i] ? 0.0
                    : g_rp.base[i][x[i]][y] * (1.0 + g_rp.g[i][x[i]][x[1 - i]][y]) *
                      (1.0 + 0.8 * sin(3.0 * t + i + y)) * (0.7 + 0.6 * t);
}

static int rp_model(const dfm_model_io *io, void *ud)
{
    (void)ud;
    for (size_t r = 0; r < io->rows; r++) {
        double u[2][8];
        rp_rates(io->t[r], io->tokens + r * 2, u);
        for (int i = 0; i < 2; i++)
            for (int y = 0; y < 3; y++) io->out[r * io->out_stride + (size_t)i * 3 + (size_t)y] = (float)u[i][y];
    }
    return 0;
}

typedef struct problem { target *T; int rates; } problem;

static void pr_rates(const problem *P, double t, const int32_t *x, double u[2][8])
{
    if (P->rates) { rp_rates(t, x, u); return; }
    const target *T = P->T;
    float lg[2 * 8];
    ck_assert_int_eq(posterior_logits(T, t, x, lg), 0); /* kappa = t */
    for (int i = 0; i < 2; i++) {
        double z = 0.0;
        for (int y = 0; y < T->V; y++) z += exp((double)lg[i * T->V + y]);
        for (int y = 0; y < T->V; y++)
            u[i][y] = y == x[i] ? 0.0 : exp((double)lg[i * T->V + y]) / z / (1.0 - t);
    }
}

/* One coordinate: jump with probability 1 - exp(-h lambda) to y in proportion to u. */
static void coord_kernel(const double *u, int V, int xi, double h, double *P)
{
    double lam = 0.0;
    for (int y = 0; y < V; y++) lam += u[y];
    for (int y = 0; y < V; y++) P[y] = lam > 0.0 ? -expm1(-h * lam) * u[y] / lam : 0.0;
    double stay = 1.0;
    for (int y = 0; y < V; y++) if (y != xi) stay -= P[y];
    P[xi] = stay;
}

/* The law after n steps of tau-leaping (trap 0) or theta-trapezoidal (theta 1/2) over [0, tend]. */
static void propagate(const problem *P, int V, int trap, int n, double tend, const double *p0, double *p)
{
    int S = V * V;
    const double th = 0.5, a1 = 1.0 / (2 * th * (1 - th)), a2 = ((1 - th) * (1 - th) + th * th) / (2 * th * (1 - th));
    for (int s = 0; s < S; s++) p[s] = p0[s];
    for (int k = 0; k < n; k++) {
        double t = tend * k / n, h = tend / n, next[64] = {0};
        for (int s = 0; s < S; s++) {
            if (p[s] == 0.0) continue;
            int32_t x[2] = {s % V, s / V};
            double u[2][8], P1[2][8];
            pr_rates(P, t, x, u);
            for (int i = 0; i < 2; i++) coord_kernel(u[i], V, x[i], trap ? th * h : h, P1[i]);
            for (int ys = 0; ys < S; ys++) {
                int32_t y[2] = {ys % V, ys / V};
                double w = p[s] * P1[0][y[0]] * P1[1][y[1]];
                if (w == 0.0) continue;
                if (!trap) { next[ys] += w; continue; }
                double us[2][8], P2[2][8];
                pr_rates(P, t + th * h, y, us);
                for (int i = 0; i < 2; i++) {
                    double nu[8];
                    for (int z = 0; z < V; z++) {
                        nu[z] = y[i] != x[i] ? a1 * us[i][z] : a1 * us[i][z] - a2 * u[i][z];
                        if (nu[z] < 0.0 || z == y[i]) nu[z] = 0.0;
                    }
                    coord_kernel(nu, V, y[i], (1 - th) * h, P2[i]);
                }
                for (int zs = 0; zs < S; zs++) next[zs] += w * P2[0][zs % V] * P2[1][zs / V];
            }
        }
        for (int s = 0; s < S; s++) p[s] = next[s];
    }
}

/* The exact law at tend: Kolmogorov forward (RK4, 4000 steps) for the rates problem; p_tend of
 * the mixture path. */
static void exact_law(const problem *P, int V, double tend, const double *p0, double *p)
{
    int S = V * V;
    if (!P->rates) { marginal_at(P->T, tend, p); return; }
    double Q[64][64];
    for (int s = 0; s < S; s++) p[s] = p0[s];
    const int N = 4000;
    for (int k = 0; k < N; k++) {
        double t = tend * k / N, h = tend / N, kk[4][64], tmp[64];
        for (int st = 0; st < 4; st++) {
            double ts = t + (st == 0 ? 0.0 : st == 3 ? h : h / 2);
            memset(Q, 0, sizeof Q);
            for (int s = 0; s < S; s++) {
                int32_t x[2] = {s % V, s / V};
                double u[2][8];
                pr_rates(P, ts, x, u);
                for (int i = 0; i < 2; i++)
                    for (int y = 0; y < V; y++) {
                        int32_t z[2] = {x[0], x[1]};
                        z[i] = y;
                        Q[s][z[0] + V * z[1]] += u[i][y];
                        Q[s][s] -= u[i][y];
                    }
            }
            for (int s = 0; s < S; s++)
                tmp[s] = p[s] + (st == 0 ? 0.0 : (st == 3 ? h : h / 2) * kk[st - 1][s]);
            for (int c2 = 0; c2 < S; c2++) {
                double acc = 0.0;
                for (int s = 0; s < S; s++) acc += tmp[s] * Q[s][c2];
                kk[st][c2] = acc;
            }
        }
        for (int s = 0; s < S; s++) p[s] += h / 6 * (kk[0][s] + 2 * kk[1][s] + 2 * kk[2][s] + kk[3][s]);
    }
}

static double tv(const double *a, const double *b, int n)
{
    double s = 0.0;
    for (int k = 0; k < n; k++) s += fabs(a[k] - b[k]);
    return 0.5 * s;
}

/* Least-squares slope of log error against log n. */
static double fitted_order(const double *err, const int *ns, int m)
{
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int k = 0; k < m; k++) {
        double lx = log((double)ns[k]), ly = log(err[k]);
        sx += lx; sy += ly; sxx += lx * lx; sxy += lx * ly;
    }
    return -(m * sxy - sx * sy) / (m * sxx - sx * sx);
}

/* The library's law after n steps, from samples (entry states drawn from p0 by rows). */
static void sampled_law(const problem *P, int V, int method, int n, double tend, const double *p0,
                        long rows, long *hist)
{
    dfm_sampler *s;
    target *T = P->T;
    int param = P->rates ? DFM_PARAM_RATES : DFM_PARAM_LOGITS;
    s = target_sampler(T, param, method);
    double grid[65];
    for (int k = 0; k <= n; k++) grid[k] = tend * k / n;
    ck_assert_int_eq(dfm_sampler_set_grid(s, grid, (size_t)n + 1), 0);
    int32_t *tok = calloc((size_t)rows * 2, sizeof(int32_t));
    long r = 0;
    if (P->rates) /* the rates problem starts from two states; the others from the source */
        for (int st = 0; st < V * V; st++)
            for (long c2 = 0; c2 < (long)llround(p0[st] * (double)rows) && r < rows; c2++, r++) {
                tok[r * 2] = st % V;
                tok[r * 2 + 1] = st / V;
            }
    int rc = run_tok(s, T, tok, (size_t)rows, 0, !P->rates, NULL, P->rates ? rp_model : NULL, NULL);
    ck_assert_msg(rc == 0, "%s", dfm_sampler_last_error(s));
    memset(hist, 0, sizeof(long) * (size_t)(V * V));
    for (r = 0; r < rows; r++) hist[tok[r * 2] + V * tok[r * 2 + 1]]++;
    free(tok);
    dfm_sampler_free(s);
}

static void check_orders(const problem *P, int V, double tend, const double *p0, double lo1,
                         double hi1, double lo2, double hi2, const char *name)
{
    const int ns[5] = {4, 8, 16, 32, 64};
    double ex[64], law[64], e1[5], e2[5];
    exact_law(P, V, tend, p0, ex);
    for (int k = 0; k < 5; k++) {
        propagate(P, V, 0, ns[k], tend, p0, law);
        e1[k] = tv(law, ex, V * V);
        propagate(P, V, 1, ns[k], tend, p0, law);
        e2[k] = tv(law, ex, V * V);
    }
    double o1 = fitted_order(e1, ns, 5), o2 = fitted_order(e2, ns, 5);
    if (getenv("DFM_TEST_VERBOSE"))
        printf("%s: tau-leaping TV %.3g .. %.3g order %.2f; theta-trapezoidal TV %.3g .. %.3g order %.2f\n",
               name, e1[0], e1[4], o1, e2[0], e2[4], o2);
    ck_assert_msg(o1 > lo1 && o1 < hi1, "%s: tau-leaping order %.3f", name, o1);
    ck_assert_msg(o2 > lo2 && o2 < hi2, "%s: theta-trapezoidal order %.3f", name, o2);
    /* the library follows the kernels: samples at 4 steps against their exact laws */
    long rows = 2 * ((long)tu_count(60000) / 2), hist[64];
    for (int trap = 0; trap < 2; trap++) {
        propagate(P, V, trap, 4, tend, p0, law);
        sampled_law(P, V, trap ? DFM_METHOD_THETA_TRAPEZOIDAL : DFM_METHOD_TAU_LEAPING, 4, tend, p0, rows, hist);
        TU_ASSERT_CHI2(hist, law, V * V, rows);
    }
}

START_TEST(leaping_orders_rates)
{
    rp_init();
    target T; /* the space and path only: the rates come from rp_model */
    target_init(&T, 2, DFM_SOURCE_UNIFORM, DFM_SCHED_CONDOT);
    problem P = {&T, 1};
    double p0[9] = {0.6, 0, 0, 0, 0.4, 0, 0, 0, 0};
    check_orders(&P, 3, 1.0, p0, 0.9, 1.1, 1.85, 2.3, "rates");
    dfm_scheduler_free(T.sched);
}
END_TEST

START_TEST(leaping_orders_logits)
{
    const int sources[2] = {DFM_SOURCE_UNIFORM, DFM_SOURCE_MASK};
    for (int k = 0; k < 2; k++) {
        target T;
        target_init(&T, 2, sources[k], DFM_SCHED_CONDOT);
        make_q_product(&T);
        problem P = {&T, 0};
        double p0[16] = {0};
        int V = T.V;
        for (int s = 0; s < V * V; s++) p0[s] = T.p0[s % V] * T.p0[s / V];
        check_orders(&P, V, 0.8, p0, 0.9, 1.1, 1.85, 2.3, k ? "logits, mask source" : "logits, uniform source");
        dfm_scheduler_free(T.sched);
    }
}
END_TEST

/* A correlated q: a coordinate's posterior changes when the other one moves, the second stage's
 * rates are clamped at 0 now and then (DFM_STAT_CLAMPED), and the order falls below 2; at equal
 * model calls theta-trapezoidal still has a much smaller error than tau-leaping. The library
 * follows the kernels (including the clamp and the moved-coordinate rule) at 4 steps. */
START_TEST(leaping_correlated_target)
{
    target T;
    target_init(&T, 2, DFM_SOURCE_MASK, DFM_SCHED_CONDOT);
    problem P = {&T, 0};
    double p0[16] = {0}, ex[16], l1[16], l2[16];
    p0[15] = 1.0; /* both masked */
    exact_law(&P, 4, 0.8, p0, ex);
    propagate(&P, 4, 0, 32, 0.8, p0, l1); /* 32 model calls */
    propagate(&P, 4, 1, 16, 0.8, p0, l2); /* 32 model calls */
    ck_assert_msg(tv(l2, ex, 16) * 5.0 < tv(l1, ex, 16), "trapezoidal %g vs tau-leaping %g",
                  tv(l2, ex, 16), tv(l1, ex, 16));
    if (getenv("DFM_TEST_VERBOSE")) {
        const int ns[5] = {4, 8, 16, 32, 64};
        double e1[5], e2[5];
        for (int k = 0; k < 5; k++) {
            propagate(&P, 4, 0, ns[k], 0.8, p0, l1);
            propagate(&P, 4, 1, ns[k], 0.8, p0, l2);
            e1[k] = tv(l1, ex, 16);
            e2[k] = tv(l2, ex, 16);
        }
        printf("correlated: tau-leaping TV %.3g .. %.3g order %.2f; theta-trapezoidal TV %.3g .. %.3g order %.2f\n",
               e1[0], e1[4], fitted_order(e1, ns, 5), e2[0], e2[4], fitted_order(e2, ns, 5));
    }
    long rows = (long)tu_count(60000), hist[16];
    propagate(&P, 4, 1, 4, 0.8, p0, l2);
    sampled_law(&P, 4, DFM_METHOD_THETA_TRAPEZOIDAL, 4, 0.8, p0, rows, hist);
    TU_ASSERT_CHI2(hist, l2, 16, rows);
    dfm_scheduler_free(T.sched);
}
END_TEST

/* ---- time-independent models: fewer model calls, identical samples ---- */

typedef struct spy { target *T; long rows, calls; int index_ok; size_t total_rows; } spy;

static int spy_model(const dfm_model_io *io, void *ud)
{
    spy *sp = (spy *)ud;
    sp->rows += (long)io->rows;
    sp->calls++;
    if (io->row_index) { /* gathered rows: increasing global indices, the first is row_offset */
        if (io->row_index[0] != io->row_offset) sp->index_ok = 0;
        for (size_t r = 0; r < io->rows; r++)
            if (io->row_index[r] >= sp->total_rows || (r && io->row_index[r] <= io->row_index[r - 1]))
                sp->index_ok = 0;
    }
    return exact_model(io, sp->T);
}

START_TEST(time_independent_model_calls)
{
    enum { R = 300, STEPS = 16 };
    target T;
    target_init(&T, 3, DFM_SOURCE_MASK, DFM_SCHED_CONDOT); /* its posterior ignores t */
    const int method[5] = {DFM_METHOD_EXACT, DFM_METHOD_EXACT, DFM_METHOD_EXACT,
                           DFM_METHOD_TAU_LEAPING, DFM_METHOD_THETA_TRAPEZOIDAL};
    int32_t *states = calloc((STEPS + 1) * R * 3, sizeof(int32_t));
    for (int v = 0; v < 5; v++)
        for (int ch = 0; ch < 2; ch++)
            for (int th = 1; th <= 2; th++) {
                dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, method[v]);
                ck_assert_int_eq(dfm_sampler_set_steps(s, STEPS), 0);
                if (v == 1) set_i(s, DFM_OPT_DS_PURITY, 1);
                if (v == 2) { set_i(s, DFM_OPT_DS_REMASK, DFM_REMASK_CAP); set_d(s, DFM_OPT_DS_REMASK_ETA, 0.3); }
                set_i(s, DFM_OPT_DS_CHUNK_ROWS, ch ? 7 : 0);
                set_i(s, DFM_OPT_THREADS, th);
                spy sp = {&T, 0, 0, 1, R + 11};
                int32_t ref[R * 3], tok[R * 3];
                ck_assert_int_eq(run_tok(s, &T, ref, R, 11, 1, NULL, spy_model, &sp), 0);
                int64_t rows_stat;
                dfm_sampler_get_stat(s, DFM_STAT_MODEL_ROWS, &rows_stat);
                ck_assert_int_eq(rows_stat, sp.rows);
                long full = sp.rows;
                set_i(s, DFM_OPT_DS_TIME_INDEPENDENT, 1);
                trace tr = {states, R, 3, STEPS, 0, 0, -1};
                ck_assert_int_eq(dfm_sampler_set_step_callback(s, trace_fn, &tr), 0);
                for (int j = 0; j < R * 3; j++) states[j] = T.mask; /* the entry state */
                spy sc = {&T, 0, 0, 1, R + 11};
                ck_assert_int_eq(run_tok(s, &T, tok, R, 11, 1, NULL, spy_model, &sc), 0);
                ck_assert_msg(memcmp(ref, tok, sizeof tok) == 0, "variant %d: caching changed the samples", v);
                ck_assert(sc.index_ok);
                dfm_sampler_get_stat(s, DFM_STAT_MODEL_ROWS, &rows_stat);
                ck_assert_int_eq(rows_stat, sc.rows);
                ck_assert_msg(sc.rows < (v == 2 ? full : full / 2), "variant %d: %ld rows of %ld", v, sc.rows, full);
                if (method[v] != DFM_METHOD_THETA_TRAPEZOIDAL) {
                    /* one call per step: a row is sent at step i > 0 iff step i - 1 changed it */
                    long want = R;
                    for (int st = 1; st < STEPS; st++)
                        for (int r = 0; r < R; r++)
                            want += memcmp(states + ((size_t)st * R + r) * 3,
                                           states + ((size_t)(st - 1) * R + r) * 3, 12) != 0;
                    ck_assert_int_eq(sc.rows, want);
                }
                dfm_sampler_free(s);
            }
    free(states);
    /* the expected count for the exact step: each coordinate is revealed in a given step with
     * probability h, so a row is sent again with probability 1 - (1 - h)^d */
    {
        enum { B = 4000 };
        dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, DFM_METHOD_EXACT);
        ck_assert_int_eq(dfm_sampler_set_steps(s, STEPS), 0);
        set_i(s, DFM_OPT_DS_TIME_INDEPENDENT, 1);
        int32_t *tok = calloc(B * 3, sizeof(int32_t));
        spy sc = {&T, 0, 0, 1, B};
        ck_assert_int_eq(run_tok(s, &T, tok, B, 0, 1, NULL, spy_model, &sc), 0);
        double p = 1.0 - pow(1.0 - 1.0 / STEPS, 3), mean = B * (1.0 + (STEPS - 1) * p);
        double sd = sqrt(B * (STEPS - 1) * p * (1.0 - p));
        ck_assert_msg(fabs((double)sc.rows - mean) < 5.0 * sd, "rows sent %ld, expected %.0f +- %.0f",
                      sc.rows, mean, sd);
        free(tok);
        dfm_sampler_free(s);
    }
    dfm_scheduler_free(T.sched);
}
END_TEST

/* ---- the step callback ---- */

static int stop_in_step(const dfm_step_view *v, void *ud)
{
    if (v->step == 2) dfm_sampler_request_stop((dfm_sampler *)ud);
    return 0;
}

START_TEST(step_callback_sees_and_stops)
{
    target T;
    target_init(&T, 3, DFM_SOURCE_MASK, DFM_SCHED_CONDOT);
    dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, DFM_METHOD_EXACT);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 8), 0);
    enum { R = 50 };
    int32_t *states = calloc(9 * R * 3, sizeof(int32_t)), tok[R * 3], keep[R * 3], saved[3 * R * 3];
    trace tr = {states, R, 3, 8, 0, 0, -1};
    ck_assert_int_eq(dfm_sampler_set_step_callback(s, trace_fn, &tr), 0);
    double st[3] = {0.125, 0.5, 0.875};
    for (int j = 0; j < R * 3; j++) tok[j] = T.mask;
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = exact_model;
    a.model_data = &T;
    a.rows = R;
    a.tokens = tok;
    a.save_times = st;
    a.n_save = 3;
    a.saved_tokens = saved;
    ck_assert_int_eq(dfm_sampler_run(s, &a), 0);
    /* what the callback saw after step k is the state at grid time (k + 1) / 8 */
    ck_assert_mem_eq(states + 1 * R * 3, saved, R * 3 * sizeof(int32_t));
    ck_assert_mem_eq(states + 4 * R * 3, saved + R * 3, R * 3 * sizeof(int32_t));
    ck_assert_mem_eq(states + 7 * R * 3, saved + 2 * R * 3, R * 3 * sizeof(int32_t));
    ck_assert_mem_eq(states + 8 * R * 3, tok, sizeof tok);
    int64_t jumps;
    dfm_sampler_get_stat(s, DFM_STAT_JUMPS, &jumps);
    ck_assert_int_eq(tr.changed_sum, jumps);
    /* a nonzero return stops the run: DFM_ESTOPPED, the value kept, nothing written */
    for (int j = 0; j < R * 3; j++) tok[j] = keep[j] = T.mask;
    tr.steps_seen = 0;
    tr.stop_at = 3;
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ESTOPPED);
    ck_assert_int_eq(dfm_sampler_callback_status(s), 42);
    ck_assert_ptr_nonnull(strstr(dfm_sampler_last_error(s), "step callback"));
    ck_assert_mem_eq(tok, keep, sizeof tok);
    int64_t steps;
    dfm_sampler_get_stat(s, DFM_STAT_STEPS, &steps);
    ck_assert_int_eq(steps, 4);
    /* dfm_sampler_request_stop from inside; fn NULL removes the callback */
    ck_assert_int_eq(dfm_sampler_set_step_callback(s, stop_in_step, s), 0);
    ck_assert_int_eq(dfm_sampler_run(s, &a), DFM_ESTOPPED);
    ck_assert_int_eq(dfm_sampler_callback_status(s), 0);
    ck_assert_int_eq(dfm_sampler_set_step_callback(s, NULL, NULL), 0);
    ck_assert_int_eq(dfm_sampler_run(s, &a), 0);
    ck_assert_int_eq(dfm_sampler_set_step_callback(NULL, trace_fn, NULL), DFM_EINVAL);
    /* other samplers: DFM_EUNSUPPORTED */
    dfm_space *sp;
    dfm_path *pc;
    dfm_generator *gv;
    dfm_sampler *sv;
    ck_assert_int_eq(dfm_space_create_euclidean(&sp, 2, NULL), 0);
    ck_assert_int_eq(dfm_path_create_affine(&pc, sp, T.sched, NULL), 0);
    ck_assert_int_eq(dfm_generator_create_velocity(&gv, pc, DFM_PARAM_VELOCITY, NULL), 0);
    ck_assert_int_eq(dfm_sampler_create(&sv, gv, DFM_METHOD_EULER, NULL), 0);
    ck_assert_int_eq(dfm_sampler_set_step_callback(sv, trace_fn, NULL), DFM_EUNSUPPORTED);
    ck_assert_int_eq(dfm_sampler_set_int(sv, DFM_OPT_DS_ORDER, 1), DFM_EINVAL);
    dfm_sampler_free(sv);
    dfm_generator_free(gv);
    dfm_path_free(pc);
    dfm_space_free(sp);
    free(states);
    dfm_sampler_free(s);
    dfm_scheduler_free(T.sched);
}
END_TEST

/* ---- bad values: a clear error, nothing changed ---- */

static void bad_i(dfm_sampler *s, int opt, int64_t v, const char *msg)
{
    int64_t before, after;
    ck_assert_int_eq(dfm_sampler_get_int(s, opt, &before), 0);
    ck_assert_int_eq(dfm_sampler_set_int(s, opt, v), DFM_EINVAL);
    ck_assert_msg(strstr(dfm_sampler_last_error(s), msg) != NULL, "option %d = %lld: '%s' lacks '%s'",
                  opt, (long long)v, dfm_sampler_last_error(s), msg);
    ck_assert_int_eq(dfm_sampler_get_int(s, opt, &after), 0);
    ck_assert_int_eq(before, after);
}

static void bad_d(dfm_sampler *s, int opt, double v, const char *msg)
{
    double before, after;
    ck_assert_int_eq(dfm_sampler_get_double(s, opt, &before), 0);
    ck_assert_int_eq(dfm_sampler_set_double(s, opt, v), DFM_EINVAL);
    ck_assert_msg(strstr(dfm_sampler_last_error(s), msg) != NULL, "option %d = %g: '%s' lacks '%s'",
                  opt, v, dfm_sampler_last_error(s), msg);
    ck_assert_int_eq(dfm_sampler_get_double(s, opt, &after), 0);
    ck_assert(before == after);
}

static int rates_nan_stage2(const dfm_model_io *io, void *ud)
{
    int rc = rp_model(io, ud);
    if (io->t[0] > 0.3 && io->t[0] < 0.4) /* the second stage of step 1 of 4: rho = 0.375 */
        for (int y = 0; y < 3; y++) io->out[1 * io->out_stride + 3 + (size_t)y] = NAN;
    return rc;
}

static int no_inverse(double t, dfm_sched_values *v, void *ud)
{
    (void)ud;
    v->alpha = t; v->d_alpha = 1.0; v->sigma = 1.0 - t; v->d_sigma = -1.0;
    return 0;
}

START_TEST(bad_options_and_combinations)
{
    target T, U;
    target_init(&T, 3, DFM_SOURCE_MASK, DFM_SCHED_CONDOT);
    target_init(&U, 3, DFM_SOURCE_UNIFORM, DFM_SCHED_CONDOT);
    dfm_sampler *s = target_sampler(&T, DFM_PARAM_LOGITS, DFM_METHOD_EXACT);
    bad_i(s, DFM_OPT_DS_ORDER, -1, "order must be in [0, 3]");
    bad_i(s, DFM_OPT_DS_ORDER, 4, "order must be in [0, 3]");
    bad_i(s, DFM_OPT_DS_COUNT, 4, "count must be in [0, 3]");
    bad_i(s, DFM_OPT_DS_GREEDY, 2, "greedy unmasking must be in [0, 1]");
    bad_i(s, DFM_OPT_DS_REMASK, 7, "remasking must be in [0, 3]");
    bad_i(s, DFM_OPT_DS_BLOCK_LEN, -3, "block length must be >= 0");
    bad_i(s, DFM_OPT_DS_TOP_K, -1, "top-k must be >= 0");
    bad_i(s, DFM_OPT_DS_TIME_INDEPENDENT, 2, "time independence must be 0 or 1");
    const double nan = NAN;
    bad_d(s, DFM_OPT_DS_THRESHOLD, 0.0, "threshold must be in (0, 1]");
    bad_d(s, DFM_OPT_DS_THRESHOLD, 1.5, "threshold must be in (0, 1]");
    bad_d(s, DFM_OPT_DS_THRESHOLD, nan, "threshold must be in (0, 1]");
    bad_d(s, DFM_OPT_DS_TOP_P, 0.0, "top-p must be in (0, 1]");
    bad_d(s, DFM_OPT_DS_TOP_P, 1.01, "top-p must be in (0, 1]");
    bad_d(s, DFM_OPT_DS_MIN_P, -0.1, "min-p must be in [0, 1]");
    bad_d(s, DFM_OPT_DS_MIN_P, INFINITY, "min-p must be in [0, 1]");
    bad_d(s, DFM_OPT_DS_REMASK_ETA, 1.5, "remasking eta must be in [0, 1]");
    bad_d(s, DFM_OPT_DS_REMASK_ETA, nan, "remasking eta must be in [0, 1]");
    bad_d(s, DFM_OPT_DS_LOOP_START, 0.0, "loop start must be in (0, 1)");
    bad_d(s, DFM_OPT_DS_LOOP_END, 1.0, "loop end must be in (0, 1)");
    bad_d(s, DFM_OPT_DS_LOOP_KAPPA, 1.0, "loop kappa must be in (0, 1)");
    bad_d(s, DFM_OPT_DS_THETA, 0.5, "theta applies to DFM_METHOD_THETA_TRAPEZOIDAL only");
    set_d(s, DFM_OPT_DS_THRESHOLD, 1.0);
    set_d(s, DFM_OPT_DS_MIN_P, 1.0);
    set_d(s, DFM_OPT_DS_MIN_P, 0.0);
    /* combinations refused at run, tokens untouched */
    int32_t tok[6] = {3, 3, 3, 3, 3, 3}, keep[6];
    memcpy(keep, tok, sizeof tok);
    set_i(s, DFM_OPT_DS_ORDER, DFM_ORDER_ENTROPY);
    set_d(s, DFM_OPT_DS_ETA, 1.0);
    ck_assert_int_eq(run_tok(s, &T, tok, 2, 0, 0, NULL, NULL, NULL), DFM_EINVAL);
    ck_assert_ptr_nonnull(strstr(dfm_sampler_last_error(s), "cannot be combined with eta"));
    set_d(s, DFM_OPT_DS_ETA, 0.0);
    set_i(s, DFM_OPT_DS_REMASK, DFM_REMASK_CAP);
    ck_assert_int_eq(run_tok(s, &T, tok, 2, 0, 0, NULL, NULL, NULL), DFM_EINVAL);
    ck_assert_ptr_nonnull(strstr(dfm_sampler_last_error(s), "remasking needs the random order"));
    set_i(s, DFM_OPT_DS_ORDER, DFM_ORDER_RANDOM);
    set_i(s, DFM_OPT_DS_REMASK, DFM_REMASK_LOOP);
    set_d(s, DFM_OPT_DS_LOOP_START, 0.8);
    set_d(s, DFM_OPT_DS_LOOP_END, 0.6);
    ck_assert_int_eq(run_tok(s, &T, tok, 2, 0, 0, NULL, NULL, NULL), DFM_EINVAL);
    ck_assert_ptr_nonnull(strstr(dfm_sampler_last_error(s), "loop must start before it ends"));
    set_i(s, DFM_OPT_DS_REMASK, DFM_REMASK_NONE);
    set_i(s, DFM_OPT_DS_BLOCK_LEN, 1);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 2), 0);
    ck_assert_int_eq(run_tok(s, &T, tok, 2, 0, 0, NULL, NULL, NULL), DFM_EINVAL);
    ck_assert_ptr_nonnull(strstr(dfm_sampler_last_error(s), "at least one step per block"));
    ck_assert_mem_eq(tok, keep, sizeof tok);
    ck_assert_int_eq(dfm_sampler_set_steps(s, 3), 0);
    ck_assert_int_eq(run_tok(s, &T, tok, 2, 0, 0, NULL, NULL, NULL), 0);
    for (int j = 0; j < 6; j++) ck_assert(tok[j] >= 0 && tok[j] < 3);
    dfm_sampler_free(s);
    /* modes need the mask source, logits and the exact step */
    s = target_sampler(&U, DFM_PARAM_LOGITS, DFM_METHOD_EXACT);
    bad_i(s, DFM_OPT_DS_ORDER, DFM_ORDER_CONFIDENCE, "needs a mask source");
    bad_i(s, DFM_OPT_DS_REMASK, DFM_REMASK_CAP, "needs a mask source");
    bad_i(s, DFM_OPT_DS_BLOCK_LEN, 4, "needs a mask source");
    set_i(s, DFM_OPT_DS_TOP_K, 2); /* shaping applies to every source */
    dfm_sampler_free(s);
    s = target_sampler(&T, DFM_PARAM_LOGITS, DFM_METHOD_EULER);
    bad_i(s, DFM_OPT_DS_COUNT, DFM_COUNT_THRESHOLD, "needs posterior logits and DFM_METHOD_EXACT");
    bad_i(s, DFM_OPT_DS_GREEDY, 1, "needs posterior logits and DFM_METHOD_EXACT");
    dfm_sampler_free(s);
    s = target_sampler(&T, DFM_PARAM_RATES, DFM_METHOD_THETA_TRAPEZOIDAL);
    bad_i(s, DFM_OPT_DS_TOP_K, 3, "posterior-logit generators only");
    bad_d(s, DFM_OPT_DS_TOP_P, 0.5, "posterior-logit generators only");
    bad_d(s, DFM_OPT_DS_THETA, 1.0, "theta must be in (0, 1)");
    set_d(s, DFM_OPT_DS_THETA, 0.3);
    dfm_sampler_free(s);
    /* NaN rates in the second stage: the row and coordinate are named, tokens untouched */
    {
        rp_init();
        target R2;
        target_init(&R2, 2, DFM_SOURCE_UNIFORM, DFM_SCHED_CONDOT);
        dfm_sampler *sr = target_sampler(&R2, DFM_PARAM_RATES, DFM_METHOD_THETA_TRAPEZOIDAL);
        ck_assert_int_eq(dfm_sampler_set_steps(sr, 4), 0);
        int32_t t2[6] = {0, 1, 2, 0, 1, 2}, k2[6];
        memcpy(k2, t2, sizeof t2);
        ck_assert_int_eq(run_tok(sr, &R2, t2, 3, 0, 0, NULL, rates_nan_stage2, &R2), DFM_ENUMERIC);
        ck_assert_msg(strstr(dfm_sampler_last_error(sr), "[row 1][coord 1]") != NULL, "%s", dfm_sampler_last_error(sr));
        ck_assert_mem_eq(t2, k2, sizeof t2);
        dfm_sampler_free(sr);
        dfm_scheduler_free(R2.sched);
    }
    /* the loop needs kappa^-1: a custom scheduler without one is refused */
    {
        target C = T;
        ck_assert_int_eq(dfm_scheduler_create_custom(&C.sched, no_inverse, NULL, NULL, NULL), 0);
        dfm_sampler *sc = target_sampler(&C, DFM_PARAM_LOGITS, DFM_METHOD_EXACT);
        set_i(sc, DFM_OPT_DS_REMASK, DFM_REMASK_LOOP);
        ck_assert_int_eq(run_tok(sc, &C, tok, 2, 0, 1, NULL, NULL, NULL), DFM_EUNSUPPORTED);
        ck_assert_ptr_nonnull(strstr(dfm_sampler_last_error(sc), "kappa^-1"));
        set_i(sc, DFM_OPT_DS_REMASK, DFM_REMASK_CAP);
        ck_assert_int_eq(run_tok(sc, &C, tok, 2, 0, 1, NULL, NULL, NULL), 0);
        dfm_sampler_free(sc);
        dfm_scheduler_free(C.sched);
    }
    dfm_scheduler_free(T.sched);
    dfm_scheduler_free(U.sched);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("infer");
    TCase *tc = tu_tcase("unmasking");
    tcase_add_test(tc, random_order_one_per_step_is_exact);
    tcase_add_test(tc, random_order_exact_with_fixed_positions);
    tcase_add_test(tc, orders_deterministic_any_split);
    tcase_add_test(tc, orders_reveal_promised_counts);
    tcase_add_test(tc, shaping_every_sampler_d1);
    tcase_add_test(tc, shaping_uniform_source_d1);
    tcase_add_test(tc, shaping_support_matches_sort);
    tcase_add_test(tc, greedy_reveals_argmax);
    suite_add_tcase(su, tc);
    TCase *tr = tu_tcase("remasking_and_leaping");
    tcase_add_test(tr, remask_exact_laws_few_steps);
    tcase_add_test(tr, remask_correlated_many_steps);
    tcase_add_test(tr, leaping_orders_rates);
    tcase_add_test(tr, leaping_orders_logits);
    tcase_add_test(tr, leaping_correlated_target);
    suite_add_tcase(su, tr);
    TCase *tm = tu_tcase("calls_and_errors");
    tcase_add_test(tm, time_independent_model_calls);
    tcase_add_test(tm, step_callback_sees_and_stops);
    tcase_add_test(tm, bad_options_and_combinations);
    suite_add_tcase(su, tm);
    return tu_run(su) ? 1 : 0;
}
