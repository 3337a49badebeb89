"""The training loop: fit / evaluate / predict, callbacks, resumable checkpoints.

fit() drives any model with this small protocol (fastoptim.nn.Sequential has it):

    model.forward(X, training: bool) -> output
                                         # (+ row_offset=, skip_training_forward() for
                                         # data-parallel dropout: fastoptim.nn)
    model.backward(grad_output)          # overwrites the gradient arrays
    model.parameters() / model.gradients()   # lists of arrays, aligned
    model.state_dict() / model.load_state_dict(d)

and any optimizer with ``step(grads)``, ``param_groups`` and ``state_dict()`` /
``load_state_dict()`` (fastoptim.optim). Batches are views of X (in order) or one reused
buffer filled by np.take (shuffled): the data set is never copied per epoch.

An optimizer that also has ``train()`` and ``eval()`` (Schedule-Free AdamW / SGD) gets
``train()`` before each epoch's steps and ``eval()`` right after them, so validation,
epoch-end callbacks, checkpoints and the fitted model all use its averaged point.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastoptim import checkpoint as _ckpt

__all__ = [
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "History",
    "JSONLinesLogger",
    "ModelCheckpoint",
    "ProgressBar",
    "ReduceLROnPlateau",
    "evaluate",
    "fit",
    "load_training_state",
    "predict",
    "save_training_state",
]


@dataclass
class History:
    """Per-epoch records: ``history["loss"][i]`` is epoch ``epochs[i]``'s mean training loss;
    also every metric, ``val_*``, ``lr`` (at the end of the epoch) and ``time`` (seconds)."""

    epochs: list[int] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epochs.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": list(self.epochs),
                "history": {k: list(v) for k, v in self.history.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(list(d.get("epochs", [])), {k: list(v) for k, v in d.get("history", {}).items()})

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]


class Callback:
    """Hooks called by fit(); ``trainer`` is the running _Trainer (model, optimizer, history,
    step, stop_training)."""

    def on_train_begin(self, trainer: _Trainer) -> None: ...
    def on_epoch_begin(self, trainer: _Trainer, epoch: int) -> None: ...
    def on_batch_end(self, trainer: _Trainer, batch: int, logs: dict[str, float]) -> None: ...
    def on_epoch_end(self, trainer: _Trainer, epoch: int, logs: dict[str, float]) -> None: ...
    def on_train_end(self, trainer: _Trainer) -> None: ...

    # What a resumable checkpoint keeps of the callback. has_state: whether it keeps any;
    # state_dict (during the fit) returns a dict of numbers and arrays; check_state
    # validates one (raising ValueError) before load_state_dict applies it, after
    # on_train_begin of the resumed fit.
    def has_state(self) -> bool:
        return False

    def state_dict(self) -> dict[str, Any] | None:
        return None

    def check_state(self, state: dict[str, Any]) -> None:
        raise ValueError(f"{type(self).__name__} keeps no state")

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _number(state: dict[str, Any], key: str, kind: type = float) -> None:
    v = state.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{key} must be a number, got {v!r}")
    if kind is int and int(v) != v:
        raise ValueError(f"{key} must be an int, got {v!r}")


def _is_better(mode: str, value: float, best: float, min_delta: float) -> bool:
    if mode == "min":
        return value < best - min_delta
    return value > best + min_delta


def _mode_for(monitor: str, mode: str) -> str:
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
    return "min" if monitor.endswith("loss") or monitor.endswith("error") else "max"


class EarlyStopping(Callback):
    """Stops when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs;
    with restore_best_weights the model ends with the best epoch's parameters."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = False):
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode = _mode_for(monitor, mode)
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, trainer):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        self.best_epoch: int | None = None
        self.best_state: dict[str, np.ndarray] | None = None
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, trainer, epoch, logs):
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which is not among the "
                             f"logged values {sorted(logs)}")
        value = logs[self.monitor]
        if _is_better(self.mode, value, self.best, self.min_delta):
            self.best, self.wait, self.best_epoch = value, 0, epoch
            if self.restore_best_weights:
                self.best_state = {k: v.copy() for k, v in trainer.model.state_dict().items()}
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            trainer.stop_training = True

    def on_train_end(self, trainer):
        if self.restore_best_weights and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)

    def has_state(self):
        return True

    def state_dict(self):
        st: dict[str, Any] = {"best": float(self.best), "wait": int(self.wait),
                              "best_epoch": -1 if self.best_epoch is None else self.best_epoch}
        if self.best_state is not None:
            st["best_state"] = {k: np.array(v, copy=True) for k, v in self.best_state.items()}
        return st

    def check_state(self, state):
        _number(state, "best")
        _number(state, "wait", int)
        _number(state, "best_epoch", int)
        best = state.get("best_state")
        if best is not None and not (isinstance(best, dict) and all(
                isinstance(v, np.ndarray) for v in best.values())):
            raise ValueError("best_state must map names to arrays")

    def load_state_dict(self, state):
        self.best, self.wait = float(state["best"]), int(state["wait"])
        self.best_epoch = None if int(state["best_epoch"]) < 0 else int(state["best_epoch"])
        best = state.get("best_state")
        self.best_state = None if best is None else dict(best)


