"""Hypothesis property tests of the native kernels.

Random list shapes, dtypes, data scales, hyperparameters (within their valid ranges), SIMD
targets and thread counts: the kernels match tests/reference.py element by element within
a rounding-error bound, and keep their invariants (gradients are never written, a zero
gradient with zero decay and zero state leaves the parameters bit-identical, clipping never
increases the norm, the norm does not depend on the order of the elements).

Error bound: each element's error is at most K * eps(dtype) times the sum of the
magnitudes of the terms that formed it (a rounding-error analysis of the kernel's few
operations, each rounding at most eps/2 relative, and the condition number of Adam's
sqrt(v) where the gradient itself is rounded), so cancellation cannot hide a bug and large
updates do not need a loose global tolerance.
"""

from __future__ import annotations

from contextlib import contextmanager

import fastoptim
import numpy as np
import reference as ref
from conftest import TARGETS, THREADS
from hypothesis import given, settings
from hypothesis import strategies as st

K = 16
SETTINGS = settings(max_examples=50, deadline=None)

dtypes = st.sampled_from([np.float32, np.float64])
# Mostly small arrays (SIMD tails), sometimes large enough to split across threads.
sizes = st.one_of(st.integers(0, 70), st.integers(70, 3000), st.integers(8192, 40000))
shapes = st.lists(sizes, min_size=1, max_size=3)
seeds = st.integers(0, 2**32 - 1)
scales = st.sampled_from([1e-3, 1.0, 1e3])
unit = st.floats(0.0, 1.0)


@st.composite
def runtimes(draw):
    return draw(st.sampled_from(TARGETS)), draw(st.sampled_from(THREADS))


@contextmanager
def runtime(target_threads):
    """Runs the body on one SIMD target and thread count, restoring both after."""
    target, threads = target_threads
    before = fastoptim.simd_target(), fastoptim.get_num_threads()
    fastoptim.set_simd_target(target)
    fastoptim.set_num_threads(threads)
    try:
        yield
    finally:
        fastoptim.set_simd_target(before[0])
        fastoptim.set_num_threads(before[1])


