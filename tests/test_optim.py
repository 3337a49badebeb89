"""RMSprop/Adagrad kernels vs the float64 reference, and the numpy optimizers in lockstep
with torch.optim, with checkpoints, bad hyperparameters and the non-finite policy."""

from __future__ import annotations

import itertools

import fastoptim
import numpy as np
import pytest
import reference as ref
from conftest import SIZES
from fastoptim import optim

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-12}  # x max|ref|, a few steps of rounding


def _close(got, want, dtype):
    scale = max(1.0, float(np.max(np.abs(want)))) if np.size(want) else 1.0
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL[dtype] * scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("flags", [
    dict(), dict(weight_decay=0.1, maximize=True), dict(momentum=0.9),
    dict(centered=True), dict(centered=True, momentum=0.5, weight_decay=0.01)],
    ids=["plain", "wd_max", "mom", "centered", "all"])
def test_rmsprop_kernel_vs_reference(simd_target, num_threads, dtype, flags, rng):
    sizes = [0, 1, 17, 65, 1000, 2**16 + 3]
    p = [rng.standard_normal(n).astype(dtype) for n in sizes]
    sq = [(np.abs(rng.standard_normal(n)) + 1).astype(dtype) for n in sizes]
    buf = [rng.standard_normal(n).astype(dtype) for n in sizes]
    ga = [0.1 * rng.standard_normal(n).astype(dtype) for n in sizes]
    g = [rng.standard_normal(n).astype(dtype) for n in sizes]
    want = [ref.rmsprop(*x, lr=0.01, **flags) for x in zip(p, g, sq, buf, ga, strict=False)]
    g_before = [x.copy() for x in g]
    fastoptim.rmsprop_step(p, g, sq, buf, ga, lr=0.01, **flags)
    for i, w in enumerate(want):
        _close(p[i], w[0], dtype)
        _close(sq[i], w[1], dtype)
        if flags.get("momentum"):
            _close(buf[i], w[2], dtype)
        if flags.get("centered"):
            _close(ga[i], w[3], dtype)
        np.testing.assert_array_equal(g[i], g_before[i])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("n", SIZES)
def test_adagrad_kernel_vs_reference(simd_target, num_threads, dtype, n, rng):
    p = rng.standard_normal(n).astype(dtype)
    s = np.abs(rng.standard_normal(n)).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    kw = dict(step=7, lr=0.05, lr_decay=0.01, weight_decay=0.1, maximize=n % 2 == 1)
    wp, ws = ref.adagrad(p, g, s, **kw)
    fastoptim.adagrad_step(p, g, s, **kw)
    _close(p, wp, dtype)
    _close(s, ws, dtype)


def test_threads_bitwise_identical(simd_target, rng):
    x = rng.standard_normal(2**18 + 5).astype(np.float32)
    outs = []
    for nt in (1, 2, 3):
        fastoptim.set_num_threads(nt)
        p, sq, b, ga, s = x.copy(), np.abs(x), x * 0.5, x * 0.1, np.abs(x) + 1
        fastoptim.rmsprop_step(p, x[::-1].copy(), sq, b, ga, momentum=0.9, centered=True)
        fastoptim.adagrad_step(s.copy(), x, s, step=3)
        outs.append((p, sq, b, ga, s))
    fastoptim.set_num_threads(1)
    for o in outs[1:]:
        for a, b in zip(o, outs[0], strict=False):
            np.testing.assert_array_equal(a, b)


def test_bad_arrays_leave_buffers_untouched(rng):
    p = rng.standard_normal(10).astype(np.float32)
    sq = np.zeros(10, np.float32)
    snap = (p.copy(), sq.copy())
    bad = [np.zeros(10, np.float64), np.zeros(10, np.int32), np.zeros(20, np.float32)[::2],
           np.zeros(11, np.float32), p]
    for g in bad:
        with pytest.raises((TypeError, ValueError)):
            fastoptim.rmsprop_step(p, g, sq, lr=0.1)
    with pytest.raises(ValueError, match="grad_avgs"):
        fastoptim.rmsprop_step(p, p.copy(), sq, centered=True)
    with pytest.raises(ValueError, match="momentum_buffers"):
        fastoptim.rmsprop_step(p, p.copy(), sq, momentum=0.5)
    with pytest.raises(ValueError, match="step"):
        fastoptim.adagrad_step(p, p.copy(), sq, step=0)
    np.testing.assert_array_equal(p, snap[0])
    np.testing.assert_array_equal(sq, snap[1])


