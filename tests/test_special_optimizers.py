"""The optimizers that are not one elementwise kernel: Adafactor, Muon, SparseAdam.

Each: the native kernel against its float64 reference on every SIMD target and bitwise
identical for any thread count; fastoptim.optim and fastoptim.torch in lockstep with
torch.optim over every flag combination for 20 steps (parameters and all state after
every step); state_dict interchange with torch.optim both ways; bad hyperparameters and
bad arrays rejected with nothing changed.
"""

from __future__ import annotations

import itertools

import fastoptim
import numpy as np
import pytest
import reference as ref
from fastoptim import _core, optim
from fastoptim import spec as fspec

torch = pytest.importorskip("torch")
import fastoptim.torch as ft  # noqa: E402

STEPS = 20
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.float64: dict(rtol=1e-12, atol=1e-13)}


def _grid(**axes):
    keys = list(axes)
    return [dict(zip(keys, v, strict=True)) for v in itertools.product(*axes.values())]


def _close(a, b, dtype, what):
    a = a.detach() if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))
    b = b.detach() if isinstance(b, torch.Tensor) else torch.from_numpy(np.asarray(b))
    torch.testing.assert_close(a.to(torch.float64), b.to(torch.float64), **TOL[dtype],
                               msg=lambda m: f"{what}: {m}")


# -- Adafactor ----------------------------------------------------------------------------

ADAFACTOR_SHAPES = [(5, 7), (2, 3, 4), (1, 130), (9,), ()]
ADAFACTOR_FLAGS = [dict(lr=0.05, beta2_decay=-0.7, **f) for f in _grid(
    weight_decay=[0.0, 0.1], maximize=[False, True], eps=[(None, 1e-3), (1e-4, 0.05)],
    d=[1.0, 1.5])]


def _rand(shapes, dtype, gen):
    return [torch.randn(s, dtype=dtype, generator=gen) for s in shapes]


def _lockstep(name, kw, shapes, dtype, steps=STEPS, grad=None):
    """torch.optim.<name>, fastoptim.torch.<name> and fastoptim.optim.<name> on the same
    parameters and gradients; compares parameters and every state entry each step."""
    gen = torch.Generator().manual_seed(7)
    init = _rand(shapes, dtype, gen)
    theirs = [x.clone().requires_grad_() for x in init]
    ours = [x.clone().requires_grad_() for x in init]
    arrays = [x.numpy().copy() for x in init]
    t_opt = getattr(torch.optim, name)(theirs, **kw)
    f_opt = getattr(ft, name)(ours, **kw)
    n_opt = getattr(optim, name)(arrays, **kw)
    for step in range(steps):
        gs = _rand(shapes, dtype, gen)
        for a, b, g in zip(theirs, ours, gs, strict=True):
            a.grad, b.grad = g.clone(), g.clone()
        t_opt.step()
        f_opt.step()
        n_opt.step([g.numpy().copy() for g in gs])
        for i, (a, b, c) in enumerate(zip(theirs, ours, arrays, strict=True)):
            _close(b, a, dtype, f"torch adapter param {i} step {step}")
            _close(c, a, dtype, f"numpy param {i} step {step}")
            st = t_opt.state[a]
            assert set(f_opt.state[b]) == set(st) == set(n_opt.state[i])
            for k, v in st.items():
                if k == "step":
                    assert float(f_opt.state[b][k]) == float(v) == n_opt.state[i][k]
                    continue
                _close(f_opt.state[b][k], v, dtype, f"torch adapter {k} {i} step {step}")
                _close(n_opt.state[i][k], v, dtype, f"numpy {k} {i} step {step}")
    return t_opt, f_opt, n_opt, theirs, ours


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kw", ADAFACTOR_FLAGS, ids=lambda kw: ",".join(
    f"{k}={v}" for k, v in kw.items() if k not in ("lr", "beta2_decay")))
