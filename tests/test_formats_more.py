"""Adamax, NAdam, RAdam, Adadelta, Lion and AdEMAMix on bf16 / 8-bit state (and bf16
parameters), in one native pass: against float64 references of the same quantized
algorithm step by step (tests/reference.py), bitwise equal to their float32 kernels on
fp32 state, identical for any thread count, through fastoptim.optim and fastoptim.torch
(state_dict round trips, conversion to and from torch.optim), and refusals that change
nothing."""

from __future__ import annotations

import copy
import io

import fastoptim
import numpy as np
import pytest
import reference as ref
from fastoptim import _core, formats, optim
from fastoptim import spec as fspec
from test_formats import _check_state_step, _decode_state, variant  # noqa: F401

N = 5 * 1024 + 77  # >= 4096 (8-bit kept), a partial q8 block, a partial chunk

# name -> (buffers as (key, signed), kernel hyperparameter sets)
CASES = {
    "adamax": ([("exp_avg", True), ("exp_inf", False)],
               [dict(lr=2e-3), dict(lr=2e-3, beta1=0.8, beta2=0.99, weight_decay=0.1),
                dict(lr=2e-3, maximize=True, eps=1e-6)]),
    "nadam": ([("exp_avg", True), ("exp_avg_sq", False)],
              [dict(lr=2e-3), dict(lr=2e-3, weight_decay=0.1, momentum_decay=0.01),
               dict(lr=2e-3, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)]),
    "radam": ([("exp_avg", True), ("exp_avg_sq", False)],
              # beta2=0.9: the rectified step starts at step 6
              [dict(lr=1e-3, beta2=0.9), dict(lr=1e-3, beta2=0.9, weight_decay=0.1),
               dict(lr=1e-3, beta2=0.9, weight_decay=0.1, decoupled_weight_decay=True,
                    maximize=True)]),
    "adadelta": ([("square_avg", False), ("acc_delta", False)],
                 [dict(lr=1.0), dict(lr=0.5, rho=0.8, weight_decay=0.1),
                  dict(lr=1.0, eps=1e-4, maximize=True)]),
    "lion": ([("exp_avg", True)],
             [dict(lr=1e-3), dict(lr=1e-3, beta1=0.8, beta2=0.95, weight_decay=0.1),
              dict(lr=1e-3, maximize=True)]),
    "ademamix": ([("exp_avg", True), ("exp_avg_sq", False), ("exp_avg_slow", True)],
                 [dict(lr=1e-3), dict(lr=1e-3, weight_decay=0.1, t_alpha_beta3=10.0),
                  dict(lr=1e-3, weight_decay=0.1, weight_decouple=True, maximize=True,
                       beta3=0.99, alpha=2.0)]),
}
STEPS = 7
# kernels whose float32 version takes the step number (the others: it keys rounding only)
KERNEL_STEP = {"adamax", "nadam", "radam", "ademamix"}


def _mu_product(hp, t, prev):
    """NAdam's running product including this step's mu (the kernel takes it)."""
    b1, psi = hp.get("beta1", 0.9), hp.get("momentum_decay", 4e-3)
    return prev * b1 * (1.0 - 0.5 * 0.96 ** (t * psi))


def _lists(bufs, st):
    vals = [[st[k]] for k, _ in bufs]
    absmax = [[st[formats.absmax_key(k)]] if st["state_format"] == "int8" else None
              for k, _ in bufs]
    return vals, absmax


def _format_step(name, bufs, hp, param, grad, st, step, **kw):
    vals, absmax = _lists(bufs, st)
    getattr(_core, f"{name}_format_step")([param], [grad], *vals, *absmax, None, step=step,
                                          **hp, **kw)


def _reference(name, p64, g64, olds, hp, step):
    """The float64 step from the decoded old state: (param, {key: new value})."""
    keys = [k for k, _ in CASES[name][0]]
    extra = {"step": step} if name in KERNEL_STEP else {}
    out = getattr(ref, name)(p64, g64, *[olds[k] for k in keys], **extra, **hp)
    return out[0], dict(zip(keys, out[1:], strict=True))


