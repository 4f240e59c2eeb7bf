/* libFuzzer harness: the discrete module with real handles. Mixture paths of every source over
 * arbitrary vocabularies / lengths / mask tokens / p0 vectors and every scheduler kind;
 * dfm_path_sample; factorized generators (logits, rates); dfm_mixture_rates; EXACT, EULER,
 * TAU_LEAPING and THETA_TRAPEZOIDAL samplers with fuzzed options (temperature, corrector, eta,
 * purity, threads, unmasking orders / counts / blocks / threshold / greedy, top-k / top-p / min-p,
 * remasking schedules, theta, time independence) and a step callback that may stop, grids, save times,
 * fixed positions and a model returning fuzzed logits / rates (NaN, +-Inf, huge, subnormal) that
 * may fail; a progress callback that may stop; the generalized-KL and cross-entropy losses, the
 * ELBO and dfm_time_sample. An allocator fails where the input says.
 * Invariants: documented statuses, messages on failure, outputs unwritten on failure, inputs
 * never modified, valid tokens and fixed positions kept on success, rows of marginal rates
 * summing to 0 with nonnegative off-diagonal entries, the raw value of a failing model, no leak. */
#include "fuzz_common_mod.h"

#define CAP 4096 /* floats of model output per call at most */

static void fuzz_rates_helper(fz *in, dfm_generator *g, size_t d, size_t V)
{
    static float logits[CAP], rates[CAP], copy[CAP];
    static int32_t tok[CAP];
    static double t[64];
    size_t rows = fz_below(in, 8);
    if (rows * d * V > CAP) rows = CAP / (d * V);
    for (size_t r = 0; r < rows; r++) t[r] = fz_time(in);
    for (size_t i = 0; i < rows * d; i++) tok[i] = fz_u8(in) % 8 ? (int32_t)fz_below(in, V) : fz_int(in, -1, (int)V);
    fzm m;
    fzm_init(&m, in, 0);
    for (size_t i = 0; i < rows * d * V; i++) logits[i] = m.pool[(i * 5 + (size_t)fz_u8(in)) % FZM_POOL];
    memset(rates, 0xa5, sizeof rates);
    memcpy(copy, rates, sizeof rates);
    int st = dfm_mixture_rates(g, rows, t, tok, logits, rates);
    FZ_STATUS_OK(st);
    fzm_msg(dfm_generator_last_error(g), st);
    if (st) {
        FZ_ASSERT(memcmp(rates, copy, sizeof rates) == 0);
        return;
    }
    for (size_t k = 0; k < rows * d; k++) {
        double sum = 0.0, scale = 0.0;
        for (size_t y = 0; y < V; y++) {
            float v = rates[k * V + y];
            if (!isfinite(v) && getenv("FZ_DEBUG")) {
                const dfm_scheduler *sch = dfm_path_scheduler(dfm_generator_path(g));
                dfm_sched_values sv; dfm_scheduler_eval(sch, t[k / d], &sv, NULL);
                fprintf(stderr, "sched kind %d t %.17g alpha %.17g dalpha %.17g tok %d V %zu\n", dfm_scheduler_kind(sch), t[k / d], sv.alpha, sv.d_alpha, tok[k], V);
                for (size_t yy = 0; yy < V; yy++) fprintf(stderr, "  y %zu logit %g rate %g\n", yy, logits[k * V + yy], rates[k * V + yy]);
            }
            FZ_ASSERT(isfinite(v));
            if ((int32_t)y != tok[k]) FZ_ASSERT(v >= 0.0f);
            sum += v;
            scale += fabs(v);
        }
        FZ_ASSERT(fabs(sum) <= 1e-4 * scale + 1e-30);
    }
}

/* The step callback: a consistent view of valid tokens, fixed positions kept; may stop. */
typedef struct fzs_step { size_t rows, d, V; const int32_t *entry; const uint8_t *fixed; int stop_at, seen; } fzs_step;
static int fz_step_cb(const dfm_step_view *v, void *ud)
{
    fzs_step *c = (fzs_step *)ud;
    FZ_ASSERT(v->struct_size == sizeof *v && v->rows == c->rows && v->n_tokens == c->d);
    FZ_ASSERT(v->step == c->seen && v->t >= 0.0 && v->t <= 1.0 && v->changed >= 0);
    for (size_t j = 0; j < c->rows * c->d; j++) {
        FZ_ASSERT(v->tokens[j] >= 0 && v->tokens[j] < (int32_t)c->V);
        if (c->fixed && c->fixed[j]) FZ_ASSERT(v->tokens[j] == c->entry[j]);
    }
    return ++c->seen == c->stop_at ? 5 : 0;
}

