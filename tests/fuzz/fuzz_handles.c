/* libFuzzer harness: the generic handle layer (paths, generators, losses, samplers): sampler
 * step counts and time grids, save times, options, statistics, run/sample/eval argument checks,
 * clones, with an allocator that fails where the input says.
 *
 * The handles are real (a discrete mixture path, its factorized logits generator, the generalized
 * KL loss; chosen by the input) or "probe" handles built through the internal constructors
 * (dfm__path_new, dfm__gen_new, dfm__loss_new; the harness links the library statically and
 * includes src/handles.h). The probe kinds implement the ops contract minimally (validate,
 * allocate scratch, call the model, copy out on success) so every generic entry point runs
 * exactly the code a real kind runs before and after its ops, with exact expected results. The
 * module harnesses (fuzz_discrete, fuzz_continuous, fuzz_ctmc) drive every real kind in depth.
 *
 * Invariants: documented statuses; a failed call leaves a message (non-empty, NUL-terminated)
 * and its outputs unwritten; a failed dfm_sampler_set_grid keeps the previous grid; option
 * getters return what setters accepted; no leak. */
#include "fuzz_input.h"
#include "handles/handles.h"

#define PROBE_KIND 99

/* ---- probe kinds ---- */

static int probe_sample(dfm_path *p, const dfm_path_sample_args *a)
{
    size_t nt = p->space.n_tokens, n;
    if (a->rows && nt && (!a->x1_tokens || !a->xt_tokens))
        return dfm__fail(&p->b, DFM_EINVAL, "tokens NULL");
    if (dfm__mul(a->rows, nt, &n)) return dfm__fail(&p->b, DFM_EOVERFLOW, "rows x d overflows");
    int32_t *tmp = (int32_t *)dfm__calloc(&p->b.mem, n ? n : 1, sizeof(int32_t));
    if (!tmp) return dfm__fail(&p->b, DFM_ENOMEM, "scratch");
    for (size_t i = 0; i < n; i++) tmp[i] = a->x1_tokens[i];
    if (n) memcpy(a->xt_tokens, tmp, n * sizeof(int32_t));
    dfm__free(&p->b.mem, tmp);
    return 0;
}
static const dfm__path_ops probe_path_ops = {NULL, NULL, probe_sample, NULL};

static void probe_sampler_destroy(dfm_sampler *s) { dfm__free(&s->b.mem, s->impl); }

static int probe_run(dfm_sampler *s, const dfm_run_args *a)
{
    const dfm_space *sp = &s->gen->path->space;
    size_t nt = sp->n_tokens, nr = sp->n_reals, stride = s->gen->out_stride;
    int st = dfm__check_run_common(s, a, nt, nr);
    if (st) return st;
    size_t n_out, n_tok;
    if (dfm__mul(a->rows, stride, &n_out) || dfm__mul(a->rows, nt, &n_tok))
        return dfm__fail(&s->b, DFM_EOVERFLOW, "sizes overflow");
    float *out = (float *)dfm__calloc(&s->b.mem, n_out ? n_out : 1, sizeof(float));
    int32_t *tok = (int32_t *)dfm__calloc(&s->b.mem, n_tok ? n_tok : 1, sizeof(int32_t));
    double *t = (double *)dfm__calloc(&s->b.mem, a->rows ? a->rows : 1, sizeof(double));
    if (!out || !tok || !t) { st = dfm__fail(&s->b, DFM_ENOMEM, "scratch"); goto done; }
    if (n_tok) memcpy(tok, a->tokens, n_tok * sizeof(int32_t));
    size_t steps = dfm__sampler_nsteps(s);
    if (steps > 4) steps = 4; /* the probe does not need the whole grid */
    for (size_t i = 0; i < steps; i++) {
        for (size_t r = 0; r < a->rows; r++) t[r] = dfm__sampler_time(s, i);
        dfm_model_io io = {sizeof io, a->rows, a->row_offset, t, nt ? tok : NULL, nt, NULL, nr,
                           out, stride, DFM_BRANCH_MAIN, (int)i};
        int raw = a->model(&io, a->model_data);
        s->stats[DFM_STAT_MODEL_CALLS]++;
        if (raw) { st = dfm__fail_callback(&s->b, raw, "model"); goto done; }
        s->stats[DFM_STAT_STEPS]++;
        /* the samplers' own step end: the progress callback, then a pending stop request */
        st = dfm__step_done(s, a->progress, a->progress_data, (int)i, (int)steps, t[0]);
        if (st) goto done;
    }
    if (n_tok) memcpy(a->tokens, tok, n_tok * sizeof(int32_t));
done:
    dfm__free(&s->b.mem, out);
    dfm__free(&s->b.mem, tok);
    dfm__free(&s->b.mem, t);
    return st;
}

