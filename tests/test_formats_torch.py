"""fastoptim.torch with bf16/fp16 parameters and gradients and ``state_dtype``: the
one-line swap on a bf16 model, lockstep with the format kernels (whose float64 references
are in test_formats.py) and with torch.optim in float32, state_dict round trips and the
conversion to and from torch.optim.Adam, and refusals that change nothing."""

from __future__ import annotations

import copy

import fastoptim
import numpy as np
import pytest
from conftest import THREADS
from fastoptim import formats

torch = pytest.importorskip("torch")
import fastoptim.torch as ft  # noqa: E402

SHAPES = [(64, 80), (80,), (5000,)]  # 5120 and 5000 elements (8-bit kept), one small
PARAM_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _params(seed, dtype):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in SHAPES]


def _grads(gen, dtype):
    return [(torch.randn(s, generator=gen) * 10.0 ** torch.empty(s).uniform_(-3, 0,
                                                                          generator=gen))
            .to(dtype) for s in SHAPES]


# (fp32 parameters with fp32 state take the float32 fast path: test_torch_lockstep.py)
COMBOS = [(pdt, fmt) for pdt in ("fp32", "bf16", "fp16") for fmt in ("fp32", "bf16", "int8")
          if (pdt, fmt) != ("fp32", "fp32")]


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("pdt,fmt", COMBOS, ids=[f"{p}-params-{f}-state" for p, f in COMBOS])
def test_torch_formats_lockstep_with_the_format_kernel(simd_target, name, pdt, fmt):
    """Every step equals formats.adam_step on the same buffers (bf16 parameters rounded
    stochastically, fp16 ones through a float32 master), gradients of the parameter's dtype
    and, for the offload case, float32 gradients of a bf16 model."""
    amsgrad = fmt == "int8"
    ps = _params(0, PARAM_DTYPES[pdt])
    opt = getattr(ft, name)(ps, lr=1e-2, amsgrad=amsgrad, state_dtype=fmt)
    mine = [p.detach().clone() for p in ps]
    masters = [m.float() for m in mine] if pdt == "fp16" else None
    states = [formats.new_state(p, fmt, amsgrad=amsgrad) for p in mine]
    gen = torch.Generator().manual_seed(1)
    for t in range(5):
        gdt = torch.float32 if (pdt == "bf16" and t % 2) else PARAM_DTYPES[pdt]
        gs = _grads(gen, gdt)
        for p, g in zip(ps, gs, strict=True):
            if g.dtype != p.dtype:
                p.grad_dtype = None  # torch's switch for a gradient in another dtype
            p.grad = g.clone()
        opt.step()
        kw = dict(lr=1e-2, amsgrad=amsgrad, weight_decay=1e-2 if name == "AdamW" else 0.0,
                  decoupled_weight_decay=name == "AdamW")
        if masters is not None:
            formats.adam_step(masters, gs, states, param_copies=mine, **kw)
        else:
            formats.adam_step(mine, gs, states, **kw)
        for i, (p, q) in enumerate(zip(ps, mine, strict=True)):
            assert p.dtype == PARAM_DTYPES[pdt]
            assert torch.equal(p.detach(), q), (t, i)
            st = opt.state[p]
            assert st.get("state_format", "fp32") == states[i]["state_format"]
            assert int(st["step"]) == t + 1
            for k, v in states[i].items():
                if torch.is_tensor(v):
                    assert torch.equal(st[k], v), (t, i, k)
            if masters is not None:
                assert torch.equal(st["master"], masters[i])


def test_bf16_model_works_with_the_one_line_swap():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 4)).to(torch.bfloat16)
    ptrs = [p.data_ptr() for p in model.parameters()]
    opt = ft.Adam(model.parameters(), lr=1e-2)  # was: torch.optim.Adam
    X = torch.randn(256, 32).to(torch.bfloat16)
    y = torch.randint(0, 4, (256,))
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X).float(), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert [p.data_ptr() for p in model.parameters()] == ptrs
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    # fp32 state, untagged: like torch's, only tensors
    assert all("state_format" not in opt.state[p] for p in model.parameters())
    assert {opt.state[p]["exp_avg"].dtype for p in model.parameters()} == {torch.float32}


@pytest.mark.parametrize("fmt", ["bf16", "int8"])
def test_fp32_params_reduced_state_track_torch_adam(fmt):
    """vs torch.optim.Adam in float32: the difference is the state's quantization error,
    bounded here by half a learning rate per step (measured: well under it)."""
    ps, qs = _params(2, torch.float32), _params(2, torch.float32)
    ours, theirs = ft.Adam(ps, lr=1e-3, state_dtype=fmt), torch.optim.Adam(qs, lr=1e-3)
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        # gradients of one scale per tensor (as a layer's are): an element whose exp_avg_sq
        # is 1e-7 below its block's absmax rounds to code 0 and then steps by m / eps,
        # which is the 8-bit scheme's (and bitsandbytes') documented limit, not tested here
        for p, q in zip(ps, qs, strict=True):
            g = torch.randn(p.shape, generator=gen) * 0.1
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    worst = max(float((p - q).detach().abs().max()) for p, q in zip(ps, qs, strict=True))
    assert 0 < worst <= 20 * 0.5e-3


