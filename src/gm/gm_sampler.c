/* The joint sampler of superposition and product generators: one model call per branch and
 * step for all parts; discrete parts take the exact mixture step or an Euler step in the
 * (superposed, clamped) rates, continuous parts an Euler(-Maruyama) step with the superposed
 * drift and diffusion (docs/gm.md). */
#include "gm/gm_impl.h"
#include "continuous/continuous_impl.h"
#include "discrete/discrete_impl.h"
#include "core/rng_impl.h"

#include <math.h>

/* Random streams of the joint sampler (keyed by the part's seed). */
#define GM_STREAM_STEP 0x38u /* discrete: jump coin + target, coord = token in part, step = i */
#define GM_STREAM_SRC  0x39u /* discrete: source draw (draw_source), step = 0 */

typedef struct comp {
    const dfm_generator *g;
    int kind;     /* C_LOGITS, C_RATES, C_BWD, C_CONT */
    int branch;
    size_t off;   /* offset of its slice in the branch's output row */
    size_t wi;    /* index into the block's weights */
} comp;

enum { C_LOGITS, C_RATES, C_BWD, C_CONT };

typedef struct block {
    dfm__gm_slot sl;
    int cont;
    int exact;               /* plain logits leaf stepped with the exact mixture step */
    int all_logits;          /* discrete, every component a logits leaf (mix_token) */
    size_t nc;
    comp c[DFM__GM_MAXP];
    const dfm__gm_sup *sup;  /* weights source, or NULL (weight 1) */
    uint64_t seed;
    const dfm_path *path;    /* the block's path (source, kappa) */
} block;

typedef struct gm_samp {
    size_t nb;
    block b[DFM__GM_MAXP];
    size_t bstride[2];
    size_t nt, nr, nparts;
    int product;
    int stages;              /* 1, or 2 (midpoint) / 4 (RK4) for drift-only continuous runs */
    dfm_part_time_fn ptfn;   /* per-part sampling times (product generators), or NULL */
    void *ptud;
    int64_t last_clamped;
    size_t mark;             /* output marking group: V when every part is discrete with one V */
} gm_samp;

static int comp_kind(const dfm_generator *g)
{
    if (dfm__gm_is_bwd(g)) return C_BWD;
    if (g->kind == DFM_GEN_FACTORIZED) return g->param == DFM_PARAM_LOGITS ? C_LOGITS : C_RATES;
    return C_CONT;
}

/* Fill block k from generator g at slot sl with branch offsets mo (MAIN) and uo (UNCOND). */
static void build_block(block *bk, const dfm_generator *g, const dfm__gm_slot *sl, size_t mo,
                        size_t uo)
{
    int cont;
    bk->sl = *sl;
    dfm__gm_steppable(g, &cont, NULL);
    bk->cont = cont;
    bk->path = g->path;
    if (dfm__gm_is_sup(g)) {
        const dfm__gm_sup *s = (const dfm__gm_sup *)g->impl;
        bk->sup = s;
        bk->nc = s->n;
        for (size_t k = 0; k < s->n; k++) {
            bk->c[k].g = s->comp[k];
            bk->c[k].kind = comp_kind(s->comp[k]);
            bk->c[k].branch = s->branch[k] ? 1 : 0;
            bk->c[k].off = (s->branch[k] ? uo : mo) + s->off[k];
            bk->c[k].wi = k;
        }
    } else {
        bk->sup = NULL;
        bk->nc = 1;
        bk->c[0].g = g;
        bk->c[0].kind = comp_kind(g);
        bk->c[0].branch = 0;
        bk->c[0].off = mo;
        bk->c[0].wi = 0;
    }
}

static void gs_destroy(dfm_sampler *s)
{
    dfm__free(&s->b.mem, s->impl);
    s->impl = NULL;
}

static int gs_get_int(const dfm_sampler *s, int opt, int64_t *v)
{
    (void)s; (void)opt; (void)v;
    return DFM_EUNSUPPORTED;
}

/* ---- per-step kernels ---- */

typedef struct err_rec { int code; size_t row, coord; } err_rec;

typedef struct step_ctx {
    dfm_sampler *s;
    const gm_samp *gs;
    const dfm_run_args *a;
    const block *bk;
    int32_t *tok;            /* rows x nt */
    double *re;              /* rows x nr */
    const float *out[2];     /* rows x bstride[b] */
    const double *w;         /* block weights at t */
    uint32_t step;
    double h;
    /* discrete */
    double F[DFM__GM_MAXP];  /* integrated time factor per component (may be +inf) */
    double kt, kh;           /* kappa at t and t + h of the block path (exact step) */
    int final;               /* a logits component reaches kappa = 1 at the step's end */
    size_t nmix;             /* all-logits block: its 1 or 2 active components (else 0) */
    size_t mix_k[2];
    double mix_f[2];         /* their factors: w_k F_k, or w_k in the final step */
    /* continuous */
    double A[DFM__GM_MAXP], B[DFM__GM_MAXP];
    double G2;               /* superposed g^2 (clamped at 0) */
    double *kout;            /* Runge-Kutta stage: write the drift here instead of stepping */
    double *scratch;         /* per thread: 3 V doubles (discrete) or nr floats (continuous) */
    size_t scr_per;
    int64_t *jumps, *clamped;
    err_rec *err;
} step_ctx;

static int rec_err(step_ctx *c, int tid, int code, size_t r, size_t i)
{
    if (!c->err[tid].code) { c->err[tid].code = code; c->err[tid].row = r; c->err[tid].coord = i; }
    return code;
}

/* One discrete token's step. Scratch of the calling thread and what it counts. */
typedef struct tok_step {
    int32_t V;
    const dfm__mixture *mx;  /* the block's mixture path (source of backward components) */
    double *lam, *inf;       /* V superposed rates: finite and infinite integrated parts */
    float *pf;               /* V floats: softmax numerators */
    int64_t clamped;
} tok_step;

/* Exact mixture step of a logits leaf: with probability (kappa(t + h) - kappa(t)) /
 * (1 - kappa(t)) the token is drawn from p_{1|t}, else it stays. */
static int exact_token(const step_ctx *c, tok_step *ts, const float *z, double u1, double u2,
                       int32_t *y)
{
    int bad;
    float mxz = dfm__max_check(z, (size_t)ts->V, &bad);
    if (bad || mxz == -INFINITY) return DFM_ENUMERIC;
    double pj = c->kt >= 1.0 ? 0.0 : (c->kh - c->kt) / (1.0 - c->kt);
    if (u1 < pj) {
        int32_t t1;
        if (dfm__categorical_logits(z, (size_t)ts->V, 1.0, u2, ts->pf, &t1)) return DFM_ENUMERIC;
        *y = t1;
    }
    return 0;
}

/* An infinite integrated rate mixes the token to the component's own stationary law: p_{1|t}
 * (logits) or p0 (backward), x included. Backward component: rate f p0(v) towards the source,
 * entered with a minus sign (it runs the mixture path backwards). */
static int add_backward(tok_step *ts, int32_t xi, double f, int isinf_, double *dst)
{
    const dfm__mixture *mx = ts->mx;
    int any_inf = 0;
    if (mx->source == DFM_SOURCE_MASK) {
        if (isinf_ || xi != mx->mask) { dst[mx->mask] -= f; any_inf |= isinf_; }
    } else {
        for (int32_t v = 0; v < ts->V; v++)
            if ((isinf_ || v != xi) && mx->p0[v] > 0.0) {
                dst[v] -= f * mx->p0[v];
                any_inf |= isinf_;
            }
    }
    return any_inf;
}

/* Rates component: the model's rates z (>= 0, finite) times f. */
static int add_rates(const tok_step *ts, const float *z, int32_t xi, double f, double *dst)
{
    for (int32_t v = 0; v < ts->V; v++) {
        if (v == xi) continue;
        if (!(z[v] >= 0.0f) || z[v] == INFINITY) return DFM_ENUMERIC;
        dst[v] += f * (double)z[v];
    }
    return 0;
}

