"""float64 NumPy references for every native kernel.

Each function takes and returns plain arrays (copies; nothing is updated in place) and
follows torch.optim's documented algorithms step by step.
"""

from __future__ import annotations

import math

import numpy as np


def sgd(p, g, buf, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
        maximize=False, first_step=False):
    """One step of torch.optim.SGD. Returns (param, momentum_buffer)."""
    p = np.asarray(p, np.float64).copy()
    d = -np.asarray(g, np.float64) if maximize else np.asarray(g, np.float64).copy()
    if weight_decay:
        d = d + weight_decay * p
    new_buf = None
    if momentum:
        if first_step:
            new_buf = d.copy()
        else:
            new_buf = momentum * np.asarray(buf, np.float64) + (1.0 - dampening) * d
        d = d + momentum * new_buf if nesterov else new_buf
    return p - lr * d, new_buf


def adam(p, g, m, v, vmax, *, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
         weight_decay=0.0, decoupled_weight_decay=False, amsgrad=False, maximize=False):
    """One step of torch.optim.Adam / AdamW. Returns (param, exp_avg, exp_avg_sq, max)."""
    p = np.asarray(p, np.float64).copy()
    d = -np.asarray(g, np.float64) if maximize else np.asarray(g, np.float64).copy()
    if weight_decay:
        if decoupled_weight_decay:
            p = p * (1.0 - lr * weight_decay)
        else:
            d = d + weight_decay * p
    m = beta1 * np.asarray(m, np.float64) + (1.0 - beta1) * d
    v = beta2 * np.asarray(v, np.float64) + (1.0 - beta2) * d * d
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    vhat = v
    new_vmax = None
    if amsgrad:
        new_vmax = np.maximum(np.asarray(vmax, np.float64), v)
        vhat = new_vmax
    denom = np.sqrt(vhat) / np.sqrt(bc2) + eps
    return p - (lr / bc1) * m / denom, m, v, new_vmax


def global_norm(arrays):
    return float(np.sqrt(sum(float(np.sum(np.asarray(a, np.float64) ** 2)) for a in arrays)))


def rmsprop(p, g, sq, buf, gavg, *, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
            momentum=0.0, centered=False, maximize=False):
    """One step of torch.optim.RMSprop. Returns (param, square_avg, momentum_buffer,
    grad_avg); the last two are None when unused."""
    p = np.asarray(p, np.float64).copy()
    d = -np.asarray(g, np.float64) if maximize else np.asarray(g, np.float64).copy()
    if weight_decay:
        d = d + weight_decay * p
    sq = alpha * np.asarray(sq, np.float64) + (1.0 - alpha) * d * d
    new_gavg = None
    if centered:
        new_gavg = alpha * np.asarray(gavg, np.float64) + (1.0 - alpha) * d
        avg = np.sqrt(sq - new_gavg * new_gavg) + eps
    else:
        avg = np.sqrt(sq) + eps
    new_buf = None
    if momentum > 0:
        new_buf = momentum * np.asarray(buf, np.float64) + d / avg
        return p - lr * new_buf, sq, new_buf, new_gavg
    return p - lr * d / avg, sq, new_buf, new_gavg


def adagrad(p, g, s, *, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
            maximize=False):
    """One step of torch.optim.Adagrad. Returns (param, sum)."""
    p = np.asarray(p, np.float64).copy()
    d = -np.asarray(g, np.float64) if maximize else np.asarray(g, np.float64).copy()
    if weight_decay:
        d = d + weight_decay * p
    clr = lr / (1.0 + (step - 1) * lr_decay)
    s = np.asarray(s, np.float64) + d * d
    return p - clr * d / (np.sqrt(s) + eps), s
def adamax(p, g, m, u, *, step, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
           maximize=False):
    """One step of torch.optim.Adamax. Returns (param, exp_avg, exp_inf)."""
    p = np.asarray(p, np.float64).copy()
    d = -np.asarray(g, np.float64) if maximize else np.asarray(g, np.float64).copy()
    if weight_decay:
        d = d + weight_decay * p
    m = beta1 * np.asarray(m, np.float64) + (1.0 - beta1) * d
    u = np.maximum(beta2 * np.asarray(u, np.float64), np.abs(d) + eps)
    clr = lr / (1.0 - beta1**step)
    return p - clr * m / u, m, u


