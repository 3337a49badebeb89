"""The fused AVX-512 paths of the Adam format kernels (kernels/adam_fused.hpp) give bitwise
the results of the general chunked path, which tests/test_formats.py checks against float64
references: every combination they take, every decay mode, tails, NaN and thread counts."""

from __future__ import annotations

import fastoptim
import numpy as np
import pytest
from conftest import THREADS
from fastoptim import _core, formats

pytestmark = pytest.mark.skipif("avx512" not in fastoptim.simd_targets(),
                                reason="the fused paths are AVX-512 kernels; no AVX-512 here")

VARIANTS = [False] + ([True] if _core.cpu_has_avx512bf16() else [])
# a q8 block tail, a 16-lane tail, several blocks, a tensor split between threads
SIZES = [4099, 5000, 70001, 2 * 2**16 + 37]


@pytest.fixture(params=VARIANTS, ids=lambda v: "avx512" + ("+bf16insn" if v else ""))
def avx512(request):
    before = fastoptim.simd_target()
    prev = _core.set_bf16_instructions(request.param)
    fastoptim.set_simd_target("avx512")
    yield request.param
    fastoptim.set_simd_target(before)
    _core.set_bf16_instructions(prev)


def _problem(pfmt, gfmt, sfmt, seed, amsgrad=False):
    rng = np.random.default_rng(seed)
    params, grads, states = [], [], []
    for n in SIZES:
        p = rng.standard_normal(n).astype(np.float32)
        g = (rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 1, n)).astype(np.float32)
        g[rng.random(n) < 0.01] = 0.0
        if n == SIZES[1]:
            g[7] = np.nan  # one block of state becomes NaN (absmax NaN), the rest not
        params.append(formats.bf16_from_float(p) if pfmt == "bf16" else p)
        grads.append(formats.bf16_from_float(g) if gfmt == "bf16"
                     else g.astype(np.float16) if gfmt == "f16" else g)
        states.append(formats.new_state(p, sfmt, amsgrad=amsgrad))
    return params, grads, states


def _bits(x):
    x = np.asarray(x)
    return x.view({4: np.uint32, 2: np.uint16, 1: np.uint8}[x.dtype.itemsize])


def _run(fused, pfmt, gfmt, sfmt, kw, threads, steps=4):
    prev_f = _core.set_fused_formats(fused)
    prev_t = fastoptim.get_num_threads()
    fastoptim.set_num_threads(threads)
    try:
        params, grads, states = _problem(pfmt, gfmt, sfmt, 3, kw.get("amsgrad", False))
        for _ in range(steps):
            formats.adam_step(params, grads, states, **kw)
    finally:
        _core.set_fused_formats(prev_f)
        fastoptim.set_num_threads(prev_t)
    return params, states


def _assert_same(a, b):
    pa, sa = a
    pb, sb = b
    for x, y in zip(pa, pb, strict=True):
        np.testing.assert_array_equal(_bits(x), _bits(y))
    for x, y in zip(sa, sb, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            if k in ("step", "state_format"):
                assert x[k] == y[k]
            else:
                np.testing.assert_array_equal(_bits(x[k]), _bits(y[k]), err_msg=k)


@pytest.mark.parametrize("sfmt", ["bf16", "int8"])
@pytest.mark.parametrize("pfmt,gfmt,prnd", [
    ("fp32", "fp32", "stochastic"), ("fp32", "bf16", "stochastic"), ("fp32", "f16", "stochastic"),
    ("bf16", "bf16", "stochastic"), ("bf16", "bf16", "nearest"), ("bf16", "fp32", "stochastic"),
])
@pytest.mark.parametrize("decay", ["none", "l2", "decoupled"])
def test_fused_equals_general(avx512, sfmt, pfmt, gfmt, prnd, decay):
    kw = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, seed=11, param_rounding=prnd,
              weight_decay=0.0 if decay == "none" else 0.05,
              decoupled_weight_decay=decay == "decoupled", maximize=decay == "l2")
    general = _run(False, pfmt, gfmt, sfmt, kw, 1)
    fused = _run(True, pfmt, gfmt, sfmt, kw, 1)
    _assert_same(fused, general)
    # the NaN gradient reached the state of its block, and only that block's absmax
    if sfmt == "int8":
        am = fused[1][1]["exp_avg_absmax"]
        assert np.isnan(am[0]) and not np.isnan(am[1:]).any()


@pytest.mark.parametrize("sfmt", ["bf16", "int8"])
@pytest.mark.parametrize("threads", [t for t in THREADS if t > 1])
def test_fused_thread_count_independent(avx512, sfmt, threads):
    kw = dict(lr=1e-3, weight_decay=0.01, decoupled_weight_decay=True, seed=5)
    _assert_same(_run(True, "bf16", "bf16", sfmt, kw, threads),
                 _run(True, "bf16", "bf16", sfmt, kw, 1))


def test_general_only_combinations_unchanged(avx512):
    # amsgrad, stochastic bf16 state and fp32 state never take a fused path: switching it
    # off changes nothing there either (and the switch reports its previous setting)
    for sfmt, kw in (("int8", dict(amsgrad=True)), ("bf16", dict(state_rounding="stochastic")),
                     ("fp32", {})):
        _assert_same(_run(True, "fp32", "fp32", sfmt, kw, 1),
                     _run(False, "fp32", "fp32", sfmt, kw, 1))
    assert _core.set_fused_formats(True) is True
    assert _core.set_fused_formats(True) is True
