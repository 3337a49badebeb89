"""The optimizer spec: one declaration per optimizer, and everything derived from it.

Each optimizer is declared once, in ``OPTIMIZERS`` below: its torch-style signature, the
native kernel it runs, its state buffers (with their initial value), and the text of its
update rule. From that declaration come

- ``fastoptim.optim.<Name>`` (numpy) and ``fastoptim.torch.<Name>`` (tensors): their
  signatures, defaults, docstrings, validation, state creation and the kernel call;
- the ``fastoptim train --optimizer`` choices and options (``cli_choices``, ``cli_options``,
  ``build_from_options``) and the scikit-learn estimators' optimizer parameters;
- the README's optimizer table (``markdown_table``; ``python -m fastoptim.spec``).

Where a default lives: a kernel hyperparameter's default is the member initializer of its
C++ config struct (``cpp/include/fastoptim/config.hpp``), which the generic binding
registrar publishes in ``fastoptim._core.kernel_specs``; this module reads it from there.
So C++ callers of the header API, the ``_core.*_step`` functions and both front ends share
one number. A declaration here only writes a default that is not the kernel's: an
optimizer-level override (AdamW's ``weight_decay=1e-2`` on the Adam kernel) or a
hyperparameter the kernel never sees (Adagrad's ``initial_accumulator_value``, which only
initializes state). Validation is the kernel's ``validate()`` (the front ends call the
kernel on empty lists), plus a check declared here for front-end-only hyperparameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastoptim import _core

__all__ = [
    "Hyperparameter", "StateBuffer", "OptimizerSpec", "OPTIMIZERS", "get", "names",
    "cli_choices", "cli_options", "build_from_options", "markdown_table",
]

# torch.optim's (and lion-pytorch's use_triton) implementation switches: accepted for
# signature compatibility by the torch front end. foreach is ignored (one multi-tensor
# call is what fastoptim always does); the others must stay at their default.
TORCH_FLAGS: dict[str, Any] = {"foreach": None, "capturable": False, "differentiable": False,
                               "fused": None, "use_triton": False}

# One line of documentation per hyperparameter name, shared by every optimizer that has it.
_DOCS = {
    "lr": "learning rate",
    "betas": "coefficients of the running averages (beta1, beta2)",
    "eps": "term added to the denominator for numerical stability",
    "weight_decay": "L2 penalty added to the gradient",
    "amsgrad": "use the running maximum of exp_avg_sq (AMSGrad)",
    "maximize": "maximize the objective instead of minimizing it",
    "momentum": "momentum factor",
    "dampening": "dampening of the momentum",
    "nesterov": "Nesterov momentum",
    "alpha": "smoothing constant of the squared-gradient average",
    "centered": "normalize by the estimated variance of the gradient",
    "lr_decay": "learning-rate decay: lr / (1 + (step - 1) * lr_decay)",
    "initial_accumulator_value": "initial value of the sum of squared gradients",
    "decoupled_weight_decay": "decoupled weight decay (p *= 1 - lr * weight_decay, AdamW)",
    "momentum_decay": "decay of the momentum schedule mu_t = beta1 (1 - 0.96^(t psi) / 2)",
    "rho": "coefficient of the running averages of g^2 and of the squared updates",
    "etas": "multiplicative decrease and increase of the step sizes (etaminus, etaplus)",
    "step_sizes": "minimal and maximal step size",
    "lambd": "decay term",
    "t0": "step at which averaging starts",
    "weight_decouple": "decoupled weight decay (p *= 1 - lr * weight_decay)",
    "fixed_decay": "decoupled decay not scaled by lr (p *= 1 - weight_decay)",
    "t_alpha_beta3": "warm-up steps of alpha and beta3 (None: none)",
    "warmup_steps": "linear warm-up of the learning rate over this many steps",
    "r": "polynomial weighting of the average: step k weighs k^r",
    "weight_lr_power": "the average weighs each step by lr_max^weight_lr_power",
    "grad_averaging": "m += (1 - beta1) * g (else m += g)",
    "adam": "trust ratio 1 (plain Adam without bias correction of v)",
    "rectify": "RAdam-style rectification (not supported: must stay False)",
    "pre_norm": "scale gradients by their global norm first (not supported: must stay False)",
    "degenerated_to_sgd": "with rectify only (accepted, unused)",
    "n_sma_threshold": "with rectify only (accepted, unused)",
    "max_grad_norm": "with pre_norm only (accepted, unused)",
    "trust_coefficient": "the trust ratio is trust_coefficient * |p| / (|g| + weight_decay |p|)",
}


def _none_is_zero(kw: dict[str, Any], group: dict[str, Any], defaults: dict[str, Any]) -> None:
    # pytorch-optimizer's t_alpha_beta3=None (no warm-up) is the kernel's 0
    if kw["t_alpha_beta3"] is None:
        kw["t_alpha_beta3"] = 0.0


def _lion_decay(kw: dict[str, Any], group: dict[str, Any], defaults: dict[str, Any]) -> None:
    # lion-pytorch: with decoupled_weight_decay (a constructor setting, not a group one),
    # wd is divided by the constructor's lr
    if defaults.get("decoupled_weight_decay"):
        kw["weight_decay"] = group["weight_decay"] / defaults["lr"]


def _schedulefree_schedule(group: dict[str, Any]) -> tuple[float, float, float, float]:
    """This step's (scheduled lr, lr_max, weight_sum, ckp1) from the group's state before
    the step, with schedulefree 1.4.1's Python-float arithmetic."""
    k = group["k"]
    warmup = group["warmup_steps"]
    sched = (k + 1) / warmup if k < warmup else 1.0
    lr = float(group["lr"]) * sched
    lr_max = max(lr, group["lr_max"])
    weight = ((k + 1) ** group["r"]) * (lr_max ** group["weight_lr_power"])
    weight_sum = group["weight_sum"] + weight
    try:
        ckp1 = weight / weight_sum
    except ZeroDivisionError:  # lr_max == 0 with weight_lr_power > 0
        ckp1 = 0.0
    return lr, lr_max, weight_sum, float(ckp1)


def _schedulefree_sgd_kernel(kw: dict[str, Any], group: dict[str, Any],
                             defaults: dict[str, Any]) -> None:
    # the kernel takes this step's scheduled lr and averaging weight
    kw["lr"], _, _, kw["ckp1"] = _schedulefree_schedule(group)


def _schedulefree_adamw_kernel(kw: dict[str, Any], group: dict[str, Any],
                               defaults: dict[str, Any]) -> None:
    _schedulefree_sgd_kernel(kw, group, defaults)
    kw["bias_correction2"] = 1 - group["betas"][1] ** (group["k"] + 1)


def _schedulefree_advance(group: dict[str, Any]) -> None:
    lr, lr_max, weight_sum, _ = _schedulefree_schedule(group)
    group["scheduled_lr"] = lr  # schedulefree keeps it for logging
    group["lr_max"] = lr_max
    group["weight_sum"] = weight_sum
    group["k"] = group["k"] + 1


# schedulefree's per-group schedule state, with its initial values
_SCHEDULEFREE_GROUP_STATE = {"k": 0, "train_mode": False, "weight_sum": 0.0, "lr_max": -1.0,
                             "scheduled_lr": 0.0}


