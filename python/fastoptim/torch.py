"""Drop-in ``torch.optim`` optimizers for CPU tensors, running the fastoptim kernels.

    from fastoptim.torch import Adam      # instead of: from torch.optim import Adam
    opt = Adam(model.parameters(), lr=1e-3)

Each class subclasses ``torch.optim.Optimizer`` with torch's constructor signature and
state layout (``step``, ``exp_avg``, ...), so ``state_dict()`` loads into the torch
original and back, and torch's LR schedulers and ``clip_grad_norm_`` work unchanged. A
step updates the float32/float64 CPU tensors of a group in place, zero copy, with one
native multi-tensor call per group (and dtype). ``step`` is a Python int in ``state``
(int64 semantics) and an int64 0-d tensor in ``state_dict()``. The lists of parameters and
state tensors are cached while the same parameters have gradients; replace state tensors
only through ``load_state_dict``.

Not supported (clear errors): CUDA tensors, sparse gradients, complex or integer
parameters, ``fused``/``capturable``/``differentiable=True``. ``foreach`` is accepted
and ignored. Writes go through raw pointers, so autograd's version counters are not
bumped (torch's optimizers run under ``no_grad`` too; do not backpropagate through a
graph that saved a parameter before the step).
"""

from __future__ import annotations

import inspect
import operator
from typing import Any

import torch

from fastoptim import spec as _spec

__all__ = list(_spec.names())


class _Native(torch.optim.Optimizer):
    _state_keys: tuple[str, ...] = ()
    _has_step = True

    def _check_params(self) -> None:
        for gi, g in enumerate(self.param_groups):
            for j, p in enumerate(g["params"]):
                where = f"param_groups[{gi}]['params'][{j}]"
                if p.device.type != "cpu":
                    raise ValueError(f"{where} is on {p.device}; fastoptim.torch updates CPU "
                                     f"tensors only (use torch.optim on GPUs)")
                if p.dtype not in (torch.float32, torch.float64):
                    raise TypeError(f"{where} has dtype {p.dtype}; fastoptim.torch updates "
                                    f"float32/float64 tensors only")

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        self._forget_plans()
        self._check_params()
        self._validate(self.param_groups[-1])

    def _new_state(self, p, group) -> dict:
        raise NotImplementedError

    def _validate(self, group) -> None:
        raise NotImplementedError

    def _run(self, group, ps, gs, states, step: int, first: bool) -> None:
        raise NotImplementedError

    def _group_plan(self, gi: int, group, ps: list) -> list:
        """Partitions of ``ps`` sharing dtype and step, each with its state lists, cached
        while the same tensors have gradients (state is created here on first use)."""
        cache = self.__dict__.setdefault("_fo_plans", {})
        hit = cache.get(gi)
        if hit is not None and len(hit[0]) == len(ps) and all(map(operator.is_, hit[0], ps)):
            return hit[1]
        parts: dict = {}
        for p in ps:
            if p.grad.is_sparse:
                raise TypeError("fastoptim.torch does not support sparse gradients")
            st = self.state[p]
            fresh = len(st) == 0
            if fresh:
                st.update(self._new_state(p, group))
            key = (p.dtype, int(st["step"]) if self._has_step else 0, fresh)
            parts.setdefault(key, []).append(p)
        plan = []
        for (_, step, fresh), qs in parts.items():
            sts = [self.state[p] for p in qs]
            if self._has_step:
                for st in sts:  # a Python int while training: int64, no tensor ops per step
                    st["step"] = int(st["step"])
            states = [[st.get(k) for st in sts] for k in self._state_keys]
            # numpy views of the parameters and state (zero copy): the native gate checks
            # an ndarray in ~50 ns, a tensor through its Python attributes in ~1 us.
            views = [p.detach().numpy() for p in qs]
            state_views = [None if lst[0] is None else [t.numpy() for t in lst]
                           for lst in states]
            ptrs = [p.data_ptr() for p in qs]
            plan.append([qs, sts, states, step, fresh, views, state_views, ptrs])
        cache[gi] = (list(ps), plan)
        return plan

    def _current_plan(self, gi: int, group, ps: list) -> list:
        """The cached plan, rebuilt if a parameter's storage was replaced (p.data = ...)."""
        plan = self._group_plan(gi, group, ps)
        for part in plan:
            if any(map(operator.ne, map(torch.Tensor.data_ptr, part[0]), part[7])):
                self._forget_plans()
                return self._group_plan(gi, group, ps)
        return plan

    def _forget_plans(self) -> None:
        self.__dict__.pop("_fo_plans", None)

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure()'s loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for gi, group in enumerate(self.param_groups):
            ps = [p for p in group["params"] if p.grad is not None]
            if not ps:
                continue
            for part in self._current_plan(gi, group, ps):
                qs, sts, _, step, fresh, views, state_views, _ = part
                self._run(group, views, [p.grad for p in qs], state_views, step + 1, fresh)
                part[3], part[4] = step + 1, False
                if self._has_step:
                    for st in sts:
                        st["step"] = step + 1
        return loss

    def state_dict(self):
        """torch's state_dict; ``step`` is an int64 0-d tensor, as torch expects a tensor."""
        sd = super().state_dict()  # its per-parameter dicts are the live ones: copy them
        sd["state"] = {k: ({**st, "step": torch.tensor(st["step"], dtype=torch.int64)}
                           if "step" in st else st) for k, st in sd["state"].items()}
        return sd

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._forget_plans()
        for st in self.state.values():  # torch stores step as a float tensor
            if "step" in st:
                st["step"] = int(st["step"])


def _full_like(p: torch.Tensor, value: float) -> torch.Tensor:
    if value == 0:
        return torch.zeros_like(p, memory_format=torch.contiguous_format)
    return torch.full_like(p, value, memory_format=torch.contiguous_format)


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
        cls._has_step = s.has_step
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
        super().__init__(params, defaults)
        if s.eager_state:  # torch's Adagrad creates its state with the parameters
            for group in self.param_groups:
                for p in group["params"]:
                    self.state[p].update(self._new_state(p, group))

    def _validate(self, group) -> None:
        self._spec.validate(group, self.defaults)

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
