/* What a velocity or diffusion generator asks of the model at one sampling time: the
 * coefficients of its velocity or SDE drift in (x, model output), through the schedule
 * transform when a sampling scheduler is set (Lipman et al. 2024, §4.8), and g(t). Used by the
 * ODE/SDE samplers and the joint sampler of the gm module; the generators themselves live in
 * continuous_gen.c. */
#include "continuous/continuous_impl.h"

#include <math.h>

int dfm__cgen_g(dfm_base *b, const dfm_generator *g, double t, double *gval)
{
    const dfm__cgen *c = (const dfm__cgen *)g->impl;
    if (!c->gfn) { *gval = c->g_const; return 0; }
    double v = 0.0;
    int r = c->gfn(t, &v, c->guser);
    if (r) return dfm__fail_callback(b, r, "diffusion g(t)");
    if (!(v >= 0.0) || !isfinite(v))
        return dfm__fail(b, DFM_ENUMERIC, "g(%g) = %g is not finite and >= 0", t, v);
    *gval = v;
    return 0;
}

static int sched_at(dfm_base *b, const dfm_scheduler *s, double t, dfm_sched_values *v)
{
    int raw = 0;
    int st = dfm__sched_eval(s, t, v, &raw);
    if (st == DFM_ECALLBACK) return dfm__fail_callback(b, raw, "scheduler");
    if (st) return dfm__fail(b, st, "scheduler failed at t = %g", t);
    return 0;
}

/* Schedule transform (Lipman et al. 2024, §4.8): the training time t with
 * alpha(t) / sigma(t) = abar(r) / sbar(r), found by bisection on the increasing function
 * f(t) = alpha(t) sbar - sigma(t) abar, and s_r = (abar + sbar) / (alpha + sigma). */
static int transform_time(dfm_base *b, const dfm_scheduler *train, const dfm_sched_values *vb,
                          double r, double *tm, double *scale, dfm_sched_values *vt)
{
    dfm_sched_values v0, v1;
    int st = sched_at(b, train, 0.0, &v0);
    if (!st) st = sched_at(b, train, 1.0, &v1);
    if (st) return st;
    double f0 = v0.alpha * vb->sigma - v0.sigma * vb->alpha;
    double f1 = v1.alpha * vb->sigma - v1.sigma * vb->alpha;
    double tol = 1e-12 * (fabs(vb->alpha) + fabs(vb->sigma));
    double lo = 0.0, hi = 1.0;
    if (f0 >= -tol) hi = 0.0;
    else if (f1 <= tol) lo = 1.0;
    if (f0 > tol || f1 < -tol)
        return dfm__fail(b, DFM_ERANGE,
                         "schedule transform: the sampling scheduler's SNR at r = %g is outside "
                         "the training scheduler's range", r);
    for (int it = 0; it < 200 && hi > lo; it++) {
        double mid = 0.5 * (lo + hi);
        if (mid <= lo || mid >= hi) break;
        dfm_sched_values vm;
        if ((st = sched_at(b, train, mid, &vm))) return st;
        double fm = vm.alpha * vb->sigma - vm.sigma * vb->alpha;
        if (fm < 0.0) lo = mid; else hi = mid;
    }
    double t = 0.5 * (lo + hi);
    if ((st = sched_at(b, train, t, vt))) return st;
    double den = vt->alpha + vt->sigma;
    if (!(den > 0.0))
        return dfm__fail(b, DFM_ERANGE, "schedule transform: alpha + sigma = 0 at t = %g", t);
    *tm = t;
    *scale = (vb->alpha + vb->sigma) / den;
    if (!(*scale > 0.0) || !isfinite(*scale))
        return dfm__fail(b, DFM_ERANGE, "schedule transform: bad scale at r = %g", r);
    return 0;
}

int dfm__cgen_coef(dfm_base *b, const dfm_generator *g, double r, double gg, dfm__acoef *c)
{
    const dfm__cgen *cg = (const dfm__cgen *)g->impl;
    const dfm_scheduler *train = &g->path->sched;
    dfm_sched_values vb, vt;
    int st;
    c->t_model = r;
    c->scale = 1.0;
    if (cg->has_tr) {
        if ((st = sched_at(b, &cg->tr, r, &vb))) return st;
        if ((st = transform_time(b, train, &vb, r, &c->t_model, &c->scale, &vt))) return st;
    } else {
        if ((st = sched_at(b, train, r, &vb))) return st;
        vt = vb;
    }
    if (!cg->has_tr && gg == 0.0 && g->param == DFM_PARAM_VELOCITY) {
        c->A = 0.0;
        c->B = 1.0;
        return 0;
    }
    double c1[2], c0[2];
    dfm__affine_pair(g->param, &vt, c1, c0);
    /* drift = dab x1 + dsb x0 - gg x0 / sbar, with x1, x0 in terms of (x / s, y). */
    double q1 = vb.d_alpha, q0 = vb.d_sigma;
    if (gg != 0.0) q0 -= gg / vb.sigma;
    double A = 0.0, B = 0.0;
    int bad = !isfinite(q1) || !isfinite(q0);
    if (q1 != 0.0) {
        if (c1[0] != 0.0) A += q1 * c1[0];
        if (c1[1] != 0.0) B += q1 * c1[1];
    }
    if (q0 != 0.0) {
        if (c0[0] != 0.0) A += q0 * c0[0];
        if (c0[1] != 0.0) B += q0 * c0[1];
    }
    A /= c->scale;
    if (bad || !isfinite(A) || !isfinite(B))
        return dfm__fail(b, DFM_ERANGE,
                         "the %s is undefined at t = %g for this parameterization (alpha = %g, "
                         "sigma = %g)%s", gg != 0.0 ? "SDE drift" : "velocity", r, vt.alpha,
                         vt.sigma, gg != 0.0 ? "; the score needs sigma > 0" : "");
    c->A = A;
    c->B = B;
    return 0;
}
