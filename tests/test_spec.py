"""The optimizer spec and what is derived from it: signatures, defaults, docs, the stub,
the README table, the CLI and the estimators."""

from __future__ import annotations

import inspect
import json
import math
import re
from pathlib import Path

import fastoptim
import numpy as np
import pytest
from fastoptim import _core, optim, train_command
from fastoptim import spec as fspec

ROOT = Path(__file__).resolve().parent.parent


def _numeric_equal(a, b):
    if isinstance(a, tuple) or isinstance(b, tuple):
        return len(a) == len(b) and all(_numeric_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a)
                      and math.isnan(b))


@pytest.mark.parametrize("name", fspec.names())
def test_torch_front_end_has_torchs_signature(name):
    """Same names, order, positional/keyword-only split and defaults as torch.optim (or
    the reference package)."""
    torch = pytest.importorskip("torch")
    import fastoptim.torch as ft

    ref = (pytest.importorskip("lion_pytorch").Lion if name == "Lion"
           else getattr(pytest.importorskip("pytorch_optimizer"), name)
           if name in ("AdEMAMix", "Lamb", "LARS")
           else getattr(pytest.importorskip("schedulefree"), name) if "ScheduleFree" in name
           else getattr(torch.optim, name))
    theirs = [p for p in inspect.signature(ref).parameters.values()
              if p.kind != p.VAR_KEYWORD]  # pytorch-optimizer's **kwargs
    ours = list(inspect.signature(getattr(ft, name)).parameters.values())
    # fastoptim's own keyword-only options follow torch's signature (the elementwise
    # optimizers': clipping and arenas live in their shared plan machinery; state_dtype
    # where the state has reduced-precision formats)
    own = ours[len(theirs):]
    want = [("max_grad_norm", inspect.Parameter.KEYWORD_ONLY, None),
            ("arena", inspect.Parameter.KEYWORD_ONLY, False)]
    if "max_grad_norm" in fspec.get(name).torch_signature:  # Lamb's own, another meaning
        want = want[1:]
    if len(fspec.get(name).state_dtypes) > 1:
        want.append(("state_dtype", inspect.Parameter.KEYWORD_ONLY, "fp32"))
    assert [(p.name, p.kind, p.default) for p in own] == (
        want if fspec.get(name).elementwise else [])
    ours = ours[:len(theirs)]
    assert [p.name for p in ours] == [p.name for p in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a.kind == b.kind, a.name
        if a.name != "params":
            assert _numeric_equal(a.default, b.default), (a.name, a.default, b.default)


@pytest.mark.parametrize("name", fspec.names())
def test_numpy_front_end_signature_and_defaults(name):
    s = fspec.get(name)
    sig = inspect.signature(getattr(optim, name))
    names = list(sig.parameters)
    assert names == ["params", *s.numpy_signature(), "skip_nonfinite", "state_dtype"]
    opt = getattr(optim, name)([np.zeros((3, 2))])  # 2-D: Muon takes matrices only
    resolved = dict(s.defaults)
    if s.resolve is not None:  # LBFGS fills in max_eval as torch does
        s.resolve(resolved)
    for h in s.hyperparameters:
        assert sig.parameters[h.name].default == h.default
        assert opt.defaults[h.name] == resolved[h.name]


def test_kernel_defaults_come_from_the_config_structs():
    """A default is written once: in C++ (config.hpp); the front ends read it from there."""
    hyp = {k: {n: d for n, _kind, d, _req in v["hypers"]} for k, v in _core.kernel_specs.items()}
    assert hyp["adam_step"]["beta2"] == 0.999 and hyp["adamax_step"]["lr"] == 0.002
    for s in fspec.OPTIMIZERS:
        if not s.elementwise:  # declared with its hyperparameters (declare_special)
            continue
        for h in s.hyperparameters:
            # the two declared overrides: AdamW's decay, and None for "no warm-up" (the
            # kernel's 0) as pytorch-optimizer writes it
            if not h.kernel or (s.name, h.name) in {("AdamW", "weight_decay"),
                                                     ("AdEMAMix", "t_alpha_beta3")}:
                continue
            want = tuple(hyp[s.kernel][k] for k in h.kernel)
            assert (want if h.kind == "pair" else want[0]) == h.default, (s.name, h.name)
    assert fspec.get("AdamW").defaults["weight_decay"] == 1e-2


def test_step_signatures_and_stub_are_generated_from_the_declarations():
    sig = inspect.signature(fastoptim.adamax_step)
    assert list(sig.parameters) == ["params", "grads", "exp_avgs", "exp_infs", "step", "lr",
                                    "beta1", "beta2", "eps", "weight_decay", "maximize",
                                    "grad_scale"]
    assert sig.parameters["lr"].default == 0.002
    assert sig.parameters["step"].default is inspect.Parameter.empty
    stub = (Path(fastoptim.__file__).parent / "_core.pyi").read_text()
    assert fspec.core_stub() in stub, "regenerate the stub's step section: spec.core_stub()"
    assert (Path(fastoptim.__file__).parent / "py.typed").exists()


def test_docstrings_write_out_the_update_rule():
    for s in fspec.OPTIMIZERS:
        for cls in [getattr(optim, s.name)]:
            doc = cls.__doc__
            assert "Update rule::" in doc and s.rule.strip().splitlines()[-1] in doc
            for h in s.hyperparameters:
                assert f"    {h.name}: " in doc


def test_docs_table_is_current():
    table = fspec.markdown_table()
    assert table.count("\n") == len(fspec.OPTIMIZERS) + 2
    path = ROOT / "docs" / "optimizers.md"
    if not path.exists():
        pytest.skip("docs/ is not part of this checkout")
    assert table in path.read_text(), "regenerate: python -m fastoptim.spec > docs/optimizers.md"


def test_state_buffers_declare_formats_and_init():
    ada = fspec.get("Adagrad")
    assert [(b.key, b.init) for b in ada.state] == [("sum", "initial_accumulator_value")]
    for s in fspec.OPTIMIZERS:
        for b in s.state:
            # reduced formats only where a format kernel steps them
            want = ("param",) if s.format_kernel is None else ("param", "bf16", "int8")
            assert b.formats == want, (s.name, b.key)
        if s.format_kernel is not None:
            assert callable(getattr(_core, s.format_kernel))
            assert s.state_dtypes == ("fp32", "bf16", "int8")
        else:
            assert s.state_dtypes == ("fp32",)
    # signed buffers use the signed 8-bit map, non-negative ones the unsigned map
    assert [b.signed for b in fspec.get("Adam").state] == [True, False, False]
    assert [b.when for b in fspec.get("Adam").state] == [None, None, "amsgrad"]


def test_cli_choices_and_options_come_from_the_spec(tmp_path, capsys):
    assert train_command.OPTIMIZERS == tuple(n.lower() for n in fspec.names())
    assert "adamax" in train_command.OPTIMIZERS
    defaults = train_command.option_defaults()
    for o in fspec.cli_options():
        assert defaults[o.dest] == o.default
    # unset: each optimizer's own default, listed in the help
    assert defaults["beta2"] is None and defaults["eps"] is None and defaults["momentum"] is None
    helps = {o.dest: o.help for o in fspec.cli_options()}
    assert "0.999; lion 0.99" in helps["beta2"] and "adagrad 1e-10" in helps["eps"]
    assert "lars 0.9" in helps["momentum"]
    assert train_command.DEFAULT_LR["sgd"] == 0.05 and train_command.DEFAULT_LR["adamax"] == 2e-3
    out = tmp_path / "run"
    from fastoptim import cli
    assert cli.main(["train", "--optimizer", "adamax", "--hidden", "16", "--epochs", "3",
                     "--lr", "0.01", "--beta1", "0.8", "--output", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.5


def test_build_from_options_passes_what_each_optimizer_has():
    p = [np.zeros(3)]
    opts = {**train_command.option_defaults(), "momentum": 0.5, "beta1": 0.7, "eps": 1e-5}
    sgd = fspec.build_from_options("sgd", p, opts, lr=0.1)
    assert sgd.defaults["momentum"] == 0.5 and "eps" not in sgd.defaults
    ax = fspec.build_from_options("adamax", [np.zeros(3)], opts, lr=0.1)
    assert ax.defaults["betas"] == (0.7, 0.999) and ax.defaults["eps"] == 1e-5
    with pytest.raises(ValueError, match="unknown optimizer"):
        fspec.get("adamx")


@pytest.mark.parametrize("name, given, key, want", [
    ("lion", {}, "betas", (0.9, 0.99)),
    ("lion", {"beta1": 0.95}, "betas", (0.95, 0.99)),  # per element of the pair
    ("lion", {"beta2": 0.999}, "betas", (0.9, 0.999)),  # an explicit value is kept
    ("adagrad", {}, "eps", 1e-10),
    ("adadelta", {}, "eps", 1e-6),
    ("lamb", {}, "eps", 1e-6),
    ("lars", {}, "momentum", 0.9),
    ("sgdschedulefree", {}, "momentum", 0.9),
    ("sgdschedulefree", {"momentum": 0.5}, "momentum", 0.5),
    ("adam", {"beta2": None}, "betas", (0.9, 0.999)),
])
def test_unset_cli_options_take_the_optimizers_own_defaults(name, given, key, want):
    # `fastoptim train --optimizer lion` used to run Lion with Adam's beta2 0.999
    opts = {**train_command.option_defaults(), **given}
    opt = fspec.build_from_options(name, [np.zeros(3, np.float32)], opts, lr=0.01)
    assert opt.defaults[key] == want


def test_train_config_leaves_optimizer_options_unset():
    from fastoptim import config

    cfg = config.TrainConfig(optimizer="lion")
    assert cfg.beta2 is None and cfg.eps is None and cfg.momentum is None
    opt = config.make_optimizer(cfg, [np.zeros(3, np.float32)], 1e-4)
    assert opt.defaults["betas"] == (0.9, 0.99)
    with pytest.raises(config.ConfigError, match="nesterov"):
        config.TrainConfig(optimizer="sgd", nesterov=True)  # SGD's own momentum is 0
    assert config.TrainConfig(optimizer="lars", nesterov=True).momentum is None  # LARS's: 0.9


def test_estimator_accepts_every_declared_optimizer():
    pytest.importorskip("sklearn")
    from fastoptim.sklearn import MLPClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    for name in train_command.OPTIMIZERS:
        refusal = fspec.get(name).cli_refusal
        if refusal is not None:  # Muon, SparseAdam: a clear error naming the reason
            with pytest.raises(ValueError, match=re.escape(refusal)):
                MLPClassifier(hidden_layer_sizes=(4,), optimizer=name, epochs=1).fit(X, y)
            continue
        MLPClassifier(hidden_layer_sizes=(4,), optimizer=name, epochs=1, lr=1e-2,
                      random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="optimizer"):
        MLPClassifier(optimizer="lbfgs2", epochs=1).fit(X, y)


def test_every_declared_optimizer_is_exported():
    for s in fspec.OPTIMIZERS:
        if s.kernel or s.elementwise:  # LBFGS: numpy vector ops, no kernel of its own
            assert getattr(fastoptim, s.kernel) is getattr(_core, s.kernel)
            assert s.kernel in fastoptim.__all__
        assert s.name in optim.__all__ and getattr(optim, s.name)._spec is s


def test_every_declared_optimizer_is_in_the_torch_adapter():
    pytest.importorskip("torch")
    import fastoptim.torch as ft

    for s in fspec.OPTIMIZERS:
        assert s.name in ft.__all__ and getattr(ft, s.name)._spec is s


def test_cli_refuses_weight_decay_for_an_optimizer_without_it(tmp_path, capsys):
    from fastoptim import cli

    assert cli.main(["train", "--optimizer", "rprop", "--weight-decay", "0.1", "--epochs", "1",
                     "--output", str(tmp_path), "--quiet"]) == 2
    assert "rprop has no weight decay" in capsys.readouterr().err
