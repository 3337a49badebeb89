"""MLP training step and loss kernels: fastoptim vs PyTorch CPU (and numpy), side by side.

Step = forward + softmax cross-entropy + backward + Adam update of a 784-128(ReLU)-10 MLP on
a batch of 128, float32. fastoptim: nn.Sequential (numpy BLAS matmuls, fused native bias +
activation, loss and Adam over the flat parameter arena). PyTorch: torch.nn + F.cross_entropy
+ torch.optim.Adam(fused=True), zero_grad(set_to_none=True). Both run at 1 and 2 threads
(numpy's BLAS limited with threadpoolctl). Reported: median of repeats, in microseconds.

    python bench/bench_mlp.py [--repeats 7] [--steps 200]
"""

from __future__ import annotations

import argparse
import time

import fastoptim
import numpy as np
import torch
from fastoptim import bench, losses, nn
from threadpoolctl import threadpool_limits


def timeit(fn, steps, repeats):
    fn()  # warm-up (allocates buffers)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        out.append((time.perf_counter() - t0) / steps * 1e6)
    return float(np.median(out))


def make_fastoptim(X, y):
    model = nn.Sequential(nn.Dense(784, 128, "relu"), nn.Dense(128, 10), seed=0)
    p, g = model.flat_parameters(), model.flat_gradients()
    m, v = np.zeros_like(p), np.zeros_like(p)
    dlogits = np.empty((X.shape[0], 10), np.float32)
    state = {"step": 0}

    def step():
        state["step"] += 1
        logits = model.forward(X, training=True)
        losses.softmax_cross_entropy(logits, y, out=dlogits)
        model.backward(dlogits)
        fastoptim.adam_step(p, g, m, v, step=state["step"], lr=1e-3)

    parts = {
        "forward": lambda: model.forward(X, training=True),
        "loss": lambda: losses.softmax_cross_entropy(model.layers[-1]._y, y, out=dlogits),
        "backward": lambda: model.backward(dlogits),
        "adam": lambda: fastoptim.adam_step(p, g, m, v, step=1, lr=1e-3),
    }
    return step, parts


def make_torch(X, y):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(Xt), yt)
        loss.backward()
        opt.step()

    return step


def numpy_xent(z, y):
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(s[:, 0]) + m[:, 0] - z[np.arange(len(y)), y]))
    g = e / s
    g[np.arange(len(y)), y] -= 1
    g /= len(y)
    return loss, g


def torch_xent(zt, yt):
    zt.grad = None
    loss = torch.nn.functional.cross_entropy(zt, yt)
    loss.backward()
    return loss


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    a = ap.parse_args(argv)
    if a.quick:
        a.repeats, a.steps = 5, 50
    rng = np.random.default_rng(0)
    X = rng.standard_normal((128, 784)).astype(np.float32)
    y = rng.integers(0, 10, 128)
    print(f"fastoptim {fastoptim.__version__} simd={fastoptim.simd_target()} "
          f"torch {torch.__version__}")
    step_rows, goals = [], []
    for nt in (1, 2):
        with threadpool_limits(nt):
            # As fastoptim.fit does: kernels on one thread while BLAS runs several (two
            # spinning pools on the same cores stall each other; see train.fit).
            fastoptim.set_num_threads(1)
            torch.set_num_threads(nt)
            fo_step, parts = make_fastoptim(X, y)
            th_step = make_torch(X, y)
            fo = timeit(fo_step, a.steps, a.repeats)
            th = timeit(th_step, a.steps, a.repeats)
            detail = ", ".join(f"{k} {timeit(f, a.steps, a.repeats):.0f}" for k, f in parts.items())
            step_rows.append({"threads": nt, "fastoptim_us": fo, "torch_us": th,
                              "speedup": th / fo, "parts": detail})
            print(step_rows[-1], flush=True)
            goals.append({"goal": f"MLP step vs PyTorch (fused Adam), {nt} thread(s)",
                          "target": 2.0, "measured": f"{th / fo:.2f}x", "met": th / fo >= 2.0})
    fastoptim.set_num_threads(1)
    torch.set_num_threads(1)
    loss_rows = []
    for n, c in [(128, 10), (1024, 100), (4096, 1000)]:
        fo, npy, th = bench_xent(rng, n, c, a)
        loss_rows.append(["softmax cross-entropy", f"{n}x{c}", fo, npy, th])
    for n in (1000, 100_000):
        fo, npy, th = bench_mse(rng, n, a)
        loss_rows.append(["mean squared error", f"{n}", fo, npy, th])
    md = ("784-128-10 MLP step (forward, softmax cross-entropy, backward, Adam) on a batch of "
          "128, float32; median microseconds per step. PyTorch: torch.nn + fused Adam.\n\n"
          + bench.markdown_table(
              ["threads", "fastoptim (us)", "PyTorch (us)", "speed-up", "fastoptim parts (us)"],
              [[r["threads"], f"{r['fastoptim_us']:.0f}", f"{r['torch_us']:.0f}",
                f"{r['speedup']:.2f}x", r["parts"]] for r in step_rows])
          + "\nLoss + gradient kernels alone, 1 thread, microseconds per call (median):\n\n"
          + bench.markdown_table(["loss", "shape", "fastoptim", "numpy", "PyTorch"],
                                 [[r[0], r[1], f"{r[2]:.1f}", f"{r[3]:.1f}", f"{r[4]:.1f}"]
                                  for r in loss_rows]))
    print(md)
    bench.write_script_outputs(a.json, a.markdown, title="MLP training step and loss kernels",
                               rows=step_rows, markdown=md, goals=goals, loss_rows=loss_rows)
    return 0


def bench_xent(rng, n, c, a):
    z = rng.standard_normal((n, c)).astype(np.float32)
    t = rng.integers(0, c, n)
    out = np.empty_like(z)
    zt = torch.tensor(z, requires_grad=True)
    tt = torch.from_numpy(t)
    steps = max(5, a.steps * 128 * 10 // (n * c))
    return (timeit(lambda: losses.softmax_cross_entropy(z, t, out=out), steps, a.repeats),
            timeit(lambda: numpy_xent(z, t), steps, a.repeats),
            timeit(lambda: torch_xent(zt, tt), steps, a.repeats))


def bench_mse(rng, n, a):
    p = rng.standard_normal(n).astype(np.float32)
    q = rng.standard_normal(n).astype(np.float32)
    out = np.empty_like(p)
    pt = torch.tensor(p, requires_grad=True)
    qt = torch.from_numpy(q)

    def th():
        pt.grad = None
        torch.nn.functional.mse_loss(pt, qt).backward()

    def npy():
        d = p - q
        return float(np.mean(d * d)), d * (2.0 / n)

    return (timeit(lambda: losses.mean_squared_error(p, q, out=out), 200, a.repeats),
            timeit(npy, 200, a.repeats), timeit(th, 200, a.repeats))

if __name__ == "__main__":
    raise SystemExit(main())
