/* words: discrete flow matching on English words (libdfm's flagship example, run by `make demo`).
 *
 * Data: the lowercase a-z words of at most L letters of a word list (Debian's wamerican,
 * /usr/share/dict/words), padded to L positions with an end token, split into a training and a
 * held-out part with a fixed seed.
 * Model: examples/mlp.h, an MLP over per-position letter embeddings and sinusoidal time features
 * that outputs posterior logits p_{1|t}(. | x_t) for every position.
 * Flow: a mixture path from the all-mask source (kappa_t = t by default), trained with the
 * generalized-KL loss (by default weighted over time so that every hidden letter counts once),
 * sampled with the exact mixture step at a letter temperature (the letters' distribution is
 * sharpened, the end-of-word probability is the model's).
 * Report: the rate of generated words that are real words (valid_word_rate), the rate of
 * generated words that are not in the training split (novel_rate), and the valid rate of a
 * character-bigram model fitted to the training split (bigram_valid_word_rate), plus a per-length
 * table, a length-matched bigram baseline, and the negative ELBO of held-out and training words.
 *
 * Usage: words [options] (words --help lists them; all have defaults).
 * See docs/tutorial_words.md for a walk through the code and docs/examples.md for a run. */
#include <dfm/dfm.h>

#include "ex_common.h"
#include "mlp.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LEN 12     /* words are keyed by a base-27 integer: 27^12 < 2^63 */
#define PAD 26         /* end-of-word / padding token */
#define MASK 27        /* the source's mask token */
#define VOCAB 28       /* 26 letters + pad + mask */

/* ---- the word list ---- */

typedef struct wordset {
    int32_t *tok; /* n x L tokens (letters 0..25 then PAD) */
    uint64_t *key; /* n keys (see word_key), in the order of tok */
    size_t n, cap;
} wordset;

/* A word's key: sum_i (c_i + 1) 27^i over its letters; PAD ends the word. Injective on words of
 * at most MAX_LEN letters, and 0 never is a word. */
static uint64_t word_key(const int32_t *tok, int L)
{
    uint64_t k = 0, p = 1;
    for (int i = 0; i < L && tok[i] != PAD; i++, p *= 27) k += (uint64_t)(tok[i] + 1) * p;
    return k;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct keyidx {
    uint64_t k;
    size_t i;
} keyidx;

static int cmp_keyidx(const void *a, const void *b)
{
    const keyidx *x = a, *y = b;
    if (x->k != y->k) return x->k < y->k ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

static int sorted_contains(const uint64_t *keys, size_t n, uint64_t k)
{
    return bsearch(&k, keys, n, sizeof *keys, cmp_u64) != NULL;
}

/* Reads the words of 1..L lowercase letters a-z (one per line), without duplicates.
 * Returns 0, or prints why and returns -1. */
static int load_words(const char *path, int L, wordset *w)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        ex_error("cannot open the word list '%s': %s%s", path, strerror(errno),
                 errno == ENOENT ? " (install Debian's wamerican, or pass --dict PATH)" : "");
        return -1;
    }
    char line[256];
    size_t lines = 0;
    memset(w, 0, sizeof *w);
    while (fgets(line, sizeof line, f)) {
        lines++;
        size_t n = strcspn(line, "\r\n");
        if (line[n] == '\0' && !feof(f)) { /* an over-long line: skip the rest of it */
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n') {}
            continue;
        }
        if (n == 0 || n > (size_t)L) continue;
        int ok = 1;
        for (size_t i = 0; i < n; i++) ok &= line[i] >= 'a' && line[i] <= 'z';
        if (!ok) continue;
        if (w->n == w->cap) {
            size_t cap = w->cap ? 2 * w->cap : 4096;
            int32_t *t = realloc(w->tok, cap * (size_t)L * sizeof *t);
            if (t) w->tok = t;
            uint64_t *k = t ? realloc(w->key, cap * sizeof *k) : NULL;
            if (!t || !k) {
                fclose(f);
                ex_error("out of memory reading '%s'", path);
                return -1;
            }
            w->key = k;
            w->cap = cap;
        }
        int32_t *t = w->tok + w->n * (size_t)L;
        for (int i = 0; i < L; i++) t[i] = (size_t)i < n ? line[i] - 'a' : PAD;
        w->key[w->n++] = word_key(t, L);
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        ex_error("error reading '%s'", path);
        return -1;
    }
    /* Drop duplicates (a word list may repeat a word), keeping the first occurrence. */
    keyidx *ki = malloc((w->n ? w->n : 1) * sizeof *ki);
    unsigned char *keep = calloc(w->n ? w->n : 1, 1);
    if (!ki || !keep) {
        free(ki);
        free(keep);
        ex_error("out of memory");
        return -1;
    }
    for (size_t i = 0; i < w->n; i++) ki[i] = (keyidx){w->key[i], i};
    qsort(ki, w->n, sizeof *ki, cmp_keyidx);
    for (size_t i = 0; i < w->n; i++) keep[ki[i].i] = i == 0 || ki[i].k != ki[i - 1].k;
    size_t m = 0;
    for (size_t i = 0; i < w->n; i++) {
        if (!keep[i]) continue;
        memmove(w->tok + m * (size_t)L, w->tok + i * (size_t)L, (size_t)L * sizeof *w->tok);
        w->key[m++] = w->key[i];
    }
    free(ki);
    free(keep);
    w->n = m;
    if (lines == 0 || w->n < 100) {
        ex_error("'%s' holds %zu usable words (lowercase a-z, at most %d letters): too few",
                 path, w->n, L);
        return -1;
    }
    return 0;
}

