"""Stateful optimizers over numpy arrays, with torch.optim's math, names and state layout.

    opt = fastoptim.optim.Adam([W, b], lr=1e-3)
    for X, y in batches:
        gW, gb = grads(W, b, X, y)
        opt.step([gW, gb])        # W and b are updated in place

``params`` is a list of float32/float64 C-contiguous numpy arrays, or a list of group dicts
(``{"params": [...], "lr": ...}``) with per-group hyperparameters, as in torch. ``step``
takes the gradients aligned with the parameters (in group order) and updates everything
through the native multi-tensor kernels: one call per group and dtype, not one per array.

Non-finite gradients: by default, as in torch, a NaN or inf gradient flows into the
parameters. With ``skip_nonfinite=True`` the optimizer first computes the global norm of
the gradients (one native reduction) and, if it is not finite, skips the whole step:
parameters, state and step counters are left untouched, ``step`` returns False and
``skipped_steps`` is incremented.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastoptim import _core
from fastoptim import spec as _spec

__all__ = ["Optimizer", *_spec.names(), "clip_grad_norm"]


def _as_step(value: Any, where: str) -> int:
    """An int64 step counter from an int, an integral float or a 0-d array/tensor."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where} must be an integer step count, got {type(value).__name__}")
    if not math.isfinite(float(value)) or float(value) != int(value) or int(value) < 0:
        raise ValueError(f"{where} must be a non-negative integer, got {value!r}")
    return int(value)


@dataclass(slots=True)
class _Partition:
    """Parameters of one group that share dtype and step: one native call per step."""

    ids: list[int]  # flat parameter indices
    params: list[np.ndarray]
    whole: bool  # the partition is the whole group (its grads are one slice)
    fresh: bool  # state not created yet
    states: list[list[Any]] | None = None  # per state buffer, the arrays of these params


@dataclass(slots=True)
class _GroupPlan:
    group: dict[str, Any]
    offset: int  # flat index of the group's first parameter
    parts: list[_Partition]


