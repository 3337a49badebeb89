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

__all__ = ["Optimizer", *_spec.names(), "clip_grad_norm", "newton_schulz"]


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

    def _partition_key(self, p: np.ndarray) -> Any:
        """Beyond dtype and step, what puts p in a separate native call (None: nothing)."""
        return None

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
                key = (p.dtype.str, st["step"] if st and self._has_step else 0, st is None,
                       self._partition_key(p))
                parts.setdefault(key, []).append(j)
            plan = []
            for (_, _, fresh, _), idx in parts.items():
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

    def __init_subclass__(cls, spec: str | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if spec is None:  # an intermediate base (_Special)
            return
        note = cls.__doc__ if "__doc__" in cls.__dict__ else None
        s = _spec.get(spec)
        cls._spec = s
        cls._tensor_keys = s.state_keys
        cls._has_step = s.has_step
        cls.__doc__ = s.docstring("numpy") + (f"\n\n{inspect.cleandoc(note)}" if note else "")
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
        defaults.update(self._spec.group_state)  # schedule-free's k, weight_sum, ...
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
            return self._spec.new_format_state(p, group, self.state_dtype, _scalar)
        return self._spec.new_state(p, group, np.full_like, _scalar, np.copy)

    def step(self, grads: Sequence[np.ndarray]) -> bool:
        s = self._spec
        s.check_mode(self.param_groups)
        done = super().step(grads)
        if done:
            s.finish_step(self.param_groups)
        return done

    def _partition_key(self, p: np.ndarray) -> Any:
        return self._spec.partition_key(p)

    def _run(self, group: dict[str, Any], params: list, grads: list, state: list[list],
             step: int, first: bool) -> None:
        if self.state_dtype != "fp32":
            self._spec.run_formats(group, params, grads, state, step, first, self.defaults)
            return
        key = self._spec.partition_key(params[0]) if self._spec.split else None
        self._spec.run(group, params, grads, state, step, first, self.defaults, part_key=key)


class _Modes:
    """train() / eval() of an optimizer whose spec declares Modes (schedule-free)."""

    _spec: _spec.OptimizerSpec
    param_groups: list[dict[str, Any]]
    state: dict[int, dict[str, Any]]

    def train(self) -> None:
        """Puts the training point (y) into the parameters; call before training steps."""
        self._switch(True)

    def eval(self) -> None:
        """Puts the averaged point (x) into the parameters; call before evaluating,
        predicting or saving."""
        self._switch(False)

    def _switch(self, train: bool) -> None:
        m = self._spec.modes
        assert m is not None
        offset = 0
        for group in self.param_groups:
            pairs = []
            for i, p in enumerate(group["params"], offset):
                st = self.state.get(i)
                if st and m.state in st:
                    pairs.append((p, st[m.state]))
            offset += len(group["params"])
            self._spec.switch_mode(group, train, pairs)


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


# ---------------------------------------------------------------------------------------
# Optimizers that are not one elementwise kernel (spec: declare_special). Their signature,
# defaults, docs and checks come from the declaration; the step is written out here.


class _Special(_SpecOptimizer):
    """Base of the non-elementwise optimizers (``class Name(_Special, spec="Name")``)."""

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(params, *args, **kwargs)
        if self._spec.resolve is not None:  # LBFGS: max_eval None -> max_iter * 5 // 4
            self._spec.resolve(self.defaults)
            for g in self.param_groups:
                self._spec.resolve(g)

    def _validate(self, group: dict[str, Any]) -> None:
        self._spec.validate(group)


def _adafactor_state(shape: tuple[int, ...], dtype: Any) -> dict[str, Any]:
    if len(shape) >= 2:
        return {"step": 0, "row_var": np.zeros(shape[:-1] + (1,), dtype),
                "col_var": np.zeros(shape[:-2] + (1,) + shape[-1:], dtype)}
    return {"step": 0, "variance": np.zeros(shape, dtype)}


def _adafactor_eps1(group: dict[str, Any], dtype: Any) -> float:
    """torch's eps1=None: the machine epsilon of the group's first parameter's dtype
    (torch's for-loop resolves it once per group, from the first parameter it updates)."""
    eps1 = group["eps"][0]
    return float(np.finfo(dtype).eps) if eps1 is None else float(eps1)


class Adafactor(_Special, spec="Adafactor"):
    _tensor_keys = ("row_var", "col_var", "variance")

    def _new_state(self, p: np.ndarray, group: dict[str, Any]) -> dict[str, Any]:
        return _adafactor_state(p.shape, p.dtype)

    def _run(self, group: dict[str, Any], params: list, grads: list, state: list[list],
             step: int, first: bool) -> None:
        _core.adafactor_step(params, grads, *state, step=step, lr=group["lr"],
                             beta2_decay=group["beta2_decay"],
                             eps1=_adafactor_eps1(group, group["params"][0].dtype),
                             eps2=group["eps"][1], d=group["d"],
                             weight_decay=group["weight_decay"], maximize=group["maximize"])


def muon_lr_ratio(adjust_lr_fn: str | None, shape: tuple[int, ...]) -> float:
    """torch.optim.Muon's learning-rate factor for a rows x cols matrix."""
    a, b = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1.0, a / b))
    return 0.2 * math.sqrt(max(a, b))


