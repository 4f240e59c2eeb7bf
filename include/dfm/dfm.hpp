// libdfm: a thin, header-only C++11 wrapper over the C API (see docs/cxx.md).
//
//  * RAII: dfm::space, scheduler, path, generator, loss, sampler, trainer and ctmc own one
//    handle each; they are move-only and free it in their destructor. get() gives the raw
//    handle for any C function the wrapper does not cover.
//  * Errors: every failing call throws dfm::error, which carries the status code (status())
//    and libdfm's message (the handle's last error when there is a handle).
//  * Callbacks: sampler::run / log_likelihood, trainer::step / evaluate, loss::discrete_elbo
//    and path helpers take any C++ callable (lambdas with captures included). A C++ exception
//    thrown by the callable is caught at the C boundary (it never unwinds through libdfm),
//    turned into a nonzero return (so libdfm reports DFM_ECALLBACK) and reported as a
//    dfm::error with status DFM_ECALLBACK whose message includes the exception's what().
//
// Nothing here is compiled into libdfm: the ABI stays C. Requires C++11.
#ifndef DFM_DFM_HPP
#define DFM_DFM_HPP

#include "dfm.h"

#include <cstddef>
#include <cstdint>
#include <atomic>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace dfm {

/// The exception thrown by every wrapper call that fails.
class error : public std::runtime_error {
public:
    error(int status, const std::string &message)
        : std::runtime_error(std::string(dfm_strerror(status)) + (message.empty() ? "" : ": ") +
                             message),
          status_(status), message_(message) {}
    /// One of DFM_E* (DFM_ECALLBACK for an exception thrown by a callback).
    int status() const noexcept { return status_; }
    /// libdfm's message (or the callback exception's description), without the status text.
    const std::string &message() const noexcept { return message_; }

private:
    int status_;
    std::string message_;
};

namespace detail {

inline void check(int status, const char *msg)
{
    if (status != DFM_OK) throw error(status, msg ? std::string(msg) : std::string());
}

// A call without a handle to hold its message (creators, clones, schedulers): the reason is the
// thread's dfm_last_error(), read at once, after the context `what`.
inline void check_new(int status, const char *what)
{
    if (status != DFM_OK) throw error(status, std::string(what) + ": " + dfm_last_error());
}

// Move-only owner of a C handle freed by Free.
template <class T, void (*Free)(T *)>
class handle {
public:
    handle() noexcept : p_(nullptr) {}
    explicit handle(T *p) noexcept : p_(p) {}
    handle(handle &&o) noexcept : p_(o.p_) { o.p_ = nullptr; }
    handle &operator=(handle &&o) noexcept
    {
        if (this != &o) {
            reset();
            p_ = o.p_;
            o.p_ = nullptr;
        }
        return *this;
    }
    handle(const handle &) = delete;
    handle &operator=(const handle &) = delete;
    ~handle() { reset(); }
    void reset() noexcept
    {
        if (p_) Free(p_);
        p_ = nullptr;
    }
    T *get() const noexcept { return p_; }
    T *release() noexcept
    {
        T *p = p_;
        p_ = nullptr;
        return p;
    }
    explicit operator bool() const noexcept { return p_ != nullptr; }

private:
    T *p_;
};

// Calls f(args...) and converts its result to the C convention: void -> 0, otherwise int(r).
template <class F, class... A>
inline typename std::enable_if<
    std::is_void<decltype(std::declval<F &>()(std::declval<A>()...))>::value, int>::type
call_cb(F &f, A &&...a)
{
    f(std::forward<A>(a)...);
    return 0;
}
template <class F, class... A>
inline typename std::enable_if<
    !std::is_void<decltype(std::declval<F &>()(std::declval<A>()...))>::value, int>::type
call_cb(F &f, A &&...a)
{
    return static_cast<int>(f(std::forward<A>(a)...));
}

// The first exception thrown by a C++ callable behind a C callback (thread-safe first store).
struct catcher {
    std::atomic<bool> claimed;
    std::atomic<bool> ready;
    std::exception_ptr err;
    std::string what;
    catcher() : claimed(false), ready(false) {}
    // Called inside a catch handler.
    void store() noexcept
    {
        if (claimed.exchange(true)) return;
        try {
            err = std::current_exception();
            try {
                throw;
            } catch (const std::exception &e) {
                what = e.what();
            } catch (...) {
                what = "unknown exception";
            }
        } catch (...) { // std::string could not allocate: keep what we have
        }
        ready.store(true);
    }
    bool threw() const noexcept { return ready.load(); }
    void reset() noexcept
    {
        err = nullptr;
        ready.store(false);
        claimed.store(false);
    }
};

struct no_progress {
    int operator()(int, int, double) const { return 0; }
};

} // namespace detail

