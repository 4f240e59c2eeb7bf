/* libdfm private definitions shared by all modules. Not installed. */
#ifndef DFM_INTERNAL_H
#define DFM_INTERNAL_H

#include "dfm/dfm.h"
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#  define DFM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#  define DFM_LIKELY(x) __builtin_expect(!!(x), 1)
#  define DFM_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#  define DFM_PRINTF(a, b)
#  define DFM_LIKELY(x) (x)
#  define DFM_UNLIKELY(x) (x)
#endif

/* Function multiversioning for the hot kernels (x86-64 GCC/Clang with ifunc); off with
 * -DDFM_NO_CLONES (sanitizer and fuzzing builds, the portable-kernel digest run). Only on static
 * functions: clang 14 names an external one's dispatcher "name.ifunc" (callers in other files
 * miss it) and gives every dispatcher a global "name.resolver" symbol, hidden from the shared
 * object by lib/dfm.map, so cloned function names must be unique across src/. Vector types never
 * pass by value between functions (clang rejects it without AVX, GCC notes the ABI change). */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && !defined(DFM_NO_CLONES) \
    && (defined(__clang__) ? (__clang_major__ >= 14) : (__GNUC__ >= 6))
#  define DFM_CLONES __attribute__((target_clones("avx2", "default")))
#else
#  define DFM_CLONES
#endif

typedef struct dfm__pool dfm__pool;

/* What every handle starts with: its allocator, options common to all, and its error detail. */
/* Thread-local storage (dfm_last_error, the running handle): C11 _Thread_local, GNU __thread
 * or MSVC __declspec(thread); without any (or with -DDFM_NO_TLS) DFM_TLS is undefined and the
 * features that need it degrade as docs/errors.md says. */
#if !defined(DFM_NO_TLS)
#  if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#    define DFM_TLS _Thread_local
#  elif defined(__GNUC__)
#    define DFM_TLS __thread
#  elif defined(_MSC_VER)
#    define DFM_TLS __declspec(thread)
#  endif
#endif

typedef struct dfm_base {
    dfm_allocator mem;
    int nthreads;          /* DFM_OPT_THREADS */
    int spin_us;           /* DFM_OPT_SPIN_US */
    dfm__pool *pool;       /* persistent workers (parallel.c), NULL until a wide call needs them */
    uint64_t seed;         /* DFM_OPT_SEED */
    int cb_raw;            /* raw value returned by the last failed callback (0: none) */
    const char *running;   /* the public call in progress on this handle (its host callbacks may
                            * be running), or NULL: see dfm__enter */
    const char *free_refused; /* the dfm_*_free refused inside that call's callbacks, or NULL */
    struct dfm_base *outer; /* the handle running on this thread when this one entered */
    char err[DFM_ERROR_MAX];
} dfm_base;

/* Copy an optional allocator (NULL: malloc/free). Returns DFM_EINVAL for a half-set one. */
int dfm__mem_init(dfm_allocator *dst, const dfm_allocator *src);
void *dfm__alloc(const dfm_allocator *m, size_t n);
void *dfm__calloc(const dfm_allocator *m, size_t count, size_t size); /* zeroed, overflow-checked */
void dfm__free(const dfm_allocator *m, void *p);
/* Sizes (docs/errors.md "Sizes"). A call whose rows x row_bytes exceeds PTRDIFF_MAX (no buffer
 * can hold it, or the product overflows size_t) fails with DFM_EOVERFLOW before any loop over
 * its inputs; what names the rows' data ("tokens and reals"). */
int dfm__rows_fit(dfm_base *b, size_t rows, size_t row_bytes, const char *what);
/* The bytes of the largest allocation that failed on this thread since the last dfm__clear
 * (SIZE_MAX: a dfm__calloc whose size overflows), or 0; dfm__clear resets it. */
size_t dfm__alloc_failed(void);
/* Report a failed allocation: DFM_ENOMEM "cannot allocate N bytes of <what> for R rows; <hint>"
 * (DFM_EOVERFLOW when the size overflowed). hint: what lowers it, e.g. "lower
 * DFM_OPT_DS_CHUNK_ROWS", or NULL. */
int dfm__fail_nomem(dfm_base *b, const char *what, size_t rows, const char *hint);
/* The hint of buffers that grow with the batch: split it. */
#define DFM__HINT_ROWS "pass fewer rows per call (shards with row_offset give the same results)"

/* Initialise a base (allocator already validated); threads 1, seed 0, no error. */
void dfm__base_init(dfm_base *b, const dfm_allocator *mem);
/* Record an error message on a handle (and in the thread's dfm_last_error) and return code
 * (so: return dfm__fail(b, ...)). */
int dfm__fail(dfm_base *b, int code, const char *fmt, ...) DFM_PRINTF(3, 4);
/* The same for a call without a handle to hold the message: dfm_last_error only. */
int dfm__error(int code, const char *fmt, ...) DFM_PRINTF(2, 3);
/* A NULL required argument of a public function: "fn: what is NULL", DFM_EINVAL. */
int dfm__null(const char *fn, const char *what);
/* Clear the error detail at the start of a call that may fail. */
void dfm__clear(dfm_base *b);
/* Record a callback failure (raw value kept) and return DFM_ECALLBACK. */
int dfm__fail_callback(dfm_base *b, int raw, const char *what);
/* Re-entrancy (docs/threading.md). A public call that may run host callbacks marks its handle
 * for its duration: dfm__enter refuses (DFM_ESTATE) when the handle is already running, else
 * marks it and clears the error detail; dfm__leave unmarks it and returns st, turned into
 * DFM_ESTATE when a free was refused meanwhile (a refused call's message is dropped on
 * success). Calls that reconfigure, run or free a handle check it first: DFM__NOT_RUNNING(b)
 * returns DFM_ESTATE from the calling function; dfm__refuse_free returns 1 (and records the
 * misuse for dfm__leave) when the free must not happen. */
