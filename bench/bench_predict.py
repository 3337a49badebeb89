"""Inference throughput: batch-invariant blocked forward vs one matrix product per layer.

With ``training=False`` fastoptim's Dense layers multiply in blocks of nn.ROW_BLOCK rows
(the last one padded) so that a row's prediction does not depend on the other rows of its
batch. The alternative is one BLAS call per layer over the whole batch (what
``training=True`` does; no dropout here, so both compute the same function). Both run
interleaved on the same model and data, at 1 and 2 BLAS threads, for the CLI's digits model
(64-256-10) and a Fashion-MNIST-sized one (784-128-10). Reported: median µs per call,
rows per second, and the ratio blocked / whole batch (median of per-round ratios).

    python bench/bench_predict.py [--quick] [--json PATH] [--markdown PATH]
"""

from __future__ import annotations

import argparse

import numpy as np
from fastoptim import bench, nn
from threadpoolctl import threadpool_limits

MODELS = {"64-256-10": (64, 256, 10), "784-128-10": (784, 128, 10)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    a = ap.parse_args()
    batches = [1, 64, 1000, 10000] if a.quick else [1, 10, 64, 65, 100, 1000, 10000]
    repeats, target = (5, 0.02) if a.quick else (9, 0.05)
    threads = [1, 2] if bench.cpu_count() >= 2 else [1]
    machine = bench.machine_summary()
    for line in bench.machine_lines(machine):
        print(line)
    rows = []
    for name, (d_in, hidden, d_out) in MODELS.items():
        for dtype in ("float32", "float64"):
            model = nn.Sequential(nn.Dense(d_in, hidden, "relu"), nn.Dense(hidden, d_out),
                                  dtype=dtype, seed=0)
            rng = np.random.default_rng(0)
            for n in batches:
                X = rng.standard_normal((n, d_in)).astype(dtype)
                for t in threads:
                    cands = [bench.Timed("blocked", "f(X, training=False)",
                                         {"f": model.forward, "X": X}),
                             bench.Timed("whole", "f(X, training=True)",
                                         {"f": model.forward, "X": X})]
                    with threadpool_limits(limits=t, user_api="blas"):
                        s = bench.measure_interleaved(cands, repeats=repeats, target_s=target)
                    blocked, whole = bench.median(s["blocked"]), bench.median(s["whole"])
                    row = {"model": name, "dtype": dtype, "batch": n, "threads": t,
                           "blocked_us": blocked * 1e6, "whole_us": whole * 1e6,
                           "blocked_rows_per_s": n / blocked, "whole_rows_per_s": n / whole,
                           "ratio": bench.paired_ratio(s["blocked"], s["whole"])}
                    rows.append(row)
                    print(f"{name:<11}{dtype:<9}{n:>7}{t:>3}  blocked {row['blocked_us']:10.1f} "
                          f"us  whole {row['whole_us']:10.1f} us  ratio {row['ratio']:.2f}",
                          flush=True)
    table = bench.markdown_table(
        ["model", "dtype", "batch", "threads", "blocked µs", "whole-batch µs",
         "blocked rows/s", "ratio blocked/whole"],
        [[r["model"], r["dtype"], r["batch"], r["threads"], f"{r['blocked_us']:.1f}",
          f"{r['whole_us']:.1f}", f"{r['blocked_rows_per_s']:.3g}", f"{r['ratio']:.2f}"]
         for r in rows])
    md = (f"### Batch-invariant inference: cost of {nn.ROW_BLOCK}-row blocks\n\n"
          f"{machine['cpu']}, {machine['simd_target']}, {machine['date']}. `model.forward(X, "
          f"training=False)` (blocked: every row through the same BLAS call shape) against "
          f"one matrix product per layer over the whole batch.\n\n" + table + "\n")
    bench.write_script_outputs(a.json, a.markdown, title="Inference: batch-invariant forward",
                               rows=rows, markdown=md, machine=machine)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
