/* The examples' host-side MLP (examples/mlp.h): gradients against central finite differences
 * for every parameter group and the real inputs, Adam on a regression, save/load, seeded init,
 * bad input. */
#include "testutil.h"

#include "../examples/mlp.h"

#include <stdio.h>
#include <unistd.h>

enum { GR = 5 }; /* rows in the gradient checks */

static mlp_config tiny_cfg(int act, int act_input, int per_pos, int time_dim)
{
    mlp_config c;
    memset(&c, 0, sizeof c);
    c.n_tokens = 2;
    c.vocab = 3;
    c.embed_dim = 2;
    c.embed_per_position = per_pos;
    c.n_reals = 2;
    c.time_freqs = 2;
    c.time_dim = time_dim;
    c.n_hidden = 2;
    c.hidden = 5;
    c.out_dim = 4;
    c.act = act;
    c.act_input = act_input;
    return c;
}

/* Fixed inputs: tokens repeat across rows so shared tables accumulate from several rows. */
static const int32_t g_tok[GR * 2] = {0, 1, 2, 2, 1, 0, 0, 0, 2, 1};
static const double g_t[GR] = {0.0, 0.21, 0.5, 0.77, 0.999};

/* sum_r sum_j out[r][j] w[r][j] accumulated in double; out uses row stride ld. */
static double scalar_loss(mlp *m, const float *reals, const float *w, size_t ld)
{
    float out[GR * 16];
    ck_assert_int_eq(mlp_forward(m, GR, g_tok, reals, g_t, out, ld), MLP_OK);
    double s = 0.0;
    for (int r = 0; r < GR; r++)
        for (int j = 0; j < m->cfg.out_dim; j++) s += (double)out[r * ld + j] * w[r * ld + j];
    return s;
}

/* Compares analytic gradients (params and reals) with central differences. */
static void check_grads(mlp_config c, uint64_t seed)
{
    mlp *m = NULL;
    ck_assert_int_eq(mlp_create(&m, &c, seed), MLP_OK);
    /* Give biases nonzero values so their effect on the activations is exercised. */
    for (size_t i = 0; i < m->n_params; i++)
        m->params[i] += 0.3f * (float)dfm_rng_normal(seed + 1, 3, i, 0, 0);
    size_t ld = (size_t)c.out_dim + 3; /* a padded output stride */
    float reals[GR * 2], w[GR * 16], dreals[GR * 2];
    for (int i = 0; i < GR * 2; i++) reals[i] = (float)dfm_rng_normal(seed, 1, i, 0, 0);
    for (int i = 0; i < GR * 16; i++) w[i] = (float)dfm_rng_normal(seed, 2, i, 0, 0);
    mlp_zero_grad(m);
    scalar_loss(m, reals, w, ld);
    ck_assert_int_eq(mlp_backward(m, w, ld, dreals), MLP_OK);
    float *an = (float *)malloc(m->n_params * sizeof(float));
    memcpy(an, m->grads, m->n_params * sizeof(float));
    const float h = 1e-2f;
    double num = 0.0, den = 0.0;
    int nonzero = 0;
    for (size_t i = 0; i < m->n_params + GR * 2; i++) {
        float *p = i < m->n_params ? &m->params[i] : &reals[i - m->n_params];
        double a = i < m->n_params ? an[i] : dreals[i - m->n_params];
        float p0 = *p;
        *p = p0 + h;
        double lp = scalar_loss(m, reals, w, ld);
        *p = p0 - h;
        double lm = scalar_loss(m, reals, w, ld);
        *p = p0;
        double fd = (lp - lm) / ((double)(p0 + h) - (double)(p0 - h));
        ck_assert_msg(fabs(fd - a) <= 1e-3 * fmax(fabs(fd), fabs(a)) + 1e-4,
                      "index %zu (of %zu params): analytic %g, finite difference %g", i,
                      m->n_params, a, fd);
        num += (fd - a) * (fd - a);
        den += a * a;
        nonzero += fabs(a) > 1e-3;
    }
    ck_assert_msg(sqrt(num / den) < 1e-3, "relative gradient error %g", sqrt(num / den));
    ck_assert_int_gt(nonzero, (int)m->n_params / 2);
    /* Gradients accumulate: a second backward doubles them. */
    scalar_loss(m, reals, w, ld);
    ck_assert_int_eq(mlp_backward(m, w, ld, NULL), MLP_OK);
    for (size_t i = 0; i < m->n_params; i++)
        ck_assert(fabsf(m->grads[i] - 2.0f * an[i]) <= 1e-5f * (1.0f + fabsf(an[i])));
    free(an);
    mlp_free(m);
}

