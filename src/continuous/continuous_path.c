/* Affine Gaussian paths on R^D (Lipman et al. 2024, "Flow Matching Guide and Code", §4):
 * X_t = alpha_t X1 + sigma_t X0, conditional velocity alpha'_t X1 + sigma'_t X0, the
 * conversions between parameterizations (§4.8) and a vectorised position-keyed normal fill. */
#include "continuous/continuous_impl.h"
#include "core/rng_impl.h"

#include <float.h>
#include <math.h>

/* ---- normal draws: Philox blocks for NB lanes at once, Box-Muller on both outputs ---- */

#define NB 16 /* Philox blocks per batch: 64 normals */

#if defined(__GNUC__)
#  define DFM_INLINE static inline __attribute__((always_inline))
#else
#  define DFM_INLINE static inline
#endif

/* sqrt(-2 log u) for u in (0, 1]: Cephes logf polynomial and a Newton inverse square root in
 * plain arithmetic (selects on integer bits: FP ops are not if-converted under
 * -ftrapping-math, and libm calls would stop the vectoriser). */
DFM_INLINE float bm_radius(uint32_t ui)
{
    float u = (float)(int32_t)ui * 0x1p-24f;
    int32_t i;
    memcpy(&i, &u, sizeof i);
    int32_t mi = (i & 0x007fffff) | 0x3f000000; /* mantissa in [0.5, 1) */
    int32_t sm = mi < 0x3f3504f3;               /* m < sqrt(1/2): use 2m, exponent - 1 */
    float e = (float)(((i >> 23) & 0xff) - 126 - sm);
    mi += sm << 23;
    float m;
    memcpy(&m, &mi, sizeof m);
    float x = m - 1.0f;
    float z = x * x;
    float y = 7.0376836292e-2f;
    y = y * x - 1.1514610310e-1f;
    y = y * x + 1.1676998740e-1f;
    y = y * x - 1.2420140846e-1f;
    y = y * x + 1.4249322787e-1f;
    y = y * x - 1.6668057665e-1f;
    y = y * x + 2.0000714765e-1f;
    y = y * x - 2.4999993993e-1f;
    y = y * x + 3.3333331174e-1f;
    y = y * x * z;
    y += -2.12194440e-4f * e;
    y += -0.5f * z;
    float q = -2.0f * (x + y + 0.693359375f * e);
    int32_t qi;
    memcpy(&qi, &q, sizeof qi);
    qi &= 0x7fffffff; /* |q|: u = 1 may round to -0 */
    memcpy(&q, &qi, sizeof q);
    q += 1e-30f;
    memcpy(&qi, &q, sizeof qi);
    qi = 0x5f3759df - (qi >> 1);
    float r;
    memcpy(&r, &qi, sizeof r);
    r = r * (1.5f - 0.5f * q * r * r);
    r = r * (1.5f - 0.5f * q * r * r);
    r = r * (1.5f - 0.5f * q * r * r);
    return q * r;
}

/* cos and sin of pi v, v = kv 2^-24 - 1 in [-1, 1): fold to [-1/2, 1/2] (flags from the
 * integer), Taylor to degree 12 / 11. */
DFM_INLINE void bm_sincos(int32_t kv, float *c, float *sn)
{
    float a = (float)kv * 0x1p-24f - 1.0f;
    float f = (float)((kv > 0x1800000) - (kv < 0x800000)); /* -1, 0, 1 */
    float cs = 1.0f - 2.0f * f * f;
    a = a * cs + f; /* 1 - a, -1 - a or a */
    float x = 3.14159265358979f * a, x2 = x * x;
    *sn = x * (1.0f + x2 * (-1.6666667e-1f + x2 * (8.3333333e-3f + x2 * (-1.9841270e-4f +
          x2 * (2.7557319e-6f + x2 * -2.5052108e-8f)))));
    *c = cs * (1.0f + x2 * (-0.5f + x2 * (4.1666667e-2f + x2 * (-1.3888889e-3f + x2 *
         (2.4801587e-5f + x2 * (-2.7557319e-7f + x2 * 2.0876757e-9f))))));
}

/* One Philox round on 32-bit words held in 64-bit lanes (the products are then plain
 * 32x32->64 vector multiplies: vpmuludq). */
