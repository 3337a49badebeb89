"""Every optimizer declared in fastoptim.spec, checked from its declaration.

For each declared optimizer: the native kernel against its float64 reference on every SIMD
target and thread count (and bitwise identical across thread counts); fastoptim.optim and
fastoptim.torch in lockstep with torch.optim over every flag combination for 20 steps,
parameters and all state compared after every step; state_dict interchange with
torch.optim both ways; bad arrays and hyperparameters rejected with nothing changed.
An optimizer added to the spec gets a FLAGS row, a KERNEL row and an ARRAYS row here.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import fastoptim
import numpy as np
import pytest
import reference as ref
from badinputs import MISSING, EntryPoint, bad_inputs, check_rejected
from conftest import SIZES
from fastoptim import optim
from fastoptim import spec as fspec

torch = pytest.importorskip("torch")
import fastoptim.torch as ft  # noqa: E402

STEPS = 20
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
NAN, INF = float("nan"), float("inf")


def _grid(**axes):
    keys = list(axes)
    return [dict(zip(keys, v, strict=True)) for v in itertools.product(*axes.values())]


# Every flag combination of each optimizer (hyperparameters away from their defaults so a
# swapped or ignored one shows).
FLAGS = {
    "Adamax": [dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, **f)
               for f in _grid(weight_decay=[0.0, 0.1], maximize=[False, True])],
    "NAdam": [dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, **f)
              for f in _grid(weight_decay=[0.0, 0.1], maximize=[False, True],
                             decoupled_weight_decay=[False, True],
                             momentum_decay=[4e-3, 0.02])],
    # rho_t > 5 from step 6 with beta2 = 0.999 (and from step 3 with 0.95): both branches
    "RAdam": [dict(lr=0.01, betas=(0.8, b2), eps=1e-6, **f)
              for b2 in (0.95, 0.999)
              for f in _grid(weight_decay=[0.0, 0.1], maximize=[False, True],
                             decoupled_weight_decay=[False, True])],
    "Adadelta": [dict(lr=0.5, rho=0.8, eps=1e-5, **f)
                 for f in _grid(weight_decay=[0.0, 0.1], maximize=[False, True])],
    "Rprop": [dict(lr=0.01, maximize=m, **f) for m in (False, True) for f in (
        dict(), dict(etas=(0.3, 1.5), step_sizes=(1e-3, 0.05)))],
    "Lion": [dict(lr=1e-3, betas=(0.8, 0.95), **f)
             for f in _grid(weight_decay=[0.0, 0.1], decoupled_weight_decay=[False, True])],
    "AdEMAMix": [dict(lr=1e-2, betas=(0.8, 0.95, 0.99), alpha=2.0, eps=1e-6, **f)
                 for f in [dict(), dict(maximize=True), dict(t_alpha_beta3=15.0),
                           dict(weight_decay=0.1), dict(weight_decay=0.1, weight_decouple=True),
                           dict(weight_decay=0.1, weight_decouple=True, fixed_decay=True,
                                maximize=True, t_alpha_beta3=15.0)]],
    "Lamb": [dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-6, **f) for f in _grid(
        weight_decay=[0.0, 0.1], weight_decouple=[True, False], grad_averaging=[True, False],
        adam=[False, True], maximize=[False, True])] + [
        dict(lr=1e-2, weight_decay=0.1, fixed_decay=True, maximize=True)],
    # the (7, 9) parameter takes the trust ratio, the vectors plain SGD momentum
    "LARS": [dict(lr=0.1, trust_coefficient=0.02, **f) for f in _grid(
        weight_decay=[0.0, 0.1], momentum=[0.0, 0.9], nesterov=[False, True],
        dampening=[0.0, 0.3], maximize=[False, True])],
    # t0=8: averaging starts within the 20 steps (mu < 1 from step 10)
    "ASGD": [dict(lr=0.05, lambd=1e-3, alpha=0.6, t0=t0, **f)
             for t0 in (8.0, 1e6) for f in _grid(weight_decay=[0.0, 0.1],
                                                   maximize=[False, True])],
}

# kernel name, reference function, state buffers' initial values (name -> maker)
_DECAYS = [dict(), dict(weight_decay=0.1), dict(maximize=True),
           dict(weight_decay=0.1, decoupled_weight_decay=True, maximize=True)]
KERNEL = {
    "adamax_step": (ref.adamax, dict(step=5, lr=0.01, beta1=0.8, beta2=0.95, eps=1e-6),
                    [dict(), dict(weight_decay=0.1), dict(maximize=True),
                     dict(weight_decay=0.1, maximize=True)]),
    "nadam_step": (ref.nadam, dict(step=5, mu_product=0.3, lr=0.01, beta1=0.8, beta2=0.95,
                                   eps=1e-6), _DECAYS + [dict(momentum_decay=0.05)]),
    "radam_step": (ref.radam, dict(step=7, lr=0.01, beta1=0.8, beta2=0.95, eps=1e-6),
                   _DECAYS + [dict(step=2), dict(step=2, weight_decay=0.1)]),
    "rprop_step": (ref.rprop, dict(etaminus=0.4, etaplus=1.3, step_size_min=1e-3,
                                   step_size_max=0.9),
                   [dict(), dict(maximize=True), dict(step_size_max=1.5)]),
    "asgd_step": (ref.asgd, dict(eta=0.05, mu=0.25, lambd=1e-2),
                  [dict(), dict(weight_decay=0.1), dict(maximize=True),
                   dict(mu=1.0, weight_decay=0.1)]),
    "ademamix_step": (ref.ademamix, dict(step=5, lr=0.01, beta1=0.8, beta2=0.95, beta3=0.99,
                                         alpha=2.0, eps=1e-6),
                      [dict(), dict(weight_decay=0.1), dict(maximize=True),
                       dict(weight_decay=0.1, weight_decouple=True, fixed_decay=True),
                       dict(t_alpha_beta3=12.0)]),
    "lion_step": (ref.lion, dict(lr=0.01, beta1=0.8, beta2=0.95),
                  [dict(), dict(weight_decay=0.1), dict(maximize=True)]),
    # large parameters: the weight norm's clamp at 10 is reached for the long arrays
    "lamb_step": (ref.lamb, dict(step=5, lr=0.01, beta1=0.8, beta2=0.95, eps=1e-6),
                  [dict(), dict(weight_decay=0.1), dict(weight_decay=0.1, weight_decouple=False),
                   dict(grad_averaging=False, maximize=True), dict(adam=True, weight_decay=0.1),
                   dict(weight_decay=0.1, fixed_decay=True)]),
    "lars_step": (ref.lars, dict(lr=0.1, trust_coefficient=0.02),
                  [dict(), dict(weight_decay=0.1), dict(trust=False, weight_decay=0.1),
                   dict(momentum=0.0, weight_decay=0.1), dict(nesterov=True, dampening=0.3),
                   dict(maximize=True, weight_decay=0.1)]),
    # ckp1 < 0.5 and >= 0.5 take torch.lerp's two branches
    "schedulefree_adamw_step": (
        ref.schedulefree_adamw, dict(lr=0.01, beta1=0.8, beta2=0.95, eps=1e-6, ckp1=0.2,
                                     bias_correction2=0.3),
        [dict(), dict(weight_decay=0.1), dict(ckp1=1.0), dict(ckp1=0.6, weight_decay=0.1)]),
    "schedulefree_sgd_step": (
        ref.schedulefree_sgd, dict(lr=0.05, momentum=0.8, ckp1=0.2),
        [dict(), dict(weight_decay=0.1), dict(ckp1=1.0), dict(ckp1=0.6, weight_decay=0.1)]),
    "adadelta_step": (ref.adadelta, dict(lr=0.5, rho=0.8, eps=1e-5),
                      [dict(), dict(weight_decay=0.1), dict(maximize=True),
                       dict(weight_decay=0.1, maximize=True)]),
}


def reference_class(name):
    """The reference implementation: torch.optim's, else the package the spec names."""
    if name == "Lion":
        return pytest.importorskip("lion_pytorch").Lion
    if name in ("AdEMAMix", "Lamb", "LARS"):
        return getattr(pytest.importorskip("pytorch_optimizer"), name)
    return getattr(torch.optim, name)


