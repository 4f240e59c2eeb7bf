/* mlp.h: the small host-side network shared by libdfm's examples (NOT part of libdfm, never
 * exported). A multilayer perceptron over [token embeddings | real inputs | time embedding],
 * with a cached batched forward pass, the backward pass from dLoss/dOutput (exactly what
 * dfm_loss_eval returns in args.grad), Adam, and binary save/load. Every matrix product goes
 * through cblas_sgemm (row-major); everything is float. Header-only: every function is
 * `static inline`, so a program includes this file and links -ldfm -lopenblas -lm.
 * See docs/examples_mlp.md.
 *
 * Errors: functions return MLP_OK (0) or a positive MLP_E* code (mlp_strerror gives a static
 * string); nothing aborts and nothing prints. Outputs are written only on success.
 * Threads: OpenBLAS threads inside sgemm; one mlp is used by one thread at a time. */
#ifndef DFM_EXAMPLES_MLP_H
#define DFM_EXAMPLES_MLP_H

#include <dfm/dfm.h>

#include <cblas.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MLP_OK        0
#define MLP_EINVAL    1 /* a NULL pointer, a bad config value, a token out of range, no forward */
#define MLP_ENOMEM    2 /* an allocation failed */
#define MLP_EIO       3 /* a file could not be opened, read or written (errno tells why) */
#define MLP_ETRUNC    4 /* the file ends before the parameters it announces */
#define MLP_EFORMAT   5 /* not an mlp parameter file (magic), or trailing bytes */
#define MLP_EMISMATCH 6 /* the file holds a network of a different shape */
#define MLP_EOVERFLOW 7 /* a size does not fit (size_t or BLAS int) */

#define MLP_ACT_SWISH 0 /* x * sigmoid(x), also called SiLU */
#define MLP_ACT_RELU  1

#define MLP_MAX_HIDDEN 64 /* hidden layers */
#define MLP_MAX_FREQS  20 /* sinusoidal time frequencies */

/** Shape of a network. Input row = [emb(tok_0) .. emb(tok_{n_tokens-1}) | reals | time].
 * Time: fixed features phi(t) = [t, sin(pi 2^k t), cos(pi 2^k t) for k < time_freqs]
 * (1 + 2 time_freqs floats); with time_dim > 0 a learnable dense layer (no activation) maps
 * phi(t) to time_dim floats, else phi(t) itself is concatenated. */
typedef struct mlp_config {
    int n_tokens;           /* discrete positions (0: no token input) */
    int vocab;              /* values per position (tokens in [0, vocab)) */
    int embed_dim;          /* E: floats per embedded token */
    int embed_per_position; /* 0: one vocab x E table shared by all positions; 1: one per position */
    int n_reals;            /* continuous inputs per row (0: none) */
    int time_freqs;         /* F in [0, MLP_MAX_FREQS] */
    int time_dim;           /* 0, or the width of the learnable time layer */
    int n_hidden;           /* hidden layers, [0, MLP_MAX_HIDDEN] */
    int hidden;             /* width of every hidden layer */
    int out_dim;            /* output floats per row (e.g. n_tokens * vocab logits) */
    int act;                /* MLP_ACT_SWISH or MLP_ACT_RELU, after every hidden layer */
    int act_input;          /* nonzero: apply act to the concatenated input row too */
} mlp_config;

/** Adam hyper-parameters (PyTorch's defaults: 1e-3, 0.9, 0.999, 1e-8, 0). weight_decay is
 * decoupled (AdamW: p -= lr * weight_decay * p), applied to every parameter. */
typedef struct mlp_adam {
    float lr, beta1, beta2, eps, weight_decay;
} mlp_adam;

