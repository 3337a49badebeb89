"""Datasets and preprocessing: the embedded digits set, IDX (MNIST/Fashion-MNIST) files,
splits, standardisation and one-hot encoding.

Nothing here touches the network: the digits set ships with the package, and the IDX
loader reads files you already have (by default the Debian package
``dataset-fashion-mnist``, installed at /usr/share/datasets/fashion-mnist).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "Dataset",
    "FASHION_MNIST_DIR",
    "Standardizer",
    "load",
    "load_digits",
    "load_fashion_mnist",
    "load_idx",
    "load_mnist",
    "one_hot",
    "train_test_split",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_HERE = Path(__file__).parent

# IDX element types (the third byte of the magic number) and their big-endian dtypes.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class Dataset:
    """Train and test arrays of one dataset: X float32 in [0, 1], y int64 class labels."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str
    n_classes: int


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The embedded UCI optical digits set (1,797 samples, CC BY 4.0; see ATTRIBUTION.txt).

    Returns X of shape (1797, 64), float32 scaled to [0, 1], and y of int64 labels 0..9.
    """
    with np.load(_HERE / "datasets" / "digits.npz", allow_pickle=False) as f:
        images, labels = f["images"], f["labels"]
    X = images.reshape(len(images), -1).astype(np.float32) / np.float32(16.0)
    return X, labels.astype(np.int64)


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (raw or .gz) as used by MNIST and Fashion-MNIST.

    Raises FileNotFoundError if it is missing and ValueError if it is not a valid IDX file
    (bad magic number, unknown element type, or a size that does not match its header).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # truncated or corrupt gzip stream
        raise ValueError(f"{path} is not a readable IDX file: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"{path} is not an IDX file (truncated header)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path} is corrupt: header says {shape} ({expected} bytes), "
                         f"file has {len(raw)} bytes")
    values = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"{stem}[.gz] not found in {directory}. Fashion-MNIST: `apt-get install "
        f"dataset-fashion-mnist` (installs {FASHION_MNIST_DIR}) or download the four IDX "
        f"files from the Fashion-MNIST/MNIST pages into one folder and pass it as path")


def _load_idx_dir(path: str | os.PathLike, name: str) -> Dataset:
    d = Path(path)
    if not d.is_dir():
        raise FileNotFoundError(
            f"{name}: folder {d} does not exist. Fashion-MNIST: `apt-get install "
            f"dataset-fashion-mnist` (installs {FASHION_MNIST_DIR}); MNIST: put its four IDX "
            f"files in a folder and pass it as path")
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = load_idx(_find(d, f"{prefix}-images-idx3-ubyte"))
        labels = load_idx(_find(d, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{name} in {d}: {split} images {images.shape} and labels "
                             f"{labels.shape} do not match")
        X = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
        parts[split] = (X, labels.astype(np.int64))
    return Dataset(*parts["train"], *parts["test"], name=name, n_classes=10)


def load_fashion_mnist(path: str | os.PathLike = FASHION_MNIST_DIR) -> Dataset:
    """Fashion-MNIST (60,000 train / 10,000 test, 784 features) from IDX files in path."""
    return _load_idx_dir(path, "fashion-mnist")


def load_mnist(path: str | os.PathLike) -> Dataset:
    """MNIST from its four IDX files (raw or .gz) in path."""
    return _load_idx_dir(path, "mnist")


def load(name_or_path: str, *, test_size: float = 0.2, seed: int = 0) -> Dataset:
    """A dataset by name ("digits", "fashion-mnist") or an IDX folder path.

    digits has no official test split: a stratified ``test_size`` share is held out.
    """
    if name_or_path == "digits":
        X, y = load_digits()
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, seed=seed,
                                                  stratify=True)
        return Dataset(X_tr, y_tr, X_te, y_te, name="digits", n_classes=10)
    if name_or_path in ("fashion-mnist", "fashion_mnist"):
        return load_fashion_mnist()
    if name_or_path == "mnist":
        raise FileNotFoundError("mnist: pass the folder that holds its IDX files")
    if Path(name_or_path).is_dir():
        return _load_idx_dir(name_or_path, str(name_or_path))
    raise ValueError(f"unknown dataset {name_or_path!r}: use 'digits', 'fashion-mnist' or a "
                     f"folder of IDX files")


def train_test_split(X, y, *, test_size: float = 0.2, seed: int | None = 0,
                     stratify: bool = False):
    """Splits (X, y) into (X_train, X_test, y_train, y_test); stratified keeps each class's
    share in both parts. Returns copies (fancy indexing), so the originals stay untouched."""
    X, y = np.asarray(X), np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    rng = np.random.default_rng(seed)
    if stratify:
        test_idx = []
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            rng.shuffle(idx)
            test_idx.append(idx[: int(round(test_size * len(idx)))])
        test = np.sort(np.concatenate(test_idx))
    else:
        test = np.sort(rng.permutation(len(X))[: int(round(test_size * len(X)))])
    mask = np.ones(len(X), bool)
    mask[test] = False
    return X[mask], X[test], y[mask], y[test]


class Standardizer:
    """Per-feature standardisation (x - mean) / std fitted on training data; features with
    zero variance keep std 1 so they map to 0 instead of NaN."""

    def fit(self, X) -> Standardizer:
        X = np.asarray(X)
        self.mean_ = X.mean(axis=0, dtype=np.float64)
        std = X.std(axis=0, dtype=np.float64)
        self.scale_ = np.where(std > 0, std, 1.0)
        return self

    def transform(self, X) -> np.ndarray:
        X = np.asarray(X)
        dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float32
        return ((X - self.mean_) / self.scale_).astype(dtype)

    def fit_transform(self, X) -> np.ndarray:
        return self.fit(X).transform(X)


def one_hot(y, n_classes: int | None = None, dtype=np.float32) -> np.ndarray:
    """One-hot encoding of integer labels 0..n_classes-1."""
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"y must hold integer labels, got dtype {y.dtype}")
    n = int(y.max()) + 1 if n_classes is None else int(n_classes)
    if y.size and (y.min() < 0 or y.max() >= n):
        raise ValueError(f"labels must be in [0, {n}), got range [{y.min()}, {y.max()}]")
    out = np.zeros((y.size, n), dtype=dtype)
    out[np.arange(y.size), y.ravel()] = 1
    return out
