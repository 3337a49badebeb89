"""Reduced-precision parameters, gradients and optimizer state: bf16, fp16, 8-bit blockwise.

One fused native pass per step loads every buffer as float32, updates it with Adam/AdamW's
float32 math (the same operations as ``fastoptim.adam_step``) and stores it back through its
format; nothing is converted outside the kernel::

    from fastoptim import formats
    states = [formats.new_state(p, "int8") for p in params]       # once
    formats.adam_step(params, grads, states, lr=1e-3)             # every step

Formats and dtypes (numpy has no bfloat16: bf16 buffers are ``uint16`` arrays holding the
bit patterns, the top 16 bits of a float32; torch tensors use ``torch.bfloat16``):

=========  =====================  =================================================
format     numpy / torch dtype    used for
=========  =====================  =================================================
fp32       float32                parameters (the master), gradients, state
bf16       uint16 / bfloat16      parameters, gradients, state; rounded to nearest
                                  even or stochastically
fp16       float16                gradients; a copy of a float32 master parameter
int8       uint8 codes + float32  state only: 8-bit blockwise dynamic quantization
           absmax per 256 elems
=========  =====================  =================================================

**8-bit state** (bitsandbytes' blockwise scheme, so results compare with its
``Adam8bit``): the tensor is cut into blocks of :data:`Q8_BLOCK` = 256 consecutive
elements (the last may be shorter); each block stores ``absmax = max |x|`` and one code
per element, the index of the entry of a 256-value dynamic map nearest to ``x / absmax``.
``exp_avg`` uses the signed map, ``exp_avg_sq`` and ``max_exp_avg_sq`` the unsigned one
(:func:`dynamic_map`, bit-identical to ``bitsandbytes.functional.create_dynamic_map``).
Decoding is ``map[code] * absmax``. The error of a value is at most half the gap between
its neighbouring map entries times absmax: <= 0.7 % (signed map) / 0.35 % (unsigned) of
absmax in the top decade, five times finer in each decade below. Tensors with fewer than
:data:`MIN_8BIT_SIZE` = 4096 elements keep float32 state, as bitsandbytes does
(``min_8bit_size``): their state is small and not worth the quantization error.

**State layout** (one dict per parameter, torch.optim.Adam's keys plus a format tag)::

    {"step": int,
     "state_format": "fp32" | "bf16" | "int8",
     "exp_avg": ..., "exp_avg_sq": ..., ["max_exp_avg_sq": ...],         # shape of p
     # int8 only: float32 [ceil(p.size / 256)]
     "exp_avg_absmax": ..., "exp_avg_sq_absmax": ..., ["max_exp_avg_sq_absmax": ...]}

Every other optimizer with reduced-precision state (``fastoptim.spec.get(name).state_dtypes``:
SGD, RMSprop, Adagrad, Adamax, NAdam, RAdam, Adadelta, Lion, AdEMAMix) keeps the same layout
with torch's keys for its buffers (``exp_inf``, ``square_avg``, ``acc_delta``, ...): signed
buffers on the signed map, never-negative ones (``exp_avg_sq``, ``exp_inf``, ``sum``,
``square_avg``, ``acc_delta``) on the unsigned one; per-parameter scalars (NAdam's
``mu_product``) stay float 0-d arrays/tensors. Their steps run in the same one-pass kernels
(``_core.<name>_format_step``) with the float32 operations of their float32 kernels.

A state dict saved with these arrays round-trips exactly (codes and absmax are stored
as they are). :func:`to_torch_state_dict` turns an optimizer state_dict of this layout
into the float32 one ``torch.optim.Adam.load_state_dict`` takes, :func:`from_torch_state_dict`
the reverse (``optimizer="NAdam"``, ... for the others).

**Stochastic rounding** of a bf16 buffer adds 16 random bits below the kept mantissa and
truncates: the result is unbiased (E[round(x)] = x). The bits of element i of tensor k at
step t come from a counter-based hash of (seed, k, t, buffer, i), so the results are
bitwise identical for any thread count and reproducible from the seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fastoptim import _core

__all__ = [
    "FORMATS",
    "MIN_8BIT_SIZE",
    "Q8_BLOCK",
    "absmax_key",
    "adam_step",
    "bf16_from_float",
    "bf16_to_float",
    "dequantize",
    "dynamic_map",
    "from_torch_state_dict",
    "new_buffers",
    "new_state",
    "quantize",
    "state_bytes",
    "state_format",
    "to_torch_state_dict",
]

FORMATS = ("fp32", "bf16", "int8")
Q8_BLOCK = 256
MIN_8BIT_SIZE = 4096

# Adam's state buffers, whether each is signed (signed map) and its absmax key.
_BUFFERS = (("exp_avg", True), ("exp_avg_sq", False), ("max_exp_avg_sq", False))


def absmax_key(key: str) -> str:
    """The state key of the float32 absmax array of the 8-bit buffer ``key``."""
    return key + "_absmax"


_absmax_key = absmax_key


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


def _blocks(n: int) -> int:
    return -(-n // Q8_BLOCK)


# ---------------------------------------------------------------- conversion helpers

def dynamic_map(signed: bool = True) -> np.ndarray:
    """The 256 float32 values of the signed or unsigned 8-bit dynamic map, ascending."""
    return _core.dynamic_map(bool(signed))


def quantize(x: Any, signed: bool = True) -> tuple[Any, Any]:
    """Blockwise 8-bit quantization of a float32 array or tensor: ``(codes, absmax)``.

    codes are uint8 with x's shape; absmax is float32 of shape ``(ceil(x.size / 256),)``.
    """
    if _is_torch(x):
        import torch

        codes: Any = torch.empty(x.shape, dtype=torch.uint8)
        absmax: Any = torch.empty(_blocks(x.numel()), dtype=torch.float32)
    else:
        codes = np.empty(np.shape(x), dtype=np.uint8)
        absmax = np.empty(_blocks(int(np.size(x))), dtype=np.float32)
    _core.format_encode(x, codes, absmax, signed=bool(signed))
    return codes, absmax


def dequantize(codes: Any, absmax: Any, signed: bool = True) -> Any:
    """float32 values of 8-bit codes with their per-block absmax (inverse of :func:`quantize`)."""
    out = _empty_f32_like(codes)
    _core.format_decode(codes, out, absmax, signed=bool(signed))
    return out


def bf16_from_float(x: Any, rounding: str = "nearest", seed: int = 0, step: int = 1) -> Any:
    """bf16 of a float32 array (uint16 bit patterns) or tensor (torch.bfloat16).

    rounding: 'nearest' (even) or 'stochastic' (bits drawn from (seed, step, element)).
    """
    if _is_torch(x):
        import torch

        out: Any = torch.empty(x.shape, dtype=torch.bfloat16)
    else:
        out = np.empty(np.shape(x), dtype=np.uint16)
    _core.format_encode(x, out, rounding=rounding, seed=int(seed), step=int(step))
    return out


def bf16_to_float(h: Any) -> Any:
    """float32 values of bf16 bit patterns (uint16 array) or of a torch.bfloat16 tensor."""
    out = _empty_f32_like(h)
    _core.format_decode(h, out)
    return out


def _empty_f32_like(x: Any) -> Any:
    if _is_torch(x):
        import torch

        return torch.empty(x.shape, dtype=torch.float32)
    return np.empty(np.shape(x), dtype=np.float32)


# ---------------------------------------------------------------- state

def state_format(fmt: str, size: int, min_8bit_size: int = MIN_8BIT_SIZE) -> str:
    """The format a state of ``size`` elements gets when ``fmt`` is asked for: int8 falls
    back to fp32 below ``min_8bit_size`` elements."""
    if fmt not in FORMATS:
        raise ValueError(f"state format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "int8" and size < min_8bit_size:
        return "fp32"
    return fmt


def _zeros(like: Any, shape: Any, kind: str) -> Any:
    """Zeros of a storage kind ('f32', 'bf16', 'u8') in like's library (numpy or torch)."""
    if _is_torch(like):
        import torch

        dt = {"f32": torch.float32, "bf16": torch.bfloat16, "u8": torch.uint8}[kind]
        return torch.zeros(tuple(shape), dtype=dt)
    ndt: Any = {"f32": np.float32, "bf16": np.uint16, "u8": np.uint8}[kind]
    return np.zeros(tuple(shape), dtype=ndt)


