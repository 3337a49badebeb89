"""Shared fixtures: every test that touches a kernel can run on each SIMD target and
thread count that this machine supports."""

from __future__ import annotations

import os

import fastoptim
import numpy as np
import pytest

# FASTOPTIM_SIMD=<target> pins the whole suite to that target (CI runs it once per target);
# otherwise the per-target tests run every target this CPU supports.
FORCED_TARGET = os.environ.get("FASTOPTIM_SIMD")
TARGETS = [FORCED_TARGET] if FORCED_TARGET else fastoptim.simd_targets()
THREADS = [1, 2, 3] if fastoptim.have_openmp() else [1]
# Sizes that hit SIMD tails (8/16 lanes), unroll boundaries and thread splits.
SIZES = [0, 1, 7, 8, 15, 16, 17, 63, 64, 65, 1000, 2**20 + 3]


@pytest.fixture(params=TARGETS)
def simd_target(request):
    """Runs the test once per SIMD target the CPU supports, restoring the default after."""
    before = fastoptim.simd_target()
    fastoptim.set_simd_target(request.param)
    yield request.param
    fastoptim.set_simd_target(before)


@pytest.fixture(params=THREADS, ids=lambda n: f"threads{n}")
def num_threads(request):
    before = fastoptim.get_num_threads()
    fastoptim.set_num_threads(request.param)
    yield request.param
    fastoptim.set_num_threads(before)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# CI installs every optional package and service, so there a skip means a missing install
# step, not a missing feature: FASTOPTIM_NO_SKIPS=1 turns every skip into a failure, except
# the ones below, which do not depend on what is installed.
_ALLOWED_SKIPS = (
    "SCIPY_ARRAY_API",                      # scikit-learn's own array-API estimator check
    "finished before it could be killed",   # a timing race the test reports honestly
)


def _refuse_skip(report) -> None:
    if os.environ.get("FASTOPTIM_NO_SKIPS") != "1" or not report.skipped:
        return
    if hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
    if any(a in reason for a in _ALLOWED_SKIPS):
        return
    report.outcome = "failed"
    report.longrepr = f"skipped under FASTOPTIM_NO_SKIPS=1 (missing install step?): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _refuse_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _refuse_skip(outcome.get_result())
