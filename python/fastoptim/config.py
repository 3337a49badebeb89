"""One training configuration shared by `fastoptim train`, `fastoptim search` and the
scikit-learn estimators.

:class:`TrainConfig` holds every training option with its default (written once, here),
checks types and ranges when it is created, and builds the model, optimizer and
learning-rate schedule. The command line derives its options and defaults from it,
``--config`` JSON files and search spaces are parsed by :meth:`TrainConfig.from_dict`,
and the estimators map their parameters onto it::

    from fastoptim.config import TrainConfig
    cfg = TrainConfig(hidden=[128], optimizer="sgd", lr=0.05, momentum=0.9, epochs=10)
    model = cfg.build_model(n_features=64, n_outputs=10)
    opt, lr = cfg.build_optimizer(model)
    schedule = cfg.build_schedule(lr, steps_per_epoch=50)

A bad value raises :class:`ConfigError` (a ``ValueError``) whose ``field`` names the
option and whose ``detail`` says what was expected.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastoptim import spec as _spec

__all__ = ["ACTIVATIONS", "DEFAULT_LR", "DTYPES", "OPTIMIZERS", "SCHEDULES", "ConfigError",
           "TrainConfig", "check_option", "make_optimizer"]

SCHEDULES = ("constant", "cosine", "exponential", "step", "inverse-time", "one-cycle")
ACTIVATIONS = ("relu", "leaky_relu", "gelu", "tanh", "sigmoid")
DTYPES = ("float32", "float64")
STATE_DTYPES = ("fp32", "bf16", "int8")  # fastoptim.formats


class ConfigError(ValueError):
    """A training option with a bad type or value: ``field`` is the option's name,
    ``detail`` what was wrong (``str(e)`` is ``"<field> <detail>"``)."""

    def __init__(self, field: str, detail: str):
        super().__init__(f"{field} {detail}")
        self.field, self.detail = field, detail


# ------------------------------------------------------------------------------------
# The optimizer-specific part comes from the optimizer declarations (fastoptim.spec):
# which optimizers exist, their training learning rates, the shared CLI hyperparameters
# with their defaults, and how a config becomes an optimizer.

OPTIMIZERS = _spec.cli_choices()
DEFAULT_LR = {name: _spec.train_lr(name) for name in OPTIMIZERS}
_HYPER = {o.dest: o.default for o in _spec.cli_options()}  # momentum, nesterov, beta1, ...
# the optimizers' own defaults of the options left unset, as the help lists them
_OWN = {o.dest: o.help.rsplit("own, ", 1)[-1].rstrip(")") for o in _spec.cli_options()
        if o.default is None}


def make_optimizer(cfg: TrainConfig, groups: list[dict], lr: float):
    """The fastoptim.optim optimizer ``cfg.optimizer`` over ``groups`` at learning rate
    ``lr``, with the config's optimizer hyperparameters (those the optimizer has)."""
    options = {k: getattr(cfg, k) for k in _HYPER if getattr(cfg, k) is not None}
    return _spec.build_from_options(cfg.optimizer, groups, options, lr=lr,
                                    state_dtype=cfg.state_dtype)