def _decayed(p, g, weight_decay, decoupled, lr, maximize):
    p = np.asarray(p, np.float64).copy()
    d = -np.asarray(g, np.float64) if maximize else np.asarray(g, np.float64).copy()
    if weight_decay:
        if decoupled:
            p = p * (1.0 - lr * weight_decay)
        else:
            d = d + weight_decay * p
    return p, d


def nadam(p, g, m, v, *, step, mu_product, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8,
          weight_decay=0.0, momentum_decay=4e-3, decoupled_weight_decay=False,
          maximize=False):
    """One step of torch.optim.NAdam; mu_product includes this step's mu (as the kernel
    takes it). Returns (param, exp_avg, exp_avg_sq)."""
    p, d = _decayed(p, g, weight_decay, decoupled_weight_decay, lr, maximize)
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    m = beta1 * np.asarray(m, np.float64) + (1.0 - beta1) * d
    v = beta2 * np.asarray(v, np.float64) + (1.0 - beta2) * d * d
    denom = np.sqrt(v / (1.0 - beta2**step)) + eps
    p = p - lr * (1.0 - mu) / (1.0 - mu_product) * d / denom
    p = p - lr * mu_next / (1.0 - mu_product * mu_next) * m / denom
    return p, m, v


def radam(p, g, m, v, *, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
          decoupled_weight_decay=False, maximize=False):
    """One step of torch.optim.RAdam. Returns (param, exp_avg, exp_avg_sq)."""
    p, d = _decayed(p, g, weight_decay, decoupled_weight_decay, lr, maximize)
    m = beta1 * np.asarray(m, np.float64) + (1.0 - beta1) * d
    v = beta2 * np.asarray(v, np.float64) + (1.0 - beta2) * d * d
    bc1, bc2 = 1.0 - beta1**step, 1.0 - beta2**step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * beta2**step / bc2
    if rho_t > 5.0:
        r = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        return p - lr * m / bc1 * np.sqrt(bc2) / (np.sqrt(v) + eps) * r, m, v
    return p - lr * m / bc1, m, v


def adadelta(p, g, sq, acc, *, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False):
    """One step of torch.optim.Adadelta. Returns (param, square_avg, acc_delta)."""
    p, d = _decayed(p, g, weight_decay, False, lr, maximize)
    sq = rho * np.asarray(sq, np.float64) + (1.0 - rho) * d * d
    acc = np.asarray(acc, np.float64)
    delta = np.sqrt(acc + eps) / np.sqrt(sq + eps) * d
    acc = rho * acc + (1.0 - rho) * delta * delta
    return p - lr * delta, sq, acc


def rprop(p, g, prev, ss, *, etaminus=0.5, etaplus=1.2, step_size_min=1e-6,
          step_size_max=50.0, maximize=False):
    """One step of torch.optim.Rprop. Returns (param, prev, step_size)."""
    p = np.asarray(p, np.float64).copy()
    d = -np.asarray(g, np.float64) if maximize else np.asarray(g, np.float64).copy()
    prod = d * np.asarray(prev, np.float64)
    f = np.where(prod > 0, etaplus, np.where(prod < 0, etaminus, 1.0))
    ss = np.clip(np.asarray(ss, np.float64) * f, step_size_min, step_size_max)
    d = np.where(prod < 0, 0.0, d)
    return p - np.sign(d) * ss, d, ss


def asgd(p, g, ax, *, eta, mu, lambd=1e-4, weight_decay=0.0, maximize=False):
    """One step of torch.optim.ASGD given the previous step's eta and mu. Returns
    (param, ax)."""
    p = np.asarray(p, np.float64).copy()
    d = -np.asarray(g, np.float64) if maximize else np.asarray(g, np.float64).copy()
    if weight_decay:
        d = d + weight_decay * p
    p = p * (1.0 - lambd * eta) - eta * d
    ax = np.asarray(ax, np.float64)
    return p, (p.copy() if mu == 1 else ax + mu * (p - ax))