#define PHILOX_ROUND(r)                                                                        \
    do {                                                                                       \
        uint64_t p0 = (uint64_t)DFM__PHILOX_M0 * (c0 & 0xFFFFFFFFu);                           \
        uint64_t p1 = (uint64_t)DFM__PHILOX_M1 * (c2 & 0xFFFFFFFFu);                           \
        uint64_t n0 = (p1 >> 32) ^ c1 ^ kk0[r];                                                \
        uint64_t n2 = (p0 >> 32) ^ c3 ^ kk1[r];                                                \
        c1 = p1 & 0xFFFFFFFFu;                                                                 \
        c3 = p0 & 0xFFFFFFFFu;                                                                 \
        c0 = n0;                                                                               \
        c2 = n2;                                                                               \
    } while (0)


/* 64 normals from the NB Philox blocks (seed, stream, row, j0 + l, step): out[l] and
 * out[2 NB + l] are the Box-Muller pair of words (0, 1) of block l, out[NB + l] and
 * out[3 NB + l] that of words (2, 3). One loop over the blocks, rounds unrolled, so the
 * compiler runs 8 blocks per AVX2 register. */
DFM_CLONES_V4
static void normal_blocks(uint64_t seed, unsigned stream, uint64_t row, uint32_t step,
                          uint32_t j0, float *out /* 4 * NB */)
{
    const uint32_t rlo = (uint32_t)row;
    const uint32_t rhi = (uint32_t)((row >> 32) & 0xFFFFFFu) | ((uint32_t)(stream & 0xFFu) << 24);
    uint64_t kk0[10], kk1[10];
    uint32_t a0 = (uint32_t)seed, a1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        kk0[r] = a0;
        kk1[r] = a1;
        a0 += DFM__PHILOX_W0;
        a1 += DFM__PHILOX_W1;
    }
    for (int l = 0; l < NB; l++) {
        uint64_t c0 = (uint32_t)(j0 + (uint32_t)l), c1 = step, c2 = rlo, c3 = rhi;
        PHILOX_ROUND(0); PHILOX_ROUND(1); PHILOX_ROUND(2); PHILOX_ROUND(3); PHILOX_ROUND(4);
        PHILOX_ROUND(5); PHILOX_ROUND(6); PHILOX_ROUND(7); PHILOX_ROUND(8); PHILOX_ROUND(9);
        float ra = bm_radius((uint32_t)(c0 >> 8) + 1u), rb = bm_radius((uint32_t)(c2 >> 8) + 1u);
        float ca, sa, cb, sb;
        bm_sincos((int32_t)(c1 >> 7), &ca, &sa);
        bm_sincos((int32_t)(c3 >> 7), &cb, &sb);
        out[l] = ra * ca;
        out[NB + l] = rb * cb;
        out[2 * NB + l] = ra * sa;
        out[3 * NB + l] = rb * sb;
    }
}

void dfm__normal_row(uint64_t seed, unsigned stream, uint64_t row, uint32_t step, size_t d,
                     float *out)
{
    float buf[4 * NB];
    for (size_t j = 0; j < d; j += 4 * NB) {
        size_t n = d - j < 4 * NB ? d - j : 4 * NB;
        if (n == 4 * NB) {
            normal_blocks(seed, stream, row, step, (uint32_t)(j / 4), out + j);
        } else {
            normal_blocks(seed, stream, row, step, (uint32_t)(j / 4), buf);
            memcpy(out + j, buf, n * sizeof(float));
        }
    }
}

/* Cloned functions stay static: clang 14 names the dispatcher of an external one
 * "name.ifunc", which callers in other files do not reach. */
DFM_CLONES_V4
static int all_finite_f(const float *x, size_t n)
{
    const uint32_t *u = (const uint32_t *)(const void *)x; /* float and uint32_t: same size */
    uint32_t bad = 0;
    size_t i = 0;
    for (; i + DFM__VB <= n; i += DFM__VB)
        for (int k = 0; k < DFM__VB; k++)
            bad |= (uint32_t)((u[i + k] & 0x7f800000u) == 0x7f800000u);
    for (; i < n; i++) bad |= (uint32_t)((u[i] & 0x7f800000u) == 0x7f800000u);
    return !bad;
}

int dfm__all_finite_f(const float *x, size_t n)
{
    return all_finite_f(x, n);
}

/* ---- conversions ---- */