# Reference optimizers whose state_dict layout differs from torch.optim's (pytorch-optimizer
# keeps the step count in the parameter group, not per parameter): no interchange.
NO_INTERCHANGE = {"AdEMAMix", "Lamb", "LARS"}
# State entries only the reference keeps (pytorch-optimizer's per-step diagnostics of Lamb)
REFERENCE_ONLY = {"Lamb": {"weight_norm", "adam_norm", "trust_ratio"}}


def _cases():
    return [(name, kw) for name, rows in FLAGS.items() for kw in rows]


def _id(case):
    name, kw = case
    return name + "-" + "-".join(f"{k}={v}" for k, v in kw.items() if k not in ("lr",))


def _state_arrays(kernel, rng, n, dtype):
    """Valid state for one tensor: positive where the update takes a root or divides."""
    out = []
    for arg, _key, _when, _formats in fastoptim._core.kernel_specs[kernel]["states"]:
        a = rng.standard_normal(n)
        if arg in ("exp_infs", "exp_avg_sqs", "square_avgs", "sums", "max_exp_avg_sqs",
                   "acc_deltas", "step_sizes"):
            a = np.abs(a) + 0.5
        out.append(a.astype(dtype))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kernel", list(KERNEL))
def test_kernel_vs_reference(simd_target, num_threads, kernel, dtype, rng):
    fn, base, variants = KERNEL[kernel]
    step = getattr(fastoptim._core, kernel)
    for i, flags in enumerate(variants):
        kw = {**base, **flags}
        for n in (SIZES if i == 0 else [17, 1000]):
            p = rng.standard_normal(n).astype(dtype)
            g = rng.standard_normal(n).astype(dtype)
            st = _state_arrays(kernel, rng, n, dtype)
            want = fn(p, g, *st, **kw)
            g0 = g.copy()
            step(p, g, *st, **kw)
            eps = np.finfo(dtype).eps
            for got, w in zip([p, *st], want, strict=True):
                scale = max(1.0, float(np.max(np.abs(w)))) if n else 1.0
                np.testing.assert_allclose(got, w, rtol=0, atol=64 * eps * scale)
            np.testing.assert_array_equal(g, g0)