def test_adafactor_lockstep_with_torch(kw, dtype):
    _lockstep("Adafactor", kw, ADAFACTOR_SHAPES, dtype)


def _adafactor_kernel_case(rng, shape, dtype):
    p = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    if len(shape) >= 2:
        st = {"row_var": rng.random(shape[:-1] + (1,)).astype(dtype),
              "col_var": rng.random(shape[:-2] + (1,) + shape[-1:]).astype(dtype)}
    else:
        st = {"variance": rng.random(shape).astype(dtype)}
    return p, g, st


@pytest.mark.parametrize("shape", [(1,), (17,), (1000,), (3, 65), (64, 17), (2, 7, 16),
                                   (1025, 300), (300, 1025)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_adafactor_kernel_against_float64_reference(simd_target, shape, dtype, rng):
    hyper = dict(step=4, lr=0.05, beta2_decay=-0.8, eps1=1e-6, eps2=1e-3, d=1.0,
                 weight_decay=0.1, maximize=True)
    p, g, st = _adafactor_kernel_case(rng, shape, dtype)
    want_state = {k: v.astype(np.float64) for k, v in st.items()}
    want = ref.adafactor(p, g, want_state, **hyper)
    lists = [[st.get(k)] for k in ("row_var", "col_var", "variance")]
    _core.adafactor_step([p], [g], *lists, **hyper)
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(p, want, **tol)
    for k, v in st.items():
        np.testing.assert_allclose(v, want_state[k], **tol)


def test_adafactor_is_bitwise_identical_for_any_thread_count(rng):
    shapes = [(1025, 300), (300, 1025), (70000,), (3, 40, 50)]
    results = []
    for nt in (1, 2, 3):
        before = fastoptim.get_num_threads()
        fastoptim.set_num_threads(nt)
        try:
            r = np.random.default_rng(5)
            cases = [_adafactor_kernel_case(r, s, np.float32) for s in shapes]
            _core.adafactor_step([c[0] for c in cases], [c[1] for c in cases],
                                 *[[c[2].get(k) for c in cases]
                                   for k in ("row_var", "col_var", "variance")],
                                 step=3, lr=0.05, weight_decay=0.1)
            results.append([c[0].copy() for c in cases] +
                           [v for c in cases for v in c[2].values()])
        finally:
            fastoptim.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert np.array_equal(a, b)


# -- Muon ---------------------------------------------------------------------------------

MUON_SHAPES = [(5, 7), (8, 3), (16, 16)]
MUON_FLAGS = [dict(lr=0.02, **f) for f in _grid(
    nesterov=[True, False], adjust_lr_fn=[None, "original", "match_rms_adamw"],
    weight_decay=[0.0, 0.1], momentum=[0.95, 0.5])]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kw", MUON_FLAGS, ids=lambda kw: ",".join(
    f"{k}={v}" for k, v in kw.items() if k != "lr"))
def test_muon_torch_adapter_lockstep_with_torch(kw, dtype):
    """fastoptim.torch.Muon orthogonalizes in bfloat16 as torch does: same results."""
    gen = torch.Generator().manual_seed(3)
    init = _rand(MUON_SHAPES, dtype, gen)
    theirs = [x.clone().requires_grad_() for x in init]
    ours = [x.clone().requires_grad_() for x in init]
    t_opt, f_opt = torch.optim.Muon(theirs, **kw), ft.Muon(ours, **kw)
    for step in range(STEPS):
        gs = _rand(MUON_SHAPES, dtype, gen)
        for a, b, g in zip(theirs, ours, gs, strict=True):
            a.grad, b.grad = g.clone(), g.clone()
        t_opt.step()
        f_opt.step()
        for i, (a, b) in enumerate(zip(theirs, ours, strict=True)):
            _close(b, a, dtype, f"param {i} step {step}")
            _close(f_opt.state[b]["momentum_buffer"], t_opt.state[a]["momentum_buffer"],
                   dtype, f"momentum_buffer {i} step {step}")


