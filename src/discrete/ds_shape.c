/* Posterior shaping (top-k, top-p, min-p), draws and error records shared by the row kernels of
 * the discrete samplers. docs/discrete.md "Posterior shaping" states the rules. */
#include "discrete/ds_sampler.h"

#include <float.h>
#include <math.h>

#define LANES 8

int dfm__ds_fail_at(step_ctx *c, int tid, int code, size_t r, size_t i, long y)
{
    const ds_err *e = &c->err[tid];
    if (e->code && (e->row < r || (e->row == r && e->coord <= i))) return code;
    c->err[tid].code = code;
    c->err[tid].row = r;
    c->err[tid].coord = i;
    c->err[tid].y = y;
    return code;
}

DFM_CLONES
static double rate_sum(const float *u, size_t n, int *bad)
{
    double acc[LANES] = {0, 0, 0, 0, 0, 0, 0, 0};
    int b[LANES] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        for (int k = 0; k < LANES; k++) {
            float v = u[i + k];
            b[k] |= !(v >= 0.0f) | (v == INFINITY);
            acc[k] += (double)v;
        }
    }
    double s = 0.0;
    int bb = 0;
    for (; i < n; i++) {
        float v = u[i];
        bb |= !(v >= 0.0f) | (v == INFINITY);
        s += (double)v;
    }
    for (int k = 0; k < LANES; k++) { s += acc[k]; bb |= b[k]; }
    *bad = bb;
    return s;
}

/* Cloned functions are static (core/internal.h): the external name calls the cloned one. */
double dfm__ds_rate_sum(const float *u, size_t n, int *bad) { return rate_sum(u, n, bad); }

int32_t dfm__ds_draw_except(float *w, size_t V, double tot, int32_t x, double u)
{
    double ex = tot - (double)w[x];
    if (!(ex > 0.0)) return -1;
    w[x] = 0.0f;
    int32_t y = dfm__draw_weights_f(w, V, ex, u);
    return w[y] > 0.0f ? y : -1;
}

/* ---- selection by value: the weights are nonnegative floats, whose bit patterns order like
 * their values. The boundary (the k-th largest value, or the value where the mass from the top
 * first reaches a target) is bracketed by bisection on the bit patterns, each step one
 * vectorised pass counting and summing the weights at or above a value, until the bracket holds
 * a few values or one; those are then ordered exactly. No sort of the whole vocabulary. ---- */

static uint32_t fbits(float v)
{
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    return b;
}

static float bitsf(uint32_t b)
{
    float v;
    memcpy(&v, &b, sizeof v);
    return v;
}

/* Mass (double across blocks of 128) and count of the weights >= tau > 0. */
DFM_CLONES
static double mass_at_least(const float *w, size_t n, float tau, size_t *count)
{
    double tot = 0.0;
    size_t cnt = 0, i = 0;
    while (i < n) {
        size_t end = n - i > 128 ? i + 128 : n;
        float acc[LANES] = {0, 0, 0, 0, 0, 0, 0, 0};
        int32_t c[LANES] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (; i + LANES <= end; i += LANES)
            for (int k = 0; k < LANES; k++) {
                int in = w[i + (size_t)k] >= tau;
                acc[k] += in ? w[i + (size_t)k] : 0.0f;
                c[k] += in;
            }
        for (; i < end; i++)
            if (w[i] >= tau) { tot += (double)w[i]; cnt++; }
        for (int k = 0; k < LANES; k++) { tot += (double)acc[k]; cnt += (size_t)c[k]; }
    }
    *count = cnt;
    return tot;
}

/* Zeroes the weights below cut and returns the mass of the others (double across blocks). */
DFM_CLONES
static double keep_at_least(float *w, size_t n, float cut)
{
    double tot = 0.0;
    size_t i = 0;
    while (i < n) {
        size_t end = n - i > 128 ? i + 128 : n;
        float acc[LANES] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (; i + LANES <= end; i += LANES)
            for (int k = 0; k < LANES; k++) {
                float v = w[i + (size_t)k] >= cut ? w[i + (size_t)k] : 0.0f;
                w[i + (size_t)k] = v;
                acc[k] += v;
            }
        for (; i < end; i++) {
            float v = w[i] >= cut ? w[i] : 0.0f;
            w[i] = v;
            tot += (double)v;
        }
        for (int k = 0; k < LANES; k++) tot += (double)acc[k];
    }
    return tot;
}

/* The indices of the weights in [lo, hi) (want of them), in index order; blocks of 8 without
 * one are skipped in one test. */
DFM_CLONES
static size_t collect_range(const float *w, size_t V, float lo, float hi, size_t want, uint32_t *list)
{
    size_t n = 0, y = 0;
    for (; y + LANES <= V && n < want; y += LANES) {
        int any = 0;
        for (int k = 0; k < LANES; k++) any |= (w[y + (size_t)k] >= lo) & (w[y + (size_t)k] < hi);
        if (!any) continue;
        for (int k = 0; k < LANES; k++)
            if (w[y + (size_t)k] >= lo && w[y + (size_t)k] < hi) list[n++] = (uint32_t)(y + (size_t)k);
    }
    for (; y < V && n < want; y++)
        if (w[y] >= lo && w[y] < hi) list[n++] = (uint32_t)y;
    return n;
}

