"""The exception rule, input validation and handle lifetimes."""
import gc
import itertools
import unittest

from _common import np, dfm

V, D = 4, 3


class Boom(Exception):
    pass


def zero_model(t, tokens, reals, out):
    out[...] = 0.0


def discrete_sampler(steps=6, method="exact"):
    space = dfm.Space.discrete(V, D)
    path = dfm.Path.mixture(space, dfm.Scheduler.condot(), "mask")
    gen = dfm.Generator.factorized(path)
    return dfm.Sampler(gen, method, steps=steps, seed=1)


class TestCallbackExceptions(unittest.TestCase):
    def test_model_exception_is_reraised(self):
        s = discrete_sampler()
        calls = []

        def model(t, tokens, reals, out):
            calls.append(1)
            if len(calls) == 3:
                raise Boom("model failed at the third call")
            out[...] = 0.0
        with self.assertRaises(Boom) as cm:
            s.run(model, rows=5)
        self.assertEqual(str(cm.exception), "model failed at the third call")
        cause = cm.exception.__cause__
        self.assertIsInstance(cause, dfm.DfmError)
        self.assertEqual(cause.status, dfm.ECALLBACK)
        self.assertEqual(cause.function, "dfm_sampler_run")
        self.assertEqual(cause.message, s.last_error())
        self.assertNotEqual(s.callback_status(), 0)
        self.assertEqual(len(calls), 3)
        # the traceback reaches into the model
        calls.clear()
        try:
            s.run(model, rows=5)
        except Boom as e:
            tb = e.__traceback__
        names = []
        while tb is not None:
            names.append(tb.tb_frame.f_code.co_name)
            tb = tb.tb_next
        self.assertIn("model", names)
        # the sampler is usable afterwards
        r = s.run(zero_model, rows=5)
        self.assertEqual(r.tokens.shape, (5, D))

    def test_base_exceptions_are_caught_too(self):
        s = discrete_sampler()

        def model(t, tokens, reals, out):
            raise KeyboardInterrupt
        with self.assertRaises(KeyboardInterrupt) as cm:
            s.run(model, rows=2)
        self.assertEqual(cm.exception.__cause__.status, dfm.ECALLBACK)

    def test_bad_model_output_shape_is_a_callback_error(self):
        s = discrete_sampler()
        with self.assertRaises(ValueError) as cm:
            s.run(lambda t, tk, rl, out: np.zeros((1, 2)), rows=3)
        self.assertEqual(cm.exception.__cause__.status, dfm.ECALLBACK)

    def test_model_inputs_are_writable_copies(self):
        """The model may write into t and tokens (torch.from_numpy needs writable arrays):
        they are copies, so the run is the same as with a model that leaves them alone."""
        s = discrete_sampler()
        clean = s.run(zero_model, rows=50).tokens
        seen = []

        def scribbler(t, tokens, reals, out):
            seen.append(t.flags.writeable and tokens.flags.writeable and reals is None)
            t[...] = 0.25
            tokens[...] = 0
            out[...] = 0.0
        self.assertTrue(np.array_equal(s.run(scribbler, rows=50).tokens, clean))
        self.assertTrue(seen and all(seen))

    def test_progress_stop_and_exception(self):
        s = discrete_sampler(steps=10)
        x0 = np.full((4, D), V - 1, np.int32)
        with self.assertRaises(dfm.DfmError) as cm:
            s.run(zero_model, x0, progress=lambda k, n, t: k == 4)
        self.assertEqual(cm.exception.status, dfm.ESTOPPED)
        self.assertTrue(np.all(x0 == V - 1))

        def progress(k, n, t):
            raise Boom("progress")
        with self.assertRaises(Boom) as cm:
            s.run(zero_model, x0, progress=progress)
        self.assertEqual(cm.exception.__cause__.status, dfm.ESTOPPED)

        def stop_from_model(t, tokens, reals, out, info):
            out[...] = 0.0
            if info.step == 2:
                s.request_stop()
        with self.assertRaises(dfm.DfmError) as cm:
            s.run(stop_from_model, x0)
        self.assertEqual(cm.exception.status, dfm.ESTOPPED)

    def test_elbo_and_loglik_callbacks(self):
        space = dfm.Space.discrete(V, D)
        path = dfm.Path.mixture(space, dfm.Scheduler.condot(), "uniform")
        loss = dfm.Loss.generalized_kl(path)

        def model(t, tokens, reals, out):
            raise Boom("elbo")
        with self.assertRaises(Boom) as cm:
            loss.elbo(model, np.zeros((3, D), np.int32), n_t=2)
        self.assertEqual(cm.exception.__cause__.status, dfm.ECALLBACK)
        ep = dfm.Path.affine(dfm.Space.euclidean(2), dfm.Scheduler.condot())
        s = dfm.Sampler(dfm.Generator.velocity(ep), "euler", steps=4)
        with self.assertRaises(Boom):
            s.log_likelihood(model, np.zeros((3, 2), np.float32))


