"""The torch adapter's reduced-precision path: bf16/fp16 parameters and gradients, and
bf16 or 8-bit optimizer state (``state_dtype``), stepped by the format kernels of
``fastoptim.formats``.

``fastoptim.torch`` hands a parameter group here when its ``state_dtype`` is not "fp32"
or one of its parameters is bf16 or fp16; everything else stays on the adapter's float32 /
float64 fast path. Per parameter the state is the layout of :mod:`fastoptim.formats`::

    {"step": int64 0-d tensor, "state_format": "fp32" | "bf16" | "int8",
     "exp_avg": ..., "exp_avg_sq": ..., ["exp_avg_absmax": float32 [ceil(n / 256)], ...],
     ["master": float32 copy of an fp16 parameter]}

(with ``state_dtype="fp32"`` untagged: a bf16/fp16 model's float32 state is only tensors,
as torch's, and torch's own state_dict of such a model loads as it is).

- float32 parameters: updated in place; the state is ``state_dtype`` (int8 falls back to
  fp32 below ``formats.MIN_8BIT_SIZE`` elements).
- bf16 parameters: updated in place, rounded stochastically (``param_rounding`` group
  entry, default "stochastic"; "nearest" rounds to nearest even). The state is fp32 unless
  ``state_dtype`` says otherwise.
- fp16 parameters: a float32 ``master`` copy is kept in the state and updated; the fp16
  parameter is written from it (rounded to nearest) in the same pass.
- gradients: float32, bf16 or fp16 (any of them with any parameter dtype); only read.

One native call per group and step count: the parameters, gradients and state go to the
kernel as they are (contiguous tensors, no copies). A non-contiguous parameter
(channels_last, a transposed or strided view) is updated in a row-major copy that is
written back after the call (one extra read and write of the parameter); its state is
row-major, element i being the parameter's i-th element in logical order, so the results
are those of the same parameter stored contiguously, bitwise. A non-contiguous gradient
is read through a row-major copy. Stochastic rounding draws from
(seed 0, the tensor's position in the call, the step, the element), so results are bitwise
identical for any thread count and reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fastoptim import formats

REDUCED_PARAM_DTYPES = (torch.bfloat16, torch.float16)
PARAM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
ROUNDINGS = ("stochastic", "nearest")


def handles(group: Mapping[str, Any]) -> bool:
    """Whether a parameter group takes this path."""
    if group.get("state_dtype", "fp32") != "fp32":
        return True
    return any(p.dtype in REDUCED_PARAM_DTYPES for p in group["params"])


def validate(spec: Any, group: Mapping[str, Any]) -> None:
    """ValueError for a bad ``state_dtype`` or ``param_rounding`` group entry."""
    if "state_dtype" in group:
        spec.check_state_dtype(group["state_dtype"], dict(group))
    rounding = group.get("param_rounding", "stochastic")
    if rounding not in ROUNDINGS:
        raise ValueError(f"param_rounding must be one of {ROUNDINGS}, got {rounding!r}")


def _where(gi: int, j: int, p: torch.Tensor) -> str:
    return f"param_groups[{gi}]['params'][{j}] of shape {tuple(p.shape)}"


def _scalar(value: float) -> torch.Tensor:
    """A per-parameter scalar (NAdam's mu_product) as fastoptim.torch keeps it."""
    from fastoptim.torch import _scalar as scalar

    return scalar(value)


def _state_for(opt: Any, p: torch.Tensor, group: Mapping[str, Any]) -> dict[str, Any]:
    fmt = group.get("state_dtype", "fp32")
    st = {**opt._spec.new_format_state(p, group, fmt, _scalar)}
    if fmt == "fp32":  # a bf16/fp16 model's fp32 state: untagged, only tensors, as torch's
        del st["state_format"]
    st["step"] = torch.tensor(0, dtype=torch.int64)
    if p.dtype == torch.float16:
        st["master"] = p.detach().to(torch.float32).contiguous()
    return st


_STATE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.uint8}


