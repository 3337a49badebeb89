"""Threads, fork() and OpenMP runtimes: kernels stay correct and nothing hangs.

GNU libgomp keeps its thread pool across fork() but not the pool's threads, so a forked
child whose first parallel region needs more than one thread waits forever
(`test_libgomp_itself_hangs_after_fork` shows it with a plain OpenMP program). fastoptim
guards against it: in a child created by fork() its kernels run serially
(`get_num_threads() == 1`, whatever the OpenMP setting). Children that need threads use the
spawn or forkserver start method. Every wait here has a timeout, so a regression fails
instead of hanging CI.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fastoptim
import numpy as np
import pytest

# Python >= 3.12 warns when os.fork() runs while other threads (here, libgomp's idle
# workers) exist; forking after multi-threaded kernels is exactly what these tests do.
pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")

# Large enough that every kernel opens a parallel region with 2 threads
# (the largest per-thread threshold is 16384 elements).
N_PARALLEL = 1 << 17
TIMEOUT = 60  # seconds; the work itself takes well under one

needs_openmp = pytest.mark.skipif(not fastoptim.have_openmp(), reason="serial build")


def adam_inputs(seed, n=N_PARALLEL, dtype=np.float32):
    rng = np.random.default_rng(seed)
    p, g, m = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    v = np.abs(rng.standard_normal(n)).astype(dtype)
    return p, g, m, v


def run_kernels(seed, n=N_PARALLEL):
    """Every native kernel once on fresh data; returns the results as bytes."""
    p, g, m, v = adam_inputs(seed, n)
    fastoptim.adam_step(p, g, m, v, step=3, lr=1e-2, weight_decay=0.1)
    buf = np.zeros_like(p)
    fastoptim.sgd_step(p, g, buf, lr=0.1, momentum=0.9, first_step=True)
    norm = fastoptim.clip_by_global_norm([g, m], 1.0)
    total = fastoptim.global_norm([p, v, buf])
    return b"".join(a.tobytes() for a in (p, g, m, v, buf)), norm, total


def expected(seeds, n=N_PARALLEL):
    """The same work, single-threaded in this process (elementwise results and the
    fixed-chunk norms are bitwise identical for any thread count)."""
    before = fastoptim.get_num_threads()
    fastoptim.set_num_threads(1)
    try:
        return [run_kernels(s, n) for s in seeds]
    finally:
        fastoptim.set_num_threads(before)


def child_task(seed):
    """Runs in a forked child: asks for 2 threads, as a user might, then runs kernels."""
    fastoptim.set_num_threads(2)
    return fastoptim.get_num_threads(), run_kernels(seed)


@pytest.fixture
def parent_pool_used():
    """Runs the kernels with 2 threads first, so libgomp's pool exists before the fork."""
    before = fastoptim.get_num_threads()
    fastoptim.set_num_threads(2)
    run_kernels(0)
    yield
    fastoptim.set_num_threads(before)


@needs_openmp
def test_fork_after_multithreaded_kernels(parent_pool_used):
    seeds = [1, 2, 3, 4]
    want = expected(seeds)
    fastoptim.set_num_threads(2)
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        got = pool.map_async(child_task, seeds).get(timeout=TIMEOUT)
    for (threads, result), w in zip(got, want, strict=True):
        assert threads == 1  # the guard: serial in a forked child
        assert result == w
    # The parent itself keeps its threads.
    assert fastoptim.get_num_threads() == 2


@needs_openmp
def test_os_fork_child_completes(parent_pool_used):
    """A bare os.fork() (no multiprocessing machinery) is guarded the same way."""
    want = expected([5])[0]
    fastoptim.set_num_threads(2)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report, then leave without running pytest's teardown
        code = 1
        try:
            threads, result = child_task(5)
            os.write(w, b"ok" if (threads == 1 and result == want) else b"bad")
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    try:
        _wait_or_kill(pid, TIMEOUT)
        assert os.read(r, 16) == b"ok"
    finally:
        os.close(r)


