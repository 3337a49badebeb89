"""fastoptim.metrics equals scikit-learn on the same inputs, edge cases included."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from fastoptim import metrics

skm = pytest.importorskip("sklearn.metrics")

CASES = {
    "multiclass": (np.array([0, 1, 2, 2, 1, 0, 3, 3, 1, 2]),
                   np.array([0, 2, 2, 2, 1, 1, 3, 0, 1, 0])),
    "never_predicted": (np.array([0, 1, 2, 2, 1, 0]), np.array([0, 1, 1, 1, 1, 0])),
    "never_true": (np.array([0, 0, 1, 1]), np.array([0, 2, 1, 2])),
    "binary": (np.array([1, 0, 1, 1, 0, 0, 1]), np.array([1, 1, 0, 1, 0, 0, 0])),
    "binary_no_positive_pred": (np.array([1, 0, 1, 0]), np.array([0, 0, 0, 0])),
    "all_negative": (np.array([0, 0, 0]), np.array([0, 0, 0])),
    "strings": (np.array(["cat", "dog", "cat", "eel"]), np.array(["dog", "dog", "cat", "cat"])),
}


def _sk(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


def _ours(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.UndefinedMetricWarning)
        return fn(*a, **k)


@pytest.mark.parametrize("name", list(CASES))
def test_accuracy_and_confusion_matrix(name):
    t, p = CASES[name]
    assert metrics.accuracy_score(t, p) == skm.accuracy_score(t, p)
    assert metrics.accuracy_score(t, p, normalize=False) == skm.accuracy_score(
        t, p, normalize=False)
    assert np.array_equal(metrics.confusion_matrix(t, p), _sk(skm.confusion_matrix, t, p))
    for norm in ("true", "pred", "all"):
        np.testing.assert_allclose(metrics.confusion_matrix(t, p, normalize=norm),
                                   _sk(skm.confusion_matrix, t, p, normalize=norm))


@pytest.mark.parametrize("zero_division", ["warn", 0.0, 1.0, np.nan], ids=str)
@pytest.mark.parametrize("average", [None, "binary", "micro", "macro", "weighted"], ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_precision_recall_f1(name, average, zero_division):
    t, p = CASES[name]
    pos = "cat" if name == "strings" else 1
    kw = dict(average=average, zero_division=zero_division, pos_label=pos)
    try:
        want = _sk(skm.precision_recall_fscore_support, t, p, **kw)
    except ValueError:
        with pytest.raises(ValueError):
            _ours(metrics.precision_recall_fscore_support, t, p, **kw)
        return
    got = _ours(metrics.precision_recall_fscore_support, t, p, **kw)
    for g, w in zip(got[:3], want[:3], strict=True):
        np.testing.assert_allclose(g, w, equal_nan=True)
    if average is None:
        assert np.array_equal(got[3], want[3])
    if average is not None:
        for ours, theirs in [(metrics.precision_score, skm.precision_score),
                             (metrics.recall_score, skm.recall_score),
                             (metrics.f1_score, skm.f1_score)]:
            np.testing.assert_allclose(_ours(ours, t, p, **kw), _sk(theirs, t, p, **kw),
                                       equal_nan=True)


def test_zero_division_warn_emits_our_warning():
    t, p = CASES["never_predicted"]
    with pytest.warns(metrics.UndefinedMetricWarning):
        assert metrics.precision_score(t, p, average="macro") == pytest.approx(
            _sk(skm.precision_score, t, p, average="macro"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics.precision_score(t, p, average="macro", zero_division=0.0)


def test_labels_argument_matches():
    t, p = CASES["multiclass"]
    for labels in ([0, 1], [3, 1, 5]):
        np.testing.assert_allclose(
            _ours(metrics.precision_recall_fscore_support, t, p, labels=labels)[2],
            _sk(skm.precision_recall_fscore_support, t, p, labels=labels)[2])
        assert np.array_equal(metrics.confusion_matrix(t, p, labels=labels),
                              skm.confusion_matrix(t, p, labels=labels))


def test_top_k_and_log_loss(rng):
    n, c = 200, 6
    t = rng.integers(0, c, n)
    s = rng.standard_normal((n, c))
    s[:5] = 0.0  # ties
    for k in (1, 2, 3, 5):
        assert metrics.top_k_accuracy_score(t, s, k=k) == pytest.approx(
            skm.top_k_accuracy_score(t, s, k=k))
    pr = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    pr[0] = np.eye(c)[(t[0] + 1) % c]  # a confident miss: clipping matters
    assert metrics.log_loss(t, pr) == pytest.approx(skm.log_loss(t, pr), rel=1e-12)
    assert metrics.log_loss(t, pr, normalize=False) == pytest.approx(
        skm.log_loss(t, pr, normalize=False), rel=1e-12)
    tb = rng.integers(0, 2, 50)
    pb = rng.uniform(0, 1, 50)
    assert metrics.log_loss(tb, pb) == pytest.approx(skm.log_loss(tb, pb), rel=1e-12)


def test_regression_metrics(rng):
    t = rng.standard_normal(100)
    p = t + 0.3 * rng.standard_normal(100)
    assert metrics.mean_squared_error(t, p) == pytest.approx(skm.mean_squared_error(t, p))
    assert metrics.mean_absolute_error(t, p) == pytest.approx(skm.mean_absolute_error(t, p))
    assert metrics.r2_score(t, p) == pytest.approx(skm.r2_score(t, p))
    T, P = rng.standard_normal((50, 3)), rng.standard_normal((50, 3))
    assert metrics.r2_score(T, P) == pytest.approx(skm.r2_score(T, P))
    assert metrics.mean_squared_error(T, P) == pytest.approx(skm.mean_squared_error(T, P))
    const = np.ones(5)
    assert metrics.r2_score(const, const) == skm.r2_score(const, const) == 1.0
    assert metrics.r2_score(const, const + 1) == skm.r2_score(const, const + 1) == 0.0