def lion(p, g, m, *, lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0, maximize=False):
    """One step of lion-pytorch's Lion (weight_decay as the kernel takes it: already
    divided by the initial lr when decoupled). Returns (param, exp_avg)."""
    p = np.asarray(p, np.float64) * (1.0 - lr * weight_decay)
    d = -np.asarray(g, np.float64) if maximize else np.asarray(g, np.float64)
    m = np.asarray(m, np.float64)
    p = p - lr * np.sign(beta1 * m + (1.0 - beta1) * d)
    return p, beta2 * m + (1.0 - beta2) * d


def ademamix(p, g, m1, v, m2, *, step, lr=1e-3, beta1=0.9, beta2=0.999, beta3=0.9999,
             alpha=5.0, t_alpha_beta3=0.0, eps=1e-8, weight_decay=0.0, weight_decouple=False,
             fixed_decay=False, maximize=False):
    """One step of pytorch-optimizer's AdEMAMix. Returns (param, exp_avg, exp_avg_sq,
    exp_avg_slow)."""
    p = np.asarray(p, np.float64).copy()
    d = -np.asarray(g, np.float64) if maximize else np.asarray(g, np.float64).copy()
    if weight_decay:
        if weight_decouple:
            p = p * (1.0 - weight_decay * (1.0 if fixed_decay else lr))
        else:
            d = d + weight_decay * p
    if t_alpha_beta3:
        r = step / t_alpha_beta3
        alpha = min(step * alpha / t_alpha_beta3, alpha)
        l1, l3 = np.log(beta1), np.log(beta3)
        beta3 = min(float(np.exp(l1 * l3 / ((1 - r) * l3 + r * l1))), beta3)
    m1 = beta1 * np.asarray(m1, np.float64) + (1 - beta1) * d
    v = beta2 * np.asarray(v, np.float64) + (1 - beta2) * d * d
    m2 = beta3 * np.asarray(m2, np.float64) + (1 - beta3) * d
    denom = np.sqrt(v) / np.sqrt(1 - beta2**step) + eps
    return p - lr * (m1 / (1 - beta1**step) + alpha * m2) / denom, m1, v, m2


def lerp(a, b, w):
    """torch.lerp(a, b, w) in float64: a + w (b - a)."""
    a = np.asarray(a, np.float64)
    return a + w * (np.asarray(b, np.float64) - a)


def schedulefree_adamw(p, g, z, v, *, lr=0.0025, beta1=0.9, beta2=0.999, eps=1e-8,
                       weight_decay=0.0, ckp1, bias_correction2):
    """One step of schedulefree's AdamWScheduleFree on y (the parameter), with the step's
    scheduled lr, averaging weight ckp1 and bias correction. Returns (param, z,
    exp_avg_sq)."""
    y = np.asarray(p, np.float64)
    g = np.asarray(g, np.float64)
    z = np.asarray(z, np.float64)
    v = beta2 * np.asarray(v, np.float64) + (1 - beta2) * g * g
    u = g / (np.sqrt(v / bias_correction2) + eps) + weight_decay * y
    y = lerp(y, z, ckp1) + lr * (beta1 * (1 - ckp1) - 1) * u
    return y, z - lr * u, v


def schedulefree_sgd(p, g, z, *, lr=1.0, momentum=0.9, weight_decay=0.0, ckp1):
    """One step of schedulefree's SGDScheduleFree on y. Returns (param, z)."""
    y = np.asarray(p, np.float64)
    z = np.asarray(z, np.float64)
    u = np.asarray(g, np.float64) + weight_decay * y
    y = lerp(y, z, ckp1) + lr * (momentum * (1 - ckp1) - 1) * u
    return y, z - lr * u


