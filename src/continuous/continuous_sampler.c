/* ODE samplers (Euler, midpoint, RK4, adaptive Dormand-Prince 5(4); Dormand & Prince 1980,
 * Hairer, Norsett & Wanner, "Solving ODEs I", II.4 for the step control), the Euler-Maruyama
 * SDE sampler, and the log-likelihood under the flow (Chen et al. 2018; Song et al. 2021). */
#include "continuous/continuous_impl.h"
#include "core/rng_impl.h"

#include <float.h>
#include <math.h>

typedef struct csamp {
    double atol, rtol, h_init;
    int64_t max_steps;
} csamp;

/* ---- Butcher tableaus ---- */
typedef struct tableau {
    int stages;
    double c[7];
    double a[7][6];
    double b[7];
    double e[7]; /* b - bhat (DOPRI5 error weights) */
} tableau;

static const tableau TAB_EULER = {1, {0}, {{0}}, {1}, {0}};
static const tableau TAB_MID = {2, {0, 0.5}, {{0}, {0.5}}, {0, 1}, {0}};
static const tableau TAB_RK4 = {4, {0, 0.5, 0.5, 1},
                                {{0}, {0.5}, {0, 0.5}, {0, 0, 1}},
                                {1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6}, {0}};
static const tableau TAB_DOPRI5 = {
    7,
    {0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1, 1},
    {{0},
     {1.0 / 5},
     {3.0 / 40, 9.0 / 40},
     {44.0 / 45, -56.0 / 15, 32.0 / 9},
     {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
     {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
     {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84}},
    {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84, 0},
    {71.0 / 57600, 0, -71.0 / 16695, 71.0 / 1920, -17253.0 / 339200, 22.0 / 525, -1.0 / 40}};

/* ---- integration context ---- */
typedef struct ode {
    dfm_sampler *s;
    const dfm_generator *g;
    dfm_model_fn model;
    void *model_data;
    size_t rows, row_offset, d, w; /* w: doubles per row of the state (d, or d + K) */
    float *xin, *yout, *yout2;     /* rows x d */
    double *tbuf;                  /* rows */
    int step;
    /* log-likelihood */
    int loglik;
    dfm_divergence_fn div;
    void *div_data;
    size_t K;
    double eps;
    const float *probes; /* rows x K x d Rademacher */
    double *divbuf;      /* rows */
} ode;

/* The fields every integration (sampling or likelihood) sets; the rest start at zero. */
static void ode_init(ode *o, dfm_sampler *s, const dfm_generator *g, dfm_model_fn model,
                     void *model_data, size_t rows, size_t row_offset, size_t d)
{
    memset(o, 0, sizeof *o);
    o->s = s;
    o->g = g;
    o->model = model;
    o->model_data = model_data;
    o->rows = rows;
    o->row_offset = row_offset;
    o->d = d;
}

/* Per-element kernels, parallel over rows. */
typedef struct kctx {
    const ode *o;
    int mode;
    const double *y;
    double *f;
    double A, B, inv_s, eps;
    size_t k;
    /* stage combination */
    double *dst;
    const double *const *ks;
    const double *wts;
    int n;
    double h;
    double *rowerr;
    double atol, rtol;
    const double *ynew;
} kctx;

enum { K_TOFLOAT, K_VEL, K_HUTCH, K_COMBINE, K_ERR };

DFM_CLONES_V4
static void tofloat_row(size_t d, const double *restrict y, double inv_s,
                        const float *restrict z, double eps, float *restrict x)
{
    size_t j = 0;
    if (z) {
        for (; j + DFM__VB <= d; j += DFM__VB)
            for (int k = 0; k < DFM__VB; k++)
                x[j + k] = (float)((y[j + k] + eps * z[j + k]) * inv_s);
        for (; j < d; j++) x[j] = (float)((y[j] + eps * z[j]) * inv_s);
    } else {
        for (; j + DFM__VB <= d; j += DFM__VB)
            for (int k = 0; k < DFM__VB; k++) x[j + k] = (float)(y[j + k] * inv_s);
        for (; j < d; j++) x[j] = (float)(y[j] * inv_s);
    }
}

DFM_CLONES_V4
static int vel_row(size_t d, const double *restrict y, const float *restrict m, double A,
                   double B, double *restrict f)
{
    if (!dfm__all_finite_f(m, d)) return 1;
    size_t j = 0;
    if (A == 0.0) {
        for (; j + DFM__VB <= d; j += DFM__VB)
            for (int k = 0; k < DFM__VB; k++) f[j + k] = B * (double)m[j + k];
        for (; j < d; j++) f[j] = B * (double)m[j];
    } else {
        for (; j + DFM__VB <= d; j += DFM__VB)
            for (int k = 0; k < DFM__VB; k++) f[j + k] = A * y[j + k] + B * (double)m[j + k];
        for (; j < d; j++) f[j] = A * y[j] + B * (double)m[j];
    }
    return 0;
}

/* dst = src + sum_{s < q} a[s] k[s], q in 1..4, in one pass. The k rows never alias dst; an
 * in-place update (dst == src) has its own copy so that every pointer can be restrict. */
#define COMB_BODY(DST, SRC)                                                                      \
    size_t j = 0;                                                                              \
    switch (q) {                                                                               \
    case 1:                                                                                    \
        for (; j + DFM__VB <= w; j += DFM__VB)                                                 \
            for (int i = 0; i < DFM__VB; i++) DST[j + i] = SRC[j + i] + a0 * k0[j + i];        \
        for (; j < w; j++) DST[j] = SRC[j] + a0 * k0[j];                                       \
        break;                                                                                 \
    case 2:                                                                                    \
        for (; j + DFM__VB <= w; j += DFM__VB)                                                 \
            for (int i = 0; i < DFM__VB; i++)                                                  \
                DST[j + i] = SRC[j + i] + (a0 * k0[j + i] + a1 * k1[j + i]);                   \
        for (; j < w; j++) DST[j] = SRC[j] + (a0 * k0[j] + a1 * k1[j]);                        \
        break;                                                                                 \
    case 3:                                                                                    \
        for (; j + DFM__VB <= w; j += DFM__VB)                                                 \
            for (int i = 0; i < DFM__VB; i++)                                                  \
                DST[j + i] = SRC[j + i] + (a0 * k0[j + i] + a1 * k1[j + i] + a2 * k2[j + i]);  \
        for (; j < w; j++) DST[j] = SRC[j] + (a0 * k0[j] + a1 * k1[j] + a2 * k2[j]);           \
        break;                                                                                 \
    default:                                                                                   \
        for (; j + DFM__VB <= w; j += DFM__VB)                                                 \
            for (int i = 0; i < DFM__VB; i++)                                                  \
                DST[j + i] = SRC[j + i] + (a0 * k0[j + i] + a1 * k1[j + i] + a2 * k2[j + i] +  \
                                           a3 * k3[j + i]);                                    \
        for (; j < w; j++)                                                                     \
            DST[j] = SRC[j] + (a0 * k0[j] + a1 * k1[j] + a2 * k2[j] + a3 * k3[j]);             \
        break;                                                                                 \
    }

#define COMB_ARGS                                                                              \
    const double *restrict k0 = k[0], *restrict k1 = q > 1 ? k[1] : k[0],                      \
                           *restrict k2 = q > 2 ? k[2] : k[0], *restrict k3 = q > 3 ? k[3] : k[0]; \
    double a0 = a[0], a1 = q > 1 ? a[1] : 0.0, a2 = q > 2 ? a[2] : 0.0, a3 = q > 3 ? a[3] : 0.0;

DFM_CLONES_V4
static void comb_row_to(size_t w, double *restrict dst, const double *restrict src, int q,
                        const double *a, const double *const *k)
{
    COMB_ARGS
    COMB_BODY(dst, src)
}

DFM_CLONES_V4
static void comb_row_inplace(size_t w, double *restrict y, int q, const double *a,
                             const double *const *k)
{
    COMB_ARGS
    COMB_BODY(y, y)
}

static void comb_row(size_t w, double *dst, const double *src, int q, const double *a,
                     const double *const *k)
{
    if (dst == src) comb_row_inplace(w, dst, q, a, k);
    else comb_row_to(w, dst, src, q, a, k);
}

static int kernel(void *vc, size_t begin, size_t end, int tid)
{
    const kctx *c = (const kctx *)vc;
    const ode *o = c->o;
    size_t d = o->d, w = o->w;
    (void)tid;
    for (size_t r = begin; r < end; r++) {
        switch (c->mode) {
        case K_TOFLOAT:
            tofloat_row(d, c->y + r * w, c->inv_s,
                        c->eps != 0.0 ? o->probes + (r * o->K + c->k) * d : NULL, c->eps,
                        o->xin + r * d);
            break;
        case K_VEL:
            if (vel_row(d, c->y + r * w, o->yout + r * d, c->A, c->B, c->f + r * w))
                return DFM_ENUMERIC;
            break;
        case K_HUTCH: { /* z^T (v(x + eps z) - v(x - eps z)) / (2 eps) */
            const float *z = o->probes + (r * o->K + c->k) * d;
            const float *p = o->yout + r * d, *m = o->yout2 + r * d;
            double acc = 0.0, zz = 0.0;
            int bad = 0;
            for (size_t j = 0; j < d; j++) {
                bad |= !(p[j] - p[j] == 0.0f) || !(m[j] - m[j] == 0.0f);
                acc += (double)z[j] * ((double)p[j] - (double)m[j]);
                zz += (double)z[j] * z[j];
            }
            if (bad) return DFM_ENUMERIC;
            c->f[r * w + d + c->k] = c->A * zz + c->B * acc / (2.0 * c->eps);
            break;
        }
        case K_COMBINE: {
            /* dst = y + h sum_s wts[s] k_s, one axpy per nonzero weight (dst may be y) */
            double *dst = c->dst + r * w;
            const double *src = c->y + r * w;
            double a[7];
            const double *kp[7];
            int m = 0;
            for (int s = 0; s < c->n; s++)
                if (c->wts[s] != 0.0) { a[m] = c->h * c->wts[s]; kp[m++] = c->ks[s] + r * w; }
            for (int s = 0; s < m; s += 4) {
                int q = m - s < 4 ? m - s : 4;
                comb_row(w, dst, src, q, a + s, kp + s);
                src = dst;
            }
            if (src != dst) memcpy(dst, src, w * sizeof(double));
            break;
        }
        case K_ERR: {
            const double *y = c->y + r * w, *yn = c->ynew + r * w;
            double acc = 0.0;
            for (size_t j = 0; j < w; j++) {
                double e = 0.0;
                for (int s = 0; s < c->n; s++)
                    if (c->wts[s] != 0.0) e += c->wts[s] * c->ks[s][r * w + j];
                e *= c->h;
                double sc = c->atol + c->rtol * fmax(fabs(y[j]), fabs(yn[j]));
                double q = sc > 0.0 ? e / sc : (e == 0.0 ? 0.0 : INFINITY);
                acc += q * q;
            }
            c->rowerr[r] = acc;
            break;
        }
        }
    }
    return 0;
}

static int run_k(const ode *o, kctx *c)
{
    c->o = o;
    return dfm__parallel_for(&o->s->b, o->s->b.nthreads, o->rows, kernel, c);
}

static int call_model(const ode *o, double tm)
{
    dfm_sampler *s = o->s;
    for (size_t r = 0; r < o->rows; r++) o->tbuf[r] = tm;
    dfm_model_io io;
    memset(&io, 0, sizeof io);
    io.struct_size = sizeof io;
    io.rows = o->rows;
    io.row_offset = o->row_offset;
    io.t = o->tbuf;
    io.reals = o->xin;
    io.n_reals = o->d;
    io.out = o->yout;
    io.out_stride = o->d;
    io.branch = DFM_BRANCH_MAIN;
    io.step = o->step;
    s->stats[DFM_STAT_MODEL_CALLS]++;
    dfm__out_prefill(o->yout, o->rows * o->d, 1);
    int r = o->model(&io, o->model_data);
    if (r) return dfm__fail_callback(&s->b, r, "model");
    return 0;
}

/* DFM_ENUMERIC when the model left its first non-finite entry of buf unwritten, else 0. */
static int unwritten(const ode *o, const float *buf)
{
    size_t n = o->rows * o->d, i = 0;
    while (i < n && isfinite(buf[i])) i++;
    if (i == n) return 0;
    return dfm__fail_unwritten(&o->s->b, "model", buf, o->rows, o->d, 1, i / o->d, i % o->d,
                               i % o->d + 1, i / o->d);
}

static int report_nonfinite(const ode *o, const float *buf, double t)
{
    size_t n = o->rows * o->d, i = 0;
    while (i < n && isfinite(buf[i])) i++;
    if (unwritten(o, buf)) return DFM_ENUMERIC;
    return dfm__fail(&o->s->b, DFM_ENUMERIC,
                     "the model returned a non-finite value at t = %g: out[row %zu][coord %zu]", t,
                     i / o->d, i % o->d);
}

/* f = right-hand side at sampling time t for states y (rows x w). */
static int rhs(ode *o, double t, const double *y, double *f)
{
    dfm_sampler *s = o->s;
    dfm__acoef co;
    int st = dfm__cgen_coef(&s->b, o->g, t, 0.0, &co);
    if (st) return st;
    kctx c;
    memset(&c, 0, sizeof c);
    c.y = y;
    c.f = f;
    c.inv_s = 1.0 / co.scale;
    c.mode = K_TOFLOAT;
    run_k(o, &c);
    if ((st = call_model(o, co.t_model))) return st;
    c.mode = K_VEL;
    c.A = co.A;
    c.B = co.B;
    if (run_k(o, &c)) return report_nonfinite(o, o->yout, t);
    if (!o->loglik) return 0;
    size_t d = o->d, w = o->w;
    if (o->div) {
        /* div v = A d + (B / s) div y (chain rule through x / s). */
        dfm_model_io io;
        memset(&io, 0, sizeof io);
        io.struct_size = sizeof io;
        io.rows = o->rows;
        io.row_offset = o->row_offset;
        io.t = o->tbuf;
        io.reals = o->xin;
        io.n_reals = d;
        io.out_stride = d;
        io.step = o->step;
        int r = o->div(&io, o->divbuf, o->div_data);
        if (r) return dfm__fail_callback(&s->b, r, "divergence");
        for (size_t i = 0; i < o->rows; i++) {
            if (!isfinite(o->divbuf[i]))
                return dfm__fail(&s->b, DFM_ENUMERIC,
                                 "the divergence callback returned a non-finite value at t = %g "
                                 "(row %zu)", t, i);
            f[i * w + d] = co.A * (double)d + co.B * c.inv_s * o->divbuf[i];
        }
        return 0;
    }
    /* Hutchinson with central differences; the model sees (x +- eps z) / s. */
    float *keep = o->yout;
    for (size_t k = 0; k < o->K; k++) {
        kctx h;
        memset(&h, 0, sizeof h);
        h.y = y;
        h.inv_s = c.inv_s;
        h.k = k;
        h.mode = K_TOFLOAT;
        h.eps = o->eps;
        run_k(o, &h);
        if ((st = call_model(o, co.t_model))) return st;
        h.eps = -o->eps;
        ((ode *)o)->yout = o->yout2;
        run_k(o, &h);
        st = call_model(o, co.t_model);
        o->yout = keep;
        if (st) return st;
        h.mode = K_HUTCH;
        h.eps = o->eps;
        h.f = f;
        h.A = co.A;
        h.B = co.B;
        if (run_k(o, &h)) {
            if (unwritten(o, o->yout) || unwritten(o, o->yout2)) return DFM_ENUMERIC;
            return dfm__fail(&s->b, DFM_ENUMERIC, "the model returned a non-finite value at "
                             "t = %g during a Hutchinson probe", t);
        }
    }
    return 0;
}

/* ---- a run: shared setup ---- */
typedef struct work {
    double *y, *ytmp, *k[7], *ynew, *rowerr;
    float *saved;
    void *blk;
} work;

static int work_alloc(dfm_sampler *s, ode *o, work *wk, int stages, int adaptive, size_t n_save,
                      int need_yout2)
{
    size_t rw, rd, bytes = 0, nsv;
    memset(wk, 0, sizeof *wk);
    if (dfm__mul(o->rows, o->w, &rw) || dfm__mul(o->rows, o->d, &rd) ||
        dfm__mul(n_save, rd, &nsv))
        return dfm__fail(&s->b, DFM_EOVERFLOW, "work size overflows");
    size_t nd = (size_t)(2 + stages + (adaptive ? 1 : 0));
    size_t parts[6];
    if (dfm__mul3(nd, rw, sizeof(double), &parts[0]) ||
        dfm__mul(o->rows, 2 * sizeof(double), &parts[1]) ||
        dfm__mul(rd, (size_t)(need_yout2 ? 3 : 2) * sizeof(float), &parts[2]) ||
        dfm__mul(nsv, sizeof(float), &parts[3]))
        return dfm__fail(&s->b, DFM_EOVERFLOW, "work size overflows");
    for (int i = 0; i < 4; i++) {
        if (parts[i] >= SIZE_MAX / 8 || bytes >= SIZE_MAX / 8)
            return dfm__fail(&s->b, DFM_EOVERFLOW, "work size overflows");
        bytes += parts[i] + 16;
    }
    char *p = (char *)dfm__alloc(&s->b.mem, bytes);
    if (!p) return dfm__fail_nomem(&s->b, "ODE work space", o->rows, DFM__HINT_ROWS);
    wk->blk = p;
    double *dp = (double *)p;
    wk->y = dp; dp += rw;
    wk->ytmp = dp; dp += rw;
    for (int i = 0; i < stages; i++) { wk->k[i] = dp; dp += rw; }
    if (adaptive) { wk->ynew = dp; dp += rw; }
    wk->rowerr = dp; dp += o->rows;
    o->tbuf = dp; dp += o->rows;
    float *fp = (float *)dp;
    o->xin = fp; fp += rd;
    o->yout = fp; fp += rd;
    if (need_yout2) { o->yout2 = fp; fp += rd; }
    wk->saved = fp;
    return 0;
}

static void save_state(const ode *o, const work *wk, size_t k)
{
    float *dst = wk->saved + k * o->rows * o->d;
    for (size_t r = 0; r < o->rows; r++)
        for (size_t j = 0; j < o->d; j++) dst[r * o->d + j] = (float)wk->y[r * o->w + j];
}

/* Time points of a fixed-step run: the sampler grid with the save times inserted (a save time
 * within 1e-12 of a grid time is that grid time). save_at[i] = save index + 1, or 0. */
static int build_points(dfm_sampler *s, const double *save, size_t n_save, double **pts,
                        size_t **save_at, size_t *npts)
{
    size_t ng = dfm__sampler_nsteps(s) + 1, n = ng + n_save, bytes;
    if (dfm__mul(n, sizeof(double) + sizeof(size_t), &bytes))
        return dfm__fail(&s->b, DFM_EOVERFLOW, "grid too long");
    char *blk = (char *)dfm__alloc(&s->b.mem, bytes);
    if (!blk) return dfm__fail(&s->b, DFM_ENOMEM, "cannot allocate the time points");
    double *t = (double *)blk;
    size_t *sa = (size_t *)(blk + n * sizeof(double));
    double dir = dfm__sampler_time(s, ng - 1) > dfm__sampler_time(s, 0) ? 1.0 : -1.0;
    size_t i = 0, k = 0, m = 0;
    while (i < ng || k < n_save) {
        double tg = i < ng ? dfm__sampler_time(s, i) : 0.0;
        if (k < n_save && i < ng && fabs(save[k] - tg) <= 1e-12) {
            t[m] = tg; sa[m++] = k + 1; i++; k++;
        } else if (k < n_save && (i >= ng || dir * (save[k] - tg) < 0.0)) {
            t[m] = save[k]; sa[m++] = k + 1; k++;
        } else {
            t[m] = tg; sa[m++] = 0; i++;
        }
    }
    *pts = t;
    *save_at = sa;
    *npts = m;
    return 0;
}

/* Fixed-step explicit Runge-Kutta over the points. */
static int fixed_rk(ode *o, work *wk, const tableau *tb, const double *pts, const size_t *save_at,
                    size_t npts, dfm_progress_fn progress, void *pdata)
{
    dfm_sampler *s = o->s;
    int st = 0;
    if (save_at && save_at[0]) save_state(o, wk, save_at[0] - 1);
    for (size_t i = 0; i + 1 < npts; i++) {
        double t = pts[i], h = pts[i + 1] - t;
        o->step = (int)i;
        for (int sg = 0; sg < tb->stages; sg++) {
            const double *yin = wk->y;
            if (sg > 0) {
                kctx c;
                memset(&c, 0, sizeof c);
                c.mode = K_COMBINE;
                c.dst = wk->ytmp;
                c.y = wk->y;
                c.ks = (const double *const *)wk->k;
                c.wts = tb->a[sg];
                c.n = sg;
                c.h = h;
                run_k(o, &c);
                yin = wk->ytmp;
            }
            double ts = sg == 0 ? t : (tb->c[sg] == 1.0 ? pts[i + 1] : t + tb->c[sg] * h);
            if ((st = rhs(o, ts, yin, wk->k[sg]))) return st;
        }
        kctx c;
        memset(&c, 0, sizeof c);
        c.mode = K_COMBINE;
        c.dst = wk->y;
        c.y = wk->y;
        c.ks = (const double *const *)wk->k;
        c.wts = tb->b;
        c.n = tb->stages;
        c.h = h;
        run_k(o, &c);
        s->stats[DFM_STAT_STEPS]++;
        if (save_at && save_at[i + 1]) save_state(o, wk, save_at[i + 1] - 1);
        if ((st = dfm__step_done(s, progress, pdata, (int)i, (int)(npts - 1), pts[i + 1])))
            return st;
    }
    return 0;
}

static double err_norm(ode *o, work *wk, double h, const csamp *cs)
{
    kctx c;
    memset(&c, 0, sizeof c);
    c.mode = K_ERR;
    c.y = wk->y;
    c.ynew = wk->ynew;
    c.ks = (const double *const *)wk->k;
    c.wts = TAB_DOPRI5.e;
    c.n = 7;
    c.h = h;
    c.rowerr = wk->rowerr;
    c.atol = cs->atol;
    c.rtol = cs->rtol;
    run_k(o, &c);
    double acc = 0.0;
    for (size_t r = 0; r < o->rows; r++) acc += wk->rowerr[r];
    return sqrt(acc / (double)(o->rows * o->w));
}

static double rms(const double *v, size_t n)
{
    double a = 0.0;
    for (size_t i = 0; i < n; i++) a += v[i] * v[i];
    return n ? sqrt(a / (double)n) : 0.0;
}

/* Hairer's starting step (Solving ODEs I, II.4), from y and k[0] = f(t0, y); uses k[1]. */
static int dopri5_first_step(ode *o, work *wk, const csamp *cs, double t0, double dir,
                             double span, double *h_out)
{
    size_t n = o->rows * o->w;
    int st;
    double d0 = 0.0, d1 = 0.0;
    for (size_t i = 0; i < n; i++) {
        double sc = cs->atol + cs->rtol * fabs(wk->y[i]);
        if (sc <= 0.0) sc = 1e-300;
        d0 += (wk->y[i] / sc) * (wk->y[i] / sc);
        d1 += (wk->k[0][i] / sc) * (wk->k[0][i] / sc);
    }
    d0 = sqrt(d0 / (double)n); d1 = sqrt(d1 / (double)n);
    double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
    if (!(h0 > 0.0)) h0 = 1e-6; /* Inf / Inf with extreme states and tolerances */
    if (h0 > span) h0 = span;
    for (size_t i = 0; i < n; i++) wk->ytmp[i] = wk->y[i] + dir * h0 * wk->k[0][i];
    if ((st = rhs(o, t0 + dir * h0, wk->ytmp, wk->k[1]))) return st;
    double d2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        double sc = cs->atol + cs->rtol * fabs(wk->y[i]);
        if (sc <= 0.0) sc = 1e-300;
        double q = (wk->k[1][i] - wk->k[0][i]) / sc;
        d2 += q * q;
    }
    d2 = sqrt(d2 / (double)n) / h0;
    double mx = fmax(d1, d2);
    double h1 = mx <= 1e-15 ? fmax(1e-6, h0 * 1e-3) : pow(0.01 / mx, 0.2);
    *h_out = fmin(100.0 * h0, h1);
    return 0;
}

/* DFM_ELIMIT when the step h at t has underflowed (and is not the last one to a stop) or the
 * attempts exceed DFM_OPT_MAX_STEPS. */
static int dopri5_step_limits(dfm_sampler *s, const csamp *cs, double t, double h, double span,
                              int hit, int64_t *attempts)
{
    double tiny = 16.0 * DBL_EPSILON * fmax(fabs(t), span);
    if (h < tiny && !hit)
        return dfm__fail(&s->b, DFM_ELIMIT,
                         "DOPRI5 step size underflow at t = %g (h = %g): the tolerances "
                         "cannot be met", t, h);
    if (++*attempts > cs->max_steps)
        return dfm__fail(&s->b, DFM_ELIMIT,
                         "DOPRI5 exceeded %lld attempted steps at t = %g",
                         (long long)cs->max_steps, t);
    return 0;
}

/* Stages 2-7 of a step hs from t (stage 1 is k[0], FSAL); the 5th-order solution in ynew. A step
 * that hits a stop ends exactly at t_end. */
static int dopri5_stages(ode *o, work *wk, double t, double hs, int hit, double t_end)
{
    const tableau *tb = &TAB_DOPRI5;
    int st;
    for (int sg = 1; sg < 7; sg++) {
        kctx c;
        memset(&c, 0, sizeof c);
        c.mode = K_COMBINE;
        c.dst = sg == 6 ? wk->ynew : wk->ytmp;
        c.y = wk->y;
        c.ks = (const double *const *)wk->k;
        c.wts = tb->a[sg];
        c.n = sg;
        c.h = hs;
        run_k(o, &c);
        double ts = tb->c[sg] == 1.0 ? (hit ? t_end : t + hs) : t + tb->c[sg] * hs;
        if ((st = rhs(o, ts, c.dst, wk->k[sg]))) return st;
    }
    return 0;
}

/* Step-size factor after an accepted or a rejected step with error norm err. */
static double dopri5_factor(double err, int accepted)
{
    if (accepted) return err == 0.0 ? 5.0 : fmin(5.0, fmax(0.2, 0.9 * pow(err, -0.2)));
    return isfinite(err) ? fmax(0.2, 0.9 * pow(err, -0.2)) : 0.2;
}

/* Adaptive Dormand-Prince 5(4) from t0 to t1, stopping exactly at the stops (save times, then
 * t1). FSAL: k[6] of an accepted step is k[0] of the next. */
static int dopri5(ode *o, work *wk, const csamp *cs, double t0, double t1, const double *save,
                  size_t n_save, dfm_progress_fn progress, void *pdata)
{
    dfm_sampler *s = o->s;
    double dir = t1 > t0 ? 1.0 : -1.0, span = fabs(t1 - t0);
    int st;
    size_t ks = 0;
    while (ks < n_save && dir * (save[ks] - t0) <= 1e-12) save_state(o, wk, ks++);
    o->step = 0;
    if ((st = rhs(o, t0, wk->y, wk->k[0]))) return st;
    double t = t0, h = cs->h_init;
    if (!(h > 0.0) && (st = dopri5_first_step(o, wk, cs, t0, dir, span, &h))) return st;
    (void)rms;
    int64_t attempts = 0;
    int naccept = 0;
    while (dir * (t1 - t) > 0.0) {
        double stop_t = ks < n_save ? save[ks] : t1;
        int hit = 0;
        if (h >= fabs(stop_t - t)) { h = fabs(stop_t - t); hit = 1; }
        if ((st = dopri5_step_limits(s, cs, t, h, span, hit, &attempts))) return st;
        double hs = dir * h;
        o->step = naccept;
        if ((st = dopri5_stages(o, wk, t, hs, hit, stop_t))) return st;
        double err = err_norm(o, wk, hs, cs);
        if (!isfinite(err)) err = INFINITY;
        if (err > 1.0) {
            s->stats[DFM_STAT_REJECTED]++;
            h = h * dopri5_factor(err, 0);
            continue;
        }
        t = hit ? stop_t : t + hs;
        double *tmp = wk->y; wk->y = wk->ynew; wk->ynew = tmp;
        tmp = wk->k[0]; wk->k[0] = wk->k[6]; wk->k[6] = tmp;
        s->stats[DFM_STAT_STEPS]++;
        naccept++;
        if (hit && ks < n_save) save_state(o, wk, ks++);
        if (hit && ks >= n_save && stop_t == t1) t = t1;
        h = h * dopri5_factor(err, 1);
        if ((st = dfm__step_done(s, progress, pdata, naccept - 1, 0, t))) return st;
    }
    return 0;
}

/* ---- Euler-Maruyama ---- */
typedef struct em_ctx {
    const ode *o;
    double *y;
    float *noise;
    double A, B, h, gsq; /* gsq = g sqrt(|h|) */
    uint64_t seed;
    uint32_t step;
} em_ctx;

DFM_CLONES_V4
static int em_row(size_t d, double *restrict y, const float *restrict m,
                  const float *restrict z, double A, double B, double h, double gsq)
{
    size_t j = 0;
    for (; j + DFM__VB <= d; j += DFM__VB)
        for (int k = 0; k < DFM__VB; k++)
            y[j + k] += h * (A * y[j + k] + B * (double)m[j + k]) + gsq * (double)z[j + k];
    for (; j < d; j++) y[j] += h * (A * y[j] + B * (double)m[j]) + gsq * (double)z[j];
    return 0;
}

static int em_range(void *vc, size_t begin, size_t end, int tid)
{
    const em_ctx *c = (const em_ctx *)vc;
    const ode *o = c->o;
    size_t d = o->d;
    (void)tid;
    /* Check the whole range first so a failing step leaves y untouched. */
    for (size_t r = begin; r < end; r++)
        if (!dfm__all_finite_f(o->yout + r * d, d)) return DFM_ENUMERIC;
    for (size_t r = begin; r < end; r++) {
        float *z = c->noise + r * d;
        if (c->gsq != 0.0)
            dfm__normal_row(c->seed, DFM_STREAM_SDE_NOISE, o->row_offset + r, c->step, d, z);
        else
            memset(z, 0, d * sizeof(float));
        em_row(d, c->y + r * d, o->yout + r * d, z, c->A, c->B, c->h, c->gsq);
    }
    return 0;
}

static int run_em(ode *o, work *wk, float *noise, const double *pts, const size_t *save_at,
                  size_t npts, dfm_progress_fn progress, void *pdata)
{
    dfm_sampler *s = o->s;
    int st;
    if (save_at[0]) save_state(o, wk, save_at[0] - 1);
    for (size_t i = 0; i + 1 < npts; i++) {
        double t = pts[i], h = pts[i + 1] - t, g;
        o->step = (int)i;
        if ((st = dfm__cgen_g(&s->b, o->g, t, &g))) return st;
        /* Forward in time the drift is v + g^2/2 score; backward (h < 0) v - g^2/2 score. */
        double gg = (h > 0.0 ? 0.5 : -0.5) * g * g;
        dfm__acoef co;
        if ((st = dfm__cgen_coef(&s->b, o->g, t, gg, &co))) return st;
        kctx c;
        memset(&c, 0, sizeof c);
        c.mode = K_TOFLOAT;
        c.y = wk->y;
        c.inv_s = 1.0 / co.scale;
        run_k(o, &c);
        if ((st = call_model(o, co.t_model))) return st;
        em_ctx e = {o, wk->y, noise, co.A, co.B, h, g * sqrt(fabs(h)), s->b.seed, (uint32_t)i};
        /* Validate the whole batch before any row moves. */
        if (!dfm__all_finite_f(o->yout, o->rows * o->d)) return report_nonfinite(o, o->yout, t);
        dfm__parallel_for(&s->b, s->b.nthreads, o->rows, em_range, &e);
        s->stats[DFM_STAT_STEPS]++;
        if (save_at[i + 1]) save_state(o, wk, save_at[i + 1] - 1);
        if ((st = dfm__step_done(s, progress, pdata, (int)i, (int)(npts - 1), pts[i + 1])))
            return st;
    }
    return 0;
}

/* ---- run ---- */

static const tableau *tableau_of(int method)
{
    switch (method) {
    case DFM_METHOD_EULER: return &TAB_EULER;
    case DFM_METHOD_MIDPOINT: return &TAB_MID;
    case DFM_METHOD_RK4: return &TAB_RK4;
    case DFM_METHOD_DOPRI5: return &TAB_DOPRI5;
    default: return &TAB_EULER; /* Euler-Maruyama: one stage */
    }
}

static int cont_run(dfm_sampler *s, const dfm_run_args *a)
{
    const dfm_generator *g = s->gen;
    const csamp *cs = (const csamp *)s->impl;
    size_t d = g->out_stride;
    if (a->tokens || a->fixed || a->saved_tokens)
        return dfm__fail(&s->b, DFM_EINVAL, "a continuous sampler has no tokens: token members "
                                            "must be NULL");
    int st = dfm__check_run_common(s, a, 0, d);
    if (st) return st;
    if (a->rows == 0) return 0;
    if ((uint64_t)a->rows > ((uint64_t)1 << 56) ||
        a->row_offset > ((uint64_t)1 << 56) - a->rows)
        return dfm__fail(&s->b, DFM_ERANGE, "row_offset + rows must be < 2^56");
    size_t nsteps = dfm__sampler_nsteps(s);
    double t0 = dfm__sampler_time(s, 0), t1 = dfm__sampler_time(s, nsteps);
    if (a->draw_source && t1 < t0)
        return dfm__fail(&s->b, DFM_EINVAL, "draw_source needs an increasing grid (the source "
                                            "is at t = 0)");
    if (!a->draw_source && !dfm__all_finite_f(a->reals, a->rows * d))
        return dfm__fail(&s->b, DFM_ENUMERIC, "args->reals has a NaN or Inf");
    ode o;
    ode_init(&o, s, g, a->model, a->model_data, a->rows, a->row_offset, d);
    o.w = d;
    const tableau *tb = tableau_of(s->method);
    int em = s->method == DFM_METHOD_EULER_MARUYAMA;
    work wk;
    if ((st = work_alloc(s, &o, &wk, tb->stages, s->method == DFM_METHOD_DOPRI5, a->n_save, 0)))
        return st;
    if (a->draw_source) {
        for (size_t r = 0; r < a->rows; r++) {
            float *x = o.xin + r * d;
            dfm__normal_row(s->b.seed, DFM_STREAM_SOURCE, a->row_offset + r, 0, d, x);
            for (size_t j = 0; j < d; j++) wk.y[r * d + j] = x[j];
        }
    } else {
        for (size_t i = 0; i < a->rows * d; i++) wk.y[i] = a->reals[i];
    }
    if (s->method == DFM_METHOD_DOPRI5) {
        st = dopri5(&o, &wk, cs, t0, t1, a->save_times, a->n_save, a->progress, a->progress_data);
    } else {
        double *pts = NULL;
        size_t *save_at = NULL, npts = 0;
        st = build_points(s, a->save_times, a->n_save, &pts, &save_at, &npts);
        if (!st) {
            if (em) /* the first stage buffer holds the noise (rows x d floats fit in it) */
                st = run_em(&o, &wk, (float *)wk.k[0], pts, save_at, npts, a->progress,
                            a->progress_data);
            else
                st = fixed_rk(&o, &wk, tb, pts, save_at, npts, a->progress, a->progress_data);
            dfm__free(&s->b.mem, pts);
        }
    }
    if (!st) {
        for (size_t i = 0; i < a->rows * d; i++) {
            if (!isfinite((float)wk.y[i])) {
                st = dfm__fail(&s->b, DFM_ENUMERIC, "the state overflowed: reals[row %zu][coord %zu]",
                               i / d, i % d);
                break;
            }
        }
    }
    if (!st) {
        for (size_t i = 0; i < a->rows * d; i++) a->reals[i] = (float)wk.y[i];
        if (a->n_save) memcpy(a->saved_reals, wk.saved, a->n_save * a->rows * d * sizeof(float));
    }
    dfm__free(&s->b.mem, wk.blk);
    return st;
}

/* ---- options ---- */

static void cs_destroy(dfm_sampler *s)
{
    dfm__free(&s->b.mem, s->impl);
    s->impl = NULL;
}

static int cs_set_int(dfm_sampler *s, int opt, int64_t v)
{
    csamp *c = (csamp *)s->impl;
    if (opt != DFM_OPT_MAX_STEPS || s->method != DFM_METHOD_DOPRI5) return DFM_EUNSUPPORTED;
    if (v < 1)
        return dfm__fail(&s->b, DFM_EINVAL, "max_steps must be >= 1, got %lld", (long long)v);
    c->max_steps = v;
    return 0;
}

static int cs_get_int(const dfm_sampler *s, int opt, int64_t *v)
{
    if (opt != DFM_OPT_MAX_STEPS || s->method != DFM_METHOD_DOPRI5) return DFM_EUNSUPPORTED;
    *v = ((const csamp *)s->impl)->max_steps;
    return 0;
}

static int cs_set_double(dfm_sampler *s, int opt, double v)
{
    csamp *c = (csamp *)s->impl;
    if (s->method != DFM_METHOD_DOPRI5) return DFM_EUNSUPPORTED;
    const char *name = opt == DFM_OPT_ATOL ? "atol" : opt == DFM_OPT_RTOL ? "rtol" : "h_init";
    if (opt != DFM_OPT_ATOL && opt != DFM_OPT_RTOL && opt != DFM_OPT_H_INIT)
        return DFM_EUNSUPPORTED;
    if (!isfinite(v) || v < 0.0)
        return dfm__fail(&s->b, DFM_EINVAL, "%s must be finite and >= 0, got %g", name, v);
    if (opt == DFM_OPT_ATOL) {
        if (v == 0.0 && c->rtol == 0.0)
            return dfm__fail(&s->b, DFM_EINVAL, "atol and rtol cannot both be 0");
        c->atol = v;
    } else if (opt == DFM_OPT_RTOL) {
        if (v == 0.0 && c->atol == 0.0)
            return dfm__fail(&s->b, DFM_EINVAL, "atol and rtol cannot both be 0");
        c->rtol = v;
    } else {
        c->h_init = v;
    }
    return 0;
}

static int cs_get_double(const dfm_sampler *s, int opt, double *v)
{
    const csamp *c = (const csamp *)s->impl;
    if (s->method != DFM_METHOD_DOPRI5) return DFM_EUNSUPPORTED;
    switch (opt) {
    case DFM_OPT_ATOL: *v = c->atol; return 0;
    case DFM_OPT_RTOL: *v = c->rtol; return 0;
    case DFM_OPT_H_INIT: *v = c->h_init; return 0;
    default: return DFM_EUNSUPPORTED;
    }
}

static const dfm__sampler_ops cont_ops = {cs_destroy, cont_run, cs_set_int, cs_get_int,
                                          cs_set_double, cs_get_double};

int dfm__cont_sampler_init(dfm_sampler *s, int method)
{
    int kind = s->gen->kind;
    int ok = kind == DFM_GEN_VELOCITY
                 ? (method == DFM_METHOD_EULER || method == DFM_METHOD_MIDPOINT ||
                    method == DFM_METHOD_RK4 || method == DFM_METHOD_DOPRI5)
                 : method == DFM_METHOD_EULER_MARUYAMA;
    if (!ok) return DFM_EUNSUPPORTED;
    csamp *c = (csamp *)dfm__calloc(&s->b.mem, 1, sizeof *c);
    if (!c) return DFM_ENOMEM;
    c->atol = 1e-6;
    c->rtol = 1e-6;
    c->max_steps = 100000;
    s->impl = c;
    s->ops = &cont_ops;
    return 0;
}

/* ---- log-likelihood ---- */

/* One log-likelihood run: the integration of [x; L] (L: the divergence integrals) and buffers. */
typedef struct loglik {
    ode o;
    work wk;
    const tableau *tb;
    double *lp0;    /* rows: log p0(x0) */
    float *probes;  /* rows x K x d Rademacher probes (Hutchinson), or NULL */
} loglik;

/* Arguments (rows = 0 is valid: nothing to do); *n = rows x D. */
static int loglik_check_args(dfm_sampler *s, const dfm_loglik_args *a, size_t *n)
{
    if (s->ops != &cont_ops || s->gen->kind != DFM_GEN_VELOCITY)
        return dfm__fail(&s->b, DFM_EUNSUPPORTED, "the log-likelihood needs an ODE sampler of a "
                                                  "velocity generator");
    if (!a) return dfm__fail(&s->b, DFM_EINVAL, "args is NULL");
    if (a->struct_size < sizeof(dfm_loglik_args))
        return dfm__fail(&s->b, DFM_EINVAL, "args->struct_size is too small");
    if (!a->model) return dfm__fail(&s->b, DFM_EINVAL, "args->model is NULL");
    if (a->rows == 0) return 0;
    if (!a->x1 || !a->logp)
        return dfm__fail(&s->b, DFM_EINVAL, "args->x1 and args->logp are required");
    if (!a->divergence && a->n_probes == 0)
        return dfm__fail(&s->b, DFM_EINVAL, "n_probes must be >= 1 for the Hutchinson estimator");
    if (!a->divergence && a->n_probes > 4096)
        return dfm__fail(&s->b, DFM_ELIMIT, "n_probes must be <= 4096");
    if (!isfinite(a->fd_eps) || a->fd_eps < 0.0)
        return dfm__fail(&s->b, DFM_EINVAL, "fd_eps must be finite and >= 0, got %g", a->fd_eps);
    if ((uint64_t)a->rows > ((uint64_t)1 << 56) ||
        a->row_offset > ((uint64_t)1 << 56) - a->rows)
        return dfm__fail(&s->b, DFM_ERANGE, "row_offset + rows must be < 2^56");
    size_t d = s->gen->out_stride;
    if (d > SIZE_MAX / 64 - 4096 ||
        dfm__rows_fit(&s->b, a->rows, (d + 4096) * 4 * sizeof(double), "the states and probes"))
        return DFM_EOVERFLOW;
    *n = a->rows * d;
    if (dfm__overlap(a->logp, a->rows * sizeof(double), a->x1, *n * sizeof(float)))
        return dfm__fail(&s->b, DFM_EINVAL, "args->logp overlaps args->x1: an output may not "
                         "share memory with another argument");
    if (!dfm__all_finite_f(a->x1, *n))
        return dfm__fail(&s->b, DFM_ENUMERIC, "args->x1 has a NaN or Inf");
    return 0;
}

/* The integration context (state width D + K) and its work space, log p0 and the probes. */
static int loglik_alloc(dfm_sampler *s, const dfm_loglik_args *a, size_t n, loglik *L)
{
    ode *o = &L->o;
    size_t d = s->gen->out_stride;
    ode_init(o, s, s->gen, a->model, a->model_data, a->rows, a->row_offset, d);
    o->loglik = 1;
    o->div = a->divergence;
    o->div_data = a->divergence_data;
    o->K = a->divergence ? 1 : a->n_probes;
    o->eps = a->fd_eps > 0.0 ? a->fd_eps : 1e-3;
    o->w = d + o->K;
    L->tb = tableau_of(s->method);
    int st = work_alloc(s, o, &L->wk, L->tb->stages, s->method == DFM_METHOD_DOPRI5, 0, 1);
    if (st) return st;
    size_t pbytes = 0, rowsb;
    if (dfm__mul(a->rows, sizeof(double), &rowsb)) st = DFM_EOVERFLOW;
    if (!st && !a->divergence && dfm__mul3(n, o->K, sizeof(float), &pbytes)) st = DFM_EOVERFLOW;
    if (st) return dfm__fail(&s->b, st, "work size overflows");
    L->lp0 = (double *)dfm__alloc(&s->b.mem, rowsb);
    o->divbuf = (double *)dfm__alloc(&s->b.mem, rowsb);
    if (pbytes) L->probes = (float *)dfm__alloc(&s->b.mem, pbytes);
    if (!L->lp0 || !o->divbuf || (pbytes && !L->probes))
        return dfm__fail_nomem(&s->b, "log-likelihood work space", a->rows, DFM__HINT_ROWS);
    return 0;
}

static void loglik_free(dfm_sampler *s, loglik *L)
{
    dfm__free(&s->b.mem, L->probes);
    dfm__free(&s->b.mem, L->o.divbuf);
    dfm__free(&s->b.mem, L->lp0);
    dfm__free(&s->b.mem, L->wk.blk);
}

/* Rademacher probes, fixed along the trajectory: (seed, row, coord, probe); y = [x1; 0]. */
static void loglik_start(dfm_sampler *s, const dfm_loglik_args *a, loglik *L)
{
    ode *o = &L->o;
    size_t d = o->d;
    if (L->probes) {
        for (size_t r = 0; r < a->rows; r++)
            for (size_t k = 0; k < o->K; k++)
                for (size_t j = 0; j < d; j++)
                    L->probes[(r * o->K + k) * d + j] =
                        dfm__uniform(s->b.seed, DFM_STREAM_HUTCHINSON, a->row_offset + r,
                                     (uint32_t)j, (uint32_t)k) < 0.5 ? -1.0f : 1.0f;
        o->probes = L->probes;
    }
    for (size_t r = 0; r < a->rows; r++) {
        for (size_t j = 0; j < d; j++) L->wk.y[r * o->w + j] = a->x1[r * d + j];
        for (size_t k = 0; k < o->K; k++) L->wk.y[r * o->w + d + k] = 0.0;
    }
}

/* Integrate from the grid's high end to its low end (DOPRI5, or the grid reversed). */
static int loglik_integrate(dfm_sampler *s, const dfm_loglik_args *a, loglik *L)
{
    const csamp *cs = (const csamp *)s->impl;
    size_t nsteps = dfm__sampler_nsteps(s);
    double ta = dfm__sampler_time(s, 0), tz = dfm__sampler_time(s, nsteps);
    int rev = tz > ta;
    if (s->method == DFM_METHOD_DOPRI5)
        return dopri5(&L->o, &L->wk, cs, rev ? tz : ta, rev ? ta : tz, NULL, 0, a->progress,
                      a->progress_data);
    int st = 0;
    size_t bytes;
    double *pts = NULL;
    if (dfm__mul(nsteps + 1, sizeof(double), &bytes)) st = DFM_EOVERFLOW;
    else pts = (double *)dfm__alloc(&s->b.mem, bytes);
    if (!pts) return dfm__fail(&s->b, st ? st : DFM_ENOMEM, "cannot allocate the grid");
    for (size_t i = 0; i <= nsteps; i++) pts[i] = dfm__sampler_time(s, rev ? nsteps - i : i);
    st = fixed_rk(&L->o, &L->wk, L->tb, pts, NULL, nsteps + 1, a->progress, a->progress_data);
    dfm__free(&s->b.mem, pts);
    return st;
}

/* log p0 at x0 (in float in o.xin): the host's log_p0, else the standard normal. */
static int loglik_log_p0(dfm_sampler *s, const dfm_loglik_args *a, size_t n, loglik *L)
{
    const ode *o = &L->o;
    const double *y = L->wk.y;
    size_t d = o->d;
    for (size_t r = 0; r < a->rows; r++)
        for (size_t j = 0; j < d; j++) o->xin[r * d + j] = (float)y[r * o->w + j];
    if (!dfm__all_finite_f(o->xin, n))
        return dfm__fail(&s->b, DFM_ENUMERIC, "the backward trajectory overflowed");
    if (a->log_p0) {
        int r = a->log_p0(o->xin, a->rows, d, L->lp0, a->log_p0_data);
        if (r) return dfm__fail_callback(&s->b, r, "log_p0");
        int st = dfm__callback_freed();
        if (st) return st;
    } else {
        const double c = -0.5 * (double)d * log(2.0 * 3.14159265358979323846);
        for (size_t r = 0; r < a->rows; r++) {
            double q = 0.0;
            for (size_t j = 0; j < d; j++) q += y[r * o->w + j] * y[r * o->w + j];
            L->lp0[r] = c - 0.5 * q;
        }
    }
    for (size_t r = 0; r < a->rows; r++)
        if (!isfinite(L->lp0[r]))
            return dfm__fail(&s->b, DFM_ENUMERIC, "log p0 is not finite at row %zu", r);
    return 0;
}

/* log p(x1) = log p0(x0) + mean of the K divergence integrals; their spread; x0. */
static void loglik_write(const dfm_loglik_args *a, size_t n, const loglik *L)
{
    const ode *o = &L->o;
    for (size_t r = 0; r < a->rows; r++) {
        const double *Lr = L->wk.y + r * o->w + o->d;
        double m = 0.0, v = 0.0;
        for (size_t k = 0; k < o->K; k++) m += Lr[k];
        m /= (double)o->K;
        for (size_t k = 0; k < o->K; k++) v += (Lr[k] - m) * (Lr[k] - m);
        /* L = int_1^0 div dt = -int_0^1 div dt */
        a->logp[r] = L->lp0[r] + m;
        if (a->logp_var)
            a->logp_var[r] = a->divergence ? 0.0
                             : (o->K > 1 ? v / (double)(o->K - 1) / (double)o->K : NAN);
    }
    if (a->x0_out) memcpy(a->x0_out, o->xin, n * sizeof(float));
}

static int log_likelihood(dfm_sampler *s, const dfm_loglik_args *a)
{
    size_t n = 0;
    int st = loglik_check_args(s, a, &n);
    if (st || a->rows == 0) return st;
    loglik L;
    memset(&L, 0, sizeof L);
    st = loglik_alloc(s, a, n, &L);
    if (!st) {
        loglik_start(s, a, &L);
        st = loglik_integrate(s, a, &L);
    }
    if (!st) st = loglik_log_p0(s, a, n, &L);
    if (!st) loglik_write(a, n, &L);
    loglik_free(s, &L);
    return st;
}

int dfm_sampler_log_likelihood(dfm_sampler *s, const dfm_loglik_args *a)
{
    if (!s) return dfm__null(__func__, "s");
    int st = dfm__sampler_enter(s, __func__);
    if (st == 0) st = log_likelihood(s, a);
    else if (st != DFM_ESTOPPED) return st; /* refused: the handle is running */
    return dfm__sampler_leave(s, st);
}
