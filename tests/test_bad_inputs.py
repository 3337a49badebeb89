"""The binding gate: every bad array or hyperparameter is a clear error, nothing is touched."""

from __future__ import annotations

import numpy as np
import pytest

import fastoptim

N = 64


def fresh(dtype=np.float32):
    rng = np.random.default_rng(7)
    p, g, m = (rng.standard_normal(N).astype(dtype) for _ in range(3))
    v = np.abs(rng.standard_normal(N)).astype(dtype)
    return {"params": p, "grads": g, "exp_avgs": m, "exp_avg_sqs": v}


def readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


# (argument to corrupt, how, expected exception, message fragment)
ARRAY_CASES = [
    ("params", lambda a: a.astype(np.float64), TypeError, "same dtype"),
    ("grads", lambda a: a.astype(np.float64), TypeError, "same dtype"),
    ("exp_avgs", lambda a: a.astype(np.int32), TypeError, "float32 or float64"),
    ("params", lambda a: a.astype(np.int64), TypeError, "float32 or float64"),
    ("params", lambda a: a.astype(np.float16), TypeError, "float32 or float64"),
    ("exp_avg_sqs", lambda a: a.astype(">f4"), TypeError, "native byte order"),
    ("params", lambda a: np.repeat(a, 2)[::2], ValueError, "C-contiguous"),
    ("exp_avgs", lambda a: a[::-1], ValueError, "C-contiguous"),
    ("params", lambda a: np.asfortranarray(np.tile(a, (3, 1)).T), ValueError, "C-contiguous"),
    ("params", readonly, ValueError, "read-only"),
    ("exp_avg_sqs", readonly, ValueError, "read-only"),
    ("grads", lambda a: a[:-1].copy(), ValueError, "shape"),
    ("exp_avgs", lambda a: a.reshape(8, 8).copy(), ValueError, "shape"),
    ("grads", lambda a: a.tolist(), TypeError, "numpy.ndarray"),
    ("grads", lambda a: [a], TypeError, "numpy.ndarray"),
]


def snapshot(arrays):
    out = []
    for a in arrays.values():
        if isinstance(a, np.ndarray):
            out.append((a, a.tobytes()))
    return out


def assert_untouched(snap):
    for a, b in snap:
        assert a.tobytes() == b


@pytest.mark.parametrize("case", ARRAY_CASES, ids=lambda c: f"{c[0]}-{c[3]}")
def test_adam_bad_arrays(case):
    name, corrupt, exc, frag = case
    arrays = fresh()
    arrays[name] = corrupt(arrays[name])
    snap = snapshot(arrays)
    with pytest.raises(exc, match=frag) as info:
        fastoptim.adam_step(**arrays, step=1)
    assert name in str(info.value)
    assert_untouched(snap)


@pytest.mark.parametrize("case", ARRAY_CASES, ids=lambda c: f"{c[0]}-{c[3]}")
def test_adam_bad_arrays_in_lists(case):
    """The same inputs as the second element of a list: the first array is not updated."""
    name, corrupt, exc, frag = case
    first, second = fresh(), fresh()
    second[name] = corrupt(second[name])
    lists = {k: [first[k], second[k]] for k in first}
    snap = snapshot(first) + snapshot({k: v for k, v in second.items()})
    with pytest.raises(exc, match=frag) as info:
        fastoptim.adam_step(**lists, step=1)
    assert name in str(info.value)
    assert_untouched(snap)


def test_aliasing_and_overlap_rejected():
    a = fresh()
    snap = snapshot(a)
    with pytest.raises(ValueError, match="share memory"):
        fastoptim.adam_step(a["params"], a["grads"], a["params"], a["exp_avg_sqs"], step=1)
    with pytest.raises(ValueError, match="share memory"):
        fastoptim.sgd_step(a["params"], a["params"], lr=0.1)
    big = np.zeros(2 * N + 8, np.float32)
    with pytest.raises(ValueError, match="share memory"):  # partially overlapping views
        fastoptim.adam_step(big[:N], a["grads"], big[8:N + 8], a["exp_avg_sqs"], step=1)
    with pytest.raises(ValueError, match="share memory"):  # the same array twice in a list
        fastoptim.sgd_step([a["params"], a["params"]], [a["grads"], a["exp_avgs"]], lr=0.1)
    assert_untouched(snap)
    assert not big.any()


