"""`fastoptim train`: train a dense network on a real data set and report its metrics.

With no arguments it trains 64 -> 256 (ReLU) -> 10 with softmax cross-entropy and Adam on
the embedded digits set, shows progress, and ends with held-out accuracy, macro
precision/recall/F1 and the confusion matrix. Everything it writes goes to --output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from fastoptim import spec as _spec

OPTIMIZERS = _spec.cli_choices()
SCHEDULES = ("constant", "cosine", "exponential", "step", "inverse-time", "one-cycle")
ACTIVATIONS = ("relu", "leaky_relu", "gelu", "tanh", "sigmoid")
DEFAULT_LR = {name: _spec.train_lr(name) for name in OPTIMIZERS}


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


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The training options, shared by `train` and `search`."""
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="digits",
                   help="'digits' (embedded, default), 'fashion-mnist' (Debian's "
                        "dataset-fashion-mnist) or a folder holding MNIST-style IDX files")
    d.add_argument("--validation-split", type=float, default=0.1, metavar="F",
                   help="share of the training data held out for validation and early "
                        "stopping (default 0.1; 0 disables)")
    m = p.add_argument_group("model")
    m.add_argument("--hidden", type=int, nargs="*", default=[256], metavar="N",
                   help="hidden layer sizes (default: 256; none gives a linear model)")
    m.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                   help="hidden activation (default relu)")
    m.add_argument("--dropout", type=float, default=0.0, metavar="P",
                   help="dropout probability after each hidden layer (default 0)")
    m.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    o = p.add_argument_group("optimization")
    o.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="default adam")
    o.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: " + ", ".join(
                       f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    for opt in _spec.cli_options():  # the optimizers' options, from fastoptim.spec
        if opt.kind == "bool":
            o.add_argument(opt.flag, action="store_true", help=opt.help)
        else:
            o.add_argument(opt.flag, type=float, default=opt.default, help=opt.help)
    o.add_argument("--weight-decay", type=float, default=0.0, metavar="WD",
                   help="L2 weight decay on weights, not biases (decoupled for adamw)")
    o.add_argument("--l1", type=float, default=0.0, help="L1 penalty on hidden weights")
    o.add_argument("--schedule", choices=SCHEDULES, default="constant",
                   help="learning-rate schedule over the whole run, stepped per batch")
    o.add_argument("--warmup-epochs", type=float, default=0.0, metavar="E",
                   help="linear warm-up before the schedule (default 0)")
    o.add_argument("--epochs", type=int, default=30, help="default 30")
    o.add_argument("--batch-size", type=_batch_size, default=32, metavar="N|full",
                   help="mini-batch size, or 'full' for full-batch gradient descent")
    o.add_argument("--early-stopping", type=int, default=0, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without val_loss improvement and keep "
                        "the best weights (default 0: off)")
    r = p.add_argument_group("run")
    r.add_argument("--threads", type=int, default=None,
                   help="threads for fastoptim's kernels and numpy's matrix products (BLAS, "
                        "through threadpoolctl when installed)")
    r.add_argument("--seed", type=int, default=0, help="seeds initialisation and shuffling")
    r.add_argument("--config", type=Path, default=None, metavar="JSON",
                   help="a JSON file of options (as written by `fastoptim search`); "
                        "options given on the command line win")


def add_subparser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a network and report held-out metrics",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(p)
    p.add_argument("--output", type=Path, default=Path("fastoptim-run"), metavar="DIR",
                   help="folder for checkpoint.npz, history.json, curves.png, metrics.json")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


# --------------------------------------------------------------------------------------


def option_defaults() -> dict:
    """Every training option's default value, by attribute name."""
    p = argparse.ArgumentParser(add_help=False)
    add_arguments(p)
    return vars(p.parse_args([]))


def apply_config(args: argparse.Namespace) -> argparse.Namespace:
    """Fills options from --config JSON where the command line left the default."""
    if args.config is None:
        return args
    parser_defaults = option_defaults()
    try:
        cfg = json.loads(Path(args.config).read_text())
    except (OSError, ValueError) as e:
        raise CommandError(f"--config {args.config}: {e}") from None
    params = cfg.get("params", cfg) if isinstance(cfg, dict) else None
    if not isinstance(params, dict):
        raise CommandError(f"--config {args.config}: expected a JSON object of options")
    for key, value in params.items():
        attr = key.replace("-", "_")
        if attr not in parser_defaults:
            raise CommandError(f"--config {args.config}: unknown option {key!r}")
        if getattr(args, attr) == parser_defaults[attr]:
            setattr(args, attr, value)
    return args


