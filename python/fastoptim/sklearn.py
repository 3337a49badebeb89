"""scikit-learn estimators backed by fastoptim: ``MLPClassifier`` and ``MLPRegressor``.

They build their network and optimizer with the same code as `fastoptim train`
(``fastoptim.config.TrainConfig``) and train with ``fastoptim.train.fit``, so the options mean the
same thing in both places. They work with ``clone``, pickle, ``Pipeline``,
``GridSearchCV`` / ``RandomizedSearchCV`` (``n_jobs`` > 1 included) and pass
``sklearn.utils.estimator_checks``.

Threads: ``n_threads`` sets fastoptim's and BLAS's threads for the duration of each call
and restores them afterwards. Left at None, the process setting is used; joblib's process
workers (GridSearchCV's default backend) start with OMP_NUM_THREADS / OPENBLAS_NUM_THREADS
set to cores // n_jobs, so jobs x threads do not exceed the cores.

Differences from ``sklearn.neural_network.MLPClassifier``: no input scaling (put a
StandardScaler in front, as there), epochs instead of max_iter, torch's Adam (eps added
to the bias-corrected sqrt(v)) and L2 ``weight_decay`` on weights instead of alpha/n.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(est, X, y="no_validation", reset=True, **kw):
        return est._validate_data(X, y, reset=reset, **kw)

from fastoptim import spec as _spec
from fastoptim import train_command as tc
from fastoptim.config import ConfigError, TrainConfig, check_option

# TrainConfig field -> the estimator parameter it comes from (for error messages).
_PARAM_OF_FIELD = {"beta1": "betas", "beta2": "betas", "hidden": "hidden_layer_sizes",
                   "early_stopping": "n_iter_no_change",
                   "validation_split": "validation_fraction", "threads": "n_threads",
                   "seed": "random_state"}

__all__ = ["MLPClassifier", "MLPRegressor"]

# The optimizer parameters' defaults are the spec's (those of `fastoptim train`).
_OPT = {o.dest: o.default for o in _spec.cli_options()}
_OPT["lr"] = _spec.get("Adam").defaults["lr"]


class _BaseMLP(BaseEstimator):
    _loss = "cross_entropy"

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", optimizer="adam",
                 lr=_OPT["lr"], betas=(_OPT["beta1"], _OPT["beta2"]),
                 eps=_OPT["eps"], momentum=_OPT["momentum"], nesterov=_OPT["nesterov"],
                 weight_decay=0.0, l1=0.0, dropout=0.0, batch_size=32, epochs=100,
                 schedule="constant", early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, dtype="float32", random_state=None, n_threads=None,
                 state_dtype="fp32"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.l1 = l1
        self.dropout = dropout
        self.batch_size = batch_size
        self.epochs = epochs
        self.schedule = schedule
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype
        self.random_state = random_state
        self.n_threads = n_threads
        self.state_dtype = state_dtype

    # ---------------------------------------------------------------- options
    def _options(self, seed: int) -> TrainConfig:
        """These parameters as a TrainConfig (the options of `fastoptim train`), validated
        by the same code; errors name the estimator's parameter."""
        hidden = ([] if self.hidden_layer_sizes is None else
                  [self.hidden_layer_sizes] if isinstance(self.hidden_layer_sizes, numbers.Integral)
                  else self.hidden_layer_sizes)
        try:
            beta1, beta2 = self.betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {self.betas!r}") from None
        if self.early_stopping and not (isinstance(self.validation_fraction, numbers.Real)
                                        and 0 < float(self.validation_fraction) < 1):
            raise ValueError(f"validation_fraction must be in (0, 1), got "
                             f"{self.validation_fraction!r}")
        options = {"hidden": hidden, "activation": self.activation, "dropout": self.dropout,
                   "dtype": self.dtype, "optimizer": self.optimizer, "lr": self.lr,
                   "momentum": self.momentum, "nesterov": self.nesterov, "beta1": beta1,
                   "beta2": beta2, "eps": self.eps, "weight_decay": self.weight_decay,
                   "l1": self.l1, "schedule": self.schedule, "epochs": self.epochs,
                   "batch_size": self.batch_size,
                   "early_stopping": self.n_iter_no_change if self.early_stopping else 0,
                   "validation_split": self.validation_fraction if self.early_stopping
                   else 0.0,
                   "threads": self.n_threads, "seed": seed, "state_dtype": self.state_dtype}
        try:
            return TrainConfig(**options)
        except ConfigError as e:
            param = _PARAM_OF_FIELD.get(e.field, e.field)
            raise ValueError(f"{param} {e.detail}") from None

    def _np_dtype(self):
        return np.float32 if self.dtype == "float32" else np.float64

    # ---------------------------------------------------------------- threads
    def _threads(self):
        import fastoptim

        if self.n_threads is None:
            return None
        try:
            n = check_option("threads", self.n_threads)
        except ConfigError as e:
            raise ValueError(f"n_threads {e.detail}") from None
        before = fastoptim.get_num_threads()
        limits = tc.set_threads(n)
        return before, limits

    @staticmethod
    def _restore(saved) -> None:
        import fastoptim

        if saved is None:
            return
        before, limits = saved
        # BLAS first: an OpenMP-built OpenBLAS restores through the same OpenMP runtime.
        if limits is not None:
            limits.unregister()
        fastoptim.set_num_threads(before)

    # ---------------------------------------------------------------- training
    def _targets(self, y, *, fitting: bool, classes=None):
        raise NotImplementedError

    def _n_outputs(self) -> int:
        raise NotImplementedError

    def _new_model(self, n_features: int, seed: int):
        self._args = self._options(seed)
        self._model, self._opt, lr = self._args.build(n_features, self._n_outputs())
        self._lr = lr

    def _train(self, X, y, *, epochs: int, seed: int, schedule: bool):
        from fastoptim import train

        args = self._args
        validation = None
        callbacks = []
        if args.early_stopping and epochs > 1:
            from fastoptim import data

            strat = self._loss == "cross_entropy"
            try:
                X, Xv, y, yv = data.train_test_split(X, y, test_size=args.validation_split,
                                                     seed=seed, stratify=strat)
            except ValueError:
                Xv = None
            if Xv is not None and len(Xv) and len(X):
                validation = (Xv, yv)
                callbacks.append(train.EarlyStopping("val_loss", patience=args.early_stopping,
                                                     restore_best_weights=True))
        steps = args.steps_per_epoch(len(X))
        sched = args.build_schedule(self._lr, steps, epochs=epochs) if schedule else None
        history = train.fit(self._model, X, y, loss=self._loss, optimizer=self._opt,
                            epochs=epochs, batch_size=args.batch_size, schedule=sched,
                            validation_data=validation, metrics=(), callbacks=callbacks,
                            seed=seed, verbose=False)
        self.loss_curve_ = list(getattr(self, "loss_curve_", [])) + list(history["loss"])
        self.n_iter_ = getattr(self, "n_iter_", 0) + len(history.epochs)

    def _fit(self, X, y, *, partial: bool, classes=None):
        first = not (partial and hasattr(self, "_model"))
        X, y = _validate_data(self, X, y, reset=first, dtype=self._np_dtype(), order="C",
                              multi_output=self._loss != "cross_entropy", y_numeric=False)
        y = self._targets(y, fitting=first, classes=classes)
        rs = check_random_state(self.random_state)
        saved = self._threads()
        try:
            if first:
                for attr in ("loss_curve_", "n_iter_"):
                    self.__dict__.pop(attr, None)
                self._seed = int(rs.randint(np.iinfo(np.int32).max))
                self._new_model(X.shape[1], self._seed)
                self._calls = 0
            self._calls += 1
            self._train(X, y, epochs=1 if partial else int(self.epochs),
                        seed=self._seed + self._calls, schedule=not partial)
        finally:
            self._restore(saved)
        return self

    def fit(self, X, y):
        """Trains a new network for ``epochs`` epochs on (X, y)."""
        return self._fit(X, y, partial=False)

    def _output(self, X):
        from fastoptim import train

        check_is_fitted(self, "_model")
        X = _validate_data(self, X, reset=False, dtype=self._np_dtype(), order="C")
        saved = self._threads()
        try:
            return np.asarray(train.predict(self._model, X), dtype=np.float64)
        finally:
            self._restore(saved)

    # ---------------------------------------------------------------- pickle
    def __getstate__(self):
        state = dict(self.__dict__)
        model, opt = state.pop("_model", None), state.pop("_opt", None)
        if model is not None:
            state["_model_state"] = model.state_dict()
            state["_opt_state"] = opt.state_dict()
        return state

    def __setstate__(self, state):
        model_state = state.pop("_model_state", None)
        opt_state = state.pop("_opt_state", None)
        self.__dict__.update(state)
        if "_args" in state:  # pickles of older versions hold an argparse.Namespace
            self._args = tc.as_config(state["_args"])
        if model_state is not None:
            self._model, self._opt, _ = self._args.build(self.n_features_in_,
                                                         self._n_outputs())
            self._model.load_state_dict(model_state)
            self._opt.load_state_dict(opt_state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A dense network classifier (softmax cross-entropy) trained by fastoptim.

    Args:
        hidden_layer_sizes: widths of the hidden layers (() for a linear model).
        activation: relu, leaky_relu, gelu, tanh or sigmoid.
        optimizer: one of fastoptim.spec.cli_choices() (adam, adamw, sgd, rmsprop, ...);
            lr, betas, eps, momentum, nesterov, weight_decay (L2 on weights; decoupled for
            adamw) as in torch.optim; None (the default of betas' elements, eps and
            momentum) means the optimizer's own value (Lion's beta2 0.99, Adagrad's eps
            1e-10, ...).
        l1: L1 penalty on hidden weights; dropout: after each hidden layer.
        batch_size: mini-batch size, None for full batch; epochs: passes over the data.
        schedule: learning-rate schedule over the run (as `fastoptim train --schedule`).
        early_stopping: hold out validation_fraction (stratified), stop after
            n_iter_no_change epochs without val_loss improvement, keep the best weights.
        dtype: float32 or float64 parameters; random_state: seeds init, split, shuffling;
        n_threads: threads during fit/predict (None: leave the process setting).
        state_dtype: storage of the optimizer state, "fp32", "bf16" or "int8" (8-bit
            blockwise; adam, adamw, sgd, rmsprop, adagrad with float32 parameters; see
            fastoptim.formats).

    Attributes: classes_, n_features_in_, n_iter_ (epochs run), loss_curve_.
    """

    def _targets(self, y, *, fitting, classes=None):
        check_classification_targets(y)
        if fitting:
            self._encoder = LabelEncoder().fit(y if classes is None else classes)
            self.classes_ = self._encoder.classes_
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes {np.unique(classes)} differ from the first "
                             f"partial_fit's {self.classes_}")
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            raise ValueError(f"y has labels {unknown} not in classes {self.classes_}")
        return self._encoder.transform(y).astype(np.int64)

    def _n_outputs(self) -> int:
        return len(self.classes_)

    def partial_fit(self, X, y, classes=None):
        """One epoch on (X, y), continuing the network and optimizer state (constant lr).
        The first call needs ``classes`` (every label that will ever appear)."""
        if not hasattr(self, "_model") and classes is None:
            raise ValueError("the first partial_fit needs classes=[every label]")
        return self._fit(X, y, partial=True, classes=classes)

    def predict_proba(self, X):
        """Class probabilities (softmax of the network's logits), shape (n, n_classes)."""
        z = self._output(X)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def predict(self, X):
        index = self._output(X).argmax(axis=1)
        return self.classes_[index]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A dense network regressor (mean squared error) trained by fastoptim; same
    arguments as MLPClassifier. y may have several columns."""

    _loss = "mse"

    def _targets(self, y, *, fitting, classes=None):
        y = np.asarray(y, dtype=self._np_dtype())
        if fitting:
            self._y_1d = y.ndim == 1
            self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
        elif (1 if y.ndim == 1 else y.shape[1]) != self.n_outputs_:
            raise ValueError(f"y has {1 if y.ndim == 1 else y.shape[1]} outputs, expected "
                             f"{self.n_outputs_}")
        return np.ascontiguousarray(y.reshape(len(y), -1))

    def _n_outputs(self) -> int:
        return self.n_outputs_

    def partial_fit(self, X, y):
        """One epoch on (X, y), continuing the network and optimizer state (constant lr)."""
        return self._fit(X, y, partial=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def predict(self, X):
        out = self._output(X)
        return out.ravel() if self._y_1d else out