typedef struct mlp {
    mlp_config cfg;
    size_t n_params;
    float *params, *grads, *adam_m, *adam_v; /* each n_params floats, one flat block */
    long adam_t;                             /* Adam steps taken */
    /* Offsets into params/grads of each group. */
    size_t off_emb, off_tw, off_tb, off_w[MLP_MAX_HIDDEN + 1], off_b[MLP_MAX_HIDDEN + 1];
    int in_dim, n_feat, n_tables;            /* D0, 1 + 2F, embedding tables */
    int width[MLP_MAX_HIDDEN + 2];           /* width[0] = D0, width[l + 1] = output of layer l */
    /* Cache of the last forward (capacity rows): x0 the input rows (replaced by sigmoid(x0) for
     * Swish with act_input), a0 = act(x0), z[l] pre-activations (sigmoid(z) for Swish), a[l]. */
    size_t cap, rows;
    int have_fwd;                            /* the cache holds a valid forward */
    float *x0, *a0, *phi, *z[MLP_MAX_HIDDEN], *a[MLP_MAX_HIDDEN], *d1, *d2, *dx0;
    int32_t *tok;
} mlp;

static inline const char *mlp_strerror(int code)
{
    switch (code) {
    case MLP_OK: return "success";
    case MLP_EINVAL: return "invalid argument";
    case MLP_ENOMEM: return "out of memory";
    case MLP_EIO: return "cannot open, read or write the file";
    case MLP_ETRUNC: return "file is truncated (shorter than its header announces)";
    case MLP_EFORMAT: return "not an mlp parameter file";
    case MLP_EMISMATCH: return "file holds a network of a different shape";
    case MLP_EOVERFLOW: return "size overflow";
    default: return "unknown mlp status";
    }
}

/** Total number of learnable floats. */
static inline size_t mlp_param_count(const mlp *m) { return m->n_params; }

static inline int mlp__config_ok(const mlp_config *c)
{
    if (c->n_tokens < 0 || c->vocab < 0 || c->embed_dim < 0 || c->n_reals < 0 ||
        c->time_freqs < 0 || c->time_freqs > MLP_MAX_FREQS || c->time_dim < 0 ||
        c->n_hidden < 0 || c->n_hidden > MLP_MAX_HIDDEN || c->out_dim <= 0 ||
        (c->act != MLP_ACT_SWISH && c->act != MLP_ACT_RELU))
        return 0;
    if (c->n_tokens > 0 && (c->vocab <= 0 || c->embed_dim <= 0)) return 0;
    if (c->n_hidden > 0 && c->hidden <= 0) return 0;
    return 1;
}