@pytest.mark.parametrize("kernel", list(KERNEL))
def test_kernel_bitwise_identical_across_threads(simd_target, kernel, rng):
    _, base, variants = KERNEL[kernel]
    step = getattr(fastoptim._core, kernel)
    n = 2**18 + 5
    p0 = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    st0 = _state_arrays(kernel, rng, n, np.float32)
    outs = []
    before = fastoptim.get_num_threads()
    try:
        for nt in (1, 2, 3):
            fastoptim.set_num_threads(nt)
            p, st = p0.copy(), [s.copy() for s in st0]
            step(p, g, *st, **{**base, **variants[-1]})
            outs.append([p, *st])
    finally:
        fastoptim.set_num_threads(before)
    for o in outs[1:]:
        for a, b in zip(o, outs[0], strict=True):
            np.testing.assert_array_equal(a, b)


def _torch_grads(tparams, grads):
    for t, g in zip(tparams, grads, strict=True):
        t.grad = torch.tensor(g)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", _cases(), ids=_id)
def test_lockstep_with_torch(case, dtype):
    """optim.X (numpy) and fastoptim.torch.X against torch.optim.X, every step."""
    name, kw = case
    rng = np.random.default_rng(7)
    shapes = [(33,), (7, 9), (1000,)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    tref = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    tours = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    groups = lambda ps: [{"params": ps[:2]}, {"params": ps[2:], "lr": kw["lr"] / 2}]  # noqa: E731
    theirs = reference_class(name)(groups(tref), **kw)
    ours_np = getattr(optim, name)(groups(params), **kw)
    ours_t = getattr(ft, name)(groups(tours), **kw)
    for k in range(STEPS):
        if k == 10:  # an lr change takes effect
            for o in (theirs, ours_np, ours_t):
                o.param_groups[0]["lr"] *= 0.5
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        _torch_grads(tref, grads)
        _torch_grads(tours, grads)
        theirs.step()
        ours_np.step(grads)
        ours_t.step()
        for i, (t, u) in enumerate(zip(tref, tours, strict=True)):
            want = t.detach().numpy()
            np.testing.assert_allclose(params[i], want, **TOL[dtype])
            np.testing.assert_allclose(u.detach().numpy(), want, **TOL[dtype])
            st = {k: v for k, v in theirs.state[t].items()
                  if k not in REFERENCE_ONLY.get(name, ())}
            extra = {"step"} if name in NO_INTERCHANGE else set()  # theirs: group['step']
            assert set(ours_np.state[i]) - extra == set(st) == set(ours_t.state[u]) - extra
            for key, v in st.items():
                if key == "step":
                    assert ours_np.state[i]["step"] == int(v) == int(ours_t.state[u]["step"])
                else:
                    np.testing.assert_allclose(ours_np.state[i][key], v.numpy(), **TOL[dtype])
                    np.testing.assert_allclose(ours_t.state[u][key].numpy(), v.numpy(),
                                               **TOL[dtype])


@pytest.mark.parametrize("name", sorted(set(FLAGS) - NO_INTERCHANGE))
def test_state_dict_interchange_with_torch(name):
    """fastoptim.torch.X -> torch.optim.X -> fastoptim.torch.X, continuing in lockstep."""
    kw = FLAGS[name][-1]
    rng = np.random.default_rng(3)
    shapes = [(5, 3), (8,)]
    a = [torch.tensor(rng.standard_normal(s), requires_grad=True) for s in shapes]
    b = [torch.tensor(x.detach().numpy().copy(), requires_grad=True) for x in a]
    ours = getattr(ft, name)(a, **kw)
    theirs = reference_class(name)(b, **kw)

    def step(opts_params):
        grads = [rng.standard_normal(s) for s in shapes]
        for opt, ps in opts_params:
            _torch_grads(ps, grads)
            opt.step()

    for _ in range(3):
        step([(ours, a), (theirs, b)])
    # ours -> a fresh torch optimizer, and torch's -> a fresh fastoptim optimizer
    t2 = reference_class(name)(b, **kw)
    t2.load_state_dict(ours.state_dict())
    o2 = getattr(ft, name)(a, **kw)
    o2.load_state_dict(theirs.state_dict())
    for _ in range(4):
        step([(o2, a), (t2, b)])
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-13)
        for x, y in zip(a, b, strict=True):
            for key, v in t2.state[y].items():
                if key == "step":
                    assert int(o2.state[x]["step"]) == int(v)
                else:
                    torch.testing.assert_close(o2.state[x][key], v, rtol=1e-12, atol=1e-13)
    # numpy front end: a torch state_dict (tensors as arrays) loads and continues
    sd = t2.state_dict()
    sd["state"] = {k: {kk: vv.numpy() if torch.is_tensor(vv) else vv for kk, vv in s.items()}
                   for k, s in sd["state"].items()}
    params = [y.detach().numpy().copy() for y in b]
    n = getattr(optim, name)(params, **kw)
    n.load_state_dict(sd)
    grads = [rng.standard_normal(s) for s in shapes]
    n.step(grads)
    _torch_grads(b, grads)
    t2.step()
    for x, y in zip(params, b, strict=True):
        np.testing.assert_allclose(x, y.detach().numpy(), rtol=1e-12, atol=1e-13)


