"""The documented DDP recipe (examples/ddp_fastoptim.py): two processes, gloo, loopback,
fastoptim.torch.AdamW in lockstep with torch.optim.AdamW under DDP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

# Multi-process runs (MPI, servers, process groups): the full CI pass runs them; the
# per-SIMD-target passes skip them (their kernels are covered per target elsewhere).
pytestmark = pytest.mark.slow

pytest.importorskip("torch")

EXAMPLE = Path(__file__).parent.parent / "examples" / "ddp_fastoptim.py"


def test_ddp_two_processes_match_torch_adamw(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(port), str(EXAMPLE),
           "--check", "--steps", "20", "--out", str(out)]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    assert res["world_size"] == 2 and res["steps"] == 20
    assert res["ranks_identical"]
    # float32 AdamW, the same math in another kernel: 1.2e-7 measured after 20 steps
    assert res["max_abs_diff_vs_torch"] <= 1e-6
