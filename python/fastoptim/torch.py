"""Drop-in ``torch.optim`` optimizers for CPU tensors, running the fastoptim kernels.

    from fastoptim.torch import Adam      # instead of: from torch.optim import Adam
    opt = Adam(model.parameters(), lr=1e-3)

Each class subclasses ``torch.optim.Optimizer`` with torch's constructor signature, state
layout (``step``, ``exp_avg``, ...) and protocol: ``state_dict()`` loads into the torch
original and back (older state_dicts get torch's flag defaults), step / state_dict /
load_state_dict hooks and the global step hooks run as in torch, ``step(closure)``,
``zero_grad``, ``add_param_group``, deepcopy and pickling, tensor ``lr``, and torch's LR
schedulers (including those that cycle momentum or betas) work unchanged.

How a step runs. The parameters of a group that have a gradient are partitioned by dtype
and step count; each partition is one native multi-tensor call on zero-copy views of the
parameters and state. The views pass the native gate's full checks once and are cached as
validated pointer lists (a *plan*); each later step reads only the gradients anew (dense,
contiguous, expected size, checked natively before any parameter changes), and the plan
is checked every step by cheap identity tests: the same parameters with gradients, the
same storage under each parameter (``p.data = ...`` is seen), the same ``optimizer.state``
object and no change to it or to any parameter's state dict since the plan was built
(``state.clear()``, ``del state[p]``, ``state[p][k] = t`` and ``opt.state =
defaultdict(dict)`` all force a rebuild), and the step counters as last written. A
parameter without a gradient is skipped, as torch skips ``None``.

Memory formats. A contiguous parameter and one that is dense in another order
(``channels_last``, a transposed weight) are updated in place, zero copy: state tensors
are created in the parameter's own layout and the update is elementwise over memory. A
gradient in a different layout is copied into the parameter's layout first (gradients are
only read). A parameter that is a strided view with gaps, or whose state has a different
layout (e.g. loaded from a contiguous checkpoint), is staged: gathered into a contiguous
scratch with its state, updated, and scattered back in the same step.

``state[p]["step"]`` is a float32 0-d tensor, as torch's for-loop optimizers keep it, so
``.item()`` and torch code work. The count that drives the kernel is an exact int64 kept
with the plan (a float32 counter stalls at 2**24); the tensors show it rounded to float32,
and ``state_dict()`` saves the exact count as an int64 tensor, which torch loads.

AMP and clipping in the update pass. ``_step_supports_amp_scaling`` is set, so
``torch.amp.GradScaler("cpu")`` passes ``grad_scale`` and ``found_inf`` as it does to
torch's fused Adam: a step with an inf/NaN gradient is skipped; otherwise the kernel
reads every gradient times ``1 / grad_scale``. ``max_grad_norm=x`` (a constructor
argument and group option, fastoptim's own) folds ``clip_grad_norm_(params, x)`` into the
step: one native pass takes the global L2 norm of the gradients of the groups that set it
(of the unscaled gradients under GradScaler) and the update reads them times
``min(1, x / (norm + 1e-6))``; the norm is kept as the 0-d tensor ``last_grad_norm``.
Gradients are never written (torch's fused Adam writes unscaled gradients back).

Arenas (``arena=True``, a constructor argument and group option): at the first step a
group whose parameters all have contiguous gradients of one dtype gets one buffer for
its parameters (``p.data`` set to views of it), one per state key and one for the
gradients (``p.grad`` set to tensors on it, which backward then accumulates into), and
each step is one kernel call over the flat buffers. ``zero_grad()`` clears the gradient
buffer in one pass and keeps the tensors; with ``set_to_none=True`` a gradient it cleared
that the next backward does not write (its version counter unchanged) counts as None, so
that parameter is skipped as torch skips it. A parameter, state tensor or gradient the
user replaces leaves the flat path for the ordinary one (correct results), and is moved
into a new buffer at the plan's next rebuild.

Complex parameters are stepped as their real views (``torch.view_as_real``), as torch
does. ``fused=True`` (torch's Adam, AdamW, SGD and Adagrad take it) is what every step is
anyway, and is kept with torch's own checks; ``foreach`` is accepted and ignored. A group
with ``differentiable=True``, or with a sparse gradient, is stepped by its torch.optim
original on the same state (autograd cannot see through the native kernels; torch steps
sparse gradients in SGD and Adagrad and refuses them elsewhere). Not supported (clear
errors): CUDA tensors, integer parameters, ``capturable=True``. The native steps write
through raw pointers, so autograd's version counters are not bumped (torch's optimizers
run under ``no_grad`` too; do not backpropagate through a graph that saved a parameter
before the step).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import inspect
import itertools
import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.optim import optimizer as _torch_optimizer

from fastoptim import _core, _torch_formats
from fastoptim import spec as _spec

__all__ = list(_spec.names())

_is = operator.is_
_data_ptr = torch.Tensor.data_ptr
_get_grad = operator.attrgetter("grad")
_nones = itertools.repeat(None)
_grad_pointers = _core._grad_pointers
_fast_grads = _core._fast_grads
_counters_at = _core._counters_at
# the native checks call torch's own accessors of these exact types directly (each read
# then skips attribute lookup); a subclass or a type patched later is read as Python would
_core._register_torch_types((torch.Tensor, torch.nn.Parameter))

# Constructor arguments and group options of every fastoptim.torch optimizer that torch's
# optimizers do not have (a loaded state_dict without one keeps the optimizer's own value).
_OWN_OPTIONS = ("max_grad_norm", "arena")
# torch flags kept as given: foreach (a hint: every step is one native call per group),
# fused (what every step is; torch's Adam, AdamW, SGD and Adagrad take it on the CPU) and
# differentiable (those steps run torch's own implementation, which autograd records).
_KEPT_FLAGS = ("foreach", "fused", "differentiable")


def _consecutive(ts) -> bool:
    """True if the tensors are contiguous and lie back to back, in order, in one storage."""
    base = ts[0].untyped_storage().data_ptr()
    ptr = ts[0].data_ptr()
    for t in ts:
        if (not t.is_contiguous() or t.data_ptr() != ptr
                or t.untyped_storage().data_ptr() != base):
            return False
        ptr += t.numel() * t.element_size()
    return True


def _relocated(ts) -> list | None:
    """Contiguous copies of ts back to back in one new storage (None if they already are).
    Each copy is its own tensor (not a view of the others), with its own version counter."""
    if _consecutive(ts):
        return None
    total = sum(t.numel() for t in ts)
    storage = torch.empty(total, dtype=ts[0].dtype).untyped_storage()
    out, off = [], 0
    with torch.no_grad():
        for t in ts:
            strides: list[int] = []
            step = 1
            for size in reversed(t.shape):  # C order whatever t's layout
                strides.insert(0, step)
                step *= max(size, 1)
            v = torch.empty(0, dtype=t.dtype).set_(storage, off, t.size(), tuple(strides))
            v.copy_(t)
            out.append(v)
            off += t.numel()
    return out


def _flat_over(ts) -> torch.Tensor:
    """One 1-d tensor over consecutive tensors (see _consecutive)."""
    return ts[0].detach().as_strided((sum(t.numel() for t in ts),), (1,))


def _no_clipping(key: str | None, groups) -> bool:
    """No group sets the clipping option ``key`` (None: the class has none); the steady
    step's test, without a method call per group."""
    if key is not None:
        for group in groups:
            if group.get(key) is not None:
                return False
    return True


def _clip_coef(max_norm: float, norm: float, f32: bool) -> float:
    """min(1, max_norm / (norm + 1e-6)) as torch.nn.utils.clip_grad_norm_ computes it: in
    the norm's dtype, as reciprocal times max_norm, NaN kept (a NaN norm gives NaN)."""
    if f32:
        one = np.float32(1.0)
        c = float(one / (np.float32(norm) + np.float32(1e-6)) * np.float32(max_norm))
    else:
        c = 1.0 / (norm + 1e-6) * max_norm
    return c if not c >= 1.0 else 1.0


def _grad_list(grads) -> Any:
    """A read-only pointer list over gradient tensors (contiguous copies where needed)."""
    return _core._pointer_list([_view(g if g.is_contiguous() else g.contiguous(), False)
                                for g in grads], False)


def _sumsq_of(grads) -> float:
    """Sum of squares of the elements of gradient tensors of any dtypes, in float64."""
    by_dtype: dict = {}
    for g in grads:
        by_dtype.setdefault(g.dtype, []).append(g)
    return _core._sumsq([_grad_list(gs) for gs in by_dtype.values()])


# Every change to any fastoptim optimizer's state mapping or per-parameter state dict
# bumps this counter; a plan records its value and is rebuilt when it moved.
_changes = [0]


class _TorchStep(Exception):
    """_build found a sparse gradient: the group's step is torch.optim's own (it steps
    sparse gradients where it can, SGD and Adagrad, and raises its own error elsewhere)."""


class _ParamState(dict):
    """One parameter's state dict; every change bumps ``_changes``."""

    __slots__ = ()

    def __setitem__(self, k, v):
        _changes[0] += 1
        dict.__setitem__(self, k, v)

    def __delitem__(self, k):
        _changes[0] += 1
        dict.__delitem__(self, k)

    def _bump(name: str):  # type: ignore[misc]  # noqa: N805 - builds the methods below
        base = getattr(dict, name)

        def method(self, *args, **kwargs):
            _changes[0] += 1
            return base(self, *args, **kwargs)
        method.__name__ = name
        return method

    clear = _bump("clear")
    pop = _bump("pop")
    popitem = _bump("popitem")
    setdefault = _bump("setdefault")
    update = _bump("update")
    __ior__ = _bump("__ior__")
    del _bump

    def __reduce__(self):
        return (_ParamState, (dict(self),))


