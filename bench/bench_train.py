"""Training epochs on Fashion-MNIST: fastoptim vs PyTorch CPU vs scikit-learn.

784-128(ReLU)-10, softmax cross-entropy, batch 128, float32, Adam(lr=1e-3), He-normal
weights and zero biases in every framework, the same shuffling seed. Each framework trains
the same number of epochs; reported: median seconds per epoch and held-out test accuracy
at the end, at 1 and 2 threads (fastoptim kernels + numpy BLAS, torch intra-op threads,
sklearn's BLAS). Also fastoptim's full-batch gradient descent and plain SGD epochs.

    python bench/bench_train.py [--quick] [--json PATH] [--markdown PATH] [--epochs N]

Follows the bench/ convention (bench/README.md).
"""

from __future__ import annotations

import argparse
import time
import warnings

import fastoptim
import numpy as np
from fastoptim import bench, data, nn, optim, train

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - threadpoolctl is part of the test extra
    threadpool_limits = None


def load():
    ds = data.load_fashion_mnist()
    return ds.X_train, ds.y_train, ds.X_test, ds.y_test


def run_fastoptim(X, y, Xt, yt, epochs, *, batch_size=128, opt="adam", lr=1e-3):
    model = nn.Sequential(nn.Dense(784, 128, "relu"), nn.Dense(128, 10), seed=0)
    o = optim.Adam(model.parameters(), lr=lr) if opt == "adam" else \
        optim.SGD(model.parameters(), lr=lr)
    h = train.fit(model, X, y, loss="cross_entropy", optimizer=o, epochs=epochs,
                  batch_size=batch_size, seed=0, metrics=(), verbose=False)
    acc = train.evaluate(model, Xt, yt)["accuracy"]
    return h["time"], acc


def run_torch(X, y, Xt, yt, epochs):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            layer.bias.zero_()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    Xtt, ytt = torch.from_numpy(X), torch.from_numpy(y)
    times = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = torch.from_numpy(np.random.default_rng([0, epoch]).permutation(len(X)))
        for i in range(0, len(X), 128):
            idx = order[i:i + 128]
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(Xtt[idx]), ytt[idx])
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    with torch.no_grad():
        acc = float((model(torch.from_numpy(Xt)).argmax(1).numpy() == yt).mean())
    return times, acc


def run_sklearn(X, y, Xt, yt, epochs):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(128,), solver="adam", batch_size=128,
                        learning_rate_init=1e-3, alpha=0.0, max_iter=1, shuffle=True,
                        random_state=0, warm_start=True, tol=0.0)
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(epochs):
            t0 = time.perf_counter()
            clf.fit(X, y)  # warm_start + max_iter=1: one more epoch each call
            times.append(time.perf_counter() - t0)
    return times, float(clf.score(Xt, yt))


def set_threads(n):
    fastoptim.set_num_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    return threadpool_limits(limits=n) if threadpool_limits else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 epochs instead of 10")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    args = ap.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 10)
    try:
        X, y, Xt, yt = load()
    except FileNotFoundError as e:
        md = f"Fashion-MNIST is not installed: {e}\n"
        rows, goals = [], []
        print(md)
    else:
        rows = []
        runners = {"fastoptim (Adam)": run_fastoptim, "PyTorch (Adam fused)": run_torch,
                   "scikit-learn (adam)": run_sklearn}
        for threads in sorted({1, bench.cpu_count()}):
            limiter = set_threads(threads)
            try:
                for name, fn in runners.items():
                    try:
                        times, acc = fn(X, y, Xt, yt, epochs)
                    except ImportError as e:
                        print(f"{name}: skipped ({e})")
                        continue
                    rows.append({"contender": name, "threads": threads, "epochs": epochs,
                                 "s_per_epoch": float(np.median(times)), "test_accuracy": acc})
                    print(rows[-1], flush=True)
                for label, kw in (("fastoptim full-batch GD (lr 0.5)",
                                   dict(batch_size=None, opt="sgd", lr=0.5)),
                                  ("fastoptim SGD (lr 0.05)", dict(opt="sgd", lr=0.05))):
                    times, acc = run_fastoptim(X, y, Xt, yt, epochs, **kw)
                    rows.append({"contender": label, "threads": threads, "epochs": epochs,
                                 "s_per_epoch": float(np.median(times)), "test_accuracy": acc})
                    print(rows[-1], flush=True)
            finally:
                if limiter is not None:
                    limiter.unregister()
        goals = []
        for threads in sorted({r["threads"] for r in rows}):
            by = {r["contender"]: r for r in rows if r["threads"] == threads}
            fo = by.get("fastoptim (Adam)")
            for peer, target in (("PyTorch (Adam fused)", 2.0), ("scikit-learn (adam)", 5.0)):
                if fo and peer in by:
                    ratio = by[peer]["s_per_epoch"] / fo["s_per_epoch"]
                    same_acc = fo["test_accuracy"] >= by[peer]["test_accuracy"] - 0.005
                    goals.append({"goal": f"MLP epoch vs {peer}, {threads} thread(s)",
                                  "target": target,
                                  "measured": f"{ratio:.2f}x faster, accuracy "
                                              f"{fo['test_accuracy']:.4f} vs "
                                              f"{by[peer]['test_accuracy']:.4f}",
                                  "met": bool(ratio >= target and same_acc)})
        table = bench.markdown_table(
            ["contender", "threads", "epochs", "s / epoch", "test accuracy"],
            [[r["contender"], r["threads"], r["epochs"], f"{r['s_per_epoch']:.3f}",
              f"{r['test_accuracy']:.4f}"] for r in rows])
        md = (f"784-128-10 MLP on Fashion-MNIST (60,000 training samples), batch 128, float32; "
              f"median seconds per epoch over {epochs} epochs, test accuracy after them.\n\n"
              + table)
        print(md)
    bench.write_script_outputs(args.json, args.markdown, title="Training on Fashion-MNIST",
                               rows=rows, markdown=md, goals=goals,
                               machine=bench.machine_summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