/* The inference options of docs/discrete.md, any value: documented statuses and a message on
 * every failure. Returns the status of the last call. */
static int fz_opt_checked(dfm_sampler *s, int st)
{
    FZ_STATUS_OK(st);
    fzm_msg(dfm_sampler_last_error(s), st);
    return st;
}

static double fz_unit(fz *in)
{
    return fz_u8(in) & 1 ? fz_double(in) : fz_u8(in) / 255.0;
}

static int fuzz_infer_option(fz *in, dfm_sampler *s, int what, size_t V)
{
    switch (what) {
    case 8: return dfm_sampler_set_int(s, DFM_OPT_DS_ORDER, fz_int(in, -1, 4));
    case 9: return dfm_sampler_set_int(s, DFM_OPT_DS_COUNT, fz_int(in, -1, 4));
    case 10: return dfm_sampler_set_int(s, DFM_OPT_DS_BLOCK_LEN, fz_int(in, -1, 8));
    case 11: return dfm_sampler_set_double(s, DFM_OPT_DS_THRESHOLD, fz_double(in));
    case 12: return dfm_sampler_set_int(s, DFM_OPT_DS_GREEDY, fz_int(in, -1, 2));
    case 13:
        fz_opt_checked(s, dfm_sampler_set_int(s, DFM_OPT_DS_TOP_K, fz_int(in, -1, (int)V + 1)));
        fz_opt_checked(s, dfm_sampler_set_double(s, DFM_OPT_DS_TOP_P, fz_unit(in)));
        return dfm_sampler_set_double(s, DFM_OPT_DS_MIN_P, fz_unit(in));
    case 14: {
        const int ids[3] = {DFM_OPT_DS_REMASK_ETA, DFM_OPT_DS_LOOP_START, DFM_OPT_DS_LOOP_END};
        fz_opt_checked(s, dfm_sampler_set_int(s, DFM_OPT_DS_REMASK, fz_int(in, -1, 4)));
        for (int k = 0; k < 3; k++) fz_opt_checked(s, dfm_sampler_set_double(s, ids[k], fz_unit(in)));
        return dfm_sampler_set_double(s, DFM_OPT_DS_LOOP_KAPPA, fz_unit(in));
    }
    default: {
        fz_opt_checked(s, dfm_sampler_set_double(s, DFM_OPT_DS_THETA, fz_unit(in)));
        int v = fz_int(in, -1, 2), st = dfm_sampler_set_int(s, DFM_OPT_DS_TIME_INDEPENDENT, v);
        FZ_ASSERT((st == 0) == (v == 0 || v == 1));
        return st;
    }
    }
}