START_TEST(grad_swish_per_position_time_layer)
{
    check_grads(tiny_cfg(MLP_ACT_SWISH, 1, 1, 3), 11);
}
END_TEST

START_TEST(grad_swish_shared_table_fixed_time)
{
    check_grads(tiny_cfg(MLP_ACT_SWISH, 0, 0, 0), 12);
}
END_TEST

START_TEST(grad_relu)
{
    check_grads(tiny_cfg(MLP_ACT_RELU, 0, 0, 2), 13);
}
END_TEST

START_TEST(grad_no_hidden_reals_only)
{
    mlp_config c = tiny_cfg(MLP_ACT_SWISH, 0, 0, 0);
    c.n_hidden = 0;
    check_grads(c, 14);
}
END_TEST

static double ref_act(int act, double z) { return act == MLP_ACT_RELU ? (z > 0 ? z : 0) : z / (1 + exp(-z)); }

/* The forward pass written out in double from the documented layout, row by row. */
static void check_forward(mlp_config c, uint64_t seed)
{
    mlp *m = NULL;
    ck_assert_int_eq(mlp_create(&m, &c, seed), MLP_OK);
    for (size_t i = 0; i < m->n_params; i++)
        m->params[i] += 0.3f * (float)dfm_rng_normal(seed + 1, 3, i, 0, 0);
    float reals[GR * 2], out[GR * 16];
    for (int i = 0; i < GR * 2; i++) reals[i] = (float)dfm_rng_normal(seed, 1, i, 0, 0);
    ck_assert_int_eq(mlp_forward(m, GR, g_tok, reals, g_t, out, 16), MLP_OK);
    const float *P = m->params;
    for (int r = 0; r < GR; r++) {
        double x[64], y[64];
        int n = 0;
        for (int p = 0; p < c.n_tokens; p++)
            for (int e = 0; e < c.embed_dim; e++)
                x[n++] = P[(size_t)((c.embed_per_position ? p : 0) * c.vocab + g_tok[r * 2 + p]) *
                               c.embed_dim + e];
        for (int j = 0; j < c.n_reals; j++) x[n++] = reals[r * 2 + j];
        double phi[1 + 2 * MLP_MAX_FREQS];
        phi[0] = g_t[r];
        for (int k = 0; k < c.time_freqs; k++) {
            phi[1 + 2 * k] = sin(3.14159265358979323846 * pow(2.0, k) * g_t[r]);
            phi[2 + 2 * k] = cos(3.14159265358979323846 * pow(2.0, k) * g_t[r]);
        }
        int nf = 1 + 2 * c.time_freqs;
        if (c.time_dim == 0)
            for (int k = 0; k < nf; k++) x[n++] = phi[k];
        for (int j = 0; j < c.time_dim; j++) {
            double s = P[m->off_tb + j];
            for (int k = 0; k < nf; k++) s += phi[k] * P[m->off_tw + (size_t)k * c.time_dim + j];
            x[n++] = s;
        }
        if (c.act_input)
            for (int i = 0; i < n; i++) x[i] = ref_act(c.act, x[i]);
        for (int l = 0; l <= c.n_hidden; l++) {
            int w = l < c.n_hidden ? c.hidden : c.out_dim;
            for (int j = 0; j < w; j++) {
                double s = P[m->off_b[l] + j];
                for (int i = 0; i < n; i++) s += x[i] * P[m->off_w[l] + (size_t)i * w + j];
                y[j] = l < c.n_hidden ? ref_act(c.act, s) : s;
            }
            memcpy(x, y, sizeof(double) * w);
            n = w;
        }
        for (int j = 0; j < c.out_dim; j++)
            ck_assert_msg(fabs(out[r * 16 + j] - x[j]) < 1e-5 * (1 + fabs(x[j])),
                          "row %d out %d: %g vs reference %g", r, j, out[r * 16 + j], x[j]);
    }
    mlp_free(m);
}

