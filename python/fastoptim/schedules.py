"""Learning-rate schedules: plain callables ``step -> lr``.

    sched = warmup(cosine(1e-3, total_steps=10_000), warmup_steps=500)
    for step in range(10_000):
        opt.param_groups[0]["lr"] = sched(step)
        opt.step(grads)

``step`` counts from 0 (the lr of the first update); each schedule's value at step k equals
what the matching ``torch.optim.lr_scheduler`` gives after k calls to ``scheduler.step()``.
Every schedule has ``get_config()`` (a JSON-able dict) and is rebuilt by
``from_config(config)``. ``ReduceLROnPlateau`` is driven by a metric instead of the step.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "Schedule", "constant", "step_decay", "multi_step", "exponential", "inverse_time",
    "polynomial", "cosine", "cosine_warm_restarts", "warmup", "one_cycle",
    "piecewise_constant", "sequence", "ReduceLROnPlateau", "from_config",
]

_REGISTRY: dict[str, type] = {}


def _check(name: str, value: float, *, positive: bool = False) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, "
                         f"got {value!r}")
    return v


class Schedule:
    """Base class: subclasses define ``_lr(step)`` and keep their arguments in ``_args``."""

    _args: dict[str, Any]

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        _REGISTRY[cls.__name__] = cls

    def __call__(self, step: int) -> float:
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return float(self._lr(step))

    def _lr(self, step: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        cfg = {}
        for k, v in self._args.items():
            cfg[k] = v.get_config() if isinstance(v, Schedule) else (
                [s.get_config() for s in v] if isinstance(v, list) and v
                and isinstance(v[0], Schedule) else v)
        return {"name": type(self).__name__, **cfg}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Schedule:
        return from_config(config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._args.items())})"


def from_config(config: dict[str, Any]) -> Schedule:
    """Rebuilds a schedule from ``get_config()``'s dict."""
    cfg = dict(config)
    cls = _REGISTRY.get(cfg.pop("name", None))
    if cls is None:
        raise ValueError(f"unknown schedule config {config!r}")
    for k, v in cfg.items():
        if isinstance(v, dict) and "name" in v:
            cfg[k] = from_config(v)
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            cfg[k] = [from_config(x) for x in v]
    return cls(**cfg)


class constant(Schedule):  # noqa: N801 - schedules are named like functions
    """lr at every step."""

    def __init__(self, lr: float):
        self._args = {"lr": _check("lr", lr)}

    def _lr(self, step):
        return self._args["lr"]


class step_decay(Schedule):  # noqa: N801
    """lr * gamma ** (step // step_size)  (torch StepLR)."""

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1):
        if int(step_size) < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size!r}")
        self._args = {"lr": _check("lr", lr), "step_size": int(step_size),
                      "gamma": _check("gamma", gamma)}

    def _lr(self, step):
        a = self._args
        return a["lr"] * a["gamma"] ** (step // a["step_size"])


class multi_step(Schedule):  # noqa: N801
    """lr * gamma ** (number of milestones <= step)  (torch MultiStepLR)."""

    def __init__(self, lr: float, milestones: Sequence[int], gamma: float = 0.1):
        ms = sorted(int(m) for m in milestones)
        self._args = {"lr": _check("lr", lr), "milestones": ms, "gamma": _check("gamma", gamma)}

    def _lr(self, step):
        a = self._args
        return a["lr"] * a["gamma"] ** bisect.bisect_right(a["milestones"], step)


class exponential(Schedule):  # noqa: N801
    """lr * gamma ** step  (torch ExponentialLR)."""

    def __init__(self, lr: float, gamma: float):
        self._args = {"lr": _check("lr", lr), "gamma": _check("gamma", gamma)}

    def _lr(self, step):
        return self._args["lr"] * self._args["gamma"] ** step


class inverse_time(Schedule):  # noqa: N801
    """lr / (step + 1) ** power_t: scikit-learn's ``learning_rate='invscaling'``."""

    def __init__(self, lr: float, power_t: float = 0.5):
        self._args = {"lr": _check("lr", lr), "power_t": _check("power_t", power_t)}

    def _lr(self, step):
        return self._args["lr"] / (step + 1) ** self._args["power_t"]


class polynomial(Schedule):  # noqa: N801
    """(lr - end_lr) * (1 - min(step, total_steps) / total_steps) ** power + end_lr
    (torch PolynomialLR when end_lr = 0)."""

    def __init__(self, lr: float, total_steps: int, power: float = 1.0, end_lr: float = 0.0):
        if int(total_steps) < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps!r}")
        self._args = {"lr": _check("lr", lr), "total_steps": int(total_steps),
                      "power": _check("power", power), "end_lr": _check("end_lr", end_lr)}

    def _lr(self, step):
        a = self._args
        frac = 1.0 - min(step, a["total_steps"]) / a["total_steps"]
        return (a["lr"] - a["end_lr"]) * frac ** a["power"] + a["end_lr"]


