/* libFuzzer harness: schedulers. Creates a scheduler of an arbitrary kind with arbitrary
 * parameters (NaN, Inf, huge, tiny, negative), a custom one whose callbacks return input-chosen
 * values (non-finite too) or fail, then evaluates it and its kappa inverse at arbitrary times.
 * Invariants: documented statuses only; outputs unwritten on failure; for built-in kinds at
 * t in [0, 1]: alpha, sigma in [0, 1] and no NaN anywhere; kappa inverses in [0, 1]. */
#include "fuzz_input.h"

typedef struct cb_state {
    fz *in;
    int fail;              /* raw value to return (0: succeed) */
    dfm_sched_values vals; /* what the callback writes */
    double inv;            /* what the inverse writes */
} cb_state;

static int cb_sched(double t, dfm_sched_values *v, void *u)
{
    cb_state *c = (cb_state *)u;
    (void)t;
    if (c->fail) return c->fail;
    *v = c->vals;
    return 0;
}

static int cb_inverse(double k, double *t, void *u)
{
    cb_state *c = (cb_state *)u;
    (void)k;
    if (c->fail) return c->fail;
    *t = c->inv;
    return 0;
}

static int create(fz *in, dfm_scheduler **s, int *kind, cb_state *cb, const dfm_allocator *m)
{
    *kind = fz_int(in, 0, 7);
    switch (*kind) {
    case DFM_SCHED_CONDOT: return dfm_scheduler_create_condot(s, m);
    case DFM_SCHED_POLYNOMIAL: {
        double n = fz_double(in);
        int st = dfm_scheduler_create_polynomial(s, n, m);
        if (!(n > 0.0) || !isfinite(n)) FZ_ASSERT(st == DFM_EINVAL);
        return st;
    }
    case DFM_SCHED_COSINE: return dfm_scheduler_create_cosine(s, m);
    case DFM_SCHED_LINEAR_VP: return dfm_scheduler_create_linear_vp(s, m);
    case DFM_SCHED_VP: {
        double b = fz_double(in), B = fz_double(in);
        int st = dfm_scheduler_create_vp(s, b, B, m);
        if (!isfinite(b) || !isfinite(B) || b < 0.0 || B < b || !(B > 0.0))
            FZ_ASSERT(st == DFM_EINVAL);
        return st;
    }
    case DFM_SCHED_CUSTOM: {
        int with_fn = fz_u8(in) % 8 != 0;
        int with_inv = fz_u8(in) & 1;
        int st = dfm_scheduler_create_custom(s, with_fn ? cb_sched : NULL,
                                             with_inv ? cb_inverse : NULL, cb, m);
        if (!with_fn) FZ_ASSERT(st == DFM_EINVAL);
        return st;
    }
    default: {
        /* An unknown kind cannot be made: exercise the NULL-out paths instead. */
        FZ_ASSERT(dfm_scheduler_create_condot(NULL, m) == DFM_EINVAL);
        FZ_ASSERT(dfm_scheduler_create_polynomial(NULL, 1.0, m) == DFM_EINVAL);
        FZ_ASSERT(dfm_scheduler_create_vp(NULL, 0.1, 20.0, m) == DFM_EINVAL);
        FZ_ASSERT(dfm_scheduler_create_custom(NULL, cb_sched, NULL, NULL, m) == DFM_EINVAL);
        FZ_ASSERT(dfm_scheduler_clone(NULL, NULL, m) == DFM_EINVAL);
        *s = NULL;
        return DFM_EINVAL;
    }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz in;
    fz_init(&in, data, size);
    in.fail_mask = fz_u8(&in) < 64 ? fz_u64(&in) : 0;
    dfm_allocator mem = fz_allocator(&in);
    const dfm_allocator *m = fz_u8(&in) & 1 ? &mem : NULL;
    cb_state cb = {&in, 0, {0, 0, 0, 0}, 0};
    dfm_scheduler *s = (dfm_scheduler *)&in;
    int kind;
    int st = create(&in, &s, &kind, &cb, m);
    FZ_STATUS_OK(st);
    if (st) {
        FZ_ASSERT(s == NULL);
        FZ_ASSERT(in.live == 0);
        return 0;
    }
    FZ_ASSERT(dfm_scheduler_kind(s) == kind);
    if (fz_u8(&in) & 1) { /* work on a clone (with the other allocator) */
        dfm_scheduler *c = (dfm_scheduler *)&in;
        st = dfm_scheduler_clone(&c, s, m == &mem ? NULL : &mem);
        FZ_STATUS_OK(st);
        if (st) FZ_ASSERT(c == NULL && st == DFM_ENOMEM);
        else { dfm_scheduler_free(s); s = c; }
    }

    for (int op = 0; op < 32 && !fz_empty(&in); op++) {
        if (kind == DFM_SCHED_CUSTOM) {
            cb.fail = fz_u8(&in) % 4 == 0 ? (int)fz_u32(&in) : 0;
            cb.vals.alpha = fz_double(&in);
            cb.vals.sigma = fz_double(&in);
            cb.vals.d_alpha = fz_double(&in);
            cb.vals.d_sigma = fz_double(&in);
            cb.inv = fz_double(&in);
        }
        if (fz_u8(&in) & 1) {
            double t = fz_time(&in);
            dfm_sched_values v, poison;
            memset(&poison, 0xa5, sizeof poison);
            v = poison;
            int raw = 12345;
            st = dfm_scheduler_eval(s, t, &v, fz_u8(&in) & 1 ? &raw : NULL);
            FZ_STATUS_OK(st);
            if (!(t >= 0.0 && t <= 1.0)) FZ_ASSERT(st == DFM_ERANGE);
            if (st) {
                FZ_ASSERT(memcmp(&v, &poison, sizeof v) == 0);
                if (st == DFM_ECALLBACK) FZ_ASSERT(kind == DFM_SCHED_CUSTOM && cb.fail);
                if (st == DFM_ECALLBACK && raw != 12345) FZ_ASSERT(raw == cb.fail);
                continue;
            }
            FZ_ASSERT(!isnan(v.alpha) && !isnan(v.sigma));
            FZ_ASSERT(!isnan(v.d_alpha) && !isnan(v.d_sigma));
            if (kind != DFM_SCHED_CUSTOM) {
                FZ_ASSERT(v.alpha >= 0.0 && v.alpha <= 1.0);
                FZ_ASSERT(v.sigma >= 0.0 && v.sigma <= 1.0);
                FZ_ASSERT(v.d_alpha >= 0.0);
                FZ_ASSERT(v.d_sigma <= 0.0);
                FZ_ASSERT(isfinite(v.alpha) && isfinite(v.sigma));
            } else {
                FZ_ASSERT(isfinite(v.alpha) && isfinite(v.sigma));
            }
        } else {
            double k = fz_u8(&in) & 1 ? fz_double(&in) : fz_time(&in), t = -7.0;
            int raw = 12345;
            st = dfm_scheduler_kappa_inverse(s, k, &t, &raw);
            FZ_STATUS_OK(st);
            if (isnan(k)) FZ_ASSERT(st == DFM_EINVAL);
            if (st) {
                FZ_ASSERT(t == -7.0);
                if (st == DFM_ECALLBACK) FZ_ASSERT(raw == cb.fail && cb.fail);
                if (st == DFM_EUNSUPPORTED) FZ_ASSERT(kind == DFM_SCHED_CUSTOM);
                continue;
            }
            FZ_ASSERT(t >= 0.0 && t <= 1.0);
            if (kind != DFM_SCHED_CUSTOM && kind != DFM_SCHED_POLYNOMIAL && kind != DFM_SCHED_VP) {
                /* Strictly increasing, well-conditioned alphas: the inverse round-trips. */
                dfm_sched_values v;
                FZ_ASSERT(dfm_scheduler_eval(s, t, &v, NULL) == 0);
                FZ_ASSERT(fabs(v.alpha - k) <= 1e-9);
            }
        }
    }
    dfm_scheduler_free(s);
    FZ_ASSERT(in.live == 0);
    return 0;
}