def _state_scale(name, key, olds, wants, d, hp):
    """Magnitude of the terms summed into a new state value (its float32 error is a few
    eps of it)."""
    scale = np.abs(wants[key]) + sum(np.abs(v) for v in olds.values()) + d + d * d
    if name == "adadelta" and key == "acc_delta":
        # delta = sqrt(acc + eps) / sqrt(sq + eps) * g: two roots and a divide in float32
        delta2 = (olds["acc_delta"] + hp.get("eps", 1e-6)) / (wants["square_avg"]
                                                              + hp.get("eps", 1e-6)) * d * d
        scale = scale + 4 * delta2
    return scale


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("smode", ["bf16-nearest", "bf16-stochastic", "int8"])
def test_formats_step_by_step_against_float64(variant, rng, name, smode):  # noqa: F811
    bufs, hps = CASES[name]
    fmt = smode.split("-")[0]
    srnd = "stochastic" if smode.endswith("stochastic") else "nearest"
    for hp in hps:
        p = rng.standard_normal(N).astype(np.float32)
        st = formats.new_buffers(p, fmt, [(k, s, 0.0) for k, s in bufs])
        assert st["state_format"] == fmt
        mu = 1.0
        for t in range(1, STEPS + 1):
            g = (rng.standard_normal(N) * 10.0 ** rng.uniform(-2, 0, N)).astype(np.float32)
            p64, g64 = p.astype(np.float64), g.astype(np.float64)
            kw = dict(hp)
            if name == "nadam":
                mu = _mu_product(hp, t, mu)
                kw["mu_product"] = mu
            olds = {k: _decode_state(st, k, s) for k, s in bufs}
            before = {k: (v.copy() if hasattr(v, "copy") else v) for k, v in st.items()}
            _format_step(name, bufs, kw, p, g, st, t, seed=5, state_rounding=srnd)
            wp, wants = _reference(name, p64, g64, olds, kw, t)
            ulp = 2.0 ** -8 * (1 + 1e-3) if srnd == "nearest" else 2.0 ** -7 * (1 + 1e-3)
            d = np.abs(g64) + hp.get("weight_decay", 0.0) * np.abs(p64)
            for k, s in bufs:
                _check_state_step(before, st, k, s, wants[k], ulp,
                                  _state_scale(name, k, olds, wants, d, hp))
            err = np.abs(p.astype(np.float64) - wp)
            move = np.abs(wp - p64)
            tol = 1e-5 * move + 1e-6 * np.abs(wp) + 1e-30
            if name == "lion":
                # sign(b1 m + (1 - b1) g): float32 and float64 may disagree only where
                # that sum is within float32 rounding of zero
                m = olds["exp_avg"]
                b1 = hp.get("beta1", 0.9)
                sg = -g64 if hp.get("maximize") else g64
                c = b1 * m + (1 - b1) * sg
                near0 = np.abs(c) <= 1e-6 * (np.abs(b1 * m) + np.abs((1 - b1) * sg))
                tol = np.where(near0, 2.0 * hp["lr"] + tol, tol)
            if name == "nadam":  # two addcdiv terms that may cancel
                tol = tol + 1e-5 * hp["lr"] * 10.0
            assert np.all(err <= tol), (name, t, float((err - tol).max()))
            assert not np.array_equal(p64, p)


@pytest.mark.parametrize("name", list(CASES))
def test_fp32_state_equals_the_float32_kernel(variant, rng, name):  # noqa: F811
    """fp32 parameters, gradients and state through the format kernel: bitwise the float32
    kernel (the same update function on the same values), every step, every buffer."""
    bufs, hps = CASES[name]
    n = 70_001
    for hp in hps:
        p = rng.standard_normal(n).astype(np.float32)
        q = p.copy()
        st = formats.new_buffers(p, "fp32", [(k, s, 0.0) for k, s in bufs])
        plain = {k: np.zeros_like(p) for k, _ in bufs}
        mu = 1.0
        for t in range(1, STEPS + 1):
            g = rng.standard_normal(n).astype(np.float32)
            kw = dict(hp)
            if name == "nadam":
                mu = _mu_product(hp, t, mu)
                kw["mu_product"] = mu
            _format_step(name, bufs, kw, p, g, st, t)
            extra = {"step": t} if name in KERNEL_STEP else {}
            getattr(_core, f"{name}_step")([q], [g], *[[plain[k]] for k, _ in bufs], **kw,
                                           **extra)
            assert np.array_equal(p, q), (name, hp, t)
            for k in plain:
                assert np.array_equal(st[k], plain[k]), (name, hp, t, k)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("smode", ["bf16-stochastic", "int8"])
def test_identical_for_one_and_two_threads(rng, name, smode):
    """bf16 parameters (stochastic rounding) with bf16-stochastic or 8-bit state on a tensor
    split between threads, plus a small one: bitwise the same for 1 and 2 threads."""
    bufs, hps = CASES[name]
    fmt = smode.split("-")[0]
    srnd = "stochastic" if smode.endswith("stochastic") else "nearest"
    sizes = (300_007, 77)
    p0 = [formats.bf16_from_float(rng.standard_normal(s).astype(np.float32)) for s in sizes]
    gs = [[rng.standard_normal(s).astype(np.float32) for s in sizes] for _ in range(3)]
    hp = hps[1]
    results = []
    before = fastoptim.get_num_threads()
    try:
        for nt in (1, 2):
            fastoptim.set_num_threads(nt)
            ps = [p.copy() for p in p0]
            sts = [formats.new_buffers(p, fmt, [(k, s, 0.0) for k, s in bufs]) for p in ps]
            mu = 1.0
            for t, g in enumerate(gs, 1):
                kw = dict(hp)
                if name == "nadam":
                    mu = _mu_product(hp, t, mu)
                    kw["mu_product"] = mu
                vals = [[st[k] for st in sts] for k, _ in bufs]
                absmax = [[st.get(formats.absmax_key(k)) for st in sts] for k, _ in bufs]
                getattr(_core, f"{name}_format_step")(ps, g, *vals, *absmax, None, step=t,
                                                      seed=11, state_rounding=srnd, **kw)
            results.append((ps, sts))
    finally:
        fastoptim.set_num_threads(before)
    (pa, sa), (pb, sb) = results
    assert sa[0]["state_format"] == fmt
    assert sa[1]["state_format"] == ("fp32" if fmt == "int8" else fmt)
    for x, y in zip(pa, pb, strict=True):
        assert np.array_equal(x, y)
    for x, y in zip(sa, sb, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], np.ndarray):
                assert np.array_equal(x[k], y[k]), k
    assert not np.array_equal(pa[0], p0[0])


