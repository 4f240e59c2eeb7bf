/* Kolmogorov forward propagation on finite spaces: exp(hQ) by scaling and squaring with Pade
 * approximants (Higham 2005, "The scaling and squaring method for the matrix exponential
 * revisited", SIAM J. Matrix Anal. Appl. 26(4)), an LU solve written here (no LAPACK), an RK4
 * integrator for time-dependent Q, kinetic-optimal rates, the Bregman divergence and the
 * flattening helpers. */
#include "ctmc/ctmc_impl.h"

#include <cblas.h>
#include <math.h>

struct dfm_ctmc {
    dfm_base b;
    size_t n;
    double *work;     /* 8 n^2 doubles (exp), allocated on first use */
    size_t *piv;      /* n */
    double *ode;      /* RK4 scratch */
    size_t ode_m;
};

size_t dfm_ctmc_max_states(void) { return DFM_CTMC_MAX_STATES; }

size_t dfm__ct_states(int32_t V, size_t d)
{
    size_t s = 1;
    for (size_t i = 0; i < d; i++) {
        if (s > DFM_CTMC_MAX_STATES / (size_t)V) return 0;
        s *= (size_t)V;
    }
    return s;
}

static int single_discrete(const dfm_space *sp, int32_t *V, size_t *d)
{
    dfm_space_part info;
    if (!sp || dfm_space_n_parts(sp) != 1 || dfm_space_part_info(sp, 0, &info) ||
        info.kind != DFM_SPACE_DISCRETE)
        return DFM_EINVAL;
    *V = info.vocab;
    *d = info.dim;
    return 0;
}

static int not_single(const char *fn)
{
    return dfm__error(DFM_EINVAL, "%s: the space must be a single discrete part", fn);
}

static int too_many(const char *fn, int32_t V, size_t d)
{
    return dfm__error(DFM_ELIMIT, "%s: V^d = %ld^%zu states exceed DFM_CTMC_MAX_STATES (%d)", fn,
                      (long)V, d, DFM_CTMC_MAX_STATES);
}

int dfm_ctmc_n_states(const dfm_space *space, size_t *n_states)
{
    int32_t V;
    size_t d;
    if (!n_states) return dfm__null(__func__, "n_states");
    if (single_discrete(space, &V, &d)) return not_single(__func__);
    size_t s = dfm__ct_states(V, d);
    if (!s) return too_many(__func__, V, d);
    *n_states = s;
    return 0;
}

/* rows x (d tokens + a state) must fit in a buffer, checked before any loop over the rows. */
static int rows_fit(const char *fn, size_t rows, size_t d)
{
    size_t n;
    if (!dfm__mul3(rows, d + 1, sizeof(int32_t), &n) && n <= (size_t)PTRDIFF_MAX) return 0;
    return dfm__error(DFM_EOVERFLOW, "%s: rows = %zu overflows: %zu tokens per row exceed the "
                      "largest buffer", fn, rows, d);
}

