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


def _finite_nonneg(name: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
            and v >= 0
        return None if ok else f"{name} must be a finite number >= 0, got {v!r}"
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
        extra: dict[str, Any] = {"step": 1} if self.kernel_step else {}
        for sc in self.scalars:  # the value the first step would pass
            v = np.float32(group[sc.init] if isinstance(sc.init, str) else sc.init)
            extra[sc.kernel] = float(v if sc.after else sc.update(v, group, 1))
        self.step_function([], [], *([[]] * len(self.state)), **extra,
                           **self.kernel_kwargs(group, defaults))

    def used(self, buf: StateBuffer, group: dict[str, Any]) -> bool:
        return buf.when is None or bool(group[buf.when])

    def new_state(self, p: Any, group: dict[str, Any], full_like: Callable[[Any, float], Any],
                  scalar: Callable[[float], Any] | None = None) -> dict[str, Any]:
        """Fresh state for parameter p: step 0 (if counted), each buffer in use
        (``full_like(p, value)``) and each scalar (``scalar(value)``, a 0-d array/tensor)."""
        s: dict[str, Any] = {"step": 0} if self.has_step else {}
        for b in self.state:
            if self.used(b, group):
                s[b.key] = full_like(p, group[b.init] if isinstance(b.init, str) else b.init)
        for sc in self.scalars:
            if scalar is None:
                raise TypeError(f"{self.name} keeps scalar state: pass scalar=")
            s[sc.key] = scalar(float(group[sc.init]) if isinstance(sc.init, str) else sc.init)
        return s

    def run(self, group: dict[str, Any], params: list, grads: list, states: list,
            step: int, first: bool, defaults: dict[str, Any] | None = None) -> None:
        """One native multi-tensor call; ``states`` holds one list per buffer, in
        ``state`` order (None entries for buffers never created), then one per scalar.
        This runs every step: it reads the group and calls the kernel once."""
        kw = self._kw(group)
        if self.adjust is not None:
            self.adjust(kw, group, group if defaults is None else defaults)
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
        for sc, values in zip(self.scalars, scalars, strict=True):
            if sc.after:
                kw[sc.kernel] = float(values[0])
                continue
            v = sc.update(values[0], group, step)
            for a in values:
                a[...] = v
            kw[sc.kernel] = float(v)
        self._fn(params, grads, *lists, **kw)
        for sc, values in zip(self.scalars, scalars, strict=True):
            if sc.after:
                v = sc.update(values[0], group, step)
                for a in values:
                    a[...] = v

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

    def new_format_state(self, p: Any, group: dict[str, Any], fmt: str) -> dict[str, Any]:
        """Fresh state for float32 parameter p in format ``fmt`` (``state_format`` tag
        included; int8 falls back to fp32 below ``formats.MIN_8BIT_SIZE`` elements): the
        buffers are numpy arrays for a numpy p and CPU tensors for a tensor."""
        from fastoptim import formats

        bufs = [(b.key, b.signed, float(group[b.init]) if isinstance(b.init, str) else b.init)
                for b in self.state if self.used(b, group)]
        s: dict[str, Any] = {"step": 0} if self.has_step else {}
        s.update(formats.new_buffers(p, fmt, bufs))
        return s

    def run_formats(self, group: dict[str, Any], params: list, grads: list, states: list,
                    step: int, first: bool, defaults: dict[str, Any] | None = None, *,
                    seed: int = 0, state_rounding: str = "nearest",
                    param_rounding: str = "stochastic",
                    param_copies: list | None = None) -> None:
        """One call of the format kernel; ``states`` holds one list per buffer in ``state``
        order, then one absmax list per buffer (None entries: not 8-bit). params are
        float32 (a master) or bf16 (rounded by ``param_rounding``); ``param_copies``: None
        or per parameter None / a bf16 or fp16 copy of a float32 master."""
        kw = self.kernel_kwargs(group, defaults)
        kw["step"] = step  # format kernels all take it: it keys the stochastic rounding
        if self._first_step:
            kw["first_step"] = first
        k = len(self.state)
        bufs, absmax = list(states[:k]), list(states[k:])
        for j, when in self._optional:
            if not group[when]:
                bufs[j] = absmax[j] = None
            elif any(x is None for x in bufs[j]):
                raise ValueError(f"{when} was switched on after the first step; create a "
                                 f"new optimizer instead")
        assert self.format_kernel is not None
        getattr(_core, self.format_kernel)(
            params, grads, *bufs, *absmax, param_copies, **kw,
            seed=int(seed) & 0xFFFFFFFFFFFFFFFF, state_rounding=state_rounding,
            param_rounding=param_rounding)

    @property
    def state_keys(self) -> tuple[str, ...]:
        """Buffers in kernel order, then scalars: the order of ``run``'s state lists."""
        return tuple(b.key for b in self.state) + tuple(sc.key for sc in self.scalars)

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
        lines += ["", "State per parameter: " + (", ".join(keys) or "none") + ".", "",
                  f"Reference: {self.reference}."]
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
            | None = None) -> OptimizerSpec:
    """Builds one OptimizerSpec. ``torch`` is torch's constructor signature after
    ``params`` ("*" marks keyword-only); its names are the kernel's hyperparameters
    (``betas`` stands for beta1, beta2), torch's switches, or names declared in ``extra``
    (kind, default, check) that the kernel never sees. ``defaults`` overrides a kernel
    default for this optimizer; ``fixed`` sets kernel arguments the signature does not
    expose; ``init`` names the hyperparameter that initializes a state buffer;
    ``has_step=False`` for an optimizer without a step counter in its state (torch's SGD);
    ``scalars`` declares per-parameter scalar state; ``pairs`` maps a tuple argument to two
    kernel arguments (default: betas -> beta1, beta2); ``format_kernel`` names the _core
    function that steps the state in the reduced formats its buffers allow."""
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
                         "first_step" in kh, getattr(_core, kernel), adjust, format_kernel,
                         tuple(fp32_only))


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
                  "section 7.1"),
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
            1.0 - 0.5 * 0.96 ** (t * g["momentum_decay"]))), "mu_product"),)),
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
                  "(2020)"),
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
        reference="Zeiler, ADADELTA: An Adaptive Learning Rate Method (2012)"),
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
            ScalarState("eta", "lr", lambda v, g, t: np.float32(g["lr"] / (
                (1.0 + g["lambd"] * g["lr"] * t) ** g["alpha"])), "eta", after=True),
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
        has_step=False, adjust=_lion_decay),
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
        adjust=_none_is_zero),
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
    """The optimizer options of `fastoptim train`. A default is the first declared
    optimizer's that has the hyperparameter (Adam's for betas and eps)."""
    out: list[CliOption] = []
    order = ["Adam"] + [n for n in _BY_NAME if n != "Adam"]
    for hname in CLI_HYPERPARAMETERS:
        owners = [n for n in order if any(h.name == hname for h in _BY_NAME[n].hyperparameters)]
        h = next(h for h in _BY_NAME[owners[0]].hyperparameters if h.name == hname)
        used_by = "/".join(n.lower() for n in names() if n in owners)
        if h.kind == "pair":
            for i, k in enumerate(h.kernel):
                out.append(CliOption(k, "--" + k, "float", h.default[i],
                                     f"{used_by}: {k} (default {h.default[i]})"))
        else:
            out.append(CliOption(hname, "--" + hname.replace("_", "-"), h.kind, h.default,
                                 f"{used_by}: {h.doc}"))
    return tuple(out)


def train_lr(name: str) -> float:
    """The learning rate `fastoptim train` uses when --lr is not given."""
    s = get(name)
    return s.train_lr if s.train_lr is not None else float(s.defaults["lr"])


def build_from_options(name: str, params: Sequence[Any], options: dict[str, Any], *,
                       lr: float, state_dtype: str = "fp32") -> Any:
    """A ``fastoptim.optim`` optimizer from `fastoptim train` options: every CLI
    hyperparameter the optimizer has is passed, the others are ignored; a group option it
    does not have (weight_decay for Rprop) is dropped when zero, else a ValueError.
    ``state_dtype`` other than "fp32" must be one of the optimizer's ``state_dtypes``."""
    from fastoptim import optim

    s = get(name)
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
        kw[h.name] = (tuple(options.get(k, d) for k, d in zip(h.kernel, h.default,
                                                                   strict=True))
                      if h.kind == "pair" else options[h.name])
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
        rows.append(f"| {s.summary} | `{s.name}` | {hyper} | {', '.join(keys)} "
                    f"| `{s.kernel}` |")
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
          "lion-pytorch 0.2.5, pytorch-optimizer 4.1.0), tested over every flag combination.\n")
    print(markdown_table(), end="")
