"""Every CPU configuration of torch's own optimizer test database (``optim_db`` of
torch.testing._internal.common_optimizers, shipped in the torch wheel: each optimizer's
inputs plus the foreach and fused variants torch's tests add) stepped by
fastoptim.torch in lockstep with torch.optim: parameters and every state entry compared
after each of several steps, in float64."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")  # torch's testing helpers import it
ft = pytest.importorskip("fastoptim.torch")
co = pytest.importorskip("torch.testing._internal.common_optimizers")

STEPS = 5


def _cases():
    out = []
    for info in co.optim_db:
        name = info.optim_cls.__name__
        if not hasattr(ft, name):
            continue
        # (differentiable=True runs torch's own step: tests/test_torch_protocol.py checks
        # its hypergradients; torch's in-place updates of leaf parameters refuse it here)
        inputs = co._get_optim_inputs_including_global_cliquey_kwargs(
            "cpu", torch.float64, info, skip=("differentiable",))
        for i, inp in enumerate(inputs):
            out.append(pytest.param(info, inp, id=f"{name}-{i}-{inp.desc.replace(' ', '_')}"))
    return out


def _copy(v):
    if isinstance(v, torch.Tensor):
        return v.detach().clone()
    if isinstance(v, list):  # (LBFGS's history)
        return [_copy(x) for x in v]
    return v


def _assert_same(a, b, tol, where):
    if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor) and all(
            isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1)
            for v in (a, b)):  # (LBFGS's t: a float or a 0-d tensor, as its data goes)
        a, b = float(a), float(b)
    if isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor), where
        torch.testing.assert_close(a.to(b.dtype), b, **tol, msg=lambda m: f"{where}: {m}")
    elif isinstance(b, list):
        assert isinstance(a, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, tol, f"{where}[{i}]")
    elif isinstance(b, float):
        assert a == pytest.approx(b, rel=tol["rtol"], abs=tol["atol"]), where
    else:
        assert a == b, where


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")  # (torch's SparseAdam path)
@pytest.mark.parametrize(("info", "inp"), _cases())
def test_torchs_own_configurations_step_in_lockstep(info, inp):
    name = info.optim_cls.__name__
    g = torch.Generator().manual_seed(0)
    shapes = [(10, 5)] if name == "Muon" else [(10, 5), (10,)]
    init = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    x = torch.randn(5, generator=g, dtype=torch.float64)
    runs = []
    for cls in (getattr(ft, name), getattr(torch.optim, name)):
        params = [torch.nn.Parameter(w.clone()) for w in init]
        kwargs = {k: (v.clone() if isinstance(v, torch.Tensor) else v)
                  for k, v in inp.kwargs.items()}
        opt = cls(params, **kwargs)

        def closure(params=params, opt=opt):
            opt.zero_grad()
            out = params[0].mv(x) + (params[1] if len(params) > 1 else 0.0)
            loss = out.pow(2).sum() + out.sin().sum()
            loss.backward()
            if info.only_supports_sparse_grads:
                for p in params:
                    p.grad = p.grad.to_sparse()
            return loss
        trace = []
        for _ in range(STEPS):
            if info.step_requires_closure:
                opt.step(closure)
            else:
                closure()
                opt.step()
            trace.append(([p.detach().clone() for p in params],
                          [{k: _copy(v) for k, v in opt.state[p].items()}
                           for p in params if p in opt.state]))
        runs.append(trace)
    # Muon orthogonalizes in bfloat16 (as torch's): its own rounding, not the float64 one;
    # a float32 tensor lr (torch.tensor(0.01)) makes torch's step sizes float32 products
    tol = dict(rtol=1e-9, atol=1e-11)
    if name == "Muon":
        tol = dict(rtol=1e-2, atol=1e-3)
    elif any(isinstance(v, torch.Tensor) for v in inp.kwargs.values()):
        tol = dict(rtol=1e-6, atol=1e-8)
    for step, ((ps, ss), (qs, rs)) in enumerate(zip(*runs, strict=True)):
        _assert_same(ps, qs, tol, f"step {step}: params")
        assert len(ss) == len(rs)
        for a, b in zip(ss, rs, strict=True):
            assert a.keys() == b.keys(), (step, a.keys(), b.keys())
            for k in b:
                if k == "step":
                    assert float(a[k]) == float(b[k]), (step, k)
                else:
                    _assert_same(a[k], b[k], tol, f"step {step}: state {k!r}")