def _zero_code(signed: bool) -> int:
    m = dynamic_map(signed)
    return int(np.flatnonzero(m == 0.0)[0])


def new_buffers(p: Any, fmt: str, buffers: Sequence[tuple[str, bool, float]], *,
                min_8bit_size: int = MIN_8BIT_SIZE) -> dict[str, Any]:
    """State buffers for parameter ``p`` in format ``fmt`` (int8 falls back to fp32 below
    ``min_8bit_size`` elements): ``{"state_format": f, key: buffer, [key_absmax: absmax]}``
    for each ``(key, signed, initial value)`` of ``buffers``; numpy arrays for a numpy
    ``p``, CPU tensors for a tensor. A non-zero initial value is stored through the format
    (rounded to nearest)."""
    shape = tuple(p.shape)
    size = int(np.prod(shape, dtype=np.int64))
    f = state_format(fmt, size, min_8bit_size)
    st: dict[str, Any] = {"state_format": f}
    for key, signed, init in buffers:
        if f == "fp32":
            buf = _zeros(p, shape, "f32")
            if init:
                buf[...] = init
            st[key] = buf
        elif f == "bf16":
            st[key] = (_zeros(p, shape, "bf16") if not init
                       else bf16_from_float(_full_f32(p, shape, init)))
        elif init:
            st[key], st[_absmax_key(key)] = quantize(_full_f32(p, shape, init), signed)
        else:
            codes = _zeros(p, shape, "u8")
            codes[...] = _zero_code(signed)  # the code of 0.0 (127 in the signed map)
            st[key] = codes
            st[_absmax_key(key)] = _zeros(p, (_blocks(size),), "f32")
    return st


