/* Generator-matching workloads: library time (the model callbacks are timed and excluded).
 *  GS: joint sampler of a product [1024]^256 (mask source, exact step) x R^64 (velocity),
 *      B = 32, 32 steps: ns per token-step.
 *  GG: classifier-free guidance on rates (two logits components, Euler in the rates, clamping),
 *      B = 8, d = 256, V = 1024, 16 steps: ns per token-step.
 *  GT: dfm_trainer_step with a product loss (generalized KL on [1024]^256 + MSE on R^64),
 *      B = 32: ns per token (model and backward excluded), the best of 20 steps (as DL: the
 *      machine is shared; the mean follows) after one untimed step (the batch buffers' first
 *      allocation). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dfm/dfm.h"

#define V 1024
#define DT 256
#define DR 64

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double model_time;
static float *fixed_logits; /* DT x V */

static int model(const dfm_model_io *io, void *ud)
{
    double t0 = now();
    (void)ud;
    for (size_t r = 0; r < io->rows; r++) {
        float *o = io->out + r * io->out_stride;
        size_t nt = io->n_tokens ? DT * V : 0;
        if (nt) memcpy(o, fixed_logits, nt * sizeof(float));
        if (io->branch == DFM_BRANCH_UNCOND && nt) o[3] += 1.0f;
        for (size_t j = nt; j < io->out_stride; j++) o[j] = -io->reals[r * io->n_reals + j - nt];
    }
    model_time += now() - t0;
    return 0;
}

static int backward(const dfm_model_io *io, const float *grad, void *ud)
{
    double t0 = now();
    (void)io; (void)grad; (void)ud;
    model_time += now() - t0;
    return 0;
}

#if defined(__GNUC__)
__attribute__((noreturn)) /* handles are set when it returns (clang -Wsometimes-uninitialized) */
#endif
static void die(const char *w) { fprintf(stderr, "bench_gm: %s failed\n", w); exit(1); }

