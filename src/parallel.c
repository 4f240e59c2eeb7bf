/* The one internal parallel mechanism: a fork-join over static contiguous chunks with POSIX
 * threads. Chosen over OpenMP because it needs no compiler runtime (clang builds for libFuzzer
 * and ThreadSanitizer stay clean and self-contained), never touches a process-wide thread pool
 * that the host's own OpenMP or BLAS may be using, and gives a per-call thread count. Every
 * random draw is keyed by position, so the split never changes results. */
#include "internal.h"

#include <pthread.h>

typedef struct chunk {
    dfm__range_fn fn;
    void *ctx;
    size_t begin, end;
    int tid;
    int status;
} chunk;

static void *run_chunk(void *arg)
{
    chunk *c = (chunk *)arg;
    c->status = c->fn(c->ctx, c->begin, c->end, c->tid);
    return NULL;
}

int dfm__parallel_width(int nthreads, size_t n)
{
    if (nthreads < 1 || n < 2) return 1;
    if ((size_t)nthreads > n) return (int)n;
    return nthreads > DFM_MAX_THREADS ? DFM_MAX_THREADS : nthreads;
}

int dfm__parallel_for(int nthreads, size_t n, dfm__range_fn fn, void *ctx)
{
    int w = dfm__parallel_width(nthreads, n);
    if (n == 0) return 0;
    if (w == 1) return fn(ctx, 0, n, 0);

    chunk ch[DFM_MAX_THREADS];
    pthread_t th[DFM_MAX_THREADS];
    int started[DFM_MAX_THREADS];
    for (int k = 0; k < w; k++) {
        ch[k].fn = fn;
        ch[k].ctx = ctx;
        ch[k].begin = n * (size_t)k / (size_t)w;
        ch[k].end = n * (size_t)(k + 1) / (size_t)w;
        ch[k].tid = k;
        ch[k].status = 0;
    }
    /* Chunk 0 runs here; a thread that cannot be created runs its chunk here too. */
    for (int k = 1; k < w; k++)
        started[k] = pthread_create(&th[k], NULL, run_chunk, &ch[k]) == 0;
    run_chunk(&ch[0]);
    for (int k = 1; k < w; k++) {
        if (started[k]) pthread_join(th[k], NULL);
        else run_chunk(&ch[k]);
    }
    for (int k = 0; k < w; k++)
        if (ch[k].status) return ch[k].status;
    return 0;
}
