"""Hyperparameter search: space parsing, grid/random/TPE on the embedded digits set, failed
trials, outputs that `fastoptim train --config` accepts, Optuna pruning and resume."""

from __future__ import annotations

import argparse
import csv
import json
import math

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from fastoptim import cli, search  # noqa: E402
from fastoptim import train_command as tc  # noqa: E402

# Small and fast: one hidden layer of 16, a few epochs, on digits (~1,300 training rows).
FIXED = {"hidden": [16], "epochs": 3, "batch_size": 64, "seed": 0}


def test_parse_space_arg_converts_like_the_train_command():
    assert search.parse_space_arg("lr=1e-3,3e-3") == ("lr", [1e-3, 3e-3])
    assert search.parse_space_arg("hidden=64x32,none,8") == ("hidden", [[64, 32], [], [8]])
    assert search.parse_space_arg("batch-size=full,32") == ("batch_size", [None, 32])
    assert search.parse_space_arg("nesterov=true,false") == ("nesterov", [True, False])
    name, dist = search.parse_space_arg("lr=loguniform:1e-4:1e-1")
    assert name == "lr" and dist == search.Distribution("loguniform", 1e-4, 1e-1)
    for bad, match in [("lr", "NAME=VALUES"), ("bogus=1", "unknown training option"),
                       ("optimizer=adam,newton", "not one of"), ("lr=fast", "could not convert"),
                       ("lr=loguniform:0:1", "0 < low < high"), ("lr=uniform:1", "LOW:HIGH")]:
        with pytest.raises(ValueError, match=match):
            search.parse_space_arg(bad)


def test_grid_2x2_finds_the_obvious_best_and_scores_like_train():
    # lr 1e-7 cannot learn in 8 epochs; a 2-unit bottleneck cannot separate 10 classes.
    fixed = {**{k: v for k, v in FIXED.items() if k != "hidden"}, "epochs": 8}
    result = search.run_search({"lr": [1e-7, 3e-3], "hidden": [[2], [32]]}, method="grid",
                               fixed=fixed)
    assert len(result.trials) == 4 and all(t.status == "ok" for t in result.trials)
    assert result.best_params == {"lr": 3e-3, "hidden": [32]}
    scores = [t.score for t in result.trials]
    assert scores == sorted(scores, reverse=True)
    assert result.best.score > 0.9 and result.trials[-1].score < 0.5
    # The trial's score is the validation accuracy of the same `fastoptim train` run.
    options = {**tc.option_defaults(), **fixed, "lr": 3e-3, "hidden": [32]}
    history, test, _ = tc.train_and_evaluate(argparse.Namespace(**options), output=None,
                                             verbose=False)
    assert result.best.score == history.history["val_accuracy"][-1]
    assert result.best.test_accuracy == test["accuracy"]


def test_random_search_is_reproducible_and_uses_parameter_sampler():
    from scipy.stats import loguniform
    from sklearn.model_selection import ParameterSampler

    space = {"lr": "loguniform:1e-4:1e-1", "batch_size": [32, 128]}
    kw = dict(method="random", n_trials=3, fixed={"hidden": [16], "epochs": 1})
    a = search.run_search(space, seed=7, **kw)
    b = search.run_search(space, seed=7, **kw)
    c = search.run_search(space, seed=8, **kw)
    rows = lambda r: sorted((t.number, t.params["lr"], t.params["batch_size"], t.score)  # noqa: E731
                            for t in r.trials)
    assert rows(a) == rows(b)
    assert [r[1] for r in rows(a)] != [r[1] for r in rows(c)]
    expected = list(ParameterSampler({"lr": loguniform(1e-4, 1e-1), "batch_size": [32, 128]},
                                     n_iter=3, random_state=7))
    got = {t.number: t.params for t in a.trials}
    for i, params in enumerate(expected):
        assert got[i]["lr"] == pytest.approx(params["lr"], rel=1e-15)
        assert got[i]["batch_size"] == params["batch_size"]
        assert 1e-4 <= got[i]["lr"] <= 1e-1


