/* libdfm: discrete module (see docs/discrete.md). */
#ifndef DFM_DISCRETE_H
#define DFM_DISCRETE_H

#include "common.h"
#include "space.h"
#include "scheduler.h"
#include "path.h"
#include "generator.h"
#include "loss.h"
#include "sampler.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Sources of a mixture path (frozen). */
#define DFM_SOURCE_MASK    1 /* p0 = delta(mask_token): every coordinate starts masked */
#define DFM_SOURCE_UNIFORM 2 /* p0 uniform over the vocabulary */
#define DFM_SOURCE_CUSTOM  3 /* p0 given as a probability vector over the vocabulary */

/** Mixture path on a discrete space [V]^d (Gat et al. 2024):
 * p_t(x^i | x1) = (1 - kappa_t) p0(x^i) + kappa_t delta(x^i, x1^i), kappa_t = alpha_t of sched.
 * space: a single discrete part. source: DFM_SOURCE_*. mask_token: the mask id for
 * DFM_SOURCE_MASK (0 <= mask_token < V; usually V - 1), ignored otherwise. p0: V probabilities
 * for DFM_SOURCE_CUSTOM (nonnegative, finite, summing to 1 within 1e-6; copied), NULL otherwise.
 * The space and scheduler are copied. */
DFM_API int dfm_path_create_mixture(dfm_path **out, const dfm_space *space,
                                    const dfm_scheduler *sched, int source, int32_t mask_token,
                                    const double *p0, const dfm_allocator *mem);

#ifdef __cplusplus
}
#endif
#endif