# ---- bad inputs ---------------------------------------------------------------------

SHAPE = (8, 12)


def _arrays(kernel):
    def make(dtype):
        rng = np.random.default_rng(11)
        out = {"params": rng.standard_normal(SHAPE).astype(dtype),
               "grads": rng.standard_normal(SHAPE).astype(dtype)}
        for arg, _key, _when, _formats in fastoptim._core.kernel_specs[kernel]["states"]:
            out[arg] = (np.abs(rng.standard_normal(SHAPE)) + 0.5).astype(dtype)
        return out
    return make


ENTRY_POINTS = [
    EntryPoint(
        "adamax_step", fastoptim.adamax_step, _arrays("adamax_step"),
        kwargs={"step": 3, "lr": 1e-2, "weight_decay": 0.01},
        inplace=frozenset({"params", "exp_avgs", "exp_infs"}), lists=True,
        bad_kwargs=[
            ({"lr": -1e-3}, ValueError, "lr"), ({"lr": NAN}, ValueError, "lr"),
            ({"lr": INF}, ValueError, "lr"),
            ({"lr": "0.1"}, TypeError, "lr must be a real number"),
            ({"beta1": 1.0}, ValueError, "betas[0]"), ({"beta1": NAN}, ValueError, "betas[0]"),
            ({"beta2": 1.0}, ValueError, "betas[1]"), ({"beta2": -0.1}, ValueError, "betas[1]"),
            ({"eps": -1e-8}, ValueError, "eps"), ({"eps": NAN}, ValueError, "eps"),
            ({"weight_decay": -0.1}, ValueError, "weight_decay"),
            ({"step": 0}, ValueError, "step"),
            ({"step": 1.0}, TypeError, "step must be an integer"),
            ({"step": MISSING}, TypeError, "missing required argument 'step'"),
            ({"maximize": 1}, TypeError, "maximize must be a bool"),
            ({"betas": (0.9, 0.99)}, TypeError, "unexpected keyword argument 'betas'"),
        ]),
    EntryPoint(
        "optim.Adamax.step",
        lambda params, grads, **kw: optim.Adamax([params], **kw).step([grads]),
        lambda dtype: {k: v for k, v in _arrays("adamax_step")(dtype).items()
                       if k in ("params", "grads")},
        kwargs={"lr": 1e-2, "weight_decay": 0.01}, inplace=frozenset({"params"}),
        gate_messages=False,
        bad_kwargs=[({"lr": -1.0}, ValueError, "lr"),
                    ({"betas": (1.0, 0.999)}, ValueError, "betas"),
                    ({"betas": (0.9,)}, ValueError, "betas"),
                    ({"eps": -1.0}, ValueError, "eps"),
                    ({"weight_decay": NAN}, ValueError, "weight_decay")]),
]