class _State(collections.defaultdict):
    """``optimizer.state``: a ``defaultdict(dict)`` whose every change bumps ``_changes``."""

    def __init__(self, default_factory=None, items=()):
        super().__init__(None)
        for k, v in dict(items).items():
            dict.__setitem__(self, k, v)

    def __missing__(self, key):
        _changes[0] += 1
        st = _ParamState()
        dict.__setitem__(self, key, st)
        return st

    def __setitem__(self, k, v):
        _changes[0] += 1
        dict.__setitem__(self, k, v)

    def __delitem__(self, k):
        _changes[0] += 1
        dict.__delitem__(self, k)

    clear = _ParamState.clear
    pop = _ParamState.pop
    popitem = _ParamState.popitem
    setdefault = _ParamState.setdefault
    update = _ParamState.update

    def __reduce__(self):
        return (_State, (None, list(self.items())))

    def __copy__(self):
        return _State(None, self)


def _tracked_state(state) -> _State:
    """A fresh ``_State`` holding ``state``'s entries, dicts as ``_ParamState``."""
    return _State(None, {k: (_ParamState(v) if type(v) is dict else v)
                         for k, v in state.items()})


def _dense(t: torch.Tensor) -> bool:
    """True if t's elements fill exactly numel() consecutive slots (any dimension order)."""
    expected = 1
    dims = sorted((st, s) for s, st in zip(t.shape, t.stride(), strict=True) if s != 1)
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def _view(t: torch.Tensor, flat: bool):
    """A zero-copy kernel view of t: a numpy view where numpy has the dtype, else t itself
    (the native gate takes contiguous tensors too). ``flat``: one dimension over t's
    memory, for a tensor that is dense in another dimension order."""
    t = t.detach()
    if flat:
        t = t.as_strided((t.numel(),), (1,))
    if t.is_complex():
        t = torch.view_as_real(t)
    try:
        return t.numpy()
    except TypeError:
        return t


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.detach().as_strided((t.numel(),), (1,))


def _real(ts) -> list:
    """The tensors of a kernel argument list with each complex one as its real view."""
    return [torch.view_as_real(t.detach()) if isinstance(t, torch.Tensor) and t.is_complex()
            else t for t in ts]


def _float32(n: int) -> float:
    return float(torch.tensor(float(n), dtype=torch.float32))


def _with_hooks(step):
    """``step`` that runs the step hooks exactly as torch's wrapper does (torch's own
    wrapper, used whenever a hook is registered or the profiler is on) and otherwise
    skips the wrapper's record_function context (~5 us a step)."""
    wrapped = torch.optim.Optimizer.profile_hook_step(step)
    profiling = torch._C._autograd._profiler_enabled

    @functools.wraps(step)
    def fast(self, *args, **kwargs):
        if (self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks
                or _torch_optimizer._global_optimizer_pre_hooks
                or _torch_optimizer._global_optimizer_post_hooks or profiling()):
            return wrapped(self, *args, **kwargs)
        return step(self, *args, **kwargs)
    fast.hooked = True  # torch's _patch_step_function leaves it as it is
    return fast


@dataclass(slots=True)
class _Part:
    """One native call of a group: parameters sharing dtype, step count and state keys."""

    params: list                # the parameters, in the call's order
    where: list                 # their names for error messages
    dicts: list                 # their state dicts (None where the optimizer keeps none)
    tensors: list               # per parameter: its state tensors, in _state_keys order
    views: list                 # kernel views of the parameters (None where staged)
    state_views: list           # per state key: the kernel views, or None if absent
    ptrs: list                  # data_ptr() of each parameter when the plan was built
    modes: list                 # per parameter: 0 contiguous, 1 dense in another order, 2 staged
    pick: Any                   # grads of this part from the group's grads list (None: all)
    step: int                   # exact step count (int64 semantics)
    fresh: bool                 # state was just created (first_step for the kernel)
    slow: bool                  # some parameter is not contiguous: per-step conversion
    dtype: Any = None           # the parameters' torch dtype
    pointers: Any = None        # _core._PointerList of the parameters (not for slow parts)
    state_pointers: list = field(default_factory=list)  # per state key, or None
    steps: Any = None           # numpy view of the float32 counters shown in state["step"]
    step_tensors: list = field(default_factory=list)
    # arena parts (group option arena=True): one flat pointer list per role over the
    # consecutive buffers, the gradient tensors that live in the arena and their pointers
    flat_p: Any = None
    flat_s: list = field(default_factory=list)
    flat_g: Any = None
    flat_gt: Any = None         # a flat tensor over the gradient arena (zero_grad clears it)
    agrads: list = field(default_factory=list)
    gptrs: list = field(default_factory=list)
    check: Any = None           # the arena's _core._ArenaCheck


@dataclass(slots=True)
class _Plan:
    params: list                # group["params"] when built (identity-checked)
    mask: list                  # which of them had a gradient
    state: Any                  # the optimizer.state object the plan refers to
    changes: int                # _changes[0] after the build
    tracked: bool               # every state container counts its changes
    structure: tuple            # group flags that decide which state exists
    parts: list
    fast: Any = None            # the one part, when it covers every parameter zero copy
    steady: Any = None          # _steady_step's cached call (built on its first use)