/* Logits component: f p_{1|t}(v) from the logits z (vectorised softmax: p(v) = pf[v] / tot). */
static int add_logits(tok_step *ts, const float *z, int32_t xi, double f, int isinf_, double *dst)
{
    int bad;
    float zmax = dfm__max_check(z, (size_t)ts->V, &bad);
    if (bad || zmax == -INFINITY) return DFM_ENUMERIC;
    double sc = f / dfm__exp_shift_sum(z, (size_t)ts->V, zmax, 1.0f, ts->pf);
    for (int32_t v = 0; v < ts->V; v++)
        if (isinf_ || v != xi) dst[v] += sc * (double)ts->pf[v];
    return 0;
}

/* Superposed rates out of xi over the step: component k with weight w_k and integrated time
 * factor F_k adds w_k F_k times its rates to lam, or w_k times them to inf when F_k = +inf. */
static int superpose_rates(const step_ctx *c, tok_step *ts, size_t r, size_t i, int32_t xi,
                           int *any_inf)
{
    const block *bk = c->bk;
    const int32_t V = ts->V;
    for (int32_t v = 0; v < V; v++) ts->lam[v] = ts->inf[v] = 0.0;
    int anyi = 0;
    for (size_t k = 0; k < bk->nc; k++) {
        const comp *cp = &bk->c[k];
        double wk = c->w[cp->wi], F = c->F[k];
        if (wk == 0.0 || F == 0.0 || (c->final && !isinf(F))) continue;
        int isinf_ = isinf(F);
        double *dst = isinf_ ? ts->inf : ts->lam;
        double f = isinf_ ? wk : wk * F;
        if (cp->kind == C_BWD) {
            anyi |= add_backward(ts, xi, f, isinf_, dst);
            continue;
        }
        const float *z = c->out[cp->branch] + r * c->gs->bstride[cp->branch] + cp->off +
                         i * (size_t)V;
        if (cp->kind == C_RATES) {
            if (add_rates(ts, z, xi, f, dst)) return DFM_ENUMERIC;
        } else {
            if (add_logits(ts, z, xi, f, isinf_, dst)) return DFM_ENUMERIC;
            anyi |= isinf_;
        }
    }
    *any_inf = anyi;
    return 0;
}

/* Negative superposed rates are clamped at 0 (and counted). When an infinite rate reaches
 * another value the token jumps surely, its new value (x included) drawn from the infinite
 * part; else the rates out of x are kept. *tot = their sum. */
static int clamp_rates(tok_step *ts, int32_t xi, int any_inf, int *sure, double *tot)
{
    const int32_t V = ts->V;
    double *lam = ts->lam;
    const double *inf = ts->inf;
    double sum = 0.0;
    int s = 0;
    if (any_inf)
        for (int32_t v = 0; v < V; v++)
            if (v != xi && inf[v] > 0.0) s = 1;
    if (s) {
        for (int32_t v = 0; v < V; v++) {
            if (v != xi && (inf[v] < 0.0 || (inf[v] == 0.0 && lam[v] < 0.0))) ts->clamped++;
            lam[v] = inf[v] > 0.0 ? inf[v] : 0.0;
            sum += lam[v];
        }
    } else {
        for (int32_t v = 0; v < V; v++) {
            if (v == xi) { lam[v] = 0.0; continue; }
            if (inf[v] < 0.0) { ts->clamped++; lam[v] = 0.0; continue; }
            if (lam[v] < 0.0) { ts->clamped++; lam[v] = 0.0; }
            if (!isfinite(lam[v])) return DFM_ENUMERIC;
            sum += lam[v];
        }
    }
    *sure = s;
    *tot = sum;
    return 0;
}

/* Euler step in the superposed rates: superpose, clamp, then jump with probability
 * 1 - exp(-tot) (or surely) to a value drawn in proportion to the rates. */
static int rates_token(const step_ctx *c, tok_step *ts, size_t r, size_t i, int32_t xi, double u1,
                       double u2, int32_t *y)
{
    int any_inf, sure;
    double tot;
    if (superpose_rates(c, ts, r, i, xi, &any_inf)) return DFM_ENUMERIC;
    if (clamp_rates(ts, xi, any_inf, &sure, &tot)) return DFM_ENUMERIC;
    if (tot > 0.0 && (sure || u1 < -expm1(-tot))) {
        double target = u2 * tot, acc = 0.0;
        int32_t last = -1;
        for (int32_t v = 0; v < ts->V; v++) {
            if (ts->lam[v] <= 0.0) continue;
            acc += ts->lam[v];
            last = v;
            if (acc > target) break;
        }
        if (last >= 0) *y = last;
    }
    return 0;
}

/* ---- the Euler step of an all-logits block (guidance) in one pass over the rates ----
 * The same rates as superpose_rates + clamp_rates for such a block: with 1 or 2 active
 * components, the rate towards y is g(y) = s_0 e_0(y) + s_1 e_1(y), e_k component k's softmax
 * numerators and s_k = f_k / sum e_k (f_k = w_k F_k, or w_k when the factors are infinite), each
 * entry computed as there. Only the order of the total's sum differs: MIX_LANES lanes within
 * blocks of MIX_BLK entries, the block sums then in order, the same on every machine. */
#define MIX_BLK 256
#define MIX_LANES 16

/* Block sums of max(0, g) into bs (blocks of MIX_BLK entries), and the counts of g < 0 and
 * g > 0 (pos may be NULL). Lane j of a block takes its entries j, j + MIX_LANES, ... (the
 * tail's from j = 0), and the lanes are added pairwise (j + 8 into j, then 4, 2, 1): the vector
 * code below and the portable code give the same sums. While the vector code runs, the next
 * token's logits (n floats at pa and at pb) are brought into the cache, one line of each per
 * MIX_LANES entries: logits a model just wrote come from memory, a page (V = 1024) per token,
 * too far apart for the hardware prefetcher. */
static void mix_sums_c(const float *e0, const float *e1, double s0, double s1, size_t n,
                       double *bs, int64_t *neg, int64_t *pos)
{
    int64_t cn = 0, cp = 0;
    size_t i = 0;
    for (size_t b = 0; i < n; b++) {
        size_t end = n - i > MIX_BLK ? i + MIX_BLK : n;
        double acc[MIX_LANES] = {0};
        for (int j = 0; i < end; i++, j = (j + 1) % MIX_LANES) {
            double g = s0 * (double)e0[i] + s1 * (double)e1[i];
            cn += g < 0.0;
            cp += g > 0.0;
            acc[j] += g > 0.0 ? g : 0.0;
        }
        for (int w = MIX_LANES / 2; w > 0; w /= 2)
            for (int j = 0; j < w; j++) acc[j] += acc[j + w];
        bs[b] = acc[0];
    }
    *neg = cn;
    if (pos) *pos = cp;
}

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && !defined(DFM_NO_CLONES) \
    && (defined(__clang__) ? (__clang_major__ >= 14) : (__GNUC__ >= 9))
#define MIX_X86 1
#include <immintrin.h>

/* The tail of a block (fewer than MIX_LANES entries from i): lane j takes entry i + j. */
static inline __attribute__((always_inline)) void mix_tail(const float *e0, const float *e1,
                                                           double s0, double s1, size_t i,
                                                           size_t end, double *acc, int64_t *cn,
                                                           int64_t *cp)
{
    for (int j = 0; i < end; i++, j++) {
        double g = s0 * (double)e0[i] + s1 * (double)e1[i];
        *cn += g < 0.0;
        *cp += g > 0.0;
        acc[j] += g > 0.0 ? g : 0.0;
    }
}

/* One line of each of the next token's logits (pa, pb) per MIX_LANES entries. */
#define MIX_PREFETCH()                                                                             \
    do {                                                                                           \
        _mm_prefetch((const char *)(pa + i), _MM_HINT_T0);                                         \
        _mm_prefetch((const char *)(pb + i), _MM_HINT_T0);                                         \
    } while (0)

