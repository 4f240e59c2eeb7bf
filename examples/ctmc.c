/* ctmc: discrete flow matching without a neural network. The target q is a small structured
 * distribution on [4]^3 (S = 64 flattened states, half of them with probability 0); the path is
 * libdfm's metric-induced path (Shaul et al. 2024) with d(x, y) = |x - y| per coordinate, and the
 * model is the exact posterior p_{1|t}(x1 | x) over the 64 states, so the generator libdfm forms
 * (DFM_PARAM_STATE_LOGITS) is the exact marginal rate matrix Q_t of the path. The program
 *  1. checks Q_t: propagating p_0 with Kolmogorov's equation (RK4) gives the path's marginal p_t;
 *  2. samples with Euler for 4 .. 128 steps and exactly (uniformization), and reports the
 *     total-variation distance of each histogram to q, next to the TV of the exact law of the
 *     Euler chain (computed, no sampling noise) and the sampling-noise floor;
 *  3. draws the TV-vs-steps plot as a PNG.
 *
 * Usage: ctmc [--samples N] [--threads N] [--seed N] [--c C] [--out FILE.png] */
#include <dfm/dfm.h>

#include "ex2_common.h"

enum { V = 4, D = 3, S = 64, N_EULER = 6 };
static const int euler_steps[N_EULER] = {4, 8, 16, 32, 64, 128};

/* The target: q(x) ~ (1 + x0 x1) exp(-(x2 - x0)^2 / 2) on states with an even coordinate sum,
 * 0 elsewhere. */
static void make_target(double *q)
{
    double z = 0.0;
    for (int s = 0; s < S; s++) {
        int a = s / 16, b = (s / 4) % 4, c = s % 4;
        q[s] = (a + b + c) % 2 ? 0.0 : (1.0 + a * b) * exp(-0.5 * (c - a) * (c - a));
        z += q[s];
    }
    for (int s = 0; s < S; s++) q[s] /= z;
}

/* The path's per-coordinate conditional law p_t(v | a) = softmax_v(-beta_t |v - a|),
 * beta_t = c t / (1 - t) (CondOT kappa = t), written from the formula (independently of
 * libdfm). logp[a][v]. */
static void cond_logp(double c, double t, double logp[V][V])
{
    double beta = c * t / (1.0 - t);
    for (int a = 0; a < V; a++) {
        double m = -INFINITY, z = 0.0;
        for (int v = 0; v < V; v++) m = fmax(m, -beta * abs(v - a));
        for (int v = 0; v < V; v++) z += exp(-beta * abs(v - a) - m);
        for (int v = 0; v < V; v++) logp[a][v] = -beta * abs(v - a) - m - log(z);
    }
}

typedef struct model_ctx {
    double c;
    double logq[S];
    double L[S][S]; /* L[x][x1] = log q(x1) + sum_i log p_t(x_i | x1_i) at the last t */
    long calls;
} model_ctx;

/* The exact posterior: logit(x1 | x) = log q(x1) + sum_i log p_t(x_i | x1_i). The table
 * L[x][x1] of the sums is rebuilt when the time changes (rows of a call may differ in t). */
static int posterior_model(const dfm_model_io *io, void *user)
{
    model_ctx *m = (model_ctx *)user;
    double logp[V][V], tprev = -1.0;
    if (io->n_tokens != D || io->out_stride != S) return 1;
    for (size_t r = 0; r < io->rows; r++) {
        if (io->t[r] != tprev) {
            tprev = io->t[r];
            cond_logp(m->c, tprev, logp);
            for (int x = 0; x < S; x++)
                for (int s = 0; s < S; s++)
                    m->L[x][s] = m->logq[s] + logp[s / 16][x / 16] + logp[(s / 4) % 4][(x / 4) % 4] +
                              logp[s % 4][x % 4];
        }
        const int32_t *x = io->tokens + r * D;
        const double *l = m->L[x[0] * 16 + x[1] * 4 + x[2]];
        float *o = io->out + r * io->out_stride;
        for (int s = 0; s < S; s++) o[s] = (float)l[s];
    }
    m->calls++;
    return 0;
}

/* The path's marginal p_t(x) = sum_x1 q(x1) prod_i p_t(x_i | x1_i). */
static void marginal(double c, double t, const double *q, double *p)
{
    double logp[V][V];
    cond_logp(c, t, logp);
    for (int s = 0; s < S; s++) {
        int x[D] = {s / 16, (s / 4) % 4, s % 4};
        p[s] = 0.0;
        for (int s1 = 0; s1 < S; s1++) {
            if (q[s1] == 0.0) continue;
            int x1[D] = {s1 / 16, (s1 / 4) % 4, s1 % 4};
            double l = 0.0;
            for (int i = 0; i < D; i++) l += logp[x1[i]][x[i]];
            p[s] += q[s1] * exp(l);
        }
    }
}