def test_stochastic_state_rounding_is_keyed_by_seed_and_step(rng):
    """bf16-stochastic state: the same seed and step give the same bits, another seed
    other bits (each still one of the two bf16 neighbours, checked step by step above)."""
    p0 = rng.standard_normal(N).astype(np.float32)
    g = rng.standard_normal(N).astype(np.float32)
    outs = []
    for seed in (1, 1, 2):
        p = p0.copy()
        st = formats.new_buffers(p, "bf16", [("exp_avg", True, 0.0), ("exp_inf", False, 0.0)])
        for t in (1, 2):
            _core.adamax_format_step([p], [g], [st["exp_avg"]], [st["exp_inf"]], step=t,
                                     seed=seed, state_rounding="stochastic")
        outs.append(st["exp_avg"].copy())
    assert np.array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


# ------------------------------------------------------------------ front ends

NAMES = {"adamax": "Adamax", "nadam": "NAdam", "radam": "RAdam", "adadelta": "Adadelta",
         "lion": "Lion", "ademamix": "AdEMAMix"}
# constructor arguments (torch's names) for the front-end tests
FRONT = {"Adamax": dict(lr=2e-3), "NAdam": dict(lr=2e-3, weight_decay=0.01),
         "RAdam": dict(lr=1e-3, betas=(0.9, 0.9)), "Adadelta": dict(lr=1.0),
         "Lion": dict(lr=1e-3, weight_decay=0.1), "AdEMAMix": dict(lr=1e-3)}
SHAPES = [(64, 80), (80,), (5000,)]  # 5120 and 5000 elements (8-bit kept), one small


def test_the_spec_declares_the_formats():
    for name, (bufs, _) in CASES.items():
        s = fspec.get(NAMES[name])
        assert s.format_kernel == f"{name}_format_step"
        assert s.state_dtypes == ("fp32", "bf16", "int8")
        assert [(b.key, b.signed) for b in s.state] == bufs
    for name in ("Rprop", "ASGD"):  # no formats there: why in docs/formats.md
        assert fspec.get(name).state_dtypes == ("fp32",)


def _np_params(rng):
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


@pytest.mark.parametrize("fmt", ["bf16", "int8"])
@pytest.mark.parametrize("name", list(FRONT))
def test_optim_state_dtype_tracks_fp32_and_round_trips(rng, fmt, name):
    kw = FRONT[name]
    ps = _np_params(rng)
    p0 = [p.copy() for p in ps]
    opt = getattr(optim, name)(ps, state_dtype=fmt, **kw)
    plain_ps = [p.copy() for p in ps]
    plain = getattr(optim, name)(plain_ps, **kw)
    for _ in range(6):
        gs = [rng.standard_normal(p.shape).astype(np.float32) for p in ps]
        opt.step(gs)
        plain.step(gs)
    assert [opt.state[i]["state_format"] for i in range(3)] == (
        ["int8", "fp32", "int8"] if fmt == "int8" else [fmt] * 3)
    for i, p in enumerate(ps):
        st = opt.state[i]
        for b in fspec.get(name).state:
            want = {"fp32": np.float32, "bf16": np.uint16, "int8": np.uint8}[st["state_format"]]
            assert st[b.key].dtype == want and st[b.key].shape == p.shape
    if name == "NAdam":  # the scalar stays a float32 0-d array, as in the fp32 path
        assert opt.state[0]["mu_product"].shape == ()
        assert opt.state[0]["mu_product"] == plain.state[0]["mu_product"]
    # the reduced state changes the result by a fraction of the distance moved
    move = max(float(np.abs(q - a).max()) for q, a in zip(plain_ps, p0, strict=True))
    drift = [np.abs(p - q) for p, q in zip(ps, plain_ps, strict=True)]
    assert 0 < max(float(d.max()) for d in drift) <= move
    assert float(np.mean(drift[0])) <= 0.2 * float(np.mean(np.abs(plain_ps[0] - p0[0])))
    # state_dict round trip: a fresh optimizer continues bitwise as the original
    sd = opt.state_dict()
    again = getattr(optim, name)([p.copy() for p in ps], state_dtype=fmt, **kw)
    again.load_state_dict(copy.deepcopy(sd))
    for _ in range(2):
        gs = [rng.standard_normal(p.shape).astype(np.float32) for p in ps]
        opt.step(gs)
        again.step(gs)
    for p, q in zip(ps, again._params, strict=True):
        assert p.tobytes() == q.tobytes()
    for i in opt.state:
        for k, v in opt.state[i].items():
            w = again.state[i][k]
            assert (v.tobytes() == w.tobytes()) if isinstance(v, np.ndarray) else v == w