#define MIX_STEP4(acc, off)                                                                        \
    do {                                                                                           \
        __m256d g = _mm256_add_pd(                                                                 \
            _mm256_mul_pd(vs0, _mm256_cvtps_pd(_mm_loadu_ps(e0 + i + (off)))),                     \
            _mm256_mul_pd(vs1, _mm256_cvtps_pd(_mm_loadu_ps(e1 + i + (off)))));                    \
        kn = _mm256_sub_epi64(kn, _mm256_castpd_si256(_mm256_cmp_pd(g, zero, _CMP_LT_OQ)));        \
        if (want_pos)                                                                              \
            kp = _mm256_sub_epi64(kp, _mm256_castpd_si256(_mm256_cmp_pd(g, zero, _CMP_GT_OQ)));    \
        acc = _mm256_add_pd(acc, _mm256_max_pd(g, zero));                                          \
    } while (0)

__attribute__((target("avx2"))) static inline __attribute__((always_inline)) void
mix_avx2_body(const float *e0, const float *e1, double s0, double s1, size_t n, double *bs,
              int64_t *neg, int64_t *pos, const float *pa, const float *pb, const int want_pos)
{
    const __m256d zero = _mm256_setzero_pd(), vs0 = _mm256_set1_pd(s0), vs1 = _mm256_set1_pd(s1);
    __m256i kn = _mm256_setzero_si256(), kp = kn;
    int64_t cn = 0, cp = 0;
    size_t i = 0;
    for (size_t b = 0; i < n; b++) {
        size_t end = n - i > MIX_BLK ? i + MIX_BLK : n;
        __m256d a0 = zero, a1 = zero, a2 = zero, a3 = zero;
        for (; i + MIX_LANES <= end; i += MIX_LANES) {
            MIX_PREFETCH();
            MIX_STEP4(a0, 0);
            MIX_STEP4(a1, 4);
            MIX_STEP4(a2, 8);
            MIX_STEP4(a3, 12);
        }
        if (i < end) {
            double acc[MIX_LANES];
            _mm256_storeu_pd(acc, a0);
            _mm256_storeu_pd(acc + 4, a1);
            _mm256_storeu_pd(acc + 8, a2);
            _mm256_storeu_pd(acc + 12, a3);
            mix_tail(e0, e1, s0, s1, i, end, acc, &cn, &cp);
            i = end;
            a0 = _mm256_loadu_pd(acc);
            a1 = _mm256_loadu_pd(acc + 4);
            a2 = _mm256_loadu_pd(acc + 8);
            a3 = _mm256_loadu_pd(acc + 12);
        }
        /* lanes j + 8 into j, then 4, 2, 1 */
        a0 = _mm256_add_pd(a0, a2);
        a1 = _mm256_add_pd(a1, a3);
        a0 = _mm256_add_pd(a0, a1);
        __m128d h = _mm_add_pd(_mm256_castpd256_pd128(a0), _mm256_extractf128_pd(a0, 1));
        bs[b] = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
    }
    int64_t q[4], r[4];
    _mm256_storeu_si256((__m256i *)(void *)q, kn);
    _mm256_storeu_si256((__m256i *)(void *)r, kp);
    *neg = cn + q[0] + q[1] + q[2] + q[3];
    if (want_pos) *pos = cp + r[0] + r[1] + r[2] + r[3];
}
#undef MIX_STEP4

__attribute__((target("avx2"))) static void mix_sums_avx2(const float *e0, const float *e1,
                                                          double s0, double s1, size_t n,
                                                          double *bs, int64_t *neg, int64_t *pos,
                                                          const float *pa, const float *pb)
{
    if (pos) mix_avx2_body(e0, e1, s0, s1, n, bs, neg, pos, pa, pb, 1);
    else mix_avx2_body(e0, e1, s0, s1, n, bs, neg, pos, pa, pb, 0);
}

#define MIX_STEP8(acc, off)                                                                        \
    do {                                                                                           \
        __m512d g = _mm512_add_pd(                                                                 \
            _mm512_mul_pd(vs0, _mm512_cvtps_pd(_mm256_loadu_ps(e0 + i + (off)))),                  \
            _mm512_mul_pd(vs1, _mm512_cvtps_pd(_mm256_loadu_ps(e1 + i + (off)))));                 \
        __mmask8 gt = _mm512_cmp_pd_mask(g, zero, _CMP_GT_OQ);                                     \
        kn = _mm512_mask_add_epi64(kn, _mm512_cmp_pd_mask(g, zero, _CMP_LT_OQ), kn, one);          \
        if (want_pos) kp = _mm512_mask_add_epi64(kp, gt, kp, one);                                 \
        acc = _mm512_mask_add_pd(acc, gt, acc, g); /* acc + max(0, g) */                           \
    } while (0)

__attribute__((target("avx512f,avx512dq,avx512vl,avx512bw"))) static inline
    __attribute__((always_inline)) void
    mix_avx512_body(const float *e0, const float *e1, double s0, double s1, size_t n, double *bs,
                    int64_t *neg, int64_t *pos, const float *pa, const float *pb,
                    const int want_pos)
{
    const __m512d zero = _mm512_setzero_pd(), vs0 = _mm512_set1_pd(s0), vs1 = _mm512_set1_pd(s1);
    const __m512i one = _mm512_set1_epi64(1);
    __m512i kn = _mm512_setzero_si512(), kp = kn;
    int64_t cn = 0, cp = 0;
    size_t i = 0;
    for (size_t b = 0; i < n; b++) {
        size_t end = n - i > MIX_BLK ? i + MIX_BLK : n;
        __m512d a0 = zero, a1 = zero;
        for (; i + MIX_LANES <= end; i += MIX_LANES) {
            MIX_PREFETCH();
            MIX_STEP8(a0, 0);
            MIX_STEP8(a1, 8);
        }
        if (i < end) {
            double acc[MIX_LANES];
            _mm512_storeu_pd(acc, a0);
            _mm512_storeu_pd(acc + 8, a1);
            mix_tail(e0, e1, s0, s1, i, end, acc, &cn, &cp);
            i = end;
            a0 = _mm512_loadu_pd(acc);
            a1 = _mm512_loadu_pd(acc + 8);
        }
        /* lanes j + 8 into j, then 4, 2, 1 */
        a0 = _mm512_add_pd(a0, a1);
        __m256d q = _mm256_add_pd(_mm512_castpd512_pd256(a0), _mm512_extractf64x4_pd(a0, 1));
        __m128d h = _mm_add_pd(_mm256_castpd256_pd128(q), _mm256_extractf128_pd(q, 1));
        bs[b] = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
    }
    *neg = cn + _mm512_reduce_add_epi64(kn);
    if (want_pos) *pos = cp + _mm512_reduce_add_epi64(kp);
}
#undef MIX_STEP8
#undef MIX_PREFETCH

__attribute__((target("avx512f,avx512dq,avx512vl,avx512bw"))) static void
mix_sums_avx512(const float *e0, const float *e1, double s0, double s1, size_t n, double *bs,
                int64_t *neg, int64_t *pos, const float *pa, const float *pb)
{
    if (pos) mix_avx512_body(e0, e1, s0, s1, n, bs, neg, pos, pa, pb, 1);
    else mix_avx512_body(e0, e1, s0, s1, n, bs, neg, pos, pa, pb, 0);
}

static int mix_level(void)
{
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw"))
        return 2;
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}
#endif

/* pa, pb: the next token's logits to fetch (any readable n floats when there is none). */
static void mix_sums(const float *e0, const float *e1, double s0, double s1, size_t n,
                     double *bs, int64_t *neg, int64_t *pos, const float *pa, const float *pb)
{
#ifdef MIX_X86
    int lv = mix_level();
    if (lv == 2) { mix_sums_avx512(e0, e1, s0, s1, n, bs, neg, pos, pa, pb); return; }
    if (lv == 1) { mix_sums_avx2(e0, e1, s0, s1, n, bs, neg, pos, pa, pb); return; }
#endif
    (void)pa;
    (void)pb;
    mix_sums_c(e0, e1, s0, s1, n, bs, neg, pos);
}