def _count(name: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0
        return None if ok else f"{name} must be an integer >= 0, got {v!r}"
    return check


def _unsupported(name: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v is False else f"{name}={v!r} is not supported by fastoptim (use False)"
    return check


def _number_of(v: Any) -> Any:
    """A 1-element tensor or array (torch takes a tensor lr) as its float; else v."""
    if not isinstance(v, (int, float)) and hasattr(v, "dtype") and hasattr(v, "shape"):
        try:
            if math.prod(v.shape) == 1 and not str(v.dtype).endswith("bool"):
                return float(v)
        except (TypeError, ValueError):
            pass
    return v


def _is_number(v: Any) -> bool:
    """An int or a float, numpy's scalars included; not a bool."""
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)


def _finite_nonneg(name: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        x = _number_of(v)
        ok = _is_number(x) and math.isfinite(x) and x >= 0
        return None if ok else f"{name} must be a finite number >= 0, got {v!r}"
    return check


def _not_nan(name: str) -> Callable[[Any], str | None]:
    """A stopping tolerance: any number (+-inf never or always stops, as in torch)."""
    def check(v: Any) -> str | None:
        ok = _is_number(v) and not math.isnan(v)
        return None if ok else f"{name} must be a number (not NaN), got {v!r}"
    return check


@dataclass(frozen=True, slots=True)
class Hyperparameter:
    """One constructor argument. ``kernel`` names the kernel arguments it feeds (two for a
    pair such as betas; none for one that only initializes state)."""

    name: str
    kind: str  # "float", "bool", "int" or "pair" (a tuple, e.g. betas)
    default: Any
    kernel: tuple[str, ...]
    doc: str
    check: Callable[[Any], str | None] | None = None


@dataclass(frozen=True, slots=True)
class StateBuffer:
    """One per-parameter state array: torch's key, the kernel argument it is passed as, the
    hyperparameter that switches it on (None: always there), its initial value (a number,
    or the name of the hyperparameter holding it) and the storage formats accepted for it
    ("param": the parameter's own dtype, taken by the kernel; "bf16", "int8": taken by the
    optimizer's format kernel, see ``OptimizerSpec.state_dtypes``)."""

    key: str
    arg: str
    when: str | None
    init: float | str
    formats: tuple[str, ...]
    signed: bool = True  # False: never negative (8-bit codes on the unsigned dynamic map)


# A StateBuffer's init that copies the parameter (schedule-free's z starts at p).
PARAM = "<param>"


@dataclass(frozen=True, slots=True)
class Modes:
    """A train/eval switch (schedule-free): the front ends' ``train()`` / ``eval()`` move
    each parameter that has state ``state`` with ``lerp(p, state, weight)``, the weight
    ``to_train(group)`` or ``to_eval(group)``, and flip the group flag ``key``; ``step``
    refuses to run while a group is not in train mode."""

    key: str
    state: str
    to_train: Callable[[dict[str, Any]], float]
    to_eval: Callable[[dict[str, Any]], float]


@dataclass(frozen=True, slots=True)
class ScalarState:
    """A per-parameter scalar in the state (a 0-d array/tensor in torch's scalar dtype,
    float32 unless torch's default dtype is float64), updated in the front end every step:
    ``update(value, group, step)`` returns the new value (computed in the scalar's own
    dtype, as torch does). It is passed to the kernel as ``kernel``: the new value, or with
    ``after=True`` the current one, the update then following the kernel call (ASGD's eta
    and mu). ``init`` is a number or the name of the hyperparameter holding it."""

    key: str
    init: float | str
    update: Callable[[Any, dict[str, Any], int], Any]
    kernel: str
    after: bool = False


@dataclass(frozen=True, slots=True)
class _Arg:
    """How one kernel argument is filled from a parameter group (precomputed per spec)."""

    kernel: str
    group_key: str
    index: int  # -1: the value itself; 0, 1, ...: an element of a tuple


@dataclass(frozen=True, slots=True)
class OptimizerSpec:
    """The declaration of one optimizer (see the module docstring)."""

    name: str
    kernel: str
    summary: str
    rule: str
    reference: str
    hyperparameters: tuple[Hyperparameter, ...]
    torch_signature: tuple[str, ...]  # names in torch's order, "*" before keyword-only ones
    fixed: dict[str, Any]  # kernel arguments this optimizer fixes (AdamW: decoupled decay)
    state: tuple[StateBuffer, ...]
    scalars: tuple[ScalarState, ...]
    has_step: bool  # counts steps in state["step"] (as torch does, even if the kernel does not)
    kernel_step: bool  # the kernel takes the step number
    eager_state: bool  # state created with the parameters (torch's Adagrad), not lazily
    train_lr: float | None  # `fastoptim train`'s learning rate; None: the default lr
    _args: tuple[_Arg, ...] = field(repr=False)
    _kw: Callable[[dict[str, Any]], dict[str, Any]] = field(repr=False)  # group -> kwargs
    _optional: tuple[tuple[int, str], ...] = field(repr=False)  # (buffer index, its switch)
    _first_step: bool = field(repr=False)  # the kernel takes first_step (SGD's momentum)
    _fn: Callable[..., None] = field(repr=False)
    # (kernel kwargs, group, the optimizer's constructor defaults) -> None: a rule that is
    # not a plain copy of group values (Lion's decoupled decay divides by the initial lr)
    adjust: Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], None] | None = None
    # Entries kept in each parameter group (not constructor arguments), with their initial
    # values, as the reference keeps them there (schedule-free's k, weight_sum, lr_max):
    # saved and loaded with the group, checked by validate().
    group_state: dict[str, Any] = field(default_factory=dict)
    # group -> None: advances the group state once per step, after the kernel calls
    advance: Callable[[dict[str, Any]], None] | None = None
    modes: Modes | None = None
    # torch-flag defaults that differ from TORCH_FLAGS' (schedulefree's foreach=True)
    flag_defaults: dict[str, Any] = field(default_factory=dict)
    # (kernel flag, parameter -> bool): the front ends call the kernel once per value of
    # the flag in a group (LARS: trust=True for parameters of more than one dimension)
    split: tuple[str, Callable[[Any], bool]] | None = None
    # False: not an elementwise multi-tensor kernel (Adafactor, Muon, SparseAdam, LBFGS):
    # its front-end classes are written out in optim.py / torch.py, and take their
    # signature, defaults, docs and checks from here (``declare_special``).
    elementwise: bool = True
    # Why `fastoptim train` and the estimators cannot run it (None: they can).
    cli_refusal: str | None = None
    # Set up to ``__init__`` of an optimizer whose constructor fills in a default
    # (LBFGS: max_eval None -> max_iter * 5 // 4): group -> None, in place.
    resolve: Callable[[dict[str, Any]], None] | None = None
    # the _core function stepping this optimizer on state in any of state_dtypes (its
    # arguments: params, grads, the buffers in `state` order, their absmax lists, the
    # parameter copies; then the kernel's hyperparameters, seed and state_rounding)
    format_kernel: str | None = None
    fp32_only: tuple[str, ...] = ()  # flags that need fp32 state (RMSprop's centered)

    # -- what the front ends call ------------------------------------------------------
    @property
    def step_function(self) -> Callable[..., None]:
        return getattr(_core, self.kernel)

    @property
    def defaults(self) -> dict[str, Any]:
        """Constructor defaults by name (front-end hyperparameters only)."""
        return {h.name: h.default for h in self.hyperparameters}

    def kernel_kwargs(self, group: dict[str, Any],
                      defaults: dict[str, Any] | None = None) -> dict[str, Any]:
        """The kernel's keyword arguments for a parameter group; ``defaults``: the
        optimizer's constructor values (for ``adjust``). Values go to the kernel as they
        are: it takes any real number, 0-d arrays and tensors included (a tensor lr)."""
        kw = self._kw(group)
        if self.adjust is not None:
            self.adjust(kw, group, group if defaults is None else defaults)
        return kw

    def validate(self, group: dict[str, Any], defaults: dict[str, Any] | None = None) -> None:
        """ValueError/TypeError naming the hyperparameter; the kernel's checks run on empty
        lists, so they are the same C++ code that guards every step."""
        for h in self.hyperparameters:
            v = group[h.name]
            if h.kind == "pair" and (not isinstance(v, (tuple, list))
                                     or len(v) != len(h.kernel)):
                raise ValueError(f"{h.name} must be a tuple ({', '.join(h.kernel)}), got {v!r}")
            if h.check is not None:
                message = h.check(v)
                if message:
                    raise ValueError(message)
        for key, init in self.group_state.items():
            v = group.get(key)
            if isinstance(init, bool):
                ok = isinstance(v, bool)
            elif isinstance(init, int):
                ok = isinstance(v, (int, np.integer)) and not isinstance(v, bool) and bool(v >= 0)
            else:
                ok = isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) \
                    and math.isfinite(v)
            if not ok:
                raise ValueError(f"param group entry {key!r} must be "
                                 + ("a bool" if isinstance(init, bool) else
                                    "an integer >= 0" if isinstance(init, int) else
                                    "a finite number") + f", got {v!r}")
        if not self.elementwise:  # checks declared with the hyperparameters
            return
        extra: dict[str, Any] = {"step": 1} if self.kernel_step else {}
        for sc in self.scalars:  # the value the first step would pass
            v = np.float32(_number_of(group[sc.init]) if isinstance(sc.init, str) else sc.init)
            extra[sc.kernel] = float(v if sc.after else sc.update(v, group, 1))
        self.step_function([], [], *([[]] * len(self.state)), **extra,
                           **self.kernel_kwargs(group, defaults))

    def used(self, buf: StateBuffer, group: dict[str, Any]) -> bool:
        return buf.when is None or bool(group[buf.when])

    def new_state(self, p: Any, group: dict[str, Any], full_like: Callable[[Any, float], Any],
                  scalar: Callable[[float], Any] | None = None,
                  clone: Callable[[Any], Any] | None = None) -> dict[str, Any]:
        """Fresh state for parameter p: step 0 (if counted), each buffer in use
        (``full_like(p, value)``, or ``clone(p)`` for a buffer that starts as a copy of the
        parameter) and each scalar (``scalar(value)``, a 0-d array/tensor)."""
        s: dict[str, Any] = {"step": 0} if self.has_step else {}
        for b in self.state:
            if not self.used(b, group):
                continue
            if b.init == PARAM:
                if clone is None:
                    raise TypeError(f"{self.name} copies the parameter into {b.key}: pass clone=")
                s[b.key] = clone(p)
            else:
                s[b.key] = full_like(p, group[b.init] if isinstance(b.init, str) else b.init)
        for sc in self.scalars:
            if scalar is None:
                raise TypeError(f"{self.name} keeps scalar state: pass scalar=")
            s[sc.key] = scalar(float(group[sc.init]) if isinstance(sc.init, str) else sc.init)
        return s

    def partition_key(self, p: Any) -> Any:
        """What, beyond dtype and step, puts p in a separate kernel call (``split``)."""
        return None if self.split is None else bool(self.split[1](p))

    def run(self, group: dict[str, Any], params: list, grads: list, states: list,
            step: int, first: bool, defaults: dict[str, Any] | None = None,
            grad_scale: float = 1.0, part_key: Any = None) -> None:
        """One native multi-tensor call; ``states`` holds one list per buffer, in
        ``state`` order (None entries for buffers never created), then one per scalar;
        the kernel reads every gradient times ``grad_scale``; ``part_key``: the
        parameters' ``partition_key`` (the ``split`` flag's value).
        This runs every step: it reads the group and calls the kernel once."""
        kw = self._kw(group)
        if grad_scale != 1.0:
            kw["grad_scale"] = grad_scale
        if self.adjust is not None:
            self.adjust(kw, group, group if defaults is None else defaults)
        if self.split is not None:
            kw[self.split[0]] = bool(part_key)
        if self.kernel_step:
            kw["step"] = step
        if self._first_step:
            kw["first_step"] = first
        if self._optional:
            states = list(states)  # the caller's lists stay as they are
            for j, when in self._optional:
                if not group[when]:
                    states[j] = None
                elif states[j] is None or (isinstance(states[j], list)
                                           and any(x is None for x in states[j])):
                    raise ValueError(f"{when} was switched on after the first step; create a "
                                     f"new optimizer instead")
        if not self.scalars:
            self._fn(params, grads, *states, **kw)
            return
        k = len(self.state)
        lists = states[:k]
        scalars = states[k:]  # lists of 0-d arrays (views of the tensors in torch)
        new = self._scalar_args(kw, scalars, group, step)
        self._fn(params, grads, *lists, **kw)
        self._store_scalars(new, scalars, group, step)

    def _scalar_args(self, kw: dict[str, Any], scalars: Sequence[list], group: dict[str, Any],
                     step: int) -> list[Any]:
        """Each scalar's kernel argument into ``kw``: its new value, or with ``after`` the
        current one. Returns the new values, stored by ``_store_scalars`` once the kernel
        has run (a refused call leaves the scalars as they were)."""
        new = []
        for sc, values in zip(self.scalars, scalars, strict=True):
            v = values[0] if sc.after else sc.update(values[0], group, step)
            kw[sc.kernel] = float(v)
            new.append(v)
        return new

    def _store_scalars(self, new: list[Any], scalars: Sequence[list], group: dict[str, Any],
                       step: int) -> None:
        for sc, values, v in zip(self.scalars, scalars, new, strict=True):
            if sc.after:
                v = sc.update(values[0], group, step)
            for a in values:  # (numpy views, or tensors where staged)
                a[...] = float(v)

    # -- reduced-precision state (fastoptim.formats) -----------------------------------
    @property
    def state_dtypes(self) -> tuple[str, ...]:
        """The ``state_dtype`` values the front ends accept: "fp32", then the reduced
        formats every state buffer allows (none without a format kernel)."""
        if self.format_kernel is None or not self.state:
            return ("fp32",)
        common = [f for f in ("bf16", "int8") if all(f in b.formats for b in self.state)]
        return ("fp32", *common)

    def check_state_dtype(self, value: Any, group: dict[str, Any] | None = None) -> str:
        """``value`` if this optimizer keeps state in it (with ``group``'s flags), else a
        ValueError naming ``state_dtype`` and the allowed values."""
        if group is not None and value != "fp32":
            for flag in self.fp32_only:
                if group.get(flag):
                    raise ValueError(f"state_dtype must be 'fp32' with {flag}=True, got "
                                     f"{value!r}: {self.name}'s {flag} state needs float32")
        allowed = self.state_dtypes
        if not isinstance(value, str) or value not in allowed:
            if len(allowed) == 1:
                raise ValueError(f"state_dtype must be 'fp32' for {self.name}, got {value!r}: "
                                 f"{self.name} has no reduced-precision state formats")
            raise ValueError(f"state_dtype must be one of {allowed} for {self.name}, "
                             f"got {value!r}")
        return value

    @property
    def absmax_keys(self) -> tuple[str, ...]:
        """The state keys of the float32 absmax arrays of 8-bit buffers, in ``state`` order."""
        from fastoptim import formats

        return tuple(formats.absmax_key(b.key) for b in self.state)

    def new_format_state(self, p: Any, group: dict[str, Any], fmt: str,
                         scalar: Callable[[float], Any] | None = None) -> dict[str, Any]:
        """Fresh state for float32 parameter p in format ``fmt`` (``state_format`` tag
        included; int8 falls back to fp32 below ``formats.MIN_8BIT_SIZE`` elements): the
        buffers are numpy arrays for a numpy p and CPU tensors for a tensor. Scalars (NAdam's
        mu_product) stay floats: ``scalar(value)``, a 0-d array/tensor, as in ``new_state``."""
        from fastoptim import formats

        bufs = [(b.key, b.signed, float(group[b.init]) if isinstance(b.init, str) else b.init)
                for b in self.state if self.used(b, group)]
        s: dict[str, Any] = {"step": 0} if self.has_step else {}
        s.update(formats.new_buffers(p, fmt, bufs))
        for sc in self.scalars:
            if scalar is None:
                raise TypeError(f"{self.name} keeps scalar state: pass scalar=")
            s[sc.key] = scalar(float(group[sc.init]) if isinstance(sc.init, str) else sc.init)
        return s

    def run_formats(self, group: dict[str, Any], params: list, grads: list, states: list,
                    step: int, first: bool, defaults: dict[str, Any] | None = None, *,
                    seed: int = 0, state_rounding: str = "nearest",
                    param_rounding: str = "stochastic",
                    param_copies: list | None = None) -> None:
        """One call of the format kernel; ``states`` holds one list per buffer in ``state``
        order, then one list of 0-d arrays/tensors per scalar (as ``run``), then one absmax
        list per buffer (None entries: not 8-bit). params are float32 (a master) or bf16
        (rounded by ``param_rounding``); ``param_copies``: None or per parameter None / a
        bf16 or fp16 copy of a float32 master."""
        kw = self.kernel_kwargs(group, defaults)
        kw["step"] = step  # format kernels all take it: it keys the stochastic rounding
        if self._first_step:
            kw["first_step"] = first
        k, ns = len(self.state), len(self.scalars)
        bufs, scalars, absmax = (list(states[:k]), states[k:k + ns], list(states[k + ns:]))
        for j, when in self._optional:
            if not group[when]:
                bufs[j] = absmax[j] = None
            elif any(x is None for x in bufs[j]):
                raise ValueError(f"{when} was switched on after the first step; create a "
                                 f"new optimizer instead")
        assert self.format_kernel is not None
        new = self._scalar_args(kw, scalars, group, step)
        getattr(_core, self.format_kernel)(
            params, grads, *bufs, *absmax, param_copies, **kw,
            seed=int(seed) & 0xFFFFFFFFFFFFFFFF, state_rounding=state_rounding,
            param_rounding=param_rounding)
        self._store_scalars(new, scalars, group, step)

    @property
    def state_keys(self) -> tuple[str, ...]:
        """Buffers in kernel order, then scalars: the order of ``run``'s state lists."""
        return tuple(b.key for b in self.state) + tuple(sc.key for sc in self.scalars)

    def finish_step(self, groups: Sequence[dict[str, Any]]) -> None:
        """After a step's kernel calls: advance every group's state (once per step)."""
        if self.advance is not None:
            for g in groups:
                self.advance(g)

    def check_mode(self, groups: Sequence[dict[str, Any]]) -> None:
        """RuntimeError unless every group is in train mode (an optimizer with Modes)."""
        if self.modes is not None and not all(g[self.modes.key] for g in groups):
            raise RuntimeError(f"{self.name}.step() was called in eval mode: call "
                               f"optimizer.train() before training steps (and "
                               f"optimizer.eval() before evaluating or saving)")

    def switch_mode(self, group: dict[str, Any], train: bool,
                    pairs: Sequence[tuple[Any, Any]]) -> None:
        """train()/eval() for one group: ``pairs`` holds (parameter view, state view) for
        each parameter that has the mode's state; they are moved with the native lerp (one
        call per dtype) unless the group is already in that mode."""
        m = self.modes
        if m is None:
            raise TypeError(f"{self.name} has no train/eval modes")
        if bool(group[m.key]) == train:
            return
        w = float(m.to_train(group) if train else m.to_eval(group))
        by_dtype: dict[Any, tuple[list, list]] = {}
        for p, z in pairs:
            ps, zs = by_dtype.setdefault(p.dtype, ([], []))
            ps.append(p)
            zs.append(z)
        for ps, zs in by_dtype.values():
            _core.lerp_(ps, zs, weight=w)
        group[m.key] = train

    # -- docs --------------------------------------------------------------------------
    def docstring(self, front_end: str) -> str:
        """The class docstring: summary, update rule, arguments with defaults, state."""
        lines = [self.summary, "", "Update rule::", ""]
        lines += ["    " + x if x else "" for x in self.rule.strip("\n").splitlines()]
        lines += ["", "Args:"]
        lines.append("    params: " + ("float32/float64 numpy arrays, or a list of group dicts"
                                       if front_end == "numpy" else
                                       "float32/float64 CPU tensors, or a list of group dicts"))
        for h in self.hyperparameters:
            lines.append(f"    {h.name}: {h.doc} (default {h.default!r})")
        if front_end == "numpy":
            lines.append("    skip_nonfinite: skip the whole step if a gradient is not finite")
        if len(self.state_dtypes) > 1:
            lines.append(f"    state_dtype: storage of the state buffers, one of "
                         f"{', '.join(repr(f) for f in self.state_dtypes)} (default 'fp32'; "
                         f"see fastoptim.formats)")
        else:
            flags = [n for n in self.torch_signature if n in TORCH_FLAGS]
            lines.append(f"    {', '.join(flags)}: accepted for torch compatibility "
                         f"(foreach is ignored; the others must stay off)")
        keys = (["step"] if self.has_step else []) + [
            b.key + (f" (when {b.when})" if b.when else "") for b in self.state] + [
            f"{sc.key} (a 0-d scalar)" for sc in self.scalars]
        lines += ["", "State per parameter: " + (", ".join(keys) or "none") + "."]
        if self.group_state:
            lines += ["", "State per parameter group (saved with the group): "
                      + ", ".join(self.group_state) + "."]
        if self.modes is not None:
            lines += ["", "Call ``optimizer.train()`` before training steps and "
                      "``optimizer.eval()`` before evaluating, predicting or saving: they move "
                      "the parameters between the training point and the averaged one "
                      "(``step`` raises RuntimeError in eval mode; the optimizer starts in "
                      "eval mode). ``fastoptim.fit`` calls them itself."]
        lines += ["", f"Reference: {self.reference}."]
        return "\n".join(lines)

    def numpy_signature(self) -> tuple[str, ...]:
        """The numpy front end's positional order: torch's, without its switches."""
        return tuple(n for n in self.torch_signature if n != "*" and n not in TORCH_FLAGS)