def test_bf16_stochastic_rounding_keeps_small_updates_where_nearest_stalls():
    """A bf16 parameter at 1.0 gets updates of lr = 1e-4, far below its half-ulp (2**-8):
    round-to-nearest never moves it, stochastic rounding follows fp32 on average."""
    n = 20_000
    runs = {}
    for rounding in ("nearest", "stochastic"):
        p = torch.nn.Parameter(torch.ones(n, dtype=torch.bfloat16))
        opt = ft.Adam([{"params": [p], "param_rounding": rounding}], lr=1e-4)
        for _ in range(50):
            p.grad = torch.ones(n, dtype=torch.bfloat16)
            opt.step()
        runs[rounding] = p.detach().float()
    want = 1.0 - 50 * 1e-4  # Adam's step is lr for a constant gradient
    assert torch.all(runs["nearest"] == 1.0)
    mean = float(runs["stochastic"].mean())
    # each element is a sum of 50 independent roundings of gap 2**-8 (below 1) or 2**-7
    assert abs(mean - want) <= 4 * (2.0 ** -8 * np.sqrt(50) / 2) / np.sqrt(n) + 1e-6


@pytest.mark.parametrize("threads", THREADS)
def test_bf16_params_int8_state_identical_for_any_thread_count(threads):
    results = []
    before = fastoptim.get_num_threads()
    try:
        for nt in sorted({1, threads}):
            fastoptim.set_num_threads(nt)
            ps = [torch.nn.Parameter(torch.randn(300_001, generator=torch.Generator()
                                                 .manual_seed(5)).to(torch.bfloat16))]
            opt = ft.AdamW(ps, lr=1e-3, state_dtype="int8")
            gen = torch.Generator().manual_seed(6)
            for _ in range(3):
                ps[0].grad = torch.randn(300_001, generator=gen).to(torch.bfloat16)
                opt.step()
            results.append((ps[0].detach().clone(), opt.state[ps[0]]["exp_avg"].clone()))
    finally:
        fastoptim.set_num_threads(before)
    for p, m in results[1:]:
        assert torch.equal(p, results[0][0]) and torch.equal(m, results[0][1])


def _run(opt, ps, gen, steps):
    for _ in range(steps):
        for p, g in zip(ps, _grads(gen, ps[0].dtype), strict=True):
            p.grad = g
        opt.step()


@pytest.mark.parametrize(("pdt", "fmt"), [(p, f) for p in ("fp32", "bf16", "fp16")
                                         for f in ("fp32", "bf16", "int8")
                                         if (p, f) != ("fp32", "fp32")])