/* The entry drawn in proportion to max(0, g) with uniform u, given the block sums bs (total
 * tot > 0, summed in order): the block where the running sum passes u tot, then the entry
 * within it (its last positive entry if rounding leaves the sum short). */
static int32_t mix_draw(const float *e0, const float *e1, double s0, double s1, size_t n,
                        const double *bs, double tot, double u)
{
    double target = u * tot, acc = 0.0;
    size_t b = 0, lastb = 0, i = 0;
    for (; i < n; b++, i += MIX_BLK) {
        if (bs[b] > 0.0) lastb = b;
        if (bs[b] > 0.0 && acc + bs[b] > target) break;
        acc += bs[b];
    }
    if (i >= n) { b = lastb; i = b * MIX_BLK; acc = -INFINITY; } /* u tot rounded to tot */
    size_t end = n - i > MIX_BLK ? i + MIX_BLK : n;
    int32_t last = -1;
    for (size_t v = i; v < end; v++) {
        double g = s0 * (double)e0[v] + s1 * (double)e1[v];
        if (!(g > 0.0)) continue;
        acc += g;
        last = (int32_t)v;
        if (acc > target) break;
    }
    return last;
}

/* The Euler step of one token of an all-logits block (c->nmix active components): softmax
 * numerators of each, the clamped rates summed and counted in one pass, then the jump (surely
 * in the final step when a positive rate leaves x, drawn with x included). */
static int mix_token(const step_ctx *c, tok_step *ts, size_t r, size_t i, int32_t xi, double u1,
                     double u2, int32_t *y)
{
    const size_t V = (size_t)ts->V;
    float *e[2] = {ts->pf, ts->pf + V};
    double sc[2] = {0.0, 0.0};
    const float *next[2] = {ts->pf, ts->pf}; /* the next token's logits, fetched during the pass */
    size_t rn = i + 1 < c->bk->sl.n_tok ? r : r + 1, in = i + 1 < c->bk->sl.n_tok ? i + 1 : 0;
    for (size_t q = 0; q < c->nmix; q++) {
        const comp *cp = &c->bk->c[c->mix_k[q]];
        const float *z = c->out[cp->branch] + r * c->gs->bstride[cp->branch] + cp->off + i * V;
        if (rn < c->a->rows)
            next[q] = c->out[cp->branch] + rn * c->gs->bstride[cp->branch] + cp->off + in * V;
        int bad;
        float zmax = dfm__max_check(z, V, &bad);
        if (bad || zmax == -INFINITY) return DFM_ENUMERIC;
        sc[q] = c->mix_f[q] / dfm__exp_shift_sum(z, V, zmax, 1.0f, e[q]);
    }
    if (c->nmix == 1) e[1] = e[0];
    double gx = sc[0] * (double)e[0][xi] + sc[1] * (double)e[1][xi];
    if (!c->final) e[0][xi] = e[1][xi] = 0.0f; /* the rate out of x to itself is not one */
    double *bs = ts->lam, tot = 0.0;
    int64_t neg, pos = 0;
    mix_sums(e[0], e[1], sc[0], sc[1], V, bs, &neg, c->final ? &pos : NULL, next[0], next[1]);
    for (size_t b = 0; b * MIX_BLK < V; b++) tot += bs[b];
    int jump;
    if (c->final) { /* counts over y != x; x itself takes part in the draw */
        neg -= gx < 0.0;
        pos -= gx > 0.0;
        jump = pos > 0;
    } else {
        if (!isfinite(tot)) return DFM_ENUMERIC;
        jump = tot > 0.0 && u1 < -expm1(-tot);
    }
    ts->clamped += neg;
    if (jump) {
        int32_t v = mix_draw(e[0], e[1], sc[0], sc[1], V, bs, tot, u2);
        if (v >= 0) *y = v;
    }
    return 0;
}

/* Rows [begin, end) of a discrete block: every free token takes the exact or the Euler step. */
static int disc_rows(void *vctx, size_t begin, size_t end, int tid)
{
    step_ctx *c = (step_ctx *)vctx;
    const block *bk = c->bk;
    const dfm_run_args *a = c->a;
    const size_t nt = c->gs->nt, d = bk->sl.n_tok;
    tok_step ts;
    ts.V = dfm__space_vocab(&bk->path->space, 0);
    ts.mx = dfm__mixture_of(bk->path);
    ts.lam = c->scratch + (size_t)tid * c->scr_per;
    ts.inf = ts.lam + ts.V;
    ts.pf = (float *)(ts.inf + ts.V);
    ts.clamped = 0;
    int64_t jumps = 0;
    for (size_t r = begin; r < end; r++) {
        uint64_t grow = (uint64_t)(a->row_offset + r);
        int32_t *x = c->tok + r * nt + bk->sl.tok_off;
        const uint8_t *fx = a->fixed ? a->fixed + r * nt + bk->sl.tok_off : NULL;
        for (size_t i = 0; i < d; i++) {
            if (fx && fx[i]) continue;
            int32_t xi = x[i], y = xi;
            double u1, u2;
            dfm__uniform2(bk->seed, GM_STREAM_STEP, grow, (uint32_t)i, c->step, &u1, &u2);
            int code;
            if (bk->exact)
                code = exact_token(c, &ts, c->out[0] + r * c->gs->bstride[0] + bk->c[0].off +
                                               i * (size_t)ts.V, u1, u2, &y);
            else if (c->nmix)
                code = mix_token(c, &ts, r, i, xi, u1, u2, &y);
            else
                code = rates_token(c, &ts, r, i, xi, u1, u2, &y);
            if (code) return rec_err(c, tid, code, r, i);
            if (y != xi) { x[i] = y; jumps++; }
        }
    }
    c->jumps[tid] += jumps;
    c->clamped[tid] += ts.clamped;
    return 0;
}

static int cont_rows(void *vctx, size_t begin, size_t end, int tid)
{
    step_ctx *c = (step_ctx *)vctx;
    const block *bk = c->bk;
    const dfm_run_args *a = c->a;
    const size_t nr = c->gs->nr, D = bk->sl.n_real;
    float *z = (float *)(c->scratch + (size_t)tid * c->scr_per);
    double sq = sqrt(c->G2 * c->h);
    for (size_t r = begin; r < end; r++) {
        double *x = c->re + r * nr + bk->sl.real_off;
        for (size_t k = 0; k < bk->nc; k++) {
            const comp *cp = &bk->c[k];
            const float *y = c->out[cp->branch] + r * c->gs->bstride[cp->branch] + cp->off;
            if (!dfm__all_finite_f(y, D)) {
                size_t j = 0;
                while (j < D && isfinite(y[j])) j++;
                return rec_err(c, tid, DFM_ENUMERIC, r, j);
            }
        }
        if (sq > 0.0 && !c->kout)
            dfm__normal_row(bk->seed, DFM_STREAM_SDE_NOISE, a->row_offset + r, c->step, D, z);
        for (size_t j = 0; j < D; j++) {
            double xj = x[j], dr = 0.0;
            for (size_t k = 0; k < bk->nc; k++) {
                const comp *cp = &bk->c[k];
                const float *y = c->out[cp->branch] + r * c->gs->bstride[cp->branch] + cp->off;
                dr += c->w[cp->wi] * (c->A[k] * xj + c->B[k] * (double)y[j]);
            }
            if (c->kout) c->kout[r * nr + bk->sl.real_off + j] = dr;
            else x[j] = xj + c->h * dr + (sq > 0.0 ? sq * (double)z[j] : 0.0);
        }
    }
    (void)tid;
    return 0;
}

/* ---- run ---- */

static int kappa_at(dfm_sampler *s, const dfm_path *p, double t, dfm_sched_values *v)
{
    int raw = 0, st = dfm__sched_eval(&p->sched, t, v, &raw);
    if (st == DFM_ECALLBACK) return dfm__fail_callback(&s->b, raw, "scheduler");
    if (st || !(v->alpha >= 0.0 && v->alpha <= 1.0) || !isfinite(v->d_alpha))
        return dfm__fail(&s->b, DFM_ENUMERIC, "kappa(t = %g) is not in [0, 1]", t);
    return 0;
}