typedef struct sel {
    float key;           /* the boundary value */
    double above_mass;   /* mass of the values strictly above it */
    size_t above_n;      /* how many values are strictly above it */
    size_t eq_n;         /* how many values equal it */
} sel;

static int reached(double mass, size_t n, double target, int by_mass)
{
    return by_mass ? mass >= target : (double)n >= target;
}

/* by_mass: the boundary is the value where the mass from the top first reaches target;
 * otherwise the value of the target-th largest (target >= 1). Only positive weights count. */
static sel select_boundary(const float *w, size_t V, double target, int by_mass, uint32_t *list)
{
    int bad;
    float mx = dfm__max_check(w, V, &bad);
    uint32_t lo = 1, hi = fbits(mx) + 1; /* reached at lo (all positive values), not at hi */
    size_t n_lo, n_hi = 0, n_mid;
    double m_lo = mass_at_least(w, V, bitsf(lo), &n_lo), m_hi = 0.0;
    if (!reached(m_lo, n_lo, target, by_mass)) hi = lo; /* rounding: every positive value */
    while (hi - lo > 1 && n_lo - n_hi > 16) {
        uint32_t mid = lo + (hi - lo) / 2;
        double m = mass_at_least(w, V, bitsf(mid), &n_mid);
        if (reached(m, n_mid, target, by_mass)) { lo = mid; m_lo = m; n_lo = n_mid; }
        else { hi = mid; m_hi = m; n_hi = n_mid; }
    }
    /* the values in [lo, hi), in decreasing order (ties: lower index first) */
    size_t n = collect_range(w, V, bitsf(lo), hi == lo ? INFINITY : bitsf(hi),
                             hi == lo ? n_lo : n_lo - n_hi, list);
    for (size_t a = 1; a < n; a++) {
        uint32_t v = list[a];
        size_t b = a;
        for (; b > 0 && w[list[b - 1]] < w[v]; b--) list[b] = list[b - 1];
        list[b] = v;
    }
    sel s = {0.0f, hi == lo ? 0.0 : m_hi, hi == lo ? 0 : n_hi, 0};
    size_t j = 0;
    for (; j < n; j++) {
        if (reached(s.above_mass + (double)w[list[j]], s.above_n + 1, target, by_mass)) break;
        s.above_mass += (double)w[list[j]];
        s.above_n++;
    }
    if (j == n) j = n ? n - 1 : 0; /* rounding: the smallest value is the boundary */
    s.key = n ? w[list[j]] : mx;
    while (j > 0 && w[list[j - 1]] == s.key) { /* values equal to the key are not above it */
        j--;
        s.above_mass -= (double)w[list[j]];
        s.above_n--;
    }
    for (size_t k = j; k < n && w[list[k]] == s.key; k++) s.eq_n++;
    return s;
}

/* Keeps the values above the boundary and, of those equal to it, the first ones (lowest index)
 * until the target is reached; zeroes the rest. Returns the kept mass. */
static double keep_boundary(float *w, size_t V, sel s, double target, int by_mass)
{
    size_t take = 0;
    double acc = s.above_mass;
    while (take < s.eq_n && (take == 0 || !reached(acc, s.above_n + take, target, by_mass))) {
        acc += (double)s.key;
        take++;
    }
    double kept = keep_at_least(w, V, s.key);
    for (size_t y = 0, seen = 0; y < V && take < s.eq_n; y++)
        if (w[y] == s.key && ++seen > take) { kept -= (double)w[y]; w[y] = 0.0f; }
    return kept;
}

double dfm__ds_shape(const step_ctx *c, float *w, double tot, uint32_t *list)
{
    const ds_shape *sh = &c->shape;
    size_t V = c->V;
    if (!sh->on || !(tot > 0.0)) return tot;
    if (sh->top_k > 0 && (uint64_t)sh->top_k < (uint64_t)V) {
        sel s = select_boundary(w, V, (double)sh->top_k, 0, list);
        tot = keep_boundary(w, V, s, (double)sh->top_k, 0);
    }
    if (sh->top_p < 1.0) {
        double target = sh->top_p * tot;
        sel s = select_boundary(w, V, target, 1, list);
        tot = keep_boundary(w, V, s, target, 1);
    }
    if (sh->min_p > 0.0) {
        int bad;
        double cut = sh->min_p * (double)dfm__max_check(w, V, &bad);
        float fcut = (float)cut; /* the smallest float >= cut: w >= fcut iff w >= cut */
        if ((double)fcut < cut) fcut = nextafterf(fcut, INFINITY);
        tot = keep_at_least(w, V, fcut > 0.0f ? fcut : FLT_MIN);
    }
    return tot;
}

int32_t dfm__ds_pick(const step_ctx *c, const float *w, double tot, double u)
{
    if (!(tot > 0.0)) return -1;
    if (c->greedy) {
        int32_t best = -1;
        float bv = 0.0f;
        for (size_t y = 0; y < c->V; y++)
            if (w[y] > bv) { bv = w[y]; best = (int32_t)y; }
        return best;
    }
    int32_t y = dfm__draw_weights_f(w, c->V, tot, u);
    return w[y] > 0.0f ? y : -1;
}

double dfm__ds_posterior(const step_ctx *c, const float *z, float mx, float *w, uint32_t *list)
{
    double tot = dfm__exp_shift_sum(z, c->V, mx, c->scale, w);
    return dfm__ds_shape(c, w, tot, list);
}
