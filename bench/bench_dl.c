/* DL (DESIGN.md §6): mixture path sample + generalized-KL loss + gradient wrt the logits,
 * B = 32, d = 256, V = 1024, mask source, kappa = t. No model: the logits are a fixed buffer.
 * Prints the library time per token (t sampling, x_t sampling, loss and gradient) for 1 and 2
 * threads, and the loss+gradient time alone. */
#include "dfm/dfm.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(void)
{
    const size_t B = 32, D = 256;
    const int V = 1024, ITERS = 100;
    dfm_space *sp = NULL;
    dfm_scheduler *sc = NULL;
    dfm_path *p = NULL;
    dfm_loss *l = NULL;
    if (dfm_space_create_discrete(&sp, V, D, NULL) || dfm_scheduler_create_condot(&sc, NULL) ||
        dfm_path_create_mixture(&p, sp, sc, DFM_SOURCE_MASK, V - 1, NULL, NULL) ||
        dfm_loss_create_generalized_kl(&l, p, NULL)) {
        fprintf(stderr, "bench_dl: setup failed\n");
        return 1;
    }
    size_t nz = B * D * (size_t)V;
    float *z = malloc(nz * sizeof(float)), *g = malloc(nz * sizeof(float));
    int32_t *x1 = malloc(B * D * sizeof(int32_t)), *xt = malloc(B * D * sizeof(int32_t));
    double *t = malloc(B * sizeof(double));
    if (!z || !g || !x1 || !xt || !t) return 1;
    uint64_t s = 88172645463325252ULL;
    for (size_t k = 0; k < nz; k++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        z[k] = (float)((double)(s >> 11) * (8.0 / 9007199254740992.0) - 4.0);
    }
    for (size_t k = 0; k < B * D; k++) x1[k] = (int32_t)(k * 7919 % (size_t)(V - 1));
    for (size_t k = 0; k < nz; k++) g[k] = 0.0f; /* touch the pages once */
    for (int th = 1; th <= 2; th++) {
        dfm_path_set_int(p, DFM_OPT_THREADS, th);
        dfm_loss_set_int(l, DFM_OPT_THREADS, th);
        double loss, best = 1e30, best_loss = 1e30;
        for (int it = 0; it < ITERS; it++) {
            double t0 = now();
            dfm_time_sample(1, (uint32_t)it, DFM_TIME_UNIFORM, 0, 0, 1e-3, 0, B, t);
            dfm_path_sample_args pa = {0};
            pa.struct_size = sizeof pa;
            pa.rows = B;
            pa.draw = (uint32_t)it;
            pa.t = t;
            pa.x1_tokens = x1;
            pa.xt_tokens = xt;
            int st = dfm_path_sample(p, &pa);
            double t1 = now();
            dfm_loss_args la = {0};
            la.struct_size = sizeof la;
            la.rows = B;
            la.t = t;
            la.x1_tokens = x1;
            la.xt_tokens = xt;
            la.out = z;
            la.grad = g;
            la.loss = &loss;
            if (st || dfm_loss_eval(l, &la)) {
                fprintf(stderr, "bench_dl: %s %s\n", dfm_path_last_error(p), dfm_loss_last_error(l));
                return 1;
            }
            double t2 = now();
            if (t2 - t0 < best) best = t2 - t0;
            if (t2 - t1 < best_loss) best_loss = t2 - t1;
        }
        printf("DL ns_per_token=%.1f threads=%d\n", best * 1e9 / (double)(B * D), th);
        printf("DL loss_only ns_per_token=%.1f threads=%d\n", best_loss * 1e9 / (double)(B * D), th);
    }
    free(z); free(g); free(x1); free(xt); free(t);
    dfm_loss_free(l);
    dfm_path_free(p);
    dfm_scheduler_free(sc);
    dfm_space_free(sp);
    return 0;
}