START_TEST(forward_matches_reference)
{
    check_forward(tiny_cfg(MLP_ACT_SWISH, 1, 1, 3), 21);
    check_forward(tiny_cfg(MLP_ACT_SWISH, 0, 0, 0), 22);
    check_forward(tiny_cfg(MLP_ACT_RELU, 1, 0, 2), 23);
    mlp_config c = tiny_cfg(MLP_ACT_RELU, 0, 1, 0);
    c.n_hidden = 0;
    check_forward(c, 24);
}
END_TEST

/* Initial weights have standard deviation g / sqrt(fan_in) (g^2 = 2 before ReLU), embeddings 1. */
START_TEST(init_scale)
{
    for (int act = 0; act < 2; act++) {
        mlp_config k = {2, 128, 128, 0, 0, 0, 0, 3, 128, 256, act, 1};
        mlp *m = NULL;
        ck_assert_int_eq(mlp_create(&m, &k, 9), MLP_OK);
        double s = 0.0, e = 0.0;
        for (size_t i = 0; i < 128 * 128; i++) {
            s += (double)m->params[m->off_w[1] + i] * m->params[m->off_w[1] + i];
            e += (double)m->params[m->off_emb + i] * m->params[m->off_emb + i];
        }
        double want = (act == MLP_ACT_RELU ? 2.0 : 1.0) / 128.0;
        ck_assert_msg(fabs(s / (128 * 128) / want - 1.0) < 0.05, "var %g want %g", s / 16384, want);
        ck_assert_msg(fabs(e / (128 * 128) - 1.0) < 0.05, "embedding var %g", e / 16384);
        mlp_free(m);
    }
}
END_TEST

/* The parameter groups and their sizes: the count a user can compute by hand. */
START_TEST(param_count_layout)
{
    mlp_config c = tiny_cfg(MLP_ACT_SWISH, 1, 1, 3);
    mlp *m = NULL;
    ck_assert_int_eq(mlp_create(&m, &c, 1), MLP_OK);
    size_t d0 = 2 * 2 + 2 + 3, feat = 5;
    size_t want = 2 * 3 * 2 + feat * 3 + 3 + d0 * 5 + 5 + 5 * 5 + 5 + 5 * 4 + 4;
    ck_assert_uint_eq(mlp_param_count(m), want);
    mlp_free(m);
    /* The checkerboard network: 2 tokens, V = 128, E = 128 shared, t, 3 x 128 Swish. */
    mlp_config k = {2, 128, 128, 0, 0, 0, 0, 3, 128, 256, MLP_ACT_SWISH, 1};
    ck_assert_int_eq(mlp_create(&m, &k, 1), MLP_OK);
    ck_assert_uint_eq(mlp_param_count(m), 128 * 128 + 257 * 128 + 128 + 2 * (128 * 128 + 128) +
                                               128 * 256 + 256);
    mlp_free(m);
}
END_TEST