def _generic_entry(kernel):
    """The standard bad inputs of every further kernel: its arrays, and the invalid values
    of the hyperparameters it has (each must be rejected naming it, nothing touched)."""
    base, hypers = KERNEL[kernel][1], {h[0] for h in fastoptim._core.kernel_specs[kernel]["hypers"]}
    bad = [({"nonexistent": 1.0}, TypeError, "unexpected keyword argument 'nonexistent'")]
    if "maximize" in hypers:
        bad += [({"maximize": 1}, TypeError, "maximize must be a bool")]
    if "lr" in hypers:
        bad += [({"lr": -1e-3}, ValueError, "lr"), ({"lr": NAN}, ValueError, "lr"),
                ({"lr": "0.1"}, TypeError, "lr must be a real number")]
    if "eps" in hypers:
        bad += [({"eps": -1.0}, ValueError, "eps"), ({"eps": INF}, ValueError, "eps")]
    if "weight_decay" in hypers:
        bad += [({"weight_decay": -0.1}, ValueError, "weight_decay")]
    if "step" in hypers:
        bad += [({"step": 0}, ValueError, "step"), ({"step": 1.5}, TypeError, "step"),
                ({"step": MISSING}, TypeError, "missing required argument 'step'")]
    for name, frag in (("beta1", "betas[0]"), ("beta2", "betas[1]")):
        if name in hypers:
            bad += [({name: 1.5}, ValueError, frag), ({name: NAN}, ValueError, frag)]
    if "rho" in hypers:
        bad += [({"rho": 1.5}, ValueError, "rho")]
    if "momentum_decay" in hypers:
        bad += [({"momentum_decay": -1.0}, ValueError, "momentum_decay")]
    if "etaminus" in hypers:
        bad += [({"etaminus": 1.0}, ValueError, "etas"), ({"etaplus": 0.9}, ValueError, "etas"),
                ({"step_size_min": -1.0}, ValueError, "step_sizes"),
                ({"step_size_max": NAN}, ValueError, "step_sizes")]
    if "beta3" in hypers:
        bad += [({"beta3": 1.0}, ValueError, "betas[2]"), ({"alpha": -1.0}, ValueError, "alpha"),
                ({"t_alpha_beta3": NAN}, ValueError, "t_alpha_beta3")]
    if "eta" in hypers:
        bad += [({"eta": -1.0}, ValueError, "eta"), ({"mu": 0.0}, ValueError, "mu"),
                ({"mu": 1.5}, ValueError, "mu"), ({"eta": MISSING}, TypeError, "'eta'"),
                ({"lambd": NAN}, ValueError, "lambd")]
    if "ckp1" in hypers:  # schedule-free
        bad += [({"ckp1": 1.5}, ValueError, "ckp1"), ({"ckp1": NAN}, ValueError, "ckp1"),
                ({"ckp1": MISSING}, TypeError, "'ckp1'")]
    if "bias_correction2" in hypers:
        bad += [({"bias_correction2": 0.0}, ValueError, "bias_correction2"),
                ({"bias_correction2": MISSING}, TypeError, "'bias_correction2'"),
                ({"beta1": 0.0}, ValueError, "betas[0]")]
    if "momentum" in hypers and "ckp1" in hypers:
        bad += [({"momentum": 0.0}, ValueError, "momentum"),
                ({"momentum": 1.0}, ValueError, "momentum")]
    if "trust_coefficient" in hypers:  # LARS
        bad += [({"trust_coefficient": -1.0}, ValueError, "trust_coefficient"),
                ({"momentum": 1.5}, ValueError, "momentum"),
                ({"dampening": -0.1}, ValueError, "dampening"),
                ({"trust": 1}, TypeError, "trust must be a bool")]
    if "mu_product" in hypers:
        bad += [({"mu_product": 1.0}, ValueError, "mu_product"),
                ({"mu_product": MISSING}, TypeError, "'mu_product'")]
    states = {a for a, *_ in fastoptim._core.kernel_specs[kernel]["states"]}
    return EntryPoint(kernel, getattr(fastoptim._core, kernel), _arrays(kernel),
                      kwargs=dict(base), inplace=frozenset({"params"} | states), lists=True,
                      bad_kwargs=bad)


