/* The discrete module's internal header: the mixture path's data, its source draws and the
 * module's random streams. The one discrete header other modules (gm) may include. */
#ifndef DFM_DISCRETE_IMPL_H
#define DFM_DISCRETE_IMPL_H

#include "handles/handles.h"

typedef struct dfm__mixture {
    int source;        /* DFM_SOURCE_* */
    int32_t vocab;     /* V */
    int32_t mask;      /* mask token (DFM_SOURCE_MASK) */
    double *p0;        /* V source probabilities (uniform / custom), NULL for the mask source */
    double *cdf;       /* V cumulative source probabilities (custom source only), else NULL */
} dfm__mixture;

/* The mixture data of a DFM_PATH_MIXTURE path (p->impl). */
static inline const dfm__mixture *dfm__mixture_of(const dfm_path *p)
{
    return (const dfm__mixture *)p->impl;
}

/* Random streams of the discrete module (key: seed, stream, global row, coord, step). */
#define DFM__DS_STREAM_PATH_X0   0x21u /* dfm_path_sample: x0 draw, step = args->draw */
#define DFM__DS_STREAM_PATH_MIX  0x22u /* dfm_path_sample: kappa coin, step = args->draw */
#define DFM__DS_STREAM_SRC       0x23u /* sampler: x0 draw (draw_source), step = 0 */
#define DFM__DS_STREAM_STEP      0x24u /* sampler: forward coin + categorical draw, step = i */
#define DFM__DS_STREAM_EXTRA     0x25u /* sampler: corrector / eta coin + component, step = i */
#define DFM__DS_STREAM_EXTRA_TGT 0x26u /* sampler: corrector / eta target, step = i */
#define DFM__DS_STREAM_PURITY    0x27u /* sampler: purity rounding, coord = 0, step = i */

/* Draw from the source with a uniform u in [0, 1). */
static inline int32_t dfm__mix_source_draw(const dfm__mixture *m, double u)
{
    if (m->source == DFM_SOURCE_MASK) return m->mask;
    if (m->source == DFM_SOURCE_UNIFORM) {
        int32_t j = (int32_t)(u * (double)m->vocab);
        return j >= m->vocab ? m->vocab - 1 : j;
    }
    /* custom: first j with cdf[j] > u (binary search), skipping zero-probability tokens */
    size_t lo = 0, hi = (size_t)m->vocab - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->cdf[mid] > u) hi = mid; else lo = mid + 1;
    }
    while (lo > 0 && m->p0[lo] <= 0.0) lo--; /* rounding at the top: last positive token */
    return (int32_t)lo;
}

/* p0(x) of the source. */
static inline double dfm__mix_p0(const dfm__mixture *m, int32_t x)
{
    if (m->source == DFM_SOURCE_MASK) return x == m->mask ? 1.0 : 0.0;
    return m->p0[x];
}

/* Draw from p0 restricted to y != x (renormalised); u in [0, 1). Requires 1 - p0(x) > 0. */
static inline int32_t dfm__mix_source_draw_except(const dfm__mixture *m, int32_t x, double u)
{
    if (m->source == DFM_SOURCE_MASK) return m->mask;
    int32_t V = m->vocab;
    if (m->source == DFM_SOURCE_UNIFORM) {
        int32_t j = (int32_t)(u * (double)(V - 1));
        if (j >= V - 1) j = V - 2;
        return j >= x ? j + 1 : j;
    }
    double total = 1.0 - m->p0[x], target = u * total, acc = 0.0;
    int32_t last = -1;
    for (int32_t j = 0; j < V; j++) {
        if (j == x || m->p0[j] <= 0.0) continue;
        acc += m->p0[j];
        last = j;
        if (acc > target) return j;
    }
    return last >= 0 ? last : x;
}

/* discrete_sampler.c: sampler_init of factorized generators. */
int dfm__ds_sampler_init(dfm_sampler *s, int method);

#endif