# ---- optimizers in lockstep with torch.optim -------------------------------------------

def _flag_grid(**axes):
    keys = list(axes)
    return [dict(zip(keys, vals, strict=False)) for vals in itertools.product(*axes.values())]


LOCKSTEP = (
    [("SGD", dict(lr=0.05, **f)) for f in _flag_grid(
        momentum=[0.0, 0.9], weight_decay=[0.0, 0.1], maximize=[False, True])]
    + [("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
       ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3))]
    + [(n, dict(lr=0.01, **f)) for n in ("Adam", "AdamW") for f in _flag_grid(
        weight_decay=[0.0, 0.1], amsgrad=[False, True], maximize=[False, True])]
    + [("RMSprop", dict(lr=0.01, **f)) for f in _flag_grid(
        momentum=[0.0, 0.5], centered=[False, True], weight_decay=[0.0, 0.1],
        maximize=[False, True])]
    + [("Adagrad", dict(lr=0.1, **f)) for f in _flag_grid(
        lr_decay=[0.0, 0.05], weight_decay=[0.0, 0.1], maximize=[False, True],
        initial_accumulator_value=[0.0, 0.2])]
)


@pytest.mark.parametrize("name,kw", LOCKSTEP, ids=[f"{n}-{i}" for i, (n, _) in
                                                   enumerate(LOCKSTEP)])
def test_lockstep_with_torch(name, kw, rng):
    torch = pytest.importorskip("torch")
    shapes = [(3, 4), (5,), (1,), (17,)]
    params = [rng.standard_normal(s).astype(np.float64) for s in shapes]
    params[1] = params[1].astype(np.float32)  # mixed dtypes: one call per dtype
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": kw["lr"] / 2}]
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    ours = getattr(optim, name)(groups, **kw)
    theirs = getattr(torch.optim, name)(
        [{"params": tparams[:2]}, {"params": tparams[2:], "lr": kw["lr"] / 2}], **kw)
    for k in range(12):
        if k == 6:  # lr changes take effect
            for o in (ours, theirs):
                o.param_groups[0]["lr"] *= 0.5
        grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in params]
        for t, g in zip(tparams, grads, strict=False):
            t.grad = torch.tensor(g)
        ours.step(grads)
        theirs.step()
        for i, (p, t) in enumerate(zip(params, tparams, strict=False)):
            _close(p, t.detach().numpy(), p.dtype.type)
            for key, v in theirs.state[t].items():
                if key == "step":
                    assert ours.state[i]["step"] == int(v)
                else:
                    _close(ours.state[i][key], v.numpy(), p.dtype.type)


def test_state_dict_round_trip_and_resume(rng):
    params = [rng.standard_normal(8), rng.standard_normal((2, 3))]
    a = optim.Adam([p.copy() for p in params], lr=0.1, amsgrad=True)
    grads = [[rng.standard_normal(p.shape) for p in params] for _ in range(6)]
    for g in grads[:3]:
        a.step(g)
    sd = a.state_dict()
    b = optim.Adam([p.copy() for p in a._params], lr=0.5, amsgrad=True)
    b.load_state_dict(sd)
    assert b.param_groups[0]["lr"] == 0.1
    for g in grads[3:]:
        a.step(g)
        b.step(g)
    for x, y in zip(a._params, b._params, strict=False):
        np.testing.assert_array_equal(x, y)


def test_load_state_dict_refuses_mismatch_unchanged(rng):
    p = [rng.standard_normal(4)]
    opt = optim.Adam(p, lr=0.1)
    opt.step([np.ones(4)])
    before = opt.state_dict()
    bad_shape = opt.state_dict()
    bad_shape["state"][0]["exp_avg"] = np.zeros(5)
    bad_dtype = opt.state_dict()
    bad_dtype["state"][0]["exp_avg_sq"] = np.zeros(4, np.float32)
    bad_key = opt.state_dict()
    del bad_key["state"][0]["exp_avg"]
    bad_lr = opt.state_dict()
    bad_lr["param_groups"][0]["lr"] = -1.0
    bad_step = opt.state_dict()
    bad_step["state"][0]["step"] = 1.5
    for bad, err, match in [(bad_shape, ValueError, "shape"), (bad_dtype, TypeError, "dtype"),
                            (bad_key, ValueError, "exp_avg"), (bad_lr, ValueError, "lr"),
                            (bad_step, ValueError, "step")]:
        with pytest.raises(err, match=match):
            opt.load_state_dict(bad)
        after = opt.state_dict()
        assert after["param_groups"] == before["param_groups"]
        np.testing.assert_array_equal(after["state"][0]["exp_avg"],
                                      before["state"][0]["exp_avg"])


