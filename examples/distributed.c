/* distributed: data-parallel training and sharded sampling with libdfm over MPI.
 *
 * Target: sequences x in [8]^6 where x_0 is uniform and each next symbol is the previous one
 * plus 1 (probability 0.7) or plus 2 (0.3), mod 8. A sequence is "valid" when every step is +1
 * or +2 (a uniform sequence is valid with probability 4^-5 = 0.001). Discrete flow matching:
 * masked mixture path (kappa_t = t), generalized KL loss, an MLP over per-position token
 * embeddings and t, trained with dfm_trainer_step.
 *
 * Training: the global batch of B rows is split by rank: rank r owns rows
 * [r B/P, (r + 1) B/P) and passes row_offset = r B/P to the trainer (its data draws use the same
 * global row indices), so every draw (t, x_t) is the one a single process would make for that
 * row. Each rank backpropagates its shard's mean loss; the gradients (mlp_grads) are summed by
 * MPI_Allreduce and divided by P (the global mean, the shards being equal), and every rank makes
 * the same Adam step: the parameters stay identical on all ranks (checked at the end).
 *
 * Sampling: N rows sharded by rank with row_offset = the rank's first global row; libdfm keys
 * every random draw by (seed, stream, global row, coordinate, step), so the gathered samples do
 * not depend on the number of ranks. Rank 0 checks this: it samples all N rows alone with the
 * same sampler and parameters and compares bit for bit (shard_identical=1).
 *
 * Run: mpirun -np 2 ./distributed [--iters N] [--batch B] [--samples N] [--steps N]
 *                                  [--hidden N] [--lr LR] [--seed N]
 * (as root: mpirun --allow-run-as-root, or OMPI_ALLOW_RUN_AS_ROOT=1
 * OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1). `make run-distributed` does this. */
#include <dfm/dfm.h>
#include <mpi.h>

#include "ex2_common.h"
#include "mlp.h"

#define D 6          /* positions */
#define V 8          /* symbols */
#define MASK V       /* the mask token: vocabulary V + 1 */
#define P_PLUS1 0.7  /* probability of a +1 step */
#define STREAM_DATA 1000

typedef struct opts {
    long iters, batch, samples, steps, hidden, seed;
    double lr;
} opts;

static int rank_, nranks_;

static void usage(FILE *f)
{
    fprintf(f, "usage: mpirun -np P distributed [--iters N] [--batch B] [--samples N] [--steps N]\n"
               "                                [--hidden N] [--lr LR] [--seed N]\n");
}

static int parse_args(int argc, char **argv, opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { if (!rank_) usage(stdout); return 1; }
        int bad = 0;
        if (!v) bad = -2;
        else if (!strcmp(a, "--iters")) bad = ex2_parse_long(v, 1, 10000000, &o->iters);
        else if (!strcmp(a, "--batch")) bad = ex2_parse_long(v, 1, 1 << 20, &o->batch);
        else if (!strcmp(a, "--samples")) bad = ex2_parse_long(v, 1, 10000000, &o->samples);
        else if (!strcmp(a, "--steps")) bad = ex2_parse_long(v, 1, 100000, &o->steps);
        else if (!strcmp(a, "--hidden")) bad = ex2_parse_long(v, 1, 4096, &o->hidden);
        else if (!strcmp(a, "--seed")) bad = ex2_parse_long(v, 0, LONG_MAX, &o->seed);
        else if (!strcmp(a, "--lr")) bad = ex2_parse_double(v, 1e-7, 1.0, &o->lr);
        else bad = -2;
        if (bad) {
            if (!rank_) {
                if (bad == -2) fprintf(stderr, "distributed: unknown option or missing value: %s\n", a);
                else fprintf(stderr, "distributed: bad value for %s: '%s'\n", a, v);
                usage(stderr);
            }
            return -1;
        }
        i++;
    }
    if (o->batch % nranks_) {
        if (!rank_)
            fprintf(stderr, "distributed: --batch %ld must be a multiple of the %d ranks\n",
                    o->batch, nranks_);
        return -1;
    }
    return 0;
}

