"""Schedule-Free AdamW and SGD against schedulefree 1.4.1, and their train()/eval() switch.

The kernels themselves (float64 reference on every SIMD target and thread count, bitwise
identical across thread counts, bad arrays and hyperparameters) are rows of
test_spec_optimizers.py; here: both front ends in lockstep with schedulefree's classes
over every flag combination for 24 steps with eval()/train() switches in between,
parameters, z, exp_avg_sq and the group's schedule state compared after every step;
state_dict interchange; the mode rules; the native lerp; and fastoptim.fit.
"""

from __future__ import annotations

import itertools

import fastoptim
import numpy as np
import pytest
import reference as ref
from badinputs import EntryPoint, bad_inputs, check_rejected
from conftest import SIZES
from fastoptim import optim

torch = pytest.importorskip("torch")
schedulefree = pytest.importorskip("schedulefree")
import fastoptim.torch as ft  # noqa: E402

STEPS = 24
SWITCH_AT = (8, 16)  # eval() (compared), then train(), before these steps
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
GROUP_KEYS = ("k", "train_mode", "weight_sum", "lr_max", "scheduled_lr")


def _grid(**axes):
    keys = list(axes)
    return [dict(zip(keys, v, strict=True)) for v in itertools.product(*axes.values())]


FLAGS = {
    "AdamWScheduleFree": [dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, **f) for f in _grid(
        weight_decay=[0.0, 0.1], warmup_steps=[0, 5], r=[0.0, 1.0],
        weight_lr_power=[2.0, 0.0])],
    # momentum 0.3: train()'s lerp weight 0.7 takes torch.lerp's other branch
    "SGDScheduleFree": [dict(lr=0.05, **f) for f in _grid(
        momentum=[0.8, 0.3], weight_decay=[0.0, 0.1], warmup_steps=[0, 5], r=[0.0, 1.0],
        weight_lr_power=[2.0, 0.0])],
}


def _cases():
    return [(name, kw) for name, rows in FLAGS.items() for kw in rows]


def _id(case):
    name, kw = case
    return name + "-" + "-".join(f"{k}={v}" for k, v in kw.items() if k not in ("lr",))


def _reference(name):
    return getattr(schedulefree, name)


def _state_keys(name):
    return ("z", "exp_avg_sq") if name == "AdamWScheduleFree" else ("z",)