_KERNEL_SPECS: dict[str, Any] = _core.kernel_specs


def _kernel_hypers(kernel: str) -> dict[str, tuple[str, Any, bool]]:
    return {n: (kind, d, req) for n, kind, d, req in _KERNEL_SPECS[kernel]["hypers"]}


def _compile_kwargs(args: list[_Arg], fixed: dict[str, Any]
                    ) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``group -> kernel kwargs`` as one dict display (what runs every step: a loop over
    the arguments cost ~2 us a call). Built from the declaration's identifiers only."""
    items = [f"{k!r}: {v!r}" for k, v in fixed.items()]
    for a in args:
        ref = f"g[{a.group_key!r}]" + (f"[{a.index}]" if a.index >= 0 else "")
        items.append(f"{a.kernel!r}: {ref}")
    ns: dict[str, Any] = {}
    exec("def kernel_kwargs(g):\n    return {" + ", ".join(items) + "}\n", ns)
    return ns["kernel_kwargs"]


def declare(name: str, kernel: str, *, torch: str, summary: str, rule: str, reference: str,
            defaults: dict[str, Any] | None = None, fixed: dict[str, Any] | None = None,
            extra: dict[str, tuple[str, Any, Callable[[Any], str | None] | None]]
            | None = None, init: dict[str, str] | None = None, eager_state: bool = False,
            train_lr: float | None = None, docs: dict[str, str] | None = None,
            has_step: bool = True, scalars: tuple[ScalarState, ...] = (),
            format_kernel: str | None = None, fp32_only: tuple[str, ...] = (),
            pairs: dict[str, tuple[str, ...]] | None = None,
            adjust: Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], None]
            | None = None, group_state: dict[str, Any] | None = None,
            advance: Callable[[dict[str, Any]], None] | None = None,
            modes: Modes | None = None, flag_defaults: dict[str, Any] | None = None,
            split: tuple[str, Callable[[Any], bool]] | None = None) -> OptimizerSpec:
    """Builds one OptimizerSpec. ``torch`` is torch's constructor signature after
    ``params`` ("*" marks keyword-only); its names are the kernel's hyperparameters
    (``betas`` stands for beta1, beta2), torch's switches, or names declared in ``extra``
    (kind, default, check) that the kernel never sees. ``defaults`` overrides a kernel
    default for this optimizer; ``fixed`` sets kernel arguments the signature does not
    expose; ``init`` names the hyperparameter that initializes a state buffer;
    ``has_step=False`` for an optimizer without a step counter in its state (torch's SGD);
    ``scalars`` declares per-parameter scalar state; ``pairs`` maps a tuple argument to two
    kernel arguments (default: betas -> beta1, beta2); ``group_state``, ``advance`` and
    ``modes``: state kept in the parameter groups and the train/eval switch
    (OptimizerSpec's fields); ``format_kernel`` names the _core function that steps the
    state in the reduced formats its buffers allow."""
    defaults, fixed, extra, init = defaults or {}, fixed or {}, extra or {}, init or {}
    doc = {**_DOCS, **(docs or {})}
    pair_map = pairs if pairs is not None else {"betas": ("beta1", "beta2")}
    kh = _kernel_hypers(kernel)
    hypers, args = [], []
    sig = tuple(torch.split())
    for n in sig:
        if n == "*" or n in TORCH_FLAGS:
            continue
        if n in extra:
            kind, default, check = extra[n]
            hypers.append(Hyperparameter(n, kind, default, (), doc[n], check))
            continue
        parts = pair_map.get(n, (n,))
        for k in parts:
            if k not in kh:
                raise ValueError(f"{name}: kernel {kernel} has no hyperparameter {k!r}")
        if len(parts) > 1:
            default = defaults.get(n, tuple(kh[k][1] for k in parts))
            kind = "pair"
        else:
            kind, default = kh[n][0], defaults.get(n, kh[n][1])
        hypers.append(Hyperparameter(n, kind, default, parts, doc[n]))
        for i, k in enumerate(parts):
            args.append(_Arg(k, n, i if len(parts) > 1 else -1))
    nonnegative = set(_KERNEL_SPECS[kernel].get("nonnegative", ()))
    state = tuple(StateBuffer(key, arg, when, init.get(key, 0.0), tuple(formats),
                              key not in nonnegative)
                  for arg, key, when, formats in _KERNEL_SPECS[kernel]["states"])
    return OptimizerSpec(name, kernel, summary, rule, reference, tuple(hypers), sig,
                         dict(fixed), state, tuple(scalars), has_step, "step" in kh,
                         eager_state, train_lr, tuple(args), _compile_kwargs(args, fixed),
                         tuple((j, b.when) for j, b in enumerate(state) if b.when is not None),
                         "first_step" in kh, getattr(_core, kernel), adjust,
                         dict(group_state or {}), advance, modes, dict(flag_defaults or {}),
                         split, format_kernel=format_kernel,
                         fp32_only=tuple(fp32_only))