/* The exact marginal rate matrix on the flattened space, built on the host from libdfm's
 * per-coordinate conditional rates (dfm_path_cond_rates) and the exact posterior:
 * Q_t(x, y) = sum_x1 p_{1|t}(x1 | x) Q^i_t(x_i, y_i | x1_i) when x, y differ only at i. */
typedef struct rate_ctx {
    dfm_path *path;
    model_ctx *m;
    int status;
} rate_ctx;

static int marginal_rates(double t, double *Q, size_t n, void *user)
{
    rate_ctx *rc = (rate_ctx *)user;
    double Qc[V][V * V], logp[V][V];
    for (int a = 0; a < V; a++) {
        int st = dfm_path_cond_rates(rc->path, t, a, Qc[a]);
        if (st) { rc->status = st; return 1; }
    }
    cond_logp(rc->m->c, t, logp);
    memset(Q, 0, sizeof(double) * n * n);
    for (int s = 0; s < S; s++) {
        int x[D] = {s / 16, (s / 4) % 4, s % 4};
        double post[S], mx = -INFINITY, z = 0.0;
        for (int s1 = 0; s1 < S; s1++) {
            int x1[D] = {s1 / 16, (s1 / 4) % 4, s1 % 4};
            double l = rc->m->logq[s1];
            for (int i = 0; i < D; i++) l += logp[x1[i]][x[i]];
            post[s1] = l;
            mx = fmax(mx, l);
        }
        for (int s1 = 0; s1 < S; s1++) z += post[s1] = exp(post[s1] - mx);
        for (int s1 = 0; s1 < S; s1++) {
            if (post[s1] == 0.0) continue;
            int x1[D] = {s1 / 16, (s1 / 4) % 4, s1 % 4};
            double w = post[s1] / z;
            for (int i = 0, pw = 16; i < D; i++, pw /= 4)
                for (int v = 0; v < V; v++)
                    if (v != x[i])
                        Q[(size_t)s * n + (size_t)(s + (v - x[i]) * pw)] +=
                            w * Qc[x1[i]][x[i] * V + v];
        }
    }
    return 0;
}

static double tv(const double *p, const double *q)
{
    double d = 0.0;
    for (int s = 0; s < S; s++) d += fabs(p[s] - q[s]);
    return 0.5 * d;
}

/* Histogram of flattened states over rows samples (tokens rows x D). */
static void histogram(const int32_t *tok, size_t rows, double *h)
{
    for (int s = 0; s < S; s++) h[s] = 0.0;
    for (size_t r = 0; r < rows; r++)
        h[tok[r * D] * 16 + tok[r * D + 1] * 4 + tok[r * D + 2]] += 1.0 / (double)rows;
}

/* ---- the plot ---- */

typedef struct plot {
    ex2_img im;
    int x0, y0, x1, y1; /* plot box in pixels */
    double lx0, lx1, ly0, ly1; /* log10 ranges */
} plot;

static int px_x(const plot *p, double v) { return p->x0 + (int)lround((log10(v) - p->lx0) / (p->lx1 - p->lx0) * (p->x1 - p->x0)); }
static int px_y(const plot *p, double v) { return p->y1 - (int)lround((log10(v) - p->ly0) / (p->ly1 - p->ly0) * (p->y1 - p->y0)); }

static void series(plot *p, const double *xs, const double *ys, int n, uint32_t col, int dashed, int marks)
{
    for (int k = 0; k + 1 < n; k++) {
        int ax = px_x(p, xs[k]), ay = px_y(p, ys[k]), bx = px_x(p, xs[k + 1]), by = px_y(p, ys[k + 1]);
        if (!dashed) { ex2_line(&p->im, ax, ay, bx, by, 3, col); continue; }
        int segs = 12;
        for (int j = 0; j < segs; j += 2)
            ex2_line(&p->im, ax + (bx - ax) * j / segs, ay + (by - ay) * j / segs,
                     ax + (bx - ax) * (j + 1) / segs, ay + (by - ay) * (j + 1) / segs, 2, col);
    }
    if (marks)
        for (int k = 0; k < n; k++)
            ex2_rect(&p->im, px_x(p, xs[k]) - 4, px_y(p, ys[k]) - 4, px_x(p, xs[k]) + 4,
                     px_y(p, ys[k]) + 4, col);
}