@pytest.mark.parametrize("kw", MUON_FLAGS[::3], ids=lambda kw: ",".join(
    f"{k}={v}" for k, v in kw.items() if k != "lr"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_muon_numpy_against_float64_reference(kw, dtype, rng):
    """fastoptim.optim.Muon orthogonalizes in the parameter's dtype (numpy has no bf16)."""
    hyper = {**fspec.get("Muon").defaults, **kw}
    ps = [rng.standard_normal(s).astype(dtype) for s in MUON_SHAPES]
    want = [p.astype(np.float64) for p in ps]
    bufs = [np.zeros(s) for s in MUON_SHAPES]
    opt = optim.Muon(ps, **kw)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for _ in range(STEPS):
        gs = [rng.standard_normal(s).astype(dtype) for s in MUON_SHAPES]
        opt.step(gs)
        for i, g in enumerate(gs):
            want[i], bufs[i] = ref.muon(want[i], g, bufs[i], **hyper)
            np.testing.assert_allclose(ps[i], want[i], **tol)
            np.testing.assert_allclose(opt.state[i]["momentum_buffer"], bufs[i], **tol)


def test_muon_momentum_kernel_bitwise_across_threads_and_targets(rng):
    g = rng.standard_normal(300_001).astype(np.float32)
    runs = []
    for target in fastoptim.simd_targets():
        for nt in (1, 2, 3):
            before_t, before_n = fastoptim.simd_target(), fastoptim.get_num_threads()
            fastoptim.set_simd_target(target)
            fastoptim.set_num_threads(nt)
            try:
                buf = np.linspace(-1, 1, g.size, dtype=np.float32)
                out = np.empty_like(g)
                _core.muon_momentum([out], [g], [buf], momentum=0.9, nesterov=True)
                p = np.ones_like(g)
                _core.muon_update([p], [out], [-0.01], lr=0.01, weight_decay=0.1)
                runs.append((target, nt, out, buf, p))
            finally:
                fastoptim.set_simd_target(before_t)
                fastoptim.set_num_threads(before_n)
    b64 = np.linspace(-1, 1, g.size) + 0.1 * (g - np.linspace(-1, 1, g.size))
    want = g + 0.9 * (b64 - g)
    for target, _nt, out, buf, p in runs:
        np.testing.assert_allclose(buf, b64, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p, 1 - 0.001 - 0.01 * want, rtol=1e-5, atol=1e-6)
        same = [r for r in runs if r[0] == target]
        assert all(np.array_equal(out, r[2]) and np.array_equal(p, r[4]) for r in same)


def test_muon_refuses_a_parameter_that_is_not_a_matrix():
    with pytest.raises(ValueError, match="2D parameters"):
        ft.Muon([torch.zeros(3, requires_grad=True)])
    with pytest.raises(ValueError, match="2-D parameters"):
        optim.Muon([np.zeros((2, 2, 2))])


# -- SparseAdam ---------------------------------------------------------------------------

SPARSE_FLAGS = [dict(lr=0.05, **f) for f in _grid(betas=[(0.9, 0.999), (0.5, 0.9)],
                                                   maximize=[False, True], eps=[1e-8, 1e-3])]


def _sparse_grad(gen, rows, cols, dtype, dup=True):
    k = 9
    idx = torch.randint(0, rows, (k,), generator=gen)
    if dup:
        idx[1] = idx[0]  # a repeated row: summed by coalesce()
    vals = torch.randn(k, cols, dtype=dtype, generator=gen)
    return torch.sparse_coo_tensor(idx[None], vals, (rows, cols), check_invariants=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kw", SPARSE_FLAGS, ids=lambda kw: ",".join(
    f"{k}={v}" for k, v in kw.items() if k != "lr"))
def test_sparse_adam_lockstep_with_torch(kw, dtype):
    gen = torch.Generator().manual_seed(11)
    shapes = [(20, 5), (7, 3)]
    init = _rand(shapes, dtype, gen)
    theirs = [x.clone().requires_grad_() for x in init]
    ours = [x.clone().requires_grad_() for x in init]
    arrays = [x.numpy().copy() for x in init]
    t_opt, f_opt = torch.optim.SparseAdam(theirs, **kw), ft.SparseAdam(ours, **kw)
    n_opt = optim.SparseAdam(arrays, **kw)
    for step in range(STEPS):
        gs = [_sparse_grad(gen, *s, dtype) for s in shapes]
        before = [a.detach().clone() for a in ours]
        for a, b, g in zip(theirs, ours, gs, strict=True):
            a.grad, b.grad = g.clone(), g.clone()
        t_opt.step()
        f_opt.step()
        n_opt.step([(g._indices()[0].numpy(), g._values().numpy()) for g in gs])
        for i, (a, b, c) in enumerate(zip(theirs, ours, arrays, strict=True)):
            _close(b, a, dtype, f"torch adapter param {i} step {step}")
            _close(c, a, dtype, f"numpy param {i} step {step}")
            untouched = torch.ones(a.shape[0], dtype=torch.bool)
            untouched[gs[i].coalesce()._indices()[0]] = False
            assert torch.equal(b.detach()[untouched], before[i][untouched])
            st = t_opt.state[a]
            assert f_opt.state[b]["step"] == st["step"] == n_opt.state[i]["step"]
            for k in ("exp_avg", "exp_avg_sq"):
                _close(f_opt.state[b][k], st[k], dtype, f"{k} {i} step {step}")
                _close(n_opt.state[i][k], st[k], dtype, f"numpy {k} {i} step {step}")


def test_sparse_adam_embedding_and_two_sparse_dims():
    torch.manual_seed(0)
    e1 = torch.nn.Embedding(30, 4, sparse=True)
    e2 = torch.nn.Embedding(30, 4, sparse=True)
    e2.weight.data.copy_(e1.weight.data)
    o1, o2 = torch.optim.SparseAdam(e1.parameters(), lr=0.1), ft.SparseAdam(e2.parameters(),
                                                                          lr=0.1)
    for _ in range(STEPS):
        idx = torch.randint(0, 30, (8,))
        for m, o in ((e1, o1), (e2, o2)):
            o.zero_grad()
            m(idx).pow(2).sum().backward()
            o.step()
        _close(e2.weight, e1.weight, torch.float32, "embedding")
    # a gradient with two sparse dimensions updates single elements
    p1 = torch.randn(4, 5, requires_grad=True)
    p2 = p1.detach().clone().requires_grad_()
    a, b = torch.optim.SparseAdam([p1]), ft.SparseAdam([p2])
    for _ in range(5):
        g = torch.sparse_coo_tensor(torch.tensor([[0, 3, 3], [1, 4, 0]]), torch.randn(3), (4, 5),
                                    check_invariants=True)
        p1.grad, p2.grad = g.clone(), g.clone()
        a.step()
        b.step()
        _close(p2, p1, torch.float32, "two sparse dims")


def test_sparse_adam_kernel_against_float64_reference(simd_target, rng):
    for dtype, tol in ((np.float32, dict(rtol=2e-5, atol=2e-6)),
                       (np.float64, dict(rtol=1e-12, atol=1e-14))):
        p = rng.standard_normal((1000, 65)).astype(dtype)
        m, v = (rng.standard_normal(p.shape) * 0.1).astype(dtype), rng.random(p.shape).astype(dtype)
        rows = np.sort(rng.choice(1000, 300, replace=False)).astype(np.int64)
        vals = rng.standard_normal((300, 65)).astype(dtype)
        want = [x.astype(np.float64) for x in (p, m, v)]
        hyper = dict(step=3, lr=0.01, beta1=0.8, beta2=0.95, eps=1e-6, maximize=True)
        ref.sparse_adam(*want, rows, vals.astype(np.float64), **hyper)
        _core.sparse_adam_step(p, m, v, rows, vals, **hyper)
        for got, w in zip((p, m, v), want, strict=True):
            np.testing.assert_allclose(got, w, **tol)


# -- state_dict interchange ---------------------------------------------------------------

CASES = {
    "Adafactor": (dict(lr=0.05, weight_decay=0.1), [(5, 7), (9,), ()], None),
    "Muon": (dict(lr=0.02), [(5, 7), (8, 3)], None),
    "SparseAdam": (dict(lr=0.05), [(20, 5)], _sparse_grad),
}


def _grads(name, shapes, gen):
    if name == "SparseAdam":
        return [_sparse_grad(gen, *s, torch.float32) for s in shapes]
    return _rand(shapes, torch.float32, gen)


@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_interchange_with_torch(name):
    """torch's state_dict loads into ours and ours into torch; both continue in step."""
    kw, shapes, _ = CASES[name]
    gen = torch.Generator().manual_seed(1)
    init = _rand(shapes, torch.float32, gen)
    a = [x.clone().requires_grad_() for x in init]
    b = [x.clone().requires_grad_() for x in init]
    t_opt, f_opt = getattr(torch.optim, name)(a, **kw), getattr(ft, name)(b, **kw)
    for _ in range(5):
        for x, y, g in zip(a, b, _grads(name, shapes, gen), strict=True):
            x.grad, y.grad = g.clone(), g.clone()
        t_opt.step()
        f_opt.step()
    # swap: ours continues from torch's state, torch from ours
    t2, f2 = getattr(torch.optim, name)(a, **kw), getattr(ft, name)(b, **kw)
    t2.load_state_dict(f_opt.state_dict())
    f2.load_state_dict(t_opt.state_dict())
    for _ in range(5):
        for x, y, g in zip(a, b, _grads(name, shapes, gen), strict=True):
            x.grad, y.grad = g.clone(), g.clone()
        t2.step()
        f2.step()
    for x, y in zip(a, b, strict=True):
        _close(y, x, torch.float32, "params after the swap")
    # and the numpy front end takes torch's state_dict (tensors converted by the caller)
    if name != "SparseAdam":
        arrays = [x.detach().numpy().copy() for x in a]
        n_opt = getattr(optim, name)(arrays, **kw)
        sd = t2.state_dict()
        n_opt.load_state_dict({"state": {k: {kk: (vv.numpy() if torch.is_tensor(vv) and vv.dim()
                                                  else vv) for kk, vv in v.items()}
                                         for k, v in sd["state"].items()},
                               "param_groups": sd["param_groups"]})
        g = _grads(name, shapes, gen)
        for x, gg in zip(a, g, strict=True):
            x.grad = gg.clone()
        t2.step()
        n_opt.step([gg.numpy() for gg in g])
        for x, y in zip(a, arrays, strict=True):
            if name == "Muon":  # numpy orthogonalizes in float32, torch in bfloat16
                np.testing.assert_allclose(y, x.detach().numpy(), rtol=0, atol=2e-3)
            else:
                _close(y, x, torch.float32, "numpy after loading torch's state")


# -- bad input ----------------------------------------------------------------------------

BAD_HYPER = {
    "Adafactor": [dict(lr=-1.0), dict(beta2_decay=0.5), dict(eps=(-1.0, 1e-3)),
                  dict(eps=(None, -1.0)), dict(d=0.5), dict(weight_decay=-0.1),
                  dict(lr=float("nan"))],
    "Muon": [dict(lr=-1.0), dict(momentum=-0.1), dict(weight_decay=-1.0),
             dict(adjust_lr_fn="other"), dict(ns_steps=100), dict(ns_coefficients=(1.0, 2.0))],
    "SparseAdam": [dict(lr=0.0), dict(eps=0.0), dict(betas=(1.0, 0.9)),
                   dict(betas=(0.9, -0.1))],
}


@pytest.mark.parametrize("name", list(BAD_HYPER))
def test_bad_hyperparameters_are_rejected(name):
    for bad in BAD_HYPER[name]:
        with pytest.raises(ValueError):
            getattr(ft, name)([torch.zeros(3, 2, requires_grad=True)], **bad)
        with pytest.raises(ValueError):
            getattr(optim, name)([np.zeros((3, 2))], **bad)


def test_bad_arrays_leave_everything_unchanged(rng):
    p = rng.standard_normal((4, 6)).astype(np.float32)
    g = rng.standard_normal((4, 6)).astype(np.float32)
    rv, cv = np.ones((4, 1), np.float32), np.ones((1, 6), np.float32)
    snap = [x.copy() for x in (p, g, rv, cv)]
    ro = rv.copy()
    ro.flags.writeable = False
    bad = [
        dict(row_vars=[np.ones((4, 2), np.float32)]),          # wrong shape
        dict(row_vars=[rv.astype(np.float64)]),                 # wrong dtype
        dict(row_vars=[ro]),                                    # read-only
        dict(row_vars=[None]),                                  # missing factor
        dict(variances=[np.ones((4, 6), np.float32)]),          # factored: no variance
        dict(col_vars=[cv, cv]),                                # wrong count
        dict(row_vars=[p[:, :1]]),                              # overlaps the parameter
        dict(step=0),
    ]
    for case in bad:
        args = dict(row_vars=[rv], col_vars=[cv], variances=[None], step=1)
        args.update(case)
        with pytest.raises((TypeError, ValueError)):
            _core.adafactor_step([p], [g], args.pop("row_vars"), args.pop("col_vars"),
                                 args.pop("variances"), **args)
        for x, s in zip((p, g, rv, cv), snap, strict=True):
            assert np.array_equal(x, s)
    m, v = np.zeros_like(p), np.zeros_like(p)
    vals = np.ones((2, 6), np.float32)
    for rows in (np.array([1, 1], np.int64), np.array([0, 4], np.int64),
                 np.array([0, 1], np.int32)):
        with pytest.raises((TypeError, ValueError)):
            _core.sparse_adam_step(p, m, v, rows, vals, step=1)
        assert np.array_equal(p, snap[0]) and not m.any() and not v.any()
    with pytest.raises(ValueError, match="values"):
        _core.sparse_adam_step(p, m, v, np.array([0, 1], np.int64), np.ones((2, 5), np.float32),
                               step=1)


def test_dense_gradient_for_sparse_adam_and_sparse_for_adafactor_are_errors():
    p = torch.zeros(3, 2, requires_grad=True)
    p.grad = torch.ones(3, 2)
    with pytest.raises(RuntimeError, match="dense"):
        ft.SparseAdam([p]).step()
    q = torch.zeros(3, 2, requires_grad=True)
    q.grad = torch.ones(3, 2).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        ft.Adafactor([q]).step()


# -- the CLI ------------------------------------------------------------------------------

def test_cli_trains_with_adafactor_and_refuses_muon_and_sparse_adam(tmp_path, capsys):
    from fastoptim import cli

    assert cli.main(["train", "--optimizer", "adafactor", "--hidden", "16", "--epochs", "2",
                     "--output", str(tmp_path / "a"), "--quiet"]) == 0
    for name in ("muon", "sparseadam", "lbfgs"):
        assert cli.main(["train", "--optimizer", name, "--epochs", "1",
                         "--output", str(tmp_path / name), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert "cannot run here" in err and len(err.splitlines()) == 1


# -- LBFGS --------------------------------------------------------------------------------

LBFGS_FLAGS = [dict(lr=0.5, **f) for f in _grid(
    line_search_fn=[None, "strong_wolfe"], history_size=[3, 100], max_iter=[1, 7])] + [
    dict(lr=1.0, max_iter=5, max_eval=6, tolerance_grad=1e-4, tolerance_change=1e-6,
         line_search_fn=ls) for ls in (None, "strong_wolfe")]

_A = np.random.default_rng(2).standard_normal((40, 6))
_Y = np.sign(np.random.default_rng(3).standard_normal(40))


def _logistic_torch(w, c):
    z = torch.from_numpy(_A) @ w + c
    return torch.log1p(torch.exp(-torch.from_numpy(_Y) * z)).mean() + 0.01 * (w * w).sum()


def _logistic_numpy(w, c):
    z = _A @ w + c
    m = -_Y * z
    loss = np.mean(np.log1p(np.exp(m))) + 0.01 * float(w @ w)
    s = -_Y / (1 + np.exp(-m)) / len(_Y)
    return loss, [_A.T @ s + 0.02 * w, np.array([s.sum()])]


@pytest.mark.parametrize("kw", LBFGS_FLAGS, ids=lambda kw: ",".join(
    f"{k}={v}" for k, v in kw.items() if k != "lr"))
def test_lbfgs_lockstep_with_torch(kw):
    """float64: both front ends follow torch.optim.LBFGS step by step (parameters, the
    direction, the history and the evaluation counts)."""
    def make(cls):
        w = torch.full((6,), 0.3, dtype=torch.float64, requires_grad=True)
        c = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = cls([w, c], **kw)

        def closure():
            opt.zero_grad()
            loss = _logistic_torch(w, c)
            loss.backward()
            return loss
        return w, c, opt, closure

    tw, tc, t_opt, t_closure = make(torch.optim.LBFGS)
    fw, fc, f_opt, f_closure = make(ft.LBFGS)
    arrays = [np.full(6, 0.3), np.zeros(1)]
    n_opt = optim.LBFGS(arrays, **kw)
    assert f_opt.defaults["max_eval"] == t_opt.defaults["max_eval"] == n_opt.defaults["max_eval"]
    for step in range(STEPS):
        t_loss = t_opt.step(t_closure)
        f_loss = f_opt.step(f_closure)
        n_loss = n_opt.step(lambda: _logistic_numpy(*arrays))
        assert float(f_loss.detach()) == pytest.approx(float(t_loss.detach()), rel=1e-12,
                                                      abs=1e-14)
        assert float(n_loss) == pytest.approx(float(t_loss.detach()), rel=1e-12, abs=1e-14)
        _close(fw, tw, torch.float64, f"w step {step}")
        _close(fc, tc, torch.float64, f"c step {step}")
        _close(arrays[0], tw, torch.float64, f"numpy w step {step}")
        ts, fs, ns = t_opt.state[tw], f_opt.state[fw], n_opt.state[0]
        for k in ("func_evals", "n_iter"):
            assert ts[k] == fs[k] == ns[k], (k, step)
        for k in ("d", "prev_flat_grad"):
            _close(fs[k], ts[k], torch.float64, f"{k} step {step}")
            _close(ns[k], ts[k], torch.float64, f"numpy {k} step {step}")
        assert len(ts["old_dirs"]) == len(fs["old_dirs"]) == len(ns["old_dirs"])
        for a, b, c in zip(ts["old_dirs"], fs["old_dirs"], ns["old_dirs"], strict=True):
            _close(b, a, torch.float64, "old_dirs")
            _close(c, a, torch.float64, "numpy old_dirs")
        assert float(fs["H_diag"]) == pytest.approx(float(ts["H_diag"]), rel=1e-10)
        assert float(fs["t"]) == pytest.approx(float(ts["t"]), rel=1e-10)


def test_lbfgs_float32_follows_torch():
    w1 = torch.full((6,), 0.3, requires_grad=True)
    w2 = w1.detach().clone().requires_grad_()
    A = torch.from_numpy(_A).float()
    opts = [torch.optim.LBFGS([w1], lr=0.5, max_iter=3), ft.LBFGS([w2], lr=0.5, max_iter=3)]
    for _ in range(STEPS):
        for w, o in zip((w1, w2), opts, strict=True):
            def closure(w=w, o=o):
                o.zero_grad()
                loss = torch.log1p(torch.exp(-(A @ w))).mean() + 0.01 * (w * w).sum()
                loss.backward()
                return loss
            o.step(closure)
        _close(w2, w1, torch.float32, "float32 LBFGS")


def test_lbfgs_state_dict_interchange_with_torch():
    def make(cls, w):
        opt = cls([w], lr=0.5, history_size=4, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = _logistic_torch(w, 0.0)
            loss.backward()
            return loss
        return opt, closure

    w1 = torch.full((6,), 0.3, dtype=torch.float64, requires_grad=True)
    w2 = w1.detach().clone().requires_grad_()
    (t_opt, t_cl), (f_opt, f_cl) = make(torch.optim.LBFGS, w1), make(ft.LBFGS, w2)
    for _ in range(2):
        t_opt.step(t_cl)
        f_opt.step(f_cl)
    (t2, t2_cl), (f2, f2_cl) = make(torch.optim.LBFGS, w1), make(ft.LBFGS, w2)
    t2.load_state_dict(f_opt.state_dict())
    f2.load_state_dict(t_opt.state_dict())
    for _ in range(3):
        t2.step(t2_cl)
        f2.step(f2_cl)
        _close(w2, w1, torch.float64, "after the swap")


def test_lbfgs_rejects_groups_bad_options_and_a_missing_closure():
    w = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="parameter groups"):
        ft.LBFGS([{"params": [w]}, {"params": [torch.zeros(2, requires_grad=True)]}])
    for bad in (dict(lr=-1.0), dict(line_search_fn="wolfe"), dict(history_size=0),
                dict(max_iter=0)):
        with pytest.raises(ValueError):
            ft.LBFGS([w], **bad)
        with pytest.raises(ValueError):
            optim.LBFGS([np.zeros(3)], **bad)
    with pytest.raises(TypeError, match="closure"):
        optim.LBFGS([np.zeros(3)]).step(None)
    x = np.zeros(3)
    with pytest.raises(ValueError, match="gradient"):
        optim.LBFGS([x]).step(lambda: (0.0, [np.ones(4)]))
    assert not x.any()


def test_numpy_front_end_bad_gradients_and_state_leave_everything_unchanged():
    p = np.arange(12, dtype=np.float64).reshape(4, 3)
    opt = optim.SparseAdam([p])
    for bad, err in [([np.ones((4, 3))], TypeError),                       # dense
                     ([(np.array([0.5]), np.ones((1, 3)))], TypeError),      # float rows
                     ([(np.array([4]), np.ones((1, 3)))], ValueError),       # out of range
                     ([(np.array([1]), np.ones((1, 2)))], ValueError),       # row width
                     ([(np.array([1]), np.ones((1, 3), np.float32))], TypeError)]:
        with pytest.raises(err):
            opt.step(bad)
        assert np.array_equal(p, np.arange(12.0).reshape(4, 3)) and not opt.state
    # repeated rows are summed first, as torch's coalesce()
    q = p.copy()
    twin = optim.SparseAdam([q])
    opt.step([(np.array([2, 0, 2]), np.array([[1.0, 2, 3], [4, 5, 6], [1, 1, 1]]))])
    twin.step([(np.array([0, 2]), np.array([[4.0, 5, 6], [2, 3, 4]]))])
    assert np.array_equal(p, q)
    assert np.array_equal(p[[1, 3]], np.arange(12.0).reshape(4, 3)[[1, 3]])

    a = np.ones((3, 4))
    ada = optim.Adafactor([a])
    ada.step([np.full((3, 4), 0.5)])
    sd = ada.state_dict()
    sd["state"][0]["row_var"] = np.ones((4, 1))  # the wrong factor shape
    before = {k: np.copy(v) for k, v in ada.state[0].items()}
    with pytest.raises(ValueError, match="row_var"):
        ada.load_state_dict(sd)
    assert all(np.array_equal(ada.state[0][k], v) for k, v in before.items())