def _compare(name, theirs, tref, ours_np, params, ours_t, tours, dtype):
    for i, (t, u) in enumerate(zip(tref, tours, strict=True)):
        want = t.detach().numpy()
        np.testing.assert_allclose(params[i], want, **TOL[dtype])
        np.testing.assert_allclose(u.detach().numpy(), want, **TOL[dtype])
        st = theirs.state[t]
        assert set(st) == set(ours_np.state.get(i, {})) == set(ours_t.state[u])
        for key in st:
            np.testing.assert_allclose(ours_np.state[i][key], st[key].numpy(), **TOL[dtype])
            np.testing.assert_allclose(ours_t.state[u][key].numpy(), st[key].numpy(),
                                       **TOL[dtype])
    for g0, g1, g2 in zip(theirs.param_groups, ours_np.param_groups, ours_t.param_groups,
                          strict=True):
        for key in GROUP_KEYS:
            assert g1[key] == g0[key] == g2[key], key  # the same Python-float arithmetic


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", _cases(), ids=_id)
def test_lockstep_with_schedulefree(case, dtype):
    """optim.X (numpy) and fastoptim.torch.X against schedulefree.X (for-loop), every step."""
    name, kw = case
    rng = np.random.default_rng(7)
    shapes = [(33,), (7, 9), (1000,)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    tref = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    tours = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    groups = lambda ps: [{"params": ps[:2]}, {"params": ps[2:], "lr": kw["lr"] / 2}]  # noqa: E731
    theirs = _reference(name)(groups(tref), **kw, foreach=False)
    ours_np = getattr(optim, name)(groups(params), **kw)
    ours_t = getattr(ft, name)(groups(tours), **kw)
    opts = (theirs, ours_np, ours_t)
    for o in opts:
        o.train()
    for k in range(STEPS):
        if k in SWITCH_AT:
            for o in opts:
                o.eval()
            _compare(name, theirs, tref, ours_np, params, ours_t, tours, dtype)
            for o in opts:
                o.train()
        if k == 12:  # an lr change takes effect
            for o in opts:
                o.param_groups[0]["lr"] *= 0.5
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        for t, u, g in zip(tref, tours, grads, strict=True):
            t.grad = torch.tensor(g.copy())  # schedulefree normalizes grad in place
            u.grad = torch.tensor(g)
        theirs.step()
        ours_t.step()
        g_np = [g.copy() for g in grads]
        ours_np.step(g_np)
        for a, b in zip(g_np, grads, strict=True):
            np.testing.assert_array_equal(a, b)  # gradients are only read
        _compare(name, theirs, tref, ours_np, params, ours_t, tours, dtype)
    for o in opts:
        o.eval()
    _compare(name, theirs, tref, ours_np, params, ours_t, tours, dtype)


@pytest.mark.parametrize("name", list(FLAGS))
def test_lockstep_with_the_foreach_reference(name):
    """schedulefree's foreach path (its default) agrees too."""
    kw = FLAGS[name][-1]
    rng = np.random.default_rng(5)
    shapes = [(17,), (4, 6)]
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    a = [torch.tensor(p.copy(), requires_grad=True) for p in init]
    b = [torch.tensor(p.copy(), requires_grad=True) for p in init]
    theirs, ours = _reference(name)(a, **kw), getattr(ft, name)(b, **kw)
    theirs.train()
    ours.train()
    for _ in range(STEPS):
        for t, u in zip(a, b, strict=True):
            g = torch.randn(t.shape)
            t.grad, u.grad = g.clone(), g.clone()
        theirs.step()
        ours.step()
        for t, u in zip(a, b, strict=True):
            torch.testing.assert_close(u, t, rtol=2e-5, atol=2e-6)
    theirs.eval()
    ours.eval()
    for t, u in zip(a, b, strict=True):
        torch.testing.assert_close(u, t, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", list(FLAGS))
def test_state_dict_interchange_with_schedulefree(name):
    """fastoptim.torch.X -> schedulefree.X -> fastoptim.torch.X -> optim.X, in lockstep."""
    kw = FLAGS[name][-1]
    rng = np.random.default_rng(3)
    shapes = [(5, 3), (8,)]
    a = [torch.tensor(rng.standard_normal(s), requires_grad=True) for s in shapes]
    b = [torch.tensor(x.detach().numpy().copy(), requires_grad=True) for x in a]
    ours, theirs = getattr(ft, name)(a, **kw), _reference(name)(b, **kw)

    def step(pairs):
        grads = [rng.standard_normal(s) for s in shapes]
        for opt, ps in pairs:
            for t, g in zip(ps, grads, strict=True):
                t.grad = torch.tensor(g)
            opt.step()

    for o in (ours, theirs):
        o.train()
    for _ in range(3):
        step([(ours, a), (theirs, b)])
    for o in (ours, theirs):
        o.eval()  # schedulefree: save in eval mode
    t2 = _reference(name)(b, **kw)
    t2.load_state_dict(ours.state_dict())
    o2 = getattr(ft, name)(a, **kw)
    o2.load_state_dict(theirs.state_dict())
    assert o2.param_groups[0]["k"] == 3 and not o2.param_groups[0]["train_mode"]
    for o in (o2, t2):
        o.train()
    for _ in range(4):
        step([(o2, a), (t2, b)])
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-13)
            for key, v in t2.state[y].items():
                torch.testing.assert_close(o2.state[x][key], v, rtol=1e-12, atol=1e-13)
    # numpy front end: a schedulefree state_dict (tensors as arrays) loads and continues
    sd = t2.state_dict()
    sd["state"] = {k: {kk: vv.numpy() for kk, vv in s.items()} for k, s in sd["state"].items()}
    params = [y.detach().numpy().copy() for y in b]
    n = getattr(optim, name)(params, **kw)
    n.load_state_dict(sd)
    assert n.param_groups[0]["k"] == 7 and n.param_groups[0]["train_mode"]
    grads = [rng.standard_normal(s) for s in shapes]
    n.step(grads)
    for y, g in zip(b, grads, strict=True):
        y.grad = torch.tensor(g)
    t2.step()
    n.eval()
    t2.eval()
    for x, y in zip(params, b, strict=True):
        np.testing.assert_allclose(x, y.detach().numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("front", ["numpy", "torch"])
@pytest.mark.parametrize("name", list(FLAGS))
def test_modes(name, front):
    """The optimizer starts in eval mode; step() refuses to run there, touching nothing;
    eval() before any step and a repeated train()/eval() change nothing; a group added
    after train() must be switched too before the next step."""
    p0 = np.linspace(-1.0, 1.0, 12)
    if front == "numpy":
        p = p0.copy()
        opt = getattr(optim, name)([p], lr=0.1)
        do_step = lambda: opt.step([np.ones(12)])  # noqa: E731
        value = lambda: p.copy()  # noqa: E731
    else:
        t = torch.tensor(p0.copy(), requires_grad=True)
        opt = getattr(ft, name)([t], lr=0.1)

        def do_step():
            t.grad = torch.ones(12, dtype=torch.float64)
            opt.step()
        value = lambda: t.detach().numpy().copy()  # noqa: E731
    assert opt.param_groups[0]["train_mode"] is False
    with pytest.raises(RuntimeError, match=r"optimizer\.train\(\)"):
        do_step()
    assert opt.param_groups[0]["k"] == 0 and not opt.state
    np.testing.assert_array_equal(value(), p0)
    opt.eval()
    opt.train()
    opt.train()
    np.testing.assert_array_equal(value(), p0)  # no z yet: nothing to move
    do_step()
    do_step()  # (after the first step y == z == x)
    y = value()
    opt.eval()
    x = value()
    opt.eval()
    np.testing.assert_array_equal(value(), x)
    assert not np.array_equal(x, y)
    with pytest.raises(RuntimeError, match="eval mode"):
        do_step()
    opt.train()
    np.testing.assert_allclose(value(), y, rtol=1e-12, atol=1e-14)
    extra = np.zeros(3) if front == "numpy" else torch.zeros(3, dtype=torch.float64,
                                                             requires_grad=True)
    opt.add_param_group({"params": [extra]})
    with pytest.raises(RuntimeError, match="eval mode"):
        do_step() if front == "torch" else opt.step([np.ones(12), np.ones(3)])
    opt.train()
    do_step() if front == "torch" else opt.step([np.ones(12), np.ones(3)])
    # every group's k advances on every step, with or without gradients (as schedulefree)
    assert opt.param_groups[0]["k"] == 3 and opt.param_groups[1]["k"] == 1


def test_every_group_advances_each_step_as_in_schedulefree():
    a = [torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)]
    b = [torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)]
    theirs = schedulefree.SGDScheduleFree([{"params": a[:1]}, {"params": a[1:]}], lr=0.1)
    ours = ft.SGDScheduleFree([{"params": b[:1]}, {"params": b[1:]}], lr=0.1)
    for o, ps in ((theirs, a), (ours, b)):
        o.train()
        ps[0].grad = torch.ones(3)  # the second group has no gradient
        o.step()
        o.step()
    assert [g["k"] for g in ours.param_groups] == [g["k"] for g in theirs.param_groups] == [2, 2]
    assert "z" not in ours.state[b[1]]
    torch.testing.assert_close(b[0], a[0])


