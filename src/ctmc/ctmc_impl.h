/* Private definitions of the ctmc module (finite and metric paths, rate-matrix generators). */
#ifndef DFM_CTMC_IMPL_H
#define DFM_CTMC_IMPL_H

#include "handles/handles.h"

/* Data of a DFM_PATH_FINITE or DFM_PATH_METRIC path (p->impl). */
typedef struct dfm__ctpath {
    int32_t V;            /* vocabulary */
    size_t d;             /* coordinates */
    size_t S;             /* V^d when <= DFM_CTMC_MAX_STATES, else 0 (metric only) */
    dfm_cond_path_fn fn;  /* finite */
    void *user;
    double c;             /* metric: beta = c kappa / (1 - kappa) */
    double *dist;         /* metric: V x V, dist[x1 * V + x] = d(x, x1) */
} dfm__ctpath;

static inline const dfm__ctpath *dfm__ctpath_of(const dfm_path *p)
{
    return (const dfm__ctpath *)p->impl;
}

/* V^d or 0 when above DFM_CTMC_MAX_STATES. */
size_t dfm__ct_states(int32_t V, size_t d);
/* Flatten / unflatten one row (no checks). */
static inline int32_t dfm__ct_flat(const int32_t *x, int32_t V, size_t d)
{
    int32_t s = 0;
    for (size_t i = 0; i < d; i++) s = s * V + x[i];
    return s;
}
static inline void dfm__ct_unflat(int32_t s, int32_t V, size_t d, int32_t *x)
{
    for (size_t i = d; i-- > 0;) { x[i] = s % V; s /= V; }
}

/* Metric path: beta_t and beta'_t; errors (scheduler callback, invalid kappa) recorded on eb. */
int dfm__metric_beta(const dfm_path *p, dfm_base *eb, double t, double *beta, double *dbeta);
/* Metric path: probs[x] = p_t(x | x1) over V values given beta (beta = inf: delta at x1). */
void dfm__metric_probs(const dfm__ctpath *m, double beta, int32_t x1, double *probs);
/* Finite path: host p_t(.|x1), dp_t(.|x1), validated; errors recorded on b. */
int dfm__finite_cond(dfm_base *b, const dfm_path *p, double t, int32_t x1, double *pr, double *dp);

/* Kinetic-optimal conditional rates out of state z (row z of the generator), diagonal = 0. */
void dfm__kinetic_row(const double *p, const double *dp, size_t n, size_t z, double *row);

/* Conditional rate row of a FINITE or METRIC path on the flattened space at time t < 1:
 * row[y] = Q_t(z, y | x1) for y != z, row[z] = 0. Scratch: ct_cond_scratch(S) doubles. */
size_t dfm__ct_cond_scratch(const dfm_path *p);
int dfm__ct_cond_row(dfm_base *b, dfm_path *p, double t, int32_t x1, int32_t z, double *row,
                     double *scratch);

#endif
