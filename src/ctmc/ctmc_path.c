/* Finite paths (host conditional p_t(.|x1) with kinetic-optimal rates) and metric-induced paths
 * (Shaul et al. 2024, "Flow Matching with General Discrete Paths: A Kinetic-Optimal
 * Perspective"): creation, conditional sampling, conditional probabilities and rates.
 * Random stream 0xC0 (keyed by global row, coordinate, draw) is used by dfm_path_sample. */
#include "ctmc/ctmc_impl.h"
#include "core/rng_impl.h"

#include <math.h>

#define STREAM_PATH 0xC0u

static void ctpath_destroy(dfm_path *p)
{
    dfm__ctpath *m = (dfm__ctpath *)p->impl;
    if (!m) return;
    dfm__free(&p->b.mem, m->dist);
    dfm__free(&p->b.mem, m);
    p->impl = NULL;
}

static int ctpath_clone(dfm_path *dst, const dfm_path *src)
{
    const dfm__ctpath *s = dfm__ctpath_of(src);
    dfm__ctpath *m = (dfm__ctpath *)dfm__calloc(&dst->b.mem, 1, sizeof *m);
    if (!m) return DFM_ENOMEM;
    *m = *s;
    m->dist = NULL;
    if (s->dist) {
        size_t n = (size_t)s->V * (size_t)s->V;
        m->dist = (double *)dfm__calloc(&dst->b.mem, n, sizeof(double));
        if (!m->dist) { dfm__free(&dst->b.mem, m); return DFM_ENOMEM; }
        memcpy(m->dist, s->dist, n * sizeof(double));
    }
    dst->impl = m;
    return 0;
}

/* Inverse-CDF draw from n probabilities summing to ~1. */
static int32_t draw_probs(const double *p, size_t n, double u)
{
    double tot = 0.0;
    for (size_t i = 0; i < n; i++) tot += p[i];
    double target = u * tot, acc = 0.0;
    size_t last = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] <= 0.0) continue;
        acc += p[i];
        last = i;
        if (target < acc) return (int32_t)i;
    }
    return (int32_t)last;
}

int dfm__finite_cond(dfm_base *b, const dfm_path *p, double t, int32_t x1, double *pr, double *dp)
{
    const dfm__ctpath *m = dfm__ctpath_of(p);
    size_t S = m->S;
    memset(pr, 0, S * sizeof(double));
    memset(dp, 0, S * sizeof(double));
    int raw = m->fn(t, x1, pr, dp, S, m->user);
    if (raw) return dfm__fail_callback(b, raw, "conditional path");
    if ((raw = dfm__callback_freed())) return raw;
    double sum = 0.0;
    for (size_t x = 0; x < S; x++) {
        if (!isfinite(pr[x]) || pr[x] < 0.0 || !isfinite(dp[x]))
            return dfm__fail(b, DFM_ENUMERIC,
                             "conditional path at t = %g, x1 = %d: p[%zu] = %g, dp[%zu] = %g is "
                             "invalid", t, (int)x1, x, pr[x], x, dp[x]);
        sum += pr[x];
    }
    if (fabs(sum - 1.0) > 1e-6)
        return dfm__fail(b, DFM_ENUMERIC,
                         "conditional path at t = %g, x1 = %d: probabilities sum to %.17g", t,
                         (int)x1, sum);
    return 0;
}

int dfm__metric_beta(const dfm_path *p, dfm_base *eb, double t, double *beta,
                     double *dbeta)
{
    const dfm__ctpath *m = dfm__ctpath_of(p);
    dfm_sched_values v;
    int raw = 0;
    int st = dfm__sched_eval(&p->sched, t, &v, &raw);
    if (st == DFM_ECALLBACK) return dfm__fail_callback(eb, raw, "scheduler");
    if (st) return dfm__fail(eb, st, "scheduler failed at t = %g", t);
    double k = v.alpha, dk = v.d_alpha;
    if (!isfinite(k) || k < 0.0 || k > 1.0 || !(dk >= 0.0))
        return dfm__fail(eb, DFM_ENUMERIC, "kappa(%g) = %g, kappa' = %g is not a valid schedule",
                         t, k, dk);
    if (k >= 1.0) {
        *beta = INFINITY;
        *dbeta = INFINITY;
        return 0;
    }
    double om = 1.0 - k;
    *beta = m->c * k / om;
    *dbeta = m->c * dk / (om * om);
    return 0;
}