int dfm__affine_pair(int param, const dfm_sched_values *v, double c1[2], double c0[2])
{
    double a = v->alpha, s = v->sigma, da = v->d_alpha, ds = v->d_sigma;
    switch (param) {
    case DFM_PARAM_X1:
        c1[0] = 0.0; c1[1] = 1.0;
        c0[0] = 1.0 / s; c0[1] = -a / s;
        return 0;
    case DFM_PARAM_EPSILON:
        c0[0] = 0.0; c0[1] = 1.0;
        c1[0] = 1.0 / a; c1[1] = -s / a;
        return 0;
    case DFM_PARAM_SCORE: /* x0 = -sigma score */
        c0[0] = 0.0; c0[1] = -s;
        c1[0] = 1.0 / a; c1[1] = s * s / a;
        return 0;
    case DFM_PARAM_VELOCITY: { /* solve v = da x1 + ds x0, x_t = a x1 + s x0 */
        double det = da * s - ds * a;
        c1[0] = -ds / det; c1[1] = s / det;
        c0[0] = da / det; c0[1] = -a / det;
        return 0;
    }
    default:
        return DFM_EINVAL;
    }
}

static int param_ok(int p)
{
    return p == DFM_PARAM_VELOCITY || p == DFM_PARAM_X1 || p == DFM_PARAM_EPSILON ||
           p == DFM_PARAM_SCORE;
}

/* out = q1 x1 + q0 x0 for target parameterization to. */
static void out_weights(int to, const dfm_sched_values *v, double *q1, double *q0)
{
    switch (to) {
    case DFM_PARAM_VELOCITY: *q1 = v->d_alpha; *q0 = v->d_sigma; break;
    case DFM_PARAM_X1: *q1 = 1.0; *q0 = 0.0; break;
    case DFM_PARAM_EPSILON: *q1 = 0.0; *q0 = 1.0; break;
    default: *q1 = 0.0; *q0 = -1.0 / v->sigma; break; /* score */
    }
}

/* A x + B y from weights on (x1, x0) and their expressions; zero weights skip their term so an
 * undefined but unused prediction does not poison the result. */
static void combine(double q1, double q0, const double c1[2], const double c0[2], double *A,
                    double *B)
{
    double a = 0.0, b = 0.0;
    if (q1 != 0.0) {
        if (c1[0] != 0.0) a += q1 * c1[0];
        if (c1[1] != 0.0) b += q1 * c1[1];
    }
    if (q0 != 0.0) {
        if (c0[0] != 0.0) a += q0 * c0[0];
        if (c0[1] != 0.0) b += q0 * c0[1];
    }
    *A = a;
    *B = b;
}

int dfm__affine_convert_coef(int from, int to, const dfm_sched_values *v, double *A, double *B)
{
    if (from == to) { *A = 0.0; *B = 1.0; return 0; }
    double c1[2], c0[2], q1, q0;
    if (dfm__affine_pair(from, v, c1, c0)) return DFM_EINVAL;
    out_weights(to, v, &q1, &q0);
    if (!isfinite(q1) || !isfinite(q0)) return DFM_ERANGE;
    combine(q1, q0, c1, c0, A, B);
    return isfinite(*A) && isfinite(*B) ? 0 : DFM_ERANGE;
}

static const char *param_name(int p)
{
    switch (p) {
    case DFM_PARAM_VELOCITY: return "velocity";
    case DFM_PARAM_X1: return "x1";
    case DFM_PARAM_EPSILON: return "epsilon";
    case DFM_PARAM_SCORE: return "score";
    default: return "?";
    }
}