static int write_plot(const char *path, const double *tv_euler, const double *tv_law,
                      double tv_exact, double floor_tv, size_t rows)
{
    plot p = {.x0 = 90, .y0 = 50, .x1 = 690, .y1 = 430, .lx0 = log10(3.0), .lx1 = log10(170.0),
              .ly0 = -3.0, .ly1 = 0.0};
    if (ex2_img_init(&p.im, 720, 500)) return -1;
    double xs[N_EULER], lo = pow(10.0, p.ly0), hi = pow(10.0, p.ly1);
    for (int k = 0; k < N_EULER; k++) xs[k] = euler_steps[k];
    /* grid, ticks and labels */
    for (int e = -3; e <= 0; e++) {
        double v = pow(10.0, e);
        int y = px_y(&p, v);
        ex2_line(&p.im, p.x0, y, p.x1, y, 1, 0xdddddd);
        char lab[16];
        snprintf(lab, sizeof lab, e == 0 ? "1" : "0.%0*d", -e, 1);
        ex2_text(&p.im, p.x0 - 10 - ex2_text_width(lab, 2), y - 5, lab, 2, 0x000000);
    }
    for (int k = 0; k < N_EULER; k++) {
        int x = px_x(&p, xs[k]);
        ex2_line(&p.im, x, p.y0, x, p.y1, 1, 0xdddddd);
        char lab[16];
        snprintf(lab, sizeof lab, "%d", euler_steps[k]);
        ex2_text(&p.im, x - ex2_text_width(lab, 2) / 2, p.y1 + 10, lab, 2, 0x000000);
    }
    ex2_line(&p.im, p.x0, p.y0, p.x0, p.y1, 2, 0x000000);
    ex2_line(&p.im, p.x0, p.y1, p.x1, p.y1, 2, 0x000000);
    ex2_text(&p.im, (p.x0 + p.x1) / 2 - ex2_text_width("sampler steps", 2) / 2, p.y1 + 32,
             "sampler steps", 2, 0x000000);
    ex2_text(&p.im, 10, 20, "TV to target", 2, 0x000000);
    char title[96];
    snprintf(title, sizeof title, "ctmc: S=64, %zu samples per run", rows);
    ex2_text(&p.im, p.x0 + 120, 20, title, 2, 0x000000);
    /* series (values clamped into the axis range) */
    double ye[N_EULER], yl[N_EULER], yx[2], yf[2], xr[2] = {xs[0], xs[N_EULER - 1]};
    for (int k = 0; k < N_EULER; k++) {
        ye[k] = fmin(fmax(tv_euler[k], lo), hi);
        yl[k] = fmin(fmax(tv_law[k], lo), hi);
    }
    yx[0] = yx[1] = fmin(fmax(tv_exact, lo), hi);
    yf[0] = yf[1] = fmin(fmax(floor_tv, lo), hi);
    series(&p, xs, yl, N_EULER, 0x7fa7d9, 1, 0);
    series(&p, xr, yx, 2, 0xd62728, 0, 0);
    series(&p, xr, yf, 2, 0x888888, 1, 0);
    series(&p, xs, ye, N_EULER, 0x1f4fb4, 0, 1);
    /* legend */
    int lx = p.x1 - 300, ly = p.y0 + 10;
    ex2_rect(&p.im, lx - 10, ly - 8, p.x1 - 8, ly + 92, 0xffffff);
    const struct { uint32_t c; int dashed; const char *s; } leg[4] = {
        {0x1f4fb4, 0, "euler (sampled)"}, {0x7fa7d9, 1, "euler (exact law)"},
        {0xd62728, 0, "uniformization (sampled)"}, {0x888888, 1, "sampling noise floor"}};
    for (int k = 0; k < 4; k++) {
        int y = ly + 4 + 22 * k;
        if (leg[k].dashed)
            for (int j = 0; j < 40; j += 10) ex2_line(&p.im, lx + j, y, lx + j + 5, y, 2, leg[k].c);
        else ex2_line(&p.im, lx, y, lx + 40, y, 3, leg[k].c);
        ex2_text(&p.im, lx + 52, y - 5, leg[k].s, 2, 0x000000);
    }
    int rc = ex2_png_write(path, &p.im);
    ex2_img_free(&p.im);
    return rc;
}

