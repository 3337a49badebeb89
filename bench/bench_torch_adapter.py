"""Per-step time of Adam on real models' parameter lists, side by side in one process.

    python bench/bench_torch_adapter.py [--repeats 50] [--threads 1 2] [--quick]

Parameter lists: a deep MLP with LayerNorms (160 tensors, ~1e6 parameters) and a small
transformer (148 tensors: embedding, 12 encoder layers, final norm, head), float32.
For each, fastoptim.torch.Adam against torch.optim.Adam (for-loop, foreach, fused),
DeepSpeed's DeepSpeedCPUAdam when it is already installed, and one adam_step call on
flat arrays of the same total size (the kernel's floor); the per-step cost on one small
tensor; the staging cost of strided-view parameters; and the GradScaler step (the
adapter's own unscale + update against torch's unscale_ + fused step). Prints medians
(microseconds per step) and ratios; nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import fastoptim
import fastoptim.torch as ft
import numpy as np
import torch
from fastoptim import bench


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for i in range(60):
        layers.append(torch.nn.Linear(128, 128))
        if i % 3 == 0:
            layers.append(torch.nn.LayerNorm(128))
    return torch.nn.Sequential(*layers)


def transformer() -> torch.nn.Module:
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(64, 4, dim_feedforward=256, batch_first=True)
    return torch.nn.Sequential(torch.nn.Embedding(1000, 64),
                               torch.nn.TransformerEncoder(layer, 12, enable_nested_tensor=False),
                               torch.nn.LayerNorm(64), torch.nn.Linear(64, 1000, bias=False))


def median_us(f, repeats: int) -> float:
    f()
    f()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e6


def with_grads(module: torch.nn.Module) -> list:
    params = list(module.parameters())
    g = torch.Generator().manual_seed(1)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-2
    return params


def adam_rows(label, params, repeats, nt) -> dict:
    n = sum(p.numel() for p in params)
    res = {"fastoptim.torch.Adam": median_us(ft.Adam(params, lr=1e-3).step, repeats)}
    for name, kw in [("torch for-loop", dict(foreach=False)),
                     ("torch foreach", dict(foreach=True)), ("torch fused", dict(fused=True))]:
        res[name] = median_us(torch.optim.Adam(params, lr=1e-3, **kw).step, repeats)
    try:  # only if already installed; never installed by this script
        from deepspeed.ops.adam import DeepSpeedCPUAdam
        res["DeepSpeedCPUAdam"] = median_us(DeepSpeedCPUAdam(params, lr=1e-3).step, repeats)
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    flat = [rng.standard_normal(n).astype(np.float32) * 1e-2 for _ in range(2)]
    flat += [np.zeros(n, np.float32), np.zeros(n, np.float32)]
    res["adam_step on one flat array"] = median_us(
        lambda f=flat: fastoptim.adam_step(f[0], f[1], f[2], f[3], step=1), repeats)
    return res


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
    lists = {"MLP": with_grads(mlp()), "transformer": with_grads(transformer())}
    print(f"SIMD {fastoptim.simd_target()}; " + "; ".join(
        f"{k}: {len(v)} tensors, {sum(p.numel() for p in v):,} parameters"
        for k, v in lists.items()))
    for nt in args.threads:
        torch.set_num_threads(nt)
        fastoptim.set_num_threads(nt)
        for label, params in lists.items():
            res = adam_rows(label, params, args.repeats, nt)
            fo = res["fastoptim.torch.Adam"]
            floor = res["adam_step on one flat array"]
            print(f"\n{label} ({len(params)} tensors), threads={nt}")
            for k, v in res.items():
                print(f"  {k:36s} {v:10.1f} us/step   {v / fo:5.2f}x fastoptim.torch")
                table.append([label, nt, k, f"{v:.0f}", f"{v / fo:.2f}"])
            goals.append({"goal": f"{label}, {nt} thread(s): torch fused / fastoptim.torch",
                          "target": 3.0, "measured": f"{res['torch fused'] / fo:.2f}x",
                          "met": res["torch fused"] / fo >= 3.0})
            goals.append({"goal": f"{label}, {nt} thread(s): fastoptim.torch / flat kernel",
                          "target": 1.1, "measured": f"{fo / floor:.2f}x",
                          "met": fo / floor <= 1.1})
            if "DeepSpeedCPUAdam" in res:
                goals.append({"goal": f"{label}, {nt} thread(s): DeepSpeed / fastoptim.torch",
                              "target": 2.0, "measured": f"{res['DeepSpeedCPUAdam'] / fo:.2f}x",
                              "met": res["DeepSpeedCPUAdam"] / fo >= 2.0})
    torch.set_num_threads(1)
    fastoptim.set_num_threads(1)
    extra = []
    # one small tensor: the adapter's fixed cost per step
    q = torch.zeros(1000, requires_grad=True)
    q.grad = torch.ones(1000)
    a = [np.zeros(1000, np.float32) for _ in range(4)]
    small = median_us(ft.Adam([q], lr=1e-3).step, args.repeats * 40)
    kern = median_us(lambda: fastoptim.adam_step(a[0], a[1], a[2], a[3], step=1),
                     args.repeats * 40)
    extra.append(["one 1,000-element tensor", f"{small:.1f}", f"{kern:.1f}",
                  f"{small - kern:.1f}"])
    goals.append({"goal": "fixed cost per step (one small tensor, minus the kernel)",
                  "target": "5 us", "measured": f"{small - kern:.1f} us",
                  "met": small - kern <= 5.0})
    # staging: the same MLP with every weight a strided view (gathered, updated, scattered)
    params = lists["MLP"]
    views = []
    for p in params:
        base = torch.zeros(*p.shape[:-1], 2 * p.shape[-1])
        v = base[..., ::2].detach().copy_(p.detach()).requires_grad_()
        v.grad = p.grad.clone()
        views.append(v)
    dense = median_us(ft.Adam(params, lr=1e-3).step, args.repeats)
    staged = median_us(ft.Adam(views, lr=1e-3).step, args.repeats)
    extra.append(["MLP, every parameter a strided view (staged)", f"{staged:.0f}",
                  f"{dense:.0f}", f"{staged / dense:.2f}x"])
    # GradScaler: the adapter unscales and steps; torch: unscale_ + fused step
    for name, opt in (("fastoptim.torch.Adam", ft.Adam(params, lr=1e-3)),
                      ("torch fused", torch.optim.Adam(params, lr=1e-3, fused=True))):
        scaler = torch.amp.GradScaler("cpu", init_scale=1.0)

        one = torch.ones(())

        def amp_step(opt=opt, scaler=scaler, one=one):
            scaler.scale(one)  # (a loss would be scaled here)
            scaler.step(opt)
            scaler.update()
        extra.append([f"GradScaler step, MLP, {name}", f"{median_us(amp_step, args.repeats):.0f}",
                      "", ""])
    for row in extra:
        print("  " + " | ".join(row))
    md = ("Adam step on real models' parameter lists (float32); median microseconds per "
          "step, and time relative to fastoptim.torch.Adam.\n\n"
          + bench.markdown_table(["list", "threads", "optimizer", "us / step",
                                  "x fastoptim.torch"], table)
          + "\nOne thread:\n\n"
          + bench.markdown_table(["case", "us / step", "reference", "difference"], extra))
    if "DeepSpeedCPUAdam" not in {row[2] for row in table}:
        md += "\nDeepSpeed is not installed here (bench/install_peers.sh): no DeepSpeed row.\n"
    print(md)
    bench.write_script_outputs(
        args.json, args.markdown, rows=table, markdown=md, goals=goals,
        title="Optimizer step on a real model's parameters (torch adapter)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