static int block_weights(dfm_sampler *s, const block *bk, double t, double *w)
{
    if (!bk->sup) { w[0] = 1.0; return 0; }
    const dfm__gm_sup *sp = bk->sup;
    if (!sp->wfn) { memcpy(w, sp->w, sp->n * sizeof(double)); return 0; }
    int raw = sp->wfn(t, w, sp->n, sp->wud);
    if (raw) return dfm__fail_callback(&s->b, raw, "superposition weight function");
    for (size_t k = 0; k < sp->n; k++)
        if (!isfinite(w[k]))
            return dfm__fail(&s->b, DFM_ENUMERIC, "weight %zu at t = %g is not finite", k, t);
    return 0;
}

/* Time factors of a discrete block over [t, t + h]. */
static int disc_factors(dfm_sampler *s, step_ctx *c, double t, double tn)
{
    const block *bk = c->bk;
    for (size_t k = 0; k < bk->nc; k++) {
        const comp *cp = &bk->c[k];
        if (cp->kind == C_RATES) { c->F[k] = tn - t; continue; }
        dfm_sched_values v0, v1;
        int st;
        if ((st = kappa_at(s, cp->g->path, t, &v0))) return st;
        if ((st = kappa_at(s, cp->g->path, tn, &v1))) return st;
        if (k == 0) { c->kt = v0.alpha; c->kh = v1.alpha; }
        if (cp->kind == C_LOGITS && v1.alpha >= 1.0 && v0.alpha < 1.0) c->final = 1;
        if (cp->kind == C_LOGITS) /* int kappa'/(1 - kappa) = log((1 - k0) / (1 - k1)) */
            c->F[k] = v0.alpha >= 1.0 ? 0.0
                      : (v1.alpha >= 1.0 ? INFINITY : log1p(-v0.alpha) - log1p(-v1.alpha));
        else /* backward: int kappa'/kappa = log(k1 / k0) */
            c->F[k] = v1.alpha <= 0.0 ? 0.0
                      : (v0.alpha <= 0.0 ? INFINITY : log(v1.alpha) - log(v0.alpha));
    }
    return 0;
}

/* An all-logits block steps with mix_token when 1 or 2 of its components are active (their
 * weight and time factor nonzero; in the final step the infinite factors only). */
static void mix_setup(step_ctx *c)
{
    const block *bk = c->bk;
    size_t n = 0;
    for (size_t k = 0; k < bk->nc; k++) {
        double wk = c->w[bk->c[k].wi], F = c->F[k];
        if (wk == 0.0 || F == 0.0 || (c->final && !isinf(F))) continue;
        if (n == 2) { n = 0; break; }
        c->mix_k[n] = k;
        c->mix_f[n] = isinf(F) ? wk : wk * F;
        n++;
    }
    c->nmix = n;
}

static int cont_coefs(dfm_sampler *s, step_ctx *c, double t, int64_t *clamped)
{
    const block *bk = c->bk;
    double G2 = 0.0;
    for (size_t k = 0; k < bk->nc; k++) {
        const comp *cp = &bk->c[k];
        double g = 0.0, gg = 0.0;
        int st;
        if (cp->g->kind == DFM_GEN_DIFFUSION) {
            if ((st = dfm__cgen_g(&s->b, cp->g, t, &g))) return st;
            gg = 0.5 * g * g;
        }
        dfm__acoef co;
        if ((st = dfm__cgen_coef(&s->b, cp->g, t, gg, &co))) return st;
        c->A[k] = co.A;
        c->B[k] = co.B;
        G2 += c->w[cp->wi] * g * g;
    }
    if (G2 < 0.0) { *clamped += (int64_t)(c->a->rows * bk->sl.n_real); G2 = 0.0; }
    c->G2 = G2;
    return 0;
}

static int call_model(dfm_sampler *s, const dfm_run_args *a, int branch, double t, int step,
                      const double *tv, const double *pt, const int32_t *tok, const float *re,
                      float *out, size_t stride)
{
    const gm_samp *gs = (const gm_samp *)s->impl;
    dfm_model_io io;
    memset(&io, 0, sizeof io);
    io.struct_size = sizeof io;
    io.rows = a->rows;
    io.row_offset = a->row_offset;
    io.t = tv;
    io.tokens = gs->nt ? tok : NULL;
    io.n_tokens = gs->nt;
    io.reals = gs->nr ? re : NULL;
    io.n_reals = gs->nr;
    io.out = out;
    io.out_stride = stride;
    io.branch = branch;
    io.step = step;
    io.part_t = pt;
    io.n_part_t = gs->nparts;
    s->stats[DFM_STAT_MODEL_CALLS]++;
    dfm__out_prefill(out, a->rows * stride, gs->mark);
    int raw = a->model(&io, a->model_data);
    if (raw) return dfm__fail_callback(&s->b, raw, "model");
    (void)t;
    return 0;
}

/* DFM_ENUMERIC (message on s) when row r of a model output holds unwritten entries, else 0. */
static int unwritten(dfm_sampler *s, const float *out0, const float *out1, size_t rows, size_t r)
{
    const gm_samp *gs = (const gm_samp *)s->impl;
    size_t b0 = gs->bstride[0], b1 = gs->bstride[1];
    if (b0 && dfm__fail_unwritten(&s->b, "model", out0, rows, b0, gs->mark, r, 0, b0, r))
        return DFM_ENUMERIC;
    if (b1 && dfm__fail_unwritten(&s->b, "model (DFM_BRANCH_UNCOND)", out1, rows, b1, gs->mark,
                                  r, 0, b1, r))
        return DFM_ENUMERIC;
    return 0;
}

/* Part times at t from the host's map, validated. */
static int part_times(dfm_sampler *s, double t, double *out)
{
    gm_samp *gs = (gm_samp *)s->impl;
    int raw = gs->ptfn(t, out, gs->nparts, gs->ptud);
    if (raw) return dfm__fail_callback(&s->b, raw, "part time function");
    for (size_t k = 0; k < gs->nparts; k++)
        if (!dfm__time_ok(out[k]))
            return dfm__fail(&s->b, DFM_ERANGE, "part %zu's time at t = %g is %g, outside [0, 1]",
                             k, t, out[k]);
    return 0;
}

/* ---- the run's work space ---- */

/* What a run works on: one zeroed block carved into the pieces below, the saved states and,
 * for Runge-Kutta runs, the stage buffers. */
typedef struct gs_work {
    size_t sz_tok, sz_re;    /* rows x nt, rows x nr */
    size_t npts;             /* time points: the grid merged with the save times */
    double *pts;
    size_t *save_at;         /* at point i: 1 + the index of the save time there, or 0 */
    int32_t *tok;            /* the state: tokens */
    double *re;              /* the state: reals (double between steps) */
    float *ref;              /* the reals as the model sees them */
    double *tv, *pt;         /* model times: rows, rows x nparts */
    float *out[2];           /* model outputs of the MAIN and UNCOND branches */
    double *scr;             /* per thread: scr_per doubles */
    size_t scr_per;
    int nth;                 /* threads of the row loops */
    int64_t *jumps, *clamped;/* per thread */
    err_rec *errs;           /* per thread */
    char *blk;
    int32_t *saved_t;        /* n_save x rows x nt */
    float *saved_r;          /* n_save x rows x nr */
    double *rk;              /* stages > 1: ytmp + 4 stage buffers, rows x nr each */
} gs_work;

static void work_free(dfm_sampler *s, gs_work *w)
{
    dfm__free(&s->b.mem, w->rk);
    dfm__free(&s->b.mem, w->saved_t);
    dfm__free(&s->b.mem, w->saved_r);
    dfm__free(&s->b.mem, w->blk);
}

/* Sizes the work space, allocates it (block, saved states, Runge-Kutta stages) and carves the
 * block: doubles first, then 64-bit counters, records, indices, floats and tokens. */