int main(int argc, char **argv)
{
    long rows_l = 50000, threads = 1, seed = 7;
    double c = 3.0;
    const char *out = "ctmc_tv.png";
    for (int i = 1; i < argc; i += 2) { /* option, value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: ctmc [--samples N] [--threads N] [--seed N] [--c C] [--out FILE.png]\n");
            return 0;
        }
        if (!v) { fprintf(stderr, "ctmc: %s needs a value (or is unknown); see --help\n", a); return 2; }
        if (!strcmp(a, "--samples")) bad = ex2_parse_long(v, 100, 10000000, &rows_l);
        else if (!strcmp(a, "--threads")) bad = ex2_parse_long(v, 1, DFM_MAX_THREADS, &threads);
        else if (!strcmp(a, "--seed")) bad = ex2_parse_long(v, 0, LONG_MAX, &seed);
        else if (!strcmp(a, "--c")) bad = ex2_parse_double(v, 0.01, 100.0, &c);
        else if (!strcmp(a, "--out")) out = v;
        else { fprintf(stderr, "ctmc: unknown option %s; see --help\n", a); return 2; }
        if (bad) { fprintf(stderr, "ctmc: bad value for %s: '%s'\n", a, v); return 2; }
    }
    {
        FILE *f = fopen(out, "wb");
        if (!f) { fprintf(stderr, "ctmc: cannot write %s: %s\n", out, strerror(errno)); return 1; }
        fclose(f);
    }
    size_t rows = (size_t)rows_l;
    double q[S];
    model_ctx mc = {.c = c};
    make_target(q);
    for (int s = 0; s < S; s++) mc.logq[s] = q[s] > 0.0 ? log(q[s]) : -INFINITY;

    int st = 0, rc = 1;
    const char *where = "";
    dfm_space *space = NULL;
    dfm_scheduler *sched = NULL;
    dfm_path *path = NULL;
    dfm_generator *gen = NULL;
    dfm_sampler *smp = NULL;
    dfm_ctmc *w = NULL;
    int32_t *tok = malloc(sizeof(int32_t) * rows * D);
    double *Q = malloc(sizeof(double) * S * S);
    if (!tok || !Q) { fprintf(stderr, "ctmc: out of memory\n"); goto done; }
    double dist[V * V];
    for (int a = 0; a < V; a++)
        for (int b = 0; b < V; b++) dist[a * V + b] = abs(a - b);

#define TRY(call, what) do { st = (call); if (st) { where = (what); goto lib_fail; } } while (0)
    TRY(dfm_space_create_discrete(&space, V, D, NULL), "space");
    TRY(dfm_scheduler_create_condot(&sched, NULL), "scheduler");
    TRY(dfm_path_create_metric(&path, space, sched, c, dist, NULL, NULL, NULL), "metric path");
    TRY(dfm_generator_create_rate_matrix(&gen, path, NULL, DFM_PARAM_STATE_LOGITS, NULL),
        "rate-matrix generator");
    printf("ctmc: libdfm %s, [%d]^%d = %d states, metric path d = |x - y|, c = %g, "
           "exact posterior over the %d states as the model, %zu samples per run\n",
           dfm_version_string(), V, D, S, c, S, rows);

    /* 1. Kolmogorov check of the marginal rate matrix. */
    double p0[S], pt[S], pa[S], t_chk = 0.8;
    marginal(c, 0.0, q, p0);
    marginal(c, t_chk, q, pa);
    TRY(dfm_ctmc_create(&w, S, NULL), "ctmc workspace");
    rate_ctx rcx = {path, &mc, 0};
    st = dfm_ctmc_propagate_ode(w, p0, 1, marginal_rates, &rcx, 0.0, t_chk, 400, pt);
    if (st) { where = dfm_ctmc_last_error(w); goto lib_fail; }
    double kolmo = tv(pt, pa);
    printf("Kolmogorov check: TV(p0 propagated by the marginal Q_t to t=%.1f, analytic p_t) = %.2e\n",
           t_chk, kolmo);

    /* 2. Euler for each step count, then uniformization. */
    double tv_euler[N_EULER], tv_law[N_EULER], h[S];
    for (int k = 0; k < N_EULER; k++) {
        int n = euler_steps[k];
        TRY(dfm_sampler_create(&smp, gen, DFM_METHOD_EULER, NULL), "Euler sampler");
        TRY(dfm_sampler_set_int(smp, DFM_OPT_SEED, seed), "seed");
        TRY(dfm_sampler_set_int(smp, DFM_OPT_THREADS, threads), "threads");
        TRY(dfm_sampler_set_steps(smp, (size_t)n), "steps");
        dfm_run_args ra = {.struct_size = sizeof ra, .model = posterior_model, .model_data = &mc,
                           .rows = rows, .tokens = tok, .draw_source = 1};
        double t0 = ex2_now();
        st = dfm_sampler_run(smp, &ra);
        if (st) { where = dfm_sampler_last_error(smp); goto lib_fail; }
        int64_t clamped = 0;
        dfm_sampler_get_stat(smp, DFM_STAT_CLAMPED, &clamped);
        dfm_sampler_free(smp);
        smp = NULL;
        histogram(tok, rows, h);
        tv_euler[k] = tv(h, q);
        /* The exact law of the n-step Euler chain: p <- p K_i, K_i(x, y) = h Q_{t_i}(x, y),
         * rows renormalised without a stay when h lambda(x) > 1 (as libdfm's Euler does). */
        double p[S], pn[S];
        memcpy(p, p0, sizeof p);
        for (int i = 0; i < n; i++) {
            double ti = (double)i / n, hh = 1.0 / n;
            if (marginal_rates(ti, Q, S, &rcx)) { st = rcx.status; where = "cond rates"; goto lib_fail; }
            memset(pn, 0, sizeof pn);
            for (int x = 0; x < S; x++) {
                double lam = 0.0;
                for (int y = 0; y < S; y++) if (y != x) lam += Q[x * S + y];
                double scale = hh * lam > 1.0 ? 1.0 / lam : hh, stay = 1.0 - scale * lam;
                pn[x] += p[x] * stay;
                for (int y = 0; y < S; y++) if (y != x) pn[y] += p[x] * scale * Q[x * S + y];
            }
            memcpy(p, pn, sizeof p);
        }
        tv_law[k] = tv(p, q);
        printf("  euler %3d steps: TV = %.4f (exact law of the chain %.4f), clamped rows %lld, "
               "%.2f s\n", n, tv_euler[k], tv_law[k], (long long)clamped, ex2_now() - t0);
        fflush(stdout);
    }
    TRY(dfm_sampler_create(&smp, gen, DFM_METHOD_UNIFORMIZATION, NULL), "uniformization sampler");
    TRY(dfm_sampler_set_int(smp, DFM_OPT_SEED, seed), "seed");
    TRY(dfm_sampler_set_int(smp, DFM_OPT_THREADS, threads), "threads");
    dfm_run_args ra = {.struct_size = sizeof ra, .model = posterior_model, .model_data = &mc,
                       .rows = rows, .tokens = tok, .draw_source = 1};
    double t0 = ex2_now();
    mc.calls = 0;
    st = dfm_sampler_run(smp, &ra);
    if (st) { where = dfm_sampler_last_error(smp); goto lib_fail; }
    int64_t jumps = 0, rejected = 0;
    dfm_sampler_get_stat(smp, DFM_STAT_JUMPS, &jumps);
    dfm_sampler_get_stat(smp, DFM_STAT_REJECTED, &rejected);
    histogram(tok, rows, h);
    double tv_exact = tv(h, q);
    /* Expected TV of an exact sample of this size (normal approximation of each bin). */
    double floor_tv = 0.0;
    for (int s = 0; s < S; s++)
        floor_tv += 0.5 * sqrt(2.0 * q[s] * (1.0 - q[s]) / (3.141592653589793 * (double)rows));
    printf("  uniformization: TV = %.4f (sampling noise floor ~%.4f), %.2f jumps/row, "
           "%.2f thinning rejections/row, %ld model calls, %.2f s\n",
           tv_exact, floor_tv, (double)jumps / (double)rows, (double)rejected / (double)rows,
           mc.calls, ex2_now() - t0);

    if (write_plot(out, tv_euler, tv_law, tv_exact, floor_tv, rows)) {
        fprintf(stderr, "ctmc: cannot write %s: %s\n", out, strerror(errno));
        goto done;
    }
    printf("plot -> %s\n", out);
    printf("result: tv_exact=%.4f", tv_exact);
    for (int k = 0; k < N_EULER; k++) printf(" tv_euler_%d=%.4f", euler_steps[k], tv_euler[k]);
    printf(" tv_noise_floor=%.4f kolmogorov_tv=%.1e samples=%zu\n", floor_tv, kolmo, rows);
    rc = 0;
    goto done;
#undef TRY
lib_fail:
    fprintf(stderr, "ctmc: libdfm error %d (%s): %s\n", st, dfm_strerror(st), where);
done:
    dfm_sampler_free(smp);
    dfm_ctmc_free(w);
    dfm_generator_free(gen);
    dfm_path_free(path);
    dfm_scheduler_free(sched);
    dfm_space_free(space);
    free(tok);
    free(Q);
    return rc;
}