class TestBadInput(unittest.TestCase):
    def setUp(self):
        self.s = discrete_sampler()
        self.called = False

    def model(self, t, tokens, reals, out):
        self.called = True
        out[...] = 0.0

    def test_sampler_arrays(self):
        s = self.s
        with self.assertRaises(TypeError):
            s.run(self.model, np.zeros((4, D), np.float32))          # floats are not tokens
        with self.assertRaises(TypeError):
            s.run(self.model, [[0.0, 0.5, 1.0]])
        with self.assertRaises(ValueError):
            s.run(self.model, np.zeros((4, D + 1), np.int32))
        with self.assertRaises(ValueError):
            s.run(self.model, np.zeros((4 * D,), np.int32))
        with self.assertRaises(ValueError):
            s.run(self.model, np.zeros((4, D), np.int32), rows=5)
        with self.assertRaises(TypeError):
            s.run(self.model, rows=4, fixed=np.zeros((4, D), np.int32))
        with self.assertRaises(TypeError):
            s.run(self.model, rows=4, save_times=["x"])
        with self.assertRaises(TypeError):
            s.run(self.model, rows=4.0)
        with self.assertRaises(ValueError):
            s.run(self.model, rows=4, out_shape="4d")
        with self.assertRaises(TypeError):
            s.run(self.model)
        with self.assertRaises(TypeError):
            s.run("not callable", rows=4)
        with self.assertRaises(ValueError):
            dfm.Sampler(s_gen(), "no such method")
        self.assertFalse(self.called)

    def test_library_range_errors(self):
        s = self.s
        with self.assertRaises(dfm.DfmError) as cm:
            s.run(self.model, np.full((2, D), V, np.int32))           # token out of range
        self.assertEqual(cm.exception.status, dfm.ERANGE)
        self.assertTrue(cm.exception.message)
        with self.assertRaises(dfm.DfmError) as cm:
            s.run(self.model, rows=2, save_times=np.array([0.5, 0.2]))
        self.assertEqual(cm.exception.status, dfm.EINVAL)
        with self.assertRaises(dfm.DfmError) as cm:
            s.set_grid(np.array([0.0, 0.5, 0.4, 1.0]))
        self.assertEqual(cm.exception.status, dfm.EINVAL)
        with self.assertRaises(dfm.DfmError) as cm:
            s.set_option("temperature", -1.0)
        self.assertIn(cm.exception.status, (dfm.EINVAL, dfm.ERANGE))
        with self.assertRaises(dfm.DfmError) as cm:
            s.threads = 0
        self.assertEqual(cm.exception.status, dfm.EINVAL)
        with self.assertRaises(dfm.DfmError) as cm:
            dfm.Sampler(s_gen(), "rk4")
        self.assertEqual(cm.exception.status, dfm.EUNSUPPORTED)

    def test_loss_arrays(self):
        space = dfm.Space.discrete(V, D)
        path = dfm.Path.mixture(space, dfm.Scheduler.condot(), "uniform")
        loss = dfm.Loss.generalized_kl(path)
        out = np.zeros((2, D * V), np.float32)
        t = np.array([0.2, 0.4])
        x = np.zeros((2, D), np.int32)
        with self.assertRaises(TypeError):
            loss.eval(out.astype(np.float64), t, x1_tokens=x, xt_tokens=x)
        with self.assertRaises(TypeError):
            loss.eval(out, t.astype(np.complex128), x1_tokens=x, xt_tokens=x)
        with self.assertRaises(ValueError):
            loss.eval(out, np.array([0.2, 0.4, 0.5]), x1_tokens=x, xt_tokens=x)
        with self.assertRaises(ValueError):
            loss.eval(out[:, :-1], t, x1_tokens=x, xt_tokens=x)
        with self.assertRaises(dfm.DfmError) as cm:
            loss.eval(out, np.array([0.2, 1.0]), x1_tokens=x, xt_tokens=x)
        self.assertEqual(cm.exception.status, dfm.ERANGE)
        bad = out.copy()
        bad[1, 2] = np.nan
        with self.assertRaises(dfm.DfmError) as cm:
            loss.eval(bad, t, x1_tokens=x, xt_tokens=x)
        self.assertEqual(cm.exception.status, dfm.ENUMERIC)
        with self.assertRaises(dfm.DfmError) as cm:
            dfm.Path.mixture(dfm.Space.euclidean(2), dfm.Scheduler.condot())
        self.assertEqual(cm.exception.status, dfm.EINVAL)
        with self.assertRaises(TypeError):
            dfm.Path.mixture(space, "condot")


