"""`fastoptim train`: train a dense network on a real data set and report its metrics.

With no arguments it trains 64 -> 256 (ReLU) -> 10 with softmax cross-entropy and Adam on
the embedded digits set, shows progress, and ends with held-out accuracy, macro
precision/recall/F1 and the confusion matrix. Everything it writes goes to --output;
``--resume DIR`` continues a run from DIR/checkpoint.npz.

The options are the fields of :class:`fastoptim.config.TrainConfig` (defaults and
validation live there).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from fastoptim.config import (  # noqa: F401
    ACTIVATIONS,
    DEFAULT_LR,
    DTYPES,
    OPTIMIZERS,
    SCHEDULES,
    ConfigError,
    TrainConfig,
)


class CommandError(Exception):
    """A bad option or bad data: reported as one line, exit status 2."""


def _batch_size(text: str):
    if text == "full":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer or 'full', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'full', got {text!r}")
    return value


class HelpFormatter(argparse.HelpFormatter):
    """Appends each option's default once (none for flags and unset options)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (not action.option_strings or any(default is v for v in (None, False, argparse.SUPPRESS))
                or "%(default)" in text or isinstance(action, argparse._HelpAction)
                or (isinstance(action, argparse._AppendAction) and not default)):
            return text
        if isinstance(default, (list, tuple)):
            default = " ".join(map(str, default)) or "none"
        return f"{text} (default: {str(default).replace('%', '%%')})"


def option_name(field: str) -> str:
    """The command-line spelling of a TrainConfig field: ``--batch-size``."""
    return "--" + field.replace("_", "-")


_GIVEN = "_given_options"  # Namespace attribute: the options typed on the command line


class _StoreGiven(argparse._StoreAction):
    """Stores the value and records that the option was given (so a value equal to the
    default still wins over --config and --resume)."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        setattr(namespace, _GIVEN, {*getattr(namespace, _GIVEN, ()), self.dest})


class _StoreTrueGiven(argparse._StoreTrueAction):
    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        setattr(namespace, _GIVEN, {*getattr(namespace, _GIVEN, ()), self.dest})


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The training options (every TrainConfig field), shared by `train` and `search`."""
    p.set_defaults(**{_GIVEN: ()})
    groups: dict[str, argparse._ArgumentGroup] = {}
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        meta = dict(f.metadata)
        group = meta.pop("group")
        g = groups.get(group) or groups.setdefault(group, p.add_argument_group(group))
        default = getattr(defaults, f.name)
        kw: dict = {"default": default, "action": _StoreGiven, **meta}
        if f.name == "nesterov":
            kw = {"action": _StoreTrueGiven, "help": meta["help"]}
        elif f.name == "hidden":
            kw.update(type=int, nargs="*")
        elif f.name == "batch_size":
            kw.update(type=_batch_size)
        elif f.name in ("epochs", "early_stopping", "threads", "seed"):
            kw.update(type=int)
        elif f.name not in ("dataset", "activation", "dtype", "optimizer", "schedule",
                            "state_dtype"):
            kw.update(type=float)
        g.add_argument(option_name(f.name), dest=f.name, **kw)
    groups["run"].add_argument("--config", type=Path, default=None, metavar="JSON",
                               help="a JSON file of options (as written by `fastoptim "
                                    "search`); options given on the command line win")


def add_subparser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a network and report held-out metrics",
        description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    add_arguments(p)
    p.add_argument("--output", type=Path, default=None, metavar="DIR",
                   help="folder for config.json, checkpoint.npz, history.json, curves.png, "
                        "metrics.json (default: fastoptim-run, or the --resume folder)")
    p.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="continue the run in DIR (its config.json and checkpoint.npz) up to "
                        "--epochs; options given on the command line win")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--shard-optimizer", action="store_true",
                   help="under mpirun: ZeRO-1, each rank keeps 1/N of the optimizer state "
                        "(--batch-size stays the global batch, split across the ranks)")
    p.set_defaults(func=run)


# --------------------------------------------------------------------------------------


def option_defaults() -> dict:
    """Every training option's default value, by attribute name."""
    return {**TrainConfig().to_dict(), "config": None}


