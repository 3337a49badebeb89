"""Every public entry point that takes arrays rejects every bad input, touching nothing.

One `EntryPoint` row per entry point; tests/badinputs.py derives the bad variants of each
array argument. Run with ``-s`` (or ``python tests/test_reliability_inputs.py``) to print
the README figure: bad inputs x entry points, all rejected with nothing changed.
"""

from __future__ import annotations

import dataclasses

import fastoptim
import fastoptim.optim
import numpy as np
import pytest
from badinputs import (
    MISSING,
    EntryPoint,
    bad_inputs,
    check_accepts_readonly_inputs,
    check_rejected,
    count,
)

NAN, INF = float("nan"), float("inf")
SHAPE = (8, 12)


def normal(seed, dtype, k, positive=()):
    rng = np.random.default_rng(seed)
    out = [rng.standard_normal(SHAPE).astype(dtype) for _ in range(k)]
    for i in positive:
        np.abs(out[i], out=out[i])
    return out


def sgd_arrays(dtype):
    p, g, buf = normal(1, dtype, 3)
    return {"params": p, "grads": g, "momentum_buffers": buf}


def adam_arrays(dtype):
    p, g, m, v, vmax = normal(2, dtype, 5, positive=(3, 4))
    return {"params": p, "grads": g, "exp_avgs": m, "exp_avg_sqs": v, "max_exp_avg_sqs": vmax}


def rmsprop_arrays(dtype):
    p, g, sq, buf, gavg = normal(6, dtype, 5, positive=(2,))
    return {"params": p, "grads": g, "square_avgs": sq, "momentum_buffers": buf,
            "grad_avgs": gavg}


def adagrad_arrays(dtype):
    p, g, sums = normal(7, dtype, 3, positive=(2,))
    return {"params": p, "grads": g, "sums": sums}


def cross_entropy_arrays(dtype):
    (logits, out) = normal(8, dtype, 2)
    target = np.random.default_rng(8).integers(0, SHAPE[1], SHAPE[0])
    return {"logits": logits, "target": target, "out": out}


def point_loss_arrays(dtype):
    inp, target, out = normal(9, dtype, 3)
    return {"input": inp, "target": target, "out": out}


def penalty_arrays(dtype):
    p, g = normal(10, dtype, 2)
    return {"params": p, "grads": g}


def optimizer_arrays(dtype):
    p, g = normal(11, dtype, 2)
    return {"params": p, "grads": g}


def adam_optimizer_step(params, grads, **kw):
    """fastoptim.optim.Adam built on params, then one step with grads."""
    return fastoptim.optim.Adam([params], **kw).step([grads])


# Class indices are converted to int64 by design (read-only, so a copy is harmless):
# only their values and shape can be wrong.
CONVERTED = frozenset(["float16", "int32", "int64", "bool", "complex64", "object",
                       "big-endian", "strided", "negative-stride", "fortran-order",
                       "misaligned", "nested-list", "scalar", "float32-in-float64-call",
                       "float64-in-float32-call"])


def _set_first(value):
    def t(a):
        a = a.copy()
        a[0] = value
        return a
    return t


