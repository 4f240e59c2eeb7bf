/* libdfm: ctmc module (see docs/ctmc.md). */
#ifndef DFM_CTMC_H
#define DFM_CTMC_H

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