/* Global rows [row0, row0 + rows) of training step it: u holds D uniforms per row. */
static void target_rows(const float *u, size_t rows, int32_t *x)
{
    for (size_t r = 0; r < rows; r++) {
        const float *ur = u + r * D;
        int32_t *xr = x + r * D;
        xr[0] = (int32_t)(ur[0] * V) % V;
        for (int i = 1; i < D; i++) xr[i] = (xr[i - 1] + (ur[i] < P_PLUS1 ? 1 : 2)) % V;
    }
}

static int fwd(const dfm_model_io *io, void *ud)
{
    return mlp_forward((mlp *)ud, io->rows, io->tokens, NULL, io->t, io->out, io->out_stride);
}

static int bwd(const dfm_model_io *io, const float *grad, void *ud)
{
    mlp *m = (mlp *)ud;
    mlp_zero_grad(m);
    return mlp_backward(m, grad, io->out_stride, NULL);
}

/* Quality of samples: fraction of valid sequences and of +1 steps among the valid steps. */
static void quality(const int32_t *x, size_t n, double *valid, double *plus1)
{
    size_t nv = 0, steps = 0, ones = 0;
    for (size_t r = 0; r < n; r++) {
        int ok = 1;
        for (int i = 1; i < D; i++) {
            int32_t a = x[r * D + i - 1], b = x[r * D + i];
            int s = (a < V && b < V) ? (b - a + V) % V : 0;
            if (s == 1 || s == 2) { steps++; ones += (size_t)(s == 1); }
            else ok = 0;
        }
        nv += (size_t)ok;
    }
    *valid = (double)nv / (double)n;
    *plus1 = steps ? (double)ones / (double)steps : 0.0;
}

