"""Hyperparameter search over `fastoptim train`'s options: grid, random and (with Optuna) TPE.

Every trial runs `train_command.train_and_evaluate`, the exact code path of
`fastoptim train`, and is scored by its validation accuracy (the held-out
``validation_split`` share of the training data; the test split is reported, never used
to choose). Candidates come from scikit-learn's ``ParameterGrid`` / ``ParameterSampler``
or from an Optuna study. A trial whose loss turns NaN, or whose options are invalid, is
recorded as ``failed`` and the search goes on.

    from fastoptim import search
    result = search.run_search({"lr": "loguniform:1e-4:1e-1", "hidden": [[64], [128]]},
                               method="random", n_trials=8, fixed={"epochs": 10}, seed=0)
    print(result.table())
    result.best_params   # {"lr": ..., "hidden": [...]}

A space maps an option name (``lr``, ``batch_size``, ``weight_decay``, ``dropout``,
``schedule``, ``optimizer``, ``hidden``, ... any `fastoptim train` option) to a list of
values or a distribution string: ``loguniform:LOW:HIGH``, ``uniform:LOW:HIGH`` or
``int:LOW:HIGH`` (inclusive). Random search also takes any scipy.stats distribution.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastoptim import train_command as tc
from fastoptim.config import (
    ACTIVATIONS,
    DTYPES,
    OPTIMIZERS,
    SCHEDULES,
    ConfigError,
    TrainConfig,
    check_option,
)
from fastoptim.storage import open_storage

__all__ = ["Distribution", "SearchResult", "Trial", "parse_space_arg", "run_search"]

METHODS = ("grid", "random", "tpe")
# Options that name files or the run itself: never searched, never written to best.json.
_NOT_OPTIONS = ("config", "output", "func", "command", "quiet", "resume")
_CHOICES_OF = {"activation": ACTIVATIONS, "dtype": DTYPES, "optimizer": OPTIMIZERS,
               "schedule": SCHEDULES}


@dataclass(frozen=True)
class Distribution:
    """A continuous or integer range: kind is 'loguniform', 'uniform' or 'int'
    (``high`` inclusive for 'int')."""

    kind: str
    low: float
    high: float

    def __post_init__(self):
        if self.kind not in ("loguniform", "uniform", "int"):
            raise ValueError(f"unknown distribution {self.kind!r}: use loguniform, uniform "
                             f"or int")
        if not self.low < self.high or (self.kind == "loguniform" and self.low <= 0):
            raise ValueError(f"{self.kind}:{self.low}:{self.high}: need 0 < low < high for "
                             f"loguniform, low < high otherwise")

    def scipy(self):
        """The scipy.stats distribution ParameterSampler draws from."""
        from scipy import stats

        if self.kind == "loguniform":
            return stats.loguniform(self.low, self.high)
        if self.kind == "uniform":
            return stats.uniform(self.low, self.high - self.low)
        return stats.randint(int(self.low), int(self.high) + 1)

    def suggest(self, trial, name: str):
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high))
        return trial.suggest_float(name, self.low, self.high, log=self.kind == "loguniform")


# ---------------------------------------------------------------------------- values


_INT_OPTIONS = ("epochs", "early_stopping", "threads", "seed")
_TEXT_OPTIONS = ("dataset", "activation", "dtype", "optimizer", "schedule")


def _option_names() -> tuple[str, ...]:
    return tuple(n for n in TrainConfig.field_names() if n not in _NOT_OPTIONS)


def _convert(name: str, text: str):
    """One value written on the command line, converted and checked as `fastoptim train`
    would (ValueError naming the option otherwise)."""
    try:
        if name == "hidden":  # layers joined by 'x' ("64x32"); "none" is linear
            value: Any = [] if text.lower() in ("none", "") else [int(t) for t in text.split("x")]
        elif name == "nesterov":
            if text.lower() not in ("true", "1", "yes", "false", "0", "no"):
                raise ValueError(f"expected true/false, got {text!r}")
            value = text.lower() in ("true", "1", "yes")
        elif name == "batch_size":
            value = None if text == "full" else int(text)
        elif name in _INT_OPTIONS:
            value = int(text)
        elif name in _TEXT_OPTIONS:
            value = text
        else:
            value = float(text)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    return _check(name, value)


def _check(name: str, value):
    try:
        return check_option(name, value)
    except ConfigError as e:
        if e.field in _CHOICES_OF:
            raise ValueError(f"{name}: {value!r} is not one of "
                             f"{', '.join(_CHOICES_OF[e.field])}") from None
        raise ValueError(str(e)) from None


def _canonical(name: str) -> str:
    return name.replace("-", "_")


def parse_space_arg(text: str) -> tuple[str, list | Distribution]:
    """``NAME=V1,V2,...`` or ``NAME=loguniform:LOW:HIGH`` (also uniform, int) -> (name, values)."""
    if "=" not in text:
        raise ValueError(f"{text!r}: expected NAME=VALUES, e.g. lr=1e-3,3e-3 or "
                         f"lr=loguniform:1e-4:1e-1")
    name, _, spec = text.partition("=")
    return _canonical(name.strip()), _parse_values(_canonical(name.strip()), spec.strip())


def _parse_values(name: str, spec: str) -> list | Distribution:
    if name not in _option_names():
        raise ValueError(f"unknown training option {name!r}")
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("loguniform", "uniform", "int"):
        low, sep2, high = rest.partition(":")
        if not sep2:
            raise ValueError(f"{name}: expected {kind}:LOW:HIGH, got {spec!r}")
        return Distribution(kind, float(low), float(high))
    values = [_convert(name, v.strip()) for v in spec.split(",")]
    if not values:
        raise ValueError(f"{name}: no values")
    return values


def normalize_space(space: Mapping[str, Any]) -> dict[str, Any]:
    """Validates names and converts strings: lists stay lists, 'kind:low:high' becomes a
    Distribution, scipy distributions pass through (random search only)."""
    names = _option_names()
    out: dict[str, Any] = {}
    for raw, value in space.items():
        name = _canonical(raw)
        if name not in names:
            raise ValueError(f"unknown training option {raw!r}")
        if isinstance(value, str):
            value = _parse_values(name, value)
        elif isinstance(value, (list, tuple)):
            value = [_convert(name, v) if isinstance(v, str) else _check(name, v)
                     for v in value]
            if not value:
                raise ValueError(f"{raw}: no values")
        elif not (isinstance(value, Distribution) or hasattr(value, "rvs")):
            raise ValueError(f"{raw}: expected a list of values or a distribution, got "
                             f"{value!r}")
        out[name] = value
    if not out:
        raise ValueError("the search space is empty")
    return out


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------------------- trials


@dataclass
class Trial:
    """One configuration and what training it gave. ``score`` is the mean validation
    accuracy over repeats (NaN unless ok); status: ok, failed, pruned, or (Optuna studies)
    interrupted: stopped by Ctrl-C or a killed process, not counted as finished."""

    number: int
    params: dict[str, Any]
    score: float = math.nan
    std: float = math.nan
    seconds: float = 0.0
    status: str = "ok"
    epochs: int = 0
    test_accuracy: float = math.nan
    error: str = ""

    def row(self) -> dict[str, Any]:
        return {"number": self.number, "params": {k: _jsonable(v) for k, v in self.params.items()},
                "score": _nan_to_none(self.score), "std": _nan_to_none(self.std),
                "seconds": round(self.seconds, 3), "status": self.status, "epochs": self.epochs,
                "test_accuracy": _nan_to_none(self.test_accuracy), "error": self.error}


def _nan_to_none(x: float):
    return None if x is None or math.isnan(x) else float(x)


def _sort_key(t: Trial):
    return (t.status != "ok", -t.score if t.status == "ok" else 0.0, t.number)


@dataclass
class SearchResult:
    """All trials (sorted best first), the fixed options and the search's wall time."""

    trials: list[Trial]
    fixed: dict[str, Any] = field(default_factory=dict)
    method: str = "grid"
    seconds: float = 0.0
    plot_notice: str | None = None  # why save() wrote no search.png (None: it did)

    @property
    def best(self) -> Trial:
        ok = [t for t in self.trials if t.status == "ok"]
        if not ok:
            raise RuntimeError("no trial succeeded: " + "; ".join(
                f"#{t.number} {t.status} {t.error}" for t in self.trials))
        return ok[0]

    @property
    def best_params(self) -> dict[str, Any]:
        return dict(self.best.params)

    def best_config(self) -> dict[str, Any]:
        """{"params": {...}} for `fastoptim train --config`: the fixed options that differ
        from the defaults plus the best trial's parameters."""
        defaults = tc.option_defaults()
        params = {k: v for k, v in self.fixed.items()
                  if k in defaults and k not in _NOT_OPTIONS and v != defaults[k]}
        params.update(self.best.params)
        best = self.best
        return {"params": {k: _jsonable(v) for k, v in params.items()},
                "score": best.score, "metric": "val_accuracy", "method": self.method}

    def table(self) -> str:
        """The results as a Markdown table, best first."""
        names = sorted({k for t in self.trials for k in t.params})
        head = ["#", *names, "score", "std", "time (s)", "status"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for t in self.trials:
            cells = [str(t.number), *(_fmt(t.params.get(n), n) for n in names),
                     "-" if math.isnan(t.score) else f"{t.score:.4f}",
                     "-" if math.isnan(t.std) else f"{t.std:.4f}",
                     f"{t.seconds:.2f}", t.status + (f" ({t.error})" if t.error else "")]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def save(self, folder: str | Path) -> list[str]:
        """Writes results.csv, results.json, best.json and (with matplotlib) search.png;
        returns the names written."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        rows = [t.row() for t in self.trials]
        (folder / "results.json").write_text(json.dumps(
            {"method": self.method, "seconds": self.seconds, "metric": "val_accuracy",
             "fixed": {k: _jsonable(v) for k, v in self.fixed.items()}, "trials": rows},
            indent=1))
        names = sorted({k for t in self.trials for k in t.params})
        with open(folder / "results.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["number", *names, "score", "std", "seconds", "status", "epochs",
                        "test_accuracy", "error"])
            for t, r in zip(self.trials, rows, strict=True):
                w.writerow([t.number, *(json.dumps(r["params"].get(n)) for n in names),
                            r["score"], r["std"], r["seconds"], t.status, t.epochs,
                            r["test_accuracy"], t.error])
        written = ["results.csv", "results.json"]
        if any(t.status == "ok" for t in self.trials):
            (folder / "best.json").write_text(json.dumps(self.best_config(), indent=1))
            written.append("best.json")
        self.plot_notice = save_plot(self, folder / "search.png")
        if self.plot_notice is None:
            written.append("search.png")
        return written


def _fmt(v, name: str | None = None) -> str:
    if v is None:  # batch_size None is full-batch; lr None is the optimizer's default
        return "full" if name == "batch_size" else "default"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "x".join(map(str, v)) or "none"
    return str(v)


def _score(history, early_stopping: bool) -> float:
    """Validation accuracy of the weights training ended with: the last epoch's, or with
    early stopping the epoch of the best val_loss (whose weights are restored)."""
    h = history.history
    if not h.get("val_accuracy"):
        raise tc.CommandError("search needs validation data: validation_split > 0")
    if early_stopping and len(h.get("val_loss", ())) == len(h["val_accuracy"]):
        return float(h["val_accuracy"][int(np.argmin(h["val_loss"]))])
    return float(h["val_accuracy"][-1])


def _trial_args(fixed: Mapping[str, Any], params: Mapping[str, Any],
                seed_offset: int) -> TrainConfig:
    """The trial's TrainConfig (ConfigError, a ValueError, for an invalid combination)."""
    options = {**fixed, **params}
    options["seed"] = int(options.get("seed", 0)) + seed_offset
    return TrainConfig(**options)


class _Folds:
    """k stratified folds (scikit-learn's StratifiedKFold, shuffled with the trial's seed) of
    a data set's training split, each standardised with its own training part's statistics
    and shaped like prepare_data's result; built once per (dataset, seed, dtype)."""

    def __init__(self, k: int):
        self.k, self.cache = k, {}  # type: int, dict

    def __call__(self, args: TrainConfig) -> list[tuple]:
        key = (args.dataset, args.seed, args.dtype)
        if key not in self.cache:
            from sklearn.model_selection import StratifiedKFold

            from fastoptim import data

            try:
                ds = data.load(args.dataset, seed=args.seed)
            except (FileNotFoundError, ValueError) as e:
                raise tc.CommandError(str(e)) from None
            dtype = args.np_dtype
            folds = []
            splitter = StratifiedKFold(self.k, shuffle=True, random_state=args.seed)
            for tr, va in splitter.split(ds.X_train, ds.y_train):
                scaler = data.Standardizer().fit(ds.X_train[tr])
                Xtr, Xva, Xte = (scaler.transform(a).astype(dtype, copy=False)
                                 for a in (ds.X_train[tr], ds.X_train[va], ds.X_test))
                folds.append((Xtr, ds.y_train[tr], Xva, ds.y_train[va], Xte, ds.y_test,
                              ds.name, ds.n_classes))
            self.cache[key] = folds
        return self.cache[key]


def _run_trial(number: int, params: dict[str, Any], fixed: Mapping[str, Any], repeats: int,
               report: Callable[[int, dict], None] | None = None,
               pruned: tuple[type[BaseException], ...] = (),
               folds: _Folds | None = None) -> Trial:
    """Trains ``repeats`` times (seeds seed, seed+1, ...: each a different validation split,
    initialisation and shuffling), or once per cross-validation fold, and records the
    mean/std validation accuracy."""
    trial = Trial(number, dict(params))
    scores, tests = [], []
    t0 = time.perf_counter()
    try:
        for r in range(repeats if folds is None else folds.k):
            args = _trial_args(fixed, params, r if folds is None else 0)
            prepared = None if folds is None else folds(args)[r]
            # A diverging trial overflows before its loss turns NaN: it ends as a
            # FloatingPointError from fit's NaN check, without a screen of numpy warnings.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                history, result, _ = tc.train_and_evaluate(
                    args, output=None, verbose=False, report=report if r == 0 else None,
                    prepared=prepared)
            trial.epochs = len(history.epochs)
            scores.append(_score(history, bool(args.early_stopping)))
            tests.append(result["accuracy"])
    except pruned:
        trial.status = "pruned"
        trial.seconds = time.perf_counter() - t0
        raise
    except (FloatingPointError, tc.CommandError, ValueError) as e:
        trial.status, trial.error = "failed", f"{type(e).__name__}: {e}"
    trial.seconds = time.perf_counter() - t0
    if trial.status == "ok":
        trial.score, trial.std = float(np.mean(scores)), float(np.std(scores))
        trial.test_accuracy = float(np.mean(tests))
    return trial