def read_options(path: Path, label: str) -> dict:
    """The options of a JSON file (``{"params": {...}}`` or a plain object), by field name;
    CommandError (one line) for an unreadable file or an unknown option."""
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CommandError(f"{label} {path}: {e}") from None
    params = cfg.get("params", cfg) if isinstance(cfg, dict) else None
    if not isinstance(params, dict):
        raise CommandError(f"{label} {path}: expected a JSON object of options")
    names = TrainConfig.field_names()
    for key in params:
        if str(key).replace("-", "_") not in names:
            raise CommandError(f"{label} {path}: unknown option {key!r}")
    return {str(k).replace("-", "_"): v for k, v in params.items()}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed `train`/`search` options: the defaults, then the resumed
    run's config.json (--resume), then --config, then options given on the command line.
    Any bad value is a CommandError naming it."""
    defaults = TrainConfig().to_dict()
    merged, origin = dict(defaults), {}
    sources = []
    resume = getattr(args, "resume", None)
    if resume is not None and (Path(resume) / "config.json").is_file():
        sources.append((Path(resume) / "config.json", "--resume"))
    if getattr(args, "config", None) is not None:
        sources.append((Path(args.config), "--config"))
    for path, label in sources:
        for name, value in read_options(path, label).items():
            merged[name], origin[name] = value, f"{label} {path}"
    given = given_options(args)
    for name in defaults:
        if hasattr(args, name) and (name not in origin or name in given):
            merged[name] = getattr(args, name)
    try:
        return TrainConfig(**merged)
    except ConfigError as e:
        if e.field in origin and e.field not in given:
            raise CommandError(f"{origin[e.field]}: {e.field} {e.detail}") from None
        raise CommandError(f"{option_name(e.field)} {e.detail}") from None


def given_options(args: argparse.Namespace) -> dict:
    """The training options given on the command line, by name: those parsed from argv
    (recorded by add_arguments' actions), or for a Namespace built otherwise those that
    differ from the defaults."""
    defaults = TrainConfig().to_dict()
    explicit = getattr(args, _GIVEN, None)
    if explicit is not None:
        return {k: getattr(args, k) for k in defaults if k in explicit}
    return {k: getattr(args, k) for k in defaults
            if hasattr(args, k) and getattr(args, k) != defaults[k]}


def as_config(options) -> TrainConfig:
    """A TrainConfig from a TrainConfig, a dict of options or an argparse.Namespace of
    `fastoptim train` options (--config is applied)."""
    if isinstance(options, TrainConfig):
        return options
    if isinstance(options, dict):
        options = argparse.Namespace(**options)
    return config_from_args(options)


def apply_config(args: argparse.Namespace) -> argparse.Namespace:
    """Fills options from --config JSON where the command line left the default (the
    validated values, as a Namespace)."""
    cfg = config_from_args(args)
    for name, value in cfg.to_dict().items():
        setattr(args, name, value)
    args.config = None
    return args


def validate(args) -> None:
    """CommandError (naming the option) unless these options form a valid TrainConfig."""
    as_config(args)


def build(args, n_features: int, n_classes: int):
    """The model and optimizer for these options (weight decay on weights only)."""
    return as_config(args).build(n_features, n_classes)


def make_schedule(args, lr: float, steps_per_epoch: int):
    return as_config(args).build_schedule(lr, steps_per_epoch)


def prepare_data(config):
    """(X_train, y_train, X_val, y_val, X_test, y_test, name, n_classes), standardised
    with statistics of the training part only."""
    from fastoptim import data

    cfg = as_config(config)
    try:
        ds = data.load(cfg.dataset, seed=cfg.seed)
    except (FileNotFoundError, ValueError) as e:
        raise CommandError(str(e)) from None
    X, y = ds.X_train, ds.y_train
    X_val = y_val = None
    if cfg.validation_split > 0:
        X, X_val, y, y_val = data.train_test_split(X, y, test_size=cfg.validation_split,
                                                   seed=cfg.seed, stratify=True)
    dtype = cfg.np_dtype
    scaler = data.Standardizer().fit(X)
    tr = lambda a: None if a is None else scaler.transform(a).astype(dtype, copy=False)  # noqa: E731
    return tr(X), y, tr(X_val), y_val, tr(ds.X_test), ds.y_test, ds.name, ds.n_classes


def set_threads(n: int | None):
    """Sets fastoptim's threads and caps numpy BLAS's (through threadpoolctl); returns
    the BLAS limiter to undo."""
    import fastoptim

    if n is None:
        return None
    fastoptim.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=n, user_api="blas")


def train_and_evaluate(config, *, output: Path | None, verbose: bool | None,
                       report=None, prepared=None, resume_from: Path | None = None,
                       comm=None):
    """Runs one training run with these options (a TrainConfig, or parsed options);
    returns (history, test metrics, model).

    ``report(epoch, logs)`` is called after every epoch (search uses it for pruning).
    ``prepared`` replaces prepare_data(config) with a tuple of the same form (search's
    cross-validation folds). ``resume_from`` continues from a checkpoint written by an
    earlier run of the same options. ``comm`` (a fastoptim.distributed.DataParallel)
    trains data-parallel."""
    from fastoptim import train

    cfg = as_config(config)
    X, y, X_val, y_val, X_test, y_test, name, n_classes = (
        prepare_data(cfg) if prepared is None else prepared)
    model, opt, lr = cfg.build(X.shape[1], n_classes)
    callbacks: list = []
    if cfg.early_stopping:
        callbacks.append(train.EarlyStopping("val_loss", patience=cfg.early_stopping,
                                             restore_best_weights=True))
    if output is not None:
        callbacks.append(train.ModelCheckpoint(output / "checkpoint.npz"))
    if report is not None:
        callbacks.append(_Reporter(report))
    limits = set_threads(cfg.threads)
    try:
        history = train.fit(model, X, y, loss="cross_entropy", optimizer=opt,
                            epochs=cfg.epochs, batch_size=cfg.batch_size,
                            schedule=cfg.build_schedule(lr, cfg.steps_per_epoch(len(X))),
                            validation_data=None if X_val is None else (X_val, y_val),
                            metrics=("accuracy",), callbacks=callbacks, seed=cfg.seed,
                            verbose=verbose, resume_from=resume_from, comm=comm)
        result = test_metrics(model, X_test, y_test, n_classes)
    finally:
        if limits is not None:
            limits.unregister()
    return history, result, model


class _Reporter:
    def __init__(self, fn):
        self.fn = fn

    def on_train_begin(self, trainer): ...
    def on_epoch_begin(self, trainer, epoch): ...
    def on_batch_end(self, trainer, batch, logs): ...
    def on_train_end(self, trainer): ...

    def on_epoch_end(self, trainer, epoch, logs):
        self.fn(epoch, logs)
def test_metrics(model, X_test, y_test, n_classes: int) -> dict:
    from fastoptim import metrics, train

    pred = train.predict(model, X_test).argmax(axis=1)
    p, r, f, _ = metrics.precision_recall_fscore_support(y_test, pred, average="macro",
                                                         zero_division=0)
    return {"accuracy": float(metrics.accuracy_score(y_test, pred)),
            "precision_macro": float(p), "recall_macro": float(r), "f1_macro": float(f),
            "confusion_matrix": metrics.confusion_matrix(
                y_test, pred, labels=list(range(n_classes))).tolist(),
            "n_test": int(len(y_test))}


def format_report(name: str, result: dict, seconds: float) -> str:
    lines = [f"held-out {name} ({result['n_test']} samples), trained in {seconds:.1f} s",
             "",
             "| metric | value |", "|---|---|"]
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
        lines.append(f"| {key.replace('_macro', ' (macro)')} | {result[key]:.4f} |")
    cm = np.asarray(result["confusion_matrix"])
    width = max(4, len(str(cm.max())) + 1)
    lines += ["", "confusion matrix (rows: true class, columns: predicted)",
              "     " + "".join(f"{j:>{width}}" for j in range(cm.shape[1]))]
    for i, row in enumerate(cm):
        lines.append(f"{i:>4} " + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


def save_plot(history, path: Path) -> str | None:
    """Loss and accuracy curves as PNG; a one-line notice instead without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no curves.png (pip install matplotlib)"
    h = history.history
    epochs = [e + 1 for e in history.epochs]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    a1.plot(epochs, h["loss"], label="train")
    if "val_loss" in h:
        a1.plot(epochs, h["val_loss"], label="validation")
    a1.set(xlabel="epoch", ylabel="loss", title="loss")
    a1.legend()
    a2.plot(epochs, h["accuracy"], label="train")
    if "val_accuracy" in h:
        a2.plot(epochs, h["val_accuracy"], label="validation")
    a2.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def run(args: argparse.Namespace) -> int:
    from fastoptim import distributed
    from fastoptim.checkpoint import CheckpointError

    root, dist_info = True, None
    try:
        resume_from = None
        if args.resume is not None:
            resume_from = Path(args.resume) / "checkpoint.npz"
            if not resume_from.is_file():
                raise CommandError(f"--resume {args.resume}: no checkpoint.npz there")
        cfg = config_from_args(args)
        if args.shard_optimizer and cfg.state_dtype != "fp32":
            raise CommandError(f"--shard-optimizer needs --state-dtype fp32, got "
                               f"{cfg.state_dtype!r}: reduced-precision state is not split "
                               f"across ranks")
        comm = None
        if distributed.launched_under_mpi() or args.shard_optimizer:
            comm = distributed.DataParallel(shard_optimizer=args.shard_optimizer,
                                            threads="auto" if cfg.threads is None else None)
            root = comm.rank == 0
            dist_info = {"ranks": comm.size, "shard_optimizer": comm.shard_optimizer,
                         "batch_size": "global"}
        output = args.output or args.resume or Path("fastoptim-run")
        if root:
            output.mkdir(parents=True, exist_ok=True)
            (output / "config.json").write_text(
                json.dumps({"params": cfg.to_dict()}, indent=1))
        t0 = time.perf_counter()
        verbose = False if args.quiet or not root else None
        history, result, _ = train_and_evaluate(cfg, output=output, verbose=verbose,
                                                resume_from=resume_from, comm=comm)
        seconds = time.perf_counter() - t0
    except BrokenPipeError:
        raise
    except (CommandError, CheckpointError, FloatingPointError, OSError, ImportError,
            distributed.LaunchMismatchError) as e:
        if root:
            print(f"fastoptim train: error: {e}", file=sys.stderr)
        return 2
    if not root:  # rank 0 alone writes and reports
        return 0
    (output / "history.json").write_text(json.dumps(history.to_dict(), indent=1))
    (output / "metrics.json").write_text(json.dumps(
        {"test": result, "options": cfg.to_dict(), "seconds": seconds,
         **({"distributed": dist_info} if dist_info else {})}, indent=1))
    notice = save_plot(history, output / "curves.png")
    print(format_report(cfg.dataset, result, seconds))
    print(f"\nwrote {output}/config.json, checkpoint.npz, history.json, metrics.json"
          + ("" if notice else ", curves.png"))
    if notice:
        print(notice)
    return 0