int dfm__enter(dfm_base *b, const char *call);
int dfm__leave(dfm_base *b, int st);
int dfm__refuse(dfm_base *b, const char *call);
int dfm__refuse_free(dfm_base *b, const char *call);
/* After a host callback returns: DFM_ESTATE when it freed (tried to free) the handle whose call
 * is running on this thread, so that the call stops before writing its outputs; else 0. */
int dfm__callback_freed(void);
#define DFM__NOT_RUNNING(b)                                                                      \
    do {                                                                                         \
        if (DFM_UNLIKELY((b)->running != NULL)) return dfm__refuse((b), __func__);               \
    } while (0)
/* Base options (threads, seed). Returns DFM_EUNSUPPORTED when opt is not a base option. */
int dfm__base_set_int(dfm_base *b, int opt, int64_t value);
int dfm__base_get_int(const dfm_base *b, int opt, int64_t *value);

/* Unwritten model output (docs/errors.md). Before each model call whose output libdfm validates,
 * the output is marked with a quiet NaN whose payload (DFM__UNWRITTEN) arithmetic never makes:
 * every entry (group 1), or the first and last entry of each block of `group` entries (the V
 * logits of a token: two stores per token instead of V). An entry that still holds it after
 * the call was not written by the model. Validation fails on any NaN, so the hot path only pays
 * the marking; on a failure, dfm__fail_unwritten tells "the model wrote nothing" and "part of
 * it" apart from an ordinary NaN. */
#define DFM__UNWRITTEN 0x7FDFDF4Du
void dfm__out_prefill(float *out, size_t n, size_t group);
static inline int dfm__unwritten(float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u == DFM__UNWRITTEN;
}
/* out: the output of one model call, rows x stride, marked with blocks of `group`. When a marked
 * entry of out[row][e0..e1) (the entries whose validation failed) holds the marker, records on b
 * what the model left unwritten, naming row `label` (the row as messages number it) and that
 * entry, and returns DFM_ENUMERIC; otherwise returns 0 and the caller reports the bad value.
 * who: "model", "forward" ... */
int dfm__fail_unwritten(dfm_base *b, const char *who, const float *out, size_t rows,
                        size_t stride, size_t group, size_t row, size_t e0, size_t e1,
                        size_t label);

/* Overflow-checked size arithmetic: 0 on success, DFM_EOVERFLOW otherwise. */
static inline int dfm__mul(size_t a, size_t b, size_t *out)
{
    if (b != 0 && a > SIZE_MAX / b) return DFM_EOVERFLOW;
    *out = a * b;
    return 0;
}
static inline int dfm__mul3(size_t a, size_t b, size_t c, size_t *out)
{
    size_t ab;
    if (dfm__mul(a, b, &ab)) return DFM_EOVERFLOW;
    return dfm__mul(ab, c, out);
}

/* Overlap of two buffers of na and nb bytes (NULL or empty: none). Outputs that would share
 * memory with another argument are refused (docs/errors.md "Sizes and buffers"). */
static inline int dfm__overlap(const void *a, size_t na, const void *b, size_t nb)
{
    if (!a || !b || !na || !nb) return 0;
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return x < y + nb && y < x + na;
}

/* Time checks shared by every module. */
static inline int dfm__time_ok(double t) { return t >= 0.0 && t <= 1.0; }

/* ---- parallel.c: the one internal parallel mechanism (pthreads, static contiguous chunks). ----
 * fn(ctx, begin, end, tid) is called for disjoint ranges covering [0, n); tid in [0, nthreads).
 * The first nonzero return (lowest chunk) is returned. With nthreads <= 1, or a thread that
 * cannot be created, the work runs on the calling thread: results never change. b (may be NULL)
 * supplies the handle's worker pool; without one, threads are created for the region. */
typedef int (*dfm__range_fn)(void *ctx, size_t begin, size_t end, int tid);
int dfm__parallel_for(dfm_base *b, int nthreads, size_t n, dfm__range_fn fn, void *ctx);
/* Dynamic distribution: fn(ctx, begin, end, tid) on grain-sized ranges claimed by whichever
 * thread is free (robust to a thread that starts late or is descheduled). Every range is
 * processed even when some return nonzero; returns a nonzero status if any did (callers that
 * report errors pick the lowest failing item themselves). */
int dfm__parallel_dynamic(dfm_base *b, int nthreads, size_t n, size_t grain, dfm__range_fn fn,
                          void *ctx);
/* How many threads parallel_for will really use for n items (<= nthreads, >= 1). */
int dfm__parallel_width(int nthreads, size_t n);
/* Give b a pool of nthreads - 1 workers (threads start on first use) unless it has one; call at
 * the start of a call that will run wide. A no-op for nthreads <= 1. DFM_ENOMEM (message on b)
 * when the pool cannot be allocated. */
int dfm__pool_prepare(dfm_base *b, int nthreads);
/* The handle's call is over: workers stop spinning and sleep until the next region. */
void dfm__pool_park(dfm_base *b);
/* Stop and join the workers and free the pool (with the handle). */
void dfm__pool_free(dfm_base *b);

#endif
