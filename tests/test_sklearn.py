"""fastoptim.sklearn estimators: scikit-learn's estimator checks, accuracy on digits next to
sklearn's own MLPClassifier, partial_fit, pickle, clone, Pipeline and GridSearchCV with
n_jobs=2 (native threads capped in the workers, read back through threadpoolctl)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

pytest.importorskip("sklearn")

from fastoptim.sklearn import MLPClassifier, MLPRegressor  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, make_regression  # noqa: E402
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402


def _small(cls, dtype):
    return cls(hidden_layer_sizes=(32,), lr=1e-2, epochs=40, dtype=dtype, random_state=0)


# Every check passes for both dtypes, with no expected failure: inference is batch-invariant
# (fastoptim.nn.ROW_BLOCK), so check_methods_subset_invariance holds in float32 too.
@parametrize_with_checks(
    [_small(cls, dtype) for dtype in ("float32", "float64") for cls in (MLPClassifier,
                                                                          MLPRegressor)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def test_digits_accuracy_next_to_sklearn_mlp(digits):
    from sklearn.neural_network import MLPClassifier as SkMLP

    X_tr, X_te, y_tr, y_te = digits
    ours = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), epochs=20,
                                                         random_state=0)).fit(X_tr, y_tr)
    ref = make_pipeline(StandardScaler(), SkMLP(hidden_layer_sizes=(64,), max_iter=20,
                                                batch_size=32, random_state=0))
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref.fit(X_tr, y_tr)
    acc, ref_acc = ours.score(X_te, y_te), ref.score(X_te, y_te)
    assert acc >= 0.95 and acc >= ref_acc - 0.02, (acc, ref_acc)
    proba = ours.predict_proba(X_te)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(ours.classes_[proba.argmax(axis=1)], ours.predict(X_te))
    assert ours[-1].n_iter_ == 20 and len(ours[-1].loss_curve_) == 20


def test_string_labels_and_partial_fit_resume_like_fit(digits):
    X_tr, _, y_tr, _ = digits
    X = StandardScaler().fit_transform(X_tr)
    labels = np.array([f"d{k}" for k in range(10)])[y_tr]
    clf = MLPClassifier(hidden_layer_sizes=(16,), epochs=1, random_state=3)
    clf.partial_fit(X, labels, classes=np.unique(labels))
    assert list(clf.classes_) == [f"d{k}" for k in range(10)]
    first = clf.predict_proba(X)
    clf.partial_fit(X, labels)
    assert clf.n_iter_ == 2 and not np.array_equal(first, clf.predict_proba(X))
    with pytest.raises(ValueError, match="first partial_fit needs classes"):
        MLPClassifier().partial_fit(X, labels)
    with pytest.raises(ValueError, match="not in classes"):
        clf.partial_fit(X[:3], np.array(["d0", "zz", "d1"]))


def test_pickle_keeps_the_model_and_optimizer_state(digits):
    X_tr, X_te, y_tr, _ = digits
    sc = StandardScaler().fit(X_tr)
    X, Xt = sc.transform(X_tr), sc.transform(X_te)
    a = MLPClassifier(hidden_layer_sizes=(16,), epochs=2, random_state=1).fit(X, y_tr)
    b = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(a.predict_proba(Xt), b.predict_proba(Xt))
    # Adam's moments and step travel too: one more epoch gives the same parameters.
    a.partial_fit(X, y_tr)
    b.partial_fit(X, y_tr)
    np.testing.assert_array_equal(a.predict_proba(Xt), b.predict_proba(Xt))
    c = clone(a)
    assert c.get_params() == a.get_params() and not hasattr(c, "classes_")


def test_fit_is_reproducible_and_random_state_matters(digits):
    X_tr, X_te, y_tr, _ = digits
    kw = dict(hidden_layer_sizes=(16,), epochs=2, dropout=0.1)
    p = [MLPClassifier(random_state=s, **kw).fit(X_tr / 16, y_tr).predict_proba(X_te / 16)
         for s in (5, 5, 6)]
    np.testing.assert_array_equal(p[0], p[1])
    assert not np.array_equal(p[0], p[2])


def test_regressor_fits_a_linear_target():
    X, y = make_regression(n_samples=300, n_features=5, noise=1.0, random_state=0)
    y = (y - y.mean()) / y.std()
    reg = MLPRegressor(hidden_layer_sizes=(), lr=1e-2, epochs=60, random_state=0).fit(X, y)
    assert reg.score(X, y) > 0.99
    Y = np.column_stack([y, -y])
    reg2 = MLPRegressor(hidden_layer_sizes=(), lr=1e-2, epochs=60, random_state=0).fit(X, Y)
    assert reg2.predict(X).shape == (300, 2) and reg2.score(X, Y) > 0.99


def test_bad_parameters_raise_value_error(digits):
    X_tr, _, y_tr, _ = digits
    for kw, match in [({"optimizer": "newton"}, "optimizer must be one of"),
                      ({"epochs": 0}, "epochs must be"),
                      ({"lr": -1.0}, "lr must be a finite number > 0"),
                      ({"lr": "fast"}, "lr must be a number"),
                      ({"betas": (1.0, 0.999)}, r"betas must be in \[0, 1\), got 1.0"),
                      ({"betas": 0.9}, "betas must be a pair"),
                      ({"eps": -1.0}, "eps must be"),
                      ({"momentum": -0.5, "optimizer": "sgd"}, "momentum must be"),
                      ({"hidden_layer_sizes": (16, 0)}, "hidden_layer_sizes sizes must be"),
                      ({"n_threads": 0}, "n_threads must be >= 1"),
                      ({"random_state": -1}, "random_state must be >= 0|Seed must be"),
                      ({"dropout": 1.0}, "dropout must be in"),
                      ({"batch_size": 0}, "batch_size must be"),
                      ({"nesterov": True}, "nesterov needs")]:
        with pytest.raises(ValueError, match=match):
            MLPClassifier(**kw).fit(X_tr[:50], y_tr[:50])


def test_grid_search_n_jobs_2_caps_native_threads(digits):
    import fastoptim

    X_tr, _, y_tr, _ = digits

    def threads(est, X, y):
        from threadpoolctl import threadpool_info

        omp = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"]
        return max([fastoptim.get_num_threads(), *omp])

    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(16,), epochs=3,
                                                         random_state=0))
    gs = GridSearchCV(pipe, {"mlpclassifier__lr": [1e-5, 3e-3]}, cv=2, n_jobs=2,
                      scoring={"accuracy": "accuracy", "threads": threads}, refit="accuracy")
    gs.fit(X_tr, y_tr)
    assert gs.best_params_ == {"mlpclassifier__lr": 3e-3}
    cores = os.cpu_count() or 1
    assert 2 * max(gs.cv_results_["mean_test_threads"]) <= max(2, cores)
    rs = RandomizedSearchCV(pipe, {"mlpclassifier__lr": [1e-5, 3e-3]}, n_iter=2, cv=2,
                            n_jobs=2, random_state=0).fit(X_tr, y_tr)
    assert rs.best_params_ == {"mlpclassifier__lr": 3e-3}


def test_n_threads_is_applied_and_restored(digits):
    import fastoptim

    X_tr, _, y_tr, _ = digits
    seen = []

    class Spy(MLPClassifier):
        def _train(self, *a, **k):
            seen.append(fastoptim.get_num_threads())
            return super()._train(*a, **k)

    before = fastoptim.get_num_threads()
    Spy(hidden_layer_sizes=(8,), epochs=1, n_threads=1).fit(X_tr, y_tr)
    assert seen == [1] and fastoptim.get_num_threads() == before
