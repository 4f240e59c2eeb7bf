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

int dfm__mem_init(dfm_allocator *dst, const dfm_allocator *src)
{
    if (src == NULL) {
        dst->alloc = sys_alloc;
        dst->free = sys_free;
        dst->opaque = NULL;
        return 0;
    }
    if (src->alloc == NULL || src->free == NULL) return DFM_EINVAL;
    *dst = *src;
    return 0;
}

void *dfm__alloc(const dfm_allocator *m, size_t n)
{
    return m->alloc(n == 0 ? 1 : n, m->opaque);
}

void *dfm__calloc(const dfm_allocator *m, size_t count, size_t size)
{
    size_t n;
    if (dfm__mul(count, size, &n)) return NULL;
    void *p = dfm__alloc(m, n);
    if (p) memset(p, 0, n);
    return p;
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

int dfm__fail(dfm_base *b, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err, sizeof b->err, fmt, ap);
    va_end(ap);
    return code;
}

void dfm__clear(dfm_base *b)
{
    b->err[0] = '\0';
    b->cb_raw = 0;
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