def test_torch_state_dict_round_trips_exactly_and_continues_identically(pdt, fmt):
    ps = _params(7, PARAM_DTYPES[pdt])
    opt = ft.Adam(ps, lr=1e-2, amsgrad=True, state_dtype=fmt)
    _run(opt, ps, torch.Generator().manual_seed(8), 3)
    sd = copy.deepcopy(opt.state_dict())
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    again = ft.Adam(qs, lr=1e-2, amsgrad=True, state_dtype=fmt)
    again.load_state_dict(sd)
    for p, q in zip(ps, qs, strict=True):
        a, b = opt.state[p], again.state[q]
        assert a.keys() == b.keys()
        for k in a:
            if torch.is_tensor(a[k]):
                assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
            else:
                assert a[k] == b[k]
    _run(opt, ps, torch.Generator().manual_seed(9), 3)
    _run(again, qs, torch.Generator().manual_seed(9), 3)
    for p, q in zip(ps, qs, strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("pdt", ["bf16", "fp16"])
def test_half_models_state_dicts_cross_with_torchs_adam_both_ways(pdt):
    # torch keeps a bf16/fp16 model's Adam state in the parameters' dtype; fastoptim keeps
    # it in float32 (untagged, only tensors): each loads the other's state_dict as it is
    g = torch.Generator().manual_seed(10)
    ps = _params(5, PARAM_DTYPES[pdt])
    ref = torch.optim.Adam(ps, lr=1e-2)
    _run(ref, ps, g, 3)
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    opt = ft.Adam(qs, lr=1e-2)
    opt.load_state_dict(ref.state_dict())
    for p, q in zip(ps, qs, strict=True):
        a, b = ref.state[p], opt.state[q]
        assert int(b["step"]) == 3 and b["exp_avg"].dtype == torch.float32
        assert torch.equal(b["exp_avg"], a["exp_avg"].float())
        assert torch.equal(b["exp_avg_sq"], a["exp_avg_sq"].float())
    _run(ref, ps, torch.Generator().manual_seed(11), 2)
    _run(opt, qs, torch.Generator().manual_seed(11), 2)
    if pdt == "bf16":  # (torch's fp16 state underflows here: its own steps turn to NaN)
        for p, q in zip(ps, qs, strict=True):  # (torch's state is rounded to bf16)
            torch.testing.assert_close(q.float(), p.float(), rtol=2e-2, atol=2e-3)
    back = [torch.nn.Parameter(q.detach().clone()) for q in qs]
    tor = torch.optim.Adam(back, lr=1e-2)
    tor.load_state_dict(opt.state_dict())
    for q, b in zip(qs, back, strict=True):
        assert int(tor.state[b]["step"]) == 5
        assert torch.equal(tor.state[b]["exp_avg"], opt.state[q]["exp_avg"].to(b.dtype))


def test_to_torch_state_dict_loads_into_torch_adam_and_back():
    ps = _params(10, torch.float32)
    opt = ft.Adam(ps, lr=1e-3, state_dtype="int8")
    _run(opt, ps, torch.Generator().manual_seed(11), 4)
    sd = opt.state_dict()
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    theirs = torch.optim.Adam(qs, lr=1e-3)
    theirs.load_state_dict(formats.to_torch_state_dict(sd))
    for i, q in enumerate(qs):
        st = sd["state"][i]
        want = (formats.dequantize(st["exp_avg"], st["exp_avg_absmax"], True)
                if st["state_format"] == "int8" else st["exp_avg"])
        assert torch.equal(theirs.state[q]["exp_avg"], want)
        assert theirs.state[q]["exp_avg"].dtype == torch.float32
    _run(theirs, qs, torch.Generator().manual_seed(12), 1)  # torch steps from it
    back = formats.from_torch_state_dict(theirs.state_dict(), "int8")
    rs = [torch.nn.Parameter(q.detach().clone()) for q in qs]
    ours = ft.Adam(rs, lr=1e-3, state_dtype="int8")
    ours.load_state_dict(back)
    assert ours.param_groups[0]["state_dtype"] == "int8"
    assert int(ours.state[rs[0]]["step"]) == 5
    assert ours.state[rs[0]]["exp_avg"].dtype == torch.uint8
    _run(ours, rs, torch.Generator().manual_seed(13), 1)


def _snapshot(opt, ps):
    return ([p.detach().clone() for p in ps],
            {id(p): {k: (v.clone() if torch.is_tensor(v) else v)
                     for k, v in opt.state[p].items()} for p in ps if p in opt.state},
            copy.deepcopy([{k: v for k, v in g.items() if k != "params"}
                           for g in opt.param_groups]))


def _unchanged(snap, opt, ps):
    params, state, groups = snap
    if not all(torch.equal(a, p.detach()) and a.dtype == p.dtype
               for a, p in zip(params, ps, strict=True)):
        return False
    if groups != [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]:
        return False
    for p in ps:
        want = state.get(id(p))
        have = opt.state.get(p) if p in opt.state else None
        if (want is None) != (not have):
            return False
        if want is None:
            continue
        if want.keys() != have.keys():
            return False
        for k, v in want.items():
            w = have[k]
            if torch.is_tensor(v):
                if not (torch.is_tensor(w) and v.dtype == w.dtype and torch.equal(v, w)):
                    return False
            elif v != w:
                return False
    return True


def _bad(sd, **changes):
    out = {"param_groups": sd["param_groups"],
           "state": {k: dict(v) for k, v in sd["state"].items()}}
    for k, v in changes.items():
        if v is None:
            del out["state"][0][k]
        else:
            out["state"][0][k] = v
    return out


@pytest.mark.parametrize("case", ["int8-into-fp32", "fp32-into-int8", "tag", "codes-dtype",
                                  "codes-shape", "absmax-shape", "absmax-missing",
                                  "block-size"])
def test_torch_bad_state_dicts_are_refused_and_nothing_changes(case):
    src_ps = _params(14, torch.float32)
    src = ft.Adam(src_ps, state_dtype="int8")
    _run(src, src_ps, torch.Generator().manual_seed(15), 1)
    sd = src.state_dict()
    st = sd["state"][0]
    ps = _params(16, torch.float32)
    target = ft.Adam(ps, state_dtype="fp32" if case == "int8-into-fp32" else "int8")
    _run(target, ps, torch.Generator().manual_seed(17), 1)
    if case == "fp32-into-int8":
        plain_ps = _params(14, torch.float32)
        plain = torch.optim.Adam(plain_ps)
        _run(plain, plain_ps, torch.Generator().manual_seed(15), 1)
        sd = plain.state_dict()
    elif case == "tag":
        sd = _bad(sd, state_format="bf16")
    elif case == "codes-dtype":
        sd = _bad(sd, exp_avg=st["exp_avg"].to(torch.int16))
    elif case == "codes-shape":
        sd = _bad(sd, exp_avg=st["exp_avg"].reshape(-1))
    elif case == "absmax-shape":
        sd = _bad(sd, exp_avg_absmax=st["exp_avg_absmax"][:-1])
    elif case == "absmax-missing":
        sd = _bad(sd, exp_avg_sq_absmax=None)
    elif case == "block-size":
        sd = _bad(sd, exp_avg_absmax=st["exp_avg_absmax"].repeat_interleave(2))
    snap = _snapshot(target, ps)
    with pytest.raises(ValueError, match="state"):
        target.load_state_dict(sd)
    assert _unchanged(snap, target, ps)


def test_torch_bad_arguments_are_refused():
    p = torch.nn.Parameter(torch.zeros(10))
    with pytest.raises(ValueError, match="state_dtype must be one of"):
        ft.Adam([p], state_dtype="int4")
    with pytest.raises(TypeError, match="state_dtype"):
        ft.Rprop([p], state_dtype="int8")  # no such argument: Rprop has no formats
    with pytest.raises(TypeError, match="bfloat16"):
        ft.Rprop([torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))])
    q = torch.nn.Parameter(torch.zeros(10, dtype=torch.float64))
    opt = ft.Adam([q], state_dtype="bf16")
    q.grad = torch.ones(10, dtype=torch.float64)
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        opt.step()
    assert torch.all(q == 0) and q not in opt.state
    r = torch.nn.Parameter(torch.zeros(10, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="param_rounding"):
        ft.Adam([{"params": [r], "param_rounding": "up"}])
    opt = ft.Adam([r])
    with pytest.raises(ValueError, match="param_rounding"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))],
                             "param_rounding": "up"})
    assert len(opt.param_groups) == 1


