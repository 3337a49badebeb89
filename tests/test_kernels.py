"""Native optimizer kernels vs the float64 reference, on every SIMD target and thread count."""

from __future__ import annotations

import fastoptim
import numpy as np
import pytest
import reference as ref
from conftest import SIZES, THREADS

DTYPES = [np.float32, np.float64]
# Error bound: a small multiple of the dtype's eps times the reference's magnitude.
ULPS = 16


def tol(dtype, reference):
    scale = max(1.0, float(np.max(np.abs(reference)))) if np.size(reference) else 1.0
    return ULPS * np.finfo(dtype).eps * scale


def make(rng, n, dtype, k):
    return [rng.standard_normal(n).astype(dtype) for _ in range(k)]


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.05, weight_decay=0.01, maximize=True),
    dict(lr=0.1, momentum=0.9, first_step=True),
    dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.05),
    dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True),
]
ADAM_CASES = [
    dict(step=1),
    dict(step=7, lr=1e-2, weight_decay=0.1),
    dict(step=3, lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, maximize=True),
    dict(step=5, amsgrad=True, beta1=0.8, beta2=0.99, eps=1e-6),
    dict(step=2, amsgrad=True, weight_decay=0.01, decoupled_weight_decay=True),
]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", range(len(SGD_CASES)))
def test_sgd_matches_reference(simd_target, num_threads, rng, n, dtype, case):
    kw = SGD_CASES[case]
    p, g, buf = make(rng, n, dtype, 3)
    want_p, want_buf = ref.sgd(p, g, buf, **kw)
    fastoptim.sgd_step(p, g, buf if kw.get("momentum") else None, **kw)
    assert np.max(np.abs(p - want_p), initial=0) <= tol(dtype, want_p)
    if want_buf is not None:
        assert np.max(np.abs(buf - want_buf), initial=0) <= tol(dtype, want_buf)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", range(len(ADAM_CASES)))
def test_adam_matches_reference(simd_target, num_threads, rng, n, dtype, case):
    kw = ADAM_CASES[case]
    p, g, m = make(rng, n, dtype, 3)
    v = np.abs(make(rng, n, dtype, 1)[0])
    vmax = v + np.abs(make(rng, n, dtype, 1)[0]) * (rng.random(n) < 0.5).astype(dtype)
    want = ref.adam(p, g, m, v, vmax, **kw)
    fastoptim.adam_step(p, g, m, v, vmax if kw.get("amsgrad") else None, **kw)
    for got, w in zip((p, m, v, vmax), want, strict=True):
        if w is not None:
            assert np.max(np.abs(got - w), initial=0) <= tol(dtype, w)