int main(void)
{
    fixed_logits = malloc(sizeof(float) * DT * V);
    for (size_t i = 0; i < (size_t)DT * V; i++)
        fixed_logits[i] = (i % V) == V - 1 ? -1e30f : (float)((i * 2654435761u) % 1000) * 0.004f;
    dfm_space *sd, *se;
    dfm_scheduler *sc;
    dfm_path *pd, *pc, *pp;
    dfm_generator *gd, *gc, *gp, *gg;
    if (dfm_space_create_discrete(&sd, V, DT, NULL) || dfm_space_create_euclidean(&se, DR, NULL) ||
        dfm_scheduler_create_condot(&sc, NULL) ||
        dfm_path_create_mixture(&pd, sd, sc, DFM_SOURCE_MASK, V - 1, NULL, NULL) ||
        dfm_path_create_affine(&pc, se, sc, NULL) ||
        dfm_generator_create_factorized(&gd, pd, DFM_PARAM_LOGITS, NULL) ||
        dfm_generator_create_velocity(&gc, pc, DFM_PARAM_VELOCITY, NULL))
        die("setup");
    const dfm_generator *parts[2] = {gd, gc};
    const dfm_path *pparts[2] = {pd, pc};
    if (dfm_generator_create_product(&gp, parts, 2, NULL) ||
        dfm_path_create_product(&pp, pparts, 2, NULL) ||
        dfm_generator_create_guidance(&gg, gd, NULL, 2.0, NULL))
        die("products");
    for (int threads = 1; threads <= 2; threads++) {
        /* GS */
        {
            const size_t B = 32, steps = 32;
            dfm_sampler *s;
            if (dfm_sampler_create(&s, gp, DFM_METHOD_EXACT, NULL)) die("GS sampler");
            dfm_sampler_set_steps(s, steps);
            dfm_sampler_set_int(s, DFM_OPT_THREADS, threads);
            int32_t *tok = malloc(sizeof(int32_t) * B * DT);
            float *re = malloc(sizeof(float) * B * DR);
            dfm_run_args a;
            memset(&a, 0, sizeof a);
            a.struct_size = sizeof a;
            a.model = model;
            a.rows = B;
            a.tokens = tok;
            a.reals = re;
            a.draw_source = 1;
            model_time = 0;
            double t0 = now();
            if (dfm_sampler_run(s, &a)) die(dfm_sampler_last_error(s));
            double lib = now() - t0 - model_time;
            printf("GS ns_per_token_step=%.1f threads=%d\n", 1e9 * lib / (double)(B * DT * steps),
                   threads);
            free(tok); free(re);
            dfm_sampler_free(s);
        }
        /* GG */
        {
            const size_t B = 8, steps = 16;
            dfm_sampler *s;
            if (dfm_sampler_create(&s, gg, DFM_METHOD_EULER, NULL)) die("GG sampler");
            dfm_sampler_set_steps(s, steps);
            dfm_sampler_set_int(s, DFM_OPT_THREADS, threads);
            int32_t *tok = malloc(sizeof(int32_t) * B * DT);
            dfm_run_args a;
            memset(&a, 0, sizeof a);
            a.struct_size = sizeof a;
            a.model = model;
            a.rows = B;
            a.tokens = tok;
            a.draw_source = 1;
            model_time = 0;
            double t0 = now();
            if (dfm_sampler_run(s, &a)) die(dfm_sampler_last_error(s));
            double lib = now() - t0 - model_time;
            int64_t cl;
            dfm_sampler_get_stat(s, DFM_STAT_CLAMPED, &cl);
            printf("GG ns_per_token_step=%.1f threads=%d clamped=%lld\n",
                   1e9 * lib / (double)(B * DT * steps), threads, (long long)cl);
            free(tok);
            dfm_sampler_free(s);
        }
        /* GT */
        {
            const size_t B = 32, reps = 20;
            dfm_loss *lk, *lm, *lp;
            dfm_trainer *tr;
            if (dfm_loss_create_generalized_kl(&lk, pd, NULL) || dfm_loss_create_mse(&lm, gc, NULL))
                die("losses");
            const dfm_loss *ls[2] = {lk, lm};
            if (dfm_loss_create_product(&lp, pp, ls, NULL, 2, NULL) ||
                dfm_trainer_create(&tr, pp, lp, NULL))
                die("trainer");
            dfm_trainer_set_int(tr, DFM_OPT_THREADS, threads);
            int32_t *x1 = malloc(sizeof(int32_t) * B * DT);
            float *x1r = malloc(sizeof(float) * B * DR);
            for (size_t i = 0; i < B * DT; i++) x1[i] = (int32_t)((i * 7919u) % (V - 1));
            for (size_t i = 0; i < B * DR; i++) x1r[i] = (float)(i % 13) * 0.1f;
            dfm_train_args a;
            memset(&a, 0, sizeof a);
            a.struct_size = sizeof a;
            a.rows = B;
            a.x1_tokens = x1;
            a.x1_reals = x1r;
            a.forward = model;
            a.backward = backward;
            double loss;
            a.loss = &loss;
            /* one step untimed: the trainer's batch buffers are allocated and first touched
             * there (a training run reuses them every later step) */
            if (dfm_trainer_step(tr, &a)) die(dfm_trainer_last_error(tr));
            double best = 1e30, sum = 0.0;
            for (size_t k = 0; k < reps; k++) {
                model_time = 0;
                double t0 = now();
                if (dfm_trainer_step(tr, &a)) die(dfm_trainer_last_error(tr));
                double lib = now() - t0 - model_time;
                sum += lib;
                if (lib < best) best = lib;
            }
            printf("GT ns_per_token=%.1f threads=%d mean=%.1f\n", 1e9 * best / (double)(B * DT),
                   threads, 1e9 * sum / (double)(B * DT * reps));
            free(x1); free(x1r);
            dfm_trainer_free(tr);
            dfm_loss_free(lk); dfm_loss_free(lm); dfm_loss_free(lp);
        }
    }
    dfm_generator_free(gg); dfm_generator_free(gp); dfm_generator_free(gd); dfm_generator_free(gc);
    dfm_path_free(pp); dfm_path_free(pd); dfm_path_free(pc);
    dfm_space_free(sd); dfm_space_free(se); dfm_scheduler_free(sc);
    free(fixed_logits);
    return 0;
}
