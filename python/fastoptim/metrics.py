"""Evaluation metrics in plain numpy, equal to scikit-learn's on the same inputs.

Classification: ``accuracy_score``, ``top_k_accuracy_score``, ``confusion_matrix``,
``precision_score``, ``recall_score``, ``f1_score``, ``precision_recall_fscore_support``
(``average`` = ``"binary"``, ``"micro"``, ``"macro"``, ``"weighted"`` or ``None``),
``log_loss``. Regression: ``mean_squared_error``, ``mean_absolute_error``, ``r2_score``.

Edge cases follow scikit-learn 1.3+ (the tests compare against it):

* Labels are the sorted union of ``y_true`` and ``y_pred`` unless ``labels`` is given, so a
  class that is never predicted still gets a row in the confusion matrix and a per-class
  score.
* ``zero_division``: when a precision (no predicted samples), recall (no true samples) or
  F-score (neither) is undefined, it takes this value: ``"warn"`` (default) gives 0.0 and
  emits :class:`UndefinedMetricWarning`; ``0.0`` or ``1.0`` give that value silently;
  ``np.nan`` gives NaN, which ``"macro"``/``"weighted"`` averages then skip.
  ``F = (1 + b^2) tp / ((1 + b^2) tp + b^2 fn + fp)``, so it is 0 (not undefined) when only
  one of precision and recall is.
* ``"weighted"`` weights classes by support; if every support is 0 it is a plain mean.
* ``log_loss`` clips probabilities to ``[eps, 1 - eps]`` (eps of their dtype) and does not
  renormalise rows; a 1-D ``y_prob`` is the probability of the larger label.
* ``r2_score`` of a constant ``y_true`` is 1.0 for a perfect prediction, else 0.0
  (scikit-learn's ``force_finite=True``).
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = [
    "UndefinedMetricWarning",
    "accuracy_score",
    "confusion_matrix",
    "f1_score",
    "log_loss",
    "mean_absolute_error",
    "mean_squared_error",
    "precision_recall_fscore_support",
    "precision_score",
    "r2_score",
    "recall_score",
    "top_k_accuracy_score",
]


class UndefinedMetricWarning(UserWarning):
    """A precision, recall or F-score was undefined and set to 0 (``zero_division="warn"``)."""


def _pair(y_true, y_pred):
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.ndim != 1 or p.ndim != 1:
        raise ValueError("y_true and y_pred must be 1-D")
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"y_true has {t.shape[0]} samples but y_pred has {p.shape[0]}")
    return t, p


def accuracy_score(y_true, y_pred, *, normalize: bool = True, sample_weight=None) -> float:
    """Fraction (or count, ``normalize=False``) of exact matches."""
    t, p = _pair(y_true, y_pred)
    hit = (t == p).astype(np.float64)
    if normalize:
        return float(np.average(hit, weights=sample_weight)) if hit.size else float("nan")
    return float(hit.sum() if sample_weight is None else np.dot(hit, sample_weight))


def top_k_accuracy_score(y_true, y_score, *, k: int = 2, labels=None,
                         normalize: bool = True) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores.

    ``y_score`` is (n_samples, n_classes), columns in the order of ``labels`` (default:
    sorted unique ``y_true``, which must then name every column). Ties are broken as
    scikit-learn does (a stable sort, higher column index first).
    """
    t = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != t.shape[0]:
        raise ValueError("y_score must have shape (n_samples, n_classes)")
    classes = np.unique(t) if labels is None else np.asarray(labels)
    if classes.shape[0] != s.shape[1]:
        raise ValueError(f"y_score has {s.shape[1]} columns but there are "
                         f"{classes.shape[0]} classes")
    idx = np.searchsorted(classes, t) if labels is None else \
        np.array([np.flatnonzero(classes == v)[0] for v in t], dtype=np.int64)
    top = np.argsort(s, axis=1, kind="mergesort")[:, ::-1][:, :k]
    hits = (top == idx[:, None]).any(axis=1)
    return float(hits.mean()) if normalize else float(hits.sum())


def _labels(t, p, labels):
    if labels is not None:
        return np.asarray(labels)
    return np.unique(np.concatenate([t, p]))


