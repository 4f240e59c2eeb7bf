/* rng_tour: libdfm's counter-based random streams. Draws categorical samples from a softmax
 * with two thread counts, checks they are identical, and reports the total-variation distance
 * of the histogram to the exact distribution.
 * Usage: rng_tour [samples] */
#include <dfm/dfm.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 1000000;
    if (n <= 0 || n > 100000000) {
        fprintf(stderr, "rng_tour: samples must be in [1, 1e8], got %s\n", argv[1]);
        return 2;
    }
    enum { K = 10 };
    float logits[K];
    double p[K], z = 0.0;
    long counts[K] = {0};
    for (int j = 0; j < K; j++) {
        logits[j] = (float)(2.0 * sin(1.3 * j));
        z += p[j] = exp((double)logits[j]);
    }
    for (int j = 0; j < K; j++) p[j] /= z;
    for (long i = 0; i < n; i++) {
        int32_t k;
        int st = dfm_rng_categorical(2024, 0, (uint64_t)i, 0, 0, logits, K, 1.0, &k);
        if (st) {
            fprintf(stderr, "rng_tour: %s\n", dfm_strerror(st));
            return 1;
        }
        counts[k]++;
    }
    double tv = 0.0;
    for (int j = 0; j < K; j++) tv += fabs((double)counts[j] / (double)n - p[j]);
    tv *= 0.5;
    /* The same normal draws with 1 and 2 threads. */
    enum { R = 512, C = 64 };
    static float a[R * C], b[R * C];
    dfm_rng_fill(7, 0, DFM_DRAW_NORMAL, 0, R, C, 0, 1, a);
    dfm_rng_fill(7, 0, DFM_DRAW_NORMAL, 0, R, C, 0, 2, b);
    int same = 1;
    for (int i = 0; i < R * C; i++) same &= a[i] == b[i];
    printf("libdfm %s: %ld categorical draws over %d classes\n", dfm_version_string(), n, K);
    printf("result: tv_distance=%.5f thread_independent=%d samples=%ld\n", tv, same, n);
    return same ? 0 : 1;
}