/* a += b with overflow check. */
static inline int mlp__add(size_t *a, size_t b)
{
    if (*a > SIZE_MAX - b) return 0;
    *a += b;
    return 1;
}
static inline int mlp__mul(size_t a, size_t b, size_t *out)
{
    if (a && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

static inline void mlp__free_cache(mlp *m)
{
    free(m->x0); free(m->a0); free(m->phi); free(m->d1); free(m->d2); free(m->dx0); free(m->tok);
    for (int l = 0; l < MLP_MAX_HIDDEN; l++) { free(m->z[l]); free(m->a[l]); m->z[l] = m->a[l] = NULL; }
    m->x0 = m->a0 = m->phi = m->d1 = m->d2 = m->dx0 = NULL;
    m->tok = NULL;
    m->cap = m->rows = 0;
}

static inline void mlp_free(mlp *m)
{
    if (!m) return;
    mlp__free_cache(m);
    free(m->params);
    free(m);
}

/** (Re)initialises the parameters from seed and resets the gradients and Adam state.
 * Weights ~ N(0, g^2 / fan_in) with g^2 = 2 before a ReLU and 1 otherwise, biases 0, embeddings
 * ~ N(0, 1). The normals are libdfm's counter-based draws dfm_rng_fill(seed, stream 0, row =
 * flat parameter index), so the same seed gives the same network on every machine. */
static inline int mlp_init(mlp *m, uint64_t seed)
{
    if (!m) return MLP_EINVAL;
    int st = dfm_rng_fill(seed, 0, DFM_DRAW_NORMAL, 0, m->n_params, 1, 0, 1, m->params);
    if (st) return st == DFM_EOVERFLOW ? MLP_EOVERFLOW : MLP_EINVAL;
    const mlp_config *c = &m->cfg;
    if (c->time_dim > 0) {
        float s = (float)sqrt(1.0 / m->n_feat);
        for (size_t i = 0; i < (size_t)m->n_feat * c->time_dim; i++) m->params[m->off_tw + i] *= s;
        memset(m->params + m->off_tb, 0, sizeof(float) * (size_t)c->time_dim);
    }
    for (int l = 0; l <= c->n_hidden; l++) {
        double g2 = (l < c->n_hidden && c->act == MLP_ACT_RELU) ? 2.0 : 1.0;
        float s = (float)sqrt(g2 / m->width[l]);
        size_t n = (size_t)m->width[l] * (size_t)m->width[l + 1];
        for (size_t i = 0; i < n; i++) m->params[m->off_w[l] + i] *= s;
        memset(m->params + m->off_b[l], 0, sizeof(float) * (size_t)m->width[l + 1]);
    }
    memset(m->grads, 0, sizeof(float) * m->n_params);
    memset(m->adam_m, 0, sizeof(float) * m->n_params);
    memset(m->adam_v, 0, sizeof(float) * m->n_params);
    m->adam_t = 0;
    return MLP_OK;
}

/* Fills m's shape fields (widths, offsets, n_params) from *cfg without allocating.
 * Parameter layout: embeddings, time layer, then W_l, b_l for each layer. */
static inline int mlp__layout(mlp *m, const mlp_config *cfg)
{
    if (!mlp__config_ok(cfg)) return MLP_EINVAL;
    m->cfg = *cfg;
    const mlp_config *c = &m->cfg;
    size_t d0 = 0, t, n = 0, bytes;
    m->n_feat = 1 + 2 * c->time_freqs;
    m->n_tables = c->n_tokens > 0 ? (c->embed_per_position ? c->n_tokens : 1) : 0;
    int ok = mlp__mul((size_t)c->n_tokens, (size_t)c->embed_dim, &d0) &&
             mlp__add(&d0, (size_t)c->n_reals) &&
             mlp__add(&d0, (size_t)(c->time_dim > 0 ? c->time_dim : m->n_feat)) && d0 <= INT_MAX;
    m->off_emb = 0;
    ok = ok && mlp__mul((size_t)m->n_tables * (size_t)c->vocab, (size_t)c->embed_dim, &t) &&
         mlp__add(&n, t);
    m->off_tw = n;
    ok = ok && mlp__add(&n, (size_t)m->n_feat * (size_t)c->time_dim);
    m->off_tb = n;
    ok = ok && mlp__add(&n, (size_t)c->time_dim);
    if (ok) {
        m->in_dim = (int)d0;
        m->width[0] = (int)d0;
        for (int l = 0; l < c->n_hidden; l++) m->width[l + 1] = c->hidden;
        m->width[c->n_hidden + 1] = c->out_dim;
        for (int l = 0; ok && l <= c->n_hidden; l++) {
            m->off_w[l] = n;
            ok = mlp__mul((size_t)m->width[l], (size_t)m->width[l + 1], &t) && mlp__add(&n, t);
            m->off_b[l] = n;
            ok = ok && mlp__add(&n, (size_t)m->width[l + 1]);
        }
    }
    ok = ok && mlp__mul(n, 4 * sizeof(float), &bytes);
    if (!ok) return MLP_EOVERFLOW;
    m->n_params = n;
    return MLP_OK;
}

/** Creates a network of shape *cfg initialised from seed (see mlp_init). *out is NULL on
 * failure: MLP_EINVAL (NULL, bad config), MLP_EOVERFLOW, MLP_ENOMEM. */
static inline int mlp_create(mlp **out, const mlp_config *cfg, uint64_t seed)
{
    if (!out) return MLP_EINVAL;
    *out = NULL;
    if (!cfg) return MLP_EINVAL;
    mlp *m = (mlp *)calloc(1, sizeof *m);
    if (!m) return MLP_ENOMEM;
    int st = mlp__layout(m, cfg);
    if (st) { free(m); return st; }
    size_t n = m->n_params;
    m->params = (float *)malloc(n * 4 * sizeof(float));
    if (!m->params) { free(m); return MLP_ENOMEM; }
    m->grads = m->params + n;
    m->adam_m = m->grads + n;
    m->adam_v = m->adam_m + n;
    st = mlp_init(m, seed);
    if (st) { mlp_free(m); return st; }
    *out = m;
    return MLP_OK;
}

/** Flat parameter and gradient arrays (mlp_param_count floats each), e.g. for an MPI
 * all-reduce of the gradients or for averaging parameters. */
static inline float *mlp_params(mlp *m) { return m->params; }
static inline float *mlp_grads(mlp *m) { return m->grads; }

/** Sets every gradient to 0 (gradients accumulate over mlp_backward calls). */
static inline void mlp_zero_grad(mlp *m) { memset(m->grads, 0, sizeof(float) * m->n_params); }

/** Euclidean norm of the gradient (double accumulation). */
static inline double mlp_grad_norm(const mlp *m)
{
    double s = 0.0;
    for (size_t i = 0; i < m->n_params; i++) s += (double)m->grads[i] * m->grads[i];
    return sqrt(s);
}

/** Multiplies every gradient by s (e.g. 1/ranks after an all-reduce, or clipping). */
static inline void mlp_scale_grad(mlp *m, float s)
{
    for (size_t i = 0; i < m->n_params; i++) m->grads[i] *= s;
}

/* Grows the forward cache to hold rows rows. */
static inline int mlp__reserve(mlp *m, size_t rows)
{
    if (rows <= m->cap) return MLP_OK;
    const mlp_config *c = &m->cfg;
    size_t cap = rows > 2 * m->cap ? rows : 2 * m->cap, a, b, p, q, h = 1;
    size_t nt = (size_t)(c->n_tokens > 0 ? c->n_tokens : 1);
    if (cap > INT_MAX) cap = rows;
    if (c->n_hidden > 0) h = (size_t)c->hidden;
    if (!mlp__mul(cap, (size_t)m->in_dim, &a) || !mlp__mul(a, sizeof(float), &a) ||
        !mlp__mul(cap, h, &b) || !mlp__mul(b, sizeof(float), &b) ||
        !mlp__mul(cap, (size_t)m->n_feat * sizeof(float), &p) ||
        !mlp__mul(cap, nt * sizeof(int32_t), &q))
        return MLP_EOVERFLOW;
    mlp__free_cache(m);
    int ok = 1;
    ok &= (m->x0 = (float *)malloc(a)) != NULL;
    ok &= (m->dx0 = (float *)malloc(a)) != NULL;
    if (c->act_input) ok &= (m->a0 = (float *)malloc(a)) != NULL;
    ok &= (m->phi = (float *)malloc(p)) != NULL;
    ok &= (m->tok = (int32_t *)malloc(q)) != NULL;
    ok &= (m->d1 = (float *)malloc(b)) != NULL;
    ok &= (m->d2 = (float *)malloc(b)) != NULL;
    for (int l = 0; l < c->n_hidden; l++) {
        ok &= (m->z[l] = (float *)malloc(b)) != NULL;
        ok &= (m->a[l] = (float *)malloc(b)) != NULL;
    }
    if (!ok) { mlp__free_cache(m); return MLP_ENOMEM; }
    m->cap = cap;
    return MLP_OK;
}

/* y = act(z). For Swish, z is overwritten with sigmoid(z), which the backward pass reuses
 * (swish'(z) = s + y (1 - s)); for ReLU z is kept (relu'(z) = [z > 0]). */
static inline void mlp__act(int act, float *z, float *y, size_t n)
{
    if (act == MLP_ACT_RELU)
        for (size_t i = 0; i < n; i++) y[i] = z[i] > 0.0f ? z[i] : 0.0f;
    else
        for (size_t i = 0; i < n; i++) {
            float s = 1.0f / (1.0f + expf(-z[i]));
            y[i] = z[i] * s;
            z[i] = s;
        }
}

/* g[i] *= act'(z[i]) from the cache c left by mlp__act and the activation y. */
static inline void mlp__act_back(int act, const float *c, const float *y, float *g, size_t n)
{
    if (act == MLP_ACT_RELU)
        for (size_t i = 0; i < n; i++) g[i] = c[i] > 0.0f ? g[i] : 0.0f;
    else
        for (size_t i = 0; i < n; i++) g[i] *= c[i] + y[i] * (1.0f - c[i]);
}

/* C[rows][n] (ldc) = bias broadcast, then C += A W (A: rows x k, lda; W: k x n). */
static inline void mlp__dense(size_t rows, int k, int n, const float *A, int lda, const float *W,
                              const float *bias, float *C, int ldc)
{
    for (size_t r = 0; r < rows; r++) memcpy(C + r * (size_t)ldc, bias, sizeof(float) * (size_t)n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, n, k, 1.0f, A, lda, W, n,
                1.0f, C, ldc);
}

/** Batched forward pass: out[r][0..out_dim) (row stride ldo >= out_dim) for rows rows with
 * tokens[rows][n_tokens] (may be NULL when n_tokens == 0), reals[rows][n_reals] (may be NULL
 * when n_reals == 0) and times t[rows]. Caches every activation for mlp_backward.
 * MLP_EINVAL: NULL, ldo < out_dim, a token outside [0, vocab); MLP_ENOMEM; MLP_EOVERFLOW.
 * On failure out is untouched and the cache is invalid (mlp_backward then fails). */
static inline int mlp_forward(mlp *m, size_t rows, const int32_t *tokens, const float *reals,
                              const double *t, float *out, size_t ldo)
{
    if (!m) return MLP_EINVAL;
    const mlp_config *c = &m->cfg;
    m->rows = 0;
    m->have_fwd = 0;
    if (!t || !out || ldo < (size_t)c->out_dim || ldo > INT_MAX || rows > INT_MAX ||
        (c->n_tokens > 0 && !tokens) || (c->n_reals > 0 && !reals))
        return MLP_EINVAL;
    if (rows == 0) { m->have_fwd = 1; return MLP_OK; }
    size_t nt = (size_t)c->n_tokens, E = (size_t)c->embed_dim, D0 = (size_t)m->in_dim;
    for (size_t i = 0; i < rows * nt; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab) return MLP_EINVAL;
    int st = mlp__reserve(m, rows);
    if (st) return st;
    size_t tab = (size_t)c->vocab * E, ro = nt * E, to = ro + (size_t)c->n_reals;
    const float *emb = m->params + m->off_emb;
    for (size_t r = 0; r < rows; r++) {
        float *x = m->x0 + r * D0;
        for (size_t p = 0; p < nt; p++) {
            int32_t k = tokens[r * nt + p];
            m->tok[r * nt + p] = k;
            memcpy(x + p * E, emb + (c->embed_per_position ? p * tab : 0) + (size_t)k * E,
                   sizeof(float) * E);
        }
        if (c->n_reals > 0)
            memcpy(x + ro, reals + r * (size_t)c->n_reals, sizeof(float) * (size_t)c->n_reals);
        float *ph = m->phi + r * (size_t)m->n_feat;
        ph[0] = (float)t[r];
        for (int k = 0; k < c->time_freqs; k++) {
            double w = 3.14159265358979323846 * (double)(1u << k) * t[r];
            ph[1 + 2 * k] = (float)sin(w);
            ph[2 + 2 * k] = (float)cos(w);
        }
        if (c->time_dim == 0) memcpy(x + to, ph, sizeof(float) * (size_t)m->n_feat);
    }
    if (c->time_dim > 0)
        mlp__dense(rows, m->n_feat, c->time_dim, m->phi, m->n_feat, m->params + m->off_tw,
                   m->params + m->off_tb, m->x0 + to, (int)D0);
    const float *in = m->x0;
    if (c->act_input) {
        mlp__act(c->act, m->x0, m->a0, rows * D0);
        in = m->a0;
    }
    for (int l = 0; l < c->n_hidden; l++) {
        mlp__dense(rows, m->width[l], m->width[l + 1], in, m->width[l], m->params + m->off_w[l],
                   m->params + m->off_b[l], m->z[l], m->width[l + 1]);
        mlp__act(c->act, m->z[l], m->a[l], rows * (size_t)m->width[l + 1]);
        in = m->a[l];
    }
    int L = c->n_hidden;
    mlp__dense(rows, m->width[L], m->width[L + 1], in, m->width[L], m->params + m->off_w[L],
               m->params + m->off_b[L], out, (int)ldo);
    m->rows = rows;
    m->have_fwd = 1;
    return MLP_OK;
}

/* b[j] += sum_r g[r][j]. */
static inline void mlp__colsum(size_t rows, int n, const float *g, size_t ldg, float *b)
{
    for (size_t r = 0; r < rows; r++)
        for (int j = 0; j < n; j++) b[j] += g[r * ldg + (size_t)j];
}

/** Backward pass of the last mlp_forward: given dout[rows][out_dim] (row stride ldd), the
 * gradient of a scalar loss wrt the output, ADDS dLoss/dparam to the gradients (call
 * mlp_zero_grad first) and, when dreals is non-NULL, writes dLoss/dreals[rows][n_reals].
 * The loss is whatever dout says: pass dfm_loss_eval's args.grad as is (a mean-reduced loss
 * already carries its 1/count). MLP_EINVAL: NULL dout, ldd < out_dim, or no valid forward. */
static inline int mlp_backward(mlp *m, const float *dout, size_t ldd, float *dreals)
{
    if (!m || !dout || ldd < (size_t)m->cfg.out_dim || ldd > INT_MAX) return MLP_EINVAL;
    const mlp_config *c = &m->cfg;
    size_t rows = m->rows;
    if (!m->have_fwd) return MLP_EINVAL;
    if (rows == 0) return MLP_OK;
    int L = c->n_hidden;
    const float *g = dout;
    size_t ldg = ldd;
    float *buf[2] = {m->d1, m->d2};
    for (int l = L; l >= 0; l--) {
        int k = m->width[l], n = m->width[l + 1];
        const float *in = l > 0 ? m->a[l - 1] : (c->act_input ? m->a0 : m->x0);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, n, (int)rows, 1.0f, in, k, g,
                    (int)ldg, 1.0f, m->grads + m->off_w[l], n);
        mlp__colsum(rows, n, g, ldg, m->grads + m->off_b[l]);
        float *d = l > 0 ? buf[l & 1] : m->dx0;
        if (l == 0 && c->n_tokens == 0 && c->time_dim == 0 && !dreals) break;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, k, n, 1.0f, g, (int)ldg,
                    m->params + m->off_w[l], n, 0.0f, d, k);
        if (l > 0) mlp__act_back(c->act, m->z[l - 1], m->a[l - 1], d, rows * (size_t)k);
        else if (c->act_input) mlp__act_back(c->act, m->x0, m->a0, d, rows * (size_t)k);
        g = d;
        ldg = (size_t)k;
        if (l == 0) {
            size_t nt = (size_t)c->n_tokens, E = (size_t)c->embed_dim, D0 = (size_t)m->in_dim;
            size_t tab = (size_t)c->vocab * E, ro = nt * E, to = ro + (size_t)c->n_reals;
            float *demb = m->grads + m->off_emb;
            for (size_t r = 0; r < rows; r++) {
                const float *dx = d + r * D0;
                for (size_t p = 0; p < nt; p++) {
                    float *de = demb + (c->embed_per_position ? p * tab : 0) +
                                (size_t)m->tok[r * nt + p] * E;
                    for (size_t e = 0; e < E; e++) de[e] += dx[p * E + e];
                }
                if (dreals && c->n_reals > 0)
                    memcpy(dreals + r * (size_t)c->n_reals, dx + ro,
                           sizeof(float) * (size_t)c->n_reals);
            }
            if (c->time_dim > 0) {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m->n_feat, c->time_dim,
                            (int)rows, 1.0f, m->phi, m->n_feat, d + to, (int)D0, 1.0f,
                            m->grads + m->off_tw, c->time_dim);
                mlp__colsum(rows, c->time_dim, d + to, D0, m->grads + m->off_tb);
            }
        }
    }
    return MLP_OK;
}