ENTRY_POINTS = [
    EntryPoint(
        "sgd_step", fastoptim.sgd_step, sgd_arrays,
        kwargs={"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01},
        inplace=frozenset({"params", "momentum_buffers"}), lists=True,
        bad_kwargs=[
            ({"lr": -0.1}, ValueError, "lr"), ({"lr": NAN}, ValueError, "lr"),
            ({"lr": INF}, ValueError, "lr"), ({"lr": MISSING}, TypeError, "'lr'"),
            ({"lr": "0.1"}, TypeError, "lr must be a real number"),
            ({"momentum": -0.9}, ValueError, "momentum"),
            ({"momentum": NAN}, ValueError, "momentum"),
            ({"dampening": 1.5}, ValueError, "dampening"),
            ({"dampening": -0.5}, ValueError, "dampening"),
            ({"weight_decay": -1.0}, ValueError, "weight_decay"),
            ({"weight_decay": INF}, ValueError, "weight_decay"),
            ({"nesterov": True, "momentum": 0.0}, ValueError, "nesterov"),
            ({"nesterov": True, "dampening": 0.1}, ValueError, "nesterov"),
            ({"nesterov": 1}, TypeError, "nesterov must be a bool"),
            ({"maximize": "yes"}, TypeError, "maximize must be a bool"),
            ({"betas": (0.9, 0.99)}, TypeError, "unexpected keyword argument 'betas'"),
        ]),
    EntryPoint(
        "adam_step", fastoptim.adam_step, adam_arrays,
        kwargs={"step": 3, "lr": 1e-2, "weight_decay": 0.01, "amsgrad": True},
        inplace=frozenset({"params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"}),
        lists=True,
        bad_kwargs=[
            ({"lr": -1e-3}, ValueError, "lr"), ({"lr": NAN}, ValueError, "lr"),
            ({"lr": INF}, ValueError, "lr"),
            ({"lr": "0.1"}, TypeError, "lr must be a real number"),
            ({"beta1": 1.0}, ValueError, "betas[0]"), ({"beta1": -0.1}, ValueError, "betas[0]"),
            ({"beta1": NAN}, ValueError, "betas[0]"),
            ({"beta2": 1.5}, ValueError, "betas[1]"), ({"beta2": NAN}, ValueError, "betas[1]"),
            ({"beta2": 1.0}, ValueError, "betas[1]"),
            ({"eps": -1e-8}, ValueError, "eps"), ({"eps": NAN}, ValueError, "eps"),
            ({"weight_decay": -0.1}, ValueError, "weight_decay"),
            ({"step": 0}, ValueError, "step"), ({"step": -5}, ValueError, "step"),
            ({"step": 1.0}, TypeError, "step must be an integer"),
            ({"step": MISSING}, TypeError, "missing required argument 'step'"),
            ({"amsgrad": 1}, TypeError, "amsgrad must be a bool"),
            ({"decoupled_weight_decay": None}, TypeError,
             "decoupled_weight_decay must be a bool"),
            ({"betas": (0.9, 0.99)}, TypeError, "unexpected keyword argument 'betas'"),
        ]),
    EntryPoint(
        "rmsprop_step", fastoptim.rmsprop_step, rmsprop_arrays,
        kwargs={"lr": 1e-2, "momentum": 0.9, "centered": True, "weight_decay": 0.01},
        inplace=frozenset({"params", "square_avgs", "momentum_buffers", "grad_avgs"}),
        lists=True,
        bad_kwargs=[
            ({"lr": -1e-2}, ValueError, "lr"), ({"lr": NAN}, ValueError, "lr"),
            ({"alpha": -0.5}, ValueError, "alpha"), ({"alpha": NAN}, ValueError, "alpha"),
            ({"eps": -1e-8}, ValueError, "eps"), ({"momentum": -0.9}, ValueError, "momentum"),
            ({"weight_decay": -0.1}, ValueError, "weight_decay"),
            ({"centered": 1}, TypeError, "centered must be a bool"),
        ]),
    EntryPoint(
        "adagrad_step", fastoptim.adagrad_step, adagrad_arrays,
        kwargs={"step": 2, "lr": 1e-2, "lr_decay": 0.01, "weight_decay": 0.01},
        inplace=frozenset({"params", "sums"}), lists=True,
        bad_kwargs=[
            ({"lr": -1e-2}, ValueError, "lr"), ({"lr": INF}, ValueError, "lr"),
            ({"lr_decay": -0.1}, ValueError, "lr_decay"), ({"eps": NAN}, ValueError, "eps"),
            ({"weight_decay": -0.1}, ValueError, "weight_decay"),
            ({"step": 0}, ValueError, "step"),
            ({"step": MISSING}, TypeError, "missing required argument 'step'"),
        ]),
    EntryPoint(
        "losses.softmax_cross_entropy",
        lambda logits, target, out, **kw: fastoptim.losses.softmax_cross_entropy(
            logits, target, out=out, **kw),
        cross_entropy_arrays, kwargs={"label_smoothing": 0.1},
        inplace=frozenset({"out"}), same_shape=["logits", "out"],
        skip={"target": CONVERTED, "out": frozenset({"none"})},  # out=None: allocated
        extra=[
            ("target", "scalar", lambda a: 1.0, ValueError, "shape"),
            ("target", "class-too-large", _set_first(SHAPE[1]), ValueError, "class index"),
            ("target", "class-negative", _set_first(-1), ValueError, "class index"),
            ("target", "one-short", lambda a: a[:-1].copy(), ValueError, "shape"),
            ("target", "2-d-wrong", lambda a: np.zeros((SHAPE[0], 3)), ValueError, "shape"),
        ],
        bad_kwargs=[
            ({"label_smoothing": -0.1}, ValueError, "label_smoothing"),
            ({"label_smoothing": 1.5}, ValueError, "label_smoothing"),
            ({"reduction": "avg"}, ValueError, "reduction"),
        ]),
    EntryPoint(
        "losses.mean_squared_error",
        lambda input, target, out, **kw: fastoptim.losses.mean_squared_error(
            input, target, out=out, **kw),
        point_loss_arrays, inplace=frozenset({"out"}),
        # The target is read-only and documented as converted to the input's dtype.
        skip={"target": CONVERTED, "out": frozenset({"none"})},  # out=None: allocated
        bad_kwargs=[({"reduction": "avg"}, ValueError, "reduction")]),
    EntryPoint(
        "nn.penalty", fastoptim.nn.penalty, penalty_arrays, kwargs={"l1": 0.01, "l2": 0.1},
        inplace=frozenset({"grads"}), lists=True,
        skip={"grads": frozenset({"none"})},  # grads=None: the penalty alone
        bad_kwargs=[({"l1": -1.0}, ValueError, "l1"), ({"l2": NAN}, ValueError, "l2")]),
    EntryPoint(
        "optim.Adam.step", adam_optimizer_step, optimizer_arrays,
        kwargs={"lr": 1e-2, "weight_decay": 0.01}, inplace=frozenset({"params"}),
        gate_messages=False,  # the constructor checks params in Python, in its own words
        bad_kwargs=[({"lr": -1.0}, ValueError, "lr"),
                    ({"betas": (1.0, 0.999)}, ValueError, "betas"),
                    ({"eps": -1.0}, ValueError, "eps")]),
    EntryPoint(
        "global_norm", fastoptim.global_norm, lambda dtype: {"arrays": normal(3, dtype, 1)[0]},
        lists=True),
    EntryPoint(
        "clip_by_global_norm", fastoptim.clip_by_global_norm,
        lambda dtype: {"grads": normal(4, dtype, 1)[0]},
        # Norm ~10 > max_norm: a missed check would scale the gradients (and be seen).
        kwargs={"max_norm": 0.5, "error_if_nonfinite": True},
        inplace=frozenset({"grads"}), lists=True, nonfinite=frozenset({"grads"}),
        bad_kwargs=[
            ({"max_norm": -1.0}, ValueError, "max_norm"),
            ({"max_norm": NAN}, ValueError, "max_norm"),
            ({"max_norm": INF}, ValueError, "max_norm"),
            ({"max_norm": "1"}, TypeError, "max_norm"),
        ]),
]

CASES = [case for entry in ENTRY_POINTS for case in bad_inputs(entry)]
# Defects the table found, not fixed yet: (entry point, argument) -> the name the error
# uses instead. Those cases are still checked in full (rejected, nothing changed) against
# the wrong name, so a fix makes them fail until the entry here is removed.
KNOWN_WRONG_NAMES: dict = {}  # (entry point, argument) -> name the error uses instead


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_rejected(case):
    wrong = KNOWN_WRONG_NAMES.get((case.entry.name, case.arg))
    check_rejected(dataclasses.replace(case, arg=wrong) if wrong else case)


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=[e.name for e in ENTRY_POINTS])
def test_readonly_inputs_accepted(entry):
    check_accepts_readonly_inputs(entry)


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=[e.name for e in ENTRY_POINTS])
def test_every_standard_variant_is_generated(entry):
    """The harness really covers each argument: dtype, layout and not-an-array variants
    for every array, read-only for every in-place one, list forms where lists are taken."""
    kinds = {(c.arg, c.kind, c.as_list) for c in bad_inputs(entry)}
    for arg in entry.array_names():
        for kind in ("int32", "float16", "big-endian", "strided", "negative-stride",
                     "fortran-order", "misaligned", "nested-list"):
            if kind in entry.skip.get(arg, ()):
                assert (arg, kind, False) not in kinds
                continue
            assert (arg, kind, False) in kinds
            assert (arg, kind, True) in kinds or not entry.lists
        assert ((arg, "read-only", False) in kinds) == (arg in entry.inplace)


