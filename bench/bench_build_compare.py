#!/usr/bin/env python3
"""Two builds of fastoptim side by side in one process: the installed one ("new") and
another installed package folder given with --old (e.g. a venv built from an earlier
commit). The old package is loaded under the name ``fastoptim_old``; both step the very
same buffers, timed round-robin (fastoptim.bench.measure_interleaved), and each line
reports new/old as the median of per-round ratios (1.00 = no change).

Cases: the raw kernel calls (``_core.*_step``) at 1e3 elements (call overhead), 1e6
elements and 200 tensors of 5e3 (multi-tensor); the numpy front end's ``Adam.step`` and
the torch adapter's ``Adam.step`` on 200 tensors (per-step Python overhead).

    python bench/bench_build_compare.py --old /path/to/old-venv/lib/python3.11/site-packages
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import sys
import tempfile
from pathlib import Path

import fastoptim
import numpy as np
from fastoptim import bench


def load_old(site: Path) -> object:
    """Copies <site>/fastoptim to a temporary fastoptim_old package and imports it."""
    src = site / "fastoptim"
    if not (src / "__init__.py").exists():
        raise SystemExit(f"--old: no fastoptim package in {site}")
    root = Path(tempfile.mkdtemp(prefix="fastoptim-old-"))
    dst = root / "fastoptim_old"
    shutil.copytree(src, dst)
    for py in dst.rglob("*.py"):
        text = py.read_text()
        text = re.sub(r"\bfrom fastoptim\b", "from fastoptim_old", text)
        text = re.sub(r"\bimport fastoptim\.", "import fastoptim_old.", text)
        text = re.sub(r"^import fastoptim$", "import fastoptim_old as fastoptim", text,
                      flags=re.M)
        py.write_text(text)
    sys.path.insert(0, str(root))
    return importlib.import_module("fastoptim_old")


def kernel_cases(sizes: list[int], rng: np.random.Generator) -> list[tuple[str, str, dict]]:
    """(label, statement, namespace without the module) per raw kernel case."""
    f32 = np.float32
    mk = lambda: [rng.standard_normal(n).astype(f32) for n in sizes]  # noqa: E731
    pos = lambda: [np.abs(a) + 1 for a in mk()]  # noqa: E731
    p, g = mk(), mk()
    return [
        # no weight decay: L2 decay drives g + wd p, hence v, to denormals over many calls
        ("adam_step", "c.adam_step(p, g, m, v, step=3, lr=1e-3)",
         dict(p=p, g=g, m=mk(), v=pos())),
        ("sgd_step momentum", "c.sgd_step(p, g, b, lr=1e-3, momentum=0.9)",
         dict(p=p, g=g, b=mk())),
        ("rmsprop_step", "c.rmsprop_step(p, g, s, lr=1e-3)", dict(p=p, g=g, s=pos())),
        ("adagrad_step", "c.adagrad_step(p, g, s, step=3, lr=1e-3)", dict(p=p, g=g, s=pos())),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, required=True, help="site-packages of the old build")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    old = load_old(args.old)
    for mod in (fastoptim, old):
        mod.set_num_threads(args.threads)  # type: ignore[attr-defined]
    info = bench.machine_summary()
    print(f"# new/old per call (median of per-round ratios), threads={args.threads}")
    print("# " + " | ".join(bench.machine_lines(info)))
    rng = np.random.default_rng(0)
    target = 0.005 if args.quick else 0.02
    repeats = 5 if args.quick else args.repeats
    rows = []
    layouts = [("1 tensor 1e3", [1000]), ("1 tensor 1e6", [10**6]),
               ("200 tensors 1e6", bench.split_sizes(10**6, 200))]
    for layout, sizes in layouts:
        for label, stmt, ns in kernel_cases(sizes, rng):
            one = len(sizes) == 1
            ns = {k: (v[0] if one else v) for k, v in ns.items()}
            cands = [bench.Timed(f"{tag}", stmt, {**ns, "c": mod._core})  # type: ignore
                     for tag, mod in (("new", fastoptim), ("old", old))]
            s = bench.measure_interleaved(cands, repeats=repeats, target_s=target)
            rows.append((f"{label}, {layout}", bench.median(s["new"]), bench.median(s["old"]),
                         bench.paired_ratio(s["new"], s["old"])))
    # front ends: numpy optim.Adam and the torch adapter on 1 tensor of 10 elements (the
    # per-step Python overhead) and on 200 tensors of 5e3
    for sizes in ([10], bench.split_sizes(10**6, 200)):
        params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
        grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
        front = []
        for tag, mod in (("new", fastoptim), ("old", old)):
            optim = importlib.import_module(mod.__name__ + ".optim")
            opt = optim.Adam([p.copy() for p in params], lr=1e-3)
            front.append(bench.Timed(tag, "opt.step(grads)", {"opt": opt, "grads": grads}))
        s = bench.measure_interleaved(front, repeats=repeats, target_s=target)
        rows.append((f"optim.Adam.step, {len(sizes)} tensors {sum(sizes):.0e}",
                     bench.median(s["new"]), bench.median(s["old"]),
                     bench.paired_ratio(s["new"], s["old"])))
    sizes = bench.split_sizes(10**6, 200)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        for sz in ([10], [50] * 200, sizes):
            tl = []
            for tag, mod in (("new", fastoptim), ("old", old)):
                ft = importlib.import_module(mod.__name__ + ".torch")
                ps = [torch.zeros(n, requires_grad=True) for n in sz]
                for p, n in zip(ps, sz, strict=True):
                    p.grad = torch.randn(n)
                tl.append(bench.Timed(tag, "opt.step()", {"opt": ft.Adam(ps, lr=1e-3)}))
            s = bench.measure_interleaved(tl, repeats=repeats, target_s=target)
            rows.append((f"fastoptim.torch.Adam.step, {len(sz)} tensors {sum(sz):.0e}",
                         bench.median(s["new"]), bench.median(s["old"]),
                         bench.paired_ratio(s["new"], s["old"])))
    print("| case | new | old | new/old |")
    print("|---|---|---|---|")
    for label, new, old_t, ratio in rows:
        print(f"| {label} | {new * 1e6:.2f} us | {old_t * 1e6:.2f} us | {ratio:.3f} |")


if __name__ == "__main__":
    main()