def test_optim_bad_state_dicts_are_refused_and_nothing_changes(rng):
    ps = _np_params(rng)
    src8 = optim.NAdam([p.copy() for p in ps], state_dtype="int8")
    src32 = optim.NAdam([p.copy() for p in ps])
    gs = [rng.standard_normal(p.shape).astype(np.float32) for p in ps]
    src8.step(gs)
    src32.step(gs)
    for target_dtype, sd, match in [
            ("fp32", src8.state_dict(), "tagged state_format='int8'"),
            ("int8", src32.state_dict(), "tagged state_format='fp32'"),
            ("int8", _drop(src8.state_dict(), 0, "mu_product"), "missing key"),
            ("int8", _drop(src8.state_dict(), 0, "exp_avg_sq_absmax"), "missing key"),
            ("int8", _set(src8.state_dict(), 0, "mu_product", np.zeros(3, np.float32)),
             "scalar"),
            ("int8", _set(src8.state_dict(), 0, "exp_avg", np.zeros((64, 80), np.uint16)),
             "dtype"),
            ("bf16", _set(src8.state_dict(), 0, "state_format", "bf16"), "dtype")]:
        tps = [p.copy() for p in ps]
        target = optim.NAdam(tps, state_dtype=target_dtype)
        target.step(gs)
        snap = (copy.deepcopy(target.state), [p.copy() for p in tps],
                copy.deepcopy([{k: v for k, v in g.items() if k != "params"}
                               for g in target.param_groups]))
        with pytest.raises((ValueError, TypeError), match=match):
            target.load_state_dict(sd)
        assert _np_same(snap[0], target.state)
        assert all(a.tobytes() == b.tobytes() for a, b in zip(snap[1], tps, strict=True))


def _drop(sd, i, key):
    del sd["state"][i][key]
    return sd


def _set(sd, i, key, value):
    sd["state"][i][key] = value
    return sd


def _np_same(a, b):
    if a.keys() != b.keys():
        return False
    for i in a:
        if a[i].keys() != b[i].keys():
            return False
        for k, v in a[i].items():
            w = b[i][k]
            if isinstance(v, np.ndarray):
                if not (isinstance(w, np.ndarray) and v.dtype == w.dtype
                        and v.tobytes() == w.tobytes()):
                    return False
            elif v != w:
                return False
    return True


def test_train_config_and_cli_take_the_new_state_dtypes(tmp_path):
    from fastoptim import cli, data, train
    from fastoptim.config import TrainConfig

    cfg = TrainConfig(hidden=[128], optimizer="nadam", state_dtype="int8", epochs=2)
    ds = data.load("digits")
    X = data.Standardizer().fit(ds.X_train).transform(ds.X_train).astype(np.float32)
    model, opt, _ = cfg.build(X.shape[1], 10)
    assert type(opt).__name__ == "NAdam" and opt.state_dtype == "int8"
    hist = train.fit(model, X, ds.y_train, loss="cross_entropy", optimizer=opt, epochs=2,
                     verbose=False)
    assert {s["state_format"] for s in opt.state.values()} == {"int8", "fp32"}
    assert hist["loss"][-1] < hist["loss"][0]
    assert cli.main(["train", "--hidden", "64", "--epochs", "1", "--quiet", "--optimizer",
                     "lion", "--state-dtype", "bf16", "--output", str(tmp_path / "a")]) == 0


# ------------------------------------------------------------------ the native gate

def _snap(*arrays):
    return [a.copy() for a in arrays]


def _same(snap, *arrays):
    return all(a.dtype == b.dtype and a.tobytes() == b.tobytes()
               for a, b in zip(snap, arrays, strict=True))


