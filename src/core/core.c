/* Versions, status strings, allocators and the per-handle error pattern. */
#include "core/internal.h"

#include <stdio.h>
#include <stdlib.h>

unsigned dfm_version_number(void) { return DFM_VERSION_NUMBER; }
const char *dfm_version_string(void) { return DFM_VERSION_STRING; }
int dfm_status_count(void) { return DFM_STATUS_COUNT; }
int dfm_max_threads(void) { return DFM_MAX_THREADS; }

const char *dfm_strerror(int status)
{
    switch (status) {
    case DFM_OK: return "success";
    case DFM_EINVAL: return "invalid argument";
    case DFM_ENOMEM: return "out of memory";
    case DFM_EOVERFLOW: return "size computation overflows";
    case DFM_ECALLBACK: return "a host callback failed";
    case DFM_ENUMERIC: return "non-finite or invalid number (NaN, Inf, negative probability or rate)";
    case DFM_ERANGE: return "value out of range (token, time or index)";
    case DFM_EUNSUPPORTED: return "operation not supported for this kind of object";
    case DFM_ESTOPPED: return "stopped by the progress callback";
    case DFM_ESTATE: return "handle not in a state that allows this call";
    case DFM_ELIMIT: return "a documented limit was exceeded";
    default: return "unknown status code";
    }
}

static void *sys_alloc(size_t n, void *opaque) { (void)opaque; return malloc(n); }
static void sys_free(void *p, void *opaque) { (void)opaque; free(p); }
/* dfm__calloc with the default allocator: fresh pages come zeroed, a huge block is not touched. */
static void *sys_calloc(size_t n) { return calloc(n == 0 ? 1 : n, 1); }

int dfm__mem_init(dfm_allocator *dst, const dfm_allocator *src)
{
    if (src == NULL) {
        dst->alloc = sys_alloc;
        dst->free = sys_free;
        dst->opaque = NULL;
        return 0;
    }
    if (src->alloc == NULL || src->free == NULL)
        return dfm__error(DFM_EINVAL, "the allocator needs both alloc and free; pass NULL "
                          "for malloc/free");
    *dst = *src;
    return 0;
}

/* The largest failed allocation of the calling thread's current call (dfm__fail_nomem). */
#ifdef DFM_TLS
static DFM_TLS size_t tls_failed;
#define FAILED(n) (tls_failed = (n) > tls_failed ? (n) : tls_failed)
#else
#define FAILED(n) ((void)0)
#endif

size_t dfm__alloc_failed(void)
{
#ifdef DFM_TLS
    return tls_failed;
#else
    return 0;
#endif
}

void *dfm__alloc(const dfm_allocator *m, size_t n)
{
    void *p = m->alloc(n == 0 ? 1 : n, m->opaque);
    if (!p) FAILED(n);
    return p;
}

void *dfm__calloc(const dfm_allocator *m, size_t count, size_t size)
{
    size_t n;
    if (dfm__mul(count, size, &n)) {
        FAILED(SIZE_MAX);
        return NULL;
    }
    if (m->alloc == sys_alloc) {
        void *p = sys_calloc(n);
        if (!p) FAILED(n);
        return p;
    }
    void *p = dfm__alloc(m, n);
    if (p) memset(p, 0, n);
    return p;
}

int dfm__rows_fit(dfm_base *b, size_t rows, size_t row_bytes, const char *what)
{
    size_t n;
    if (!dfm__mul(rows, row_bytes, &n) && n <= (size_t)PTRDIFF_MAX) return 0;
    return dfm__fail(b, DFM_EOVERFLOW, "rows = %zu overflows: %s of %zu bytes per row exceed "
                     "the largest buffer (at most %zu rows)", rows, what, row_bytes,
                     (size_t)PTRDIFF_MAX / (row_bytes ? row_bytes : 1));
}