void dfm__metric_probs(const dfm__ctpath *m, double beta, int32_t x1, double *probs)
{
    size_t V = (size_t)m->V;
    const double *d = m->dist + (size_t)x1 * V;
    if (isinf(beta)) {
        memset(probs, 0, V * sizeof(double));
        probs[x1] = 1.0;
        return;
    }
    double z = 0.0;
    for (size_t x = 0; x < V; x++) z += probs[x] = exp(-beta * d[x]);
    double inv = 1.0 / z; /* z >= 1: d(x1, x1) = 0 */
    for (size_t x = 0; x < V; x++) probs[x] *= inv;
}

static int space_ok(const dfm_space *space, int32_t *V, size_t *d)
{
    dfm_space_part info;
    if (!space || dfm_space_n_parts(space) != 1 || dfm_space_part_info(space, 0, &info) ||
        info.kind != DFM_SPACE_DISCRETE)
        return DFM_EINVAL;
    *V = info.vocab;
    *d = info.dim;
    return 0;
}

/* ---- sampling x_t ~ p_t(. | x1) ---- */

static int check_sample_args(dfm_path *p, const dfm_path_sample_args *a, size_t d, int32_t V)
{
    if (a->rows == 0) return 0;
    if (!a->x1_tokens || !a->xt_tokens)
        return dfm__fail(&p->b, DFM_EINVAL, "x1_tokens and xt_tokens are required");
    if (a->x0_tokens)
        return dfm__fail(&p->b, DFM_EINVAL,
                         "x0_tokens must be NULL: this path draws x_t from p_t(.|x1) directly");
    if (a->x1_reals || a->x0_reals || a->xt_reals || a->target_reals || a->x0_reals_out)
        return dfm__fail(&p->b, DFM_EINVAL, "real-valued members must be NULL on a discrete path");
    size_t n;
    if (dfm__mul(a->rows, d, &n)) return dfm__fail(&p->b, DFM_EOVERFLOW, "rows x d overflows");
    for (size_t i = 0; i < n; i++)
        if (a->x1_tokens[i] < 0 || a->x1_tokens[i] >= V)
            return dfm__fail(&p->b, DFM_ERANGE, "x1_tokens[row %zu][coord %zu] = %d is outside "
                             "[0, %d)", i / d, i % d, (int)a->x1_tokens[i], (int)V);
    return 0;
}

static int finite_sample(dfm_path *p, const dfm_path_sample_args *a)
{
    const dfm__ctpath *m = dfm__ctpath_of(p);
    int st = check_sample_args(p, a, m->d, m->V);
    if (st || a->rows == 0) return st;
    size_t S = m->S, d = m->d;
    double *pr = (double *)dfm__calloc(&p->b.mem, 2 * S, sizeof(double));
    int32_t *out = (int32_t *)dfm__calloc(&p->b.mem, a->rows * d, sizeof(int32_t));
    if (!pr || !out) {
        st = dfm__fail_nomem(&p->b, "path scratch", a->rows, DFM__HINT_ROWS);
        goto done;
    }
    double last_t = NAN;
    int32_t last_x1 = -1;
    for (size_t r = 0; r < a->rows; r++) {
        int32_t x1 = dfm__ct_flat(a->x1_tokens + r * d, m->V, d);
        if (!(a->t[r] == last_t && x1 == last_x1)) {
            st = dfm__finite_cond(&p->b, p, a->t[r], x1, pr, pr + S);
            if (st) goto done;
            last_t = a->t[r];
            last_x1 = x1;
        }
        double u = dfm__uniform(p->b.seed, STREAM_PATH, a->row_offset + r, 0, a->draw);
        dfm__ct_unflat(draw_probs(pr, S, u), m->V, d, out + r * d);
    }
    memcpy(a->xt_tokens, out, a->rows * d * sizeof(int32_t));
done:
    dfm__free(&p->b.mem, pr);
    dfm__free(&p->b.mem, out);
    return st;
}