static int probe_get_int(const dfm_sampler *s, int opt, int64_t *v)
{
    (void)s;
    if (opt == 150) { *v = 7; return 0; }
    return DFM_EUNSUPPORTED;
}
static const dfm__sampler_ops probe_sampler_ops = {probe_sampler_destroy, probe_run, NULL,
                                                   probe_get_int, NULL, NULL};

static int probe_sampler_init(dfm_sampler *s, int method)
{
    if (method != DFM_METHOD_EULER && method != DFM_METHOD_EXACT) return DFM_EUNSUPPORTED;
    s->impl = dfm__alloc(&s->b.mem, 16);
    if (!s->impl) return DFM_ENOMEM;
    s->ops = &probe_sampler_ops;
    return 0;
}
static const dfm__gen_ops probe_gen_ops = {NULL, NULL, probe_sampler_init, NULL, NULL, NULL, NULL};

static int probe_eval(dfm_loss *l, const dfm_loss_args *a)
{
    (void)l;
    *a->loss = (double)a->rows;
    return 0;
}
static const dfm__loss_ops probe_loss_ops = {NULL, NULL, probe_eval, NULL, NULL, NULL, NULL};

/* ---- host callbacks steered by the input ---- */

typedef struct host {
    int model_fail_at, progress_stop_at, calls, progress_calls;
} host;

static int model_cb(const dfm_model_io *io, void *u)
{
    host *h = (host *)u;
    FZ_ASSERT(io->struct_size == sizeof *io);
    for (size_t r = 0; r < io->rows; r++) FZ_ASSERT(io->t[r] >= 0.0 && io->t[r] <= 1.0);
    for (size_t i = 0; i < io->rows * io->out_stride; i++) io->out[i] = 0.0f;
    return ++h->calls == h->model_fail_at ? -3 : 0;
}
static int progress_cb(int step, int n, double t, void *u)
{
    host *h = (host *)u;
    FZ_ASSERT(step >= 0 && step < n && t >= 0.0 && t <= 1.0);
    return ++h->progress_calls == h->progress_stop_at;
}

/* ---- checks ---- */

static void check_msg(const char *m, int st)
{
    FZ_ASSERT(m != NULL);
    size_t len = strnlen(m, DFM_ERROR_MAX);
    FZ_ASSERT(len < DFM_ERROR_MAX);
    if (st) FZ_ASSERT(len > 0);
}