def _check(test: Callable[[Any], Any], message: str) -> Callable[[Any], str | None]:
    """A hyperparameter check: ``message`` (with ``{v!r}``) unless ``test(v)`` holds."""
    def check(v: Any) -> str | None:
        try:
            ok = bool(test(_number_of(v)))
        except (TypeError, ValueError):
            ok = False
        return None if ok else message.format(v=v)
    return check


def _real(v: Any) -> bool:
    return _is_number(v) and math.isfinite(float(v))


def declare_special(name: str, kernel: str, *, torch: str, summary: str, rule: str,
                    reference: str,
                    hypers: dict[str, tuple[str, Any, Callable[[Any], str | None] | None]],
                    state: tuple[tuple[str, str | None], ...], has_step: bool = True,
                    docs: dict[str, str] | None = None, pairs: dict[str, tuple[str, ...]]
                    | None = None, cli_refusal: str | None = None,
                    resolve: Callable[[dict[str, Any]], None] | None = None) -> OptimizerSpec:
    """Builds the spec of an optimizer that is not an elementwise multi-tensor kernel: its
    front-end classes (optim.py, torch.py) are written out and take from here their
    signature (``torch``, as in ``declare``), defaults and checks (``hypers``: name ->
    (kind, default, check)), docs, and state keys (``state``: (key, when it exists)).
    ``kernel`` names the native entry point; ``cli_refusal`` says why `fastoptim train`
    cannot run it (None: it can)."""
    doc = {**_DOCS, **(docs or {})}
    pair_map = pairs or {}
    sig = tuple(torch.split())
    hs = []
    for n in sig:
        if n == "*" or n in TORCH_FLAGS:
            continue
        kind, default, check = hypers[n]
        hs.append(Hyperparameter(n, kind, default, pair_map.get(n, ()), doc[n], check))
    bufs = tuple(StateBuffer(key, key, when, 0.0, ("param",)) for key, when in state)
    fn: Any = getattr(_core, kernel) if kernel else None
    return OptimizerSpec(name, kernel, summary, rule, reference, tuple(hs), sig, {}, bufs, (),
                         has_step, False, False, None, (), lambda g: {}, (), False, fn, None,
                         elementwise=False, cli_refusal=cli_refusal, resolve=resolve)



# ---------------------------------------------------------------------------------------
# The declarations. Adding an optimizer: its kernel (a header under
# cpp/include/fastoptim/kernels/ + its config struct), its binding declaration
# (cpp/bindings/), its float64 reference (tests/reference.py), one entry here, and one
# line in each front end (optim.py, torch.py).