def _full_f32(like: Any, shape: tuple[int, ...], value: float) -> Any:
    x = _zeros(like, shape, "f32")
    x[...] = value
    return x


def new_state(p: Any, fmt: str = "fp32", *, amsgrad: bool = False,
              min_8bit_size: int = MIN_8BIT_SIZE) -> dict[str, Any]:
    """Zero Adam state for parameter ``p`` (numpy array or torch tensor) in format ``fmt``
    ('fp32', 'bf16' or 'int8'; int8 falls back to fp32 below ``min_8bit_size`` elements).
    The buffers are numpy arrays for a numpy ``p`` and CPU tensors for a tensor."""
    bufs = [(key, signed, 0.0) for key, signed in _BUFFERS
            if amsgrad or key != "max_exp_avg_sq"]
    return {"step": 0, **new_buffers(p, fmt, bufs, min_8bit_size=min_8bit_size)}


def _dtype_kind(x: Any) -> str:
    name = str(x.dtype).replace("torch.", "")
    kinds = {"float32": "fp32", "uint16": "bf16", "bfloat16": "bf16", "uint8": "int8"}
    return kinds.get(name, name)


def _check_state(st: Mapping[str, Any], where: str, amsgrad: bool,
                 keys: Sequence[str] | None = None) -> str:
    """The format of one state dict after checking its tag against its buffers: Adam's
    (max_exp_avg_sq with amsgrad), or ``keys`` when given."""
    if not isinstance(st, Mapping):
        raise TypeError(f"{where} must be a dict, got {type(st).__name__}")
    # (untagged: fp32, as fastoptim.torch keeps fp32 state, in torch's layout: only tensors)
    fmt = st.get("state_format", "fp32")
    if fmt not in FORMATS:
        raise ValueError(f"{where}['state_format'] must be one of {FORMATS}, got {fmt!r}")
    if keys is None:
        keys = [k for k, _ in _BUFFERS if amsgrad or k != "max_exp_avg_sq"]
    for key in keys:
        if key not in st:
            why = " (amsgrad=True needs max_exp_avg_sq)" if key == "max_exp_avg_sq" else ""
            raise ValueError(f"{where} has no {key!r}{why}")
        kind = _dtype_kind(st[key])
        if kind != fmt:
            raise ValueError(f"{where}[{key!r}] has dtype {st[key].dtype} but the state is "
                             f"tagged {fmt!r}; format tags and buffers must match")
        if fmt == "int8" and _absmax_key(key) not in st:
            raise ValueError(f"{where} is int8 but has no {_absmax_key(key)!r}")
    return str(fmt)


def state_bytes(st: Mapping[str, Any]) -> int:
    """Bytes held by one parameter's state buffers (absmax included)."""
    total = 0
    for v in st.values():
        if hasattr(v, "nbytes"):
            total += int(v.nbytes)
        elif hasattr(v, "element_size"):
            total += int(v.element_size() * v.numel())
    return total