static void fuzz_sampler(fz *in, dfm_generator *g, size_t d, size_t V, int source, dfm_allocator *mem)
{
    static int32_t tok[CAP], copy[CAP], saved[4 * CAP];
    static uint8_t fixed[CAP];
    static double grid[70], save[4];
    static const int methods[4] = {DFM_METHOD_EXACT, DFM_METHOD_EULER, DFM_METHOD_TAU_LEAPING,
                                   DFM_METHOD_THETA_TRAPEZOIDAL};
    int method = fz_u8(in) % 8 ? methods[fz_u8(in) % 4] : fz_int(in, 0, 11);
    dfm_sampler *s = (dfm_sampler *)in;
    int st = dfm_sampler_create(&s, g, method, fz_u8(in) & 1 ? mem : NULL);
    FZ_STATUS_OK(st);
    if (st) {
        FZ_ASSERT(s == NULL);
        return;
    }
    for (int k = 0; k < 10; k++) {
        int what = fz_u8(in) % 16;
        if (what == 0) {
            /* small, or invalid (0, > INT32_MAX): a huge valid count is only slow */
            uint8_t sel = fz_u8(in);
            size_t ns = sel % 8 ? 1 + fz_below(in, 40) : sel & 8 ? 0 : (size_t)INT32_MAX + 1 + fz_below(in, 9);
            st = dfm_sampler_set_steps(s, ns);
            FZ_ASSERT((st == 0) == (ns >= 1 && ns <= 40));
        }
        else if (what == 1) st = dfm_sampler_set_double(s, DFM_OPT_DS_TEMPERATURE, fz_double(in));
        else if (what == 2) st = dfm_sampler_set_double(s, DFM_OPT_DS_CORRECTOR, fz_double(in));
        else if (what == 3) st = dfm_sampler_set_double(s, DFM_OPT_DS_ETA, fz_double(in));
        else if (what == 4) st = dfm_sampler_set_int(s, DFM_OPT_DS_PURITY, fz_int(in, -1, 2));
        else if (what == 5) {
            st = dfm_sampler_set_int(s, DFM_OPT_THREADS, 1 + (int)fz_below(in, 3));
            /* rows per model call: any int (below DFM_CHUNK_AUTO is an error) */
            int ch = fz_int(in, -2, 40);
            int cs = dfm_sampler_set_int(s, DFM_OPT_DS_CHUNK_ROWS, ch);
            FZ_ASSERT((cs == 0) == (ch >= DFM_CHUNK_AUTO) || cs == DFM_EUNSUPPORTED);
        }
        else if (what == 6) {
            size_t n = 2 + fz_below(in, 68);
            for (size_t i = 0; i < n; i++) grid[i] = fz_u8(in) % 16 ? (double)i / (double)(n - 1) : fz_time(in);
            st = dfm_sampler_set_grid(s, grid, n);
        } else if (what == 7) st = dfm_sampler_set_int(s, DFM_OPT_SEED, (int64_t)fz_u64(in));
        else st = fuzz_infer_option(in, s, what, V);
        FZ_STATUS_OK(st);
        fzm_msg(dfm_sampler_last_error(s), st);
    }
    size_t rows = fz_below(in, 33);
    if (rows * d * V > CAP || rows * d > CAP) rows = CAP / (d * V);
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
    a.rows = rows; a.row_offset = fz_u8(in) & 1 ? fz_u64(in) : fz_below(in, 100);
    a.tokens = tok; a.draw_source = fz_u8(in) & 1;
    int use_fixed = fz_u8(in) & 1;
    a.fixed = use_fixed ? fixed : NULL;
    a.save_times = save; a.n_save = n_save; a.saved_tokens = saved;
    if (fz_u8(in) & 1) { a.progress = fzm_progress; a.progress_data = &m; }
    fzs_step sc = {rows, d, V, copy, use_fixed ? fixed : NULL, fz_u8(in) % 4 ? -1 : fz_int(in, 1, 8), 0};
    int use_step = fz_u8(in) & 1;
    FZ_ASSERT(dfm_sampler_set_step_callback(s, use_step ? fz_step_cb : NULL, &sc) == 0);
    st = dfm_sampler_run(s, &a);
    if (use_step && st == DFM_ESTOPPED && sc.seen == sc.stop_at) FZ_ASSERT(dfm_sampler_callback_status(s) == 5);
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
        for (size_t i = 0; i < n_save * n; i++) FZ_ASSERT(saved[i] >= 0 && saved[i] < (int32_t)V);
        int64_t v;
        FZ_ASSERT(dfm_sampler_get_stat(s, DFM_STAT_MODEL_CALLS, &v) == 0 && v == m.calls);
        int64_t steps_done;
        FZ_ASSERT(dfm_sampler_get_stat(s, DFM_STAT_STEPS, &steps_done) == 0);
        if (use_step) FZ_ASSERT(sc.seen == steps_done);
    }
    (void)source;
    dfm_sampler_free(s);
}

