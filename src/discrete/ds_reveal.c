/* Unmasking as masked-diffusion language models run it (mask source, posterior logits): which
 * masked positions are revealed (random, confidence, margin, entropy), how many per step (coins,
 * the scheduled count, confidence threshold; optionally block by block), the revealed token drawn
 * from the shaped posterior or taken greedily; and ReMDM remasking. docs/discrete.md
 * "Unmasking" and "Remasking" state the rules. */
#include "discrete/ds_sampler.h"

#include <float.h>
#include <math.h>

/* Highest score first; ties: lower coordinate. A total order, so the chosen set never depends
 * on the selection algorithm. */
static int before(const ds_cand *a, const ds_cand *b)
{
    if (a->score != b->score) return a->score > b->score;
    return a->idx < b->idx;
}

/* Moves the n first candidates of the order to cf[0..n) (quickselect, median of three). */
static void select_first(ds_cand *cf, size_t nm, size_t n)
{
    size_t lo = 0, hi = nm;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2, last = hi - 1;
        /* median of cf[lo], cf[mid], cf[last] to cf[last] as the pivot */
        if (before(&cf[mid], &cf[lo])) { ds_cand t = cf[mid]; cf[mid] = cf[lo]; cf[lo] = t; }
        if (before(&cf[last], &cf[lo])) { ds_cand t = cf[last]; cf[last] = cf[lo]; cf[lo] = t; }
        if (before(&cf[mid], &cf[last])) { ds_cand t = cf[mid]; cf[mid] = cf[last]; cf[last] = t; }
        size_t k = lo;
        for (size_t j = lo; j < last; j++)
            if (before(&cf[j], &cf[last])) { ds_cand t = cf[j]; cf[j] = cf[k]; cf[k] = t; k++; }
        ds_cand t = cf[last]; cf[last] = cf[k]; cf[k] = t;
        if (k == n || k + 1 == n) return;
        if (k > n) hi = k; else lo = k + 1;
    }
}

/* Largest and second largest of w (8 lanes, branch-free). */
static void top2(const float *w, size_t n, float *b1, float *b2)
{
    float m1[8] = {0}, m2[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) {
            float v = w[i + (size_t)k], lo = v < m1[k] ? v : m1[k];
            m2[k] = lo > m2[k] ? lo : m2[k];
            m1[k] = v > m1[k] ? v : m1[k];
        }
    float a = 0.0f, b = 0.0f;
    for (int k = 0; k < 8; k++) {
        float lo = m1[k] < a ? m1[k] : a;
        a = m1[k] > a ? m1[k] : a;
        b = lo > b ? lo : b;
        b = m2[k] > b ? m2[k] : b;
    }
    for (; i < n; i++) {
        float lo = w[i] < a ? w[i] : a;
        a = w[i] > a ? w[i] : a;
        b = lo > b ? lo : b;
    }
    *b1 = a;
    *b2 = b;
}

/* sum_y w(y) log w(y) with log w = (z - mx) / T, over the positive weights (8 lanes). */
static double wlogw(const float *w, const float *z, size_t n, float mx, float scale)
{
    double tot = 0.0;
    size_t i = 0;
    while (i < n) {
        size_t end = n - i > 128 ? i + 128 : n;
        float acc[8] = {0};
        for (; i + 8 <= end; i += 8)
            for (int k = 0; k < 8; k++) {
                float v = w[i + (size_t)k];
                acc[k] += v > 0.0f ? v * ((z[i + (size_t)k] - mx) * scale) : 0.0f;
            }
        for (; i < end; i++) tot += w[i] > 0.0f ? (double)w[i] * (double)((z[i] - mx) * scale) : 0.0;
        for (int k = 0; k < 8; k++) tot += (double)acc[k];
    }
    return tot;
}

/* Scores of a masked candidate from the posterior without the mask token, p = w / ex:
 * confidence max p, margin p(1st) - p(2nd), minus the entropy. A posterior with no mass off the
 * mask token scores lowest (an error only if the position must be revealed). */
