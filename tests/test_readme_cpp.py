"""The README's C++ example (tests/cpp/readme_adam.cpp, verbatim) compiles with the command
its comment gives and computes what fastoptim.adam_step computes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import fastoptim
import numpy as np
import pytest

SNIPPET = Path(__file__).parent / "cpp" / "readme_adam.cpp"
CXX = shutil.which("c++") or shutil.which("g++")


@pytest.mark.skipif(CXX is None, reason="needs a C++ compiler (c++ or g++)")
def test_readme_cpp_snippet_compiles_and_matches_python(tmp_path):
    exe = tmp_path / "readme_adam"
    subprocess.run([CXX, "-std=c++17", "-O2", "-fopenmp", f"-I{fastoptim.get_include()}",
                    str(SNIPPET), "-o", str(exe)], check=True)
    out = [float(x) for x in subprocess.run([str(exe)], check=True, capture_output=True,
                                            text=True).stdout.split()]
    p = np.array([1.0, -2.0, 3.0], np.float32)
    g = np.array([0.5, 0.25, -1.0], np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    fastoptim.adam_step(p, g, m, v, step=1, lr=1e-3)
    # The header compiles without FMA here; the active target may contract: a few ulps.
    np.testing.assert_allclose(out, p, rtol=4 * np.finfo(np.float32).eps)
    assert not np.allclose(out, [1.0, -2.0, 3.0])  # the step moved every parameter
