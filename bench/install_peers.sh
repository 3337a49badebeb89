#!/usr/bin/env bash
# Installs the peers that bench/ compares fastoptim with into the active Python environment
# (run it inside the virtualenv that has fastoptim). PYTHON=... picks another interpreter.
set -euo pipefail
PY=${PYTHON:-python3}

# PyTorch, pinned: 2.13.0 is the CPU wheel available here; an unpinned `torch` (or another
# version) downloads a multi-GB CUDA build.
"$PY" -m pip install "torch==2.13.0"

# Plots and thread control used by the benchmarks.
"$PY" -m pip install matplotlib threadpoolctl

# DeepSpeed's CPU Adam. Its runtime dependencies first, then DeepSpeed itself without its
# dependency list (it would pull a CUDA torch) and without prebuilding ops (no CUDA here).
"$PY" -m pip install ninja py-cpuinfo psutil packaging "pydantic>=2" hjson msgpack tqdm einops
DS_BUILD_OPS=0 "$PY" -m pip install --no-deps --no-build-isolation deepspeed==0.19.8

# The CPU Adam op JIT-compiles on first use (about 35 s to a few minutes; cached under
# ~/.cache/torch_extensions). Build it now so the first benchmark does not pay for it.
DS_ACCELERATOR=cpu "$PY" -c "from deepspeed.ops.op_builder import CPUAdamBuilder; CPUAdamBuilder().load(); print('DeepSpeed CPU Adam op: ready')"