@pytest.mark.parametrize("name", list(FLAGS))
def test_bad_hyperparameters_rejected(name):
    bad = [({"lr": -1.0}, "lr"), ({"weight_decay": -0.1}, "weight_decay"),
           ({"warmup_steps": -1}, "warmup_steps"), ({"warmup_steps": 2.5}, "warmup_steps"),
           ({"r": float("nan")}, "r must"), ({"weight_lr_power": -1.0}, "weight_lr_power")]
    if name == "AdamWScheduleFree":
        bad += [({"betas": (0.0, 0.9)}, r"betas\[0\]"), ({"betas": (0.9, 1.0)}, r"betas\[1\]"),
                ({"eps": -1.0}, "eps"), ({"betas": (0.9,)}, "betas")]
    else:
        bad += [({"momentum": 0.0}, "momentum"), ({"momentum": 1.0}, "momentum")]
    for kw, match in bad:
        for cls in (getattr(optim, name), getattr(ft, name)):
            p = np.ones(3) if cls is getattr(optim, name) else torch.ones(3, requires_grad=True)
            with pytest.raises(ValueError, match=match):
                cls([p], **kw)
    # a group added later, and a loaded state_dict with bad schedule state: refused,
    # nothing changed
    p = np.ones(3)
    opt = getattr(optim, name)([p])
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [np.ones(2)], "lr": -1.0})
    opt.train()
    opt.step([np.full(3, 0.5)])
    before = (p.copy(), opt.state_dict())
    for key, value in (("k", -1), ("k", 1.5), ("train_mode", "yes"), ("weight_sum", np.nan)):
        sd = opt.state_dict()
        sd["param_groups"][0][key] = value
        with pytest.raises(ValueError, match=key):
            opt.load_state_dict(sd)
        np.testing.assert_array_equal(p, before[0])
        assert opt.param_groups[0]["k"] == 1 and opt.param_groups[0]["train_mode"] is True
        np.testing.assert_array_equal(opt.state[0]["z"], before[1]["state"][0]["z"])