def test_list_length_mismatch():
    a = fresh()
    snap = snapshot(a)
    with pytest.raises(ValueError, match="grads has 1 arrays but params has 2"):
        fastoptim.sgd_step([a["params"], a["exp_avgs"]], [a["grads"]], lr=0.1)
    with pytest.raises(TypeError, match="like params"):
        fastoptim.sgd_step([a["params"]], a["grads"], lr=0.1)
    assert_untouched(snap)


ADAM_HYPER = [
    (dict(lr=-1e-3), "lr"), (dict(lr=float("nan")), "lr"), (dict(lr=float("inf")), "lr"),
    (dict(beta1=1.0), "betas[0]"), (dict(beta1=-0.1), "betas[0]"), (dict(beta2=1.5), "betas[1]"),
    (dict(beta2=float("nan")), "betas[1]"), (dict(eps=-1e-8), "eps"),
    (dict(weight_decay=-0.1), "weight_decay"), (dict(step=0), "step"),
]


@pytest.mark.parametrize("kw,name", ADAM_HYPER, ids=[n + str(i) for i, (_, n) in enumerate(ADAM_HYPER)])
def test_adam_bad_hyperparameters(kw, name):
    a = fresh()
    snap = snapshot(a)
    kw = {"step": 1, **kw}
    with pytest.raises(ValueError, match=name.replace("[", r"\[").replace("]", r"\]")):
        fastoptim.adam_step(**a, **kw)
    assert_untouched(snap)


SGD_HYPER = [
    (dict(lr=-0.1), "lr"), (dict(lr=float("nan")), "lr"), (dict(momentum=-0.9), "momentum"),
    (dict(dampening=1.5), "dampening"), (dict(weight_decay=-1.0), "weight_decay"),
    (dict(nesterov=True), "nesterov"), (dict(nesterov=True, momentum=0.9, dampening=0.1), "nesterov"),
]


@pytest.mark.parametrize("kw,name", SGD_HYPER, ids=[n + str(i) for i, (_, n) in enumerate(SGD_HYPER)])
def test_sgd_bad_hyperparameters(kw, name):
    a = fresh()
    snap = snapshot(a)
    kw = {"lr": 0.1, **kw}
    with pytest.raises(ValueError, match=name):
        fastoptim.sgd_step(a["params"], a["grads"], a["exp_avgs"], **kw)
    assert_untouched(snap)


def test_argument_errors_name_the_argument():
    a = fresh()
    snap = snapshot(a)
    with pytest.raises(TypeError, match="step must be an integer"):
        fastoptim.adam_step(**a, step=1.0)
    with pytest.raises(TypeError, match="lr must be a real number"):
        fastoptim.adam_step(**a, step=1, lr="0.1")
    with pytest.raises(TypeError, match="amsgrad must be a bool"):
        fastoptim.adam_step(**a, step=1, amsgrad=1)
    with pytest.raises(TypeError, match="missing required argument 'step'"):
        fastoptim.adam_step(**a)
    with pytest.raises(TypeError, match="unexpected keyword argument 'betas'"):
        fastoptim.adam_step(**a, step=1, betas=(0.9, 0.99))
    with pytest.raises(ValueError, match="max_exp_avg_sqs are required"):
        fastoptim.adam_step(**a, step=1, amsgrad=True)
    with pytest.raises(ValueError, match="momentum_buffers are required"):
        fastoptim.sgd_step(a["params"], a["grads"], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="max_norm"):
        fastoptim.clip_by_global_norm([a["grads"]], -1.0)
    assert_untouched(snap)


def test_empty_inputs_are_no_ops():
    e = np.zeros(0, np.float32)
    fastoptim.adam_step(e, e.copy(), e.copy(), e.copy(), step=1)
    fastoptim.adam_step([], [], [], [], step=1)
    assert fastoptim.global_norm([]) == 0.0
    assert fastoptim.clip_by_global_norm([], 1.0) == 0.0