def confusion_matrix(y_true, y_pred, *, labels=None, normalize=None) -> np.ndarray:
    """C[i, j] = samples of true class i predicted as class j (classes sorted, or
    ``labels``); ``normalize`` = "true" (rows), "pred" (columns), "all" or None."""
    t, p = _pair(y_true, y_pred)
    lab = _labels(t, p, labels)
    n = lab.shape[0]
    pos = {v: i for i, v in enumerate(lab.tolist())}
    ti = np.array([pos.get(v, -1) for v in t.tolist()], dtype=np.int64)
    pi = np.array([pos.get(v, -1) for v in p.tolist()], dtype=np.int64)
    keep = (ti >= 0) & (pi >= 0)
    cm = np.bincount(ti[keep] * n + pi[keep], minlength=n * n).reshape(n, n)
    if normalize is None:
        return cm
    with np.errstate(all="ignore"):
        if normalize == "true":
            out = cm / cm.sum(axis=1, keepdims=True)
        elif normalize == "pred":
            out = cm / cm.sum(axis=0, keepdims=True)
        elif normalize == "all":
            out = cm / cm.sum()
        else:
            raise ValueError("normalize must be 'true', 'pred', 'all' or None")
    return np.nan_to_num(out)


def _divide(num, den, zero_division, what: str, warn: bool):
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    mask = den == 0
    out = num / np.where(mask, 1.0, den)
    if mask.any():
        if isinstance(zero_division, str):
            if zero_division != "warn":
                raise ValueError("zero_division must be 'warn', 0.0, 1.0 or np.nan")
            out[mask] = 0.0
            if warn:
                warnings.warn(f"{what} is ill-defined and being set to 0.0 for labels with no "
                              "samples; use zero_division to control this",
                              UndefinedMetricWarning, stacklevel=4)
        else:
            out[mask] = float(zero_division)
    return out


def _nanaverage(a, weights=None) -> float:
    if a.size == 0:
        return float("nan")
    ok = ~np.isnan(a)
    if not ok.any():
        return float("nan")
    if weights is None:
        return float(a[ok].mean())
    w = np.asarray(weights, np.float64)[ok]
    if w.sum() == 0:
        return float(a[ok].mean())
    return float(np.average(a[ok], weights=w))


def precision_recall_fscore_support(y_true, y_pred, *, beta: float = 1.0, labels=None,
                                    pos_label=1, average: str | None = None,
                                    zero_division="warn",
                                    warn_for=("precision", "recall", "f-score")):
    """Precision, recall, F-beta and support, per class (``average=None``) or averaged
    ("binary": the ``pos_label`` class only; "micro": from summed counts; "macro":
    unweighted mean over classes; "weighted": mean weighted by support). Support is None
    when averaged. See the module docstring for ``zero_division``."""
    t, p = _pair(y_true, y_pred)
    if average not in (None, "binary", "micro", "macro", "weighted"):
        raise ValueError("average must be None, 'binary', 'micro', 'macro' or 'weighted'")
    present = np.unique(np.concatenate([t, p]))
    if average == "binary":
        if present.shape[0] > 2:
            raise ValueError("Target is multiclass but average='binary'; choose another "
                             "average setting")
        if pos_label not in present.tolist() and present.shape[0] >= 2:
            raise ValueError(f"pos_label={pos_label!r} is not a valid label: {present.tolist()}")
        lab = np.asarray([pos_label])
    else:
        lab = present if labels is None else np.asarray(labels)
    tp = np.array([np.sum((t == c) & (p == c)) for c in lab.tolist()], dtype=np.float64)
    pred = np.array([np.sum(p == c) for c in lab.tolist()], dtype=np.float64)
    true = np.array([np.sum(t == c) for c in lab.tolist()], dtype=np.float64)
    support = true.astype(np.int64)
    if average == "micro":
        tp, pred, true = tp.sum(keepdims=True), pred.sum(keepdims=True), true.sum(keepdims=True)
    prec = _divide(tp, pred, zero_division, "Precision", "precision" in warn_for)
    rec = _divide(tp, true, zero_division, "Recall", "recall" in warn_for)
    if np.isposinf(beta):
        f = rec
    elif beta == 0:
        f = prec
    else:
        b2 = beta * beta
        f = _divide((1 + b2) * tp, b2 * true + pred, zero_division, "F-score",
                    "f-score" in warn_for)
    if average is None:
        return prec, rec, f, support
    w = true if average == "weighted" else None
    return _nanaverage(prec, w), _nanaverage(rec, w), _nanaverage(f, w), None


