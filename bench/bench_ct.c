/* CT: rate-matrix workloads. Exact-sampler (uniformization) jumps per second on S = 256 states
 * with a dense time-dependent Q (the model callback's time is measured and excluded), and the
 * time of exp(hQ) for a 256 x 256 generator, side by side with scipy.linalg.expm on the same
 * matrix when python3 with scipy is available. */
#include <dfm/dfm.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S 256

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double lcg(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (double)((*s >> 8) & 0xFFFFFF) / 16777216.0;
}

typedef struct bm { float base[S * S]; double model_s; } bm;

/* Q_t(x, y) = base(x, y) (1 + 0.5 sin(2 pi t + x / 7)) */
static int model(const dfm_model_io *io, void *ud)
{
    bm *b = (bm *)ud;
    double t0 = now();
    for (size_t r = 0; r < io->rows; r++) {
        int x = io->tokens[r];
        float f = (float)(1.0 + 0.5 * sin(6.283185307179586 * io->t[r] + x / 7.0));
        const float *src = b->base + (size_t)x * S;
        float *dst = io->out + r * S;
        for (int y = 0; y < S; y++) dst[y] = src[y] * f;
    }
    b->model_s += now() - t0;
    return 0;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void bench_jumps(int threads)
{
    static bm b;
    unsigned sd = 17u;
    for (int i = 0; i < S * S; i++) b.base[i] = (float)(lcg(&sd) * 40.0 / S);
    dfm_space *sp = NULL;
    dfm_generator *g = NULL;
    dfm_sampler *s = NULL;
    if (dfm_space_create_discrete(&sp, S, 1, NULL) ||
        dfm_generator_create_rate_matrix(&g, NULL, sp, DFM_PARAM_RATES, NULL) ||
        dfm_sampler_create(&s, g, DFM_METHOD_UNIFORMIZATION, NULL)) {
        printf("CT jumps_per_second=error\n");
        return;
    }
    dfm_sampler_set_steps(s, 16);
    dfm_sampler_set_int(s, DFM_OPT_THREADS, threads);
    const size_t N = 2048;
    int32_t *tok = calloc(N, sizeof(int32_t));
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = model;
    a.model_data = &b;
    a.rows = N;
    a.tokens = tok;
    double best = INFINITY;
    int64_t jumps = 0;
    for (int rep = 0; rep < 3; rep++) {
        for (size_t r = 0; r < N; r++) tok[r] = (int32_t)(r % S);
        b.model_s = 0.0;
        double t0 = now();
        int st = dfm_sampler_run(s, &a);
        double el = now() - t0 - b.model_s;
        if (st) { printf("CT jumps_per_second=error (%s)\n", dfm_sampler_last_error(s)); break; }
        dfm_sampler_get_stat(s, DFM_STAT_JUMPS, &jumps);
        if (el < best) best = el;
    }
    printf("CT jumps_per_second=%.0f threads=%d\n", (double)jumps / best, threads);
    free(tok);
    dfm_sampler_free(s);
    dfm_generator_free(g);
    dfm_space_free(sp);
}

static void bench_expm(void)
{
    double *Q = malloc(sizeof(double) * S * S), *E = malloc(sizeof(double) * S * S);
    unsigned sd = 5u;
    for (int i = 0; i < S; i++) {
        double sum = 0.0;
        for (int j = 0; j < S; j++) {
            if (i == j) continue;
            Q[i * S + j] = lcg(&sd) * 4.0 / S;
            sum += Q[i * S + j];
        }
        Q[i * S + i] = -sum;
    }
    dfm_ctmc *w = NULL;
    if (dfm_ctmc_create(&w, S, NULL) || dfm_ctmc_expm(w, Q, 1.0, E)) {
        printf("CT expm256_ms=error\n");
        return;
    }
    double times[15];
    for (int k = 0; k < 15; k++) {
        double t0 = now();
        dfm_ctmc_expm(w, Q, 1.0, E);
        times[k] = now() - t0;
    }
    qsort(times, 15, sizeof(double), cmp);
    printf("CT expm256_ms=%.3f\n", times[7] * 1e3);

    /* scipy.linalg.expm on the same matrix, same run */
    char qpath[] = "/tmp/dfm_bench_ct_XXXXXX";
    int fd = mkstemp(qpath);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    int ok = 0;
    if (f) {
        ok = fwrite(Q, sizeof(double), S * S, f) == (size_t)S * S;
        fclose(f);
    }
    const char *pys[] = {"python3", "/usr/bin/python3"};
    double ms = -1.0, diff = -1.0;
    for (int k = 0; ok && k < 2 && ms < 0.0; k++) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd,
                 "%s -c \"import sys, time, numpy as np, scipy.linalg as sl\n"
                 "Q = np.fromfile('%s').reshape(%d, %d)\n"
                 "E = sl.expm(Q); ts = []\n"
                 "for _ in range(15):\n"
                 "    t0 = time.perf_counter(); E = sl.expm(Q); ts.append(time.perf_counter() - t0)\n"
                 "ts.sort(); E.tofile('%s.out'); print('%%.6f' %% (ts[7] * 1e3))\" 2>/dev/null",
                 pys[k], qpath, S, S, qpath);
        FILE *p = popen(cmd, "r");
        if (!p) continue;
        double v;
        if (fscanf(p, "%lf", &v) == 1) ms = v;
        pclose(p);
    }
    if (ms >= 0.0) {
        char opath[64];
        snprintf(opath, sizeof opath, "%s.out", qpath);
        FILE *o = fopen(opath, "rb");
        double *R = malloc(sizeof(double) * S * S);
        if (o && fread(R, sizeof(double), S * S, o) == (size_t)S * S) {
            diff = 0.0;
            for (int i = 0; i < S * S; i++) diff = fmax(diff, fabs(R[i] - E[i]));
        }
        if (o) fclose(o);
        remove(opath);
        free(R);
        printf("CT scipy_expm256_ms=%.3f\n", ms);
        if (diff >= 0.0) printf("CT expm256_maxdiff_vs_scipy=%.3g\n", diff);
    } else {
        printf("CT scipy_expm256_ms=unavailable\n");
    }
    remove(qpath);
    dfm_ctmc_free(w);
    free(Q);
    free(E);
}

int main(void)
{
    bench_expm();
    bench_jumps(1);
    bench_jumps(2);
    return 0;
}
