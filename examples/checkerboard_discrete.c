/* checkerboard_discrete: discrete flow matching on a 2-D checkerboard, in the setting of
 * flow_matching's discrete 2-D notebook, so that the two can be compared.
 *
 * Data: points (x, y) of a 128 x 128 grid with 32-wide cells, on the support when
 * floor(x/32) % 2 == floor(y/32) % 2 (uniform there). Each point is two tokens in [0, 128).
 * Flow: a mixture path with kappa_t = t^2 from the uniform source (V = 128) or, with
 * --source mask, from the all-mask source (V = 129, mask token 128); generalized-KL loss on
 * posterior logits, 4,096 points per batch, Adam lr 1e-3, t drawn uniformly on [0, 1 - 1e-3].
 * Model: examples/mlp.h with the notebook's network: 128-wide token embeddings shared by both
 * coordinates, t through a Linear(1, 1), Swish on the input and after three hidden layers of 128.
 * Sampling: 64 steps of flow_matching's MixtureDiscreteEulerSolver step (--sampler euler, the
 * notebook's) or of the exact mixture step (--sampler exact).
 * Every --check-every iterations the run samples --check-samples points and stops as soon as their
 * on-support fraction reaches --target (0 disables the checks). The final 10,000 samples are
 * written as a PNG histogram.
 *
 * Usage: checkerboard_discrete [--iters N] [--threads T] [--out PNG] [--source uniform|mask]
 *                              [--sampler euler|exact] [--check-every N] [--check-samples N]
 *                              [--target F] [--samples N] [--steps K] [--seed S] [--log-every N]
 * Ends with: result: on_support=... train_seconds=... iters=... sample_seconds=... samples=... */
#include <dfm/dfm.h>

#include "ex_common.h"
#include "mlp.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GRID 128
#define CELL 32

static int on_support(int32_t x, int32_t y)
{
    return x >= 0 && x < GRID && y >= 0 && y < GRID && (x / CELL) % 2 == (y / CELL) % 2;
}

/* n points drawn uniformly from the support, keyed by (seed, stream 3, row, coord, draw):
 * x uniform on the grid, then y uniform over the cells of x's parity. */
static void sample_data(uint64_t seed, uint32_t draw, size_t n, int32_t *xy)
{
    for (size_t r = 0; r < n; r++) {
        int32_t x = (int32_t)(dfm_rng_uniform(seed, 3, r, 0, draw) * GRID);
        int32_t k = (int32_t)(dfm_rng_uniform(seed, 3, r, 1, draw) * (GRID / 2));
        int32_t cy = 2 * (k / CELL) + (x / CELL) % 2; /* one of the two cells of x's parity */
        xy[2 * r] = x;
        xy[2 * r + 1] = cy * CELL + k % CELL;
    }
}

typedef struct model_ctx {
    mlp *net;
    int mask; /* nonzero: a mask source; the mask token's logit is set to -Inf */
} model_ctx;

static void forbid_mask(float *out, size_t rows)
{
    for (size_t r = 0; r < rows; r++) {
        out[r * 2 * (GRID + 1) + GRID] = -INFINITY;
        out[r * 2 * (GRID + 1) + 2 * GRID + 1] = -INFINITY;
    }
}

/* The dfm_model_fn: the MLP's logits. With the mask source the data never holds the mask token,
 * so its posterior probability is 0: its logit is -Inf (probability 0 for libdfm). */
static int model_fn(const dfm_model_io *io, void *user_data)
{
    model_ctx *c = user_data;
    int st = mlp_model_fn(io, c->net);
    if (st == 0 && c->mask) forbid_mask(io->out, io->rows);
    return st;
}

/* Samples n points into xy and returns the on-support fraction (or -1 after printing an error). */
static double sample_points(dfm_sampler *s, model_ctx *ctx, size_t n, uint64_t row_offset,
                            int32_t *xy)
{
    dfm_run_args ra = {.struct_size = sizeof ra, .model = model_fn, .model_data = ctx, .rows = n,
                       .row_offset = row_offset, .tokens = xy, .draw_source = 1};
    int st = dfm_sampler_run(s, &ra);
    if (st) {
        ex_error("sampling failed: %s", dfm_sampler_last_error(s));
        return -1.0;
    }
    size_t on = 0;
    for (size_t r = 0; r < n; r++) on += (size_t)on_support(xy[2 * r], xy[2 * r + 1]);
    return (double)on / (double)n;
}