def test_native_bad_inputs_are_refused_and_nothing_changes(rng):
    n = 5000
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    st = formats.new_buffers(p, "int8", [("exp_avg", True, 0.0), ("exp_inf", False, 0.0)])
    m, u = st["exp_avg"], st["exp_inf"]
    am, au = st["exp_avg_absmax"], st["exp_inf_absmax"]
    bf = formats.new_buffers(p, "bf16", [("exp_avg", True, 0.0), ("exp_inf", False, 0.0)])
    ro = u.copy()
    ro.flags.writeable = False
    f = _core.adamax_format_step
    cases = [
        (TypeError, "exp_avgs\\[0\\] must be a float32, uint16", lambda: f(
            [p], [g], [m.astype(np.float64)], [u], [am], [au], step=1)),
        (TypeError, "share one format", lambda: f([p], [g], [m], [bf["exp_inf"]], [am], None,
                                                  step=1)),
        (ValueError, "absmax_exp_infs\\[0\\] is required", lambda: f([p], [g], [m], [u], [am],
                                                                     None, step=1)),
        (ValueError, "must have shape \\(20,\\)", lambda: f([p], [g], [m], [u], [am],
                                                           [np.zeros(19, np.float32)], step=1)),
        (TypeError, "absmax_exp_infs\\[0\\] must be float32, got uint8", lambda: f(
            [p], [g], [m], [u], [am], [np.zeros(20, np.uint8)], step=1)),
        (ValueError, "not 8-bit codes", lambda: f([p], [g], [bf["exp_avg"]], [bf["exp_inf"]],
                                                  [am], None, step=1)),
        (TypeError, "float16", lambda: f([p], [g], [m.astype(np.float16)],
                                         [u.astype(np.float16)], step=1)),
        (ValueError, "has shape", lambda: f([p], [g[:-1]], [m], [u], [am], [au], step=1)),
        (ValueError, "read-only", lambda: f([p], [g], [m], [ro], [am], [au], step=1)),
        (ValueError, "share memory", lambda: f([p], [g], [m], [m], [am], [au], step=1)),
        (ValueError, "beta", lambda: f([p], [g], [m], [u], [am], [au], step=1, beta1=1.5)),
        (ValueError, "state_rounding", lambda: f([p], [g], [m], [u], [am], [au], step=1,
                                                 state_rounding="up")),
        (TypeError, "step", lambda: f([p], [g], [m], [u], [am], [au])),
        (TypeError, "mu_product", lambda: _core.nadam_format_step([p], [g], [m], [u], [am],
                                                                  [au], step=1)),
        (ValueError, "exp_avg_sqs has 2 entries", lambda: _core.radam_format_step(
            [p], [g], [m], [u, u], step=1)),
        (TypeError, "must be a list", lambda: _core.lion_format_step([p], g, [m], [am])),
        (ValueError, "rho", lambda: _core.adadelta_format_step([p], [g], [u], [u.copy()],
                                                               [au], [au.copy()], rho=2.0)),
        (TypeError, "got uint8", lambda: _core.ademamix_format_step(
            [m.copy()], [g], [m], [u], [m.copy()], step=1)),
    ]
    for exc, match, call in cases:
        snap = _snap(p, g, m, u, am, au, bf["exp_avg"], bf["exp_inf"])
        with pytest.raises(exc, match=match):
            call()
        assert _same(snap, p, g, m, u, am, au, bf["exp_avg"], bf["exp_inf"]), match


# ------------------------------------------------------------------ fastoptim.torch

def _torch():
    torch = pytest.importorskip("torch")
    import fastoptim.torch as ft

    return torch, ft


def _tparams(torch, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in SHAPES]


def _tstep(torch, opt, ps, gen, n):
    for _ in range(n):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)
        opt.step()


@pytest.mark.parametrize("fmt", ["bf16", "int8"])
@pytest.mark.parametrize("name", list(FRONT))
def test_torch_matches_optim_and_round_trips(rng, fmt, name):
    """fastoptim.torch with state_dtype steps bitwise as fastoptim.optim (the same format
    kernel on the same values), and its state_dict (through torch.save) round-trips
    exactly: a fresh optimizer continues identically."""
    torch, ft = _torch()
    kw = FRONT[name]
    ps = _tparams(torch, 0, torch.float32)
    nps = [p.detach().numpy().copy() for p in ps]
    opt = getattr(ft, name)(ps, state_dtype=fmt, **kw)
    nopt = getattr(optim, name)(nps, state_dtype=fmt, **kw)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        gs = [torch.randn(p.shape, generator=gen) for p in ps]
        for p, g in zip(ps, gs, strict=True):
            p.grad = g.clone()
        opt.step()
        nopt.step([g.numpy() for g in gs])
        for i, (p, q) in enumerate(zip(ps, nps, strict=True)):
            assert np.array_equal(p.detach().numpy(), q)
            st, nst = opt.state[p], nopt.state[i]
            assert st["state_format"] == nst["state_format"]
            for k, v in nst.items():
                if isinstance(v, np.ndarray):
                    t = st[k]
                    if t.dtype == torch.bfloat16:
                        t = t.view(torch.uint16)
                    assert np.array_equal(t.numpy(), v), (k, i)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    again = getattr(ft, name)(qs, state_dtype=fmt, **kw)
    again.load_state_dict(sd)
    for p, q in zip(ps, qs, strict=True):
        for k, v in opt.state[p].items():
            w = again.state[q][k]
            assert (torch.equal(v, w) and v.dtype == w.dtype) if torch.is_tensor(v) \
                else v == w, k
    _tstep(torch, opt, ps, torch.Generator().manual_seed(9), 3)
    _tstep(torch, again, qs, torch.Generator().manual_seed(9), 3)
    for p, q in zip(ps, qs, strict=True):
        assert torch.equal(p, q)