/// Raw value a callback adapter returns to libdfm when the C++ callable throws.
static const int callback_threw = -1000;

/// Adapter of any callable (const dfm_model_io &) -> int or void to a dfm_model_fn: pass fn()
/// and data() to any C function that takes a model. An exception thrown by the callable is
/// caught (never crosses into C): the adapter returns callback_threw, libdfm fails with
/// DFM_ECALLBACK, and threw()/what()/rethrow() tell the host what happened. The adapter must
/// outlive the C call.
template <class F>
class model_callback {
public:
    explicit model_callback(F f) : f_(std::move(f)) {}
    model_callback(const model_callback &) = delete;
    model_callback &operator=(const model_callback &) = delete;
    dfm_model_fn fn() const noexcept { return &model_callback::call; }
    void *data() noexcept { return this; }
    bool threw() const noexcept { return c_.threw(); }
    const std::string &what() const noexcept { return c_.what; }
    void rethrow() const
    {
        if (c_.threw()) std::rethrow_exception(c_.err);
    }
    const detail::catcher &catcher() const noexcept { return c_; }
    static int call(const dfm_model_io *io, void *ud) noexcept
    {
        model_callback *b = static_cast<model_callback *>(ud);
        try {
            return detail::call_cb(b->f_, *io);
        } catch (...) {
            b->c_.store();
            return callback_threw;
        }
    }

private:
    F f_;
    detail::catcher c_;
};

/// Same for a progress callable (int step, int n_steps, double t) -> int (nonzero stops) or void.
template <class F>
class progress_callback {
public:
    explicit progress_callback(F f) : f_(std::move(f)) {}
    progress_callback(const progress_callback &) = delete;
    progress_callback &operator=(const progress_callback &) = delete;
    dfm_progress_fn fn() const noexcept { return &progress_callback::call; }
    void *data() noexcept { return this; }
    bool threw() const noexcept { return c_.threw(); }
    const std::string &what() const noexcept { return c_.what; }
    const detail::catcher &catcher() const noexcept { return c_; }
    static int call(int step, int n_steps, double t, void *ud) noexcept
    {
        progress_callback *b = static_cast<progress_callback *>(ud);
        try {
            return detail::call_cb(b->f_, step, n_steps, t);
        } catch (...) {
            b->c_.store();
            return callback_threw;
        }
    }

private:
    F f_;
    detail::catcher c_;
};

/// Same for a backward callable (const dfm_model_io &, const float *grad) -> int or void (the
/// trainer's dfm_backward_fn: grad is dLoss/dout, rows x out_stride).
template <class F>
class backward_callback {
public:
    explicit backward_callback(F f) : f_(std::move(f)) {}
    backward_callback(const backward_callback &) = delete;
    backward_callback &operator=(const backward_callback &) = delete;
    dfm_backward_fn fn() const noexcept { return &backward_callback::call; }
    void *data() noexcept { return this; }
    bool threw() const noexcept { return c_.threw(); }
    const std::string &what() const noexcept { return c_.what; }
    const detail::catcher &catcher() const noexcept { return c_; }
    static int call(const dfm_model_io *io, const float *grad, void *ud) noexcept
    {
        backward_callback *b = static_cast<backward_callback *>(ud);
        try {
            return detail::call_cb(b->f_, *io, grad);
        } catch (...) {
            b->c_.store();
            return callback_threw;
        }
    }

private:
    F f_;
    detail::catcher c_;
};

namespace detail {

// After a C call that took callbacks: success, or a dfm::error. When a callable threw, the
// status is DFM_ECALLBACK (also for a progress callable, whose nonzero return libdfm reports as
// DFM_ESTOPPED) and the message names the exception.
inline void finish(int status, const char *msg, const catcher *a, const catcher *b = nullptr,
                   const catcher *c3 = nullptr)
{
    if (status == DFM_OK) return;
    std::string m = msg ? msg : "";
    const catcher *c = (a && a->threw()) ? a : ((b && b->threw()) ? b : nullptr);
    if (!c && c3 && c3->threw()) c = c3;
    if (c) {
        m += (m.empty() ? "" : "; ") + std::string("callback threw: ") + c->what;
        status = DFM_ECALLBACK;
    }
    throw error(status, m);
}

} // namespace detail

