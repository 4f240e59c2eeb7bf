/* libdfm: generator-matching losses (generic part). Each evaluation returns the loss value and
 * its gradient with respect to the model's raw output in one pass. */
#ifndef DFM_LOSS_H
#define DFM_LOSS_H

#include "common.h"
#include "generator.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dfm_loss dfm_loss;

/* Loss kinds (frozen). */
#define DFM_LOSS_GENERALIZED_KL 1 /* mixture paths, posterior logits */
#define DFM_LOSS_CROSS_ENTROPY  2 /* -log p_{1|t}(x1) on logits */
#define DFM_LOSS_MSE            3 /* conditional flow matching, any continuous parameterization */
#define DFM_LOSS_BREGMAN_RATES  4 /* D(a, b) = sum a log(a/b) - a + b on direct rates */
#define DFM_LOSS_PRODUCT        5 /* weighted sum over the parts of a product space */

/* Reductions (frozen). */
#define DFM_REDUCE_MEAN 0 /* mean over counted coordinates (the default) */
#define DFM_REDUCE_SUM  1
#define DFM_REDUCE_NONE 2 /* per-coordinate values; the gradient is that of their sum */

#define DFM_OPT_REDUCTION 3 /* int: DFM_REDUCE_* (loss handles) */

/** Arguments of dfm_loss_eval; appended to only. Unused members must be NULL. */
typedef struct dfm_loss_args {
    size_t struct_size;
    size_t rows;
    const double *t;            /* rows times */
    const int32_t *x1_tokens;   /* rows x n_tokens data */
    const int32_t *xt_tokens;   /* rows x n_tokens noisy states */
    const uint8_t *fixed;       /* rows x n_tokens, nonzero: position fixed, not counted (or NULL) */
    const float *x0_reals;      /* rows x n_reals source samples */
    const float *x1_reals;      /* rows x n_reals data */
    const float *xt_reals;      /* rows x n_reals noisy states */
    const float *out;           /* rows x out_stride model output */
    float *grad;                /* out (may be NULL): rows x out_stride, dLoss/dout */
    double *values;             /* out for DFM_REDUCE_NONE: rows x (n_tokens + n_reals) */
    double *loss;               /* out: the reduced loss (sum of values for NONE) */
} dfm_loss_args;

DFM_API void dfm_loss_free(dfm_loss *l);
DFM_API int dfm_loss_clone(dfm_loss **out, const dfm_loss *l, const dfm_allocator *mem);
DFM_API int dfm_loss_kind(const dfm_loss *l);
DFM_API const char *dfm_loss_last_error(const dfm_loss *l);
DFM_API int dfm_loss_callback_status(const dfm_loss *l);
/** Options: DFM_OPT_THREADS, DFM_OPT_REDUCTION, and kind-specific ones. */
DFM_API int dfm_loss_set_int(dfm_loss *l, int option, int64_t value);
DFM_API int dfm_loss_get_int(const dfm_loss *l, int option, int64_t *value);
DFM_API int dfm_loss_set_double(dfm_loss *l, int option, double value);
DFM_API int dfm_loss_get_double(const dfm_loss *l, int option, double *value);
/** Value and gradient. Outputs are written only on success. */
DFM_API int dfm_loss_eval(dfm_loss *l, const dfm_loss_args *args);

#ifdef __cplusplus
}
#endif
#endif
