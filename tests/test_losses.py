"""Loss kernels: float64 reference on every SIMD target and thread count, torch, finite
differences, stability, bad inputs."""

from __future__ import annotations

import fastoptim
import numpy as np
import pytest
import reference as ref
from fastoptim import _core, losses

POINT = {
    "mse": losses.mean_squared_error,
    "mae": losses.mean_absolute_error,
    "huber": losses.huber,
    "bce_logits": losses.binary_cross_entropy_with_logits,
}
LOSS_SIZES = [1, 7, 16, 17, 65, 1000, 2**17 + 3]
# Python floats: pytest 9's approx rejects numpy float32 tolerances.
EPS = {t: float(np.finfo(t).eps) for t in (np.float32, np.float64)}


def _point_data(rng, kind, n, dtype):
    x = (rng.standard_normal(n) * 2).astype(dtype)
    t = rng.uniform(0, 1, n).astype(dtype) if kind == "bce_logits" else \
        (rng.standard_normal(n) * 2).astype(dtype)
    return x, t


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", list(POINT))
def test_point_loss_matches_reference(simd_target, num_threads, rng, kind, reduction, dtype):
    for n in LOSS_SIZES:
        x, t = _point_data(rng, kind, n, dtype)
        loss, g = POINT[kind](x, t, reduction=reduction)
        rl, rg = ref.point_loss(kind, x, t, reduction=reduction)
        # loss summed in double: a few eps of the input precision per element, relative
        assert loss == pytest.approx(rl, rel=8 * EPS[dtype], abs=8 * EPS[dtype])
        assert g.dtype == dtype
        np.testing.assert_allclose(g, rg, rtol=4 * EPS[dtype],
                                   atol=4 * EPS[dtype] * np.abs(rg).max())


@pytest.mark.parametrize("kind", list(POINT))
def test_point_loss_bitwise_identical_across_threads(simd_target, rng, kind):
    x, t = _point_data(rng, kind, 2**18 + 5, np.float32)
    before = fastoptim.get_num_threads()
    out = []
    try:
        for nt in (1, 2, 3):
            fastoptim.set_num_threads(nt)
            out.append(POINT[kind](x, t, reduction="sum"))
    finally:
        fastoptim.set_num_threads(before)
    for loss, g in out[1:]:
        assert loss == out[0][0]
        assert np.array_equal(g, out[0][1])


@pytest.mark.parametrize("kind", list(POINT))
def test_point_loss_matches_torch(rng, kind):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    fns = {"mse": F.mse_loss, "mae": F.l1_loss,
           "huber": lambda a, b: F.huber_loss(a, b, delta=0.7),
           "bce_logits": F.binary_cross_entropy_with_logits}
    x, t = _point_data(rng, kind, 333, np.float32)
    kw = {"delta": 0.7} if kind == "huber" else {}
    loss, g = POINT[kind](x, t, **kw)
    xt = torch.tensor(x, requires_grad=True)
    lt = fns[kind](xt, torch.tensor(t))
    lt.backward()
    assert loss == pytest.approx(lt.item(), rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-5, atol=1e-7)


def _fd_check(f, x, h=1e-6, rtol=1e-6, atol=1e-7):
    """Central differences of the scalar f at x (float64) vs the analytic gradient."""
    _, g = f(x)
    num = np.empty_like(x)
    flat, nflat = x.reshape(-1), num.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        lp = f(x)[0]
        flat[i] = old - h
        lm = f(x)[0]
        flat[i] = old
        nflat[i] = (lp - lm) / (2 * h)
    np.testing.assert_allclose(g, num, rtol=rtol, atol=atol)


@pytest.mark.parametrize("kind", list(POINT))
def test_point_loss_finite_differences(rng, kind):
    x, t = _point_data(rng, kind, 40, np.float64)
    if kind in ("mae", "huber"):  # keep away from the kinks at d = 0 and |d| = delta
        d = x - t
        x = np.where(np.abs(d) < 1e-3, x + 0.01, x)
        x = np.where(np.abs(np.abs(x - t) - 1.0) < 1e-3, x + 0.01, x)
    _fd_check(lambda v: POINT[kind](v, t), x.copy())