# torch.optim (or the reference package) classes the state converts to
TORCH_PEERS = {"Adamax": ("torch.optim", "Adamax"), "NAdam": ("torch.optim", "NAdam"),
               "RAdam": ("torch.optim", "RAdam"), "Adadelta": ("torch.optim", "Adadelta"),
               "Lion": ("lion_pytorch", "Lion")}


@pytest.mark.parametrize("name", list(TORCH_PEERS))
def test_to_torch_state_dict_loads_into_the_reference_and_back(name):
    torch, ft = _torch()
    module, cls = TORCH_PEERS[name]
    peer = getattr(pytest.importorskip(module), cls)
    kw = FRONT[name]
    ps = _tparams(torch, 10, torch.float32)
    opt = getattr(ft, name)(ps, state_dtype="int8", **kw)
    _tstep(torch, opt, ps, torch.Generator().manual_seed(11), 4)
    sd = opt.state_dict()
    tsd = formats.to_torch_state_dict(sd, optimizer=name)
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    theirs = peer(qs, **kw)
    theirs.load_state_dict(tsd)
    spec = fspec.get(name)
    for i, q in enumerate(qs):
        st, tst = sd["state"][i], theirs.state[q]
        assert ("step" in tst) == spec.has_step
        if spec.has_step:
            assert float(tst["step"]) == 4
        for b in spec.state:
            want = (formats.dequantize(st[b.key], st[formats.absmax_key(b.key)], b.signed)
                    if st["state_format"] == "int8" else st[b.key])
            assert tst[b.key].dtype == torch.float32 and torch.equal(tst[b.key], want)
        if name == "NAdam":
            assert float(tst["mu_product"]) == float(st["mu_product"])
    # the reference steps from it as it would from its own state, and converts back
    ref_qs = [torch.nn.Parameter(q.detach().clone()) for q in qs]
    ref_opt = peer(ref_qs, **kw)
    ref_opt.load_state_dict(copy.deepcopy(theirs.state_dict()))
    _tstep(torch, theirs, qs, torch.Generator().manual_seed(12), 1)
    _tstep(torch, ref_opt, ref_qs, torch.Generator().manual_seed(12), 1)
    assert all(torch.equal(a, b) for a, b in zip(qs, ref_qs, strict=True))
    back = formats.from_torch_state_dict(theirs.state_dict(), "int8", optimizer=name)
    rs = [torch.nn.Parameter(q.detach().clone()) for q in qs]
    ours = getattr(ft, name)(rs, state_dtype="int8", **kw)
    ours.load_state_dict(back)
    assert ours.param_groups[0]["state_dtype"] == "int8"
    assert int(ours.state[rs[0]]["step"]) == (5 if spec.has_step else 0)
    assert ours.state[rs[0]][spec.state[0].key].dtype == torch.uint8
    _tstep(torch, ours, rs, torch.Generator().manual_seed(13), 1)
    assert all(torch.isfinite(r).all() for r in rs)


def test_state_dict_helpers_refuse_what_they_cannot_convert():
    torch, _ = _torch()
    with pytest.raises(ValueError, match="Rprop has no reduced-precision"):
        formats.to_torch_state_dict({"state": {}, "param_groups": []}, optimizer="Rprop")
    z = torch.zeros(5000)
    with pytest.raises(ValueError, match="no 'mu_product'"):
        formats.from_torch_state_dict({"state": {0: {"step": torch.tensor(1.0),
                                                     "exp_avg": z, "exp_avg_sq": z}},
                                       "param_groups": [{"params": [0]}]},
                                      "int8", optimizer="NAdam")
    with pytest.raises(ValueError, match="no 'exp_inf'"):
        formats.from_torch_state_dict({"state": {0: {"step": torch.tensor(1.0),
                                                     "exp_avg": z}},
                                       "param_groups": [{"params": [0]}]},
                                      "bf16", optimizer="Adamax")
    with pytest.raises(ValueError, match="centered"):
        formats.from_torch_state_dict({"state": {}, "param_groups": [{"params": [],
                                                                       "centered": True}]},
                                      "bf16", optimizer="RMSprop")


@pytest.mark.parametrize("case", ["int8-into-fp32", "fp32-into-int8", "mu-missing",
                                  "mu-shape", "codes-dtype", "absmax-shape"])