class ReduceLROnPlateau(Callback):
    """Multiplies every group's lr by ``factor`` when ``monitor`` has not improved by
    ``min_delta`` for ``patience`` epochs (never below ``min_lr``), then waits ``cooldown``
    epochs. The plateau logic is fastoptim.schedules.ReduceLROnPlateau's (torch's rules)."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0,
                 mode: str = "auto"):
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.monitor, self.min_lr = monitor, float(min_lr)
        self._args = dict(mode=_mode_for(monitor, mode), factor=factor, patience=patience,
                          threshold=min_delta, threshold_mode="abs", cooldown=cooldown)

    def on_train_begin(self, trainer):
        from fastoptim.schedules import ReduceLROnPlateau as Plateau

        self.plateau = Plateau(1.0, **self._args)  # tracks the scale factor on the lr

    def on_epoch_end(self, trainer, epoch, logs):
        before = self.plateau.lr
        after = self.plateau.step(logs[self.monitor])
        if after < before:
            trainer.lr_scale *= after / before
            for g in trainer.optimizer.param_groups:
                g["lr"] = max(self.min_lr, g["lr"] * after / before)

    def has_state(self):
        return True

    def state_dict(self):
        p = self.plateau
        return {"scale": float(p.lr), "best": float(p.best), "num_bad": int(p.num_bad),
                "cooldown_left": int(p.cooldown_left)}

    def check_state(self, state):
        _number(state, "scale")
        _number(state, "best")
        _number(state, "num_bad", int)
        _number(state, "cooldown_left", int)
        if not 0.0 < float(state["scale"]) <= 1.0:
            raise ValueError(f"scale must be in (0, 1], got {state['scale']}")

    def load_state_dict(self, state):
        p = self.plateau
        p.lr, p.best = float(state["scale"]), float(state["best"])
        p.num_bad, p.cooldown_left = int(state["num_bad"]), int(state["cooldown_left"])


class ModelCheckpoint(Callback):
    """Saves the full training state (model, optimizer, schedule position, history) after
    each epoch, or only when ``monitor`` improves (save_best_only). ``path`` may contain
    ``{epoch}``: the number of epochs completed, counted from 1 as the progress line shows
    them (``ckpt-{epoch}.npz`` after the second epoch is ``ckpt-2.npz``). Files are written
    atomically and load without pickle."""

    def __init__(self, path: str | os.PathLike, monitor: str = "val_loss",
                 save_best_only: bool = False, mode: str = "auto"):
        self.path, self.monitor, self.save_best_only = str(path), monitor, save_best_only
        self.mode = _mode_for(monitor, mode)

    def on_train_begin(self, trainer):
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, trainer, epoch, logs):
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                raise ValueError(f"ModelCheckpoint monitors {self.monitor!r}, which is not "
                                 f"among the logged values {sorted(logs)}")
            if not _is_better(self.mode, value, self.best, 0.0):
                return
            self.best = value
        save_training_state(self.path.format(epoch=epoch + 1), trainer, epoch=epoch + 1)

    def has_state(self):
        return self.save_best_only

    def state_dict(self):
        return {"best": float(self.best)} if self.save_best_only else None

    def check_state(self, state):
        _number(state, "best")

    def load_state_dict(self, state):
        self.best = float(state["best"])


class ProgressBar(Callback):
    """A per-batch progress line on a terminal; a line per epoch otherwise."""

    def __init__(self, stream=None, per_batch: bool | None = None):
        self.stream = stream or sys.stderr
        tty = getattr(self.stream, "isatty", lambda: False)()
        self.per_batch = tty if per_batch is None else per_batch

    def on_epoch_begin(self, trainer, epoch):
        self.t0 = time.perf_counter()
        self.epoch = epoch

    def on_batch_end(self, trainer, batch, logs):
        if self.per_batch and (batch % 10 == 0 or batch + 1 == trainer.n_batches):
            n = trainer.n_batches
            done = int(30 * (batch + 1) / n)
            self.stream.write(f"\repoch {self.epoch + 1}/{trainer.epochs} "
                              f"[{'=' * done}{' ' * (30 - done)}] {batch + 1}/{n} "
                              f"loss {logs['loss']:.4f}")
            self.stream.flush()

    def on_epoch_end(self, trainer, epoch, logs):
        items = " ".join(f"{k} {v:.4g}" for k, v in logs.items() if k != "time")
        line = f"epoch {epoch + 1}/{trainer.epochs} {items} ({logs['time']:.2f}s)"
        # On a terminal, overwrite the batch line and clear what is left of it.
        self.stream.write(f"\r{line}\033[K\n" if self.per_batch else line + "\n")
        self.stream.flush()


class CSVLogger(Callback):
    """Appends one row per epoch (epoch counted from 1, then every logged value) to a CSV
    file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def on_epoch_end(self, trainer, epoch, logs):
        if not _writes(trainer):
            return
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["epoch", *logs])
            w.writerow([epoch + 1, *logs.values()])


