/* libFuzzer harness: the continuous module with real handles. Affine paths over every scheduler
 * kind (custom ones failing or non-monotone), dfm_path_sample with drawn / given x0 and fuzzed
 * times, dfm_affine_convert between every pair of parameterizations, velocity and diffusion
 * generators (g constant or a fuzzed g(t)), the sampling-scheduler transform, the MSE loss, ODE
 * and SDE samplers of every method with fuzzed grids (increasing or decreasing), tolerances,
 * step limits and save times, a model returning fuzzed values (NaN, +-Inf, huge) that may fail,
 * progress stops, and the log-likelihood (exact divergence or Hutchinson).
 * Invariants: documented statuses, messages, outputs unwritten on failure (reals in/out
 * included), finite results on success, the raw value of a failing model, no leak. */
#include "fuzz_common_mod.h"

#define CAPR 2048

static int fzc_g(double t, double *g, void *u)
{
    const double *v = (const double *)u;
    if (v[1] != 0.0) return 9;
    *g = v[0] * (1.0 + t);
    return 0;
}

static int fzc_div(const dfm_model_io *io, double *div, void *u)
{
    fzm *m = (fzm *)u;
    for (size_t r = 0; r < io->rows; r++) div[r] = m->pool[r % FZM_POOL];
    return 0;
}

