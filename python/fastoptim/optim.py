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

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fastoptim import _core

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Optimizer", "clip_grad_norm"]


def _as_step(value: Any, where: str) -> int:
    """An int64 step counter from an int, an integral float or a 0-d array/tensor."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where} must be an integer step count, got {type(value).__name__}")
    if not math.isfinite(float(value)) or float(value) != int(value) or int(value) < 0:
        raise ValueError(f"{where} must be a non-negative integer, got {value!r}")
    return int(value)


class Optimizer:
    """Base class: parameter groups, lazily created state, state_dict in torch's layout.

    Subclasses set ``_defaults`` and implement ``_validate`` (calls the native kernel with
    empty lists, so the hyperparameter checks live in C++ only), ``_new_state`` and
    ``_run`` (one native multi-tensor call).
    """

    _defaults: dict[str, Any] = {}
    _tensor_keys: tuple[str, ...] = ()  # state arrays, in the kernel's argument order
    _has_step = True

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
    def _plan(self) -> list[Any]:
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
                ids = [offset + j for j in idx]
                whole = idx == list(range(len(group["params"])))
                plan.append([ids, [group["params"][j] for j in idx], whole, fresh])
            plans.append((group, offset, plan))
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
        plans = self._plan()
        work = []
        for group, offset, plan in plans:
            n = len(group["params"])
            for part in plan:
                ids, ps, whole = part[:3]
                gs = grads[offset:offset + n] if whole else [grads[i] for i in ids]
                work.append((group, part, gs))
        if self.skip_nonfinite and not all(
                math.isfinite(_core.global_norm(gs)) for _, _, gs in work):
            self.skipped_steps += 1
            return False
        for group, part, gs in work:
            ids, ps, _, fresh = part[:4]
            if fresh:
                for i, p in zip(ids, ps, strict=False):
                    self.state[i] = self._new_state(p, group)
                part[3] = False
            if len(part) == 4:  # the state arrays of this partition, listed once
                part.append([[self.state[i].get(k) for i in ids] for k in self._tensor_keys])
            states = part[4]
            step = self.state[ids[0]]["step"] + 1 if self._has_step else 0
            self._run(group, ps, gs, states, step, fresh)
            if self._has_step:
                for i in ids:
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
            missing = set(want) - set(st)
            if missing:
                raise ValueError(f"state {sid}: missing key(s) {sorted(missing)}")
            loaded: dict[str, Any] = {}
            for k, _ref in want.items():
                v = st[k]
                if k == "step":
                    loaded[k] = _as_step(v, f"state {sid} 'step'")
                    continue
                a = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
                if a.shape != p.shape:
                    raise ValueError(f"state {sid} '{k}' has shape {a.shape} but its "
                                     f"parameter has shape {p.shape}")
                if a.dtype != p.dtype:
                    raise TypeError(f"state {sid} '{k}' has dtype {a.dtype} but its "
                                    f"parameter is {p.dtype}")
                loaded[k] = np.array(a, dtype=p.dtype, order="C", copy=True)
            new_state[i] = loaded
        for group, new in zip(self.param_groups, new_groups, strict=False):
            group.update(new)
        self.state = new_state
        self._plans = None

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v!r}" for k, v in self.defaults.items())
        return f"{type(self).__name__}({len(self._params)} arrays, {hyper})"


class SGD(Optimizer):
    """torch.optim.SGD: momentum, dampening, Nesterov, L2 weight decay, maximize.

    Full-batch gradient descent is this optimizer with the whole data set as the batch.
    State: ``momentum_buffer`` (only when momentum != 0), no step counter.
    """

    _has_step = False
    _tensor_keys = ("momentum_buffer",)

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 maximize: bool = False, *, skip_nonfinite: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize), skip_nonfinite=skip_nonfinite)

    def _validate(self, g):
        _core.sgd_step([], [], [], lr=g["lr"], momentum=g["momentum"],
                       dampening=g["dampening"], weight_decay=g["weight_decay"],
                       nesterov=g["nesterov"], maximize=g["maximize"])

    def _new_state(self, p, group):
        return {"momentum_buffer": np.zeros_like(p)} if group["momentum"] != 0 else {}

    def _run(self, g, params, grads, state, step, first):
        bufs = state[0] if g["momentum"] != 0 else None
        if bufs is not None and any(b is None for b in bufs):  # momentum switched on later
            raise ValueError("momentum was changed from 0 after the first step; "
                             "create a new optimizer instead")
        _core.sgd_step(params, grads, bufs, lr=g["lr"], momentum=g["momentum"],
                       dampening=g["dampening"], weight_decay=g["weight_decay"],
                       nesterov=g["nesterov"], maximize=g["maximize"], first_step=first)


class Adam(Optimizer):
    """torch.optim.Adam (L2 weight decay into the gradient; eps added to the bias-corrected
    sqrt(v)); ``amsgrad`` keeps the running maximum. State: ``step``, ``exp_avg``,
    ``exp_avg_sq`` and ``max_exp_avg_sq`` when amsgrad."""

    _decoupled = False
    _tensor_keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 maximize: bool = False, *, skip_nonfinite: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize), skip_nonfinite=skip_nonfinite)

    def _kw(self, g):
        b1, b2 = g["betas"]
        return dict(lr=g["lr"], beta1=b1, beta2=b2, eps=g["eps"],
                    weight_decay=g["weight_decay"], decoupled_weight_decay=self._decoupled,
                    amsgrad=g["amsgrad"], maximize=g["maximize"])

    def _validate(self, g):
        if len(g["betas"]) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {g['betas']!r}")
        _core.adam_step([], [], [], [], [], step=1, **self._kw(g))

    def _new_state(self, p, group):
        s = {"step": 0, "exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)}
        if group["amsgrad"]:
            s["max_exp_avg_sq"] = np.zeros_like(p)
        return s

    def _run(self, g, params, grads, state, step, first):
        m, v, vmax = state
        if g["amsgrad"] and any(x is None for x in vmax):
            raise ValueError("amsgrad was switched on after the first step")
        _core.adam_step(params, grads, m, v, vmax if g["amsgrad"] else None, step=step,
                        **self._kw(g))


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (p *= 1 - lr * weight_decay)."""

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 maximize: bool = False, *, skip_nonfinite: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize,
                         skip_nonfinite=skip_nonfinite)