ENTRY_POINTS += [_generic_entry(k) for k in KERNEL if k != "adamax_step"]
BAD = [case for entry in ENTRY_POINTS for case in bad_inputs(entry)]


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_bad_input_rejected(case):
    check_rejected(case)


@pytest.mark.parametrize("name", list(FLAGS))
def test_torch_adapter_rejects_bad_hyperparameters_unchanged(name):
    p = torch.zeros(4, requires_grad=True)
    for bad, match in [({"lr": -1.0}, "lr"), ({"betas": (1.5, 0.9)}, "betas"),
                       ({"eps": -1.0}, "eps"), ({"weight_decay": -1.0}, "weight_decay")]:
        if bad.keys() - set(fspec.get(name).defaults):
            continue
        with pytest.raises(ValueError, match=match.replace("[", r"\[")):
            getattr(ft, name)([p], **bad)
    opt = getattr(ft, name)([p], **FLAGS[name][0])
    cls = getattr(ft, name)
    for flag in ("differentiable", "capturable", "fused"):
        if flag not in fspec.get(name).torch_signature:
            continue
        # fused is what every step is; differentiable runs the torch.optim original
        if flag == "fused" or (flag == "differentiable" and cls._torch_class is not None):
            assert cls([p], **{flag: True}).defaults[flag] is True
        else:
            with pytest.raises(ValueError, match=flag):
                cls([p], **{flag: True})
    # a non-contiguous gradient is read through a copy in the parameter's layout, as torch
    # reads it: the same update as its contiguous twin
    twin = torch.zeros(4, requires_grad=True)
    twin_opt = getattr(ft, name)([twin], **FLAGS[name][0])
    p.grad = torch.arange(8.0)[::2]
    twin.grad = p.grad.contiguous()
    opt.step()
    twin_opt.step()
    assert torch.equal(p.detach(), twin.detach())
    assert not torch.equal(p.detach(), torch.zeros(4)) or name == "Rprop"