def _wait_or_kill(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail(f"forked child still running after {timeout} s: hung")


class KernelDataset:
    """A map-style dataset whose items are computed by fastoptim kernels."""

    def __init__(self, n_items):
        self.n_items = n_items

    def __len__(self):
        return self.n_items

    def __getitem__(self, i):
        # torch sets its workers' OpenMP threads to 1; ask for 2 again, as a user might.
        fastoptim.set_num_threads(2)
        threads, (data, norm, total) = fastoptim.get_num_threads(), run_kernels(100 + i)
        return threads, data, norm, total


@needs_openmp
def test_torch_dataloader_fork_workers(parent_pool_used):
    torch_data = pytest.importorskip("torch.utils.data")

    class DS(KernelDataset, torch_data.Dataset):
        pass

    n_items = 6
    want = expected([100 + i for i in range(n_items)])
    loader = torch_data.DataLoader(DS(n_items), batch_size=None, num_workers=2,
                                   multiprocessing_context="fork", timeout=TIMEOUT)
    got = list(loader)
    assert len(got) == n_items
    for (threads, data, norm, total), w in zip(got, want, strict=True):
        assert int(threads) == 1
        assert (data, float(norm), float(total)) == w


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
@needs_openmp
def test_libgomp_itself_hangs_after_fork(tmp_path):
    """Why the guard exists: with GNU libgomp, a child forked after the parent used a
    thread team hangs in its first multi-threaded parallel region. If this starts
    passing through (a libgomp that re-creates its pool), the guard can be relaxed."""
    src = tmp_path / "fork_omp.cpp"
    src.write_text(textwrap.dedent("""\
        #include <omp.h>
        #include <signal.h>
        #include <sys/wait.h>
        #include <unistd.h>
        #include <cstdio>
        static int team() { int n = 0;
        #pragma omp parallel num_threads(2)
          {
        #pragma omp atomic
            n++;
          }
          return n; }
        int main() {
          if (team() != 2) return 3;
          pid_t pid = fork();
          if (pid == 0) { team(); _exit(0); }
          for (int i = 0; i < 300; ++i) {  // 3 s
            int st; if (waitpid(pid, &st, WNOHANG) == pid) { std::puts("completed"); return 0; }
            usleep(10000); }
          kill(pid, SIGKILL); waitpid(pid, nullptr, 0); std::puts("hung"); return 0; }
        """))
    exe = tmp_path / "fork_omp"
    subprocess.run(["g++", "-fopenmp", "-O1", str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=TIMEOUT, check=True)
    assert out.stdout.strip() == "hung"


@pytest.mark.parametrize("n", [1000, N_PARALLEL], ids=["small", "parallel"])
def test_python_threads_concurrent_kernels(n):
    """8 Python threads run kernels at once (GIL released) on separate arrays, each with
    2 OpenMP threads of its own: results are bitwise what one thread gets serially."""
    seeds = list(range(20, 28))
    want = expected(seeds, n)
    before = fastoptim.get_num_threads()
    fastoptim.set_num_threads(2)
    try:
        with ThreadPoolExecutor(max_workers=len(seeds)) as ex:
            # Each seed twice, so calls overlap however the threads are scheduled.
            got = list(ex.map(lambda s: run_kernels(s, n), seeds + seeds))
    finally:
        fastoptim.set_num_threads(before)
    assert got == want + want


# --- OpenMP runtimes, torch and threadpoolctl, each in a fresh interpreter -------------

PROBE = textwrap.dedent("""\
    import json, os, sys
    import numpy as np
    {imports}
    import threadpoolctl
    import fastoptim

    def os_threads():
        return len(os.listdir("/proc/self/task"))

    def big_kernel():
        p, g = np.ones(1 << 18, np.float32), np.full(1 << 18, 0.5, np.float32)
        fastoptim.sgd_step(p, g, lr=0.5)
        return float(p[0]), float(p[-1])

    def omp_threads():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "openmp"]

    out = {{"openmp": [i["filepath"] for i in threadpoolctl.threadpool_info()
                       if i["user_api"] == "openmp"]}}
    fastoptim.set_num_threads(2)
    out["default"] = [fastoptim.get_num_threads(), omp_threads()]
    with threadpoolctl.threadpool_limits(1):
        out["limited"] = [fastoptim.get_num_threads(), omp_threads()]
        t0 = os_threads()
        out["limited_result"] = big_kernel()
        out["limited_new_threads"] = os_threads() - t0
    with threadpoolctl.threadpool_limits(3, user_api="openmp"):
        out["three"] = [fastoptim.get_num_threads(), omp_threads()]
    out["restored"] = fastoptim.get_num_threads()
    t0 = os_threads()
    out["two_result"] = big_kernel()
    out["two_new_threads"] = os_threads() - t0
    {after}
    print(json.dumps(out))
    """)

TORCH_CHECK = textwrap.dedent("""\
    import torch
    x = torch.arange(1 << 16, dtype=torch.float64)
    out["torch_sum"] = float((x * 2).sum())
    """)


def probe(imports="", after=""):
    code = PROBE.format(imports=imports, after=after)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=TIMEOUT, env=env, cwd=Path(__file__).parent)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


def check_probe(out):
    # One OpenMP runtime in the process (two would fight over the cores), seen by
    # threadpoolctl, and fastoptim's thread count is exactly its omp_get_max_threads().
    assert len(out["openmp"]) == 1, out["openmp"]
    assert out["default"] == [2, [2]]
    assert out["limited"] == [1, [1]]
    assert out["three"] == [3, [3]]
    assert out["restored"] == 2
    assert out["limited_result"] == out["two_result"] == [0.75, 0.75]
    # Under threadpool_limits(1) the kernel started no thread; with 2 it did (libgomp
    # creates its worker on the first 2-thread region), so the count does see threads.
    assert out["limited_new_threads"] == 0
    if fastoptim.have_openmp():
        assert out["two_new_threads"] >= 1


def test_threadpoolctl_limits_fastoptim_alone():
    check_probe(probe())


@pytest.mark.parametrize("order", ["torch_first", "fastoptim_first"])
def test_import_order_with_torch(order):
    pytest.importorskip("torch")
    imports = "import torch" if order == "torch_first" else "import fastoptim\nimport torch"
    out = probe(imports, TORCH_CHECK)
    check_probe(out)
    n = 1 << 16
    assert out["torch_sum"] == float(n * (n - 1))


def test_omp_num_threads_environment():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = "import fastoptim; print(fastoptim.get_num_threads())"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=TIMEOUT, env=env, check=True)
    assert res.stdout.strip() == "1"