static void decode(const int32_t *tok, int L, char *s)
{
    int i = 0;
    for (; i < L && tok[i] >= 0 && tok[i] < 26; i++) s[i] = (char)('a' + tok[i]);
    s[i] = '\0';
}

/* A sample is a word when it is 1..L letters followed only by PAD. */
static int well_formed(const int32_t *tok, int L)
{
    int i = 0;
    while (i < L && tok[i] < 26) i++;
    if (i == 0) return 0;
    for (; i < L; i++)
        if (tok[i] != PAD) return 0;
    return 1;
}

/* ---- the model callback: the MLP's logits, made exact where they can be ----
 * With the mask source the posterior p_{1|t}(. | x_t) is known exactly at two places, and we
 * write it there instead of asking the network to learn it (MDLM's "carry-over unmasking"):
 *  - the data never holds the mask token, so its probability is 0 (logit -INFINITY; libdfm
 *    accepts -Inf logits as probability 0), which also keeps masks out of the samples;
 *  - an unmasked position keeps its letter until t = 1, so its posterior is a point mass on it.
 * The network's outputs are then only used at masked positions, and the generalized-KL loss's
 * gradient is exactly 0 elsewhere, so all of its capacity goes to the letters still hidden. */
static void exact_where_known(float *out, const int32_t *xt, size_t rows, int L)
{
    for (size_t r = 0; r < rows; r++)
        for (int i = 0; i < L; i++) {
            float *z = out + (r * (size_t)L + (size_t)i) * VOCAB;
            int32_t a = xt[r * (size_t)L + (size_t)i];
            if (a == MASK) {
                z[MASK] = -INFINITY;
            } else {
                for (int y = 0; y < VOCAB; y++) z[y] = -INFINITY;
                z[a] = 0.0f;
            }
        }
}

static int model_fn(const dfm_model_io *io, void *user_data)
{
    int st = mlp_model_fn(io, user_data);
    if (st == 0) exact_where_known(io->out, io->tokens, io->rows, (int)io->n_tokens);
    return st;
}

/* ---- sampling at a letter temperature ----
 * A plain temperature (p^(1/T), DFM_OPT_DS_TEMPERATURE) also sharpens the choice between "the
 * word ends here" (one token, PAD) and "a letter follows" (26 tokens), and below 1 it makes the
 * words shorter than the data's. The letter temperature sharpens only the letters: at a hidden
 * position with posterior p, the end token keeps p(PAD) and the letters share 1 - p(PAD) in
 * proportion to p(y)^(1/T). The logits written are those log-probabilities. */
typedef struct sample_model {
    mlp *net;
    double letter_temperature; /* T > 0; 1 leaves the posterior as it is */
} sample_model;