class JSONLinesLogger(Callback):
    """Appends one JSON object per epoch (``epoch`` counted from 1) to a .jsonl file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def on_epoch_end(self, trainer, epoch, logs):
        if not _writes(trainer):
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"epoch": epoch + 1, **logs}) + "\n")


# --------------------------------------------------------------------------------------
# Loss and metrics plumbing


_LOSSES = {
    "cross_entropy": "softmax_cross_entropy",
    "softmax_cross_entropy": "softmax_cross_entropy",
    "binary_cross_entropy": "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits": "binary_cross_entropy_with_logits",
    "mse": "mean_squared_error",
    "mean_squared_error": "mean_squared_error",
    "mae": "mean_absolute_error",
    "mean_absolute_error": "mean_absolute_error",
    "huber": "huber",
}


def _resolve_loss(loss) -> Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]:
    """A loss is a name (``"cross_entropy"``, ``"mse"``, ``"mae"``, ``"huber"``,
    ``"binary_cross_entropy"`` or a fastoptim.losses function name) or a callable
    (output, y) -> (value, grad)."""
    if isinstance(loss, str):
        from fastoptim import losses

        if loss not in _LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose from {sorted(_LOSSES)} or pass a "
                             f"callable (output, y) -> (value, grad)")
        return getattr(losses, _LOSSES[loss])
    if callable(loss):
        return loss
    raise TypeError(f"loss must be a name or a callable (output, y) -> (value, grad), got "
                    f"{type(loss).__name__}")


def _metric_fn(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """Classification metrics on label predictions: accuracy, and macro-averaged
    precision / recall / f1 (classes never predicted count as 0, as scikit-learn's
    zero_division=0)."""
    from fastoptim import metrics

    if name == "accuracy":
        return metrics.accuracy_score
    fns = {"precision": metrics.precision_score, "recall": metrics.recall_score,
           "f1": metrics.f1_score}
    if name not in fns:
        raise ValueError(f"unknown metric {name!r}; choose from accuracy, precision, recall, f1")
    fn = fns[name]
    return lambda t, p: float(fn(t, p, average="macro", zero_division=0))


def _predictions(output: np.ndarray) -> np.ndarray:
    """Class predictions of a batch of outputs (argmax; a threshold for one column)."""
    if output.ndim == 2 and output.shape[1] > 1:
        return output.argmax(axis=1)
    return (output.reshape(len(output)) > 0).astype(np.int64)


# --------------------------------------------------------------------------------------
# The loop


class _Trainer:
    def __init__(self, model, optimizer, loss_fn, schedule, epochs, batch_size, metrics):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.schedule, self.epochs, self.batch_size = schedule, epochs, batch_size
        self.metrics = list(metrics)
        self.history = History()
        self.step = 0  # optimizer steps taken (drives the schedule)
        self.lr_scale = 1.0  # ReduceLROnPlateau's factor on top of the schedule
        self.stop_training = False
        self.n_batches = 0
        self.dist = None  # the data-parallel engine (fastoptim.distributed) when comm is given
        self.callbacks: list[Callback] = []
        # callback states read from a checkpoint, applied after on_train_begin
        self.pending_callback_states: list[tuple[Callback, dict[str, Any]]] = []

    def set_lr(self) -> None:
        if self.schedule is not None:
            lr = float(self.schedule(self.step)) * self.lr_scale
            for g in self.optimizer.param_groups:
                g["lr"] = lr

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


def _writes(trainer) -> bool:
    """Whether this process writes outputs (always, except on ranks other than 0)."""
    return trainer.dist is None or trainer.dist.is_root


def _batches(n: int, batch_size: int | None):
    if batch_size is None:
        return [(0, n)]
    return [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def fit(model, X, y, *, loss, optimizer, epochs: int = 1, batch_size: int | None = 32,
        schedule=None, validation_data=None, validation_split: float = 0.0,
        metrics: Sequence[str] = ("accuracy",), callbacks: Iterable[Callback] = (),
        shuffle: bool = True, seed: int | None = None, verbose: bool | None = None,
        initial_epoch: int = 0, resume_from: str | os.PathLike | None = None,
        kernel_threads: int | str | None = "auto", comm=None) -> History:
    """Trains ``model`` on (X, y) and returns its History.

    batch_size=None is full-batch gradient descent. ``schedule`` (a callable step -> lr)
    sets every group's lr before each batch. ``validation_split`` holds out the last share
    of (X, y) (before shuffling) when no validation_data is given. ``resume_from`` loads a
    checkpoint written by ModelCheckpoint / save_training_state and continues from its
    epoch: 2 epochs + resume + 2 epochs gives the same parameters as 4 epochs.
    ``seed`` fixes the shuffling (per epoch, so a resumed run shuffles as an unbroken one).
    ``verbose``: None shows a progress bar on a terminal only; False is silent.
    ``kernel_threads``: threads for fastoptim's kernels during the loop. ``"auto"`` runs
    them on one thread while numpy's BLAS is multi-threaded (BLAS workers spin between
    matrix products and a parallel kernel then waits for their cores: bench/bench_train.py
    measured a 784-128-10 Fashion-MNIST epoch at 0.4 s with one pool threaded and 10.8 s
    with both, on 2 cores) and leaves fastoptim.get_num_threads() otherwise; None always
    leaves it; an int sets it for the loop.
    ``comm``: train data-parallel over MPI: a ``fastoptim.distributed.DataParallel`` (or an
    mpi4py communicator); every rank calls fit with the same arguments and takes its share
    of each global batch of ``batch_size`` rows (see fastoptim.distributed).
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} samples but y has {len(y)}")
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
    if validation_data is None and validation_split > 0:
        cut = len(X) - int(round(validation_split * len(X)))
        validation_data = (X[cut:], y[cut:])
        X, y = X[:cut], y[:cut]
    if len(X) == 0:
        raise ValueError("X has no training samples")

    trainer = _Trainer(model, optimizer, _resolve_loss(loss), schedule, epochs, batch_size,
                       metrics)
    metric_fns = {name: _metric_fn(name) for name in metrics}
    callbacks = list(callbacks)
    dist = None
    if comm is not None:
        from fastoptim import distributed

        dist = trainer.dist = distributed.attach(comm, model, optimizer)
    if (verbose is None and sys.stderr.isatty() or verbose) and _writes(trainer):
        callbacks.append(ProgressBar())
    # checkpoints are written after every other callback has seen the epoch, so the
    # callback states they carry (early stopping, plateau) are that epoch's
    callbacks.sort(key=lambda c: isinstance(c, ModelCheckpoint))
    trainer.callbacks = callbacks
    if resume_from is not None:
        initial_epoch = load_training_state(resume_from, trainer)
    if dist is not None:
        dist.check_launch({
            "data": [X, y] + ([] if validation_data is None else list(validation_data)),
            "model": [repr(model), model.flat_parameters()],
            "optimizer": [type(optimizer).__name__, [{k: v for k, v in g.items() if k != "params"}
                                                     for g in optimizer.param_groups]],
            "training": [epochs, batch_size, shuffle, seed, initial_epoch, trainer.step,
                         getattr(loss, "__name__", loss), list(metrics),
                         [type(c).__name__ for c in callbacks if not isinstance(c, ProgressBar)],
                         dist.size, dist.options.shard_optimizer]})

    penalties = getattr(model, "add_penalties", None)
    n = len(X)
    spans = _batches(n, batch_size)
    trainer.n_batches = len(spans)
    # One reused gather buffer for shuffled batches (never a fresh copy of the data set).
    bs = n if batch_size is None else min(batch_size, n)
    xbuf = np.empty((bs,) + X.shape[1:], X.dtype) if shuffle and batch_size is not None else None
    ybuf = np.empty((bs,) + y.shape[1:], y.dtype) if xbuf is not None else None

    import contextlib

    import fastoptim

    saved_threads = fastoptim.get_num_threads()
    with contextlib.ExitStack() as stack:
        if dist is not None:
            from fastoptim import distributed

            stack.callback(dist.close)
            stack.enter_context(distributed.thread_limits(dist))
            stack.enter_context(dist.guard())
        threads = _blas_aware_threads() if kernel_threads == "auto" else kernel_threads
        if threads is not None:
            fastoptim.set_num_threads(int(threads))
        try:
            _loop(trainer, model, optimizer, X, y, spans, xbuf, ybuf, order_seed=seed,
                  initial_epoch=initial_epoch, epochs=epochs, callbacks=callbacks,
                  metric_fns=metric_fns, validation_data=validation_data, bs=bs, n=n,
                  penalties=penalties)
        finally:
            fastoptim.set_num_threads(saved_threads)
    return trainer.history