int dfm_ctmc_flatten(const dfm_space *space, const int32_t *tokens, size_t rows, int32_t *states)
{
    int32_t V;
    size_t d;
    if (single_discrete(space, &V, &d)) return not_single(__func__);
    if (rows && (!tokens || !states)) return dfm__null(__func__, "tokens or states");
    if (!dfm__ct_states(V, d)) return too_many(__func__, V, d);
    if (rows_fit(__func__, rows, d)) return DFM_EOVERFLOW;
    if (dfm__overlap(states, rows * sizeof(int32_t), tokens, rows * d * sizeof(int32_t)))
        return dfm__error(DFM_EINVAL, "%s: states overlaps tokens: the output may not share "
                          "memory with the input", __func__);
    for (size_t i = 0; i < rows * d; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return dfm__error(DFM_ERANGE, "%s: tokens[row %zu][coord %zu] = %ld is outside "
                              "[0, %ld)", __func__, i / d, i % d, (long)tokens[i], (long)V);
    for (size_t r = 0; r < rows; r++) states[r] = dfm__ct_flat(tokens + r * d, V, d);
    return 0;
}

int dfm_ctmc_unflatten(const dfm_space *space, const int32_t *states, size_t rows, int32_t *tokens)
{
    int32_t V;
    size_t d;
    if (single_discrete(space, &V, &d)) return not_single(__func__);
    if (rows && (!tokens || !states)) return dfm__null(__func__, "tokens or states");
    size_t S = dfm__ct_states(V, d);
    if (!S) return too_many(__func__, V, d);
    if (rows_fit(__func__, rows, d)) return DFM_EOVERFLOW;
    if (dfm__overlap(tokens, rows * d * sizeof(int32_t), states, rows * sizeof(int32_t)))
        return dfm__error(DFM_EINVAL, "%s: tokens overlaps states: the output may not share "
                          "memory with the input", __func__);
    for (size_t r = 0; r < rows; r++)
        if (states[r] < 0 || (size_t)states[r] >= S)
            return dfm__error(DFM_ERANGE, "%s: states[%zu] = %ld is outside [0, %zu)", __func__,
                              r, (long)states[r], S);
    for (size_t r = 0; r < rows; r++) dfm__ct_unflat(states[r], V, d, tokens + r * d);
    return 0;
}

/* ---- workspace ---- */

int dfm_ctmc_create(dfm_ctmc **out, size_t n, const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (n == 0) return dfm__error(DFM_EINVAL, "%s: n must be >= 1", __func__);
    if (n > DFM_CTMC_MAX_STATES)
        return dfm__error(DFM_ELIMIT, "%s: n = %zu exceeds DFM_CTMC_MAX_STATES (%d)", __func__, n,
                          DFM_CTMC_MAX_STATES);
    void *h;
    int st = dfm__handle_new(&h, sizeof(dfm_ctmc), mem);
    if (st) return st;
    dfm_ctmc *w = (dfm_ctmc *)h;
    w->n = n;
    *out = w;
    return 0;
}

void dfm_ctmc_free(dfm_ctmc *w)
{
    if (!w || dfm__refuse_free(&w->b, __func__)) return;
    dfm__pool_free(&w->b);
    dfm_allocator m = w->b.mem;
    dfm__free(&m, w->work);
    dfm__free(&m, w->piv);
    dfm__free(&m, w->ode);
    dfm__free(&m, w);
}

const char *dfm_ctmc_last_error(const dfm_ctmc *w) { return w ? w->b.err : "NULL handle"; }
int dfm_ctmc_callback_status(const dfm_ctmc *w) { return w ? w->b.cb_raw : 0; }

static int need_work(dfm_ctmc *w)
{
    if (w->work) return 0;
    size_t n = w->n;
    w->work = (double *)dfm__calloc(&w->b.mem, 8 * n, n * sizeof(double));
    w->piv = (size_t *)dfm__calloc(&w->b.mem, n, sizeof(size_t));
    if (!w->work || !w->piv) {
        dfm__free(&w->b.mem, w->work);
        dfm__free(&w->b.mem, w->piv);
        w->work = NULL;
        w->piv = NULL;
        return dfm__fail(&w->b, DFM_ENOMEM, "cannot allocate the exp workspace (8 x %zu^2 doubles)",
                         n);
    }
    return 0;
}

/* ---- Pade scaling and squaring ---- */

static const double b3[] = {120., 60., 12., 1.};
static const double b5[] = {30240., 15120., 3360., 420., 30., 1.};
static const double b7[] = {17297280., 8648640., 1995840., 277200., 25200., 1512., 56., 1.};
static const double b9[] = {17643225600., 8821612800., 2075673600., 302702400., 30270240.,
                            2162160., 110880., 3960., 90., 1.};
static const double b13[] = {64764752532480000., 32382376266240000., 7771770303897600.,
                             1187353796428800., 129060195264000., 10559470521600.,
                             670442572800., 33522128640., 1323241920., 40840800., 960960.,
                             16380., 182., 1.};
/* theta_m of Higham 2005, Table 2.3 (double precision). */
static const double theta[] = {1.495585217958292e-2, 2.539398330063230e-1, 9.504178996162932e-1,
                               2.097847961257068e0, 5.371920351148152e0};

static void gemm(size_t n, const double *A, const double *B, double *C)
{
    int N = (int)n;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0, A, N, B, N, 0.0, C, N);
}