def test_step_loads_from_float_and_0d_and_keeps_counting_past_2_24(rng):
    p = [rng.standard_normal(3).astype(np.float32)]
    opt = optim.Adam(p, lr=1e-3)
    opt.step([np.ones(3, np.float32)])
    sd = opt.state_dict()
    sd["state"][0]["step"] = np.array(float(2**24 + 1), np.float64)
    opt.load_state_dict(sd)
    opt.step([np.ones(3, np.float32)])
    opt.step([np.ones(3, np.float32)])
    assert opt.state[0]["step"] == 2**24 + 3


@pytest.mark.parametrize("name,kw", [
    ("SGD", dict(lr=-1.0)), ("SGD", dict(lr=0.1, nesterov=True)),
    ("SGD", dict(lr=0.1, momentum=-0.5)), ("Adam", dict(betas=(1.0, 0.9))),
    ("Adam", dict(eps=-1e-8)), ("AdamW", dict(weight_decay=float("nan"))),
    ("RMSprop", dict(alpha=1.5)), ("RMSprop", dict(momentum=-1.0)),
    ("Adagrad", dict(lr_decay=-0.1)), ("Adagrad", dict(initial_accumulator_value=-1.0))])
def test_bad_hyperparameters(name, kw):
    key = list(kw)[-1]
    match = {"betas": "betas", "nesterov": "nesterov"}.get(key, key)
    with pytest.raises(ValueError, match=match):
        getattr(optim, name)([np.zeros(3)], **({"lr": 0.1} | kw if name == "SGD" else kw))


def test_nonfinite_policy(rng):
    p = rng.standard_normal(5)
    skip = optim.Adam([p], lr=0.1, skip_nonfinite=True)
    skip.step([np.ones(5)])
    snap = (p.copy(), skip.state[0]["exp_avg"].copy(), skip.state[0]["step"])
    assert skip.step([np.array([1, np.nan, 1, 1, 1.0])]) is False
    assert skip.skipped_steps == 1
    np.testing.assert_array_equal(p, snap[0])
    np.testing.assert_array_equal(skip.state[0]["exp_avg"], snap[1])
    assert skip.state[0]["step"] == snap[2]
    q = rng.standard_normal(5)
    default = optim.Adam([q], lr=0.1)  # default: like torch, NaN reaches the parameter
    assert default.step([np.array([np.inf, 0, 0, 0, 0.0])]) is True
    assert not np.isfinite(q[0]) and np.isfinite(q[1:]).all()


def test_clip_grad_norm_mixed_dtypes(rng):
    g = [rng.standard_normal(10), rng.standard_normal(7).astype(np.float32)]
    total = ref.global_norm(g)
    want = [x * (1.0 / (total + 1e-6)) for x in g]
    assert optim.clip_grad_norm(g, 1.0) == pytest.approx(total)
    for x, w in zip(g, want, strict=False):
        np.testing.assert_allclose(x, w, rtol=1e-6)


def test_add_param_group_and_duplicates(rng):
    a, b = rng.standard_normal(3), rng.standard_normal(3)
    opt = optim.SGD([a], lr=0.1)
    opt.add_param_group({"params": [b], "lr": 0.0})
    b0 = b.copy()
    opt.step([np.ones(3), np.ones(3)])
    np.testing.assert_array_equal(b, b0)  # lr 0 in the second group
    with pytest.raises(ValueError, match="more than one"):
        opt.add_param_group({"params": [a]})


def test_converges_on_quadratic():
    # every optimizer reaches the minimum of sum((x - 3)^2) (optax-style convergence table)
    for name, kw in [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.1)),
                     ("AdamW", dict(lr=0.1, weight_decay=0.0)), ("RMSprop", dict(lr=0.05)),
                     ("Adagrad", dict(lr=1.0))]:
        x = np.zeros(4)
        opt = getattr(optim, name)([x], **kw)
        for _ in range(500):
            opt.step([2 * (x - 3.0)])
        np.testing.assert_allclose(x, 3.0, atol=1e-2, err_msg=name)