static int metric_sample(dfm_path *p, const dfm_path_sample_args *a)
{
    const dfm__ctpath *m = dfm__ctpath_of(p);
    int st = check_sample_args(p, a, m->d, m->V);
    if (st || a->rows == 0) return st;
    size_t V = (size_t)m->V, d = m->d;
    double *pr = (double *)dfm__calloc(&p->b.mem, V, sizeof(double));
    int32_t *out = (int32_t *)dfm__calloc(&p->b.mem, a->rows * d, sizeof(int32_t));
    if (!pr || !out) {
        st = dfm__fail_nomem(&p->b, "path scratch", a->rows, DFM__HINT_ROWS);
        goto done;
    }
    double last_t = NAN, beta = 0.0, dbeta = 0.0;
    for (size_t r = 0; r < a->rows; r++) {
        if (!(a->t[r] == last_t)) {
            if ((st = dfm__metric_beta(p, &p->b, a->t[r], &beta, &dbeta))) goto done;
            last_t = a->t[r];
        }
        for (size_t i = 0; i < d; i++) {
            int32_t x1 = a->x1_tokens[r * d + i];
            dfm__metric_probs(m, beta, x1, pr);
            double u = dfm__uniform(p->b.seed, STREAM_PATH, a->row_offset + r, (uint32_t)i,
                                    a->draw);
            out[r * d + i] = draw_probs(pr, V, u);
        }
    }
    memcpy(a->xt_tokens, out, a->rows * d * sizeof(int32_t));
done:
    dfm__free(&p->b.mem, pr);
    dfm__free(&p->b.mem, out);
    return st;
}

static const dfm__path_ops finite_ops = {ctpath_destroy, ctpath_clone, finite_sample, NULL};
static const dfm__path_ops metric_ops = {ctpath_destroy, ctpath_clone, metric_sample, NULL};

int dfm_path_create_finite(dfm_path **out, const dfm_space *space, dfm_cond_path_fn fn,
                           void *user_data, const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    int32_t V;
    size_t d;
    if (!fn) return dfm__null(__func__, "fn");
    if (space_ok(space, &V, &d))
        return dfm__error(DFM_EINVAL, "%s: the space must be a single discrete part", __func__);
    size_t S = dfm__ct_states(V, d);
    if (!S)
        return dfm__error(DFM_ELIMIT, "%s: V^d = %ld^%zu states exceed DFM_CTMC_MAX_STATES (%d)",
                          __func__, (long)V, d, DFM_CTMC_MAX_STATES);
    dfm_path *p;
    int st = dfm__path_new(&p, DFM_PATH_FINITE, &finite_ops, space, NULL, mem);
    if (st) return st;
    dfm__ctpath *m = (dfm__ctpath *)dfm__calloc(&p->b.mem, 1, sizeof *m);
    if (!m) {
        dfm_path_free(p);
        return dfm__error(DFM_ENOMEM, "%s: cannot allocate the path", __func__);
    }
    m->V = V; m->d = d; m->S = S; m->fn = fn; m->user = user_data;
    p->impl = m;
    *out = p;
    return 0;
}