def lamb(p, g, m, v, *, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0,
         weight_decouple=True, fixed_decay=False, grad_averaging=True, adam=False,
         maximize=False):
    """One step of pytorch-optimizer's Lamb on one tensor (rectify and pre_norm off).
    Returns (param, exp_avg, exp_avg_sq)."""
    p = np.asarray(p, np.float64).copy()
    d = -np.asarray(g, np.float64) if maximize else np.asarray(g, np.float64)
    m = beta1 * np.asarray(m, np.float64) + ((1 - beta1) if grad_averaging else 1.0) * d
    v = beta2 * np.asarray(v, np.float64) + (1 - beta2) * d * d
    if weight_decay and weight_decouple:
        p = p * (1 - weight_decay * (1.0 if fixed_decay else lr))
    u = m / (np.sqrt(v) + eps)
    if weight_decay and not weight_decouple:
        u = u + weight_decay * p
    wn, un = min(float(np.linalg.norm(p)), 10.0), float(np.linalg.norm(u))
    trust = 1.0 if adam or wn == 0 or un == 0 else wn / (un + eps)
    return p - lr / (1 - beta1**step) * trust * u, m, v


def lars(p, g, buf, *, lr=1e-3, weight_decay=0.0, momentum=0.9, dampening=0.0,
         trust_coefficient=1e-3, nesterov=False, maximize=False, trust=True):
    """One step of pytorch-optimizer's LARS on one tensor; ``trust``: the tensor has more
    than one dimension. Returns (param, momentum_buffer) (the buffer unchanged when
    momentum == 0)."""
    p = np.asarray(p, np.float64)
    d = -np.asarray(g, np.float64) if maximize else np.asarray(g, np.float64)
    if trust:
        pn, gn = float(np.linalg.norm(p)), float(np.linalg.norm(d))
        den = gn + weight_decay * pn
        r = trust_coefficient * pn / den if pn > 0 and den > 0 else 1.0
        d = (d + weight_decay * p) * r
    buf = np.asarray(buf, np.float64)
    if momentum > 0:
        buf = momentum * buf + (1 - dampening) * d
        d = d + momentum * buf if nesterov else buf
    return p - lr * d, buf


# --- model toolkit: losses, activations, penalties (float64) ---------------------------

def point_loss(kind, x, t, *, reduction="mean", delta=1.0):
    """Elementwise losses as torch.nn.functional. Returns (loss, grad of the reduced loss)."""
    x = np.asarray(x, np.float64)
    t = np.asarray(t, np.float64)
    d = x - t
    if kind == "mse":
        loss, g = d * d, 2 * d
    elif kind == "mae":
        loss, g = np.abs(d), np.sign(d)
    elif kind == "huber":
        a = np.abs(d)
        loss = np.where(a <= delta, 0.5 * d * d, delta * (a - 0.5 * delta))
        g = np.clip(d, -delta, delta)
    elif kind == "bce_logits":
        loss = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
        g = 1.0 / (1.0 + np.exp(-x)) - t
    else:
        raise ValueError(kind)
    scale = 1.0 / x.size if reduction == "mean" else 1.0
    return float(loss.sum() * scale), g * scale


def log_softmax(z):
    z = np.asarray(z, np.float64)
    m = np.max(z, axis=1, keepdims=True)
    return z - (m + np.log(np.sum(np.exp(z - m), axis=1, keepdims=True)))


def softmax_cross_entropy(z, target, *, weight=None, label_smoothing=0.0, reduction="mean"):
    """torch.nn.functional.cross_entropy (indices or probabilities). Returns (loss, grad)."""
    z = np.asarray(z, np.float64)
    n, c = z.shape
    w = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    target = np.asarray(target)
    if target.ndim == 1:
        a = np.zeros((n, c))
        a[np.arange(n), target] = (1 - label_smoothing) * w[target]
        a += label_smoothing / c * w[None, :]
        denom = w[target].sum() if reduction == "mean" else 1.0
    else:
        a = ((1 - label_smoothing) * target.astype(np.float64) + label_smoothing / c) * w
        denom = n if reduction == "mean" else 1.0
    lp = log_softmax(z)
    loss = -np.where(a != 0, a * lp, 0.0).sum()
    p = np.exp(lp)
    g = a.sum(axis=1, keepdims=True) * p - a
    return float(loss / denom), g / denom


