#!/bin/sh
# The C++11 wrapper <dfm/dfm.hpp>: compiles examples/cxx_demo.cpp and a wrapper test with
# -std=c++11 -Wall -Wextra -Werror against lib/ and runs both. Checks: bad arguments throw
# dfm::error with libdfm's status, handles move, exceptions thrown by a model or progress lambda
# never cross into C and come back as dfm::error(DFM_ECALLBACK) with outputs untouched, the
# model_callback adapter works with the raw C API, the trainer's step equals dfm_loss_eval on
# its draws, the ELBO of a known posterior matches its exact value (3 log 4), and the demo
# samples its target (TV < 0.03 with 20000 samples and 128 steps; the sampling-noise floor is
# 0.015, 16 steps give 0.06).
set -eu
CXX=${CXX:-c++}
command -v "$CXX" >/dev/null 2>&1 || { echo "C++ compiler '$CXX' not found"; exit 1; }
[ -e lib/libdfm.so ] || { echo "lib/libdfm.so not built (run make first)"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
FLAGS="-std=c++11 -Wall -Wextra -Werror -Wshadow -pedantic -Iinclude"
LIBS="-Llib -ldfm -Wl,-rpath,$(pwd)/lib"

cat > "$tmp/t.cpp" <<'CPP'
#include <dfm/dfm.hpp>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>

static int fails = 0;
#define CHECK(c) do { if (!(c)) { std::printf("FAIL line %d: %s\n", __LINE__, #c); fails++; } } while (0)

template <class F> static int status_of(F f)
{
    try { f(); } catch (const dfm::error &e) { return e.status(); }
    return 0;
}

int main()
{
    // bad arguments -> dfm::error with the status and a message
    CHECK(status_of([] { dfm::space::discrete(1, 2); }) == DFM_EINVAL);
    CHECK(status_of([] { dfm::scheduler::polynomial(-1.0); }) == DFM_EINVAL);
    try { dfm::space::euclidean(0); CHECK(false); }
    catch (const dfm::error &e) { CHECK(e.status() == DFM_EINVAL); CHECK(std::strlen(e.what()) > 0); }
    // creation errors carry libdfm's reason (dfm_last_error)
    try { dfm::space::discrete(1, 8); CHECK(false); }
    catch (const dfm::error &e) {
        CHECK(e.message().find("vocab must be in [2, ") != std::string::npos);
        CHECK(std::string(e.what()).find("got 1") != std::string::npos);
    }
    // the mask token defaults to V - 1: at t = 0 every token of x_t is the mask
    {
        dfm::path pm = dfm::path::mixture(dfm::space::discrete(5, 3), dfm::scheduler::condot(),
                                          DFM_SOURCE_MASK);
        double t0[1] = {0.0};
        int32_t x1[3] = {0, 1, 2}, xt[3] = {-1, -1, -1};
        dfm_path_sample_args pa;
        std::memset(&pa, 0, sizeof pa);
        pa.rows = 1;
        pa.t = t0;
        pa.x1_tokens = x1;
        pa.xt_tokens = xt;
        pm.sample(pa);
        CHECK(xt[0] == 4 && xt[1] == 4 && xt[2] == 4);
    }

    // move-only handles
    dfm::space a = dfm::space::discrete(4, 2);
    dfm_space *raw = a.get();
    dfm::space b(std::move(a));
    CHECK(a.get() == nullptr && b.get() == raw && b.n_tokens() == 2);
    a = std::move(b);
    CHECK(a.get() == raw && b.get() == nullptr);
    dfm::space c = a.clone();
    CHECK(c.get() != raw && c.n_tokens() == 2);

    dfm::path pa = dfm::path::mixture(a, dfm::scheduler::condot(), DFM_SOURCE_UNIFORM);
    dfm::generator g = dfm::generator::factorized(pa);
    CHECK(g.out_stride() == 8);
    dfm::sampler s(g, DFM_METHOD_EULER);
    s.set_steps(8);
    CHECK(status_of([&] { s.set_steps(0); }) != 0);
    CHECK(status_of([] { dfm::sampler bad(dfm::generator::factorized(dfm::path::mixture(
        dfm::space::discrete(4, 2), dfm::scheduler::condot(), DFM_SOURCE_UNIFORM)),
        DFM_METHOD_DOPRI5); }) == DFM_EUNSUPPORTED);

    std::vector<int32_t> tok(6, 1);
    dfm_run_args args = {};
    args.rows = 3;
    args.tokens = tok.data();
    auto uniform = [](const dfm_model_io &io) {
        for (std::size_t i = 0; i < io.rows * io.out_stride; i++) io.out[i] = 0.0f;
    };
    s.run(uniform, args); // a void lambda
    for (int32_t v : tok) CHECK(v >= 0 && v < 4);

    // a throwing model: DFM_ECALLBACK, message with what(), tokens untouched
    std::vector<int32_t> before = tok;
    try {
        s.run([](const dfm_model_io &io) -> int {
            if (io.step == 2) throw std::runtime_error("boom from the model");
            for (std::size_t i = 0; i < io.rows * io.out_stride; i++) io.out[i] = 0.0f;
            return 0;
        }, args);
        CHECK(false);
    } catch (const dfm::error &e) {
        CHECK(e.status() == DFM_ECALLBACK);
        CHECK(e.message().find("boom from the model") != std::string::npos);
        CHECK(s.callback_status() == dfm::callback_threw);
    }
    CHECK(tok == before);
    // a non-exception throw is caught too
    CHECK(status_of([&] { s.run([](const dfm_model_io &) { throw 42; }, args); }) == DFM_ECALLBACK);
    // an int lambda returning nonzero: DFM_ECALLBACK with its raw value
    CHECK(status_of([&] { s.run([](const dfm_model_io &) { return 7; }, args); }) == DFM_ECALLBACK);
    CHECK(s.callback_status() == 7);
    // a throwing progress callable: DFM_ECALLBACK as well
    try {
        s.run(uniform, args, [](int step, int, double) { if (step == 1) throw std::logic_error("progress boom"); });
        CHECK(false);
    } catch (const dfm::error &e) {
        CHECK(e.status() == DFM_ECALLBACK);
        CHECK(e.message().find("progress boom") != std::string::npos);
    }
    // progress returning nonzero stops the run: DFM_ESTOPPED
    CHECK(status_of([&] { s.run(uniform, args, [](int, int, double) { return 1; }); }) == DFM_ESTOPPED);
    CHECK(tok == before);

    // the step callback: sees every step's tokens; a throw comes back as DFM_ECALLBACK, a
    // nonzero return as DFM_ESTOPPED
    {
        dfm::sampler ds(dfm::generator::factorized(dfm::path::mixture(
            dfm::space::discrete(4, 2), dfm::scheduler::condot(), DFM_SOURCE_MASK, 3)), DFM_METHOD_EXACT);
        ds.set_steps(5);
        ds.set_int(DFM_OPT_DS_ORDER, DFM_ORDER_CONFIDENCE);
        ds.set_int(DFM_OPT_DS_GREEDY, 1);
        int steps_seen = 0;
        ds.set_step_callback([&steps_seen](const dfm_step_view &sv) { steps_seen += sv.step == steps_seen; });
        std::vector<int32_t> mt(6, 3);
        dfm_run_args ma = {};
        ma.rows = 3;
        ma.tokens = mt.data();
        auto peaked = [](const dfm_model_io &io) {
            for (std::size_t i = 0; i < io.rows * io.out_stride; i++) io.out[i] = i % 4 == 3 ? -INFINITY : (float)(i % 4);
        };
        ds.run(peaked, ma);
        CHECK(steps_seen == 5);
        for (int32_t x : mt) CHECK(x == 2);
        ds.set_step_callback([](const dfm_step_view &sv) -> int { if (sv.step == 1) throw std::runtime_error("step boom"); return 0; });
        try { ds.run(peaked, ma); CHECK(false); }
        catch (const dfm::error &err) { CHECK(err.status() == DFM_ECALLBACK); CHECK(err.message().find("step boom") != std::string::npos); }
        ds.set_step_callback([](const dfm_step_view &) { return 1; });
        CHECK(status_of([&] { ds.run(peaked, ma); }) == DFM_ESTOPPED);
        ds.clear_step_callback();
        ds.run(peaked, ma);
    }

    // the adapter with the raw C API
    int n = 0;
    dfm::model_callback<std::function<void(const dfm_model_io &)> > mc(
        [&n](const dfm_model_io &) { if (++n == 1) throw std::out_of_range("raw C call"); });
    dfm_run_args ra = args;
    ra.struct_size = sizeof ra;
    ra.model = mc.fn();
    ra.model_data = mc.data();
    CHECK(dfm_sampler_run(s.get(), &ra) == DFM_ECALLBACK);
    CHECK(mc.threw() && mc.what() == "raw C call");
    bool rethrown = false;
    try { mc.rethrow(); } catch (const std::out_of_range &) { rethrown = true; }
    CHECK(rethrown);

    // continuous: MSE loss through the wrapper, NaN output -> DFM_ENUMERIC
    dfm::space e = dfm::space::euclidean(2);
    dfm::path ap = dfm::path::affine(e, dfm::scheduler::condot());
    dfm::generator vg = dfm::generator::velocity(ap);
    dfm::loss l = dfm::loss::mse(vg);
    double t[1] = {0.5};
    float x0[2] = {1.0f, -1.0f}, x1[2] = {2.0f, 3.0f}, xt[2] = {1.5f, 1.0f}, out[2] = {0.0f, 0.0f};
    dfm_loss_args la = {};
    la.rows = 1; la.t = t; la.x0_reals = x0; la.x1_reals = x1; la.xt_reals = xt; la.out = out;
    double v = l.eval(la); // target x1 - x0 = (1, 4): mean of squares 8.5
    CHECK(std::fabs(v - 8.5) < 1e-9);
    out[1] = NAN;
    CHECK(status_of([&] { l.eval(la); }) == DFM_ENUMERIC);

    // the trainer: forward and backward lambdas; the step's loss and gradient equal
    // dfm_loss_eval on the same draws; a throwing backward -> DFM_ECALLBACK with what(), the
    // step counter unchanged; evaluate() runs no backward
    {
        dfm::space ds = dfm::space::discrete(5, 3);
        dfm::path mp = dfm::path::mixture(ds, dfm::scheduler::condot(), DFM_SOURCE_MASK, 4);
        dfm::loss gk = dfm::loss::generalized_kl(mp);
        dfm::trainer tr(mp, gk);
        tr.set_int(DFM_OPT_SEED, 3);
        std::vector<int32_t> data = {0, 1, 2, 3, 2, 1}, seen_xt;
        std::vector<double> seen_t;
        std::vector<float> seen_grad;
        dfm_train_args ta = {};
        ta.rows = 2;
        ta.x1_tokens = data.data();
        auto fwd = [&](const dfm_model_io &io) {
            for (std::size_t i = 0; i < io.rows * io.out_stride; i++) io.out[i] = 0.1f * (float)(i % 7);
            seen_xt.assign(io.tokens, io.tokens + io.rows * io.n_tokens);
            seen_t.assign(io.t, io.t + io.rows);
        };
        auto bwd = [&](const dfm_model_io &io, const float *grad) {
            seen_grad.assign(grad, grad + io.rows * io.out_stride);
        };
        double vs = tr.step(fwd, bwd, ta);
        CHECK(tr.step_count() == 1);
        std::vector<float> o(30), g2(30);
        for (std::size_t i = 0; i < 30; i++) o[i] = 0.1f * (float)(i % 7);
        dfm_loss_args l2 = {};
        l2.rows = 2; l2.t = seen_t.data(); l2.x1_tokens = data.data(); l2.xt_tokens = seen_xt.data();
        l2.out = o.data(); l2.grad = g2.data();
        CHECK(vs == gk.eval(l2) && seen_grad == g2);
        try {
            tr.step(fwd, [](const dfm_model_io &, const float *) { throw std::runtime_error("backward boom"); }, ta);
            CHECK(false);
        } catch (const dfm::error &err) {
            CHECK(err.status() == DFM_ECALLBACK);
            CHECK(err.message().find("backward boom") != std::string::npos);
        }
        CHECK(tr.step_count() == 1);
        double ve = tr.evaluate(fwd, ta);
        CHECK(std::isfinite(ve) && tr.step_count() == 2);
        CHECK(status_of([&] { tr.set_double(DFM_OPT_GM_TIME_EPS, 2.0); }) == DFM_EINVAL);

        // the discrete ELBO with the carry-over uniform posterior over the 4 data tokens: its
        // expectation is exactly 3 log 4 per sequence; a throwing model -> DFM_ECALLBACK
        auto carry = [](const dfm_model_io &io) {
            for (std::size_t p = 0; p < io.rows * io.n_tokens; p++)
                for (int y = 0; y < 5; y++)
                    io.out[p * 5 + y] = io.tokens[p] == 4 ? (y < 4 ? 0.0f : -INFINITY)
                                                          : (y == io.tokens[p] ? 0.0f : -INFINITY);
        };
        std::vector<double> nelbo(2), se(2);
        dfm_elbo_args ea = {};
        ea.rows = 2; ea.x1_tokens = data.data(); ea.n_t = 512; ea.nelbo = nelbo.data();
        ea.std_error = se.data();
        gk.discrete_elbo(carry, ea);
        for (int r = 0; r < 2; r++) CHECK(std::fabs(nelbo[r] - 3.0 * std::log(4.0)) < 5.0 * se[r] + 1e-9);
        std::vector<double> keep = nelbo;
        try {
            gk.discrete_elbo([](const dfm_model_io &) { throw std::runtime_error("elbo boom"); }, ea);
            CHECK(false);
        } catch (const dfm::error &err) {
            CHECK(err.status() == DFM_ECALLBACK);
            CHECK(err.message().find("elbo boom") != std::string::npos);
        }
        CHECK(nelbo == keep);
    }

    std::printf("cxx wrapper test: %d failure(s)\n", fails);
    return fails ? 1 : 0;
}
CPP

"$CXX" $FLAGS "$tmp/t.cpp" -o "$tmp/t" $LIBS
"$tmp/t"
"$CXX" $FLAGS examples/cxx_demo.cpp -o "$tmp/cxx_demo" $LIBS
out=$("$tmp/cxx_demo" 20000 128)
echo "$out"
line=$(echo "$out" | grep '^result:')
tv=$(echo "$line" | sed -n 's/.* tv=\([0-9.]*\).*/\1/p')
es=$(echo "$line" | sed -n 's/.*exception_status=\([0-9-]*\).*/\1/p')
[ "$es" = 4 ] || { echo "exception_status=$es, want 4 (DFM_ECALLBACK)"; exit 1; }
awk -v tv="$tv" 'BEGIN { exit !(tv != "" && tv < 0.03) }' || { echo "demo TV $tv too large"; exit 1; }
echo "cxx_wrapper: ok"
