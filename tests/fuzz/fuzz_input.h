/* Shared helpers of libdfm's libFuzzer harnesses (tests/fuzz/fuzz_*.c, docs/reliability.md).
 * fz_* read typed values from the fuzzer's bytes; once the input is exhausted they return 0.
 * The value readers are biased towards the values that break numerical code: 0, -0, 1, the ends of
 * [0, 1], NaN, +-Inf, huge, tiny and subnormal numbers, size_t and int32 limits. */
#ifndef DFM_FUZZ_INPUT_H
#define DFM_FUZZ_INPUT_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dfm/dfm.h"

typedef struct fz {
    const uint8_t *p;
    size_t n;
    /* Allocation failures steered by the input: every allocation consumes no input, it fails
     * when the fail_mask bit of its index (mod 64) is set. live counts outstanding blocks. */
    uint64_t fail_mask;
    long allocs, live;
} fz;

static inline void fz_init(fz *f, const uint8_t *data, size_t size)
{
    f->p = data;
    f->n = size;
    f->fail_mask = 0;
    f->allocs = 0;
    f->live = 0;
}

static inline int fz_empty(const fz *f) { return f->n == 0; }

static inline uint8_t fz_u8(fz *f)
{
    if (!f->n) return 0;
    f->n--;
    return *f->p++;
}

static inline uint64_t fz_bytes(fz *f, int k)
{
    uint64_t v = 0;
    for (int i = 0; i < k; i++) v |= (uint64_t)fz_u8(f) << (8 * i);
    return v;
}

static inline uint32_t fz_u32(fz *f) { return (uint32_t)fz_bytes(f, 4); }
static inline uint64_t fz_u64(fz *f) { return fz_bytes(f, 8); }

/* An integer in [0, bound) (bound > 0). */
static inline size_t fz_below(fz *f, size_t bound)
{
    uint64_t v = bound <= 256 ? fz_u8(f) : bound <= 65536 ? fz_bytes(f, 2) : fz_u32(f);
    return (size_t)(v % bound);
}

/* A size: small values usually, limits and overflow-provoking values sometimes. */
static inline size_t fz_size(fz *f, size_t small)
{
    uint8_t sel = fz_u8(f);
    switch (sel & 15) {
    case 0: return 0;
    case 1: return SIZE_MAX;
    case 2: return SIZE_MAX / 2 + 1;
    case 3: return (size_t)INT32_MAX + (size_t)fz_u8(f) - 128;
    case 4: return (size_t)1 << (fz_u8(f) % 64);
    case 5: return (size_t)fz_u64(f);
    default: return small ? fz_below(f, small + 1) : 0;
    }
}

/* An int: mostly in [lo, hi], sometimes anything. */
static inline int fz_int(fz *f, int lo, int hi)
{
    uint8_t sel = fz_u8(f);
    if ((sel & 7) == 0) return (int)fz_u32(f);
    if ((sel & 7) == 1) return sel & 8 ? INT32_MIN : INT32_MAX;
    return lo + (int)fz_below(f, (size_t)(hi - lo) + 1);
}

/* A double: special values, values in [0, 1], or raw bits. */
static inline double fz_double(fz *f)
{
    static const double special[] = {0.0, -0.0, 1.0, -1.0, 0.5, NAN, INFINITY, -INFINITY,
                                     DBL_MAX, -DBL_MAX, DBL_MIN, 4.9406564584124654e-324,
                                     1e-300, 1e300, 1.0 - DBL_EPSILON / 2, DBL_EPSILON, 20.0, 0.1,
                                     2.0, 1e-9, 1.0 + DBL_EPSILON, -DBL_MIN};
    uint8_t sel = fz_u8(f);
    switch (sel & 3) {
    case 0: return special[fz_below(f, sizeof special / sizeof special[0])];
    case 1: return (double)fz_u32(f) / 4294967295.0;
    case 2: {
        uint64_t b = fz_u64(f);
        double d;
        memcpy(&d, &b, sizeof d);
        return d;
    }
    default: return (double)(int32_t)fz_u32(f) / 65536.0;
    }
}

/* A time: mostly in [0, 1] (with its ends), sometimes outside or NaN. */
static inline double fz_time(fz *f)
{
    uint8_t sel = fz_u8(f);
    if ((sel & 7) == 0) return fz_double(f);
    if ((sel & 7) == 1) return sel & 8 ? 0.0 : 1.0;
    return (double)fz_u32(f) / 4294967295.0;
}

/* A float logit: ordinary values, NaN, +-Inf, huge, subnormal, or raw bits. */
static inline float fz_logit(fz *f)
{
    static const float special[] = {0.0f, -0.0f, NAN, INFINITY, -INFINITY, FLT_MAX, -FLT_MAX,
                                    FLT_MIN, 1e-45f, 88.7f, -88.7f, 1e30f, -1e30f, 1.0f, -1.0f};
    uint8_t sel = fz_u8(f);
    switch (sel & 3) {
    case 0: return special[fz_below(f, sizeof special / sizeof special[0])];
    case 1: {
        uint32_t b = fz_u32(f);
        float x;
        memcpy(&x, &b, sizeof x);
        return x;
    }
    default: return (float)(int8_t)fz_u8(f) / 8.0f;
    }
}

/* The allocator a harness hands to libdfm: fails where the input says, counts live blocks. */
static void *fz_alloc(size_t n, void *opaque)
{
    fz *f = (fz *)opaque;
    long i = f->allocs++;
    if (f->fail_mask >> (i % 64) & 1) return NULL;
    void *p = malloc(n);
    if (p) f->live++;
    return p;
}
static void fz_free(void *p, void *opaque)
{
    fz *f = (fz *)opaque;
    if (p) { f->live--; free(p); }
}
static inline dfm_allocator fz_allocator(fz *f)
{
    dfm_allocator a = {fz_alloc, fz_free, f};
    return a;
}

/* Invariant check: a failure is a bug the fuzzer reports (abort gives a crash artifact). */
#define FZ_ASSERT(cond)                                                                        \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

/* Every status libdfm returns is a documented code. */
#define FZ_STATUS_OK(st) FZ_ASSERT((st) >= 0 && (st) < DFM_STATUS_COUNT)

#endif