static int affine_convert(dfm_path *p, int from, int to, size_t rows, const double *t,
                          const float *xt, const float *in, float *out)
{
    if (p->kind != DFM_PATH_AFFINE)
        return dfm__fail(&p->b, DFM_EINVAL, "conversions need an affine path");
    if (!param_ok(from) || !param_ok(to))
        return dfm__fail(&p->b, DFM_EINVAL, "unknown parameterization %d -> %d", from, to);
    if (rows == 0) return 0;
    if (!t || !xt || !in || !out)
        return dfm__fail(&p->b, DFM_EINVAL, "t, xt, in and out must not be NULL");
    size_t d = p->space.n_reals, n;
    if (dfm__mul(rows, d, &n)) return dfm__fail(&p->b, DFM_EOVERFLOW, "rows x D overflows");
    size_t bytes;
    if (dfm__mul3(rows, 2, sizeof(double), &bytes))
        return dfm__fail(&p->b, DFM_EOVERFLOW, "rows too large");
    double *co = (double *)dfm__alloc(&p->b.mem, bytes);
    if (!co) return dfm__fail_nomem(&p->b, "conversion scratch", rows, DFM__HINT_ROWS);
    int st = 0;
    for (size_t r = 0; r < rows && !st; r++) {
        dfm_sched_values v;
        if (!dfm__time_ok(t[r])) {
            st = dfm__fail(&p->b, DFM_ERANGE, "t[%zu] = %g is outside [0, 1]", r, t[r]);
            break;
        }
        st = dfm__sched_eval(&p->sched, t[r], &v, &p->b.cb_raw);
        if (st == DFM_ECALLBACK) {
            st = dfm__fail_callback(&p->b, p->b.cb_raw, "scheduler");
            break;
        }
        if (st) { st = dfm__fail(&p->b, st, "scheduler failed at t = %g", t[r]); break; }
        st = dfm__affine_convert_coef(from, to, &v, &co[2 * r], &co[2 * r + 1]);
        if (st)
            st = dfm__fail(&p->b, DFM_ERANGE,
                           "%s -> %s is undefined at t[%zu] = %g (alpha = %g, sigma = %g)",
                           param_name(from), param_name(to), r, t[r], v.alpha, v.sigma);
    }
    /* Validate everything before writing (in and out may alias). */
    for (size_t r = 0; r < rows && !st; r++) {
        const float *x = xt + r * d, *y = in + r * d;
        double A = co[2 * r], B = co[2 * r + 1];
        for (size_t j = 0; j < d; j++) {
            if (!isfinite(x[j]) || !isfinite(y[j])) {
                st = dfm__fail(&p->b, DFM_ENUMERIC, "%s[row %zu][coord %zu] is not finite",
                               isfinite(x[j]) ? "in" : "xt", r, j);
                break;
            }
            float o = (float)((A != 0.0 ? A * x[j] : 0.0) + B * y[j]);
            if (!isfinite(o)) {
                st = dfm__fail(&p->b, DFM_ENUMERIC, "out[row %zu][coord %zu] overflows float", r, j);
                break;
            }
        }
    }
    if (!st) {
        for (size_t r = 0; r < rows; r++) {
            const float *x = xt + r * d, *y = in + r * d;
            float *o = out + r * d;
            double A = co[2 * r], B = co[2 * r + 1];
            for (size_t j = 0; j < d; j++) o[j] = (float)((A != 0.0 ? A * x[j] : 0.0) + B * y[j]);
        }
    }
    dfm__free(&p->b.mem, co);
    return st;
}

int dfm_affine_convert(dfm_path *p, int from, int to, size_t rows, const double *t,
                       const float *xt, const float *in, float *out)
{
    if (!p) return dfm__null(__func__, "p");
    int st = dfm__enter(&p->b, __func__);
    if (st) return st;
    return dfm__leave(&p->b, affine_convert(p, from, to, rows, t, xt, in, out));
}

/* ---- path sample ---- */

/* max |x| of finite floats (exact: the max of the magnitudes, no rounding). */
DFM_CLONES_V4
static float max_abs_f(const float *x, size_t n)
{
    float m[DFM__VB] = {0};
    size_t i = 0;
    for (; i + DFM__VB <= n; i += DFM__VB)
        for (int k = 0; k < DFM__VB; k++) {
            float v = fabsf(x[i + (size_t)k]);
            m[k] = v > m[k] ? v : m[k];
        }
    float mm = 0.0f;
    for (; i < n; i++) mm = fabsf(x[i]) > mm ? fabsf(x[i]) : mm;
    for (int k = 0; k < DFM__VB; k++) mm = m[k] > mm ? m[k] : mm;
    return mm;
}

typedef struct sample_ctx {
    const dfm_path *p;
    const dfm_path_sample_args *a;
    const double *co; /* rows x 4: alpha, sigma, d_alpha, d_sigma */
    size_t d;
    float *bound;     /* rows x 2: max |x1|, max |x0| (-1: not finite), from bound_range */
} sample_ctx;

