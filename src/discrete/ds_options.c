/* Options of the samplers of factorized generators, the ops table and the public setters that
 * take callbacks. The run is in discrete_sampler.c; docs/discrete.md lists every option. */
#include "discrete/ds_sampler.h"

#include <math.h>

static void ds_destroy(dfm_sampler *s)
{
    dfm__free(&s->b.mem, s->impl);
    s->impl = NULL;
}

/* Unmasking and remasking modes need posterior logits, the exact step and a mask source. */
static int need_unmasking(dfm_sampler *s, const char *what)
{
    if (s->gen->param != DFM_PARAM_LOGITS || s->method != DFM_METHOD_EXACT)
        return dfm__fail(&s->b, DFM_EINVAL, "%s needs posterior logits and DFM_METHOD_EXACT", what);
    if (dfm__mixture_of(s->gen->path)->source != DFM_SOURCE_MASK)
        return dfm__fail(&s->b, DFM_EINVAL, "%s needs a mask source", what);
    return 0;
}

static int set_mode(dfm_sampler *s, int *dst, int64_t v, int64_t max, const char *what)
{
    if (v < 0 || v > max)
        return dfm__fail(&s->b, DFM_EINVAL, "%s must be in [0, %lld], got %lld", what,
                         (long long)max, (long long)v);
    if (v) {
        int st = need_unmasking(s, what);
        if (st) return st;
    }
    *dst = (int)v;
    return 0;
}

static int ds_set_int(dfm_sampler *s, int opt, int64_t v)
{
    ds_impl *im = (ds_impl *)s->impl;
    switch (opt) {
    case DFM_OPT_DS_CHUNK_ROWS:
        if (v < DFM_CHUNK_AUTO)
            return dfm__fail(&s->b, DFM_EINVAL, "chunk rows must be >= 0 or DFM_CHUNK_AUTO, got %lld",
                             (long long)v);
        im->chunk = v;
        return 0;
    case DFM_OPT_DS_PURITY: { /* the shorthand for the confidence order with scheduled counts */
        if (v != 0 && v != 1) return dfm__fail(&s->b, DFM_EINVAL, "purity must be 0 or 1");
        int st = v ? need_unmasking(s, "purity sampling") : 0;
        if (st) return st;
        im->order = v ? DFM_ORDER_CONFIDENCE : DFM_ORDER_RANDOM;
        im->count = v ? DFM_COUNT_SCHEDULE : DFM_COUNT_COINS;
        return 0;
    }
    case DFM_OPT_DS_ORDER: return set_mode(s, &im->order, v, DFM_ORDER_ENTROPY, "the unmasking order");
    case DFM_OPT_DS_COUNT: return set_mode(s, &im->count, v, DFM_COUNT_THRESHOLD, "the unmasking count");
    case DFM_OPT_DS_GREEDY: return set_mode(s, &im->greedy, v, 1, "greedy unmasking");
    case DFM_OPT_DS_REMASK: return set_mode(s, &im->remask, v, DFM_REMASK_LOOP, "remasking");
    case DFM_OPT_DS_BLOCK_LEN:
        if (v < 0) return dfm__fail(&s->b, DFM_EINVAL, "block length must be >= 0, got %lld", (long long)v);
        if (v) {
            int st = need_unmasking(s, "block-wise unmasking");
            if (st) return st;
        }
        im->block_len = v;
        return 0;
    case DFM_OPT_DS_TOP_K:
        if (s->gen->param != DFM_PARAM_LOGITS)
            return dfm__fail(&s->b, DFM_EINVAL, "top-k applies to posterior-logit generators only");
        if (v < 0) return dfm__fail(&s->b, DFM_EINVAL, "top-k must be >= 0 (0 = off), got %lld", (long long)v);
        im->top_k = v;
        return 0;
    case DFM_OPT_DS_TIME_INDEPENDENT:
        if (v != 0 && v != 1) return dfm__fail(&s->b, DFM_EINVAL, "time independence must be 0 or 1");
        im->time_indep = (int)v;
        return 0;
    default:
        return DFM_EUNSUPPORTED;
    }
}