OPTIMIZERS: tuple[OptimizerSpec, ...] = (
    declare(
        "SGD", "sgd_step",
        torch="lr momentum dampening weight_decay nesterov * maximize foreach differentiable "
              "fused",
        summary="Stochastic gradient descent with momentum (torch.optim.SGD).",
        rule="""
g = -grad if maximize else grad
g = g + weight_decay * p
if momentum != 0:
    buf = g if first step else momentum * buf + (1 - dampening) * g
    g = g + momentum * buf if nesterov else buf
p = p - lr * g
""",
        reference="Sutskever et al., On the importance of initialization and momentum in "
                  "deep learning (2013); torch.optim.SGD",
        train_lr=0.05, has_step=False, format_kernel="sgd_format_step"),
    declare(
        "Adam", "adam_step",
        torch="lr betas eps weight_decay amsgrad * foreach maximize capturable differentiable "
              "fused decoupled_weight_decay",
        summary="Adam (torch.optim.Adam): eps is added to the bias-corrected sqrt(v).",
        rule="""
g = -grad if maximize else grad
if decoupled_weight_decay: p = p * (1 - lr * weight_decay)
else:                      g = g + weight_decay * p
m = beta1 * m + (1 - beta1) * g
v = beta2 * v + (1 - beta2) * g^2
v_max = max(v_max, v) if amsgrad else v
p = p - lr / (1 - beta1^step) * m / (sqrt(v_max) / sqrt(1 - beta2^step) + eps)
""",
        reference="Kingma & Ba, Adam: A Method for Stochastic Optimization (2015); "
                  "Reddi et al., On the Convergence of Adam and Beyond (2018)",
        format_kernel="adam_format_step"),
    declare(
        "AdamW", "adam_step",
        torch="lr betas eps weight_decay amsgrad * maximize foreach capturable differentiable "
              "fused",
        summary="AdamW (torch.optim.AdamW): Adam with decoupled weight decay.",
        rule="""
g = -grad if maximize else grad
p = p * (1 - lr * weight_decay)
m = beta1 * m + (1 - beta1) * g
v = beta2 * v + (1 - beta2) * g^2
v_max = max(v_max, v) if amsgrad else v
p = p - lr / (1 - beta1^step) * m / (sqrt(v_max) / sqrt(1 - beta2^step) + eps)
""",
        reference="Loshchilov & Hutter, Decoupled Weight Decay Regularization (2019)",
        defaults={"weight_decay": 1e-2}, fixed={"decoupled_weight_decay": True},
        docs={"weight_decay": "decoupled weight decay: p *= 1 - lr * weight_decay"},
        format_kernel="adam_format_step"),
    declare(
        "RMSprop", "rmsprop_step",
        torch="lr alpha eps weight_decay momentum centered capturable foreach maximize "
              "differentiable",
        summary="RMSprop (torch.optim.RMSprop): eps is added after the root.",
        rule="""
g = -grad if maximize else grad
g = g + weight_decay * p
v = alpha * v + (1 - alpha) * g^2
if centered: g_avg = alpha * g_avg + (1 - alpha) * g;  d = sqrt(v - g_avg^2) + eps
else:        d = sqrt(v) + eps
if momentum > 0: buf = momentum * buf + g / d;  p = p - lr * buf
else:            p = p - lr * g / d
""",
        reference="Hinton, Neural Networks for Machine Learning, lecture 6e (2012); "
                  "Graves, Generating Sequences With Recurrent Neural Networks (2013)",
        train_lr=1e-3, format_kernel="rmsprop_format_step", fp32_only=("centered",)),
    declare(
        "Adagrad", "adagrad_step",
        torch="lr lr_decay weight_decay initial_accumulator_value eps foreach * maximize "
              "differentiable fused",
        summary="Adagrad (torch.optim.Adagrad).",
        rule="""
g = -grad if maximize else grad
g = g + weight_decay * p
clr = lr / (1 + (step - 1) * lr_decay)
sum = sum + g^2                         (sum starts at initial_accumulator_value)
p = p - clr * g / (sqrt(sum) + eps)
""",
        reference="Duchi et al., Adaptive Subgradient Methods for Online Learning and "
                  "Stochastic Optimization (2011)",
        extra={"initial_accumulator_value": (
            "float", 0.0, _finite_nonneg("initial_accumulator_value"))},
        init={"sum": "initial_accumulator_value"}, eager_state=True,
        format_kernel="adagrad_format_step"),
    declare(
        "Adamax", "adamax_step",
        torch="lr betas eps weight_decay foreach * maximize differentiable capturable",
        summary="Adamax (torch.optim.Adamax): Adam with the infinity norm.",
        rule="""
g = -grad if maximize else grad
g = g + weight_decay * p
m = beta1 * m + (1 - beta1) * g
u = max(beta2 * u, |g| + eps)
p = p - lr / (1 - beta1^step) * m / u
""",
        reference="Kingma & Ba, Adam: A Method for Stochastic Optimization (2015), "
                  "section 7.1",
        format_kernel="adamax_format_step"),
    declare(
        "NAdam", "nadam_step",
        torch="lr betas eps weight_decay momentum_decay decoupled_weight_decay * foreach "
              "maximize capturable differentiable",
        summary="NAdam (torch.optim.NAdam): Adam with Nesterov momentum.",
        rule="""
g = -grad if maximize else grad
if decoupled_weight_decay: p = p * (1 - lr * weight_decay)
else:                      g = g + weight_decay * p
mu_t = beta1 * (1 - 0.5 * 0.96^(step * momentum_decay));  mu_product = mu_product * mu_t
m = beta1 * m + (1 - beta1) * g
v = beta2 * v + (1 - beta2) * g^2
d = sqrt(v / (1 - beta2^step)) + eps
p = p - lr (1 - mu_t) / (1 - mu_product) * g / d
      - lr mu_{t+1} / (1 - mu_product * mu_{t+1}) * m / d
""",
        reference="Dozat, Incorporating Nesterov Momentum into Adam (2016)",
        scalars=(ScalarState("mu_product", 1.0, lambda v, g, t: v * (g["betas"][0] * (
            1.0 - 0.5 * 0.96 ** (t * g["momentum_decay"]))), "mu_product"),),
        format_kernel="nadam_format_step"),
    declare(
        "RAdam", "radam_step",
        torch="lr betas eps weight_decay decoupled_weight_decay * foreach maximize capturable "
              "differentiable",
        summary="RAdam (torch.optim.RAdam): Adam with a rectified adaptive learning rate.",
        rule="""
g = -grad if maximize else grad
if decoupled_weight_decay: p = p * (1 - lr * weight_decay)
else:                      g = g + weight_decay * p
m = beta1 * m + (1 - beta1) * g
v = beta2 * v + (1 - beta2) * g^2
rho_inf = 2 / (1 - beta2) - 1;  rho_t = rho_inf - 2 step beta2^step / (1 - beta2^step)
if rho_t > 5:
    r = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
    p = p - lr * m / (1 - beta1^step) * sqrt(1 - beta2^step) / (sqrt(v) + eps) * r
else:
    p = p - lr * m / (1 - beta1^step)
""",
        reference="Liu et al., On the Variance of the Adaptive Learning Rate and Beyond "
                  "(2020)",
        format_kernel="radam_format_step"),
    declare(
        "Adadelta", "adadelta_step",
        torch="lr rho eps weight_decay foreach * capturable maximize differentiable",
        summary="Adadelta (torch.optim.Adadelta).",
        rule="""
g = -grad if maximize else grad
g = g + weight_decay * p
v = rho * v + (1 - rho) * g^2
delta = sqrt(u + eps) / sqrt(v + eps) * g
u = rho * u + (1 - rho) * delta^2
p = p - lr * delta
""",
        reference="Zeiler, ADADELTA: An Adaptive Learning Rate Method (2012)",
        format_kernel="adadelta_format_step"),
    declare(
        "Rprop", "rprop_step",
        torch="lr etas step_sizes * capturable foreach maximize differentiable",
        summary="Rprop (torch.optim.Rprop): per-element step sizes from the gradient's sign.",
        rule="""
g = -grad if maximize else grad
f = etaplus if g * prev > 0 else etaminus if g * prev < 0 else 1
step_size = clamp(step_size * f, step_size_min, step_size_max)   (starts at lr)
g = 0 where f == etaminus
p = p - sign(g) * step_size
prev = g
""",
        reference="Riedmiller & Braun, A Direct Adaptive Method for Faster Backpropagation "
                  "Learning: The RPROP Algorithm (1993)",
        extra={"lr": ("float", 1e-2, _finite_nonneg("lr"))},
        pairs={"etas": ("etaminus", "etaplus"),
               "step_sizes": ("step_size_min", "step_size_max")},
        init={"step_size": "lr"}),
    declare(
        "ASGD", "asgd_step",
        torch="lr lambd alpha t0 weight_decay foreach maximize differentiable capturable",
        summary="ASGD (torch.optim.ASGD): SGD with Polyak-Ruppert averaging.",
        rule="""
g = -grad if maximize else grad
g = g + weight_decay * p
p = p * (1 - lambd * eta)
p = p - eta * g
ax = ax + mu * (p - ax)            (ax = p while mu == 1)
eta = lr / (1 + lambd * lr * step)^alpha;  mu = 1 / max(1, step - t0)
""",
        reference="Polyak & Juditsky, Acceleration of Stochastic Approximation by Averaging "
                  "(1992)",
        extra={"lr": ("float", 1e-2, _finite_nonneg("lr")),
               "alpha": ("float", 0.75, _finite_nonneg("alpha")),
               "t0": ("float", 1e6, _finite_nonneg("t0"))},
        docs={"alpha": "power of the eta schedule"},
        scalars=(
            # torch computes them in Python floats and stores them through a float32
            # tensor (torch.as_tensor), whatever the state's dtype: so do these
            ScalarState("eta", "lr", lambda v, g, t: np.float32(_number_of(g["lr"]) / (
                (1.0 + g["lambd"] * _number_of(g["lr"]) * t) ** g["alpha"])), "eta",
                after=True),
            ScalarState("mu", 1.0, lambda v, g, t: np.float32(1.0 / max(1.0, t - g["t0"])),
                        "mu", after=True))),
    declare(
        "Lion", "lion_step",
        torch="lr betas weight_decay use_triton decoupled_weight_decay",
        summary="Lion (lion-pytorch's Lion): the sign of an interpolated momentum.",
        rule="""
p = p * (1 - lr * wd)       (wd = weight_decay, / the constructor's lr if decoupled)
p = p - lr * sign(beta1 * m + (1 - beta1) * grad)
m = beta2 * m + (1 - beta2) * grad
""",
        reference="Chen et al., Symbolic Discovery of Optimization Algorithms (2023); "
                  "lion-pytorch 0.2.5",
        extra={"decoupled_weight_decay": ("bool", False, None)},
        docs={"weight_decay": "decoupled weight decay (p *= 1 - lr * weight_decay)",
              "decoupled_weight_decay": "divide weight_decay by the constructor's lr, as "
                                        "lion-pytorch does"},
        has_step=False, adjust=_lion_decay, format_kernel="lion_format_step"),
    declare(
        "AdEMAMix", "ademamix_step",
        torch="lr betas weight_decay weight_decouple fixed_decay alpha t_alpha_beta3 eps "
              "maximize foreach",
        summary="AdEMAMix (pytorch-optimizer's AdEMAMix): Adam plus a slow momentum.",
        rule="""
g = -grad if maximize else grad
if weight_decouple: p = p * (1 - weight_decay * (1 if fixed_decay else lr))
else:               g = g + weight_decay * p
alpha_t, beta3_t = alpha, beta3 warmed up over t_alpha_beta3 steps (if given)
m1 = beta1 * m1 + (1 - beta1) * g;  m2 = beta3_t * m2 + (1 - beta3_t) * g
v = beta2 * v + (1 - beta2) * g^2
p = p - lr * (m1 / (1 - beta1^step) + alpha_t * m2) / (sqrt(v) / sqrt(1 - beta2^step) + eps)
""",
        reference="Pagliardini et al., The AdEMAMix Optimizer: Better, Faster, Older (2024); "
                  "pytorch-optimizer 4.1.0",
        pairs={"betas": ("beta1", "beta2", "beta3")},
        defaults={"t_alpha_beta3": None},
        docs={"alpha": "weight of the slow momentum"},
        adjust=_none_is_zero, format_kernel="ademamix_format_step"),
    declare(
        "AdamWScheduleFree", "schedulefree_adamw_step",
        torch="lr betas eps weight_decay warmup_steps r weight_lr_power foreach",
        summary="Schedule-Free AdamW (schedulefree's AdamWScheduleFree): no learning-rate "
                "schedule; train()/eval() switch the parameters.",
        rule="""
The parameters hold y = (1 - beta1) z + beta1 x; x (the averaged point) is what eval()
puts in the parameters, z is state. Per step, k counting from 0:
lr_k = lr * min(1, (k + 1) / warmup_steps);  lr_max = max(lr_max, lr_k)
weight = (k + 1)^r * lr_max^weight_lr_power;  weight_sum += weight;  c = weight / weight_sum
v = beta2 * v + (1 - beta2) * grad^2
u = grad / (sqrt(v / (1 - beta2^(k+1))) + eps) + weight_decay * y
y = lerp(y, z, c) + lr_k * (beta1 * (1 - c) - 1) * u
z = z - lr_k * u
train(): y = lerp(x, z, 1 - beta1);  eval(): x = lerp(y, z, 1 - 1 / beta1)
""",
        reference="Defazio et al., The Road Less Scheduled (2024); schedulefree 1.4.1",
        extra={"warmup_steps": ("int", 0, _count("warmup_steps")),
               "r": ("float", 0.0, _finite_nonneg("r")),
               "weight_lr_power": ("float", 2.0, _finite_nonneg("weight_lr_power"))},
        docs={"weight_decay": "L2 penalty at y, added to the normalized gradient"},
        init={"z": PARAM}, has_step=False, adjust=_schedulefree_adamw_kernel,
        group_state=dict(_SCHEDULEFREE_GROUP_STATE), advance=_schedulefree_advance,
        modes=Modes("train_mode", "z", lambda g: 1 - g["betas"][0],
                    lambda g: 1 - 1 / g["betas"][0]),
        flag_defaults={"foreach": True}),
    declare(
        "SGDScheduleFree", "schedulefree_sgd_step",
        torch="lr momentum weight_decay warmup_steps r weight_lr_power foreach",
        summary="Schedule-Free SGD (schedulefree's SGDScheduleFree): no learning-rate "
                "schedule; train()/eval() switch the parameters.",
        rule="""
As AdamWScheduleFree with momentum for beta1 and no second moment:
lr_k, c as there
u = grad + weight_decay * y
y = lerp(y, z, c) + lr_k * (momentum * (1 - c) - 1) * u
z = z - lr_k * u
train(): y = lerp(x, z, 1 - momentum);  eval(): x = lerp(y, z, 1 - 1 / momentum)
""",
        reference="Defazio et al., The Road Less Scheduled (2024); schedulefree 1.4.1",
        extra={"warmup_steps": ("int", 0, _count("warmup_steps")),
               "r": ("float", 0.0, _finite_nonneg("r")),
               "weight_lr_power": ("float", 2.0, _finite_nonneg("weight_lr_power"))},
        docs={"momentum": "interpolation between the averaged point and z, in (0, 1)"},
        init={"z": PARAM}, has_step=False, adjust=_schedulefree_sgd_kernel,
        group_state=dict(_SCHEDULEFREE_GROUP_STATE), advance=_schedulefree_advance,
        modes=Modes("train_mode", "z", lambda g: 1 - g["momentum"],
                    lambda g: 1 - 1 / g["momentum"]),
        flag_defaults={"foreach": True}, train_lr=0.1),
    declare(
        "Lamb", "lamb_step",
        torch="lr betas weight_decay weight_decouple fixed_decay rectify degenerated_to_sgd "
              "n_sma_threshold grad_averaging max_grad_norm adam pre_norm eps foreach maximize",
        summary="LAMB (pytorch-optimizer's Lamb): Adam scaled by a per-tensor trust ratio.",
        rule="""
g = -grad if maximize else grad
m = beta1 * m + (1 - beta1 if grad_averaging else 1) * g
v = beta2 * v + (1 - beta2) * g^2
if weight_decouple: p = p * (1 - weight_decay * (1 if fixed_decay else lr))
u = m / (sqrt(v) + eps) + (0 if weight_decouple else weight_decay) * p
trust = min(|p|, 10) / (|u| + eps)  per tensor (1 if a norm is 0, or adam)
p = p - lr / (1 - beta1^step) * trust * u
(two native passes per tensor: moments and norms, then the update)
""",
        reference="You et al., Large Batch Optimization for Deep Learning: Training BERT in "
                  "76 minutes (2020); pytorch-optimizer 4.1.0",
        extra={"rectify": ("bool", False, _unsupported("rectify")),
               "degenerated_to_sgd": ("bool", False, None),
               "n_sma_threshold": ("int", 5, None),
               "max_grad_norm": ("float", 1.0, _finite_nonneg("max_grad_norm")),
               "pre_norm": ("bool", False, _unsupported("pre_norm"))},
        docs={"weight_decouple": "decoupled weight decay (p *= 1 - lr * weight_decay), "
                                 "else L2 added to the update"},
        train_lr=1e-2),
    declare(
        "LARS", "lars_step",
        torch="lr weight_decay momentum dampening trust_coefficient nesterov foreach maximize",
        summary="LARS (pytorch-optimizer's LARS): SGD with a per-tensor trust ratio for "
                "parameters of more than one dimension.",
        rule="""
g = -grad if maximize else grad
if p.ndim > 1:
    r = trust_coefficient * |p| / (|g| + weight_decay * |p|)  per tensor (1 if |p| or the
                                                             denominator is 0)
    g = (g + weight_decay * p) * r
if momentum > 0: buf = momentum * buf + (1 - dampening) * g   (buf starts at 0)
                 g = g + momentum * buf if nesterov else buf
p = p - lr * g
(two native passes over the matrices: norms, then the update; one over the vectors)
""",
        reference="You et al., Large Batch Training of Convolutional Networks (2017); "
                  "pytorch-optimizer 4.1.0",
        split=("trust", lambda p: p.ndim > 1), train_lr=0.5),
    declare_special(
        "Adafactor", "adafactor_step",
        torch="lr beta2_decay eps d weight_decay * foreach maximize",
        summary="Adafactor (torch.optim.Adafactor): factored second moment, relative step "
                "sizes, update clipping.",
        rule="""
g = -grad if maximize else grad
1 - beta2_t = step^beta2_decay;  rho = min(lr, 1 / sqrt(step))
alpha = max(eps2, RMS(p)) * rho                       (RMS of p before this step)
p = p * (1 - lr * weight_decay)
if p.ndim >= 2 (over the last two dimensions, rows x cols):
    row_var = lerp(row_var, mean over cols of g^2, 1 - beta2_t)
    col_var = lerp(col_var, mean over rows of g^2, 1 - beta2_t)
    v = row_var * col_var / max(mean over rows of row_var, eps1)
else:
    variance = lerp(variance, g^2, 1 - beta2_t);  v = variance
u = g / sqrt(max(v, eps1^2))                          (eps1 None: the dtype's epsilon)
p = p - alpha / max(1, RMS(u) / d) * u
""",
        reference="Shazeer & Stern, Adafactor: Adaptive Learning Rates with Sublinear Memory "
                  "Cost (2018); torch.optim.Adafactor",
        hypers={
            "lr": ("float", 1e-2, _check(lambda v: _real(v) and v >= 0,
                                         "lr must be a finite number >= 0, got {v!r}")),
            "beta2_decay": ("float", -0.8, _check(lambda v: _real(v) and v <= 0,
                                                  "beta2_decay must be a finite number <= 0, "
                                                  "got {v!r}")),
            "eps": ("pair", (None, 1e-3), _check(
                lambda v: len(v) == 2 and (v[0] is None or (_real(v[0]) and v[0] >= 0))
                and _real(v[1]) and v[1] >= 0,
                "eps must be a pair (eps1 >= 0 or None, eps2 >= 0), got {v!r}")),
            "d": ("float", 1.0, _check(lambda v: _real(v) and v >= 1,
                                       "d must be a finite number >= 1, got {v!r}")),
            "weight_decay": ("float", 0.0, _finite_nonneg("weight_decay")),
            "maximize": ("bool", False, None)},
        pairs={"eps": ("eps1", "eps2")},
        docs={"eps": "(eps1, eps2): floor of the root of v (None: the dtype's machine "
                     "epsilon) and of RMS(p)",
              "beta2_decay": "1 - beta2 at step t is t^beta2_decay",
              "d": "clipping threshold of RMS(u)",
              "weight_decay": "decoupled weight decay (p *= 1 - lr * weight_decay)"},
        state=(("row_var", "ndim >= 2"), ("col_var", "ndim >= 2"), ("variance", "ndim < 2"))),
    declare_special(
        "Muon", "muon_momentum",
        torch="lr weight_decay momentum nesterov ns_coefficients eps ns_steps adjust_lr_fn",
        summary="Muon (torch.optim.Muon): orthogonalized momentum for 2-D parameters.",
        rule="""
buf = lerp(buf, grad, 1 - momentum)
B = lerp(grad, buf, momentum) if nesterov else buf
X = B / max(||B||_F, eps)            (transposed while rows > cols)
repeat ns_steps: A = X X^T;  X = a X + (b A + c A A) X
p = p * (1 - lr * weight_decay)
p = p - lr * ratio * X    (ratio: sqrt(max(1, rows/cols)) "original",
                           0.2 sqrt(max(rows, cols)) "match_rms_adamw")
""",
        reference="Jordan et al., Muon: An optimizer for hidden layers in neural networks "
                  "(2024); Liu et al., Muon is Scalable for LLM Training (2025); "
                  "torch.optim.Muon",
        hypers={
            "lr": ("float", 1e-3, _check(lambda v: _real(v) and v >= 0,
                                         "lr must be a finite number >= 0, got {v!r}")),
            "weight_decay": ("float", 0.1, _finite_nonneg("weight_decay")),
            "momentum": ("float", 0.95, _finite_nonneg("momentum")),
            "nesterov": ("bool", True, None),
            "ns_coefficients": ("pair", (3.4445, -4.775, 2.0315), _check(
                lambda v: len(v) == 3 and all(_real(x) for x in v),
                "ns_coefficients must be three finite numbers (a, b, c), got {v!r}")),
            "eps": ("float", 1e-7, _finite_nonneg("eps")),
            "ns_steps": ("int", 5, _check(
                lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                and 0 <= v < 100, "ns_steps must be an integer in [0, 100), got {v!r}")),
            "adjust_lr_fn": ("str", None, _check(
                lambda v: v in (None, "original", "match_rms_adamw"),
                "adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got {v!r}"))},
        pairs={"ns_coefficients": ("a", "b", "c")},
        docs={"weight_decay": "decoupled weight decay (p *= 1 - lr * weight_decay)",
              "eps": "floor of the Frobenius norm in the normalization",
              "ns_coefficients": "coefficients (a, b, c) of the quintic Newton-Schulz step",
              "ns_steps": "number of Newton-Schulz iterations",
              "adjust_lr_fn": "lr scaling by shape: None/'original' or 'match_rms_adamw'",
              "nesterov": "Nesterov momentum"},
        state=(("momentum_buffer", None),), has_step=False,
        cli_refusal="updates 2-D parameters only and the network has biases: use "
                    "fastoptim.optim.Muon for the weights next to another optimizer"),
    declare_special(
        "SparseAdam", "sparse_adam_step",
        torch="lr betas eps maximize",
        summary="SparseAdam (torch.optim.SparseAdam): Adam on the rows a sparse gradient "
                "touches.",
        rule="""
only the rows r that the (coalesced) sparse gradient touches:
g = -grad[r] if maximize else grad[r]
m[r] = m[r] + (1 - beta1) * (g - m[r])
v[r] = v[r] + (1 - beta2) * (g^2 - v[r])
p[r] = p[r] - lr * sqrt(1 - beta2^step) / (1 - beta1^step) * m[r] / (sqrt(v[r]) + eps)
""",
        reference="Kingma & Ba, Adam: A Method for Stochastic Optimization (2015); "
                  "torch.optim.SparseAdam",
        hypers={
            "lr": ("float", 1e-3, _check(lambda v: _real(v) and v > 0,
                                         "lr must be a finite number > 0, got {v!r}")),
            "betas": ("pair", (0.9, 0.999), _check(
                lambda v: len(v) == 2 and all(_real(b) and 0 <= b < 1 for b in v),
                "betas must be a pair of numbers in [0, 1), got {v!r}")),
            "eps": ("float", 1e-8, _check(lambda v: _real(v) and v > 0,
                                          "eps must be a finite number > 0, got {v!r}")),
            "maximize": ("bool", False, None)},
        pairs={"betas": ("beta1", "beta2")},
        state=(("exp_avg", None), ("exp_avg_sq", None)),
        cli_refusal="needs sparse gradients (row indices + values) and the network's "
                    "gradients are dense: use adam"),
    declare_special(
        "LBFGS", "",
        torch="lr max_iter max_eval tolerance_grad tolerance_change history_size "
              "line_search_fn",
        summary="L-BFGS (torch.optim.LBFGS): quasi-Newton steps on the flat parameters, "
                "with a closure.",
        rule="""
step(closure): up to max_iter iterations, max_eval closure evaluations
d = -H g   (two-loop recursion over the last history_size pairs (s, y), H0 = s.y / y.y)
t = lr (first iteration ever: min(1, 1 / |g|_1) * lr), or a strong-Wolfe line search
p = p + t d
stop when max|g| <= tolerance_grad, or max|t d| or the change of the loss
     <= tolerance_change
""",
        reference="Nocedal & Wright, Numerical Optimization (2006), algorithms 7.4 and "
                  "3.5-3.6; torch.optim.LBFGS",
        hypers={
            "lr": ("float", 1, _check(lambda v: _real(v) and v >= 0,
                                      "lr must be a finite number >= 0, got {v!r}")),
            "max_iter": ("int", 20, _check(lambda v: isinstance(v, int) and v >= 1,
                                           "max_iter must be an integer >= 1, got {v!r}")),
            "max_eval": ("int", None, _check(lambda v: v is None or (isinstance(v, int)
                                                                     and v >= 1),
                                             "max_eval must be None or an integer >= 1, "
                                             "got {v!r}")),
            "tolerance_grad": ("float", 1e-7, _not_nan("tolerance_grad")),
            "tolerance_change": ("float", 1e-9, _not_nan("tolerance_change")),
            "history_size": ("int", 100, _check(lambda v: isinstance(v, int) and v >= 1,
                                                "history_size must be an integer >= 1, "
                                                "got {v!r}")),
            "line_search_fn": ("str", None, _check(lambda v: v in (None, "strong_wolfe"),
                                                   "line_search_fn must be None or "
                                                   "'strong_wolfe', got {v!r}"))},
        docs={"max_iter": "iterations per step", "max_eval": "closure evaluations per step "
              "(None: max_iter * 5 // 4)", "tolerance_grad": "stop when max|grad| <= this",
              "tolerance_change": "stop when the step or the loss change is <= this",
              "history_size": "number of (s, y) pairs kept",
              "line_search_fn": "None (fixed step lr) or 'strong_wolfe'"},
        state=(("d", None), ("t", None), ("old_dirs", None), ("old_stps", None),
               ("ro", None), ("H_diag", None), ("prev_flat_grad", None),
               ("prev_loss", None)),
        has_step=False,
        resolve=lambda g: g.update(max_eval=g["max_iter"] * 5 // 4)
        if g["max_eval"] is None else None,
        cli_refusal="needs a closure that re-evaluates the whole objective, and fastoptim "
                    "train steps on minibatch gradients: use fastoptim.optim.LBFGS"),
)

_BY_NAME = {s.name: s for s in OPTIMIZERS}


def get(name: str) -> OptimizerSpec:
    """The spec of an optimizer by class name ("Adam") or CLI name ("adam")."""
    s = _BY_NAME.get(name) or {k.lower(): v for k, v in _BY_NAME.items()}.get(name)
    if s is None:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(cli_choices())}")
    return s