def s_gen():
    space = dfm.Space.discrete(V, D)
    return dfm.Generator.factorized(dfm.Path.mixture(space, dfm.Scheduler.condot(), "mask"))


class TestLifetimes(unittest.TestCase):
    def build(self):
        calls = []

        def fn(t):
            calls.append(t)
            return (t, 1 - t, 1.0, -1.0)
        objs = {}
        objs["space"] = dfm.Space.discrete(V, D)
        objs["sched"] = dfm.Scheduler.custom(fn)
        objs["path"] = dfm.Path.mixture(objs["space"], objs["sched"], "mask")
        objs["gen"] = dfm.Generator.factorized(objs["path"])
        objs["loss"] = dfm.Loss.generalized_kl(objs["path"])
        objs["sampler"] = dfm.Sampler(objs["gen"], "exact", steps=4, seed=2)
        return objs, calls

    def test_free_in_any_order(self):
        names = ["space", "sched", "path", "gen", "loss", "sampler"]
        for order in itertools.permutations(names):
            objs, _ = self.build()
            for n in order:
                objs[n].close()
                objs[n].close()                      # idempotent
            for n in names:
                self.assertTrue(objs[n].closed)

    def test_survivors_work_after_others_are_freed(self):
        for keep in ["sampler", "loss", "gen", "path"]:
            objs, calls = self.build()
            survivor = objs.pop(keep)
            for o in objs.values():
                o.close()
            del objs
            gc.collect()
            n = len(calls)
            if keep == "sampler":
                survivor.run(zero_model, rows=3)
            elif keep == "loss":
                survivor.eval(np.zeros((1, D * V), np.float32), np.array([0.5]),
                              x1_tokens=np.zeros((1, D), np.int32),
                              xt_tokens=np.zeros((1, D), np.int32))
            elif keep == "gen":
                survivor.mixture_rates(np.array([0.5]), np.zeros((1, D), np.int32),
                                       np.zeros((1, D * V), np.float32))
            else:
                survivor.sample(np.array([0.5]), np.zeros((1, D), np.int32))
            self.assertGreater(len(calls), n, keep)   # the custom scheduler was called

    def test_garbage_collection_and_context_managers(self):
        for _ in range(50):
            objs, _ = self.build()
            del objs
        gc.collect()
        with dfm.Space.discrete(V, D) as sp:
            with dfm.Path.mixture(sp, dfm.Scheduler.condot(), "mask") as p:
                g = dfm.Generator.factorized(p)
        self.assertTrue(p.closed and sp.closed)
        with self.assertRaises(ValueError):
            p.sample(np.array([0.5]), np.zeros((1, D), np.int32))
        with self.assertRaises(ValueError):
            _ = sp.n_tokens
        self.assertEqual(g.out_stride, D * V)
        c = g.clone()
        g.close()
        self.assertEqual(c.path.kind, dfm.PATH_MIXTURE)
        self.assertEqual(c.path.space.n_tokens, D)

    def test_sampler_after_generator_freed_with_callbacks(self):
        s = discrete_sampler()
        gc.collect()
        r = s.run(zero_model, rows=4)
        self.assertEqual(r.tokens.shape, (4, D))


