/* Private data of the discrete mixture path, shared by the discrete modules. */
#ifndef DFM_DISCRETE_IMPL_H
#define DFM_DISCRETE_IMPL_H

#include "handles.h"

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

#endif