/* A PNG of the samples: a 2-D histogram on the 128 x 128 grid, each cell drawn as a 4 x 4 block
 * (white: no sample, darker blue: more), with thin gray lines on the 32-wide cell borders. */
static int write_png(const char *path, const int32_t *xy, size_t n)
{
    enum { S = 4, W = GRID * S };
    static unsigned cnt[GRID][GRID];
    static uint8_t img[W * W * 3];
    memset(cnt, 0, sizeof cnt);
    unsigned mx = 1;
    for (size_t r = 0; r < n; r++) {
        int32_t x = xy[2 * r], y = xy[2 * r + 1];
        if (x < 0 || x >= GRID || y < 0 || y >= GRID) continue;
        unsigned c = ++cnt[GRID - 1 - y][x]; /* y grows upwards */
        if (c > mx) mx = c;
    }
    for (int py = 0; py < W; py++)
        for (int px = 0; px < W; px++) {
            uint8_t *p = img + 3 * ((size_t)py * W + (size_t)px);
            double v = sqrt((double)cnt[py / S][px / S] / (double)mx); /* 0..1 */
            p[0] = (uint8_t)(255.0 - 235.0 * v);
            p[1] = (uint8_t)(255.0 - 175.0 * v);
            p[2] = (uint8_t)(255.0 - 75.0 * v);
            if (px % (CELL * S) == 0 || py % (CELL * S) == 0) p[0] = p[1] = p[2] = 180;
        }
    return ex_write_png(path, W, W, 3, img);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: checkerboard_discrete [options]\n"
            "  --iters N            most training iterations (default 5000)\n"
            "  --threads T          threads for BLAS and libdfm (default 2)\n"
            "  --out PNG            picture of the samples (default checkerboard_discrete.png)\n"
            "  --source S           uniform (default) or mask\n"
            "  --sampler M          euler (default, the notebook's) or exact\n"
            "  --check-every N      on-support check every N iterations, 0 = never (default 500)\n"
            "  --check-samples N    points per check (default 4000)\n"
            "  --target F           stop when a check reaches F (default 0.985)\n"
            "  --samples N          final samples (default 10000)\n"
            "  --steps K            sampler steps (default 64)\n"
            "  --batch B            points per training batch (default 4096)\n"
            "  --lr LR              Adam learning rate (default 1e-3)\n"
            "  --seed S             seed (default 0)\n"
            "  --log-every N        progress line every N iterations (default 250)\n");
}