int dfm__fail_nomem(dfm_base *b, const char *what, size_t rows, const char *hint)
{
    size_t n = dfm__alloc_failed();
#ifdef DFM_TLS
    tls_failed = 0;
#endif
    if (n == SIZE_MAX)
        return dfm__fail(b, DFM_EOVERFLOW, "the size of the %s for %zu rows overflows size_t%s%s",
                         what, rows, hint ? "; " : "", hint ? hint : "");
    if (n == 0)
        return dfm__fail(b, DFM_ENOMEM, "cannot allocate the %s for %zu rows%s%s", what, rows,
                         hint ? "; " : "", hint ? hint : "");
    return dfm__fail(b, DFM_ENOMEM, "cannot allocate %zu bytes of %s for %zu rows%s%s", n, what,
                     rows, hint ? "; " : "", hint ? hint : "");
}

void dfm__out_prefill(float *out, size_t n, size_t group)
{
    uint32_t *u = (uint32_t *)(void *)out;
    if (group > 1) { /* first and last entry of each block */
        for (size_t i = 0; i + group <= n; i += group) u[i] = u[i + group - 1] = DFM__UNWRITTEN;
        return;
    }
    /* The pattern in the first 64 bytes, then doubling copies: memcpy's large-block path (fast
     * strings) writes whole cache lines without reading them first. */
    size_t k = n < 16 ? n : 16;
    for (size_t i = 0; i < k; i++) u[i] = DFM__UNWRITTEN;
    while (k < n) {
        size_t c = n - k < k ? n - k : k;
        memcpy(u + k, u, c * sizeof *u);
        k += c;
    }
}

/* Whether entry j of a row is one dfm__out_prefill marks. */
static int marked(size_t j, size_t group)
{
    return group <= 1 || j % group == 0 || j % group == group - 1;
}

int dfm__fail_unwritten(dfm_base *b, const char *who, const float *out, size_t rows,
                        size_t stride, size_t group, size_t row, size_t e0, size_t e1,
                        size_t label)
{
    const float *o = out + row * stride;
    size_t k = e0;
    while (k < e1 && !(marked(k, group) && dfm__unwritten(o[k]))) k++;
    if (k == e1) return 0;
    size_t incomplete = 0, total = 0, in_row = 0, per_row = 0;
    for (size_t j = 0; j < stride; j++) per_row += (size_t)marked(j, group);
    for (size_t r = 0; r < rows; r++) {
        size_t c = 0;
        for (size_t j = 0; j < stride; j++)
            c += (size_t)(marked(j, group) && dfm__unwritten(out[r * stride + j]));
        incomplete += c > 0;
        total += c;
        if (r == row) in_row = c;
    }
    if (total == rows * per_row && rows > 1)
        return dfm__fail(b, DFM_ENUMERIC, "the %s callback wrote nothing: its whole output "
                         "(%zu rows x %zu floats) is unwritten", who, rows, stride);
    if (in_row == per_row)
        return dfm__fail(b, DFM_ENUMERIC, "the %s callback wrote nothing for row %zu (%zu of "
                         "the call's %zu rows are incomplete)", who, label, incomplete, rows);
    return dfm__fail(b, DFM_ENUMERIC, "the %s callback wrote only part of row %zu: "
                     "out[row %zu][entry %zu] is unwritten (%zu of the call's %zu rows are "
                     "incomplete)", who, label, label, k, incomplete, rows);
}

void dfm__free(const dfm_allocator *m, void *p)
{
    if (p) m->free(p, m->opaque);
}

void dfm__base_init(dfm_base *b, const dfm_allocator *mem)
{
    b->mem = *mem;
    b->nthreads = 1;
    b->spin_us = 1000;
    b->pool = NULL;
    b->seed = 0;
    b->cb_raw = 0;
    b->running = NULL;
    b->free_refused = NULL;
    b->outer = NULL;
    b->err[0] = '\0';
}

/* dfm_last_error: the message of the last failed call on this thread (docs/errors.md). */
#ifdef DFM_TLS
static DFM_TLS char tls_err[DFM_ERROR_MAX];
#endif

const char *dfm_last_error(void)
{
#ifdef DFM_TLS
    return tls_err;
#else
    return "dfm_last_error is unavailable: this build of libdfm has no thread-local storage";
#endif
}

