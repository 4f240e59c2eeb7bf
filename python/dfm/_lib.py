"""Loading of libdfm and the ctypes mirror of its C ABI (structures, callbacks, prototypes).

The library is searched, in order (docs/python.md, "Which libdfm is loaded"):
  1. $DFM_LIBRARY: the path of the shared object (nothing else is tried);
  2. $DFM_LIBDIR/libdfm.so.0;
  3. the library the package was installed with: the copy bundled by `pip install ./python`
     (dfm/_libs/libdfm.so.0), or the libdir recorded by `make install-python`;
  4. the source tree: <repo>/lib/libdfm.so.0, when the package is <repo>/python/dfm;
  5. $(pkg-config --variable=libdir dfm)/libdfm.so.0;
  6. libdfm.so.0 through the system loader (ld.so.cache, LD_LIBRARY_PATH).
The first file that exists and loads is used; it must be libdfm major.minor = the version these
mirrors were written for (_version.MIRROR_VERSION), else ImportError.
"""
import ctypes
import os
import subprocess
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char_p, c_double, c_float, c_int, c_int32,
                    c_int64, c_size_t, c_uint, c_uint8, c_uint32, c_uint64, c_void_p)

from ._version import MIRROR_VERSION

SONAME = "libdfm.so.0"
HERE = os.path.dirname(os.path.abspath(__file__))


