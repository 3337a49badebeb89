"""fastoptim: fast, trustworthy CPU kernels and tools for training deep-learning models.

The native kernels update numpy arrays in place (one array or a list of arrays per call),
with SIMD chosen at run time and OpenMP threads; see README.md for the tour.

Threads follow OpenMP's setting (set_num_threads, OMP_NUM_THREADS, threadpoolctl). In a
child created by fork() the kernels run serially: OpenMP's thread pool does not survive
fork(), and a multi-threaded region there would hang. Use the spawn or forkserver start
method for children that need threads.
"""

from __future__ import annotations

import os as _os

# Idle OpenMP workers sleep instead of spinning, unless the user chose a policy. numpy's
# OpenBLAS keeps its own spinning worker threads: with both pools spinning on the same
# cores, each waits for the other's time slice (bench/bench_thread_pools.py: a BLAS product
# plus an Adam step went from ~0.3 ms to 26-40 ms per iteration on 2 cores). libgomp reads
# the policy when it is loaded, i.e. when fastoptim._core is first imported.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from fastoptim import losses, metrics, nn
from fastoptim._core import (
    adadelta_step,
    adafactor_step,
    adagrad_step,
    adam_step,
    adamax_step,
    ademamix_step,
    asgd_step,
    clip_by_global_norm,
    compiled_simd_targets,
    get_num_threads,
    global_norm,
    have_openmp,
    lamb_step,
    lars_step,
    lerp_,
    lion_step,
    muon_momentum,
    muon_update,
    nadam_step,
    radam_step,
    rmsprop_step,
    rprop_step,
    schedulefree_adamw_step,
    schedulefree_sgd_step,
    set_num_threads,
    set_simd_target,
    sgd_step,
    simd_target,
    simd_targets,
    sparse_adam_step,
)

__version__ = "0.1.0"


def get_include() -> str:
    """Folder holding the C++ headers (``#include <fastoptim/kernels.hpp>``)."""
    return _os.path.join(_os.path.dirname(__file__), "include")


__all__ = [
    "__version__",
    "adadelta_step",
    "adagrad_step",
    "adam_step",
    "adamax_step",
    "ademamix_step",
    "asgd_step",
    "clip_by_global_norm",
    "compiled_simd_targets",
    "get_include",
    "get_num_threads",
    "global_norm",
    "have_openmp",
    "lion_step",
    "nadam_step",
    "radam_step",
    "rmsprop_step",
    "rprop_step",
    "losses",
    "metrics",
    "nn",
    "set_num_threads",
    "set_simd_target",
    "sgd_step",
    "simd_target",
    "simd_targets",
    "adafactor_step",
    "muon_momentum",
    "muon_update",
    "sparse_adam_step",
]
__all__ += ["lamb_step", "lars_step", "lerp_", "schedulefree_adamw_step", "schedulefree_sgd_step"]