# ---------------------------------------------------------------------------- drivers


def _candidates(space: dict[str, Any], method: str, n_trials: int | None, seed: int):
    from sklearn.model_selection import ParameterGrid, ParameterSampler

    if method == "grid":
        bad = [k for k, v in space.items() if not isinstance(v, list)]
        if bad:
            raise ValueError(f"grid search needs lists of values; {', '.join(bad)} "
                             f"{'is a' if len(bad) == 1 else 'are'} distribution(s): use "
                             f"random or tpe")
        grid = list(ParameterGrid(space))
        return grid if n_trials is None else grid[:n_trials]
    dists = {k: (v.scipy() if isinstance(v, Distribution) else v) for k, v in space.items()}
    return list(ParameterSampler(dists, n_iter=n_trials or 10, random_state=seed))


def run_search(space: Mapping[str, Any], *, method: str = "grid", n_trials: int | None = None,
               fixed: Mapping[str, Any] | None = None, seed: int = 0, repeats: int = 1,
               cv: int | None = None, storage: str | None = None, study_name: str | None = None,
               pruning: bool = True, output: str | Path | None = None,
               on_trial: Callable[[Trial], None] | None = None) -> SearchResult:
    """Searches ``space`` (see the module docstring) and returns the trials, best first.

    Args:
        method: 'grid' (sklearn ParameterGrid: every combination), 'random' (sklearn
            ParameterSampler, ``n_trials`` draws, default 10) or 'tpe' (Optuna's TPE sampler
            with median pruning on per-epoch validation accuracy; needs optuna).
        fixed: other training options (as `fastoptim train` names them, e.g. epochs,
            dataset, validation_split, seed).
        seed: seeds the sampler (random, tpe); trials train with ``fixed['seed']``.
        repeats: trainings per trial on seeds seed, seed+1, ... (other validation split,
            initialisation and shuffling); the score is their mean, with its std.
        cv: k-fold cross-validation instead of the held-out split: scikit-learn's
            StratifiedKFold (shuffled by the training seed) over the data set's training
            split; the score is the mean over the folds, with its std.
        storage, study_name: tpe only: an Optuna storage URL (``sqlite:///search.db``)
            shared by several processes; rerunning on it resumes the study up to
            ``n_trials`` finished trials.
        output: folder for results.csv/json, best.json and search.png.
        on_trial: called with each finished Trial.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if cv is not None and (cv < 2 or repeats != 1):
        raise ValueError(f"cv must be >= 2 and used with repeats=1, got cv={cv}, "
                         f"repeats={repeats}")
    if n_trials is not None and n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    space = normalize_space(space)
    fixed = {_canonical(k): v for k, v in (fixed or {}).items()}
    unknown = set(fixed) - set(_option_names())
    if unknown:
        raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    fixed = {k: _check(k, v) for k, v in fixed.items()}
    overlap = set(fixed) & set(space)
    if overlap:
        raise ValueError(f"option(s) both fixed and searched: {', '.join(sorted(overlap))}")
    if cv is None and float(fixed.get("validation_split",
                                      tc.option_defaults()["validation_split"])) <= 0:
        raise ValueError("search scores on validation data: validation_split must be > 0")
    folds = None if cv is None else _Folds(int(cv))
    t0 = time.perf_counter()
    if method == "tpe":
        trials = _run_optuna(space, n_trials or 10, fixed, seed, repeats, storage, study_name,
                             pruning, on_trial, folds)
    else:
        if storage is not None:
            raise ValueError("storage is for method='tpe' (Optuna)")
        trials = []
        for i, params in enumerate(_candidates(space, method, n_trials, seed)):
            params = {k: _jsonable(v) for k, v in params.items()}
            trial = _run_trial(i, params, fixed, repeats, folds=folds)
            trials.append(trial)
            if on_trial is not None:
                on_trial(trial)
    result = SearchResult(sorted(trials, key=_sort_key), fixed, method,
                          time.perf_counter() - t0)
    if output is not None:
        result.save(output)
    return result


def _run_optuna(space, n_trials, fixed, seed, repeats, storage, study_name, pruning,
                on_trial, folds) -> list[Trial]:
    try:
        import optuna
    except ImportError:
        raise ImportError("method='tpe' needs Optuna: pip install optuna") from None
    for name, v in space.items():
        if not isinstance(v, (list, Distribution)):
            raise ValueError(f"{name}: tpe takes lists or loguniform/uniform/int ranges, not "
                             f"{type(v).__name__}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from fastoptim import storage as shared

    storage = shared.open_storage(storage)  # a URL (with heartbeats) or a storage
    # Validation accuracy in the first epochs is noisy and favours large steps: judge a
    # trial only after a quarter of its epochs, against the median of 5 earlier trials.
    epochs = space.get("epochs") if isinstance(space.get("epochs"), list) else None
    epochs = min(epochs) if epochs else int(fixed.get("epochs", tc.option_defaults()["epochs"]))
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(1, epochs // 4))
              if pruning else optuna.pruners.NopPruner())
    for attempt in range(5):
        try:
            study = optuna.create_study(
                storage=storage, study_name=study_name, direction="maximize",
                sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner,
                load_if_exists=True)
            break
        except Exception:  # noqa: BLE001 - processes creating one new database race
            if storage is None or attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    state = optuna.trial.TrialState
    done = (state.COMPLETE, state.PRUNED, state.FAIL)

    def finished(ot) -> bool:
        # A FAIL without our "error" attribute was interrupted (Ctrl-C, a killed process):
        # it does not count, so a restarted search runs it again.
        return ot.state in done and (ot.state != state.FAIL or "error" in ot.user_attrs)

    n_finished = sum(map(finished, study.get_trials(deepcopy=False)))
    # Optuna's categorical choices must be scalars: lists (hidden) travel as their index.
    lists = {k: v for k, v in space.items() if isinstance(v, list)}

    def params_of(ot) -> dict[str, Any]:
        params = {}
        for name, v in space.items():
            if isinstance(v, Distribution):
                params[name] = v.suggest(ot, name)
            else:
                params[name] = v[ot.suggest_categorical(name, list(range(len(v))))]
        return params

    def objective(ot):
        ot.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        if cap.surplus(ot.study, ot.number):  # another worker took the last slot first
            ot.set_user_attr("surplus", True)
            ot.study.stop()
            raise _Surplus()
        params = params_of(ot)

        def report(epoch, logs):
            if "val_accuracy" in logs:
                ot.report(float(logs["val_accuracy"]), epoch)
                if ot.should_prune():
                    raise optuna.TrialPruned()

        try:
            trial = _run_trial(ot.number, params, fixed, repeats, report,
                               pruned=(optuna.TrialPruned,), folds=folds)
        except optuna.TrialPruned:
            if on_trial is not None:
                on_trial(Trial(ot.number, params, status="pruned"))
            raise
        ot.set_user_attr("seconds", trial.seconds)
        ot.set_user_attr("epochs", trial.epochs)
        ot.set_user_attr("test_accuracy", trial.test_accuracy)
        ot.set_user_attr("std", trial.std)
        if on_trial is not None:
            on_trial(trial)
        if trial.status == "failed":
            ot.set_user_attr("error", trial.error)
            raise _TrialFailed(trial.error)
        return trial.score

    # n_trials is for the whole study: processes sharing the storage stop once it holds
    # n_trials finished trials plus those running elsewhere; then each waits for the others,
    # rerunning the trials of workers that died (heartbeat storages: fastoptim.storage).
    cap = shared.TrialCap(n_trials, finished, storage)

    def run_more(k):
        study.optimize(objective, n_trials=k, catch=(_TrialFailed, _Surplus), callbacks=[cap])

    if n_trials > n_finished and not cap.reached(study):
        run_more(n_trials - n_finished)
    shared.drain(study, storage, run_more)
    trials = []
    every = study.get_trials(deepcopy=False)
    # trials of dead workers, failed by the heartbeat and rerun as a copy: list the copy only
    retried = {t.system_attrs.get("failed_trial") for t in every} - {None}
    for ot in every:
        if ot.state not in done or (ot.state == state.FAIL and (
                ot.number in retried or ot.user_attrs.get("surplus"))):
            continue
        try:
            params = {name: lists[name][ot.params[name]] if name in lists else ot.params[name]
                      for name in space}
        except (KeyError, IndexError, TypeError):  # a study written with another space
            params = dict(ot.params)
        ua = ot.user_attrs
        status = {state.COMPLETE: "ok", state.PRUNED: "pruned",
                  state.FAIL: "failed" if finished(ot) else "interrupted"}[ot.state]
        last = ot.intermediate_values
        trials.append(Trial(
            ot.number, params,
            score=float(ot.value) if status == "ok" else math.nan,  # type: ignore[arg-type]
            std=float(ua.get("std", math.nan)) if status == "ok" else math.nan,
            seconds=float(ua.get("seconds", (ot.duration.total_seconds()
                                             if ot.duration else 0.0))),
            status=status, epochs=int(ua.get("epochs", len(last))),
            test_accuracy=float(ua.get("test_accuracy", math.nan)) if status == "ok"
            else math.nan, error=str(ua.get("error", ""))))
    return trials


class _TrialFailed(Exception):
    """A trial that raised FloatingPointError or had invalid options (recorded as FAIL)."""


class _Surplus(Exception):
    """A trial started past the study's n_trials cap (recorded as FAIL, never trained)."""