/* In-place LU with partial pivoting of M (n x n), right-looking and blocked (panels of NB
 * columns; the trailing update is one gemm); then solve M X = B, X overwrites B (n x n). */
#define NB 32
static int lu_solve(size_t n, double *M, double *B, size_t *piv)
{
    int N = (int)n;
    for (size_t k0 = 0; k0 < n; k0 += NB) {
        size_t kb = n - k0 < NB ? n - k0 : NB, kend = k0 + kb;
        for (size_t k = k0; k < kend; k++) {
            size_t p = k;
            double best = fabs(M[k * n + k]);
            for (size_t i = k + 1; i < n; i++) {
                double v = fabs(M[i * n + k]);
                if (v > best) { best = v; p = i; }
            }
            if (!(best > 0.0) || !isfinite(best)) return DFM_ENUMERIC;
            piv[k] = p;
            if (p != k) {
                for (size_t j = 0; j < n; j++) {
                    double t = M[k * n + j]; M[k * n + j] = M[p * n + j]; M[p * n + j] = t;
                    t = B[k * n + j]; B[k * n + j] = B[p * n + j]; B[p * n + j] = t;
                }
            }
            const double inv = 1.0 / M[k * n + k];
            const double *rk = M + k * n;
            for (size_t i = k + 1; i < n; i++) {
                double *ri = M + i * n;
                double l = ri[k] * inv;
                ri[k] = l;
                if (l == 0.0) continue;
                for (size_t j = k + 1; j < kend; j++) ri[j] -= l * rk[j];
            }
        }
        if (kend < n) {
            int nr = (int)(n - kend);
            /* U12 = L11^{-1} A12, A22 -= L21 U12 */
            cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasUnit, (int)kb, nr,
                        1.0, M + k0 * n + k0, N, M + k0 * n + kend, N);
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, nr, (int)kb, -1.0,
                        M + kend * n + k0, N, M + k0 * n + kend, N, 1.0, M + kend * n + kend, N);
        }
    }
    cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasUnit, N, N, 1.0, M, N,
                B, N);
    cblas_dtrsm(CblasRowMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, N, N, 1.0, M, N,
                B, N);
    return 0;
}

static double norm1(size_t n, const double *A)
{
    double best = 0.0;
    for (size_t j = 0; j < n; j++) {
        double s = 0.0;
        for (size_t i = 0; i < n; i++) s += fabs(A[i * n + j]);
        if (s > best || isnan(s)) best = s;
    }
    return best;
}