# ------------------------------------------------------------------------------------


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass
class TrainConfig:
    """Every option of one training run (the `fastoptim train` options, same names with
    ``_`` for ``-``). Types and ranges are checked on creation (ConfigError)."""

    # data
    dataset: str = field(default="digits", metadata=_help(
        "'digits' (embedded), 'fashion-mnist' (Debian's dataset-fashion-mnist) or a folder "
        "holding MNIST-style IDX files", group="data"))
    validation_split: float = field(default=0.1, metadata=_help(
        "share of the training data held out for validation and early stopping "
        "(0 disables)", group="data", metavar="F"))
    # model
    hidden: list[int] = field(default_factory=lambda: [256], metadata=_help(
        "hidden layer sizes (none gives a linear model)", group="model", metavar="N"))
    activation: str = field(default="relu", metadata=_help(
        "hidden activation", group="model", choices=ACTIVATIONS))
    dropout: float = field(default=0.0, metadata=_help(
        "dropout probability after each hidden layer", group="model", metavar="P"))
    dtype: str = field(default="float32", metadata=_help(
        "parameter and data dtype", group="model", choices=DTYPES))
    # optimization
    optimizer: str = field(default="adam", metadata=_help(
        "optimizer", group="optimization", choices=OPTIMIZERS))
    lr: float | None = field(default=None, metadata=_help(
        "learning rate (default: " + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
        + ")", group="optimization"))
    momentum: float | None = field(default=None, metadata=_help(
        "momentum (default: the optimizer's own: " + _OWN["momentum"] + ")",
        group="optimization"))
    nesterov: bool = field(default=_HYPER["nesterov"], metadata=_help(
        "Nesterov momentum (SGD)", group="optimization"))
    beta1: float | None = field(default=None, metadata=_help(
        "beta1 of Adam and its kin (default: the optimizer's own: " + _OWN["beta1"] + ")",
        group="optimization"))
    beta2: float | None = field(default=None, metadata=_help(
        "beta2 of Adam and its kin (default: the optimizer's own: " + _OWN["beta2"] + ")",
        group="optimization"))
    eps: float | None = field(default=None, metadata=_help(
        "eps (default: the optimizer's own: " + _OWN["eps"] + ")", group="optimization"))
    state_dtype: str = field(default="fp32", metadata=_help(
        "storage of the optimizer state: fp32, bf16, or int8 (8-bit blockwise; tensors under "
        "4096 elements stay fp32); " + "/".join(
            n for n in OPTIMIZERS if len(_spec.get(n).state_dtypes) > 1)
        + " (float32 parameters)",
        group="optimization", choices=STATE_DTYPES))
    weight_decay: float = field(default=0.0, metadata=_help(
        "L2 weight decay on weights, not biases (decoupled for adamw)", group="optimization",
        metavar="WD"))
    l1: float = field(default=0.0, metadata=_help(
        "L1 penalty on hidden weights", group="optimization"))
    schedule: str = field(default="constant", metadata=_help(
        "learning-rate schedule over the whole run, stepped per batch", group="optimization",
        choices=SCHEDULES))
    warmup_epochs: float = field(default=0.0, metadata=_help(
        "linear warm-up before the schedule", group="optimization", metavar="E"))
    epochs: int = field(default=30, metadata=_help(
        "epochs (passes over the training data)", group="optimization"))
    batch_size: int | None = field(default=32, metadata=_help(
        "mini-batch size, or 'full' for full-batch gradient descent", group="optimization",
        metavar="N|full"))
    early_stopping: int = field(default=0, metadata=_help(
        "stop after PATIENCE epochs without val_loss improvement and keep the best weights "
        "(0: off)", group="optimization", metavar="PATIENCE"))
    # run
    threads: int | None = field(default=None, metadata=_help(
        "threads for fastoptim's kernels and numpy's matrix products (BLAS, through "
        "threadpoolctl when installed; default: leave them)", group="run"))
    seed: int = field(default=0, metadata=_help(
        "seeds initialisation, the validation split and shuffling", group="run"))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name)))
        _check_ranges(self)

    # -------------------------------------------------------------- construction
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
        """A config from ``values`` (JSON-like: names with ``-`` or ``_``; ``batch_size``
        may be ``"full"``) on top of ``base`` (default: the defaults). Unknown names and bad
        values raise ConfigError."""
        if not isinstance(values, dict):
            raise ConfigError("config", f"must be an object of options, got "
                                        f"{type(values).__name__}")
        names = cls.field_names()
        merged = (base or cls()).to_dict()
        for key, value in values.items():
            name = str(key).replace("-", "_")
            if name not in names:
                raise ConfigError(str(key), "is not a training option")
            merged[name] = value
        return cls(**merged)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (and validated)."""
        return self.from_dict(changes, base=self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, by option name."""
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    # -------------------------------------------------------------- building
    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def learning_rate(self) -> float:
        """``lr``, or the optimizer's default when lr is None."""
        return float(self.lr) if self.lr is not None else DEFAULT_LR[self.optimizer]

    def build_model(self, n_features: int, n_outputs: int):
        """The network: Dense layers of ``hidden`` sizes (with ``activation``, ``l1``, and
        Dropout after each when ``dropout`` > 0), then a linear output layer."""
        from fastoptim import nn

        layers: list = []
        width = int(n_features)
        for h in self.hidden:
            layers.append(nn.Dense(width, h, self.activation, l1=self.l1))
            if self.dropout > 0:
                layers.append(nn.Dropout(self.dropout))
            width = h
        layers.append(nn.Dense(width, int(n_outputs)))
        return nn.Sequential(*layers, dtype=self.np_dtype, seed=self.seed)

    def param_groups(self, model) -> list[dict]:
        """Two groups: weights (with ``weight_decay``) and biases (no decay)."""
        named = list(model.named_parameters())
        weights = [p for name, p in named if name.endswith("weight")]
        biases = [p for name, p in named if not name.endswith("weight")]
        return [{"params": weights, "weight_decay": self.weight_decay},
                {"params": biases, "weight_decay": 0.0}]

    def build_optimizer(self, model):
        """(optimizer, lr) for ``model``'s parameters."""
        lr = self.learning_rate
        return make_optimizer(self, self.param_groups(model), lr), lr

    def build(self, n_features: int, n_outputs: int):
        """(model, optimizer, lr)."""
        model = self.build_model(n_features, n_outputs)
        opt, lr = self.build_optimizer(model)
        return model, opt, lr

    def steps_per_epoch(self, n_samples: int) -> int:
        return 1 if self.batch_size is None else -(-int(n_samples) // self.batch_size)

    def build_schedule(self, lr: float, steps_per_epoch: int, epochs: int | None = None):
        """The learning-rate schedule (a callable step -> lr, or None for a constant lr)
        over ``epochs`` (default: the config's) of ``steps_per_epoch`` steps."""
        from fastoptim import schedules

        total = max(1, (self.epochs if epochs is None else epochs) * steps_per_epoch)
        warm = int(round(self.warmup_epochs * steps_per_epoch))
        main = {
            "constant": lambda: None if not warm else schedules.constant(lr),
            "cosine": lambda: schedules.cosine(lr, total_steps=max(1, total - warm)),
            "exponential": lambda: schedules.exponential(lr, gamma=0.01 ** (1.0 / total)),
            "step": lambda: schedules.step_decay(lr, step_size=max(1, total // 3), gamma=0.1),
            "inverse-time": lambda: schedules.inverse_time(lr, power_t=0.5),
            "one-cycle": lambda: schedules.one_cycle(lr, total_steps=total),
        }[self.schedule]()
        if warm and main is not None:
            return schedules.warmup(main, warmup_steps=warm)
        return main


# ------------------------------------------------------------------------------------
# Validation


_INT_FIELDS = {"epochs", "early_stopping", "seed"}
_OPTIONAL_INT = {"batch_size", "threads"}
_OPTIONAL_FLOAT = {"lr", "momentum", "beta1", "beta2", "eps"}
_FLOAT_FIELDS = {"validation_split", "dropout", "momentum", "beta1", "beta2", "eps",
                 "weight_decay", "l1", "warmup_epochs"}
_CHOICES = {"activation": ACTIVATIONS, "dtype": DTYPES, "optimizer": OPTIMIZERS,
            "schedule": SCHEDULES, "state_dtype": STATE_DTYPES}


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _coerce(name: str, v):
    """The value in its canonical type, or ConfigError naming what was expected."""
    if name in _INT_FIELDS or name in _OPTIONAL_INT:
        if v is None and name in _OPTIONAL_INT:
            return None
        if name == "batch_size" and v == "full":
            return None
        if not _is_int(v):
            want = {"batch_size": "a positive integer or 'full' (None: full batch)",
                    "threads": "a positive integer or null"}.get(name, "an integer")
            raise ConfigError(name, f"must be {want}, got {v!r}")
        return int(v)
    if name in _FLOAT_FIELDS or name in _OPTIONAL_FLOAT:
        if v is None and name in _OPTIONAL_FLOAT:
            return None  # the optimizer's own default
        if not _is_number(v):
            raise ConfigError(name, f"must be a number, got {v!r}")
        return float(v)
    if name in _CHOICES:
        if not isinstance(v, str) or v not in _CHOICES[name]:
            raise ConfigError(name, f"must be one of {', '.join(_CHOICES[name])}, got {v!r}")
        return v
    if name == "nesterov":
        if not isinstance(v, (bool, np.bool_)):
            raise ConfigError(name, f"must be true or false, got {v!r}")
        return bool(v)
    if name == "hidden":
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
            raise ConfigError(name, f"must be a list of layer sizes, got {v!r}")
        sizes = list(v)
        if not all(_is_int(h) for h in sizes):
            raise ConfigError(name, f"must be a list of integer layer sizes, got {v!r}")
        return [int(h) for h in sizes]
    if name == "dataset":
        if not isinstance(v, str) or not v:
            raise ConfigError(name, f"must be a data set name or folder, got {v!r}")
        return v
    raise AssertionError(name)  # pragma: no cover - every field is handled above


def _in_unit(v) -> bool:
    return 0.0 <= v < 1.0


def _finite_nonneg(v) -> bool:
    return v >= 0 and math.isfinite(v)


def _unset_or(test):
    return lambda v: v is None or test(v)


# Each option's own range (NaN fails every test): (test, what is expected).
_RANGES: dict[str, tuple[Any, str]] = {
    "epochs": (lambda v: v >= 1, "must be >= 1"),
    "dropout": (_in_unit, "must be in [0, 1)"),
    "validation_split": (_in_unit, "must be in [0, 1)"),
    "lr": (lambda v: v is None or (v > 0 and math.isfinite(v)), "must be a finite number > 0"),
    "momentum": (_unset_or(_finite_nonneg), "must be a finite number >= 0"),
    "beta1": (_unset_or(_in_unit), "must be in [0, 1)"),
    "beta2": (_unset_or(_in_unit), "must be in [0, 1)"),
    "eps": (_unset_or(_finite_nonneg), "must be a finite number >= 0"),
    "weight_decay": (_finite_nonneg, "must be a finite number >= 0"),
    "l1": (_finite_nonneg, "must be a finite number >= 0"),
    "hidden": (lambda v: all(h >= 1 for h in v), "sizes must be >= 1"),
    "batch_size": (lambda v: v is None or v >= 1,
                   "must be a positive integer or 'full' (None: full batch)"),
    "threads": (lambda v: v is None or v >= 1, "must be >= 1"),
    "early_stopping": (lambda v: v >= 0, "must be >= 0"),
    "warmup_epochs": (_finite_nonneg, "must be a finite number >= 0"),
    "seed": (lambda v: v >= 0, "must be >= 0"),
}


def check_option(name: str, value: Any) -> Any:
    """One option's value in its canonical type, checked on its own (not against the
    other options); ConfigError otherwise."""
    if name not in TrainConfig.field_names():
        raise ConfigError(name, "is not a training option")
    value = _coerce(name, value)
    test, detail = _RANGES.get(name, (lambda v: True, ""))
    if not test(value):
        raise ConfigError(name, f"{detail}, got {value!r}")
    return value


def _check_ranges(c: TrainConfig) -> None:
    for name, (test, detail) in _RANGES.items():
        if not test(getattr(c, name)):
            raise ConfigError(name, f"{detail}, got {getattr(c, name)!r}")
    if c.early_stopping and c.validation_split == 0:
        raise ConfigError("early_stopping", "needs a validation split (validation_split > 0)")
    momentum = (c.momentum if c.momentum is not None
                else _spec.get(c.optimizer).defaults.get("momentum", 0.0))
    if c.nesterov and not momentum > 0:
        raise ConfigError("nesterov", "needs momentum > 0")
    refusal = _spec.get(c.optimizer).cli_refusal
    if refusal is not None:  # Muon, SparseAdam: see their declarations in fastoptim.spec
        raise ConfigError("optimizer", f"{c.optimizer} cannot run here: it {refusal}")
    if c.state_dtype != "fp32":
        allowed = _spec.get(c.optimizer).state_dtypes
        if c.state_dtype not in allowed:
            raise ConfigError("state_dtype", f"must be fp32 for {c.optimizer} (its state has "
                              f"no reduced-precision formats), got {c.state_dtype!r}")
        if c.dtype != "float32":
            raise ConfigError("state_dtype", f"{c.state_dtype!r} needs dtype float32, got "
                              f"dtype {c.dtype!r}")
    if c.weight_decay and "weight_decay" not in _spec.get(c.optimizer).defaults:
        raise ConfigError("weight_decay", f"must be 0: {c.optimizer} has no weight decay, "
                          f"got {c.weight_decay!r}")