def test_torch_bad_state_dicts_are_refused_and_nothing_changes(case):
    torch, ft = _torch()
    src_fmt = "fp32" if case == "fp32-into-int8" else "int8"
    src_ps = _tparams(torch, 0, torch.float32)
    src = ft.NAdam(src_ps, state_dtype=src_fmt)
    _tstep(torch, src, src_ps, torch.Generator().manual_seed(3), 2)
    sd = src.state_dict()
    sd = {"param_groups": sd["param_groups"], "state": {k: dict(v) for k, v in
                                                        sd["state"].items()}}
    st0 = sd["state"][0]
    if case == "mu-missing":
        del st0["mu_product"]
    elif case == "mu-shape":
        st0["mu_product"] = torch.zeros(2)
    elif case == "codes-dtype":
        st0["exp_avg"] = st0["exp_avg"].to(torch.int16)
    elif case == "absmax-shape":
        st0["exp_avg_absmax"] = st0["exp_avg_absmax"][:-1]
    ps = _tparams(torch, 0, torch.float32)
    opt = ft.NAdam(ps, state_dtype="fp32" if case == "int8-into-fp32" else "int8")
    _tstep(torch, opt, ps, torch.Generator().manual_seed(4), 1)
    before = ([p.detach().clone() for p in ps],
              {id(p): {k: (v.clone() if torch.is_tensor(v) else v)
                       for k, v in opt.state[p].items()} for p in ps})
    with pytest.raises((ValueError, TypeError)):
        opt.load_state_dict(sd)
    assert all(torch.equal(a, p) for a, p in zip(before[0], ps, strict=True))
    for p in ps:
        have, want = opt.state[p], before[1][id(p)]
        assert have.keys() == want.keys()
        for k, v in want.items():
            assert (torch.equal(v, have[k]) and v.dtype == have[k].dtype) \
                if torch.is_tensor(v) else v == have[k], (case, k)
    _tstep(torch, opt, ps, torch.Generator().manual_seed(5), 1)  # still steps


@pytest.mark.parametrize("name", list(FRONT))
def test_torch_bf16_model_with_bf16_state(name):
    """The one-line swap on a bf16 model: bf16 parameters (stochastic rounding) and bf16
    state, the loss goes down."""
    torch, ft = _torch()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 3)).to(torch.bfloat16)
    kw = dict(FRONT[name])
    kw["lr"] = kw["lr"] * (10 if name in ("Adamax", "NAdam", "RAdam", "AdEMAMix") else 1)
    opt = getattr(ft, name)(model.parameters(), state_dtype="bf16", **kw)
    X = torch.randn(128, 16).to(torch.bfloat16)
    y = torch.randint(0, 3, (128,))
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X).float(), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], (name, losses[0], losses[-1])
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(opt.state[p]["state_format"] == "bf16" for p in model.parameters())


def test_core_stub_matches_the_format_step_bindings():
    """_core.pyi's signatures of the format steps: the bindings' argument names, order,
    keyword-only marker and defaults."""
    import ast
    import pathlib
    import re

    stub = pathlib.Path(fastoptim.__file__).with_name("_core.pyi").read_text()
    defs = {f.name: f for f in ast.parse(stub).body if isinstance(f, ast.FunctionDef)}
    for name in ["sgd", "rmsprop", "adagrad", *CASES]:
        fn = f"{name}_format_step"
        line = getattr(_core, fn).__doc__.splitlines()[0]
        head, _, rest = line[len(fn) + 1:].partition("*, ")
        want = []
        for part, kw in ((head, False), (rest, True)):
            for m in re.finditer(r"(\w+): [^=,]+?(?: = ([^,)]+))?(?=, |\)|$)", part):
                want.append((m.group(1), kw, m.group(2)))
        f = defs[fn]
        pos = f.args.args
        pdef = [None] * (len(pos) - len(f.args.defaults)) + list(f.args.defaults)
        got = [(a.arg, False, d) for a, d in zip(pos, pdef, strict=True)]
        got += [(a.arg, True, d) for a, d in zip(f.args.kwonlyargs, f.args.kw_defaults,
                                                 strict=True)]
        assert [(n, k) for n, k, _ in got] == [(n, k) for n, k, _ in want], fn
        for (n, _, d), (_, _, w) in zip(got, want, strict=True):
            if w is None:
                assert d is None, (fn, n)
            else:
                assert d is not None and ast.literal_eval(d) == ast.literal_eval(w), (fn, n)


# the kernel arguments FRONT's constructor arguments give
KERNEL_KW = {"Adamax": dict(lr=2e-3), "NAdam": dict(lr=2e-3, weight_decay=0.01),
             "RAdam": dict(lr=1e-3, beta1=0.9, beta2=0.9), "Adadelta": dict(lr=1.0),
             "Lion": dict(lr=1e-3, weight_decay=0.1), "AdEMAMix": dict(lr=1e-3)}
TORCH_COMBOS = [("bf16", "fp32"), ("bf16", "int8"), ("fp16", "bf16"), ("fp16", "int8")]