/* Per-row validation, in parallel: finiteness and max |x| of x1 (and a given x0). */
static int bound_range(void *vctx, size_t begin, size_t end, int tid)
{
    const sample_ctx *c = (const sample_ctx *)vctx;
    const dfm_path_sample_args *a = c->a;
    size_t d = c->d;
    (void)tid;
    for (size_t r = begin; r < end; r++) {
        const float *x1 = a->x1_reals + r * d;
        c->bound[2 * r] = all_finite_f(x1, d) ? max_abs_f(x1, d) : -1.0f;
        if (a->x0_reals) {
            const float *x0 = a->x0_reals + r * d;
            c->bound[2 * r + 1] = all_finite_f(x0, d) ? max_abs_f(x0, d) : -1.0f;
        } else {
            c->bound[2 * r + 1] = 6.0f;
        }
    }
    return 0;
}

DFM_CLONES_V4
static void affine_row(size_t d, const float *restrict x1, const float *restrict x0, float a,
                       float s, float da, float ds, float *restrict xt, float *restrict tg)
{
    size_t j = 0;
    for (; j + DFM__VB <= d; j += DFM__VB)
        for (int k = 0; k < DFM__VB; k++) xt[j + k] = a * x1[j + k] + s * x0[j + k];
    for (; j < d; j++) xt[j] = a * x1[j] + s * x0[j];
    if (!tg) return;
    for (j = 0; j + DFM__VB <= d; j += DFM__VB)
        for (int k = 0; k < DFM__VB; k++) tg[j + k] = da * x1[j + k] + ds * x0[j + k];
    for (; j < d; j++) tg[j] = da * x1[j] + ds * x0[j];
}

static int sample_range(void *vctx, size_t begin, size_t end, int tid)
{
    const sample_ctx *c = (const sample_ctx *)vctx;
    const dfm_path_sample_args *a = c->a;
    size_t d = c->d;
    (void)tid;
    for (size_t r = begin; r < end; r++) {
        const float *x1 = a->x1_reals + r * d;
        const double *co = c->co + 4 * r;
        float *xt = a->xt_reals + r * d;
        float *tg = a->target_reals ? a->target_reals + r * d : NULL;
        const float *x0;
        float *x0o = a->x0_reals_out ? a->x0_reals_out + r * d : NULL;
        if (a->x0_reals) {
            x0 = a->x0_reals + r * d;
            if (x0o) memcpy(x0o, x0, d * sizeof(float));
            affine_row(d, x1, x0, (float)co[0], (float)co[1], (float)co[2], (float)co[3], xt, tg);
            continue;
        }
        /* Draw x0 64 coordinates (16 Philox blocks) at a time. */
        for (size_t j = 0; j < d; j += 4 * NB) {
            size_t n = d - j < 4 * NB ? d - j : 4 * NB;
            float tmp[4 * NB];
            float *dst = x0o && n == 4 * NB ? x0o + j : tmp;
            normal_blocks(c->p->b.seed, DFM_STREAM_AFFINE_X0, a->row_offset + r, a->draw,
                          (uint32_t)(j / 4), dst);
            if (x0o && dst == tmp) memcpy(x0o + j, tmp, n * sizeof(float));
            affine_row(n, x1 + j, dst, (float)co[0], (float)co[1], (float)co[2], (float)co[3],
                       xt + j, tg ? tg + j : NULL);
        }
    }
    return 0;
}

