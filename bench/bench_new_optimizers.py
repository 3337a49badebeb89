#!/usr/bin/env python3
"""Per-step float32 time of Schedule-Free AdamW / SGD, LAMB and LARS, side by side.

    python bench/bench_new_optimizers.py [--threads 1 2] [--repeats 15] [--quick]

Cases: one tensor of 1e7 elements, and the 160-tensor (~1e6 parameter) MLP of
bench_torch_adapter.py. For each optimizer: fastoptim.torch.X.step(), the bare native
multi-tensor kernel on the same buffers (fastoptim._core.X_step; for LARS, the call of the
matrices: trust=True), and the reference package in each of its modes (schedulefree
1.4.1 and pytorch-optimizer 4.1.0: for-loop foreach=False, and foreach=True); at 1e7,
the ratio to a roofline loop moving the same bytes (fastoptim._core.roofline_update:
28 B/element for AdamW-SF and LAMB's moments, 20 B for SGD-SF and LARS's momentum). LAMB
and LARS (on a matrix) are two passes, norms then update (40 and 28 B/element), so their
ratios to those rooflines are at least 40/28 and 28/20.

schedulefree's AdamW divides the gradient in place every step; its candidates restore the
gradients first (torch._foreach_copy_), and that copy, timed alone, is subtracted.
Timing is round-robin (fastoptim.bench.measure_interleaved): medians of repeats.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

import fastoptim
import fastoptim.torch as ft
import numpy as np
import torch
from fastoptim import _core, bench

HERE = os.path.dirname(os.path.abspath(__file__))


def _mlp_shapes() -> list[tuple[int, ...]]:
    spec = importlib.util.spec_from_file_location("bench_torch_adapter",
                                                  os.path.join(HERE, "bench_torch_adapter.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return [tuple(p.shape) for p in mod.mlp().parameters()]


def _reference(name: str):
    try:
        if name in ("Lamb", "LARS"):
            import pytorch_optimizer
            return getattr(pytorch_optimizer, name)
        import schedulefree
        return getattr(schedulefree, name)
    except ImportError:
        return None


# name -> (fastoptim class, kernel, kwargs, roofline outputs, reference class name)
OPTIMIZERS = {
    "AdamWScheduleFree": (ft.AdamWScheduleFree, "schedulefree_adamw_step",
                          dict(lr=1e-3), 3, "AdamWScheduleFree"),
    "SGDScheduleFree": (ft.SGDScheduleFree, "schedulefree_sgd_step", dict(lr=1e-2), 2,
                        "SGDScheduleFree"),
    "Lamb": (getattr(ft, "Lamb", None), "lamb_step", dict(lr=1e-3), 3, "Lamb"),
    "LARS": (getattr(ft, "LARS", None), "lars_step", dict(lr=1e-2), 2, "LARS"),
}


def _tensors(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in shapes]


def run_case(label: str, shapes, threads: int, repeats: int) -> list[dict]:
    fastoptim.set_num_threads(threads)
    torch.set_num_threads(threads)
    n = sum(int(np.prod(s)) for s in shapes)
    rows = []
    for name, (cls, kernel, kw, nout, refname) in OPTIMIZERS.items():
        if cls is None:
            continue
        cands: list[bench.Timed] = []
        # fastoptim.torch
        ps = [p.requires_grad_() for p in _tensors(shapes, 1)]
        for p, g in zip(ps, _tensors(shapes, 2), strict=True):
            p.grad = g * 1e-2
        opt = cls(ps, **kw)
        if hasattr(opt, "train"):
            opt.train()
        opt.step()
        cands.append(bench.Timed("fastoptim.torch", "opt.step()", {"opt": opt}))
        # the bare kernel on the same buffers (its state as the adapter keeps it)
        views = [p.detach().numpy() for p in ps]
        gviews = [p.grad.numpy() for p in ps]
        keys = fastoptim.spec.get(opt._spec.name).state_keys
        states = [[opt.state[p][k].numpy() for p in ps] for k in keys]
        kkw = opt._spec.kernel_kwargs(opt.param_groups[0], opt.defaults)
        if opt._spec.split is not None:
            kkw[opt._spec.split[0]] = True
        if opt._spec.kernel_step:
            kkw["step"] = 2
        cands.append(bench.Timed("kernel", "f(p, g, *s, **kw)",
                                 {"f": getattr(_core, kernel), "p": views, "g": gviews,
                                  "s": states, "kw": kkw}))
        ref = _reference(refname)
        restore = None
        if ref is not None:
            for foreach in (False, True):
                rp = [p.requires_grad_() for p in _tensors(shapes, 1)]
                g0 = [g * 1e-2 for g in _tensors(shapes, 2)]
                for p, g in zip(rp, g0, strict=True):
                    p.grad = g.clone()
                r = ref(rp, **kw, foreach=foreach)
                if hasattr(r, "train"):
                    r.train()
                grads = [p.grad for p in rp]
                stmt = "r.step()"
                if name == "AdamWScheduleFree":  # it divides the gradients in place
                    stmt = "copy(grads, g0); r.step()"
                    restore = bench.Timed("restore", "copy(grads, g0)",
                                          {"copy": torch._foreach_copy_, "grads": grads,
                                           "g0": g0})
                r.step()
                cands.append(bench.Timed(f"{refname} foreach={foreach}", stmt,
                                         {"r": r, "copy": torch._foreach_copy_,
                                          "grads": grads, "g0": g0}))
        if restore is not None:
            cands.append(restore)
        if len(shapes) == 1:
            rng = np.random.default_rng(0)
            outs = [bench.aligned_full(n, 0.0, np.float32) for _ in range(nout)]
            x = rng.standard_normal(n).astype(np.float32) * 1e-3
            cands.append(bench.roofline_candidate(outs, x, f"roofline {4 * (2 * nout + 1)} B"))
        with torch.no_grad():
            samples = bench.measure_interleaved(cands, repeats=repeats, target_s=0.05,
                                                budget_s=60.0)
        med = {k: bench.median(v) * 1e6 for k, v in samples.items()}
        if "restore" in med:
            for k in list(med):
                if k.startswith(refname + " "):
                    med[k] -= med["restore"]
        ref_modes = {k: v for k, v in med.items() if k.startswith(refname + " ")}
        row = {"case": label, "threads": threads, "optimizer": name, "us": med}
        if ref_modes:
            row["speedup_vs_fastest_reference"] = min(ref_modes.values()) / med["fastoptim.torch"]
        roof = [v for k, v in med.items() if k.startswith("roofline")]
        if roof:
            row["kernel_over_roofline"] = med["kernel"] / roof[0]
            row["torch_adapter_over_roofline"] = med["fastoptim.torch"] / roof[0]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="1e6 instead of 1e7, 5 repeats")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--markdown", help="write a table here")
    a = ap.parse_args(argv)
    big = 10**6 if a.quick else 10**7
    repeats = 5 if a.quick else a.repeats
    info = bench.machine_summary()
    print("\n".join(bench.machine_lines(info)))
    rows = []
    for threads in a.threads:
        rows += run_case(f"1 tensor, {big:.0e}", [(big // 1000, 1000)], threads, repeats)
        rows += run_case("MLP, 160 tensors", _mlp_shapes(), threads, repeats)
    lines = ["| case | threads | optimizer | fastoptim.torch µs | kernel µs | reference µs "
             "(for-loop / foreach) | speed-up vs fastest reference | kernel / roofline |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["us"]
        refs = " / ".join(f"{v:.0f}" for k, v in m.items() if "foreach=" in k) or "n/a"
        sp = r.get("speedup_vs_fastest_reference")
        ro = r.get("kernel_over_roofline")
        lines.append(f"| {r['case']} | {r['threads']} | {r['optimizer']} "
                     f"| {m['fastoptim.torch']:.0f} | {m['kernel']:.0f} | {refs} "
                     f"| {'n/a' if sp is None else f'{sp:.1f}×'} "
                     f"| {'n/a' if ro is None else f'{ro:.2f}'} |")
    table = "\n".join(lines) + "\n"
    print(table)
    bench.write_script_outputs(a.json, a.markdown, title="bench_new_optimizers", rows=rows,
                               markdown="# bench_new_optimizers\n\n"
                               + "\n".join(bench.machine_lines(info)) + "\n\n" + table,
                               machine=info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