/* E = exp(A) with A already scaled by h; A is overwritten (scratch work has 7 n^2 doubles). */
static int expm_core(dfm_ctmc *w, double *A, double *E)
{
    size_t n = w->n, nn = n * n;
    double *A2 = w->work + nn, *A4 = A2 + nn, *A6 = A4 + nn, *U = A6 + nn, *V = U + nn,
           *T = V + nn;
    /* Trace shift (Higham 2005 §4 / Ward 1977): exp(A) = e^mu exp(A - mu I), used when mu < 0
     * (generators) where it only shrinks the norm and e^mu cannot overflow. */
    double mu = 0.0;
    for (size_t i = 0; i < n; i++) mu += A[i * n + i];
    mu /= (double)n;
    if (mu < 0.0) {
        for (size_t i = 0; i < n; i++) A[i * n + i] -= mu;
    } else {
        mu = 0.0;
    }
    double nrm = norm1(n, A);
    if (!isfinite(nrm)) return dfm__fail(&w->b, DFM_ENUMERIC, "exp: matrix is not finite");
    int m = 4, s = 0;
    for (int k = 0; k < 4; k++)
        if (nrm <= theta[k]) { m = k; break; }
    if (m == 4 && nrm > theta[4]) {
        s = (int)ceil(log2(nrm / theta[4]));
        if (s < 0) s = 0;
        double sc = ldexp(1.0, -s);
        for (size_t i = 0; i < nn; i++) A[i] *= sc;
    }
    gemm(n, A, A, A2);
    if (m >= 1) gemm(n, A2, A2, A4);
    if (m >= 2) gemm(n, A4, A2, A6);
    if (m < 4) {
        static const double *const tab[] = {b3, b5, b7, b9};
        const double *b = tab[m];
        int deg = 2 * m + 3;
        const double *P[5] = {NULL, A2, A4, A6, NULL};
        double *A8 = T;
        if (m == 3) { gemm(n, A4, A4, A8); P[4] = A8; }
        /* T2 = sum_k b[2k+1] A^{2k}, V = sum_k b[2k] A^{2k} */
        double *W = E; /* temporary for the odd sum */
        for (size_t i = 0; i < nn; i++) { W[i] = 0.0; V[i] = 0.0; }
        for (size_t i = 0; i < n; i++) { W[i * n + i] = b[1]; V[i * n + i] = b[0]; }
        for (int k = 1; 2 * k <= deg - 1; k++) {
            const double *Pk = P[k];
            double bo = b[2 * k + 1], be = b[2 * k];
            for (size_t i = 0; i < nn; i++) { W[i] += bo * Pk[i]; V[i] += be * Pk[i]; }
        }
        gemm(n, A, W, U);
    } else {
        const double *b = b13;
        for (size_t i = 0; i < nn; i++) T[i] = b[13] * A6[i] + b[11] * A4[i] + b[9] * A2[i];
        gemm(n, A6, T, E);
        for (size_t i = 0; i < nn; i++) E[i] += b[7] * A6[i] + b[5] * A4[i] + b[3] * A2[i];
        for (size_t i = 0; i < n; i++) E[i * n + i] += b[1];
        gemm(n, A, E, U);
        for (size_t i = 0; i < nn; i++) T[i] = b[12] * A6[i] + b[10] * A4[i] + b[8] * A2[i];
        gemm(n, A6, T, V);
        for (size_t i = 0; i < nn; i++) V[i] += b[6] * A6[i] + b[4] * A4[i] + b[2] * A2[i];
        for (size_t i = 0; i < n; i++) V[i * n + i] += b[0];
    }
    /* (V - U) R = (V + U) */
    for (size_t i = 0; i < nn; i++) {
        double v = V[i], u = U[i];
        T[i] = v - u;
        E[i] = v + u;
    }
    if (lu_solve(n, T, E, w->piv))
        return dfm__fail(&w->b, DFM_ENUMERIC, "exp: singular Pade denominator");
    if (mu != 0.0) {
        /* e^mu applied before squaring, as e^(mu / 2^s), so neither factor under/overflows */
        double em = exp(ldexp(mu, -s));
        for (size_t i = 0; i < nn; i++) E[i] *= em;
    }
    for (int k = 0; k < s; k++) {
        gemm(n, E, E, T);
        memcpy(E, T, nn * sizeof(double));
    }
    for (size_t i = 0; i < nn; i++)
        if (!isfinite(E[i])) return dfm__fail(&w->b, DFM_ENUMERIC, "exp: result overflows");
    return 0;
}

int dfm_ctmc_expm(dfm_ctmc *w, const double *A, double h, double *E)
{
    if (!w) return dfm__null(__func__, "w");
    DFM__NOT_RUNNING(&w->b);
    dfm__clear(&w->b);
    if (!A || !E) return dfm__fail(&w->b, DFM_EINVAL, "A or E is NULL");
    if (A == E) return dfm__fail(&w->b, DFM_EINVAL, "A and E may not alias");
    if (!isfinite(h)) return dfm__fail(&w->b, DFM_EINVAL, "h = %g is not finite", h);
    int st = need_work(w);
    if (st) return st;
    size_t nn = w->n * w->n;
    double *S = w->work, *R = w->work + 7 * nn;
    for (size_t i = 0; i < nn; i++) {
        if (!isfinite(A[i]))
            return dfm__fail(&w->b, DFM_ENUMERIC, "A[%zu][%zu] = %g is not finite", i / w->n,
                             i % w->n, A[i]);
        S[i] = h * A[i];
    }
    st = expm_core(w, S, R);
    if (st) return st;
    memcpy(E, R, nn * sizeof(double));
    return 0;
}