def validate(args: argparse.Namespace) -> None:
    checks = [
        (args.epochs >= 1, f"--epochs must be >= 1, got {args.epochs}"),
        (0.0 <= args.dropout < 1.0, f"--dropout must be in [0, 1), got {args.dropout}"),
        (0.0 <= args.validation_split < 1.0,
         f"--validation-split must be in [0, 1), got {args.validation_split}"),
        (args.lr is None or args.lr > 0, f"--lr must be > 0, got {args.lr}"),
        (args.weight_decay >= 0, f"--weight-decay must be >= 0, got {args.weight_decay}"),
        (args.l1 >= 0, f"--l1 must be >= 0, got {args.l1}"),
        (all(h >= 1 for h in args.hidden), f"--hidden sizes must be >= 1, got {args.hidden}"),
        (args.threads is None or args.threads >= 1, f"--threads must be >= 1, got {args.threads}"),
        (args.early_stopping >= 0, f"--early-stopping must be >= 0, got {args.early_stopping}"),
        (args.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, got {args.warmup_epochs}"),
        (not (args.early_stopping and args.validation_split == 0),
         "--early-stopping needs a validation split (--validation-split > 0)"),
        (not args.nesterov or args.momentum > 0, "--nesterov needs --momentum > 0"),
        (args.weight_decay == 0 or args.optimizer not in OPTIMIZERS
         or "weight_decay" in _spec.get(args.optimizer).defaults,
         f"--weight-decay: {args.optimizer} has no weight decay"),
    ]
    for ok, message in checks:
        if not ok:
            raise CommandError(message)


def build(args: argparse.Namespace, n_features: int, n_classes: int):
    """The model and optimizer for these options (weight decay on weights only)."""
    from fastoptim import nn

    dtype = np.float32 if args.dtype == "float32" else np.float64
    layers: list = []
    width = n_features
    for h in args.hidden:
        layers.append(nn.Dense(width, h, args.activation, l1=args.l1))
        if args.dropout > 0:
            layers.append(nn.Dropout(args.dropout))
        width = h
    layers.append(nn.Dense(width, n_classes))
    model = nn.Sequential(*layers, dtype=dtype, seed=args.seed)
    weights = [p for name, p, _ in model.named_parameters() if name.endswith("weight")]
    biases = [p for name, p, _ in model.named_parameters() if not name.endswith("weight")]
    groups = [{"params": weights, "weight_decay": args.weight_decay},
              {"params": biases, "weight_decay": 0.0}]
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    opt = _spec.build_from_options(args.optimizer, groups, vars(args), lr=lr)
    return model, opt, lr


def make_schedule(args: argparse.Namespace, lr: float, steps_per_epoch: int):
    from fastoptim import schedules

    total = max(1, args.epochs * steps_per_epoch)
    warm = int(round(args.warmup_epochs * steps_per_epoch))
    main = {
        "constant": lambda: None if not warm else schedules.constant(lr),
        "cosine": lambda: schedules.cosine(lr, total_steps=max(1, total - warm)),
        "exponential": lambda: schedules.exponential(lr, gamma=0.01 ** (1.0 / total)),
        "step": lambda: schedules.step_decay(lr, step_size=max(1, total // 3), gamma=0.1),
        "inverse-time": lambda: schedules.inverse_time(lr, power_t=0.5),
        "one-cycle": lambda: schedules.one_cycle(lr, total_steps=total),
    }[args.schedule]()
    if warm and main is not None:
        return schedules.warmup(main, warmup_steps=warm)
    return main


def prepare_data(args: argparse.Namespace):
    """(X_train, y_train, X_val, y_val, X_test, y_test, name, n_classes), standardised
    with statistics of the training part only."""
    from fastoptim import data

    try:
        ds = data.load(args.dataset, seed=args.seed)
    except (FileNotFoundError, ValueError) as e:
        raise CommandError(str(e)) from None
    X, y = ds.X_train, ds.y_train
    X_val = y_val = None
    if args.validation_split > 0:
        X, X_val, y, y_val = data.train_test_split(X, y, test_size=args.validation_split,
                                                   seed=args.seed, stratify=True)
    dtype = np.float32 if args.dtype == "float32" else np.float64
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


def train_and_evaluate(args: argparse.Namespace, *, output: Path | None, verbose: bool | None,
                       report=None, prepared=None):
    """Runs one training run with these options; returns (history, test metrics, model).

    ``report(epoch, logs)`` is called after every epoch (search uses it for pruning).
    ``prepared`` replaces prepare_data(args) with a tuple of the same form (search's
    cross-validation folds)."""
    from fastoptim import train

    validate(args)
    X, y, X_val, y_val, X_test, y_test, name, n_classes = (
        prepare_data(args) if prepared is None else prepared)
    model, opt, lr = build(args, X.shape[1], n_classes)
    steps = 1 if args.batch_size is None else -(-len(X) // args.batch_size)
    callbacks: list = []
    if args.early_stopping:
        callbacks.append(train.EarlyStopping("val_loss", patience=args.early_stopping,
                                             restore_best_weights=True))
    if output is not None:
        callbacks.append(train.ModelCheckpoint(output / "checkpoint.npz"))
    if report is not None:
        callbacks.append(_Reporter(report))
    limits = set_threads(args.threads)
    try:
        history = train.fit(model, X, y, loss="cross_entropy", optimizer=opt,
                            epochs=args.epochs, batch_size=args.batch_size,
                            schedule=make_schedule(args, lr, steps),
                            validation_data=None if X_val is None else (X_val, y_val),
                            metrics=("accuracy",), callbacks=callbacks, seed=args.seed,
                            verbose=verbose)
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
    from fastoptim.checkpoint import CheckpointError

    try:
        args = apply_config(args)
        args.output.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        verbose = False if args.quiet else None
        history, result, _ = train_and_evaluate(args, output=args.output, verbose=verbose)
        seconds = time.perf_counter() - t0
    except (CommandError, CheckpointError, FloatingPointError, OSError) as e:
        print(f"fastoptim train: error: {e}", file=sys.stderr)
        return 2
    (args.output / "history.json").write_text(json.dumps(history.to_dict(), indent=1))
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
               if k not in ("func", "command")}
    (args.output / "metrics.json").write_text(json.dumps(
        {"test": result, "options": options, "seconds": seconds}, indent=1))
    notice = save_plot(history, args.output / "curves.png")
    print(format_report(args.dataset, result, seconds))
    print(f"\nwrote {args.output}/checkpoint.npz, history.json, metrics.json"
          + ("" if notice else ", curves.png"))
    if notice:
        print(notice)
    return 0