int dfm_path_create_metric(dfm_path **out, const dfm_space *space, const dfm_scheduler *sched,
                           double c, const double *dist, dfm_distance_fn fn, void *user_data,
                           const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    int32_t V;
    size_t d;
    if (!sched) return dfm__null(__func__, "sched");
    if (space_ok(space, &V, &d))
        return dfm__error(DFM_EINVAL, "%s: the space must be a single discrete part", __func__);
    if (!isfinite(c) || !(c > 0.0))
        return dfm__error(DFM_EINVAL, "%s: c must be finite and > 0, got %g", __func__, c);
    if ((dist == NULL) == (fn == NULL))
        return dfm__error(DFM_EINVAL, "%s: give exactly one of dist and fn", __func__);
    if (V > DFM_CTMC_MAX_STATES)
        return dfm__error(DFM_ELIMIT, "%s: V = %ld exceeds DFM_CTMC_MAX_STATES (%d)", __func__,
                          (long)V, DFM_CTMC_MAX_STATES);
    dfm_path *p;
    int st = dfm__path_new(&p, DFM_PATH_METRIC, &metric_ops, space, sched, mem);
    if (st) return st;
    dfm__ctpath *m = (dfm__ctpath *)dfm__calloc(&p->b.mem, 1, sizeof *m);
    size_t Vs = (size_t)V;
    double *D = (double *)dfm__calloc(&p->b.mem, Vs * Vs, sizeof(double));
    if (!m || !D) {
        dfm__free(&p->b.mem, m);
        dfm__free(&p->b.mem, D);
        dfm_path_free(p);
        return dfm__error(DFM_ENOMEM, "%s: cannot allocate the %zu x %zu distances", __func__, Vs,
                          Vs);
    }
    m->V = V; m->d = d; m->S = dfm__ct_states(V, d); m->c = c; m->dist = D;
    p->impl = m;
    for (size_t x1 = 0; x1 < Vs; x1++) {
        double *row = D + x1 * Vs;
        if (dist) {
            for (size_t x = 0; x < Vs; x++) row[x] = dist[x * Vs + x1];
        } else {
            int raw = fn((int32_t)x1, row, V, user_data);
            if (raw) {
                dfm_path_free(p);
                return dfm__error(DFM_ECALLBACK, "%s: the distance callback returned %d for "
                                  "x1 = %zu", __func__, raw, x1);
            }
        }
        for (size_t x = 0; x < Vs; x++) {
            double v = row[x];
            if (!isfinite(v) || v < 0.0 || (x == x1 ? v != 0.0 : !(v > 0.0))) {
                dfm_path_free(p);
                return dfm__error(DFM_EINVAL, "%s: d(%zu, %zu) = %g: distances must be finite, "
                                  "d(x, x) = 0 and d(x, y) > 0", __func__, x, x1, v);
            }
        }
    }
    *out = p;
    return 0;
}

/* ---- conditional probabilities and rates (public) ---- */

static int cond_common(dfm_path *p, double t, int32_t x1, void *buf, size_t *n)
{
    if (p->kind != DFM_PATH_FINITE && p->kind != DFM_PATH_METRIC)
        return dfm__fail(&p->b, DFM_EUNSUPPORTED, "not a finite or metric path");
    if (!buf) return dfm__fail(&p->b, DFM_EINVAL, "output is NULL");
    if (!dfm__time_ok(t)) return dfm__fail(&p->b, DFM_ERANGE, "t = %g is outside [0, 1]", t);
    const dfm__ctpath *m = dfm__ctpath_of(p);
    *n = p->kind == DFM_PATH_FINITE ? m->S : (size_t)m->V;
    if (x1 < 0 || (size_t)x1 >= *n)
        return dfm__fail(&p->b, DFM_ERANGE, "x1 = %d is outside [0, %zu)", (int)x1, *n);
    return 0;
}

static int cond_probs(dfm_path *p, double t, int32_t x1, double *probs)
{
    size_t n = 0; /* set by cond_common on success (GCC -O3 cannot see it) */
    int st = cond_common(p, t, x1, probs, &n);
    if (st) return st;
    const dfm__ctpath *m = dfm__ctpath_of(p);
    if (p->kind == DFM_PATH_METRIC) {
        double beta, dbeta;
        if ((st = dfm__metric_beta(p, &p->b, t, &beta, &dbeta))) return st;
        dfm__metric_probs(m, beta, x1, probs);
        return 0;
    }
    double *tmp = (double *)dfm__calloc(&p->b.mem, 2 * n, sizeof(double));
    if (!tmp) return dfm__fail(&p->b, DFM_ENOMEM, "cannot allocate scratch");
    st = dfm__finite_cond(&p->b, p, t, x1, tmp, tmp + n);
    if (!st) memcpy(probs, tmp, n * sizeof(double));
    dfm__free(&p->b.mem, tmp);
    return st;
}