def activation(name, z, alpha=0.01):
    """(act(z), act'(z)) in float64."""
    z = np.asarray(z, np.float64)
    if name is None:
        return z.copy(), np.ones_like(z)
    if name == "relu":
        return np.maximum(z, 0), (z > 0).astype(np.float64)
    if name == "leaky_relu":
        return np.where(z > 0, z, alpha * z), np.where(z > 0, 1.0, alpha)
    if name == "sigmoid":
        s = 1 / (1 + np.exp(-z))
        return s, s * (1 - s)
    if name == "tanh":
        t = np.tanh(z)
        return t, 1 - t * t
    if name == "gelu_tanh":
        k = np.sqrt(2 / np.pi)
        u = k * (z + 0.044715 * z**3)
        t = np.tanh(u)
        dt = 0.5 * z * (1 - t * t) * k * (1 + 3 * 0.044715 * z * z)
        return 0.5 * z * (1 + t), 0.5 * (1 + t) + dt
    if name == "gelu":
        from math import erf
        e = np.vectorize(erf)(z / np.sqrt(2))
        return 0.5 * z * (1 + e), 0.5 * (1 + e) + z * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    raise ValueError(name)


def softmax_rows(z):
    return np.exp(log_softmax(z))


def penalty(p, *, l1=0.0, l2=0.0):
    """(l1 sum|p| + l2/2 sum p^2, its subgradient)."""
    p = np.asarray(p, np.float64)
    return float(l1 * np.abs(p).sum() + 0.5 * l2 * (p * p).sum()), l1 * np.sign(p) + l2 * p


# ---------------------------------------------------------------- storage formats
# References of fastoptim.formats, written from their definitions (not from the kernels).