def test_a_diverging_trial_is_recorded_as_failed():
    result = search.run_search({"lr": [1e6, 0.05]},
                               fixed={**FIXED, "optimizer": "sgd", "epochs": 2})
    by_lr = {t.params["lr"]: t for t in result.trials}
    assert by_lr[1e6].status == "failed" and "FloatingPointError" in by_lr[1e6].error
    assert math.isnan(by_lr[1e6].score)
    assert by_lr[0.05].status == "ok" and result.best is by_lr[0.05]
    assert result.trials[0] is by_lr[0.05]  # failed trials sort last


def test_bad_search_arguments_raise():
    with pytest.raises(ValueError, match="grid search needs lists"):
        search.run_search({"lr": "loguniform:1e-4:1e-1"}, method="grid")
    with pytest.raises(ValueError, match="both fixed and searched"):
        search.run_search({"lr": [1e-3]}, fixed={"lr": 1e-2})
    with pytest.raises(ValueError, match="validation_split must be > 0"):
        search.run_search({"lr": [1e-3]}, fixed={"validation_split": 0.0})
    with pytest.raises(ValueError, match="method must be"):
        search.run_search({"lr": [1e-3]}, method="bayes")


def test_repeats_give_mean_and_std_over_seeds():
    result = search.run_search({"lr": [3e-3]}, fixed=FIXED, repeats=2)
    (t,) = result.trials
    scores = []
    for seed in (0, 1):
        options = {**tc.option_defaults(), **FIXED, "lr": 3e-3, "seed": seed}
        h, _, _ = tc.train_and_evaluate(argparse.Namespace(**options), output=None,
                                        verbose=False)
        scores.append(h.history["val_accuracy"][-1])
    assert t.score == pytest.approx(np.mean(scores), abs=1e-12)
    assert t.std == pytest.approx(np.std(scores), abs=1e-12)


def test_cli_search_writes_outputs_that_train_accepts(tmp_path, capsys):
    out = tmp_path / "s"
    rc = cli.main(["search", "--grid", "lr=1e-7,3e-3", "--grid", "dropout=0,0.2",
                   "--hidden", "16", "--epochs", "2", "--output", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "| # | dropout | lr | score | std | time (s) | status |" in text
    assert "4 trials (0 pruned, 0 failed)" in text
    results = json.loads((out / "results.json").read_text())
    assert len(results["trials"]) == 4
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["score"]) for r in rows] == [t["score"] for t in results["trials"]]
    best = json.loads((out / "best.json").read_text())
    assert best["params"]["lr"] == 3e-3 and best["params"]["hidden"] == [16]
    assert best["params"]["epochs"] == 2
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not (out / "search.png").exists()
    else:
        assert (out / "search.png").stat().st_size > 1000
    run_dir = tmp_path / "t"
    assert cli.main(["train", "--config", str(out / "best.json"), "--output", str(run_dir),
                     "--quiet"]) == 0
    options = json.loads((run_dir / "metrics.json").read_text())["options"]
    assert options["lr"] == 3e-3 and options["epochs"] == 2
    assert options["dropout"] == best["params"].get("dropout", 0.0)


def test_cli_search_errors_are_one_line(capsys):
    assert cli.main(["search", "--epochs", "1"]) == 2
    assert "nothing to search" in capsys.readouterr().err
    assert cli.main(["search", "--grid", "lr=loguniform:1e-3:1e-1"]) == 2
    assert "grid search needs lists" in capsys.readouterr().err


# ---------------------------------------------------------------------------- Optuna


def test_tpe_prunes_bad_trials_from_epoch_reports(tmp_path):
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    result = search.run_search({"lr": "loguniform:1e-7:1e-1"}, method="tpe", n_trials=8,
                               fixed={**FIXED, "epochs": 4}, seed=0, storage=storage,
                               study_name="prune")
    study = optuna.load_study(study_name="prune", storage=storage)
    states = [t.state for t in study.trials]
    assert len(states) == 8
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, states
    for t in pruned:  # stopped before the last epoch, below the median of earlier trials
        assert max(t.intermediate_values) < 3
    assert sum(t.status == "pruned" for t in result.trials) == len(pruned)
    assert result.best.status == "ok" and result.best.score == study.best_value


