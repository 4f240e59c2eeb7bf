/* Schedulers (Lipman et al. 2024, "Flow Matching Guide and Code", §4.8 and the flow_matching
 * scheduler definitions): alpha_t, sigma_t and their derivatives, and kappa^{-1}. */
#include "core/internal.h"
#include "handles/scheduler_impl.h"

#include <math.h>

static int make(dfm_scheduler **out, int kind, const dfm_allocator *mem)
{
    if (!out) return dfm__error(DFM_EINVAL, "dfm_scheduler_create: out is NULL");
    *out = NULL;
    dfm_allocator m;
    if (dfm__mem_init(&m, mem)) return DFM_EINVAL;
    dfm_scheduler *s = (dfm_scheduler *)dfm__calloc(&m, 1, sizeof *s);
    if (!s) return dfm__error(DFM_ENOMEM, "cannot allocate a scheduler (%zu bytes)", sizeof *s);
    s->mem = m;
    s->kind = kind;
    *out = s;
    return 0;
}

int dfm_scheduler_create_condot(dfm_scheduler **out, const dfm_allocator *mem)
{
    return make(out, DFM_SCHED_CONDOT, mem);
}

int dfm_scheduler_create_polynomial(dfm_scheduler **out, double n, const dfm_allocator *mem)
{
    if (out) *out = NULL;
    if (!(n > 0.0) || !isfinite(n))
        return dfm__error(DFM_EINVAL, "%s: n must be finite and > 0, got %g", __func__, n);
    int st = make(out, DFM_SCHED_POLYNOMIAL, mem);
    if (!st) (*out)->p1 = n;
    return st;
}

int dfm_scheduler_create_cosine(dfm_scheduler **out, const dfm_allocator *mem)
{
    return make(out, DFM_SCHED_COSINE, mem);
}

int dfm_scheduler_create_linear_vp(dfm_scheduler **out, const dfm_allocator *mem)
{
    return make(out, DFM_SCHED_LINEAR_VP, mem);
}

int dfm_scheduler_create_vp(dfm_scheduler **out, double beta_min, double beta_max,
                            const dfm_allocator *mem)
{
    if (out) *out = NULL;
    if (!isfinite(beta_min) || !isfinite(beta_max) || beta_min < 0.0 || beta_max < beta_min ||
        !(beta_max > 0.0))
        return dfm__error(DFM_EINVAL, "%s: need finite 0 <= beta_min <= beta_max, beta_max > 0; "
                          "got %g, %g", __func__, beta_min, beta_max);
    int st = make(out, DFM_SCHED_VP, mem);
    if (!st) { (*out)->p1 = beta_min; (*out)->p2 = beta_max; }
    return st;
}

int dfm_scheduler_create_custom(dfm_scheduler **out, dfm_schedule_fn fn,
                                dfm_schedule_inverse_fn inverse, void *user_data,
                                const dfm_allocator *mem)
{
    if (out) *out = NULL;
    if (!fn) return dfm__null(__func__, "fn");
    int st = make(out, DFM_SCHED_CUSTOM, mem);
    if (!st) { (*out)->fn = fn; (*out)->inverse = inverse; (*out)->user = user_data; }
    return st;
}

int dfm_scheduler_clone(dfm_scheduler **out, const dfm_scheduler *s, const dfm_allocator *mem)
{
    if (out) *out = NULL;
    if (!s) return dfm__null(__func__, "s");
    int st = make(out, s->kind, mem);
    if (st) return st;
    dfm_allocator m = (*out)->mem;
    **out = *s;
    (*out)->mem = m;
    return 0;
}

void dfm_scheduler_free(dfm_scheduler *s)
{
    if (s) {
        dfm_allocator m = s->mem;
        dfm__free(&m, s);
    }
}

int dfm_scheduler_kind(const dfm_scheduler *s) { return s ? s->kind : 0; }

int dfm__sched_eval(const dfm_scheduler *s, double t, dfm_sched_values *v, int *cb_raw)
{
    const double hpi = 1.5707963267948966;
    switch (s->kind) {
    case DFM_SCHED_CONDOT:
        v->alpha = t; v->sigma = 1.0 - t; v->d_alpha = 1.0; v->d_sigma = -1.0;
        return 0;
    case DFM_SCHED_POLYNOMIAL: {
        double n = s->p1, tn = pow(t, n);
        double d = t > 0.0 ? n * pow(t, n - 1.0) : (n == 1.0 ? 1.0 : (n < 1.0 ? INFINITY : 0.0));
        v->alpha = tn; v->sigma = 1.0 - tn; v->d_alpha = d; v->d_sigma = -d;
        return 0;
    }
    case DFM_SCHED_COSINE:
        v->alpha = sin(hpi * t); v->sigma = cos(hpi * t);
        v->d_alpha = hpi * cos(hpi * t); v->d_sigma = -hpi * sin(hpi * t);
        if (t == 1.0) { v->alpha = 1.0; v->sigma = 0.0; }
        return 0;
    case DFM_SCHED_LINEAR_VP: {
        double s2 = 1.0 - t * t;
        v->alpha = t; v->sigma = sqrt(s2); v->d_alpha = 1.0;
        v->d_sigma = s2 > 0.0 ? -t / sqrt(s2) : -INFINITY;
        return 0;
    }
    case DFM_SCHED_VP: {
        double b = s->p1, B = s->p2, u = 1.0 - t;
        double T = 0.5 * u * u * (B - b) + u * b, dT = -u * (B - b) - b;
        double eT = exp(-T), om = -expm1(-T);
        v->alpha = exp(-0.5 * T);
        v->sigma = sqrt(om);
        v->d_alpha = -0.5 * dT * v->alpha;
        v->d_sigma = om > 0.0 ? 0.5 * dT * eT / sqrt(om) : -INFINITY;
        return 0;
    }
    case DFM_SCHED_CUSTOM: {
        dfm_sched_values tmp;
        int r = s->fn(t, &tmp, s->user);
        if (r) { if (cb_raw) *cb_raw = r; return DFM_ECALLBACK; }
        if ((r = dfm__callback_freed())) return r;
        if (!isfinite(tmp.alpha) || !isfinite(tmp.sigma) || isnan(tmp.d_alpha) ||
            isnan(tmp.d_sigma))
            return DFM_ENUMERIC;
        *v = tmp;
        return 0;
    }
    default:
        return DFM_EINVAL;
    }
}

