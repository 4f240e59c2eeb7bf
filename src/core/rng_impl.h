/* Inline Philox-4x32-10 and draw helpers for the hot loops (Salmon et al., SC'11, "Parallel
 * random numbers: as easy as 1, 2, 3"). The public functions in rng.c wrap these. */
#ifndef DFM_RNG_IMPL_H
#define DFM_RNG_IMPL_H

#include <math.h>
#include <stdint.h>

#define DFM__PHILOX_M0 0xD2511F53u
#define DFM__PHILOX_M1 0xCD9E8D57u
#define DFM__PHILOX_W0 0x9E3779B9u
#define DFM__PHILOX_W1 0xBB67AE85u

static inline void dfm__philox(const uint32_t c_in[4], uint32_t k0, uint32_t k1, uint32_t out[4])
{
    uint32_t c0 = c_in[0], c1 = c_in[1], c2 = c_in[2], c3 = c_in[3];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)DFM__PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)DFM__PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += DFM__PHILOX_W0;
        k1 += DFM__PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* Counter layout: {coord, step, row bits 0-31, row bits 32-55 | stream << 24}; key = seed. */
static inline void dfm__rng_block(uint64_t seed, unsigned stream, uint64_t row, uint32_t coord,
                                  uint32_t step, uint32_t out[4])
{
    uint32_t c[4];
    c[0] = coord;
    c[1] = step;
    c[2] = (uint32_t)row;
    c[3] = (uint32_t)((row >> 32) & 0xFFFFFFu) | ((uint32_t)(stream & 0xFFu) << 24);
    dfm__philox(c, (uint32_t)seed, (uint32_t)(seed >> 32), out);
}

/* 53-bit uniform in [0, 1) from two words. */
static inline double dfm__u53(uint32_t a, uint32_t b)
{
    return ((double)(a >> 5) * 67108864.0 + (double)(b >> 6)) * (1.0 / 9007199254740992.0);
}

static inline double dfm__uniform(uint64_t seed, unsigned stream, uint64_t row, uint32_t coord,
                                  uint32_t step)
{
    uint32_t w[4];
    dfm__rng_block(seed, stream, row, coord, step, w);
    return dfm__u53(w[0], w[1]);
}

/* Two independent uniforms from one block. */
static inline void dfm__uniform2(uint64_t seed, unsigned stream, uint64_t row, uint32_t coord,
                                 uint32_t step, double *u1, double *u2)
{
    uint32_t w[4];
    dfm__rng_block(seed, stream, row, coord, step, w);
    *u1 = dfm__u53(w[0], w[1]);
    *u2 = dfm__u53(w[2], w[3]);
}

/* Box-Muller; 1 - u1 is in (0, 1] so the log is finite. */
static inline double dfm__normal(uint64_t seed, unsigned stream, uint64_t row, uint32_t coord,
                                 uint32_t step)
{
    double u1, u2;
    dfm__uniform2(seed, stream, row, coord, step, &u1, &u2);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}

/* ---- categorical from logits (catdraw.c) ----
 * Draws index j with probability softmax(z / temp)_j using uniform u in [0, 1).
 * scratch must hold n floats. Returns 0, or DFM_ENUMERIC for NaN/+Inf logits or all -Inf.
 * If lse_out is not NULL it receives log sum exp(z / temp) (natural log), and p_at (if not
 * NULL and at >= 0) the probability of index at. */
int dfm__categorical_logits(const float *z, size_t n, double temp, double u, float *scratch,
                            int32_t *out);
/* log-sum-exp of z (temperature 1) accumulated in double; DFM_ENUMERIC as above. Also returns
 * the max logit through *zmax. */
int dfm__logsumexp(const float *z, size_t n, double *lse, float *zmax);
/* Fast exp for x <= 0 (float, ~2 ulp), vectorisable. Writes dst[i] = exp(src[i] - shift) and
 * returns the sum in double. */
double dfm__exp_shift_sum(const float *src, size_t n, float shift, float scale, float *dst);
/* Max of z and a finiteness check in one pass: *bad != 0 when a NaN or +Inf is present. */
float dfm__max_check(const float *z, size_t n, int *bad);
/* argmax (lowest index on ties); DFM_ENUMERIC on NaN or +Inf or all -Inf. */
int dfm__argmax(const float *z, size_t n, int32_t *out);
/* Inverse-CDF draw from nonnegative float weights with known double total. */
int32_t dfm__draw_weights_f(const float *w, size_t n, double total, double u);

#endif