/** Default Adam hyper-parameters with learning rate lr. */
static inline mlp_adam mlp_adam_default(float lr)
{
    mlp_adam a = {lr, 0.9f, 0.999f, 1e-8f, 0.0f};
    return a;
}

/** One Adam step on the accumulated gradients (Kingma & Ba 2015, Algorithm 1, with PyTorch's
 * placement of eps: p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)). Does not zero the
 * gradients. MLP_EINVAL for NULL or a hyper-parameter out of range. */
static inline int mlp_adam_step(mlp *m, const mlp_adam *o)
{
    if (!m || !o || !(o->lr >= 0.0f) || !(o->beta1 >= 0.0f && o->beta1 < 1.0f) ||
        !(o->beta2 >= 0.0f && o->beta2 < 1.0f) || !(o->eps > 0.0f) || !(o->weight_decay >= 0.0f))
        return MLP_EINVAL;
    m->adam_t++;
    double bc1 = 1.0 - pow(o->beta1, (double)m->adam_t);
    double bc2 = 1.0 - pow(o->beta2, (double)m->adam_t);
    float step = (float)(o->lr / bc1), isb2 = (float)(1.0 / sqrt(bc2));
    float b1 = o->beta1, b2 = o->beta2, wd = o->lr * o->weight_decay;
    float *p = m->params, *g = m->grads, *mm = m->adam_m, *vv = m->adam_v;
    for (size_t i = 0; i < m->n_params; i++) {
        mm[i] = b1 * mm[i] + (1.0f - b1) * g[i];
        vv[i] = b2 * vv[i] + (1.0f - b2) * g[i] * g[i];
        if (wd > 0.0f) p[i] -= wd * p[i];
        p[i] -= step * mm[i] / (sqrtf(vv[i]) * isb2 + o->eps);
    }
    return MLP_OK;
}

