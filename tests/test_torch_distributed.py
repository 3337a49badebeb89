"""fastoptim.torch under torch.distributed: DDP and ZeroRedundancyOptimizer (gloo, two
processes on loopback, spawned), in lockstep with torch.optim on every rank."""

from __future__ import annotations

import os
import socket
import sys
import time

import pytest

# Multi-process runs (MPI, servers, process groups): the full CI pass runs them; the
# per-SIMD-target passes skip them (their kernels are covered per target elsewhere).
pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_target(rank, port, out_dir, path):
    sys.path.insert(0, path)
    import torch_dist_worker
    torch_dist_worker.run(rank, WORLD, port, out_dir)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    ctx = torch.multiprocessing.spawn(_spawn_target,
                                      args=(_free_port(), str(out), os.path.dirname(__file__)),
                                      nprocs=WORLD, join=False)
    deadline = 240.0
    t0 = time.monotonic()
    while not ctx.join(timeout=5):
        if time.monotonic() - t0 > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("distributed workers did not finish within 240 s")
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("mode", ["ddp", "bucket-view", "zero"])
def test_lockstep_with_torch_optim(results, mode):
    for r in results:
        res = r[mode]
        assert res["moved"] > 1e-3  # it really trained
        assert max(res["diffs"]) < 1e-5, res["diffs"]
        assert res["rank_spread"] == 0.0  # every rank holds the same parameters


def test_zero_consolidates_the_state(results):
    assert results[0]["zero_state_entries"] == 4  # 2 weights + 2 biases
