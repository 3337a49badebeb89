#!/usr/bin/env python3
"""Adam float32 steps: fastoptim vs numpy, torch.optim.Adam (for-loop, foreach, fused) and
DeepSpeed's DeepSpeedCPUAdam, each also as a ratio to the roofline.

Every contender updates the very same buffers (torch tensors are views of the numpy
arrays, optimizer state included), so all of them see the same memory and the same cache
state, and they are timed round-robin in one process (fastoptim.bench.measure_interleaved):
medians of repeats, and ratios as medians of per-round ratios. Before timing, one step from
identical state is taken by every contender and compared with fastoptim's, so the table
only ever compares the same update.

Cases: one tensor of 1e3/1e5/1e6/1e8 elements, 200 tensors totalling 1e3/1e6, and the
parameter list of a small transformer (148 tensors, 11.7M elements); threads 1..cores
(scaling as speed-up vs one thread). Peers that are not installed are skipped with a
notice (bench/install_peers.sh installs them).

Follows the bench/ convention (bench/README.md): --quick, --json PATH, --markdown PATH.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastoptim
import numpy as np
from fastoptim import _core, bench

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed (imported lazily): no GPU probing

LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8
DTYPE = np.float32


def transformer_shapes(layers: int = 12, d: int = 256, ff: int = 1024, vocab: int = 8000,
                       ctx: int = 512) -> list[tuple[int, ...]]:
    """Parameter shapes of a GPT-style decoder (embedding-tied head), in model order."""
    shapes: list[tuple[int, ...]] = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,),  # ln1, attention
                   (d,), (d,), (ff, d), (ff,), (d, ff), (d,)]       # ln2, MLP
    return shapes + [(d,), (d,)]  # final layer norm


@dataclass
class Case:
    label: str
    sizes: list[int]

    @property
    def n(self) -> int:
        return sum(self.sizes)


def cases(quick: bool) -> list[Case]:
    model = [math.prod(s) for s in transformer_shapes()]
    out = [Case(f"1 tensor, {n:.0e}", [n]) for n in (10**3, 10**5, 10**6)]
    if not quick:
        out.append(Case("1 tensor, 1e+08", [10**8]))
    out += [Case(f"200 tensors, {n:.0e} total", bench.split_sizes(n, 200))
            for n in (10**3, 10**6)]
    out.append(Case(f"transformer 12x256, {len(model)} tensors, {sum(model) / 1e6:.1f}M",
                    model))
    return out


# --------------------------------------------------------------------------------------
# Shared buffers and contenders


class Buffers:
    """p, g, m, v for every tensor of a case (64-byte aligned, like torch's allocator)."""

    def __init__(self, sizes: list[int], rng: np.random.Generator | None = None):
        def make(value: float, scale: float) -> list[np.ndarray]:
            arrays = [bench.aligned_full(k, value, DTYPE) for k in sizes]
            if rng is not None:  # random state for the correctness check
                for a in arrays:
                    a[...] = np.abs(rng.standard_normal(a.size)) * scale + value
            return arrays

        # g > 0 and state >= 0: no NaN or subnormal, whatever steps or roofline passes run
        self.p, self.g = make(0.5, 0.1), make(1e-3, 1e-3)
        self.m, self.v = make(0.0, 1e-3), make(0.0, 1e-6)
        self.step = 0

    def snapshot(self) -> list[list[np.ndarray]]:
        return [[a.copy() for a in xs] for xs in (self.p, self.m, self.v)]

    def restore(self, snap: list[list[np.ndarray]]) -> None:
        for xs, ys in zip((self.p, self.m, self.v), snap, strict=True):
            for a, b in zip(xs, ys, strict=True):
                a[...] = b


def numpy_adam(ps, gs, ms, vs, state):
    """Adam as one would write it in plain numpy (torch.optim.Adam's math)."""
    state["step"] += 1
    t = state["step"]
    step_size = LR / (1 - BETA1**t)
    bc2_sqrt = math.sqrt(1 - BETA2**t)
    for p, g, m, v in zip(ps, gs, ms, vs, strict=True):
        m *= BETA1
        m += (1 - BETA1) * g
        v *= BETA2
        v += (1 - BETA2) * g * g
        denom = np.sqrt(v) / bc2_sqrt + EPS
        p -= step_size * m / denom


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _deepspeed_adam():
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
    except Exception:  # ImportError, or DeepSpeed failing to set up its accelerator
        return None
    return DeepSpeedCPUAdam


def _torch_params(torch, bufs: Buffers):
    params = []
    for p, g in zip(bufs.p, bufs.g, strict=True):
        t = torch.nn.Parameter(torch.from_numpy(p))
        t.grad = torch.from_numpy(g)
        params.append(t)
    return params


def _share_state(torch, opt, bufs: Buffers, step: Any) -> None:
    """Points the optimizer's state at the shared m and v (as a loaded state_dict would)."""
    for t, m, v in zip(opt.param_groups[0]["params"], bufs.m, bufs.v, strict=True):
        opt.state[t] = {"step": step() if callable(step) else step,
                        "exp_avg": torch.from_numpy(m), "exp_avg_sq": torch.from_numpy(v)}


def make_fastoptim(bufs: Buffers) -> bench.Timed:
    one = len(bufs.p) == 1  # one tensor: pass the arrays themselves, as a user would
    ns: dict[str, Any] = {"f": _core.adam_step}
    for k in ("p", "g", "m", "v"):
        ns[k] = getattr(bufs, k)[0] if one else getattr(bufs, k)
    # The step number only enters two scalars; a constant keeps the timed call bare.
    return bench.Timed("fastoptim", "f(p, g, m, v, step=k, lr=lr)",
                       {**ns, "k": bufs.step + 1, "lr": LR})


def make_numpy(bufs: Buffers) -> bench.Timed:
    state = {"step": bufs.step}
    return bench.Timed("numpy", "adam(p, g, m, v, s)",
                       {"adam": numpy_adam, "p": bufs.p, "g": bufs.g, "m": bufs.m,
                        "v": bufs.v, "s": state})


def torch_maker(mode: str) -> Callable[[Buffers], bench.Timed | str]:
    def make(bufs: Buffers) -> bench.Timed | str:
        torch = _torch()
        if torch is None:
            return "torch is not installed"
        kw = {"for-loop": {"foreach": False}, "foreach": {"foreach": True},
              "fused": {"fused": True}}[mode]
        opt = torch.optim.Adam(_torch_params(torch, bufs), lr=LR, betas=(BETA1, BETA2),
                               eps=EPS, **kw)
        _share_state(torch, opt, bufs, lambda: torch.tensor(float(bufs.step)))
        return bench.Timed(f"torch {mode}", "opt.step()", {"opt": opt})
    return make


def make_deepspeed(bufs: Buffers) -> bench.Timed | str:
    torch, cls = _torch(), _deepspeed_adam()
    if torch is None or cls is None:
        return "DeepSpeed is not installed (bench/install_peers.sh)"
    opt = cls(_torch_params(torch, bufs), lr=LR, betas=(BETA1, BETA2), eps=EPS,
              weight_decay=0.0, adamw_mode=False)
    _share_state(torch, opt, bufs, bufs.step)
    return bench.Timed("DeepSpeed", "opt.step()", {"opt": opt})


CONTENDERS: dict[str, Callable[[Buffers], bench.Timed | str]] = {
    "fastoptim": make_fastoptim,
    "numpy": make_numpy,
    "torch for-loop": torch_maker("for-loop"),
    "torch foreach": torch_maker("foreach"),
    "torch fused": torch_maker("fused"),
    "DeepSpeed": make_deepspeed,
}


def check_same_update(names: list[str], log: Callable[[str], None]) -> dict[str, str]:
    """One step from identical random state per contender; each must match fastoptim's.

    Returns {name: reason} for contenders to drop (not installed, or a different result).
    """
    drop: dict[str, str] = {}
    bufs = Buffers(bench.split_sizes(3001, 3), np.random.default_rng(7))
    bufs.step = 4
    start = bufs.snapshot()
    results = {}
    for name in names:
        bufs.restore(start)
        bufs.step = 4
        try:
            timed = CONTENDERS[name](bufs)
        except Exception as e:  # e.g. DeepSpeed's op failing to compile
            timed = f"could not be set up ({type(e).__name__}: {e})"
        if isinstance(timed, str):
            drop[name] = timed
            continue
        exec(timed.stmt, timed.namespace)
        results[name] = bufs.snapshot()
    want = results["fastoptim"]
    for name, got in results.items():
        for which, xs, ys in zip(("param", "exp_avg", "exp_avg_sq"), got, want, strict=True):
            for a, b in zip(xs, ys, strict=True):
                if not np.allclose(a, b, rtol=1e-5, atol=1e-7):
                    err = float(np.max(np.abs(a - b)))
                    drop[name] = f"its {which} differs from fastoptim's by {err:.2e}"
    for name, why in drop.items():
        log(f"skipping {name}: {why}")
    return drop


# --------------------------------------------------------------------------------------
# Measurement


def set_threads(n: int) -> None:
    fastoptim.set_num_threads(n)
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(n)


def measure_case(case: Case, names: list[str], threads: list[int], *, repeats: int,
                 target_s: float, budget_s: float,
                 log: Callable[[str], None]) -> list[dict[str, Any]]:
    bufs = Buffers(case.sizes)
    bufs.step = 10
    contenders = []
    for name in names:
        timed = CONTENDERS[name](bufs)
        assert not isinstance(timed, str)
        contenders.append(timed)
    if len(case.sizes) == 1:  # the roofline moves the same bytes on the same buffers
        outs, x = [bufs.p[0], bufs.m[0], bufs.v[0]], bufs.g[0]
    else:
        outs = [bench.aligned_full(case.n, 0.0, DTYPE) for _ in range(3)]
        x = bench.aligned_full(case.n, 1e-3, DTYPE)
    candidates = [bench.roofline_candidate(outs, x), *contenders]

    rows = []
    limiter = _thread_limiter()
    for t in threads:
        with limiter(t):
            set_threads(t)
            s = bench.measure_interleaved(candidates, repeats=repeats, target_s=target_s,
                                          budget_s=budget_s)
        roof, fo = s["roofline"], s.get("fastoptim")
        for c in candidates:
            sec = bench.median(s[c.name])
            rows.append({
                "case": case.label, "n": case.n, "tensors": len(case.sizes), "threads": t,
                "repeats": len(s[c.name]),
                "contender": c.name, "us_per_step": sec * 1e6,
                "ns_per_elem": sec / case.n * 1e9,
                "ratio_to_roofline": bench.paired_ratio(s[c.name], roof),
                "fastoptim_speedup": bench.paired_ratio(s[c.name], fo) if fo else None,
            })
        line = "  ".join(f"{r['contender']} {r['us_per_step']:.1f}us"
                         for r in rows if r["threads"] == t)
        log(f"{case.label}, {t} thread(s): {line}")
    set_threads(max(threads))
    del candidates, contenders, bufs
    gc.collect()
    return rows


def _thread_limiter():
    """threadpoolctl's limiter (every OpenMP/BLAS runtime in the process), or a no-op."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return lambda _n: contextlib.nullcontext()
    return lambda n: threadpool_limits(limits=n)


# --------------------------------------------------------------------------------------
# Report


def _cell_time(r: dict[str, Any] | None) -> str:
    if r is None:
        return "—"
    us = r["us_per_step"]
    t = f"{us:.2f}" if us < 10 else f"{us:.1f}" if us < 1000 else f"{us:,.0f}"
    return f"{t} ({r['ratio_to_roofline']:.2f}×)"


def markdown(rows: list[dict[str, Any]], names: list[str], threads: list[int],
             skipped: dict[str, str], goals: list[dict[str, Any]]) -> str:
    by = {(r["case"], r["threads"], r["contender"]): r for r in rows}
    labels = list(dict.fromkeys(r["case"] for r in rows))
    out = []
    for t in threads:
        out.append(f"### Adam float32 step, {t} thread{'s' if t > 1 else ''}: "
                   "µs per step (× roofline)\n")
        heads = ["case", "roofline", *names]
        out.append(bench.markdown_table(
            heads, [[lab] + [_cell_time(by.get((lab, t, c))) for c in heads[1:]]
                    for lab in labels]))
    peers = [c for c in names if c != "fastoptim"]
    if peers:
        out.append("### fastoptim speed-up over each peer (peer time / fastoptim time)\n")
        heads = ["case", "threads", *peers]
        body = [[lab, t] + [f"{by[(lab, t, c)]['fastoptim_speedup']:.1f}×" for c in peers]
                for lab in labels for t in threads]
        out.append(bench.markdown_table(heads, body))
    if len(threads) > 1:
        out.append("### OpenMP scaling: speed-up over 1 thread\n")
        heads = ["case", "threads", "roofline", *names]
        body = []
        for lab in labels:
            for t in threads[1:]:
                one = {c: by[(lab, threads[0], c)]["us_per_step"] for c in heads[2:]}
                body.append([lab, t] + [f"{one[c] / by[(lab, t, c)]['us_per_step']:.2f}×"
                                        for c in heads[2:]])
        out.append(bench.markdown_table(heads, body))
    notes = [f"{name}: skipped, {why}." for name, why in skipped.items()]
    notes.append("Every contender updates the same buffers, timed round-robin in one "
                 "process; medians of repeats, ratios are medians of per-round ratios. "
                 "The roofline is `outs[j] += x` over p, m, v and g (28 bytes/element).")
    out.append("\n".join(f"- {n}" for n in notes) + "\n")
    if goals:
        out.append("### Goals (Adam float32, 1 thread)\n")
        out.append(bench.markdown_table(
            ["goal", "measured", "met"],
            [[g["goal"], g["measured"], bench.goal_mark(g["met"])] for g in goals]))
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], names: list[str], path: str, date: str) -> bool:
    """Grouped bars: µs per step for each case and contender at 1 thread (log scale)."""
    if not bench.have_matplotlib():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = min(r["threads"] for r in rows)
    labels = list(dict.fromkeys(r["case"] for r in rows))
    by = {(r["case"], r["contender"]): r for r in rows if r["threads"] == t}
    heads = ["roofline", *names]
    width = 0.8 / len(heads)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for j, c in enumerate(heads):
        xs = [i + (j - (len(heads) - 1) / 2) * width for i in range(len(labels))]
        ys = [by[(lab, c)]["us_per_step"] if (lab, c) in by else 0 for lab in labels]
        ax.bar(xs, ys, width, label=c, color="0.6" if c == "roofline" else None)
    ax.set_yscale("log")
    # Case names are long: slanted, anchored at their right end, so none overlaps the next.
    ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=30, ha="right",
                  rotation_mode="anchor")
    ax.set_ylabel("µs per Adam step (float32)")
    ax.set_title(f"Adam step vs peers, {t} thread, {date}", fontsize=9)
    ax.legend(fontsize=7, ncol=4)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def goals_from(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def get(case: str, contender: str = "fastoptim") -> dict[str, Any] | None:
        return next((r for r in rows if r["case"] == case and r["threads"] == 1
                     and r["contender"] == contender), None)

    goals = []
    r = get("1 tensor, 1e+03")
    if r:
        goals.append({"goal": "≤ 1.5 µs per 1,000-element call", "target": 1.5,
                      "measured": f"{r['us_per_step']:.2f} µs",
                      "met": r["us_per_step"] <= 1.5})
    for case, limit in (("1 tensor, 1e+05", 1.2), ("1 tensor, 1e+06", 1.2),
                        ("1 tensor, 1e+08", 1.05)):
        r = get(case)
        if r:
            goals.append({"goal": f"≤ {limit}× roofline at {case.split(', ')[1]}",
                          "target": limit, "measured": f"{r['ratio_to_roofline']:.2f}×",
                          "met": r["ratio_to_roofline"] <= limit})
    if get("200 tensors, 1e+06 total"):
        for peer, limit in (("torch fused", 3.0), ("DeepSpeed", 2.0)):
            r = get("200 tensors, 1e+06 total", peer)
            goals.append({"goal": f"≥ {limit:g}× {peer} on 200 tensors totalling 1e6",
                          "target": limit,
                          "measured": f"{r['fastoptim_speedup']:.2f}×" if r else "not run",
                          "met": r["fastoptim_speedup"] >= limit if r else None})
    return goals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="no 1e8 case, shorter samples")
    ap.add_argument("--json", help="write rows, machine and goals here")
    ap.add_argument("--markdown", help="write the markdown tables here")
    ap.add_argument("--threads", help="comma-separated thread counts (default 1..cores)")
    ap.add_argument("--repeats", type=int, help="samples per contender (median reported)")
    ap.add_argument("--cases", help="only cases whose label contains this text")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    threads = ([int(x) for x in args.threads.split(",")] if args.threads
               else list(range(1, bench.cpu_count() + 1)))
    repeats = args.repeats or (5 if args.quick else 9)
    target_s = 0.005 if args.quick else 0.03
    machine = bench.machine_summary()
    for line in bench.machine_lines(machine):
        print(line)

    names = list(CONTENDERS)
    skipped = check_same_update(names, print)
    names = [n for n in names if n not in skipped]
    rows: list[dict[str, Any]] = []
    for case in cases(args.quick):
        if args.cases and args.cases not in case.label:
            continue
        rows += measure_case(case, names, threads, repeats=repeats, target_s=target_s,
                             budget_s=10 if args.quick else 120, log=print)
    goals = goals_from(rows)
    md = markdown(rows, names, threads, skipped, goals)
    print(md)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"title": "Optimizer steps vs peers", "machine": machine,
                       "threads": threads, "quick": args.quick, "contenders": names,
                       "skipped": skipped, "rows": rows, "goals": goals}, f, indent=1)
    if args.markdown:
        png = os.path.join(os.path.dirname(os.path.abspath(args.markdown)), "optimizers.png")
        if rows and plot(rows, names, png, machine["date"]):
            md += "\n![µs per Adam step, fastoptim vs peers](optimizers.png)\n"
        with open(args.markdown, "w") as f:
            f.write(md)
    print(f"done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