static void temper_letters(float *out, const int32_t *xt, size_t rows, int L, double T)
{
    for (size_t r = 0; r < rows; r++)
        for (int i = 0; i < L; i++) {
            if (xt[r * (size_t)L + (size_t)i] != MASK) continue; /* exact there already */
            float *z = out + (r * (size_t)L + (size_t)i) * VOCAB;
            double mz = z[PAD], ma = -INFINITY, se = 0.0, sa = 0.0;
            for (int y = 0; y < PAD; y++) {
                if (z[y] > mz) mz = z[y];
                if (z[y] / T > ma) ma = z[y] / T;
            }
            for (int y = 0; y < PAD; y++) {
                se += exp(z[y] - mz);
                sa += exp(z[y] / T - ma);
            }
            if (!(sa > 0.0) || !(se > 0.0)) continue; /* no letter possible: leave as is */
            double spad = exp(z[PAD] - mz), lz = log(se + spad);
            double log_letters = log(se) - lz; /* log(1 - p(PAD)) */
            for (int y = 0; y < PAD; y++) z[y] = (float)(z[y] / T - ma - log(sa) + log_letters);
            z[PAD] = (float)(z[PAD] - mz - lz);
        }
}

static int sample_model_fn(const dfm_model_io *io, void *user_data)
{
    const sample_model *sm = user_data;
    int st = model_fn(io, sm->net);
    if (st == 0 && sm->letter_temperature != 1.0)
        temper_letters(io->out, io->tokens, io->rows, (int)io->n_tokens, sm->letter_temperature);
    return st;
}

/* ---- the bigram baseline ----
 * Counts of (previous, next) letter pairs in the training words, with a start state (26) and an
 * end state (PAD). Sampling walks the chain from start to end; walks longer than L letters are
 * rejected and redrawn, so the baseline has the data's length limit too. */
typedef struct bigram {
    double w[27][27]; /* w[prev][next], prev 26 = start, next 26 = end */
} bigram;

static void bigram_fit(bigram *b, const int32_t *tok, const size_t *idx, size_t n, int L)
{
    memset(b, 0, sizeof *b);
    for (size_t k = 0; k < n; k++) {
        const int32_t *t = tok + idx[k] * (size_t)L;
        int prev = 26;
        for (int i = 0; i <= L; i++) {
            int next = i < L ? t[i] : PAD;
            b->w[prev][next] += 1.0;
            if (next == PAD) break;
            prev = next;
        }
    }
}

/* One word from the chain, keyed by (seed, stream 7 + want, row): want = 0 draws any length
 * 1..L (longer walks are redrawn); want = n > 0 redraws until the word has exactly n letters
 * (the length-matched baseline). */
static int bigram_sample(const bigram *b, uint64_t seed, uint64_t row, int L, int want,
                         int32_t *out)
{
    for (uint32_t attempt = 0; attempt < 100000; attempt++) {
        int prev = 26, len = 0;
        for (;;) {
            int32_t next;
            int st = dfm_rng_categorical_weights(seed, 7u + (unsigned)want, row, (uint32_t)len,
                                                 attempt, b->w[prev], 27, &next);
            if (st) return st;
            if (next == PAD) break;
            if (len == L) { /* longer than L letters: redraw the whole word */
                len = L + 1;
                break;
            }
            out[len++] = next;
            prev = next;
        }
        if (len <= L && (want == 0 || len == want)) {
            for (int j = len; j < L; j++) out[j] = PAD;
            return 0;
        }
    }
    return DFM_ELIMIT;
}