/// A state space: discrete [V]^d, Euclidean R^D, or a product.
class space {
public:
    static space discrete(int32_t vocab, std::size_t d)
    {
        dfm_space *s = nullptr;
        detail::check_new(dfm_space_create_discrete(&s, vocab, d, nullptr), "discrete space");
        return space(s);
    }
    static space euclidean(std::size_t dim)
    {
        dfm_space *s = nullptr;
        detail::check_new(dfm_space_create_euclidean(&s, dim, nullptr), "Euclidean space");
        return space(s);
    }
    /// Product of the given spaces (copied; they may be destroyed afterwards).
    static space product(const std::vector<const space *> &parts)
    {
        std::vector<const dfm_space *> raw;
        for (std::size_t i = 0; i < parts.size(); i++)
            raw.push_back(parts[i] ? parts[i]->get() : nullptr);
        dfm_space *s = nullptr;
        detail::check_new(dfm_space_create_product(&s, raw.empty() ? nullptr : &raw[0], raw.size(),
                                                   nullptr),
                          "product space");
        return space(s);
    }
    space clone() const
    {
        dfm_space *s = nullptr;
        detail::check_new(dfm_space_clone(&s, get(), nullptr), "space clone");
        return space(s);
    }
    int kind() const noexcept { return dfm_space_kind(get()); }
    std::size_t n_tokens() const noexcept { return dfm_space_n_tokens(get()); }
    std::size_t n_reals() const noexcept { return dfm_space_n_reals(get()); }
    dfm_space *get() const noexcept { return h_.get(); }
    explicit space(dfm_space *owned) noexcept : h_(owned) {}

private:
    detail::handle<dfm_space, dfm_space_free> h_;
};

/// Time schedules (alpha_t, sigma_t; kappa_t = alpha_t for discrete paths).
class scheduler {
public:
    static scheduler condot() { return make(dfm_scheduler_create_condot, "CondOT scheduler"); }
    static scheduler cosine() { return make(dfm_scheduler_create_cosine, "cosine scheduler"); }
    static scheduler linear_vp() { return make(dfm_scheduler_create_linear_vp, "linear-VP scheduler"); }
    static scheduler polynomial(double n)
    {
        dfm_scheduler *s = nullptr;
        detail::check_new(dfm_scheduler_create_polynomial(&s, n, nullptr), "polynomial scheduler");
        return scheduler(s);
    }
    static scheduler vp(double beta_min, double beta_max)
    {
        dfm_scheduler *s = nullptr;
        detail::check_new(dfm_scheduler_create_vp(&s, beta_min, beta_max, nullptr), "VP scheduler");
        return scheduler(s);
    }
    dfm_sched_values eval(double t) const
    {
        dfm_sched_values v;
        detail::check_new(dfm_scheduler_eval(get(), t, &v, nullptr), "scheduler eval");
        return v;
    }
    int kind() const noexcept { return dfm_scheduler_kind(get()); }
    dfm_scheduler *get() const noexcept { return h_.get(); }
    explicit scheduler(dfm_scheduler *owned) noexcept : h_(owned) {}

private:
    static scheduler make(int (*fn)(dfm_scheduler **, const dfm_allocator *), const char *what)
    {
        dfm_scheduler *s = nullptr;
        detail::check_new(fn(&s, nullptr), what);
        return scheduler(s);
    }
    detail::handle<dfm_scheduler, dfm_scheduler_free> h_;
};