def adam_step(params: Sequence[Any], grads: Sequence[Any], states: Sequence[dict[str, Any]], *,
              lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
              weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
              amsgrad: bool = False, maximize: bool = False, seed: int = 0,
              param_rounding: str = "stochastic", state_rounding: str = "nearest",
              param_copies: Sequence[Any] | None = None) -> None:
    """One Adam (AdamW with ``decoupled_weight_decay=True``) step on any formats, in place.

    Args:
        params: float32 (master) or bf16 arrays/tensors, updated in place.
        grads: float32, bf16 or float16, same shapes; only read.
        states: one dict per parameter from :func:`new_state` (or a loaded state_dict);
            its buffers are updated and its ``step`` incremented. All states of one call
            must be at the same step.
        param_rounding: how bf16 parameters are rounded: 'stochastic' (default: small
            updates are not lost on average) or 'nearest'.
        state_rounding: how bf16 state is rounded ('nearest' default, or 'stochastic').
        param_copies: None, or per parameter None / a bf16 or float16 copy of a float32
            master, written (rounded to nearest) in the same pass (fp16 parameters: keep the
            float32 master in ``params`` and the fp16 tensor here).
        seed: key of the stochastic-rounding streams (with the tensor's position in the
            list, the step and the element index).

    Math: torch.optim.Adam / AdamW (eps added to the bias-corrected sqrt(v)), computed in
    float32. Bad input raises TypeError/ValueError and changes nothing.
    """
    if not isinstance(states, (list, tuple)):
        raise TypeError(f"states must be a list of dicts, got {type(states).__name__}")
    if len(states) != len(params):
        raise ValueError(f"states has {len(states)} entries but params has {len(params)}")
    fmts = [_check_state(st, f"states[{i}]", amsgrad) for i, st in enumerate(states)]
    steps = {int(st["step"]) for st in states}
    if len(steps) > 1:
        raise ValueError(f"states are at different steps {sorted(steps)}; call adam_step "
                         "once per group of states at the same step")
    step = (steps.pop() if steps else 0) + 1

    def col(key: str, absmax: bool = False) -> list[Any]:
        out = []
        for st, f in zip(states, fmts, strict=True):
            if absmax:
                out.append(st[_absmax_key(key)] if f == "int8" else None)
            else:
                out.append(st[key])
        return out

    b1, b2 = betas
    _core.adam_format_step(
        list(params), list(grads), col("exp_avg"), col("exp_avg_sq"),
        col("max_exp_avg_sq") if amsgrad else None,
        col("exp_avg", True), col("exp_avg_sq", True),
        col("max_exp_avg_sq", True) if amsgrad else None,
        None if param_copies is None else list(param_copies),
        step=step, lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay, amsgrad=amsgrad, maximize=maximize,
        seed=int(seed) & 0xFFFFFFFFFFFFFFFF, param_rounding=param_rounding,
        state_rounding=state_rounding)
    for st in states:
        st["step"] = step


# ---------------------------------------------------------------- torch interop

def _to_float_tensor(st: Mapping[str, Any], key: str, signed: bool, fmt: str) -> Any:
    import torch

    buf = st[key]
    if fmt == "fp32":
        out = buf
    elif fmt == "bf16":
        out = bf16_to_float(buf)
    else:
        out = dequantize(buf, st[_absmax_key(key)], signed)
    if not _is_torch(out):
        out = torch.from_numpy(np.array(out, dtype=np.float32, copy=True))
    return out.clone()


def _reduced_spec(optimizer: str) -> Any:
    """The spec of an optimizer that keeps reduced-precision state (ValueError otherwise)."""
    from fastoptim import spec

    s = spec.get(optimizer)
    if len(s.state_dtypes) == 1:
        raise ValueError(f"optimizer={optimizer!r}: {s.name} has no reduced-precision state "
                         f"formats")
    return s


def _present(s: Any, st: Mapping[str, Any]) -> list[Any]:
    """The buffers of spec s that state st holds (every unconditional one, and the optional
    ones it has)."""
    return [b for b in s.state if b.when is None or b.key in st]