# ---- the native lerp ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("w", [0.1, -0.25, 0.7, 1.0, -1.5])
def test_lerp_vs_reference_and_torch(simd_target, num_threads, w, dtype, rng):
    for n in SIZES:
        a = rng.standard_normal(n).astype(dtype)
        b = rng.standard_normal(n).astype(dtype)
        want = ref.lerp(a, b, w)
        t = torch.from_numpy(a.copy()).lerp_(torch.from_numpy(b), w).numpy()
        b0 = b.copy()
        fastoptim.lerp_([a], [b], weight=w)
        eps = float(np.finfo(dtype).eps)
        np.testing.assert_allclose(a, want, rtol=0, atol=8 * eps * max(1.0, 2.5 * abs(w)))
        np.testing.assert_allclose(a, t, rtol=0, atol=4 * eps * max(1.0, 2.5 * abs(w)))
        np.testing.assert_array_equal(b, b0)


def test_lerp_bitwise_identical_across_threads(rng):
    a0 = rng.standard_normal(2**18 + 5).astype(np.float32)
    b = rng.standard_normal(a0.size).astype(np.float32)
    outs = []
    before = fastoptim.get_num_threads()
    try:
        for nt in (1, 2, 3):
            fastoptim.set_num_threads(nt)
            a = a0.copy()
            fastoptim.lerp_(a, b, weight=-0.25)
            outs.append(a)
    finally:
        fastoptim.set_num_threads(before)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


def _lerp_arrays(dtype):
    r = np.random.default_rng(2)
    return {"arrays": r.standard_normal((8, 12)).astype(dtype),
            "ends": r.standard_normal((8, 12)).astype(dtype)}


LERP = EntryPoint("lerp_", fastoptim.lerp_, _lerp_arrays, kwargs={"weight": 0.3},
                  inplace=frozenset({"arrays"}), lists=True,
                  bad_kwargs=[({"weight": float("nan")}, ValueError, "weight"),
                              ({"weight": float("inf")}, ValueError, "weight")])
BAD = list(bad_inputs(LERP))


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_lerp_bad_input_rejected(case):
    check_rejected(case)


# ---- fastoptim.fit --------------------------------------------------------------------

@pytest.mark.parametrize("name", list(FLAGS))
def test_fit_trains_and_ends_in_eval_mode(name):
    """fit() calls train() before each epoch's steps and eval() after them: validation,
    callbacks and the fitted model see the averaged point x."""
    from fastoptim import nn, train

    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 6)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    model = nn.Sequential(nn.Dense(6, 16, activation="relu"), nn.Dense(16, 2), seed=1)
    opt = getattr(optim, name)(model.parameters(), lr=0.01 if name[0] == "A" else 0.1)
    history = train.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=4,
                        batch_size=32, validation_data=(X, y), verbose=False)
    assert history["loss"][-1] < history["loss"][0]
    assert opt.param_groups[0]["train_mode"] is False and opt.param_groups[0]["k"] == 32
    # the model holds x: the validation loss of the last epoch is the loss at x
    val = train.evaluate(model, X, y, loss="cross_entropy")
    assert val["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-6)
    x = [p.copy() for p in model.parameters()]
    opt.train()
    assert any(not np.array_equal(a, b) for a, b in zip(x, model.parameters(), strict=True))
    opt.eval()
    for a, b in zip(x, model.parameters(), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", ["AdamWScheduleFree", "SGDScheduleFree"])
def test_fused_clipping_advances_the_schedule_as_the_unfused_sequence(name, dtype):
    # max_grad_norm takes the adapter's clipped path (the kernel reads the gradients times
    # the clip factor); the group's schedule state (k, weight_sum, ...) must advance there
    # exactly as after clip_grad_norm_ + step
    torch.manual_seed(0)
    ps = [torch.randn(7, 5, dtype=dtype), torch.randn(5, dtype=dtype)]
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == torch.float64 else dict(rtol=2e-5, atol=1e-6)
    mine = [p.clone().requires_grad_() for p in ps]
    theirs = [p.clone().requires_grad_() for p in ps]
    kw = dict(lr=0.05, warmup_steps=3)
    a = getattr(ft, name)(mine, max_grad_norm=0.3, **kw)
    b = getattr(schedulefree, name)(theirs, **kw)
    a.train()
    b.train()
    for _ in range(12):
        gs = [torch.randn_like(p) * 3 for p in ps]
        for p, q, g in zip(mine, theirs, gs, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        norm = torch.nn.utils.clip_grad_norm_(theirs, 0.3)
        a.step()
        b.step()
        assert float(a.last_grad_norm) == pytest.approx(float(norm), rel=tol["rtol"])
        for p, q in zip(mine, theirs, strict=True):
            torch.testing.assert_close(p.detach(), q.detach(), **tol)
        for key in GROUP_KEYS:
            assert a.param_groups[0][key] == pytest.approx(b.param_groups[0][key], rel=1e-12)