static void fuzz_sampler_ops(fz *in, dfm_sampler *s, const dfm_generator *g, int real, int method)
{
    static double grid[300], save[40];
    static int32_t tokens[512], copy[512], saved[4096];
    for (int op = 0; op < 24 && !fz_empty(in); op++) {
        int st;
        switch (fz_u8(in) % 6) {
        case 0: {
            size_t n = fz_size(in, 300), steps_before = s->n_steps, ngrid_before = s->n_grid;
            double *grid_before = s->grid;
            double first = grid_before ? grid_before[0] : -1.0;
            size_t len = n <= 300 ? n : fz_below(in, 301);
            int dir = fz_u8(in) & 1;
            for (size_t i = 0; i < len; i++) {
                uint8_t c = fz_u8(in);
                double v = c < 200 ? (dir ? (double)i / (double)(len ? len : 1) + c * 1e-6
                                          : 1.0 - (double)i / (double)(len ? len : 1))
                                   : fz_time(in);
                grid[i] = v;
            }
            st = dfm_sampler_set_grid(s, fz_u8(in) % 16 ? grid : NULL, len);
            FZ_STATUS_OK(st);
            check_msg(dfm_sampler_last_error(s), st);
            if (st) {
                FZ_ASSERT(s->grid == grid_before && s->n_grid == ngrid_before &&
                          s->n_steps == steps_before);
                if (grid_before) FZ_ASSERT(s->grid[0] == first);
            } else {
                FZ_ASSERT(s->grid && s->n_grid == len && len >= 2);
                for (size_t i = 0; i < len; i++) {
                    FZ_ASSERT(s->grid[i] == grid[i] && grid[i] >= 0.0 && grid[i] <= 1.0);
                    if (i) FZ_ASSERT(grid[1] > grid[0] ? grid[i] > grid[i - 1] : grid[i] < grid[i - 1]);
                }
            }
            break;
        }
        case 1: {
            size_t n = fz_size(in, 1000);
            /* a real kind runs every step: keep valid counts small (a huge one is only slow) */
            if (real && n > 64 && n <= INT32_MAX) n = 1 + n % 64;
            st = dfm_sampler_set_steps(s, n);
            FZ_STATUS_OK(st);
            check_msg(dfm_sampler_last_error(s), st);
            if (st == 0) FZ_ASSERT(n >= 1 && s->n_steps == n && s->grid == NULL);
            else FZ_ASSERT(st == DFM_EINVAL && (n == 0 || n > INT32_MAX));
            break;
        }
        case 2: {
            int opt = fz_int(in, -1, 160);
            int64_t v = fz_u8(in) & 1 ? (int64_t)fz_u64(in) : (int64_t)fz_int(in, -2, 300);
            st = dfm_sampler_set_int(s, opt, v);
            FZ_STATUS_OK(st);
            check_msg(dfm_sampler_last_error(s), st);
            if (opt == DFM_OPT_THREADS) FZ_ASSERT((st == 0) == (v >= 1 && v <= DFM_MAX_THREADS));
            int64_t got = -1;
            int gst = dfm_sampler_get_int(s, opt, &got);
            FZ_STATUS_OK(gst);
            if (st == 0 && gst == 0 && (opt == DFM_OPT_THREADS || opt == DFM_OPT_SEED))
                FZ_ASSERT(got == v);
            st = dfm_sampler_set_double(s, opt, fz_double(in));
            FZ_STATUS_OK(st);
            double d;
            FZ_STATUS_OK(dfm_sampler_get_double(s, opt, &d));
            break;
        }
        case 3: {
            int stat = fz_int(in, -1, 10);
            int64_t v = -5;
            st = dfm_sampler_get_stat(s, stat, &v);
            FZ_ASSERT((st == 0) == (stat >= 1 && stat < 8));
            if (st == 0) FZ_ASSERT(v >= 0);
            else FZ_ASSERT(v == -5);
            break;
        }
        case 4: {
            size_t nt = dfm_space_n_tokens(dfm_path_space(dfm_generator_path(g)));
            size_t rows = nt ? fz_below(in, 512 / nt + 1) : 0;
            for (size_t i = 0; i < rows * nt; i++) tokens[i] = (int32_t)fz_below(in, 4);
            memcpy(copy, tokens, sizeof tokens);
            host h = {fz_int(in, 0, 6), fz_int(in, 0, 6), 0, 0};
            size_t n_save = fz_below(in, 4);
            for (size_t k = 0; k < n_save; k++) save[k] = fz_time(in);
            size_t saved_cap = sizeof saved / sizeof saved[0];
            int saved_fits = n_save * rows * nt <= saved_cap;
            dfm_run_args a;
            memset(&a, 0, sizeof a);
            a.struct_size = fz_u8(in) % 16 ? sizeof a : fz_below(in, sizeof a);
            a.model = fz_u8(in) % 16 ? model_cb : NULL;
            a.model_data = &h;
            a.rows = rows;
            a.row_offset = fz_u64(in);
            a.tokens = fz_u8(in) % 16 ? tokens : NULL;
            a.save_times = n_save ? save : NULL;
            a.n_save = saved_fits ? n_save : 0;
            a.saved_tokens = saved;
            a.progress = fz_u8(in) & 1 ? progress_cb : NULL;
            a.progress_data = &h;
            st = dfm_sampler_run(s, fz_u8(in) % 32 ? &a : NULL);
            FZ_STATUS_OK(st);
            check_msg(dfm_sampler_last_error(s), st);
            if (st) FZ_ASSERT(memcmp(copy, tokens, sizeof tokens) == 0);
            /* the model's -3; a progress callback's stop keeps its return value (1) */
            if (st == DFM_ECALLBACK) FZ_ASSERT(dfm_sampler_callback_status(s) == -3);
            else if (st == DFM_ESTOPPED && h.progress_stop_at > 0 &&
                     h.progress_calls == h.progress_stop_at)
                FZ_ASSERT(dfm_sampler_callback_status(s) == 1);
            else FZ_ASSERT(dfm_sampler_callback_status(s) == 0);
            break;
        }
        default:
            dfm_sampler_request_stop(s);
            FZ_ASSERT(dfm_sampler_method(s) == method); /* the one it was created with */
            break;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz in;
    fz_init(&in, data, size);
    in.fail_mask = fz_u8(&in) < 48 ? fz_u64(&in) : 0;
    dfm_allocator mem = fz_allocator(&in);
    dfm_space *sp = NULL;
    dfm_scheduler *sc = NULL;
    dfm_path *p = NULL;
    dfm_generator *g = NULL;
    dfm_sampler *s = NULL;
    dfm_loss *l = NULL;
    if (dfm_space_create_discrete(&sp, (int32_t)(2 + fz_below(&in, 6)), 1 + fz_below(&in, 8), NULL) ||
        dfm_scheduler_create_cosine(&sc, NULL))
        goto out;
    /* Real kinds (a mixture path, its factorized generator, the generalized KL) or the probe
     * kinds (every generic entry point with minimal ops). */
    const int real = fz_u8(&in) & 1;
    const int path_kind = real ? DFM_PATH_MIXTURE : PROBE_KIND;
    if (real) {
        int source = fz_u8(&in) & 1 ? DFM_SOURCE_MASK : DFM_SOURCE_UNIFORM;
        if (dfm_path_create_mixture(&p, sp, sc, source, dfm_space_token_vocab(sp, 0) - 1, NULL, &mem))
            goto out;
        if (dfm_generator_create_factorized(&g, p, DFM_PARAM_LOGITS, &mem)) goto out;
        if (dfm_loss_create_generalized_kl(&l, p, &mem)) goto out;
    } else {
        if (dfm__path_new(&p, PROBE_KIND, &probe_path_ops, sp, sc, &mem)) goto out;
        if (dfm__gen_new(&g, PROBE_KIND, DFM_PARAM_LOGITS, 1 + fz_below(&in, 8), &probe_gen_ops, p,
                         &mem))
            goto out;
        if (dfm__loss_new(&l, PROBE_KIND, &probe_loss_ops, g, &mem)) goto out;
    }

    /* Path: sample with arbitrary times and sizes; options; clone. */
    {
        static double t[64];
        static int32_t x1[512], xt[512], xt_copy[512];
        size_t nt = dfm_space_n_tokens(sp);
        size_t rows = fz_below(&in, 64 / 1 + 1);
        if (rows * nt > 512) rows = 512 / nt;
        for (size_t r = 0; r < rows; r++) t[r] = fz_time(&in);
        for (size_t i = 0; i < rows * nt; i++) x1[i] = (int32_t)fz_below(&in, 4);
        memset(xt, 0xa5, sizeof xt);
        memcpy(xt_copy, xt, sizeof xt);
        dfm_path_sample_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = fz_u8(&in) % 16 ? sizeof a : fz_below(&in, sizeof a);
        a.rows = rows;
        a.t = fz_u8(&in) % 16 ? t : NULL;
        a.x1_tokens = x1;
        a.xt_tokens = xt;
        int st = dfm_path_sample(p, &a);
        FZ_STATUS_OK(st);
        check_msg(dfm_path_last_error(p), st);
        int t_ok = 1;
        for (size_t r = 0; r < rows && a.t; r++) t_ok &= t[r] >= 0.0 && t[r] <= 1.0;
        if (rows && a.t && !t_ok && a.struct_size >= 3 * sizeof(size_t)) FZ_ASSERT(st == DFM_ERANGE);
        if (st) FZ_ASSERT(memcmp(xt, xt_copy, sizeof xt) == 0);
        else if (!real) FZ_ASSERT(memcmp(xt, x1, rows * nt * sizeof(int32_t)) == 0);
        else
            for (size_t i = 0; i < rows * nt; i++)
                FZ_ASSERT(xt[i] >= 0 && xt[i] < dfm_space_token_vocab(sp, 0));
        int opt = fz_int(&in, -1, 5);
        int64_t v = (int64_t)fz_u64(&in);
        st = dfm_path_set_int(p, opt, v);
        FZ_STATUS_OK(st);
        check_msg(dfm_path_last_error(p), st);
        dfm_path *c = (dfm_path *)&in;
        st = dfm_path_clone(&c, p, fz_u8(&in) & 1 ? &mem : NULL);
        FZ_STATUS_OK(st);
        if (st) FZ_ASSERT(c == NULL && st == DFM_ENOMEM);
        else FZ_ASSERT(dfm_path_kind(c) == path_kind && dfm_space_n_tokens(dfm_path_space(c)) == nt);
        dfm_path_free(c);
    }
    /* Loss: argument checks and the reduction option. */
    {
        double t[4] = {0.5, 0.5, 0.5, 0.5}, loss = -1.0, values[64];
        float outv[64] = {0};
        dfm_loss_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.rows = fz_below(&in, 5);
        t[0] = fz_time(&in);
        a.t = t;
        a.out = fz_u8(&in) % 8 ? outv : NULL;
        a.loss = fz_u8(&in) % 8 ? &loss : NULL;
        a.values = fz_u8(&in) & 1 ? values : NULL;
        int64_t red = fz_int(&in, -1, 3);
        int st = dfm_loss_set_int(l, DFM_OPT_REDUCTION, red);
        FZ_ASSERT((st == 0) == (red >= DFM_REDUCE_MEAN && red <= DFM_REDUCE_NONE));
        st = dfm_loss_eval(l, &a);
        FZ_STATUS_OK(st);
        check_msg(dfm_loss_last_error(l), st);
        if (st && a.loss) FZ_ASSERT(loss == -1.0);
    }
    /* Sampler: an arbitrary method (only EULER and EXACT exist for the probe kind; a real
     * factorized generator also takes TAU_LEAPING and THETA_TRAPEZOIDAL). */
    {
        int method = fz_int(&in, 0, 10);
        dfm_sampler *q = (dfm_sampler *)&in;
        int st = dfm_sampler_create(&q, g, method, fz_u8(&in) & 1 ? &mem : NULL);
        FZ_STATUS_OK(st);
        if (st) {
            FZ_ASSERT(q == NULL);
            FZ_ASSERT(st == DFM_ENOMEM || (st == DFM_EUNSUPPORTED && method != DFM_METHOD_EULER &&
                                           method != DFM_METHOD_EXACT));
        } else {
            s = q;
            fuzz_sampler_ops(&in, s, g, real, method);
        }
    }
    {
        dfm_generator *c = (dfm_generator *)&in;
        int st = dfm_generator_clone(&c, g, &mem);
        if (st) FZ_ASSERT(c == NULL && st == DFM_ENOMEM);
        dfm_generator_free(c);
        dfm_loss *lc = (dfm_loss *)&in;
        st = dfm_loss_clone(&lc, l, &mem);
        if (st) FZ_ASSERT(lc == NULL && st == DFM_ENOMEM);
        dfm_loss_free(lc);
    }
out:
    dfm_sampler_free(s);
    dfm_loss_free(l);
    dfm_generator_free(g);
    dfm_path_free(p);
    dfm_scheduler_free(sc);
    dfm_space_free(sp);
    FZ_ASSERT(in.live == 0);
    return 0;
}
