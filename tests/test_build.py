"""The build: the C++ header API compiles and agrees with Python, and every SIMD target's
code uses the registers it was compiled for (and the baseline uses no AVX at all)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import fastoptim
import numpy as np
import pytest
from fastoptim import _core

HERE = Path(__file__).parent


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_cpp_header_api(tmp_path):
    exe = tmp_path / "api_demo"
    subprocess.run(["g++", "-std=c++17", "-O2", "-fopenmp", f"-I{fastoptim.get_include()}",
                    str(HERE / "cpp" / "api_demo.cpp"), "-o", str(exe)], check=True)
    out = [float(x) for x in subprocess.run([str(exe)], check=True, capture_output=True,
                                            text=True).stdout.split()]
    p = [np.array([1.0, -2.0, 3.0], np.float32), np.array([0.1, 0.2], np.float32)]
    g = [np.array([0.5, 0.25, -1.0], np.float32), np.array([-0.3, 0.4], np.float32)]
    m = [np.zeros_like(a) for a in p]
    v = [np.zeros_like(a) for a in p]
    fastoptim.adam_step(p, g, m, v, step=1, lr=0.1, weight_decay=0.01,
                        decoupled_weight_decay=True)
    q, gq, buf = np.array([1.0, 2.0]), np.array([0.5, -0.5]), np.zeros(2)
    fastoptim.sgd_step(q, gq, buf, lr=0.1, momentum=0.9, first_step=True)
    want = np.concatenate(p + [q])
    # The header compiles here without FMA; the active target may contract: a few ulps.
    np.testing.assert_allclose(out, want, rtol=4 * np.finfo(np.float32).eps)


def _disassembly_by_target():
    """Instruction text of each fastoptim::<target>:: function in the extension module."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("needs objdump (binutils)")
    text = subprocess.run([objdump, "-d", "-C", "--no-show-raw-insn", _core.__file__],
                          check=True, capture_output=True, text=True).stdout
    by_target = defaultdict(list)
    current = None
    for line in text.splitlines():
        head = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if head:
            found = re.search(r"fastoptim::(scalar|avx2|avx512)::", head.group(1))
            current = found.group(1) if found else None
        elif current and "\t" in line:
            by_target[current].append(line.split("\t", 1)[1])
    return by_target


def test_simd_targets_use_their_registers():
    code = _disassembly_by_target()
    assert set(code) == set(fastoptim.compiled_simd_targets())
    scalar = "\n".join(code["scalar"])
    # The baseline must run on any x86-64: no VEX/EVEX-encoded instruction at all.
    assert not re.search(r"%[yz]mm|\bv(add|mul|sub|div|sqrt|fmadd|mov|broadcast)\w*", scalar)
    if "avx2" in code:
        avx2 = "\n".join(code["avx2"])
        assert re.search(r"vsqrtps\s+%ymm", avx2) and re.search(r"vdivps\s+%ymm", avx2)
        assert re.search(r"vfmadd\w+\s+%ymm", avx2)
        assert "%zmm" not in avx2
    if "avx512" in code:
        avx512 = "\n".join(code["avx512"])
        assert re.search(r"vsqrtps\s+%zmm", avx512) and re.search(r"vdivps\s+%zmm", avx512)


def test_forced_target_from_environment():
    env = dict(os.environ, FASTOPTIM_SIMD="scalar")
    code = "import fastoptim; print(fastoptim.simd_target())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "scalar"
    env["FASTOPTIM_SIMD"] = "neon9"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "unknown SIMD target 'neon9'" in out.stderr
    for target in fastoptim.compiled_simd_targets():
        if target not in fastoptim.simd_targets():  # compiled in, CPU lacks it
            env["FASTOPTIM_SIMD"] = target
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True)
            assert out.returncode != 0 and "does not support" in out.stderr
