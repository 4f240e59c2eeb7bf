/* CL workload (DESIGN.md §6): affine CondOT path sample (x0 ~ N(0, I) drawn by libdfm) + CFM
 * loss + gradient, B = 4096, D = 64; and the ODE samplers' own overhead per element and step
 * with a trivial model (the model's time is measured and excluded). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dfm/dfm.h"

#define B 4096
#define D 64

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double model_time;

static int trivial_model(const dfm_model_io *io, void *ud)
{
    double t0 = now();
    (void)ud;
    /* velocity -x (a contraction): touches every element once */
    size_t n = io->rows * io->n_reals;
    for (size_t i = 0; i < n; i++) io->out[i] = -io->reals[i];
    model_time += now() - t0;
    return 0;
}

static void cl(int threads)
{
    dfm_space *sp;
    dfm_scheduler *sc;
    dfm_path *p;
    dfm_generator *g;
    dfm_loss *l;
    if (dfm_space_create_euclidean(&sp, D, NULL) || dfm_scheduler_create_condot(&sc, NULL) ||
        dfm_path_create_affine(&p, sp, sc, NULL) ||
        dfm_generator_create_velocity(&g, p, DFM_PARAM_VELOCITY, NULL) ||
        dfm_loss_create_mse(&l, g, NULL)) {
        fprintf(stderr, "setup failed\n");
        exit(1);
    }
    dfm_path_set_int(p, DFM_OPT_THREADS, threads);
    dfm_loss_set_int(l, DFM_OPT_THREADS, threads);
    float *x1 = malloc(sizeof(float) * B * D), *xt = malloc(sizeof(float) * B * D);
    float *x0 = malloc(sizeof(float) * B * D), *out = malloc(sizeof(float) * B * D);
    float *grad = malloc(sizeof(float) * B * D);
    double *t = malloc(sizeof(double) * B);
    for (size_t i = 0; i < (size_t)B * D; i++) {
        x1[i] = (float)((i * 2654435761u) % 1000) * 0.002f - 1.0f;
        out[i] = (float)((i * 40503u) % 1000) * 0.001f;
    }
    for (int r = 0; r < B; r++) t[r] = (r + 0.5) / B;
    dfm_path_sample_args pa;
    memset(&pa, 0, sizeof pa);
    pa.struct_size = sizeof pa;
    pa.rows = B; pa.t = t; pa.x1_reals = x1; pa.xt_reals = xt; pa.x0_reals_out = x0;
    double loss;
    dfm_loss_args la;
    memset(&la, 0, sizeof la);
    la.struct_size = sizeof la;
    la.rows = B; la.t = t; la.x0_reals = x0; la.x1_reals = x1; la.xt_reals = xt; la.out = out;
    la.grad = grad; la.loss = &loss;
    double best = 1e30;
    for (int rep = 0; rep < 100; rep++) {
        pa.draw = (uint32_t)rep;
        double t0 = now();
        if (dfm_path_sample(p, &pa) || dfm_loss_eval(l, &la)) {
            fprintf(stderr, "CL failed\n");
            exit(1);
        }
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    printf("CL ns_per_element=%.3f threads=%d\n", best * 1e9 / ((double)B * D), threads);
    free(x1); free(xt); free(x0); free(out); free(grad); free(t);
    dfm_loss_free(l); dfm_generator_free(g); dfm_path_free(p);
    dfm_scheduler_free(sc); dfm_space_free(sp);
}

static void ode(int method, const char *name, int threads)
{
    dfm_space *sp;
    dfm_scheduler *sc;
    dfm_path *p;
    dfm_generator *g;
    dfm_sampler *s;
    const size_t steps = 16;
    if (dfm_space_create_euclidean(&sp, D, NULL) || dfm_scheduler_create_condot(&sc, NULL) ||
        dfm_path_create_affine(&p, sp, sc, NULL) ||
        dfm_generator_create_velocity(&g, p, DFM_PARAM_VELOCITY, NULL) ||
        dfm_sampler_create(&s, g, method, NULL)) {
        fprintf(stderr, "setup failed\n");
        exit(1);
    }
    dfm_sampler_set_steps(s, steps);
    dfm_sampler_set_int(s, DFM_OPT_THREADS, threads);
    float *x = malloc(sizeof(float) * B * D);
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = trivial_model;
    a.rows = B;
    a.reals = x;
    a.draw_source = 1;
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        model_time = 0.0;
        double t0 = now();
        if (dfm_sampler_run(s, &a)) { fprintf(stderr, "run failed\n"); exit(1); }
        double dt = now() - t0 - model_time;
        if (dt < best) best = dt;
    }
    int64_t calls;
    dfm_sampler_get_stat(s, DFM_STAT_MODEL_CALLS, &calls);
    printf("ODE_%s ns_per_element_step=%.3f threads=%d (model calls per run %lld)\n", name,
           best * 1e9 / ((double)B * D * (double)steps), threads, (long long)calls);
    free(x);
    dfm_sampler_free(s); dfm_generator_free(g); dfm_path_free(p);
    dfm_scheduler_free(sc); dfm_space_free(sp);
}

int main(void)
{
    cl(1);
    cl(2);
    ode(DFM_METHOD_EULER, "euler", 1);
    ode(DFM_METHOD_EULER, "euler", 2);
    ode(DFM_METHOD_RK4, "rk4", 1);
    ode(DFM_METHOD_RK4, "rk4", 2);
    return 0;
}