def precision_score(y_true, y_pred, *, labels=None, pos_label=1, average="binary",
                    zero_division="warn"):
    """tp / (tp + fp); see :func:`precision_recall_fscore_support`."""
    return precision_recall_fscore_support(y_true, y_pred, labels=labels, pos_label=pos_label,
                                           average=average, zero_division=zero_division,
                                           warn_for=("precision",))[0]


def recall_score(y_true, y_pred, *, labels=None, pos_label=1, average="binary",
                 zero_division="warn"):
    """tp / (tp + fn); see :func:`precision_recall_fscore_support`."""
    return precision_recall_fscore_support(y_true, y_pred, labels=labels, pos_label=pos_label,
                                           average=average, zero_division=zero_division,
                                           warn_for=("recall",))[1]


def f1_score(y_true, y_pred, *, labels=None, pos_label=1, average="binary",
             zero_division="warn"):
    """2 tp / (2 tp + fp + fn); see :func:`precision_recall_fscore_support`."""
    return precision_recall_fscore_support(y_true, y_pred, labels=labels, pos_label=pos_label,
                                           average=average, zero_division=zero_division,
                                           warn_for=("f-score",))[2]


def log_loss(y_true, y_prob, *, normalize: bool = True, labels=None) -> float:
    """Cross-entropy of predicted probabilities (n_samples, n_classes), columns in sorted
    label order (or ``labels``); probabilities clipped to [eps, 1 - eps]."""
    t = np.asarray(y_true)
    pr = np.asarray(y_prob)
    if pr.dtype.kind != "f":
        pr = pr.astype(np.float64)
    if pr.max() > 1 or pr.min() < 0:
        raise ValueError("y_prob must lie in [0, 1]")
    classes = np.unique(t) if labels is None else np.unique(np.asarray(labels))
    if classes.shape[0] < 2:
        raise ValueError("log_loss needs at least two classes; pass labels=")
    if pr.ndim == 1:
        pr = pr[:, None]
    if pr.shape[1] == 1:
        pr = np.concatenate([1 - pr, pr], axis=1)
    if pr.shape[1] != classes.shape[0]:
        raise ValueError(f"y_prob has {pr.shape[1]} columns but there are "
                         f"{classes.shape[0]} classes")
    onehot = (t[:, None] == classes[None, :])
    eps = np.finfo(pr.dtype).eps
    pc = np.clip(pr, eps, 1 - eps)
    loss = -np.log(pc[onehot]).astype(np.float64)
    return float(loss.mean() if normalize else loss.sum())


def mean_squared_error(y_true, y_pred) -> float:
    """mean((y_true - y_pred)^2), averaged uniformly over outputs."""
    t, p = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    return float(np.mean(np.mean((t - p) ** 2, axis=0)))


def mean_absolute_error(y_true, y_pred) -> float:
    """mean(|y_true - y_pred|), averaged uniformly over outputs."""
    t, p = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    return float(np.mean(np.mean(np.abs(t - p), axis=0)))


def r2_score(y_true, y_pred) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot, averaged uniformly over outputs;
    a constant y_true scores 1.0 if predicted exactly, else 0.0."""
    t, p = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    if t.shape[0] < 2:
        raise ValueError("r2_score needs at least two samples")
    t2 = t.reshape(t.shape[0], -1)
    p2 = p.reshape(p.shape[0], -1)
    ss_res = ((t2 - p2) ** 2).sum(axis=0)
    ss_tot = ((t2 - t2.mean(axis=0)) ** 2).sum(axis=0)
    out = np.ones(t2.shape[1])
    ok = ss_tot != 0
    out[ok] = 1 - ss_res[ok] / ss_tot[ok]
    out[~ok & (ss_res != 0)] = 0.0
    return float(out.mean())
