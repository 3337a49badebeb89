"""Per-step time of Adafactor, Muon and SparseAdam: fastoptim against torch.optim.

    python bench/bench_optimizers_b.py [--threads 1 2] [--out bench/results/bench_optimizers_b.md]

float32, medians of repeated steps, measured side by side in one process:
- Adafactor on one 1e7-element matrix (factored) and on a 160-tensor list of ~1e6
  parameters (80 matrices, 80 vectors): fastoptim.optim (numpy), fastoptim.torch, and
  torch.optim.Adafactor for-loop and foreach (it has no fused mode).
- Muon on a 1024 x 1024 matrix and on 160 matrices of 80 x 80: fastoptim.optim (float32
  Newton-Schulz through numpy's BLAS) against the same BLAS products alone (the goal is
  within 1.2x of them), and fastoptim.torch / torch.optim.Muon (bfloat16 products) against
  the bfloat16 products alone.
- SparseAdam on a 100000 x 100 embedding (1e7 elements) with 1000 touched rows per step.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import fastoptim
import fastoptim.torch as ft
import numpy as np
import torch
from fastoptim import optim


def interleaved(fns: dict, reps: int, warmup: int = 2) -> dict:
    """Median seconds per call of each function, timed in rotation (one call of each per
    round), so that drifting machine load and cache state hit all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _torch_params(shapes, gen):
    ps = [torch.randn(s, generator=gen).requires_grad_() for s in shapes]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=gen)
    return ps


def adafactor_rows(shapes, label, reps):
    gen = torch.Generator().manual_seed(0)
    arrays = [torch.randn(s, generator=gen).numpy() for s in shapes]
    grads = [torch.randn(s, generator=gen).numpy() for s in shapes]
    o = optim.Adafactor(arrays, lr=1e-3)
    fns = {"fastoptim.optim": lambda: o.step(grads),
           "fastoptim.torch": ft.Adafactor(_torch_params(shapes, gen), lr=1e-3).step}
    for mode in (False, True):
        t = torch.optim.Adafactor(_torch_params(shapes, gen), lr=1e-3, foreach=mode)
        fns[f"torch {'foreach' if mode else 'for-loop'}"] = t.step
    res = interleaved(fns, reps)
    best = min(res["torch for-loop"], res["torch foreach"])
    return [(label, k, v, f"{best / v:.2f}x faster than torch's best" if k.startswith("fast")
             else "") for k, v in res.items()]


def _ns_products_numpy(xs, steps=5):
    """The products of Muon's Newton-Schulz iteration alone, float32 numpy."""
    for x in xs:
        X = x.T if x.shape[0] > x.shape[1] else x
        X = X / np.linalg.norm(X)  # the scale Muon runs at (no overflow)
        for _ in range(steps):
            A = X @ X.T
            B = A @ A
            X = B @ X


def _ns_products_bf16(xs, steps=5):
    for x in xs:
        X = x.T if x.shape[0] > x.shape[1] else x
        X = X / X.norm()
        for _ in range(steps):
            A = X @ X.T
            B = torch.addmm(A, A, A)
            X = torch.addmm(X, B, X)


def muon_rows(shapes, label, reps):
    gen = torch.Generator().manual_seed(1)
    rows = []
    arrays = [torch.randn(s, generator=gen).numpy() for s in shapes]
    grads = [torch.randn(s, generator=gen).numpy() for s in shapes]
    o = optim.Muon(arrays, lr=1e-3)
    ps = _torch_params(shapes, gen)
    f = ft.Muon(ps, lr=1e-3)
    bf = [p.grad.bfloat16() for p in ps]
    t = torch.optim.Muon(_torch_params(shapes, gen), lr=1e-3)
    res = interleaved({"ours": lambda: o.step(grads), "blas": lambda: _ns_products_numpy(grads),
                       "fo": f.step, "prod": lambda: _ns_products_bf16(bf), "tt": t.step}, reps)
    ours, blas, fo, prod, tt = (res[k] for k in ("ours", "blas", "fo", "prod", "tt"))
    rows.append(("fastoptim.optim (fp32 BLAS)", ours, f"{ours / blas:.2f}x of its products"))
    rows.append(("  its BLAS products alone", blas, ""))
    rows.append(("fastoptim.torch (bf16 mm)", fo, f"{fo / prod:.2f}x of its products"))
    rows.append(("torch.optim.Muon", tt, f"{tt / prod:.2f}x of its products"))
    rows.append(("  bf16 products alone", prod, ""))
    return [(label, *r) for r in rows]


def sparse_rows(reps):
    gen = torch.Generator().manual_seed(2)
    n, d, k = 100_000, 100, 1000
    fns = {}
    for name, cls in (("fastoptim.torch", ft.SparseAdam), ("torch.optim", torch.optim.SparseAdam)):
        p = torch.randn(n, d, generator=gen).requires_grad_()
        idx = torch.randint(0, n, (k,), generator=gen)
        p.grad = torch.sparse_coo_tensor(idx[None], torch.randn(k, d, generator=gen), (n, d),
                                         check_invariants=True).coalesce()
        fns[name] = cls([p], lr=1e-3).step
    P = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    r = np.unique(np.random.default_rng(1).integers(0, n, k))
    v = np.random.default_rng(2).standard_normal((len(r), d)).astype(np.float32)
    o = optim.SparseAdam([P], lr=1e-3)
    fns["fastoptim.optim (rows, values)"] = lambda: o.step([(r, v)])
    res = interleaved(fns, reps * 4)
    return [("embedding 1e5 x 100, 1000 rows", k, t, "") for k, t in res.items()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--out", default="bench/results/bench_optimizers_b.md")
    a = ap.parse_args()
    big = [(3162, 3163)]
    many = [(100, 100)] * 80 + [(2500,)] * 80
    lines = [f"# bench_optimizers_b ({cpu_name()}, {fastoptim.simd_target()}, torch "
             f"{torch.__version__}, numpy {np.__version__})", ""]
    for nt in a.threads:
        fastoptim.set_num_threads(nt)
        torch.set_num_threads(nt)
        lines += [f"## {nt} thread(s)", "", "| case | implementation | ms/step | note |",
                  "|---|---|---|---|"]
        rows = (adafactor_rows(big, "Adafactor 1e7 matrix", a.reps)
                + adafactor_rows(many, "Adafactor 160 tensors, 1e6", a.reps))
        rows += muon_rows([(1024, 1024)], "Muon 1024 x 1024", a.reps)
        rows += muon_rows([(80, 80)] * 160, "Muon 160 x (80 x 80)", a.reps)
        rows += sparse_rows(a.reps)
        for case, impl, t, note in rows:
            lines.append(f"| {case} | {impl} | {t * 1e3:.3f} | {note} |")
            print(lines[-1], flush=True)
        lines.append("")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
