/* tau-leaping and the theta-trapezoidal method (Ren et al. 2025, "Fast solvers for discrete
 * diffusion models", after Anderson & Mattingly 2011) for factorized generators. A categorical
 * token cannot add up several jumps, so per coordinate and stage the first Poisson event wins:
 * jump with probability 1 - exp(-h lambda) to a target drawn in proportion to the rates. The
 * second stage runs from the first stage's state y* over (1 - theta) h with the rates
 * alpha1 u*(y) - alpha2 u(y), clamped at 0 (counted), for a coordinate the first stage left
 * alone, and alpha1 u*(y) for one it moved: the rates out of its old token no longer describe a
 * jump from where it is, and the second-order expansion of the one-coordinate kernel holds
 * without them (docs/discrete.md "tau-leaping and theta-trapezoidal"). */
#include "discrete/ds_sampler.h"

#include <math.h>

/* Direct rates of coordinate i to every y != x, checked; returns their sum through *lam. */
static int rates_ok(step_ctx *c, const float *z, int32_t x, size_t r, size_t i, int tid, double *lam)
{
    size_t V = c->V;
    int bad1 = 0, bad2 = 0;
    *lam = dfm__ds_rate_sum(z, (size_t)x, &bad1) + dfm__ds_rate_sum(z + x + 1, V - (size_t)x - 1, &bad2);
    if (!(bad1 | bad2)) return 0;
    long yb = 0;
    for (size_t k = 0; k < V; k++)
        if (k != (size_t)x && (!(z[k] >= 0.0f) || z[k] == INFINITY)) { yb = (long)k; break; }
    return dfm__ds_fail_at(c, tid, DFM_ENUMERIC, r, i, yb);
}

/* Logits: rates A p(y) + B p0(y), y != x. */
static int32_t leap_logits(step_ctx *c, const float *z, float mx, int32_t xi, uint64_t grow,
                           uint32_t i, int tid, double hh)
{
    double u1, u2;
    dfm__uniform2(c->s->b.seed, DFM__DS_STREAM_STEP, grow, i, c->step, &u1, &u2);
    double lb = c->B * (1.0 - dfm__mix_p0(c->m, xi)), lmax = c->A + lb;
    if (!(lmax > 0.0 && u1 < -expm1(-hh * lmax))) return xi; /* cannot fire: no softmax needed */
    float *w = c->scr[tid].w;
    double tot = dfm__ds_posterior(c, z, mx, w, c->scr[tid].list);
    double la = c->A * (1.0 - (double)w[xi] / tot), lam = la + lb;
    if (!(lam > 0.0 && u1 < -expm1(-hh * lam))) return xi;
    double ut = dfm__uniform(c->s->b.seed, DFM__DS_STREAM_EXTRA_TGT, grow, i, c->step);
    if (lb <= 0.0 || u2 * lam < la) {
        int32_t y = dfm__ds_draw_except(w, c->V, tot, xi, ut);
        return y < 0 ? xi : y;
    }
    return dfm__mix_source_draw_except(c->m, xi, ut);
}

int dfm__ds_leap_row(step_ctx *c, size_t r, size_t i0, size_t i1, int tid, int64_t *jumps)
{
    const uint8_t *fx = c->a->fixed ? c->a->fixed + r * c->d : NULL;
    int32_t *x = c->state + r * c->d;
    uint64_t grow = (uint64_t)(c->a->row_offset + r);
    double hh = c->hfrac * c->h;
    for (size_t i = i0; i < i1; i++) {
        if (fx && fx[i]) continue;
        const float *z = c->out[r] + i * c->V;
        int32_t xi = x[i], y = xi;
        if (c->param == DFM_PARAM_RATES) {
            double lam, u1, u2;
            int st = rates_ok(c, z, xi, r, i, tid, &lam);
            if (st) return st;
            if (!(lam > 0.0)) continue;
            dfm__uniform2(c->s->b.seed, DFM__DS_STREAM_STEP, grow, (uint32_t)i, c->step, &u1, &u2);
            if (!(u1 < -expm1(-hh * lam))) continue;
            float *w = c->scr[tid].w;
            memcpy(w, z, c->V * sizeof(float));
            w[xi] = 0.0f;
            int32_t t = dfm__draw_weights_f(w, c->V, lam, u2);
            if (w[t] > 0.0f) y = t;
        } else {
            int bad;
            float mx = dfm__max_check(z, c->V, &bad);
            if (bad || mx == -INFINITY) return dfm__ds_fail_at(c, tid, DFM_ENUMERIC, r, i, -1);
            y = leap_logits(c, z, mx, xi, grow, (uint32_t)i, tid, hh);
        }
        if (y != xi) { x[i] = y; (*jumps)++; }
    }
    return 0;
}

