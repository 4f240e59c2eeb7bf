/* Helpers shared by the modules' fault scenarios (tests/fault/<module>.h): a model callback that
 * writes valid output of each parameterization, progress / custom-scheduler callbacks that tick
 * the fixture, and a sampler-run wrapper that checks a failed run left every output unwritten.
 * Which callbacks tick (count toward "the k-th call fails") is chosen per scenario. */
#ifndef DFM_TEST_FAULT_MODCOMMON_H
#define DFM_TEST_FAULT_MODCOMMON_H

#include "fault.h"
#include <math.h>

/* Callbacks that tick (fxm.ticks). */
#define FXM_MODEL    1
#define FXM_PROGRESS 2
#define FXM_SCHED    4
#define FXM_OTHER    8 /* corrector, g(t), divergence, log p0, finite path, distance, rate fn */

/* What the model writes (fxm.out). */
#define FXM_LOGITS   1 /* posterior logits (finite, some spread) */
#define FXM_RATES    2 /* nonnegative rates */
#define FXM_VELOCITY 3 /* -x / 2 (finite) */

typedef struct fxm {
    fx *f;
    int ticks;
    int out;
} fxm;

static inline fxm fxm_make(fx *f, int ticks, int out)
{
    fxm m;
    m.f = f;
    m.ticks = ticks;
    m.out = out;
    return m;
}

static inline int fxm_tick(fxm *m, int which)
{
    return (m->ticks & which) ? fx_tick(m->f) : 0;
}

static int fxm_model(const dfm_model_io *io, void *u)
{
    fxm *m = (fxm *)u;
    int r = fxm_tick(m, FXM_MODEL);
    if (r) return r;
    for (size_t i = 0; i < io->rows; i++)
        for (size_t j = 0; j < io->out_stride; j++) {
            float v;
            if (m->out == FXM_RATES) v = 0.25f + 0.125f * (float)((i + j) % 3);
            else if (m->out == FXM_VELOCITY)
                v = io->reals && j < io->n_reals ? -0.5f * io->reals[i * io->n_reals + j] : 0.0f;
            else v = 0.375f * (float)((i + 3 * j) % 5) - 0.5f;
            io->out[i * io->out_stride + j] = v;
        }
    return 0;
}

static int fxm_progress(int step, int n_steps, double t, void *u)
{
    (void)step; (void)n_steps; (void)t;
    return fxm_tick((fxm *)u, FXM_PROGRESS);
}

/* A custom scheduler equal to condOT (kappa = t), its inverse the identity. */
static int fxm_sched(double t, dfm_sched_values *v, void *u)
{
    int r = fxm_tick((fxm *)u, FXM_SCHED);
    if (r) return r;
    v->alpha = t; v->sigma = 1.0 - t; v->d_alpha = 1.0; v->d_sigma = -1.0;
    return 0;
}

static int fxm_sched_inv(double k, double *t, void *u)
{
    int r = fxm_tick((fxm *)u, FXM_SCHED);
    if (r) return r;
    *t = k;
    return 0;
}

/* Scheduler used by a scenario: condOT, or the ticking custom one (user data m). */
static inline dfm_scheduler *fxm_scheduler(fxm *m)
{
    dfm_scheduler *s = NULL;
    if (m && (m->ticks & FXM_SCHED))
        ck_assert_int_eq(dfm_scheduler_create_custom(&s, fxm_sched, fxm_sched_inv, m, NULL), 0);
    else
        ck_assert_int_eq(dfm_scheduler_create_condot(&s, NULL), 0);
    return s;
}

/* Run description for fxm_run. */
typedef struct fxm_run_spec {
    size_t rows, n_tokens, n_reals;
    int32_t vocab;         /* entry tokens are (7 i + 3) mod vocab */
    int draw_source;
    int n_save;            /* 0..2 save times (0.25, 0.5; or 0.5, 0.25 for a decreasing grid) */
    int descending;
    int with_fixed;        /* fix every third position */
    int progress;
} fxm_run_spec;

