"""`fastoptim search` workers sharing one Optuna study: on a real PostgreSQL server (with
heartbeats reaping a killed worker's trial) and on a journal file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("sklearn")

sys.path.insert(0, str(Path(__file__).parent))
import pgserver  # noqa: E402
from fastoptim import storage as shared  # noqa: E402

# Multi-process runs (MPI, servers, process groups): the full CI pass runs them; the
# per-SIMD-target passes skip them (their kernels are covered per target elsewhere).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pg_url():
    reason = pgserver.missing_reason()
    if reason:
        pytest.skip(reason)
    server = pgserver.Server()
    try:
        yield server.start()
    finally:
        server.stop()


def worker(storage, study, out, trials, epochs, extra=()):
    cmd = [sys.executable, "-m", "fastoptim.cli", "search", "--sampler", "tpe",
           "--random", "lr=loguniform:1e-3:3e-2", "--random", "hidden=16,32",
           "--trials", str(trials), "--epochs", str(epochs), "--batch-size", "64",
           "--no-pruning", "--storage", storage, "--study-name", study,
           "--output", str(out), "--quiet", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1",
                                 "OPENBLAS_NUM_THREADS": "1"})


def finish(p, timeout=240):
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, out + err
    return out


def load(storage, study):
    return optuna.load_study(study_name=study, storage=shared.open_storage(storage))


def check_study(st, n):
    """The trials that trained: exactly n COMPLETE, nothing left RUNNING or WAITING. A worker
    that raced another for the last slot may have opened a trial it did not train (FAIL,
    marked surplus, no epochs)."""
    every = st.get_trials(deepcopy=False)
    states = [t.state.name for t in every]
    assert "RUNNING" not in states and "WAITING" not in states, states
    surplus = [t for t in every if t.user_attrs.get("surplus")]
    assert all(t.state.name == "FAIL" and "epochs" not in t.user_attrs for t in surplus)
    trials = [t for t in every if not t.user_attrs.get("surplus")]
    assert [t.state.name for t in trials].count("COMPLETE") == n, states  # the cap holds
    return trials


def test_two_workers_share_a_postgresql_study(pg_url, tmp_path):
    study = f"s-{uuid.uuid4().hex[:8]}"
    ps = [worker(pg_url, study, tmp_path / f"w{i}", 8, 8) for i in range(2)]
    for p in ps:
        finish(p)
    trials = check_study(load(pg_url, study), 8)
    assert len(trials) == 8  # each trial ran once
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, workers  # both processes took trials
    for i in range(2):  # each worker reports the whole study
        assert len(json.loads((tmp_path / f"w{i}" / "results.json").read_text())["trials"]) == 8


def kill_mid_trial_and_check_retry(storage, study, tmp_path):
    hb = ["--heartbeat", "1"]
    a = worker(storage, study, tmp_path / "a", 5, 60, hb)
    b = worker(storage, study, tmp_path / "b", 5, 60, hb)
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:  # wait for b to be mid-trial
        time.sleep(0.2)
        try:
            st = load(storage, study)
        except KeyError:  # the study is not created yet
            continue
        for t in st.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            # mid-training: its parameters are drawn (a trial killed before that is retried
            # with fresh ones)
            if t.user_attrs.get("worker", "").endswith(f":{b.pid}") and len(t.params) == 2:
                victim = t.number
    assert victim is not None, "worker b never ran a trial"
    b.kill()  # SIGKILL: no chance to mark its trial
    b.communicate()
    finish(a)
    st = load(storage, study)
    trials = check_study(st, 5)
    by_number = {t.number: t for t in trials}
    assert by_number[victim].state.name == "FAIL"
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert retries[0].params == by_number[victim].params
    assert retries[0].user_attrs["worker"].endswith(f":{a.pid}")


def test_killed_worker_trial_is_failed_and_retried(pg_url, tmp_path):
    kill_mid_trial_and_check_retry(pg_url, f"k-{uuid.uuid4().hex[:8]}", tmp_path)


def test_killed_worker_trial_is_retried_on_a_journal_file(tmp_path):
    # the journal's heartbeat is fastoptim's; the pid check (TrialCap) is off with it, so
    # only the heartbeat can reap the victim's trial here
    kill_mid_trial_and_check_retry(f"journal:///{tmp_path}/search.log".replace("////", "///"),
                                   "journal-kill", tmp_path)


def test_journal_heartbeat_marks_only_silent_trials_stale(tmp_path):
    import warnings

    from fastoptim import _journal

    storage = shared.open_storage(f"journal:///{tmp_path}/hb.log".replace("////", "///"),
                                  heartbeat_interval=2)
    assert storage.get_heartbeat_interval() == 2 and storage.grace_period == 4
    st = optuna.create_study(storage=storage, study_name="hb")
    with warnings.catch_warnings():  # "Heartbeat ... supposed to be used with Study.optimize"
        warnings.filterwarnings("ignore", "Heartbeat of storage")
        alive, silent, done = st.ask(), st.ask(), st.ask()
    st.tell(done, 1.0)
    now = time.time()
    storage.set_trial_system_attr(alive._trial_id, _journal.HEARTBEAT_KEY, now - 1)
    storage.set_trial_system_attr(silent._trial_id, _journal.HEARTBEAT_KEY, now - 5)
    assert storage._get_stale_trial_ids(st._study_id) == [silent._trial_id]
    storage.record_heartbeat(silent._trial_id)  # a beat revives it
    assert storage._get_stale_trial_ids(st._study_id) == []
    storage.record_heartbeat(done._trial_id)  # a finished trial's late beat is ignored
    with pytest.raises(ValueError, match="heartbeat_interval"):
        shared.open_storage(f"journal:///{tmp_path}/x.log".replace("////", "///"),
                            heartbeat_interval=0)


def test_two_workers_share_a_journal_file(tmp_path):
    storage = f"journal:///{tmp_path}/search.log".replace("////", "///")
    study = "journal"
    ps = [worker(storage, study, tmp_path / f"w{i}", 6, 4) for i in range(2)]
    for p in ps:
        finish(p)
    trials = check_study(load(storage, study), 6)
    assert len(trials) == 6


def test_bad_storage_url_is_refused():
    with pytest.raises(ValueError, match="--storage 'redis://x'"):
        shared.open_storage("redis://x")
    with pytest.raises(ValueError, match="journal:///"):
        shared.open_storage("journal://")


def test_unreachable_database_is_a_clear_error_without_the_password():
    pytest.importorskip("psycopg2")
    with pytest.raises(ConnectionError) as e:
        shared.open_storage("postgresql://user:s3cret@127.0.0.1:1/none")
    assert "postgresql://user:***@127.0.0.1:1/none" in str(e.value)
    assert "s3cret" not in str(e.value)


def test_trial_cap_counts_finished_and_running_trials():
    study = optuna.create_study()
    for v in (0.1, 0.2, 0.3):
        study.add_trial(optuna.trial.create_trial(value=v, params={}, distributions={}))
    counts = lambda t: t.state == optuna.trial.TrialState.COMPLETE  # noqa: E731
    running = study.ask()  # number 3, RUNNING in this live process
    later = study.ask()  # number 4
    assert shared.TrialCap(4, counts).reached(study)
    assert not shared.TrialCap(6, counts).reached(study)
    assert not shared.TrialCap(4, counts).surplus(study, running.number)
    assert shared.TrialCap(4, counts).surplus(study, later.number)  # 3 done + 1 running before
    # a trial left RUNNING by a process of this host that is gone does not count
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    import socket

    running.set_user_attr("worker", f"{socket.gethostname()}:{dead}")
    assert not shared.TrialCap(4, counts).surplus(study, later.number)
