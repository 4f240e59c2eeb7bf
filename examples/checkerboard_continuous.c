/* checkerboard_continuous: conditional flow matching (CondOT path, MSE loss) on the 2-D
 * continuous checkerboard of flow_matching's 2-D flow matching notebook: points uniform on the
 * 8 black squares of a 4 x 4 board on [-2, 2]^2, scaled by 1 / 0.45 (so the board spans
 * [-4.44, 4.44]^2). An MLP velocity model is trained, then sampled twice from N(0, I) noise:
 * with an ODE solver (the flow) and with the Euler-Maruyama SDE sampler whose marginals are the
 * same. Writes a PNG of each sample set and reports the fraction of samples on the board's
 * black squares.
 *
 * Usage: checkerboard_continuous [--iters N] [--batch N] [--threads N] [--samples N]
 *                                [--ode midpoint|rk4|dopri5|euler] [--steps N] [--g G]
 *                                [--seed N] [--out PREFIX]
 * Writes PREFIX_ode.png and PREFIX_sde.png (default prefix: checkerboard_continuous). */
#include <dfm/dfm.h>

#include "ex2_common.h"
#include "mlp.h"

#define SCALE (1.0 / 0.45) /* the notebook's data = board / 0.45 */
#define STREAM_DATA 1000   /* this program's own random stream: data and times */

typedef struct opts {
    long iters, batch, threads, samples, steps, hidden, layers;
    double g, lr;
    long seed;
    int ode_method;
    const char *ode_name, *out;
} opts;

static void usage(FILE *f)
{
    fprintf(f, "usage: checkerboard_continuous [--iters N] [--batch N] [--threads N] "
               "[--samples N]\n"
               "         [--hidden N] [--layers N] [--lr LR]\n"
               "         [--ode midpoint|rk4|dopri5|euler] [--steps N] [--g G] [--seed N] "
               "[--out PREFIX]\n");
}