def _pkg_config_libdir():
    """libdir of an installed dfm.pc, or None (no pkg-config, no dfm.pc)."""
    try:
        r = subprocess.run([os.environ.get("PKG_CONFIG") or "pkg-config", "--variable=libdir",
                            "dfm"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    out = r.stdout.decode("utf-8", "replace").strip()
    return out if r.returncode == 0 and out else None


def _installed_libdir(here):
    """The libdir `make install-python` recorded in dfm/_install.py, or None."""
    try:
        with open(os.path.join(here, "_install.py")) as fh:
            text = fh.read()
    except OSError:
        return None
    ns = {}
    exec(compile(text, "_install.py", "exec"), ns)   # noqa: S102 -- written by our setup.py
    return ns.get("LIBDIR") or None


def candidates(environ=None, here=HERE, pkg_config=_pkg_config_libdir):
    """Yields (origin, path) in search order; pkg-config runs only when it is reached."""
    env = os.environ if environ is None else environ
    if env.get("DFM_LIBRARY"):
        yield "DFM_LIBRARY", env["DFM_LIBRARY"]
        return
    if env.get("DFM_LIBDIR"):
        yield "DFM_LIBDIR", os.path.join(env["DFM_LIBDIR"], SONAME)
    yield "bundled", os.path.join(here, "_libs", SONAME)
    libdir = _installed_libdir(here)
    if libdir:
        yield "install-python", os.path.join(libdir, SONAME)
    tree = os.path.normpath(os.path.join(here, "..", ".."))
    if os.path.exists(os.path.join(tree, "include", "dfm", "common.h")):
        yield "source tree", os.path.join(tree, "lib", SONAME)
    libdir = pkg_config()
    if libdir:
        yield "pkg-config", os.path.join(libdir, SONAME)
    yield "system loader", SONAME


def check_version(lib, path):
    """Raises ImportError unless lib is libdfm with the major.minor these mirrors were written
    for (a newer patch release is fine: patches change no structure or prototype)."""
    try:
        lib.dfm_version_number.restype = c_uint
        lib.dfm_version_number.argtypes = []
        number = lib.dfm_version_number()
    except AttributeError:
        raise ImportError("%s is not libdfm (it has no dfm_version_number)" % path) from None
    got = (number // 10000, number // 100 % 100, number % 100)
    if got[:2] != MIRROR_VERSION[:2]:
        raise ImportError(
            "libdfm %d.%d.%d at %s does not match this dfm package, written for libdfm %d.%d "
            "(its ctypes structures and prototypes mirror that version's headers): install "
            "the package from the same source tree as the library, or point DFM_LIBRARY at a "
            "libdfm %d.%d" % (got + (path,) + MIRROR_VERSION[:2] + MIRROR_VERSION[:2]))
    return got


def load(environ=None, here=HERE, pkg_config=_pkg_config_libdir):
    """(CDLL, path, origin) of the first candidate that exists and loads; its version is
    checked. ImportError listing every place tried when none loads."""
    tried = []
    for origin, path in candidates(environ, here, pkg_config):
        if os.sep in path and not os.path.exists(path):
            tried.append("%s (%s): not found" % (path, origin))
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append("%s (%s): %s" % (path, origin, e))
            continue
        check_version(lib, path)
        return lib, path, origin
    raise ImportError("libdfm shared library not found (build it with `make`, install it with "
                      "`make install`, or set DFM_LIBRARY to its path); tried: "
                      + "; ".join(tried))


lib, path, origin = load()

# ---- structures (mirrors of the public headers, every field in order) ----


class dfm_allocator(Structure):
    _fields_ = [("alloc", c_void_p), ("free", c_void_p), ("opaque", c_void_p)]


class dfm_model_io(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("rows", c_size_t),
        ("row_offset", c_size_t),
        ("t", POINTER(c_double)),
        ("tokens", POINTER(c_int32)),
        ("n_tokens", c_size_t),
        ("reals", POINTER(c_float)),
        ("n_reals", c_size_t),
        ("out", POINTER(c_float)),
        ("out_stride", c_size_t),
        ("branch", c_int),
        ("step", c_int),
        ("part_t", POINTER(c_double)),
        ("n_part_t", c_size_t),
        ("row_index", POINTER(c_size_t)),
    ]


class dfm_step_view(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("step", c_int),
        ("n_steps", c_int),
        ("t", c_double),
        ("rows", c_size_t),
        ("row_offset", c_size_t),
        ("n_tokens", c_size_t),
        ("tokens", POINTER(c_int32)),
        ("changed", c_int64),
    ]


class dfm_space_part(Structure):
    _fields_ = [("kind", c_int), ("vocab", c_int32), ("dim", c_size_t), ("offset", c_size_t)]


class dfm_sched_values(Structure):
    _fields_ = [("alpha", c_double), ("sigma", c_double), ("d_alpha", c_double),
                ("d_sigma", c_double)]


class dfm_path_sample_args(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("rows", c_size_t),
        ("row_offset", c_size_t),
        ("draw", c_uint32),
        ("t", POINTER(c_double)),
        ("x1_tokens", POINTER(c_int32)),
        ("x0_tokens", POINTER(c_int32)),
        ("xt_tokens", POINTER(c_int32)),
        ("x1_reals", POINTER(c_float)),
        ("x0_reals", POINTER(c_float)),
        ("xt_reals", POINTER(c_float)),
        ("target_reals", POINTER(c_float)),
        ("x0_reals_out", POINTER(c_float)),
    ]


class dfm_loss_args(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("rows", c_size_t),
        ("t", POINTER(c_double)),
        ("x1_tokens", POINTER(c_int32)),
        ("xt_tokens", POINTER(c_int32)),
        ("fixed", POINTER(c_uint8)),
        ("x0_reals", POINTER(c_float)),
        ("x1_reals", POINTER(c_float)),
        ("xt_reals", POINTER(c_float)),
        ("out", POINTER(c_float)),
        ("grad", POINTER(c_float)),
        ("values", POINTER(c_double)),
        ("loss", POINTER(c_double)),
    ]


model_fn = CFUNCTYPE(c_int, POINTER(dfm_model_io), c_void_p)
progress_fn = CFUNCTYPE(c_int, c_int, c_int, c_double, c_void_p)
schedule_fn = CFUNCTYPE(c_int, c_double, POINTER(dfm_sched_values), c_void_p)
schedule_inverse_fn = CFUNCTYPE(c_int, c_double, POINTER(c_double), c_void_p)
corrector_fn = CFUNCTYPE(c_int, c_double, POINTER(c_double), c_void_p)
step_fn = CFUNCTYPE(c_int, POINTER(dfm_step_view), c_void_p)
diffusion_fn = CFUNCTYPE(c_int, c_double, POINTER(c_double), c_void_p)
divergence_fn = CFUNCTYPE(c_int, POINTER(dfm_model_io), POINTER(c_double), c_void_p)
log_p0_fn = CFUNCTYPE(c_int, POINTER(c_float), c_size_t, c_size_t, POINTER(c_double), c_void_p)
cond_path_fn = CFUNCTYPE(c_int, c_double, c_int32, POINTER(c_double), POINTER(c_double), c_size_t,
                         c_void_p)
distance_fn = CFUNCTYPE(c_int, c_int32, POINTER(c_double), c_int32, c_void_p)
rate_matrix_fn = CFUNCTYPE(c_int, c_double, POINTER(c_double), c_size_t, c_void_p)
# generator matching (gm.h)
part_time_fn = CFUNCTYPE(c_int, c_double, POINTER(c_double), c_size_t, c_void_p)
weight_fn = CFUNCTYPE(c_int, c_double, POINTER(c_double), c_size_t, c_void_p)
backward_fn = CFUNCTYPE(c_int, POINTER(dfm_model_io), POINTER(c_float), c_void_p)


class dfm_cond_target_io(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("rows", c_size_t),
        ("t", POINTER(c_double)),
        ("xt_tokens", POINTER(c_int32)),
        ("x1_tokens", POINTER(c_int32)),
        ("n_tokens", c_size_t),
        ("xt_reals", POINTER(c_float)),
        ("x1_reals", POINTER(c_float)),
        ("x0_reals", POINTER(c_float)),
        ("n_reals", c_size_t),
        ("target", POINTER(c_float)),
        ("target_stride", c_size_t),
    ]


cond_target_fn = CFUNCTYPE(c_int, POINTER(dfm_cond_target_io), c_void_p)


class dfm_train_args(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("rows", c_size_t),
        ("row_offset", c_size_t),
        ("x1_tokens", POINTER(c_int32)),
        ("x1_reals", POINTER(c_float)),
        ("x0_tokens", POINTER(c_int32)),
        ("x0_reals", POINTER(c_float)),
        ("fixed", POINTER(c_uint8)),
        ("forward", model_fn),
        ("backward", backward_fn),
        ("user_data", c_void_p),
        ("loss", POINTER(c_double)),
        ("t_out", POINTER(c_double)),
    ]


class dfm_train_draw_args(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("rows", c_size_t),
        ("row_offset", c_size_t),
        ("x1_tokens", POINTER(c_int32)),
        ("x1_reals", POINTER(c_float)),
        ("x0_tokens", POINTER(c_int32)),
        ("x0_reals", POINTER(c_float)),
        ("t", POINTER(c_double)),
        ("part_t", POINTER(c_double)),
        ("xt_tokens", POINTER(c_int32)),
        ("xt_reals", POINTER(c_float)),
        ("x0_reals_out", POINTER(c_float)),
    ]


class dfm_run_args(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("model", model_fn),
        ("model_data", c_void_p),
        ("rows", c_size_t),
        ("row_offset", c_size_t),
        ("tokens", POINTER(c_int32)),
        ("reals", POINTER(c_float)),
        ("draw_source", c_int),
        ("fixed", POINTER(c_uint8)),
        ("save_times", POINTER(c_double)),
        ("n_save", c_size_t),
        ("saved_tokens", POINTER(c_int32)),
        ("saved_reals", POINTER(c_float)),
        ("progress", progress_fn),
        ("progress_data", c_void_p),
    ]


class dfm_elbo_args(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("rows", c_size_t),
        ("row_offset", c_size_t),
        ("draw", c_uint32),
        ("x1_tokens", POINTER(c_int32)),
        ("fixed", POINTER(c_uint8)),
        ("n_t", c_size_t),
        ("chunk_rows", c_size_t),
        ("model", model_fn),
        ("user_data", c_void_p),
        ("nelbo", POINTER(c_double)),
        ("std_error", POINTER(c_double)),
    ]


class dfm_loglik_args(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("model", model_fn),
        ("model_data", c_void_p),
        ("divergence", divergence_fn),
        ("divergence_data", c_void_p),
        ("log_p0", log_p0_fn),
        ("log_p0_data", c_void_p),
        ("rows", c_size_t),
        ("row_offset", c_size_t),
        ("x1", POINTER(c_float)),
        ("n_probes", c_size_t),
        ("fd_eps", c_double),
        ("logp", POINTER(c_double)),
        ("logp_var", POINTER(c_double)),
        ("x0_out", POINTER(c_float)),
        ("progress", progress_fn),
        ("progress_data", c_void_p),
    ]


# ---- prototypes ----
H = c_void_p            # any opaque handle
HP = POINTER(c_void_p)  # handle out-parameter
A = c_void_p            # const dfm_allocator * (always NULL from Python)
PD = POINTER(c_double)
PF = POINTER(c_float)
PI32 = POINTER(c_int32)
PI64 = POINTER(c_int64)
PU8 = POINTER(c_uint8)
S = c_size_t

_PROTOS = {
    # common
    "dfm_version_number": (c_uint, []),
    "dfm_version_string": (c_char_p, []),
    "dfm_strerror": (c_char_p, [c_int]),
    "dfm_last_error": (c_char_p, []),
    "dfm_status_count": (c_int, []),
    "dfm_max_threads": (c_int, []),
    # rng
    "dfm_rng_block": (None, [c_uint64, c_uint, c_uint64, c_uint32, c_uint32, POINTER(c_uint32)]),
    "dfm_rng_uniform": (c_double, [c_uint64, c_uint, c_uint64, c_uint32, c_uint32]),
    "dfm_rng_normal": (c_double, [c_uint64, c_uint, c_uint64, c_uint32, c_uint32]),
    "dfm_rng_categorical": (c_int, [c_uint64, c_uint, c_uint64, c_uint32, c_uint32, PF, S,
                                    c_double, PI32]),
    "dfm_rng_categorical_weights": (c_int, [c_uint64, c_uint, c_uint64, c_uint32, c_uint32, PD,
                                            S, PI32]),
    "dfm_rng_fill": (c_int, [c_uint64, c_uint, c_int, c_uint64, S, S, c_uint32, c_int, PF]),
    # space
    "dfm_space_create_discrete": (c_int, [HP, c_int32, S, A]),
    "dfm_space_create_euclidean": (c_int, [HP, S, A]),
    "dfm_space_create_product": (c_int, [HP, POINTER(c_void_p), S, A]),
    "dfm_space_clone": (c_int, [HP, H, A]),
    "dfm_space_free": (None, [H]),
    "dfm_space_kind": (c_int, [H]),
    "dfm_space_n_tokens": (S, [H]),
    "dfm_space_n_reals": (S, [H]),
    "dfm_space_n_parts": (S, [H]),
    "dfm_space_part_info": (c_int, [H, S, POINTER(dfm_space_part)]),
    "dfm_space_token_vocab": (c_int32, [H, S]),
    "dfm_space_check_tokens": (c_int, [H, PI32, S, POINTER(c_size_t)]),
    "dfm_max_vocab": (c_int32, []),
    "dfm_max_parts": (c_int, []),
    # scheduler
    "dfm_scheduler_create_condot": (c_int, [HP, A]),
    "dfm_scheduler_create_polynomial": (c_int, [HP, c_double, A]),
    "dfm_scheduler_create_cosine": (c_int, [HP, A]),
    "dfm_scheduler_create_linear_vp": (c_int, [HP, A]),
    "dfm_scheduler_create_vp": (c_int, [HP, c_double, c_double, A]),
    "dfm_scheduler_create_custom": (c_int, [HP, schedule_fn, schedule_inverse_fn, c_void_p, A]),
    "dfm_scheduler_clone": (c_int, [HP, H, A]),
    "dfm_scheduler_free": (None, [H]),
    "dfm_scheduler_kind": (c_int, [H]),
    "dfm_scheduler_eval": (c_int, [H, c_double, POINTER(dfm_sched_values), POINTER(c_int)]),
    "dfm_scheduler_kappa_inverse": (c_int, [H, c_double, PD, POINTER(c_int)]),
    # path
    "dfm_path_free": (None, [H]),
    "dfm_path_clone": (c_int, [HP, H, A]),
    "dfm_path_kind": (c_int, [H]),
    "dfm_path_space": (c_void_p, [H]),
    "dfm_path_scheduler": (c_void_p, [H]),
    "dfm_path_last_error": (c_char_p, [H]),
    "dfm_path_callback_status": (c_int, [H]),
    "dfm_path_set_int": (c_int, [H, c_int, c_int64]),
    "dfm_path_get_int": (c_int, [H, c_int, PI64]),
    "dfm_path_sample": (c_int, [H, POINTER(dfm_path_sample_args)]),
    "dfm_path_create_mixture": (c_int, [HP, H, H, c_int, c_int32, PD, A]),
    "dfm_path_create_affine": (c_int, [HP, H, H, A]),
    "dfm_path_create_finite": (c_int, [HP, H, cond_path_fn, c_void_p, A]),
    "dfm_path_create_metric": (c_int, [HP, H, H, c_double, PD, distance_fn, c_void_p, A]),
    "dfm_path_cond_probs": (c_int, [H, c_double, c_int32, PD]),
    "dfm_path_cond_rates": (c_int, [H, c_double, c_int32, PD]),
    "dfm_affine_convert": (c_int, [H, c_int, c_int, S, PD, PF, PF, PF]),
    # generator
    "dfm_generator_free": (None, [H]),
    "dfm_generator_clone": (c_int, [HP, H, A]),
    "dfm_generator_kind": (c_int, [H]),
    "dfm_generator_parameterization": (c_int, [H]),
    "dfm_generator_out_stride": (S, [H]),
    "dfm_generator_path": (c_void_p, [H]),
    "dfm_generator_last_error": (c_char_p, [H]),
    "dfm_generator_callback_status": (c_int, [H]),
    "dfm_generator_set_int": (c_int, [H, c_int, c_int64]),
    "dfm_generator_get_int": (c_int, [H, c_int, PI64]),
    "dfm_generator_set_double": (c_int, [H, c_int, c_double]),
    "dfm_generator_get_double": (c_int, [H, c_int, PD]),
    "dfm_generator_create_factorized": (c_int, [HP, H, c_int, A]),
    "dfm_mixture_rates": (c_int, [H, S, PD, PI32, PF, PF]),
    "dfm_generator_create_velocity": (c_int, [HP, H, c_int, A]),
    "dfm_generator_create_diffusion": (c_int, [HP, H, c_int, c_double, A]),
    "dfm_generator_set_diffusion_fn": (c_int, [H, diffusion_fn, c_void_p]),
    "dfm_generator_set_sampling_scheduler": (c_int, [H, H]),
    "dfm_generator_create_rate_matrix": (c_int, [HP, H, H, c_int, A]),
    "dfm_generator_create_metric": (c_int, [HP, H, A]),
    # loss
    "dfm_loss_free": (None, [H]),
    "dfm_loss_clone": (c_int, [HP, H, A]),
    "dfm_loss_kind": (c_int, [H]),
    "dfm_loss_last_error": (c_char_p, [H]),
    "dfm_loss_callback_status": (c_int, [H]),
    "dfm_loss_set_int": (c_int, [H, c_int, c_int64]),
    "dfm_loss_get_int": (c_int, [H, c_int, PI64]),
    "dfm_loss_set_double": (c_int, [H, c_int, c_double]),
    "dfm_loss_get_double": (c_int, [H, c_int, PD]),
    "dfm_loss_eval": (c_int, [H, POINTER(dfm_loss_args)]),
    "dfm_loss_create_generalized_kl": (c_int, [HP, H, A]),
    "dfm_loss_create_cross_entropy": (c_int, [HP, H, c_int, A]),
    "dfm_loss_create_mse": (c_int, [HP, H, A]),
    "dfm_loss_create_bregman_rates": (c_int, [HP, H, A]),
    "dfm_loss_discrete_elbo": (c_int, [H, POINTER(dfm_elbo_args)]),
    "dfm_time_sample": (c_int, [c_uint64, c_uint32, c_int, c_double, c_double, c_double,
                                c_uint64, S, PD]),
    # sampler
    "dfm_sampler_create": (c_int, [HP, H, c_int, A]),
    "dfm_sampler_free": (None, [H]),
    "dfm_sampler_method": (c_int, [H]),
    "dfm_sampler_last_error": (c_char_p, [H]),
    "dfm_sampler_callback_status": (c_int, [H]),
    "dfm_sampler_set_steps": (c_int, [H, S]),
    "dfm_sampler_set_grid": (c_int, [H, PD, S]),
    "dfm_sampler_set_int": (c_int, [H, c_int, c_int64]),
    "dfm_sampler_get_int": (c_int, [H, c_int, PI64]),
    "dfm_sampler_set_double": (c_int, [H, c_int, c_double]),
    "dfm_sampler_get_double": (c_int, [H, c_int, PD]),
    "dfm_sampler_run": (c_int, [H, POINTER(dfm_run_args)]),
    "dfm_sampler_get_stat": (c_int, [H, c_int, PI64]),
    "dfm_sampler_request_stop": (None, [H]),
    "dfm_sampler_set_corrector": (c_int, [H, corrector_fn, c_void_p]),
    "dfm_sampler_set_step_callback": (c_int, [H, step_fn, c_void_p]),
    "dfm_sampler_log_likelihood": (c_int, [H, POINTER(dfm_loglik_args)]),
    # ctmc
    "dfm_ctmc_max_states": (S, []),
    "dfm_ctmc_n_states": (c_int, [H, POINTER(c_size_t)]),
    "dfm_ctmc_flatten": (c_int, [H, PI32, S, PI32]),
    "dfm_ctmc_unflatten": (c_int, [H, PI32, S, PI32]),
    "dfm_ctmc_create": (c_int, [HP, S, A]),
    "dfm_ctmc_free": (None, [H]),
    "dfm_ctmc_last_error": (c_char_p, [H]),
    "dfm_ctmc_callback_status": (c_int, [H]),
    "dfm_ctmc_expm": (c_int, [H, PD, c_double, PD]),
    "dfm_ctmc_kernel": (c_int, [H, PD, c_double, PD]),
    "dfm_ctmc_propagate": (c_int, [H, PD, S, PD, c_double, PD]),
    "dfm_ctmc_propagate_ode": (c_int, [H, PD, S, rate_matrix_fn, c_void_p, c_double, c_double,
                                       S, PD]),
    "dfm_ctmc_kinetic_rates": (c_int, [PD, PD, S, PD]),
    "dfm_bregman_rates": (c_int, [PD, PD, S, PD, PD]),
    # generator matching (gm.h)
    "dfm_path_create_product": (c_int, [HP, POINTER(c_void_p), S, A]),
    "dfm_path_n_parts": (S, [H]),
    "dfm_path_part": (c_void_p, [H, S]),
    "dfm_path_sample_parts": (c_int, [H, POINTER(dfm_path_sample_args), PD]),
    "dfm_generator_create_product": (c_int, [HP, POINTER(c_void_p), S, A]),
    "dfm_generator_set_part_time_fn": (c_int, [H, part_time_fn, c_void_p]),
    "dfm_generator_n_parts": (S, [H]),
    "dfm_loss_create_product": (c_int, [HP, H, POINTER(c_void_p), PD, S, A]),
    "dfm_loss_eval_parts": (c_int, [H, POINTER(dfm_loss_args), PD]),
    "dfm_generator_create_superposition": (c_int, [HP, POINTER(c_void_p), PD, S, A]),
    "dfm_generator_set_weight_fn": (c_int, [H, weight_fn, c_void_p]),
    "dfm_generator_superposition_set_input": (c_int, [H, S, c_int, c_int64]),
    "dfm_generator_branch_stride": (S, [H, c_int]),
    "dfm_generator_create_guidance": (c_int, [HP, H, H, c_double, A]),
    "dfm_generator_create_mixture_backward": (c_int, [HP, H, A]),
    "dfm_sampler_step_clamped": (c_int, [H, PI64]),
    "dfm_trainer_create": (c_int, [HP, H, H, A]),
    "dfm_trainer_free": (None, [H]),
    "dfm_trainer_last_error": (c_char_p, [H]),
    "dfm_trainer_callback_status": (c_int, [H]),
    "dfm_trainer_set_int": (c_int, [H, c_int, c_int64]),
    "dfm_trainer_get_int": (c_int, [H, c_int, PI64]),
    "dfm_trainer_set_double": (c_int, [H, c_int, c_double]),
    "dfm_trainer_get_double": (c_int, [H, c_int, PD]),
    "dfm_trainer_step_count": (c_uint64, [H]),
    "dfm_trainer_set_step": (c_int, [H, c_uint64]),
    "dfm_trainer_n_times": (S, [H]),
    "dfm_trainer_step": (c_int, [H, POINTER(dfm_train_args)]),
    "dfm_trainer_draw": (c_int, [H, POINTER(dfm_train_draw_args)]),
    "dfm_loss_create_gm": (c_int, [HP, H, c_int, cond_target_fn, c_void_p, A]),
}

def _bind(lib, path):
    missing = [name for name in _PROTOS if not hasattr(lib, name)]
    if missing:
        raise ImportError("libdfm at %s lacks %s: it was built from older sources than this "
                          "package (rebuild it, or point DFM_LIBRARY at a matching build)"
                          % (path, ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")))
    for name, (res, args) in _PROTOS.items():
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = args


_bind(lib, path)