/* The second stage's rates nu into w (V floats), clamped at 0; returns their sum. rates: u* and
 * u are the stage outputs; logits: they are A2 p* + B2 p0 and A p + B p0. */
static double stage2_rates(step_ctx *c, const float *z2, const float *z1, int32_t xi, int moved,
                           int tid, size_t r, size_t i, int *st)
{
    float *w = c->scr[tid].w, *p1 = w + c->V;
    size_t V = c->V;
    double tot2 = 1.0, tot1 = 1.0, a2 = moved ? 0.0 : c->alpha2, lam = 0.0;
    int64_t clamped = 0;
    *st = 0;
    if (c->param == DFM_PARAM_LOGITS) {
        int bad;
        float mx = dfm__max_check(z2, V, &bad);
        if (bad || mx == -INFINITY) { *st = dfm__ds_fail_at(c, tid, DFM_ENUMERIC, r, i, -1); return 0.0; }
        tot2 = dfm__ds_posterior(c, z2, mx, w, c->scr[tid].list);
        if (!moved) {
            float mx1 = dfm__max_check(z1, V, &bad);
            tot1 = dfm__ds_posterior(c, z1, mx1, p1, c->scr[tid].list);
        }
    } else {
        double l2;
        if ((*st = rates_ok(c, z2, xi, r, i, tid, &l2)) != 0) return 0.0;
        memcpy(w, z2, V * sizeof(float));
        if (!moved) memcpy(p1, z1, V * sizeof(float));
    }
    for (size_t y = 0; y < V; y++) {
        if ((int32_t)y == xi) { w[y] = 0.0f; continue; }
        double us = (double)w[y] / tot2, u = moved ? 0.0 : (double)p1[y] / tot1;
        if (c->param == DFM_PARAM_LOGITS) {
            double q0 = dfm__mix_p0(c->m, (int32_t)y);
            us = c->A2 * us + c->B2 * q0;
            u = moved ? 0.0 : c->A * u + c->B * q0;
        }
        double nu = c->alpha1 * us - a2 * u;
        if (nu < 0.0) { nu = 0.0; clamped++; }
        w[y] = (float)nu;
        lam += (double)w[y];
    }
    c->clamped[tid] += clamped;
    return lam;
}

int dfm__ds_stage2_row(step_ctx *c, size_t r, size_t i0, size_t i1, int tid, int64_t *jumps)
{
    const uint8_t *fx = c->a->fixed ? c->a->fixed + r * c->d : NULL;
    int32_t *x = c->state + r * c->d;
    const int32_t *xp = c->prev + r * c->d;
    uint64_t grow = (uint64_t)(c->a->row_offset + r);
    double hh = (1.0 - c->hfrac) * c->h;
    for (size_t i = i0; i < i1; i++) {
        if (fx && fx[i]) continue;
        int32_t xi = x[i];
        int st;
        double lam = stage2_rates(c, c->out2[r] + i * c->V, c->out[r] + i * c->V, xi, xi != xp[i],
                                  tid, r, i, &st);
        if (st) return st;
        double u1, u2;
        dfm__uniform2(c->s->b.seed, DFM__DS_STREAM_STAGE2, grow, (uint32_t)i, c->step, &u1, &u2);
        if (!(lam > 0.0 && u1 < -expm1(-hh * lam))) continue;
        const float *w = c->scr[tid].w;
        int32_t y = dfm__draw_weights_f(w, c->V, lam, u2);
        if (w[y] > 0.0f && y != xi) { x[i] = y; (*jumps)++; }
    }
    return 0;
}
