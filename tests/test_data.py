"""Datasets: embedded digits, IDX files (real Fashion-MNIST where installed), helpers."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
from fastoptim import data

HAVE_FASHION = os.path.isdir(data.FASHION_MNIST_DIR)
# CI installs dataset-fashion-mnist, so these run there; locally they skip without it.
needs_fashion = pytest.mark.skipif(not HAVE_FASHION and os.environ.get("CI") != "true",
                                   reason="apt-get install dataset-fashion-mnist")


def test_digits_equals_sklearn():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = data.load_digits()
    ref = datasets.load_digits()
    assert X.dtype == np.float32 and X.shape == (1797, 64)
    np.testing.assert_array_equal(X * 16, ref.data)
    np.testing.assert_array_equal(y, ref.target)


def test_load_digits_split_is_stratified_and_disjoint():
    ds = data.load("digits", test_size=0.25, seed=3)
    assert len(ds.X_train) + len(ds.X_test) == 1797
    counts = np.bincount(ds.y_test, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 46
    rows = {r.tobytes() for r in ds.X_train}
    assert sum(r.tobytes() in rows for r in ds.X_test) < 10  # a few duplicate images exist


def _write_idx(path, arr, typecode=0x08, gz=False):
    header = bytes([0, 0, typecode, arr.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in arr.shape)
    payload = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(payload)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip(tmp_path, gz):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 4, 3)).astype(np.uint8)
    p = tmp_path / ("x.idx.gz" if gz else "x.idx")
    _write_idx(p, imgs, gz=gz)
    np.testing.assert_array_equal(data.load_idx(p), imgs)
    f = rng.standard_normal((3, 2)).astype(np.float32)
    _write_idx(tmp_path / "f.idx", f, typecode=0x0D)
    np.testing.assert_array_equal(data.load_idx(tmp_path / "f.idx"), f)


def test_idx_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        data.load_idx(tmp_path / "missing")
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="magic"):
        data.load_idx(tmp_path / "bad")
    _write_idx(tmp_path / "t.idx", np.zeros((4, 4), np.uint8))
    raw = (tmp_path / "t.idx").read_bytes()
    (tmp_path / "t.idx").write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="corrupt"):
        data.load_idx(tmp_path / "t.idx")
    (tmp_path / "t.gz").write_bytes(gzip.compress(raw)[:-10])
    with pytest.raises(ValueError, match="not a readable IDX"):
        data.load_idx(tmp_path / "t.gz")


def test_missing_dataset_folder_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        data.load_fashion_mnist(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.load_mnist(tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("cifar")


@needs_fashion
def test_fashion_mnist_real_files():
    ds = data.load_fashion_mnist()
    assert ds.X_train.shape == (60000, 784) and ds.X_test.shape == (10000, 784)
    assert ds.X_train.dtype == np.float32 and 0.0 <= ds.X_train.min() and ds.X_train.max() <= 1.0
    np.testing.assert_array_equal(np.bincount(ds.y_train), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(ds.y_test), np.full(10, 1000))


def test_helpers():
    y = np.array([0, 2, 1, 2])
    np.testing.assert_array_equal(data.one_hot(y), np.eye(3, dtype=np.float32)[y])
    with pytest.raises(ValueError, match="labels must be in"):
        data.one_hot(y, 2)
    with pytest.raises(TypeError, match="integer labels"):
        data.one_hot(y.astype(float))
    X = np.array([[1.0, 5.0], [3.0, 5.0]], np.float32)
    Z = data.Standardizer().fit_transform(X)
    np.testing.assert_allclose(Z, [[-1.0, 0.0], [1.0, 0.0]])
    assert Z.dtype == np.float32
    Xtr, Xte, ytr, yte = data.train_test_split(np.arange(10)[:, None], np.arange(10), test_size=0.3)
    assert len(Xte) == 3 and sorted(np.concatenate([ytr, yte]).tolist()) == list(range(10))