XENT_CASES = [
    dict(),
    dict(label_smoothing=0.1),
    dict(weight=True),
    dict(weight=True, label_smoothing=0.2),
    dict(reduction="sum"),
    dict(probs=True),
    dict(probs=True, weight=True, label_smoothing=0.3),
]


def _xent_args(rng, case, n, c, dtype):
    z = (rng.standard_normal((n, c)) * 3).astype(dtype)
    if case.get("probs"):
        t = rng.dirichlet(np.ones(c), size=n).astype(dtype)
    else:
        t = rng.integers(0, c, n)
    kw = {k: v for k, v in case.items() if k in ("label_smoothing", "reduction")}
    if case.get("weight"):
        kw["weight"] = rng.uniform(0.2, 2.0, c).astype(dtype)
    return z, t, kw


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", XENT_CASES, ids=lambda c: "-".join(c) or "plain")
def test_softmax_xent_matches_reference(simd_target, num_threads, rng, case, dtype):
    for n, c in [(1, 1), (3, 2), (17, 10), (130, 33), (3000, 64)]:
        z, t, kw = _xent_args(rng, case, n, c, dtype)
        loss, g = losses.softmax_cross_entropy(z, t, **kw)
        rl, rg = ref.softmax_cross_entropy(z, t, **kw)
        tol = 16 * EPS[dtype] * max(1.0, np.log(c))
        assert loss == pytest.approx(rl, rel=tol, abs=tol)
        np.testing.assert_allclose(g, rg, rtol=tol, atol=tol * np.abs(rg).max())


def test_softmax_xent_bitwise_identical_across_threads(simd_target, rng):
    z = rng.standard_normal((4099, 37)).astype(np.float32)
    t = rng.integers(0, 37, 4099)
    before = fastoptim.get_num_threads()
    out = []
    try:
        for nt in (1, 2, 3):
            fastoptim.set_num_threads(nt)
            out.append(losses.softmax_cross_entropy(z, t, label_smoothing=0.1))
    finally:
        fastoptim.set_num_threads(before)
    for loss, g in out[1:]:
        assert loss == out[0][0] and np.array_equal(g, out[0][1])