def _noncontiguous(kind, dtype, gen):
    """A parameter stored non-contiguously and a contiguous one with the same values."""
    if kind == "channels_last":
        x = torch.randn(8, 16, 8, 8, generator=gen).to(dtype)  # 8,192 elements: 8-bit kept
        return (torch.nn.Parameter(x.to(memory_format=torch.channels_last)),
                torch.nn.Parameter(x.clone()))
    if kind == "transposed":
        x = torch.randn(96, 64, generator=gen).to(dtype)
        return torch.nn.Parameter(x.t()), torch.nn.Parameter(x.t().contiguous())
    base = torch.randn(70, 200, generator=gen).to(dtype)  # a strided view: every other column
    return torch.nn.Parameter(base[:, ::2]), torch.nn.Parameter(base[:, ::2].contiguous())


@pytest.mark.parametrize("kind", ["channels_last", "transposed", "strided"])
@pytest.mark.parametrize("pdt,fmt", [("bf16", "int8"), ("bf16", "fp32"), ("fp16", "bf16"),
                                     ("fp32", "int8")])
def test_noncontiguous_reduced_params_equal_their_contiguous_twin(kind, pdt, fmt):
    """Non-contiguous bf16/fp16 parameters (or any with reduced state) are updated in place,
    keep their memory format, and follow exactly the steps of the same values stored
    contiguously (stochastic rounding included: the state is in logical order)."""
    gen = torch.Generator().manual_seed(4)
    p, q = _noncontiguous(kind, PARAM_DTYPES[pdt], gen)
    strides, ptr = p.stride(), p.data_ptr()
    assert not p.is_contiguous() and q.is_contiguous()
    op = ft.AdamW([p], lr=1e-2, state_dtype=fmt)
    oq = ft.AdamW([q], lr=1e-2, state_dtype=fmt)
    for _ in range(4):
        g = torch.randn(p.shape, generator=gen).to(p.dtype)
        p.grad = g.clone()
        q.grad = g.clone()
        op.step()
        oq.step()
    assert p.stride() == strides and p.data_ptr() == ptr
    assert torch.equal(p.detach(), q.detach())
    assert not torch.equal(p.detach(), _noncontiguous(kind, PARAM_DTYPES[pdt],
                                                      torch.Generator().manual_seed(4))[1])
    assert op.state[p].keys() == oq.state[q].keys()
    for k, v in oq.state[q].items():
        assert (torch.equal(op.state[p][k], v) if torch.is_tensor(v)
                else op.state[p][k] == v), k


def test_expanded_params_are_refused_and_nothing_changes():
    p = torch.nn.Parameter(torch.ones(3, 1, dtype=torch.bfloat16).expand(3, 4))
    opt = ft.Adam([p], lr=0.1)
    p.grad = torch.ones(3, 4, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="sharing memory"):
        opt.step()
    assert torch.all(p == 1) and not opt.state.get(p)