class _Native(torch.optim.Optimizer):
    """Base of the fastoptim.torch optimizers: torch's protocol, plans and staging.

    A subclass declares:

    - ``_state_keys``: names of its per-parameter state tensors, in the order ``_run``
      receives them; ``_has_step``: whether the state holds a ``step`` count;
      ``_structure_keys``: group entries whose truthiness decides which state tensors exist
      (``momentum`` for SGD, ``amsgrad`` for Adam); the plan is rebuilt when they change
      and missing state is then created; ``_forced_flags``: group entries set whatever a
      loaded state_dict says (AdamW: ``decoupled_weight_decay=True``).
    - ``_validate(group)``: raise ``ValueError`` for invalid hyperparameters (called before
      any parameter is read, for the defaults, every added group and every loaded one).
    - ``_new_state(p, group)``: the fresh state of ``p`` (``{}`` if it needs none: no entry
      is then created). Create tensors with ``torch.zeros_like(p)`` so they keep ``p``'s
      memory format; ``step`` (if any) is replaced by the base's counter.
    - ``_run(group, ps, gs, states, step, first)``: one native call. ``ps``/``gs`` are
      equal-length lists of kernel views (numpy arrays or contiguous tensors, one dtype),
      ``states`` one list per ``_state_keys`` entry (None when absent), ``step`` the int
      step being taken, ``first`` True when the state was just created, ``scale`` the
      factor the kernel reads the gradients with (only ever != 1 if ``_kernel_scales``).
    """

    _state_keys: tuple[str, ...] = ()
    _has_step = True
    _structure_keys: tuple[str, ...] = ()
    _forced_flags: dict[str, Any] = {}
    _scalar_keys: tuple[str, ...] = ()  # 0-d state entries (not buffers), passed as lists
    # complex parameters are stepped as their real views (torch.view_as_real: each element
    # an independent (re, im) pair of floats), exactly as torch.optim steps them
    _dtypes: tuple = (torch.float32, torch.float64, torch.complex64, torch.complex128)
    _torch_class: Any = None  # the torch.optim original (differentiable or sparse steps)
    _kernel_scales = False  # _run passes grad_scale to the kernel (else scaled copies are read)
    # the group option of fused clipping; None where the optimizer's own signature already
    # has a max_grad_norm with another meaning (pytorch-optimizer's Lamb)
    _clip_key: str | None = "max_grad_norm"

    def _clips(self, group) -> bool:
        return self._clip_key is not None and group.get(self._clip_key) is not None
    last_grad_norm: torch.Tensor | None = None  # the global norm of the last clipped step

    def __init__(self, params, defaults):
        self._check_hypers(defaults)  # torch checks hyperparameters before reading params
        super().__init__(params, defaults)
        self.state = _tracked_state(self.state)

    # -- the state mapping -----------------------------------------------------------

    @property
    def state(self):
        return self.__dict__["_fo_state"]

    @state.setter
    def state(self, value):
        self.__dict__["_fo_state"] = value

    # -- hooks for subclasses --------------------------------------------------------

    def _new_state(self, p, group) -> dict:
        raise NotImplementedError

    def _validate(self, group) -> None:
        raise NotImplementedError

    def _run(self, group, ps, gs, states, step: int, first: bool, scale: float = 1.0) -> None:
        raise NotImplementedError

    def _partition_key(self, p) -> Any:
        """Beyond dtype, step and layout, what puts p in a separate native call."""
        return None

    # -- validation ------------------------------------------------------------------

    def _check_hypers(self, group) -> None:
        # torch.optim.Adam's (and AdamW's) own checks of tensor hyperparameters
        adam = self._torch_class is not None and issubclass(self._torch_class, torch.optim.Adam)
        lr = group.get("lr")
        if isinstance(lr, torch.Tensor):
            if adam and group.get("foreach") and not group.get("capturable"):
                raise ValueError("lr as a Tensor is not supported for capturable=False and "
                                 "foreach=True")
            if lr.numel() != 1:
                raise ValueError("Tensor lr must be 1-element")
        betas = group.get("betas")
        if betas is not None and adam:
            kinds = {isinstance(b, torch.Tensor) for b in betas}
            if len(kinds) > 1:
                raise ValueError("betas must be either both floats or both Tensors")
        if betas is not None:
            for i, b in enumerate(betas):
                if isinstance(b, torch.Tensor):
                    if adam and group.get("foreach") and not group.get("capturable"):
                        raise ValueError(f"betas[{i}] as a Tensor is not supported for "
                                         f"capturable=False and foreach=True")
                    if b.numel() != 1:
                        raise ValueError(f"Tensor betas[{i}] must be 1-element")
        if group.get("fused"):  # torch's own checks of its flags
            if group.get("differentiable"):
                raise RuntimeError("`fused` does not support `differentiable`")
            if group.get("foreach"):
                raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        if group.get("differentiable"):
            if self._torch_class is None:
                raise ValueError(f"fastoptim.torch.{type(self).__name__} does not support "
                                 f"differentiable=True (it has no torch.optim original "
                                 f"to run it)")
            if group.get("state_dtype", "fp32") != "fp32":
                raise ValueError("differentiable=True needs state_dtype='fp32'")
            if self._clips(group):
                raise ValueError("max_grad_norm is not fused into a differentiable=True "
                                 "step; clip with torch.nn.utils.clip_grad_norm_")
        if not isinstance(group.get("arena", False), bool):
            raise ValueError(f"arena must be True or False, got {group['arena']!r}")
        clip = group.get("max_grad_norm") if self._clip_key else None
        if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float))
                                 or not clip >= 0):
            raise ValueError(f"max_grad_norm must be None or a number >= 0, got {clip!r}")
        self._validate(group)

    def _check_param(self, p, where: str, group=None) -> None:
        """dtype (at construction and step); with the step's ``group``, device too (as
        torch, a parameter may be created on the meta device and moved before stepping)."""
        if not isinstance(p, torch.Tensor):
            return  # torch raises its own TypeError
        if group is not None and group.get("fused") and not (
                p.device.type == "cpu" and p.is_floating_point()):
            raise RuntimeError(f"`fused=True` requires all the params to be floating point "
                               f"Tensors of supported devices: ['cpu'] but {p.dtype} and "
                               f"{p.device.type} ({where})")
        if group is not None and p.device.type != "cpu":
            raise ValueError(f"{where} is on {p.device}; fastoptim.torch updates CPU tensors "
                             f"only (use torch.optim on GPUs)")
        if p.dtype not in self._dtypes:
            raise TypeError(f"{where} has dtype {p.dtype}; fastoptim.torch."
                            f"{type(self).__name__} updates "
                            f"{'/'.join(str(d).replace('torch.', '') for d in self._dtypes)} "
                            f"tensors")

    def add_param_group(self, param_group):
        if isinstance(param_group, dict):
            params = param_group.get("params")
            if params is not None and not isinstance(params, (torch.Tensor, set)):
                param_group["params"] = params = list(params)
            if isinstance(params, torch.Tensor):
                params = [params]
            gi = len(getattr(self, "param_groups", ()))
            tensors = []
            for j, p in enumerate(params or ()):
                name = f" ({p[0]!r})" if isinstance(p, tuple) else ""
                t = p[1] if isinstance(p, tuple) else p
                if isinstance(t, torch.Tensor):
                    self._check_param(t, f"param_groups[{gi}]['params'][{j}]{name} of shape "
                                         f"{tuple(t.shape)}")
                    tensors.append(t)
            hypers = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
            self._check_hypers(hypers)
            if self._clips(hypers) and _torch_formats.handles({**hypers, "params": tensors}):
                raise ValueError("max_grad_norm is not supported with state_dtype or bf16/fp16 "
                                 "parameters: call torch.nn.utils.clip_grad_norm_ before step()")
        super().add_param_group(param_group)

    @staticmethod
    def _where(gi: int, j: int, group, p) -> str:
        names = group.get("param_names")
        name = f" ({names[j]!r})" if names and j < len(names) else ""
        return f"param_groups[{gi}]['params'][{j}]{name} of shape {tuple(p.shape)}"

    # -- loading, pickling -----------------------------------------------------------

    @classmethod
    def _signature_defaults(cls) -> dict:
        sig = inspect.signature(cls.__init__)
        return {k: v.default for k, v in sig.parameters.items()
                if k not in ("self", "params") and v.default is not inspect.Parameter.empty}

    def __setstate__(self, state):
        state = dict(state)
        groups = state.get("param_groups")
        if groups is not None:  # torch's defaults for flags an older state_dict lacks
            defaults = self._signature_defaults()
            own = state.get("defaults") or self.__dict__.get("defaults") or {}
            for k in _OWN_OPTIONS:  # not torch's: a group saved without it keeps ours
                if k in defaults:
                    defaults[k] = own.get(k, defaults[k])
            for g in groups:
                for k, v in defaults.items():
                    g.setdefault(k, v)
                g.update(self._forced_flags)
            for g in groups:  # everything checked before anything changes
                self._check_hypers(g)
        st = state.pop("state", None)
        super().__setstate__(state)
        if st is not None:
            st = _tracked_state(st)
            for v in st.values():
                if isinstance(v, dict) and "step" in v and not torch.is_tensor(v["step"]):
                    dict.__setitem__(v, "step", torch.tensor(int(v["step"]),
                                                             dtype=torch.int64))
            self.state = st
        self.__dict__.pop("_fo_plans", None)

    def __getstate__(self):
        sd = super().__getstate__()
        sd["state"] = _State(None, {k: self._exact_steps(v) for k, v in self.state.items()})
        return sd

    def _issued_steps(self) -> dict:
        out = {}
        for plan in self.__dict__.get("_fo_plans", {}).values():
            for part in plan.parts:
                for t in part.step_tensors:
                    out[id(t)] = (t, part.step)
        return out

    def _exact_steps(self, v, issued=None):
        """v with its step as an exact int64 0-d tensor (a copy of the dict), else v."""
        if not (isinstance(v, dict) and "step" in v):
            return v
        issued = self._issued_steps() if issued is None else issued
        return _ParamState({**v, "step": torch.tensor(self._step_of(v["step"], issued),
                                                      dtype=torch.int64)})

    @staticmethod
    def _step_of(s, issued) -> int:
        hit = issued.get(id(s))
        if hit is not None and hit[0] is s and float(s) == _float32(hit[1]):
            return hit[1]  # ours and unchanged: the exact count
        return int(s)

    def state_dict(self):
        """torch's state_dict; ``step`` is the exact count as an int64 0-d tensor."""
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        pre, post = self._optimizer_state_dict_pre_hooks, self._optimizer_state_dict_post_hooks
        self._optimizer_state_dict_pre_hooks = collections.OrderedDict()
        self._optimizer_state_dict_post_hooks = collections.OrderedDict()
        try:
            sd = super().state_dict()
        finally:
            self._optimizer_state_dict_pre_hooks = pre
            self._optimizer_state_dict_post_hooks = post
        issued = self._issued_steps()
        sd["state"] = {k: (dict(self._exact_steps(v, issued)) if isinstance(v, dict) else v)
                       for k, v in sd["state"].items()}
        for hook in post.values():
            out = hook(self, sd)
            if out is not None:
                sd = out
        return sd

    # -- plans -----------------------------------------------------------------------

    def _plan_ok(self, plan: _Plan, group, params, mask) -> bool:
        if not (len(params) == len(plan.params) and all(map(_is, params, plan.params))
                and mask == plan.mask):
            return False
        for part in plan.parts:
            if list(map(_data_ptr, part.params)) != part.ptrs:
                return False  # p.data = ... replaced a parameter's storage
        return self._plan_state_ok(plan, group)

    def _plan_state_ok(self, plan: _Plan, group) -> bool:
        """The plan's state, flags and step counters still hold (its parameters checked by
        the caller)."""
        if not self._plan_holds(plan, group):
            return False
        for part in plan.parts:
            if part.steps is not None and not _counters_at(part.steps, part.step):
                return False  # a step tensor was changed in place
        return True

    def _plan_holds(self, plan: _Plan, group) -> bool:
        """_plan_state_ok but for the step counters (_steady_step checks them natively)."""
        if self.state is not plan.state:
            return False
        keys = self._structure_keys
        if keys and plan.structure != tuple([bool(group[k]) for k in keys]):
            return False
        if not (plan.tracked and _changes[0] == plan.changes):
            if not self._state_unchanged(plan):
                return False
            plan.changes = _changes[0]
        return True

    def _state_unchanged(self, plan: _Plan) -> bool:
        get = self.state.get
        keys = self._state_keys
        for part in plan.parts:
            for p, st, ts, i in zip(part.params, part.dicts, part.tensors,
                                    range(len(part.params)), strict=False):
                cur = get(p)
                if cur is not st:
                    return False
                if st is None:
                    continue
                if any(st.get(k) is not t for k, t in zip(keys, ts, strict=False)):
                    return False
                if part.step_tensors and st.get("step") is not part.step_tensors[i]:
                    return False
        return True

    def _build(self, gi: int, group, params, gs, mask) -> _Plan:
        self._check_hypers(group)
        if self._torch_class is not None and any(
                g is not None and g.layout != torch.strided for g in gs):
            raise _TorchStep  # (before anything changes)
        old = self.__dict__.get("_fo_plans", {}).get(gi)
        issued = {}
        if old is not None:
            for part in old.parts:
                for t in part.step_tensors:
                    issued[id(t)] = (t, part.step)
        state = self.state
        keys = self._state_keys
        needed = None
        groups: dict = {}
        for j, (p, g) in enumerate(zip(params, gs, strict=False)):
            if g is None:
                continue
            where = self._where(gi, j, group, p)
            self._check_param(p, where, group)
            if g.layout != torch.strided:
                raise TypeError(f"the gradient of {where} is a {g.layout} tensor; "
                                f"fastoptim.torch does not support sparse gradients")
            if g.dtype != p.dtype or g.device != p.device or g.shape != p.shape:
                raise TypeError(f"the gradient of {where} is a {g.dtype} tensor of shape "
                                f"{tuple(g.shape)} on {g.device}; expected {p.dtype}, "
                                f"{tuple(p.shape)}, cpu")
            st = state.get(p)
            fresh = False
            if st is not None and not isinstance(st, dict):
                raise TypeError(f"optimizer.state of {where} is a {type(st).__name__}, "
                                f"expected a dict")
            if not st:
                new = self._new_state(p, group)
                if new or self._has_step:
                    if st is None:
                        st = state[p]
                    st.update(new)
                    fresh = True
                else:
                    st = None
            else:
                if needed is None:
                    needed = [k for k in self._new_state(p, group) if k in keys]
                if any(k not in st for k in needed):
                    for k, v in self._new_state(p, group).items():
                        if k not in st:
                            st[k] = v
                    fresh = True
            ts = [None if st is None else st.get(k) for k in keys]
            for k, t in zip(keys, ts, strict=False):
                if t is None:
                    continue
                if k in self._scalar_keys:  # 0-d state (NAdam's mu_product, ASGD's eta)
                    if not (isinstance(t, torch.Tensor) and t.dim() == 0
                            and t.dtype.is_floating_point):
                        raise ValueError(f"optimizer.state of {where}: {k!r} must be a 0-d "
                                         f"floating-point tensor, got {t!r}")
                    continue
                if not isinstance(t, torch.Tensor) or t.shape != p.shape or t.dtype != p.dtype:
                    got = (f"{t.dtype} of shape {tuple(t.shape)}" if torch.is_tensor(t)
                           else type(t).__name__)
                    raise ValueError(f"optimizer.state of {where}: {k!r} must be a "
                                     f"{p.dtype} tensor of shape {tuple(p.shape)}, got {got}")
                if t.layout != torch.strided or t.device.type != "cpu":
                    raise ValueError(f"optimizer.state of {where}: {k!r} must be a dense "
                                     f"CPU tensor")
            step = 0
            if self._has_step and not fresh:
                s = st.get("step")
                step = 0 if s is None else self._step_of(s, issued)
            present = [t for k, t in zip(keys, ts, strict=False)
                       if t is not None and k not in self._scalar_keys]
            if p.is_contiguous() and all(t.is_contiguous() for t in present):
                mode = 0
            elif _dense(p) and all(t.stride() == p.stride() for t in present):
                mode = 1
            else:
                mode = 2
            key = (p.dtype, step, fresh, mode != 0, tuple(t is not None for t in ts),
                   self._partition_key(p))
            groups.setdefault(key, []).append((j, p, where, st, ts, mode))
        parts = []
        n_with_grad = sum(1 for g in gs if g is not None)
        arena = self._arena_items(group, groups, n_with_grad, len(params))
        if arena is not None:
            self._place(arena, gs)
        for (_, step, fresh, slow, present, _), items in groups.items():
            js = [it[0] for it in items]
            pick: Any
            if len(items) == n_with_grad and js == list(range(len(params))):
                pick = None
            elif len(js) == 1:
                j0 = js[0]
                pick = lambda gs, j0=j0: [gs[j0]]  # noqa: E731
            else:
                pick = operator.itemgetter(*js)
            ps = [it[1] for it in items]
            modes = [it[5] for it in items]
            views = [None if m == 2 else _view(p, m == 1) for p, m in zip(ps, modes, strict=False)]
            state_views: list[Any] = []
            for k, here in enumerate(present):
                if not here:
                    state_views.append(None)
                    continue
                scalar = self._state_keys[k] in self._scalar_keys
                state_views.append([_view(it[4][k], False) if scalar
                                    else None if m == 2 else _view(it[4][k], m == 1)
                                    for it, m in zip(items, modes, strict=False)])
            part = _Part(params=ps, where=[it[2] for it in items], dicts=[it[3] for it in items],
                         tensors=[it[4] for it in items], views=views, state_views=state_views,
                         ptrs=list(map(_data_ptr, ps)), modes=modes, pick=pick, step=step,
                         fresh=fresh, slow=slow, dtype=ps[0].dtype)
            if not slow:
                part.pointers = _core._pointer_list(views, True)
                # 0-d scalar state (NAdam's mu_product) stays a list: _run updates it in Python
                part.state_pointers = [
                    sv if sv is None or k in self._scalar_keys else _core._pointer_list(sv, True)
                    for k, sv in zip(self._state_keys, state_views, strict=True)]
            if items is arena:
                self._attach_flat(part, [gs[j] for j in js])
            if self._has_step:
                counters = torch.full((len(ps),), _float32(step), dtype=torch.float32)
                part.steps = counters.numpy()
                part.step_tensors = [counters[i] for i in range(len(ps))]
                for st, t in zip(part.dicts, part.step_tensors, strict=False):
                    dict.__setitem__(st, "step", t)
            parts.append(part)
        tracked = type(state) is _State and all(
            type(st) is _ParamState for part in parts for st in part.dicts if st is not None)
        fast = (parts[0] if len(parts) == 1 and parts[0].pick is None and not parts[0].slow
                and all(m == 0 for m in parts[0].modes) else None)
        return _Plan(params=list(params), mask=mask, state=state, changes=_changes[0],
                     tracked=tracked,
                     structure=tuple(bool(group[k]) for k in self._structure_keys),
                     parts=parts, fast=fast)

    # -- arenas ------------------------------------------------------------------------

    def _arena_items(self, group, groups: dict, n_with_grad: int, n: int):
        """The items of the group's one partition if it goes into an arena: arena=True,
        every parameter has a gradient, one dtype, contiguous, no 0-d scalar state."""
        if not group.get("arena") or len(groups) != 1 or self._scalar_keys:
            return None
        (key, items), = groups.items()
        if key[3] or len(items) != n or n_with_grad != n:
            return None
        return items

    def _place(self, items, gs) -> None:
        """Moves the parameters, their state buffers and their gradients, each role into
        one buffer in the items' order (a role already laid out so is left as it is):
        ``p.data``, ``state[p][k]`` and ``p.grad`` are set to the new tensors."""
        ps = [it[1] for it in items]
        new = _relocated([p.detach() for p in ps])
        if new is not None:
            for p, t in zip(ps, new, strict=True):
                p.data = t
        for k, key in enumerate(self._state_keys):
            ts = [it[4][k] for it in items]
            if any(t is None for t in ts):
                continue
            new = _relocated(ts)
            if new is not None:
                for it, t in zip(items, new, strict=True):
                    it[4][k] = t
                    dict.__setitem__(it[3], key, t)
        grads = [gs[it[0]] for it in items]
        moves = self.__dict__.setdefault("_fo_grad_moves", collections.Counter())
        first = id(items[0][1])
        if moves[first] >= 3 and not _consecutive(grads):
            return  # gradients keep being replaced (not cleared with opt.zero_grad()): stop
        new = _relocated(grads)
        if new is not None:
            moves[first] += 1
            for it, t in zip(items, new, strict=True):
                it[1].grad = t
                gs[it[0]] = t

    def _attach_flat(self, part: _Part, grads) -> None:
        """Flat pointer lists for a part whose roles each lie in one buffer."""
        if not (_consecutive(part.params) and _consecutive(grads) and all(
                _consecutive([ts[k] for ts in part.tensors])
                for k in range(len(self._state_keys)) if part.tensors[0][k] is not None)):
            return
        part.flat_p = _core._pointer_list([_view(_flat_over(part.params), False)], True)
        part.flat_s = [None if part.tensors[0][k] is None else _core._pointer_list(
            [_view(_flat_over([ts[k] for ts in part.tensors]), False)], True)
            for k in range(len(self._state_keys))]
        part.flat_gt = _flat_over(grads)
        part.flat_g = _core._pointer_list([_view(part.flat_gt, False)], False)
        part.agrads = list(grads)
        part.gptrs = list(map(_data_ptr, grads))
        part.check = _core._ArenaCheck(list(part.params), part.agrads, part.ptrs, part.gptrs)

    def _arena_holds(self, gi: int, plan: _Plan, part: _Part, params) -> bool:
        """Group gi's arena is as built: the same tensors on the same storage, and every
        gradient written since zero_grad (one it cleared and backward did not reach counts
        as None, which takes the general path)."""
        z = self.__dict__.get("_fo_zeroed", {}).get(gi)
        return (z is None or z[0] is part.agrads) and part.check(params, z is not None)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's zero_grad; a group in an arena keeps its gradient tensors and clears the
        arena in one pass. With ``set_to_none`` a gradient cleared so and not written by
        the next backward counts as None at the next step (the parameter is skipped)."""
        plans = self.__dict__.get("_fo_plans") or {}
        zeroed = self.__dict__.setdefault("_fo_zeroed", {})
        rest = []
        for gi, group in enumerate(self.param_groups):
            zeroed.pop(gi, None)
            plan = plans.get(gi)
            part = plan.fast if plan is not None else None
            params = group["params"]
            if part is not None and part.flat_g is not None and part.check(params, False):
                part.flat_gt.zero_()
                if set_to_none:
                    zeroed[gi] = (part.agrads, part.check.versions())
            else:
                rest.append(group)
        if not rest:
            return
        groups = self.param_groups
        try:  # torch's own zero_grad for the other groups
            self.param_groups = rest
            super().zero_grad(set_to_none)
        finally:
            self.param_groups = groups

    def _staged(self, part: _Part, grads):
        """Kernel inputs of a part with non-contiguous members, and the copies to write back."""
        views: list[Any] = []
        gviews: list[Any] = []
        back: list[tuple[Any, Any]] = []
        sviews: list[Any] = [None if sv is None else [] for sv in part.state_views]
        for i, (p, g, mode) in enumerate(zip(part.params, grads, part.modes, strict=False)):
            ts = [t for t in part.tensors[i] if t is not None]
            if mode == 0:
                views.append(part.views[i])
                gviews.append(g if g.is_contiguous() else g.contiguous())
                cur = [sv[i] for sv in part.state_views if sv is not None]
            elif mode == 1:
                views.append(part.views[i])
                if g.stride() != p.stride():
                    g = torch.empty_like(p).copy_(g)
                gviews.append(_flat(g))
                cur = [sv[i] for sv in part.state_views if sv is not None]
            else:
                sp = p.detach().contiguous()
                views.append(sp)
                if sp is not p.detach():
                    back.append((p, sp))
                gviews.append(g.contiguous())
                cur = []
                for t in ts:
                    s = t.contiguous()
                    if s is not t:
                        back.append((t, s))
                    cur.append(s)
            it = iter(cur)
            for sv in sviews:
                if sv is not None:
                    sv.append(next(it))
        return views, gviews, sviews, back

    def _run_part(self, group, part: _Part, grads, gp, scale: float = 1.0) -> None:
        """One native call. ``gp``: the gradients' pointer list (the steady state: every
        other buffer is the plan's, checked when it was built); None: every array goes
        through the native gate's full checks, non-contiguous members staged. ``scale``:
        the factor every gradient is read with (AMP's 1/scale times the clip factor);
        the gradients themselves are never written."""
        step = part.step + 1
        back: Any = ()
        if scale != 1.0 and not self._kernel_scales:
            # a kernel without grad_scale reads scaled copies (the gradients stay as they are)
            if grads is None:  # (the fast path checked them natively)
                grads = [p.grad for p in part.params]
            grads = torch._foreach_mul([g.detach() for g in grads], scale)
            gp, scale = None, 1.0
        if gp is not None and gp is part.flat_g:
            self._run(group, part.flat_p, gp, part.flat_s, step, part.fresh, scale)
        elif gp is not None:
            self._run(group, part.pointers, gp, part.state_pointers, step, part.fresh, scale)
        else:
            views, svs = part.views, part.state_views
            if part.slow:
                views, grads, svs, back = self._staged(part, grads)
            else:
                grads = [g if g.is_contiguous() else g.contiguous() for g in grads]
            if part.dtype.is_complex:
                views, grads = _real(views), _real(grads)
                svs = [None if sv is None else _real(sv) for sv in svs]
            self._run(group, views, grads, svs, step, part.fresh, scale)
        for dst, src in back:
            dst.detach().copy_(src)
        self._advance(part, step)

    def _prepare(self, gi: int, group) -> list | None:
        """The native calls of one group this step: (part, its gradients, their pointer
        list or None). Every gradient is checked before any parameter changes.

        This is the one place a group is dispatched: a group with bf16/fp16 parameters or
        a reduced-precision state would be routed to its own path here (today
        ``_check_param`` admits float32/float64 only); everything below is the
        float32/float64 plan path (the arena, the one-part fast check, the full build)."""
        params = group["params"]
        plans = self.__dict__.get("_fo_plans")
        if plans is None:
            plans = self.__dict__["_fo_plans"] = {}
        plan = plans.get(gi)
        gs = None
        if plan is not None and plan.fast is not None:
            part = plan.fast
            if part.flat_g is not None:  # an arena: one flat call
                if (self._arena_holds(gi, plan, part, params)
                        and self._plan_state_ok(plan, group)):
                    return [(part, part.agrads, part.flat_g)]
                gs = list(map(_get_grad, params))
            else:
                # the common case in one native call: the same parameters, each with a
                # dense gradient, each on the storage the plan was built on
                gp = _fast_grads(params, plan.params, part.pointers)
                if gp is not None and self._plan_state_ok(plan, group):
                    return [(part, None, gp)]
        if gs is None:
            gs = list(map(_get_grad, params))
        z = self.__dict__.get("_fo_zeroed", {}).get(gi)
        if z is not None:  # cleared by zero_grad(set_to_none=True), not written since: None
            cleared = {id(a): (a, v) for a, v in zip(*z, strict=True)}
            gs = [None if (hit := cleared.get(id(g))) is not None and hit[0] is g
                  and hit[1] == g._version else g for g in gs]
        mask = list(map(_is, gs, _nones))
        if plan is not None and self._plan_ok(plan, group, params, mask):
            try:
                gps = [None if part.slow else _grad_pointers(
                    gs if part.pick is None else list(part.pick(gs)), part.pointers)
                    for part in plan.parts]
            except ValueError:
                gps = None  # a gradient in another layout: rebuild, full checks
            if gps is not None:
                return [(part, gs if part.pick is None else part.pick(gs), gp)
                        for part, gp in zip(plan.parts, gps, strict=True)]
        if _torch_formats.handles(group):  # bf16/fp16 parameters or reduced-precision state
            plans.pop(gi, None)
            return None  # stepped by _format_step
        plan = plans[gi] = self._build(gi, group, params, gs, mask)
        return [(part, gs if part.pick is None else part.pick(gs), None) for part in plan.parts]

    def _step_group(self, gi: int, group, scale: float = 1.0) -> None:
        if group.get("differentiable"):
            self._torch_step(gi, group, scale)
            return
        try:
            calls = self._prepare(gi, group)
        except _TorchStep:
            self._torch_step(gi, group, scale)
            return
        if calls is None:
            self._format_step(gi, group, scale)
        else:
            for part, grads, gp in calls:
                self._run_part(group, part, grads, gp, scale)
        self._group_done(group)

    def _torch_step(self, gi: int, group, scale: float) -> None:
        """Group gi's step by its torch.optim original, on this optimizer's own state
        (torch's keys and layout): with differentiable=True (autograd records torch's
        step; the native kernels are opaque to it) or a sparse gradient. Under GradScaler
        its gradients are unscaled in place first, as torch's unscale_ does."""
        if scale != 1.0:
            with torch.no_grad():
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.mul_(scale)
        for p in group["params"]:  # torch keeps every step count as a tensor
            st = self.state.get(p)
            if isinstance(st, dict) and "step" in st and not torch.is_tensor(st["step"]):
                st["step"] = torch.tensor(float(st["step"]), dtype=_scalar(0.0).dtype)
        twin = object.__new__(self._torch_class)
        twin.__dict__.update(self.__dict__)
        twin.__dict__["state"] = self.state
        twin.__dict__["param_groups"] = [group]
        fn = self._torch_class.step
        while getattr(fn, "hooked", False):  # torch's hook wrapper: our step ran the hooks
            fn = fn.__wrapped__
        self.__dict__.get("_fo_plans", {}).pop(gi, None)
        fn(twin)
        self._group_done(group)

    def _format_step(self, gi: int, group, scale: float) -> None:
        """A group of bf16/fp16 parameters or reduced-precision state (_torch_formats).
        Under GradScaler its gradients are unscaled in place first, as torch's unscale_
        does (the format kernels take no gradient factor)."""
        if scale != 1.0:
            gs = [p.grad for p in group["params"] if p.grad is not None]
            with torch.no_grad():
                torch._foreach_mul_(gs, scale)
        _torch_formats.step_group(self, gi, group)

    def _begin_step(self) -> None:
        """Before a step's updates (schedule-free: refuses a step in eval mode)."""

    def _group_done(self, group) -> None:
        """After a group's update (schedule-free: advances the group's own state)."""

    # torch.amp.GradScaler("cpu") hands this optimizer the scale and the inf flag (as it
    # does torch's fused Adam) instead of unscaling the gradients itself.
    _step_supports_amp_scaling = True

    @_with_hooks
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure()'s loss.

        With ``max_grad_norm`` set (constructor or group option): the global L2 norm of
        the gradients of those groups is taken in one native pass, and the update reads
        every gradient times ``min(1, max_grad_norm / (norm + 1e-6))``, as
        ``torch.nn.utils.clip_grad_norm_`` followed by the step would, without writing the
        gradients; the norm is kept as the 0-d tensor ``last_grad_norm``.

        Under ``torch.amp.GradScaler``: the step is skipped (parameters, state and step
        counts untouched) when ``found_inf`` is set; otherwise the update reads the
        gradients times ``1 / grad_scale`` (the norm is that of the unscaled gradients)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        attrs = self.__dict__
        groups = self.param_groups
        found_inf = attrs.get("found_inf")
        grad_scale = attrs.get("grad_scale")
        steady = self._steady
        if not steady:
            self._begin_step()
        if found_inf is None and grad_scale is None and _no_clipping(self._clip_key, groups):
            for gi, group in enumerate(groups):
                if not (steady and self._steady_step(gi, group)):
                    self._step_group(gi, group)
            return loss
        if steady:
            self._begin_step()
        self._scaled_step(groups, found_inf, grad_scale)
        return loss

    # Whether _steady_step may take a group's step: an optimizer whose one native call per
    # part is all a step does (no mode check to begin with, no group state to advance, no
    # scalar state).
    _steady = False

    def _steady_step(self, gi: int, group) -> bool:
        """Takes group gi's step in one native call when its cached one-part plan still
        holds; False, having changed nothing, where it cannot (_SpecNative's)."""
        return False

    @staticmethod
    def _advance(part: _Part, step: int) -> None:
        """After a part's native call: its step count and the counters in its state."""
        part.fresh = False
        part.step = step
        if part.steps is not None:
            part.steps.fill(step)

    def _scaled_step(self, groups, found_inf, grad_scale) -> None:
        """A step under GradScaler and/or with clipping (see ``step``)."""
        inv = 1.0 if grad_scale is None else 1.0 / float(grad_scale)
        skip = found_inf is not None and float(found_inf) != 0.0
        clipped = [g for g in groups if self._clips(g)]
        if not clipped:
            if not skip:
                for gi, group in enumerate(groups):
                    self._step_group(gi, group, inv)
            return
        if skip:  # report the norm as clip_grad_norm_ would, touch nothing else
            grads = [p.grad for g in clipped for p in g["params"] if p.grad is not None]
            self._set_norm(_sumsq_of(grads), inv, all(g.dtype == torch.float32 for g in grads))
            return
        prepared = [self._prepare_or_torch(gi, group) for gi, group in enumerate(groups)]
        lists, f32 = [], True
        for group, calls in zip(groups, prepared, strict=True):
            if calls is _TorchStep:
                if self._clips(group):
                    raise ValueError("max_grad_norm cannot clip sparse gradients; use "
                                     "torch.nn.utils.clip_grad_norm_ on dense ones")
                continue
            if self._clips(group) and calls is not None:
                for part, grads, gp in calls:
                    lists.append(gp if gp is not None else _grad_list(grads))
                    f32 = f32 and part.dtype == torch.float32
        norm = self._set_norm(_core._sumsq(lists), inv, f32)
        for gi, (group, calls) in enumerate(zip(groups, prepared, strict=True)):
            scale = inv
            if calls is _TorchStep:
                self._torch_step(gi, group, scale)
                continue
            if self._clips(group):
                scale = inv * _clip_coef(float(group["max_grad_norm"]), norm, f32)
            if calls is None:  # (never clipped: refused by _check_group)
                self._format_step(gi, group, scale)
            else:
                for part, grads, gp in calls:
                    self._run_part(group, part, grads, gp, scale)
            self._group_done(group)

    def _prepare_or_torch(self, gi: int, group) -> Any:
        """_prepare's calls, or _TorchStep where the group's step is torch's own."""
        if group.get("differentiable"):
            return _TorchStep
        try:
            return self._prepare(gi, group)
        except _TorchStep:
            return _TorchStep

    def _set_norm(self, sumsq: float, inv: float, f32: bool) -> float:
        norm = math.sqrt(sumsq) * inv
        self.last_grad_norm = torch.tensor(norm, dtype=torch.float32 if f32 else torch.float64)
        return float(self.last_grad_norm) if f32 else norm

    def load_state_dict(self, state_dict):
        quantized = _torch_formats.check_state_dict(self, state_dict)  # before any change
        super().load_state_dict(state_dict)
        _torch_formats.restore(self, state_dict, quantized)
        self.__dict__.pop("_fo_plans", None)


# torch.optim's own wording of a refused hyperparameter, by name (the first-order
# optimizers' "Invalid ... value" family) and by optimizer for the others'.
def _torch_head(cls: str, name: str, idx: int | None, v: Any) -> str | None:
    if cls in ("Adafactor", "Muon"):
        if name == "eps" and isinstance(v, tuple):
            bad = 0 if v[0] is not None and not v[0] >= 0 else 1
            return f"epsilon{bad + 1} should be >= 0 but is: {v[bad]}"
        return {"lr": f"Learning rate should be >= 0 but is: {v}",
                "d": f"Clipping threshold d should be >= 1 but is: {v}",
                "beta2_decay": f"beta2_decay should be <= 0 but is: {v}",
                "weight_decay": f"weight decay should be >= 0 but is: {v}",
                "momentum": f"momentum should be >= 0 but is: {v}",
                "adjust_lr_fn": f"Adjust learning rate function {v} is not supported"}.get(name)
    if name == "betas":
        if idx is None:  # (one message for the pair: the first out of [0, 1))
            idx = next((i for i, b in enumerate(v) if not 0 <= b < 1), 0)
        return f"Invalid beta parameter at index {idx}: {v[idx]}"
    if name == "etas":
        return f"Invalid eta values: {v[0]}, {v[1]}"
    if idx is not None:
        return None
    return {"lr": f"Invalid learning rate: {v}",
            "eps": f"Invalid epsilon value: {v}"}.get(name, f"Invalid {name} value: {v}")


def _torch_wording(validate, group, *args, cls: str = "") -> None:
    """validate(group, *args), a ValueError about one hyperparameter reworded as torch.optim
    words it, followed by fastoptim's statement of what is expected: "Invalid beta
    parameter at index 0: 1.0 (betas[0] must be in [0, 1))". Code that matches torch's
    messages keeps matching."""
    try:
        validate(group, *args)
    except ValueError as e:
        msg = str(e)
        m = re.match(r"(\w+)(?:\[(\d)\])? must", msg)
        if m is None or m.group(1) not in group:
            raise
        idx = None if m.group(2) is None else int(m.group(2))
        head = _torch_head(cls, m.group(1), idx, group[m.group(1)])
        if head is None:
            raise
        raise ValueError(f"{head} ({msg.split(', got ')[0]})") from None


def _full_like(p: torch.Tensor, value: float) -> torch.Tensor:
    """State in p's own memory format (the base class updates it elementwise over memory);
    for a complex p, value in both halves of each element (torch's complex(value, value))."""
    value = float(value)  # (Rprop's step sizes start at lr, which may be a tensor)
    if value == 0:
        return torch.zeros_like(p)
    return torch.full_like(p, complex(value, value) if p.is_complex() else value)


def _scalar(value: float) -> torch.Tensor:
    """A 0-d tensor in torch's scalar dtype (float32 unless the default is float64)."""
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return torch.tensor(value, dtype=dtype)


class _SpecNative(_Native):
    """A torch optimizer whose signature, defaults, docs, checks, state and kernel call come
    from its declaration in fastoptim.spec (``class Name(_SpecNative, spec="Name")``)."""

    _spec: _spec.OptimizerSpec
    _signature: inspect.Signature

    def __init_subclass__(cls, spec: str, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        s = _spec.get(spec)
        cls._spec = s
        cls._state_keys = s.state_keys
        cls._scalar_keys = tuple(sc.key for sc in s.scalars)
        cls._has_step = s.has_step
        cls._structure_keys = tuple(dict.fromkeys(b.when for b in s.state if b.when))
        cls._forced_flags = dict(s.fixed)
        ref = getattr(torch.optim, s.name, None)  # the torch.optim original, if any
        cls._torch_class = (ref if isinstance(ref, type)
                            and issubclass(ref, torch.optim.Optimizer) else None)
        if cls._torch_class is not None and "differentiable" in s.torch_signature:
            # a group switched to differentiable=True leaves its cached plan for torch's step
            cls._structure_keys += ("differentiable",)
        cls._kernel_scales = any(h[0] == "grad_scale"
                                 for h in _core.kernel_specs[s.kernel]["hypers"])
        cls.__doc__ = s.docstring("torch")
        P = inspect.Parameter
        params = [P("self", P.POSITIONAL_OR_KEYWORD), P("params", P.POSITIONAL_OR_KEYWORD)]
        kind: inspect._ParameterKind = P.POSITIONAL_OR_KEYWORD
        for n in s.torch_signature:
            if n == "*":
                kind = P.KEYWORD_ONLY
                continue
            default = (s.flag_defaults.get(n, _spec.TORCH_FLAGS[n]) if n in _spec.TORCH_FLAGS
                       else s.defaults[n])
            params.append(P(n, kind, default=default))
        # fastoptim's own options, after torch's signature (Lamb's signature has its own
        # max_grad_norm, so fused clipping is not offered there)
        cls._clip_key = None if "max_grad_norm" in s.torch_signature else "max_grad_norm"
        if cls._clip_key:
            params.append(P("max_grad_norm", P.KEYWORD_ONLY, default=None))
        params.append(P("arena", P.KEYWORD_ONLY, default=False))
        if len(s.state_dtypes) > 1:  # bf16/fp16 parameters and state_dtype: _torch_formats
            params.append(P("state_dtype", P.KEYWORD_ONLY, default="fp32"))
            cls._dtypes = (*_Native._dtypes, *_torch_formats.REDUCED_PARAM_DTYPES)
        cls._signature = inspect.Signature(params)
        cls.__signature__ = cls._signature.replace(  # type: ignore[attr-defined]
            parameters=params[1:])
        # a step that is one plain kernel call per part (see _Native._steady_step)
        cls._steady = (s.modes is None and s.advance is None and s.split is None
                       and not s.scalars and s.adjust is None
                       and all(getattr(cls, m) is getattr(_SpecNative, m)
                               for m in ("_run", "_run_part", "_begin_step", "_group_done",
                                         "_step_group", "_prepare", "_format_step")))

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        bound = self._signature.bind(self, params, *args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        s = self._spec
        for n in s.torch_signature:  # capturable (CUDA graphs) stays off
            if n in _spec.TORCH_FLAGS and n not in _KEPT_FLAGS and a[n]:
                raise ValueError(f"fastoptim.torch.{s.name} does not support {n}=True")
        defaults = {n: (_spec.TORCH_FLAGS[n] if n in _spec.TORCH_FLAGS
                        and n not in _KEPT_FLAGS else a[n])
                    for n in s.torch_signature if n != "*"}
        defaults["max_grad_norm"] = a["max_grad_norm"]
        defaults["arena"] = a["arena"]
        defaults.update(s.fixed)  # as torch's AdamW records decoupled_weight_decay=True
        defaults.update(s.group_state)  # schedule-free's k, weight_sum, ... (as its reference)
        if "state_dtype" in a:
            defaults["state_dtype"] = a["state_dtype"]
        super().__init__(params, defaults)
        if s.eager_state:  # torch's Adagrad creates its state with the parameters
            for group in (g for g in self.param_groups if not _torch_formats.handles(g)):
                for p in group["params"]:
                    self.state[p].update(self._new_state(p, group))

    @classmethod
    def _signature_defaults(cls) -> dict:
        return {k: v.default for k, v in cls._signature.parameters.items()
                if k not in ("self", "params") and v.default is not inspect.Parameter.empty}

    def _validate(self, group) -> None:
        # the base class validates the defaults before torch's __init__ sets self.defaults
        _torch_wording(self._spec.validate, group, self.__dict__.get("defaults", group),
                       cls=self._spec.name)
        _torch_formats.validate(self._spec, group)  # state_dtype, param_rounding

    def _new_state(self, p, group) -> dict:
        return self._spec.new_state(p, group, _full_like, _scalar, _clone)

    def _steady_step(self, gi: int, group) -> bool:
        """The steady state of a group in one go: its cached one-part plan still holds (the
        same checks as _prepare's fast path) and its kernel is called directly. False,
        having changed nothing, when anything differs; step() then takes the general path,
        which rebuilds, stages or reports. (Never with clipping or GradScaler: step()
        decides.)"""
        plans = self.__dict__.get("_fo_plans")
        plan = plans.get(gi) if plans else None
        if plan is None or (part := plan.fast) is None:
            return False
        params = group["params"]
        flat = part.flat_g
        if flat is not None and not self._arena_holds(gi, plan, part, params):
            return False
        call = plan.steady
        if call is None:
            if not self._plan_holds(plan, group):
                return False
            call = plan.steady = self._steady_call(part, group, plan)
            if call is None:
                return False
        elif not (plan.tracked and _changes[0] == plan.changes
                  and self.__dict__["_fo_state"] is plan.state):
            # (the structure flags: checked by the call)
            if not self._plan_holds(plan, group):
                return False
        step = part.step + 1
        # (without an arena, the gradients are checked as _prepare's fast path checks them)
        if not call(params, plan.params, group, step, part.fresh, flat):
            return False
        part.fresh = False
        part.step = step  # (the call has set the step counters)
        return True

    def _steady_call(self, part: _Part, group, plan: _Plan) -> Any:
        """_steady_step's native call, fixed for as long as the plan holds (its structure
        keys decide which optional buffers the kernel gets, and the call checks them); None
        where an optional buffer is switched on but missing (the general path reports
        it)."""
        spec = self._spec
        arena = part.flat_g is not None
        states = list(part.flat_s if arena else part.state_pointers)
        for j, when in spec._optional:
            if not group[when]:
                states[j] = None
            elif states[j] is None:
                return None
        return _core._SteadyCall(spec._fn, part.flat_p if arena else part.pointers,
                                 tuple(states),
                                 list(spec.fixed.items()),
                                 [(a.kernel, a.group_key, a.index) for a in spec._args],
                                 spec.kernel_step, spec._first_step, part.steps,
                                 list(zip(self._structure_keys, plan.structure, strict=True)))

    def _run(self, group, ps, gs, states, step: int, first: bool, scale: float = 1.0) -> None:
        self._spec.run(group, ps, gs, states, step, first, self.defaults, scale,
                       self.__dict__.get("_fo_part_key"))

    def _partition_key(self, p) -> Any:
        return self._spec.partition_key(p)

    def _run_part(self, group, part, grads, gp, scale: float = 1.0) -> None:
        if self._spec.split is not None:  # the kernel flag of this part's parameters
            self.__dict__["_fo_part_key"] = self._spec.partition_key(part.params[0])
        super()._run_part(group, part, grads, gp, scale)

    def _begin_step(self) -> None:
        self._spec.check_mode(self.param_groups)

    def _group_done(self, group) -> None:
        if self._spec.advance is not None:
            self._spec.advance(group)


def _clone(p: torch.Tensor) -> torch.Tensor:
    """A copy of p in its own memory format (schedule-free's z)."""
    return torch.clone(p.detach(), memory_format=torch.preserve_format)


class _Modes:
    """train() / eval() of an optimizer whose spec declares Modes (schedule-free), with
    the reference's parameter move: p.lerp_(state, weight), here natively."""

    _spec: _spec.OptimizerSpec
    param_groups: list
    state: Any

    @torch.no_grad()
    def train(self) -> None:
        """Puts the training point (y) into the parameters; call before training steps."""
        self._switch(True)

    @torch.no_grad()
    def eval(self) -> None:
        """Puts the averaged point (x) into the parameters; call before evaluating,
        predicting or saving."""
        self._switch(False)

    def _switch(self, train: bool) -> None:
        m = self._spec.modes
        assert m is not None
        for group in self.param_groups:
            if bool(group[m.key]) == train:
                continue
            pairs = []
            for p in group["params"]:
                z = self.state[p].get(m.state) if p in self.state else None
                if z is None:
                    continue
                z = z.to(p.device)
                if p.is_contiguous() and z.is_contiguous():
                    pairs.append((_view(p, False), _view(z, False)))
                elif _dense(p) and z.stride() == p.stride():
                    pairs.append((_view(p, True), _view(z, True)))
                else:  # a strided view with gaps: torch's own lerp, the same formula
                    w = m.to_train(group) if train else m.to_eval(group)
                    p.detach().lerp_(z, w)
            self._spec.switch_mode(group, train, pairs)


# One class statement per optimizer: everything else is in its declaration (fastoptim/spec.py).
class SGD(_SpecNative, spec="SGD"):
    pass


class Adam(_SpecNative, spec="Adam"):
    pass


class AdamW(_SpecNative, spec="AdamW"):
    pass


class RMSprop(_SpecNative, spec="RMSprop"):
    pass


class Adagrad(_SpecNative, spec="Adagrad"):
    pass


class Adamax(_SpecNative, spec="Adamax"):
    pass


class NAdam(_SpecNative, spec="NAdam"):
    pass


class RAdam(_SpecNative, spec="RAdam"):
    pass


class Adadelta(_SpecNative, spec="Adadelta"):
    pass


class Rprop(_SpecNative, spec="Rprop"):
    pass


class ASGD(_SpecNative, spec="ASGD"):
    pass


class Lion(_SpecNative, spec="Lion"):
    pass


class AdEMAMix(_SpecNative, spec="AdEMAMix"):
    pass


# ---------------------------------------------------------------------------------------
# Optimizers that are not one elementwise kernel (spec: declare_special): plain
# torch.optim.Optimizer subclasses with torch's signature, state layout and state_dict,
# calling the native kernels on zero-copy numpy views of the parameters and state.


from fastoptim import optim as _optim  # noqa: E402  (the numpy front end's helpers)


def _np(t: torch.Tensor):
    return t.detach().numpy()


@contextlib.contextmanager
def _float_lr(group):
    """A tensor lr (torch takes a 1-element one) as its float for the duration of a step
    of the optimizers below, which pass lr on to numpy code."""
    lr = group.get("lr")
    if not isinstance(lr, torch.Tensor):
        yield
        return
    group["lr"] = float(lr)
    try:
        yield
    finally:
        group["lr"] = lr


class _Special(torch.optim.Optimizer):
    """Base of the non-elementwise optimizers (``class Name(_Special, spec="Name")``)."""

    _spec: _spec.OptimizerSpec
    _signature: inspect.Signature

    def __init_subclass__(cls, spec: str, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        s = _spec.get(spec)
        cls._spec = s
        note = cls.__doc__ if "__doc__" in cls.__dict__ else None
        cls.__doc__ = s.docstring("torch") + (f"\n\n{inspect.cleandoc(note)}" if note else "")
        P = inspect.Parameter
        params = [P("self", P.POSITIONAL_OR_KEYWORD), P("params", P.POSITIONAL_OR_KEYWORD)]
        kind: inspect._ParameterKind = P.POSITIONAL_OR_KEYWORD
        for n in s.torch_signature:
            if n == "*":
                kind = P.KEYWORD_ONLY
                continue
            default = _spec.TORCH_FLAGS[n] if n in _spec.TORCH_FLAGS else s.defaults[n]
            params.append(P(n, kind, default=default))
        cls._signature = inspect.Signature(params)
        cls.__signature__ = cls._signature.replace(  # type: ignore[attr-defined]
            parameters=params[1:])

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        bound = self._signature.bind(self, params, *args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        defaults = {n: a[n] for n in self._spec.torch_signature if n != "*"}
        for k, v in defaults.items():
            if isinstance(v, list):
                defaults[k] = tuple(v)
        lr = defaults.get("lr")
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        _torch_wording(self._spec.validate, defaults, cls=self._spec.name)
        if self._spec.resolve is not None:  # LBFGS: max_eval None -> max_iter * 5 // 4
            self._spec.resolve(defaults)
        super().__init__(params, defaults)

    _dtypes: tuple = (torch.float32, torch.float64)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _torch_wording(self._spec.validate, group, cls=self._spec.name)
        name = type(self).__name__
        for j, p in enumerate(group["params"]):
            where = f"[[{len(self.param_groups) - 1}, {j}]]"
            if p.is_sparse:  # (torch's words for SparseAdam's own check)
                raise ValueError(f"Sparse params at indices {where}: {name} requires dense "
                                 f"parameter tensors")
            if p.is_complex() and name == "SparseAdam":
                raise ValueError(f"Complex params at indices {where}: SparseAdam does not "
                                 f"support complex parameters")
            if p.is_complex() and p.device.type == "cpu" and self._dtypes is _Special._dtypes:
                continue  # refused at the step, as torch does
            if p.device.type != "cpu" or p.dtype not in self._dtypes:
                names = "/".join(str(d).replace("torch.", "") for d in self._dtypes)
                raise TypeError(f"params[{j}] must be a {names} CPU tensor, got "
                                f"{p.dtype} on {p.device}")

    def _with_grad(self, group):
        out = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.is_complex() and p.dtype not in self._dtypes:
                raise RuntimeError(f"{type(self).__name__} does not support complex parameters")
            if p.grad.is_sparse != (type(self).__name__ == "SparseAdam"):
                raise RuntimeError(f"{type(self).__name__} does not support "
                                   f"{'dense' if not p.grad.is_sparse else 'sparse'} gradients")
            out.append(p)
        return out

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure()'s loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            ps = self._with_grad(group)
            if ps:
                with _float_lr(group):
                    self._step_group(group, ps)
        return loss

    def _step_group(self, group, ps) -> None:
        raise NotImplementedError


def _staged(ts):
    """Contiguous versions of ts and the (original, copy) pairs to write back."""
    out, back = [], []
    for t in ts:
        if t.is_contiguous():
            out.append(t)
        else:
            c = t.contiguous()
            out.append(c)
            back.append((t, c))
    return out, back


class Adafactor(_Special, spec="Adafactor"):
    def _step_group(self, group, ps) -> None:
        eps1 = _optim._adafactor_eps1(group, ps[0].detach().numpy().dtype)
        parts: dict = {}
        for p in ps:
            st = self.state[p]
            if len(st) == 0:
                st["step"] = torch.tensor(0.0, dtype=_torch_optimizer._get_scalar_dtype())
                if p.grad.dim() > 1:
                    st["row_var"] = p.grad.new_zeros(p.grad.shape[:-1] + (1,))
                    st["col_var"] = p.grad.new_zeros(p.grad.shape[:-2] + (1,) + p.grad.shape[-1:])
                else:
                    st["variance"] = torch.zeros_like(p.grad)
            parts.setdefault((p.dtype, float(st["step"])), []).append(p)
        for (_, stepf), members in parts.items():
            step = int(stepf) + 1
            views, back = _staged([p.detach() for p in members])
            grads = [p.grad.detach().contiguous().numpy() for p in members]
            states = []
            for key in ("row_var", "col_var", "variance"):
                col = []
                for p in members:
                    t = self.state[p].get(key)
                    if t is not None and not t.is_contiguous():
                        t = self.state[p][key] = t.contiguous()
                    col.append(None if t is None else _np(t))
                states.append(col)
            _core.adafactor_step([_np(v) for v in views], grads, *states, step=step,
                                 lr=float(group["lr"]), beta2_decay=group["beta2_decay"],
                                 eps1=eps1, eps2=group["eps"][1], d=group["d"],
                                 weight_decay=group["weight_decay"],
                                 maximize=group["maximize"])
            for dst, src in back:
                dst.copy_(src)
            for p in members:
                self.state[p]["step"] += 1


def _newton_schulz_bf16(g: torch.Tensor, coefficients, steps: int, eps: float) -> torch.Tensor:
    """Muon's orthogonalization as torch.optim.Muon runs it: bfloat16 products (torch.mm)."""
    a, b, c = coefficients
    x = g.bfloat16()
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(steps):
        gram = x @ x.T
        upd = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, upd, x, beta=a)
    return x.T if tall else x


class Muon(_Special, spec="Muon"):
    """The momentum and the update are native kernels; the Newton-Schulz products run in
    bfloat16 through torch.mm, as torch.optim.Muon's (so the two agree step by step)."""

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        for p in self.param_groups[-1]["params"]:
            if p.ndim != 2:
                raise ValueError(f"Muon only supports 2D parameters whereas we found a "
                                 f"parameter with size: {p.size()}")

    def _step_group(self, group, ps) -> None:
        by_dtype: dict = {}
        for p in ps:
            st = self.state[p]
            if "momentum_buffer" not in st:
                st["momentum_buffer"] = torch.zeros_like(p.grad)
            buf = st["momentum_buffer"]
            if not buf.is_contiguous():
                buf = st["momentum_buffer"] = buf.contiguous()
            by_dtype.setdefault(p.dtype, []).append(p)
        for members in by_dtype.values():
            grads = [p.grad.detach().contiguous() for p in members]
            outs = [torch.empty_like(g) for g in grads]
            _core.muon_momentum([_np(o) for o in outs], [_np(g) for g in grads],
                                [_np(self.state[p]["momentum_buffer"]) for p in members],
                                momentum=group["momentum"], nesterov=group["nesterov"])
            ortho = [_newton_schulz_bf16(o, group["ns_coefficients"], group["ns_steps"],
                                         group["eps"]).to(o.dtype).contiguous() for o in outs]
            views, back = _staged([p.detach() for p in members])
            lr = float(group["lr"])
            alphas = [-lr * _optim.muon_lr_ratio(group["adjust_lr_fn"], tuple(p.shape))
                      for p in members]
            _core.muon_update([_np(v) for v in views], [_np(o) for o in ortho], alphas, lr=lr,
                              weight_decay=group["weight_decay"])
            for dst, src in back:
                dst.copy_(src)


class SparseAdam(_Special, spec="SparseAdam"):
    """Gradients are sparse COO tensors (``nn.Embedding(sparse=True)``); each is coalesced,
    and only the rows it touches change, in one native call per parameter."""

    def _step_group(self, group, ps) -> None:
        b1, b2 = group["betas"]
        for p in ps:
            st = self.state[p]
            if len(st) == 0:
                st["step"] = 0
                st["exp_avg"] = torch.zeros_like(p)
                st["exp_avg_sq"] = torch.zeros_like(p)
            st["step"] += 1
            g = p.grad.coalesce()
            idx, vals = g._indices(), g._values()
            if vals.numel() == 0:
                continue
            sd = g.sparse_dim()
            rows = idx[0].clone() if sd == 1 else torch.zeros(idx.shape[1], dtype=torch.int64)
            if sd > 1:  # rows of the parameter seen as [prod(sparse dims), *dense dims]
                for k in range(sd):
                    rows = rows * p.shape[k] + idx[k]
            shape2 = (int(torch.tensor(p.shape[:sd]).prod()),) + tuple(p.shape[sd:])
            views, back = _staged([p.detach(), st["exp_avg"], st["exp_avg_sq"]])
            pv, mv, vv = (_np(v).reshape(shape2) for v in views)
            _core.sparse_adam_step(pv, mv, vv, rows.contiguous().numpy(),
                                   vals.detach().contiguous().numpy(), step=st["step"],
                                   lr=float(group["lr"]), beta1=b1, beta2=b2,
                                   eps=group["eps"], maximize=group["maximize"])
            for dst, src in back:
                dst.copy_(src)


def _lbfgs_to_numpy(st: dict, dtype) -> dict:
    """torch's LBFGS state as the shared routine keeps it (numpy views; scalars as numpy
    scalars of the parameters' dtype, which combine with Python floats as torch's 0-d
    tensors do)."""
    out = dict(st)
    scalar = np.float32 if dtype == torch.float32 else np.float64
    for k in ("d", "prev_flat_grad"):
        if torch.is_tensor(out.get(k)):
            out[k] = _np(out[k])
    for k in ("old_dirs", "old_stps"):
        if out.get(k) is not None:
            out[k] = [_np(v) for v in out[k]]
    for k in ("ro", "al"):
        if out.get(k) is not None:
            out[k] = [None if v is None else scalar(v) for v in out[k]]
    for k in ("t", "H_diag"):
        if torch.is_tensor(out.get(k)):
            out[k] = scalar(out[k])
    return out


def _lbfgs_to_torch(st: dict, dtype) -> dict:
    """The routine's state in torch's types (tensors, 0-d tensors for ro, al, H_diag)."""
    out = dict(st)
    for k in ("d", "prev_flat_grad"):
        if out.get(k) is not None:
            out[k] = torch.from_numpy(out[k])
    for k in ("old_dirs", "old_stps"):
        if out.get(k) is not None:
            out[k] = [torch.from_numpy(v) for v in out[k]]
    for k in ("ro", "al"):
        if out.get(k) is not None:
            out[k] = [None if v is None else torch.tensor(v, dtype=dtype) for v in out[k]]
    for k in ("H_diag", "t"):
        if isinstance(out.get(k), np.generic):
            out[k] = torch.tensor(out[k].item(), dtype=dtype)
    return out


def _real_dtype(dtype):
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


class LBFGS(_Special, spec="LBFGS"):
    """The state lives in ``state[first parameter]`` with torch's keys and types, so
    state_dicts interchange with torch.optim.LBFGS. A complex parameter takes part as its
    real view (two floats an element), as in torch."""

    _dtypes = _Native._dtypes

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(params, *args, **kwargs)
        if len(self.param_groups) != 1:  # (after the base class's checks, as torch)
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        if len({_real_dtype(p.dtype) for p in self.param_groups[0]["params"]}) > 1:
            raise TypeError("LBFGS needs every parameter in one dtype (complex64 goes with "
                            "float32, complex128 with float64)")

    @torch.no_grad()
    def step(self, closure):  # type: ignore[override]
        """Runs up to max_iter L-BFGS iterations; returns the loss at the start."""
        if closure is None:
            raise TypeError("LBFGS.step needs a closure that returns the loss")
        params = self.param_groups[0]["params"]
        dtype = _real_dtype(params[0].dtype)
        closure = torch.enable_grad()(closure)

        def flat_grad(p):
            if p.grad is None:
                return torch.zeros(2 * p.numel() if p.is_complex() else p.numel(), dtype=dtype)
            g = p.grad.to_dense() if p.grad.is_sparse else p.grad
            return (torch.view_as_real(g.resolve_conj()) if g.is_complex() else g).reshape(-1)

        def evaluate():
            loss = closure()
            return loss, torch.cat([flat_grad(p) for p in params]).numpy()

        def add(step, d):
            off = 0
            for p in params:
                r = torch.view_as_real(p) if p.is_complex() else p
                n = r.numel()
                r.add_(torch.from_numpy(d[off:off + n]).view_as(r), alpha=step)
                off += n

        def get():
            return [p.clone(memory_format=torch.contiguous_format) for p in params]

        def put(x):
            for p, v in zip(params, x, strict=True):
                p.copy_(v)

        st = self.state[params[0]]
        work = _lbfgs_to_numpy(st, dtype)
        with np.errstate(all="ignore"):  # IEEE results without warnings, as torch's tensors
            loss = _optim.lbfgs_step(_optim.FlatProblem(evaluate, add, get, put), work,
                                     self.param_groups[0])
        st.clear()
        st.update(_lbfgs_to_torch(work, dtype))
        return loss
class AdamWScheduleFree(_Modes, _SpecNative, spec="AdamWScheduleFree"):
    pass


class SGDScheduleFree(_Modes, _SpecNative, spec="SGDScheduleFree"):
    pass


class Lamb(_SpecNative, spec="Lamb"):
    pass


class LARS(_SpecNative, spec="LARS"):
    pass
