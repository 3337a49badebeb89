"""numpy's BLAS threads next to fastoptim's OpenMP threads: one iteration = two matrix
products (the shapes of a small MLP step) + one Adam step on 200,000 parameters, with
libgomp's wait policy active (spinning) vs passive (fastoptim's default). Each policy runs
in a fresh process, since libgomp reads it at load time.

    python bench/bench_thread_pools.py
"""

from __future__ import annotations

import os
import subprocess
import sys

CHILD = r"""
import time, numpy as np, fastoptim
rng = np.random.default_rng(0)
a, w = rng.random((32, 64), np.float32), rng.random((64, 256), np.float32)
b, w2 = rng.random((128, 784), np.float32), rng.random((784, 128), np.float32)
o, o2 = np.empty((32, 256), np.float32), np.empty((128, 128), np.float32)
p = np.zeros(200_000, np.float32); g = np.ones_like(p); m = np.zeros_like(p); v = np.zeros_like(p)
times = []
for rep in range(7):
    t = time.perf_counter()
    for _ in range(300):
        np.matmul(a, w, out=o); np.matmul(b, w2, out=o2)
        fastoptim.adam_step(p, g, m, v, step=1)
    times.append((time.perf_counter() - t) / 300)
print(sorted(times)[3] * 1e6)
"""


def main():
    print("| OMP_WAIT_POLICY | fastoptim threads | us per iteration (median of 7) |")
    print("|---|---|---|")
    for policy in ("passive", "active", "passive", "active"):
        for threads in ("1", str(os.cpu_count() or 1)):
            env = dict(os.environ, OMP_WAIT_POLICY=policy, OMP_NUM_THREADS=threads,
                       OPENBLAS_NUM_THREADS=str(os.cpu_count() or 1))
            out = subprocess.run([sys.executable, "-c", CHILD], env=env, check=True,
                                 capture_output=True, text=True).stdout
            print(f"| {policy} | {threads} | {float(out):.0f} |")


if __name__ == "__main__":
    main()
