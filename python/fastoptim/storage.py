"""Optuna storages that several search workers share: PostgreSQL (or any RDB), journal files.

``fastoptim search --storage URL`` takes

- ``postgresql://user:password@host:5432/db`` (also ``postgresql+psycopg2://``, ``mysql://``,
  ``sqlite:///file.db``): Optuna's RDBStorage. Every worker sends a heartbeat every
  ``heartbeat_interval`` seconds while it runs a trial; a trial whose heartbeat is older than
  ``grace_period`` (default twice the interval) belongs to a dead worker: the next worker to
  look marks it FAIL and queues a copy of it (RetryHeartbeatStaleTrialCallback), so a killed
  worker's trial is retried, not left RUNNING.
- ``journal:///path/to/search.log`` (``journal://`` then a path): JournalStorage on an
  append-only file for a shared filesystem without a database server (NFS: the
  ``journal+openlock://`` form uses an open(O_EXCL) lock instead of a symlink lock). Optuna
  5's JournalStorage has no heartbeat; fastoptim's subclass adds one
  (``fastoptim._journal``): the same interval, grace period and retry as on a database, with
  the heartbeat stored as a trial attribute in the journal. The workers' clocks are
  compared, so on several hosts they must agree (NTP) to well within the grace period.

A study on these storages caps its trials with :class:`TrialCap` across all workers and each
worker, before returning, waits for the others' trials (reaping and rerunning those of dead
workers) with :func:`drain`.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["TrialCap", "drain", "open_storage"]

_RDB = ("postgresql", "postgres", "mysql", "sqlite", "oracle", "mssql")


def open_storage(url: str | None, *, heartbeat_interval: int = 10,
                 grace_period: int | None = None, max_retry: int = 2) -> Any:
    """The Optuna storage for ``url`` (None: in memory). ValueError naming ``--storage`` for
    a URL of another form."""
    if url is None:
        return None
    if not isinstance(url, str):
        return url  # already a storage object
    import optuna

    given = url
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("journal", "journal+openlock"):
        from optuna.storages.journal import (
            JournalFileBackend,
            JournalFileOpenLock,
            JournalFileSymlinkLock,
        )

        path = url.split("://", 1)[1]
        if not path:
            raise ValueError(f"--storage {url!r}: give a file, e.g. journal:///shared/search.log")
        if heartbeat_interval < 1:
            raise ValueError(f"heartbeat_interval must be >= 1 second, got {heartbeat_interval}")
        from fastoptim._journal import HeartbeatJournalStorage

        lock = (JournalFileOpenLock if scheme == "journal+openlock" else JournalFileSymlinkLock)
        return HeartbeatJournalStorage(
            JournalFileBackend(path, lock_obj=lock(path)),
            heartbeat_interval=int(heartbeat_interval), grace_period=grace_period,
            heartbeat_stale_trial_callback=_retry(max_retry))
    if scheme in ("postgresql", "postgres"):
        url = "postgresql+" + _postgres_driver() + "://" + url.split("://", 1)[1]
    if scheme.split("+", 1)[0] in _RDB:
        if heartbeat_interval < 1:
            raise ValueError(f"heartbeat_interval must be >= 1 second, got {heartbeat_interval}")
        import sqlalchemy.exc

        kwargs = {"pool_pre_ping": True} if not scheme.startswith("sqlite") else {}
        for attempt in range(6):
            try:
                with warnings.catch_warnings():  # heartbeats: "experimental" in Optuna 5
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(
                        url, engine_kwargs=kwargs, heartbeat_interval=int(heartbeat_interval),
                        grace_period=grace_period,
                        heartbeat_stale_trial_callback=_retry(max_retry))
            except sqlalchemy.exc.SQLAlchemyError as e:
                # workers starting together on an empty database race to create its tables
                if attempt == 5:
                    first = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
                    shown = sqlalchemy.engine.make_url(given).render_as_string(
                        hide_password=True)
                    raise ConnectionError(f"--storage {shown!r}: {first}") from None
                time.sleep(0.3 * (attempt + 1))
    raise ValueError(f"--storage {url!r}: expected postgresql://user:pass@host/db, "
                     f"sqlite:///file.db, mysql://..., or journal:///path/to/file.log")


def _retry(max_retry: int) -> Any:
    """Optuna's callback that queues a copy of a stale trial (at most ``max_retry`` times)."""
    import optuna

    with warnings.catch_warnings():  # "experimental" in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)


def _postgres_driver() -> str:
    """psycopg (3) when installed, else psycopg2 (SQLAlchemy 2.1 defaults to psycopg)."""
    import importlib.util

    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return driver
    raise ImportError("a postgresql:// storage needs a driver: pip install psycopg2-binary "
                      "(or 'psycopg[binary]')")


def _may_be_alive(trial) -> bool:
    """False only for a trial whose worker ran on this host and has exited."""
    host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _has_heartbeat(storage) -> bool:
    interval = getattr(storage, "get_heartbeat_interval", None)
    return bool(interval and interval() is not None)


class TrialCap:
    """Stops the worker once the study holds ``n_trials`` trials that are finished
    (``counts(trial)``) or running elsewhere, and no queued retry is waiting. On storages
    with heartbeats (``storage``) every running trial counts (a dead worker's is reaped and
    retried); elsewhere a running trial counts unless its worker (the ``worker`` user
    attribute, host:pid) is a process of this host that is gone, as nothing would reap it."""

    def __init__(self, n_trials: int, counts: Callable[[Any], bool], storage=None):
        self.n_trials, self.counts = n_trials, counts
        self.heartbeat = _has_heartbeat(storage)

    def reached(self, study) -> bool:
        import optuna

        state = optuna.trial.TrialState
        trials = study.get_trials(deepcopy=False)
        if any(t.state == state.WAITING for t in trials):
            return False
        return sum((t.state == state.RUNNING and (self.heartbeat or _may_be_alive(t)))
                   or self.counts(t) for t in trials) >= self.n_trials

    def surplus(self, study, number: int) -> bool:
        """Whether trial ``number`` is beyond the cap: ``n_trials`` trials numbered before it
        are finished or running. Workers that checked the cap at the same moment each start
        a trial; the later-numbered ones see themselves as surplus and do not train."""
        import optuna

        running = optuna.trial.TrialState.RUNNING
        before = sum(1 for t in study.get_trials(deepcopy=False) if t.number < number and (
            self.counts(t) or (t.state == running and (self.heartbeat or _may_be_alive(t)))))
        return before >= self.n_trials

    def __call__(self, study, trial) -> None:
        if self.reached(study):
            study.stop()


def drain(study, storage, run_more: Callable[[int], None], *,
          poll: float | None = None) -> None:
    """Waits until no trial of the study is RUNNING: reaps the trials of dead workers
    (heartbeat older than the grace period) and runs the retries they queue through
    ``run_more(k)``. Returns at once on storages without heartbeats (nothing would reap a
    dead worker's trial there)."""
    import optuna

    if not _has_heartbeat(storage):
        return
    poll = float(poll or storage.get_heartbeat_interval())
    state = optuna.trial.TrialState
    while True:
        with warnings.catch_warnings():  # "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False, states=(state.RUNNING, state.WAITING))
        waiting = sum(t.state == state.WAITING for t in trials)
        if waiting:
            run_more(waiting)
            continue
        if not trials:
            return
        time.sleep(poll)
