"""Runs one data-parallel fit under mpirun for tests/test_distributed.py.

    mpirun -n 2 python tests/mpi_worker.py OUT [--shard] [--epochs E] [--resume CKPT] ...

Each rank writes OUT/rank{r}.npz (its parameters and, from rank 0, the history); rank 0
writes checkpoints OUT/ckpt-{epoch}.npz when --checkpoint is given.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
from fastoptim import distributed, nn, optim, train


def problem(dtype, n=203, features=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, features)).astype(dtype)
    W = rng.standard_normal((features, classes))
    y = (X @ W).argmax(axis=1).astype(np.int64)
    return X, y


def build(args, dtype):
    drop = [nn.Dropout(args.dropout)] if getattr(args, "dropout", 0.0) else []
    model = nn.Sequential(nn.Dense(12, 16, "tanh", l1=args.l1), *drop, nn.Dense(16, 3),
                          dtype=dtype, seed=args.seed)
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in model.named_parameters() if not name.endswith("weight")]
    groups = [{"params": weights, "weight_decay": 0.01}, {"params": biases, "weight_decay": 0.0}]
    if args.optimizer == "sgd":
        opt = optim.SGD(groups, lr=0.05, momentum=0.9, nesterov=True)
    else:
        opt = optim.AdamW(groups, lr=0.01, amsgrad=args.optimizer == "amsgrad")
    return model, opt


class Kill(train.Callback):
    def __init__(self, rank, epoch):
        self.rank, self.epoch = rank, epoch

    def on_epoch_begin(self, trainer, epoch):
        if epoch == self.epoch and trainer.dist.rank == self.rank:
            if self.rank >= 0:
                os.kill(os.getpid(), signal.SIGKILL)

    def on_batch_end(self, trainer, batch, logs):
        if self.rank < 0 and trainer.dist.rank == -self.rank and batch == 3:
            os.kill(os.getpid(), signal.SIGSTOP)  # a stalled rank


class StateBytes(train.Callback):
    def on_train_end(self, trainer):
        self.bytes = trainer.dist.state_bytes()
        self.threads = __import__("fastoptim").get_num_threads()


class Raise(train.Callback):
    def __init__(self, rank):
        self.rank = rank

    def on_batch_end(self, trainer, batch, logs):
        if trainer.dist.rank == self.rank and batch == 2:
            raise RuntimeError("injected failure")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--shard", action="store_true")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", default="float64")
    p.add_argument("--optimizer", default="adamw")
    p.add_argument("--l1", type=float, default=0.0)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", default=None)
    p.add_argument("--checkpoint", action="store_true")
    p.add_argument("--kill", type=int, nargs=2, default=None, metavar=("RANK", "EPOCH"))
    p.add_argument("--raise-on", type=int, default=None, metavar="RANK")
    p.add_argument("--mismatch", choices=("data", "seed"), default=None)
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args()
    dp = distributed.DataParallel(shard_optimizer=args.shard, timeout=args.timeout)
    rank = dp.rank
    dtype = np.dtype(args.dtype).type
    X, y = problem(dtype)
    if args.mismatch == "data" and rank == 1:
        X[5, 3] += 1
    if args.mismatch == "seed" and rank == 1:
        args.seed += 1
    model, opt = build(args, dtype)
    state_bytes = StateBytes()
    callbacks = [state_bytes]
    if args.checkpoint:
        callbacks.append(train.ModelCheckpoint(args.out / "ckpt-{epoch}.npz"))
    if args.kill:
        callbacks.append(Kill(*args.kill))
    if args.raise_on is not None:
        callbacks.append(Raise(args.raise_on))
    try:
        hist = train.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=args.epochs,
                         batch_size=args.batch_size, seed=3, verbose=False,
                         callbacks=callbacks, comm=dp, resume_from=args.resume)
    except distributed.LaunchMismatchError as e:
        print(f"rank {rank}: refused: {e}", file=sys.stderr)
        return 3
    np.savez(args.out / f"rank{rank}.npz", params=model.flat_parameters(),
             state_bytes=state_bytes.bytes, threads=state_bytes.threads)
    if rank == 0:
        (args.out / "history.json").write_text(json.dumps(hist.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
