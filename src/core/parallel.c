/* The one internal parallel mechanism: static contiguous chunks run on POSIX threads, either
 * by a handle's persistent worker pool or, without one, by threads created for the region.
 * Chosen over OpenMP because it needs no compiler runtime (clang builds for libFuzzer and
 * ThreadSanitizer stay clean and self-contained), never touches a process-wide thread pool that
 * the host's own OpenMP or BLAS may be using, and gives a per-handle thread count. Every random
 * draw is keyed by position, so the split never changes results.
 *
 * The pool (one per handle, created by dfm__pool_prepare at the start of a call with threads
 * > 1, freed with the handle): nthreads - 1 workers wait for a job generation counter to move.
 * Both sides spin for a short while before sleeping on a condition variable, because a sampler
 * runs many short regions back to back (one per step or per model chunk) and a futex wake-up
 * costs as much as a small region. When the handle's call returns the workers are parked (they
 * stop spinning at once), so a host that uses several handles in turn never has idle workers
 * of one handle competing with the working threads of another. */
#include "core/internal.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

/* ---- fork-join with threads created for one region (no pool, or the pool is busy) ---- */

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

static int fork_join(int w, size_t n, dfm__range_fn fn, void *ctx)
{
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

/* ---- the persistent pool ---- */


typedef struct worker {
    struct dfm__pool *pool;
    int k;            /* chunk index, 1 .. cap */
    unsigned seen;    /* the job generation this worker last ran (or was created at) */
    pthread_t th;
} worker;

struct dfm__pool {
    dfm_allocator mem;
    int cap;          /* workers this pool holds: nthreads - 1 */
    int started;      /* workers running: 1 .. started have threads */
    int busy;         /* a region is running (a nested region falls back) */
    long pid;         /* process that created the threads (a forked child has none) */
    long ncpu;        /* online processors when the pool was made */
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    unsigned gen;     /* job generation (atomic) */
    int pending;      /* started workers that have not finished the job (atomic) */
    int quit;         /* atomic */
    int spin_us;      /* spin budget before sleeping (DFM_OPT_SPIN_US), atomic */
    dfm__range_fn fn; /* the job, written before gen moves */
    void *ctx;
    size_t n;
    int width;
    size_t grain;     /* 0: static chunks; else grain-sized claims with stealing */
    uint64_t *range;  /* cap + 1 packed (lo << 32 | hi) item ranges, one per thread (atomic) */
    int *status;      /* cap + 1 */
    worker *w;        /* cap, index k - 1 */
};

static inline void cpu_relax(void)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_ia32_pause();
#elif defined(__GNUC__) && defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + (int64_t)ts.tv_nsec;
}

/* Spin until *p != v (gen) or == 0 (pending), for at most spin ns; returns the last value.
 * The budget is meant to cover the gap between two regions of a sampler step (a model call on
 * a chunk of rows); a host's idle time is far longer and finds the workers asleep. */
static unsigned spin_gen(const unsigned *p, unsigned v, const int *quit, const int *spin_us)
{
    int64_t t0 = 0, spin = (int64_t)__atomic_load_n(spin_us, __ATOMIC_RELAXED) * 1000;
    if (spin <= 0) return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    for (unsigned i = 0;; i++) {
        unsigned g = __atomic_load_n(p, __ATOMIC_ACQUIRE);
        if (g != v || __atomic_load_n(quit, __ATOMIC_ACQUIRE)) return g;
        cpu_relax();
        if ((i & 255u) == 255u) {
            int64_t t = now_ns();
            if (t0 == 0) t0 = t;
            else if (t - t0 > spin) return g;
            spin = (int64_t)__atomic_load_n(spin_us, __ATOMIC_RELAXED) * 1000; /* 0: call returned */
            if ((i & 2047u) == 2047u) sched_yield(); /* a runnable thread waiting here goes first */
        }
    }
}

static int spin_pending(const int *p, int64_t spin)
{
    int64_t t0 = 0;
    if (spin <= 0) return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    for (unsigned i = 0;; i++) {
        int v = __atomic_load_n(p, __ATOMIC_ACQUIRE);
        if (v == 0) return 0;
        cpu_relax();
        if ((i & 255u) == 255u) {
            int64_t t = now_ns();
            if (t0 == 0) t0 = t;
            else if (t - t0 > spin) return v;
            if ((i & 2047u) == 2047u) sched_yield();
        }
    }
}

/* Dynamic mode: thread k owns the static range k and takes grains from its front (its data is
 * the one it would have had statically, so caches stay warm); a thread whose range is empty
 * steals grains from the back of the next non-empty range. Every item is processed whatever
 * fn returns. Ranges are packed (lo << 32 | hi) and changed by compare-and-swap. */
#if defined(__GCC_HAVE_SYNC_COMPARE_AND_SWAP_8)
#define HAVE_CAS8 1
#endif