static int work_alloc(dfm_sampler *s, const dfm_run_args *a, gs_work *w)
{
    const gm_samp *gs = (const gm_samp *)s->impl;
    const size_t nt = gs->nt, nr = gs->nr, rows = a->rows;
    size_t npts_max = dfm__sampler_nsteps(s) + 1 + a->n_save;
    memset(w, 0, sizeof *w);
    int nth = dfm__parallel_width(s->b.nthreads, rows);
    size_t Vmax = 1;
    for (size_t j = 0; j < nt; j++) {
        size_t v = (size_t)dfm__space_vocab(&s->gen->path->space, j);
        if (v > Vmax) Vmax = v;
    }
    size_t scr_per = 3 * Vmax + nr + 1;
    size_t sz_tok = rows * nt, sz_re = rows * nr, sz_o0 = rows * gs->bstride[0],
           sz_o1 = rows * gs->bstride[1], tmp;
    if (gs->bstride[0] + gs->bstride[1] > SIZE_MAX / 16 - (2 * nt + 3 * nr + gs->nparts + 2) ||
        dfm__mul3(rows, gs->bstride[0] + gs->bstride[1] + 2 * nt + 3 * nr + gs->nparts + 2, 8,
                  &tmp) || tmp > SIZE_MAX / 4 || dfm__mul((size_t)nth, scr_per, &tmp))
        return dfm__fail(&s->b, DFM_EOVERFLOW, "work size overflows");
    size_t bytes = sizeof(double) * (npts_max + sz_re + rows + rows * gs->nparts +
                                     (size_t)nth * scr_per + 4 * (size_t)nth) +
                   sizeof(float) * (sz_re + sz_o0 + sz_o1) + sizeof(int32_t) * sz_tok +
                   sizeof(size_t) * (npts_max + 1) + sizeof(err_rec) * (size_t)nth + 64;
    w->blk = (char *)dfm__calloc(&s->b.mem, 1, bytes);
    if (a->n_save) {
        w->saved_t = nt ? (int32_t *)dfm__calloc(&s->b.mem, a->n_save * sz_tok, sizeof(int32_t))
                        : NULL;
        w->saved_r = nr ? (float *)dfm__calloc(&s->b.mem, a->n_save * sz_re, sizeof(float)) : NULL;
    }
    if (!w->blk || (a->n_save && ((nt && !w->saved_t) || (nr && !w->saved_r)))) {
        work_free(s, w);
        return dfm__fail_nomem(&s->b, "sampler work space", rows, DFM__HINT_ROWS);
    }
    w->sz_tok = sz_tok;
    w->sz_re = sz_re;
    w->nth = nth;
    w->scr_per = scr_per;
    w->pts = (double *)w->blk;
    w->re = w->pts + npts_max;
    w->tv = w->re + sz_re;
    w->pt = w->tv + rows;
    w->scr = w->pt + rows * gs->nparts;
    w->jumps = (int64_t *)(w->scr + (size_t)nth * scr_per);
    w->clamped = w->jumps + nth;
    w->errs = (err_rec *)(w->clamped + 2 * nth);
    w->save_at = (size_t *)(w->errs + nth);
    w->ref = (float *)(w->save_at + npts_max + 1);
    w->out[0] = w->ref + sz_re;
    w->out[1] = w->out[0] + sz_o0;
    w->tok = (int32_t *)(w->out[1] + sz_o1);
    if (gs->stages > 1) {
        w->rk = (double *)dfm__calloc(&s->b.mem, 5 * sz_re + 1, sizeof(double));
        if (!w->rk) {
            work_free(s, w);
            return dfm__fail(&s->b, DFM_ENOMEM, "cannot allocate the Runge-Kutta stages");
        }
    }
    return 0;
}

/* ---- run phases ---- */

/* The run's arguments against the sampler: grid direction, then (rows > 0, entry states
 * given) the tokens in range and the reals finite. */
static int run_validate(dfm_sampler *s, const dfm_run_args *a)
{
    gm_samp *gs = (gm_samp *)s->impl;
    const size_t nt = gs->nt, nr = gs->nr, rows = a->rows;
    int st = dfm__check_run_common(s, a, nt, nr);
    if (st) return st;
    gs->last_clamped = 0;
    size_t nsteps = dfm__sampler_nsteps(s);
    double t0 = dfm__sampler_time(s, 0), t1 = dfm__sampler_time(s, nsteps);
    if (!(t1 > t0))
        return dfm__fail(&s->b, DFM_EUNSUPPORTED,
                         "superposition and product samplers run increasing grids only");
    if (rows == 0 || a->draw_source) return 0;
    size_t bad;
    if (nt && dfm_space_check_tokens(&s->gen->path->space, a->tokens, rows, &bad))
        return dfm__fail(&s->b, DFM_ERANGE, "tokens[row %zu][coord %zu] = %d is out of range",
                         bad / nt, bad % nt, (int)a->tokens[bad]);
    for (size_t i = 0; i < rows * nr; i++)
        if (!isfinite(a->reals[i]))
            return dfm__fail(&s->b, DFM_ENUMERIC, "reals[row %zu][coord %zu] is not finite",
                             i / nr, i % nr);
    return 0;
}

/* Time points: the grid merged with the save times (a save time on a grid point shares it). */
static void merge_times(dfm_sampler *s, const dfm_run_args *a, gs_work *w)
{
    size_t nsteps = dfm__sampler_nsteps(s), gi = 0, si = 0, npts = 0;
    while (gi <= nsteps || si < a->n_save) {
        double tg = gi <= nsteps ? dfm__sampler_time(s, gi) : INFINITY;
        double ts = si < a->n_save ? a->save_times[si] : INFINITY;
        if (ts < tg) { w->pts[npts] = ts; w->save_at[npts++] = ++si; continue; }
        w->pts[npts] = tg;
        w->save_at[npts] = 0;
        if (ts == tg) w->save_at[npts] = ++si;
        npts++;
        gi++;
    }
    w->npts = npts;
}

/* Save the state as save time k1 - 1 (k1 = 0: not a save point). */
static void save_state(gs_work *w, size_t nt, size_t k1)
{
    if (!k1) return;
    size_t k = k1 - 1;
    if (nt) memcpy(w->saved_t + k * w->sz_tok, w->tok, w->sz_tok * sizeof(int32_t));
    for (size_t j = 0; j < w->sz_re; j++) w->saved_r[k * w->sz_re + j] = (float)w->re[j];
}

/* Initial state: drawn from each block's source (fixed tokens kept) or the host's. */
static void init_state(const gm_samp *gs, const dfm_run_args *a, gs_work *w)
{
    const size_t nt = gs->nt, nr = gs->nr, rows = a->rows;
    if (!a->draw_source) {
        if (nt) memcpy(w->tok, a->tokens, w->sz_tok * sizeof(int32_t));
        for (size_t i = 0; i < w->sz_re; i++) w->re[i] = a->reals[i];
        return;
    }
    for (size_t b = 0; b < gs->nb; b++) {
        const block *bk = &gs->b[b];
        for (size_t r = 0; r < rows; r++) {
            uint64_t grow = (uint64_t)(a->row_offset + r);
            if (!bk->cont) {
                const dfm__mixture *mx = dfm__mixture_of(bk->path);
                for (size_t i = 0; i < bk->sl.n_tok; i++)
                    w->tok[r * nt + bk->sl.tok_off + i] = dfm__mix_source_draw(
                        mx, dfm__uniform(bk->seed, GM_STREAM_SRC, grow, (uint32_t)i, 0));
            } else {
                float *z = w->ref + r * nr + bk->sl.real_off;
                dfm__normal_row(bk->seed, DFM_STREAM_SOURCE, grow, 0, bk->sl.n_real, z);
                for (size_t j = 0; j < bk->sl.n_real; j++)
                    w->re[r * nr + bk->sl.real_off + j] = z[j];
            }
        }
    }
    if (a->fixed && nt) /* fixed positions keep the host's tokens */
        for (size_t i = 0; i < w->sz_tok; i++)
            if (a->fixed[i]) w->tok[i] = a->tokens[i];
}