def newton_schulz(x: np.ndarray, coefficients: Sequence[float], steps: int,
                  eps: float) -> np.ndarray:
    """Muon's quintic Newton-Schulz orthogonalization of a matrix, in x's dtype, through
    BLAS products (numpy's ``@``): X = x / max(||x||_F, eps) (transposed when it has more
    rows than columns); ``steps`` times A = X X^T, X = a X + (b A + c A A) X."""
    a, b, c = (x.dtype.type(v) for v in coefficients)
    tall = x.shape[0] > x.shape[1]
    X = x.T if tall else x
    X = X / max(x.dtype.type(np.linalg.norm(X)), x.dtype.type(eps))
    Y = np.empty_like(X)
    for _ in range(steps):
        A = X @ X.T
        B = A @ A
        B *= c
        B += b * A        # b A + c A A, in place
        np.matmul(B, X, out=Y)
        X *= a
        X += Y            # a X + (b A + c A A) X
    return np.ascontiguousarray(X.T if tall else X)


class Muon(_Special, spec="Muon"):
    """(The orthogonalization runs in the parameter's dtype, float32 or float64, as numpy
    has no bfloat16 products; torch.optim.Muon and fastoptim.torch.Muon run it in
    bfloat16.)"""

    _tensor_keys = ("momentum_buffer",)
    _has_step = False

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        ps = param_group.get("params")
        for i, p in enumerate([ps] if isinstance(ps, np.ndarray) else list(ps or ())):
            if isinstance(p, np.ndarray) and p.ndim != 2:
                raise ValueError(f"Muon only supports 2-D parameters; params[{i}] has shape "
                                 f"{p.shape}")
        super().add_param_group(param_group)

    def _new_state(self, p: np.ndarray, group: dict[str, Any]) -> dict[str, Any]:
        return {"momentum_buffer": np.zeros_like(p)}

    def _run(self, group: dict[str, Any], params: list, grads: list, state: list[list],
             step: int, first: bool) -> None:
        outs = [np.empty_like(p) for p in params]
        _core.muon_momentum(outs, grads, state[0], momentum=group["momentum"],
                            nesterov=group["nesterov"])
        ortho = [newton_schulz(o, group["ns_coefficients"], group["ns_steps"], group["eps"])
                 for o in outs]
        alphas = [-group["lr"] * muon_lr_ratio(group["adjust_lr_fn"], p.shape) for p in params]
        _core.muon_update(params, ortho, alphas, lr=group["lr"],
                          weight_decay=group["weight_decay"])


