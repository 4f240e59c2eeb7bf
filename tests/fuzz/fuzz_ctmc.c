/* libFuzzer harness: the rate-matrix module with real handles. dfm_ctmc_expm / kernel /
 * propagate / propagate_ode on arbitrary matrices (NaN, +-Inf, huge, subnormal, negative rates)
 * and horizons; kinetic rates and the Bregman divergence on fuzzed vectors; flatten / unflatten;
 * finite paths (a host p_t that may be invalid or fail) and metric paths (matrix or callback
 * distances, fuzzed c); cond_probs / cond_rates / path_sample; rate-matrix (state logits, direct
 * rates) and metric generators; EULER / UNIFORMIZATION / GILLESPIE runs with fuzzed options
 * (rate bound, safety, tmax, event limit, threads), grids, save times, fixed positions and a
 * model returning fuzzed logits / rates that may fail; the Bregman loss.
 * Invariants: documented statuses, messages, outputs unwritten on failure, stochastic kernels
 * (rows summing to 1, entries in [0, 1]) on success, flatten/unflatten round trips, generator
 * rows of kinetic rates summing to 0, valid tokens and kept fixed positions on success, the raw
 * value of a failing model, no leak. */
#include "fuzz_common_mod.h"

#define CAPT 4096

static double fz_rate(fz *in)
{
    uint8_t sel = fz_u8(in);
    if (sel % 8 == 0) return fz_double(in);
    return (double)(sel % 5) * 0.25 * (double)(1 + fz_below(in, 4));
}

static void fuzz_workspace(fz *in, dfm_allocator *mem)
{
    static double Q[64 * 64], K[64 * 64], p0[4 * 64], pt[4 * 64];
    size_t n = fz_u8(in) % 16 ? 1 + fz_below(in, 12) : fz_size(in, 64);
    dfm_ctmc *w = (dfm_ctmc *)in;
    int st = dfm_ctmc_create(&w, n, fz_u8(in) & 1 ? mem : NULL);
    FZ_STATUS_OK(st);
    if (st) {
        FZ_ASSERT(w == NULL);
        if (n >= 1 && n <= DFM_CTMC_MAX_STATES) FZ_ASSERT(st == DFM_ENOMEM);
        return;
    }
    FZ_ASSERT(n >= 1 && n <= DFM_CTMC_MAX_STATES);
    if (n > 64) { dfm_ctmc_free(w); return; }
    for (int op = 0; op < 4; op++) {
        for (size_t i = 0; i < n * n; i++) Q[i] = fz_rate(in);
        double h = fz_u8(in) % 8 ? (double)fz_below(in, 100) / 16.0 : fz_double(in);
        memset(K, 0xa5, sizeof K);
        int which = fz_u8(in) % 4;
        size_t m = fz_below(in, 4);
        for (size_t i = 0; i < m * n; i++) p0[i] = fz_u8(in) % 8 ? 1.0 / (double)n : fz_double(in);
        if (which == 0) st = dfm_ctmc_expm(w, Q, h, K);
        else if (which == 1) st = dfm_ctmc_kernel(w, Q, h, K);
        else if (which == 2) st = dfm_ctmc_propagate(w, p0, m, Q, h, K);
        else {
            fzm f;
            fzm_init(&f, in, 1);
            st = dfm_ctmc_kinetic_rates(p0, p0 + (m ? 0 : 0), m ? n : 0, K);
            FZ_STATUS_OK(st);
            double val = -1.0;
            memset(pt, 0xa5, sizeof pt);
            st = dfm_bregman_rates(Q, Q + n, n, &val, fz_u8(in) & 1 ? pt : NULL);
            FZ_STATUS_OK(st);
            if (st) FZ_ASSERT(val == -1.0 && ((uint64_t *)pt)[0] == 0xa5a5a5a5a5a5a5a5ull);
            else FZ_ASSERT(val >= -1e-9 * (1.0 + fabs(val)) && !isnan(val));
            (void)f;
            continue;
        }
        FZ_STATUS_OK(st);
        fzm_msg(dfm_ctmc_last_error(w), st);
        if (st) {
            FZ_ASSERT(((uint64_t *)K)[0] == 0xa5a5a5a5a5a5a5a5ull);
            continue;
        }
        size_t rows = which == 2 ? m : n;
        for (size_t i = 0; i < rows * n && which != 2; i++) FZ_ASSERT(isfinite(K[i]));
        if (which == 1) {
            for (size_t i = 0; i < n; i++) {
                double s = 0.0;
                for (size_t j = 0; j < n; j++) {
                    FZ_ASSERT(K[i * n + j] >= 0.0 && K[i * n + j] <= 1.0 + 1e-12);
                    s += K[i * n + j];
                }
                FZ_ASSERT(fabs(s - 1.0) < 1e-9);
            }
        }
    }
    dfm_ctmc_free(w);
}