/* One model call per branch in use (MAIN also when no branch has outputs). */
static int call_branches(dfm_sampler *s, const dfm_run_args *a, const gs_work *w, double t,
                         int step, const int32_t *tok)
{
    const gm_samp *gs = (const gm_samp *)s->impl;
    int st = 0;
    if (gs->bstride[0] || gs->bstride[1] == 0)
        st = call_model(s, a, DFM_BRANCH_MAIN, t, step, w->tv, w->pt, tok, w->ref, w->out[0],
                        gs->bstride[0]);
    if (!st && gs->bstride[1])
        st = call_model(s, a, DFM_BRANCH_UNCOND, t, step, w->tv, w->pt, tok, w->ref, w->out[1],
                        gs->bstride[1]);
    return st;
}

/* The row kernels' context for block bk with weights wts at step `step`. */
static void ctx_init(step_ctx *c, dfm_sampler *s, const dfm_run_args *a, const gs_work *w,
                     const block *bk, const double *wts, size_t step)
{
    memset(c, 0, sizeof *c);
    c->s = s;
    c->gs = (const gm_samp *)s->impl;
    c->a = a;
    c->bk = bk;
    c->tok = w->tok;
    c->re = w->re;
    c->out[0] = w->out[0];
    c->out[1] = w->out[1];
    c->w = wts;
    c->step = (uint32_t)step;
    c->scratch = w->scr;
    c->scr_per = w->scr_per;
    c->jumps = w->jumps;
    c->clamped = w->clamped;
    c->err = w->errs;
}

/* Drift of every (continuous) block at time tt for states y (rows x nr) into k. */
static int rk_drift(dfm_sampler *s, const dfm_run_args *a, gs_work *w, double tt, int step,
                    const double *y, double *k, int64_t *clamped)
{
    gm_samp *gs = (gm_samp *)s->impl;
    size_t rows = a->rows, nr = gs->nr;
    for (size_t r = 0; r < rows; r++) w->tv[r] = tt;
    for (size_t r = 0; r < rows * gs->nparts; r++) w->pt[r] = tt;
    for (size_t j = 0; j < rows * nr; j++) w->ref[j] = (float)y[j];
    int st = call_branches(s, a, w, tt, step, NULL);
    for (size_t b = 0; b < gs->nb && !st; b++) {
        const block *bk = &gs->b[b];
        double wts[DFM__GM_MAXP];
        if ((st = block_weights(s, bk, tt, wts))) break;
        step_ctx c;
        ctx_init(&c, s, a, w, bk, wts, (size_t)step);
        c.tok = NULL;
        c.re = (double *)y;
        c.kout = k;
        memset(w->errs, 0, (size_t)w->nth * sizeof(err_rec));
        if ((st = cont_coefs(s, &c, tt, clamped))) break;
        dfm__parallel_for(&s->b, s->b.nthreads, rows, cont_rows, &c);
        for (int q = 0; q < w->nth && !st; q++)
            if (w->errs[q].code && !(st = unwritten(s, w->out[0], w->out[1], rows, w->errs[q].row)))
                st = dfm__fail(&s->b, w->errs[q].code,
                               "part %zu: invalid model output at t = %g: out[row %zu][coord %zu]: "
                               "NaN/Inf", b, tt, w->errs[q].row, w->errs[q].coord);
    }
    return st;
}

/* Step i of a drift-only continuous run by the midpoint rule (k1 at t, k2 at t + h/2 on
 * x + h/2 k1) or the classical RK4 tableau. */
static int rk_step(dfm_sampler *s, const dfm_run_args *a, gs_work *w, size_t i,
                   int64_t *step_clamped)
{
    static const double C4[4] = {0.0, 0.5, 0.5, 1.0}, B4[4] = {1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6};
    static const double C2[2] = {0.0, 0.5}, B2[2] = {0.0, 1.0};
    const gm_samp *gs = (const gm_samp *)s->impl;
    const double *cc = gs->stages == 4 ? C4 : C2, *bb = gs->stages == 4 ? B4 : B2;
    const size_t sz_re = w->sz_re;
    double t = w->pts[i], h = w->pts[i + 1] - t, *re = w->re, *yt = w->rk, *kk = w->rk + sz_re;
    int st = 0;
    for (int q = 0; q < gs->stages && !st; q++) {
        const double *src = q == 0 ? re : yt;
        if (q > 0) /* stage q reads x + c_q h k_{q-1} */
            for (size_t j = 0; j < sz_re; j++)
                yt[j] = re[j] + cc[q] * h * kk[(size_t)(q - 1) * sz_re + j];
        double tq = cc[q] == 1.0 ? w->pts[i + 1] : t + cc[q] * h;
        st = rk_drift(s, a, w, tq, (int)i, src, kk + (size_t)q * sz_re, step_clamped);
    }
    if (st) return st;
    for (size_t j = 0; j < sz_re; j++) {
        double inc = 0.0;
        for (int q = 0; q < gs->stages; q++) inc += bb[q] * kk[(size_t)q * sz_re + j];
        re[j] += h * inc;
    }
    return 0;
}

/* Part times of step t -> tn: tau_k(t) -> tau_k(tn) from the host's map, or t -> tn. */
static int step_part_times(dfm_sampler *s, double t, double tn, double *p0, double *p1)
{
    const gm_samp *gs = (const gm_samp *)s->impl;
    int st;
    for (size_t k = 0; k < gs->nparts; k++) { p0[k] = t; p1[k] = tn; }
    if (!gs->ptfn) return 0;
    if ((st = part_times(s, t, p0)) || (st = part_times(s, tn, p1))) return st;
    for (size_t k = 0; k < gs->nparts; k++)
        if (!(p1[k] >= p0[k]))
            return dfm__fail(&s->b, DFM_EINVAL, "part %zu's time decreases from %g to %g "
                             "between t = %g and %g", k, p0[k], p1[k], t, tn);
    return 0;
}

/* Block b moves from its time tb to tbn (the model was called at the step's time t): time
 * factors or drift coefficients, then its rows in parallel; the first bad row is reported. */
static int step_block(dfm_sampler *s, const dfm_run_args *a, gs_work *w, size_t b, double tb,
                      double tbn, double t, size_t i, int64_t *step_clamped)
{
    const gm_samp *gs = (const gm_samp *)s->impl;
    const block *bk = &gs->b[b];
    double wts[DFM__GM_MAXP];
    int st = block_weights(s, bk, tb, wts);
    if (st) return st;
    step_ctx c;
    ctx_init(&c, s, a, w, bk, wts, i);
    c.h = tbn - tb;
    memset(w->jumps, 0, 2 * (size_t)w->nth * sizeof(int64_t));
    memset(w->errs, 0, (size_t)w->nth * sizeof(err_rec));
    if (c.h == 0.0) return 0; /* the part does not move in this step */
    if (bk->cont) {
        if ((st = cont_coefs(s, &c, tb, step_clamped))) return st;
        dfm__parallel_for(&s->b, s->b.nthreads, a->rows, cont_rows, &c);
    } else {
        if ((st = disc_factors(s, &c, tb, tbn))) return st;
        if (bk->all_logits) mix_setup(&c);
        dfm__parallel_for(&s->b, s->b.nthreads, a->rows, disc_rows, &c);
    }
    for (int q = 0; q < w->nth; q++) {
        if (w->errs[q].code && !st &&
            !(st = unwritten(s, w->out[0], w->out[1], a->rows, w->errs[q].row)))
            st = dfm__fail(&s->b, w->errs[q].code,
                           "part %zu: invalid model output at t = %g: out[row %zu][coord %zu]: "
                           "NaN/Inf, all -Inf logits or negative rates", b, t, w->errs[q].row,
                           w->errs[q].coord);
        s->stats[DFM_STAT_JUMPS] += w->jumps[q];
        *step_clamped += w->clamped[q];
    }
    return st;
}