def names() -> tuple[str, ...]:
    """Class names, in declaration order."""
    return tuple(_BY_NAME)


# ---------------------------------------------------------------------------------------
# `fastoptim train` and the estimators

# Hyperparameters that are `fastoptim train` options (--momentum, --beta1/--beta2, ...).
# lr and weight_decay are options too, handled by the training command itself (the
# learning rate has a per-optimizer training default, weight decay applies to weights).
CLI_HYPERPARAMETERS = ("momentum", "nesterov", "betas", "eps")


def cli_choices() -> tuple[str, ...]:
    """`--optimizer` choices: the lower-cased class names."""
    return tuple(n.lower() for n in _BY_NAME)


@dataclass(frozen=True, slots=True)
class CliOption:
    """One `fastoptim train` option derived from the spec."""

    dest: str  # attribute name ("beta1")
    flag: str  # "--beta1"
    kind: str  # "float" or "bool"
    default: Any
    help: str


def cli_options() -> tuple[CliOption, ...]:
    """The optimizer options of `fastoptim train`. A number left unset (None) means each
    optimizer's own default (Lion's beta2 0.99, Adagrad's eps 1e-10, LARS's momentum 0.9,
    ...); the help lists them."""
    out: list[CliOption] = []
    order = ["Adam"] + [n for n in _BY_NAME if n != "Adam"]
    for hname in CLI_HYPERPARAMETERS:
        owners = [n for n in order if any(h.name == hname for h in _BY_NAME[n].hyperparameters)]
        h = next(h for h in _BY_NAME[owners[0]].hyperparameters if h.name == hname)
        owners = [n for n in owners if _BY_NAME[n].cli_refusal is None and any(
            x.name == hname and x.kind == h.kind for x in _BY_NAME[n].hyperparameters)]
        used_by = "/".join(n.lower() for n in names() if n in owners)

        def own(i: int | None, owners: list[str] = owners, hname: str = hname) -> str:
            # "0.999 (lion 0.99)": the first owner's default, then those that differ
            vals = {n: _BY_NAME[n].defaults[hname] for n in owners}
            if i is not None:
                vals = {n: v[i] for n, v in vals.items()}
            first = vals[owners[0]]
            other = ", ".join(f"{n.lower()} {v:g}" for n, v in vals.items() if v != first)
            return f"{first:g}" + (f"; {other}" if other else "")

        if h.kind == "pair":
            for i, k in enumerate(h.kernel):
                out.append(CliOption(k, "--" + k, "float", None,
                                     f"{used_by}: {k} (default: the optimizer's own, "
                                     f"{own(i)})"))
        elif h.kind == "bool":
            out.append(CliOption(hname, "--" + hname.replace("_", "-"), h.kind, h.default,
                                 f"{used_by}: {h.doc}"))
        else:
            out.append(CliOption(hname, "--" + hname.replace("_", "-"), h.kind, None,
                                 f"{used_by}: {h.doc} (default: the optimizer's own, "
                                 f"{own(None)})"))
    return tuple(out)