/* Adam on a regression: y = sin(3 x0) x1 + t^2 from (x0, x1, t), MSE. */
START_TEST(adam_regression)
{
    mlp_config c;
    memset(&c, 0, sizeof c);
    c.n_reals = 2;
    c.time_freqs = 1;
    c.n_hidden = 2;
    c.hidden = 32;
    c.out_dim = 1;
    c.act = MLP_ACT_SWISH;
    mlp *m = NULL;
    ck_assert_int_eq(mlp_create(&m, &c, 5), MLP_OK);
    enum { B = 256, STEPS = 400 };
    float x[B * 2], y[B], out[B], g[B];
    double t[B];
    mlp_adam opt = mlp_adam_default(1e-2f);
    double first = 0.0, last = 0.0;
    for (int s = 0; s < STEPS; s++) {
        for (int r = 0; r < B; r++) {
            uint64_t row = (uint64_t)s * B + r;
            x[2 * r] = (float)(2.0 * dfm_rng_uniform(9, 0, row, 0, 0) - 1.0);
            x[2 * r + 1] = (float)(2.0 * dfm_rng_uniform(9, 0, row, 1, 0) - 1.0);
            t[r] = dfm_rng_uniform(9, 0, row, 2, 0);
            y[r] = (float)(sin(3.0 * x[2 * r]) * x[2 * r + 1] + t[r] * t[r]);
        }
        ck_assert_int_eq(mlp_forward(m, B, NULL, x, t, out, 1), MLP_OK);
        double loss = 0.0;
        for (int r = 0; r < B; r++) {
            double d = (double)out[r] - y[r];
            loss += d * d / B;
            g[r] = (float)(2.0 * d / B);
        }
        if (s < 10) first += loss / 10;
        if (s >= STEPS - 10) last += loss / 10;
        mlp_zero_grad(m);
        ck_assert_int_eq(mlp_backward(m, g, 1, NULL), MLP_OK);
        ck_assert_int_eq(mlp_adam_step(m, &opt), MLP_OK);
    }
    ck_assert_msg(last < first / 30.0, "loss %g -> %g", first, last);
    mlp_free(m);
}
END_TEST

/* The first Adam step moves each parameter by lr * g / (|g| + eps) (m-hat = g, v-hat = g^2),
 * minus decoupled decay. */
START_TEST(adam_first_step_exact)
{
    mlp_config c = tiny_cfg(MLP_ACT_SWISH, 0, 0, 0);
    mlp *m = NULL;
    ck_assert_int_eq(mlp_create(&m, &c, 3), MLP_OK);
    size_t n = m->n_params;
    float *p0 = (float *)malloc(n * sizeof(float));
    memcpy(p0, m->params, n * sizeof(float));
    for (size_t i = 0; i < n; i++) m->grads[i] = (float)dfm_rng_normal(4, 0, i, 0, 0);
    mlp_adam o = {0.01f, 0.9f, 0.999f, 1e-8f, 0.1f};
    ck_assert_int_eq(mlp_adam_step(m, &o), MLP_OK);
    for (size_t i = 0; i < n; i++) {
        double g = m->grads[i];
        double want = p0[i] * (1.0 - 0.01 * 0.1) - 0.01 * g / (fabs(g) + 1e-8);
        ck_assert_msg(fabs(m->params[i] - want) < 1e-5, "param %zu: %g vs %g", i,
                      m->params[i], want);
    }
    mlp_adam bad = o;
    bad.beta1 = 1.0f;
    ck_assert_int_eq(mlp_adam_step(m, &bad), MLP_EINVAL);
    bad = o;
    bad.eps = 0.0f;
    ck_assert_int_eq(mlp_adam_step(m, &bad), MLP_EINVAL);
    free(p0);
    mlp_free(m);
}
END_TEST

START_TEST(init_reproducible)
{
    mlp_config c = tiny_cfg(MLP_ACT_RELU, 1, 1, 3);
    mlp *a = NULL, *b = NULL, *d = NULL;
    ck_assert_int_eq(mlp_create(&a, &c, 42), MLP_OK);
    ck_assert_int_eq(mlp_create(&b, &c, 42), MLP_OK);
    ck_assert_int_eq(mlp_create(&d, &c, 43), MLP_OK);
    size_t n = a->n_params;
    ck_assert_int_eq(memcmp(a->params, b->params, n * sizeof(float)), 0);
    ck_assert_int_ne(memcmp(a->params, d->params, n * sizeof(float)), 0);
    ck_assert_int_eq(mlp_init(d, 42), MLP_OK);
    ck_assert_int_eq(memcmp(a->params, d->params, n * sizeof(float)), 0);
    /* Biases start at 0, weights do not. */
    ck_assert(a->params[a->off_b[0]] == 0.0f && a->params[a->off_w[0]] != 0.0f);
    mlp_free(a);
    mlp_free(b);
    mlp_free(d);
}
END_TEST

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(p, 1, n, f), n);
    fclose(f);
}

