/* ex2_common.h: small host-side helpers of the checkerboard_continuous and ctmc examples (NOT
 * part of libdfm): a monotonic clock, strict command-line number parsing, an RGB canvas with
 * lines, rectangles and a 3x5 pixel font, and a PNG writer on libpng. Header-only (static
 * functions); a program links -lpng.
 *
 * Errors are returned, never printed: ex2_png_write returns 0 or -1 with errno set (EIO when
 * libpng itself fails). */
#ifndef DFM_EXAMPLES_EX2_COMMON_H
#define DFM_EXAMPLES_EX2_COMMON_H

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Seconds from a monotonic clock. */
static inline double ex2_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Parses a whole decimal integer in [lo, hi]; 0 on success, -1 otherwise (*out untouched). */
static inline int ex2_parse_long(const char *s, long lo, long hi, long *out)
{
    if (!s || !*s) return -1;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* Parses a whole finite number in [lo, hi]; 0 on success, -1 otherwise. */
static inline int ex2_parse_double(const char *s, double lo, double hi, double *out)
{
    if (!s || !*s) return -1;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* Sets the thread count of OpenBLAS when the program runs on OpenBLAS (a weak reference: with
 * another CBLAS the call is skipped and the BLAS keeps its own setting). */
#if defined(__GNUC__)
extern void openblas_set_num_threads(int num_threads) __attribute__((weak));
static inline void ex2_blas_threads(int n)
{
    if (openblas_set_num_threads) openblas_set_num_threads(n);
}
#else
static inline void ex2_blas_threads(int n) { (void)n; }
#endif

/* ---- an RGB canvas ---- */

typedef struct ex2_img {
    int w, h;
    uint8_t *rgb; /* h rows of w pixels, 3 bytes each */
} ex2_img;

/* 0, or -1 (ENOMEM / EINVAL). The canvas starts white. */
static inline int ex2_img_init(ex2_img *im, int w, int h)
{
    im->rgb = NULL;
    if (w <= 0 || h <= 0 || w > 16384 || h > 16384) { errno = EINVAL; return -1; }
    im->rgb = (uint8_t *)malloc((size_t)w * (size_t)h * 3);
    if (!im->rgb) { errno = ENOMEM; return -1; }
    im->w = w;
    im->h = h;
    memset(im->rgb, 255, (size_t)w * (size_t)h * 3);
    return 0;
}

static inline void ex2_img_free(ex2_img *im)
{
    free(im->rgb);
    im->rgb = NULL;
}

static inline void ex2_px(ex2_img *im, int x, int y, uint32_t c)
{
    if (x < 0 || y < 0 || x >= im->w || y >= im->h) return;
    uint8_t *p = im->rgb + ((size_t)y * (size_t)im->w + (size_t)x) * 3;
    p[0] = (uint8_t)(c >> 16);
    p[1] = (uint8_t)(c >> 8);
    p[2] = (uint8_t)c;
}

static inline void ex2_rect(ex2_img *im, int x0, int y0, int x1, int y1, uint32_t c)
{
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) ex2_px(im, x, y, c);
}

/* A line of the given thickness (Bresenham, square pen). */
static inline void ex2_line(ex2_img *im, int x0, int y0, int x1, int y1, int thick, uint32_t c)
{
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int err = dx + dy, r = thick / 2;
    for (;;) {
        ex2_rect(im, x0 - r, y0 - r, x0 - r + thick - 1, y0 - r + thick - 1, c);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * err;
        if (e2 >= dy) { err += dy; x0 += sx; }
        if (e2 <= dx) { err += dx; y0 += sy; }
    }
}

/* 3x5 glyphs: five rows of three bits (4 = left column). Letters are drawn as capitals. */
static inline const uint8_t *ex2_glyph(char ch)
{
    static const uint8_t digits[10][5] = {
        {7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7}, {7, 1, 3, 1, 7}, {5, 5, 7, 1, 1},
        {7, 4, 7, 1, 7}, {7, 4, 7, 5, 7}, {7, 1, 1, 1, 1}, {7, 5, 7, 5, 7}, {7, 5, 7, 1, 7}};
    static const uint8_t letters[26][5] = {
        {2, 5, 7, 5, 5}, {6, 5, 6, 5, 6}, {3, 4, 4, 4, 3}, {6, 5, 5, 5, 6}, {7, 4, 6, 4, 7},
        {7, 4, 6, 4, 4}, {3, 4, 5, 5, 3}, {5, 5, 7, 5, 5}, {7, 2, 2, 2, 7}, {1, 1, 1, 5, 2},
        {5, 5, 6, 5, 5}, {4, 4, 4, 4, 7}, {5, 7, 7, 5, 5}, {6, 5, 5, 5, 5}, {2, 5, 5, 5, 2},
        {6, 5, 6, 4, 4}, {2, 5, 5, 6, 3}, {6, 5, 6, 5, 5}, {3, 4, 2, 1, 6}, {7, 2, 2, 2, 2},
        {5, 5, 5, 5, 7}, {5, 5, 5, 5, 2}, {5, 5, 7, 7, 5}, {5, 5, 2, 5, 5}, {5, 5, 2, 2, 2},
        {7, 1, 2, 4, 7}};
    static const uint8_t dot[5] = {0, 0, 0, 0, 2}, minus[5] = {0, 0, 7, 0, 0},
                         eq[5] = {0, 7, 0, 7, 0}, colon[5] = {0, 2, 0, 2, 0},
                         lpar[5] = {1, 2, 2, 2, 1}, rpar[5] = {4, 2, 2, 2, 4},
                         slash[5] = {1, 1, 2, 4, 4}, comma[5] = {0, 0, 0, 2, 4},
                         plus[5] = {0, 2, 7, 2, 0}, blank[5] = {0, 0, 0, 0, 0};
    if (ch >= '0' && ch <= '9') return digits[ch - '0'];
    if (ch >= 'a' && ch <= 'z') return letters[ch - 'a'];
    if (ch >= 'A' && ch <= 'Z') return letters[ch - 'A'];
    switch (ch) {
    case '.': return dot;
    case '-': return minus;
    case '=': return eq;
    case ':': return colon;
    case '(': return lpar;
    case ')': return rpar;
    case '/': return slash;
    case ',': return comma;
    case '+': return plus;
    default: return blank;
    }
}

/* Width in pixels of s drawn at scale sc (4 sc per character, the last gap dropped). */
static inline int ex2_text_width(const char *s, int sc)
{
    int n = (int)strlen(s);
    return n ? (4 * n - 1) * sc : 0;
}

/* Draws s with its top-left corner at (x, y), each font pixel an sc x sc block. */
static inline void ex2_text(ex2_img *im, int x, int y, const char *s, int sc, uint32_t c)
{
    for (; *s; s++, x += 4 * sc) {
        const uint8_t *g = ex2_glyph(*s);
        for (int r = 0; r < 5; r++)
            for (int b = 0; b < 3; b++)
                if (g[r] & (4 >> b)) ex2_rect(im, x + b * sc, y + r * sc, x + b * sc + sc - 1,
                                              y + r * sc + sc - 1, c);
    }
}

/* Writes an 8-bit RGB PNG. 0, or -1 with errno set (from fopen/fclose, or EIO). */
static inline int ex2_png_write(const char *path, const ex2_img *im)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        fclose(f);
        errno = ENOMEM;
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        errno = EIO;
        return -1;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)im->w, (png_uint_32)im->h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < im->h; y++)
        png_write_row(png, (png_const_bytep)(im->rgb + (size_t)y * (size_t)im->w * 3));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (fclose(f) != 0) return -1;
    return 0;
}

#endif
