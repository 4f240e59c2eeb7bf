/* Bregman generator-matching loss on direct rates (Holderrieth et al. 2024, "Generator
 * Matching", Prop. 2 with phi(x) = sum x log x): D(a, b) = sum_y a_y log(a_y / b_y) - a_y + b_y,
 * a = the path's conditional rates Q_t(x_t, . | x1), b = the model's rates. */
#include "ctmc/ctmc_impl.h"

#include <math.h>

static int breg_eval(dfm_loss *l, const dfm_loss_args *a)
{
    dfm_generator *g = l->gen;
    dfm_path *p = g->path;
    const dfm__ctpath *m = dfm__ctpath_of(p);
    size_t rows = a->rows, d = m->d, S = m->S;
    if (rows && (!a->x1_tokens || !a->xt_tokens))
        return dfm__fail(&l->b, DFM_EINVAL, "x1_tokens and xt_tokens are required");
    if (a->fixed) return dfm__fail(&l->b, DFM_EINVAL, "fixed must be NULL for rate-matrix losses");
    if (a->x0_reals || a->x1_reals || a->xt_reals)
        return dfm__fail(&l->b, DFM_EINVAL, "real-valued members must be NULL");
    for (size_t r = 0; r < rows; r++) {
        if (a->t[r] >= 1.0)
            return dfm__fail(&l->b, DFM_ERANGE, "t[%zu] = 1: conditional rates diverge", r);
        for (size_t i = 0; i < d; i++) {
            int32_t v1 = a->x1_tokens[r * d + i], vt = a->xt_tokens[r * d + i];
            if (v1 < 0 || v1 >= m->V || vt < 0 || vt >= m->V)
                return dfm__fail(&l->b, DFM_ERANGE, "%s[row %zu][coord %zu] = %d is outside "
                                 "[0, %d)", v1 < 0 || v1 >= m->V ? "x1_tokens" : "xt_tokens", r,
                                 i, (int)(v1 < 0 || v1 >= m->V ? v1 : vt), (int)m->V);
        }
    }
    size_t ns = dfm__ct_cond_scratch(p);
    double *tgt = (double *)dfm__calloc(&l->b.mem, 3 * S + ns, sizeof(double));
    float *grad = a->grad ? (float *)dfm__calloc(&l->b.mem, rows * S + 1, sizeof(float)) : NULL;
    double *vals = (double *)dfm__calloc(&l->b.mem, rows + 1, sizeof(double));
    int st = 0;
    if (!tgt || !vals || (a->grad && !grad)) {
        st = dfm__fail_nomem(&l->b, "loss scratch", rows, DFM__HINT_ROWS);
        goto done;
    }
    double *bb = tgt + S, *gg = bb + S, *scr = gg + S, total = 0.0;
    double scale = l->reduction == DFM_REDUCE_MEAN && rows ? 1.0 / (double)rows : 1.0;
    for (size_t r = 0; r < rows; r++) {
        int32_t x1 = dfm__ct_flat(a->x1_tokens + r * d, m->V, d);
        int32_t xt = dfm__ct_flat(a->xt_tokens + r * d, m->V, d);
        if ((st = dfm__ct_cond_row(&l->b, p, a->t[r], x1, xt, tgt, scr))) goto done;
        const float *o = a->out + r * l->out_stride;
        for (size_t y = 0; y < S; y++) bb[y] = (double)o[y];
        tgt[xt] = 0.0;
        bb[xt] = 0.0; /* the diagonal is derived, not a model output */
        double v;
        st = dfm_bregman_rates(tgt, bb, S, &v, gg);
        if (st) {
            st = dfm__fail(&l->b, DFM_ENUMERIC, "row %zu: the divergence is not finite", r);
            for (size_t y = 0; y < S; y++)
                if (y != (size_t)xt &&
                    (!isfinite(bb[y]) || bb[y] < 0.0 || (tgt[y] > 0.0 && bb[y] == 0.0))) {
                    if (dfm__fail_unwritten(&l->b, "model", a->out, rows, l->out_stride, 1, r, y,
                                            y + 1, r))
                        break;
                    st = dfm__fail(&l->b, DFM_ENUMERIC,
                                   "row %zu: model rate to state %zu is %g (target %g): must be "
                                   "finite, >= 0, and > 0 where the target is", r, y, bb[y],
                                   tgt[y]);
                    break;
                }
            goto done;
        }
        vals[r] = v;
        total += v;
        if (grad) {
            float *gr = grad + r * S;
            for (size_t y = 0; y < S; y++) gr[y] = y == (size_t)xt ? 0.0f : (float)(scale * gg[y]);
        }
    }
    if (a->grad) memcpy(a->grad, grad, rows * S * sizeof(float));
    if (l->reduction == DFM_REDUCE_NONE) {
        for (size_t r = 0; r < rows; r++) {
            a->values[r * d] = vals[r];
            for (size_t i = 1; i < d; i++) a->values[r * d + i] = 0.0;
        }
    }
    *a->loss = total * scale;
done:
    dfm__free(&l->b.mem, tgt);
    dfm__free(&l->b.mem, grad);
    dfm__free(&l->b.mem, vals);
    return st;
}

static const dfm__loss_ops breg_ops = {NULL, NULL, breg_eval, NULL, NULL, NULL, NULL};

int dfm_loss_create_bregman_rates(dfm_loss **out, const dfm_generator *g, const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!g) return dfm__null(__func__, "g");
    if (g->kind != DFM_GEN_RATE_MATRIX || g->param != DFM_PARAM_RATES || !g->path)
        return dfm__error(DFM_EINVAL, "%s: needs a rate-matrix generator with DFM_PARAM_RATES "
                          "and a finite or metric path", __func__);
    return dfm__loss_new(out, DFM_LOSS_BREGMAN_RATES, &breg_ops, g, mem);
}
