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

AMP: ``_step_supports_amp_scaling`` is set, so ``torch.amp.GradScaler("cpu")`` passes
``grad_scale`` and ``found_inf`` as it does to torch's fused Adam: a step with an inf/NaN
gradient is skipped, otherwise the gradients are unscaled in place before the update.

Not supported (clear errors): CUDA tensors, sparse gradients, complex or integer
parameters, ``fused``/``capturable``/``differentiable=True``. ``foreach`` is accepted and
ignored. Writes go through raw pointers, so autograd's version counters are not bumped
(torch's optimizers run under ``no_grad`` too; do not backpropagate through a graph that
saved a parameter before the step).
"""

from __future__ import annotations

import collections
import functools
import inspect
import itertools
import operator
from dataclasses import dataclass, field
from typing import Any

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

# Every change to any fastoptim optimizer's state mapping or per-parameter state dict
# bumps this counter; a plan records its value and is rebuilt when it moved.
_changes = [0]


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
    try:
        return t.numpy()
    except TypeError:
        return t


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.detach().as_strided((t.numel(),), (1,))


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
    step_bytes: bytes = b""


@dataclass(slots=True)
class _Plan:
    params: list                # group["params"] when built (identity-checked)
    mask: list                  # which of them had a gradient
    state: Any                  # the optimizer.state object the plan refers to
    changes: int                # _changes[0] after the build
    tracked: bool               # every state container counts its changes
    structure: tuple            # group flags that decide which state exists
    parts: list


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
      step being taken, ``first`` True when the state was just created.
    """

    _state_keys: tuple[str, ...] = ()
    _has_step = True
    _structure_keys: tuple[str, ...] = ()
    _forced_flags: dict[str, Any] = {}
    _scalar_keys: tuple[str, ...] = ()  # 0-d state entries (not buffers), passed as lists
    _dtypes: tuple = (torch.float32, torch.float64)

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

    def _run(self, group, ps, gs, states, step: int, first: bool) -> None:
        raise NotImplementedError

    # -- validation ------------------------------------------------------------------

    def _check_hypers(self, group) -> None:
        lr = group.get("lr")
        if isinstance(lr, torch.Tensor):
            if group.get("foreach") and not group.get("capturable"):
                raise ValueError("lr as a Tensor is not supported for capturable=False and "
                                 "foreach=True")
            if lr.numel() != 1:
                raise ValueError("Tensor lr must be 1-element")
        betas = group.get("betas")
        if betas is not None:
            kinds = {isinstance(b, torch.Tensor) for b in betas}
            if len(kinds) > 1:
                raise ValueError("betas must be either both floats or both Tensors")
            for i, b in enumerate(betas):
                if isinstance(b, torch.Tensor):
                    if group.get("foreach") and not group.get("capturable"):
                        raise ValueError(f"betas[{i}] as a Tensor is not supported for "
                                         f"capturable=False and foreach=True")
                    if b.numel() != 1:
                        raise ValueError(f"Tensor betas[{i}] must be 1-element")
        self._validate(group)

    def _check_param(self, p, where: str) -> None:
        if not isinstance(p, torch.Tensor):
            return  # torch raises its own TypeError
        if p.device.type != "cpu":
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
            for j, p in enumerate(params or ()):
                name = f" ({p[0]!r})" if isinstance(p, tuple) else ""
                t = p[1] if isinstance(p, tuple) else p
                if isinstance(t, torch.Tensor):
                    self._check_param(t, f"param_groups[{gi}]['params'][{j}]{name} of shape "
                                         f"{tuple(t.shape)}")
            self._check_hypers({**self.defaults,
                                **{k: v for k, v in param_group.items() if k != "params"}})
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
                and mask == plan.mask and self.state is plan.state):
            return False
        keys = self._structure_keys
        if keys and plan.structure != tuple([bool(group[k]) for k in keys]):
            return False
        if not (plan.tracked and _changes[0] == plan.changes):
            if not self._state_unchanged(plan):
                return False
            plan.changes = _changes[0]
        for part in plan.parts:
            if list(map(_data_ptr, part.params)) != part.ptrs:
                return False  # p.data = ... replaced a parameter's storage
            if part.steps is not None and part.steps.tobytes() != part.step_bytes:
                return False  # a step tensor was changed in place
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
            self._check_param(p, where)
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
            key = (p.dtype, step, fresh, mode != 0, tuple(t is not None for t in ts))
            groups.setdefault(key, []).append((j, p, where, st, ts, mode))
        parts = []
        n_with_grad = sum(1 for g in gs if g is not None)
        for (_, step, fresh, slow, present), items in groups.items():
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
            if self._has_step:
                counters = torch.full((len(ps),), _float32(step), dtype=torch.float32)
                part.steps = counters.numpy()
                part.step_tensors = [counters[i] for i in range(len(ps))]
                for st, t in zip(part.dicts, part.step_tensors, strict=False):
                    dict.__setitem__(st, "step", t)
                part.step_bytes = part.steps.tobytes()
            parts.append(part)
        tracked = type(state) is _State and all(
            type(st) is _ParamState for part in parts for st in part.dicts if st is not None)
        return _Plan(params=list(params), mask=mask, state=state, changes=_changes[0],
                     tracked=tracked,
                     structure=tuple(bool(group[k]) for k in self._structure_keys),
                     parts=parts)

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

    def _run_part(self, group, part: _Part, grads, gp) -> None:
        """One native call. ``gp``: the gradients' pointer list (the steady state: every
        other buffer is the plan's, checked when it was built); None: every array goes
        through the native gate's full checks, non-contiguous members staged."""
        step = part.step + 1
        back: Any = ()
        if gp is not None:
            self._run(group, part.pointers, gp, part.state_pointers, step, part.fresh)
        else:
            views, svs = part.views, part.state_views
            if part.slow:
                views, grads, svs, back = self._staged(part, grads)
            else:
                grads = [g if g.is_contiguous() else g.contiguous() for g in grads]
            self._run(group, views, grads, svs, step, part.fresh)
        for dst, src in back:
            dst.detach().copy_(src)
        part.fresh = False
        part.step = step
        if part.steps is not None:
            part.steps.fill(step)
            part.step_bytes = part.steps.tobytes()

    def _step_group(self, gi: int, group) -> None:
        params = group["params"]
        gs = list(map(_get_grad, params))
        mask = list(map(_is, gs, _nones))
        plans = self.__dict__.get("_fo_plans")
        if plans is None:
            plans = self.__dict__["_fo_plans"] = {}
        plan = plans.get(gi)
        if plan is not None and self._plan_ok(plan, group, params, mask):
            try:  # every gradient is checked before any parameter changes
                gps = [None if part.slow else _grad_pointers(
                    gs if part.pick is None else list(part.pick(gs)), part.pointers)
                    for part in plan.parts]
            except ValueError:
                gps = None  # a gradient in another layout: rebuild, full checks
            if gps is not None:
                for part, gp in zip(plan.parts, gps, strict=True):
                    self._run_part(group, part, gs if part.pick is None else part.pick(gs), gp)
                return
        if _torch_formats.handles(group):  # bf16/fp16 parameters or reduced-precision state
            plans.pop(gi, None)
            _torch_formats.step_group(self, gi, group)
            return
        plan = plans[gi] = self._build(gi, group, params, gs, mask)
        for part in plan.parts:
            self._run_part(group, part, gs if part.pick is None else part.pick(gs), None)

    # torch.amp.GradScaler("cpu") hands this optimizer the scale and the inf flag (as it
    # does torch's fused Adam) instead of unscaling the gradients itself.
    _step_supports_amp_scaling = True

    @_with_hooks
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure()'s loss.

        Under ``torch.amp.GradScaler``: the step is skipped (parameters, state and step
        counts untouched) when ``found_inf`` is set, and the gradients are unscaled in
        place by ``1 / grad_scale`` before the update."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        attrs = self.__dict__
        found_inf = attrs.get("found_inf")
        grad_scale = attrs.get("grad_scale")
        if found_inf is not None or grad_scale is not None:
            if found_inf is not None and float(found_inf) != 0.0:
                return loss
            if grad_scale is not None:
                self._unscale(float(grad_scale))
        for gi, group in enumerate(self.param_groups):
            self._step_group(gi, group)
        return loss

    def _unscale(self, scale: float) -> None:
        grads: dict = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    grads.setdefault(p.grad.dtype, []).append(p.grad)
        with torch.no_grad():
            for gs in grads.values():
                torch._foreach_mul_(gs, 1.0 / scale)

    def load_state_dict(self, state_dict):
        quantized = _torch_formats.check_state_dict(self, state_dict)  # before any change
        super().load_state_dict(state_dict)
        _torch_formats.restore(self, state_dict, quantized)
        self.__dict__.pop("_fo_plans", None)