static int affine_sample(dfm_path *p, const dfm_path_sample_args *a)
{
    size_t d = p->space.n_reals, n;
    if (a->struct_size < sizeof(dfm_path_sample_args))
        return dfm__fail(&p->b, DFM_EINVAL, "args->struct_size is too small");
    if (a->x1_tokens || a->x0_tokens || a->xt_tokens)
        return dfm__fail(&p->b, DFM_EINVAL,
                         "an affine path has no tokens: token members must be NULL");
    if (a->rows == 0) return 0;
    if (!a->x1_reals || !a->xt_reals)
        return dfm__fail(&p->b, DFM_EINVAL, "args->x1_reals and args->xt_reals are required");
    if (dfm__mul(a->rows, d, &n)) return dfm__fail(&p->b, DFM_EOVERFLOW, "rows x D overflows");
    if ((uint64_t)a->rows > ((uint64_t)1 << 56) ||
        a->row_offset > ((uint64_t)1 << 56) - a->rows)
        return dfm__fail(&p->b, DFM_ERANGE, "row_offset + rows must be < 2^56");
    size_t bytes;
    if (dfm__mul3(a->rows, 4, sizeof(double), &bytes))
        return dfm__fail(&p->b, DFM_EOVERFLOW, "rows too large");
    (void)n;
    double *co = (double *)dfm__alloc(&p->b.mem, bytes);
    float *bound = (float *)dfm__calloc(&p->b.mem, a->rows, 2 * sizeof(float));
    if (!co || !bound) {
        dfm__free(&p->b.mem, co);
        dfm__free(&p->b.mem, bound);
        return dfm__fail_nomem(&p->b, "path scratch", a->rows, DFM__HINT_ROWS);
    }
    sample_ctx c = {p, a, co, d, bound};
    int st = dfm__parallel_for(&p->b, p->b.nthreads, a->rows, bound_range, &c);
    for (size_t r = 0; r < a->rows && !st; r++) {
        if (bound[2 * r] < 0.0f)
            st = dfm__fail(&p->b, DFM_ENUMERIC, "x1_reals[row %zu] has a NaN or Inf", r);
        else if (bound[2 * r + 1] < 0.0f)
            st = dfm__fail(&p->b, DFM_ENUMERIC, "x0_reals[row %zu] has a NaN or Inf", r);
    }
    double last_t = -1.0;
    dfm_sched_values v = {0, 0, 0, 0};
    for (size_t r = 0; r < a->rows && !st; r++) {
        if (a->t[r] != last_t) {
            st = dfm__sched_eval(&p->sched, a->t[r], &v, &p->b.cb_raw);
            if (st == DFM_ECALLBACK) {
                st = dfm__fail_callback(&p->b, p->b.cb_raw, "scheduler");
                break;
            }
            if (st) { st = dfm__fail(&p->b, st, "scheduler failed at t = %g", a->t[r]); break; }
            last_t = a->t[r];
        }
        if (a->target_reals && (!isfinite(v.d_alpha) || !isfinite(v.d_sigma))) {
            st = dfm__fail(&p->b, DFM_ERANGE,
                           "the conditional velocity is undefined at t[%zu] = %g (infinite "
                           "scheduler derivative)", r, a->t[r]);
            break;
        }
        co[4 * r] = v.alpha; co[4 * r + 1] = v.sigma;
        co[4 * r + 2] = v.d_alpha; co[4 * r + 3] = v.d_sigma;
    }
    /* Validate before writing: x_t and the target must be finite floats. Bound them per row by
     * |coef| max|x1| + |coef| max|x0| (a drawn x0 is a Box-Muller normal of 24-bit uniforms,
     * |x0| < 6); the coefficients themselves must be floats (a huge kappa' near t = 0). */
    for (size_t r = 0; r < a->rows && !st; r++) {
        const double *cr = co + 4 * r;
        double m1 = (double)bound[2 * r], m0 = (double)bound[2 * r + 1];
        int bad = !(fabs(cr[0]) <= FLT_MAX && fabs(cr[1]) <= FLT_MAX &&
                    fabs(cr[0]) * m1 + fabs(cr[1]) * m0 <= FLT_MAX);
        if (a->target_reals)
            bad |= !(fabs(cr[2]) <= FLT_MAX && fabs(cr[3]) <= FLT_MAX &&
                     fabs(cr[2]) * m1 + fabs(cr[3]) * m0 <= FLT_MAX);
        if (bad)
            st = dfm__fail(&p->b, DFM_ENUMERIC,
                           "x_t or the target velocity overflows float at row %zu (t = %g)", r,
                           a->t[r]);
    }
    if (!st) st = dfm__parallel_for(&p->b, p->b.nthreads, a->rows, sample_range, &c);
    dfm__free(&p->b.mem, co);
    dfm__free(&p->b.mem, bound);
    return st;
}

static const dfm__path_ops affine_ops = {NULL, NULL, affine_sample, NULL};

int dfm_path_create_affine(dfm_path **out, const dfm_space *space, const dfm_scheduler *sched,
                           const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!space || !sched) return dfm__null(__func__, "space or sched");
    if (space->n_tokens != 0 || space->n_reals == 0)
        return dfm__error(DFM_EINVAL, "%s: the space must have reals and no tokens (%zu tokens, "
                          "%zu reals)", __func__, space->n_tokens, space->n_reals);
    return dfm__path_new(out, DFM_PATH_AFFINE, &affine_ops, space, sched, mem);
}
