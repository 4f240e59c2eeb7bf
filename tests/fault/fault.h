/* Fault-injection fixture shared by tests/test_faults.c and the modules' scenario files
 * (tests/fault/<module>.h). See docs/reliability.md, "Adding a module's scenarios".
 *
 * A scenario is a function int fn(fx *f) that
 *   - builds what it needs, giving f->mem (a counting allocator) to every handle it creates, so
 *     that leaks are counted; setup made with a NULL allocator is not counted;
 *   - runs the ONE call under test inside FX_CALL(f, call), which arms the injection only for
 *     that call (allocation scenarios: the fail_at-th allocation during the call returns NULL;
 *     callback scenarios: the callbacks call fx_tick(f) and the cb_fail_at-th tick fails);
 *   - checks with ck_assert that a failed call left its outputs unwritten (FX_POISON_OUT and
 *     fx_check_out for *out handles, fx_fill/fx_unchanged for buffers);
 *   - frees everything and returns the status of the call under test; for callback scenarios it
 *     stores the raw callback value the library reports (cb_raw argument or
 *     dfm_<handle>_callback_status) in f->raw_seen.
 * The driver in test_faults.c runs it with n = 1, 2, ... until the call succeeds without an
 * injected failure and checks: failure -> the expected status, raw value, no live allocation. */
#ifndef DFM_TEST_FAULT_H
#define DFM_TEST_FAULT_H

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "dfm/dfm.h"

typedef struct fx {
    const char *name;      /* scenario name (messages) */
    dfm_allocator mem;     /* counting allocator: give it to every handle the scenario creates */
    long live;             /* allocations minus frees through mem (must be 0 at the end) */
    long total_allocs;     /* allocations through mem */
    int armed;             /* inside FX_CALL */
    long armed_allocs;     /* allocations attempted while armed */
    long fail_at;          /* fail the fail_at-th armed allocation (0: never) */
    int alloc_injected;    /* an allocation failure was injected */
    long ticks;            /* callback calls while armed */
    long cb_fail_at;       /* the cb_fail_at-th armed callback call fails (0: never) */
    int cb_injected;       /* a callback failure was injected */
    int cb_raw;            /* the raw value the failing callback returned */
    int raw_seen;          /* the raw value the library reported (set by the scenario) */
    long ticks_after_failure; /* callback calls after the injected failure */
    void *user;            /* free for the scenario */
} fx;

typedef int (*fx_fn)(fx *f);

/* One entry of a scenario table. expect: the status an injected failure must give (0 means the
 * default: DFM_ENOMEM for allocation tables, DFM_ECALLBACK for callback tables; a progress
 * callback that asks to stop gives DFM_ESTOPPED). min_points: the scenario must meet at least
 * this many allocation points / callback calls (so that it cannot pass vacuously).
 * check_raw: callback tables, the reported raw value must equal the one returned. */
typedef struct fx_scenario {
    const char *name;
    fx_fn fn;
    long min_points;
    int expect;
    int check_raw;
} fx_scenario;

/* The counters are updated atomically: run paths may allocate and call back from worker
 * threads (DFM_OPT_THREADS > 1). Which allocation is "the n-th" then depends on scheduling, but
 * every n still injects exactly one failure. */
#define FX_INC(x) __atomic_add_fetch(&(x), 1, __ATOMIC_SEQ_CST)
#define FX_DEC(x) __atomic_sub_fetch(&(x), 1, __ATOMIC_SEQ_CST)

static void *fx_alloc(size_t n, void *opaque)
{
    fx *f = (fx *)opaque;
    if (__atomic_load_n(&f->armed, __ATOMIC_SEQ_CST)) {
        long k = FX_INC(f->armed_allocs);
        if (f->fail_at && k == f->fail_at) {
            __atomic_store_n(&f->alloc_injected, 1, __ATOMIC_SEQ_CST);
            return NULL;
        }
    }
    void *p = malloc(n);
    if (p) { FX_INC(f->live); FX_INC(f->total_allocs); }
    return p;
}

static void fx_free(void *p, void *opaque)
{
    fx *f = (fx *)opaque;
    if (p) { FX_DEC(f->live); free(p); }
}

static inline void fx_reset(fx *f, const char *name)
{
    memset(f, 0, sizeof *f);
    f->name = name;
    f->mem.alloc = fx_alloc;
    f->mem.free = fx_free;
    f->mem.opaque = f;
}

static inline void fx_arm(fx *f) { __atomic_store_n(&f->armed, 1, __ATOMIC_SEQ_CST); }
static inline void fx_disarm(fx *f) { __atomic_store_n(&f->armed, 0, __ATOMIC_SEQ_CST); }

/* Runs one call with the injection armed; evaluates to its status. */
#define FX_CALL(f, call) (fx_arm(f), fx__st = (call), fx_disarm(f), fx__st)
/* Declares the status variable FX_CALL uses (put once at the top of a scenario). */
#define FX_DECL int fx__st

/* The raw value the k-th failing callback returns: nonzero, distinct per k, sign varies. */
static inline int fx_raw_for(long k) { return (int)(k % 2 ? 7000 + k : -(7000 + k)); }

/* Call from every host callback of a callback scenario: returns 0, or the raw failure value
 * when this is the cb_fail_at-th call made while armed. Calls made after the failure are
 * counted (an operation must stop at the first failing callback). */
static inline int fx_tick(fx *f)
{
    if (!__atomic_load_n(&f->armed, __ATOMIC_SEQ_CST)) return 0;
    if (__atomic_load_n(&f->cb_injected, __ATOMIC_SEQ_CST)) {
        FX_INC(f->ticks_after_failure);
        return 0;
    }
    long k = FX_INC(f->ticks);
    if (f->cb_fail_at && k == f->cb_fail_at) {
        f->cb_raw = fx_raw_for(k);
        __atomic_store_n(&f->cb_injected, 1, __ATOMIC_SEQ_CST);
        return f->cb_raw;
    }
    return 0;
}

/* *out handles: poison before the call, then check NULL on failure / non-NULL on success. */
#define FX_POISON_OUT(p) ((p) = (void *)(uintptr_t)0x5a5a5a5a)
#define fx_check_out(f, st, p)                                                                 \
    do {                                                                                       \
        if (st) ck_assert_msg((p) == NULL, "%s: *out not NULL after status %d", (f)->name, st); \
        else ck_assert_msg((p) != NULL, "%s: *out NULL after success", (f)->name);             \
    } while (0)

/* Output buffers: fill with a pattern before the call, check it is intact after a failure. */
static inline void fx_fill(void *buf, size_t bytes) { memset(buf, 0xa5, bytes); }
static inline int fx_unchanged(const void *buf, size_t bytes)
{
    const unsigned char *b = (const unsigned char *)buf;
    for (size_t i = 0; i < bytes; i++)
        if (b[i] != 0xa5) return 0;
    return 1;
}

/* In/out buffers (sampler tokens, reals): keep a copy before the call, compare after a failure. */
static inline void *fx_dup(const void *p, size_t bytes)
{
    void *c = malloc(bytes ? bytes : 1);
    if (c && bytes) memcpy(c, p, bytes);
    return c;
}
static inline int fx_same(const void *a, const void *b, size_t bytes)
{
    return bytes == 0 || memcmp(a, b, bytes) == 0;
}

#endif
