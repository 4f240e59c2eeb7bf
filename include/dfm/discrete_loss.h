/* libdfm: discrete losses, training-time sampling and the discrete ELBO (see docs/discrete_loss.md). */
#ifndef DFM_DISCRETE_LOSS_H
#define DFM_DISCRETE_LOSS_H

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

#ifdef __cplusplus
}
#endif
#endif
