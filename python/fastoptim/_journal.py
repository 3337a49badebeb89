"""A journal-file Optuna storage with heartbeats (Optuna's own JournalStorage has none).

Each worker running a trial appends its wall-clock time to the trial's system attribute
``fastoptim:heartbeat`` every ``heartbeat_interval`` seconds (Optuna's heartbeat thread
calls :meth:`record_heartbeat`). A RUNNING trial whose latest heartbeat (or, before the
first, its start) is older than ``grace_period`` seconds is stale: Optuna's
``fail_stale_trials`` marks it FAIL and the stale-trial callback queues its retry, exactly as
on an RDB storage. The clocks of the workers' hosts are compared, so on several machines
they must agree (NTP) to well within the grace period.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages._heartbeat import BaseHeartbeat

HEARTBEAT_KEY = "fastoptim:heartbeat"


class HeartbeatJournalStorage(optuna.storages.JournalStorage, BaseHeartbeat):
    def __init__(self, backend: Any, *, heartbeat_interval: int,
                 grace_period: int | None = None,
                 heartbeat_stale_trial_callback: Callable[..., None] | None = None) -> None:
        if heartbeat_interval < 1:
            raise ValueError(f"heartbeat_interval must be >= 1 second, got {heartbeat_interval}")
        if grace_period is not None and grace_period < 1:
            raise ValueError(f"grace_period must be >= 1 second, got {grace_period}")
        super().__init__(backend)
        self.heartbeat_interval = int(heartbeat_interval)
        self.grace_period = int(grace_period or 2 * heartbeat_interval)
        self.heartbeat_stale_trial_callback = heartbeat_stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # finished between two beats

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False,
                                     states=(optuna.trial.TrialState.RUNNING,)):
            last = t.system_attrs.get(HEARTBEAT_KEY)
            if last is None:
                last = t.datetime_start.timestamp() if t.datetime_start else now
            if now - float(last) > self.grace_period:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[..., None] | None:
        return self.heartbeat_stale_trial_callback
