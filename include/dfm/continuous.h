/* libdfm: continuous module (see docs/continuous.md). */
#ifndef DFM_CONTINUOUS_H
#define DFM_CONTINUOUS_H

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