static int cond_rates(dfm_path *p, double t, int32_t x1, double *Q)
{
    size_t n = 0; /* set by cond_common on success */
    int st = cond_common(p, t, x1, Q, &n);
    if (st) return st;
    if (t >= 1.0) return dfm__fail(&p->b, DFM_ERANGE, "conditional rates diverge at t = 1");
    double *tmp = (double *)dfm__calloc(&p->b.mem, n * (n + 2), sizeof(double));
    if (!tmp) return dfm__fail(&p->b, DFM_ENOMEM, "cannot allocate scratch");
    double *pr = tmp, *dp = tmp + n, *R = tmp + 2 * n;
    if (p->kind == DFM_PATH_FINITE) {
        st = dfm__finite_cond(&p->b, p, t, x1, pr, dp);
        if (!st) {
            for (size_t z = 0; z < n; z++) {
                double *row = R + z * n, sum = 0.0;
                dfm__kinetic_row(pr, dp, n, z, row);
                for (size_t x = 0; x < n; x++) sum += row[x];
                row[z] = -sum;
            }
        }
    } else {
        const dfm__ctpath *m = dfm__ctpath_of(p);
        double beta, dbeta;
        st = dfm__metric_beta(p, &p->b, t, &beta, &dbeta);
        if (!st) {
            const double *dd = m->dist + (size_t)x1 * n;
            dfm__metric_probs(m, beta, x1, pr);
            for (size_t z = 0; z < n; z++) {
                double *row = R + z * n, sum = 0.0;
                for (size_t x = 0; x < n; x++) {
                    double g = dd[z] - dd[x];
                    row[x] = x != z && g > 0.0 ? pr[x] * dbeta * g : 0.0;
                    sum += row[x];
                }
                row[z] = -sum;
            }
        }
    }
    /* an infinite kappa' (e.g. polynomial exponent < 1 at t = 0) or a tiny p(z) can overflow */
    for (size_t i = 0; i < n * n && !st; i++)
        if (!isfinite(R[i]))
            st = dfm__fail(&p->b, DFM_ENUMERIC, "conditional rates are not finite at t = %g", t);
    if (!st) memcpy(Q, R, n * n * sizeof(double));
    dfm__free(&p->b.mem, tmp);
    return st;
}

size_t dfm__ct_cond_scratch(const dfm_path *p)
{
    const dfm__ctpath *m = dfm__ctpath_of(p);
    return p->kind == DFM_PATH_FINITE ? 2 * m->S : (size_t)m->V;
}

int dfm__ct_cond_row(dfm_base *b, dfm_path *p, double t, int32_t x1, int32_t z, double *row,
                     double *scratch)
{
    const dfm__ctpath *m = dfm__ctpath_of(p);
    size_t S = m->S, V = (size_t)m->V;
    if (p->kind == DFM_PATH_FINITE) {
        int st = dfm__finite_cond(b, p, t, x1, scratch, scratch + S);
        if (st) return st;
        dfm__kinetic_row(scratch, scratch + S, S, (size_t)z, row);
        return 0;
    }
    double beta, dbeta;
    int st = dfm__metric_beta(p, b, t, &beta, &dbeta);
    if (st) return st;
    if (!isfinite(dbeta)) return dfm__fail(b, DFM_ENUMERIC, "metric rates diverge at t = %g", t);
    memset(row, 0, S * sizeof(double));
    size_t stride = 1;
    int32_t ra = x1, rz = z;
    for (size_t i = m->d; i-- > 0;) {
        size_t a1 = (size_t)(ra % m->V), zi = (size_t)(rz % m->V);
        ra /= m->V;
        rz /= m->V;
        const double *dx = m->dist + a1 * V;
        dfm__metric_probs(m, beta, (int32_t)a1, scratch);
        for (size_t v = 0; v < V; v++) {
            double g = dx[zi] - dx[v];
            if (g > 0.0) row[(size_t)z + (v - zi) * stride] = scratch[v] * dbeta * g;
        }
        stride *= V;
    }
    return 0;
}

int dfm_path_cond_probs(dfm_path *p, double t, int32_t x1, double *probs)
{
    if (!p) return dfm__null(__func__, "p");
    int st = dfm__enter(&p->b, __func__);
    if (st) return st;
    return dfm__leave(&p->b, cond_probs(p, t, x1, probs));
}

int dfm_path_cond_rates(dfm_path *p, double t, int32_t x1, double *Q)
{
    if (!p) return dfm__null(__func__, "p");
    int st = dfm__enter(&p->b, __func__);
    if (st) return st;
    return dfm__leave(&p->b, cond_rates(p, t, x1, Q));
}