@pytest.mark.parametrize("name", list(FRONT))
@pytest.mark.parametrize("pdt,fmt", TORCH_COMBOS,
                         ids=[f"{p}-params-{f}-state" for p, f in TORCH_COMBOS])
def test_torch_reduced_params_lockstep_with_the_format_kernel(name, pdt, fmt):
    """bf16 parameters (rounded stochastically) and fp16 ones (through a float32 master):
    every step of fastoptim.torch equals the format kernel called on the same buffers."""
    torch, ft = _torch()
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[pdt]
    ps = _tparams(torch, 0, dt)
    opt = getattr(ft, name)(ps, state_dtype=fmt, **FRONT[name])
    mine = [p.detach().clone() for p in ps]
    masters = [m.float() for m in mine] if pdt == "fp16" else None
    bufs = [(b.key, b.signed, 0.0) for b in fspec.get(name).state]
    states = [formats.new_buffers(p, fmt, bufs) for p in mine]
    mu = torch.tensor(1.0)
    gen = torch.Generator().manual_seed(1)
    for t in range(1, 5):
        gs = [(torch.randn(p.shape, generator=gen) * 0.1).to(dt) for p in ps]
        for p, g in zip(ps, gs, strict=True):
            p.grad = g.clone()
        opt.step()
        kw = dict(KERNEL_KW[name])
        if name == "NAdam":  # in the scalar's float32, as the front ends compute it
            mu = mu * (0.9 * (1.0 - 0.5 * 0.96 ** (t * 4e-3)))
            kw["mu_product"] = float(mu)
        vals = [[st[k] for st in states] for k, _, _ in bufs]
        absmax = [[st.get(formats.absmax_key(k)) for st in states] for k, _, _ in bufs]
        getattr(_core, f"{name.lower()}_format_step")(
            masters if masters is not None else mine, gs, *vals, *absmax,
            mine if masters is not None else None, step=t, **kw)
        for i, (p, q) in enumerate(zip(ps, mine, strict=True)):
            assert p.dtype == dt and torch.equal(p.detach(), q), (t, i)
            st = opt.state[p]
            assert st.get("state_format", "fp32") == states[i]["state_format"]  # (fp32: untagged)
            assert int(st["step"]) == t
            for k, v in states[i].items():
                if torch.is_tensor(v):
                    assert torch.equal(st[k], v), (t, i, k)
            if masters is not None:
                assert torch.equal(st["master"], masters[i])
            if name == "NAdam":
                assert float(st["mu_product"]) == float(mu)


@pytest.mark.parametrize("optimizer", ["nadam", "lion"])
def test_cli_resume_with_reduced_state_continues_bitwise(tmp_path, optimizer):
    """fastoptim train --state-dtype int8 with the new optimizers: 3 epochs in one run, or
    1 then --resume to 3, give the same bytes (codes, absmax, NAdam's mu_product)."""
    from fastoptim import cli
    from fastoptim.checkpoint import load_checkpoint

    args = ["--hidden", "128", "--batch-size", "64", "--quiet", "--state-dtype", "int8",
            "--optimizer", optimizer]
    assert cli.main(["train", *args, "--epochs", "3", "--output", str(tmp_path / "a")]) == 0
    assert cli.main(["train", *args, "--epochs", "1", "--output", str(tmp_path / "b")]) == 0
    assert cli.main(["train", "--resume", str(tmp_path / "b"), "--epochs", "3",
                     "--quiet"]) == 0
    a, meta_a = load_checkpoint(tmp_path / "a" / "checkpoint.npz")
    b, meta_b = load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    assert a.keys() == b.keys()
    assert [k for k, v in a.items() if k.startswith("optimizer") and v.dtype == np.uint8]
    if optimizer == "nadam":  # mu_product: a float32 0-d array per parameter
        assert any(v.shape == () and v.dtype == np.float32 for k, v in a.items()
                   if k.startswith("optimizer"))
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    assert meta_a["optimizer"] == meta_b["optimizer"]


def test_a_refused_step_leaves_state_and_scalars_as_they_were(rng):
    """A gradient the native gate refuses: parameters, codes, absmax, mu_product and step
    unchanged, and the next good step is the one it would have been."""
    ps = _np_params(rng)
    opt = optim.NAdam(ps, state_dtype="int8")
    twin_ps = [p.copy() for p in ps]
    twin = optim.NAdam(twin_ps, state_dtype="int8")
    gs = [rng.standard_normal(p.shape).astype(np.float32) for p in ps]
    opt.step(gs)
    twin.step(gs)
    snap = (copy.deepcopy(opt.state), [p.copy() for p in ps])
    bad = [gs[0][:-1], gs[1], gs[2]]
    with pytest.raises(ValueError, match="shape"):
        opt.step(bad)
    assert _np_same(snap[0], opt.state)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(snap[1], ps, strict=True))
    opt.step(gs)
    twin.step(gs)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(ps, twin_ps, strict=True))
    assert _np_same(opt.state, twin.state)