class cosine(Schedule):  # noqa: N801
    """eta_min + (lr - eta_min) * (1 + cos(pi * step / total_steps)) / 2
    (torch CosineAnnealingLR with T_max = total_steps)."""

    def __init__(self, lr: float, total_steps: int, eta_min: float = 0.0):
        if int(total_steps) < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps!r}")
        self._args = {"lr": _check("lr", lr), "total_steps": int(total_steps),
                      "eta_min": _check("eta_min", eta_min)}

    def _lr(self, step):
        a = self._args
        return a["eta_min"] + (a["lr"] - a["eta_min"]) * (
            1 + math.cos(math.pi * step / a["total_steps"])) / 2


class cosine_warm_restarts(Schedule):  # noqa: N801
    """Cosine from lr to eta_min over T_0 steps, restarting; periods grow by T_mult
    (torch CosineAnnealingWarmRestarts, SGDR)."""

    def __init__(self, lr: float, T_0: int, T_mult: int = 1, eta_min: float = 0.0):  # noqa: N803
        if int(T_0) < 1 or int(T_mult) < 1:
            raise ValueError(f"T_0 and T_mult must be >= 1, got {T_0!r}, {T_mult!r}")
        self._args = {"lr": _check("lr", lr), "T_0": int(T_0), "T_mult": int(T_mult),
                      "eta_min": _check("eta_min", eta_min)}

    def _lr(self, step):
        a = self._args
        t, period = step, a["T_0"]
        while t >= period:
            t -= period
            period *= a["T_mult"]
        return a["eta_min"] + (a["lr"] - a["eta_min"]) * (1 + math.cos(math.pi * t / period)) / 2


class sequence(Schedule):  # noqa: N801
    """Chains schedules: schedules[i] runs from boundaries[i-1] on, counting its own steps
    from 0 (like optax.join_schedules and torch SequentialLR)."""

    def __init__(self, schedules: Sequence[Callable[[int], float]], boundaries: Sequence[int]):
        schedules = list(schedules)
        if len(boundaries) != len(schedules) - 1:
            raise ValueError("boundaries must have one entry fewer than schedules")
        self._args = {"schedules": schedules, "boundaries": [int(b) for b in boundaries]}

    def _lr(self, step):
        b = self._args["boundaries"]
        i = bisect.bisect_right(b, step)
        return self._args["schedules"][i](step - (b[i - 1] if i else 0))


class warmup(Schedule):  # noqa: N801
    """Linear warm-up over warmup_steps from start_factor * after(0) to after(0), then
    ``after`` counted from 0 (torch SequentialLR of LinearLR and the other scheduler)."""

    def __init__(self, after: Schedule, warmup_steps: int, start_factor: float = 0.0):
        if int(warmup_steps) < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps!r}")
        self._args = {"after": after, "warmup_steps": int(warmup_steps),
                      "start_factor": _check("start_factor", start_factor)}

    def _lr(self, step):
        a = self._args
        w, s = a["warmup_steps"], a["start_factor"]
        if step < w:
            return a["after"](0) * (s + (1.0 - s) * step / w)
        return a["after"](step - w)