static int parse_args(int argc, char **argv, opts *o)
{
    for (int i = 1; i < argc; i += 2) { /* option, value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); exit(0); }
        if (!v) {
            fprintf(stderr, "checkerboard_continuous: %s needs a value (or is unknown)\n", a);
            usage(stderr);
            return -1;
        }
        int bad = 0;
        if (!strcmp(a, "--iters")) bad = ex2_parse_long(v, 1, 10000000, &o->iters);
        else if (!strcmp(a, "--batch")) bad = ex2_parse_long(v, 1, 1 << 20, &o->batch);
        else if (!strcmp(a, "--threads")) bad = ex2_parse_long(v, 1, DFM_MAX_THREADS, &o->threads);
        else if (!strcmp(a, "--samples")) bad = ex2_parse_long(v, 1, 10000000, &o->samples);
        else if (!strcmp(a, "--hidden")) bad = ex2_parse_long(v, 1, 4096, &o->hidden);
        else if (!strcmp(a, "--layers")) bad = ex2_parse_long(v, 1, MLP_MAX_HIDDEN, &o->layers);
        else if (!strcmp(a, "--steps")) bad = ex2_parse_long(v, 1, 100000, &o->steps);
        else if (!strcmp(a, "--seed")) bad = ex2_parse_long(v, 0, LONG_MAX, &o->seed);
        else if (!strcmp(a, "--lr")) bad = ex2_parse_double(v, 1e-7, 1.0, &o->lr);
        else if (!strcmp(a, "--g")) bad = ex2_parse_double(v, 0.0, 100.0, &o->g);
        else if (!strcmp(a, "--out")) o->out = v;
        else if (!strcmp(a, "--ode")) {
            static const struct { const char *name; int m; } ms[] = {
                {"euler", DFM_METHOD_EULER}, {"midpoint", DFM_METHOD_MIDPOINT},
                {"rk4", DFM_METHOD_RK4}, {"dopri5", DFM_METHOD_DOPRI5}};
            bad = -1;
            for (size_t k = 0; k < sizeof ms / sizeof ms[0]; k++)
                if (!strcmp(v, ms[k].name)) { o->ode_method = ms[k].m; o->ode_name = ms[k].name; bad = 0; }
        } else {
            fprintf(stderr, "checkerboard_continuous: unknown option %s\n", a);
            usage(stderr);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "checkerboard_continuous: bad value for %s: '%s'\n", a, v);
            usage(stderr);
            return -1;
        }
    }
    return 0;
}

/* The notebook's generator: x1 ~ U[-2, 2), x2 = U[0, 1) - 2 B + (floor(x1) mod 2), B ~ {0, 1}
 * (uniform on the black squares), then / 0.45. u holds 3 uniforms per row. */
static void checkerboard_points(const float *u, size_t rows, float *x)
{
    for (size_t r = 0; r < rows; r++) {
        double a = 4.0 * u[3 * r] - 2.0;
        double b = u[3 * r + 1] - 2.0 * (u[3 * r + 2] < 0.5f ? 0.0 : 1.0);
        double fa = floor(a), par = fa - 2.0 * floor(fa / 2.0); /* floor(a) mod 2 in {0, 1} */
        x[2 * r] = (float)(a * SCALE);
        x[2 * r + 1] = (float)((b + par) * SCALE);
    }
}

/* On the support: inside the board and floor(x) + floor(y) even (board units). */
static int on_support(float xs, float ys)
{
    double x = xs / SCALE, y = ys / SCALE;
    if (!(x >= -2.0 && x < 2.0 && y >= -2.0 && y < 2.0)) return 0;
    long s = (long)floor(x) + (long)floor(y);
    return (s % 2) == 0;
}

/* A 2-D histogram of the samples over [-5, 5]^2 on the board's picture (black squares light
 * grey), darker where denser. */
static int write_samples_png(const char *path, const float *x, size_t n, const char *title)
{
    enum { W = 440, M = 20 };
    const double lo = -5.0, hi = 5.0;
    ex2_img im;
    if (ex2_img_init(&im, W, W + 16)) return -1;
    int P = W - 2 * M; /* plot square */
    for (int py = 0; py < P; py++)
        for (int px = 0; px < P; px++) {
            float fx = (float)(lo + (hi - lo) * (px + 0.5) / P);
            float fy = (float)(hi - (hi - lo) * (py + 0.5) / P);
            ex2_px(&im, M + px, 16 + M + py, on_support(fx, fy) ? 0xdfe6ef : 0xffffff);
        }
    unsigned *cnt = (unsigned *)calloc((size_t)P * (size_t)P, sizeof(unsigned));
    if (!cnt) { ex2_img_free(&im); errno = ENOMEM; return -1; }
    unsigned mx = 1;
    for (size_t i = 0; i < n; i++) {
        double fx = (x[2 * i] - lo) / (hi - lo) * P, fy = (hi - x[2 * i + 1]) / (hi - lo) * P;
        if (!(fx >= 0 && fx < P && fy >= 0 && fy < P)) continue;
        unsigned *c = &cnt[(size_t)fy * (size_t)P + (size_t)fx];
        if (++*c > mx) mx = *c;
    }
    for (int py = 0; py < P; py++)
        for (int px = 0; px < P; px++) {
            unsigned c = cnt[(size_t)py * (size_t)P + (size_t)px];
            if (!c) continue;
            double s = 0.35 + 0.65 * log(1.0 + c) / log(1.0 + mx); /* 0.35 .. 1 */
            int v = (int)(255.0 * (1.0 - s));
            uint32_t col = ((uint32_t)(v / 3) << 16) | ((uint32_t)(v / 2) << 8) | (uint32_t)(120 + v / 2);
            ex2_px(&im, M + px, 16 + M + py, col);
        }
    free(cnt);
    /* frame and the board's outline */
    ex2_line(&im, M, 16 + M, M + P - 1, 16 + M, 1, 0x000000);
    ex2_line(&im, M, 16 + M + P - 1, M + P - 1, 16 + M + P - 1, 1, 0x000000);
    ex2_line(&im, M, 16 + M, M, 16 + M + P - 1, 1, 0x000000);
    ex2_line(&im, M + P - 1, 16 + M, M + P - 1, 16 + M + P - 1, 1, 0x000000);
    ex2_text(&im, M, 8, title, 2, 0x000000);
    int rc = ex2_png_write(path, &im);
    ex2_img_free(&im);
    return rc;
}

typedef struct progress_ctx { double t0; const char *what; } progress_ctx;

static int sample_progress(int step, int n_steps, double t, void *user)
{
    progress_ctx *p = (progress_ctx *)user;
    int every = n_steps > 0 ? (n_steps >= 8 ? n_steps / 4 : 1) : 25;
    if ((step + 1) % every == 0)
        printf("  %s: step %d%s%d t=%.3f (%.1f s)\n", p->what, step + 1, n_steps ? "/" : "",
               n_steps, t, ex2_now() - p->t0);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    opts o = {.iters = 10000, .batch = 1024, .threads = 1, .samples = 10000, .steps = 0, .hidden = 128, .layers = 3,
              .g = 1.0, .lr = 3e-3, .seed = 1, .ode_method = DFM_METHOD_MIDPOINT, .ode_name = "midpoint",
              .out = "checkerboard_continuous"};
    if (parse_args(argc, argv, &o)) return 2;
    long ode_steps = o.steps ? o.steps : 64, sde_steps = o.steps ? o.steps : 256;
    size_t plen = strlen(o.out) + 16;
    char *path_ode = (char *)malloc(plen), *path_sde = (char *)malloc(plen);
    if (!path_ode || !path_sde) { fprintf(stderr, "checkerboard_continuous: out of memory\n"); return 1; }
    snprintf(path_ode, plen, "%s_ode.png", o.out);
    snprintf(path_sde, plen, "%s_sde.png", o.out);
    /* Fail early on an unwritable output path rather than after training. */
    for (int k = 0; k < 2; k++) {
        const char *p = k ? path_sde : path_ode;
        FILE *f = fopen(p, "wb");
        if (!f) {
            fprintf(stderr, "checkerboard_continuous: cannot write %s: %s\n", p, strerror(errno));
            return 1;
        }
        fclose(f);
    }
    ex2_blas_threads((int)o.threads);

    int st = 0, rc = 1;
    const char *where = "";
    dfm_space *space = NULL;
    dfm_scheduler *sched = NULL;
    dfm_path *path = NULL;
    dfm_generator *vel = NULL, *dif = NULL;
    dfm_loss *loss = NULL;
    dfm_sampler *ode = NULL, *sde = NULL;
    mlp *net = NULL;
    size_t B = (size_t)o.batch, N = (size_t)o.samples;
    float *u = malloc(sizeof(float) * B * 3), *x1 = malloc(sizeof(float) * B * 2),
          *x0 = malloc(sizeof(float) * B * 2), *xt = malloc(sizeof(float) * B * 2),
          *out = malloc(sizeof(float) * B * 2), *grad = malloc(sizeof(float) * B * 2),
          *tf = malloc(sizeof(float) * B), *xs_ode = malloc(sizeof(float) * N * 2),
          *xs_sde = malloc(sizeof(float) * N * 2);
    double *t = malloc(sizeof(double) * B);
    if (!u || !x1 || !x0 || !xt || !out || !grad || !tf || !xs_ode || !xs_sde || !t) {
        fprintf(stderr, "checkerboard_continuous: out of memory\n");
        goto done;
    }

#define TRY(call, what) do { st = (call); if (st) { where = (what); goto lib_fail; } } while (0)
    TRY(dfm_space_create_euclidean(&space, 2, NULL), "space");
    TRY(dfm_scheduler_create_condot(&sched, NULL), "scheduler");
    TRY(dfm_path_create_affine(&path, space, sched, NULL), "path");
    TRY(dfm_path_set_int(path, DFM_OPT_SEED, o.seed), "path seed");
    TRY(dfm_path_set_int(path, DFM_OPT_THREADS, o.threads), "path threads");
    TRY(dfm_generator_create_velocity(&vel, path, DFM_PARAM_VELOCITY, NULL), "velocity generator");
    TRY(dfm_loss_create_mse(&loss, vel, NULL), "loss");
    TRY(dfm_loss_set_int(loss, DFM_OPT_THREADS, o.threads), "loss threads");

    /* Velocity model: [x, y, t, sin/cos(pi 2^k t), k < 4] -> layers x hidden Swish -> 2. */
    mlp_config cfg = {.n_reals = 2, .time_freqs = 4, .time_dim = 0, .n_hidden = (int)o.layers,
                      .hidden = (int)o.hidden,
                      .out_dim = 2, .act = MLP_ACT_SWISH};
    int ms = mlp_create(&net, &cfg, (uint64_t)o.seed);
    if (ms) { fprintf(stderr, "checkerboard_continuous: mlp: %s\n", mlp_strerror(ms)); goto done; }

    printf("checkerboard_continuous: libdfm %s, CondOT path, MSE loss, MLP %dx%d Swish "
           "(%zu parameters), batch %zu, %ld iterations, %ld threads\n",
           dfm_version_string(), cfg.n_hidden, cfg.hidden, mlp_param_count(net), B, o.iters, o.threads);
    fflush(stdout);
    double t_train0 = ex2_now(), ema = 0.0;
    for (long it = 0; it < o.iters; it++) {
        /* data (3 uniforms per point) and t ~ U[0, 1), keyed by the iteration */
        TRY(dfm_rng_fill((uint64_t)o.seed, STREAM_DATA, DFM_DRAW_UNIFORM, 0, B, 3,
                         (uint32_t)(2 * it), (int)o.threads, u), "data draws");
        TRY(dfm_rng_fill((uint64_t)o.seed, STREAM_DATA, DFM_DRAW_UNIFORM, 0, B, 1,
                         (uint32_t)(2 * it + 1), (int)o.threads, tf), "time draws");
        checkerboard_points(u, B, x1);
        for (size_t r = 0; r < B; r++) t[r] = tf[r];
        dfm_path_sample_args pa = {.struct_size = sizeof pa, .rows = B, .draw = (uint32_t)it,
                                   .t = t, .x1_reals = x1, .xt_reals = xt, .x0_reals_out = x0};
        st = dfm_path_sample(path, &pa);
        if (st) { where = dfm_path_last_error(path); goto lib_fail; }
        ms = mlp_forward(net, B, NULL, xt, t, out, 2);
        if (ms) { fprintf(stderr, "checkerboard_continuous: forward: %s\n", mlp_strerror(ms)); goto done; }
        double lv = 0.0;
        dfm_loss_args la = {.struct_size = sizeof la, .rows = B, .t = t, .x0_reals = x0,
                            .x1_reals = x1, .xt_reals = xt, .out = out, .grad = grad, .loss = &lv};
        st = dfm_loss_eval(loss, &la);
        if (st) { where = dfm_loss_last_error(loss); goto lib_fail; }
        mlp_zero_grad(net);
        if ((ms = mlp_backward(net, grad, 2, NULL)) != 0) {
            fprintf(stderr, "checkerboard_continuous: backward: %s\n", mlp_strerror(ms));
            goto done;
        }
        /* Adam, learning rate o.lr, cosine decay to 5% over the last half */
        double frac = (double)it / (double)o.iters, lr = o.lr;
        if (frac > 0.5) lr *= 0.05 + 0.95 * 0.5 * (1.0 + cos(3.141592653589793 * (frac - 0.5) * 2.0));
        mlp_adam opt = mlp_adam_default((float)lr);
        if ((ms = mlp_adam_step(net, &opt)) != 0) {
            fprintf(stderr, "checkerboard_continuous: adam: %s\n", mlp_strerror(ms));
            goto done;
        }
        ema = it ? 0.98 * ema + 0.02 * lv : lv;
        if ((it + 1) % 250 == 0 || it + 1 == o.iters) {
            printf("  iter %5ld  loss %.4f  (%.1f s)\n", it + 1, ema, ex2_now() - t_train0);
            fflush(stdout);
        }
    }
    double train_seconds = ex2_now() - t_train0;

    /* ODE sampling: the flow of the learned velocity from N(0, I) at t = 0 to t = 1. */
    TRY(dfm_sampler_create(&ode, vel, o.ode_method, NULL), "ODE sampler");
    TRY(dfm_sampler_set_int(ode, DFM_OPT_SEED, o.seed), "ODE seed");
    TRY(dfm_sampler_set_int(ode, DFM_OPT_THREADS, o.threads), "ODE threads");
    TRY(dfm_sampler_set_steps(ode, (size_t)ode_steps), "ODE steps");
    if (o.ode_method == DFM_METHOD_DOPRI5) {
        TRY(dfm_sampler_set_double(ode, DFM_OPT_ATOL, 1e-5), "atol");
        TRY(dfm_sampler_set_double(ode, DFM_OPT_RTOL, 1e-5), "rtol");
    }
    progress_ctx pc = {ex2_now(), "ode"};
    dfm_run_args ra = {.struct_size = sizeof ra, .model = mlp_model_fn, .model_data = net,
                       .rows = N, .reals = xs_ode, .draw_source = 1,
                       .progress = sample_progress, .progress_data = &pc};
    st = dfm_sampler_run(ode, &ra);
    if (st) { where = dfm_sampler_last_error(ode); goto lib_fail; }
    double ode_seconds = ex2_now() - pc.t0;
    int64_t ode_calls = 0, ode_acc = 0;
    dfm_sampler_get_stat(ode, DFM_STAT_MODEL_CALLS, &ode_calls);
    dfm_sampler_get_stat(ode, DFM_STAT_STEPS, &ode_acc);

    /* SDE sampling: dX = [v + g^2/2 score] dt + g dW, same marginals; the score comes from the
     * velocity through the CondOT path (the library converts). */
    TRY(dfm_generator_create_diffusion(&dif, path, DFM_PARAM_VELOCITY, o.g, NULL), "diffusion generator");
    TRY(dfm_sampler_create(&sde, dif, DFM_METHOD_EULER_MARUYAMA, NULL), "SDE sampler");
    TRY(dfm_sampler_set_int(sde, DFM_OPT_SEED, o.seed), "SDE seed");
    TRY(dfm_sampler_set_int(sde, DFM_OPT_THREADS, o.threads), "SDE threads");
    TRY(dfm_sampler_set_steps(sde, (size_t)sde_steps), "SDE steps");
    pc.t0 = ex2_now();
    pc.what = "sde";
    ra.reals = xs_sde;
    st = dfm_sampler_run(sde, &ra);
    if (st) { where = dfm_sampler_last_error(sde); goto lib_fail; }
    double sde_seconds = ex2_now() - pc.t0;

    size_t on_ode = 0, on_sde = 0;
    for (size_t i = 0; i < N; i++) {
        on_ode += (size_t)on_support(xs_ode[2 * i], xs_ode[2 * i + 1]);
        on_sde += (size_t)on_support(xs_sde[2 * i], xs_sde[2 * i + 1]);
    }
    double f_ode = (double)on_ode / (double)N, f_sde = (double)on_sde / (double)N;
    char title[96];
    snprintf(title, sizeof title, "ODE (%s, %lld steps) on support %.3f", o.ode_name,
             (long long)ode_acc, f_ode);
    if (write_samples_png(path_ode, xs_ode, N, title)) {
        fprintf(stderr, "checkerboard_continuous: cannot write %s: %s\n", path_ode, strerror(errno));
        goto done;
    }
    snprintf(title, sizeof title, "SDE (EM, g=%.2f, %ld steps) on support %.3f", o.g,
             sde_steps, f_sde);
    if (write_samples_png(path_sde, xs_sde, N, title)) {
        fprintf(stderr, "checkerboard_continuous: cannot write %s: %s\n", path_sde, strerror(errno));
        goto done;
    }
    printf("ODE (%s): %zu samples, %lld steps, %lld model calls, %.2f s -> %s\n", o.ode_name, N,
           (long long)ode_acc, (long long)ode_calls, ode_seconds, path_ode);
    printf("SDE (Euler-Maruyama, g = %.3g): %zu samples, %ld steps, %.2f s -> %s\n", o.g, N,
           sde_steps, sde_seconds, path_sde);
    printf("result: ode_on_support=%.4f sde_on_support=%.4f train_seconds=%.1f "
           "final_loss=%.4f iters=%ld threads=%ld\n",
           f_ode, f_sde, train_seconds, ema, o.iters, o.threads);
    rc = 0;
    goto done;
#undef TRY

lib_fail:
    fprintf(stderr, "checkerboard_continuous: libdfm error %d (%s): %s\n", st, dfm_strerror(st),
            where);
done:
    dfm_sampler_free(sde);
    dfm_sampler_free(ode);
    dfm_loss_free(loss);
    dfm_generator_free(dif);
    dfm_generator_free(vel);
    dfm_path_free(path);
    dfm_scheduler_free(sched);
    dfm_space_free(space);
    mlp_free(net);
    free(u); free(x1); free(x0); free(xt); free(out); free(grad); free(tf);
    free(xs_ode); free(xs_sde); free(t);
    free(path_ode); free(path_sde);
    return rc;
}