/// A probability path. Kind-specific creators; sample() is the generic dfm_path_sample.
class path {
public:
    /// Discrete mixture path (source: DFM_SOURCE_MASK / _UNIFORM / _CUSTOM with p0). The mask
    /// token defaults to V - 1, the last token, as in Python and the docs (any negative value
    /// means V - 1; the other sources ignore it).
    static path mixture(const space &sp, const scheduler &sc, int source, int32_t mask_token = -1,
                        const double *p0 = nullptr)
    {
        dfm_path *p = nullptr;
        if (mask_token < 0) mask_token = dfm_space_token_vocab(sp.get(), 0) - 1;
        detail::check_new(dfm_path_create_mixture(&p, sp.get(), sc.get(), source, mask_token, p0,
                                                  nullptr),
                          "mixture path");
        return path(p);
    }
    /// Affine Gaussian path on R^D.
    static path affine(const space &sp, const scheduler &sc)
    {
        dfm_path *p = nullptr;
        detail::check_new(dfm_path_create_affine(&p, sp.get(), sc.get(), nullptr), "affine path");
        return path(p);
    }
    /// Metric-induced path with a V x V distance matrix (row-major, copied).
    static path metric(const space &sp, const scheduler &sc, double c, const double *dist)
    {
        dfm_path *p = nullptr;
        detail::check_new(dfm_path_create_metric(&p, sp.get(), sc.get(), c, dist, nullptr, nullptr,
                                                 nullptr),
                          "metric path");
        return path(p);
    }
    path clone() const
    {
        dfm_path *p = nullptr;
        detail::check_new(dfm_path_clone(&p, get(), nullptr), "path clone");
        return path(p);
    }
    /// Conditional sampling; set args.struct_size or leave it 0 (filled here).
    void sample(dfm_path_sample_args args)
    {
        if (!args.struct_size) args.struct_size = sizeof args;
        int st = dfm_path_sample(get(), &args);
        detail::check(st, dfm_path_last_error(get()));
    }
    void set_int(int option, int64_t value)
    {
        detail::check(dfm_path_set_int(get(), option, value), dfm_path_last_error(get()));
    }
    int kind() const noexcept { return dfm_path_kind(get()); }
    std::string last_error() const { return dfm_path_last_error(get()); }
    dfm_path *get() const noexcept { return h_.get(); }
    explicit path(dfm_path *owned) noexcept : h_(owned) {}

private:
    detail::handle<dfm_path, dfm_path_free> h_;
};

/// A generator (what the model output means and how it moves states).
class generator {
public:
    /// Factorized generator on a mixture path (DFM_PARAM_LOGITS or DFM_PARAM_RATES).
    static generator factorized(const path &p, int param = DFM_PARAM_LOGITS)
    {
        dfm_generator *g = nullptr;
        detail::check_new(dfm_generator_create_factorized(&g, p.get(), param, nullptr),
                          "factorized generator");
        return generator(g);
    }
    /// ODE velocity generator on an affine path.
    static generator velocity(const path &p, int param = DFM_PARAM_VELOCITY)
    {
        dfm_generator *g = nullptr;
        detail::check_new(dfm_generator_create_velocity(&g, p.get(), param, nullptr),
                          "velocity generator");
        return generator(g);
    }
    /// SDE generator with constant diffusion g_const on an affine path.
    static generator diffusion(const path &p, int param, double g_const)
    {
        dfm_generator *g = nullptr;
        detail::check_new(dfm_generator_create_diffusion(&g, p.get(), param, g_const, nullptr),
                          "diffusion generator");
        return generator(g);
    }
    /// Rate-matrix generator on a finite space (path FINITE/METRIC, or a space for RATES).
    static generator rate_matrix(const path *p, const space *sp, int param)
    {
        dfm_generator *g = nullptr;
        detail::check_new(dfm_generator_create_rate_matrix(&g, p ? p->get() : nullptr,
                                                           sp ? sp->get() : nullptr, param,
                                                           nullptr),
                          "rate-matrix generator");
        return generator(g);
    }
    /// Factorized generator of a metric path.
    static generator metric(const path &p)
    {
        dfm_generator *g = nullptr;
        detail::check_new(dfm_generator_create_metric(&g, p.get(), nullptr), "metric generator");
        return generator(g);
    }
    generator clone() const
    {
        dfm_generator *g = nullptr;
        detail::check_new(dfm_generator_clone(&g, get(), nullptr), "generator clone");
        return generator(g);
    }
    std::size_t out_stride() const noexcept { return dfm_generator_out_stride(get()); }
    int kind() const noexcept { return dfm_generator_kind(get()); }
    int parameterization() const noexcept { return dfm_generator_parameterization(get()); }
    void set_int(int option, int64_t v)
    {
        detail::check(dfm_generator_set_int(get(), option, v), dfm_generator_last_error(get()));
    }
    void set_double(int option, double v)
    {
        detail::check(dfm_generator_set_double(get(), option, v), dfm_generator_last_error(get()));
    }
    std::string last_error() const { return dfm_generator_last_error(get()); }
    dfm_generator *get() const noexcept { return h_.get(); }
    explicit generator(dfm_generator *owned) noexcept : h_(owned) {}

private:
    detail::handle<dfm_generator, dfm_generator_free> h_;
};

