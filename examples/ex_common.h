/* ex_common.h: small host-side helpers shared by libdfm's examples (NOT part of libdfm, never
 * exported; every function is `static inline`). Command-line parsing with range checks and
 * clear messages, a monotonic clock, the machine's load average, the number of BLAS threads,
 * and PNG writing through libpng (link -lpng).
 *
 * Conventions: helpers that can fail print one line "<prog>: <what went wrong>" on stderr and
 * return nonzero; the program then exits with a nonzero status (2 for bad usage, 1 otherwise).
 * Call ex_set_prog(argv[0]) first so the messages carry the program's name. */
#ifndef DFM_EXAMPLES_EX_COMMON_H
#define DFM_EXAMPLES_EX_COMMON_H

#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

/* ---- messages ---- */

static const char *ex__prog = "example";

/** Sets the name used in messages (the basename of argv0). */
static inline void ex_set_prog(const char *argv0)
{
    if (!argv0 || !*argv0) return;
    const char *s = strrchr(argv0, '/');
    ex__prog = s ? s + 1 : argv0;
}

/** Prints "<prog>: <message>\n" on stderr. */
#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static inline void ex_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", ex__prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- time and load ---- */

/** Seconds on a monotonic clock (only differences are meaningful). */
static inline double ex_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/** The 1-minute load average from /proc/loadavg, or -1 when it cannot be read. Examples print
 * it next to their timings: on a shared machine a load above the core count slows them down. */
static inline double ex_loadavg(void)
{
    FILE *f = fopen("/proc/loadavg", "r");
    double l = -1.0;
    if (!f) return -1.0;
    if (fscanf(f, "%lf", &l) != 1) l = -1.0;
    fclose(f);
    return l;
}

/** Sets the number of threads the BLAS uses inside sgemm (OpenBLAS only; a no-op with another
 * CBLAS, which then follows its own environment variables). */
static inline void ex_set_blas_threads(int n)
{
#if defined(OPENBLAS_VERSION)
    openblas_set_num_threads(n);
#else
    (void)n;
#endif
}

/* ---- command line ----
 * Options are "--name value" or "--name=value". Typical loop:
 *
 *   for (int i = 1; i < argc; i++) {
 *       const char *v;
 *       int m;
 *       if ((m = ex_opt(argc, argv, &i, "--iters", &v)) != 0) {
 *           if (m < 0 || ex_parse_long("--iters", v, 1, 1000000, &iters)) return 2;
 *       } else if (...) {
 *       } else { ex_error("unknown option '%s' (try --help)", argv[i]); return 2; }
 *   }
 */

/** Matches argv[*i] against the option name. Returns 0 when it is another option, 1 when it
 * matches (*value points at its value; *i is advanced past a separate value), -1 when the value
 * is missing (a message is printed). */
static inline int ex_opt(int argc, char **argv, int *i, const char *name, const char **value)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0') return 0;
    if (*i + 1 >= argc) {
        ex_error("option %s needs a value", name);
        return -1;
    }
    *value = argv[++*i];
    return 1;
}

/** Parses a whole decimal integer in [lo, hi]. Returns 0, or prints a message and returns -1. */
static inline int ex_parse_long(const char *name, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno == ERANGE) {
        ex_error("%s: '%s' is not an integer", name, s);
        return -1;
    }
    if (v < lo || v > hi) {
        ex_error("%s must be in [%ld, %ld], got %ld", name, lo, hi, v);
        return -1;
    }
    *out = v;
    return 0;
}

/** Parses a finite number in [lo, hi]. Returns 0, or prints a message and returns -1. */
static inline int ex_parse_double(const char *name, const char *s, double lo, double hi,
                                  double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno == ERANGE || !isfinite(v)) {
        ex_error("%s: '%s' is not a finite number", name, s);
        return -1;
    }
    if (v < lo || v > hi) {
        ex_error("%s must be in [%g, %g], got %g", name, lo, hi, v);
        return -1;
    }
    *out = v;
    return 0;
}

/** Parses one of n choices (exact match); *out = its index. Returns 0, or prints the allowed
 * values and returns -1. */
static inline int ex_parse_choice(const char *name, const char *s, const char *const *choices,
                                  int n, int *out)
{
    for (int k = 0; k < n; k++)
        if (strcmp(s, choices[k]) == 0) {
            *out = k;
            return 0;
        }
    fprintf(stderr, "%s: %s must be one of", ex__prog, name);
    for (int k = 0; k < n; k++) fprintf(stderr, " %s", choices[k]);
    fprintf(stderr, ", got '%s'\n", s);
    return -1;
}

/* ---- PNG ---- */

/** Writes an 8-bit image (channels 1 = gray, 3 = RGB, 4 = RGBA), rows top to bottom, pixels
 * row-major with channels interleaved. Returns 0, or prints a message naming the file and the
 * reason (e.g. "No such file or directory") and returns -1; a partly written file is removed. */
static inline int ex_write_png(const char *path, int width, int height, int channels,
                               const uint8_t *pixels)
{
    int type = channels == 1 ? PNG_COLOR_TYPE_GRAY
             : channels == 3 ? PNG_COLOR_TYPE_RGB
             : channels == 4 ? PNG_COLOR_TYPE_RGBA : -1;
    if (!path || !pixels || width <= 0 || height <= 0 || type < 0) {
        ex_error("ex_write_png: bad arguments");
        return -1;
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        ex_error("cannot write '%s': %s", path, strerror(errno));
        return -1;
    }
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        fclose(f);
        remove(path);
        ex_error("cannot write '%s': out of memory", path);
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        remove(path);
        ex_error("cannot write '%s': libpng error", path);
        return -1;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, type, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < height; y++)
        png_write_row(png, pixels + (size_t)y * (size_t)width * (size_t)channels);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (fclose(f) != 0) {
        remove(path);
        ex_error("cannot write '%s': %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/** Checks early that path can be created for writing (so a long run does not fail at its end):
 * opens it for appending and closes it, removing it again if it did not exist. Returns 0, or
 * prints a message and returns -1. */
static inline int ex_check_writable(const char *path)
{
    FILE *f = fopen(path, "rb");
    int existed = f != NULL;
    if (f) fclose(f);
    f = fopen(path, "ab");
    if (!f) {
        ex_error("cannot write '%s': %s", path, strerror(errno));
        return -1;
    }
    fclose(f);
    if (!existed) remove(path);
    return 0;
}

#endif