class RMSprop(Optimizer):
    """torch.optim.RMSprop (eps after the root; ``centered`` subtracts the squared mean
    gradient; ``momentum`` keeps a buffer of g / (sqrt(v) + eps)). State: ``step``,
    ``square_avg``, ``momentum_buffer`` when momentum > 0, ``grad_avg`` when centered."""

    _tensor_keys = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 maximize: bool = False, *, skip_nonfinite: bool = False) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered,
                                      maximize=maximize), skip_nonfinite=skip_nonfinite)

    def _kw(self, g):
        return {k: g[k] for k in ("lr", "alpha", "eps", "weight_decay", "momentum",
                                  "centered", "maximize")}

    def _validate(self, g):
        _core.rmsprop_step([], [], [], [], [], **self._kw(g))

    def _new_state(self, p, group):
        s = {"step": 0, "square_avg": np.zeros_like(p)}
        if group["momentum"] > 0:
            s["momentum_buffer"] = np.zeros_like(p)
        if group["centered"]:
            s["grad_avg"] = np.zeros_like(p)
        return s

    def _run(self, g, params, grads, state, step, first):
        sq, buf, gavg = state
        mom, cen = g["momentum"] > 0, g["centered"]
        if (mom and any(x is None for x in buf)) or (cen and any(x is None for x in gavg)):
            raise ValueError("momentum or centered was switched on after the first step")
        _core.rmsprop_step(params, grads, sq, buf if mom else None, gavg if cen else None,
                           **self._kw(g))


class Adagrad(Optimizer):
    """torch.optim.Adagrad: ``sum += g^2``, ``p -= clr * g / (sqrt(sum) + eps)`` with
    ``clr = lr / (1 + (step - 1) * lr_decay)``. State (created at construction, as torch):
    ``step`` and ``sum`` (filled with ``initial_accumulator_value``)."""

    _tensor_keys = ("sum",)

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, maximize: bool = False, *,
                 skip_nonfinite: bool = False) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize),
                         skip_nonfinite=skip_nonfinite)

    def _validate(self, g):
        iav = g["initial_accumulator_value"]
        if not (iav >= 0 and math.isfinite(iav)):
            raise ValueError(f"initial_accumulator_value must be a finite number >= 0, "
                             f"got {iav!r}")
        _core.adagrad_step([], [], [], step=1, lr=g["lr"], lr_decay=g["lr_decay"],
                           weight_decay=g["weight_decay"], eps=g["eps"],
                           maximize=g["maximize"])

    def add_param_group(self, param_group):
        first = len(self._params)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for i, p in enumerate(group["params"]):
            self.state[first + i] = self._new_state(p, group)

    def _new_state(self, p, group):
        return {"step": 0,
                "sum": np.full_like(p, group["initial_accumulator_value"])}

    def _run(self, g, params, grads, state, step, first):
        _core.adagrad_step(params, grads, state[0], step=step, lr=g["lr"],
                           lr_decay=g["lr_decay"], weight_decay=g["weight_decay"],
                           eps=g["eps"], maximize=g["maximize"])


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