/* Samples rows [row0, row0 + rows) into x with the given sampler. */
static int sample_rows(dfm_sampler *s, mlp *net, size_t row0, size_t rows, int32_t *x)
{
    dfm_run_args ra = {.struct_size = sizeof ra, .model = mlp_model_fn, .model_data = net,
                       .rows = rows, .row_offset = row0, .tokens = x, .draw_source = 1};
    return dfm_sampler_run(s, &ra);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    opts o = {.iters = 2000, .batch = 512, .samples = 8192, .steps = 64, .hidden = 128,
              .seed = 1, .lr = 2e-3};
    int pa = parse_args(argc, argv, &o);
    if (pa) {
        MPI_Finalize();
        return pa > 0 ? 0 : 2;
    }
    ex2_blas_threads(1); /* one process per core */

    int st = 0, rc = 1, finished = 0;
    const char *where = "";
    dfm_space *space = NULL;
    dfm_scheduler *sched = NULL;
    dfm_path *path = NULL;
    dfm_generator *gen = NULL;
    dfm_loss *loss = NULL;
    dfm_trainer *tr = NULL;
    dfm_sampler *smp = NULL;
    mlp *net = NULL;
    const size_t P = (size_t)nranks_, R = (size_t)rank_;
    const size_t B = (size_t)o.batch, shard = B / P, row0 = R * shard;
    const size_t N = (size_t)o.samples, s0 = N * R / P, s1 = N * (R + 1) / P;
    float *u = malloc(sizeof(float) * shard * D), *pbuf = NULL;
    int32_t *x1 = malloc(sizeof(int32_t) * shard * D), *mine = malloc(sizeof(int32_t) * (s1 - s0 + 1) * D),
            *all = NULL, *alone = NULL;
    int *counts = malloc(sizeof(int) * P), *displs = malloc(sizeof(int) * P);
    if (!u || !x1 || !mine || !counts || !displs) { fprintf(stderr, "distributed: out of memory\n"); goto done; }

#define TRY(call, what) do { st = (call); if (st) { where = (what); goto lib_fail; } } while (0)
    TRY(dfm_space_create_discrete(&space, V + 1, D, NULL), "space");
    TRY(dfm_scheduler_create_condot(&sched, NULL), "scheduler");
    TRY(dfm_path_create_mixture(&path, space, sched, DFM_SOURCE_MASK, MASK, NULL, NULL), "path");
    TRY(dfm_generator_create_factorized(&gen, path, DFM_PARAM_LOGITS, NULL), "generator");
    TRY(dfm_loss_create_generalized_kl(&loss, path, NULL), "loss");
    TRY(dfm_trainer_create(&tr, path, loss, NULL), "trainer");
    TRY(dfm_trainer_set_int(tr, DFM_OPT_SEED, o.seed), "trainer seed");

    /* Same seed on every rank: the same initial network everywhere. */
    mlp_config cfg = {.n_tokens = D, .vocab = V + 1, .embed_dim = 16, .embed_per_position = 1,
                      .time_freqs = 4, .n_hidden = 2, .hidden = (int)o.hidden,
                      .out_dim = D * (V + 1), .act = MLP_ACT_SWISH};
    int ms = mlp_create(&net, &cfg, (uint64_t)o.seed);
    if (ms) { fprintf(stderr, "distributed: mlp: %s\n", mlp_strerror(ms)); goto done; }
    size_t np = mlp_param_count(net);
    if (np > INT_MAX) { fprintf(stderr, "distributed: network too large for one MPI message\n"); goto done; }

    if (!rank_) {
        printf("distributed: libdfm %s, %d ranks; target [%d]^%d (+1 w.p. %.1f, +2 otherwise); "
               "MLP 2x%ld Swish (%zu parameters); global batch %zu = %d x %zu rows; %ld iterations\n",
               dfm_version_string(), nranks_, V, D, P_PLUS1, o.hidden, np, B, nranks_, shard, o.iters);
        fflush(stdout);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = ex2_now(), ema = 0.0, allreduce_s = 0.0;
    for (long it = 0; it < o.iters; it++) {
        /* this rank's shard of the global batch, keyed by global row */
        TRY(dfm_rng_fill((uint64_t)o.seed, STREAM_DATA, DFM_DRAW_UNIFORM, row0, shard, D,
                         (uint32_t)it, 1, u), "data draws");
        target_rows(u, shard, x1);
        double lv = 0.0, lsum = 0.0;
        dfm_train_args ta = {.struct_size = sizeof ta, .rows = shard, .row_offset = row0,
                             .x1_tokens = x1, .forward = fwd, .backward = bwd, .user_data = net,
                             .loss = &lv};
        st = dfm_trainer_step(tr, &ta);
        if (st) { where = dfm_trainer_last_error(tr); goto lib_fail; }
        double ta0 = ex2_now();
        MPI_Allreduce(MPI_IN_PLACE, mlp_grads(net), (int)np, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        MPI_Allreduce(&lv, &lsum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        allreduce_s += ex2_now() - ta0;
        mlp_scale_grad(net, 1.0f / (float)P);
        lv = lsum / (double)P;
        double frac = (double)it / (double)o.iters, lr = o.lr;
        if (frac > 0.5) lr *= 0.05 + 0.95 * 0.5 * (1.0 + cos(3.141592653589793 * (frac - 0.5) * 2.0));
        mlp_adam opt = mlp_adam_default((float)lr);
        if ((ms = mlp_adam_step(net, &opt)) != 0) {
            fprintf(stderr, "distributed: adam: %s\n", mlp_strerror(ms));
            goto done;
        }
        ema = it ? 0.98 * ema + 0.02 * lv : lv;
        if (!rank_ && ((it + 1) % 250 == 0 || it + 1 == o.iters)) {
            printf("  iter %5ld  loss %.4f  (%.1f s, all-reduce %.2f s)\n", it + 1, ema,
                   ex2_now() - t0, allreduce_s);
            fflush(stdout);
        }
    }
    double train_seconds = ex2_now() - t0;

    /* Are the parameters bit-identical on every rank? Compare with rank 0's copy. */
    pbuf = malloc(sizeof(float) * np);
    if (!pbuf) { fprintf(stderr, "distributed: out of memory\n"); goto done; }
    memcpy(pbuf, mlp_params(net), sizeof(float) * np);
    MPI_Bcast(pbuf, (int)np, MPI_FLOAT, 0, MPI_COMM_WORLD);
    int same = memcmp(pbuf, mlp_params(net), sizeof(float) * np) == 0, all_same = 0;
    MPI_Allreduce(&same, &all_same, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);

    /* Sharded sampling: this rank's rows [s0, s1) with row_offset s0. */
    TRY(dfm_sampler_create(&smp, gen, DFM_METHOD_EXACT, NULL), "sampler");
    TRY(dfm_sampler_set_int(smp, DFM_OPT_SEED, o.seed), "sampler seed");
    TRY(dfm_sampler_set_steps(smp, (size_t)o.steps), "sampler steps");
    MPI_Barrier(MPI_COMM_WORLD);
    double ts = ex2_now();
    st = sample_rows(smp, net, s0, s1 - s0, mine);
    if (st) { where = dfm_sampler_last_error(smp); goto lib_fail; }
    for (size_t r = 0; r < P; r++) {
        size_t a = N * r / P, b = N * (r + 1) / P;
        counts[r] = (int)((b - a) * D);
        displs[r] = (int)(a * D);
    }
    if (!rank_) {
        all = malloc(sizeof(int32_t) * N * D);
        alone = malloc(sizeof(int32_t) * N * D);
        if (!all || !alone) { fprintf(stderr, "distributed: out of memory\n"); goto done; }
    }
    MPI_Gatherv(mine, counts[R], MPI_INT32_T, all, counts, displs, MPI_INT32_T, 0, MPI_COMM_WORLD);
    double sample_seconds = ex2_now() - ts;

    if (!rank_) {
        /* The same sampler and parameters on one process, all N rows at once. */
        double ta = ex2_now();
        st = sample_rows(smp, net, 0, N, alone);
        if (st) { where = dfm_sampler_last_error(smp); goto lib_fail; }
        double alone_seconds = ex2_now() - ta;
        int identical = memcmp(all, alone, sizeof(int32_t) * N * D) == 0;
        size_t diff = 0;
        for (size_t i = 0; i < N * D; i++) diff += (size_t)(all[i] != alone[i]);
        double valid, plus1;
        quality(all, N, &valid, &plus1);
        printf("sampled %zu rows on %d ranks in %.2f s (one rank alone: %.2f s); "
               "tokens differing from the single-process run: %zu\n",
               N, nranks_, sample_seconds, alone_seconds, diff);
        printf("valid sequences %.4f (uniform: %.4f); +1 steps among valid steps %.4f (target %.2f)\n",
               valid, 1.0 / 1024.0, plus1, P_PLUS1);
        printf("result: ranks=%d shard_identical=%d params_identical=%d loss=%.4f valid=%.4f "
               "plus1=%.4f train_seconds=%.1f allreduce_seconds=%.2f sample_seconds=%.2f iters=%ld\n",
               nranks_, identical, all_same, ema, valid, plus1, train_seconds, allreduce_s,
               sample_seconds, o.iters);
        rc = identical && all_same ? 0 : 1;
    } else {
        rc = 0;
    }
    finished = 1;
    goto done;
#undef TRY

lib_fail:
    fprintf(stderr, "distributed: rank %d: libdfm error %d (%s): %s\n", rank_, st, dfm_strerror(st),
            where);
    rc = 1;
done:
    dfm_sampler_free(smp);
    dfm_trainer_free(tr);
    dfm_loss_free(loss);
    dfm_generator_free(gen);
    dfm_path_free(path);
    dfm_scheduler_free(sched);
    dfm_space_free(space);
    mlp_free(net);
    free(u); free(x1); free(mine); free(all); free(alone); free(pbuf); free(counts); free(displs);
    /* A rank failing mid-run must not leave the others waiting in a collective. */
    if (rc && !finished) MPI_Abort(MPI_COMM_WORLD, rc);
    MPI_Finalize();
    return rc;
}