int main(int argc, char **argv)
{
    ex_set_prog(argv[0]);
    long iters = 5000, threads = 2, check_every = 500, check_n = 4000, samples = 10000,
         steps = 64, batch = 4096, seed = 0, log_every = 250;
    double target = 0.985, lr = 1e-3;
    const char *out_path = "checkerboard_discrete.png";
    int source = 0, method = 0;
    static const char *const sources[] = {"uniform", "mask"};
    static const char *const methods[] = {"euler", "exact"};
    for (int i = 1; i < argc; i++) {
        const char *v;
        int m, bad = 0;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
#define OPT(name) ((m = ex_opt(argc, argv, &i, name, &v)) != 0 && (m < 0 ? (exit(2), 0) : 1))
        if (OPT("--iters")) bad = ex_parse_long("--iters", v, 1, 100000000, &iters);
        else if (OPT("--threads"))
            bad = ex_parse_long("--threads", v, 1, DFM_MAX_THREADS, &threads);
        else if (OPT("--out")) {
            out_path = v;
            if (!*v) {
                ex_error("--out needs a file name");
                return 2;
            }
        }
        else if (OPT("--source")) bad = ex_parse_choice("--source", v, sources, 2, &source);
        else if (OPT("--sampler")) bad = ex_parse_choice("--sampler", v, methods, 2, &method);
        else if (OPT("--check-every"))
            bad = ex_parse_long("--check-every", v, 0, 100000000, &check_every);
        else if (OPT("--check-samples"))
            bad = ex_parse_long("--check-samples", v, 1, 10000000, &check_n);
        else if (OPT("--target")) bad = ex_parse_double("--target", v, 0.0, 1.0, &target);
        else if (OPT("--samples")) bad = ex_parse_long("--samples", v, 1, 100000000, &samples);
        else if (OPT("--steps")) bad = ex_parse_long("--steps", v, 1, 100000, &steps);
        else if (OPT("--batch")) bad = ex_parse_long("--batch", v, 1, 1 << 22, &batch);
        else if (OPT("--lr")) bad = ex_parse_double("--lr", v, 1e-7, 1.0, &lr);
        else if (OPT("--seed")) bad = ex_parse_long("--seed", v, 0, LONG_MAX, &seed);
        else if (OPT("--log-every"))
            bad = ex_parse_long("--log-every", v, 1, 100000000, &log_every);
        else {
            ex_error("unknown argument '%s' (try --help)", argv[i]);
            return 2;
        }
#undef OPT
        if (bad) return 2;
    }
    if (ex_check_writable(out_path)) return 1; /* fail now, not after minutes of training */
    ex_set_blas_threads((int)threads);

    const int mask = source == 1;
    const int32_t V = mask ? GRID + 1 : GRID;
    const size_t B = (size_t)batch, row = 2 * (size_t)V, N = (size_t)samples;

    /* The flow: [V]^2, kappa_t = t^2, uniform or mask source, logits generator, GKL loss. */
    dfm_space *space = NULL;
    dfm_scheduler *sched = NULL;
    dfm_path *path = NULL;
    dfm_generator *gen = NULL;
    dfm_loss *loss = NULL;
    dfm_sampler *sampler = NULL;
    int st = dfm_space_create_discrete(&space, V, 2, NULL);
    if (!st) st = dfm_scheduler_create_polynomial(&sched, 2.0, NULL);
    if (!st) st = dfm_path_create_mixture(&path, space, sched,
                                          mask ? DFM_SOURCE_MASK : DFM_SOURCE_UNIFORM, GRID, NULL,
                                          NULL);
    if (!st) st = dfm_path_set_int(path, DFM_OPT_SEED, seed);
    if (!st) st = dfm_path_set_int(path, DFM_OPT_THREADS, threads);
    if (!st) st = dfm_generator_create_factorized(&gen, path, DFM_PARAM_LOGITS, NULL);
    if (!st) st = dfm_loss_create_generalized_kl(&loss, path, NULL);
    if (!st) st = dfm_loss_set_int(loss, DFM_OPT_THREADS, threads);
    if (!st) st = dfm_sampler_create(&sampler, gen, method ? DFM_METHOD_EXACT : DFM_METHOD_EULER,
                                     NULL);
    if (!st) st = dfm_sampler_set_steps(sampler, (size_t)steps);
    if (!st) st = dfm_sampler_set_int(sampler, DFM_OPT_SEED, seed);
    if (!st) st = dfm_sampler_set_int(sampler, DFM_OPT_THREADS, threads);
    if (st) {
        ex_error("setting up the flow failed: %s", dfm_strerror(st));
        return 1;
    }

    /* The notebook's network (docs/examples_mlp.md). */
    mlp_config cfg = {.n_tokens = 2, .vocab = V, .embed_dim = 128, .time_dim = 1, .n_hidden = 3,
                      .hidden = 128, .out_dim = (int)row, .act = MLP_ACT_SWISH, .act_input = 1};
    mlp *net = NULL;
    if ((st = mlp_create(&net, &cfg, (uint64_t)seed)) != 0) {
        ex_error("creating the network failed: %s", mlp_strerror(st));
        return 1;
    }
    model_ctx ctx = {net, mask};
    printf("checkerboard_discrete: %dx%d grid, %d-wide cells, %s source (V = %d), kappa = t^2, "
           "GKL loss, batch %zu, lr %g, %zu parameters, %s sampler with %ld steps, %ld thread(s), "
           "load %.2f\n",
           GRID, GRID, CELL, sources[source], V, B, lr, mlp_param_count(net), methods[method],
           steps, threads, ex_loadavg());

    int32_t *x1 = malloc(B * 2 * sizeof *x1), *xt = malloc(B * 2 * sizeof *xt);
    size_t nmax = N > (size_t)check_n ? N : (size_t)check_n;
    int32_t *xy = malloc(nmax * 2 * sizeof *xy);
    double *t = malloc(B * sizeof *t);
    float *out = malloc(B * row * sizeof *out), *grad = malloc(B * row * sizeof *grad);
    if (!x1 || !xt || !xy || !t || !out || !grad) { ex_error("out of memory"); return 1; }

    mlp_adam opt = mlp_adam_default((float)lr);
    double train_seconds = 0.0, check_seconds = 0.0, run_loss = 0.0, t_start = ex_now();
    double reached_seconds = -1.0;
    long reached_iter = -1, done = 0, run_n = 0;
    /* Train; every check_every iterations sample check_n points, and when their on-support
     * fraction reaches the target draw the final N samples. If those fall short of the target
     * (a check is a noisy estimate), training goes on. */
    double frac = -1.0, sample_seconds = 0.0;
    long it = 0;
    for (;;) {
        for (; it < iters; it++) {
            double a = ex_now();
            sample_data((uint64_t)seed, (uint32_t)it, B, x1);
            st = dfm_time_sample((uint64_t)seed, (uint32_t)it, DFM_TIME_UNIFORM, 0, 0, 1e-3, 0, B,
                                 t);
            dfm_path_sample_args ps = {.struct_size = sizeof ps, .rows = B, .draw = (uint32_t)it,
                                       .t = t, .x1_tokens = x1, .xt_tokens = xt};
            if (!st) st = dfm_path_sample(path, &ps);
            if (st) { ex_error("path sample: %s", dfm_path_last_error(path)); return 1; }
            if ((st = mlp_forward(net, B, xt, NULL, t, out, row)) != 0) {
                ex_error("forward: %s", mlp_strerror(st));
                return 1;
            }
            if (mask) forbid_mask(out, B);
            double lval = 0.0;
            dfm_loss_args la = {.struct_size = sizeof la, .rows = B, .t = t, .x1_tokens = x1,
                                .xt_tokens = xt, .out = out, .grad = grad, .loss = &lval};
            if ((st = dfm_loss_eval(loss, &la)) != 0) {
                ex_error("loss: %s", dfm_loss_last_error(loss));
                return 1;
            }
            mlp_zero_grad(net);
            mlp_backward(net, grad, row, NULL);
            mlp_adam_step(net, &opt);
            train_seconds += ex_now() - a;
            done = it + 1;
            run_loss += lval;
            run_n++;
            if (done % log_every == 0) {
                printf("iter %6ld  loss %.4f  train %.1f s  (wall %.1f s, load %.2f)\n", done,
                       run_loss / (double)run_n, train_seconds, ex_now() - t_start, ex_loadavg());
                fflush(stdout);
                run_loss = 0.0;
                run_n = 0;
            }
            if (check_every > 0 && done % check_every == 0) {
                double c0 = ex_now();
                /* rows far from the final run's, so the check draws are not the final ones */
                double cfrac = sample_points(sampler, &ctx, (size_t)check_n,
                                             1000000000ull + (uint64_t)done * 100000u, xy);
                if (cfrac < 0) return 1;
                check_seconds += ex_now() - c0;
                printf("check  iter %6ld  on_support %.4f (%ld samples)  train %.1f s\n", done,
                       cfrac, check_n, train_seconds);
                fflush(stdout);
                if (cfrac >= target) {
                    it++;
                    break;
                }
            }
        }
        /* The final samples. */
        double s0 = ex_now();
        frac = sample_points(sampler, &ctx, N, 0, xy);
        if (frac < 0) return 1;
        sample_seconds = ex_now() - s0;
        if (check_every > 0 && frac >= target) {
            reached_iter = done;
            reached_seconds = train_seconds;
        }
        if (check_every == 0 || frac >= target || done >= iters) break;
        printf("final  iter %6ld  on_support %.4f (%zu samples): below %.3f, training on\n", done,
               frac, N, target);
        check_seconds += sample_seconds;
    }
    if (write_png(out_path, xy, N)) return 1;
    printf("wrote %s\n", out_path);
    if (check_every > 0)
        printf("details: target %.3f %s (checks of %ld samples, then the final samples) after "
               "%ld iterations, %.1f s of training; checks took %.1f s; load %.2f\n",
               target, reached_iter > 0 ? "reached" : "not reached", check_n,
               reached_iter > 0 ? reached_iter : done,
               reached_iter > 0 ? reached_seconds : train_seconds, check_seconds, ex_loadavg());
    printf("result: on_support=%.4f train_seconds=%.1f iters=%ld sample_seconds=%.2f samples=%zu\n",
           frac, train_seconds, done, sample_seconds, N);

    free(x1); free(xt); free(xy); free(t); free(out); free(grad);
    mlp_free(net);
    dfm_sampler_free(sampler); dfm_loss_free(loss); dfm_generator_free(gen);
    dfm_path_free(path); dfm_scheduler_free(sched); dfm_space_free(space);
    return 0;
}