class one_cycle(Schedule):  # noqa: N801
    """The 1cycle policy (torch OneCycleLR, two phases): from max_lr / div_factor up to
    max_lr over pct_start of total_steps, then down to initial / final_div_factor."""

    def __init__(self, max_lr: float, total_steps: int, pct_start: float = 0.3,
                 div_factor: float = 25.0, final_div_factor: float = 1e4,
                 anneal_strategy: str = "cos"):
        if int(total_steps) < 2 or not 0 < pct_start < 1:
            raise ValueError("total_steps must be >= 2 and pct_start in (0, 1)")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got "
                             f"{anneal_strategy!r}")
        self._args = {"max_lr": _check("max_lr", max_lr), "total_steps": int(total_steps),
                      "pct_start": float(pct_start),
                      "div_factor": _check("div_factor", div_factor, positive=True),
                      "final_div_factor": _check("final_div_factor", final_div_factor,
                                                 positive=True),
                      "anneal_strategy": anneal_strategy}

    def _lr(self, step):
        a = self._args
        initial = a["max_lr"] / a["div_factor"]
        final = initial / a["final_div_factor"]
        mid = float(a["pct_start"] * a["total_steps"]) - 1
        end = a["total_steps"] - 1

        def anneal(lo, hi, pct):
            if a["anneal_strategy"] == "linear":
                return (hi - lo) * pct + lo
            return hi + (lo - hi) / 2.0 * (math.cos(math.pi * pct) + 1)

        if step <= mid:
            return anneal(initial, a["max_lr"], step / mid)
        return anneal(a["max_lr"], final, (step - mid) / (end - mid))


class piecewise_constant(Schedule):  # noqa: N801
    """values[i] for boundaries[i-1] <= step < boundaries[i]."""

    def __init__(self, boundaries: Sequence[int], values: Sequence[float]):
        if len(values) != len(boundaries) + 1:
            raise ValueError("values must have one entry more than boundaries")
        b = [int(x) for x in boundaries]
        if b != sorted(b):
            raise ValueError(f"boundaries must be increasing, got {b}")
        self._args = {"boundaries": b, "values": [_check("values", v) for v in values]}

    def _lr(self, step):
        return self._args["values"][bisect.bisect_right(self._args["boundaries"], step)]


class ReduceLROnPlateau:
    """Multiplies the lr by ``factor`` when a metric stops improving for ``patience``
    calls, with torch.optim.lr_scheduler.ReduceLROnPlateau's rules (threshold modes,
    cooldown, min_lr, eps). ``step(metric)`` returns the lr to use next; ``lr`` holds it."""

    def __init__(self, lr: float, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_lr: float = 0.0, eps: float = 1e-8):
        if mode not in ("min", "max") or threshold_mode not in ("rel", "abs"):
            raise ValueError("mode must be 'min'/'max' and threshold_mode 'rel'/'abs'")
        if not 0 <= factor < 1:
            raise ValueError(f"factor must be in [0, 1), got {factor!r}")
        self._args: dict[str, Any] = dict(lr=_check("lr", lr), mode=mode, factor=float(factor),
                          patience=int(patience), threshold=float(threshold),
                          threshold_mode=threshold_mode, cooldown=int(cooldown),
                          min_lr=_check("min_lr", min_lr), eps=float(eps))
        self.lr = self._args["lr"]
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad = 0
        self.cooldown_left = 0

    def _better(self, x: float) -> bool:
        a = self._args
        if a["mode"] == "min":
            bound = self.best * (1 - a["threshold"]) if a["threshold_mode"] == "rel" \
                else self.best - a["threshold"]
            return x < bound
        bound = self.best * (1 + a["threshold"]) if a["threshold_mode"] == "rel" \
            else self.best + a["threshold"]
        return x > bound

    def step(self, metric: float) -> float:
        a = self._args
        x = float(metric)
        if self._better(x):
            self.best, self.num_bad = x, 0
        else:
            self.num_bad += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.num_bad = 0
        if self.num_bad > a["patience"]:
            new = max(self.lr * a["factor"], a["min_lr"])
            if self.lr - new > a["eps"]:
                self.lr = new
            self.cooldown_left, self.num_bad = a["cooldown"], 0
        return self.lr

    def get_config(self) -> dict[str, Any]:
        return {"name": "ReduceLROnPlateau", **self._args}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ReduceLROnPlateau:
        cfg = {k: v for k, v in config.items() if k != "name"}
        return cls(**cfg)


_REGISTRY["ReduceLROnPlateau"] = ReduceLROnPlateau
