"""scikit-learn searches over fastoptim's estimators on a Dask cluster of worker processes
(loopback) through joblib's dask backend: the same results as the local joblib run."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("sklearn")
distributed = pytest.importorskip("distributed", reason="needs pip install 'dask[distributed]'")
joblib = pytest.importorskip("joblib")

from fastoptim.distributed import local_dask_cluster  # noqa: E402
from fastoptim.sklearn import MLPClassifier  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

# Multi-process runs (MPI, servers, process groups): the full CI pass runs them; the
# per-SIMD-target passes skip them (their kernels are covered per target elsewhere).
pytestmark = pytest.mark.slow


def threads(est, X, y):
    """A scorer that reports the most threads fastoptim or OpenMP would use in the task."""
    import fastoptim
    from threadpoolctl import threadpool_info

    omp = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"]
    return max([fastoptim.get_num_threads(), *omp])


def pid(est, X, y):
    return float(os.getpid())


@pytest.fixture(scope="module")
def client():
    with local_dask_cluster(n_workers=2) as cluster, distributed.Client(cluster) as c:
        yield c


def _searches():
    X, y = load_digits(return_X_y=True)
    X, y = X[:600], y[:600]
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(16,), epochs=4,
                                                         dtype="float64", random_state=0))
    scoring = {"accuracy": "accuracy", "threads": threads, "pid": pid}
    grid = GridSearchCV(pipe, {"mlpclassifier__lr": [1e-4, 3e-3],
                               "mlpclassifier__batch_size": [16, 64]}, cv=3,
                        scoring=scoring, refit="accuracy")
    rand = RandomizedSearchCV(pipe, {"mlpclassifier__lr": [1e-4, 1e-3, 3e-3, 1e-2]}, n_iter=3,
                              cv=2, random_state=0, scoring=scoring, refit="accuracy")
    return X, y, grid, rand


def test_grid_and_random_search_on_dask_match_the_local_run(client):
    X, y, grid, rand = _searches()
    local = [grid.fit(X, y).cv_results_, rand.fit(X, y).cv_results_]
    local_best = [grid.best_params_, rand.best_params_]
    X, y, grid, rand = _searches()
    with joblib.parallel_backend("dask"):
        remote = [grid.fit(X, y).cv_results_, rand.fit(X, y).cv_results_]
    assert [grid.best_params_, rand.best_params_] == local_best
    workers = set(client.run(os.getpid).values())
    for a, b in zip(local, remote, strict=True):
        assert [p for p in a["params"]] == [p for p in b["params"]]
        # float64, one thread in both: the same splits give the same models
        np.testing.assert_allclose(b["mean_test_accuracy"], a["mean_test_accuracy"],
                                   rtol=0, atol=1e-12)
        ran_on = {int(v) for k, vs in b.items() if k.startswith("split") and
                  k.endswith("_test_pid") for v in vs}
        assert ran_on <= workers and len(ran_on) == 2  # the fits ran in both worker processes
        assert os.getpid() not in ran_on
        cores = os.cpu_count() or 1
        n_workers = len(client.scheduler_info()["workers"])
        threads_per = max(w["nthreads"] for w in client.scheduler_info()["workers"].values())
        assert n_workers * threads_per <= max(cores, n_workers)
        assert max(b["mean_test_threads"]) == 1  # each task's kernels and BLAS: one thread


def test_local_dask_cluster_sizes_against_the_cores():
    with pytest.raises(ValueError, match="n_workers must be an integer >= 1"):
        local_dask_cluster(n_workers=0)
    with pytest.raises(ValueError, match="threads_per_worker must be an integer >= 1"):
        local_dask_cluster(threads_per_worker=-1)
