"""Checkpoints that survive a crash mid-save and never unpickle.

A checkpoint is one ``.npz`` file (a zip of ``.npy`` arrays) holding named arrays plus a
JSON metadata record stored as a byte array. Writing goes to a temporary file in the same
folder, which is flushed and fsynced, then atomically renamed over the target (and the
folder fsynced), so a process killed at any point leaves either the old checkpoint or the
new one — never a torn file. A killed writer's temporary file (``.NAME.XXXXXXXX.tmp``)
is removed by the next save to the same path once it is older than ``STALE_SECONDS``
and no live writer holds its lock (each writer holds an exclusive ``flock`` on its
temporary file until the rename, so concurrent writers never remove each other's).
Loading uses ``allow_pickle=False`` and checks a SHA-256 digest
of every array and the metadata, so truncated or tampered files fail with a clear
``CheckpointError``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CheckpointError", "load_checkpoint", "remove_stale_temp_files", "save_checkpoint"]

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: stale temp files are judged by age only
    fcntl = None  # type: ignore[assignment]

_META = "__meta__"
_FORMAT = "fastoptim-checkpoint-1"
STALE_SECONDS = 30.0  # a temp file this old, unlocked, is a killed writer's leftover


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, tampered with or of another format."""


def _digest(arrays: dict[str, np.ndarray], meta_json: bytes) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    h.update(meta_json)
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, arrays: dict[str, np.ndarray],
                    meta: dict[str, Any] | None = None) -> None:
    """Atomically writes ``arrays`` (name -> ndarray, numeric dtypes only) and a JSON-able
    ``meta`` dict to ``path``."""
    path = Path(path)
    for name, a in arrays.items():
        if name == _META or not isinstance(a, np.ndarray) or a.dtype.hasobject:
            raise TypeError(f"checkpoint array {name!r} must be a numeric numpy array")
    meta_json = json.dumps({"format": _FORMAT, "meta": meta or {}}, sort_keys=True).encode()
    record = json.dumps({"digest": _digest(arrays, meta_json)}).encode() + b"\n" + meta_json
    payload = dict(arrays)
    payload[_META] = np.frombuffer(record, dtype=np.uint8)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    f = os.fdopen(fd, "wb")
    try:
        if fcntl is not None:  # held until the rename: tells other savers we are alive
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        np.savez(f, **payload)  # type: ignore[arg-type]
        f.flush()
        os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    finally:
        f.close()
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    remove_stale_temp_files(path)


def remove_stale_temp_files(path: str | os.PathLike,
                            older_than: float = STALE_SECONDS) -> list[Path]:
    """Removes temp files that killed saves to ``path`` left beside it: names matching
    save_checkpoint's own pattern (``.NAME.`` + 8 characters + ``.tmp``), last modified
    more than ``older_than`` seconds ago, and not locked by a live writer. Returns the
    removed paths; errors (a file another process removes first) are ignored."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    pattern = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}\.tmp")
    removed: list[Path] = []
    now = time.time()
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not pattern.fullmatch(name):
            continue
        candidate = folder / name
        try:
            fd = os.open(candidate, os.O_RDONLY)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if now - st.st_mtime < older_than:
                continue  # possibly a writer that has not taken its lock yet
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live writer holds it
            os.unlink(candidate)
            removed.append(candidate)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reads a checkpoint written by save_checkpoint: returns (arrays, meta)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        # Open the file ourselves: np.load leaks its handle when the zip is unreadable.
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt: {e}") from None
    raw = arrays.pop(_META, None)
    if raw is None or raw.dtype != np.uint8:
        raise CheckpointError(f"{path} is not a fastoptim checkpoint (no metadata record)")
    head, _, meta_json = raw.tobytes().partition(b"\n")
    try:
        digest = json.loads(head)["digest"]
        meta = json.loads(meta_json)
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path}: metadata record is corrupt") from None
    if meta.get("format") != _FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {meta.get('format')!r}")
    if _digest(arrays, meta_json) != digest:
        raise CheckpointError(f"{path}: content does not match its SHA-256 digest "
                              f"(the file was modified or damaged)")
    return arrays, meta["meta"]