START_TEST(save_load_roundtrip_and_errors)
{
    char path[64], bad[64];
    snprintf(path, sizeof path, "/tmp/test_mlp_%ld.bin", (long)getpid());
    snprintf(bad, sizeof bad, "/tmp/test_mlp_%ld.bad", (long)getpid());
    mlp_config c = tiny_cfg(MLP_ACT_SWISH, 1, 0, 3);
    mlp *a = NULL, *b = NULL, *d = NULL;
    ck_assert_int_eq(mlp_create(&a, &c, 7), MLP_OK);
    ck_assert_int_eq(mlp_save(a, path), MLP_OK);
    /* Into an existing network of the same shape. */
    ck_assert_int_eq(mlp_create(&b, &c, 8), MLP_OK);
    ck_assert_int_eq(mlp_load(b, path), MLP_OK);
    size_t n = a->n_params, bytes = n * sizeof(float);
    ck_assert_int_eq(memcmp(a->params, b->params, bytes), 0);
    /* As a new network, and the forward passes agree bit for bit. */
    ck_assert_int_eq(mlp_load_new(&d, path), MLP_OK);
    ck_assert_int_eq(memcmp(a->params, d->params, bytes), 0);
    float reals[GR * 2] = {0.1f, -0.2f, 0.3f, 0.4f, -0.5f, 0.6f, 0.7f, -0.8f, 0.9f, 1.0f};
    float o1[GR * 4], o2[GR * 4];
    ck_assert_int_eq(mlp_forward(a, GR, g_tok, reals, g_t, o1, 4), MLP_OK);
    ck_assert_int_eq(mlp_forward(d, GR, g_tok, reals, g_t, o2, 4), MLP_OK);
    ck_assert_int_eq(memcmp(o1, o2, sizeof o1), 0);
    mlp_free(d);
    d = NULL;

    /* Missing file. */
    mlp_free(b);
    ck_assert_int_eq(mlp_create(&b, &c, 8), MLP_OK);
    float *keep = (float *)malloc(bytes);
    memcpy(keep, b->params, bytes);
    errno = 0;
    ck_assert_int_eq(mlp_load(b, "/nonexistent/dir/params.bin"), MLP_EIO);
    ck_assert_int_eq(errno, ENOENT);
    ck_assert_int_eq(mlp_load_new(&d, "/nonexistent/dir/params.bin"), MLP_EIO);
    ck_assert_ptr_null(d);
    ck_assert_int_eq(mlp_save(a, "/nonexistent/dir/params.bin"), MLP_EIO);
    /* Short files: cut in the header, in the parameters, and empty. */
    FILE *f = fopen(path, "rb");
    size_t total = 8 + 12 * 4 + 8 + bytes;
    char *buf = (char *)malloc(total + 1);
    ck_assert_uint_eq(fread(buf, 1, total + 1, f), total);
    fclose(f);
    size_t cuts[] = {0, 5, 8, 30, 64, total - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof *cuts; k++) {
        write_bytes(bad, buf, cuts[k]);
        ck_assert_int_eq(mlp_load(b, bad), MLP_ETRUNC);
        ck_assert_int_eq(mlp_load_new(&d, bad), MLP_ETRUNC);
        ck_assert_ptr_null(d);
    }
    /* Trailing byte, wrong magic. */
    buf[total] = 'x';
    write_bytes(bad, buf, total + 1);
    ck_assert_int_eq(mlp_load(b, bad), MLP_EFORMAT);
    ck_assert_int_eq(mlp_load_new(&d, bad), MLP_EFORMAT);
    buf[0] = 'X';
    write_bytes(bad, buf, total);
    ck_assert_int_eq(mlp_load(b, bad), MLP_EFORMAT);
    ck_assert_int_eq(mlp_load_new(&d, bad), MLP_EFORMAT);
    ck_assert_ptr_null(d);
    /* A header announcing far more parameters than the file holds. */
    uint64_t huge = (uint64_t)1 << 40;
    memcpy(buf + 8 + 12 * 4, &huge, 8);
    buf[0] = 'D';
    write_bytes(bad, buf, total);
    ck_assert_int_eq(mlp_load_new(&d, bad), MLP_ETRUNC);
    ck_assert_int_eq(mlp_load(b, bad), MLP_EMISMATCH);
    /* A header whose shape disagrees with its parameter count. */
    memcpy(buf + 8 + 12 * 4, &(uint64_t){n}, 8);
    int32_t hid = 1000000;
    memcpy(buf + 8 + 8 * 4, &hid, 4);
    write_bytes(bad, buf, total);
    ck_assert_int_eq(mlp_load_new(&d, bad), MLP_EFORMAT);
    ck_assert_ptr_null(d);
    /* A network of another shape. */
    mlp_config c2 = c;
    c2.hidden = 6;
    mlp *e = NULL;
    ck_assert_int_eq(mlp_create(&e, &c2, 1), MLP_OK);
    ck_assert_int_eq(mlp_load(e, path), MLP_EMISMATCH);
    mlp_free(e);
    /* Nothing was changed by the failed loads. */
    ck_assert_int_eq(memcmp(keep, b->params, bytes), 0);
    for (int s = 0; s <= 8; s++) ck_assert_str_ne(mlp_strerror(s), "");
    free(keep);
    free(buf);
    remove(path);
    remove(bad);
    mlp_free(a);
    mlp_free(b);
}
END_TEST