/* ---- main ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: words [options]\n"
            "  --dict PATH          word list, one word per line (default /usr/share/dict/words)\n"
            "  --max-len L          longest word kept, 2..%d (default 8)\n"
            "  --steps N            training steps (default 5500)\n"
            "  --batch B            words per training step (default 512)\n"
            "  --lr LR              Adam learning rate, decayed linearly to 0 (default 3e-3)\n"
            "  --kappa K            scheduler: linear (t, default), quadratic (t^2), cosine\n"
            "  --weight W           loss weight over time: letter (every hidden letter counts\n"
            "                       once, default) or elbo (the plain generalized-KL loss)\n"
            "  --hidden H           width of the hidden layers (default 512)\n"
            "  --layers N           hidden layers (default 2)\n"
            "  --embed E            letter embedding width (default 32)\n"
            "  --letter-temperature T  sharpen the letters only, keeping the model's end-of-word\n"
            "                       probability (default 0.4; 1 = the model's posterior)\n"
            "  --temperature T      sampler temperature on every token, p = softmax(logits / T)\n"
            "                       (default 1)\n"
            "  --purity 0|1         unmask the most confident positions first (default 0)\n"
            "  --save PATH          save the trained network\n"
            "  --load PATH          load a saved network instead of training\n"
            "  --eps E              training times are drawn on [0, 1 - E] (default 0.05)\n"
            "  --max-seconds S      stop training after S seconds even if steps remain, so the\n"
            "                       demo ends on a busy machine too; 0 = no limit (default 125)\n"
            "  --samples N          words to generate (default 5000)\n"
            "  --sample-steps K     sampler steps (default 64)\n"
            "  --threads T          threads for BLAS and libdfm (default 2)\n"
            "  --seed S             seed of everything random (default 1)\n"
            "  --log-every N        print the loss every N steps (default 250)\n",
            MAX_LEN);
}

int main(int argc, char **argv)
{
    ex_set_prog(argv[0]);
    const char *dict = "/usr/share/dict/words", *save_path = NULL, *load_path = NULL;
    int purity = 0;
    long L = 8, steps = 5500, batch = 512, samples = 5000, sample_steps = 64, threads = 2,
         seed = 1, log_every = 250, hidden = 512, layers = 2, embed = 32;
    double lr = 3e-3, temperature = 1.0, letter_temperature = 0.4, eps = 0.05,
           max_seconds = 125.0;
    int kappa_kind = 1, weight_kind = 0;
    static const char *const kappas[] = {"quadratic", "linear", "cosine"};
    static const char *const weights[] = {"letter", "elbo"};
    static const char *const zero_one[] = {"0", "1"};
    for (int i = 1; i < argc; i++) {
        const char *v;
        int m, bad = 0;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
#define OPT(name) ((m = ex_opt(argc, argv, &i, name, &v)) != 0 && (m < 0 ? (exit(2), 0) : 1))
        if (OPT("--dict")) dict = v;
        else if (OPT("--max-len")) bad = ex_parse_long("--max-len", v, 2, MAX_LEN, &L);
        else if (OPT("--steps")) bad = ex_parse_long("--steps", v, 1, 10000000, &steps);
        else if (OPT("--batch")) bad = ex_parse_long("--batch", v, 1, 1 << 20, &batch);
        else if (OPT("--lr")) bad = ex_parse_double("--lr", v, 1e-7, 1.0, &lr);
        else if (OPT("--kappa")) bad = ex_parse_choice("--kappa", v, kappas, 3, &kappa_kind);
        else if (OPT("--weight")) bad = ex_parse_choice("--weight", v, weights, 2, &weight_kind);
        else if (OPT("--hidden")) bad = ex_parse_long("--hidden", v, 8, 8192, &hidden);
        else if (OPT("--layers")) bad = ex_parse_long("--layers", v, 1, 16, &layers);
        else if (OPT("--embed")) bad = ex_parse_long("--embed", v, 1, 1024, &embed);
        else if (OPT("--temperature"))
            bad = ex_parse_double("--temperature", v, 1e-3, 100.0, &temperature);
        else if (OPT("--letter-temperature"))
            bad = ex_parse_double("--letter-temperature", v, 1e-2, 100.0, &letter_temperature);
        else if (OPT("--save")) save_path = v;
        else if (OPT("--load")) load_path = v;
        else if (OPT("--purity")) bad = ex_parse_choice("--purity", v, zero_one, 2, &purity);
        else if (OPT("--max-seconds"))
            bad = ex_parse_double("--max-seconds", v, 0.0, 1e9, &max_seconds);
        else if (OPT("--eps")) bad = ex_parse_double("--eps", v, 1e-6, 0.5, &eps);
        else if (OPT("--samples")) bad = ex_parse_long("--samples", v, 1, 10000000, &samples);
        else if (OPT("--sample-steps"))
            bad = ex_parse_long("--sample-steps", v, 1, 100000, &sample_steps);
        else if (OPT("--threads"))
            bad = ex_parse_long("--threads", v, 1, DFM_MAX_THREADS, &threads);
        else if (OPT("--seed")) bad = ex_parse_long("--seed", v, 0, LONG_MAX, &seed);
        else if (OPT("--log-every")) bad = ex_parse_long("--log-every", v, 1, 10000000, &log_every);
        else {
            ex_error("unknown argument '%s' (try --help)", argv[i]);
            return 2;
        }
#undef OPT
        if (bad) return 2;
    }
    if (save_path && ex_check_writable(save_path)) return 1; /* fail before training */
    ex_set_blas_threads((int)threads);
    const int d = (int)L;
    const size_t B = (size_t)batch, N = (size_t)samples, row = (size_t)d * VOCAB;

    /* 1. Data: the word list, split 90/10 by a seeded shuffle. */
    wordset w;
    if (load_words(dict, d, &w)) return 1;
    size_t *perm = malloc(w.n * sizeof *perm);
    if (!perm) { ex_error("out of memory"); return 1; }
    for (size_t i = 0; i < w.n; i++) perm[i] = i;
    for (size_t i = w.n - 1; i > 0; i--) { /* Fisher-Yates with libdfm's counter-based uniforms */
        size_t j = (size_t)(dfm_rng_uniform((uint64_t)seed, 1, i, 0, 0) * (double)(i + 1));
        size_t tmp = perm[i]; perm[i] = perm[j]; perm[j] = tmp;
    }
    size_t n_held = w.n / 10, n_train = w.n - n_held;
    const size_t *train = perm + n_held;
    uint64_t *all_keys = malloc(w.n * sizeof *all_keys);
    uint64_t *train_keys = malloc(n_train * sizeof *train_keys);
    if (!all_keys || !train_keys) { ex_error("out of memory"); return 1; }
    for (size_t i = 0; i < w.n; i++) all_keys[i] = w.key[i];
    for (size_t i = 0; i < n_train; i++) train_keys[i] = w.key[train[i]];
    qsort(all_keys, w.n, sizeof *all_keys, cmp_u64);
    qsort(train_keys, n_train, sizeof *train_keys, cmp_u64);
    printf("words: %zu words of 1..%d letters from %s: %zu for training, %zu held out\n", w.n, d,
           dict, n_train, n_held);

    /* 2. The flow: [VOCAB]^d, mask source, kappa_t, its generator and the generalized-KL loss. */
    dfm_space *space = NULL;
    dfm_scheduler *sched = NULL;
    dfm_path *path = NULL;
    dfm_generator *gen = NULL;
    dfm_loss *loss = NULL;
    dfm_sampler *sampler = NULL;
    int st = dfm_space_create_discrete(&space, VOCAB, (size_t)d, NULL);
    if (!st) st = kappa_kind == 0 ? dfm_scheduler_create_polynomial(&sched, 2.0, NULL)
                 : kappa_kind == 1 ? dfm_scheduler_create_condot(&sched, NULL)
                                   : dfm_scheduler_create_cosine(&sched, NULL);
    if (!st) st = dfm_path_create_mixture(&path, space, sched, DFM_SOURCE_MASK, MASK, NULL, NULL);
    if (!st) st = dfm_path_set_int(path, DFM_OPT_SEED, seed);
    if (!st) st = dfm_generator_create_factorized(&gen, path, DFM_PARAM_LOGITS, NULL);
    if (!st) st = dfm_loss_create_generalized_kl(&loss, path, NULL);
    if (!st) st = dfm_loss_set_int(loss, DFM_OPT_THREADS, threads);
    if (!st) st = dfm_sampler_create(&sampler, gen, DFM_METHOD_EXACT, NULL);
    if (!st) st = dfm_sampler_set_steps(sampler, (size_t)sample_steps);
    if (!st) st = dfm_sampler_set_int(sampler, DFM_OPT_SEED, seed);
    if (!st) st = dfm_sampler_set_int(sampler, DFM_OPT_THREADS, threads);
    if (!st) st = dfm_sampler_set_double(sampler, DFM_OPT_DS_TEMPERATURE, temperature);
    if (!st) st = dfm_sampler_set_int(sampler, DFM_OPT_DS_PURITY, purity);
    if (st) {
        ex_error("setting up the flow failed: %s", dfm_strerror(st));
        return 1;
    }

    /* 3. The model: per-position letter embeddings + time features -> 2 x 512 Swish -> logits. */
    mlp_config cfg = {.n_tokens = d, .vocab = VOCAB, .embed_dim = (int)embed,
                      .embed_per_position = 1, .time_freqs = 4, .time_dim = 0,
                      .n_hidden = (int)layers, .hidden = (int)hidden,
                      .out_dim = (int)row, .act = MLP_ACT_SWISH, .act_input = 0};
    mlp *net = NULL;
    if ((st = mlp_create(&net, &cfg, (uint64_t)seed)) != 0) {
        ex_error("creating the network failed: %s", mlp_strerror(st));
        return 1;
    }
    if (load_path) {
        if ((st = mlp_load(net, load_path)) != 0) {
            ex_error("cannot load the network from '%s': %s%s%s", load_path, mlp_strerror(st),
                     st == MLP_EIO ? ": " : "", st == MLP_EIO ? strerror(errno) : "");
            return 1;
        }
        steps = 0;
    }
    printf("model: MLP %ld x %ld, %zu parameters; mask source, kappa = %s, generalized-KL loss "
           "(%s weight), batch %zu, %ld steps, %ld thread(s)\n",
           layers, hidden, mlp_param_count(net),
           kappa_kind == 0 ? "t^2" : kappa_kind == 1 ? "t" : "sin(pi t/2)",
           weight_kind == 0 ? "letter" : "elbo", B, steps, threads);

    int32_t *x1 = malloc(B * (size_t)d * sizeof *x1), *xt = malloc(B * (size_t)d * sizeof *xt);
    double *t = malloc(B * sizeof *t);
    float *out = malloc(B * row * sizeof *out), *grad = malloc(B * row * sizeof *grad);
    if (!x1 || !xt || !t || !out || !grad) { ex_error("out of memory"); return 1; }

    /* 4. Training. */
    double t0 = ex_now(), run_loss = 0.0;
    long run_n = 0;
    for (long s = 0; s < steps; s++) {
        for (size_t r = 0; r < B; r++) { /* a batch of training words, drawn with replacement */
            size_t k = (size_t)(dfm_rng_uniform((uint64_t)seed, 2, (uint64_t)r, 0, (uint32_t)s) *
                                (double)n_train);
            memcpy(x1 + r * (size_t)d, w.tok + train[k] * (size_t)d, (size_t)d * sizeof *x1);
        }
        /* t on [0, 1 - eps]: the loss weight kappa'/(1 - kappa) is infinite at t = 1. */
        st = dfm_time_sample((uint64_t)seed, (uint32_t)s, DFM_TIME_STRATIFIED, (double)B, 0, eps,
                             0, B, t);
        dfm_path_sample_args ps = {.struct_size = sizeof ps, .rows = B, .draw = (uint32_t)s,
                                   .t = t, .x1_tokens = x1, .xt_tokens = xt};
        if (!st) st = dfm_path_sample(path, &ps);
        if (st) { ex_error("path sample: %s", dfm_path_last_error(path)); return 1; }
        if ((st = mlp_forward(net, B, xt, NULL, t, out, row)) != 0) {
            ex_error("forward: %s", mlp_strerror(st));
            return 1;
        }
        exact_where_known(out, xt, B, d);
        double lval = 0.0;
        dfm_loss_args la = {.struct_size = sizeof la, .rows = B, .t = t, .x1_tokens = x1,
                            .xt_tokens = xt, .out = out, .grad = grad, .loss = &lval};
        if ((st = dfm_loss_eval(loss, &la)) != 0) {
            ex_error("loss: %s", dfm_loss_last_error(loss));
            return 1;
        }
        if (weight_kind == 0) { /* every hidden letter counts once: row r's loss times */
            for (size_t r = 0; r < B; r++) { /* lambda(t) = (1 - kappa_t) / kappa'_t */
                dfm_sched_values sv;
                double lam = 0.0;
                if (dfm_scheduler_eval(sched, t[r], &sv, NULL) == 0 && sv.d_alpha > 0.0)
                    lam = (1.0 - sv.alpha) / sv.d_alpha;
                for (size_t j = 0; j < row; j++) grad[r * row + j] *= (float)lam;
            }
        }
        mlp_zero_grad(net);
        mlp_backward(net, grad, row, NULL);
        mlp_adam opt = mlp_adam_default((float)(lr * (1.0 - (double)s / (double)steps)));
        mlp_adam_step(net, &opt);
        run_loss += lval;
        run_n++;
        if ((s + 1) % log_every == 0 || s + 1 == steps) {
            printf("step %6ld/%ld  loss %.4f  %.1f s\n", s + 1, steps, run_loss / (double)run_n,
                   ex_now() - t0);
            fflush(stdout);
            run_loss = 0.0;
            run_n = 0;
        }
        if (max_seconds > 0 && ex_now() - t0 > max_seconds && s + 1 < steps) {
            printf("stopping after %ld of %ld steps: the %.0f s time limit (--max-seconds) is "
                   "reached (load %.2f)\n", s + 1, steps, max_seconds, ex_loadavg());
            break;
        }
    }
    double train_seconds = ex_now() - t0;
    if (save_path && (st = mlp_save(net, save_path)) != 0) {
        ex_error("cannot save the network to '%s': %s%s%s", save_path, mlp_strerror(st),
                 st == MLP_EIO ? ": " : "", st == MLP_EIO ? strerror(errno) : "");
        return 1;
    }

    /* 5. Sampling: N words from the all-mask source with the exact mixture step. */
    int32_t *gen_tok = malloc(N * (size_t)d * sizeof *gen_tok);
    if (!gen_tok) { ex_error("out of memory"); return 1; }
    double ts0 = ex_now();
    sample_model sm = {net, letter_temperature};
    dfm_run_args ra = {.struct_size = sizeof ra, .model = sample_model_fn, .model_data = &sm,
                       .rows = N, .tokens = gen_tok, .draw_source = 1};
    if ((st = dfm_sampler_run(sampler, &ra)) != 0) {
        ex_error("sampling: %s", dfm_sampler_last_error(sampler));
        return 1;
    }
    double sample_seconds = ex_now() - ts0;

    /* A likelihood: the negative ELBO (nats per word, an upper bound on -log q_model(word)) of
     * the held-out words and of as many training words, 4 stratified times per word. */
    double nelbo_mean[2] = {0.0, 0.0};
    {
        int32_t *xs = malloc(n_held * (size_t)d * sizeof *xs);
        double *nel = malloc(n_held * sizeof *nel);
        if (!xs || !nel) { ex_error("out of memory"); return 1; }
        for (int part = 0; part < 2; part++) {
            const size_t *idx = part == 0 ? perm : train; /* held-out words come first in perm */
            for (size_t i = 0; i < n_held; i++)
                memcpy(xs + i * (size_t)d, w.tok + idx[i] * (size_t)d, (size_t)d * sizeof *xs);
            dfm_elbo_args ea = {.struct_size = sizeof ea, .rows = n_held, .draw = (uint32_t)part,
                                .x1_tokens = xs, .n_t = 4, .chunk_rows = 4096, .model = model_fn,
                                .user_data = net, .nelbo = nel};
            if ((st = dfm_loss_discrete_elbo(loss, &ea)) != 0) {
                ex_error("ELBO: %s", dfm_loss_last_error(loss));
                return 1;
            }
            for (size_t i = 0; i < n_held; i++) nelbo_mean[part] += nel[i] / (double)n_held;
        }
        free(xs);
        free(nel);
    }

    /* 6. Evaluation, and the bigram baseline on the same number of words. */
    bigram *bg = malloc(sizeof *bg);
    int32_t *bg_tok = malloc(N * (size_t)d * sizeof *bg_tok);
    int32_t *bgl_tok = malloc(N * (size_t)d * sizeof *bgl_tok);
    uint64_t *uniq = malloc(N * sizeof *uniq);
    if (!bg || !bg_tok || !bgl_tok || !uniq) { ex_error("out of memory"); return 1; }
    bigram_fit(bg, w.tok, train, n_train, d);
    /* The length-matched baseline draws each word's length from the training words' lengths. */
    double len_w[MAX_LEN];
    memset(len_w, 0, sizeof len_w);
    for (size_t i = 0; i < n_train; i++) {
        int n = 0;
        while (n < d && w.tok[train[i] * (size_t)d + (size_t)n] != PAD) n++;
        len_w[n - 1] += 1.0;
    }
    for (size_t r = 0; r < N; r++) {
        int32_t len;
        st = bigram_sample(bg, (uint64_t)seed, r, d, 0, bg_tok + r * (size_t)d);
        if (!st)
            st = dfm_rng_categorical_weights((uint64_t)seed, 6, r, 0, 0, len_w, (size_t)d, &len);
        if (!st) st = bigram_sample(bg, (uint64_t)seed, r, d, len + 1, bgl_tok + r * (size_t)d);
        if (st) {
            ex_error("bigram sampling failed: %s", dfm_strerror(st));
            return 1;
        }
    }
    size_t valid = 0, novel = 0, novel_valid = 0, bg_valid = 0, bgl_valid = 0, n_uniq = 0;
    size_t by_len[3][MAX_LEN + 1][2]; /* [flow, bigram, length-matched bigram][letters][valid?] */
    memset(by_len, 0, sizeof by_len);
    for (size_t r = 0; r < N; r++) {
        const int32_t *g = gen_tok + r * (size_t)d, *b = bg_tok + r * (size_t)d;
        int ok = well_formed(g, d);
        uint64_t k = ok ? word_key(g, d) : 0;
        int real = ok && sorted_contains(all_keys, w.n, k);
        int in_train = ok && sorted_contains(train_keys, n_train, k);
        valid += (size_t)real;
        novel += (size_t)!in_train;
        novel_valid += (size_t)(real && !in_train);
        if (ok) uniq[n_uniq++] = k;
        int breal = sorted_contains(all_keys, w.n, word_key(b, d));
        const int32_t *bl = bgl_tok + r * (size_t)d;
        int blreal = sorted_contains(all_keys, w.n, word_key(bl, d));
        bg_valid += (size_t)breal;
        bgl_valid += (size_t)blreal;
        int n = 0;
        while (n < d && g[n] < 26) n++;
        by_len[0][ok ? n : 0][real]++;
        for (n = 0; n < d && b[n] != PAD; n++) {}
        by_len[1][n][breal]++;
        for (n = 0; n < d && bl[n] != PAD; n++) {}
        by_len[2][n][blreal]++;
    }
    qsort(uniq, n_uniq, sizeof *uniq, cmp_u64);
    size_t distinct = 0;
    for (size_t i = 0; i < n_uniq; i++) distinct += i == 0 || uniq[i] != uniq[i - 1];

    printf("samples (flow):   ");
    for (size_t r = 0; r < 16 && r < N; r++) {
        char s[MAX_LEN + 1];
        decode(gen_tok + r * (size_t)d, d, s);
        printf("%s%s", s, well_formed(gen_tok + r * (size_t)d, d) ? " " : "? ");
    }
    printf("\nsamples (bigram): ");
    for (size_t r = 0; r < 16 && r < N; r++) {
        char s[MAX_LEN + 1];
        decode(bg_tok + r * (size_t)d, d, s);
        printf("%s ", s);
    }
    double dn = (double)N;
    printf("\nletters  share: data  flow  bigram   valid: flow  bigram  bigram(length-matched)\n");
    for (int n = 1; n <= d; n++) {
        size_t f = by_len[0][n][0] + by_len[0][n][1], b = by_len[1][n][0] + by_len[1][n][1],
               bl = by_len[2][n][0] + by_len[2][n][1];
        printf("%7d  %11.3f %5.3f %7.3f   %11.3f %7.3f %9.3f\n", n, len_w[n - 1] / (double)n_train,
               (double)f / dn, (double)b / dn, f ? (double)by_len[0][n][1] / (double)f : 0.0,
               b ? (double)by_len[1][n][1] / (double)b : 0.0,
               bl ? (double)by_len[2][n][1] / (double)bl : 0.0);
    }
    printf("details: sample_seconds=%.2f distinct_rate=%.4f novel_valid_rate=%.4f "
           "malformed_rate=%.4f bigram_length_matched_valid_word_rate=%.4f\n"
           "details: nelbo_heldout=%.2f nelbo_train=%.2f (nats per word) load=%.2f\n",
           sample_seconds, (double)distinct / dn, (double)novel_valid / dn,
           (double)(by_len[0][0][0] + by_len[0][0][1]) / dn, (double)bgl_valid / dn, nelbo_mean[0], nelbo_mean[1], ex_loadavg());
    printf("result: valid_word_rate=%.4f novel_rate=%.4f bigram_valid_word_rate=%.4f "
           "bigram_length_matched_valid_word_rate=%.4f train_seconds=%.1f samples=%zu\n",
           (double)valid / dn, (double)novel / dn, (double)bg_valid / dn, (double)bgl_valid / dn,
           train_seconds, N);

    free(uniq); free(bg_tok); free(bgl_tok); free(bg); free(gen_tok);
    free(x1); free(xt); free(t); free(out); free(grad);
    mlp_free(net);
    dfm_sampler_free(sampler); dfm_loss_free(loss); dfm_generator_free(gen);
    dfm_path_free(path); dfm_scheduler_free(sched); dfm_space_free(space);
    free(all_keys); free(train_keys); free(perm); free(w.tok); free(w.key);
    return 0;
}