/* Step i of a one-stage run: part times, one model call per branch at the step's start, then
 * every block moves (exact or Euler discrete steps, Euler(-Maruyama) continuous steps). */
static int euler_step(dfm_sampler *s, const dfm_run_args *a, gs_work *w, size_t i,
                      int64_t *step_clamped)
{
    const gm_samp *gs = (const gm_samp *)s->impl;
    const size_t rows = a->rows;
    double t = w->pts[i], p0[DFM__GM_MAXP], p1[DFM__GM_MAXP];
    int st = step_part_times(s, t, w->pts[i + 1], p0, p1);
    if (st) return st;
    for (size_t r = 0; r < rows; r++) w->tv[r] = t;
    for (size_t r = 0; r < rows; r++)
        for (size_t k = 0; k < gs->nparts; k++) w->pt[r * gs->nparts + k] = p0[k];
    for (size_t j = 0; j < w->sz_re; j++) w->ref[j] = (float)w->re[j];
    st = call_branches(s, a, w, t, (int)i, w->tok);
    for (size_t b = 0; b < gs->nb && !st; b++)
        st = step_block(s, a, w, b, p0[b], p1[b], t, i, step_clamped);
    return st;
}

/* After step i: counters, the save point, the host's progress callback and stop request. */
static int end_step(dfm_sampler *s, const dfm_run_args *a, gs_work *w, size_t i,
                    int64_t step_clamped)
{
    gm_samp *gs = (gm_samp *)s->impl;
    double tn = w->pts[i + 1];
    gs->last_clamped = step_clamped;
    s->stats[DFM_STAT_CLAMPED] += step_clamped;
    s->stats[DFM_STAT_STEPS]++;
    save_state(w, gs->nt, w->save_at[i + 1]);
    return dfm__step_done(s, a->progress, a->progress_data, (int)i, (int)(w->npts - 1), tn);
}

/* The final state, if finite as floats, and the saved states go to the host. */
static int write_out(dfm_sampler *s, const dfm_run_args *a, const gs_work *w)
{
    const gm_samp *gs = (const gm_samp *)s->impl;
    const size_t nt = gs->nt, nr = gs->nr;
    for (size_t i = 0; i < w->sz_re; i++)
        if (!isfinite((float)w->re[i]))
            return dfm__fail(&s->b, DFM_ENUMERIC, "the state overflowed: reals[row %zu][coord %zu]",
                             i / nr, i % nr);
    if (nt) memcpy(a->tokens, w->tok, w->sz_tok * sizeof(int32_t));
    for (size_t i = 0; i < w->sz_re; i++) a->reals[i] = (float)w->re[i];
    if (a->n_save && nt)
        memcpy(a->saved_tokens, w->saved_t, a->n_save * w->sz_tok * sizeof(int32_t));
    if (a->n_save && nr)
        memcpy(a->saved_reals, w->saved_r, a->n_save * w->sz_re * sizeof(float));
    return 0;
}

/* The joint run: validate, lay out the time points, initial state, steps, write back. */
static int gs_run(dfm_sampler *s, const dfm_run_args *a)
{
    gm_samp *gs = (gm_samp *)s->impl;
    int st = run_validate(s, a);
    if (st || a->rows == 0) return st;
    for (size_t k = 0; k < gs->nb; k++)
        gs->b[k].seed = gs->product ? dfm__gm_part_seed(s->b.seed, k) : s->b.seed;
    gs_work w;
    if ((st = work_alloc(s, a, &w))) return st;
    merge_times(s, a, &w);
    init_state(gs, a, &w);
    save_state(&w, gs->nt, w.save_at[0]);
    for (size_t i = 0; i + 1 < w.npts && !st; i++) {
        int64_t step_clamped = 0;
        st = gs->stages > 1 ? rk_step(s, a, &w, i, &step_clamped)
                            : euler_step(s, a, &w, i, &step_clamped);
        if (!st) st = end_step(s, a, &w, i, step_clamped);
    }
    if (!st) st = write_out(s, a, &w);
    work_free(s, &w);
    return st;
}

static const dfm__sampler_ops gs_ops = {gs_destroy, gs_run, NULL, gs_get_int, NULL, NULL};

int dfm__gm_sampler_init(dfm_sampler *s, int method)
{
    const dfm_generator *g = s->gen;
    gm_samp *gs = (gm_samp *)dfm__calloc(&s->b.mem, 1, sizeof *gs);
    if (!gs) return DFM_ENOMEM;
    s->impl = gs;
    s->ops = &gs_ops;
    gs->nt = g->path->space.n_tokens;
    gs->nr = g->path->space.n_reals;
    if (dfm__gm_is_pgen(g)) {
        const dfm__gm_pgen *pg = (const dfm__gm_pgen *)g->impl;
        gs->nb = pg->n;
        gs->nparts = pg->n;
        gs->product = 1;
        for (size_t k = 0; k < pg->n; k++) {
            build_block(&gs->b[k], pg->parts[k], &pg->slot[k], pg->slot[k].out_off, pg->uoff[k]);
            gs->b[k].seed = dfm__gm_part_seed(s->b.seed, k);
        }
        gs->bstride[0] = pg->bstride[0];
        gs->bstride[1] = pg->bstride[1];
        gs->ptfn = pg->ptfn;
        gs->ptud = pg->ptud;
    } else {
        dfm__gm_slot sl;
        const dfm_space *sp = &g->path->space;
        dfm__gm_slots(&sp, NULL, 1, &sl);
        gs->nb = 1;
        gs->nparts = 1;
        build_block(&gs->b[0], g, &sl, 0, 0);
        gs->b[0].seed = s->b.seed;
        gs->bstride[0] = dfm__gm_branch_stride(g, 0);
        gs->bstride[1] = dfm__gm_branch_stride(g, 1);
    }
    int any_exact = 0;
    gs->mark = 0;
    for (size_t k = 0; k < gs->nb; k++) {
        block *bk = &gs->b[k];
        if (!bk->cont) {
            bk->exact = method == DFM_METHOD_EXACT && !bk->sup && bk->c[0].kind == C_LOGITS;
            any_exact |= bk->exact;
            if (bk->path->kind != DFM_PATH_MIXTURE) return DFM_EUNSUPPORTED;
            bk->all_logits = 1;
            for (size_t q = 0; q < bk->nc; q++)
                if (bk->c[q].kind != C_LOGITS) bk->all_logits = 0;
            size_t V = (size_t)dfm__space_vocab(&bk->path->space, 0);
            gs->mark = gs->mark == 0 || gs->mark == V ? V : 1;
        } else {
            gs->mark = 1;
        }
    }
    if (gs->mark == 0) gs->mark = 1;
    gs->stages = 1;
    if (method == DFM_METHOD_MIDPOINT || method == DFM_METHOD_RK4) {
        /* drift-only continuous runs: every part continuous, no diffusion component */
        for (size_t k = 0; k < gs->nb; k++) {
            if (!gs->b[k].cont) return DFM_EUNSUPPORTED;
            for (size_t q = 0; q < gs->b[k].nc; q++)
                if (gs->b[k].c[q].g->kind == DFM_GEN_DIFFUSION) return DFM_EUNSUPPORTED;
        }
        if (gs->ptfn) return DFM_EUNSUPPORTED; /* per-part time maps: one-stage steps only */
        gs->stages = method == DFM_METHOD_RK4 ? 4 : 2;
        return 0;
    }
    if (method != DFM_METHOD_EULER && method != DFM_METHOD_EULER_MARUYAMA &&
        method != DFM_METHOD_EXACT)
        return DFM_EUNSUPPORTED;
    if (method == DFM_METHOD_EXACT && !any_exact) return DFM_EUNSUPPORTED;
    return 0;
}

int dfm_sampler_step_clamped(const dfm_sampler *s, int64_t *count)
{
    if (!s || !count) return dfm__null(__func__, "s or count");
    if (s->ops != &gs_ops) return DFM_EUNSUPPORTED;
    *count = ((const gm_samp *)s->impl)->last_clamped;
    return 0;
}
