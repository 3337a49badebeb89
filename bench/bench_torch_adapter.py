"""Per-step time of Adam on a realistic model's parameter list, side by side in one process.

    python bench/bench_torch_adapter.py [--repeats 50] [--threads 1 2]

Model: a deep MLP with LayerNorms (160 tensors, ~1e6 parameters, float32). Compares
fastoptim.torch.Adam with torch.optim.Adam (for-loop, foreach, fused) and DeepSpeed's
DeepSpeedCPUAdam when it is already installed; and the numpy fastoptim.optim.Adam on the
same list with one adam_step call on a single array of the same total size. Prints
medians (microseconds per step) and ratios; nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import fastoptim
import fastoptim.torch as ft
import numpy as np
import torch
from fastoptim import bench, optim


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for i in range(60):
        layers.append(torch.nn.Linear(128, 128))
        if i % 3 == 0:
            layers.append(torch.nn.LayerNorm(128))
    return torch.nn.Sequential(*layers)


def median_us(f, repeats: int) -> float:
    f()
    f()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats = 15
    table, goals = [], []
    params = [p for p in model().parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    n = sum(p.numel() for p in params)
    print(f"{len(params)} tensors, {n} parameters, float32, SIMD {fastoptim.simd_target()}")
    for nt in args.threads:
        torch.set_num_threads(nt)
        fastoptim.set_num_threads(nt)
        res = {}
        res["fastoptim.torch.Adam"] = median_us(ft.Adam(params, lr=1e-3).step, args.repeats)
        for name, kw in [("torch for-loop", dict(foreach=False)),
                         ("torch foreach", dict(foreach=True)), ("torch fused", dict(fused=True))]:
            res[name] = median_us(torch.optim.Adam(params, lr=1e-3, **kw).step, args.repeats)
        try:  # only if already installed; never installed by this script
            from deepspeed.ops.adam import DeepSpeedCPUAdam
            res["DeepSpeedCPUAdam"] = median_us(DeepSpeedCPUAdam(params, lr=1e-3).step,
                                                args.repeats)
        except ImportError:
            pass
        arrays = [p.detach().numpy().copy() for p in params]
        grads = [p.grad.numpy().copy() for p in params]
        np_opt = optim.Adam(arrays, lr=1e-3)
        res["fastoptim.optim.Adam (numpy list)"] = median_us(lambda o=np_opt, g=grads: o.step(g),
                                                             args.repeats)
        flat = [np.zeros(n, np.float32) for _ in range(4)]
        flat[1][:] = 1e-3
        res["adam_step on one flat array"] = median_us(
            lambda f=flat: fastoptim.adam_step(f[0], f[1], f[2], f[3], step=1),
            args.repeats)
        print(f"\nthreads={nt}")
        for k, v in res.items():
            print(f"  {k:36s} {v:10.1f} us/step")
        fo = res["fastoptim.torch.Adam"]
        print(f"  torch fused / fastoptim.torch:        {res['torch fused'] / fo:.2f}x")
        print(f"  torch foreach / fastoptim.torch:      {res['torch foreach'] / fo:.2f}x")
        if "DeepSpeedCPUAdam" in res:
            ds = res["DeepSpeedCPUAdam"]
            print(f"  DeepSpeed / fastoptim.torch:          {ds / fo:.2f}x")
        ratio = res["fastoptim.optim.Adam (numpy list)"] / res["adam_step on one flat array"]
        print(f"  numpy list / one flat call:           {ratio:.2f}x")
        for k, v in res.items():
            table.append([nt, k, f"{v:.0f}", f"{v / fo:.2f}"])
        goals.append({"goal": f"fastoptim.torch.Adam vs torch fused, {nt} thread(s)",
                      "target": 3.0, "measured": f"{res['torch fused'] / fo:.2f}x",
                      "met": res["torch fused"] / fo >= 3.0})
        if "DeepSpeedCPUAdam" in res:
            goals.append({"goal": f"fastoptim.torch.Adam vs DeepSpeedCPUAdam, {nt} thread(s)",
                          "target": 2.0, "measured": f"{res['DeepSpeedCPUAdam'] / fo:.2f}x",
                          "met": res["DeepSpeedCPUAdam"] / fo >= 2.0})
        goals.append({"goal": f"numpy optim.Adam list vs one flat call, {nt} thread(s)",
                      "target": 1.2, "measured": f"{ratio:.2f}x", "met": ratio <= 1.2})
    md = (f"Adam step on a deep MLP's parameter list ({len(params)} tensors, {n:,} float32 "
          f"parameters); median microseconds per step, and time relative to "
          f"fastoptim.torch.Adam.\n\n"
          + bench.markdown_table(["threads", "optimizer", "us / step", "x fastoptim.torch"],
                                 table))
    if "DeepSpeedCPUAdam" not in {row[1] for row in table}:
        md += "\nDeepSpeed is not installed here (bench/install_peers.sh): no DeepSpeed row.\n"
    print(md)
    bench.write_script_outputs(
        args.json, args.markdown, rows=table, markdown=md, goals=goals,
        title="Optimizer step on a real model's parameters (torch adapter)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