def coalesce_rows(rows: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique row indices and the summed values of each (as torch's coalesce())."""
    rows = np.asarray(rows)
    if rows.ndim != 1 or rows.dtype.kind not in "iu":
        raise TypeError(f"rows must be a 1-D integer array, got {rows.dtype} of shape "
                        f"{rows.shape}")
    uniq, inverse = np.unique(rows, return_inverse=True)
    if len(uniq) == len(rows) and np.all(rows[1:] > rows[:-1]):
        return rows.astype(np.int64), np.ascontiguousarray(values)
    out = np.zeros((len(uniq),) + values.shape[1:], values.dtype)
    np.add.at(out, inverse, values)
    return uniq.astype(np.int64), out


class SparseAdam(_Special, spec="SparseAdam"):
    """The gradient of a parameter is a pair ``(rows, values)``: int row indices (into the
    first dimension) and ``values`` of shape ``(len(rows), *param.shape[1:])``, torch's
    sparse COO gradient with one sparse dimension (an embedding's). Repeated rows are
    summed first, as torch's ``coalesce()``. Only those rows of the parameter and of
    exp_avg, exp_avg_sq change; ``step`` counts every step the parameter is given."""

    _tensor_keys = ("exp_avg", "exp_avg_sq")

    def _new_state(self, p: np.ndarray, group: dict[str, Any]) -> dict[str, Any]:
        return {"step": 0, "exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)}

    def step(self, grads: Sequence[Any]) -> bool:
        grads = list(grads)
        if len(grads) != len(self._params):
            raise ValueError(f"grads has {len(grads)} entries but the optimizer has "
                             f"{len(self._params)} parameters")
        pairs = []
        for i, (p, g) in enumerate(zip(self._params, grads, strict=True)):
            if not (isinstance(g, tuple) and len(g) == 2):
                raise TypeError(f"grads[{i}] must be a pair (rows, values), got "
                                f"{type(g).__name__}")
            rows, values = coalesce_rows(*g)
            if not isinstance(values, np.ndarray) or values.dtype != p.dtype:
                raise TypeError(f"grads[{i}] values must be a {p.dtype} array")
            if p.ndim == 0 or values.shape != (len(rows),) + p.shape[1:]:
                raise ValueError(f"grads[{i}] values have shape {values.shape}; expected "
                                 f"{(len(rows),) + p.shape[1:]}")
            if len(rows) and (rows[0] < 0 or rows[-1] >= p.shape[0]):
                raise ValueError(f"grads[{i}] rows are out of range for shape {p.shape}")
            pairs.append((rows, values))
        if self.skip_nonfinite and not all(np.isfinite(v).all() for _, v in pairs):
            self.skipped_steps += 1
            return False
        group_of = [g for g in self.param_groups for _ in g["params"]]
        for i, (p, (rows, values)) in enumerate(zip(self._params, pairs, strict=True)):
            group = group_of[i]
            st = self.state.get(i)
            if st is None:
                st = self.state[i] = self._new_state(p, group)
            st["step"] += 1
            if len(rows) == 0:
                continue
            b1, b2 = group["betas"]
            _core.sparse_adam_step(p, st["exp_avg"], st["exp_avg_sq"], rows, values,
                                   step=st["step"], lr=group["lr"], beta1=b1, beta2=b2,
                                   eps=group["eps"], maximize=group["maximize"])
        return True


# -- L-BFGS ------------------------------------------------------------------------------
# torch.optim.LBFGS's algorithm (Nocedal & Wright, Numerical Optimization, alg. 7.4 and
# 3.5-3.6) on the flat parameter vector: BLAS dot products and numpy axpy updates. The
# same routine drives fastoptim.torch.LBFGS (on numpy views of its tensors).


def _cubic_interpolate(x1: float, f1: float, g1: float, x2: float, f2: float, g2: float,
                       bounds: tuple[float, float] | None = None) -> float:
    """Minimizer of the cubic through (x1, f1, g1), (x2, f2, g2), clamped to bounds."""
    lo, hi = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 ** 2 - g1 * g2
    if d2_square >= 0:
        d2 = np.sqrt(d2_square)
        if x1 <= x2:
            pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(pos, lo), hi)
    return (lo + hi) / 2.0


def _strong_wolfe(obj: Any, x: Any, t: float, d: np.ndarray, f: float, g: np.ndarray,
                  gtd: float, c1: float = 1e-4, c2: float = 0.9,
                  tolerance_change: float = 1e-9, max_ls: int = 25
                  ) -> tuple[float, np.ndarray, float, int]:
    """Line search for a step t satisfying the strong Wolfe conditions (torch's
    bracketing + zoom with cubic interpolation); returns (f, g, t, evaluations)."""
    d_norm = np.abs(d).max()
    g = g.copy()
    f_new, g_new = obj(x, t, d)
    evals = 1
    gtd_new = (np.dot(g_new, d))
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done = False
    it = 0
    bracket: list[float] = []
    bracket_f: list[float] = []
    bracket_g: list[np.ndarray] = []
    bracket_gtd: list[float] = []
    while it < max_ls:
        if f_new > (f + c1 * t * gtd) or (it > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                               bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new.copy(), gtd_new
        f_new, g_new = obj(x, t, d)
        evals += 1
        gtd_new = (np.dot(g_new, d))
        it += 1
    if it == max_ls:
        bracket, bracket_f, bracket_g = [0.0, t], [f, f_new], [g, g_new]
        bracket_gtd = [gtd, gtd_new]
    insuf_progress = False
    low, high = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and it < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1],
                               bracket_f[1], bracket_gtd[1])
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) \
                    else min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = obj(x, t, d)
        evals += 1
        gtd_new = (np.dot(g_new, d))
        it += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low]:
            bracket[high], bracket_f[high] = t, f_new
            bracket_g[high], bracket_gtd[high] = g_new.copy(), gtd_new
            low, high = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high] - bracket[low]) >= 0:
                bracket[high], bracket_f[high] = bracket[low], bracket_f[low]
                bracket_g[high], bracket_gtd[high] = bracket_g[low], bracket_gtd[low]
            bracket[low], bracket_f[low] = t, f_new
            bracket_g[low], bracket_gtd[low] = g_new.copy(), gtd_new
    return bracket_f[low], bracket_g[low], bracket[low], evals


