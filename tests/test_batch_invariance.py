"""Batch-invariant inference: a row's prediction is bitwise the same alone, in any subset
of rows and in the full batch, for float32 and float64, on every SIMD target, for 1 and 2
kernel threads and 1 and 2 BLAS threads."""

from __future__ import annotations

import itertools

import fastoptim
import numpy as np
import pytest
from fastoptim import nn, train

ACTIVATIONS = ["relu", "tanh", "gelu", "sigmoid", "leaky_relu"]


def _model(dtype, activation):
    return nn.Sequential(nn.Dense(19, 37, activation), nn.Dropout(0.3),
                         nn.Dense(37, 23, "tanh"), nn.Dense(23, 5), dtype=dtype, seed=1)


def _blas_threads(n):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return threadpoolctl.threadpool_limits(limits=n, user_api="blas")


def _rows(model, X, idx):
    return np.array(model.forward(np.ascontiguousarray(X[idx]), training=False), copy=True)


@pytest.mark.parametrize("blas_threads", [1, 2], ids=lambda n: f"blas{n}")
@pytest.mark.parametrize("kernel_threads", [1, 2], ids=lambda n: f"threads{n}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("n", [1, 7, 63, 64, 65, 200])
def test_rows_predict_the_same_alone_in_subsets_and_in_the_batch(
        simd_target, n, dtype, kernel_threads, blas_threads):
    rng = np.random.default_rng(n)
    X = (rng.standard_normal((n, 19)) * 3).astype(dtype)
    before = fastoptim.get_num_threads()
    fastoptim.set_num_threads(kernel_threads)
    try:
        with _blas_threads(blas_threads):
            for activation in ACTIVATIONS:
                model = _model(dtype, activation)
                full = _rows(model, X, np.arange(n))
                # each row alone
                for i in range(n):
                    np.testing.assert_array_equal(_rows(model, X, [i]), full[i:i + 1])
                # every subset of a small batch; for larger ones, random subsets of every
                # size class and windows at every offset of a block
                if n <= 7:
                    subsets = [list(c) for k in range(1, n + 1)
                               for c in itertools.combinations(range(n), k)]
                else:
                    subsets = [np.sort(rng.choice(n, size=int(k), replace=False))
                               for k in rng.integers(1, n + 1, size=12)]
                    subsets += [np.arange(lo, min(n, lo + 70)) for lo in (0, 1, 13, 63)]
                for idx in subsets:
                    np.testing.assert_array_equal(_rows(model, X, idx), full[idx])
                # and through train.predict, whose batches split the rows differently
                np.testing.assert_array_equal(train.predict(model, X, batch_size=3), full)
    finally:
        fastoptim.set_num_threads(before)


def test_training_forward_matches_blocked_inference_closely(rng):
    # The training path multiplies the whole batch at once; it agrees with the blocked
    # inference path to rounding (dropout off, so the same function is computed).
    model = nn.Sequential(nn.Dense(30, 40, "relu"), nn.Dense(40, 3), dtype=np.float64, seed=0)
    X = rng.standard_normal((150, 30))
    a = np.array(model.forward(X, training=True), copy=True)
    b = model.forward(X, training=False)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    ref = np.maximum(X @ model.layers[0].weight + model.layers[0].bias, 0) \
        @ model.layers[1].weight + model.layers[1].bias
    np.testing.assert_allclose(b, ref, rtol=1e-12, atol=1e-12)


def test_backward_after_an_inference_forward_still_works(rng):
    # Gradients of a model run in evaluation mode (e.g. input attributions) use the blocked
    # forward's saved activations: compare with a finite difference.
    model = nn.Sequential(nn.Dense(6, 8, "tanh"), nn.Dense(8, 2), dtype=np.float64, seed=0)
    X = rng.standard_normal((70, 6))
    out = model.forward(X, training=False)
    dx = model.backward(np.ones_like(out), input_grad=True)
    h = 1e-6
    Xp, Xm = X.copy(), X.copy()
    Xp[3, 2] += h
    Xm[3, 2] -= h
    fd = (model.forward(Xp).sum() - model.forward(Xm).sum()) / (2 * h)
    assert abs(dx[3, 2] - fd) < 1e-7


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_large_batches_split_across_threads_stay_invariant(simd_target, num_threads, dtype):
    # Large enough that the native bias + activation kernels run in parallel chunks whose
    # boundaries move with the batch size.
    rng = np.random.default_rng(5)
    X = rng.standard_normal((20001, 19)).astype(dtype)
    for activation in ("tanh", "gelu", "sigmoid"):
        model = _model(dtype, activation)
        full = _rows(model, X, np.arange(len(X)))
        for i in rng.choice(len(X), 25, replace=False):
            np.testing.assert_array_equal(_rows(model, X, [i]), full[i:i + 1])
            np.testing.assert_array_equal(_rows(model, X, np.arange(i, min(len(X), i + 77))),
                                          full[i:i + 77])