static void score_posterior(const step_ctx *c, const float *z, float mx, float *w, ds_cand *cd)
{
    int32_t mask = c->m->mask;
    double tot = dfm__exp_shift_sum(z, c->V, mx, c->scale, w);
    double ex = tot - (double)w[mask];
    w[mask] = 0.0f;
    float b1, b2 = 0.0f;
    int bad;
    if (c->order == DFM_ORDER_MARGIN) top2(w, c->V, &b1, &b2);
    else b1 = dfm__max_check(w, c->V, &bad);
    cd->conf = ex > 0.0 ? (float)((double)b1 / ex) : -1.0f;
    if (c->order == DFM_ORDER_CONFIDENCE) {
        cd->score = cd->conf;
    } else if (c->order == DFM_ORDER_MARGIN) {
        cd->score = ex > 0.0 ? (double)(b1 - b2) / ex : -1.0;
    } else if (c->order == DFM_ORDER_ENTROPY) {
        double ws = wlogw(w, z, c->V, mx, c->scale);
        cd->score = ex > 0.0 ? -(log(ex) - ws / ex) : -DBL_MAX;
    }
}

/* How many of the nm candidates to reveal: coins (nfire fired), the expected count nm pj with
 * randomised or upward rounding. */
static size_t reveal_count(const step_ctx *c, size_t nm, size_t nfire, uint64_t grow)
{
    double e = (double)nm * c->pj, fl = floor(e);
    size_t n = nm;
    switch (c->count) {
    case DFM_COUNT_COINS:
        n = nfire;
        break;
    case DFM_COUNT_SCHEDULE:
        n = (size_t)fl;
        if (dfm__uniform(c->s->b.seed, DFM__DS_STREAM_PURITY, grow, 0, c->step) < e - fl) n++;
        break;
    case DFM_COUNT_SCHEDULE_CEIL:
        n = c->pj >= 1.0 ? nm : (size_t)ceil(e - 1e-9);
        break;
    default:
        break;
    }
    return n > nm ? nm : n;
}

/* Reveals coordinate i of row r: a token from the shaped posterior without the mask token. */
static int reveal_at(step_ctx *c, size_t r, size_t i, int tid, uint64_t grow)
{
    const float *z = c->out[r] + i * c->V;
    float *w = c->scr[tid].w;
    int32_t mask = c->m->mask;
    int bad;
    float mx = dfm__max_check(z, c->V, &bad);
    double tot = dfm__exp_shift_sum(z, c->V, mx, c->scale, w);
    double ex = tot - (double)w[mask];
    if (!(ex > 0.0)) return dfm__ds_fail_at(c, tid, DFM_ENUMERIC, r, i, mask);
    w[mask] = 0.0f;
    ex = dfm__ds_shape(c, w, ex, c->scr[tid].list);
    double u1, u2;
    dfm__uniform2(c->s->b.seed, DFM__DS_STREAM_STEP, grow, (uint32_t)i, c->step, &u1, &u2);
    int32_t y = dfm__ds_pick(c, w, ex, u2);
    if (y < 0) return dfm__ds_fail_at(c, tid, DFM_ENUMERIC, r, i, mask);
    c->state[r * c->d + i] = y;
    c->jumps[tid]++;
    return 0;
}

/* The masked free positions of the active block with their scores; every free position's output
 * is checked. Returns the candidate count through *nm and the fired coins through *nfire. */
