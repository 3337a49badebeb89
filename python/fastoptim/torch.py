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

import operator

import torch

from fastoptim import _core

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]


def _unsupported(name: str, **flags) -> None:
    for k, v in flags.items():
        if v:
            raise ValueError(f"fastoptim.torch.{name} does not support {k}=True")


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


def _step0():
    return 0


class SGD(_Native):
    """torch.optim.SGD on the fastoptim kernel."""

    _has_step = False
    _state_keys = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None):
        _unsupported("SGD", differentiable=differentiable, fused=fused)
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                        foreach=foreach, differentiable=False, fused=None)
        super().__init__(params, defaults)

    def _kw(self, g):
        return dict(lr=float(g["lr"]), momentum=g["momentum"], dampening=g["dampening"],
                    weight_decay=float(g["weight_decay"]), nesterov=g["nesterov"],
                    maximize=g["maximize"])

    def _validate(self, g):
        _core.sgd_step([], [], [], **self._kw(g))

    def _new_state(self, p, group):
        if group["momentum"] != 0:
            return {"momentum_buffer": torch.zeros_like(p, memory_format=torch.contiguous_format)}
        return {}

    def _run(self, g, ps, gs, states, step, first):
        bufs = states[0] if g["momentum"] != 0 else None
        _core.sgd_step(ps, gs, bufs, first_step=first, **self._kw(g))


class Adam(_Native):
    """torch.optim.Adam on the fastoptim kernel."""

    _state_keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False):
        _unsupported(type(self).__name__, capturable=capturable,
                     differentiable=differentiable, fused=fused)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                        capturable=False, differentiable=False, fused=None,
                        decoupled_weight_decay=decoupled_weight_decay or self._decoupled)
        super().__init__(params, defaults)

    def _kw(self, g):
        b1, b2 = g["betas"]
        return dict(lr=float(g["lr"]), beta1=float(b1), beta2=float(b2), eps=g["eps"],
                    weight_decay=float(g["weight_decay"]),
                    decoupled_weight_decay=bool(g["decoupled_weight_decay"]),
                    amsgrad=g["amsgrad"], maximize=g["maximize"])

    def _validate(self, g):
        _core.adam_step([], [], [], [], [], step=1, **self._kw(g))

    def _new_state(self, p, group):
        z = lambda: torch.zeros_like(p, memory_format=torch.contiguous_format)  # noqa: E731
        s = {"step": _step0(), "exp_avg": z(), "exp_avg_sq": z()}
        if group["amsgrad"]:
            s["max_exp_avg_sq"] = z()
        return s

    def _run(self, g, ps, gs, states, step, first):
        m, v, vmax = states
        _core.adam_step(ps, gs, m, v, vmax if g["amsgrad"] else None, step=step,
                        **self._kw(g))


class AdamW(Adam):
    """torch.optim.AdamW on the fastoptim kernel."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused)


class RMSprop(_Native):
    """torch.optim.RMSprop on the fastoptim kernel."""

    _state_keys = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False):
        _unsupported("RMSprop", capturable=capturable, differentiable=differentiable)
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered, capturable=False,
                        foreach=foreach, maximize=maximize, differentiable=False)
        super().__init__(params, defaults)

    def _kw(self, g):
        return dict(lr=float(g["lr"]), alpha=g["alpha"], eps=g["eps"],
                    weight_decay=float(g["weight_decay"]), momentum=g["momentum"],
                    centered=g["centered"], maximize=g["maximize"])

    def _validate(self, g):
        _core.rmsprop_step([], [], [], [], [], **self._kw(g))

    def _new_state(self, p, group):
        z = lambda: torch.zeros_like(p, memory_format=torch.contiguous_format)  # noqa: E731
        s = {"step": _step0(), "square_avg": z()}
        if group["momentum"] > 0:
            s["momentum_buffer"] = z()
        if group["centered"]:
            s["grad_avg"] = z()
        return s

    def _run(self, g, ps, gs, states, step, first):
        sq, buf, gavg = states
        _core.rmsprop_step(ps, gs, sq, buf if g["momentum"] > 0 else None,
                           gavg if g["centered"] else None, **self._kw(g))


class Adagrad(_Native):
    """torch.optim.Adagrad on the fastoptim kernel (state created at construction)."""

    _state_keys = ("sum",)

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0,
                 initial_accumulator_value=0, eps=1e-10, foreach=None, *, maximize=False,
                 differentiable=False, fused=None):
        _unsupported("Adagrad", differentiable=differentiable, fused=fused)
        if not initial_accumulator_value >= 0:
            raise ValueError(f"initial_accumulator_value must be >= 0, got "
                             f"{initial_accumulator_value}")
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                        maximize=maximize, differentiable=False, fused=None)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p].update(self._new_state(p, group))

    def _validate(self, g):
        _core.adagrad_step([], [], [], step=1, lr=float(g["lr"]), lr_decay=g["lr_decay"],
                           weight_decay=float(g["weight_decay"]), eps=g["eps"],
                           maximize=g["maximize"])

    def _new_state(self, p, group):
        return {"step": _step0(),
                "sum": torch.full_like(p, group["initial_accumulator_value"],
                                       memory_format=torch.contiguous_format)}

    def _run(self, g, ps, gs, states, step, first):
        _core.adagrad_step(ps, gs, states[0], step=step, lr=float(g["lr"]),
                           lr_decay=g["lr_decay"], weight_decay=float(g["weight_decay"]),
                           eps=g["eps"], maximize=g["maximize"])
