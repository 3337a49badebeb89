"""Data-parallel fit over real MPI processes (mpirun on loopback): results against the
one-process run, ZeRO-1 state, checkpoints across rank counts, faults and bad launches."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastoptim import checkpoint, train

# Multi-process runs (MPI, servers, process groups): the full CI pass runs them; the
# per-SIMD-target passes skip them (their kernels are covered per target elsewhere).
pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
WORKER = HERE / "mpi_worker.py"
_spec = importlib.util.spec_from_file_location("mpi_worker", WORKER)
mpi_worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mpi_worker)

MPIRUN = shutil.which("mpirun")
needs_mpi = pytest.mark.skipif(
    MPIRUN is None or importlib.util.find_spec("mpi4py") is None,
    reason="needs an MPI launcher (Debian: openmpi-bin libopenmpi-dev) and mpi4py "
           "(pip install 'fastoptim[mpi]')")

ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
       "OMPI_MCA_btl": "self,tcp", "OMPI_MCA_btl_tcp_if_include": "lo",
       "OMPI_MCA_oob_tcp_if_include": "lo", "OMPI_MCA_rmaps_base_oversubscribe": "1",
       "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe",
       "OMPI_MCA_mpi_yield_when_idle": "1"}


def mpirun(n, args, out, timeout=120, expect_ok=True):
    cmd = [MPIRUN, "-n", str(n), "--oversubscribe", sys.executable, str(WORKER), str(out),
           *args]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    if expect_ok:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def reference(epochs=3, batch_size=32, dtype="float64", optimizer="adamw", l1=0.0,
              checkpoint_dir=None, dropout=0.0):
    """The same fit in this one process."""
    class A:
        pass

    a = A()
    a.optimizer, a.l1, a.seed, a.dropout = optimizer, l1, 0, dropout
    dt = np.dtype(dtype).type
    X, y = mpi_worker.problem(dt)
    model, opt = mpi_worker.build(a, dt)
    cbs = [] if checkpoint_dir is None else [train.ModelCheckpoint(checkpoint_dir /
                                                                   "ckpt-{epoch}.npz")]
    hist = train.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=epochs,
                     batch_size=batch_size, seed=3, verbose=False, callbacks=cbs)
    return model.flat_parameters().copy(), hist


def ranks_params(out, n):
    ps = [np.load(out / f"rank{r}.npz")["params"] for r in range(n)]
    for r in range(1, n):  # every rank holds bitwise the same model
        np.testing.assert_array_equal(ps[r], ps[0])
    return ps[0]


# float64: the same terms summed in another order; after 3 epochs (21 steps) the
# parameters differ by <= 2.6e-16 x max|ref| on 2 and 3 ranks (measured); 1e-10 leaves room
# for other BLAS builds.
RTOL64 = 1e-10


@needs_mpi
@pytest.mark.parametrize("shard", [False, True], ids=["allreduce", "zero1"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_matches_one_process(tmp_path, n, shard):
    mpirun(n, ["--shard"] * shard, tmp_path)
    want, hist = reference()
    got = ranks_params(tmp_path, n)
    np.testing.assert_allclose(got, want, rtol=RTOL64, atol=1e-12)
    h = json.loads((tmp_path / "history.json").read_text())
    np.testing.assert_allclose(h["history"]["loss"], hist["loss"], rtol=1e-10)
    assert h["history"]["accuracy"] == hist["accuracy"]


@needs_mpi
@pytest.mark.parametrize("optimizer", ["sgd", "amsgrad"])
def test_other_optimizers_and_penalties(tmp_path, optimizer):
    # a batch size that leaves a short last batch (203 rows), and an L1 penalty on rank 2's
    # empty share of a 2-row batch is exercised by batch_size=2 below
    mpirun(3, ["--shard", "--optimizer", optimizer, "--l1", "1e-3", "--epochs", "2"], tmp_path)
    want, _ = reference(epochs=2, optimizer=optimizer, l1=1e-3)
    np.testing.assert_allclose(ranks_params(tmp_path, 3), want, rtol=RTOL64, atol=1e-12)


@needs_mpi
def test_ranks_with_empty_shares(tmp_path):
    # 2-row batches on 3 ranks: one rank has no rows in every step
    mpirun(3, ["--batch-size", "2", "--epochs", "1", "--shard"], tmp_path)
    want, _ = reference(epochs=1, batch_size=2)
    np.testing.assert_allclose(ranks_params(tmp_path, 3), want, rtol=RTOL64, atol=1e-12)


@needs_mpi
@pytest.mark.parametrize("batch_size", [32, 2])
def test_dropout_masks_follow_the_global_batch(tmp_path, batch_size):
    # each rank draws the masks of its rows of the global batch; with 2-row batches on 3
    # ranks one rank has no rows and still advances its dropout stream
    mpirun(3, ["--dropout", "0.3", "--epochs", "1", "--batch-size", str(batch_size)],
           tmp_path)
    want, _ = reference(epochs=1, batch_size=batch_size, dropout=0.3)
    np.testing.assert_allclose(ranks_params(tmp_path, 3), want, rtol=RTOL64, atol=1e-12)
    other, _ = reference(epochs=1, batch_size=batch_size, dropout=0.0)
    assert not np.allclose(want, other, rtol=1e-3)  # dropout changed the run


@needs_mpi
def test_float32(tmp_path):
    mpirun(2, ["--dtype", "float32", "--shard"], tmp_path)
    want, _ = reference(dtype="float32")
    # float32 rounding of the reordered sums over 21 Adam steps: 9.1e-8 x max|ref| measured
    got = ranks_params(tmp_path, 2)
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))


@needs_mpi
def test_zero1_state_is_one_nth_per_rank(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "shard").mkdir()
    mpirun(3, [], tmp_path / "full")
    mpirun(3, ["--shard"], tmp_path / "shard")
    full = [int(np.load(tmp_path / "full" / f"rank{r}.npz")["state_bytes"]) for r in range(3)]
    shard = [int(np.load(tmp_path / "shard" / f"rank{r}.npz")["state_bytes"]) for r in range(3)]
    n_params = 12 * 16 + 16 * 3 + 16 + 3
    assert full == [2 * 8 * n_params] * 3  # exp_avg and exp_avg_sq, float64, on every rank
    assert sum(shard) == full[0]
    assert max(shard) - min(shard) <= 2 * 8  # contiguous slices differ by at most 1 element


@needs_mpi
def test_checkpoints_match_one_process_and_resume_on_other_rank_counts(tmp_path):
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    want4, _ = reference(epochs=4, checkpoint_dir=ref_dir)
    a = tmp_path / "a"
    a.mkdir()
    mpirun(2, ["--shard", "--checkpoint", "--epochs", "2"], a)
    # the sharded run's checkpoint holds the whole state, as the one-process run writes it
    got_arrays, got_meta = checkpoint.load_checkpoint(a / "ckpt-1.npz")
    ref_arrays, ref_meta = checkpoint.load_checkpoint(ref_dir / "ckpt-1.npz")
    assert sorted(got_arrays) == sorted(ref_arrays)
    for k in ref_arrays:
        np.testing.assert_allclose(got_arrays[k], ref_arrays[k], rtol=RTOL64, atol=1e-12,
                                   err_msg=k)
    assert got_meta["optimizer"] == ref_meta["optimizer"]
    # resume the 2-rank sharded checkpoint on 3 ranks unsharded, and on 1 rank sharded
    for n, extra, name in ((3, [], "b"), (1, ["--shard"], "c")):
        d = tmp_path / name
        d.mkdir()
        mpirun(n, [*extra, "--epochs", "4", "--resume", str(a / "ckpt-1.npz")], d)
        np.testing.assert_allclose(ranks_params(d, n), want4, rtol=RTOL64, atol=1e-12)


@needs_mpi
def test_killed_rank_stops_the_job_and_last_checkpoint_loads(tmp_path):
    r = mpirun(2, ["--shard", "--checkpoint", "--epochs", "5", "--kill", "1", "2",
                   "--timeout", "30"], tmp_path, timeout=90, expect_ok=False)
    assert r.returncode != 0
    assert not (tmp_path / "rank0.npz").exists()  # rank 0 did not finish training
    # killed in the third epoch: checkpoints of completed epochs 1 and 2 (named from 1)
    assert (tmp_path / "ckpt-2.npz").exists() and not (tmp_path / "ckpt-3.npz").exists()
    d = tmp_path / "resumed"
    d.mkdir()
    mpirun(2, ["--shard", "--epochs", "5", "--resume", str(tmp_path / "ckpt-2.npz")], d)
    want, _ = reference(epochs=5)
    np.testing.assert_allclose(ranks_params(d, 2), want, rtol=RTOL64, atol=1e-12)


@needs_mpi
def test_stalled_rank_makes_the_others_abort(tmp_path):
    # rank 1 stops itself (SIGSTOP) mid-epoch; rank 0's watchdog aborts after 3 s
    r = mpirun(2, ["--kill", "-1", "0", "--timeout", "3"], tmp_path, timeout=90,
               expect_ok=False)
    assert r.returncode != 0
    assert "rank 0/2: waited more than 3 s in" in r.stderr
    assert "a peer rank died or stalled" in r.stderr


@needs_mpi
def test_exception_on_one_rank_aborts_the_job(tmp_path):
    r = mpirun(2, ["--raise-on", "1"], tmp_path, timeout=90, expect_ok=False)
    assert r.returncode != 0
    assert "RuntimeError: injected failure" in r.stderr
    assert "rank 1/2" in r.stderr and "aborting the job" in r.stderr


@needs_mpi
@pytest.mark.parametrize("what", ["data", "seed"])
def test_mismatched_launch_is_refused(tmp_path, what):
    r = mpirun(2, ["--mismatch", what], tmp_path, expect_ok=False)
    assert r.returncode != 0
    part = "data" if what == "data" else "model"  # another seed initialises other weights
    assert r.stderr.count(f"refused: ranks [1] differ from rank 0 in: {part}") == 2, r.stderr
    assert not (tmp_path / "rank0.npz").exists()


@needs_mpi
def test_cli_train_under_mpirun(tmp_path):
    fastoptim_cli = [sys.executable, "-m", "fastoptim.cli"]
    opts = ["train", "--epochs", "2", "--hidden", "16", "--batch-size", "64", "--quiet",
            "--dtype", "float64"]
    one = subprocess.run([*fastoptim_cli, *opts, "--output", str(tmp_path / "one")],
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr
    r = subprocess.run([MPIRUN, "-n", "2", *fastoptim_cli, *opts, "--shard-optimizer",
                        "--output", str(tmp_path / "two")], env=ENV, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("held-out digits") == 1  # rank 0 alone reports
    m = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m["distributed"]["ranks"] == 2 and m["distributed"]["shard_optimizer"] is True
    a, _ = checkpoint.load_checkpoint(tmp_path / "one" / "checkpoint.npz")
    b, _ = checkpoint.load_checkpoint(tmp_path / "two" / "checkpoint.npz")
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=RTOL64, atol=1e-12, err_msg=k)


def test_without_mpi4py_the_error_names_the_extra(monkeypatch):
    from fastoptim import distributed

    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"pip install 'fastoptim\[mpi\]'"):
        distributed.DataParallel()
