/* Velocity (ODE) and diffusion (SDE) generators on affine paths, their options (g, the sampling
 * scheduler of the schedule transform), and the conditional flow matching MSE loss (Lipman et
 * al. 2024, §4; Song et al. 2021). What a generator asks of the model at a sampling time is
 * computed in continuous_coef.c. */
#include "continuous/continuous_impl.h"

#include <math.h>

static int param_ok(int p)
{
    return p == DFM_PARAM_VELOCITY || p == DFM_PARAM_X1 || p == DFM_PARAM_EPSILON ||
           p == DFM_PARAM_SCORE;
}

/* ---- generator ops ---- */

static void cgen_destroy(dfm_generator *g)
{
    dfm__free(&g->b.mem, g->impl);
    g->impl = NULL;
}

static int cgen_clone(dfm_generator *dst, const dfm_generator *src)
{
    dfm__cgen *c = (dfm__cgen *)dfm__alloc(&dst->b.mem, sizeof *c);
    if (!c) return DFM_ENOMEM;
    *c = *(const dfm__cgen *)src->impl;
    c->tr.mem = dst->b.mem;
    dst->impl = c;
    return 0;
}

static int cgen_set_double(dfm_generator *g, int opt, double v)
{
    if (opt != DFM_OPT_DIFFUSION_G || g->kind != DFM_GEN_DIFFUSION) return DFM_EUNSUPPORTED;
    if (!(v >= 0.0) || !isfinite(v))
        return dfm__fail(&g->b, DFM_EINVAL, "g must be finite and >= 0, got %g", v);
    ((dfm__cgen *)g->impl)->g_const = v;
    return 0;
}

static int cgen_get_double(const dfm_generator *g, int opt, double *v)
{
    if (opt != DFM_OPT_DIFFUSION_G || g->kind != DFM_GEN_DIFFUSION) return DFM_EUNSUPPORTED;
    *v = ((const dfm__cgen *)g->impl)->g_const;
    return 0;
}

static const dfm__gen_ops cgen_ops = {cgen_destroy, cgen_clone, dfm__cont_sampler_init, NULL,
                                      NULL, cgen_set_double, cgen_get_double};

static int create(dfm_generator **out, int kind, const dfm_path *path, int param, double g,
                  const dfm_allocator *mem)
{
    const char *fn = kind == DFM_GEN_VELOCITY ? "dfm_generator_create_velocity"
                                              : "dfm_generator_create_diffusion";
    if (!out) return dfm__null(fn, "out");
    *out = NULL;
    if (!path) return dfm__null(fn, "path");
    if (path->kind != DFM_PATH_AFFINE)
        return dfm__error(DFM_EINVAL, "%s: the path must be an affine path (kind %d)", fn,
                          path->kind);
    if (!param_ok(param))
        return dfm__error(DFM_EINVAL, "%s: param must be DFM_PARAM_VELOCITY, _X1, _EPSILON or "
                          "_SCORE, got %d", fn, param);
    if (!(g >= 0.0) || !isfinite(g))
        return dfm__error(DFM_EINVAL, "%s: g must be finite and >= 0, got %g", fn, g);
    dfm_generator *h;
    int st = dfm__gen_new(&h, kind, param, path->space.n_reals, &cgen_ops, path, mem);
    if (st) return st;
    dfm__cgen *c = (dfm__cgen *)dfm__calloc(&h->b.mem, 1, sizeof *c);
    if (!c) {
        dfm_generator_free(h);
        return dfm__error(DFM_ENOMEM, "%s: cannot allocate the generator", fn);
    }
    c->g_const = g;
    h->impl = c;
    h->b.nthreads = path->b.nthreads;
    h->b.spin_us = path->b.spin_us;
    h->b.seed = path->b.seed;
    *out = h;
    return 0;
}

int dfm_generator_create_velocity(dfm_generator **out, const dfm_path *path, int param,
                                  const dfm_allocator *mem)
{
    return create(out, DFM_GEN_VELOCITY, path, param, 0.0, mem);
}

int dfm_generator_create_diffusion(dfm_generator **out, const dfm_path *path, int param,
                                   double g_const, const dfm_allocator *mem)
{
    return create(out, DFM_GEN_DIFFUSION, path, param, g_const, mem);
}

static int is_cgen(const dfm_generator *g)
{
    return g && g->ops == &cgen_ops;
}

