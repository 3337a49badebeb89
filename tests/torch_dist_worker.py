"""Worker for test_torch_distributed.py: one rank of a two-process gloo group on loopback.

Trains the same model twice on every rank, once with fastoptim.torch and once with
torch.optim, (a) under DDP, (b) under DDP with gradient_as_bucket_view=True (gradients are views of
DDP's flat buckets) and (c) with ZeroRedundancyOptimizer under DDP, feeding each
rank its own batch, and reports the largest parameter difference after every step.
"""

from __future__ import annotations

import copy
import os


def _model(torch):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def run(rank: int, world: int, port: int, out_dir: str) -> None:
    import fastoptim.torch as ft
    import torch
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=__import__("datetime").timedelta(seconds=60))
    try:
        gen = torch.Generator().manual_seed(100 + rank)
        batches = [(torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen))
                   for _ in range(6)]
        results = {}
        for mode in ("ddp", "bucket-view", "zero"):
            base = _model(torch)
            kw = dict(gradient_as_bucket_view=mode == "bucket-view")
            models = [DDP(copy.deepcopy(base), **kw), DDP(copy.deepcopy(base), **kw)]
            if mode != "zero":
                opts = [ft.AdamW(models[0].parameters(), lr=1e-2, weight_decay=0.1),
                        torch.optim.AdamW(models[1].parameters(), lr=1e-2, weight_decay=0.1)]
            else:
                opts = [ZeroRedundancyOptimizer(models[0].parameters(), optimizer_class=ft.AdamW,
                                                lr=1e-2, weight_decay=0.1),
                        ZeroRedundancyOptimizer(models[1].parameters(),
                                                optimizer_class=torch.optim.AdamW,
                                                lr=1e-2, weight_decay=0.1)]
            diffs = []
            for x, y in batches:
                for m, o in zip(models, opts, strict=True):
                    o.zero_grad()
                    torch.nn.functional.cross_entropy(m(x), y).backward()
                    o.step()
                diffs.append(max(float((a - b).abs().max()) for a, b in
                                 zip(models[0].parameters(), models[1].parameters(), strict=True)))
            # the ranks agree with each other too
            flat = torch.cat([p.detach().flatten() for p in models[0].parameters()])
            others = [torch.empty_like(flat) for _ in range(world)]
            dist.all_gather(others, flat)
            results[mode] = {"diffs": diffs,
                             "rank_spread": max(float((o - flat).abs().max()) for o in others),
                             "moved": float((flat - torch.cat([p.detach().flatten() for p in
                                                               base.parameters()])).abs().max())}
            if mode == "zero":
                opts[0].consolidate_state_dict(to=0)
                if rank == 0:
                    sd = opts[0].state_dict()
                    results["zero_state_entries"] = len(sd["state"])
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