@dataclass(slots=True)
class FlatProblem:
    """What L-BFGS needs of the parameters: ``evaluate()`` -> (loss, flat gradient) at the
    current parameters; ``add(step, direction)`` moves them; ``get()`` / ``put(x)`` save
    and restore them (flat copies)."""

    evaluate: Any
    add: Any
    get: Any
    put: Any


def lbfgs_step(problem: FlatProblem, state: dict[str, Any], group: dict[str, Any]) -> float:
    """One torch.optim.LBFGS ``step``: up to max_iter iterations (two-loop recursion over
    the last history_size pairs, then a fixed step lr or a strong-Wolfe line search);
    ``state`` holds torch's keys (d, t, old_dirs, old_stps, ro, H_diag, prev_flat_grad,
    prev_loss, func_evals, n_iter, al). Returns the loss at the start."""
    lr = float(group["lr"])
    max_iter, max_eval = group["max_iter"], group["max_eval"]
    tol_grad, tol_change = group["tolerance_grad"], group["tolerance_change"]
    history = group["history_size"]
    state.setdefault("func_evals", 0)
    state.setdefault("n_iter", 0)
    orig_loss, flat_grad = problem.evaluate()
    loss = float(orig_loss)
    evals = 1
    state["func_evals"] += 1
    if np.abs(flat_grad).max(initial=0.0) <= tol_grad:
        return orig_loss
    d: Any = state.get("d")
    t: Any = state.get("t")
    old_dirs: Any = state.get("old_dirs")
    old_stps: Any = state.get("old_stps")
    ro: Any = state.get("ro")
    h_diag: Any = state.get("H_diag")
    prev_flat_grad: Any = state.get("prev_flat_grad")
    prev_loss = state.get("prev_loss")
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        state["n_iter"] += 1
        if state["n_iter"] == 1:
            d = -flat_grad
            old_dirs, old_stps, ro, h_diag = [], [], [], 1.0
        else:
            y = flat_grad - prev_flat_grad
            s = d * t
            ys = (np.dot(y, s))
            if ys > 1e-10:
                if len(old_dirs) == history:
                    old_dirs.pop(0)
                    old_stps.pop(0)
                    ro.pop(0)
                old_dirs.append(y)
                old_stps.append(s)
                ro.append(1.0 / ys)
                h_diag = ys / (np.dot(y, y))
            if "al" not in state:
                state["al"] = [None] * history
            al = state["al"]
            q = -flat_grad
            for i in range(len(old_dirs) - 1, -1, -1):
                al[i] = (np.dot(old_stps[i], q)) * ro[i]
                q += -al[i] * old_dirs[i]
            d = r = q * h_diag
            for i in range(len(old_dirs)):
                be_i = (np.dot(old_dirs[i], r)) * ro[i]
                r += (al[i] - be_i) * old_stps[i]
        prev_flat_grad = flat_grad.copy()
        prev_loss = loss
        t = (min(1.0, 1.0 / np.abs(flat_grad).sum()) * lr if state["n_iter"] == 1
             else lr)
        gtd = (np.dot(flat_grad, d))
        if gtd > -tol_change:
            break
        ls_evals = 0
        if group["line_search_fn"] == "strong_wolfe":
            x_init = problem.get()

            def obj(x: Any, step: float, direction: np.ndarray) -> tuple[float, np.ndarray]:
                problem.add(step, direction)
                f, g = problem.evaluate()
                problem.put(x)
                return float(f), g

            loss, flat_grad, t, ls_evals = _strong_wolfe(obj, x_init, t, d, loss, flat_grad,
                                                         gtd, max_ls=max_eval - evals)
            problem.add(t, d)
            opt_cond = np.abs(flat_grad).max(initial=0.0) <= tol_grad
        else:
            problem.add(t, d)
            opt_cond = False
            if n_iter != max_iter:
                f, flat_grad = problem.evaluate()
                loss = float(f)
                opt_cond = np.abs(flat_grad).max(initial=0.0) <= tol_grad
                ls_evals = 1
        evals += ls_evals
        state["func_evals"] += ls_evals
        if n_iter == max_iter or evals >= max_eval or opt_cond:
            break
        if np.abs(d * t).max(initial=0.0) <= tol_change:
            break
        if abs(loss - prev_loss) < tol_change:
            break
    state.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=h_diag,
                 prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
    return orig_loss


