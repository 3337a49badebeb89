"""Data-parallel Fashion-MNIST epochs over MPI: 1 and 2 ranks, unsharded and ZeRO-1.

784-128(ReLU)-10, softmax cross-entropy, Adam(lr=1e-3), float32, global batch 128 split
across the ranks, each rank on cores / ranks threads (fastoptim.distributed's default).
Per configuration: median seconds per epoch, communication seconds per step (time inside
the per-step collectives, as rank 0 saw it), held-out accuracy, optimizer state bytes per
rank. Also the loopback Allreduce of the gradient arena alone, and the cost model of
docs/scale-out.md checked against the measured 2-rank step:

    step(N) = compute(1) / N + allreduce(N),   allreduce(N) = 2 (N-1)/N * bytes / bw + lat

with compute(1) the measured 1-rank step without communication and bw, lat fitted from
Allreduces of two sizes on this machine.

    python bench/bench_distributed.py [--quick] [--epochs N] [--json PATH] [--markdown PATH]

Needs mpirun (OpenMPI) and mpi4py; as root it sets OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM).
Follows the bench/ convention (bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# (ranks, ZeRO-1, threads per rank: None = the default, cores / ranks); the last one puts
# 2 threads on each of 2 ranks, more threads than this 2-core machine has
CONFIGS = [(1, False, None), (1, False, 1), (1, True, 1), (2, False, None), (2, True, None),
           (2, False, 2)]


def worker(args) -> None:
    from fastoptim import data, distributed, nn, optim, train

    dp = distributed.DataParallel(shard_optimizer=args.shard,
                                  threads=args.threads or "auto")
    comm = dp.comm
    ds = data.load_fashion_mnist()
    X, y, Xt, yt = ds.X_train, ds.y_train, ds.X_test, ds.y_test
    model = nn.Sequential(nn.Dense(784, 128, "relu"), nn.Dense(128, 10), seed=0)
    opt = optim.Adam(model.parameters(), lr=1e-3)

    class Probe(train.Callback):
        def on_train_begin(self, trainer):
            self.epochs, self.comm, self.steps, self.cpu = [], [], [], []

        def on_epoch_begin(self, trainer, epoch):
            self.t0, self.c0, self.s0 = (time.perf_counter(), trainer.dist.comm_seconds,
                                         trainer.dist.steps)
            self.p0 = time.process_time()

        def on_epoch_end(self, trainer, epoch, logs):
            self.epochs.append(time.perf_counter() - self.t0)
            self.cpu.append((time.process_time() - self.p0) / self.epochs[-1])
            self.comm.append(trainer.dist.comm_seconds - self.c0)
            self.steps.append(trainer.dist.steps - self.s0)
            self.state_bytes = trainer.dist.state_bytes()
            from threadpoolctl import threadpool_info

            blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
            self.threads = max(blas or [__import__("fastoptim").get_num_threads()])

    probe = Probe()
    train.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=args.epochs,
              batch_size=args.batch_size, seed=0, metrics=(), verbose=False,
              callbacks=[probe], comm=dp)
    acc = train.evaluate(model, Xt, yt)["accuracy"]
    # The gradient arena's Allreduce alone, and a 1/16 size one (latency + bandwidth fit).
    from mpi4py import MPI

    arena = model.flat_gradients()
    small = arena[: arena.size // 16].copy()
    times = {}
    for name, buf in (("full", arena), ("small", small)):
        for _ in range(5):
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        reps = []
        for _ in range(7):
            comm.Barrier()
            t0 = time.perf_counter()
            for _ in range(20):
                comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            reps.append((time.perf_counter() - t0) / 20)
        times[name] = statistics.median(reps)
    every_state = comm.gather(probe.state_bytes, root=0)
    if comm.Get_rank() == 0:
        skip = 1 if len(probe.epochs) > 1 else 0  # the first epoch warms caches and pools
        res = {"ranks": comm.Get_size(), "shard_optimizer": args.shard,
               "threads_per_rank": probe.threads,
               "epoch_s": statistics.median(probe.epochs[skip:]),
               "cpu_share": statistics.median(probe.cpu[skip:]),
               "epochs_s": probe.epochs,
               "steps_per_epoch": probe.steps[-1],
               "comm_s_per_step": statistics.median(
                   [c / s for c, s in zip(probe.comm[skip:], probe.steps[skip:], strict=True)]),
               "test_accuracy": acc, "state_bytes_per_rank": every_state,
               "arena_bytes": int(arena.nbytes), "allreduce_full_s": times["full"],
               "allreduce_small_s": times["small"], "small_bytes": int(small.nbytes)}
        Path(args.result).write_text(json.dumps(res))


def launch(n: int, shard: bool, threads: int | None, epochs: int, batch_size: int, out: Path,
           timeout: float):
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_btl": "self,vader,tcp",
           # a rank waiting in a collective yields its core instead of spinning on it
           "OMPI_MCA_mpi_yield_when_idle": "1"}
    cmd = [shutil.which("mpirun") or "mpirun", "-n", str(n), "--bind-to", "none",
           sys.executable, __file__, "--worker", "--epochs", str(epochs),
           "--batch-size", str(batch_size), "--result", str(out)] + (["--shard"] if shard else [])
    if threads:
        cmd += ["--threads", str(threads)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    return json.loads(out.read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shard", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    from fastoptim import bench

    epochs = args.epochs or (2 if args.quick else 4)
    md = []
    if shutil.which("mpirun") is None:
        md.append("- skipped: no mpirun (Debian: apt-get install openmpi-bin libopenmpi-dev)\n")
        rows: list = []
    else:
        try:
            import mpi4py  # noqa: F401
        except ImportError:
            md.append("- skipped: mpi4py is not installed (pip install 'fastoptim[mpi]')\n")
            rows = []
        else:
            rows = []
            with tempfile.TemporaryDirectory() as tmp:
                for n, shard, threads in CONFIGS:
                    rows.append(launch(n, shard, threads, epochs, args.batch_size,
                                       Path(tmp) / f"{n}-{shard}-{threads}.json", 1800))
    machine = bench.machine_summary()
    goals = []
    if rows:
        table = []
        for r in rows:
            table.append([f"{r['ranks']} rank{'s' if r['ranks'] > 1 else ''}"
                          + (" ZeRO-1" if r["shard_optimizer"] else ""),
                          r["threads_per_rank"], f"{r['epoch_s']:.2f}",
                          f"{1e6 * r['comm_s_per_step']:.0f}",
                          f"{1e6 * r['allreduce_full_s']:.0f}",
                          f"{r['test_accuracy']:.4f}",
                          " / ".join(f"{b / 1024:.0f}" for b in r["state_bytes_per_rank"])])
        md.append(f"### Fashion-MNIST 784-128-10, global batch {args.batch_size}, {epochs} "
                  f"epochs (median epoch after the first)\n")
        md.append(bench.markdown_table(
            ["configuration", "BLAS threads/rank", "s/epoch", "comm µs/step",
             "arena Allreduce µs", "test accuracy", "optimizer state KiB per rank"], table))
        # compute(1): one rank on one thread, as each of the 2 ranks runs here
        one = next(r for r in rows if r["ranks"] == 1 and not r["shard_optimizer"]
                   and r["threads_per_rank"] == 1)
        two = next(r for r in rows if r["ranks"] == 2 and not r["shard_optimizer"])
        # cost model: compute(1) from the 1-rank run, bandwidth/latency from two sizes
        comp1 = one["epoch_s"] / one["steps_per_epoch"] - one["comm_s_per_step"]
        f = 2 * (2 - 1) / 2
        b_full, b_small = two["arena_bytes"] * f, two["small_bytes"] * f
        t_full, t_small = two["allreduce_full_s"], two["allreduce_small_s"]
        bw = (b_full - b_small) / max(t_full - t_small, 1e-12)
        lat = max(0.0, t_full - b_full / bw)
        pred2 = comp1 / 2 + (b_full / bw + lat)
        meas2 = two["epoch_s"] / two["steps_per_epoch"]
        md.append("\n### Cost model (docs/scale-out.md) against the 2-rank run\n")
        md.append(bench.markdown_table(
            ["quantity", "value"],
            [["compute per step, 1 rank (measured, without comm)", f"{1e6 * comp1:.0f} µs"],
             ["arena", f"{one['arena_bytes']} bytes"],
             ["loopback Allreduce bandwidth (fitted)", f"{bw / 1e9:.2f} GB/s"],
             ["Allreduce latency (fitted)", f"{1e6 * lat:.0f} µs"],
             ["predicted step, 2 ranks", f"{1e6 * pred2:.0f} µs"],
             ["measured step, 2 ranks", f"{1e6 * meas2:.0f} µs"],
             ["CPU time / wall time of rank 0: 1 rank, 2 ranks",
              f"{one['cpu_share']:.2f}, {two['cpu_share']:.2f}"],
             ["measured speed-up, 1 rank x 1 thread -> 2 ranks x 1 thread",
              f"{one['epoch_s'] / two['epoch_s']:.2f}x"]]))
        zero = next(r for r in rows if r["ranks"] == 2 and r["shard_optimizer"])
        ratio = max(zero["state_bytes_per_rank"]) / max(two["state_bytes_per_rank"])
        md.append(f"\n- load average at the end: {os.getloadavg()[0]:.1f} on "
                  f"{bench.cpu_count()} cores (other work on the machine slows and desyncs "
                  f"the ranks; comm time per step includes waiting for the slower rank)")
        md.append(f"\n- ZeRO-1 on 2 ranks keeps {ratio:.3f} of the unsharded optimizer state per "
                  f"rank; its step costs a Reduce_scatter plus an Allgatherv instead of one "
                  f"Allreduce.\n- Machine: {machine.get('cpu', '?')}, {bench.cpu_count()} "
                  f"cores; ranks share them, so 2 ranks on 2 cores run 1 thread each.\n")
        goals.append({"goal": "ZeRO-1 state per rank on 2 ranks (fraction of unsharded)",
                      "target": 0.5, "measured": f"{ratio:.3f}", "met": ratio <= 0.51})
        goals.append({"goal": "cost model predicts the 2-rank step within 30%",
                      "target": 0.3, "measured": f"{abs(pred2 / meas2 - 1):.2f}",
                      "met": abs(pred2 / meas2 - 1) <= 0.3})
    out = {"title": "Data-parallel training over MPI", "machine": machine, "rows": rows,
           "goals": goals, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    text = "\n".join(md)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
