/* libdfm: counter-based random numbers (Philox-4x32-10).
 * Every draw is a pure function of (seed, stream, row, coord, step): results never depend on the
 * number of threads or on how a batch is split. See docs/rng.md. */
#ifndef DFM_RNG_H
#define DFM_RNG_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Streams separate draws made at the same (row, coord, step) for different purposes.
 * Values 0..255; libdfm's samplers document which they use. */
#define DFM_STREAM_MAX 255

/** The raw Philox-4x32-10 block for (seed, stream, row, coord, step): four 32-bit words.
 * row must be < 2^56. */
DFM_API void dfm_rng_block(uint64_t seed, unsigned stream, uint64_t row, uint32_t coord,
                           uint32_t step, uint32_t out[4]);
/** Uniform double in [0, 1) with 53 random bits (words 0 and 1 of the block). */
DFM_API double dfm_rng_uniform(uint64_t seed, unsigned stream, uint64_t row, uint32_t coord,
                               uint32_t step);
/** Standard normal (Box-Muller on the block's two uniforms). */
DFM_API double dfm_rng_normal(uint64_t seed, unsigned stream, uint64_t row, uint32_t coord,
                              uint32_t step);
/** Categorical draw from logits: index j with probability softmax(logits / temperature)_j.
 * The normaliser and the cumulative sums are accumulated in double; the draw inverts the CDF
 * with the block's first uniform (no Gumbel truncation). -INFINITY logits have probability 0.
 * temperature > 0; temperature == 0 returns the argmax (lowest index on ties).
 * Returns DFM_EINVAL (NULL, n == 0, n > INT32_MAX, temperature < 0 or NaN) or DFM_ENUMERIC
 * (a NaN or +Inf logit, or every logit -Inf); *out is written only on success. */
DFM_API int dfm_rng_categorical(uint64_t seed, unsigned stream, uint64_t row, uint32_t coord,
                                uint32_t step, const float *logits, size_t n, double temperature,
                                int32_t *out);
/** Categorical draw from nonnegative weights (need not sum to 1), accumulated in double.
 * Returns DFM_ENUMERIC on a negative, NaN or Inf weight or a zero total. */
DFM_API int dfm_rng_categorical_weights(uint64_t seed, unsigned stream, uint64_t row,
                                        uint32_t coord, uint32_t step, const double *weights,
                                        size_t n, int32_t *out);

/** Draw kinds for dfm_rng_fill. */
#define DFM_DRAW_UNIFORM 0 /* uniform on [0, 1) */
#define DFM_DRAW_NORMAL  1 /* standard normal */

/** Fills out[rows][cols] with draws keyed by (seed, stream, row_offset + r, c, step), using up to
 * nthreads threads; the result does not depend on nthreads. DFM_EINVAL for NULL out, an unknown
 * kind or nthreads outside [1, DFM_MAX_THREADS]; DFM_EOVERFLOW when rows x cols overflows. */
DFM_API int dfm_rng_fill(uint64_t seed, unsigned stream, int kind, uint64_t row_offset,
                         size_t rows, size_t cols, uint32_t step, int nthreads, float *out);

#ifdef __cplusplus
}
#endif
#endif
