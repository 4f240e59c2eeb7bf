/* DS workload (DESIGN.md §6): discrete sampling, B = 32, d = 256, V = 1024, mask source,
 * kappa = t, 64 steps; the model copies fixed logits. The model's time is measured inside the
 * callback and subtracted, so the figure is the library's own time per token-step.
 * DS and DS_euler call the model on cache-sized chunks of rows (DFM_OPT_DS_CHUNK_ROWS =
 * DFM_CHUNK_AUTO); DS_batch calls it once per step with the whole batch (the default), where
 * the 32 MiB of logits per step come from memory. DC is DS_batch with the confidence order and
 * top-p 0.9 (docs/discrete.md "Unmasking"). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dfm/dfm.h"

#define B 32
#define D 256
#define V 1024
#define STEPS 64

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct model { const float *logits; double secs; } model;

static int copy_model(const dfm_model_io *io, void *ud)
{
    model *m = (model *)ud;
    double t0 = now();
    memcpy(io->out, m->logits + io->row_offset * io->out_stride, io->rows * io->out_stride * sizeof(float));
    m->secs += now() - t0;
    return 0;
}

static double run(int method, int threads, long chunk, const float *logits, int confidence)
{
    dfm_space *sp = NULL;
    dfm_scheduler *sc = NULL;
    dfm_path *p = NULL;
    dfm_generator *g = NULL;
    dfm_sampler *s = NULL;
    if (dfm_space_create_discrete(&sp, V, D, NULL) || dfm_scheduler_create_condot(&sc, NULL) ||
        dfm_path_create_mixture(&p, sp, sc, DFM_SOURCE_MASK, V - 1, NULL, NULL) ||
        dfm_generator_create_factorized(&g, p, DFM_PARAM_LOGITS, NULL) ||
        dfm_sampler_create(&s, g, method, NULL)) {
        fprintf(stderr, "bench_ds: setup failed\n");
        exit(1);
    }
    dfm_sampler_set_steps(s, STEPS);
    dfm_sampler_set_int(s, DFM_OPT_THREADS, threads);
    dfm_sampler_set_int(s, DFM_OPT_DS_CHUNK_ROWS, chunk);
    if (confidence &&
        (dfm_sampler_set_int(s, DFM_OPT_DS_ORDER, DFM_ORDER_CONFIDENCE) ||
         dfm_sampler_set_double(s, DFM_OPT_DS_TOP_P, 0.9))) {
        fprintf(stderr, "bench_ds: %s\n", dfm_sampler_last_error(s));
        exit(1);
    }
    static int32_t tok[B * D];
    model m = {logits, 0.0};
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = copy_model;
    a.model_data = &m;
    a.rows = B;
    a.tokens = tok;
    a.draw_source = 1;
    double best = INFINITY;
    for (int rep = 0; rep < 25; rep++) {
        m.secs = 0.0;
        double t0 = now();
        int st = dfm_sampler_run(s, &a);
        double el = now() - t0 - m.secs;
        if (st) { fprintf(stderr, "bench_ds: %s\n", dfm_sampler_last_error(s)); exit(1); }
        if (el < best) best = el;
    }
    dfm_sampler_free(s);
    dfm_generator_free(g);
    dfm_path_free(p);
    dfm_scheduler_free(sc);
    dfm_space_free(sp);
    return best * 1e9 / ((double)B * D * STEPS);
}

int main(void)
{
    float *logits = (float *)malloc(sizeof(float) * B * D * V);
    if (!logits) return 1;
    uint32_t x = 12345u;
    for (size_t j = 0; j < (size_t)B * D * V; j++) {
        x = x * 1664525u + 1013904223u;
        logits[j] = (j % V == V - 1) ? -INFINITY : 4.0f * (float)(x >> 8) / 16777216.0f;
    }
    const long A = DFM_CHUNK_AUTO;
    double e1 = run(DFM_METHOD_EXACT, 1, A, logits, 0), e2 = run(DFM_METHOD_EXACT, 2, A, logits, 0);
    printf("DS ns_per_token_step=%.1f threads=1\n", e1);
    printf("DS ns_per_token_step=%.1f threads=2 speedup=%.2f\n", e2, e1 / e2);
    double b1 = run(DFM_METHOD_EXACT, 1, 0, logits, 0), b2 = run(DFM_METHOD_EXACT, 2, 0, logits, 0);
    printf("DS_batch ns_per_token_step=%.1f threads=1\n", b1);
    printf("DS_batch ns_per_token_step=%.1f threads=2 speedup=%.2f\n", b2, b1 / b2);
    double c1 = run(DFM_METHOD_EXACT, 1, 0, logits, 1);
    printf("DC ns_per_token_step=%.1f threads=1 ratio_to_DS_batch=%.2f\n", c1, c1 / b1);
    double u1 = run(DFM_METHOD_EULER, 1, A, logits, 0), u2 = run(DFM_METHOD_EULER, 2, A, logits, 0);
    printf("DS_euler ns_per_token_step=%.1f threads=1\n", u1);
    printf("DS_euler ns_per_token_step=%.1f threads=2 speedup=%.2f\n", u2, u1 / u2);
    free(logits);
    return 0;
}