@pytest.mark.parametrize("case", XENT_CASES, ids=lambda c: "-".join(c) or "plain")
def test_softmax_xent_matches_torch(rng, case):
    torch = pytest.importorskip("torch")
    z, t, kw = _xent_args(rng, case, 64, 10, np.float32)
    loss, g = losses.softmax_cross_entropy(z, t, **kw)
    zt = torch.tensor(z, requires_grad=True)
    tkw = dict(kw)
    if "weight" in tkw:
        tkw["weight"] = torch.tensor(tkw["weight"])
    lt = torch.nn.functional.cross_entropy(zt, torch.tensor(t), **tkw)
    lt.backward()
    assert loss == pytest.approx(lt.item(), rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(g, zt.grad.numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("case", XENT_CASES, ids=lambda c: "-".join(c) or "plain")
def test_softmax_xent_finite_differences(rng, case):
    z, t, kw = _xent_args(rng, case, 6, 5, np.float64)
    _fd_check(lambda v: losses.softmax_cross_entropy(v, t, **kw), z.copy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_softmax_xent_stable_on_extreme_logits(simd_target, dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [5.0, 5.0, 5.0],
                  [-np.inf, 2.0, 1.0], [3.0, -np.inf, -np.inf]], dtype)
    y = np.array([0, 1, 2, 1, 0])
    loss, g = losses.softmax_cross_entropy(z, y, reduction="sum")
    assert np.isfinite(loss) and np.all(np.isfinite(g))
    zr = np.where(np.isinf(z), -1e300, z.astype(np.float64))  # same math, finite
    rl, rg = ref.softmax_cross_entropy(zr, y, reduction="sum")
    # lse of logits near 1e4 is exact only to an ulp of 1e4 in the input precision
    assert loss == pytest.approx(rl, rel=1e-6, abs=len(y) * 4e4 * EPS[dtype])
    np.testing.assert_allclose(g, rg, atol=1e-6)
    np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=4 * EPS[dtype])
    assert g[3, 0] == 0 and g[4, 1] == 0  # -inf classes get no gradient


def test_softmax_xent_target_at_minus_inf_is_inf_and_nan_propagates():
    z = np.array([[-np.inf, 0.0]], np.float32)
    assert losses.softmax_cross_entropy(z, np.array([0]))[0] == np.inf
    zn = np.array([[np.nan, 0.0], [1.0, 2.0]], np.float32)
    loss, g = losses.softmax_cross_entropy(zn, np.array([1, 1]))
    assert np.isnan(loss) and np.isnan(g[0]).all() and np.isfinite(g[1]).all()
    x = np.array([np.nan, 1.0], np.float64)
    loss, g = losses.mean_squared_error(x, np.zeros(2))
    assert np.isnan(loss) and np.isnan(g[0]) and g[1] == 1.0


def _snapshot(*arrays):
    return [a.copy() for a in arrays]


def _unchanged(arrays, snaps):
    return all(np.array_equal(a, s, equal_nan=True) for a, s in zip(arrays, snaps, strict=True))


def test_bad_inputs_raise_and_touch_nothing(rng):
    z = rng.standard_normal((8, 5)).astype(np.float32)
    y = rng.integers(0, 5, 8)
    out = np.full((8, 5), 7.0, np.float32)
    snaps = _snapshot(z, out)
    cases = [
        (ValueError, "target\\[3\\]", lambda: _core.softmax_cross_entropy(
            z, np.where(np.arange(8) == 3, 5, y), out)),
        (ValueError, "target\\[0\\]", lambda: _core.softmax_cross_entropy(
            z, np.where(np.arange(8) == 0, -1, y), out)),
        (ValueError, "target", lambda: _core.softmax_cross_entropy(z, y[:7], out)),
        (TypeError, "target", lambda: _core.softmax_cross_entropy(z, y.astype(np.int32), out)),
        (ValueError, "logits must be 2-D", lambda: _core.softmax_cross_entropy(z[0], y, out)),
        (ValueError, "out", lambda: _core.softmax_cross_entropy(z, y, out[:4])),
        (TypeError, "out", lambda: _core.softmax_cross_entropy(z, y, out.astype(np.float64))),
        (ValueError, "C-contiguous", lambda: _core.softmax_cross_entropy(z[:, ::2], y, None)),
        (ValueError, "weight", lambda: _core.softmax_cross_entropy(
            z, y, out, weight=np.ones(4, np.float32))),
        (ValueError, "label_smoothing", lambda: _core.softmax_cross_entropy(
            z, y, out, label_smoothing=1.5)),
        (ValueError, "reduction", lambda: _core.softmax_cross_entropy(
            z, y, out, reduction="avg")),
        (ValueError, "share memory", lambda: _core.softmax_cross_entropy(z, y, z)),
        (TypeError, "input", lambda: _core.point_loss("mse", z.astype(np.float16), z, out)),
        (ValueError, "target", lambda: _core.point_loss("mse", z, z[:4], out)),
        (ValueError, "kind", lambda: _core.point_loss("mse2", z, z, out)),
        (ValueError, "delta", lambda: _core.point_loss("huber", z, z, out, delta=0.0)),
        (ValueError, "share memory", lambda: _core.point_loss("mse", z, z.copy(), z)),
        (ValueError, "C-contiguous", lambda: _core.point_loss("mse", z, z, np.asfortranarray(out))),
        (TypeError, "out", lambda: _core.point_loss("mse", z, z, out.astype(np.float64))),
    ]
    ro = out.copy()
    ro.flags.writeable = False
    cases.append((ValueError, "read-only", lambda: _core.point_loss("mse", z, z.copy(), ro)))
    for exc, match, call in cases:
        with pytest.raises(exc, match=match):
            call()
        assert _unchanged([z, out], snaps)