# ---------------------------------------------------------------------------- plot


def _category_key(v):
    """Sorts a plot's categories: numbers (and lists of them) by value, None (full batch,
    default lr) after them, anything else by its text."""
    if v is None:
        return (1, (), "")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, (float(v),), "")
    if isinstance(v, list) and all(isinstance(h, (int, float)) for h in v):
        return (0, tuple(float(h) for h in v), "")
    return (2, (), str(v))


def save_plot(result: SearchResult, path: Path) -> str | None:
    """Score against each searched option (one panel each, log x-axis for lr); a notice
    instead when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no search.png (pip install matplotlib)"
    ok = [t for t in result.trials if t.status == "ok"]
    names = sorted({k for t in result.trials for k in t.params},
                   key=lambda n: (n != "lr", n))
    if not ok or not names:
        return "no successful trial to plot"
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        values = [t.params.get(name) for t in ok]
        scores = [t.score for t in ok]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            ax.scatter(values, scores)
            positive = all(v > 0 for v in values)  # type: ignore[operator]
            if name in ("lr", "weight_decay", "l1", "batch_size", "eps") and positive:
                ax.set_xscale("log")
        else:
            unique = list({_fmt(v, name): v for v in values}.values())
            unique.sort(key=_category_key)  # hidden [64] before [128]; full batch last
            labels = [_fmt(v, name) for v in unique]
            ax.scatter([labels.index(_fmt(v, name)) for v in values], scores)
            ax.set_xticks(range(len(labels)), labels)
        ax.set(xlabel=name, ylabel="validation accuracy")
    fig.suptitle(f"{result.method} search: {len(result.trials)} trials")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


# ---------------------------------------------------------------------------- CLI


def add_subparser(subparsers) -> None:
    p = subparsers.add_parser(
        "search", help="grid, random or TPE search over training options",
        description="Searches `fastoptim train`'s options; each trial trains exactly as "
                    "`fastoptim train` and is scored by validation accuracy.",
        formatter_class=tc.HelpFormatter)
    s = p.add_argument_group("search")
    s.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                   help="searched option and its values (repeatable); hidden layers as "
                        "64x32, 'none' for a linear model")
    s.add_argument("--random", action="append", default=[], metavar="NAME=SPEC",
                   help="searched option for random/tpe search: values V1,V2 or "
                        "loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH (repeatable)")
    s.add_argument("--trials", type=int, default=None,
                   help="trials for random/tpe (default 10); grid: first N combinations")
    s.add_argument("--sampler", choices=("grid", "random", "tpe"), default=None,
                   help="default: grid with --grid only, random otherwise; tpe needs optuna")
    s.add_argument("--repeats", type=int, default=1,
                   help="trainings per trial on successive seeds (mean/std score)")
    s.add_argument("--cv", type=int, default=None, metavar="K",
                   help="score by stratified K-fold cross-validation of the training split "
                        "instead of the --validation-split hold-out")
    s.add_argument("--no-pruning", action="store_true", help="tpe: never prune a trial")
    s.add_argument("--storage", default=None, metavar="URL",
                   help="tpe: Optuna storage shared by worker processes on one or many "
                        "machines: postgresql://user:pass@host/db, sqlite:///search.db or "
                        "journal:///shared/search.log; rerunning resumes")
    s.add_argument("--heartbeat", type=int, default=10, metavar="SECONDS",
                   help="tpe on a database or journal: heartbeat interval; a trial "
                        "silent for twice this long is failed and retried")
    s.add_argument("--study-name", default=None, help="tpe: study name in --storage")
    s.add_argument("--search-seed", type=int, default=0, help="seeds the sampler")
    tc.add_arguments(p)
    p.add_argument("--output", type=Path, default=Path("fastoptim-search"), metavar="DIR",
                   help="folder for results.csv, results.json, best.json, search.png")
    p.add_argument("--quiet", action="store_true", help="no per-trial lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"fastoptim search: error: {message}", file=sys.stderr)
        return 2

    try:
        space: dict[str, Any] = {}
        for text in [*args.grid, *args.random]:
            name, values = parse_space_arg(text)
            if name in space:
                return fail(f"{name} is given twice")
            space[name] = values
        if not space:
            return fail("nothing to search: give --grid NAME=V1,V2 or --random NAME=SPEC")
        method = args.sampler or ("grid" if args.grid and not args.random else "random")
        # The defaults, then --config values, then options given on the command line; each
        # is checked by run_search.
        options = {k: getattr(args, k) for k in TrainConfig.field_names()}
        if args.config is not None:
            options.update(tc.read_options(args.config, "--config"))
        options.update(tc.given_options(args))
        fixed = {k: v for k, v in options.items() if k not in space}

        def show(t: Trial):
            if not args.quiet:
                score = "-" if math.isnan(t.score) else f"{t.score:.4f}"
                print(f"trial {t.number}: {t.status} score {score} "
                      f"({t.seconds:.1f} s) {t.params}" + (f" {t.error}" if t.error else ""),
                      flush=True)

        result = run_search(space, method=method, n_trials=args.trials, fixed=fixed,
                            seed=args.search_seed, repeats=args.repeats, cv=args.cv,
                            storage=None if args.storage is None else open_storage(
                                args.storage, heartbeat_interval=args.heartbeat),
                            study_name=args.study_name, pruning=not args.no_pruning,
                            on_trial=show)
        written = result.save(args.output)
    except BrokenPipeError:
        raise
    except (tc.CommandError, ValueError, ImportError, OSError) as e:
        return fail(str(e))
    print(result.table())
    pruned = sum(t.status == "pruned" for t in result.trials)
    failed = sum(t.status == "failed" for t in result.trials)
    print(f"\n{len(result.trials)} trials ({pruned} pruned, {failed} failed) in "
          f"{result.seconds:.1f} s")
    try:
        best = result.best
    except RuntimeError as e:
        print(f"fastoptim search: {e}", file=sys.stderr)
        return 1
    print(f"best: {best.params} validation accuracy {best.score:.4f}")
    print(f"wrote {args.output}/" + ", ".join(written)
          + ("" if result.plot_notice is None else f" (no search.png: {result.plot_notice})")
          + f"\nreproduce: fastoptim train --config {args.output}/best.json")
    return 0
