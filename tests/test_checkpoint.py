"""Checkpoints: atomic writes, no pickle, clear errors on damage, survival of SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from fastoptim.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def sample(k=0):
    rng = np.random.default_rng(k)
    return {"w": rng.standard_normal((64, 32)).astype(np.float32), "step": np.array(k)}


def test_roundtrip(tmp_path):
    p = tmp_path / "c.npz"
    save_checkpoint(p, sample(3), {"epoch": 3, "lr": 0.1})
    arrays, meta = load_checkpoint(p)
    assert meta == {"epoch": 3, "lr": 0.1}
    for k, v in sample(3).items():
        np.testing.assert_array_equal(arrays[k], v)
    assert [f.name for f in tmp_path.iterdir()] == ["c.npz"]  # no temp file left behind


def test_rejects_object_arrays(tmp_path):
    with pytest.raises(TypeError, match="numeric numpy array"):
        save_checkpoint(tmp_path / "c.npz", {"x": np.array([{"a": 1}], dtype=object)})


def test_truncated_and_tampered_files(tmp_path):
    p = tmp_path / "c.npz"
    save_checkpoint(p, sample(1), {"epoch": 1})
    raw = p.read_bytes()
    for cut in (10, len(raw) // 2, len(raw) - 5):
        p.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load_checkpoint(p)
    # Flip one byte inside an array: caught by zip's CRC or by the SHA-256 digest.
    flipped = bytearray(raw)
    flipped[len(raw) // 3] ^= 0xFF
    p.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError):
        load_checkpoint(p)
    # A well-formed zip whose array was replaced (valid CRCs): caught by the digest.
    p.write_bytes(raw)
    arrays, _ = load_checkpoint(p)
    with zipfile.ZipFile(p) as z:
        members = {n: z.read(n) for n in z.namelist()}
    import io
    buf = io.BytesIO()
    np.save(buf, arrays["w"] + 1)
    members["w.npy"] = buf.getvalue()
    with zipfile.ZipFile(p, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(p)
    # A pickle-bearing npz is refused, never unpickled.
    np.savez(p, x=np.array([object()], dtype=object))
    with pytest.raises(CheckpointError):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.npz")


WRITER = r"""
import sys, numpy as np
from fastoptim.checkpoint import save_checkpoint
path = sys.argv[1]
rng = np.random.default_rng(0)
k = 1
while True:  # keep overwriting with growing epochs until killed
    save_checkpoint(path, {"w": np.full((512, 512), k, np.float32)}, {"epoch": k})
    print(k, flush=True)
    k += 1
"""


def test_sigkill_during_save_keeps_previous_checkpoint(tmp_path):
    """A writer killed at random moments: the checkpoint on disk always loads whole."""
    p = tmp_path / "c.npz"
    save_checkpoint(p, {"w": np.zeros((512, 512), np.float32)}, {"epoch": 0})
    rng = np.random.default_rng(0)
    kills = recovered = 0
    for _ in range(20):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(p)],
                                stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # at least one save completed in this child
        time.sleep(float(rng.uniform(0.0, 0.05)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        kills += 1
        arrays, meta = load_checkpoint(p)
        assert np.all(arrays["w"] == meta["epoch"])  # content and metadata belong together
        recovered += 1
    assert kills == recovered == 20