static int collect(step_ctx *c, size_t r, int tid, uint64_t grow, size_t *nm, size_t *nfire)
{
    const uint8_t *fx = c->a->fixed ? c->a->fixed + r * c->d : NULL;
    const int32_t *x = c->state + r * c->d;
    ds_cand *cf = c->scr[tid].cand;
    int need_p = c->order != DFM_ORDER_RANDOM || c->count == DFM_COUNT_THRESHOLD;
    *nm = *nfire = 0;
    for (size_t i = 0; i < c->d; i++) {
        if (fx && fx[i]) continue;
        const float *z = c->out[r] + i * c->V;
        int bad;
        float mx = dfm__max_check(z, c->V, &bad);
        if (bad || mx == -INFINITY) return dfm__ds_fail_at(c, tid, DFM_ENUMERIC, r, i, -1);
        if (x[i] != c->m->mask || i < c->lo || i >= c->hi) continue;
        ds_cand *cd = &cf[(*nm)++];
        cd->idx = (int32_t)i;
        cd->conf = 0.0f;
        int fire = 0;
        if (c->count == DFM_COUNT_COINS) {
            double u1, u2;
            dfm__uniform2(c->s->b.seed, DFM__DS_STREAM_STEP, grow, (uint32_t)i, c->step, &u1, &u2);
            fire = u1 < c->pj;
            *nfire += (size_t)fire;
        }
        if (need_p) score_posterior(c, z, mx, c->scr[tid].w, cd);
        if (c->order == DFM_ORDER_RANDOM)
            cd->score = c->count == DFM_COUNT_COINS ? (double)fire
                      : dfm__uniform(c->s->b.seed, DFM__DS_STREAM_ORDER, grow, (uint32_t)i, c->step);
    }
    return 0;
}

int dfm__ds_reveal_row(step_ctx *c, size_t r, int tid)
{
    uint64_t grow = (uint64_t)(c->a->row_offset + r);
    ds_cand *cf = c->scr[tid].cand;
    size_t nm, nfire, n;
    int st = collect(c, r, tid, grow, &nm, &nfire);
    if (st || nm == 0) return st;
    if (c->count == DFM_COUNT_THRESHOLD && !c->last) {
        size_t k = 0; /* Fast-dLLM: every position above tau, else the best one */
        for (size_t j = 0; j < nm; j++)
            if ((double)cf[j].conf > c->threshold) cf[k++] = cf[j];
        if (k > 0) {
            for (size_t j = 0; j < k && !st; j++) st = reveal_at(c, r, (size_t)cf[j].idx, tid, grow);
            return st;
        }
        n = 1;
    } else {
        n = c->count == DFM_COUNT_THRESHOLD ? nm : reveal_count(c, nm, nfire, grow);
    }
    if (n == 0) return 0;
    if (n < nm) select_first(cf, nm, n);
    for (size_t j = 0; j < n && !st; j++) st = reveal_at(c, r, (size_t)cf[j].idx, tid, grow);
    return st;
}

int dfm__ds_remask_row(step_ctx *c, size_t r, size_t i0, size_t i1, int tid, int64_t *jumps)
{
    const uint8_t *fx = c->a->fixed ? c->a->fixed + r * c->d : NULL;
    int32_t *x = c->state + r * c->d, mask = c->m->mask;
    uint64_t grow = (uint64_t)(c->a->row_offset + r);
    for (size_t i = i0; i < i1; i++) {
        if (fx && fx[i]) continue;
        const float *z = c->out[r] + i * c->V;
        int bad;
        float mx = dfm__max_check(z, c->V, &bad);
        if (bad || mx == -INFINITY) return dfm__ds_fail_at(c, tid, DFM_ENUMERIC, r, i, -1);
        double u1, u2;
        dfm__uniform2(c->s->b.seed, DFM__DS_STREAM_STEP, grow, (uint32_t)i, c->step, &u1, &u2);
        if (x[i] != mask) {
            if (u1 < c->sigma) { x[i] = mask; (*jumps)++; }
            continue;
        }
        if (!(u1 < c->qu)) continue;
        float *w = c->scr[tid].w;
        double tot = dfm__exp_shift_sum(z, c->V, mx, c->scale, w);
        double ex = tot - (double)w[mask];
        if (!(ex > 0.0)) return dfm__ds_fail_at(c, tid, DFM_ENUMERIC, r, i, mask);
        w[mask] = 0.0f;
        ex = dfm__ds_shape(c, w, ex, c->scr[tid].list);
        int32_t y = dfm__ds_pick(c, w, ex, u2);
        if (y < 0) return dfm__ds_fail_at(c, tid, DFM_ENUMERIC, r, i, mask);
        x[i] = y;
        (*jumps)++;
    }
    return 0;
}
