"""The native kernels step in lockstep with torch.optim over every flag combination."""

from __future__ import annotations

import itertools

import fastoptim
import numpy as np
import pytest

torch = pytest.importorskip("torch")

STEPS = 12
SHAPES = [(33,), (7, 9), (1000,)]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


def _params(rng, dtype):
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def _grads(rng, dtype):
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


SGD_FLAGS = [
    dict(momentum=m, dampening=d, nesterov=n, weight_decay=wd, maximize=mx)
    for m, d, n, wd, mx in itertools.product([0.0, 0.9], [0.0, 0.3], [False, True],
                                             [0.0, 0.05], [False, True])
    if not (n and (m == 0.0 or d != 0.0)) and not (m == 0.0 and d != 0.0)
]


def _flag_id(flags):
    return "-".join(f"{k}={v}" for k, v in flags.items())


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("flags", SGD_FLAGS, ids=_flag_id)
def test_sgd_lockstep(dtype, flags):
    rng = np.random.default_rng(0)
    params = _params(rng, dtype)
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt = torch.optim.SGD(tparams, lr=0.05, **flags)
    bufs = [np.zeros_like(p) for p in params]
    for step in range(1, STEPS + 1):
        grads = _grads(rng, dtype)
        for t, g in zip(tparams, grads, strict=True):
            t.grad = torch.tensor(g)
        opt.step()
        fastoptim.sgd_step(params, grads, bufs if flags["momentum"] else None, lr=0.05,
                           first_step=step == 1, **flags)
        for i, t in enumerate(tparams):
            np.testing.assert_allclose(params[i], t.detach().numpy(), **TOL[dtype])
            if flags["momentum"]:
                buf = opt.state[t]["momentum_buffer"].numpy()
                np.testing.assert_allclose(bufs[i], buf, **TOL[dtype])


ADAM_FLAGS = [
    dict(weight_decay=wd, amsgrad=a, maximize=mx, decoupled=dc)
    for wd, a, mx, dc in itertools.product([0.0, 0.1], [False, True], [False, True],
                                           [False, True])
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("flags", ADAM_FLAGS, ids=_flag_id)
def test_adam_lockstep(dtype, flags):
    rng = np.random.default_rng(1)
    params = _params(rng, dtype)
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    cls = torch.optim.AdamW if flags["decoupled"] else torch.optim.Adam
    hp = dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-7, weight_decay=flags["weight_decay"])
    opt = cls(tparams, amsgrad=flags["amsgrad"], maximize=flags["maximize"], **hp)
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    vmax = [np.zeros_like(p) for p in params]
    for step in range(1, STEPS + 1):
        grads = _grads(rng, dtype)
        for t, g in zip(tparams, grads, strict=True):
            t.grad = torch.tensor(g)
        opt.step()
        fastoptim.adam_step(params, grads, m, v, vmax if flags["amsgrad"] else None, step=step,
                            lr=hp["lr"], beta1=0.8, beta2=0.95, eps=1e-7,
                            weight_decay=flags["weight_decay"],
                            decoupled_weight_decay=flags["decoupled"],
                            amsgrad=flags["amsgrad"], maximize=flags["maximize"])
        for i, t in enumerate(tparams):
            st = opt.state[t]
            assert int(st["step"]) == step
            np.testing.assert_allclose(params[i], t.detach().numpy(), **TOL[dtype])
            np.testing.assert_allclose(m[i], st["exp_avg"].numpy(), **TOL[dtype])
            np.testing.assert_allclose(v[i], st["exp_avg_sq"].numpy(), **TOL[dtype])
            if flags["amsgrad"]:
                np.testing.assert_allclose(vmax[i], st["max_exp_avg_sq"].numpy(), **TOL[dtype])


def test_clip_matches_torch():
    rng = np.random.default_rng(2)
    grads = _grads(rng, np.float32)
    tg = [torch.tensor(g.copy()) for g in grads]
    tparams = [torch.zeros(g.shape, requires_grad=True) for g in grads]
    for t, g in zip(tparams, tg, strict=True):
        t.grad = g
    want = float(torch.nn.utils.clip_grad_norm_(tparams, 1.0))
    got = fastoptim.clip_by_global_norm(grads, 1.0)
    assert got == pytest.approx(want, rel=1e-6)
    for g, t in zip(grads, tparams, strict=True):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-6, atol=1e-8)