/// A generator-matching loss; eval() returns the reduced loss value.
class loss {
public:
    static loss mse(const generator &g)
    {
        dfm_loss *l = nullptr;
        detail::check_new(dfm_loss_create_mse(&l, g.get(), nullptr), "MSE loss");
        return loss(l);
    }
    static loss generalized_kl(const path &mixture_path)
    {
        dfm_loss *l = nullptr;
        detail::check_new(dfm_loss_create_generalized_kl(&l, mixture_path.get(), nullptr),
                          "generalized KL loss");
        return loss(l);
    }
    static loss cross_entropy(const path &mixture_path, bool only_changed = false)
    {
        dfm_loss *l = nullptr;
        detail::check_new(dfm_loss_create_cross_entropy(&l, mixture_path.get(),
                                                        only_changed ? 1 : 0, nullptr),
                          "cross-entropy loss");
        return loss(l);
    }
    static loss bregman_rates(const generator &g)
    {
        dfm_loss *l = nullptr;
        detail::check_new(dfm_loss_create_bregman_rates(&l, g.get(), nullptr), "Bregman loss");
        return loss(l);
    }
    /// Value (and, when args.grad is set, the gradient). args.loss may be left NULL.
    double eval(dfm_loss_args args)
    {
        double v = 0.0;
        if (!args.struct_size) args.struct_size = sizeof args;
        if (!args.loss) args.loss = &v;
        detail::check(dfm_loss_eval(get(), &args), dfm_loss_last_error(get()));
        return *args.loss;
    }
    /// Negative ELBO per sequence (dfm_loss_discrete_elbo, generalized-KL losses) with model any
    /// callable taking (const dfm_model_io &) and returning int or void; args.model/user_data
    /// are set here, the other fields (rows, x1_tokens, n_t, nelbo, ...) are the caller's.
    template <class Model>
    void discrete_elbo(Model &&model, dfm_elbo_args args)
    {
        typedef typename std::remove_reference<Model>::type M;
        model_callback<std::reference_wrapper<M> > mc(std::ref(model));
        args.struct_size = sizeof args;
        args.model = mc.fn();
        args.user_data = mc.data();
        int st = dfm_loss_discrete_elbo(get(), &args);
        detail::finish(st, dfm_loss_last_error(get()), &mc.catcher());
    }
    void set_int(int option, int64_t v)
    {
        detail::check(dfm_loss_set_int(get(), option, v), dfm_loss_last_error(get()));
    }
    int kind() const noexcept { return dfm_loss_kind(get()); }
    std::string last_error() const { return dfm_loss_last_error(get()); }
    dfm_loss *get() const noexcept { return h_.get(); }
    explicit loss(dfm_loss *owned) noexcept : h_(owned) {}

private:
    detail::handle<dfm_loss, dfm_loss_free> h_;
};

/// A sampler of a generator with one method (DFM_METHOD_*).
class sampler {
public:
    sampler(const generator &g, int method)
    {
        dfm_sampler *s = nullptr;
        detail::check_new(dfm_sampler_create(&s, g.get(), method, nullptr), "sampler");
        h_ = detail::handle<dfm_sampler, dfm_sampler_free>(s);
    }
    void set_steps(std::size_t n)
    {
        detail::check(dfm_sampler_set_steps(get(), n), dfm_sampler_last_error(get()));
    }
    void set_grid(const std::vector<double> &grid)
    {
        detail::check(dfm_sampler_set_grid(get(), grid.empty() ? nullptr : &grid[0], grid.size()),
                      dfm_sampler_last_error(get()));
    }
    void set_int(int option, int64_t v)
    {
        detail::check(dfm_sampler_set_int(get(), option, v), dfm_sampler_last_error(get()));
    }
    void set_double(int option, double v)
    {
        detail::check(dfm_sampler_set_double(get(), option, v), dfm_sampler_last_error(get()));
    }
    int64_t stat(int which) const
    {
        int64_t v = 0;
        detail::check(dfm_sampler_get_stat(get(), which, &v), dfm_sampler_last_error(get()));
        return v;
    }

