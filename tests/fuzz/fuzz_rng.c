/* libFuzzer harness: the public RNG. Categorical draws from arbitrary logits (NaN, +-Inf, huge,
 * subnormal; short vectors and vectors longer than the 1024-entry stack buffer) at arbitrary
 * temperatures, draws from arbitrary weights, and dfm_rng_fill with arbitrary kinds, sizes and
 * thread counts. Invariants: the documented status for the input class; a draw never returns an
 * index of probability 0; temperature 0 returns the first argmax; inputs never modified; outputs
 * written only on success; fill results independent of the thread count and in range. */
#include "fuzz_input.h"

#define MAXN 2600

static float logits[MAXN], logits_copy[MAXN];
static double weights[MAXN];
static float fillbuf[2][4096];

static void fuzz_categorical(fz *in)
{
    size_t n = fz_u8(in) & 1 ? fz_below(in, 40) : fz_below(in, MAXN + 1);
    uint8_t mode = fz_u8(in);
    float base = fz_logit(in);
    for (size_t i = 0; i < n; i++) {
        /* Mostly one value repeated or small perturbations, sometimes fresh specials. */
        uint8_t c = fz_empty(in) ? 0 : fz_u8(in);
        logits[i] = (mode & 1) && c < 200 ? base + (float)(c % 7) : fz_logit(in);
    }
    memcpy(logits_copy, logits, n * sizeof(float));
    double temp = fz_u8(in) & 1 ? fz_double(in) : (double)fz_u8(in) / 32.0;
    uint64_t seed = fz_u64(in), row = fz_u64(in) >> 8;
    unsigned stream = fz_u8(in);
    int32_t out = -77;
    int st = dfm_rng_categorical(seed, stream, row, fz_u32(in), fz_u32(in), n ? logits : NULL, n,
                                 temp, &out);
    FZ_STATUS_OK(st);
    FZ_ASSERT(memcmp(logits, logits_copy, n * sizeof(float)) == 0);
    int has_nan = 0, has_pinf = 0, all_ninf = 1;
    for (size_t i = 0; i < n; i++) {
        if (isnan(logits[i])) has_nan = 1;
        if (logits[i] == INFINITY) has_pinf = 1;
        if (logits[i] != -INFINITY) all_ninf = 0;
    }
    if (n == 0 || !(temp >= 0.0) || temp == INFINITY) {
        FZ_ASSERT(st == DFM_EINVAL);
    } else if (has_nan || has_pinf || all_ninf) {
        FZ_ASSERT(st == DFM_ENUMERIC);
    } else {
        FZ_ASSERT(st == 0);
    }
    if (st) {
        FZ_ASSERT(out == -77);
        return;
    }
    FZ_ASSERT(out >= 0 && (size_t)out < n);
    FZ_ASSERT(logits[out] != -INFINITY);
    if (temp == 0.0) {
        size_t best = 0;
        for (size_t i = 1; i < n; i++)
            if (logits[i] > logits[best]) best = i;
        FZ_ASSERT((size_t)out == best);
    } else {
        /* The drawn entry has nonzero probability under softmax(z / temp) in double precision
         * (a relative weight that underflows in float is allowed only when it is tiny). */
        float m = -INFINITY;
        for (size_t i = 0; i < n; i++)
            if (logits[i] > m) m = logits[i];
        double w = exp(((double)logits[out] - (double)m) / temp);
        FZ_ASSERT(w > 0.0 || ((double)logits[out] - (double)m) / temp < -100.0);
    }
    /* Reproducible. */
    int32_t again = -1;
    FZ_ASSERT(dfm_rng_categorical(seed, stream, row, 0, 0, logits, n, temp, &again) == 0);
}

static void fuzz_weights(fz *in)
{
    size_t n = fz_below(in, 300);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = fz_u8(in);
        weights[i] = c < 160 ? (double)(c % 9) : fz_double(in);
    }
    int32_t out = -77;
    int st = dfm_rng_categorical_weights(fz_u64(in), fz_u8(in), fz_u32(in), 0, fz_u32(in),
                                         n ? weights : NULL, n, &out);
    FZ_STATUS_OK(st);
    int bad = 0;
    double total = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!(weights[i] >= 0.0) || weights[i] == INFINITY) bad = 1;
        else total += weights[i];
    }
    if (n == 0) FZ_ASSERT(st == DFM_EINVAL);
    else if (bad || !(total > 0.0) || total == INFINITY) FZ_ASSERT(st == DFM_ENUMERIC);
    else FZ_ASSERT(st == 0);
    if (st) { FZ_ASSERT(out == -77); return; }
    FZ_ASSERT(out >= 0 && (size_t)out < n && weights[out] > 0.0);
}

static void fuzz_fill(fz *in)
{
    int kind = fz_int(in, -1, 2);
    size_t rows = fz_u8(in) & 1 ? fz_size(in, 64) : fz_below(in, 64);
    size_t cols = fz_u8(in) & 1 ? fz_size(in, 64) : fz_below(in, 64);
    int nt = fz_int(in, 0, 9);
    uint64_t seed = fz_u64(in), off = fz_u64(in) >> 8;
    unsigned stream = fz_u8(in);
    uint32_t step = fz_u32(in);
    size_t cap = sizeof fillbuf[0] / sizeof(float), n = 0;
    int fits = rows == 0 || cols == 0 || (cols <= cap && rows <= cap / cols);
    if (fits) n = rows * cols;
    /* A call that does not fit the buffer gets NULL: it must then fail (or be empty). */
    memset(fillbuf, 0xa5, sizeof fillbuf);
    int st = dfm_rng_fill(seed, stream, kind, off, rows, cols, step, nt, fits ? fillbuf[0] : NULL);
    FZ_STATUS_OK(st);
    int valid = (kind == DFM_DRAW_UNIFORM || kind == DFM_DRAW_NORMAL) && nt >= 1 &&
                nt <= DFM_MAX_THREADS && cols <= UINT32_MAX;
    int overflow = cols && rows > SIZE_MAX / cols;
    if (overflow) FZ_ASSERT(st == DFM_EOVERFLOW);
    else if (!valid || !fits) FZ_ASSERT(st == DFM_EINVAL || (!fits && st == DFM_EOVERFLOW));
    else FZ_ASSERT(st == 0);
    if (st) {
        const unsigned char *b = (const unsigned char *)fillbuf[0];
        for (size_t i = 0; i < sizeof fillbuf[0]; i++) FZ_ASSERT(b[i] == 0xa5);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float v = fillbuf[0][i];
        FZ_ASSERT(isfinite(v));
        if (kind == DFM_DRAW_UNIFORM) FZ_ASSERT(v >= 0.0f && v < 1.0f);
    }
    /* Same values with one thread. */
    FZ_ASSERT(dfm_rng_fill(seed, stream, kind, off, rows, cols, step, 1, fillbuf[1]) == 0);
    FZ_ASSERT(memcmp(fillbuf[0], fillbuf[1], n * sizeof(float)) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz in;
    fz_init(&in, data, size);
    for (int op = 0; op < 4 && !fz_empty(&in); op++) {
        switch (fz_u8(&in) % 3) {
        case 0: fuzz_categorical(&in); break;
        case 1: fuzz_weights(&in); break;
        default: fuzz_fill(&in); break;
        }
    }
    return 0;
}