typedef struct fzp { int fail, bad; } fzp;
static int fzp_cond(double t, int32_t x1, double *p, double *dp, size_t n, void *u)
{
    const fzp *c = (const fzp *)u;
    if (c->fail) return 11;
    double k = t * t, dk = 2.0 * t;
    for (size_t x = 0; x < n; x++) {
        p[x] = (1.0 - k) / (double)n + ((int32_t)x == x1 ? k : 0.0);
        dp[x] = -dk / (double)n + ((int32_t)x == x1 ? dk : 0.0);
    }
    if (c->bad == 1) p[0] = NAN;
    if (c->bad == 2) p[n - 1] = -0.5;
    if (c->bad == 3) dp[0] = INFINITY;
    return 0;
}
static int fzp_dist(int32_t x1, double *d, int32_t vocab, void *u)
{
    const fzp *c = (const fzp *)u;
    if (c->fail) return 12;
    for (int32_t x = 0; x < vocab; x++) d[x] = fabs((double)(x - x1)) * (c->bad == 4 ? -1.0 : 1.0);
    if (c->bad == 5) d[x1] = 0.5;
    return 0;
}

static void fuzz_sampler(fz *in, dfm_generator *g, size_t d, size_t V, dfm_allocator *mem)
{
    static int32_t tok[CAPT], copy[CAPT], saved[4 * CAPT];
    static uint8_t fixed[CAPT];
    static double grid[40], save[4];
    int method = fz_u8(in) % 8 ? (int)(fz_u8(in) % 3 == 0 ? DFM_METHOD_EULER : fz_u8(in) & 1 ? DFM_METHOD_UNIFORMIZATION : DFM_METHOD_GILLESPIE)
                               : fz_int(in, 0, 10);
    dfm_sampler *s = (dfm_sampler *)in;
    int st = dfm_sampler_create(&s, g, method, fz_u8(in) & 1 ? mem : NULL);
    FZ_STATUS_OK(st);
    if (st) {
        FZ_ASSERT(s == NULL);
        return;
    }
    /* bounded work: a fuzzed model is no posterior, rates near t = 1 may explode */
    FZ_ASSERT(dfm_sampler_set_int(s, DFM_OPT_CT_MAX_EVENTS, 2000) == 0);
    FZ_ASSERT(dfm_sampler_set_double(s, DFM_OPT_CT_TMAX, 0.9) == 0);
    for (int k = 0; k < 5; k++) {
        int what = fz_u8(in) % 8;
        if (what == 0) {
            uint8_t sel = fz_u8(in);
            size_t ns = sel % 8 ? 1 + fz_below(in, 20) : sel & 8 ? 0 : (size_t)INT32_MAX + 1;
            st = dfm_sampler_set_steps(s, ns);
            FZ_ASSERT((st == 0) == (ns >= 1 && ns <= 20));
        } else if (what == 1) st = dfm_sampler_set_double(s, DFM_OPT_CT_RATE_BOUND, fz_double(in));
        else if (what == 2) st = dfm_sampler_set_double(s, DFM_OPT_CT_BOUND_SAFETY, fz_double(in));
        else if (what == 3) {
            double tm = fz_double(in);
            st = dfm_sampler_set_double(s, DFM_OPT_CT_TMAX, tm);
            if (st == 0) FZ_ASSERT(tm > 0.0 && tm <= 1.0);
            if (st == 0 && tm > 0.9) dfm_sampler_set_double(s, DFM_OPT_CT_TMAX, 0.9);
        } else if (what == 4) {
            int64_t ev = fz_u8(in) % 4 ? 1 + (int64_t)fz_below(in, 2000) : (int64_t)fz_int(in, -1, 3);
            st = dfm_sampler_set_int(s, DFM_OPT_CT_MAX_EVENTS, ev);
            if (st == 0) FZ_ASSERT(ev >= 1);
        } else if (what == 5) st = dfm_sampler_set_int(s, DFM_OPT_THREADS, 1 + (int)fz_below(in, 3));
        else if (what == 6) {
            size_t n = 2 + fz_below(in, 38);
            for (size_t i = 0; i < n; i++) grid[i] = fz_u8(in) % 16 ? (double)i / (double)(n - 1) : fz_time(in);
            st = dfm_sampler_set_grid(s, grid, n);
        } else st = dfm_sampler_set_int(s, DFM_OPT_SEED, (int64_t)fz_u64(in));
        FZ_STATUS_OK(st);
        fzm_msg(dfm_sampler_last_error(s), st);
    }
    size_t rows = fz_below(in, 17);
    if (rows * d > CAPT) rows = CAPT / d;
    size_t n = rows * d;
    for (size_t i = 0; i < n; i++) {
        tok[i] = fz_u8(in) % 16 ? (int32_t)fz_below(in, V) : fz_int(in, -1, (int)V);
        fixed[i] = fz_u8(in) % 4 == 0;
    }
    memcpy(copy, tok, n * sizeof(int32_t));
    size_t n_save = fz_below(in, 4);
    for (size_t k = 0; k < n_save; k++) save[k] = fz_u8(in) % 4 ? (k + 1) / 4.0 : fz_time(in);
    memset(saved, 0xa5, n_save * n * sizeof(int32_t));
    fzm m;
    fzm_init(&m, in, dfm_generator_parameterization(g) == DFM_PARAM_RATES);
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = fzm_model; a.model_data = &m;
    a.rows = rows; a.row_offset = fz_below(in, 1000);
    a.tokens = tok; a.draw_source = fz_u8(in) & 1;
    int use_fixed = fz_u8(in) & 1;
    a.fixed = use_fixed ? fixed : NULL;
    a.save_times = save; a.n_save = n_save; a.saved_tokens = saved;
    if (fz_u8(in) & 1) { a.progress = fzm_progress; a.progress_data = &m; }
    st = dfm_sampler_run(s, &a);
    fzm_check_run(&m, st, dfm_sampler_callback_status(s));
    fzm_msg(dfm_sampler_last_error(s), st);
    if (st) {
        FZ_ASSERT(memcmp(tok, copy, n * sizeof(int32_t)) == 0);
        for (size_t i = 0; i < n_save * n; i++) FZ_ASSERT(saved[i] == (int32_t)0xa5a5a5a5);
    } else {
        for (size_t i = 0; i < n; i++) {
            FZ_ASSERT(tok[i] >= 0 && tok[i] < (int32_t)V);
            if (use_fixed && fixed[i]) FZ_ASSERT(tok[i] == copy[i]);
        }
    }
    dfm_sampler_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz in;
    fz_init(&in, data, size);
    in.fail_mask = fz_u8(&in) < 32 ? fz_u64(&in) : 0;
    dfm_allocator mem = fz_allocator(&in);
    dfm_space *sp = NULL;
    dfm_scheduler *sc = NULL;
    dfm_path *p = NULL;
    dfm_generator *g = NULL;
    dfm_loss *l = NULL;
    fzs cs = {1.0, 0};
    fzp cp = {0, 0};
    fuzz_workspace(&in, &mem);
    size_t V = fz_u8(&in) % 16 ? 2 + fz_below(&in, 5) : 1 + fz_below(&in, 70);
    size_t d = fz_u8(&in) % 16 ? 1 + fz_below(&in, 3) : fz_size(&in, 8);
    if (dfm_space_create_discrete(&sp, (int32_t)V, d, NULL)) goto out;
    size_t S = 0;
    int st = dfm_ctmc_n_states(sp, &S);
    FZ_STATUS_OK(st);
    /* flatten / unflatten */
    if (st == 0) {
        static int32_t tk[CAPT], fl[CAPT / 2], back[CAPT];
        size_t rows = fz_below(&in, 16);
        if (rows * d > CAPT) rows = CAPT / d;
        for (size_t i = 0; i < rows * d; i++) tk[i] = fz_u8(&in) % 16 ? (int32_t)fz_below(&in, V) : fz_int(&in, -1, (int)V);
        memset(fl, 0xa5, sizeof fl);
        st = dfm_ctmc_flatten(sp, tk, rows, fl);
        FZ_STATUS_OK(st);
        if (st) FZ_ASSERT(fl[0] == (int32_t)0xa5a5a5a5);
        else {
            st = dfm_ctmc_unflatten(sp, fl, rows, back);
            FZ_ASSERT(st == 0 && memcmp(tk, back, rows * d * sizeof(int32_t)) == 0);
            for (size_t r = 0; r < rows; r++) FZ_ASSERT(fl[r] >= 0 && (size_t)fl[r] < S);
        }
    }
    int metric = fz_u8(&in) & 1;
    cp.fail = fz_u8(&in) % 16 == 0;
    cp.bad = fz_u8(&in) % 8 == 0 ? 1 + (int)fz_below(&in, 5) : 0;
    p = (dfm_path *)&in;
    if (metric) {
        if (fz_scheduler(&in, &sc, &cs)) { p = NULL; goto out; }
        static double dist[70 * 70];
        for (size_t x = 0; x < V; x++)
            for (size_t y = 0; y < V; y++)
                dist[x * V + y] = fz_u8(&in) % 16 ? fabs((double)x - (double)y) : fz_double(&in);
        int by_fn = fz_u8(&in) & 1;
        double c = fz_u8(&in) % 8 ? 0.5 + fz_below(&in, 4) : fz_double(&in);
        st = dfm_path_create_metric(&p, sp, sc, c, by_fn ? NULL : dist, by_fn ? fzp_dist : NULL, &cp,
                                    fz_u8(&in) & 1 ? &mem : NULL);
    } else {
        st = dfm_path_create_finite(&p, sp, fzp_cond, &cp, fz_u8(&in) & 1 ? &mem : NULL);
    }
    FZ_STATUS_OK(st);
    if (st) {
        FZ_ASSERT(p == NULL);
        goto out;
    }
    size_t n = metric ? V : S;
    /* conditional probabilities and rates */
    if (n <= 64) {
        static double pr[64 * 64];
        double t = fz_time(&in);
        int32_t x1 = fz_u8(&in) % 16 ? (int32_t)fz_below(&in, n) : fz_int(&in, -1, (int)n);
        memset(pr, 0xa5, sizeof pr);
        st = dfm_path_cond_probs(p, t, x1, pr);
        FZ_STATUS_OK(st);
        fzm_msg(dfm_path_last_error(p), st);
        if (st) FZ_ASSERT(((uint64_t *)pr)[0] == 0xa5a5a5a5a5a5a5a5ull);
        else {
            double s = 0.0;
            for (size_t x = 0; x < n; x++) { FZ_ASSERT(pr[x] >= 0.0 && pr[x] <= 1.0 + 1e-12); s += pr[x]; }
            FZ_ASSERT(fabs(s - 1.0) < 1e-6);
        }
        memset(pr, 0xa5, sizeof pr);
        st = dfm_path_cond_rates(p, t, x1, pr);
        FZ_STATUS_OK(st);
        fzm_msg(dfm_path_last_error(p), st);
        if (st) FZ_ASSERT(((uint64_t *)pr)[0] == 0xa5a5a5a5a5a5a5a5ull);
        else {
            for (size_t x = 0; x < n; x++) {
                double s = 0.0, sc_ = 0.0;
                for (size_t y = 0; y < n; y++) {
                    double q = pr[x * n + y];
                    if (!isfinite(q) && getenv("FZ_DEBUG")) {
                        const dfm_scheduler *sch = dfm_path_scheduler(p);
                        dfm_sched_values sv = {0, 0, 0, 0};
                        if (sch) dfm_scheduler_eval(sch, t, &sv, NULL);
                        fprintf(stderr, "metric %d kind %d t %.17g x1 %d n %zu x %zu y %zu q %g a %.17g da %.17g bad %d\n", metric,
                                sch ? dfm_scheduler_kind(sch) : -1, t, x1, n, x, y, q, sv.alpha, sv.d_alpha, cp.bad);
                    }
                    FZ_ASSERT(isfinite(q));
                    if (x != y) FZ_ASSERT(q >= 0.0);
                    s += q; sc_ += fabs(q);
                }
                FZ_ASSERT(fabs(s) <= 1e-9 * sc_ + 1e-300);
            }
        }
    }
    /* path sample */
    {
        static int32_t x1[CAPT], xt[CAPT];
        static double t[32];
        size_t rows = fz_below(&in, 32);
        if (rows * d > CAPT) rows = CAPT / d;
        for (size_t r = 0; r < rows; r++) t[r] = fz_time(&in);
        for (size_t i = 0; i < rows * d; i++) x1[i] = fz_u8(&in) % 16 ? (int32_t)fz_below(&in, V) : fz_int(&in, -1, (int)V);
        memset(xt, 0xa5, sizeof xt);
        dfm_path_set_int(p, DFM_OPT_THREADS, 1 + (int)fz_below(&in, 3));
        dfm_path_sample_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.rows = rows; a.t = t; a.x1_tokens = x1; a.xt_tokens = xt; a.draw = fz_u32(&in);
        st = dfm_path_sample(p, &a);
        FZ_STATUS_OK(st);
        fzm_msg(dfm_path_last_error(p), st);
        if (st) FZ_ASSERT(xt[0] == (int32_t)0xa5a5a5a5);
        else for (size_t i = 0; i < rows * d; i++) FZ_ASSERT(xt[i] >= 0 && xt[i] < (int32_t)V);
    }
    /* generators */
    int gk = fz_u8(&in) % 4;
    g = (dfm_generator *)&in;
    if (gk == 3 && metric) st = dfm_generator_create_metric(&g, p, fz_u8(&in) & 1 ? &mem : NULL);
    else st = dfm_generator_create_rate_matrix(&g, gk == 2 ? NULL : p, gk == 2 ? sp : NULL,
                                               gk == 1 || gk == 2 ? DFM_PARAM_RATES : fz_u8(&in) % 8 ? DFM_PARAM_STATE_LOGITS : fz_int(&in, 0, 9),
                                               fz_u8(&in) & 1 ? &mem : NULL);
    FZ_STATUS_OK(st);
    if (st) {
        FZ_ASSERT(g == NULL);
        goto out;
    }
    if (dfm_generator_out_stride(g) * 16 <= CAPT) fuzz_sampler(&in, g, d, V, &mem);
    /* Bregman loss on direct rates with a path */
    if (gk == 1 && S <= 64) {
        l = (dfm_loss *)&in;
        st = dfm_loss_create_bregman_rates(&l, g, fz_u8(&in) & 1 ? &mem : NULL);
        FZ_STATUS_OK(st);
        if (st) FZ_ASSERT(l == NULL);
        else {
            static float out[16 * 64], grad[16 * 64];
            static int32_t x1[16 * 8], xt[16 * 8];
            static double t[16];
            size_t rows = fz_below(&in, 16);
            if (rows * d > 128) rows = 128 / d;
            for (size_t r = 0; r < rows; r++) t[r] = fz_time(&in);
            for (size_t i = 0; i < rows * d; i++) {
                x1[i] = (int32_t)fz_below(&in, V);
                xt[i] = fz_u8(&in) % 16 ? (int32_t)fz_below(&in, V) : fz_int(&in, -1, (int)V);
            }
            for (size_t i = 0; i < rows * S; i++) out[i] = fz_u8(&in) % 8 ? (float)(1 + fz_below(&in, 8)) / 4.0f : fz_logit(&in);
            memset(grad, 0xa5, sizeof grad);
            dfm_loss_set_int(l, DFM_OPT_THREADS, 1 + (int)fz_below(&in, 3));
            dfm_loss_set_int(l, DFM_OPT_REDUCTION, fz_int(&in, 0, 2));
            double loss = -123.0, values[16 * 8];
            dfm_loss_args a;
            memset(&a, 0, sizeof a);
            a.struct_size = sizeof a;
            a.rows = rows; a.t = t; a.x1_tokens = x1; a.xt_tokens = xt; a.out = out;
            a.grad = fz_u8(&in) & 1 ? grad : NULL; a.values = values; a.loss = &loss;
            st = dfm_loss_eval(l, &a);
            FZ_STATUS_OK(st);
            fzm_msg(dfm_loss_last_error(l), st);
            if (st) FZ_ASSERT(loss == -123.0 && ((uint32_t *)grad)[0] == 0xa5a5a5a5u);
            else FZ_ASSERT(!isnan(loss));
        }
    }
    {
        dfm_generator *c = (dfm_generator *)&in;
        st = dfm_generator_clone(&c, g, &mem);
        if (st) FZ_ASSERT(c == NULL && st == DFM_ENOMEM);
        dfm_generator_free(c);
    }
out:
    dfm_loss_free(l);
    dfm_generator_free(g);
    dfm_path_free(p);
    dfm_scheduler_free(sc);
    dfm_space_free(sp);
    FZ_ASSERT(in.live == 0);
    return 0;
}