class Optimizer:
    """Base class: parameter groups, lazily created state, state_dict in torch's layout.

    Subclasses implement ``_validate``, ``_new_state`` and ``_run`` (one native
    multi-tensor call); the optimizers below get them from their spec (fastoptim.spec).
    """

    _defaults: dict[str, Any] = {}
    _tensor_keys: tuple[str, ...] = ()  # state arrays, in the kernel's argument order
    _has_step = True
    state_dtype = "fp32"  # storage format of the state buffers (fastoptim.formats)

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], *,
                 skip_nonfinite: bool = False) -> None:
        self.defaults = dict(defaults)
        self.skip_nonfinite = bool(skip_nonfinite)
        self.skipped_steps = 0
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[int, dict[str, Any]] = {}
        self._params: list[np.ndarray] = []
        self._plans: list[Any] | None = None
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for g in groups:
            self.add_param_group(g)

    # -- groups ---------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds a group (``{"params": [...], **hyperparameters}``); missing keys take the
        constructor's values. ValueError for bad hyperparameters or a repeated array."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        ps = param_group["params"]
        ps = [ps] if isinstance(ps, np.ndarray) else list(ps)
        unknown = set(param_group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)} in param_group")
        group = {**self.defaults, **param_group, "params": ps}
        for i, p in enumerate(ps):
            if not isinstance(p, np.ndarray):
                raise TypeError(f"params[{i}] must be a numpy.ndarray, got {type(p).__name__}")
            if p.dtype not in (np.float32, np.float64):
                raise TypeError(f"params[{i}] must be float32 or float64, got {p.dtype}")
            if any(p is q for q in self._params):
                raise ValueError(f"params[{i}] appears in more than one parameter group")
        self._validate(group)
        self.param_groups.append(group)
        self._params.extend(ps)
        self._plans = None

    def _validate(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _new_state(self, p: np.ndarray, group: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _run(self, group: dict[str, Any], params: list, grads: list, state: list[list],
             step: int, first: bool) -> None:
        raise NotImplementedError

    # -- stepping -------------------------------------------------------------------
    def _plan(self) -> list[_GroupPlan]:
        """Per group: partitions of parameters that share dtype and step (one call each)."""
        if self._plans is not None:
            return self._plans
        plans = []
        offset = 0
        for group in self.param_groups:
            parts: dict[tuple, list[int]] = {}
            for j, p in enumerate(group["params"]):
                st = self.state.get(offset + j)
                key = (p.dtype.str, st["step"] if st and self._has_step else 0, st is None)
                parts.setdefault(key, []).append(j)
            plan = []
            for (_, _, fresh), idx in parts.items():
                whole = idx == list(range(len(group["params"])))
                plan.append(_Partition([offset + j for j in idx],
                                       [group["params"][j] for j in idx], whole, fresh))
            plans.append(_GroupPlan(group, offset, plan))
            offset += len(group["params"])
        self._plans = plans
        return plans

    def step(self, grads: Sequence[np.ndarray]) -> bool:
        """Updates every parameter in place from ``grads`` (aligned with the parameters in
        group order; only read). Returns False if the step was skipped (non-finite
        gradients with ``skip_nonfinite=True``), else True."""
        grads = list(grads) if not isinstance(grads, list) else grads
        if len(grads) != len(self._params):
            raise ValueError(f"grads has {len(grads)} arrays but the optimizer has "
                             f"{len(self._params)} parameters")
        work = []
        for plan in self._plan():
            n = len(plan.group["params"])
            for part in plan.parts:
                gs = (grads[plan.offset:plan.offset + n] if part.whole
                      else [grads[i] for i in part.ids])
                work.append((plan.group, part, gs))
        if self.skip_nonfinite and not all(
                math.isfinite(_core.global_norm(gs)) for _, _, gs in work):
            self.skipped_steps += 1
            return False
        for group, part, gs in work:
            fresh = part.fresh
            if fresh:
                for i, p in zip(part.ids, part.params, strict=False):
                    self.state[i] = self._new_state(p, group)
                part.fresh = False
            if part.states is None:  # the state arrays of this partition, listed once
                part.states = [[self.state[i].get(k) for i in part.ids]
                               for k in self._tensor_keys]
            step = self.state[part.ids[0]]["step"] + 1 if self._has_step else 0
            self._run(group, part.params, gs, part.states, step, fresh)
            if self._has_step:
                for i in part.ids:
                    self.state[i]["step"] = step
        return True

    # -- checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch's layout: ``state`` keyed by integer parameter ids (arrays are copies,
        ``step`` an int) and ``param_groups`` with ``params`` id lists."""
        groups, offset = [], 0
        for g in self.param_groups:
            n = len(g["params"])
            groups.append({**{k: v for k, v in g.items() if k != "params"},
                           "params": list(range(offset, offset + n))})
            offset += n
        state = {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                 for i, s in self.state.items() if s}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a dict from ``state_dict()`` (or torch's, with arrays/tensors converted by
        the caller to numpy). Everything is checked before anything changes: group count
        and sizes, hyperparameters, each state's keys, shapes and dtypes. ValueError /
        TypeError otherwise, leaving the optimizer unchanged."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(saved_groups)} parameter groups but the "
                             f"optimizer has {len(self.param_groups)}")
        id_map: dict[Any, int] = {}
        new_groups = []
        offset = 0
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups, strict=False)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"param_groups[{gi}] has {len(saved['params'])} parameters "
                                 f"in the state_dict but {len(group['params'])} here")
            for j, sid in enumerate(saved["params"]):
                id_map[sid] = offset + j
            new = {**group, **{k: v for k, v in saved.items() if k in self.defaults}}
            self._validate(new)
            new_groups.append(new)
            offset += len(group["params"])
        new_state: dict[int, dict[str, Any]] = {}
        group_of = [g for g in new_groups for _ in g["params"]]
        for sid, st in state_dict["state"].items():
            if sid not in id_map:
                raise ValueError(f"state_dict['state'] has an entry for unknown id {sid!r}")
            i = id_map[sid]
            p, group = self._params[i], group_of[i]
            want = self._new_state(p, group)
            if not isinstance(st, dict):
                raise TypeError(f"state {sid} must be a dict, got {type(st).__name__}")
            tag, want_tag = st.get("state_format", "fp32"), want.get("state_format", "fp32")
            if tag != want_tag:
                raise ValueError(
                    f"state {sid} is tagged state_format={tag!r} but this optimizer keeps "
                    f"{want_tag!r} state for it (state_dtype={self.state_dtype!r}); convert "
                    f"it with fastoptim.formats or build the optimizer with the same "
                    f"state_dtype")
            missing = set(want) - set(st) - {"state_format"}
            if missing:
                raise ValueError(f"state {sid}: missing key(s) {sorted(missing)}")
            loaded: dict[str, Any] = {}
            for k, _ref in want.items():
                if k == "state_format":
                    loaded[k] = want_tag
                    continue
                v = st[k]
                if k == "step":
                    loaded[k] = _as_step(v, f"state {sid} 'step'")
                    continue
                a = _as_numpy(v)
                scalar = np.ndim(_ref) == 0  # a per-parameter scalar (0-d), not a buffer
                if a.shape != np.shape(_ref):
                    raise ValueError(f"state {sid} '{k}' has shape {a.shape} but "
                                     + ("its value is a scalar" if scalar else
                                        f"{np.shape(_ref)} is expected (its parameter has "
                                        f"shape {p.shape})"))
                if a.dtype != _ref.dtype and not (scalar and a.dtype in (np.float32,
                                                                         np.float64)):
                    raise TypeError(f"state {sid} '{k}' has dtype {a.dtype} but "
                                    f"{_ref.dtype} is expected (its parameter is {p.dtype}, "
                                    f"state_format {want_tag!r})")
                loaded[k] = np.array(a, dtype=a.dtype if scalar else _ref.dtype, order="C",
                                     copy=True)
            new_state[i] = loaded
        for group, new in zip(self.param_groups, new_groups, strict=False):
            group.update(new)
        self.state = new_state
        self._plans = None

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v!r}" for k, v in self.defaults.items())
        return f"{type(self).__name__}({len(self._params)} arrays, {hyper})"


def _as_numpy(v: Any) -> np.ndarray:
    """A numpy view of a state value (a torch.bfloat16 tensor as its uint16 bits)."""
    if hasattr(v, "detach"):
        v = v.detach().cpu()
        if str(v.dtype) == "torch.bfloat16":
            import torch

            v = v.view(torch.uint16)
        return np.asarray(v.numpy())
    return np.asarray(v)


def _scalar(value: float) -> np.ndarray:
    """A 0-d float32 array: torch keeps per-parameter scalars in its scalar dtype."""
    return np.array(value, np.float32)


class _SpecOptimizer(Optimizer):
    """An optimizer whose signature, defaults, docs, checks, state and kernel call all come
    from its declaration in fastoptim.spec (``class Name(_SpecOptimizer, spec="Name")``)."""

    _spec: _spec.OptimizerSpec
    _signature: inspect.Signature

    def __init_subclass__(cls, spec: str, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        s = _spec.get(spec)
        cls._spec = s
        cls._tensor_keys = s.state_keys
        cls._has_step = s.has_step
        cls.__doc__ = s.docstring("numpy")
        P = inspect.Parameter
        params = [P("self", P.POSITIONAL_OR_KEYWORD), P("params", P.POSITIONAL_OR_KEYWORD)]
        params += [P(n, P.POSITIONAL_OR_KEYWORD, default=s.defaults[n])
                   for n in s.numpy_signature()]
        params.append(P("skip_nonfinite", P.KEYWORD_ONLY, default=False))
        params.append(P("state_dtype", P.KEYWORD_ONLY, default="fp32"))
        cls._signature = inspect.Signature(params)
        cls.__signature__ = cls._signature.replace(  # type: ignore[attr-defined]
            parameters=params[1:])

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        bound = self._signature.bind(self, params, *args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        kinds = {h.name: h.kind for h in self._spec.hyperparameters}
        defaults = {n: tuple(a[n]) if kinds[n] == "pair" else a[n]
                    for n in self._spec.numpy_signature()}
        self.state_dtype = self._spec.check_state_dtype(a["state_dtype"])
        if self.state_dtype != "fp32":  # the format kernel's lists: buffers, then absmax
            self._tensor_keys = self._spec.state_keys + self._spec.absmax_keys
        super().__init__(params, defaults, skip_nonfinite=a["skip_nonfinite"])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        first = len(self._params)
        if self.state_dtype != "fp32" and isinstance(param_group, dict):
            ps = param_group.get("params", ())
            for i, p in enumerate([ps] if isinstance(ps, np.ndarray) else list(ps)):
                if isinstance(p, np.ndarray) and p.dtype != np.float32:
                    raise TypeError(f"params[{i}] is {p.dtype}; state_dtype="
                                    f"{self.state_dtype!r} needs float32 parameters")
        super().add_param_group(param_group)
        if self._spec.eager_state:  # torch's Adagrad creates its state with the params
            group = self.param_groups[-1]
            for i, p in enumerate(group["params"]):
                self.state[first + i] = self._new_state(p, group)

    def _validate(self, group: dict[str, Any]) -> None:
        self._spec.validate(group, self.defaults)
        self._spec.check_state_dtype(self.state_dtype, group)

    def _new_state(self, p: np.ndarray, group: dict[str, Any]) -> dict[str, Any]:
        if self.state_dtype != "fp32":
            return self._spec.new_format_state(p, group, self.state_dtype)
        return self._spec.new_state(p, group, np.full_like, _scalar)

    def _run(self, group: dict[str, Any], params: list, grads: list, state: list[list],
             step: int, first: bool) -> None:
        if self.state_dtype != "fp32":
            self._spec.run_formats(group, params, grads, state, step, first, self.defaults)
            return
        self._spec.run(group, params, grads, state, step, first, self.defaults)


# One class statement per optimizer: everything else is in its declaration (fastoptim/spec.py).
class SGD(_SpecOptimizer, spec="SGD"):
    pass


class Adam(_SpecOptimizer, spec="Adam"):
    pass


class AdamW(_SpecOptimizer, spec="AdamW"):
    pass


class RMSprop(_SpecOptimizer, spec="RMSprop"):
    pass


class Adagrad(_SpecOptimizer, spec="Adagrad"):
    pass


class Adamax(_SpecOptimizer, spec="Adamax"):
    pass


class NAdam(_SpecOptimizer, spec="NAdam"):
    pass


class RAdam(_SpecOptimizer, spec="RAdam"):
    pass


class Adadelta(_SpecOptimizer, spec="Adadelta"):
    pass


class Rprop(_SpecOptimizer, spec="Rprop"):
    pass


class ASGD(_SpecOptimizer, spec="ASGD"):
    pass


class Lion(_SpecOptimizer, spec="Lion"):
    pass


def clip_grad_norm(grads: Sequence[np.ndarray], max_norm: float, *,
                   error_if_nonfinite: bool = False) -> float:
    """Scales ``grads`` in place so that their global L2 norm is at most ``max_norm``
    (torch.nn.utils.clip_grad_norm_'s factor ``max_norm / (norm + 1e-6)``) and returns the
    norm before clipping. A non-finite norm leaves the gradients unchanged (or raises
    ValueError with ``error_if_nonfinite=True``). Mixed float32/float64 lists work."""
    grads = list(grads)
    dtypes = {g.dtype for g in grads if isinstance(g, np.ndarray)}
    if len(dtypes) <= 1:
        return _core.clip_by_global_norm(grads, max_norm, error_if_nonfinite=error_if_nonfinite)
    parts = [[g for g in grads if g.dtype == dt] for dt in sorted(dtypes, key=str)]
    norm = math.sqrt(sum(_core.global_norm(p) ** 2 for p in parts))
    if not math.isfinite(norm):
        if error_if_nonfinite:
            raise ValueError(f"the global norm of grads is {norm}; gradients were left "
                             f"unchanged")
        return norm
    if not (max_norm >= 0 and math.isfinite(max_norm)):
        raise ValueError(f"max_norm must be a finite number >= 0, got {max_norm!r}")
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= g.dtype.type(coef)
    return norm


class AdEMAMix(_SpecOptimizer, spec="AdEMAMix"):
    pass
