"""Layers and models whose parameters live in one contiguous arena.

A :class:`Sequential` owns two flat buffers, one with every parameter and one with every
gradient; each layer holds views into them. An optimizer therefore updates the whole model
in one native call::

    import numpy as np, fastoptim
    from fastoptim import losses, nn

    model = nn.Sequential(nn.Dense(784, 128, "relu"), nn.Dense(128, 10), seed=0)
    p, g = model.flat_parameters(), model.flat_gradients()
    m, v = np.zeros_like(p), np.zeros_like(p)
    for step, (X, y) in enumerate(batches, start=1):
        logits = model.forward(X, training=True)
        loss, dlogits = losses.softmax_cross_entropy(logits, y)
        model.backward(dlogits)
        fastoptim.adam_step(p, g, m, v, step=step, lr=1e-3)

``model.parameters()`` / ``model.gradients()`` give the per-layer views (lists of arrays
for optimizers that take lists); :meth:`Sequential.param_groups` splits them into
weights and biases (for example no weight decay on biases).

Conventions:

* ``Dense`` stores its weight as ``(in_features, out_features)`` (``y = x @ W + b``);
  torch's ``Linear.weight`` is the transpose.
* ``backward`` OVERWRITES the gradients with this batch's gradients (no ``zero_grad``
  needed between steps); ``backward(..., accumulate=True)`` adds to them instead, and
  :meth:`Sequential.zero_grad` clears the whole gradient arena with one ``fill``.
* ``forward`` returns a buffer owned by the last layer and overwritten by the next
  ``forward``; copy it to keep it. Inputs must be C-contiguous arrays of the model's dtype.
* Matrix products go through numpy (its BLAS); bias add + activation and their backward
  (with the bias gradient), dropout and penalties are fused native kernels.
* Inference is batch-invariant: with ``training=False`` a ``Dense`` layer multiplies in
  blocks of ``ROW_BLOCK`` rows (the last block padded with zero rows in a reused
  buffer), so every row goes through the same matrix-product call shape and its output
  is bitwise the same whichever other rows share its batch. (BLAS kernels block rows
  differently for different row counts, which changes float rounding by ~1e-7.)
  Training keeps one matrix product per batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastoptim import _core

__all__ = [
    "GELU",
    "Dense",
    "Dropout",
    "Layer",
    "LeakyReLU",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "penalty",
]

ROW_BLOCK = 64  # rows per matrix product in evaluation mode (batch-invariant inference)

_ACTIVATIONS = (None, "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "softmax")
_INITS = ("he_normal", "he_uniform", "glorot_uniform", "glorot_normal", "zeros")
_INIT_ALIASES = {"he": "he_normal", "kaiming": "he_normal", "glorot": "glorot_uniform",
                 "xavier": "glorot_uniform", "xavier_uniform": "glorot_uniform",
                 "xavier_normal": "glorot_normal"}


def penalty(params, grads=None, *, l1: float = 0.0, l2: float = 0.0) -> float:
    """Explicit L1/L2 penalty ``l1 sum|p| + l2/2 sum p^2`` over an array or a list of arrays,
    adding its (sub)gradient ``l1 sign(p) + l2 p`` into ``grads`` in the same native pass
    (subgradient 0 at p = 0). Returns the penalty. For L2 as decoupled or coupled weight
    decay, use the optimizer's ``weight_decay`` instead."""
    return _core.penalty(params, grads, l1=float(l1), l2=float(l2))


def _init(view: np.ndarray, how: str, fan_in: int, fan_out: int, rng) -> None:
    """Fills a weight view in place, drawing in float64 so both dtypes get the same values."""
    if how == "zeros":
        view.fill(0)
        return
    if how == "he_normal":
        v = rng.standard_normal(view.shape) * np.sqrt(2.0 / fan_in)
    elif how == "he_uniform":
        lim = np.sqrt(6.0 / fan_in)
        v = rng.uniform(-lim, lim, view.shape)
    elif how == "glorot_uniform":
        lim = np.sqrt(6.0 / (fan_in + fan_out))
        v = rng.uniform(-lim, lim, view.shape)
    else:  # glorot_normal
        v = rng.standard_normal(view.shape) * np.sqrt(2.0 / (fan_in + fan_out))
    view[...] = v