_M64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _fmix32(h):
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def rounding_bits(seed: int, step: int, buffer: int, n: int, first: int = 0):
    """The 32 random bits of elements first..first+n of a stochastic-rounding stream:
    key = splitmix64(splitmix64(splitmix64(seed) ^ step) ^ (0xB16F0000 | buffer)),
    bits(i) = fmix32(lo(i) ^ k0 ^ hi(i) * 0x9E3779B9) ^ k1."""
    inner = (splitmix64(seed & _M64) ^ (step & _M64)) & _M64
    key = splitmix64(splitmix64(inner) ^ (0xB16F0000 | buffer))
    k0, k1 = np.uint32(key & 0xFFFFFFFF), np.uint32(key >> 32)
    i = np.arange(first, first + n, dtype=np.uint64)
    lo = (i & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    hi = (i >> np.uint64(32)).astype(np.uint32)
    return _fmix32(lo ^ k0 ^ (hi * np.uint32(0x9E3779B9))) ^ k1


def bf16_neighbours(x):
    """For float32 x: the bf16 values just below and above (toward -inf/+inf), float64."""
    x = np.asarray(x, np.float32)
    u = x.view(np.uint32)
    down_bits = u & np.uint32(0xFFFF0000)
    down = down_bits.view(np.float32).astype(np.float64)
    step_up = (down_bits + np.uint32(0x10000)).view(np.float32).astype(np.float64)
    return down, step_up  # truncation toward zero and one bf16 step away from zero


def q8_nearest(y, table):
    """Index of the entry of the sorted map `table` nearest to y (float64), and the distance
    from y to the closest midpoint between entries (the tie margin)."""
    t = np.asarray(table, np.float64)
    mids = (t[1:] + t[:-1]) / 2
    y = np.clip(np.asarray(y, np.float64), -1.0, 1.0)
    idx = np.searchsorted(mids, y, side="right")
    lo = np.clip(idx - 1, 0, len(mids) - 1)
    hi = np.clip(idx, 0, len(mids) - 1)
    margin = np.minimum(np.abs(y - mids[lo]), np.abs(y - mids[hi]))
    return idx, margin


def q8_quantize(x, table, block=256):
    """Blockwise 8-bit quantization in float64: absmax per block, nearest code of x/absmax.
    Returns (codes, absmax, margin) with the tie margin of each element (in units of y)."""
    x = np.asarray(x, np.float64).ravel()
    n = x.size
    nb = -(-n // block)
    pad = np.zeros(nb * block)
    pad[:n] = x
    am = np.abs(pad.reshape(nb, block)).max(axis=1)
    scale = np.where(am > 0, 1.0 / np.where(am > 0, am, 1.0), 0.0)
    y = (pad.reshape(nb, block) * scale[:, None]).ravel()[:n]
    codes, margin = q8_nearest(y, table)
    return codes, am, margin


def q8_dequantize(codes, absmax, table, block=256):
    codes = np.asarray(codes).ravel()
    scale = np.repeat(np.asarray(absmax, np.float64), block)[: codes.size]
    return np.asarray(table, np.float64)[codes] * scale


# ---------------------------------------------------------------------------------------
# Non-elementwise optimizers (fastoptim.spec declare_special), one parameter per call.


def adafactor(p, g, state, *, step, lr, beta2_decay, eps1, eps2, d, weight_decay, maximize):
    """torch.optim.Adafactor on one parameter, float64. state: row_var/col_var (ndim >= 2,
    factored over the last two dimensions) or variance; returns the new parameter."""
    p, g = np.asarray(p, np.float64), np.asarray(g, np.float64)
    g = -g if maximize else g
    w = float(step) ** beta2_decay
    rho = min(lr, 1.0 / math.sqrt(step))
    alpha = max(eps2, math.sqrt(np.mean(p * p)) if p.size else 0.0) * rho
    p = p * (1.0 - lr * weight_decay)
    if p.ndim >= 2:
        state["row_var"] = state["row_var"] + w * (np.mean(g * g, axis=-1, keepdims=True)
                                                   - state["row_var"])
        state["col_var"] = state["col_var"] + w * (np.mean(g * g, axis=-2, keepdims=True)
                                                   - state["col_var"])
        r = state["row_var"]
        v = r * state["col_var"] / np.maximum(np.mean(r, axis=-2, keepdims=True), eps1)
    else:
        state["variance"] = state["variance"] + w * (g * g - state["variance"])
        v = state["variance"]
    u = g / np.sqrt(np.maximum(v, eps1 * eps1))
    denom = max(1.0, math.sqrt(np.mean(u * u)) / d) if u.size else 1.0
    return p - alpha / denom * u


def newton_schulz(x, coefficients, steps, eps):
    """Muon's quintic Newton-Schulz orthogonalization, float64."""
    a, b, c = coefficients
    x = np.asarray(x, np.float64)
    tall = x.shape[0] > x.shape[1]
    X = x.T if tall else x
    X = X / max(np.linalg.norm(X), eps)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


def muon(p, g, buf, *, lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps,
         adjust_lr_fn):
    """torch.optim.Muon on one matrix, float64; returns (p, buf)."""
    p, g = np.asarray(p, np.float64), np.asarray(g, np.float64)
    buf = buf + (1.0 - momentum) * (g - buf)
    b = g + momentum * (buf - g) if nesterov else buf
    o = newton_schulz(b, ns_coefficients, ns_steps, eps)
    rows, cols = p.shape
    ratio = (0.2 * math.sqrt(max(rows, cols)) if adjust_lr_fn == "match_rms_adamw"
             else math.sqrt(max(1.0, rows / cols)))
    return p * (1.0 - lr * weight_decay) - lr * ratio * o, buf


def sparse_adam(p, m, v, rows, values, *, step, lr, beta1, beta2, eps, maximize):
    """torch.optim.SparseAdam on the (unique) rows of one parameter, float64; in place."""
    g = -values if maximize else values
    m[rows] = m[rows] + (1 - beta1) * (g - m[rows])
    v[rows] = v[rows] + (1 - beta2) * (g * g - v[rows])
    size = lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
    p[rows] = p[rows] - size * m[rows] / (np.sqrt(v[rows]) + eps)
