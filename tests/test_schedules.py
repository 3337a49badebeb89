"""Schedules vs torch.optim.lr_scheduler (same parameters, 200 steps), configs round trip."""

from __future__ import annotations

import json
import math

import pytest
from fastoptim import schedules as S

torch = pytest.importorskip("torch")
lrs = torch.optim.lr_scheduler
LR = 0.1
STEPS = 200


def torch_lrs(make, lr=LR, steps=STEPS):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr)
    sch = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    return out


CASES = [
    ("step", S.step_decay(LR, step_size=30, gamma=0.5), lambda o: lrs.StepLR(o, 30, 0.5)),
    ("multistep", S.multi_step(LR, [10, 50, 120], 0.3),
     lambda o: lrs.MultiStepLR(o, [10, 50, 120], 0.3)),
    ("exp", S.exponential(LR, 0.98), lambda o: lrs.ExponentialLR(o, 0.98)),
    ("poly", S.polynomial(LR, 150, power=2.0), lambda o: lrs.PolynomialLR(o, 150, 2.0)),
    ("cosine", S.cosine(LR, 200, eta_min=1e-3),
     lambda o: lrs.CosineAnnealingLR(o, 200, eta_min=1e-3)),
    ("cosine_restarts", S.cosine_warm_restarts(LR, 20, T_mult=2, eta_min=1e-4),
     lambda o: lrs.CosineAnnealingWarmRestarts(o, 20, T_mult=2, eta_min=1e-4)),
    ("onecycle", S.one_cycle(LR, 200), lambda o: lrs.OneCycleLR(o, LR, total_steps=200)),
    ("onecycle_linear", S.one_cycle(LR, 200, pct_start=0.25, anneal_strategy="linear"),
     lambda o: lrs.OneCycleLR(o, LR, total_steps=200, pct_start=0.25,
                              anneal_strategy="linear")),
    ("constant", S.constant(LR), lambda o: lrs.LambdaLR(o, lambda k: 1.0)),
]


@pytest.mark.parametrize("name,sched,make", CASES, ids=[c[0] for c in CASES])
def test_matches_torch(name, sched, make):
    want = torch_lrs(make)
    got = [sched(k) for k in range(STEPS)]
    for k, (a, b) in enumerate(zip(got, want, strict=False)):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), (name, k)


@pytest.mark.filterwarnings("ignore::UserWarning")  # SequentialLR passes an epoch argument
def test_warmup_matches_torch_sequential():
    def make(o):
        return lrs.SequentialLR(o, [lrs.LinearLR(o, start_factor=0.1, total_iters=20),
                                    lrs.CosineAnnealingLR(o, 180)], milestones=[20])
    want = torch_lrs(make)
    sched = S.warmup(S.cosine(LR, 180), warmup_steps=20, start_factor=0.1)
    got = [sched(k) for k in range(STEPS)]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_inverse_time_is_sklearn_invscaling():
    sched = S.inverse_time(0.5, power_t=0.25)
    # sklearn's SGDOptimizer: learning_rate_init / (t + 1) ** power_t after t samples
    assert [sched(t) for t in range(4)] == pytest.approx([0.5 / (t + 1) ** 0.25 for t in range(4)])


def test_piecewise_and_sequence():
    pc = S.piecewise_constant([10, 20], [1.0, 0.5, 0.1])
    assert [pc(k) for k in (0, 9, 10, 19, 20, 500)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]
    seq = S.sequence([S.constant(1.0), S.exponential(0.5, 0.5)], boundaries=[3])
    assert [seq(k) for k in range(6)] == [1.0, 1.0, 1.0, 0.5, 0.25, 0.125]


ALL = [c[1] for c in CASES] + [
    S.inverse_time(0.1), S.piecewise_constant([5], [1.0, 0.1]),
    S.warmup(S.one_cycle(0.1, 50), 10), S.sequence([S.constant(1.0), S.cosine(1.0, 9)], [4])]


@pytest.mark.parametrize("sched", ALL, ids=lambda s: type(s).__name__)
def test_config_round_trip(sched):
    cfg = json.loads(json.dumps(sched.get_config()))
    again = S.from_config(cfg)
    assert type(again) is type(sched)
    assert [again(k) for k in range(60)] == [sched(k) for k in range(60)]


def test_bad_arguments():
    with pytest.raises(ValueError, match="lr"):
        S.cosine(-1.0, 10)
    with pytest.raises(ValueError, match="step_size"):
        S.step_decay(0.1, 0)
    with pytest.raises(ValueError, match="step"):
        S.constant(0.1)(-1)
    with pytest.raises(ValueError, match="unknown schedule"):
        S.from_config({"name": "nope"})


@pytest.mark.parametrize("mode,threshold_mode,cooldown", [
    ("min", "rel", 0), ("max", "abs", 2), ("min", "abs", 1)])
def test_reduce_on_plateau_matches_torch(mode, threshold_mode, cooldown):
    metrics = [math.sin(k / 7.0) + (0.002 * k if mode == "max" else -0.002 * k)
               for k in range(STEPS)]
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=LR)
    ref = lrs.ReduceLROnPlateau(opt, mode=mode, factor=0.5, patience=3,
                                threshold_mode=threshold_mode, threshold=0.01,
                                cooldown=cooldown, min_lr=1e-4)
    ours = S.ReduceLROnPlateau(LR, mode=mode, factor=0.5, patience=3,
                               threshold_mode=threshold_mode, threshold=0.01,
                               cooldown=cooldown, min_lr=1e-4)
    changed = 0
    for x in metrics:
        ref.step(x)
        got = ours.step(x)
        assert got == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        changed += got != LR
    assert changed > 0  # the sequence really triggers reductions
    assert S.ReduceLROnPlateau.from_config(ours.get_config()).lr == LR
