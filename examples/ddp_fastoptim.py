"""DistributedDataParallel (gloo, CPU) with fastoptim.torch.AdamW as the optimizer.

One process per rank, started by torchrun:

    torchrun --nproc-per-node 2 examples/ddp_fastoptim.py
    # several machines: torchrun --nnodes 2 --node-rank R --nproc-per-node 8 \
    #     --rdzv-backend c10d --rdzv-endpoint HOST0:29500 examples/ddp_fastoptim.py

DDP averages the gradients across ranks during backward(); the optimizer then runs on
every rank on identical gradients, so fastoptim's optimizer needs nothing DDP-specific.
With ``--check`` each step also runs torch.optim.AdamW on a copy of the model, and rank 0
prints the largest difference between the two models (``--out FILE`` writes it as JSON).
"""

from __future__ import annotations

import argparse
import copy
import json
import os

import fastoptim.torch as fo_torch
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64, help="global batch, split by rank")
    p.add_argument("--check", action="store_true", help="run torch.optim.AdamW alongside")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    dist.init_process_group("gloo")  # RANK, WORLD_SIZE, MASTER_ADDR/PORT from torchrun
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get(
        "LOCAL_WORLD_SIZE", world))))  # cores shared among this node's ranks
    torch.manual_seed(0)  # the same initial model on every rank
    net = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.GELU(), torch.nn.Linear(64, 5))
    model = DDP(net)
    opt = fo_torch.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    if args.check:
        ref = DDP(copy.deepcopy(net))
        ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.05)

    gen = torch.Generator().manual_seed(1)  # the same global batches on every rank
    worst = 0.0
    for _ in range(args.steps):
        X = torch.randn(args.batch_size, 20, generator=gen)
        y = torch.randint(0, 5, (args.batch_size,), generator=gen)
        mine = slice(rank * args.batch_size // world, (rank + 1) * args.batch_size // world)
        for m, o in ((model, opt), (ref, ref_opt)) if args.check else ((model, opt),):
            o.zero_grad()
            torch.nn.functional.cross_entropy(m(X[mine]), y[mine]).backward()  # averaged
            o.step()
        if args.check:
            worst = max(worst, max(float((a - b).detach().abs().max()) for a, b in
                                   zip(model.parameters(), ref.parameters(), strict=True)))
    # every rank holds the same parameters
    flat = torch.cat([q.detach().reshape(-1) for q in model.parameters()])
    every = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(every, flat)
    same = all(torch.equal(e, every[0]) for e in every)
    if rank == 0:
        result = {"world_size": world, "steps": args.steps, "max_abs_diff_vs_torch": worst,
                  "ranks_identical": same}
        print(json.dumps(result))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