static int ds_get_int(const dfm_sampler *s, int opt, int64_t *v)
{
    const ds_impl *im = (const ds_impl *)s->impl;
    switch (opt) {
    case DFM_OPT_DS_CHUNK_ROWS: *v = im->chunk; return 0;
    case DFM_OPT_DS_PURITY:
        *v = im->order == DFM_ORDER_CONFIDENCE && im->count == DFM_COUNT_SCHEDULE;
        return 0;
    case DFM_OPT_DS_ORDER: *v = im->order; return 0;
    case DFM_OPT_DS_COUNT: *v = im->count; return 0;
    case DFM_OPT_DS_GREEDY: *v = im->greedy; return 0;
    case DFM_OPT_DS_REMASK: *v = im->remask; return 0;
    case DFM_OPT_DS_BLOCK_LEN: *v = im->block_len; return 0;
    case DFM_OPT_DS_TOP_K: *v = im->top_k; return 0;
    case DFM_OPT_DS_TIME_INDEPENDENT: *v = im->time_indep; return 0;
    default: return DFM_EUNSUPPORTED;
    }
}

/* Where a double option lives and its bounds: lo < v < hi, with the ends allowed when the
 * flags say so. */
typedef struct dbl_opt { int id; size_t off; double lo, hi; int lo_in, hi_in; const char *name; } dbl_opt;

static const dbl_opt dbl_opts[] = {
    {DFM_OPT_DS_THRESHOLD, offsetof(ds_impl, threshold), 0.0, 1.0, 0, 1, "the confidence threshold"},
    {DFM_OPT_DS_TOP_P, offsetof(ds_impl, top_p), 0.0, 1.0, 0, 1, "top-p"},
    {DFM_OPT_DS_MIN_P, offsetof(ds_impl, min_p), 0.0, 1.0, 1, 1, "min-p"},
    {DFM_OPT_DS_REMASK_ETA, offsetof(ds_impl, remask_eta), 0.0, 1.0, 1, 1, "the remasking eta"},
    {DFM_OPT_DS_LOOP_START, offsetof(ds_impl, loop_start), 0.0, 1.0, 0, 0, "the loop start"},
    {DFM_OPT_DS_LOOP_END, offsetof(ds_impl, loop_end), 0.0, 1.0, 0, 0, "the loop end"},
    {DFM_OPT_DS_LOOP_KAPPA, offsetof(ds_impl, loop_kappa), 0.0, 1.0, 0, 0, "the loop kappa"},
    {DFM_OPT_DS_THETA, offsetof(ds_impl, theta), 0.0, 1.0, 0, 0, "theta"},
};

static const dbl_opt *find_dbl(int opt)
{
    for (size_t k = 0; k < sizeof dbl_opts / sizeof dbl_opts[0]; k++)
        if (dbl_opts[k].id == opt) return &dbl_opts[k];
    return NULL;
}

static int set_param(dfm_sampler *s, const dbl_opt *o, double v)
{
    if (o->id == DFM_OPT_DS_THETA && s->method != DFM_METHOD_THETA_TRAPEZOIDAL)
        return dfm__fail(&s->b, DFM_EINVAL, "theta applies to DFM_METHOD_THETA_TRAPEZOIDAL only");
    if (o->id != DFM_OPT_DS_THETA && s->gen->param != DFM_PARAM_LOGITS)
        return dfm__fail(&s->b, DFM_EINVAL, "%s applies to posterior-logit generators only", o->name);
    int ok = (o->lo_in ? v >= o->lo : v > o->lo) && (o->hi_in ? v <= o->hi : v < o->hi);
    if (!ok)
        return dfm__fail(&s->b, DFM_EINVAL, "%s must be in %c%g, %g%c, got %g", o->name,
                         o->lo_in ? '[' : '(', o->lo, o->hi, o->hi_in ? ']' : ')', v);
    *(double *)(void *)((char *)s->impl + o->off) = v;
    return 0;
}