def test_empty_inputs_are_no_ops():
    e = np.zeros(0, np.float32)
    fastoptim.adam_step(e, e.copy(), e.copy(), e.copy(), step=1)
    fastoptim.sgd_step(e, e.copy(), e.copy(), lr=0.1, momentum=0.9)
    fastoptim.adam_step([], [], [], [], step=1)
    assert fastoptim.global_norm([]) == 0.0
    assert fastoptim.global_norm(e) == 0.0
    assert fastoptim.clip_by_global_norm([], 1.0) == 0.0


def figure():
    per_entry = count(ENTRY_POINTS)
    total = sum(per_entry.values())
    detail = ", ".join(f"{k} {v}" for k, v in per_entry.items())
    known = sum(1 for c in CASES if (c.entry.name, c.arg) in KNOWN_WRONG_NAMES)
    line = (f"{total} bad inputs over {len(per_entry)} entry points ({detail}): all "
            "rejected with TypeError/ValueError, 0 bytes changed; "
            f"{total - known} name the argument, {known} known defects name it wrongly")
    return total, line


def test_bad_input_count():
    total, line = figure()
    print("\n" + line)
    assert total == len(CASES)
    assert all(n >= 20 for n in count(ENTRY_POINTS).values())


def _lax_sgd(params, grads, lr):
    """The bug the suite exists for: converts silently, so the update is lost on a copy."""
    p = np.ascontiguousarray(params, np.float32)
    p -= lr * np.ascontiguousarray(grads, np.float32)


def _writes_then_raises(params, grads, lr):
    params -= lr * grads
    raise ValueError("params is bad (raised too late)")


@pytest.mark.parametrize("func", [_lax_sgd, _writes_then_raises])
def test_harness_catches_broken_entry_points(func):
    entry = EntryPoint("broken", func,
                       lambda dtype: dict(zip(("params", "grads"), normal(5, dtype, 2),
                                              strict=True)),
                       kwargs={"lr": 0.1}, inplace=frozenset({"params"}))
    failures = 0
    for case in bad_inputs(entry):
        try:
            check_rejected(case)
        except (Exception, pytest.fail.Exception):  # any failure of the check counts
            failures += 1
    assert failures == len(bad_inputs(entry))


if __name__ == "__main__":
    print(figure()[1])