if __name__ == "__main__":
    unittest.main()


class TestPythonSide(unittest.TestCase):
    def test_copy_and_pickle(self):
        import copy
        import pickle
        s = discrete_sampler()
        with self.assertRaises(TypeError):
            copy.copy(s)                              # samplers have no clone
        with self.assertRaises(TypeError):
            pickle.dumps(s)
        e = pickle.loads(pickle.dumps(dfm.DfmError(dfm.ERANGE, "t = 2", "dfm_x", 3)))
        self.assertEqual((e.status, e.message, e.function, e.callback_status),
                         (dfm.ERANGE, "t = 2", "dfm_x", 3))
        sp = dfm.Space.discrete(V, D)
        c = copy.deepcopy(sp)
        sp.close()
        self.assertEqual(c.n_tokens, D)

    def test_closing_from_a_callback_is_refused(self):
        s = discrete_sampler()

        def model(t, tokens, reals, out):
            s.close()
        with self.assertRaises(RuntimeError):
            s.run(model, rows=2)
        self.assertFalse(s.closed)
        s.run(zero_model, rows=2)

    def test_threads_share_a_sampler(self):
        import threading
        s = discrete_sampler(steps=50)
        want = s.run(zero_model, rows=300).tokens
        got, errors = [], []

        def work():
            try:
                for _ in range(3):
                    got.append(s.run(zero_model, rows=300).tokens)
            except BaseException as e:
                errors.append(e)
        threads = [threading.Thread(target=work) for _ in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(got), 9)
        self.assertTrue(all(np.array_equal(g, want) for g in got))


class TestCreationReasons(unittest.TestCase):
    """Calls without a handle raise with dfm_last_error()'s reason, not only the status text."""

    def test_creation_errors_name_the_reason(self):
        with self.assertRaises(dfm.DfmError) as cm:
            dfm.Space.discrete(1, 8)
        self.assertEqual(cm.exception.status, dfm.EINVAL)
        self.assertIn("vocab must be in [2, ", str(cm.exception))
        self.assertIn("got 1", cm.exception.message)
        space = dfm.Space.discrete(V, D)
        with self.assertRaises(dfm.DfmError) as cm:
            dfm.Path.mixture(space, dfm.Scheduler.condot(), np.array([0.5, 0.5, 0.25, 0.25]))
        self.assertIn("p0 sums to 1.5", cm.exception.message)
        with self.assertRaises(dfm.DfmError) as cm:
            dfm.Sampler(s_gen(), "midpoint")
        self.assertEqual(cm.exception.status, dfm.EUNSUPPORTED)
        self.assertIn("has no method 3 (DFM_METHOD_MIDPOINT)", cm.exception.message)
        with self.assertRaises(dfm.DfmError) as cm:
            dfm.time_sample(3, 0, eps=1.0)
        self.assertIn("eps must be in [0, 1), got 1", cm.exception.message)
        self.assertEqual(dfm.last_error(), "dfm_time_sample: eps must be in [0, 1), got 1")