/* File format (native byte order): 8-byte magic "DFMMLP1\n", the 12 int32 fields of
 * mlp_config in declaration order, uint64 parameter count, then the float parameters in the
 * flat layout. Adam state is not saved. */
#define MLP__MAGIC "DFMMLP1\n"
#define MLP__NCFG 12

static inline void mlp__cfg_pack(const mlp_config *c, int32_t v[MLP__NCFG])
{
    int32_t t[MLP__NCFG] = {c->n_tokens, c->vocab, c->embed_dim, c->embed_per_position,
                            c->n_reals, c->time_freqs, c->time_dim, c->n_hidden, c->hidden,
                            c->out_dim, c->act, c->act_input};
    memcpy(v, t, sizeof t);
}

/** Writes the parameters (and shape) to path. MLP_EIO (errno set) when it cannot be written. */
static inline int mlp_save(const mlp *m, const char *path)
{
    if (!m || !path) return MLP_EINVAL;
    FILE *f = fopen(path, "wb");
    if (!f) return MLP_EIO;
    int32_t v[MLP__NCFG];
    mlp__cfg_pack(&m->cfg, v);
    uint64_t n = m->n_params;
    int ok = fwrite(MLP__MAGIC, 1, 8, f) == 8 && fwrite(v, sizeof v, 1, f) == 1 &&
             fwrite(&n, sizeof n, 1, f) == 1 &&
             fwrite(m->params, sizeof(float), m->n_params, f) == m->n_params;
    int e = errno;
    if (fclose(f) != 0) ok = 0, e = errno;
    errno = e;
    return ok ? MLP_OK : MLP_EIO;
}