/* Copy a generator with its diagonal derived, validating the off-diagonal entries. */
static int load_generator(dfm_base *b, size_t n, const double *Q, double scale, double *dst)
{
    for (size_t i = 0; i < n; i++) {
        double sum = 0.0;
        for (size_t j = 0; j < n; j++) {
            if (j == i) continue;
            double q = Q[i * n + j];
            if (!isfinite(q) || q < 0.0)
                return dfm__fail(b, DFM_ENUMERIC,
                                 "rate Q[%zu][%zu] = %g is not a finite nonnegative rate", i, j, q);
            dst[i * n + j] = scale * q;
            sum += q;
        }
        if (!isfinite(sum))
            return dfm__fail(b, DFM_ENUMERIC, "total rate of row %zu overflows", i);
        dst[i * n + i] = -scale * sum;
    }
    return 0;
}

static int kernel_into(dfm_ctmc *w, const double *Q, double h, double *K)
{
    size_t n = w->n, nn = n * n;
    int st = need_work(w);
    if (st) return st;
    double *S = w->work;
    st = load_generator(&w->b, n, Q, h, S);
    if (st) return st;
    st = expm_core(w, S, K);
    if (st) return st;
    for (size_t i = 0; i < n; i++) {
        double sum = 0.0;
        for (size_t j = 0; j < n; j++) {
            double v = K[i * n + j];
            if (v < 0.0) v = 0.0;
            K[i * n + j] = v;
            sum += v;
        }
        if (!(sum > 0.0)) return dfm__fail(&w->b, DFM_ENUMERIC, "exp: row %zu vanished", i);
        for (size_t j = 0; j < n; j++) K[i * n + j] /= sum;
    }
    (void)nn;
    return 0;
}

int dfm_ctmc_kernel(dfm_ctmc *w, const double *Q, double h, double *K)
{
    if (!w) return dfm__null(__func__, "w");
    DFM__NOT_RUNNING(&w->b);
    dfm__clear(&w->b);
    if (!Q || !K) return dfm__fail(&w->b, DFM_EINVAL, "Q or K is NULL");
    if (!(h >= 0.0) || !isfinite(h))
        return dfm__fail(&w->b, DFM_EINVAL, "h = %g must be finite and >= 0", h);
    int st = need_work(w);
    if (st) return st;
    double *R = w->work + 7 * w->n * w->n;
    st = kernel_into(w, Q, h, R);
    if (st) return st;
    memcpy(K, R, w->n * w->n * sizeof(double));
    return 0;
}

static int check_vecs(dfm_base *b, const double *p, size_t m, size_t n)
{
    for (size_t i = 0; i < m * n; i++)
        if (!isfinite(p[i]))
            return dfm__fail(b, DFM_ENUMERIC, "p0[%zu][%zu] = %g is not finite", i / n, i % n,
                             p[i]);
    return 0;
}

static int need_ode(dfm_ctmc *w, size_t m)
{
    if (w->ode && w->ode_m >= m) return 0;
    size_t n = w->n, cnt;
    if (dfm__mul(m, n, &cnt) || cnt > (SIZE_MAX / sizeof(double) - n * n) / 6)
        return dfm__fail(&w->b, DFM_EOVERFLOW, "m x n overflows");
    double *o = (double *)dfm__calloc(&w->b.mem, 6 * cnt + n * n, sizeof(double));
    if (!o) return dfm__fail(&w->b, DFM_ENOMEM, "cannot allocate the propagation scratch");
    dfm__free(&w->b.mem, w->ode);
    w->ode = o;
    w->ode_m = m;
    return 0;
}

static void rowmul(size_t m, size_t n, const double *P, const double *Q, double *out)
{
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)n, 1.0, P, (int)n,
                Q, (int)n, 0.0, out, (int)n);
}

