"""Losses that return the loss and its gradient with respect to the input in one native pass.

Every function returns ``(loss, grad)``: ``loss`` is a Python float reduced by ``"mean"``
(default) or ``"sum"``, ``grad`` an array shaped like the input holding
d(loss)/d(input) for that reduction (``None`` with ``grad=False``). Pass ``out=`` to reuse a
gradient buffer across steps. The math follows ``torch.nn.functional``
(``mse_loss``, ``l1_loss``, ``huber_loss``, ``binary_cross_entropy_with_logits``,
``cross_entropy``), and the tests compare against it.

Input rules (checked natively, nothing is copied or written on error): ``input`` must be a
C-contiguous float32 or float64 ndarray; the target is converted to the input's dtype
(it is only read); ``out`` must match the input's dtype and shape. Class indices must lie
in ``[0, C)`` (``ValueError`` naming the first bad row otherwise).

NaN policy: NaN or infinite inputs are not checked; they propagate into the loss and the
gradient as in torch (a non-finite loss is the caller's signal to skip the step).
Softmax cross-entropy is computed with log-sum-exp: logits of +-1e4 and ``-inf`` entries
outside the target give a finite loss and gradient rows summing to ~0; a target class at
``-inf`` gives ``inf``, a row that is entirely ``-inf`` gives NaN (torch does the same).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from fastoptim import _core

Reduction = Literal["mean", "sum"]

__all__ = [
    "binary_cross_entropy_with_logits",
    "huber",
    "mean_absolute_error",
    "mean_squared_error",
    "softmax_cross_entropy",
]


def _grad_buffer(input, out, grad: bool):
    if not grad:
        return None
    if out is not None:
        return out
    if not isinstance(input, np.ndarray):
        raise TypeError(f"input must be a numpy.ndarray, got {type(input).__name__}")
    return np.empty_like(input, order="C")


def _as_target(input, target):
    dtype = input.dtype if isinstance(input, np.ndarray) else None
    return np.ascontiguousarray(target, dtype=dtype)


def _point(kind, input, target, reduction, grad, out, delta=1.0):
    t = _as_target(input, target)
    g = _grad_buffer(input, out, grad)
    loss = _core.point_loss(kind, input, t, g, reduction=reduction, delta=delta)
    return loss, g


def mean_squared_error(input, target, *, reduction: Reduction = "mean", grad: bool = True,
                       out=None):
    """Squared error ``(input - target)^2``, reduced; gradient ``2 (input - target) / n``.

    As ``torch.nn.functional.mse_loss``. Returns ``(loss, grad)``.
    """
    return _point("mse", input, target, reduction, grad, out)


def mean_absolute_error(input, target, *, reduction: Reduction = "mean", grad: bool = True,
                        out=None):
    """Absolute error ``|input - target|``; subgradient ``sign(input - target)`` (0 at 0).

    As ``torch.nn.functional.l1_loss``. Returns ``(loss, grad)``.
    """
    return _point("mae", input, target, reduction, grad, out)


def huber(input, target, *, delta: float = 1.0, reduction: Reduction = "mean",
          grad: bool = True, out=None):
    """Huber loss: ``0.5 d^2`` if ``|d| <= delta`` else ``delta (|d| - 0.5 delta)``.

    As ``torch.nn.functional.huber_loss`` (``delta > 0``). Returns ``(loss, grad)``.
    """
    return _point("huber", input, target, reduction, grad, out, delta=float(delta))


def binary_cross_entropy_with_logits(input, target, *, reduction: Reduction = "mean",
                                     grad: bool = True, out=None):
    """Binary cross-entropy of logits against targets in [0, 1], computed stably as
    ``max(x, 0) - x t + log(1 + exp(-|x|))``; gradient ``sigmoid(x) - t``.

    As ``torch.nn.functional.binary_cross_entropy_with_logits``. Returns ``(loss, grad)``.
    """
    return _point("bce_logits", input, target, reduction, grad, out)


def softmax_cross_entropy(logits, target, *, weight=None, label_smoothing: float = 0.0,
                          reduction: Reduction = "mean", grad: bool = True, out=None):
    """Cross-entropy of softmax(logits) against a target, fused with its gradient.

    Args:
        logits: (N, C) float32/float64 array of unnormalised scores.
        target: (N,) integer class indices, or (N, C) class probabilities (one-hot or soft).
        weight: optional (C,) class weights. With indices and ``"mean"``, the loss is divided
            by the summed weight of the targets (torch's rule); with probabilities, by N.
        label_smoothing: epsilon in [0, 1]; the target becomes ``(1 - eps) t + eps / C``.
        reduction: ``"mean"`` or ``"sum"`` over rows.
        grad, out: whether to compute the gradient, and an optional (N, C) buffer for it.

    Returns:
        ``(loss, grad)``; ``grad = scale * (sum(a) softmax(logits) - a)`` row by row, where
        ``a`` is the (weighted, smoothed) target, so without weights each row sums to ~0.

    As ``torch.nn.functional.cross_entropy``.
    """
    if isinstance(target, np.ndarray) and target.dtype.kind in "iub":
        t = np.ascontiguousarray(target, dtype=np.int64)
    elif isinstance(target, (list, tuple)) and np.asarray(target).dtype.kind in "iub":
        t = np.ascontiguousarray(target, dtype=np.int64)
    else:
        t = _as_target(logits, target)
    w = None if weight is None else _as_target(logits, weight)
    g = _grad_buffer(logits, out, grad)
    loss = _core.softmax_cross_entropy(logits, t, g, weight=w,
                                       label_smoothing=float(label_smoothing),
                                       reduction=reduction)
    return loss, g