def _blas_aware_threads() -> int | None:
    """1 when numpy's BLAS may run several threads (unknown without threadpoolctl: assume
    it does), else None (keep fastoptim's own setting)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return 1
    blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    return 1 if any(p.get("num_threads", 1) > 1 for p in blas) else None


def _optimizer_mode(optimizer, *, train: bool) -> None:
    """An optimizer with train()/eval() (schedule-free) moves the parameters between its
    training point and its averaged point: train() before an epoch's steps, eval() after
    them, so validation, callbacks, checkpoints and the fitted model use the average."""
    fn = getattr(optimizer, "train" if train else "eval", None)
    if callable(fn) and callable(getattr(optimizer, "eval" if train else "train", None)):
        fn()


def _loop(trainer, model, optimizer, X, y, spans, xbuf, ybuf, *, order_seed, initial_epoch,
          epochs, callbacks, metric_fns, validation_data, bs, n, penalties) -> None:
    seed = order_seed
    dist = trainer.dist
    for cb in callbacks:
        cb.on_train_begin(trainer)
    for cb, st in trainer.pending_callback_states:  # resumed: the checkpoint's states
        cb.load_state_dict(st)
    trainer.pending_callback_states = []
    for epoch in range(initial_epoch, epochs):
        for cb in callbacks:
            cb.on_epoch_begin(trainer, epoch)
        _optimizer_mode(optimizer, train=True)
        t0 = time.perf_counter()
        order = None
        if xbuf is not None:
            rng = np.random.default_rng(None if seed is None else [seed, epoch])
            order = rng.permutation(n)
        total_loss = 0.0
        preds: list | None = [] if metric_fns else None
        for b, (lo, hi) in enumerate(spans):
            first = lo
            if dist is not None:  # this rank's share of the global batch
                size = hi - lo
                lo, hi = dist.share(lo, hi)
            if order is None:
                xb, yb = X[lo:hi], y[lo:hi]
            else:
                idx = order[lo:hi]
                xb = np.take(X, idx, axis=0, out=xbuf[: hi - lo])
                yb = np.take(y, idx, axis=0, out=ybuf[: hi - lo])
            trainer.set_lr()
            if hi > lo:
                if dist is not None and hasattr(model, "skip_training_forward"):
                    # dropout masks of these rows of the global batch (fastoptim.nn)
                    out = model.forward(xb, training=True, row_offset=lo - first)
                else:
                    out = model.forward(xb, training=True)
                value, grad = trainer.loss_fn(out, yb)
                if not np.isfinite(value):  # stop before a NaN reaches the parameters
                    raise FloatingPointError(f"loss became {value} at epoch {epoch}, batch "
                                             f"{b}; lower the learning rate or check the data")
                model.backward(grad)  # overwrites the gradients
                if penalties is not None:
                    value += penalties()  # per-layer L1/L2, added to the gradients natively
            else:  # a rank with no rows of a short batch adds nothing
                out, value = None, 0.0
                model.flat_gradients().fill(0)
                if hasattr(model, "skip_training_forward"):
                    model.skip_training_forward()
            if dist is None:
                optimizer.step(model.gradients())
            else:
                dist.step(model.gradients(), (hi - lo) / size)
            trainer.step += 1
            total_loss += float(value) * (hi - lo)
            if preds is not None and out is not None:
                preds.append((_predictions(out), yb.copy() if order is not None else yb))
            for cb in callbacks:
                cb.on_batch_end(trainer, b, {"loss": float(value)})
        # schedule-free: evaluation, callbacks and checkpoints see the averaged point
        _optimizer_mode(optimizer, train=False)
        if dist is not None:
            total_loss = dist.allreduce_sum(total_loss)
        logs = {"loss": total_loss / n}
        if preds is not None:
            p = np.concatenate([a for a, _ in preds]) if preds else np.empty(0, np.int64)
            t = np.concatenate([c for _, c in preds]) if preds else np.empty(0, y.dtype)
            if dist is not None:
                p, t = dist.allgather_concat(p), dist.allgather_concat(t)
            for name, fn in metric_fns.items():
                logs[name] = fn(t, p)
        if validation_data is not None:
            val = evaluate(model, *validation_data, loss=trainer.loss_fn, metrics=list(metric_fns),
                           batch_size=max(bs, 256))
            logs.update({f"val_{k}": v for k, v in val.items()})
        logs["lr"] = trainer.current_lr()
        logs["time"] = time.perf_counter() - t0
        if dist is not None:  # every rank decides (early stopping, plateaus) on rank 0's logs
            logs = dist.bcast(logs)
            dist.check_consistent()
        trainer.history.append(epoch, logs)
        for cb in callbacks:
            cb.on_epoch_end(trainer, epoch, logs)
        if trainer.stop_training:
            break
    for cb in callbacks:
        cb.on_train_end(trainer)


def predict(model, X, *, batch_size: int = 1024) -> np.ndarray:
    """Model outputs for X in evaluation mode, computed in batches."""
    X = np.asarray(X)
    outs = [np.array(model.forward(X[i:i + batch_size], training=False), copy=True)
            for i in range(0, len(X), batch_size)]
    return np.concatenate(outs) if outs else np.empty((0,))


def evaluate(model, X, y, *, loss=None, metrics: Sequence[str] = ("accuracy",),
             batch_size: int = 1024) -> dict[str, float]:
    """Loss (when given) and metrics of ``model`` on (X, y), in evaluation mode."""
    X, y = np.asarray(X), np.asarray(y)
    loss_fn = _resolve_loss(loss) if loss is not None else None
    total, preds = 0.0, []
    for i in range(0, len(X), batch_size):
        out = model.forward(X[i:i + batch_size], training=False)
        if loss_fn is not None:
            value, _ = loss_fn(out, y[i:i + batch_size])
            total += float(value) * len(out)
        preds.append(_predictions(out))
    res: dict[str, float] = {}
    if loss_fn is not None:
        res["loss"] = total / max(1, len(X))
    p = np.concatenate(preds) if preds else np.empty(0, np.int64)
    for name in metrics:
        res[name] = _metric_fn(name)(y, p)
    return res


# --------------------------------------------------------------------------------------
# Training state <-> checkpoint files


def _flatten(prefix: str, obj, arrays: dict[str, np.ndarray]):
    """JSON skeleton of a nested state, its arrays moved into ``arrays`` by path."""
    if isinstance(obj, np.ndarray):
        arrays[prefix] = obj
        return {"__array__": prefix}
    if hasattr(obj, "numpy") and hasattr(obj, "detach"):  # a torch tensor
        return _flatten(prefix, obj.detach().cpu().numpy(), arrays)
    if isinstance(obj, dict):
        return {"__dict__": [[_flatten(f"{prefix}.k{i}", k, arrays),
                              _flatten(f"{prefix}.{i}", v, arrays)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(f"{prefix}.{i}", v, arrays) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(f"{prefix}.{i}", v, arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint")


def _unflatten(skel, arrays: dict[str, np.ndarray]):
    if isinstance(skel, dict):
        if "__array__" in skel:
            return arrays[skel["__array__"]]
        if "__tuple__" in skel:
            return tuple(_unflatten(v, arrays) for v in skel["__tuple__"])
        return {_unflatten(k, arrays): _unflatten(v, arrays) for k, v in skel["__dict__"]}
    if isinstance(skel, list):
        return [_unflatten(v, arrays) for v in skel]
    return skel


def _dropouts(model) -> list:
    """Layers with a native dropout stream (seed, call counter) that must survive a resume."""
    return [layer for layer in getattr(model, "layers", []) if hasattr(layer, "calls")]


def save_training_state(path, trainer: _Trainer, *, epoch: int) -> None:
    """Writes model, optimizer, schedule position and history; ``epoch`` is the next epoch
    to run when resuming."""
    dist = getattr(trainer, "dist", None)
    # sharded state is gathered from every rank (collective); rank 0 alone writes
    optim_state = trainer.optimizer.state_dict() if dist is None else dist.optimizer_state_dict()
    if dist is not None and not dist.is_root:
        return
    arrays: dict[str, np.ndarray] = {}
    meta = {
        "epoch": epoch,
        "step": trainer.step,
        "lr_scale": trainer.lr_scale,
        "model": _flatten("model", trainer.model.state_dict(), arrays),
        "optimizer": _flatten("optimizer", optim_state, arrays),
        "history": trainer.history.to_dict(),
        "dropout_streams": [[int(layer.seed), int(layer.calls)]
                            for layer in _dropouts(trainer.model)],
        "callbacks": _flatten("callbacks", [[type(cb).__name__, cb.state_dict()]
                                            for cb in trainer.callbacks if cb.has_state()],
                              arrays),
    }
    _ckpt.save_checkpoint(path, arrays, meta)


def _layout(state: dict) -> dict[str, tuple]:
    return {str(k): (np.shape(v), np.asarray(v).dtype.str) for k, v in state.items()}


def load_training_state(path, trainer: _Trainer) -> int:
    """Restores what save_training_state wrote into ``trainer``; returns the next epoch.

    All or nothing: the file's digest, the model's parameter names, shapes and dtypes, the
    optimizer's parameter groups, the schedule position and the dropout streams are all
    checked before anything is changed; a CheckpointError leaves the model, the optimizer
    and the trainer exactly as they were."""
    arrays, meta = _ckpt.load_checkpoint(path)

    def refuse(message: str):
        return _ckpt.CheckpointError(f"cannot resume from {path}: {message}")

    try:
        model_state = _unflatten(meta["model"], arrays)
        optim_state = _unflatten(meta["optimizer"], arrays)
        epoch, step = int(meta["epoch"]), int(meta["step"])
        lr_scale = float(meta.get("lr_scale", 1.0))
        history = History.from_dict(meta.get("history", {}))
        streams = [(int(a), int(b)) for a, b in meta.get("dropout_streams", [])]
        cb_states = [(str(name), st) for name, st in
                     _unflatten(meta.get("callbacks", []), arrays)]
        saved_groups = optim_state["param_groups"]
        if not isinstance(model_state, dict) or not isinstance(optim_state.get("state"), dict):
            raise TypeError("model or optimizer state is not a mapping")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise _ckpt.CheckpointError(f"{path} is not a training checkpoint: {e}") from None
    # dropout streams
    layers = _dropouts(trainer.model)
    if len(layers) != len(streams):
        raise refuse(f"it holds {len(streams)} dropout streams but the model has "
                     f"{len(layers)} dropout layers")
    # callback states: matched to this fit's stateful callbacks by class, in order; a
    # callback the checkpoint does not know starts fresh, one this fit lacks is dropped
    pending = []
    stateful = [cb for cb in trainer.callbacks if cb.has_state()]
    for name in sorted({n for n, _ in cb_states}):
        mine = [cb for cb in stateful if type(cb).__name__ == name]
        for cb, (_, st) in zip(mine, [x for x in cb_states if x[0] == name], strict=False):
            try:
                if not isinstance(st, dict):
                    raise ValueError("not a mapping")
                cb.check_state(st)
            except (ValueError, TypeError, KeyError) as e:
                raise refuse(f"the {name} callback's state: {e}") from None
            pending.append((cb, st))
    # model layout
    have, want = _layout(trainer.model.state_dict()), _layout(model_state)
    if have != want:
        missing = sorted(set(have) - set(want))
        extra = sorted(set(want) - set(have))
        differ = sorted(k for k in set(have) & set(want) if have[k] != want[k])
        raise refuse(f"the model's layout differs (missing {missing}, unexpected {extra}, "
                     f"other shape or dtype {differ})")
    # optimizer groups
    groups = trainer.optimizer.param_groups
    if len(saved_groups) != len(groups):
        raise refuse(f"it holds {len(saved_groups)} optimizer parameter groups but the "
                     f"optimizer has {len(groups)}")
    for i, (saved, group) in enumerate(zip(saved_groups, groups, strict=True)):
        if len(saved.get("params", ())) != len(group["params"]):
            raise refuse(f"optimizer group {i} has {len(saved.get('params', ()))} parameters "
                         f"in the checkpoint but {len(group['params'])} here")
    # schedule position
    if epoch < 0 or step < 0 or not (math.isfinite(lr_scale) and lr_scale > 0):
        raise refuse(f"bad schedule position (epoch {epoch}, step {step}, lr_scale "
                     f"{lr_scale})")
    if trainer.schedule is not None and not math.isfinite(float(trainer.schedule(step))):
        raise refuse(f"the schedule gives a non-finite learning rate at step {step}")
    # Everything checked: the optimizer validates its own state before changing anything,
    # and the model's load cannot fail now; undo the optimizer's if it does all the same.
    before = trainer.optimizer.state_dict()
    try:
        trainer.optimizer.load_state_dict(optim_state)
    except (KeyError, TypeError, ValueError) as e:
        raise refuse(f"optimizer state: {e}") from None
    try:
        trainer.model.load_state_dict(model_state)
    except BaseException:
        trainer.optimizer.load_state_dict(before)
        raise
    trainer.step = step
    trainer.lr_scale = lr_scale
    trainer.history = history
    trainer.pending_callback_states = pending
    for layer, (seed, calls) in zip(layers, streams, strict=True):
        layer.seed, layer.calls = int(seed), int(calls)
    if getattr(trainer, "dist", None) is not None:
        trainer.dist.after_load()  # reshard the optimizer state over this run's ranks
    return epoch