def train_lr(name: str) -> float:
    """The learning rate `fastoptim train` uses when --lr is not given."""
    s = get(name)
    return s.train_lr if s.train_lr is not None else float(s.defaults["lr"])


def build_from_options(name: str, params: Sequence[Any], options: dict[str, Any], *,
                       lr: float, state_dtype: str = "fp32") -> Any:
    """A ``fastoptim.optim`` optimizer from `fastoptim train` options: every CLI
    hyperparameter the optimizer has is passed, the others are ignored; one that is absent
    or None takes the optimizer's own default (per element of a pair: --beta1 alone keeps
    the optimizer's beta2); a group option it does not have (weight_decay for Rprop) is
    dropped when zero, else a ValueError. ``state_dtype`` other than "fp32" must be one of
    the optimizer's ``state_dtypes``."""
    from fastoptim import optim

    s = get(name)
    if s.cli_refusal is not None:
        raise ValueError(f"{s.name.lower()} {s.cli_refusal}")
    known = set(s.defaults)
    if params and isinstance(params[0], dict):  # per-group options the optimizer lacks
        for g in params:
            for k in set(g) - known - {"params"}:
                if g[k]:
                    raise ValueError(f"{k} is not an option of {s.name}, got {g[k]!r}")
        params = [{k: v for k, v in g.items() if k in known or k == "params"}
                  for g in params]
    kw: dict[str, Any] = {"lr": lr}
    for h in s.hyperparameters:
        if h.name not in CLI_HYPERPARAMETERS:
            continue
        if h.kind == "pair":
            kw[h.name] = tuple(d if options.get(k) is None else options[k]
                               for k, d in zip(h.kernel, h.default, strict=True))
        else:
            v = options.get(h.name)
            kw[h.name] = h.default if v is None else v
    if state_dtype != "fp32":
        kw["state_dtype"] = s.check_state_dtype(state_dtype)
    return getattr(optim, s.name)(params, **kw)