int dfm_scheduler_eval(const dfm_scheduler *s, double t, dfm_sched_values *out, int *cb_raw)
{
    if (!s || !out) return dfm__null(__func__, "s or out");
    if (!dfm__time_ok(t)) return dfm__error(DFM_ERANGE, "%s: t = %g is outside [0, 1]", __func__, t);
    dfm_sched_values v;
    int raw = 0, st = dfm__sched_eval(s, t, &v, &raw);
    if (cb_raw && st == DFM_ECALLBACK) *cb_raw = raw;
    if (st == DFM_ECALLBACK)
        return dfm__error(st, "%s: the custom scheduler callback returned %d at t = %g", __func__,
                          raw, t);
    if (st)
        return dfm__error(st, "%s: the custom scheduler callback returned a non-finite alpha or "
                          "sigma or a NaN derivative at t = %g", __func__, t);
    *out = v;
    return 0;
}

int dfm__sched_kappa_inverse(const dfm_scheduler *s, double k, double *t, int *cb_raw)
{
    const double two_over_pi = 0.6366197723675814;
    double r;
    switch (s->kind) {
    case DFM_SCHED_CONDOT:
    case DFM_SCHED_LINEAR_VP:
        r = k;
        break;
    case DFM_SCHED_POLYNOMIAL:
        r = k <= 0.0 ? 0.0 : pow(k, 1.0 / s->p1);
        break;
    case DFM_SCHED_COSINE:
        r = two_over_pi * asin(k);
        break;
    case DFM_SCHED_VP: {
        /* alpha = exp(-T/2): T = -2 log k, then solve 0.5 (B-b) u^2 + b u - T = 0 for u = 1-t,
         * in the form u = 2T / (b + sqrt(b^2 + 2 (B-b) T)): no cancellation, no overflow of b^2
         * or (B-b) T (hypot), D = 0 included (u = T / b). T = 0 is kappa = 1 (u = 0), T = +Inf
         * is kappa = 0 = alpha(0) after underflow (u = 1). */
        double b = s->p1, D = s->p2 - s->p1, T = -2.0 * log(k), u;
        if (!(T > 0.0)) u = 0.0;
        else if (T == INFINITY) u = 1.0;
        else u = 2.0 * T / (b + hypot(b, sqrt(2.0 * T) * sqrt(D)));
        r = 1.0 - u;
        break;
    }
    case DFM_SCHED_CUSTOM: {
        if (!s->inverse) return DFM_EUNSUPPORTED;
        int rc = s->inverse(k, &r, s->user);
        if (rc) { if (cb_raw) *cb_raw = rc; return DFM_ECALLBACK; }
        if (!isfinite(r)) return DFM_ENUMERIC;
        break;
    }
    default:
        return DFM_EINVAL;
    }
    if (!(r >= 0.0)) r = 0.0; /* also a NaN from a degenerate parameter */
    if (r > 1.0) r = 1.0;
    *t = r;
    return 0;
}

int dfm_scheduler_kappa_inverse(const dfm_scheduler *s, double kappa, double *t, int *cb_raw)
{
    if (!s || !t) return dfm__null(__func__, "s or t");
    if (isnan(kappa)) return dfm__error(DFM_EINVAL, "%s: kappa is NaN", __func__);
    double lo = 0.0, hi = 1.0;
    if (s->kind == DFM_SCHED_VP) {
        dfm_sched_values v0;
        dfm__sched_eval(s, 0.0, &v0, NULL);
        lo = v0.alpha;
    }
    if (kappa < lo || kappa > hi)
        return dfm__error(DFM_ERANGE, "%s: kappa = %g is outside [%g, %g]", __func__, kappa, lo, hi);
    double r;
    int raw = 0, st = dfm__sched_kappa_inverse(s, kappa, &r, &raw);
    if (cb_raw && st == DFM_ECALLBACK) *cb_raw = raw;
    if (st == DFM_EUNSUPPORTED)
        return dfm__error(st, "%s: the custom scheduler has no inverse", __func__);
    if (st == DFM_ECALLBACK)
        return dfm__error(st, "%s: the inverse callback returned %d", __func__, raw);
    if (st) return dfm__error(st, "%s: the inverse callback returned a non-finite t", __func__);
    *t = r;
    return 0;
}
