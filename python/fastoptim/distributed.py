"""Data-parallel training over MPI (mpi4py), with optional ZeRO-1 sharded optimizer state.

    # mpirun -n 4 python train.py
    from fastoptim import distributed, fit
    fit(model, X, y, loss="cross_entropy", optimizer=opt, batch_size=256,
        comm=distributed.DataParallel(shard_optimizer=True))

Every rank holds the whole model and the whole data set, and runs the same ``fit`` call.
Each global batch (``batch_size`` rows, the same rows a one-process run takes) is split
into N contiguous shares, one per rank. After the backward pass each rank scales its
gradient arena by its share of the batch and the arenas are summed in place:

- unsharded: one ``Allreduce(IN_PLACE)`` on the model's flat gradient arena per step (no
  copy), then every rank runs the same optimizer step on the whole arena;
- ``shard_optimizer=True`` (ZeRO stage 1): one ``Reduce_scatter`` gives each rank the summed
  gradient of its contiguous 1/N slice of the arena, the native optimizer updates only
  that slice (its parameters are views of the arena, its state is 1/N of the whole), and
  one ``Allgatherv(IN_PLACE)`` on the parameter arena hands every rank the new parameters.

The summed gradient equals the one-process gradient of the same batch up to float
rounding (the same terms added in another order), so parameters agree with a one-process
run to rounding: ~1e-12 relative in float64, ~1e-5 in float32 after a few epochs.

Rank 0 alone prints and writes (progress, loggers, checkpoints). Checkpoints hold the
whole optimizer state (gathered from the shards), so they resume with any N, sharded or
not. At the start the ranks compare digests of their data, model, optimizer and
training options and refuse to run (``LaunchMismatchError`` on every rank) if any
differ. An exception on one rank inside the loop prints the error and aborts the job
(``MPI_Abort``), and a watchdog aborts a rank that waits longer than ``timeout`` seconds
in a collective (a peer that died or stalled), so no rank hangs.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import sys
import threading
import time
import traceback
from typing import Any

import numpy as np

__all__ = ["DataParallel", "LaunchMismatchError", "launched_under_mpi", "local_dask_cluster",
           "rank_threads", "require_mpi"]

_LAUNCH_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS",
               "MV2_COMM_WORLD_SIZE")


class LaunchMismatchError(RuntimeError):
    """Ranks were started with different data, model, optimizer or training options."""


def require_mpi():
    """mpi4py's MPI module, or an ImportError naming the extra to install."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError(
            "data-parallel training needs mpi4py: pip install 'fastoptim[mpi]' (it builds "
            "against an MPI library, e.g. Debian's openmpi-bin and libopenmpi-dev)") from None
    return MPI


def launched_under_mpi() -> bool:
    """True when this process was started by mpirun/mpiexec/srun with an MPI job around it."""
    return any(k in os.environ for k in _LAUNCH_ENV)