/* Runs s (created by the scenario, typically with f->mem) under FX_CALL. On failure: tokens and
 * reals hold their entry values, saved buffers are untouched, a message is set. Stores the
 * sampler's raw callback status in f->raw_seen. */
static int fxm_run(fx *f, dfm_sampler *s, fxm *m, const fxm_run_spec *sp)
{
    FX_DECL;
    size_t nt = sp->rows * sp->n_tokens, nr = sp->rows * sp->n_reals;
    int32_t *tok = nt ? (int32_t *)malloc(nt * sizeof(int32_t)) : NULL;
    float *re = nr ? (float *)malloc(nr * sizeof(float)) : NULL;
    uint8_t *fixed = sp->with_fixed && nt ? (uint8_t *)calloc(nt, 1) : NULL;
    for (size_t i = 0; i < nt; i++) tok[i] = (int32_t)((7 * i + 3) % (size_t)sp->vocab);
    for (size_t i = 0; i < nr; i++) re[i] = 0.125f * (float)((int)(i % 9) - 4);
    if (fixed) for (size_t i = 0; i < nt; i += 3) fixed[i] = 1;
    void *tok0 = fx_dup(tok, nt * sizeof(int32_t)), *re0 = fx_dup(re, nr * sizeof(float));
    double save[2] = {0.25, 0.5};
    if (sp->descending) { save[0] = 0.5; save[1] = 0.25; }
    size_t ns = (size_t)sp->n_save;
    int32_t *stok = ns && nt ? (int32_t *)malloc(ns * nt * sizeof(int32_t)) : NULL;
    float *sre = ns && nr ? (float *)malloc(ns * nr * sizeof(float)) : NULL;
    if (stok) fx_fill(stok, ns * nt * sizeof(int32_t));
    if (sre) fx_fill(sre, ns * nr * sizeof(float));
    dfm_run_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.model = fxm_model;
    a.model_data = m;
    a.rows = sp->rows;
    a.row_offset = 5;
    a.tokens = tok;
    a.reals = re;
    a.draw_source = sp->draw_source;
    a.fixed = fixed;
    a.save_times = ns ? save : NULL;
    a.n_save = ns;
    a.saved_tokens = stok;
    a.saved_reals = sre;
    if (sp->progress) { a.progress = fxm_progress; a.progress_data = m; }
    int st = FX_CALL(f, dfm_sampler_run(s, &a));
    if (st) {
        ck_assert_msg(fx_same(tok, tok0, nt * sizeof(int32_t)), "%s: tokens written on failure", f->name);
        ck_assert_msg(fx_same(re, re0, nr * sizeof(float)), "%s: reals written on failure", f->name);
        if (stok) ck_assert_msg(fx_unchanged(stok, ns * nt * sizeof(int32_t)), "%s: saved tokens written", f->name);
        if (sre) ck_assert_msg(fx_unchanged(sre, ns * nr * sizeof(float)), "%s: saved reals written", f->name);
        ck_assert_msg(dfm_sampler_last_error(s)[0] != '\0', "%s: no message", f->name);
    } else {
        for (size_t i = 0; i < nt; i++) ck_assert_msg(tok[i] >= 0 && tok[i] < sp->vocab, "%s: token", f->name);
        for (size_t i = 0; i < nr; i++) ck_assert_msg(isfinite(re[i]), "%s: real", f->name);
    }
    f->raw_seen = dfm_sampler_callback_status(s);
    free(tok); free(re); free(fixed); free(tok0); free(re0); free(stok); free(sre);
    return st;
}

/* Creates a sampler under FX_CALL (allocation scenarios of dfm_sampler_create). */
static inline int fxm_sampler_create(fx *f, const dfm_generator *g, int method)
{
    FX_DECL;
    dfm_sampler *s;
    FX_POISON_OUT(s);
    int st = FX_CALL(f, dfm_sampler_create(&s, g, method, &f->mem));
    fx_check_out(f, st, s);
    if (!st) ck_assert_int_eq(dfm_sampler_method(s), method);
    dfm_sampler_free(s);
    return st;
}

#endif