def _expected(opt: Any, p: torch.Tensor, group: Mapping[str, Any]
              ) -> tuple[str, dict[str, tuple[torch.dtype, tuple[int, ...]]]]:
    """The format tag and the (dtype, shape) of every state tensor p keeps in this group."""
    n = p.numel()
    tag = formats.state_format(group.get("state_dtype", "fp32"), n)
    shape = tuple(p.shape)
    out: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}
    for b in opt._spec.state:
        if opt._spec.used(b, group):
            out[b.key] = (_STATE_DTYPES[tag], shape)
            if tag == "int8":
                out[formats.absmax_key(b.key)] = (torch.float32, (-(-n // formats.Q8_BLOCK),))
    if p.dtype == torch.float16:
        out["master"] = (torch.float32, shape)
    return tag, out


_SCALAR_DTYPES = (torch.float32, torch.float64)


def _check_existing(opt: Any, st: Mapping[str, Any], p: torch.Tensor, group: Mapping[str, Any],
                    where: str) -> None:
    """The state of p matches what this group keeps for it (after a load or a change)."""
    want_tag, want = _expected(opt, p, group)
    tag = st.get("state_format", "fp32")  # (fp32 state is untagged)
    if tag != want_tag:
        raise ValueError(f"optimizer.state of {where} is tagged state_format={tag!r} but "
                         f"the group keeps {want_tag!r} state for it "
                         f"(state_dtype={group.get('state_dtype', 'fp32')!r})")
    for k, (dtype, shape) in want.items():
        t = st.get(k)
        if not isinstance(t, torch.Tensor) or t.dtype != dtype or tuple(t.shape) != shape:
            got = (f"{t.dtype} of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor)
                   else type(t).__name__)
            raise ValueError(f"optimizer.state of {where}: {k!r} must be a {dtype} tensor "
                             f"of shape {shape}, got {got}")
        if t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError(f"optimizer.state of {where}: {k!r} must be a contiguous CPU "
                             f"tensor")
    for sc in opt._spec.scalars:  # float 0-d tensors, in torch's scalar dtype
        t = st.get(sc.key)
        if not isinstance(t, torch.Tensor) or t.dtype not in _SCALAR_DTYPES or t.dim() != 0 \
                or t.device.type != "cpu":
            got = (f"{t.dtype} of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor)
                   else type(t).__name__)
            raise ValueError(f"optimizer.state of {where}: {sc.key!r} must be a float32 or "
                             f"float64 0-d CPU tensor, got {got}")


def step_group(opt: Any, gi: int, group: dict[str, Any]) -> None:
    """One step of every parameter of ``group`` that has a gradient. Every parameter,
    gradient and state is checked before anything changes."""
    spec = opt._spec
    if spec.format_kernel is None:
        raise TypeError(f"fastoptim.torch.{spec.name} has no kernel for bf16/fp16 parameters "
                        f"(its parameters must be float32 or float64)")
    validate(spec, group)
    rounding = group.get("param_rounding", "stochastic")
    items = []
    for j, p in enumerate(group["params"]):
        g = p.grad
        if g is None:
            continue
        where = _where(gi, j, p)
        opt._check_param(p, where, group)  # (on the CPU)
        if p.dtype not in PARAM_DTYPES:
            raise TypeError(f"{where} has dtype {p.dtype}; with bf16/fp16 parameters or "
                            f"state_dtype={group.get('state_dtype', 'fp32')!r} every parameter "
                            f"of the group must be float32, bfloat16 or float16")
        if not p.is_contiguous() and torch._debug_has_internal_overlap(p) == 1:
            raise ValueError(f"{where} has elements sharing memory (an expanded view); "
                             f"fastoptim.torch cannot update it in place")
        if g.layout != torch.strided:
            raise TypeError(f"the gradient of {where} is a {g.layout} tensor; "
                            f"fastoptim.torch does not support sparse gradients")
        if g.dtype not in PARAM_DTYPES or g.shape != p.shape or g.device != p.device:
            raise TypeError(f"the gradient of {where} is a {g.dtype} tensor of shape "
                            f"{tuple(g.shape)} on {g.device}; expected float32, bfloat16 or "
                            f"float16 of shape {tuple(p.shape)} on cpu")
        st = opt.state.get(p)
        if st is not None and not isinstance(st, dict):
            raise TypeError(f"optimizer.state of {where} is a {type(st).__name__}, "
                            f"expected a dict")
        if st:
            _check_existing(opt, st, p, group, where)
        items.append((p, g if g.is_contiguous() else g.contiguous(), st, where))
    # everything checked: create missing state, then one call per step count
    parts: dict[int, list] = {}
    for p, g, st, _ in items:
        fresh = not st
        if fresh:
            new = _state_for(opt, p, group)
            opt.state[p].update(new)
            st = opt.state[p]
        parts.setdefault(int(st["step"]), []).append((p, g, st, fresh))
    keys = [b.key for b in spec.state]
    absmax = [formats.absmax_key(k) for k in keys]
    for step, part in parts.items():
        params, grads, copies, states = [], [], [], []
        back: list[tuple[torch.Tensor, torch.Tensor]] = []
        for p, g, st, _ in part:
            t = p.detach()
            if not t.is_contiguous():  # staged: updated in a row-major copy, written back
                s = t.contiguous()
                back.append((t, s))
                t = s
            if p.dtype == torch.float16:
                params.append(st["master"])
                copies.append(t)
            else:
                params.append(t)
                copies.append(None)
            grads.append(g.detach())
        states = [[st.get(k) for _, _, st, _ in part] for k in keys]
        states += [[st[sc.key] for _, _, st, _ in part] for sc in spec.scalars]
        states += [[st.get(k) for _, _, st, _ in part] for k in absmax]
        first = all(f for *_, f in part)
        spec.run_formats(group, params, grads, states, step + 1, first, opt.defaults,
                         param_copies=copies if any(c is not None for c in copies) else None,
                         param_rounding=rounding)
        for dst, src in back:
            dst.copy_(src)
        for _, _, st, _ in part:
            dict.__setitem__(st, "step", torch.tensor(step + 1, dtype=torch.int64))


# ---------------------------------------------------------------------- loading


def _tensor(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v
    import numpy as np

    if isinstance(v, np.ndarray):
        if v.dtype == np.uint16:  # bf16 bits
            return torch.from_numpy(v.copy()).view(torch.bfloat16)
        return torch.from_numpy(v.copy())
    return v


def check_state_dict(opt: Any, state_dict: Mapping[str, Any]) -> list[tuple[int, Any]]:
    """Checks the tagged (reduced-format) states of ``state_dict`` against ``opt``'s groups
    before torch's loader runs: ``[(param id, state)]`` to restore after it (torch's loader
    casts every floating state tensor to its parameter's dtype, and uint8 codes to float)."""
    groups = state_dict.get("param_groups") if isinstance(state_dict, Mapping) else None
    states = state_dict.get("state") if isinstance(state_dict, Mapping) else None
    if not isinstance(groups, list) or not isinstance(states, Mapping):
        return []
    if len(groups) != len(opt.param_groups):
        return []  # torch's own error
    id_to: dict[Any, tuple[torch.Tensor, dict[str, Any], int]] = {}
    for gi, (saved, group) in enumerate(zip(groups, opt.param_groups, strict=True)):
        if len(saved.get("params", ())) != len(group["params"]):
            return []  # torch's own error
        have = group.get("state_dtype", "fp32")
        if isinstance(saved, Mapping) and saved.get("state_dtype", "fp32") != have:
            raise ValueError(
                f"state_dict['param_groups'][{gi}] keeps state_dtype="
                f"{saved.get('state_dtype', 'fp32')!r} but the optimizer's group {gi} keeps "
                f"{have!r}; build the optimizer with the same state_dtype, or convert the "
                f"state with fastoptim.formats.from_torch_state_dict / to_torch_state_dict")
        for sid, p in zip(saved["params"], group["params"], strict=True):
            # the group as torch's loader leaves it: the saved entries, state_dtype "fp32"
            # when the saved group has none (fastoptim.torch's __setstate__ default)
            merged = {**group, **{k: v for k, v in saved.items() if k != "params"}}
            merged["state_dtype"] = saved.get("state_dtype", "fp32")
            id_to[sid] = (p, merged, gi)
    out = []
    for sid, st in states.items():
        if sid not in id_to or not isinstance(st, Mapping):
            continue
        p, group, gi = id_to[sid]
        reduced = handles({**group, "params": [p]})
        tagged = "state_format" in st
        where = f"state_dict['state'][{sid!r}] (param_groups[{gi}], shape {tuple(p.shape)})"
        if tagged and not reduced and st["state_format"] != "fp32":
            raise ValueError(f"{where} is tagged state_format={st['state_format']!r} but the "
                             f"optimizer keeps fp32 state for that parameter "
                             f"(state_dtype='fp32'); build it with the same state_dtype or "
                             f"convert with fastoptim.formats")
        if not reduced:
            continue
        fp32 = formats.state_format(group.get("state_dtype", "fp32"), p.numel()) == "fp32"
        if not tagged and not fp32:
            raise ValueError(f"{where} has no 'state_format' tag but the optimizer keeps "
                             f"{group.get('state_dtype', 'fp32')!r} state for that parameter; "
                             f"convert it with fastoptim.formats.from_torch_state_dict")
        conv = {k: _tensor(v) for k, v in st.items()}
        if not tagged:  # fp32 state of a bf16/fp16 parameter (torch's own: in its dtype)
            conv = {k: v.to(torch.float32) if torch.is_tensor(v) and v.is_floating_point()
                    and k != "step" else v for k, v in conv.items()}
            if p.dtype == torch.float16 and "master" not in conv:
                conv["master"] = p.detach().to(torch.float32).contiguous()
        step = conv.get("step")
        if step is None or not (isinstance(step, int) or (torch.is_tensor(step)
                                                          and step.numel() == 1)):
            raise ValueError(f"{where} has no integer 'step'")
        _check_existing(opt, conv, p, group, where)
        out.append((sid, conv))
    return out


def restore(opt: Any, state_dict: Mapping[str, Any], saved: list[tuple[int, Any]]) -> None:
    """After torch's loader: the tagged states as they were saved (codes and absmax kept)."""
    if not saved:
        return
    ids = [sid for g in state_dict["param_groups"] for sid in g["params"]]
    params = [p for g in opt.param_groups for p in g["params"]]
    by_id = dict(zip(ids, params, strict=True))
    for sid, st in saved:
        p = by_id[sid]
        new = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v)
               for k, v in st.items()}
        s: Any = new.get("step", 0)
        new["step"] = torch.tensor(int(s.item() if hasattr(s, "item") else s),
                                   dtype=torch.int64)
        opt.state[p].clear()
        opt.state[p].update(new)
