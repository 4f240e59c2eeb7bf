/* libdfm: generator matching and discrete flow matching in C.
 * The umbrella header: include this one. See docs/index.md. */
#ifndef DFM_DFM_H
#define DFM_DFM_H

#include "common.h"
#include "rng.h"
#include "space.h"
#include "scheduler.h"
#include "path.h"
#include "generator.h"
#include "loss.h"
#include "sampler.h"
#include "discrete.h"
#include "discrete_loss.h"
#include "continuous.h"
#include "ctmc.h"
#include "gm.h"

#endif