/* Reads the header: config and count. */
static inline int mlp__read_header(FILE *f, mlp_config *c, uint64_t *n)
{
    char mg[8];
    int32_t v[MLP__NCFG];
    size_t got = fread(mg, 1, 8, f);
    if (ferror(f)) return MLP_EIO;
    if (got < 8) return got == 0 ? MLP_ETRUNC : (memcmp(mg, MLP__MAGIC, got) ? MLP_EFORMAT : MLP_ETRUNC);
    if (memcmp(mg, MLP__MAGIC, 8) != 0) return MLP_EFORMAT;
    if (fread(v, sizeof v, 1, f) != 1 || fread(n, sizeof *n, 1, f) != 1)
        return ferror(f) ? MLP_EIO : MLP_ETRUNC;
    mlp_config t = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11]};
    *c = t;
    return MLP_OK;
}

/* Reads exactly n floats then expects end of file. */
static inline int mlp__read_params(FILE *f, float *p, size_t n)
{
    if (fread(p, sizeof(float), n, f) != n) return ferror(f) ? MLP_EIO : MLP_ETRUNC;
    if (fgetc(f) != EOF) return MLP_EFORMAT;
    return ferror(f) ? MLP_EIO : MLP_OK;
}

/** Loads parameters saved by mlp_save into m, whose shape must match the file's. Resets the
 * gradients and Adam state. Errors: MLP_EIO (missing or unreadable file; errno set),
 * MLP_EFORMAT (bad magic or trailing bytes), MLP_ETRUNC (short file), MLP_EMISMATCH (shape);
 * m is unchanged on failure. */