def arrays(seed, shape, dtype, scale, k, positive=False):
    """k lists of len(shape) arrays with standard-normal data times `scale`."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(k):
        lst = [(rng.standard_normal(n) * scale).astype(dtype) for n in shape]
        out.append([np.abs(a) for a in lst] if positive else lst)
    return out


def assert_close(got, want, bound, dtype, what):
    err = np.abs(got.astype(np.float64) - want)
    limit = K * np.finfo(dtype).eps * bound
    bad = err > limit
    assert not bad.any(), (f"{what}: {int(bad.sum())} elements off, worst error "
                           f"{float(np.max(err - limit, initial=0))} over the bound")


def snapshot(lists):
    return [a.tobytes() for lst in lists for a in lst]


sgd_hyper = st.fixed_dictionaries({
    "lr": unit, "momentum": st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.5]),
    "dampening": unit, "weight_decay": st.sampled_from([0.0, 1e-4, 0.1, 1.0]),
    "nesterov": st.booleans(), "maximize": st.booleans(), "first_step": st.booleans()})


@SETTINGS
@given(shape=shapes, dtype=dtypes, seed=seeds, scale=scales, hp=sgd_hyper, rt=runtimes())
def test_sgd_matches_reference(shape, dtype, seed, scale, hp, rt):
    if hp["nesterov"]:  # nesterov is only valid with momentum and no dampening
        hp = {**hp, "momentum": hp["momentum"] or 0.9, "dampening": 0.0}
    p, g, buf = arrays(seed, shape, dtype, scale, 3)
    p0, b0 = [a.copy() for a in p], [a.copy() for a in buf]
    g_bytes = snapshot([g])
    with runtime(rt):
        fastoptim.sgd_step(p, g, buf if hp["momentum"] else None, **hp)
    assert snapshot([g]) == g_bytes  # gradients are only read
    lr, mom, wd = hp["lr"], hp["momentum"], hp["weight_decay"]
    for i in range(len(shape)):
        want_p, want_buf = ref.sgd(p0[i], g[i], b0[i], **hp)
        a_p0, a_g, a_b0 = (np.abs(x.astype(np.float64)) for x in (p0[i], g[i], b0[i]))
        d_scale = a_g + wd * a_p0
        if mom:
            buf_scale = mom * a_b0 + d_scale
            assert_close(buf[i], want_buf, buf_scale, dtype, "momentum_buffer")
            d_scale = d_scale + (1 + mom) * (buf_scale + np.abs(want_buf))
        else:
            assert buf[i].tobytes() == b0[i].tobytes()  # not passed, not touched
        assert_close(p[i], want_p, a_p0 + lr * d_scale, dtype, "param")


adam_hyper = st.fixed_dictionaries({
    "step": st.one_of(st.integers(1, 20), st.integers(1, 2**40)),
    "lr": st.floats(0.0, 0.1), "beta1": st.floats(0.0, 0.999),
    "beta2": st.floats(0.0, 0.9999), "eps": st.sampled_from([1e-10, 1e-8, 1e-6, 1e-3]),
    "weight_decay": st.sampled_from([0.0, 1e-4, 0.1, 1.0]),
    "decoupled_weight_decay": st.booleans(), "amsgrad": st.booleans(),
    "maximize": st.booleans()})


@SETTINGS
@given(shape=shapes, dtype=dtypes, seed=seeds, scale=scales, hp=adam_hyper, rt=runtimes())
def test_adam_matches_reference(shape, dtype, seed, scale, hp, rt):
    p, g, m = arrays(seed, shape, dtype, scale, 3)
    v, vmax = arrays(seed + 1, shape, dtype, scale * scale, 2, positive=True)
    before = [[a.copy() for a in lst] for lst in (p, m, v, vmax)]
    g_bytes = snapshot([g])
    with runtime(rt):
        fastoptim.adam_step(p, g, m, v, vmax if hp["amsgrad"] else None, **hp)
    assert snapshot([g]) == g_bytes
    lr, wd, b1, step = hp["lr"], hp["weight_decay"], hp["beta1"], hp["step"]
    bc1 = 1.0 - b1**step
    bc2 = 1.0 - hp["beta2"] ** step
    for i in range(len(shape)):
        p0, m0, v0, x0 = (lst[i] for lst in before)
        want = ref.adam(p0, g[i], m0, v0, x0, **hp)
        a_p0, a_g, a_m0 = (np.abs(x.astype(np.float64)) for x in (p0, g[i], m0))
        g_scale = a_g + (0.0 if hp["decoupled_weight_decay"] else wd) * a_p0
        m_scale = 2 * a_m0 + g_scale
        v_scale = v0.astype(np.float64) + g_scale**2
        assert_close(m[i], want[1], m_scale, dtype, "exp_avg")
        assert_close(v[i], want[2], v_scale, dtype, "exp_avg_sq")
        vhat = want[3] if hp["amsgrad"] else want[2]
        if hp["amsgrad"]:
            assert_close(vmax[i], want[3], np.maximum(x0, v_scale), dtype, "max_exp_avg_sq")
        else:
            assert vmax[i].tobytes() == x0.tobytes()
        denom = np.sqrt(vhat) / np.sqrt(bc2) + hp["eps"]
        # The gradient's own rounding (g + wd * p cancels) is a relative error in v that
        # grows as v shrinks: condition number of sqrt(v) with respect to the gradient.
        g_eff = (-1 if hp["maximize"] else 1) * g[i].astype(np.float64)
        if not hp["decoupled_weight_decay"]:
            g_eff = g_eff + wd * p0.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            cond = np.where(vhat > 0, (1 - hp["beta2"]) * np.abs(g_eff) * g_scale / vhat, 0.0)
        cond = cond * (np.sqrt(vhat) / np.sqrt(bc2)) / denom
        upd_scale = (lr / bc1) * (m_scale + np.abs(want[1]) * (1 + cond)) / denom
        assert_close(p[i], want[0], a_p0 + upd_scale, dtype, "param")


@SETTINGS
@given(shape=shapes, dtype=dtypes, seed=seeds, scale=scales, rt=runtimes(),
       perm_seed=seeds)
def test_global_norm_reference_and_permutation(shape, dtype, seed, scale, rt, perm_seed):
    (a,) = arrays(seed, shape, dtype, scale, 1)
    a_bytes = snapshot([a])
    want = ref.global_norm(a)
    with runtime(rt):
        got = fastoptim.global_norm(a)
        # The same elements in another order and another split into arrays.
        flat = np.concatenate(a)
        np.random.default_rng(perm_seed).shuffle(flat)
        cut = int(np.random.default_rng(perm_seed + 1).integers(0, flat.size + 1))
        permuted = fastoptim.global_norm([flat[cut:].copy(), flat[:cut].copy()][::-1])
    assert snapshot([a]) == a_bytes  # only read
    tol = 1e-12 * want + 1e-300
    assert abs(got - want) <= tol
    assert abs(permuted - want) <= tol


@SETTINGS
@given(shape=shapes, dtype=dtypes, seed=seeds, scale=scales, rt=runtimes(),
       ratio=st.sampled_from([0.0, 1e-3, 0.5, 0.999, 1.0, 2.0]))
def test_clip_by_global_norm(shape, dtype, seed, scale, rt, ratio):
    (g,) = arrays(seed, shape, dtype, scale, 1)
    g0 = [a.copy() for a in g]
    norm = ref.global_norm(g)
    max_norm = ratio * norm
    with runtime(rt):
        got = fastoptim.clip_by_global_norm(g, max_norm)
        after, before = fastoptim.global_norm(g), fastoptim.global_norm(g0)
    assert got == before  # returns the norm before clipping
    assert abs(got - norm) <= 1e-12 * norm + 1e-300
    assert after <= before  # never increases the norm (same target and threads: exactly)
    coef = max_norm / (got + 1e-6)  # from the kernel's own norm, as the kernel does
    if coef < 1.0:
        c = dtype(coef)
        for a, a0 in zip(g, g0, strict=True):
            assert a.tobytes() == (a0 * c).astype(dtype).tobytes()  # one multiply each
        assert after <= max_norm * (1 + 4 * np.finfo(dtype).eps) + 1e-300
    else:
        assert snapshot([g]) == snapshot([g0])  # already within the bound: untouched


@SETTINGS
@given(shape=shapes, dtype=dtypes, seed=seeds, scale=scales, rt=runtimes(),
       lr=unit, momentum=st.sampled_from([0.0, 0.9]), maximize=st.booleans(),
       adam=adam_hyper)
def test_zero_gradient_zero_decay_changes_no_param(shape, dtype, seed, scale, rt, lr, momentum,
                                                   maximize, adam):
    """Zero gradient, zero weight decay and zero momentum state: parameters bit-identical."""
    (p,) = arrays(seed, shape, dtype, scale, 1)
    p0 = snapshot([p])
    zeros = [[np.zeros_like(a) for a in p] for _ in range(4)]
    g, buf, m, vmax = zeros
    (v,) = arrays(seed + 1, shape, dtype, scale, 1, positive=True)
    with runtime(rt):
        fastoptim.sgd_step(p, g, buf, lr=lr, momentum=momentum, maximize=maximize,
                           first_step=True)
        assert snapshot([p]) == p0
        fastoptim.sgd_step(p, g, buf, lr=lr, momentum=momentum, maximize=maximize)
        assert snapshot([p]) == p0
        fastoptim.adam_step(p, g, m, v, vmax, **{**adam, "weight_decay": 0.0})
        assert snapshot([p]) == p0
    assert not any(a.any() for a in g)  # and the gradients stay zero