def _check_input(x, dtype, features: int | None, name: str = "x") -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype != dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the model is {np.dtype(dtype)}")
    if x.ndim != 2 or (features is not None and x.shape[1] != features):
        want = f"(batch, {features})" if features is not None else "(batch, features)"
        raise ValueError(f"{name} must have shape {want}, got {x.shape}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")


class Layer:
    """Base class. A layer declares its parameters with :meth:`param_specs`; the model
    allocates them and calls :meth:`bind` with views."""

    dtype: np.dtype = np.dtype(np.float32)

    def param_specs(self) -> list[tuple[str, tuple[int, ...], str]]:
        """(name, shape, initializer) of each parameter; initializer as in ``Dense``."""
        return []

    def bind(self, params: dict, grads: dict, dtype, rng) -> None:
        self.dtype = np.dtype(dtype)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray, *, accumulate: bool = False,
                 input_grad: bool = True) -> np.ndarray | None:
        raise NotImplementedError

    def _buffer(self, key: str, shape) -> np.ndarray:
        bufs = self.__dict__.setdefault("_bufs", {})
        b = bufs.get(key)
        if b is None or b.shape != tuple(shape) or b.dtype != self.dtype:
            b = np.empty(shape, self.dtype)
            bufs[key] = b
        return b


class _Activation(Layer):
    """An activation as its own layer (the same fused kernels as ``Dense``, no bias)."""

    activation: str | None = None
    alpha = 0.01

    def forward(self, x, training=False):
        _check_input(x, self.dtype, None)
        y = self._buffer("y", x.shape)
        _core.bias_act_forward(x, y, activation=self.activation, alpha=self.alpha)
        self._x, self._y = x, y
        return y

    def backward(self, dy, *, accumulate=False, input_grad=True):
        if not input_grad:
            return None
        dx = self._buffer("dx", dy.shape)
        _core.act_backward(dy, dx, self._x, self._y, activation=self.activation,
                           alpha=self.alpha)
        return dx

    def __repr__(self):
        return f"{type(self).__name__}()"


class ReLU(_Activation):
    activation = "relu"


class LeakyReLU(_Activation):
    activation = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01):
        self.alpha = float(negative_slope)


class Sigmoid(_Activation):
    activation = "sigmoid"


class Tanh(_Activation):
    activation = "tanh"