static int ds_set_double(dfm_sampler *s, int opt, double v)
{
    ds_impl *im = (ds_impl *)s->impl;
    const dbl_opt *o = find_dbl(opt);
    if (o) return set_param(s, o, v);
    if (opt != DFM_OPT_DS_TEMPERATURE && opt != DFM_OPT_DS_CORRECTOR && opt != DFM_OPT_DS_ETA)
        return DFM_EUNSUPPORTED;
    if (s->gen->param != DFM_PARAM_LOGITS)
        return dfm__fail(&s->b, DFM_EINVAL, "option %d applies to posterior-logit generators only", opt);
    if (opt == DFM_OPT_DS_TEMPERATURE) {
        if (!(v > 0.0) || !isfinite(v) || !((float)(1.0 / v) < INFINITY))
            return dfm__fail(&s->b, DFM_EINVAL, "temperature must be finite and > 0 (1/T a finite float), got %g", v);
        im->temp = v;
        return 0;
    }
    if (!(v >= 0.0) || !isfinite(v))
        return dfm__fail(&s->b, DFM_EINVAL, "%s must be finite and >= 0, got %g",
                         opt == DFM_OPT_DS_ETA ? "eta" : "the corrector weight", v);
    if (opt == DFM_OPT_DS_ETA) im->eta = v; else im->corr = v;
    return 0;
}

static int ds_get_double(const dfm_sampler *s, int opt, double *v)
{
    const ds_impl *im = (const ds_impl *)s->impl;
    const dbl_opt *o = find_dbl(opt);
    if (o) {
        *v = *(const double *)(const void *)((const char *)im + o->off);
        return 0;
    }
    switch (opt) {
    case DFM_OPT_DS_TEMPERATURE: *v = im->temp; return 0;
    case DFM_OPT_DS_CORRECTOR: *v = im->corr; return 0;
    case DFM_OPT_DS_ETA: *v = im->eta; return 0;
    default: return DFM_EUNSUPPORTED;
    }
}

static const dfm__sampler_ops ds_ops = {ds_destroy, dfm__ds_run, ds_set_int, ds_get_int,
                                        ds_set_double, ds_get_double};

int dfm__ds_sampler_init(dfm_sampler *s, int method)
{
    int param = s->gen->param;
    if (!s->gen->path || s->gen->path->kind != DFM_PATH_MIXTURE) return DFM_EUNSUPPORTED;
    int any = method == DFM_METHOD_EULER || method == DFM_METHOD_TAU_LEAPING ||
              method == DFM_METHOD_THETA_TRAPEZOIDAL;
    if (param == DFM_PARAM_LOGITS && !any && method != DFM_METHOD_EXACT) return DFM_EUNSUPPORTED;
    if (param == DFM_PARAM_RATES && !any) return DFM_EUNSUPPORTED;
    ds_impl *im = (ds_impl *)dfm__calloc(&s->b.mem, 1, sizeof(ds_impl));
    if (!im) return DFM_ENOMEM;
    im->temp = 1.0;
    im->threshold = 0.9;
    im->top_p = 1.0;
    im->remask_eta = 0.02;
    im->loop_start = 0.45;
    im->loop_end = 0.95;
    im->loop_kappa = 0.9;
    im->theta = 0.5;
    s->impl = im;
    s->ops = &ds_ops;
    return 0;
}

int dfm_sampler_set_corrector(dfm_sampler *s, dfm_corrector_fn fn, void *user_data)
{
    if (!s) return DFM_EINVAL;
    DFM__NOT_RUNNING(&s->b);
    dfm__clear(&s->b);
    if (s->ops != &ds_ops || s->gen->param != DFM_PARAM_LOGITS)
        return dfm__fail(&s->b, DFM_EUNSUPPORTED,
                         "a corrector needs a sampler of a factorized generator with posterior logits");
    ds_impl *im = (ds_impl *)s->impl;
    im->cfn = fn;
    im->cud = fn ? user_data : NULL;
    return 0;
}

int dfm_sampler_set_step_callback(dfm_sampler *s, dfm_step_fn fn, void *user_data)
{
    if (!s) return DFM_EINVAL;
    DFM__NOT_RUNNING(&s->b);
    dfm__clear(&s->b);
    if (s->ops != &ds_ops)
        return dfm__fail(&s->b, DFM_EUNSUPPORTED, "a step callback needs a sampler of a factorized generator");
    ds_impl *im = (ds_impl *)s->impl;
    im->step_fn = fn;
    im->step_ud = fn ? user_data : NULL;
    return 0;
}