# ---------------------------------------------------------------------------------------
# README table


def markdown_table() -> str:
    """The README's optimizer table, one row per declared optimizer."""
    rows = ["| optimizer | `fastoptim.optim` / `fastoptim.torch` | hyperparameters (defaults) "
            "| state | kernel |", "|---|---|---|---|---|"]
    for s in OPTIMIZERS:
        hyper = ", ".join(f"`{h.name}={h.default!r}`" for h in s.hyperparameters)
        keys = (["step"] if s.has_step else []) + [b.key for b in s.state]
        kernel = f"`{s.kernel}`" if s.kernel else "numpy / BLAS vector ops"
        if s.group_state:
            keys.append("per group: " + ", ".join(s.group_state))
        rows.append(f"| {s.summary} | `{s.name}` | {hyper} | {', '.join(keys)} "
                    f"| {kernel} |")
    return "\n".join(rows) + "\n"


def core_stub() -> str:
    """The optimizer-step section of ``fastoptim/_core.pyi``, from ``_core.kernel_specs``
    (tests/test_spec.py checks that the shipped stub contains it)."""
    kinds = {"float": "float", "bool": "bool", "int": "int"}
    out = []
    for kernel in sorted(_KERNEL_SPECS):
        info = _KERNEL_SPECS[kernel]
        args = ["params: _Arrays", "grads: _Arrays"]
        args += [f"{arg}: _Arrays | None = None" if when else f"{arg}: _Arrays"
                 for arg, _key, when, _formats in info["states"]]
        args.append("*")
        args += [f"{n}: {kinds[k]}" + ("" if req else f" = {d!r}")
                 for n, k, d, req in info["hypers"]]
        out.append(f"def {kernel}(\n    " + ",\n    ".join(args) + ",\n) -> None: ...")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # python -m fastoptim.spec > docs/optimizers.md
    print("# Optimizers\n\nGenerated from `fastoptim/spec.py` by `python -m fastoptim.spec`; "
          "every optimizer is native (one fused pass per tensor, float32 and float64, every "
          "SIMD target) and steps in lockstep with its reference (torch.optim 2.13, "
          "lion-pytorch 0.2.5, pytorch-optimizer 4.1.0, schedulefree 1.4.1), tested over every "
          "flag combination. Schedule-Free optimizers need `optimizer.train()` before training "
          "steps and `optimizer.eval()` before evaluating or saving (`fastoptim.fit` calls "
          "them).\n")
    print(markdown_table(), end="")
    print("\nNot elementwise (declared with `declare_special`; their front-end classes are "
          "written out in optim.py and torch.py): " + "; ".join(
              f"`{s.name}`" + (f" (`{s.kernel}`)" if s.kernel else "")
              for s in OPTIMIZERS if not s.elementwise) + ". Adafactor's factored statistics, "
          "Muon's momentum and update and SparseAdam's row update are native kernels; Muon's "
          "Newton-Schulz products run in BLAS (numpy `@` in the parameter's dtype in "
          "`fastoptim.optim`, bfloat16 `torch.mm` as torch.optim.Muon in `fastoptim.torch`); "
          "LBFGS runs torch's algorithm on the flat parameters with numpy/BLAS vector "
          "operations. In `fastoptim.optim`, SparseAdam takes `(rows, values)` pairs as "
          "gradients and LBFGS a closure returning `(loss, grads)`.\n")
    print("`fastoptim train`, `search` and the estimators refuse, with a one-line error:")
    for s in OPTIMIZERS:
        if s.cli_refusal:
            print(f"- `{s.name.lower()}`: it {s.cli_refusal}.")
