"""SGD momentum, RMSprop and Adagrad on bf16 / 8-bit state (and bf16 parameters), in one
native pass: against float64 references of the same quantized algorithm step by step
(tests/reference.py), bitwise equal to the float32 kernels on fp32 state, on every SIMD
target, and through the front ends."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from fastoptim import _core, formats, optim
from test_formats import _check_state_step, _decode_state, variant  # noqa: F401

N = 5 * 1024 + 77  # >= 4096 (8-bit kept), a partial q8 block, a partial chunk

# (name, kernel, buffers as (key, signed, argument, when), reference, hyperparameter sets)
CASES = {
    "sgd": ([("momentum_buffer", True, "momentum_buffers", "momentum")],
            [dict(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.9, nesterov=True,
                                                weight_decay=0.1),
             dict(lr=0.05, momentum=0.5, dampening=0.3, maximize=True),
             dict(lr=0.05)]),
    "rmsprop": ([("square_avg", False, "square_avgs", None),
                 ("momentum_buffer", True, "momentum_buffers", "momentum"),
                 ("grad_avg", True, "grad_avgs", "centered")],
                [dict(lr=1e-3), dict(lr=1e-3, momentum=0.9),
                 dict(lr=1e-3, weight_decay=0.1, maximize=True, alpha=0.9)]),
    "adagrad": ([("sum", False, "sums", None)],
                [dict(lr=1e-2), dict(lr=1e-2, lr_decay=0.01, weight_decay=0.1),
                 dict(lr=1e-2, maximize=True, eps=1e-6)]),
}


def _used(bufs, hp):
    return [b for b in bufs if b[3] is None or hp.get(b[3])]


def _call(name, bufs, hp, param, grad, st, step, first, **kw):
    """One format-kernel step with the state dict st (formats.new_buffers layout)."""
    used = {b[0] for b in _used(bufs, hp)}
    lists = [[st[k]] if k in used else None for k, *_ in bufs]
    absmax = [[st[formats.absmax_key(k)]] if k in used and st["state_format"] == "int8"
              else None for k, *_ in bufs]
    extra = {"first_step": first} if name == "sgd" else {}
    getattr(_core, f"{name}_format_step")([param], [grad], *lists, *absmax, None, step=step,
                                          **hp, **extra, **kw)


def _reference(name, p64, g64, olds, hp, step, first):
    if name == "sgd":
        wp, wb = ref.sgd(p64, g64, olds.get("momentum_buffer"), first_step=first, **hp)
        return wp, {"momentum_buffer": wb}
    if name == "rmsprop":
        wp, sq, buf, ga = ref.rmsprop(p64, g64, olds["square_avg"], olds.get("momentum_buffer"),
                                      olds.get("grad_avg"), **hp)
        return wp, {"square_avg": sq, "momentum_buffer": buf, "grad_avg": ga}
    wp, s = ref.adagrad(p64, g64, olds["sum"], step=step, **hp)
    return wp, {"sum": s}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("smode", ["bf16-nearest", "bf16-stochastic", "int8"])
def test_state_formats_step_by_step_against_float64(variant, rng, name, smode):  # noqa: F811
    bufs, hps = CASES[name]
    fmt = smode.split("-")[0]
    srnd = "stochastic" if smode.endswith("stochastic") else "nearest"
    for hp in hps:
        p = rng.standard_normal(N).astype(np.float32)
        st = formats.new_buffers(p, fmt, [(k, s, 0.1 if name == "adagrad" else 0.0)
                                          for k, s, _, _ in _used(bufs, hp)])
        assert st["state_format"] == fmt
        for t in range(1, 5):
            g = (rng.standard_normal(N) * 10.0 ** rng.uniform(-2, 0, N)).astype(np.float32)
            p64 = p.astype(np.float64)
            olds = {k: _decode_state(st, k, s) for k, s, _, _ in _used(bufs, hp)}
            before = {k: (v.copy() if hasattr(v, "copy") else v) for k, v in st.items()}
            _call(name, bufs, hp, p, g, st, t, t == 1, seed=5, state_rounding=srnd)
            wp, wants = _reference(name, p64, g.astype(np.float64), olds, hp, t, t == 1)
            ulp = 2.0 ** -8 * (1 + 1e-3) if srnd == "nearest" else 2.0 ** -7 * (1 + 1e-3)
            d = np.abs(g.astype(np.float64)) + hp.get("weight_decay", 0.0) * np.abs(p64)
            for k, s, _, _ in _used(bufs, hp):
                scale = np.abs(wants[k]) + sum(np.abs(v) for v in olds.values()) + d + d * d
                if name == "rmsprop" and k == "momentum_buffer":
                    scale = scale + np.abs(wants[k]) * 10  # g / avg: float32 root and divide
                _check_state_step(before, st, k, s, wants[k], ulp, scale)
            err = np.abs(p.astype(np.float64) - wp)
            assert np.all(err <= 1e-5 * np.abs(wp - p64) + 1e-6 * np.abs(wp) + 1e-30)
            assert not np.array_equal(p64, p)


@pytest.mark.parametrize("name", list(CASES))
def test_fp32_state_equals_the_float32_kernel(variant, rng, name):  # noqa: F811
    bufs, hps = CASES[name]
    for hp in hps:
        p = rng.standard_normal(70_001).astype(np.float32)
        q = p.copy()
        used = _used(bufs, hp)
        init = 0.1 if name == "adagrad" else 0.0
        st = formats.new_buffers(p, "fp32", [(k, s, init) for k, s, _, _ in used])
        plain = {k: np.full_like(p, init) for k, *_ in used}
        for t in range(1, 4):
            g = rng.standard_normal(70_001).astype(np.float32)
            _call(name, bufs, hp, p, g, st, t, t == 1)
            lists = [[plain[k]] if k in plain else None for k, *_ in bufs]
            extra = ({"first_step": t == 1} if name == "sgd" else
                     {"step": t} if name == "adagrad" else {})
            getattr(_core, f"{name}_step")([q], [g], *lists, **hp, **extra)
            assert np.array_equal(p, q)
            for k in plain:
                assert np.array_equal(st[k], plain[k])


def test_centered_rmsprop_needs_fp32_state(rng):
    p = rng.standard_normal(5000).astype(np.float32)
    before = p.copy()
    st = formats.new_buffers(p, "bf16", [("square_avg", False, 0.0), ("grad_avg", True, 0.0)])
    with pytest.raises(ValueError, match="centered=True needs float32 state"):
        _core.rmsprop_format_step([p], [p.copy()], [st["square_avg"]], None, [st["grad_avg"]],
                                  step=1, centered=True)
    assert np.array_equal(p, before) and not st["square_avg"].any()
    # fp32 state through the format kernel is fine (and equals the float32 kernel)
    st = formats.new_buffers(p, "fp32", [("square_avg", False, 0.0), ("grad_avg", True, 0.0)])
    _core.rmsprop_format_step([p], [before.copy()], [st["square_avg"]], None, [st["grad_avg"]],
                              step=1, centered=True)
    assert not np.array_equal(p, before)
    # the front ends refuse it up front
    with pytest.raises(ValueError, match="state_dtype must be 'fp32' with centered=True"):
        optim.RMSprop([p], centered=True, state_dtype="bf16")
    torch = pytest.importorskip("torch")
    import fastoptim.torch as ft

    with pytest.raises(ValueError, match="centered=True"):
        ft.RMSprop([torch.nn.Parameter(torch.zeros(3))], centered=True, state_dtype="int8")


def test_bf16_params_stochastic_sgd_momentum_int8(rng):
    """bf16 parameters with 8-bit momentum: the parameter is one of the two bf16 neighbours
    of the float32 update, identical for any thread count (counter-based bits)."""
    import fastoptim

    p0 = formats.bf16_from_float(rng.standard_normal(100_003).astype(np.float32))
    g = rng.standard_normal(100_003).astype(np.float32)
    outs = []
    before = fastoptim.get_num_threads()
    try:
        for nt in (1, 2):
            fastoptim.set_num_threads(nt)
            p = p0.copy()
            st = formats.new_buffers(p, "int8", [("momentum_buffer", True, 0.0)])
            for t in (1, 2):
                _core.sgd_format_step([p], [g], [st["momentum_buffer"]],
                                      [st["momentum_buffer_absmax"]], lr=0.01, momentum=0.9,
                                      first_step=t == 1, step=t, seed=3)
            outs.append(p)
    finally:
        fastoptim.set_num_threads(before)
    assert np.array_equal(outs[0], outs[1])


# ------------------------------------------------------------------ front ends

@pytest.mark.parametrize("fmt", ["bf16", "int8"])
@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.05, momentum=0.9)),
                                     ("RMSprop", dict(lr=1e-3, momentum=0.5)),
                                     ("Adagrad", dict(lr=1e-2, initial_accumulator_value=0.1)),
                                     # test_formats_more.py has their kernel tests
                                     ("Adamax", dict(lr=2e-3)), ("NAdam", dict(lr=2e-3)),
                                     ("RAdam", dict(lr=1e-3)), ("Adadelta", dict(lr=1.0)),
                                     ("Lion", dict(lr=1e-3)), ("AdEMAMix", dict(lr=1e-3))])
def test_optim_state_dtype_for_other_optimizers(rng, fmt, name, kw):
    ps = [rng.standard_normal(s).astype(np.float32) for s in ((80, 70), (30,))]
    opt = getattr(optim, name)(ps, state_dtype=fmt, **kw)
    plain_ps = [p.copy() for p in ps]
    plain = getattr(optim, name)(plain_ps, **kw)
    for _ in range(5):
        gs = [rng.standard_normal(p.shape).astype(np.float32) for p in ps]
        opt.step(gs)
        plain.step(gs)
    assert opt.state[0]["state_format"] == fmt
    assert opt.state[1]["state_format"] == ("fp32" if fmt == "int8" else fmt)
    drift = max(float(np.abs(p - q).max()) for p, q in zip(ps, plain_ps, strict=True))
    assert 0 < drift <= 5 * kw["lr"] * 3  # the state's rounding, a few lr at most
    sd = opt.state_dict()
    again = getattr(optim, name)([p.copy() for p in ps], state_dtype=fmt, **kw)
    again.load_state_dict(sd)
    gs = [rng.standard_normal(p.shape).astype(np.float32) for p in ps]
    opt.step(gs)
    again.step(gs)
    for p, q in zip(ps, again._params, strict=True):
        assert p.tobytes() == q.tobytes()


def test_torch_sgd_rmsprop_adagrad_on_a_bf16_model():
    torch = pytest.importorskip("torch")
    import fastoptim.torch as ft

    for cls, kw in [(ft.SGD, dict(lr=0.1, momentum=0.9)), (ft.RMSprop, dict(lr=1e-3)),
                    (ft.Adagrad, dict(lr=0.05))]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(),
                                    torch.nn.Linear(64, 3)).to(torch.bfloat16)
        opt = cls(model.parameters(), state_dtype="bf16", **kw)
        X = torch.randn(128, 16).to(torch.bfloat16)
        y = torch.randint(0, 3, (128,))
        losses = []
        for _ in range(25):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X).float(), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.9 * losses[0], cls.__name__
        assert all(opt.state[p]["state_format"] == "bf16" for p in model.parameters())