int dfm_generator_set_diffusion_fn(dfm_generator *g, dfm_diffusion_fn fn, void *user_data)
{
    if (!g) return dfm__null(__func__, "g");
    DFM__NOT_RUNNING(&g->b);
    dfm__clear(&g->b);
    if (!is_cgen(g) || g->kind != DFM_GEN_DIFFUSION)
        return dfm__fail(&g->b, DFM_EINVAL, "not a diffusion generator");
    dfm__cgen *c = (dfm__cgen *)g->impl;
    c->gfn = fn;
    c->guser = fn ? user_data : NULL;
    return 0;
}

int dfm_generator_set_sampling_scheduler(dfm_generator *g, const dfm_scheduler *sched)
{
    if (!g) return dfm__null(__func__, "g");
    DFM__NOT_RUNNING(&g->b);
    dfm__clear(&g->b);
    if (!is_cgen(g)) return dfm__fail(&g->b, DFM_EINVAL, "not a velocity or diffusion generator");
    dfm__cgen *c = (dfm__cgen *)g->impl;
    if (!sched) { c->has_tr = 0; return 0; }
    c->tr = *sched;
    c->tr.mem = g->b.mem;
    c->has_tr = 1;
    return 0;
}

/* ---- MSE loss ---- */

typedef struct mse_ctx {
    const dfm_loss_args *a;
    const double *co;   /* rows x 2: target = co0 * x1 + co1 * x0 */
    size_t d;
    double *rowsum;     /* rows */
    float gscale;
    int write;
} mse_ctx;

/* Sum of squared errors of one row: 16 float partial sums (vectorisable; the order is fixed,
 * so results do not depend on threads), then double. */
DFM_CLONES_V4
static double mse_row(size_t d, const float *restrict out, const float *restrict x1,
                      const float *restrict x0, float c1, float c0)
{
    float acc[DFM__VB] = {0};
    size_t j = 0;
    for (; j + DFM__VB <= d; j += DFM__VB)
        for (int k = 0; k < DFM__VB; k++) {
            float e = out[j + k] - (c1 * x1[j + k] + c0 * x0[j + k]);
            acc[k] += e * e;
        }
    double tot = 0.0;
    for (; j < d; j++) {
        float e = out[j] - (c1 * x1[j] + c0 * x0[j]);
        tot += (double)e * e;
    }
    for (int k = 0; k < DFM__VB; k++) tot += acc[k];
    return tot;
}

DFM_CLONES_V4
static void mse_grad_row(size_t d, const float *restrict out, const float *restrict x1,
                         const float *restrict x0, float c1, float c0, float gs,
                         float *restrict grad, double *restrict values)
{
    size_t j = 0;
    if (grad) {
        for (; j + DFM__VB <= d; j += DFM__VB)
            for (int k = 0; k < DFM__VB; k++)
                grad[j + k] = gs * (out[j + k] - (c1 * x1[j + k] + c0 * x0[j + k]));
        for (; j < d; j++) grad[j] = gs * (out[j] - (c1 * x1[j] + c0 * x0[j]));
    }
    if (values)
        for (j = 0; j < d; j++) {
            float e = out[j] - (c1 * x1[j] + c0 * x0[j]);
            values[j] = (double)(e * e);
        }
}

static int mse_range(void *vctx, size_t begin, size_t end, int tid)
{
    const mse_ctx *c = (const mse_ctx *)vctx;
    const dfm_loss_args *a = c->a;
    size_t d = c->d;
    (void)tid;
    for (size_t r = begin; r < end; r++) {
        const float *o = a->out + r * d, *x1 = a->x1_reals + r * d, *x0 = a->x0_reals + r * d;
        float c1 = (float)c->co[2 * r], c0 = (float)c->co[2 * r + 1];
        if (!c->write) {
            c->rowsum[r] = mse_row(d, o, x1, x0, c1, c0);
        } else {
            mse_grad_row(d, o, x1, x0, c1, c0, c->gscale, a->grad ? a->grad + r * d : NULL,
                         a->values ? a->values + r * d : NULL);
        }
    }
    return 0;
}

