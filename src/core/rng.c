/* Public wrappers of the counter-based generator (rng_impl.h, catdraw.c). */
#include "core/internal.h"
#include "core/rng_impl.h"

#include <math.h>

void dfm_rng_block(uint64_t seed, unsigned stream, uint64_t row, uint32_t coord, uint32_t step,
                   uint32_t out[4])
{
    if (out) dfm__rng_block(seed, stream, row, coord, step, out);
}

double dfm_rng_uniform(uint64_t seed, unsigned stream, uint64_t row, uint32_t coord,
                       uint32_t step)
{
    return dfm__uniform(seed, stream, row, coord, step);
}

double dfm_rng_normal(uint64_t seed, unsigned stream, uint64_t row, uint32_t coord, uint32_t step)
{
    return dfm__normal(seed, stream, row, coord, step);
}

int dfm_rng_categorical(uint64_t seed, unsigned stream, uint64_t row, uint32_t coord,
                        uint32_t step, const float *logits, size_t n, double temperature,
                        int32_t *out)
{
    if (!logits || !out) return dfm__null(__func__, "logits or out");
    if (n == 0 || n > (size_t)INT32_MAX)
        return dfm__error(DFM_EINVAL, "%s: n must be in [1, 2^31), got %zu", __func__, n);
    if (!(temperature >= 0.0) || temperature == INFINITY)
        return dfm__error(DFM_EINVAL, "%s: temperature must be finite and >= 0, got %g",
                          __func__, temperature);
    double u = dfm__uniform(seed, stream, row, coord, step);
    float buf[1024];
    int32_t r;
    int st;
    if (n <= 1024) {
        st = dfm__categorical_logits(logits, n, temperature, u, buf, &r);
    } else if (temperature == 0.0) {
        st = dfm__argmax(logits, n, &r);
    } else {
        /* Long vectors without a heap buffer: the total in chunks, then the chunk holding the
         * target recomputed (exp is deterministic, so both passes agree). */
        double lse;
        float m;
        st = dfm__logsumexp(logits, n, &lse, &m);
        if (st == 0) {
            float scale = (float)(1.0 / temperature);
            double total = 0.0;
            for (size_t i = 0; i < n; i += 1024) {
                size_t len = n - i < 1024 ? n - i : 1024;
                total += dfm__exp_shift_sum(logits + i, len, m, scale, buf);
            }
            double target = u * total, acc = 0.0;
            r = -1;
            for (size_t i = 0; i < n && r < 0; i += 1024) {
                size_t len = n - i < 1024 ? n - i : 1024;
                double part = dfm__exp_shift_sum(logits + i, len, m, scale, buf);
                if (acc + part > target || i + len >= n)
                    r = (int32_t)i + dfm__draw_weights_f(buf, len, part, part > 0 ? (target - acc) / part : 0.0);
                acc += part;
            }
        }
    }
    if (st) return dfm__error(st, "%s: the logits hold NaN or +Inf, or are all -Inf", __func__);
    *out = r;
    return st;
}

int dfm_rng_categorical_weights(uint64_t seed, unsigned stream, uint64_t row, uint32_t coord,
                                uint32_t step, const double *weights, size_t n, int32_t *out)
{
    if (!weights || !out) return dfm__null(__func__, "weights or out");
    if (n == 0 || n > (size_t)INT32_MAX)
        return dfm__error(DFM_EINVAL, "%s: n must be in [1, 2^31), got %zu", __func__, n);
    double total = 0.0;
    for (size_t j = 0; j < n; j++) {
        double w = weights[j];
        if (!(w >= 0.0) || w == INFINITY)
            return dfm__error(DFM_ENUMERIC, "%s: weights[%zu] = %g is negative, NaN or Inf",
                              __func__, j, w);
        total += w;
    }
    if (!(total > 0.0) || total == INFINITY)
        return dfm__error(DFM_ENUMERIC, "%s: the weights sum to %g", __func__, total);
    double target = dfm__uniform(seed, stream, row, coord, step) * total, acc = 0.0;
    size_t last = 0;
    for (size_t j = 0; j < n; j++) {
        if (weights[j] > 0.0) last = j;
        acc += weights[j];
        if (acc > target) { *out = (int32_t)j; return 0; }
    }
    *out = (int32_t)last;
    return 0;
}

typedef struct fill_ctx {
    uint64_t seed, row_offset;
    unsigned stream;
    int kind;
    size_t cols;
    uint32_t step;
    float *out;
} fill_ctx;

static int fill_range(void *vctx, size_t begin, size_t end, int tid)
{
    const fill_ctx *c = (const fill_ctx *)vctx;
    (void)tid;
    for (size_t r = begin; r < end; r++) {
        float *row = c->out + r * c->cols;
        for (size_t j = 0; j < c->cols; j++) {
            double v = c->kind == DFM_DRAW_NORMAL
                           ? dfm__normal(c->seed, c->stream, c->row_offset + r, (uint32_t)j, c->step)
                           : dfm__uniform(c->seed, c->stream, c->row_offset + r, (uint32_t)j, c->step);
            row[j] = (float)v;
            if (c->kind == DFM_DRAW_UNIFORM && row[j] >= 1.0f) row[j] = 0x1.fffffep-1f; /* float rounding */
        }
    }
    return 0;
}

int dfm_rng_fill(uint64_t seed, unsigned stream, int kind, uint64_t row_offset, size_t rows,
                 size_t cols, uint32_t step, int nthreads, float *out)
{
    size_t n;
    if (dfm__mul(rows, cols, &n))
        return dfm__error(DFM_EOVERFLOW, "%s: rows x cols overflows", __func__);
    if (!out && n) return dfm__null(__func__, "out");
    if (kind != DFM_DRAW_UNIFORM && kind != DFM_DRAW_NORMAL)
        return dfm__error(DFM_EINVAL, "%s: unknown kind %d", __func__, kind);
    if (nthreads < 1 || nthreads > DFM_MAX_THREADS)
        return dfm__error(DFM_EINVAL, "%s: nthreads must be in [1, %d], got %d", __func__,
                          DFM_MAX_THREADS, nthreads);
    if (cols > UINT32_MAX)
        return dfm__error(DFM_EINVAL, "%s: cols must be < 2^32, got %zu", __func__, cols);
    if (n == 0) return 0; /* also rows huge with cols == 0: nothing to draw, no loop over rows */
    fill_ctx c = {seed, row_offset, stream, kind, cols, step, out};
    return dfm__parallel_for(NULL, nthreads, rows, fill_range, &c);
}
