"""Where does a parallel region start to pay off? Prints, per size, one update with 1 thread
vs 2 threads, and the roofline loop run serially vs forced parallel. The kernels'
kMinPerThread* constants (cpp/include/fastoptim/kernels/) come from this table.

    python bench/bench_parallel_threshold.py
"""

from __future__ import annotations

import time

import fastoptim
import numpy as np
from fastoptim import _core


def median_time(f, repeats=15, inner=200):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            f()
        times.append((time.perf_counter() - t) / inner)
    return float(np.median(times))


def main():
    print("| n | adam 1 thread (us) | adam 2 threads (us) | stream serial (us) "
          "| stream 2 threads forced (us) |")
    print("|---|---|---|---|---|")
    for n in (2048, 4096, 8192, 16384, 32768, 65536, 131072):
        p, g, m, v = (np.random.rand(n).astype(np.float32) for _ in range(4))
        t = {}
        for nt in (1, 2):
            fastoptim.set_num_threads(nt)
            t[nt] = median_time(lambda p=p, g=g, m=m, v=v: fastoptim.adam_step(p, g, m, v, step=5))
        fastoptim.set_num_threads(2)
        serial = median_time(lambda p=p, g=g, m=m, v=v: _core.roofline_update(
            [p, m, v], g, min_per_thread=2**62))
        forced = median_time(lambda p=p, g=g, m=m, v=v: _core.roofline_update(
            [p, m, v], g, min_per_thread=1))
        print(f"| {n} | {t[1]*1e6:.2f} | {t[2]*1e6:.2f} | {serial*1e6:.2f} | {forced*1e6:.2f} |")


if __name__ == "__main__":
    main()