def test_tpe_resumes_an_interrupted_study(tmp_path):
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    kw = dict(method="tpe", n_trials=4, fixed={"epochs": 2}, seed=0, storage=storage,
              study_name="resume", pruning=False)
    seen = []

    def interrupt(trial):
        seen.append(trial.number)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search.run_search({"lr": "loguniform:1e-4:1e-1", "hidden": [[8], [16]]},
                          on_trial=interrupt, **kw)
    first = optuna.load_study(study_name="resume", storage=storage).trials
    assert [t.state for t in first] == [optuna.trial.TrialState.COMPLETE,
                                        optuna.trial.TrialState.FAIL]
    result = search.run_search({"lr": "loguniform:1e-4:1e-1", "hidden": [[8], [16]]}, **kw)
    study = optuna.load_study(study_name="resume", storage=storage)
    # Trial 0 is kept, the interrupted trial 1 is not counted: 3 more make 4 finished.
    assert len(study.trials) == 5
    assert study.trials[0].params == first[0].params
    assert sorted(t.number for t in result.trials if t.status == "ok") == [0, 2, 3, 4]
    assert [t.status for t in result.trials].count("interrupted") == 1
    # A third run has nothing left to do.
    again = search.run_search({"lr": "loguniform:1e-4:1e-1", "hidden": [[8], [16]]}, **kw)
    assert len(optuna.load_study(study_name="resume", storage=storage).trials) == 5
    assert again.best.number == result.best.number