int dfm_ctmc_propagate(dfm_ctmc *w, const double *p0, size_t m, const double *Q, double h,
                       double *pt)
{
    if (!w) return dfm__null(__func__, "w");
    DFM__NOT_RUNNING(&w->b);
    dfm__clear(&w->b);
    if (!Q || (m && (!p0 || !pt))) return dfm__fail(&w->b, DFM_EINVAL, "p0, Q or pt is NULL");
    if (!(h >= 0.0) || !isfinite(h))
        return dfm__fail(&w->b, DFM_EINVAL, "h = %g must be finite and >= 0", h);
    int st = check_vecs(&w->b, p0, m, w->n);
    if (!st) st = need_work(w);
    if (!st) st = need_ode(w, m ? m : 1);
    if (st) return st;
    double *K = w->work + 7 * w->n * w->n;
    st = kernel_into(w, Q, h, K);
    if (st) return st;
    if (!m) return 0;
    rowmul(m, w->n, p0, K, w->ode);
    memcpy(pt, w->ode, m * w->n * sizeof(double));
    return 0;
}

static int ode_rates(dfm_ctmc *w, dfm_rate_matrix_fn fn, void *user, double t, double *Q)
{
    size_t n = w->n;
    memset(Q, 0, n * n * sizeof(double));
    int raw = fn(t, Q, n, user);
    if (raw) return dfm__fail_callback(&w->b, raw, "rate matrix");
    if ((raw = dfm__callback_freed())) return raw;
    for (size_t i = 0; i < n; i++) {
        double sum = 0.0;
        for (size_t j = 0; j < n; j++) {
            if (j == i) continue;
            double q = Q[i * n + j];
            if (!isfinite(q) || q < 0.0)
                return dfm__fail(&w->b, DFM_ENUMERIC,
                                 "rate Q[%zu][%zu] = %g at t = %g is not a finite nonnegative rate",
                                 i, j, q, t);
            sum += q;
        }
        Q[i * n + i] = -sum;
    }
    return 0;
}

static int propagate_ode(dfm_ctmc *w, const double *p0, size_t m, dfm_rate_matrix_fn fn,
                         void *user_data, double t0, double t1, size_t n_steps, double *pt)
{
    if (!fn || (m && (!p0 || !pt))) return dfm__fail(&w->b, DFM_EINVAL, "p0, fn or pt is NULL");
    if (!isfinite(t0) || !isfinite(t1) || t1 < t0)
        return dfm__fail(&w->b, DFM_EINVAL, "need finite t0 <= t1, got %g, %g", t0, t1);
    if (n_steps == 0) return dfm__fail(&w->b, DFM_EINVAL, "n_steps must be >= 1");
    int st = check_vecs(&w->b, p0, m, w->n);
    if (!st) st = need_ode(w, m ? m : 1);
    if (st) return st;
    size_t n = w->n, mn = m * n;
    double *P = w->ode, *k1 = P + mn, *k2 = k1 + mn, *k3 = k2 + mn, *k4 = k3 + mn, *Y = k4 + mn,
           *Q = Y + mn;
    if (m) memcpy(P, p0, mn * sizeof(double));
    double h = (t1 - t0) / (double)n_steps;
    for (size_t k = 0; k < n_steps; k++) {
        double t = t0 + (double)k * h;
        double te = k + 1 == n_steps ? t1 : t0 + (double)(k + 1) * h;
        if ((st = ode_rates(w, fn, user_data, t, Q))) return st;
        if (m) rowmul(m, n, P, Q, k1);
        if ((st = ode_rates(w, fn, user_data, t + 0.5 * h, Q))) return st;
        for (size_t i = 0; i < mn; i++) Y[i] = P[i] + 0.5 * h * k1[i];
        if (m) rowmul(m, n, Y, Q, k2);
        for (size_t i = 0; i < mn; i++) Y[i] = P[i] + 0.5 * h * k2[i];
        if (m) rowmul(m, n, Y, Q, k3);
        if ((st = ode_rates(w, fn, user_data, te, Q))) return st;
        for (size_t i = 0; i < mn; i++) Y[i] = P[i] + h * k3[i];
        if (m) rowmul(m, n, Y, Q, k4);
        for (size_t i = 0; i < mn; i++)
            P[i] += h / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
    }
    for (size_t i = 0; i < mn; i++)
        if (!isfinite(P[i])) return dfm__fail(&w->b, DFM_ENUMERIC, "the ODE solution diverged");
    if (m) memcpy(pt, P, mn * sizeof(double));
    return 0;
}

