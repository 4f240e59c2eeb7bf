/* Shared pieces of the module harnesses (fuzz_discrete.c, fuzz_continuous.c, fuzz_ctmc.c): a
 * model callback that returns fuzzed values (NaN, +-Inf, huge, subnormal ...) and fails at a
 * fuzzed call, a progress callback that stops at a fuzzed step, a custom scheduler, message
 * checks. */
#ifndef DFM_FUZZ_COMMON_MOD_H
#define DFM_FUZZ_COMMON_MOD_H

#include "fuzz_input.h"

#define FZM_POOL 16

typedef struct fzm {
    float pool[FZM_POOL];  /* model outputs cycle through these */
    int fail_at;           /* model call that fails (0: never) */
    int stop_at;           /* progress call that stops (0: never) */
    int calls, progress_calls;
    int positive;          /* 1: |pool| (rates) */
} fzm;

static void fzm_init(fzm *m, fz *in, int positive)
{
    memset(m, 0, sizeof *m);
    int mode = fz_u8(in) % 4; /* 0: tame values, else fuzzed logits */
    for (int i = 0; i < FZM_POOL; i++) {
        float v = mode == 0 ? (float)(int8_t)fz_u8(in) / 16.0f : fz_logit(in);
        m->pool[i] = positive ? fabsf(v) : v;
    }
    m->positive = positive;
    m->fail_at = fz_u8(in) % 4 == 0 ? 1 + (int)fz_below(in, 8) : 0;
    m->stop_at = fz_u8(in) % 4 == 0 ? 1 + (int)fz_below(in, 8) : 0;
}

static int fzm_model(const dfm_model_io *io, void *u)
{
    fzm *m = (fzm *)u;
    FZ_ASSERT(io->struct_size == sizeof *io);
    for (size_t r = 0; r < io->rows; r++) {
        if (!(io->t[r] >= 0.0 && io->t[r] <= 1.0) && getenv("FZ_DEBUG"))
            fprintf(stderr, "model called with t[%zu] = %.17g (step %d)\n", r, io->t[r], io->step);
        FZ_ASSERT(io->t[r] >= 0.0 && io->t[r] <= 1.0);
    }
    if (++m->calls == m->fail_at) return -77;
    for (size_t r = 0; r < io->rows; r++)
        for (size_t j = 0; j < io->out_stride; j++) {
            float v = m->pool[(r * 7 + j * 3 + (size_t)(io->step + 1)) % FZM_POOL];
            if (io->reals && j < io->n_reals && !m->positive) v += io->reals[r * io->n_reals + j];
            io->out[r * io->out_stride + j] = v;
        }
    return 0;
}

static int fzm_progress(int step, int n, double t, void *u)
{
    fzm *m = (fzm *)u;
    FZ_ASSERT(step >= 0 && (step < n || n == 0) && t >= 0.0 && t <= 1.0); /* n = 0: adaptive (DOPRI5) */
    return ++m->progress_calls == m->stop_at;
}

static void fzm_msg(const char *msg, int st)
{
    FZ_ASSERT(msg != NULL);
    size_t len = strnlen(msg, DFM_ERROR_MAX);
    FZ_ASSERT(len < DFM_ERROR_MAX);
    if (st) FZ_ASSERT(len > 0);
}

/* A run status after a model that may fail and a progress that may stop. */
static void fzm_check_run(const fzm *m, int st, int raw)
{
    FZ_STATUS_OK(st);
    if (m->fail_at && m->calls >= m->fail_at) {
        /* the failing call ends the operation: no call after it, its raw value reported */
        FZ_ASSERT(m->calls == m->fail_at && st == DFM_ECALLBACK && raw == -77);
    }
    if (st == DFM_ECALLBACK && raw == -77) FZ_ASSERT(m->fail_at && m->calls == m->fail_at);
    if (st == 0) FZ_ASSERT(!m->stop_at || m->progress_calls < m->stop_at);
}

/* Custom scheduler: condOT-like with a fuzzed exponent; fails when asked. */
typedef struct fzs { double p; int fail; } fzs;
static int fzs_eval(double t, dfm_sched_values *v, void *u)
{
    const fzs *s = (const fzs *)u;
    if (s->fail) return 5;
    v->alpha = pow(t, s->p); v->sigma = 1.0 - v->alpha;
    v->d_alpha = s->p * pow(t, s->p - 1.0); v->d_sigma = -v->d_alpha;
    return 0;
}
static int fzs_inv(double k, double *t, void *u)
{
    const fzs *s = (const fzs *)u;
    if (s->fail) return 6;
    *t = pow(k, 1.0 / s->p);
    return 0;
}

/* A scheduler of a fuzzed kind (custom ones use *cs, which must outlive the scheduler). */
static int fz_scheduler(fz *in, dfm_scheduler **s, fzs *cs)
{
    switch (fz_u8(in) % 7) {
    case 0: return dfm_scheduler_create_condot(s, NULL);
    case 1: return dfm_scheduler_create_polynomial(s, fz_u8(in) & 1 ? fz_double(in) : 0.5 + fz_below(in, 6), NULL);
    case 2: return dfm_scheduler_create_cosine(s, NULL);
    case 3: return dfm_scheduler_create_linear_vp(s, NULL);
    case 4: return dfm_scheduler_create_vp(s, fz_u8(in) & 1 ? fz_double(in) : 0.1,
                                           fz_u8(in) & 1 ? fz_double(in) : 20.0, NULL);
    default:
        cs->p = fz_u8(in) & 1 ? fz_double(in) : 1.0 + fz_below(in, 3);
        cs->fail = fz_u8(in) % 8 == 0;
        return dfm_scheduler_create_custom(s, fzs_eval, fz_u8(in) & 1 ? fzs_inv : NULL, cs, NULL);
    }
}

#endif