int dfm__fail(dfm_base *b, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err, sizeof b->err, fmt, ap);
    va_end(ap);
#ifdef DFM_TLS
    memcpy(tls_err, b->err, sizeof tls_err);
#endif
    return code;
}

int dfm__error(int code, const char *fmt, ...)
{
#ifdef DFM_TLS
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_err, sizeof tls_err, fmt, ap);
    va_end(ap);
#else
    (void)fmt;
#endif
    return code;
}

int dfm__null(const char *fn, const char *what)
{
    return dfm__error(DFM_EINVAL, "%s: %s is NULL", fn, what);
}

void dfm__clear(dfm_base *b)
{
    b->err[0] = '\0';
    b->cb_raw = 0;
#ifdef DFM_TLS
    tls_failed = 0;
#endif
}

int dfm__refuse(dfm_base *b, const char *call)
{
    return dfm__fail(b, DFM_ESTATE, "%s called from inside a callback of this handle's %s: a "
                     "running handle may only be queried (getters, last_error, callback_status, "
                     "request_stop)", call, b->running);
}

int dfm__refuse_free(dfm_base *b, const char *call)
{
    if (!b->running) return 0;
    b->free_refused = call;
    dfm__fail(b, DFM_ESTATE, "%s called from inside a callback of this handle's %s was ignored: "
              "free the handle after that call returns", call, b->running);
    return 1;
}

#ifdef DFM_TLS
static DFM_TLS dfm_base *tls_running; /* innermost handle whose call runs on this thread */
#endif

int dfm__callback_freed(void)
{
#ifdef DFM_TLS
    if (tls_running && tls_running->free_refused) return DFM_ESTATE;
#endif
    return 0;
}

int dfm__enter(dfm_base *b, const char *call)
{
    if (DFM_UNLIKELY(b->running != NULL)) return dfm__refuse(b, call);
    dfm__clear(b);
    b->running = call;
#ifdef DFM_TLS
    b->outer = tls_running;
    tls_running = b;
#endif
    return 0;
}

int dfm__leave(dfm_base *b, int st)
{
    const char *call = b->running;
    b->running = NULL;
#ifdef DFM_TLS
    tls_running = b->outer;
#endif
    b->outer = NULL;
    if (DFM_UNLIKELY(b->free_refused != NULL)) {
        const char *fr = b->free_refused;
        b->free_refused = NULL;
        return dfm__fail(b, DFM_ESTATE, "%s called from inside a callback of this handle's %s "
                         "was ignored: free the handle after that call returns", fr, call);
    }
    if (st == 0) b->err[0] = '\0'; /* a refused nested call's message, if any */
    return st;
}

int dfm__fail_callback(dfm_base *b, int raw, const char *what)
{
    b->cb_raw = raw;
    return dfm__fail(b, DFM_ECALLBACK, "%s callback returned %d", what, raw);
}

int dfm__base_set_int(dfm_base *b, int opt, int64_t value)
{
    switch (opt) {
    case DFM_OPT_THREADS:
        if (value < 1 || value > DFM_MAX_THREADS)
            return dfm__fail(b, DFM_EINVAL, "threads must be in [1, %d], got %lld",
                             DFM_MAX_THREADS, (long long)value);
        b->nthreads = (int)value;
        return 0;
    case DFM_OPT_SEED:
        b->seed = (uint64_t)value;
        return 0;
    case DFM_OPT_SPIN_US:
        if (value < 0 || value > 1000000)
            return dfm__fail(b, DFM_EINVAL, "spin must be in [0, 1000000] microseconds, got %lld",
                             (long long)value);
        b->spin_us = (int)value;
        return 0;
    default:
        return DFM_EUNSUPPORTED;
    }
}

int dfm__base_get_int(const dfm_base *b, int opt, int64_t *value)
{
    switch (opt) {
    case DFM_OPT_THREADS: *value = b->nthreads; return 0;
    case DFM_OPT_SEED: *value = (int64_t)b->seed; return 0;
    case DFM_OPT_SPIN_US: *value = b->spin_us; return 0;
    default: return DFM_EUNSUPPORTED;
    }
}