    /// Runs the sampler with model, any callable taking (const dfm_model_io &) and returning
    /// int (0 = success) or void. args.model/model_data/progress are set here; the other fields
    /// (rows, tokens, reals, draw_source, ...) are the caller's.
    template <class Model>
    void run(Model &&model, dfm_run_args args)
    {
        detail::no_progress np;
        run(std::forward<Model>(model), args, np);
    }
    /// Same, with a progress callable (int step, int n_steps, double t) -> int (nonzero stops)
    /// or void.
    template <class Model, class Progress>
    void run(Model &&model, dfm_run_args args, Progress &&progress)
    {
        typedef typename std::remove_reference<Model>::type M;
        typedef typename std::remove_reference<Progress>::type P;
        model_callback<std::reference_wrapper<M> > mc(std::ref(model));
        progress_callback<std::reference_wrapper<P> > pc(std::ref(progress));
        args.struct_size = sizeof args;
        args.model = mc.fn();
        args.model_data = mc.data();
        args.progress = pc.fn();
        args.progress_data = pc.data();
        if (step_) step_->c.reset();
        int st = dfm_sampler_run(get(), &args);
        detail::finish(st, dfm_sampler_last_error(get()), &mc.catcher(), &pc.catcher(),
                       step_ ? &step_->c : nullptr);
    }

    /// Calls f(const dfm_step_view &) -> int (nonzero stops the run: DFM_ESTOPPED) or void after
    /// every step of the runs of a sampler of a factorized generator
    /// (dfm_sampler_set_step_callback). An exception stops the run, which then throws
    /// dfm::error(DFM_ECALLBACK) naming it. The callable is kept by the sampler.
    template <class F>
    void set_step_callback(F f)
    {
        std::unique_ptr<step_holder> h(new step_holder(std::function<int(const dfm_step_view &)>(
            [f](const dfm_step_view &v) mutable { return detail::call_cb(f, v); })));
        detail::check(dfm_sampler_set_step_callback(get(), &step_holder::call, h.get()),
                      dfm_sampler_last_error(get()));
        step_ = std::move(h);
    }
    /// Removes the step callback.
    void clear_step_callback()
    {
        detail::check(dfm_sampler_set_step_callback(get(), nullptr, nullptr),
                      dfm_sampler_last_error(get()));
        step_.reset();
    }

    /// Log-likelihood under the flow (velocity generators); args.model/model_data set here.
    template <class Model>
    void log_likelihood(Model &&model, dfm_loglik_args args)
    {
        typedef typename std::remove_reference<Model>::type M;
        model_callback<std::reference_wrapper<M> > mc(std::ref(model));
        args.struct_size = sizeof args;
        args.model = mc.fn();
        args.model_data = mc.data();
        int st = dfm_sampler_log_likelihood(get(), &args);
        detail::finish(st, dfm_sampler_last_error(get()), &mc.catcher());
    }

    /// Raw value of the last failed callback (see dfm_sampler_callback_status).
    int callback_status() const noexcept { return dfm_sampler_callback_status(get()); }
    std::string last_error() const { return dfm_sampler_last_error(get()); }
    void request_stop() noexcept { dfm_sampler_request_stop(get()); }
    dfm_sampler *get() const noexcept { return h_.get(); }

private:
    struct step_holder {
        explicit step_holder(std::function<int(const dfm_step_view &)> f) : fn(std::move(f)) {}
        std::function<int(const dfm_step_view &)> fn;
        detail::catcher c;
        static int call(const dfm_step_view *v, void *ud) noexcept
        {
            step_holder *h = static_cast<step_holder *>(ud);
            try {
                return h->fn(*v);
            } catch (...) {
                h->c.store();
                return callback_threw;
            }
        }
    };
    detail::handle<dfm_sampler, dfm_sampler_free> h_;
    std::unique_ptr<step_holder> step_;
};

/// The training step of generator matching (gm.h): libdfm draws t, x0 and x_t, evaluates the
/// loss and its gradient wrt the model output; the host's callables run the model.
class trainer {
public:
    /// A trainer for loss l on path p (both copied).
    trainer(const path &p, const loss &l)
    {
        dfm_trainer *t = nullptr;
        detail::check_new(dfm_trainer_create(&t, p.get(), l.get(), nullptr), "trainer");
        h_ = detail::handle<dfm_trainer, dfm_trainer_free>(t);
    }
    void set_int(int option, int64_t v)
    {
        detail::check(dfm_trainer_set_int(get(), option, v), dfm_trainer_last_error(get()));
    }
    void set_double(int option, double v)
    {
        detail::check(dfm_trainer_set_double(get(), option, v), dfm_trainer_last_error(get()));
    }
    uint64_t step_count() const noexcept { return dfm_trainer_step_count(get()); }
    void set_step(uint64_t s)
    {
        detail::check(dfm_trainer_set_step(get(), s), dfm_trainer_last_error(get()));
    }

