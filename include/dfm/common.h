/* libdfm: common definitions shared by every module.
 * Versions, status codes, the allocator, the model callback descriptor. */
#ifndef DFM_COMMON_H
#define DFM_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Symbol visibility. Built with -fvisibility=hidden; only DFM_API leaves the shared object. */
#ifndef DFM_API
#  if defined(_WIN32) || defined(__CYGWIN__)
#    if defined(DFM_BUILDING)
#      define DFM_API __declspec(dllexport)
#    elif defined(DFM_STATIC)
#      define DFM_API
#    else
#      define DFM_API __declspec(dllimport)
#    endif
#  elif defined(__GNUC__) && __GNUC__ >= 4
#    define DFM_API __attribute__((visibility("default")))
#  else
#    define DFM_API
#  endif
#endif

/* Version: the one source of truth (read by the Makefile and meson.build). */
#define DFM_VERSION_MAJOR 0
#define DFM_VERSION_MINOR 2
#define DFM_VERSION_PATCH 0
#define DFM_VERSION_NUMBER (DFM_VERSION_MAJOR * 10000 + DFM_VERSION_MINOR * 100 + DFM_VERSION_PATCH)
#define DFM_VERSION_STRING "0.2.0"

/** Run-time version: DFM_VERSION_NUMBER of the library actually linked. */
DFM_API unsigned dfm_version_number(void);
/** Run-time version string, e.g. "0.1.0". Static, never NULL. */
DFM_API const char *dfm_version_string(void);

/* Status codes. Values are frozen: new codes are only appended. */
#define DFM_OK          0  /* success */
#define DFM_EINVAL      1  /* an argument is invalid (NULL, out of range, inconsistent) */
#define DFM_ENOMEM      2  /* an allocation failed */
#define DFM_EOVERFLOW   3  /* a size computation overflows size_t */
#define DFM_ECALLBACK   4  /* a host callback returned nonzero */
#define DFM_ENUMERIC    5  /* NaN/Inf or an invalid probability/rate met */
#define DFM_ERANGE      6  /* a token, time or index is out of its range */
#define DFM_EUNSUPPORTED 7 /* the operation does not exist for this kind of object */
#define DFM_ESTOPPED    8  /* a progress callback asked to stop */
#define DFM_ESTATE      9  /* the handle is not in a state that allows the call */
#define DFM_ELIMIT     10  /* a documented limit was exceeded (step underflow, rate bound, size) */
#define DFM_STATUS_COUNT 11 /* one past the last code */

/** A static, human-readable description of a status code; never NULL (also for unknown codes). */
DFM_API const char *dfm_strerror(int status);
/** Function twin of DFM_STATUS_COUNT for FFI users. */
DFM_API int dfm_status_count(void);
/** The message of the last call that failed on the calling thread ("" before the first
 * failure); never NULL, valid until the thread's next failing libdfm call. Every failing call
 * sets it, those without a handle (creators, dfm_time_sample, spaces, schedulers, NULL handles)
 * and those with one (which also keep it: dfm_<handle>_last_error). Successful calls leave it
 * unchanged: read it right after a call returned nonzero. Thread-local (docs/errors.md). */
DFM_API const char *dfm_last_error(void);

/** Optional allocator, copied into each handle that receives it (NULL: malloc/free).
 * alloc may return NULL; libdfm then fails with DFM_ENOMEM. Both members must be set. */
typedef struct dfm_allocator {
    void *(*alloc)(size_t size, void *opaque);
    void (*free)(void *ptr, void *opaque);
    void *opaque;
} dfm_allocator;

/** Length of the per-handle error message buffers, including the terminating NUL. */
#define DFM_ERROR_MAX 256

/** What a model call is for (dfm_model_io.branch). */
#define DFM_BRANCH_MAIN   0 /* the ordinary (or conditional) model output */
#define DFM_BRANCH_UNCOND 1 /* the unconditional output, asked for by guidance */

/** The descriptor every model callback receives. Its first field is its own size: fields are only
 * ever appended, so a host compiled against an older header reads the prefix it knows.
 * All pointers are valid only during the call. Layout of states: row-major, rows x n_tokens
 * int32 tokens and rows x n_reals float reals. The model fills out[rows][out_stride]. */
typedef struct dfm_model_io {
    size_t struct_size;     /* sizeof(dfm_model_io) as libdfm knows it */
    size_t rows;            /* rows in this call */
    size_t row_offset;      /* global index of the first row of this call */
    const double *t;        /* per-row times, rows entries, each in [0, 1] */
    const int32_t *tokens;  /* rows x n_tokens, or NULL when the space has no discrete part */
    size_t n_tokens;
    const float *reals;     /* rows x n_reals, or NULL when the space has no continuous part */
    size_t n_reals;
    float *out;             /* rows x out_stride, written by the model */
    size_t out_stride;      /* floats per row of out */
    int branch;             /* DFM_BRANCH_MAIN or DFM_BRANCH_UNCOND */
    int step;               /* sampler step index, or -1 outside a sampler */
    /* Appended (generator matching, docs/gm.md): per-part times of a product space, rows x
     * n_part_t row-major (part k of row r at part_t[r * n_part_t + k]); NULL / 0 when the
     * operation has no per-part times (every part then runs at t). */
    const double *part_t;
    size_t n_part_t;
    /* Appended (discrete samplers, docs/discrete.md): the global index of each row of this
     * call, rows entries, when they are not row_offset, row_offset + 1, ... (a sampler with
     * DFM_OPT_DS_TIME_INDEPENDENT sends only the rows that changed); NULL otherwise. */
    const size_t *row_index;
} dfm_model_io;

/** The model callback. Return 0 on success; any nonzero value aborts the running operation with
 * DFM_ECALLBACK and the raw value stays queryable on the handle that called it.
 * On the handle that calls it, the callback may only query (const functions) and request a
 * stop: reconfiguring or rerunning it gives DFM_ESTATE, freeing it is ignored and makes the
 * running call return DFM_ESTATE (docs/errors.md). */
typedef int (*dfm_model_fn)(const dfm_model_io *io, void *user_data);

/** Progress callback, called once per sampler step after the step is done.
 * Return 0 to continue, nonzero to stop (the run then returns DFM_ESTOPPED and the value is
 * kept: dfm_sampler_callback_status). */
typedef int (*dfm_progress_fn)(int step, int n_steps, double t, void *user_data);

/* Options shared by every handle that takes options (set through dfm_<handle>_set_int / _double).
 * Each module owns a range of option ids: common 1-99, discrete 100-199, rate matrices 200-299,
 * continuous 300-399, generator matching 400-499. Values are frozen. */
#define DFM_OPT_THREADS 1 /* int, 1..DFM_MAX_THREADS: internal worker threads (default 1) */
#define DFM_OPT_SEED    2 /* int64 seed of the counter-based random streams (default 0) */
#define DFM_OPT_SPIN_US 4 /* int 0..1000000: microseconds an idle worker thread (and the calling
                           * thread waiting for workers) spins before sleeping (default 1000);
                           * never changes results */
#define DFM_MAX_THREADS 256
/** Function twin of DFM_MAX_THREADS. */
DFM_API int dfm_max_threads(void);

#ifdef __cplusplus
}
#endif
#endif /* DFM_COMMON_H */