static void fuzz_sampler(fz *in, dfm_generator *g, size_t D, dfm_allocator *mem)
{
    static float re[CAPR], copy[CAPR], saved[4 * CAPR], x0o[CAPR];
    static double grid[70], save[4], logp[64], var[64];
    int diff = dfm_generator_kind(g) == DFM_GEN_DIFFUSION;
    int method = fz_u8(in) % 8 ? (diff ? DFM_METHOD_EULER_MARUYAMA : 2 + (int)fz_below(in, 4))
                               : fz_int(in, 0, 10);
    dfm_sampler *s = (dfm_sampler *)in;
    int st = dfm_sampler_create(&s, g, method, fz_u8(in) & 1 ? mem : NULL);
    FZ_STATUS_OK(st);
    if (st) {
        FZ_ASSERT(s == NULL);
        return;
    }
    /* DOPRI5 with a tiny tolerance may take the default 100000 steps: valid, only slow */
    if (method == DFM_METHOD_DOPRI5) FZ_ASSERT(dfm_sampler_set_int(s, DFM_OPT_MAX_STEPS, 500) == 0);
    for (int k = 0; k < 6; k++) {
        int what = fz_u8(in) % 8;
        if (what == 0) {
            uint8_t sel = fz_u8(in);
            size_t ns = sel % 8 ? 1 + fz_below(in, 40) : sel & 8 ? 0 : (size_t)INT32_MAX + 1;
            st = dfm_sampler_set_steps(s, ns);
            FZ_ASSERT((st == 0) == (ns >= 1 && ns <= 40));
        } else if (what == 1) st = dfm_sampler_set_double(s, DFM_OPT_ATOL, fz_double(in));
        else if (what == 2) st = dfm_sampler_set_double(s, DFM_OPT_RTOL, fz_double(in));
        else if (what == 3) st = dfm_sampler_set_int(s, DFM_OPT_MAX_STEPS, fz_u8(in) % 4 ? 1 + fz_below(in, 500) : fz_int(in, -1, 5));
        else if (what == 4) st = dfm_sampler_set_double(s, DFM_OPT_H_INIT, fz_double(in));
        else if (what == 5) st = dfm_sampler_set_int(s, DFM_OPT_THREADS, 1 + (int)fz_below(in, 3));
        else if (what == 6) {
            size_t n = 2 + fz_below(in, 68);
            int down = fz_u8(in) & 1;
            for (size_t i = 0; i < n; i++) {
                double u = (double)i / (double)(n - 1);
                grid[i] = fz_u8(in) % 16 ? (down ? 1.0 - u : u) : fz_time(in);
            }
            st = dfm_sampler_set_grid(s, grid, n);
        } else st = dfm_sampler_set_int(s, DFM_OPT_SEED, (int64_t)fz_u64(in));
        FZ_STATUS_OK(st);
        fzm_msg(dfm_sampler_last_error(s), st);
    }
    /* Threads are created per parallel region, which costs milliseconds under ASan: bound the
     * regions of a multi-threaded DOPRI5 run so that a valid but long run is not a timeout. */
    int64_t nth = 1, maxst = 0;
    if (method == DFM_METHOD_DOPRI5 && dfm_sampler_get_int(s, DFM_OPT_THREADS, &nth) == 0 && nth > 1 &&
        dfm_sampler_get_int(s, DFM_OPT_MAX_STEPS, &maxst) == 0 && maxst > 20)
        FZ_ASSERT(dfm_sampler_set_int(s, DFM_OPT_MAX_STEPS, 20) == 0);
    size_t rows = fz_below(in, 33);
    if (rows * D > CAPR) rows = CAPR / D;
    size_t n = rows * D;
    for (size_t i = 0; i < n; i++) re[i] = fz_u8(in) % 8 ? (float)(int8_t)fz_u8(in) / 32.0f : fz_logit(in);
    memcpy(copy, re, n * sizeof(float));
    size_t n_save = fz_below(in, 4);
    for (size_t k = 0; k < n_save; k++) save[k] = fz_u8(in) % 4 ? (k + 1) / 4.0 : fz_time(in);
    memset(saved, 0xa5, n_save * n * sizeof(float));
    fzm m;
    fzm_init(&m, in, 0);
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = fzm_model; a.model_data = &m;
    a.rows = rows; a.row_offset = fz_u8(in) & 1 ? fz_u64(in) : fz_below(in, 100);
    a.reals = re; a.draw_source = fz_u8(in) & 1;
    a.save_times = save; a.n_save = n_save; a.saved_reals = saved;
    if (fz_u8(in) & 1) { a.progress = fzm_progress; a.progress_data = &m; }
    st = dfm_sampler_run(s, &a);
    fzm_check_run(&m, st, dfm_sampler_callback_status(s));
    fzm_msg(dfm_sampler_last_error(s), st);
    if (st) {
        FZ_ASSERT(memcmp(re, copy, n * sizeof(float)) == 0);
        for (size_t i = 0; i < n_save * n; i++) FZ_ASSERT(((uint32_t *)saved)[i] == 0xa5a5a5a5u);
    } else {
        for (size_t i = 0; i < n; i++) FZ_ASSERT(isfinite(re[i]));
        for (size_t i = 0; i < n_save * n; i++) FZ_ASSERT(isfinite(saved[i]));
    }
    if (!diff && (fz_u8(in) & 1)) {
        fzm_init(&m, in, 0);
        size_t lr = rows < 64 ? rows : 64;
        memset(logp, 0xa5, sizeof logp);
        memset(var, 0xa5, sizeof var);
        memset(x0o, 0xa5, sizeof x0o);
        dfm_loglik_args l;
        memset(&l, 0, sizeof l);
        l.struct_size = sizeof l;
        l.model = fzm_model; l.model_data = &m;
        if (fz_u8(in) & 1) { l.divergence = fzc_div; l.divergence_data = &m; }
        l.rows = lr; l.row_offset = fz_below(in, 50); l.x1 = copy;
        l.n_probes = fz_u8(in) % 8 ? 1 + fz_below(in, 3) : fz_below(in, 2);
        l.fd_eps = fz_u8(in) % 4 ? 0.0 : fz_double(in);
        l.logp = logp; l.logp_var = var; l.x0_out = x0o;
        if (fz_u8(in) & 1) { l.progress = fzm_progress; l.progress_data = &m; }
        st = dfm_sampler_log_likelihood(s, &l);
        fzm_check_run(&m, st, dfm_sampler_callback_status(s));
        fzm_msg(dfm_sampler_last_error(s), st);
        if (st) {
            for (size_t i = 0; i < 64; i++) FZ_ASSERT(((uint64_t *)logp)[i] == 0xa5a5a5a5a5a5a5a5ull);
            for (size_t i = 0; i < lr * D; i++) FZ_ASSERT(((uint32_t *)x0o)[i] == 0xa5a5a5a5u);
        } else {
            for (size_t r = 0; r < lr; r++) {
                if (getenv("FZ_DEBUG")) fprintf(stderr, "r %zu logp %g var %g probes %zu exact %d\n", r, logp[r], var[r], l.n_probes, l.divergence != NULL);
                FZ_ASSERT(!isnan(logp[r]));
                /* documented: 0 when exact, NaN with a single probe */
                if (l.divergence) FZ_ASSERT(var[r] == 0.0);
                else if (l.n_probes == 1) FZ_ASSERT(isnan(var[r]));
                else FZ_ASSERT(var[r] >= 0.0);
            }
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
    dfm_scheduler *sc = NULL, *sc2 = NULL;
    dfm_path *p = NULL;
    dfm_generator *g = NULL;
    dfm_loss *l = NULL;
    fzs cs = {1.0, 0}, cs2 = {1.0, 0};
    size_t D = fz_u8(&in) % 16 ? 1 + fz_below(&in, 8) : fz_size(&in, 64);
    if (dfm_space_create_euclidean(&sp, D, NULL)) goto out;
    if (D > 256) goto out;
    if (fz_scheduler(&in, &sc, &cs)) goto out;
    p = (dfm_path *)&in;
    int st = dfm_path_create_affine(&p, sp, sc, fz_u8(&in) & 1 ? &mem : NULL);
    FZ_STATUS_OK(st);
    if (st) {
        FZ_ASSERT(p == NULL);
        goto out;
    }
    /* path sample and conversions */
    {
        static float x1[CAPR], x0[CAPR], xt[CAPR], tg[CAPR], x0o[CAPR], x1c[CAPR], cv[CAPR];
        static double t[64];
        size_t rows = fz_below(&in, 64);
        if (rows * D > CAPR) rows = CAPR / D;
        size_t n = rows * D;
        for (size_t r = 0; r < rows; r++) t[r] = fz_time(&in);
        for (size_t i = 0; i < n; i++) {
            x1[i] = fz_u8(&in) % 8 ? (float)(int8_t)fz_u8(&in) / 16.0f : fz_logit(&in);
            x0[i] = fz_u8(&in) % 8 ? (float)(int8_t)fz_u8(&in) / 16.0f : fz_logit(&in);
        }
        memcpy(x1c, x1, n * sizeof(float));
        memset(xt, 0xa5, sizeof xt); memset(tg, 0xa5, sizeof tg); memset(x0o, 0xa5, sizeof x0o);
        dfm_path_set_int(p, DFM_OPT_THREADS, 1 + (int)fz_below(&in, 3));
        dfm_path_sample_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.rows = rows; a.row_offset = fz_u64(&in); a.draw = fz_u32(&in); a.t = t;
        a.x1_reals = x1; a.x0_reals = fz_u8(&in) & 1 ? x0 : NULL; a.xt_reals = xt;
        a.target_reals = fz_u8(&in) & 1 ? tg : NULL; a.x0_reals_out = fz_u8(&in) & 1 ? x0o : NULL;
        st = dfm_path_sample(p, &a);
        FZ_STATUS_OK(st);
        fzm_msg(dfm_path_last_error(p), st);
        FZ_ASSERT(memcmp(x1, x1c, n * sizeof(float)) == 0);
        if (st) {
            for (size_t i = 0; i < CAPR; i++)
                FZ_ASSERT(((uint32_t *)xt)[i] == 0xa5a5a5a5u && ((uint32_t *)tg)[i] == 0xa5a5a5a5u &&
                          ((uint32_t *)x0o)[i] == 0xa5a5a5a5u);
        } else {
            for (size_t i = 0; i < n; i++) {
                FZ_ASSERT(isfinite(xt[i]));
                if (a.target_reals && !isfinite(tg[i]) && getenv("FZ_DEBUG")) {
                    dfm_sched_values sv; dfm_scheduler_eval(dfm_path_scheduler(p), t[i / D], &sv, NULL);
                    fprintf(stderr, "kind %d t %.17g a %g s %g da %g ds %g x1 %g x0 %g (given %d) xt %g tg %g\n",
                            dfm_scheduler_kind(dfm_path_scheduler(p)), t[i / D], sv.alpha, sv.sigma, sv.d_alpha, sv.d_sigma,
                            x1[i], a.x0_reals ? x0[i] : x0o[i], a.x0_reals != NULL, xt[i], tg[i]);
                }
                if (a.target_reals) FZ_ASSERT(isfinite(tg[i]));
            }
        }
        int from = fz_int(&in, 2, 6), to = fz_int(&in, 2, 6);
        memset(cv, 0xa5, sizeof cv);
        int alias = fz_u8(&in) % 4 == 0;
        if (alias) memcpy(cv, x0, n * sizeof(float));
        st = dfm_affine_convert(p, from, to, rows, t, x1, alias ? cv : x0, cv);
        FZ_STATUS_OK(st);
        fzm_msg(dfm_path_last_error(p), st);
        if (st && !alias) for (size_t i = 0; i < CAPR; i++) FZ_ASSERT(((uint32_t *)cv)[i] == 0xa5a5a5a5u);
        if (st && alias) FZ_ASSERT(memcmp(cv, x0, n * sizeof(float)) == 0);
        if (!st) for (size_t i = 0; i < n; i++) FZ_ASSERT(isfinite(cv[i]));
    }
    /* generator */
    int kind = fz_u8(&in) & 1;
    int param = fz_u8(&in) % 8 ? 3 + (int)fz_below(&in, 4) : fz_int(&in, 0, 9);
    double gv[2] = {fz_u8(&in) & 1 ? fz_double(&in) : 0.5, fz_u8(&in) % 8 == 0};
    g = (dfm_generator *)&in;
    st = kind ? dfm_generator_create_diffusion(&g, p, param, gv[0], fz_u8(&in) & 1 ? &mem : NULL)
              : dfm_generator_create_velocity(&g, p, param, fz_u8(&in) & 1 ? &mem : NULL);
    FZ_STATUS_OK(st);
    if (st) {
        FZ_ASSERT(g == NULL);
        goto out;
    }
    if (kind && (fz_u8(&in) & 1)) {
        if (!(gv[0] >= 0.0 && isfinite(gv[0]))) gv[0] = 0.5;
        FZ_STATUS_OK(dfm_generator_set_diffusion_fn(g, fzc_g, gv));
    }
    if (fz_u8(&in) % 4 == 0 && !fz_scheduler(&in, &sc2, &cs2)) {
        st = dfm_generator_set_sampling_scheduler(g, sc2);
        FZ_STATUS_OK(st);
        fzm_msg(dfm_generator_last_error(g), st);
    }
    /* MSE loss */
    {
        static float x0[CAPR], x1[CAPR], out[CAPR], grad[CAPR];
        static double t[64], values[CAPR];
        l = (dfm_loss *)&in;
        st = dfm_loss_create_mse(&l, g, fz_u8(&in) & 1 ? &mem : NULL);
        FZ_STATUS_OK(st);
        if (st) FZ_ASSERT(l == NULL);
        else {
            dfm_loss_set_int(l, DFM_OPT_REDUCTION, fz_int(&in, 0, 2));
            dfm_loss_set_int(l, DFM_OPT_THREADS, 1 + (int)fz_below(&in, 3));
            size_t rows = fz_below(&in, 17);
            if (rows * D > CAPR) rows = CAPR / D;
            for (size_t r = 0; r < rows; r++) t[r] = fz_time(&in);
            for (size_t i = 0; i < rows * D; i++) {
                x0[i] = fz_u8(&in) % 8 ? (float)(int8_t)fz_u8(&in) / 16.0f : fz_logit(&in);
                x1[i] = fz_u8(&in) % 8 ? (float)(int8_t)fz_u8(&in) / 16.0f : fz_logit(&in);
                out[i] = fz_u8(&in) % 8 ? (float)(int8_t)fz_u8(&in) / 16.0f : fz_logit(&in);
            }
            memset(grad, 0xa5, sizeof grad);
            double loss = -123.0;
            dfm_loss_args a;
            memset(&a, 0, sizeof a);
            a.struct_size = sizeof a;
            a.rows = rows; a.t = t; a.x0_reals = x0; a.x1_reals = x1; a.xt_reals = x1; a.out = out;
            a.grad = fz_u8(&in) & 1 ? grad : NULL; a.values = values; a.loss = &loss;
            st = dfm_loss_eval(l, &a);
            FZ_STATUS_OK(st);
            fzm_msg(dfm_loss_last_error(l), st);
            if (st) {
                FZ_ASSERT(loss == -123.0);
                for (size_t i = 0; i < CAPR; i++) FZ_ASSERT(((uint32_t *)grad)[i] == 0xa5a5a5a5u);
            } else FZ_ASSERT(!isnan(loss));
        }
    }
    fuzz_sampler(&in, g, D, &mem);
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
    dfm_scheduler_free(sc2);
    dfm_scheduler_free(sc);
    dfm_space_free(sp);
    FZ_ASSERT(in.live == 0);
    return 0;
}