static void fuzz_losses(fz *in, const dfm_path *p, size_t d, size_t V, dfm_allocator *mem)
{
    static float out[CAP], grad[CAP];
    static int32_t x1[CAP], xt[CAP];
    static uint8_t fixed[CAP];
    static double t[64], values[CAP], nelbo[64], se[64];
    dfm_loss *l = (dfm_loss *)in;
    int kind = fz_u8(in) % 3;
    int st = kind == 0 ? dfm_loss_create_generalized_kl(&l, p, fz_u8(in) & 1 ? mem : NULL)
                       : dfm_loss_create_cross_entropy(&l, p, kind == 2, fz_u8(in) & 1 ? mem : NULL);
    FZ_STATUS_OK(st);
    if (st) {
        FZ_ASSERT(l == NULL);
        return;
    }
    int red = fz_int(in, 0, 2);
    st = dfm_loss_set_int(l, DFM_OPT_REDUCTION, red);
    FZ_ASSERT((st == 0) == (red >= 0 && red <= 2));
    dfm_loss_set_int(l, DFM_OPT_THREADS, 1 + (int)fz_below(in, 3));
    size_t rows = fz_below(in, 17);
    if (rows * d * V > CAP) rows = CAP / (d * V);
    size_t n = rows * d;
    for (size_t r = 0; r < rows; r++) t[r] = fz_time(in);
    for (size_t i = 0; i < n; i++) {
        x1[i] = fz_u8(in) % 16 ? (int32_t)fz_below(in, V) : fz_int(in, -1, (int)V);
        xt[i] = fz_u8(in) % 16 ? (int32_t)fz_below(in, V) : fz_int(in, -1, (int)V);
        fixed[i] = fz_u8(in) % 4 == 0;
    }
    fzm m;
    fzm_init(&m, in, 0);
    for (size_t i = 0; i < n * V; i++) out[i] = m.pool[(i * 3 + (size_t)fz_u8(in)) % FZM_POOL];
    memset(grad, 0xa5, sizeof grad);
    memset(values, 0xa5, sizeof values);
    double loss = -123.0;
    dfm_loss_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.rows = rows; a.t = t; a.x1_tokens = x1; a.xt_tokens = fz_u8(in) % 8 ? xt : NULL;
    a.fixed = fz_u8(in) & 1 ? fixed : NULL; a.out = out;
    a.grad = fz_u8(in) & 1 ? grad : NULL; a.values = values; a.loss = &loss;
    st = dfm_loss_eval(l, &a);
    FZ_STATUS_OK(st);
    fzm_msg(dfm_loss_last_error(l), st);
    if (st) {
        FZ_ASSERT(loss == -123.0);
        for (size_t i = 0; i < CAP; i++) FZ_ASSERT(((uint32_t *)grad)[i] == 0xa5a5a5a5u);
    } else {
        FZ_ASSERT(!isnan(loss));
        if (a.grad) for (size_t i = 0; i < n * V; i++) FZ_ASSERT(!isnan(grad[i]));
    }
    if (kind == 0) {
        fzm_init(&m, in, 0);
        size_t er = fz_below(in, 9);
        if (er * d * V > CAP) er = CAP / (d * V);
        memset(nelbo, 0xa5, sizeof nelbo);
        memset(se, 0xa5, sizeof se);
        dfm_elbo_args e;
        memset(&e, 0, sizeof e);
        e.struct_size = sizeof e;
        e.rows = er; e.row_offset = fz_below(in, 1000); e.draw = fz_u32(in);
        e.x1_tokens = x1; e.fixed = fz_u8(in) & 1 ? fixed : NULL;
        /* n_t: small, 0, or beyond the documented n_t x d < 2^32 (a huge valid n_t is only
         * slow) */
        uint8_t sel = fz_u8(in);
        e.n_t = sel % 8 ? 1 + fz_below(in, 4) : sel & 8 ? 0 : ((size_t)1 << 32) + fz_below(in, 9);
        e.chunk_rows = fz_below(in, 5);
        e.model = fzm_model; e.user_data = &m; e.nelbo = nelbo; e.std_error = se;
        st = dfm_loss_discrete_elbo(l, &e);
        fzm_check_run(&m, st, dfm_loss_callback_status(l));
        fzm_msg(dfm_loss_last_error(l), st);
        if (e.n_t > UINT32_MAX && er) FZ_ASSERT(st != 0);
        if (st) for (size_t r = 0; r < 64; r++) FZ_ASSERT(((uint64_t *)nelbo)[r] == 0xa5a5a5a5a5a5a5a5ull);
        else for (size_t r = 0; r < er; r++) FZ_ASSERT(!isnan(nelbo[r]) || e.n_t < 2);
    }
    dfm_loss *c = (dfm_loss *)in;
    st = dfm_loss_clone(&c, l, mem);
    if (st) FZ_ASSERT(c == NULL && st == DFM_ENOMEM);
    dfm_loss_free(c);
    dfm_loss_free(l);
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
    fzs cs = {1.0, 0};
    size_t V = fz_u8(&in) % 16 ? 2 + fz_below(&in, 30) : 1 + fz_below(&in, 3000);
    size_t d = fz_u8(&in) % 16 ? 1 + fz_below(&in, 6) : fz_size(&in, 64);
    if (dfm_space_create_discrete(&sp, (int32_t)V, d, NULL)) goto out;
    if (d * V > CAP) goto out;
    if (fz_scheduler(&in, &sc, &cs)) goto out;

    /* time sampler */
    {
        static double tt[64];
        memset(tt, 0xa5, sizeof tt);
        size_t rows = fz_below(&in, 64);
        double eps = fz_u8(&in) & 1 ? fz_double(&in) : 1e-3;
        int kind = fz_int(&in, 0, 2);
        int st = dfm_time_sample(fz_u64(&in), fz_u32(&in), kind, fz_double(&in), fz_double(&in), eps,
                                 fz_u64(&in), rows, tt);
        FZ_STATUS_OK(st);
        if (st) FZ_ASSERT(((uint64_t *)tt)[0] == 0xa5a5a5a5a5a5a5a5ull);
        else for (size_t r = 0; r < rows; r++) FZ_ASSERT(tt[r] >= 0.0 && tt[r] <= 1.0 - eps);
    }

    int source = fz_u8(&in) % 16 ? 1 + (int)fz_below(&in, 3) : fz_int(&in, -1, 5);
    int32_t mask = fz_u8(&in) % 8 ? (int32_t)V - 1 : fz_int(&in, -1, (int)V);
    static double p0[3000];
    double z = 0.0;
    for (size_t j = 0; j < V; j++) { p0[j] = fz_u8(&in) % 8 ? (double)(1 + fz_below(&in, 9)) : fz_double(&in); z += p0[j]; }
    if (fz_u8(&in) % 4 && z > 0.0 && isfinite(z)) for (size_t j = 0; j < V; j++) p0[j] /= z;
    p = (dfm_path *)&in;
    int st = dfm_path_create_mixture(&p, sp, sc, source, mask, fz_u8(&in) % 16 ? p0 : NULL,
                                     fz_u8(&in) & 1 ? &mem : NULL);
    FZ_STATUS_OK(st);
    if (st) {
        FZ_ASSERT(p == NULL);
        goto out;
    }
    FZ_ASSERT(dfm_path_kind(p) == DFM_PATH_MIXTURE);

    /* dfm_path_sample */
    {
        static int32_t x1[CAP], x0[CAP], xt[CAP], x1c[CAP];
        static double t[64];
        size_t rows = fz_below(&in, 64);
        if (rows * d > CAP) rows = CAP / d;
        size_t n = rows * d;
        for (size_t r = 0; r < rows; r++) t[r] = fz_time(&in);
        for (size_t i = 0; i < n; i++) {
            x1[i] = fz_u8(&in) % 16 ? (int32_t)fz_below(&in, V) : fz_int(&in, -1, (int)V);
            x0[i] = fz_u8(&in) % 16 ? (int32_t)fz_below(&in, V) : fz_int(&in, -1, (int)V);
        }
        memcpy(x1c, x1, n * sizeof(int32_t));
        memset(xt, 0xa5, n * sizeof(int32_t));
        dfm_path_set_int(p, DFM_OPT_THREADS, 1 + (int)fz_below(&in, 3));
        dfm_path_sample_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.rows = rows; a.row_offset = fz_u64(&in); a.draw = fz_u32(&in); a.t = t;
        a.x1_tokens = x1; a.x0_tokens = fz_u8(&in) & 1 ? x0 : NULL; a.xt_tokens = xt;
        st = dfm_path_sample(p, &a);
        FZ_STATUS_OK(st);
        fzm_msg(dfm_path_last_error(p), st);
        FZ_ASSERT(memcmp(x1, x1c, n * sizeof(int32_t)) == 0);
        if (st) {
            for (size_t i = 0; i < n; i++) FZ_ASSERT(xt[i] == (int32_t)0xa5a5a5a5);
        } else {
            for (size_t i = 0; i < n; i++) {
                FZ_ASSERT(xt[i] >= 0 && xt[i] < (int32_t)V);
                if (a.x0_tokens) FZ_ASSERT(xt[i] == x1[i] || xt[i] == x0[i]);
            }
        }
    }

    int param = fz_u8(&in) % 8 ? (fz_u8(&in) & 1 ? DFM_PARAM_LOGITS : DFM_PARAM_RATES) : fz_int(&in, 0, 9);
    g = (dfm_generator *)&in;
    st = dfm_generator_create_factorized(&g, p, param, fz_u8(&in) & 1 ? &mem : NULL);
    FZ_STATUS_OK(st);
    if (st) {
        FZ_ASSERT(g == NULL);
    } else {
        FZ_ASSERT(dfm_generator_out_stride(g) == d * V);
        if (param == DFM_PARAM_LOGITS) fuzz_rates_helper(&in, g, d, V);
        fuzz_sampler(&in, g, d, V, source, &mem);
        dfm_generator *c = (dfm_generator *)&in;
        st = dfm_generator_clone(&c, g, &mem);
        if (st) FZ_ASSERT(c == NULL && st == DFM_ENOMEM);
        dfm_generator_free(c);
    }
    fuzz_losses(&in, p, d, V, &mem);
out:
    dfm_generator_free(g);
    dfm_path_free(p);
    dfm_scheduler_free(sc);
    dfm_space_free(sp);
    FZ_ASSERT(in.live == 0);
    return 0;
}
