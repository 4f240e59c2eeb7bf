/* multimodal: generator matching on a product space — a class token k in [K] together with a
 * point x in R^2 whose law depends on k (a ring of radius r_k around a class centre c_k, with
 * class probabilities pi_k). The token part follows a masked mixture path (kappa_t = t) and the
 * real part a CondOT affine path; ONE network sees the whole state (token embedding, x_t, t) and
 * outputs the token's posterior logits and the point's velocity. It is trained with libdfm's
 * trainer (dfm_trainer_step: time sampling, product path sampling, product loss = generalized
 * KL + MSE, gradient to the host's backward) and sampled jointly with the product generator's
 * exact sampler (one model call per step moves both parts).
 *
 * Joint quality, measured on the samples:
 *   token_tv          total variation between the sampled token law and pi (masks count as
 *                     errors);
 *   mean_err          max over classes of |mean(x | sampled token k) - c_k|;
 *   joint_on_support  fraction of samples whose point lies on the ring of THEIR OWN token
 *                     (| |x - c_k| - r_k | < 0.25): only a model of the joint law gets this right;
 *   any_ring          fraction of points on some ring (the real part's marginal);
 *   shuffled          the same joint test with each token paired with another sample's point —
 *                     what independent marginals would score (about sum_k pi_k^2 = 0.30).
 *
 * Usage: multimodal [--iters N] [--batch N] [--threads N] [--samples N] [--steps N]
 *                   [--hidden N] [--layers N] [--lr LR] [--seed N] [--out FILE.png]
 * Writes FILE.png (default multimodal.png): the samples coloured by their token. */
#include <dfm/dfm.h>

#include "ex2_common.h"
#include "mlp.h"

#define K 4                /* classes; the token vocabulary is K + 1 (the mask is K) */
#define MASK K
#define STREAM_DATA 1000   /* this program's own random stream: training data */
#define BAND 0.25          /* on-support half width around a ring */
#define NOISE 0.07         /* radial noise of the target rings */

static const double PI_K[K] = {0.4, 0.3, 0.2, 0.1};
static const double RAD_K[K] = {0.5, 0.8, 1.1, 1.4};
static const uint32_t COL_K[K + 1] = {0xd62728, 0x1f77b4, 0x2ca02c, 0x9467bd, 0x000000};

static void centre(int k, double *cx, double *cy)
{
    double a = 3.141592653589793 * (0.25 + 0.5 * k);
    *cx = 2.8 * cos(a);
    *cy = 2.8 * sin(a);
}

typedef struct opts {
    long iters, batch, threads, samples, steps, hidden, layers, seed;
    double lr;
    const char *out;
} opts;

static void usage(FILE *f)
{
    fprintf(f, "usage: multimodal [--iters N] [--batch N] [--threads N] [--samples N] [--steps N]\n"
               "                  [--hidden N] [--layers N] [--lr LR] [--seed N] [--out FILE.png]\n");
}