START_TEST(bad_input)
{
    mlp *m = (mlp *)&m;
    mlp_config c = tiny_cfg(MLP_ACT_SWISH, 0, 0, 0);
    mlp_config z = c;
    z.out_dim = 0;
    ck_assert_int_eq(mlp_create(&m, &z, 1), MLP_EINVAL);
    ck_assert_ptr_null(m);
    z = c;
    z.act = 7;
    ck_assert_int_eq(mlp_create(&m, &z, 1), MLP_EINVAL);
    z = c;
    z.vocab = 0;
    ck_assert_int_eq(mlp_create(&m, &z, 1), MLP_EINVAL);
    z = c;
    z.n_tokens = INT_MAX;
    z.embed_dim = INT_MAX;
    ck_assert_int_eq(mlp_create(&m, &z, 1), MLP_EOVERFLOW);
    ck_assert_ptr_null(m);
    ck_assert_int_eq(mlp_create(NULL, &c, 1), MLP_EINVAL);
    ck_assert_int_eq(mlp_create(&m, &c, 1), MLP_OK);
    float reals[GR * 2] = {0}, out[GR * 4], w[GR * 4] = {0};
    for (int i = 0; i < GR * 4; i++) out[i] = 123.0f;
    ck_assert_int_eq(mlp_backward(m, w, 4, NULL), MLP_EINVAL); /* no forward yet */
    int32_t tok[GR * 2];
    memcpy(tok, g_tok, sizeof tok);
    tok[3] = 3; /* == vocab */
    ck_assert_int_eq(mlp_forward(m, GR, tok, reals, g_t, out, 4), MLP_EINVAL);
    tok[3] = -1;
    ck_assert_int_eq(mlp_forward(m, GR, tok, reals, g_t, out, 4), MLP_EINVAL);
    for (int i = 0; i < GR * 4; i++) ck_assert(out[i] == 123.0f);
    ck_assert_int_eq(mlp_forward(m, GR, NULL, reals, g_t, out, 4), MLP_EINVAL);
    ck_assert_int_eq(mlp_forward(m, GR, g_tok, NULL, g_t, out, 4), MLP_EINVAL);
    ck_assert_int_eq(mlp_forward(m, GR, g_tok, reals, NULL, out, 4), MLP_EINVAL);
    ck_assert_int_eq(mlp_forward(m, GR, g_tok, reals, g_t, out, 3), MLP_EINVAL);
    ck_assert_int_eq(mlp_backward(m, w, 4, NULL), MLP_EINVAL); /* failed forward */
    ck_assert_int_eq(mlp_forward(m, GR, g_tok, reals, g_t, out, 4), MLP_OK);
    ck_assert_int_eq(mlp_backward(m, w, 3, NULL), MLP_EINVAL);
    ck_assert_int_eq(mlp_backward(m, NULL, 4, NULL), MLP_EINVAL);
    ck_assert_int_eq(mlp_backward(m, w, 4, NULL), MLP_OK);
    /* Growing batches reuse and grow the cache. */
    enum { BIG = 1000 };
    int32_t *bt = (int32_t *)calloc(BIG * 2, sizeof(int32_t));
    float *br = (float *)calloc(BIG * 2, sizeof(float)), *bo = (float *)malloc(BIG * 4 * 4);
    double *tt = (double *)calloc(BIG, sizeof(double));
    ck_assert_int_eq(mlp_forward(m, BIG, bt, br, tt, bo, 4), MLP_OK);
    ck_assert_int_eq(mlp_forward(m, 1, bt, br, tt, bo, 4), MLP_OK);
    ck_assert_int_eq(mlp_forward(m, 0, bt, br, tt, bo, 4), MLP_OK);
    ck_assert_int_eq(mlp_backward(m, w, 4, NULL), MLP_OK);
    free(bt);
    free(br);
    free(bo);
    free(tt);
    mlp_free(m);
    mlp_free(NULL);
}
END_TEST