static inline int mlp_load(mlp *m, const char *path)
{
    if (!m || !path) return MLP_EINVAL;
    FILE *f = fopen(path, "rb");
    if (!f) return MLP_EIO;
    mlp_config c;
    uint64_t n = 0;
    int st = mlp__read_header(f, &c, &n);
    if (!st) {
        int32_t a[MLP__NCFG], b[MLP__NCFG];
        mlp__cfg_pack(&c, a);
        mlp__cfg_pack(&m->cfg, b);
        if (memcmp(a, b, sizeof a) != 0 || n != m->n_params) st = MLP_EMISMATCH;
    }
    float *tmp = NULL;
    if (!st && !(tmp = (float *)malloc(m->n_params * sizeof(float) + 1))) st = MLP_ENOMEM;
    if (!st) st = mlp__read_params(f, tmp, m->n_params);
    int e = errno;
    fclose(f);
    if (!st) {
        memcpy(m->params, tmp, m->n_params * sizeof(float));
        memset(m->grads, 0, 3 * m->n_params * sizeof(float));
        m->adam_t = 0;
        m->rows = 0;
        m->have_fwd = 0;
    }
    free(tmp);
    errno = e;
    return st;
}

/** Creates a network from a file written by mlp_save (shape and parameters). *out is NULL on
 * failure; errors as mlp_load plus MLP_EFORMAT for a shape that mlp_create rejects. */