def test_every_declared_optimizer_is_tested_here():
    declared = {n for n in fspec.names() if fspec.get(n).elementwise} - {
        "SGD", "Adam", "AdamW", "RMSprop", "Adagrad"}  # the others: test_special_optimizers
    # optimizers with train()/eval() have their lockstep tests in test_schedulefree.py
    modal = {n for n in declared if fspec.get(n).modes is not None}
    lockstep = (Path(__file__).parent / "test_schedulefree.py").read_text()
    assert all(f'"{n}": [' in lockstep for n in modal), "add a FLAGS row in test_schedulefree"
    declared -= modal
    assert declared <= set(FLAGS), "add a FLAGS row for each new optimizer"
    kernels = {fspec.get(n).kernel for n in declared}
    assert kernels <= set(KERNEL), "add a KERNEL row for each new kernel"


def test_bad_cases_cover_the_state_buffers():
    args = {c.arg for c in BAD if c.entry.name == "adamax_step"}
    assert {"params", "grads", "exp_avgs", "exp_infs"} <= args


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize("name,kw", [(n, kw) for n in ("Lamb", "LARS") for kw in FLAGS[n][::7]],
                         ids=lambda x: str(x) if isinstance(x, str) else str(sorted(x.items())))
def test_trust_ratio_optimizers_match_both_reference_modes(name, kw, foreach):
    """pytorch-optimizer computes Lamb's and LARS's updates in two ways (per tensor, and
    batched); fastoptim.torch follows both for 20 steps."""
    ref_cls = reference_class(name)
    rng = np.random.default_rng(9)
    shapes = [(40, 30), (30,), (5,)]
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    a = [torch.tensor(x.copy(), requires_grad=True) for x in init]
    b = [torch.tensor(x.copy(), requires_grad=True) for x in init]
    theirs, ours = ref_cls(a, **kw, foreach=foreach), getattr(ft, name)(b, **kw)
    for _ in range(STEPS):
        for t, u in zip(a, b, strict=True):
            g = torch.from_numpy(rng.standard_normal(t.shape).astype(np.float32))
            t.grad, u.grad = g.clone(), g.clone()
        theirs.step()
        ours.step()
        for t, u in zip(a, b, strict=True):
            torch.testing.assert_close(u, t, **TOL[np.float32])
            for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
                if key in theirs.state[t]:
                    torch.testing.assert_close(ours.state[u][key], theirs.state[t][key],
                                               **TOL[np.float32])