int dfm_ctmc_propagate_ode(dfm_ctmc *w, const double *p0, size_t m, dfm_rate_matrix_fn fn,
                           void *user_data, double t0, double t1, size_t n_steps, double *pt)
{
    if (!w) return dfm__null(__func__, "w");
    int st = dfm__enter(&w->b, __func__);
    if (st) return st;
    return dfm__leave(&w->b, propagate_ode(w, p0, m, fn, user_data, t0, t1, n_steps, pt));
}

/* ---- kinetic-optimal rates and the Bregman divergence ---- */

void dfm__kinetic_row(const double *p, const double *dp, size_t n, size_t z, double *row)
{
    double pz = p[z], dz = dp[z];
    if (!(pz > 0.0)) {
        memset(row, 0, n * sizeof(double));
        return;
    }
    double inv = 1.0 / pz;
    for (size_t x = 0; x < n; x++) {
        double v = (dp[x] * pz - dz * p[x]) * inv;
        row[x] = v > 0.0 ? v : 0.0;
    }
    row[z] = 0.0;
}

int dfm_ctmc_kinetic_rates(const double *p, const double *dp, size_t n, double *Q)
{
    if (!p || !dp || !Q) return dfm__null(__func__, "p, dp or Q");
    if (n == 0) return dfm__error(DFM_EINVAL, "%s: n must be >= 1", __func__);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(p[i]) || p[i] < 0.0 || !isfinite(dp[i]))
            return dfm__error(DFM_ENUMERIC, "%s: p[%zu] = %g, dp[%zu] = %g: p must be finite and "
                              ">= 0, dp finite", __func__, i, p[i], i, dp[i]);
    size_t nn;
    if (dfm__mul(n, n, &nn)) return dfm__error(DFM_EOVERFLOW, "%s: n x n overflows", __func__);
    for (size_t z = 0; z < n; z++) {
        double *row = Q + z * n, sum = 0.0;
        dfm__kinetic_row(p, dp, n, z, row);
        for (size_t x = 0; x < n; x++) sum += row[x];
        if (!isfinite(sum))
            return dfm__error(DFM_ENUMERIC, "%s: the rates out of state %zu overflow", __func__, z);
        row[z] = -sum;
    }
    return 0;
}

int dfm_bregman_rates(const double *a, const double *b, size_t n, double *value, double *grad)
{
    if (!a || !b || !value) return dfm__null(__func__, "a or b or value");
    double v = 0.0;
    for (size_t y = 0; y < n; y++) {
        double ay = a[y], by = b[y];
        if (!isfinite(ay) || ay < 0.0 || !isfinite(by) || by < 0.0)
            return dfm__error(DFM_ENUMERIC, "%s: a[%zu] = %g, b[%zu] = %g: entries must be "
                              "finite and >= 0", __func__, y, ay, y, by);
        if (ay > 0.0 && by == 0.0)
            return dfm__error(DFM_ENUMERIC, "%s: b[%zu] = 0 < a[%zu] = %g: the divergence is "
                              "infinite", __func__, y, y, ay);
        v += (ay > 0.0 ? ay * log(ay / by) : 0.0) - ay + by;
    }
    if (!isfinite(v)) return dfm__error(DFM_ENUMERIC, "%s: the divergence overflows", __func__);
    if (grad)
        for (size_t y = 0; y < n; y++) grad[y] = a[y] > 0.0 ? 1.0 - a[y] / b[y] : 1.0;
    *value = v;
    return 0;
}