def test_multi_tensor_equals_per_tensor_calls(simd_target, rng):
    """One call over a list of 200 arrays gives exactly what 200 single calls give."""
    sizes = rng.integers(0, 3000, 200)
    kw = dict(step=4, lr=1e-2, weight_decay=0.01, decoupled_weight_decay=True)
    lists = [[rng.standard_normal(s).astype(np.float32) for s in sizes] for _ in range(4)]
    for v in lists[3]:
        np.abs(v, out=v)
    singles = [[a.copy() for a in lst] for lst in lists]
    fastoptim.set_num_threads(2)
    fastoptim.adam_step(*lists, **kw)
    fastoptim.set_num_threads(1)
    for i in range(len(sizes)):
        fastoptim.adam_step(*(lst[i] for lst in singles), **kw)
    for a_list, b_list in zip(lists, singles, strict=True):
        for a, b in zip(a_list, b_list, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_bitwise_identical_across_thread_counts(simd_target, rng, dtype):
    sizes = [2**20 + 3, 1000, 65, 300_001, 17]
    base = [[rng.standard_normal(s).astype(dtype) for s in sizes] for _ in range(4)]
    for v in base[3]:
        np.abs(v, out=v)
    results = {}
    for nt in THREADS:
        fastoptim.set_num_threads(nt)
        arrs = [[a.copy() for a in lst] for lst in base]
        bufs = [a.copy() for a in base[2]]
        for step in range(1, 4):
            fastoptim.adam_step(*arrs, step=step, lr=1e-2, weight_decay=0.1)
            fastoptim.sgd_step(arrs[0], arrs[1], bufs, lr=0.1, momentum=0.9, nesterov=True,
                               first_step=step == 1)
        norm = fastoptim.global_norm(arrs[0])
        results[nt] = (arrs, bufs, norm)
    first = results[THREADS[0]]
    for nt in THREADS[1:]:
        other = results[nt]
        for la, lb in zip(first[0] + [first[1]], other[0] + [other[1]], strict=True):
            for a, b in zip(la, lb, strict=True):
                assert a.tobytes() == b.tobytes()
        assert first[2] == other[2]  # exact: fixed-chunk reduction


def test_targets_agree(rng):
    """Every compiled target the CPU runs gives the same update within tolerance."""
    base = make(rng, 100_003, np.float32, 4)
    np.abs(base[3], out=base[3])
    before = fastoptim.simd_target()
    outs = {}
    try:
        for t in fastoptim.simd_targets():
            fastoptim.set_simd_target(t)
            arrs = [a.copy() for a in base]
            fastoptim.adam_step(*arrs, step=3, lr=1e-2)
            outs[t] = arrs[0]
    finally:
        fastoptim.set_simd_target(before)
    for t, p in outs.items():
        np.testing.assert_allclose(p, outs["scalar"], rtol=4e-7, atol=1e-7, err_msg=t)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_global_norm_and_clip(simd_target, num_threads, rng, n, dtype):
    arrays = [rng.standard_normal(n).astype(dtype), rng.standard_normal(3).astype(dtype)]
    want = ref.global_norm(arrays)
    assert abs(fastoptim.global_norm(arrays) - want) <= 1e-12 * max(1.0, want)
    before = [a.copy() for a in arrays]
    max_norm = 0.5 * want
    got = fastoptim.clip_by_global_norm(arrays, max_norm)
    assert abs(got - want) <= 1e-12 * max(1.0, want)
    coef = max_norm / (want + 1e-6)
    for a, b in zip(arrays, before, strict=True):
        np.testing.assert_allclose(a, b * coef, rtol=np.finfo(dtype).eps * 4, atol=0)
    # Already small enough: untouched, bit for bit.
    snap = [a.copy() for a in arrays]
    fastoptim.clip_by_global_norm(arrays, 10 * want + 1)
    for a, b in zip(arrays, snap, strict=True):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_clip_nonfinite_policy(bad):
    g = [np.ones(10, np.float32), np.ones(5, np.float32)]
    g[1][2] = bad
    snap = [a.copy() for a in g]
    norm = fastoptim.clip_by_global_norm(g, 1.0)
    assert not np.isfinite(norm)
    for a, b in zip(g, snap, strict=True):
        assert a.tobytes() == b.tobytes()  # policy: left unchanged, norm reported
    with pytest.raises(ValueError, match="global norm"):
        fastoptim.clip_by_global_norm(g, 1.0, error_if_nonfinite=True)


def test_step_counter_beyond_float32_range():
    """step is an int64: at 2**24 + 1 the bias correction still uses the exact count."""
    kw = dict(lr=1.0, beta1=1 - 1e-7, beta2=1 - 1e-7)
    results = {}
    for step in (2**24, 2**24 + 1, 2**24 + 2):
        p, g, m, v = (np.full(8, x) for x in (1.0, 0.5, 0.1, 0.2))
        want = ref.adam(p, g, m, v, None, step=step, **kw)
        fastoptim.adam_step(p, g, m, v, step=step, **kw)
        np.testing.assert_allclose(p, want[0], rtol=1e-13)
        results[step] = p[0]
    # float32(2**24 + 1) == 2**24: a float32 counter would make these equal.
    assert len(set(results.values())) == 3


def test_zero_gradient_zero_decay_leaves_params():
    p = np.linspace(-1, 1, 1001).astype(np.float32)
    snap = p.copy()
    g = np.zeros_like(p)
    fastoptim.sgd_step(p, g, np.zeros_like(p), lr=0.1, momentum=0.9, first_step=True)
    fastoptim.adam_step(p, g, np.zeros_like(p), np.zeros_like(p), step=1)
    assert p.tobytes() == snap.tobytes()
    assert not g.any()  # gradients are never written


def test_runtime_controls():
    assert fastoptim.simd_target() in fastoptim.simd_targets()
    assert fastoptim.simd_targets()[0] == "scalar"
    assert set(fastoptim.simd_targets()) <= set(fastoptim.compiled_simd_targets())
    with pytest.raises(ValueError, match="unknown SIMD target"):
        fastoptim.set_simd_target("sse9")
    with pytest.raises(ValueError, match="n must be >= 1"):
        fastoptim.set_num_threads(0)
    before = fastoptim.get_num_threads()
    fastoptim.set_num_threads(1)
    assert fastoptim.get_num_threads() == 1
    fastoptim.set_num_threads(before)