def _full_like(p: torch.Tensor, value: float) -> torch.Tensor:
    """State in p's own memory format (the base class updates it elementwise over memory)."""
    return torch.zeros_like(p) if value == 0 else torch.full_like(p, value)


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
        cls.__doc__ = s.docstring("torch")
        P = inspect.Parameter
        params = [P("self", P.POSITIONAL_OR_KEYWORD), P("params", P.POSITIONAL_OR_KEYWORD)]
        kind: inspect._ParameterKind = P.POSITIONAL_OR_KEYWORD
        for n in s.torch_signature:
            if n == "*":
                kind = P.KEYWORD_ONLY
                continue
            default = _spec.TORCH_FLAGS[n] if n in _spec.TORCH_FLAGS else s.defaults[n]
            params.append(P(n, kind, default=default))
        if len(s.state_dtypes) > 1:  # bf16/fp16 parameters and state_dtype: _torch_formats
            params.append(P("state_dtype", P.KEYWORD_ONLY, default="fp32"))
            cls._dtypes = (torch.float32, torch.float64, *_torch_formats.REDUCED_PARAM_DTYPES)
        cls._signature = inspect.Signature(params)
        cls.__signature__ = cls._signature.replace(  # type: ignore[attr-defined]
            parameters=params[1:])

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        bound = self._signature.bind(self, params, *args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        s = self._spec
        for n in s.torch_signature:  # fused/capturable/differentiable must stay off
            if n in _spec.TORCH_FLAGS and n != "foreach" and a[n]:
                raise ValueError(f"fastoptim.torch.{s.name} does not support {n}=True")
        defaults = {n: (_spec.TORCH_FLAGS[n] if n in _spec.TORCH_FLAGS and n != "foreach"
                        else a[n]) for n in s.torch_signature if n != "*"}
        defaults.update(s.fixed)  # as torch's AdamW records decoupled_weight_decay=True
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
        self._spec.validate(group, self.__dict__.get("defaults", group))
        _torch_formats.validate(self._spec, group)  # state_dtype, param_rounding

    def _new_state(self, p, group) -> dict:
        return self._spec.new_state(p, group, _full_like, _scalar)

    def _run(self, group, ps, gs, states, step: int, first: bool) -> None:
        self._spec.run(group, ps, gs, states, step, first, self.defaults)


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