    /// One step (dfm_trainer_step): forward, any callable (const dfm_model_io &) -> int or void,
    /// fills io.out; backward, any callable (const dfm_model_io &, const float *grad) -> int or
    /// void, receives dLoss/dout (rows x out_stride, valid during the call). args.forward,
    /// backward, user_data and loss are set here; the other fields are the caller's. Returns
    /// the reduced loss. A callable that throws makes it throw dfm::error(DFM_ECALLBACK).
    template <class Forward, class Backward>
    double step(Forward &&forward, Backward &&backward, dfm_train_args args)
    {
        typedef typename std::remove_reference<Forward>::type F;
        typedef typename std::remove_reference<Backward>::type B;
        model_callback<std::reference_wrapper<F> > fc(std::ref(forward));
        backward_callback<std::reference_wrapper<B> > bc(std::ref(backward));
        // one user_data for both adapters
        both<F, B> pr = {&fc, &bc};
        double v = 0.0;
        args.struct_size = sizeof args;
        args.forward = &both<F, B>::fwd;
        args.backward = &both<F, B>::bwd;
        args.user_data = &pr;
        args.loss = &v;
        int st = dfm_trainer_step(get(), &args);
        detail::finish(st, dfm_trainer_last_error(get()), &fc.catcher(), &bc.catcher());
        return v;
    }
    /// The loss of a step without a backward pass (the step counter still advances).
    template <class Forward>
    double evaluate(Forward &&forward, dfm_train_args args)
    {
        typedef typename std::remove_reference<Forward>::type F;
        model_callback<std::reference_wrapper<F> > fc(std::ref(forward));
        double v = 0.0;
        args.struct_size = sizeof args;
        args.forward = fc.fn();
        args.backward = nullptr;
        args.user_data = fc.data();
        args.loss = &v;
        int st = dfm_trainer_step(get(), &args);
        detail::finish(st, dfm_trainer_last_error(get()), &fc.catcher());
        return v;
    }
    int callback_status() const noexcept { return dfm_trainer_callback_status(get()); }
    std::string last_error() const { return dfm_trainer_last_error(get()); }
    dfm_trainer *get() const noexcept { return h_.get(); }

private:
    template <class F, class B>
    struct both {
        model_callback<std::reference_wrapper<F> > *f;
        backward_callback<std::reference_wrapper<B> > *b;
        static int fwd(const dfm_model_io *io, void *ud) noexcept
        {
            both *p = static_cast<both *>(ud);
            return model_callback<std::reference_wrapper<F> >::call(io, p->f);
        }
        static int bwd(const dfm_model_io *io, const float *grad, void *ud) noexcept
        {
            both *p = static_cast<both *>(ud);
            return backward_callback<std::reference_wrapper<B> >::call(io, grad, p->b);
        }
    };
    detail::handle<dfm_trainer, dfm_trainer_free> h_;
};

/// Kolmogorov workspace for n states (exp(hQ), propagation).
class ctmc {
public:
    explicit ctmc(std::size_t n)
    {
        dfm_ctmc *w = nullptr;
        detail::check_new(dfm_ctmc_create(&w, n, nullptr), "ctmc workspace");
        h_ = detail::handle<dfm_ctmc, dfm_ctmc_free>(w);
    }
    /// K = exp(h Q) for a generator Q (n x n row-major).
    void kernel(const double *Q, double h, double *K)
    {
        detail::check(dfm_ctmc_kernel(get(), Q, h, K), dfm_ctmc_last_error(get()));
    }
    /// pt = p0 exp(h Q) for m row vectors.
    void propagate(const double *p0, std::size_t m, const double *Q, double h, double *pt)
    {
        detail::check(dfm_ctmc_propagate(get(), p0, m, Q, h, pt), dfm_ctmc_last_error(get()));
    }
    dfm_ctmc *get() const noexcept { return h_.get(); }

private:
    detail::handle<dfm_ctmc, dfm_ctmc_free> h_;
};

} // namespace dfm

#endif // DFM_DFM_HPP
