"""float64 NumPy references for every native kernel.

Each function takes and returns plain arrays (copies; nothing is updated in place) and
follows torch.optim's documented algorithms step by step.
"""

from __future__ import annotations

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