static int mse_eval(dfm_loss *l, const dfm_loss_args *a)
{
    const dfm_generator *g = l->gen;
    size_t d = g->out_stride, n;
    if (a->x1_tokens || a->xt_tokens || a->fixed)
        return dfm__fail(&l->b, DFM_EINVAL,
                         "the MSE loss has no tokens: token members must be NULL");
    if (a->rows == 0) { *a->loss = 0.0; return 0; }
    if (!a->x0_reals || !a->x1_reals)
        return dfm__fail(&l->b, DFM_EINVAL, "args->x0_reals and args->x1_reals are required");
    if (dfm__mul(a->rows, d, &n)) return dfm__fail(&l->b, DFM_EOVERFLOW, "rows x D overflows");
    size_t bytes;
    if (dfm__mul3(a->rows, 3, sizeof(double), &bytes))
        return dfm__fail(&l->b, DFM_EOVERFLOW, "rows too large");
    double *co = (double *)dfm__alloc(&l->b.mem, bytes);
    if (!co) return dfm__fail_nomem(&l->b, "loss scratch", a->rows, DFM__HINT_ROWS);
    double *rowsum = co + 2 * a->rows;
    int st = 0;
    double last_t = -1.0, c1 = 0.0, c0 = 0.0;
    for (size_t r = 0; r < a->rows; r++) {
        if (a->t[r] != last_t) {
            dfm_sched_values v;
            int raw = 0;
            st = dfm__sched_eval(&g->path->sched, a->t[r], &v, &raw);
            if (st == DFM_ECALLBACK) { st = dfm__fail_callback(&l->b, raw, "scheduler"); break; }
            if (st) { st = dfm__fail(&l->b, st, "scheduler failed at t = %g", a->t[r]); break; }
            switch (g->param) {
            case DFM_PARAM_VELOCITY: c1 = v.d_alpha; c0 = v.d_sigma; break;
            case DFM_PARAM_X1: c1 = 1.0; c0 = 0.0; break;
            case DFM_PARAM_EPSILON: c1 = 0.0; c0 = 1.0; break;
            default: c1 = 0.0; c0 = -1.0 / v.sigma; break;
            }
            if (!isfinite(c1) || !isfinite(c0)) {
                st = dfm__fail(&l->b, DFM_ERANGE,
                               "the target is undefined at t[%zu] = %g (sigma = %g)", r, a->t[r],
                               v.sigma);
                break;
            }
            last_t = a->t[r];
        }
        co[2 * r] = c1;
        co[2 * r + 1] = c0;
    }
    if (!st) {
        mse_ctx c = {a, co, d, rowsum, 0.0f, 0};
        dfm__parallel_for(&l->b, l->b.nthreads, a->rows, mse_range, &c);
        double total = 0.0;
        for (size_t r = 0; r < a->rows; r++) total += rowsum[r];
        if (!isfinite(total)) {
            /* Locate the culprit for the message. */
            size_t r = 0;
            while (r < a->rows && isfinite(rowsum[r])) r++;
            const float *o = a->out + r * d;
            int in_out = r < a->rows && !dfm__all_finite_f(o, d);
            if (!in_out || !dfm__fail_unwritten(&l->b, "model", a->out, a->rows, d, 1, r, 0, d, r))
                st = dfm__fail(&l->b, DFM_ENUMERIC, "non-finite %s in row %zu",
                               in_out ? "model output" : "data, source or squared error", r);
            else
                st = DFM_ENUMERIC;
        } else {
            double scale = l->reduction == DFM_REDUCE_MEAN ? 1.0 / (double)n : 1.0;
            c.gscale = (float)(2.0 * scale);
            c.write = 1;
            if (!a->grad) c.gscale = 0.0f;
            if (a->grad || (l->reduction == DFM_REDUCE_NONE && a->values)) {
                dfm_loss_args b2 = *a;
                if (l->reduction != DFM_REDUCE_NONE) b2.values = NULL;
                c.a = &b2;
                dfm__parallel_for(&l->b, l->b.nthreads, a->rows, mse_range, &c);
            }
            *a->loss = total * scale;
        }
    }
    dfm__free(&l->b.mem, co);
    return st;
}

static const dfm__loss_ops mse_ops = {NULL, NULL, mse_eval, NULL, NULL, NULL, NULL};

int dfm_loss_create_mse(dfm_loss **out, const dfm_generator *gen, const dfm_allocator *mem)
{
    if (!out) return dfm__null(__func__, "out");
    *out = NULL;
    if (!gen) return dfm__null(__func__, "gen");
    if (!is_cgen(gen))
        return dfm__error(DFM_EINVAL, "%s: the generator must be a velocity or diffusion "
                          "generator", __func__);
    int st = dfm__loss_new(out, DFM_LOSS_MSE, &mse_ops, gen, mem);
    if (!st) {
        (*out)->b.nthreads = gen->b.nthreads;
        (*out)->b.spin_us = gen->b.spin_us;
        (*out)->b.seed = gen->b.seed;
    }
    return st;
}