/* mlp_model_fn as a libdfm model callback computes the same as mlp_forward. */
START_TEST(model_fn_adapter)
{
    mlp_config c = tiny_cfg(MLP_ACT_SWISH, 1, 1, 3);
    mlp *m = NULL;
    ck_assert_int_eq(mlp_create(&m, &c, 2), MLP_OK);
    float reals[GR * 2] = {0.5f, 0.5f, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f};
    float o1[GR * 6], o2[GR * 4];
    dfm_model_io io;
    memset(&io, 0, sizeof io);
    io.struct_size = sizeof io;
    io.rows = GR;
    io.t = g_t;
    io.tokens = g_tok;
    io.n_tokens = 2;
    io.reals = reals;
    io.n_reals = 2;
    io.out = o1;
    io.out_stride = 6;
    ck_assert_int_eq(mlp_model_fn(&io, m), 0);
    ck_assert_int_eq(mlp_forward(m, GR, g_tok, reals, g_t, o2, 4), MLP_OK);
    for (int r = 0; r < GR; r++)
        for (int j = 0; j < 4; j++) ck_assert(o1[r * 6 + j] == o2[r * 4 + j]);
    io.n_reals = 3; /* a space that does not fit the network */
    ck_assert_int_eq(mlp_model_fn(&io, m), MLP_EINVAL);
    mlp_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("mlp");
    TCase *tc = tu_tcase("mlp");
    tcase_add_test(tc, grad_swish_per_position_time_layer);
    tcase_add_test(tc, grad_swish_shared_table_fixed_time);
    tcase_add_test(tc, grad_relu);
    tcase_add_test(tc, grad_no_hidden_reals_only);
    tcase_add_test(tc, param_count_layout);
    tcase_add_test(tc, forward_matches_reference);
    tcase_add_test(tc, init_scale);
    tcase_add_test(tc, adam_regression);
    tcase_add_test(tc, adam_first_step_exact);
    tcase_add_test(tc, init_reproducible);
    tcase_add_test(tc, save_load_roundtrip_and_errors);
    tcase_add_test(tc, bad_input);
    tcase_add_test(tc, model_fn_adapter);
    suite_add_tcase(s, tc);
    return tu_run(s) ? EXIT_FAILURE : EXIT_SUCCESS;
}