static int take(uint64_t *r, size_t g, int back, size_t *b, size_t *e)
{
#ifndef HAVE_CAS8
    /* no 64-bit compare-and-swap without libatomic: a range is only ever taken by its owner,
     * from the front, so the mode degrades to static chunks */
    if (back) return 0;
    uint64_t v = *r, lo = v >> 32, hi = v & 0xFFFFFFFFu;
    if (lo >= hi) return 0;
    uint64_t nh = hi - lo > g ? lo + g : hi;
    *r = (nh << 32) | hi;
    *b = (size_t)lo; *e = (size_t)nh;
    return 1;
#else
    uint64_t v = __atomic_load_n(r, __ATOMIC_RELAXED);
    for (;;) {
        uint64_t lo = v >> 32, hi = v & 0xFFFFFFFFu, nv;
        if (lo >= hi) return 0;
        if (back) {
            uint64_t nl = hi - lo > g ? hi - g : lo;
            nv = (lo << 32) | nl;
            *b = (size_t)nl; *e = (size_t)hi;
        } else {
            uint64_t nh = hi - lo > g ? lo + g : hi;
            nv = (nh << 32) | hi;
            *b = (size_t)lo; *e = (size_t)nh;
        }
        if (__atomic_compare_exchange_n(r, &v, nv, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return 1;
    }
#endif
}

static int claim_loop(dfm__pool *p, int tid)
{
    int st = 0, w = p->width;
    size_t b, e;
    for (;;) {
        int got = take(&p->range[tid], p->grain, 0, &b, &e);
        for (int k = 1; !got && k < w; k++) got = take(&p->range[(tid + k) % w], p->grain, 1, &b, &e);
        if (!got) return st;
        int s = p->fn(p->ctx, b, e, tid);
        if (s && !st) st = s;
    }
}

static void *worker_main(void *arg)
{
    worker *me = (worker *)arg;
    dfm__pool *p = me->pool;
    for (;;) {
        unsigned g = spin_gen(&p->gen, me->seen, &p->quit, &p->spin_us);
        if (g == me->seen && !__atomic_load_n(&p->quit, __ATOMIC_ACQUIRE)) {
            pthread_mutex_lock(&p->mu);
            while ((g = __atomic_load_n(&p->gen, __ATOMIC_ACQUIRE)) == me->seen &&
                   !__atomic_load_n(&p->quit, __ATOMIC_ACQUIRE))
                pthread_cond_wait(&p->wake, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (__atomic_load_n(&p->quit, __ATOMIC_ACQUIRE)) return NULL;
        me->seen = g;
        int k = me->k;
        if (k < p->width) {
            size_t n = p->n, w = (size_t)p->width;
            if (p->grain) p->status[k] = claim_loop(p, k);
            else p->status[k] = p->fn(p->ctx, n * (size_t)k / w, n * (size_t)(k + 1) / w, k);
        }
        if (__atomic_sub_fetch(&p->pending, 1, __ATOMIC_ACQ_REL) == 0) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static void pool_destroy(dfm__pool *p)
{
    if (!p) return;
    if (p->pid == (long)getpid()) {
        pthread_mutex_lock(&p->mu);
        __atomic_store_n(&p->quit, 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
        for (int k = 1; k <= p->started; k++) pthread_join(p->w[k - 1].th, NULL);
        pthread_cond_destroy(&p->wake);
        pthread_cond_destroy(&p->done);
        pthread_mutex_destroy(&p->mu);
    }
    /* In a forked child the workers do not exist: only the memory is released. */
    dfm_allocator m = p->mem;
    dfm__free(&m, p->status);
    dfm__free(&m, p->range);
    dfm__free(&m, p->w);
    dfm__free(&m, p);
}

void dfm__pool_park(dfm_base *b)
{
    if (b && b->pool) __atomic_store_n(&b->pool->spin_us, 0, __ATOMIC_RELAXED);
}

void dfm__pool_free(dfm_base *b)
{
    if (!b) return;
    pool_destroy(b->pool);
    b->pool = NULL;
}

int dfm__pool_prepare(dfm_base *b, int nthreads)
{
    int cap = (nthreads > DFM_MAX_THREADS ? DFM_MAX_THREADS : nthreads) - 1;
    long pid = (long)getpid();
    if (cap < 1) return 0;
    if (b->pool && b->pool->cap >= cap && b->pool->pid == pid) return 0;
    dfm__pool_free(b);
    dfm__pool *p = (dfm__pool *)dfm__calloc(&b->mem, 1, sizeof *p);
    if (p) {
        p->status = (int *)dfm__calloc(&b->mem, (size_t)cap + 1, sizeof(int));
        p->range = (uint64_t *)dfm__calloc(&b->mem, (size_t)cap + 1, sizeof(uint64_t));
        p->w = (worker *)dfm__calloc(&b->mem, (size_t)cap, sizeof(worker));
    }
    if (!p || !p->status || !p->w || !p->range) {
        if (p) { dfm__free(&b->mem, p->status); dfm__free(&b->mem, p->w); dfm__free(&b->mem, p->range); }
        dfm__free(&b->mem, p);
        return dfm__fail(b, DFM_ENOMEM, "cannot allocate the worker pool for %d threads", nthreads);
    }
    if (pthread_mutex_init(&p->mu, NULL)) goto no_sync;
    if (pthread_cond_init(&p->wake, NULL)) { pthread_mutex_destroy(&p->mu); goto no_sync; }
    if (pthread_cond_init(&p->done, NULL)) {
        pthread_cond_destroy(&p->wake);
        pthread_mutex_destroy(&p->mu);
        goto no_sync;
    }
    p->mem = b->mem;
    p->cap = cap;
    p->pid = pid;
    p->ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    b->pool = p;
    return 0;
no_sync: /* no pool: regions use threads created for them, as before */
    dfm__free(&b->mem, p->range);
    dfm__free(&b->mem, p->status);
    dfm__free(&b->mem, p->w);
    dfm__free(&b->mem, p);
    return 0;
}

/* Starts workers up to `need` (lazily: a handle that never runs wide never has threads). */
static void pool_grow(dfm__pool *p, int need)
{
    while (p->started < need) {
        worker *w = &p->w[p->started];
        w->pool = p;
        w->k = p->started + 1;
        w->seen = __atomic_load_n(&p->gen, __ATOMIC_ACQUIRE);
        if (pthread_create(&w->th, NULL, worker_main, w) != 0) return;
        p->started++;
    }
}

/* Static ranges, each cut into grain-sized calls (the dynamic mode without a pool). */
typedef struct grained { dfm__range_fn fn; void *ctx; size_t grain; } grained;
static int grained_range(void *vctx, size_t begin, size_t end, int tid)
{
    const grained *g = (const grained *)vctx;
    int st = 0;
    for (size_t i = begin; i < end; i += g->grain) {
        int s = g->fn(g->ctx, i, end - i < g->grain ? end : i + g->grain, tid);
        if (s && !st) st = s;
    }
    return st;
}

static int run_region(dfm_base *b, int nthreads, size_t n, size_t grain, dfm__range_fn fn,
                      void *ctx);

int dfm__parallel_for(dfm_base *b, int nthreads, size_t n, dfm__range_fn fn, void *ctx)
{
    return run_region(b, nthreads, n, 0, fn, ctx);
}

int dfm__parallel_dynamic(dfm_base *b, int nthreads, size_t n, size_t grain, dfm__range_fn fn,
                          void *ctx)
{
    return run_region(b, nthreads, n, grain ? grain : 1, fn, ctx);
}

static int run_region(dfm_base *b, int nthreads, size_t n, size_t grain, dfm__range_fn fn,
                      void *ctx)
{
    size_t ngrains = grain ? (n + grain - 1) / grain : n;
    int w = dfm__parallel_width(nthreads, ngrains);
    if (n == 0) return 0;
    grained gr = {fn, ctx, grain};
    if (w == 1) return grain ? grained_range(&gr, 0, n, 0) : fn(ctx, 0, n, 0);
    dfm__pool *p = b ? b->pool : NULL;
    if (!p || p->busy || p->cap < w - 1 || p->pid != (long)getpid() || (uint64_t)n > 0xFFFFFFFFu)
        return grain ? fork_join(w, n, grained_range, &gr) : fork_join(w, n, fn, ctx);

    p->busy = 1;
    pool_grow(p, w - 1);
    for (int k = 0; k < w; k++) p->status[k] = 0;
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->width = w;
    p->grain = grain;
    for (int k = 0; k < w; k++) {
        uint64_t lo = (uint64_t)(n * (size_t)k / (size_t)w), hi = (uint64_t)(n * (size_t)(k + 1) / (size_t)w);
        /* the range of a thread that could not be started is taken by the others */
#ifdef HAVE_CAS8
        __atomic_store_n(&p->range[k], (lo << 32) | hi, __ATOMIC_RELAXED);
#else
        p->range[k] = (lo << 32) | hi;
#endif
    }
    /* More threads than processors: a spinning thread would hold a core that a working one
     * needs, so everyone sleeps at once. */
    int spin_us = p->ncpu > 0 && w > p->ncpu ? 0 : b->spin_us;
    __atomic_store_n(&p->spin_us, spin_us, __ATOMIC_RELAXED);
    int nw = p->started;
    __atomic_store_n(&p->pending, nw, __ATOMIC_RELEASE);
    __atomic_add_fetch(&p->gen, 1u, __ATOMIC_ACQ_REL);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);

    /* Chunk 0 here, and the chunks of workers that could not be started. */
    if (grain) {
        p->status[0] = claim_loop(p, 0);
    } else {
        p->status[0] = fn(ctx, 0, n / (size_t)w, 0);
        for (int k = nw + 1; k < w; k++)
            p->status[k] = fn(ctx, n * (size_t)k / (size_t)w, n * (size_t)(k + 1) / (size_t)w, k);
    }
    if (nw > 0 && spin_pending(&p->pending, (int64_t)spin_us * 1000) != 0) {
        pthread_mutex_lock(&p->mu);
        while (__atomic_load_n(&p->pending, __ATOMIC_ACQUIRE) != 0) pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
    p->busy = 0;
    for (int k = 0; k < w; k++)
        if (p->status[k]) return p->status[k];
    return 0;
}
