"""Formats with torch tensors and bitsandbytes, state_dict conversion, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from fastoptim import _core, formats

torch = pytest.importorskip("torch")


def test_torch_bf16_params_and_grads_update_in_place():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(10_000, generator=g).to(torch.bfloat16)
    grad = torch.randn(10_000, generator=g).to(torch.bfloat16)
    ptr = p.data_ptr()
    st = formats.new_state(p, "int8")
    assert st["exp_avg"].dtype == torch.uint8 and st["exp_avg_absmax"].dtype == torch.float32
    before = p.clone()
    formats.adam_step([p], [grad], [st], lr=1e-2, param_rounding="nearest")
    assert p.data_ptr() == ptr and p.dtype == torch.bfloat16
    # first Adam step: p - lr * sign(g) (|m_hat / sqrt(v_hat)| = 1), rounded to bf16
    want = (before.float() - 1e-2 * torch.sign(grad.float())).to(torch.bfloat16)
    assert torch.equal(p, want)


def test_lockstep_with_bitsandbytes_adam8bit():
    bnb = pytest.importorskip("bitsandbytes")
    n = 65_536 + 300  # 8-bit state in both (>= 4096), a partial last block
    gen = torch.Generator().manual_seed(1)
    init = torch.randn(n, generator=gen)
    pb = torch.nn.Parameter(init.clone())
    pt = torch.nn.Parameter(init.clone())
    ours = init.clone()
    ob = bnb.optim.Adam8bit([pb], lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    ot = torch.optim.Adam([pt], lr=1e-3)
    st = formats.new_state(ours, "int8")
    worst_bnb = worst_fp32 = 0.0
    for _ in range(25):
        grad = torch.randn(n, generator=gen) * torch.linspace(0.01, 1.0, n)
        pb.grad = grad.clone()
        pt.grad = grad.clone()
        ob.step()
        ot.step()
        formats.adam_step([ours], [grad], [st], lr=1e-3)
        worst_bnb = max(worst_bnb, float((ours - pb.detach()).abs().max()))
        worst_fp32 = max(worst_fp32, float((ours - pt.detach()).abs().max()))
    # Both 8-bit states hold the same moments except where bitsandbytes 0.50.2's CPU
    # quantizer picks a code other than the nearest (0.1-3 % of values; fastoptim picks the
    # nearest), which shifts those elements' updates by a fraction of lr.
    # Tolerance: one learning rate after 25 steps (measured ~0.5 lr, as far from torch's
    # fp32 Adam as from bitsandbytes: the difference is the 8-bit state itself).
    assert worst_bnb <= 1e-3
    assert worst_fp32 <= 1e-3
    # same state layout: the moments decode to nearly the same values
    sb = ob.state[pb]
    m_bnb = formats.dequantize(sb["state1"], sb["absmax1"], True)
    m_ours = formats.dequantize(st["exp_avg"], st["exp_avg_absmax"], True)
    block_max = torch.repeat_interleave(st["exp_avg_absmax"], 256)[:n]
    assert float(((m_bnb - m_ours).abs() / block_max).max()) <= 0.05
    same = float((sb["state1"] == st["exp_avg"]).float().mean())
    print(f"bnb lockstep: max |p diff| {worst_bnb:.2e} (vs torch fp32 {worst_fp32:.2e}), "
          f"equal exp_avg codes {same:.4f}")
    assert same >= 0.9


def _adam_sd(opt_params, fmt):
    states = {i: formats.new_state(p, fmt) for i, p in enumerate(opt_params)}
    return states


def test_state_dict_to_torch_adam_and_back():
    gen = torch.Generator().manual_seed(2)
    params = [torch.randn(5000, generator=gen), torch.randn(300, generator=gen)]
    states = [formats.new_state(p, "int8") for p in params]
    assert [s["state_format"] for s in states] == ["int8", "fp32"]
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=gen) for p in params]
        formats.adam_step(params, grads, states, lr=1e-3)
    sd = {"state": dict(enumerate(states)),
          "param_groups": [{"params": [0, 1], "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8,
                            "weight_decay": 0.0, "amsgrad": False, "maximize": False,
                            "foreach": None, "capturable": False, "differentiable": False,
                            "fused": None, "decoupled_weight_decay": False}]}
    snapshot = {k: v.clone() for k, v in states[0].items() if hasattr(v, "clone")}
    tsd = formats.to_torch_state_dict(sd)
    for k, v in snapshot.items():  # the input is untouched
        assert torch.equal(states[0][k], v)
    tp = [torch.nn.Parameter(p.clone()) for p in params]
    topt = torch.optim.Adam(tp, lr=1e-3)
    topt.load_state_dict(tsd)
    assert float(topt.state[tp[0]]["step"]) == 3.0
    assert torch.equal(topt.state[tp[0]]["exp_avg"],
                       formats.dequantize(states[0]["exp_avg"], states[0]["exp_avg_absmax"], True))
    # one more step in both from the same state: close (torch keeps fp32 state)
    grads = [torch.randn(p.shape, generator=gen) for p in params]
    for p, g in zip(tp, grads, strict=True):
        p.grad = g.clone()
    topt.step()
    formats.adam_step(params, grads, states, lr=1e-3)
    assert float((tp[0].detach() - params[0]).abs().max()) <= 3e-4
    assert torch.allclose(tp[1].detach(), params[1], rtol=0, atol=1e-6)
    # and back: torch's fp32 state -> int8 codes equal to quantizing it directly
    back = formats.from_torch_state_dict(topt.state_dict(), "int8")
    s0 = back["state"][0]
    codes, absmax = formats.quantize(topt.state[tp[0]]["exp_avg"], True)
    assert s0["state_format"] == "int8" and s0["step"] == 4
    assert torch.equal(s0["exp_avg"], codes) and torch.equal(s0["exp_avg_absmax"], absmax)
    assert back["state"][1]["state_format"] == "fp32"


def test_quantized_state_round_trips_exactly_through_npz(tmp_path):
    p = np.random.default_rng(3).standard_normal(9000).astype(np.float32)
    st = formats.new_state(p, "int8", amsgrad=True)
    formats.adam_step([p], [p * 0.5], [st], amsgrad=True)
    arrays = {k: v for k, v in st.items() if isinstance(v, np.ndarray)}
    np.savez(tmp_path / "s.npz", **arrays)
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        for k, v in arrays.items():
            assert z[k].dtype == v.dtype and np.array_equal(z[k], v)


# ---------------------------------------------------------------- bad inputs

def _setup(fmt="int8", n=5000):
    rng = np.random.default_rng(4)
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    st = formats.new_state(p, fmt, amsgrad=True)
    formats.adam_step([p], [g], [st], amsgrad=True)
    return p, g, st


def _snapshot(*objs):
    out = []
    for o in objs:
        if isinstance(o, dict):
            out.append({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in o.items()})
        else:
            out.append(o.copy())
    return out


def _unchanged(snap, *objs):
    for s, o in zip(snap, objs, strict=True):
        if isinstance(o, dict):
            assert s.keys() == o.keys()
            for k in s:
                assert np.array_equal(np.asarray(s[k]), np.asarray(o[k]))
        else:
            assert np.array_equal(s, o)


BAD_STATE = {
    "codes float32": (lambda st: st.__setitem__("exp_avg", st["exp_avg"].astype(np.float32)),
                      ValueError, "tagged 'int8'"),
    "absmax missing": (lambda st: st.pop("exp_avg_sq_absmax"), ValueError, "exp_avg_sq_absmax"),
    "absmax short": (lambda st: st.__setitem__("exp_avg_absmax", st["exp_avg_absmax"][:-1].copy()),
                     ValueError, "must have shape (20,)"),
    "absmax float64": (lambda st: st.__setitem__("exp_avg_absmax",
                                                 st["exp_avg_absmax"].astype(np.float64)),
                       TypeError, "float32"),
    "codes wrong shape": (lambda st: st.__setitem__("exp_avg", st["exp_avg"][:-1].copy()),
                          ValueError, "has shape"),
    "tag fp32 on codes": (lambda st: st.__setitem__("state_format", "fp32"), ValueError,
                          "tagged 'fp32'"),
    "unknown tag": (lambda st: st.__setitem__("state_format", "int4"), ValueError,
                    "state_format"),
    "codes read-only": (lambda st: st["exp_avg"].setflags(write=False), ValueError, "read-only"),
    "codes strided": (lambda st: st.__setitem__("exp_avg_sq", np.repeat(st["exp_avg_sq"], 2)[::2]),
                      ValueError, "C-contiguous"),
    "max missing": (lambda st: st.pop("max_exp_avg_sq"), ValueError, "max_exp_avg_sq"),
    "absmax shared": (lambda st: st.__setitem__("exp_avg_sq_absmax", st["exp_avg_absmax"]),
                      ValueError, "share memory"),
}


@pytest.mark.parametrize("case", list(BAD_STATE))
def test_bad_state_is_refused_and_nothing_changes(case):
    p, g, st = _setup()
    mutate, exc, msg = BAD_STATE[case]
    mutate(st)
    snap = _snapshot(p, g, st)
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
        formats.adam_step([p], [g], [st], amsgrad=True)
    _unchanged(snap, p, g, st)


BAD_ARRAYS = {
    "fp16 param": (lambda p, g: (p.astype(np.float16), g), TypeError, "float32 master"),
    "float64 grad": (lambda p, g: (p, g.astype(np.float64)), TypeError, "float32, uint16"),
    "uint8 grad": (lambda p, g: (p, g.astype(np.uint8)), TypeError, "grads\\[0\\] must be"),
    "grad shape": (lambda p, g: (p, g[:-1].copy()), ValueError, "has shape"),
    "grad is param": (lambda p, g: (p, p), ValueError, "share memory"),
}


@pytest.mark.parametrize("case", list(BAD_ARRAYS))
def test_bad_param_or_grad_is_refused(case):
    p, g, st = _setup()
    make, exc, msg = BAD_ARRAYS[case]
    pp, gg = make(p, g)
    snap = _snapshot(p, g, st, pp)
    with pytest.raises(exc, match=msg):
        formats.adam_step([pp], [gg], [st], amsgrad=True)
    _unchanged(snap, p, g, st, pp)


def test_bad_hyperparameters_and_rounding_are_refused():
    p, g, st = _setup()
    snap = _snapshot(p, g, st)
    with pytest.raises(ValueError, match="lr"):
        formats.adam_step([p], [g], [st], amsgrad=True, lr=-1.0)
    with pytest.raises(ValueError, match="param_rounding"):
        formats.adam_step([p], [g], [st], amsgrad=True, param_rounding="up")
    with pytest.raises(ValueError, match="different steps"):
        st2 = formats.new_state(p.copy(), "int8", amsgrad=True)
        formats.adam_step([p, p.copy()], [g, g.copy()], [st, st2], amsgrad=True)
    with pytest.raises(TypeError, match="not a float32 master"):
        formats.adam_step([formats.bf16_from_float(p)], [g], [st], amsgrad=True,
                          param_copies=[np.zeros(p.shape, np.float16)])
    _unchanged(snap, p, g, st)


def test_int8_state_into_fp32_state_and_reverse_refused():
    p, g, st8 = _setup("int8")
    _, _, st32 = _setup("fp32")
    # an fp32 optimizer's state tagged fp32 but given codes, and the reverse
    mixed = dict(st32, exp_avg=st8["exp_avg"].copy())
    with pytest.raises(ValueError, match="tagged 'fp32'"):
        formats.adam_step([p], [g], [mixed], amsgrad=True)
    relabeled = dict(st32, state_format="int8")
    with pytest.raises(ValueError, match="tagged 'int8'"):
        formats.adam_step([p], [g], [relabeled], amsgrad=True)
    with pytest.raises(TypeError, match="float32 tensor"):
        codes = torch.zeros(3, dtype=torch.uint8)
        sd = {"state": {0: {"step": 1, "exp_avg": codes, "exp_avg_sq": torch.zeros(3)}},
              "param_groups": []}
        formats.from_torch_state_dict(sd, "int8")


def test_native_gate_checks_absmax_and_formats():
    p, g, st = _setup("bf16")
    snap = _snapshot(p, g, st)
    with pytest.raises(ValueError, match="not 8-bit codes"):
        _core.adam_format_step([p], [g], [st["exp_avg"]], [st["exp_avg_sq"]],
                               absmax_exp_avgs=[np.zeros(20, np.float32)], step=2)
    with pytest.raises(TypeError, match="share one format"):
        _core.adam_format_step([p], [g], [st["exp_avg"]], [np.zeros(p.shape, np.float32)], step=2)
    with pytest.raises(ValueError, match="absmax_exp_avgs\\[0\\] is required"):
        _core.adam_format_step([p], [g], [np.zeros(p.shape, np.uint8)],
                               [np.zeros(p.shape, np.uint8)], step=2)
    _unchanged(snap, p, g, st)