def test_two_processes_share_one_study(tmp_path):
    import subprocess
    import sys

    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    cmd = [sys.executable, "-m", "fastoptim.cli", "search", "--sampler", "tpe",
           "--random", "lr=loguniform:1e-4:1e-1", "--trials", "6", "--epochs", "2",
           "--hidden", "16", "--storage", storage, "--study-name", "shared", "--quiet"]
    procs = [subprocess.Popen([*cmd, "--output", str(tmp_path / f"out{i}")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    # 6 for the study as a whole, plus at most one that was running in the other process.
    assert 6 <= len(trials) <= 7
    numbers = [{t["number"] for t in json.loads((tmp_path / f"out{i}" / "results.json")
                                                .read_text())["trials"]} for i in range(2)]
    # a trial opened by the process that lost the race for the last slot is marked surplus
    # (FAIL, never trained) and is not reported
    trained = {t.number for t in trials if not t.user_attrs.get("surplus")}
    assert numbers[0] | numbers[1] == trained
    assert all(t.state.name == "FAIL" for t in trials if t.number not in trained)


def test_cross_validation_scores_stratified_folds_of_the_training_split():
    from fastoptim import data
    from sklearn.model_selection import StratifiedKFold

    fixed = {"hidden": [16], "epochs": 2, "batch_size": 64, "seed": 3}
    result = search.run_search({"lr": [1e-7, 3e-3]}, fixed=fixed, cv=3)
    assert result.best_params == {"lr": 3e-3} and result.best.std > 0
    # The same folds by hand, each through train_and_evaluate with its own scaling.
    ds = data.load("digits", seed=3)
    scores = []
    for tr, va in StratifiedKFold(3, shuffle=True, random_state=3).split(ds.X_train,
                                                                          ds.y_train):
        sc = data.Standardizer().fit(ds.X_train[tr])
        f = lambda a: sc.transform(a).astype(np.float32)  # noqa: E731, B023
        prepared = (f(ds.X_train[tr]), ds.y_train[tr], f(ds.X_train[va]), ds.y_train[va],
                    f(ds.X_test), ds.y_test, "digits", 10)
        args = argparse.Namespace(**{**tc.option_defaults(), **fixed, "lr": 3e-3})
        h, _, _ = tc.train_and_evaluate(args, output=None, verbose=False, prepared=prepared)
        assert len(va) == len(ds.y_train) // 3 or len(va) == len(ds.y_train) // 3 + 1
        scores.append(h.history["val_accuracy"][-1])
    assert result.best.score == pytest.approx(np.mean(scores), abs=1e-12)
    assert result.best.std == pytest.approx(np.std(scores), abs=1e-12)
    with pytest.raises(ValueError, match="cv must be >= 2"):
        search.run_search({"lr": [1e-3]}, cv=1)


def test_a_killed_search_resumes_on_its_storage(tmp_path):
    import contextlib
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    optuna = pytest.importorskip("optuna")
    db = tmp_path / "killed.db"
    storage = f"sqlite:///{db}"
    cmd = [sys.executable, "-m", "fastoptim.cli", "search", "--sampler", "tpe",
           "--random", "lr=loguniform:1e-3:1e-2", "--trials", "3", "--epochs", "40",
           "--hidden", "64", "--no-pruning", "--storage", storage, "--study-name", "k",
           "--quiet", "--output", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = optuna.trial.TrialState
    deadline = time.monotonic() + 120

    def study_created():
        # Read the file with sqlite3 alone until the search has made its study: opening the
        # storage through optuna while the other process is still creating its schema races
        # on optuna's schema-version row (a UNIQUE constraint failure in whichever loses).
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
                return con.execute("SELECT 1 FROM studies WHERE study_name = 'k'").fetchone()
        except sqlite3.Error:
            return None

    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if not study_created():
                time.sleep(0.02)
                continue
            states = [t.state for t in optuna.load_study(study_name="k",
                                                          storage=storage).trials]
            if state.COMPLETE in states and states[-1] == state.RUNNING:
                proc.send_signal(signal.SIGKILL)  # mid-trial: that trial stays RUNNING
                break
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    before = optuna.load_study(study_name="k", storage=storage).trials
    if proc.returncode == 0 or before[-1].state != state.RUNNING:
        pytest.skip("the search finished before it could be killed mid-trial")
    done_before = sum(t.state == state.COMPLETE for t in before)
    assert cli.main([*cmd[3:]]) == 0
    after = optuna.load_study(study_name="k", storage=storage).trials
    assert sum(t.state == state.COMPLETE for t in after) == 3
    assert len(after) == len(before) + 3 - done_before  # only the missing trials ran
    assert [t.params for t in after[:done_before]] == [t.params for t in before[:done_before]]
    listed = json.loads((tmp_path / "out" / "results.json").read_text())["trials"]
    assert len(listed) == 3 and all(t["status"] == "ok" for t in listed)


def test_full_batch_shows_as_full_and_batch_sizes_sort_by_value(tmp_path):
    trials = [search.Trial(0, {"batch_size": None, "lr": None}, score=0.5),
              search.Trial(1, {"batch_size": 128, "lr": 1e-3}, score=0.7),
              search.Trial(2, {"batch_size": 32, "lr": 1e-3}, score=0.6)]
    result = search.SearchResult(trials)
    table = result.table()
    assert "| full |" in table and "None" not in table and "| default |" in table
    assert sorted([None, 128, 32], key=search._category_key) == [32, 128, None]
    assert sorted([[128], [64, 32], [64]], key=search._category_key) == [[64], [64, 32], [128]]
    pytest.importorskip("matplotlib")
    written = result.save(tmp_path)
    assert "search.png" in written and result.plot_notice is None


def test_search_says_why_it_wrote_no_plot(tmp_path, capsys, monkeypatch):
    failed = search.SearchResult([search.Trial(0, {"lr": 1.0}, status="failed", error="x")])
    assert "search.png" not in failed.save(tmp_path)
    assert failed.plot_notice == "no successful trial to plot"
    # The command line prints the reason next to the files it wrote.
    monkeypatch.setattr(search, "save_plot", lambda result, path: "matplotlib is not installed")
    assert cli.main(["search", "--grid", "lr=3e-3", "--hidden", "8", "--epochs", "1",
                     "--quiet", "--output", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "(no search.png: matplotlib is not installed)" in out