class GELU(_Activation):
    """GELU; ``approximate="none"`` (erf form, torch's default) or ``"tanh"``."""

    def __init__(self, approximate: str = "none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        self.activation = "gelu" if approximate == "none" else "gelu_tanh"


class Softmax(_Activation):
    """Softmax over the last axis. For training with cross-entropy, keep logits and use
    :func:`fastoptim.losses.softmax_cross_entropy` (fused and stable) instead."""

    activation = "softmax"


class Dense(Layer):
    """Fully connected layer ``y = activation(x @ W + b)``.

    Args:
        in_features, out_features: sizes; ``W`` has shape (in_features, out_features).
        activation: None, "relu", "leaky_relu", "sigmoid", "tanh", "gelu" (erf form),
            "gelu_tanh" or "softmax"; fused with the bias add natively.
        bias: whether the layer has a bias (initialised to zero).
        init: weight initializer: "he_normal" (alias "he"), "he_uniform",
            "glorot_uniform" (aliases "glorot", "xavier"), "glorot_normal", "zeros"; default
            He for relu-like activations, Glorot otherwise.
        alpha: LeakyReLU negative slope.
        l1, l2: per-layer explicit penalties on the weight (not the bias), applied by
            :meth:`Sequential.add_penalties`.
    """

    def __init__(self, in_features: int, out_features: int, activation: str | None = None,
                 *, bias: bool = True, init: str | None = None, alpha: float = 0.01,
                 l1: float = 0.0, l2: float = 0.0):
        if int(in_features) < 1 or int(out_features) < 1:
            raise ValueError("in_features and out_features must be >= 1")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        if init is None:
            init = "he_normal" if activation in ("relu", "leaky_relu", "gelu",
                                                 "gelu_tanh") else "glorot_uniform"
        init = _INIT_ALIASES.get(init, init)
        if init not in _INITS:
            raise ValueError(f"init must be one of {_INITS} or an alias, got {init!r}")
        if l1 < 0 or l2 < 0:
            raise ValueError("l1 and l2 must be >= 0")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.activation, self.alpha, self.init = activation, float(alpha), init
        self.has_bias, self.l1, self.l2 = bool(bias), float(l1), float(l2)

    def param_specs(self):
        specs = [("weight", (self.in_features, self.out_features), self.init)]
        if self.has_bias:
            specs.append(("bias", (self.out_features,), "zeros"))
        return specs

    def bind(self, params, grads, dtype, rng):
        super().bind(params, grads, dtype, rng)
        self.weight, self.weight_grad = params["weight"], grads["weight"]
        self.bias = params.get("bias")
        self.bias_grad = grads.get("bias")

    def forward(self, x, training=False):
        _check_input(x, self.dtype, self.in_features)
        z = self._buffer("z", (x.shape[0], self.out_features))
        if training:
            np.matmul(x, self.weight, out=z)
        else:
            self._blocked_matmul(x, z)
        if self.activation is None:
            if self.bias is not None:
                _core.bias_act_forward(z, None, self.bias)
            y = z
        else:
            y = self._buffer("y", z.shape)
            _core.bias_act_forward(z, y, self.bias, activation=self.activation,
                                   alpha=self.alpha)
        self._x, self._z, self._y = x, z, y
        return y

    def _blocked_matmul(self, x, z):
        """z = x @ W in blocks of ROW_BLOCK rows, each one identical BLAS call shape."""
        n, b = x.shape[0], ROW_BLOCK
        full = n - n % b
        for i in range(0, full, b):
            np.matmul(x[i:i + b], self.weight, out=z[i:i + b])
        rest = n - full
        if rest:
            xp = self._buffer("pad_x", (b, self.in_features))
            zp = self._buffer("pad_z", (b, self.out_features))
            xp[:rest] = x[full:]
            xp[rest:] = 0
            np.matmul(xp, self.weight, out=zp)
            z[full:] = zp[:rest]

    def backward(self, dy, *, accumulate=False, input_grad=True):
        if dy.shape != self._y.shape or dy.dtype != self.dtype:
            raise ValueError(f"grad_out must have shape {self._y.shape} and dtype "
                             f"{self.dtype}, got {dy.shape} {dy.dtype}")
        if self.activation is None:
            dz = dy
            if self.bias is not None:
                _core.act_backward(dy, dbias=self.bias_grad, accumulate_bias=accumulate)
        else:
            dz = self._buffer("dz", dy.shape)
            _core.act_backward(dy, dz, self._z, self._y, self.bias_grad,
                               activation=self.activation, alpha=self.alpha,
                               accumulate_bias=accumulate)
        if accumulate:
            self.weight_grad += self._x.T @ dz
        else:
            np.matmul(self._x.T, dz, out=self.weight_grad)
        if not input_grad:
            return None
        dx = self._buffer("dx", self._x.shape)
        np.matmul(dz, self.weight.T, out=dx)
        return dx

    def __repr__(self):
        return (f"Dense({self.in_features}, {self.out_features}, "
                f"activation={self.activation!r})")


class Dropout(Layer):
    """Inverted dropout: in training, each element is zeroed with probability ``p`` and
    the rest scaled by ``1 / (1 - p)``; identity in evaluation mode. The mask is drawn by
    a native counter-based generator from (seed, call number, element index) — the same
    for any thread count — and reused in backward. ``seed=None`` takes one from the
    model's seed. The element index counts from ``row_offset`` rows into the batch (set by
    ``Sequential.forward``), so a data-parallel rank working on rows [r, r + k) of a batch
    draws the masks a one-process run draws for those rows."""

    def __init__(self, p: float = 0.5, *, seed: int | None = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p, self.seed, self.calls = float(p), seed, 0
        self.row_offset = 0
        self._mask = None

    def bind(self, params, grads, dtype, rng):
        super().bind(params, grads, dtype, rng)
        if self.seed is None:
            self.seed = int(rng.integers(0, 2**63))

    def forward(self, x, training=False):
        if not training or self.p == 0.0:
            self._mask = None
            return x
        _check_input(x, self.dtype, None)
        y = self._buffer("y", x.shape)
        mask = self._buffer("mask", x.shape)
        row = x.size // x.shape[0] if x.ndim and x.shape[0] else 0
        _core.dropout_forward(x, y, mask, p=self.p, seed=int(self.seed or 0) % 2**64,
                              stream=self.calls, offset=int(self.row_offset) * row)
        self.calls += 1
        self._mask = mask
        return y

    def backward(self, dy, *, accumulate=False, input_grad=True):
        if not input_grad:
            return None
        if self._mask is None:
            return dy
        dx = self._buffer("dx", dy.shape)
        np.multiply(dy, self._mask, out=dx)
        return dx

    def __repr__(self):
        return f"Dropout(p={self.p})"


class Sequential:
    """Layers applied in order, with all parameters in one arena and all gradients in
    another (weights first, then biases: each kind is one contiguous slice).

    Args:
        *layers: ``Dense``, activation and ``Dropout`` layers.
        dtype: float32 (default) or float64.
        seed: seeds every initializer (and dropout layers without a seed).
    """

    def __init__(self, *layers: Layer, dtype=np.float32, seed: int = 0):
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        self.layers, self.dtype = list(layers), dtype
        specs = [(i, name, tuple(shape), init) for i, layer in enumerate(self.layers)
                 for name, shape, init in layer.param_specs()]
        # weights (ndim >= 2) first, then biases: two contiguous groups
        specs.sort(key=lambda s: (len(s[2]) < 2, s[0]))
        sizes = [int(np.prod(s[2])) for s in specs]
        total = int(sum(sizes))
        self._params = np.zeros(total, dtype)
        self._grads = np.zeros(total, dtype)
        self._names: list[str] = []
        self._kinds: list[str] = []
        views: dict[int, tuple[dict, dict]] = {i: ({}, {}) for i in range(len(self.layers))}
        self._pviews: list[np.ndarray] = []
        self._gviews: list[np.ndarray] = []
        off = 0
        self._n_weight = 0
        for (i, name, shape, _init_name), n in zip(specs, sizes, strict=True):
            pv = self._params[off:off + n].reshape(shape)
            gv = self._grads[off:off + n].reshape(shape)
            views[i][0][name], views[i][1][name] = pv, gv
            self._names.append(f"{i}.{name}")
            self._kinds.append("weight" if len(shape) >= 2 else "bias")
            if len(shape) >= 2:
                self._n_weight = off + n
            self._pviews.append(pv)
            self._gviews.append(gv)
            off += n
        rng = np.random.default_rng(seed)
        # initialise in layer order, independent of the arena layout
        for i, name, shape, init in sorted(specs, key=lambda s: s[0]):
            fan_in = shape[0] if len(shape) >= 2 else 1
            fan_out = shape[-1]
            _init(views[i][0][name], init, fan_in, fan_out, rng)
        for i, layer in enumerate(self.layers):
            layer.bind(views[i][0], views[i][1], dtype, rng)
        self._in_features = next((layer.in_features for layer in self.layers
                                  if isinstance(layer, Dense)), None)

    # --- running ---------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False, *,
                row_offset: int = 0) -> np.ndarray:
        """Runs every layer; ``training`` switches dropout on. Returns the last layer's
        output buffer (overwritten by the next call). ``row_offset``: where x's first row
        sits in the whole batch (a data-parallel rank's share), so dropout draws the masks
        of those rows."""
        _check_input(x, self.dtype, None)
        if not isinstance(row_offset, (int, np.integer)) or row_offset < 0:
            raise ValueError(f"row_offset must be an int >= 0, got {row_offset!r}")
        for layer in self.layers:
            if isinstance(layer, Dropout):
                layer.row_offset = int(row_offset)
            x = layer.forward(x, training)
        return x

    def skip_training_forward(self) -> None:
        """Advances every dropout layer's call counter as a training ``forward`` would,
        for a data-parallel rank with no rows in a batch: the ranks' masks stay in step."""
        for layer in self.layers:
            if isinstance(layer, Dropout) and layer.p != 0.0:
                layer.calls += 1

    __call__ = forward

    def backward(self, grad_out: np.ndarray, *, accumulate: bool = False,
                 input_grad: bool = False) -> np.ndarray | None:
        """Back-propagates d(loss)/d(output) of the last ``forward``. Overwrites the
        gradient arena (adds to it with ``accumulate=True``). Returns d(loss)/d(input)
        when ``input_grad`` (skipped by default: it costs a matrix product)."""
        _check_input(grad_out, self.dtype, None, "grad_out")
        g: Any = grad_out  # an array while layers remain (they return one when asked)
        for k in range(len(self.layers) - 1, -1, -1):
            need = input_grad or k > 0
            g = self.layers[k].backward(g, accumulate=accumulate, input_grad=need)
        return g

    def zero_grad(self) -> None:
        """Sets every gradient to zero (one fill of the gradient arena). Only needed before
        ``backward(..., accumulate=True)``."""
        self._grads.fill(0)

    def add_penalties(self) -> float:
        """Adds each Dense layer's own ``l1``/``l2`` penalty gradient on its weight into the
        gradients (natively, fused) and returns the summed penalty (add it to the loss)."""
        total = 0.0
        for layer in self.layers:
            if isinstance(layer, Dense) and (layer.l1 or layer.l2):
                total += _core.penalty(layer.weight, layer.weight_grad, l1=layer.l1,
                                       l2=layer.l2)
        return total

    # --- parameters --------------------------------------------------------------------
    def parameters(self) -> list[np.ndarray]:
        """Per-parameter views into the parameter arena (weights first, then biases)."""
        return list(self._pviews)

    def gradients(self) -> list[np.ndarray]:
        """Per-parameter views into the gradient arena, in the order of ``parameters()``."""
        return list(self._gviews)

    def flat_parameters(self) -> np.ndarray:
        """The whole parameter arena (1-D); updating it updates every layer."""
        return self._params

    def flat_gradients(self) -> np.ndarray:
        return self._grads

    def named_parameters(self) -> list[tuple[str, np.ndarray]]:
        """(name, parameter view) pairs as in torch, names like ``"0.weight"``."""
        return list(zip(self._names, self._pviews, strict=True))

    def named_parameters_and_gradients(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """(name, parameter view, gradient view) triples, in the order of
        ``named_parameters()``."""
        return list(zip(self._names, self._pviews, self._gviews, strict=True))

    def param_groups(self) -> list[dict]:
        """Two groups, each one contiguous slice of the arenas: ``"weight"`` (matrices) and
        ``"bias"``. Give them different settings, e.g. weight decay on weights only::

            for grp in model.param_groups():
                wd = 1e-4 if grp["kind"] == "weight" else 0.0
                fastoptim.adam_step(grp["params"], grp["grads"], ..., weight_decay=wd)
        """
        nw = self._n_weight
        out = []
        for kind, sl in (("weight", slice(0, nw)), ("bias", slice(nw, self._params.size))):
            names = [n for n, k in zip(self._names, self._kinds, strict=True) if k == kind]
            if names:
                out.append({"kind": kind, "names": names, "params": self._params[sl],
                            "grads": self._grads[sl]})
        return out

    def num_parameters(self) -> int:
        return int(self._params.size)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter as plain arrays, keyed by name."""
        return {n: p.copy() for n, p in zip(self._names, self._pviews, strict=True)}

    def load_state_dict(self, state: dict) -> None:
        """Copies arrays into the parameters (same names and shapes; cast to the model's
        dtype). Raises KeyError/ValueError, changing nothing, on a mismatch."""
        missing = [n for n in self._names if n not in state]
        extra = [n for n in state if n not in self._names]
        if missing or extra:
            raise KeyError(f"state_dict mismatch: missing {missing}, unexpected {extra}")
        arrays = {}
        for n, p in zip(self._names, self._pviews, strict=True):
            a = np.asarray(state[n])
            if a.shape != p.shape:
                raise ValueError(f"{n} has shape {a.shape}, expected {p.shape}")
            arrays[n] = a
        for n, p in zip(self._names, self._pviews, strict=True):
            p[...] = arrays[n]

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential({inner}, dtype={self.dtype.name})"
