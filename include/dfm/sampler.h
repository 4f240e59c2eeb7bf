/* libdfm: samplers (generic part). A sampler simulates a generator over a time grid, from x0 ~ p
 * to x1 ~ q, calling the host model once per stage with the whole batch. */
#ifndef DFM_SAMPLER_H
#define DFM_SAMPLER_H

#include "common.h"
#include "generator.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dfm_sampler dfm_sampler;

/* Methods (frozen). Which ones a generator accepts is documented with its kind. */
#define DFM_METHOD_EXACT        1  /* discrete mixture exact step */
#define DFM_METHOD_EULER        2  /* Euler (discrete: jump with 1 - exp(-h lambda); ODE) */
#define DFM_METHOD_MIDPOINT     3
#define DFM_METHOD_RK4          4
#define DFM_METHOD_DOPRI5       5  /* adaptive Dormand-Prince 5(4) */
#define DFM_METHOD_EULER_MARUYAMA 6
#define DFM_METHOD_UNIFORMIZATION 7 /* exact CTMC simulation by uniformization / thinning */
#define DFM_METHOD_GILLESPIE    8  /* exact, time-homogeneous rates */
#define DFM_METHOD_TAU_LEAPING  9  /* per-token Poisson jumps with rates frozen over a step */
#define DFM_METHOD_THETA_TRAPEZOIDAL 10 /* two-stage second-order tau-leaping (Ren et al. 2025) */

/* Sampler statistics (dfm_sampler_get_stat), frozen. */
#define DFM_STAT_MODEL_CALLS 1 /* model callback invocations in the last run */
#define DFM_STAT_STEPS       2 /* steps taken (accepted) */
#define DFM_STAT_REJECTED    3 /* rejected adaptive steps / thinning rejections */
#define DFM_STAT_JUMPS       4 /* discrete jumps made */
#define DFM_STAT_CLAMPED     5 /* rate entries clamped at zero (guidance, Euler on rate matrices) */
#define DFM_STAT_MODEL_ROWS  6 /* rows sent to the model over the last run */

/** Arguments of dfm_sampler_run; appended to only. */
typedef struct dfm_run_args {
    size_t struct_size;
    dfm_model_fn model;
    void *model_data;
    size_t rows;
    size_t row_offset;        /* global index of row 0: random streams are keyed by it, so a
                                 batch split into shards gives the same samples */
    int32_t *tokens;          /* in/out rows x n_tokens: x0 on entry, samples on success */
    float *reals;             /* in/out rows x n_reals */
    int draw_source;          /* nonzero: ignore the entry values and draw x0 from the source */
    const uint8_t *fixed;     /* rows x n_tokens, nonzero = never changes (infilling), or NULL */
    const double *save_times; /* n_save increasing times at which to save intermediate states */
    size_t n_save;
    int32_t *saved_tokens;    /* out: n_save x rows x n_tokens */
    float *saved_reals;       /* out: n_save x rows x n_reals */
    dfm_progress_fn progress;
    void *progress_data;
} dfm_run_args;

/** A sampler for generator g with the given method; g is copied. DFM_EUNSUPPORTED when the
 * generator's kind does not offer the method. */
DFM_API int dfm_sampler_create(dfm_sampler **out, const dfm_generator *g, int method,
                               const dfm_allocator *mem);
DFM_API void dfm_sampler_free(dfm_sampler *s);
DFM_API int dfm_sampler_method(const dfm_sampler *s);
DFM_API const char *dfm_sampler_last_error(const dfm_sampler *s);
DFM_API int dfm_sampler_callback_status(const dfm_sampler *s);
/** Uniform grid of n_steps steps on [0, 1] (the default: 64). */
DFM_API int dfm_sampler_set_steps(dfm_sampler *s, size_t n_steps);
/** Host time grid: n >= 2 strictly monotone times in [0, 1] (copied). Increasing runs noise ->
 * data; a decreasing grid (continuous flows only) runs data -> noise. */
DFM_API int dfm_sampler_set_grid(dfm_sampler *s, const double *grid, size_t n);
/** Options: DFM_OPT_THREADS, DFM_OPT_SEED, and kind-specific ones (see module headers). */
DFM_API int dfm_sampler_set_int(dfm_sampler *s, int option, int64_t value);
DFM_API int dfm_sampler_get_int(const dfm_sampler *s, int option, int64_t *value);
DFM_API int dfm_sampler_set_double(dfm_sampler *s, int option, double value);
DFM_API int dfm_sampler_get_double(const dfm_sampler *s, int option, double *value);
/** Run. Inputs are never modified except tokens/reals, which receive the samples only on success.
 * May be called again; each run is reproducible from the seed. */
DFM_API int dfm_sampler_run(dfm_sampler *s, const dfm_run_args *args);
/** Statistics of the last run (DFM_STAT_*); from inside a callback: of the run so far. */
DFM_API int dfm_sampler_get_stat(const dfm_sampler *s, int stat, int64_t *value);
/** Ask a running sampler to stop after the current step (DFM_ESTOPPED). Safe from inside its
 * callbacks and from any other thread. A request made while no run is in progress stops the
 * next run before it starts; every run clears the request when it returns. */
DFM_API void dfm_sampler_request_stop(dfm_sampler *s);

#ifdef __cplusplus
}
#endif
#endif