class LBFGS(_Special, spec="LBFGS"):
    """``step(closure)``: ``closure()`` re-evaluates the objective at the current
    parameters and returns ``(loss, grads)``, the gradients aligned with the parameters.
    One parameter group, one dtype; the state (torch's keys) lives in ``state[0]``."""

    _tensor_keys = ()
    _has_step = False

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if self.param_groups:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        super().add_param_group(param_group)
        if len({p.dtype for p in self._params}) > 1:
            raise TypeError("LBFGS needs every parameter in one dtype")

    def _problem(self, closure: Any) -> FlatProblem:
        params = self._params
        sizes = [p.size for p in params]

        def evaluate() -> tuple[Any, np.ndarray]:
            loss, grads = closure()
            grads = list(grads)
            if len(grads) != len(params):
                raise ValueError(f"closure returned {len(grads)} gradients for "
                                 f"{len(params)} parameters")
            for i, (g, p) in enumerate(zip(grads, params, strict=True)):
                if np.shape(g) != p.shape:
                    raise ValueError(f"gradient {i} has shape {np.shape(g)}, expected "
                                     f"{p.shape}")
            return loss, np.concatenate([np.asarray(g, p.dtype).ravel()
                                         for g, p in zip(grads, params, strict=True)])

        def add(step: float, d: np.ndarray) -> None:
            off = 0
            for p, n in zip(params, sizes, strict=True):
                p += p.dtype.type(step) * d[off:off + n].reshape(p.shape)
                off += n

        def get() -> list[np.ndarray]:
            return [p.copy() for p in params]

        def put(x: list[np.ndarray]) -> None:
            for p, v in zip(params, x, strict=True):
                p[...] = v

        return FlatProblem(evaluate, add, get, put)

    def step(self, closure: Any) -> Any:  # type: ignore[override]
        """Runs up to max_iter L-BFGS iterations; returns the loss at the start."""
        if not callable(closure):
            raise TypeError("LBFGS.step needs a closure returning (loss, grads)")
        state = self.state.setdefault(0, {})
        return lbfgs_step(self._problem(closure), state, self.param_groups[0])
class AdamWScheduleFree(_Modes, _SpecOptimizer, spec="AdamWScheduleFree"):
    pass


class SGDScheduleFree(_Modes, _SpecOptimizer, spec="SGDScheduleFree"):
    pass


class Lamb(_SpecOptimizer, spec="Lamb"):
    pass


class LARS(_SpecOptimizer, spec="LARS"):
    pass
