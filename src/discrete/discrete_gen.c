/* Factorized generators on [V]^d built on a mixture path, and the marginal rates helper. */
#include "discrete/discrete_impl.h"
#include "core/rng_impl.h"

#include <float.h>
#include <math.h>

static const dfm__gen_ops factorized_ops = {NULL, NULL, dfm__ds_sampler_init, NULL, NULL, NULL, NULL};

int dfm_generator_create_factorized(dfm_generator **out, const dfm_path *path, int param,
                                    const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!path) return dfm__null(__func__, "path");
    if (param != DFM_PARAM_LOGITS && param != DFM_PARAM_RATES)
        return dfm__error(DFM_EINVAL, "%s: param must be DFM_PARAM_LOGITS or DFM_PARAM_RATES, "
                          "got %d", __func__, param);
    if (path->kind != DFM_PATH_MIXTURE)
        return dfm__error(DFM_EUNSUPPORTED, "%s: the path must be a mixture path (kind %d)",
                          __func__, path->kind);
    const dfm__mixture *m = dfm__mixture_of(path);
    size_t stride;
    if (dfm__mul(path->space.n_tokens, (size_t)m->vocab, &stride))
        return dfm__error(DFM_EOVERFLOW, "%s: d x V overflows", __func__);
    return dfm__gen_new(out, DFM_GEN_FACTORIZED, param, stride, &factorized_ops, path, mem);
}

static int mixture_rates(dfm_generator *g, size_t rows, const double *t, const int32_t *tokens,
                         const float *logits, float *rates)
{
    if (g->ops != &factorized_ops || g->param != DFM_PARAM_LOGITS || !g->path)
        return dfm__fail(&g->b, DFM_EINVAL, "not a factorized generator with posterior logits");
    if (rows == 0) return 0;
    if (!t || !tokens || !logits || !rates)
        return dfm__fail(&g->b, DFM_EINVAL, "t, tokens, logits and rates must not be NULL");
    const dfm__mixture *m = dfm__mixture_of(g->path);
    size_t d = g->path->space.n_tokens, V = (size_t)m->vocab, n;
    size_t per;
    if (dfm__mul3(d, V + 1, 2 * sizeof(float), &per) || per > SIZE_MAX - 16 ||
        dfm__rows_fit(&g->b, rows, per + 16, "the tokens, logits and rates"))
        return DFM_EOVERFLOW;
    n = rows * d * V;
    if (dfm__overlap(rates, n * sizeof(float), logits, n * sizeof(float)) ||
        dfm__overlap(rates, n * sizeof(float), tokens, rows * d * sizeof(int32_t)) ||
        dfm__overlap(rates, n * sizeof(float), t, rows * sizeof(double)))
        return dfm__fail(&g->b, DFM_EINVAL, "rates overlaps logits, tokens or t: the output may "
                         "not share memory with an input");
    /* Validate everything before writing. */
    for (size_t r = 0; r < rows; r++) {
        if (!dfm__time_ok(t[r]))
            return dfm__fail(&g->b, DFM_ERANGE, "t[%zu] = %g is outside [0, 1]", r, t[r]);
        for (size_t i = 0; i < d; i++) {
            int32_t x = tokens[r * d + i];
            if (x < 0 || (size_t)x >= V)
                return dfm__fail(&g->b, DFM_ERANGE, "tokens[row %zu][coord %zu] = %d is outside [0, %zu)",
                                 r, i, (int)x, V);
            int bad;
            float mx = dfm__max_check(logits + (r * d + i) * V, V, &bad);
            if (bad || mx == -INFINITY)
                return dfm__fail(&g->b, DFM_ENUMERIC,
                                 "logits[row %zu][coord %zu] contain NaN/+Inf or are all -Inf", r, i);
        }
    }
    double *coef = (double *)dfm__calloc(&g->b.mem, rows, sizeof(double));
    if (!coef) return dfm__fail_nomem(&g->b, "rate coefficients", rows, DFM__HINT_ROWS);
    for (size_t r = 0; r < rows; r++) {
        dfm_sched_values v;
        int raw = 0, st = dfm__sched_eval(&g->path->sched, t[r], &v, &raw);
        if (st == DFM_ECALLBACK) { dfm__free(&g->b.mem, coef); return dfm__fail_callback(&g->b, raw, "scheduler"); }
        if (st || !isfinite(v.alpha) || !isfinite(v.d_alpha)) {
            dfm__free(&g->b.mem, coef);
            return dfm__fail(&g->b, DFM_ENUMERIC, "scheduler is not finite at t = %g", t[r]);
        }
        if (!(v.alpha < 1.0)) {
            dfm__free(&g->b.mem, coef);
            return dfm__fail(&g->b, DFM_ERANGE, "rates are infinite where kappa = 1 (t[%zu] = %g)", r, t[r]);
        }
        coef[r] = v.d_alpha / (1.0 - v.alpha);
        if (!(coef[r] >= 0.0 && coef[r] <= FLT_MAX)) { /* the rates are floats */
            dfm__free(&g->b.mem, coef);
            return dfm__fail(&g->b, DFM_ENUMERIC,
                             "kappa'/(1 - kappa) = %g at t[%zu] = %g is negative or overflows float",
                             v.d_alpha / (1.0 - v.alpha), r, t[r]);
        }
    }
    for (size_t r = 0; r < rows; r++) {
        for (size_t i = 0; i < d; i++) {
            const float *z = logits + (r * d + i) * V;
            float *u = rates + (r * d + i) * V;
            int bad;
            float mx = dfm__max_check(z, V, &bad);
            double total = dfm__exp_shift_sum(z, V, mx, 1.0f, u);
            double sc = coef[r] / total;
            for (size_t y = 0; y < V; y++) u[y] = (float)((double)u[y] * sc);
            int32_t x = tokens[r * d + i];
            /* diagonal: minus the sum of the off-diagonal rates */
            double off = 0.0;
            for (size_t y = 0; y < V; y++)
                if (y != (size_t)x) off += (double)u[y];
            u[x] = (float)(-off);
        }
    }
    dfm__free(&g->b.mem, coef);
    return 0;
}

int dfm_mixture_rates(dfm_generator *g, size_t rows, const double *t, const int32_t *tokens,
                      const float *logits, float *rates)
{
    if (!g) return dfm__null(__func__, "g");
    int st = dfm__enter(&g->b, __func__);
    if (st) return st;
    return dfm__leave(&g->b, mixture_rates(g, rows, t, tokens, logits, rates));
}