def to_torch_state_dict(state_dict: Mapping[str, Any], *,
                        optimizer: str = "Adam") -> dict[str, Any]:
    """An optimizer state_dict with quantized state -> the float32 one torch.optim loads.

    ``state_dict`` is ``{"state": {index: state}, "param_groups": [...]}`` with each state in
    this module's layout (numpy arrays or tensors), from ``fastoptim.optim.<optimizer>`` or
    ``fastoptim.torch.<optimizer>`` with a ``state_dtype``; ``optimizer`` names it ("Adam",
    "NAdam", "Lion", ...: any with reduced-precision state), which fixes the buffers and
    which map each was coded with. The result has float32 tensors for the buffers
    (``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq``) for Adam), ``step`` as a float32
    0-d tensor, as torch saves it (not for optimizers that keep no step: SGD, Lion),
    scalars such as NAdam's ``mu_product`` as 0-d tensors, and param_groups without
    fastoptim's ``state_dtype``. Nothing in the input is modified.
    """
    import torch

    s = _reduced_spec(optimizer)
    _check_sd(state_dict)
    out_state: dict[Any, Any] = {}
    for idx, st in state_dict["state"].items():
        where = f"state[{idx!r}]"
        bufs = _present(s, st) if isinstance(st, Mapping) else []
        fmt = _check_state(st, where, False, [b.key for b in bufs])
        new: dict[str, Any] = {}
        if s.has_step:
            if "step" not in st:
                raise ValueError(f"{where} has no 'step'")
            new["step"] = torch.tensor(float(_as_int(st["step"])), dtype=torch.float32)
        for sc in s.scalars:
            if sc.key not in st:
                raise ValueError(f"{where} has no {sc.key!r}")
            v = st[sc.key]
            new[sc.key] = (v.detach().clone() if _is_torch(v)
                           else torch.tensor(float(v), dtype=torch.float32))
        for b in bufs:
            new[b.key] = _to_float_tensor(st, b.key, b.signed, fmt)
        out_state[idx] = new
    groups = [{k: v for k, v in g.items() if k != "state_dtype"}
              for g in state_dict["param_groups"]]
    return {"state": out_state, "param_groups": groups}


def from_torch_state_dict(state_dict: Mapping[str, Any], fmt: str, *, optimizer: str = "Adam",
                          min_8bit_size: int = MIN_8BIT_SIZE) -> dict[str, Any]:
    """torch.optim's state_dict -> this module's layout in format ``fmt`` (tensors).

    ``optimizer`` names the optimizer it is for ("Adam", "NAdam", "Lion", ...; its buffers
    and their maps). int8 state is quantized blockwise (signed buffers such as exp_avg with
    the signed map, non-negative ones with the unsigned map), bf16 rounded to nearest;
    tensors under ``min_8bit_size`` elements stay float32; scalars (mu_product) are copied;
    ``step`` is 0 for an optimizer whose torch state keeps none (Lion). Each parameter
    group gets ``state_dtype=fmt`` (what ``fastoptim.torch.<optimizer>(...,
    state_dtype=fmt)`` loads). The input is not modified.
    """
    import torch

    s = _reduced_spec(optimizer)
    _check_sd(state_dict)
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    s.check_state_dtype(fmt)
    for gi, g in enumerate(state_dict["param_groups"]):
        for flag in s.fp32_only:
            if isinstance(g, Mapping) and g.get(flag) and fmt != "fp32":
                raise ValueError(f"param_groups[{gi}] has {flag}=True: {s.name}'s {flag} "
                                 f"state needs fmt='fp32', got {fmt!r}")
    out_state: dict[Any, Any] = {}
    for idx, st in state_dict["state"].items():
        if not isinstance(st, Mapping):
            raise TypeError(f"state[{idx!r}] must be a dict, got {type(st).__name__}")
        bufs = _present(s, st)
        for b in bufs:
            if b.key not in st:
                raise ValueError(f"state[{idx!r}] has no {b.key!r}")
            if not _is_torch(st[b.key]) or st[b.key].dtype != torch.float32:
                raise TypeError(f"state[{idx!r}][{b.key!r}] must be a float32 tensor")
        for sc in s.scalars:
            if sc.key not in st:
                raise ValueError(f"state[{idx!r}] has no {sc.key!r}")
        if s.has_step and "step" not in st:
            raise ValueError(f"state[{idx!r}] has no 'step'")
        size = st[bufs[0].key].numel() if bufs else 0
        f = state_format(fmt, size, min_8bit_size)
        new: dict[str, Any] = {"step": _as_int(st.get("step", 0)), "state_format": f}
        for sc in s.scalars:
            v = st[sc.key]
            new[sc.key] = (v.detach().clone() if _is_torch(v)
                           else torch.tensor(float(v), dtype=torch.float32))
        for b in bufs:
            x = st[b.key].detach().contiguous()
            if f == "fp32":
                new[b.key] = x.clone()
            elif f == "bf16":
                new[b.key] = bf16_from_float(x)
            else:
                new[b.key], new[_absmax_key(b.key)] = quantize(x, b.signed)
        out_state[idx] = new
    groups = [{**g, "state_dtype": fmt} for g in state_dict["param_groups"]]
    return {"state": out_state, "param_groups": groups}


def _as_int(step: Any) -> int:
    return int(step.item() if hasattr(step, "item") else step)


def _check_sd(sd: Any) -> None:
    if not isinstance(sd, Mapping) or "state" not in sd or "param_groups" not in sd:
        raise ValueError("state_dict must be a dict with 'state' and 'param_groups'")
