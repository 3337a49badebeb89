"""Adam with fewer bytes per parameter: fastoptim's formats against the peers, one run.

For each size and thread count, times one Adam step of:
  fastoptim (fastoptim.formats.adam_step, one fused pass): fp32 everything; fp32 params
  and grads with bf16 state; with 8-bit state; bf16 params + bf16 grads + 8-bit state;
  bf16 params + grads + state;
  torch fused Adam fp32, torch fused Adam all-bf16 (params, grads, state);
  bitsandbytes Adam8bit and torchao AdamW8bit (CPU), which dequantize to temporaries and
  are ~30x slower: timed on min(n, --slow-size) elements and reported per element;
  the roofline: fastoptim._core.roofline_update moving 28 bytes per element (3 float32
  arrays read and written, one read), i.e. the machine's measured bandwidth, from which
  each format's bytes give its bound.
Each contender is timed in interleaved rounds; the figure is the minimum over rounds.

    python bench/bench_formats.py                 # 1e8 and 1e6, 1 and 2 threads
    python bench/bench_formats.py --sizes 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from collections.abc import Callable

import fastoptim
import numpy as np
from fastoptim import _core, formats

# Bytes read + written per element per step.
BYTES = {
    "fastoptim fp32": 28.0,
    "fastoptim bf16 state": 20.0,
    "fastoptim int8 state": 16.0 + 2 * 8 / 256,
    "fastoptim bf16 p+g, int8 state": 10.0 + 2 * 8 / 256,
    "fastoptim bf16 p+g+state": 14.0,
    "torch fused fp32": 28.0,
    "torch fused all-bf16": 14.0,
    "bitsandbytes Adam8bit": 16.0 + 2 * 8 / 256,
    "torchao AdamW8bit": 16.0 + 2 * 8 / 256,
}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def time_min(fn: Callable[[], None], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def fastoptim_case(n: int, pfmt: str, sfmt: str, rng) -> Callable[[], None]:
    p32 = rng.standard_normal(n, dtype=np.float32)
    g32 = rng.standard_normal(n, dtype=np.float32)
    p = formats.bf16_from_float(p32) if pfmt == "bf16" else p32
    g = formats.bf16_from_float(g32) if pfmt == "bf16" else g32
    del p32, g32
    st = formats.new_state(p, sfmt)

    def step() -> None:
        formats.adam_step([p], [g], [st], lr=1e-3)
    return step


def torch_case(n: int, dtype) -> Callable[[], None]:
    import torch

    p = torch.nn.Parameter(torch.randn(n, dtype=torch.float32).to(dtype))
    p.grad = torch.randn(n, dtype=torch.float32).to(dtype)
    opt = torch.optim.Adam([p], lr=1e-3, fused=True)
    return opt.step


def bnb_case(n: int) -> Callable[[], None]:
    import bitsandbytes as bnb
    import torch

    p = torch.nn.Parameter(torch.randn(n))
    p.grad = torch.randn(n)
    opt = bnb.optim.Adam8bit([p], lr=1e-3)
    return opt.step


def torchao_case(n: int) -> Callable[[], None]:
    import torch
    from torchao.optim import AdamW8bit

    p = torch.nn.Parameter(torch.randn(n))
    p.grad = torch.randn(n)
    opt = AdamW8bit([p], lr=1e-3, weight_decay=0.0)
    return opt.step


def roofline_case(n: int, rng) -> Callable[[], None]:
    outs = [rng.standard_normal(n, dtype=np.float32) * 0 for _ in range(3)]
    x = np.full(n, 1e-3, np.float32)
    return lambda: _core.roofline_update(outs, x)


def run(sizes: list[int], threads: list[int], rounds: int, slow_size: int, out: str) -> dict:
    import torch

    rng = np.random.default_rng(0)
    results: dict = {"cpu": cpu_name(), "simd": fastoptim.simd_target(),
                     "format_kernels": _core.format_kernels(), "rows": []}
    ours = [("fastoptim fp32", "fp32", "fp32"), ("fastoptim bf16 state", "fp32", "bf16"),
            ("fastoptim int8 state", "fp32", "int8"),
            ("fastoptim bf16 p+g, int8 state", "bf16", "int8"),
            ("fastoptim bf16 p+g+state", "bf16", "bf16")]
    for n in sizes:
        for nt in threads:
            fastoptim.set_num_threads(nt)
            torch.set_num_threads(nt)
            reps = 3 if n >= 10**7 else 20
            row: dict = {"n": n, "threads": nt, "ns_per_elem": {}, "elems_timed": {}}
            # one contender alive at a time (memory: 1e8 fp32 Adam holds 1.6 GB)
            makers: list[tuple[str, Callable[[], Callable[[], None]], int]] = [
                ("roofline 28 B", lambda n=n: roofline_case(n, rng), n)]
            for name, pf, sf in ours:
                makers.append((name, lambda n=n, pf=pf, sf=sf: fastoptim_case(n, pf, sf, rng), n))
            makers.append(("torch fused fp32", lambda n=n: torch_case(n, torch.float32), n))
            makers.append(("torch fused all-bf16", lambda n=n: torch_case(n, torch.bfloat16), n))
            m = min(n, slow_size)
            makers.append(("bitsandbytes Adam8bit", lambda m=m: bnb_case(m), m))
            makers.append(("torchao AdamW8bit", lambda m=m: torchao_case(m), m))
            best = {name: float("inf") for name, _, _ in makers}
            for _ in range(rounds):
                for name, make, elems in makers:
                    try:
                        fn = make()
                    except ImportError as e:
                        best[name] = float("nan")
                        print(f"  {name}: skipped ({e})")
                        continue
                    fn()  # warm-up (first-touch, lazy state)
                    slow = name in ("bitsandbytes Adam8bit", "torchao AdamW8bit")
                    r = 1 if slow and elems >= 10**6 else reps
                    best[name] = min(best[name], time_min(fn, r) / elems * 1e9)
                    del fn
                    gc.collect()
                    row["elems_timed"][name] = elems
            row["ns_per_elem"] = best
            roof_bw = 28.0 / best["roofline 28 B"]  # bytes per ns = GB/s
            row["roofline_GBps"] = roof_bw
            tf = best["torch fused fp32"]
            fo = best["fastoptim fp32"]
            row["vs_torch_fused_fp32"] = {k: v / tf for k, v in best.items() if k in BYTES}
            row["vs_fastoptim_fp32"] = {k: v / fo for k, v in best.items() if k in BYTES}
            row["fraction_of_bandwidth"] = {k: (BYTES[k] / v) / roof_bw for k, v in best.items()
                                            if k in BYTES}
            results["rows"].append(row)
            print_row(row)
    results["bytes_per_elem"] = BYTES
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    return results


def print_row(row: dict) -> None:
    print(f"\nn={row['n']:.0e} threads={row['threads']}  roofline {row['roofline_GBps']:.1f} GB/s")
    print(f"  {'contender':34s} {'ns/elem':>8s} {'B/elem':>7s} {'x torch fp32':>12s} "
          f"{'x fo fp32':>9s} {'of bw':>6s}  elems timed")
    for k, v in row["ns_per_elem"].items():
        if k not in BYTES:
            print(f"  {k:34s} {v:8.3f}")
            continue
        print(f"  {k:34s} {v:8.3f} {BYTES[k]:7.2f} {row['vs_torch_fused_fp32'][k]:12.3f} "
              f"{row['vs_fastoptim_fp32'][k]:9.3f} {row['fraction_of_bandwidth'][k]:6.2f}  "
              f"{row['elems_timed'].get(k, row['n']):.0e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10**8, 10**6])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--slow-size", type=int, default=2 * 10**6,
                    help="elements for bitsandbytes / torchao (slow on the CPU)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "bench_formats.json"))
    a = ap.parse_args()
    print(f"CPU: {cpu_name()}; SIMD {fastoptim.simd_target()}, format kernels "
          f"{_core.format_kernels()}")
    run(a.sizes, a.threads, a.rounds, a.slow_size, a.out)


if __name__ == "__main__":
    main()