def rank_threads(comm) -> int:
    """Threads per rank: the cores this process may run on, shared among the ranks on its
    node (when mpirun has bound the rank to cores, those cores)."""
    MPI = require_mpi()
    cores = os.cpu_count() or 1
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        allowed = cores
    if allowed < cores:  # bound by the launcher: the binding already divides the node
        return max(1, allowed)
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        n_local = local.Get_size()
    finally:
        local.Free()
    return max(1, cores // n_local)


class DataParallel:
    """How ``fit`` runs data-parallel; pass it as ``fit(..., comm=DataParallel(...))``
    (a bare mpi4py communicator means ``DataParallel(comm)``).

    Args:
        comm: an mpi4py communicator (default ``MPI.COMM_WORLD``).
        shard_optimizer: ZeRO stage 1: each rank keeps and updates only its 1/N slice of
            the optimizer state.
        timeout: seconds a rank may wait in one collective before it aborts the job (a
            peer died or stalled); ``FASTOPTIM_MPI_TIMEOUT`` overrides the default 300.
        threads: fastoptim and BLAS threads per rank during fit: ``"auto"``
            (:func:`rank_threads`), an int, or None to leave them.
        abort_on_error: an exception on one rank inside the loop aborts the whole job
            (otherwise the other ranks would wait for it forever).
    """

    def __init__(self, comm=None, *, shard_optimizer: bool = False,
                 timeout: float | None = None, threads: int | str | None = "auto",
                 abort_on_error: bool = True):
        MPI = require_mpi()
        self.comm = MPI.COMM_WORLD if comm is None else comm
        if not isinstance(self.comm, MPI.Comm):
            raise TypeError(f"comm must be an mpi4py communicator, got {type(comm).__name__}")
        if timeout is None:
            timeout = float(os.environ.get("FASTOPTIM_MPI_TIMEOUT", "300"))
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if not (threads is None or threads == "auto"
                or (isinstance(threads, int) and threads >= 1)):
            raise ValueError(f"threads must be 'auto', None or an int >= 1, got {threads!r}")
        self.shard_optimizer = bool(shard_optimizer)
        self.timeout = float(timeout)
        self.threads = threads
        self.abort_on_error = bool(abort_on_error)

    @property
    def rank(self) -> int:
        return self.comm.Get_rank()

    @property
    def size(self) -> int:
        return self.comm.Get_size()


def _as_options(comm) -> DataParallel:
    return comm if isinstance(comm, DataParallel) else DataParallel(comm)


def _offset(p: np.ndarray, arena: np.ndarray) -> int:
    """Element offset of ``p`` inside ``arena`` (ValueError if it is not a contiguous view)."""
    start = p.__array_interface__["data"][0] - arena.__array_interface__["data"][0]
    if (not p.flags.c_contiguous or p.dtype != arena.dtype or start % arena.itemsize
            or start < 0 or start // arena.itemsize + p.size > arena.size):
        raise ValueError("data-parallel training needs every optimizer parameter to be a "
                         "contiguous view of the model's parameter arena (flat_parameters())")
    return start // arena.itemsize


class _Watchdog:
    """Aborts the job when one collective has waited longer than ``timeout`` seconds."""

    def __init__(self, engine: _Engine, timeout: float):
        self.engine, self.timeout = engine, timeout
        self.op: str | None = None
        self.since = 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fastoptim-mpi-watchdog",
                                       daemon=True)
        self.thread.start()

    @contextlib.contextmanager
    def watch(self, op: str):
        self.since, self.op = time.monotonic(), op
        try:
            yield
        finally:
            self.op = None

    def _run(self):
        tick = min(1.0, self.timeout / 4)
        while not self.done.wait(tick):
            op = self.op
            if op is not None and time.monotonic() - self.since > self.timeout:
                self.engine.abort(f"waited more than {self.timeout:g} s in {op} at step "
                                  f"{self.engine.steps}: a peer rank died or stalled")

    def stop(self):
        self.done.set()


class _Engine:
    """The per-fit state of a data-parallel run (built by fit through :func:`attach`)."""

    def __init__(self, options: DataParallel, model, optimizer):
        self.MPI = require_mpi()
        self.options, self.comm = options, options.comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.is_root = self.rank == 0
        self.model, self.optimizer = model, optimizer
        self.steps = 0
        self.comm_seconds = 0.0  # time spent in the per-step collectives (benchmarks)
        if not (hasattr(model, "flat_parameters") and hasattr(model, "flat_gradients")):
            raise TypeError("data-parallel training needs a model with one parameter arena "
                            "and one gradient arena (flat_parameters()/flat_gradients(), "
                            "as fastoptim.nn.Sequential)")
        self.params, self.grads = model.flat_parameters(), model.flat_gradients()
        n, N = self.params.size, self.size
        self.counts = [n // N + (r < n % N) for r in range(N)]
        self.displs = [sum(self.counts[:r]) for r in range(N)]
        self.lo = self.displs[self.rank]
        self.hi = self.lo + self.counts[self.rank]
        self.mpi_type = self.MPI.DOUBLE if self.params.dtype == np.float64 else self.MPI.FLOAT
        self.sharded = False
        if options.shard_optimizer:
            self._build_shard()
        self.watchdog = _Watchdog(self, options.timeout) if self.size > 1 else None

    # ------------------------------------------------------------------ collectives
    def _watch(self, op: str):
        return self.watchdog.watch(op) if self.watchdog else contextlib.nullcontext()

    def abort(self, message: str) -> None:
        sys.stderr.write(f"fastoptim.distributed: rank {self.rank}/{self.size}: {message}; "
                         f"aborting the job\n")
        sys.stderr.flush()
        if self.size > 1:
            self.comm.Abort(1)
        os._exit(1)  # pragma: no cover - Abort does not return

    def close(self) -> None:
        if self.watchdog:
            self.watchdog.stop()

    def share(self, lo: int, hi: int) -> tuple[int, int]:
        """This rank's contiguous rows of the global batch [lo, hi)."""
        m, N, r = hi - lo, self.size, self.rank
        start = lo + r * (m // N) + min(r, m % N)
        return start, start + m // N + (r < m % N)

    def allreduce_sum(self, value: float) -> float:
        with self._watch("allreduce of the epoch loss"):
            return float(self.comm.allreduce(float(value), op=self.MPI.SUM))

    def allgather_concat(self, a: np.ndarray) -> np.ndarray:
        with self._watch("allgather of predictions"):
            parts = self.comm.allgather(a)
        return np.concatenate(parts)

    def bcast(self, obj):
        with self._watch("broadcast"):
            return self.comm.bcast(obj, root=0)

    # ------------------------------------------------------------------ launch check
    def check_launch(self, parts: dict[str, Any]) -> None:
        """Refuses to start unless every rank has the same digests of ``parts`` (arrays are
        hashed by content, other values by repr). Raises on every rank alike."""
        mine = {}
        for name, values in parts.items():
            h = hashlib.blake2b(digest_size=16)
            for v in values if isinstance(values, (list, tuple)) else [values]:
                if isinstance(v, np.ndarray):
                    h.update(f"{v.dtype.str}{v.shape}".encode())
                    h.update(np.ascontiguousarray(v).data)
                else:
                    h.update(repr(v).encode())
            mine[name] = h.hexdigest()
        with self._watch("the launch check (allgather of digests)"):
            every = self.comm.allgather(mine)
        bad = sorted({k for d in every for k in d if d.get(k) != every[0].get(k)})
        if bad:
            ranks = [r for r, d in enumerate(every) if d != every[0]]
            raise LaunchMismatchError(
                f"ranks {ranks} differ from rank 0 in: {', '.join(bad)}; every rank must run "
                f"the same command on the same data")

    def check_consistent(self) -> None:
        """All ranks hold bitwise the same parameters (checked once per epoch)."""
        d = hashlib.blake2b(self.params.data, digest_size=16).hexdigest()
        with self._watch("the parameter consistency check"):
            every = self.comm.allgather(d)
        if any(x != every[0] for x in every):
            raise LaunchMismatchError("the ranks' parameters diverged (MPI returned different "
                                      "sums to different ranks)")

    # ------------------------------------------------------------------ the step
    def step(self, grads: list[np.ndarray], weight: float) -> bool:
        """Averages the gradients (this rank's share ``weight`` of the batch) and updates
        the parameters on every rank. Returns what the optimizer step returns."""
        if weight != 1.0:
            self.grads *= self.grads.dtype.type(weight)
        self.steps += 1
        t0 = time.perf_counter()
        if not self.sharded:
            with self._watch("Allreduce of the gradient arena"):
                self.comm.Allreduce(self.MPI.IN_PLACE, self.grads, op=self.MPI.SUM)
            self.comm_seconds += time.perf_counter() - t0
            return bool(self.optimizer.step(grads))
        with self._watch("Reduce_scatter of the gradient arena"):
            self.comm.Reduce_scatter(self.grads, self.gshard, recvcounts=self.counts,
                                     op=self.MPI.SUM)
        self.comm_seconds += time.perf_counter() - t0
        if self.optimizer.skip_nonfinite:  # one decision for all ranks
            from fastoptim import _core

            ok = bool(np.isfinite(_core.global_norm([self.gshard]))) if self.gshard.size else True
            with self._watch("allreduce of the finite-gradient flag"):
                ok = bool(self.comm.allreduce(ok, op=self.MPI.LAND))
            if not ok:
                self.optimizer.skipped_steps += 1
                return False
        if self.shard_opt is not None:
            for full_i, g in zip(self.group_of, self.shard_opt.param_groups, strict=True):
                src = self.optimizer.param_groups[full_i]
                for k, v in src.items():
                    if k != "params":
                        g[k] = v
            self.shard_opt.step(self.shard_grads)
        t0 = time.perf_counter()
        with self._watch("Allgatherv of the parameter arena"):
            self.comm.Allgatherv(self.MPI.IN_PLACE,
                                 [self.params, self.counts, self.displs, self.mpi_type])
        self.comm_seconds += time.perf_counter() - t0
        return True

    # ------------------------------------------------------------------ ZeRO-1
    def _build_shard(self) -> None:
        """The optimizer over this rank's slice [lo, hi) of the arenas (same class and
        hyperparameters, each parameter cut to the part inside the slice)."""
        opt = self.optimizer
        if getattr(opt, "state_dtype", "fp32") != "fp32":
            raise ValueError(f"shard_optimizer=True needs an optimizer with fp32 state, got "
                             f"state_dtype={opt.state_dtype!r}: 8-bit blocks and bf16 state are "
                             f"not split across ranks")
        self.gshard = np.zeros(self.hi - self.lo, self.grads.dtype)
        self.pieces: list[tuple[int, int, int, int]] = []  # (param id, offset, a, b)
        groups, self.group_of, self.shard_grads = [], [], []
        pid = 0
        self.param_offsets: list[tuple[int, tuple[int, ...]]] = []
        for gi, g in enumerate(opt.param_groups):
            ps = []
            for p in g["params"]:
                off = _offset(p, self.params)
                self.param_offsets.append((off, p.shape))
                a, b = max(off, self.lo), min(off + p.size, self.hi)
                if a < b:
                    self.pieces.append((pid, off, a, b))
                    ps.append(self.params[a:b])
                    self.shard_grads.append(self.gshard[a - self.lo:b - self.lo])
                pid += 1
            if ps:
                groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": ps})
                self.group_of.append(gi)
        self.shard_opt = None
        if groups:
            cls = type(opt)
            accepted = inspect.signature(cls).parameters
            kwargs = {k: v for k, v in opt.defaults.items() if k in accepted}
            self.shard_opt = cls(groups, **kwargs)
        self.sharded = True

    def state_bytes(self) -> int:
        """Bytes of optimizer state arrays held by this rank."""
        opt = self.shard_opt if self.sharded else self.optimizer
        if opt is None:
            return 0
        return sum(v.nbytes for s in opt.state.values() for v in s.values()
                   if isinstance(v, np.ndarray))

    def optimizer_state_dict(self) -> dict | None:
        """The whole optimizer's state_dict, as a one-process optimizer would give it: on
        the root rank (None elsewhere) when sharded, on every rank otherwise. Collective."""
        if not self.sharded:
            return self.optimizer.state_dict()
        local = {}
        if self.shard_opt is not None:
            for (pid, _off, _a, _b), j in zip(self.pieces, range(len(self.pieces)), strict=True):
                st = self.shard_opt.state.get(j)
                if st:
                    local[pid] = {k: (None if isinstance(v, np.ndarray) else v)
                                  for k, v in st.items()}
        with self._watch("the checkpoint's state gather"):
            every = self.comm.allgather(local)
        meta: dict[int, dict] = {}
        for d in every:
            for pid, st in d.items():
                meta.setdefault(pid, {}).update(st)
        keys = sorted({k for st in meta.values() for k, v in st.items() if v is None})
        full = self.optimizer.state_dict() if self.is_root else None
        flats: dict[str, Any] = {}
        for k in keys:
            buf = np.zeros(self.hi - self.lo, self.params.dtype)
            if self.shard_opt is not None:
                for j, (_pid, _off, a, b) in enumerate(self.pieces):
                    v = self.shard_opt.state.get(j, {}).get(k)
                    if isinstance(v, np.ndarray):
                        buf[a - self.lo:b - self.lo] = v
            recv = np.empty(self.params.size, buf.dtype) if self.is_root else None
            with self._watch("the checkpoint's state gather"):
                self.comm.Gatherv(buf, [recv, self.counts, self.displs, self.mpi_type]
                                  if self.is_root else None, root=0)
            flats[k] = recv
        if full is None:  # not the root rank
            return None
        state = {}
        for pid, st in sorted(meta.items()):
            off, shape = self.param_offsets[pid]
            size = int(np.prod(shape))
            state[pid] = {k: (flats[k][off:off + size].reshape(shape).copy() if v is None else v)
                          for k, v in st.items()}
        full["state"] = state
        return full

    def after_load(self) -> None:
        """After the whole optimizer's state was loaded (resume), cuts this rank's slice
        into the shard optimizer and empties the whole one."""
        if not self.sharded:
            return
        full = self.optimizer.state_dict()
        if self.shard_opt is not None:
            sd = self.shard_opt.state_dict()
            state = {}
            for j, (pid, off, a, b) in enumerate(self.pieces):
                st = full["state"].get(pid)
                if st:
                    state[j] = {k: (np.ascontiguousarray(v.reshape(-1)[a - off:b - off])
                                    if isinstance(v, np.ndarray) else v) for k, v in st.items()}
            for g, gi in zip(sd["param_groups"], self.group_of, strict=True):
                g.update({k: v for k, v in full["param_groups"][gi].items() if k != "params"})
            sd["state"] = state
            self.shard_opt.load_state_dict(sd)
        full["state"] = {}
        self.optimizer.load_state_dict(full)

    # ------------------------------------------------------------------ errors
    @contextlib.contextmanager
    def guard(self):
        """Inside the training loop: an exception on this rank aborts the whole job."""
        try:
            yield
        except (LaunchMismatchError, KeyboardInterrupt):
            raise
        except BaseException as e:
            if self.size > 1 and self.options.abort_on_error:
                traceback.print_exc(file=sys.stderr)
                self.abort(f"{type(e).__name__}: {e}")
            raise


def attach(comm, model, optimizer) -> _Engine:
    """The engine fit uses for ``comm`` (a DataParallel or an mpi4py communicator)."""
    return _Engine(_as_options(comm), model, optimizer)


@contextlib.contextmanager
def thread_limits(engine: _Engine):
    """fastoptim and BLAS threads per rank for the duration of fit."""
    want = engine.options.threads
    if want is None:
        yield None
        return
    n = rank_threads(engine.comm) if want == "auto" else int(want)
    import fastoptim

    before = fastoptim.get_num_threads()
    fastoptim.set_num_threads(n)
    limiter = None
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=n, user_api="blas")
    except ImportError:
        pass
    try:
        yield n
    finally:
        if limiter is not None:
            limiter.unregister()
        fastoptim.set_num_threads(before)


def local_dask_cluster(n_workers: int | None = None, threads_per_worker: int | None = None,
                       **kwargs):
    """A ``distributed.LocalCluster`` of worker processes on loopback for scikit-learn
    searches through joblib's dask backend, sized so workers x threads <= cores (each
    worker process starts with OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=1, Dask's default, so
    every task runs its fastoptim kernels and BLAS on one thread)::

        from joblib import parallel_backend
        from distributed import Client
        with local_dask_cluster() as cluster, Client(cluster), parallel_backend("dask"):
            GridSearchCV(fastoptim.sklearn.MLPClassifier(), grid).fit(X, y)

    On a real cluster use ``Client("tcp://scheduler:8786")`` instead (docs/scale-out.md).
    """
    try:
        from distributed import LocalCluster
    except ImportError:
        raise ImportError("Dask searches need dask.distributed: pip install "
                          "'dask[distributed]'") from None
    for name, v in (("n_workers", n_workers), ("threads_per_worker", threads_per_worker)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ValueError(f"{name} must be an integer >= 1 or None, got {v!r}")
    cores = os.cpu_count() or 1
    if n_workers is None:
        n_workers = max(1, cores // (threads_per_worker or 1))
    if threads_per_worker is None:
        threads_per_worker = max(1, cores // n_workers)
    kwargs.setdefault("host", "127.0.0.1")
    kwargs.setdefault("dashboard_address", None)
    kwargs.setdefault("processes", True)
    return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, **kwargs)