static inline int mlp_load_new(mlp **out, const char *path)
{
    if (!out) return MLP_EINVAL;
    *out = NULL;
    if (!path) return MLP_EINVAL;
    FILE *f = fopen(path, "rb");
    if (!f) return MLP_EIO;
    mlp_config c;
    uint64_t n = 0;
    int st = mlp__read_header(f, &c, &n);
    mlp *m = NULL;
    /* A corrupt header must not make us allocate: check the announced size first. */
    long pos = st ? 0 : ftell(f);
    if (!st && (pos < 0 || fseek(f, 0, SEEK_END) != 0)) st = MLP_EIO;
    if (!st) {
        long end = ftell(f);
        if (end < 0 || fseek(f, pos, SEEK_SET) != 0) st = MLP_EIO;
        else if ((uint64_t)(end - pos) / sizeof(float) < n) st = MLP_ETRUNC;
    }
    if (!st) {
        mlp shape;
        memset(&shape, 0, sizeof shape);
        if (mlp__layout(&shape, &c) != MLP_OK || shape.n_params != n) st = MLP_EFORMAT;
    }
    if (!st) st = mlp_create(&m, &c, 0);
    if (!st) st = mlp__read_params(f, m->params, m->n_params);
    int e = errno;
    fclose(f);
    if (st) mlp_free(m);
    else *out = m;
    errno = e;
    return st;
}

/** A dfm_model_fn over an mlp (user_data = the mlp*): the forward pass on the callback's
 * tokens, reals and times into io->out (io->branch is ignored). MLP_EINVAL when the space's
 * n_tokens or n_reals differ from the network's. Returns 0 or the MLP_E* code (libdfm then reports
 * DFM_ECALLBACK with that raw value). */
static inline int mlp_model_fn(const dfm_model_io *io, void *user_data)
{
    mlp *m = (mlp *)user_data;
    if (!io || !m || io->n_tokens != (size_t)m->cfg.n_tokens ||
        io->n_reals != (size_t)m->cfg.n_reals)
        return MLP_EINVAL;
    return mlp_forward(m, io->rows, io->tokens, io->reals, io->t, io->out, io->out_stride);
}

#endif