static int parse_args(int argc, char **argv, opts *o)
{
    for (int i = 1; i < argc; i += 2) { /* option, value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); exit(0); }
        if (!v) {
            fprintf(stderr, "multimodal: %s needs a value (or is unknown)\n", a);
            usage(stderr);
            return -1;
        }
        int bad = 0;
        if (!strcmp(a, "--iters")) bad = ex2_parse_long(v, 1, 10000000, &o->iters);
        else if (!strcmp(a, "--batch")) bad = ex2_parse_long(v, 1, 1 << 20, &o->batch);
        else if (!strcmp(a, "--threads")) bad = ex2_parse_long(v, 1, DFM_MAX_THREADS, &o->threads);
        else if (!strcmp(a, "--samples")) bad = ex2_parse_long(v, 1, 10000000, &o->samples);
        else if (!strcmp(a, "--steps")) bad = ex2_parse_long(v, 1, 100000, &o->steps);
        else if (!strcmp(a, "--hidden")) bad = ex2_parse_long(v, 1, 4096, &o->hidden);
        else if (!strcmp(a, "--layers")) bad = ex2_parse_long(v, 1, MLP_MAX_HIDDEN, &o->layers);
        else if (!strcmp(a, "--seed")) bad = ex2_parse_long(v, 0, LONG_MAX, &o->seed);
        else if (!strcmp(a, "--lr")) bad = ex2_parse_double(v, 1e-7, 1.0, &o->lr);
        else if (!strcmp(a, "--out")) o->out = v;
        else {
            fprintf(stderr, "multimodal: unknown option %s\n", a);
            usage(stderr);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "multimodal: bad value for %s: '%s'\n", a, v);
            usage(stderr);
            return -1;
        }
    }
    return 0;
}

/* The target: u holds 2 uniforms per row (class, angle), z one normal (radial noise). */
static void target_rows(const float *u, const float *z, size_t rows, int32_t *tok, float *x)
{
    for (size_t r = 0; r < rows; r++) {
        int k = 0;
        double acc = PI_K[0];
        while (k < K - 1 && u[2 * r] >= acc) acc += PI_K[++k];
        double cx, cy, a = 2.0 * 3.141592653589793 * u[2 * r + 1];
        centre(k, &cx, &cy);
        double rad = RAD_K[k] + NOISE * z[r];
        tok[r] = k;
        x[2 * r] = (float)(cx + rad * cos(a));
        x[2 * r + 1] = (float)(cy + rad * sin(a));
    }
}

/* On the ring of class k. */
static int on_ring(int k, float x, float y)
{
    if (k < 0 || k >= K) return 0;
    double cx, cy;
    centre(k, &cx, &cy);
    return fabs(hypot(x - cx, y - cy) - RAD_K[k]) < BAND;
}

/* ---- the trainer's callbacks: forward and backward of the host MLP ---- */

static int fwd(const dfm_model_io *io, void *ud)
{
    return mlp_forward((mlp *)ud, io->rows, io->tokens, io->reals, io->t, io->out, io->out_stride);
}

static int bwd(const dfm_model_io *io, const float *grad, void *ud)
{
    mlp *m = (mlp *)ud;
    mlp_zero_grad(m);
    return mlp_backward(m, grad, io->out_stride, NULL);
}

typedef struct progress_ctx { double t0; } progress_ctx;

static int sample_progress(int step, int n_steps, double t, void *user)
{
    progress_ctx *p = (progress_ctx *)user;
    int every = n_steps >= 8 ? n_steps / 4 : 1;
    if ((step + 1) % every == 0) {
        printf("  sampling: step %d/%d t=%.3f (%.1f s)\n", step + 1, n_steps, t, ex2_now() - p->t0);
        fflush(stdout);
    }
    return 0;
}

/* Samples on [-5, 5]^2, each a 2x2 dot in its token's colour, over the target rings in grey. */
static int write_png(const char *path, const int32_t *tok, const float *x, size_t n,
                     const char *title)
{
    enum { W = 440, M = 20, TOP = 36 };
    const double lo = -5.0, hi = 5.0;
    ex2_img im;
    if (ex2_img_init(&im, W, W + TOP - M)) return -1;
    int P = W - 2 * M;
    for (int py = 0; py < P; py++)
        for (int px = 0; px < P; px++) {
            float fx = (float)(lo + (hi - lo) * (px + 0.5) / P);
            float fy = (float)(hi - (hi - lo) * (py + 0.5) / P);
            for (int k = 0; k < K; k++)
                if (on_ring(k, fx, fy)) ex2_px(&im, M + px, TOP + py, 0xe8e8e8);
        }
    for (size_t i = 0; i < n; i++) {
        double fx = (x[2 * i] - lo) / (hi - lo) * P, fy = (hi - x[2 * i + 1]) / (hi - lo) * P;
        if (!(fx >= 0 && fx < P - 1 && fy >= 0 && fy < P - 1)) continue;
        int k = tok[i] >= 0 && tok[i] < K ? tok[i] : K;
        ex2_rect(&im, M + (int)fx, TOP + (int)fy, M + (int)fx + 1, TOP + (int)fy + 1, COL_K[k]);
    }
    ex2_line(&im, M, TOP, M + P - 1, TOP, 1, 0x000000);
    ex2_line(&im, M, TOP + P - 1, M + P - 1, TOP + P - 1, 1, 0x000000);
    ex2_line(&im, M, TOP, M, TOP + P - 1, 1, 0x000000);
    ex2_line(&im, M + P - 1, TOP, M + P - 1, TOP + P - 1, 1, 0x000000);
    ex2_text(&im, M, 6, title, 2, 0x000000);
    int x0 = M;
    for (int k = 0; k < K; k++) {
        char lab[16];
        snprintf(lab, sizeof lab, "K=%d", k);
        ex2_rect(&im, x0, 22, x0 + 7, 29, COL_K[k]);
        ex2_text(&im, x0 + 10, 22, lab, 1, 0x000000);
        x0 += 50;
    }
    int rc = ex2_png_write(path, &im);
    ex2_img_free(&im);
    return rc;
}

int main(int argc, char **argv)
{
    opts o = {.iters = 6000, .batch = 1024, .threads = 2, .samples = 10000, .steps = 100,
              .hidden = 128, .layers = 3, .seed = 1, .lr = 2e-3, .out = "multimodal.png"};
    if (parse_args(argc, argv, &o)) return 2;
    {   /* fail early on an unwritable output path rather than after training */
        FILE *f = fopen(o.out, "wb");
        if (!f) { fprintf(stderr, "multimodal: cannot write %s: %s\n", o.out, strerror(errno)); return 1; }
        fclose(f);
    }
    ex2_blas_threads((int)o.threads);

    int st = 0, rc = 1;
    const char *where = "";
    dfm_space *sd = NULL, *sc = NULL;
    dfm_scheduler *sched = NULL;
    dfm_path *pd = NULL, *pc = NULL, *pp = NULL;
    dfm_generator *gd = NULL, *gv = NULL, *gp = NULL;
    dfm_loss *lk = NULL, *lm = NULL, *lp = NULL;
    dfm_trainer *tr = NULL;
    dfm_sampler *smp = NULL;
    mlp *net = NULL;
    size_t B = (size_t)o.batch, N = (size_t)o.samples;
    float *u = malloc(sizeof(float) * B * 2), *z = malloc(sizeof(float) * B),
          *x1 = malloc(sizeof(float) * B * 2), *xs = malloc(sizeof(float) * N * 2);
    int32_t *k1 = malloc(sizeof(int32_t) * B), *ks = malloc(sizeof(int32_t) * N);
    if (!u || !z || !x1 || !xs || !k1 || !ks) { fprintf(stderr, "multimodal: out of memory\n"); goto done; }

#define TRY(call, what) do { st = (call); if (st) { where = (what); goto lib_fail; } } while (0)
    /* Part 0: the token, [K + 1] with a mask source. Part 1: the point, R^2, CondOT. */
    TRY(dfm_scheduler_create_condot(&sched, NULL), "scheduler");
    TRY(dfm_space_create_discrete(&sd, K + 1, 1, NULL), "token space");
    TRY(dfm_space_create_euclidean(&sc, 2, NULL), "real space");
    TRY(dfm_path_create_mixture(&pd, sd, sched, DFM_SOURCE_MASK, MASK, NULL, NULL), "mixture path");
    TRY(dfm_path_create_affine(&pc, sc, sched, NULL), "affine path");
    const dfm_path *pparts[2] = {pd, pc};
    TRY(dfm_path_create_product(&pp, pparts, 2, NULL), "product path");
    TRY(dfm_generator_create_factorized(&gd, pd, DFM_PARAM_LOGITS, NULL), "token generator");
    TRY(dfm_generator_create_velocity(&gv, pc, DFM_PARAM_VELOCITY, NULL), "velocity generator");
    const dfm_generator *gparts[2] = {gd, gv};
    TRY(dfm_generator_create_product(&gp, gparts, 2, NULL), "product generator");
    TRY(dfm_loss_create_generalized_kl(&lk, pd, NULL), "generalized KL loss");
    TRY(dfm_loss_create_mse(&lm, gv, NULL), "MSE loss");
    const dfm_loss *lparts[2] = {lk, lm};
    TRY(dfm_loss_create_product(&lp, pp, lparts, NULL, 2, NULL), "product loss");
    TRY(dfm_trainer_create(&tr, pp, lp, NULL), "trainer");
    TRY(dfm_trainer_set_int(tr, DFM_OPT_SEED, o.seed), "trainer seed");
    TRY(dfm_trainer_set_int(tr, DFM_OPT_THREADS, o.threads), "trainer threads");
    size_t stride = dfm_generator_out_stride(gp); /* K + 1 logits, then 2 velocity floats */

    /* One network for both parts: [emb(token) | x_t | t, sin/cos(pi 2^k t)] -> 2 + K + 1. */
    mlp_config cfg = {.n_tokens = 1, .vocab = K + 1, .embed_dim = 32, .n_reals = 2,
                      .time_freqs = 4, .n_hidden = (int)o.layers, .hidden = (int)o.hidden,
                      .out_dim = (int)stride, .act = MLP_ACT_SWISH};
    int ms = mlp_create(&net, &cfg, (uint64_t)o.seed);
    if (ms) { fprintf(stderr, "multimodal: mlp: %s\n", mlp_strerror(ms)); goto done; }

    printf("multimodal: libdfm %s; token in [%d] (mask source, kappa = t) x point in R^2 (CondOT);\n"
           "  one MLP %ldx%ld Swish (%zu parameters) -> %d logits + 2 velocities; "
           "loss generalized KL + MSE; batch %zu, %ld iterations, %ld threads\n",
           dfm_version_string(), K, o.layers, o.hidden, mlp_param_count(net), K + 1, B, o.iters,
           o.threads);
    fflush(stdout);
    double t0 = ex2_now(), ema = 0.0;
    for (long it = 0; it < o.iters; it++) {
        TRY(dfm_rng_fill((uint64_t)o.seed, STREAM_DATA, DFM_DRAW_UNIFORM, 0, B, 2, (uint32_t)it,
                         (int)o.threads, u), "data draws");
        TRY(dfm_rng_fill((uint64_t)o.seed, STREAM_DATA + 1, DFM_DRAW_NORMAL, 0, B, 1, (uint32_t)it,
                         (int)o.threads, z), "data draws");
        target_rows(u, z, B, k1, x1);
        double lv = 0.0;
        dfm_train_args ta = {.struct_size = sizeof ta, .rows = B, .x1_tokens = k1, .x1_reals = x1,
                             .forward = fwd, .backward = bwd, .user_data = net, .loss = &lv};
        st = dfm_trainer_step(tr, &ta);
        if (st) { where = dfm_trainer_last_error(tr); goto lib_fail; }
        /* Adam; cosine decay to 5% over the second half */
        double frac = (double)it / (double)o.iters, lr = o.lr;
        if (frac > 0.5) lr *= 0.05 + 0.95 * 0.5 * (1.0 + cos(3.141592653589793 * (frac - 0.5) * 2.0));
        mlp_adam opt = mlp_adam_default((float)lr);
        if ((ms = mlp_adam_step(net, &opt)) != 0) {
            fprintf(stderr, "multimodal: adam: %s\n", mlp_strerror(ms));
            goto done;
        }
        ema = it ? 0.98 * ema + 0.02 * lv : lv;
        if ((it + 1) % 250 == 0 || it + 1 == o.iters) {
            printf("  iter %5ld  loss %.4f  (%.1f s)\n", it + 1, ema, ex2_now() - t0);
            fflush(stdout);
        }
    }
    double train_seconds = ex2_now() - t0;

    /* Joint sampling: masked token and x0 ~ N(0, I); each step one model call, then the exact
     * mixture step for the token and an Euler step for the point. */
    TRY(dfm_sampler_create(&smp, gp, DFM_METHOD_EXACT, NULL), "sampler");
    TRY(dfm_sampler_set_int(smp, DFM_OPT_SEED, o.seed), "sampler seed");
    TRY(dfm_sampler_set_int(smp, DFM_OPT_THREADS, o.threads), "sampler threads");
    TRY(dfm_sampler_set_steps(smp, (size_t)o.steps), "sampler steps");
    progress_ctx pc0 = {ex2_now()};
    dfm_run_args ra = {.struct_size = sizeof ra, .model = mlp_model_fn, .model_data = net,
                       .rows = N, .tokens = ks, .reals = xs, .draw_source = 1,
                       .progress = sample_progress, .progress_data = &pc0};
    st = dfm_sampler_run(smp, &ra);
    if (st) { where = dfm_sampler_last_error(smp); goto lib_fail; }
    double sample_seconds = ex2_now() - pc0.t0;
#undef TRY

    /* ---- joint quality ---- */
    size_t cnt[K + 1] = {0}, on_own = 0, on_any = 0, shuf = 0;
    double sx[K] = {0}, sy[K] = {0};
    size_t on_k[K] = {0};
    for (size_t i = 0; i < N; i++) {
        int k = ks[i] >= 0 && ks[i] < K ? ks[i] : K;
        float x = xs[2 * i], y = xs[2 * i + 1];
        cnt[k]++;
        int any = 0;
        for (int j = 0; j < K; j++) any |= on_ring(j, x, y);
        on_any += (size_t)any;
        if (k < K) {
            sx[k] += x;
            sy[k] += y;
            on_k[k] += (size_t)on_ring(k, x, y);
            on_own += (size_t)on_ring(k, x, y);
        }
        /* the token of row i with the point of another row (an independent pairing) */
        size_t j = (i + N / 2 + 1) % N;
        shuf += (size_t)on_ring(ks[i], xs[2 * j], xs[2 * j + 1]);
    }
    double tv = 0.5 * (double)cnt[K] / (double)N, mean_err = 0.0;
    printf("per class: token freq (target) | conditional mean error | on own ring\n");
    for (int k = 0; k < K; k++) {
        double f = (double)cnt[k] / (double)N, cx, cy, e = INFINITY;
        tv += 0.5 * fabs(f - PI_K[k]);
        centre(k, &cx, &cy);
        if (cnt[k]) e = hypot(sx[k] / (double)cnt[k] - cx, sy[k] / (double)cnt[k] - cy);
        if (!(e <= mean_err)) mean_err = e;
        printf("  k=%d  %.4f (%.2f)  |  %.4f  |  %.4f\n", k, f, PI_K[k], e,
               cnt[k] ? (double)on_k[k] / (double)cnt[k] : 0.0);
    }
    double joint = (double)on_own / (double)N, anyr = (double)on_any / (double)N,
           shuffled = (double)shuf / (double)N;
    printf("masked tokens left: %zu; points on some ring %.4f; on their own token's ring %.4f; "
           "with shuffled tokens %.4f\n", cnt[K], anyr, joint, shuffled);
    printf("sampling: %zu rows, %ld steps, %.2f s\n", N, o.steps, sample_seconds);
    char title[96];
    snprintf(title, sizeof title, "TV %.3f  joint on support %.3f", tv, joint);
    if (write_png(o.out, ks, xs, N, title)) {
        fprintf(stderr, "multimodal: cannot write %s: %s\n", o.out, strerror(errno));
        goto done;
    }
    printf("wrote %s\n", o.out);
    printf("result: token_tv=%.4f joint_on_support=%.4f mean_err=%.4f any_ring=%.4f "
           "shuffled=%.4f train_seconds=%.1f sample_seconds=%.1f final_loss=%.4f iters=%ld "
           "threads=%ld\n",
           tv, joint, mean_err, anyr, shuffled, train_seconds, sample_seconds, ema, o.iters,
           o.threads);
    rc = 0;
    goto done;

lib_fail:
    fprintf(stderr, "multimodal: libdfm error %d (%s): %s\n", st, dfm_strerror(st), where);
done:
    dfm_sampler_free(smp);
    dfm_trainer_free(tr);
    dfm_loss_free(lp);
    dfm_loss_free(lm);
    dfm_loss_free(lk);
    dfm_generator_free(gp);
    dfm_generator_free(gv);
    dfm_generator_free(gd);
    dfm_path_free(pp);
    dfm_path_free(pc);
    dfm_path_free(pd);
    dfm_space_free(sc);
    dfm_space_free(sd);
    dfm_scheduler_free(sched);
    mlp_free(net);
    free(u); free(z); free(x1); free(xs); free(k1); free(ks);
    return rc;
}
