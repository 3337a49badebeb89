"""Microbenchmarks: every update kernel against this machine's memory-bandwidth roofline.

Every optimizer update is memory-bound at large sizes, so the honest yardstick is the
cheapest loop that moves the same bytes: ``fastoptim._core.roofline_update(outs, x)``
(``outs[j] += x``), with one read-modify-write array per updated buffer (SGD 1, SGD with
momentum 2, Adam/AdamW 3) and one read-only array (the gradient). Each kernel is timed
interleaved with its roofline in the same process, alternating which goes first, and the
figures are medians over repeats, so slow drift of a shared machine hits both alike.

Reported per case: µs per call, ns per element, GB/s (the kernel's bytes per element x
elements / time) and the ratio kernel time / roofline time (median of per-round ratios).
At small sizes both are dominated by the Python call, so there the ratio compares call
overheads (the roofline's binding is a plain pybind11 function); from ~1e5 elements on
it measures how close the kernel gets to what the memory system allows.

Python API::

    from fastoptim import bench
    result = bench.run(bench.BenchConfig.quick_config())
    bench.write_outputs(result, "bench-out")      # CSV, JSON and (with matplotlib) a PNG

Command line: ``fastoptim bench [--quick] [--out DIR] ...`` (see ``fastoptim bench -h``).
The helpers here (aligned buffers, the interleaved timer, the machine summary) are also
what the comparative suite in the repository's ``bench/`` folder uses.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastoptim import _core

DTYPES = ("float32", "float64")
ALIGN_BYTES = 64  # cache line; torch's CPU allocator aligns the same way
MANY_TENSORS = 200

# --------------------------------------------------------------------------------------
# Buffers


def aligned_full(n: int, value: float, dtype: Any, align: int = ALIGN_BYTES) -> np.ndarray:
    """A C-contiguous 1-D array of n elements filled with value, its data `align`-aligned.

    Filling touches every page, so first-touch page faults stay out of the timings.
    """
    dt = np.dtype(dtype)
    if n == 0:
        return np.empty(0, dt)  # no data, nothing to align
    raw = np.empty(n * dt.itemsize + align, dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    out = raw[start : start + n * dt.itemsize].view(dt)
    out.fill(value)
    return out


def split_sizes(total: int, count: int) -> list[int]:
    """`count` sizes summing to `total`, as equal as possible (larger ones first)."""
    count = max(1, min(count, total)) if total else 1
    base, extra = divmod(total, count)
    return [base + (1 if i < extra else 0) for i in range(count)]


# --------------------------------------------------------------------------------------
# Kernels under test


@dataclass(frozen=True)
class KernelSpec:
    """One update kernel to benchmark.

    name: row label. entry: the `fastoptim._core` function it calls; the kernel is
    benchmarked only when that function exists in this build. buffers: the arrays it
    updates in place besides the gradient, in order (the first is the parameter); their
    count is the roofline's number of read-modify-write arrays. stmt: the call as a Python
    expression over `f` (the entry point), `g` (gradients) and the buffer names.
    """

    name: str
    entry: str
    buffers: tuple[str, ...]
    stmt: str

    @property
    def nout(self) -> int:
        return len(self.buffers)

    def available(self) -> bool:
        return hasattr(_core, self.entry)


# Gradients are small and positive, state starts at zero: no subnormals and no NaN ever
# appear, whatever number of steps (or roofline passes, which add g) run on the buffers.
KERNELS: list[KernelSpec] = [
    KernelSpec("sgd", "sgd_step", ("p",), "f(p, g, lr=1e-3)"),
    KernelSpec("sgd_momentum", "sgd_step", ("p", "buf"),
               "f(p, g, buf, lr=1e-3, momentum=0.9)"),
    KernelSpec("adam", "adam_step", ("p", "m", "v"), "f(p, g, m, v, step=10, lr=1e-3)"),
    KernelSpec("adamw", "adam_step", ("p", "m", "v"),
               "f(p, g, m, v, step=10, lr=1e-3, weight_decay=1e-2, "
               "decoupled_weight_decay=True)"),
    KernelSpec("adagrad", "adagrad_step", ("p", "sums"), "f(p, g, sums, step=10, lr=1e-2)"),
    KernelSpec("rmsprop", "rmsprop_step", ("p", "sq"), "f(p, g, sq, lr=1e-2)"),
    KernelSpec("rmsprop_momentum", "rmsprop_step", ("p", "sq", "buf"),
               "f(p, g, sq, buf, lr=1e-2, momentum=0.9)"),
]


def register_kernel(spec: KernelSpec) -> None:
    """Adds a kernel to the benchmark (for kernels added to `fastoptim._core` later)."""
    if any(k.name == spec.name for k in KERNELS):
        raise ValueError(f"a kernel named {spec.name!r} is already registered")
    if not 1 <= spec.nout <= 3:
        raise ValueError("the roofline covers 1 to 3 updated buffers")
    KERNELS.append(spec)


def available_kernels() -> list[str]:
    return [k.name for k in KERNELS if k.available()]


def bytes_per_element(nout: int, dtype: Any) -> int:
    """Bytes an update moves per element: nout read+write buffers and one read gradient."""
    return (2 * nout + 1) * np.dtype(dtype).itemsize


# --------------------------------------------------------------------------------------
# Timing


@dataclass
class Timed:
    """A callable benchmark candidate: `stmt` is evaluated with `namespace` as globals."""

    name: str
    stmt: str
    namespace: dict[str, Any]

    def timer(self) -> timeit.Timer:
        return timeit.Timer(self.stmt, globals=self.namespace)


def roofline_candidate(outs: Sequence[np.ndarray], x: np.ndarray, name: str = "roofline") -> Timed:
    return Timed(name, "f(outs, x)",
                 {"f": _core.roofline_update, "outs": list(outs), "x": x})


def measure_interleaved(candidates: Sequence[Timed], *, repeats: int, target_s: float,
                        budget_s: float | None = None) -> dict[str, list[float]]:
    """Seconds per call of each candidate, `repeats` samples each, taken round-robin.

    Each sample times a batch of calls (enough for about `target_s` seconds, calibrated
    once per candidate) after one untimed call that brings its buffers back into cache
    (skipped when a single call already takes `target_s`: such sizes live in DRAM).
    The order of the candidates is reversed every other round, so neither side always
    runs right after the other. Python's garbage collector is off while timing (timeit).
    With `budget_s`, the rounds are cut (to no fewer than 3) when `repeats` of them would
    take longer: an oversubscribed machine can make one multi-threaded call take seconds.
    """
    timers = [c.timer() for c in candidates]
    batch, calls = [], []
    for t in timers:
        t.timeit(1)  # warm-up: page faults, lazy state, caches
        one = t.timeit(1)
        calls.append(one)
        batch.append(max(1, int(target_s / max(one, 1e-9))))
    if budget_s is not None:
        per_round = sum((b + (b > 1)) * max(one, 1e-9) for b, one in zip(batch, calls, strict=True))
        repeats = max(min(repeats, 3), min(repeats, int(budget_s / per_round)))
    samples: dict[str, list[float]] = {c.name: [] for c in candidates}
    order = list(range(len(candidates)))
    for r in range(repeats):
        for i in order if r % 2 == 0 else order[::-1]:
            if batch[i] > 1:
                timers[i].timeit(1)
            samples[candidates[i].name].append(timers[i].timeit(batch[i]) / batch[i])
    return samples


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median of the per-round ratios a[i] / b[i] (robust to drift between rounds)."""
    return median([x / y for x, y in zip(a, b, strict=True) if y > 0])


# --------------------------------------------------------------------------------------
# Machine summary


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo, else physical pages x page size."""
    text = _read("/proc/meminfo")
    if text:
        for line in text.splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**31


def cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_caches() -> list[dict[str, str]]:
    """Caches of CPU 0 from /sys (level, type, size, CPUs sharing it); lscpu as fallback."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    caches = []
    if os.path.isdir(base):
        for entry in sorted(os.listdir(base)):
            d = os.path.join(base, entry)
            if not entry.startswith("index"):
                continue
            caches.append({"level": _read(f"{d}/level") or "?",
                           "type": _read(f"{d}/type") or "?",
                           "size": _read(f"{d}/size") or "?",
                           "shared_cpu_list": _read(f"{d}/shared_cpu_list") or "?"})
    if caches:
        return caches
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    for line in out.splitlines():
        if " cache:" in line:
            name, value = line.split(":", 1)
            caches.append({"level": name.strip(), "type": "", "size": value.strip(),
                           "shared_cpu_list": ""})
    return caches


def cache_summary(caches: list[dict[str, str]]) -> str:
    parts = []
    for c in caches:
        if c["type"] == "Instruction":
            continue
        label = f"L{c['level']}" + ("d" if c["type"] == "Data" else "")
        shared = f" (CPUs {c['shared_cpu_list']})" if c["shared_cpu_list"] else ""
        parts.append(f"{label} {c['size']}{shared}")
    return ", ".join(parts)


def measure_bandwidth(n: int, threads: Sequence[int], *, repeats: int = 5,
                      target_s: float = 0.05) -> list[dict[str, Any]]:
    """Roofline bandwidth (3 read-write float32 arrays + 1 read) at n elements, per thread count."""
    outs = [aligned_full(n, 0.0, np.float32) for _ in range(3)]
    x = aligned_full(n, 1e-3, np.float32)
    rows = []
    before = _core.get_num_threads()
    try:
        for t in threads:
            _core.set_num_threads(t)
            s = measure_interleaved([roofline_candidate(outs, x)], repeats=repeats,
                                    target_s=target_s)["roofline"]
            sec = median(s)
            rows.append({"n": n, "threads": t, "ns_per_elem": sec / n * 1e9,
                         "gbps": bytes_per_element(3, np.float32) * n / sec / 1e9})
    finally:
        _core.set_num_threads(before)
    return rows


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine_summary(bandwidth_n: int | None = None,
                    threads: Sequence[int] | None = None) -> dict[str, Any]:
    """CPU, cores, caches, memory, build facts; with bandwidth_n, the measured roofline."""
    import fastoptim

    caches = cpu_caches()
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": cpu_count(),
        "caches": caches,
        "cache_summary": cache_summary(caches),
        "memory_available_gib": round(available_memory_bytes() / 2**30, 1),
        "simd_target": _core.simd_target(),
        "simd_targets": list(_core.simd_targets()),
        "openmp": bool(_core.have_openmp()),
        "fastoptim": fastoptim.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": _load_average(),
    }
    if bandwidth_n:
        ts = list(threads) if threads else sorted({1, cpu_count()})
        info["bandwidth"] = measure_bandwidth(bandwidth_n, ts)
    return info


def machine_lines(info: dict[str, Any]) -> list[str]:
    lines = [f"CPU: {info['cpu']}, {info['cores']} cores; caches: {info['cache_summary']}",
             f"SIMD target: {info['simd_target']} (usable: {', '.join(info['simd_targets'])}), "
             f"OpenMP: {'yes' if info['openmp'] else 'no'}; fastoptim {info['fastoptim']}, "
             f"numpy {info['numpy']}, Python {info['python']}; {info['date']}"]
    load = info.get("load_average")
    if load is not None and load > 0.25 * info["cores"]:
        lines.append(f"WARNING: load average {load} on {info['cores']} cores before the run: "
                     "other processes share this machine, figures are unreliable "
                     "(multi-threaded ones most of all)")
    for b in info.get("bandwidth", []):
        lines.append(f"Measured roofline bandwidth (float32, 3 read-write + 1 read arrays, "
                     f"n={b['n']:.0e}, {b['threads']} thread(s)): {b['gbps']:.1f} GB/s "
                     f"= {b['ns_per_elem']:.3f} ns/element for Adam's 28 bytes")
    return lines


# --------------------------------------------------------------------------------------
# The benchmark


def _parse_size(text: str) -> int:
    return int(float(text))


@dataclass
class BenchConfig:
    kernels: list[str] = field(default_factory=available_kernels)
    dtypes: list[str] = field(default_factory=lambda: list(DTYPES))
    sizes: list[int] = field(default_factory=lambda: [10**k for k in range(3, 9)])
    tensors: list[int] = field(default_factory=lambda: [1, MANY_TENSORS])
    threads: list[int] = field(default_factory=lambda: list(range(1, cpu_count() + 1)))
    repeats: int = 9
    target_s: float = 0.02
    budget_s: float = 30.0  # per case: fewer rounds (>= 3) when the calls are that slow
    memory_fraction: float = 0.5  # cap: buffers may use this share of MemAvailable
    bandwidth_n: int | None = 10**8
    quick: bool = False

    @classmethod
    def quick_config(cls) -> BenchConfig:
        """Under a minute: 1e3..1e6, 1 and all threads, fewer and shorter samples."""
        return cls(sizes=[10**k for k in range(3, 7)],
                   threads=sorted({1, cpu_count()}), repeats=5, target_s=0.002,
                   budget_s=2.0, quick=True)

    def check(self) -> None:
        """ValueError naming the first bad field."""
        bad = [d for d in self.dtypes if d not in DTYPES]
        if bad:
            raise ValueError(f"dtypes must be among {DTYPES}, got {bad}")
        known = [s.name for s in KERNELS]
        unknown = [k for k in self.kernels if k not in known]
        if unknown:
            raise ValueError(f"unknown kernel(s) {unknown}; known: {', '.join(known)}")
        for name, values in (("threads", self.threads), ("tensors", self.tensors),
                             ("sizes", self.sizes)):
            if not values or any(v < 1 for v in values):
                raise ValueError(f"{name} must be a non-empty list of numbers >= 1, got "
                                 f"{values}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")


@dataclass
class BenchResult:
    machine: dict[str, Any]
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    skipped: list[str]


ROW_FIELDS = ["kind", "kernel", "dtype", "tensors", "n", "threads", "simd", "us_per_call",
              "ns_per_elem", "gbps", "bytes_per_elem", "roofline_ns_per_elem", "ratio",
              "paired_with", "repeats"]


def fits_in_memory(n: int, dtype: Any, nout: int, fraction: float) -> bool:
    """Kernel buffers (nout + grad) and a separate flat roofline set must fit."""
    need = 2 * (nout + 1) * n * np.dtype(dtype).itemsize
    return need <= fraction * available_memory_bytes()


def _buffers(spec: KernelSpec, sizes: list[int], dtype: Any) -> dict[str, Any]:
    """The kernel's arrays: one array each when len(sizes) == 1, else lists."""
    ns: dict[str, Any] = {"f": getattr(_core, spec.entry)}
    for name in (*spec.buffers, "g"):
        value = 1e-3 if name == "g" else (0.5 if name == "p" else 0.0)
        arrays = [aligned_full(k, value, dtype) for k in sizes]
        ns[name] = arrays[0] if len(sizes) == 1 else arrays
    return ns


def bench_case(spec: KernelSpec, dtype: str, n: int, tensors: int, threads: int, *,
               repeats: int, target_s: float, budget_s: float | None = None
               ) -> list[dict[str, Any]]:
    """Times one kernel configuration interleaved with its roofline; returns two rows."""
    sizes = split_sizes(n, tensors)
    ns = _buffers(spec, sizes, dtype)
    if len(sizes) == 1:  # the roofline runs on the kernel's own buffers
        outs = [ns[b] for b in spec.buffers]
        x = ns["g"]
    else:  # one flat set of the same total size: what the bytes cost without per-tensor work
        outs = [aligned_full(n, 0.0, dtype) for _ in range(spec.nout)]
        x = aligned_full(n, 1e-3, dtype)
    kernel = Timed(spec.name, spec.stmt, ns)
    roof = roofline_candidate(outs, x)
    before = _core.get_num_threads()
    _core.set_num_threads(threads)
    try:
        s = measure_interleaved([kernel, roof], repeats=repeats, target_s=target_s,
                                budget_s=budget_s)
    finally:
        _core.set_num_threads(before)
    bpe = bytes_per_element(spec.nout, dtype)
    k_sec, r_sec = median(s[spec.name]), median(s["roofline"])
    common = {"dtype": dtype, "tensors": len(sizes), "n": n, "threads": threads,
              "simd": _core.simd_target(), "bytes_per_elem": bpe, "repeats": len(s["roofline"]),
              "roofline_ns_per_elem": r_sec / n * 1e9}
    krow = {"kind": "kernel", "kernel": spec.name, **common, "us_per_call": k_sec * 1e6,
            "ns_per_elem": k_sec / n * 1e9, "gbps": bpe * n / k_sec / 1e9,
            "ratio": paired_ratio(s[spec.name], s["roofline"]), "paired_with": ""}
    rrow = {"kind": "roofline", "kernel": f"roofline{spec.nout}", **common,
            "us_per_call": r_sec * 1e6, "ns_per_elem": r_sec / n * 1e9,
            "gbps": bpe * n / r_sec / 1e9, "ratio": 1.0, "paired_with": spec.name}
    return [krow, rrow]


def _kernel_width() -> int:
    """The kernel column's width: the longest registered name plus a space."""
    return max([len("kernel"), *(len(k.name) for k in KERNELS)]) + 1


def _header() -> str:
    return (f"{'kernel':<{_kernel_width()}}{'dtype':<9}{'tensors':>8}{'n':>11}{'thr':>5}"
            f"{'us/call':>11}"
            f"{'ns/elem':>10}{'GB/s':>8}{'roof ns/el':>12}{'ratio':>8}")


def _line(r: dict[str, Any]) -> str:
    return (f"{r['kernel']:<{_kernel_width()}}{r['dtype']:<9}{r['tensors']:>8}"
            f"{r['n']:>11.0e}{r['threads']:>5}"
            f"{r['us_per_call']:>11.2f}{r['ns_per_elem']:>10.3f}{r['gbps']:>8.1f}"
            f"{r['roofline_ns_per_elem']:>12.3f}{r['ratio']:>8.2f}")


def run(config: BenchConfig | None = None, *, log: Callable[[str], None] | None = print
        ) -> BenchResult:
    """Runs the benchmark grid of `config` and returns every row (kernel and roofline)."""
    cfg = config or BenchConfig()
    say = log or (lambda _s: None)
    cfg.check()
    specs = [s for s in KERNELS if s.name in cfg.kernels and s.available()]
    skipped = [f"{s.name}: fastoptim._core.{s.entry} is not in this build"
               for s in KERNELS if s.name in cfg.kernels and not s.available()]

    # The bandwidth probe needs 4 float32 arrays; shrink it to what memory allows.
    bw_n = cfg.bandwidth_n
    while bw_n and not fits_in_memory(bw_n, np.float32, 1, cfg.memory_fraction):
        bw_n //= 10
    machine = machine_summary(bw_n, cfg.threads)
    for line in machine_lines(machine):
        say(line)
    say(_header())

    rows: list[dict[str, Any]] = []
    for dtype in cfg.dtypes:
        for n in cfg.sizes:
            for spec in specs:
                if not fits_in_memory(n, dtype, spec.nout, cfg.memory_fraction):
                    msg = f"{spec.name} {dtype} n={n:.0e}: skipped, not enough free memory"
                    if msg not in skipped:
                        skipped.append(msg)
                        say(msg)
                    continue
                for tensors in cfg.tensors:
                    for t in cfg.threads:
                        pair = bench_case(spec, dtype, n, tensors, t, repeats=cfg.repeats,
                                          target_s=cfg.target_s, budget_s=cfg.budget_s)
                        say(_line(pair[0]))
                        rows.extend(pair)
                    gc.collect()  # free this layout's buffers before the next one
    return BenchResult(machine=machine, config=asdict(cfg), rows=rows, skipped=skipped)


# --------------------------------------------------------------------------------------
# Outputs


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; first column left-aligned, the others right."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_script_outputs(json_path: str | None, markdown_path: str | None, *, title: str,
                         rows: Any, markdown: str, goals: Sequence[dict] = (),
                         **extra: Any) -> None:
    """Writes a bench/ script's --json and --markdown files (bench/README.md convention)."""
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"title": title, "rows": rows, "goals": list(goals), **extra}, f,
                      indent=1)
            f.write("\n")
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(markdown)


def goal_mark(met: bool | None) -> str:
    """How a goal's outcome reads in a table: yes, **no**, or n/a (not measured)."""
    return "n/a" if met is None else "yes" if met else "**no**"


def write_csv(result: BenchResult, path: str | os.PathLike[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=ROW_FIELDS)
        w.writeheader()
        for r in result.rows:
            w.writerow({k: r[k] for k in ROW_FIELDS})


def write_json(result: BenchResult, path: str | os.PathLike[str]) -> None:
    with open(path, "w") as f:
        json.dump(asdict(result), f, indent=1)
        f.write("\n")


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(result: BenchResult, path: str | os.PathLike[str],
         threads: Sequence[int] | None = None) -> bool:
    """ns/element vs size (log-log): one line per kernel, dashed rooflines.

    One panel per (tensors layout) row and (dtype, thread count) column, every thread
    count measured unless ``threads`` picks some; one shared legend below the panels.
    Returns False when matplotlib is missing or there is nothing to plot.
    """
    if not have_matplotlib():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    counts = sorted({r["threads"] for r in result.rows}) if threads is None else list(threads)
    rows = [r for r in result.rows if r["threads"] in counts]
    if not rows:
        return False
    dtypes = sorted({r["dtype"] for r in rows})
    layouts = sorted({r["tensors"] for r in rows})
    columns = [(d, t) for d in dtypes for t in counts]
    fig, axes = plt.subplots(len(layouts), len(columns), squeeze=False,
                             figsize=(4.2 * len(columns), 3.4 * len(layouts) + 0.8))
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")  # 0.2, 1, 10 instead of 2x10^-1
    handles: dict[str, Any] = {}
    for i, tensors in enumerate(layouts):
        for j, (dtype, t) in enumerate(columns):
            ax = axes[i][j]
            sel = [r for r in rows if r["dtype"] == dtype and r["tensors"] == tensors
                   and r["threads"] == t]
            names = list(dict.fromkeys(r["kernel"] for r in result.rows
                                       if r["dtype"] == dtype and r["tensors"] == tensors))
            names.sort(key=lambda k: k.startswith("roofline"))  # kernels first, stable
            grays = iter(["0.2", "0.45", "0.65"])
            for k, name in enumerate(names):
                pts: dict[int, list[float]] = {}
                for r in sel:
                    if r["kernel"] == name:
                        pts.setdefault(r["n"], []).append(r["ns_per_elem"])
                xs = sorted(pts)
                ys = [median(pts[x]) for x in xs]
                is_roof = name.startswith("roofline")
                label = (f"roofline, {name[-1]} read-write arrays" if is_roof else name)
                style = {"linestyle": "--", "color": next(grays, "0.8")} if is_roof else \
                    {"marker": "o", "color": f"C{k % 10}"}
                (line,) = ax.plot(xs, ys, label=label, linewidth=1 if is_roof else 1.5,
                                  markersize=3, **style)
                handles.setdefault(label, line)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("elements per step")
            ax.set_ylabel("ns per element")
            what = "1 array" if tensors == 1 else f"{tensors} arrays"
            ax.set_title(f"{dtype}, {what}, {t} thread{'s' if t > 1 else ''}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
    m = result.machine
    fig.suptitle(f"fastoptim update kernels vs roofline: {m['cpu']}, {m['simd_target']}, "
                 f"{m['date']}", fontsize=9)
    fig.legend(list(handles.values()), list(handles), loc="lower center", fontsize=7,
               ncol=min(6, len(handles)), frameon=False)
    legend_rows = -(-len(handles) // min(6, max(1, len(handles))))
    fig.tight_layout(rect=(0, 0.035 * legend_rows + 0.02, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_outputs(result: BenchResult, out_dir: str | os.PathLike[str], *,
                  make_plot: bool = True, log: Callable[[str], None] | None = print
                  ) -> dict[str, Path]:
    """Writes bench.csv, bench.json and bench.png (if matplotlib) into out_dir."""
    say = log or (lambda _s: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "bench.csv", "json": out / "bench.json"}
    write_csv(result, paths["csv"])
    write_json(result, paths["json"])
    if make_plot:
        if plot(result, out / "bench.png"):
            paths["png"] = out / "bench.png"
        else:
            say("matplotlib is not installed: no plot (pip install matplotlib)")
    for p in paths.values():
        say(f"wrote {p}")
    return paths


# --------------------------------------------------------------------------------------
# Command line (`fastoptim bench`, registered by fastoptim.cli)


def _csv_list(cast: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            return [cast(x) for x in text.split(",") if x.strip()]
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from e
    return parse


def add_subparser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench", help="benchmark the update kernels against this machine's roofline",
        description="Times every update kernel (SGD, SGD momentum, Adam, AdamW, ...) for "
                    "float32/float64, sizes 1e3..1e8, one and 200 arrays, 1..cores threads, "
                    "interleaved with a roofline loop that moves the same bytes.")
    p.add_argument("--quick", action="store_true", help="a reduced grid, under a minute")
    p.add_argument("--out", default="fastoptim-bench", help="folder for CSV/JSON/PNG")
    p.add_argument("--kernels", type=_csv_list(str), help="comma-separated kernel names")
    p.add_argument("--dtypes", type=_csv_list(str), help="float32,float64")
    p.add_argument("--sizes", type=_csv_list(_parse_size), help="e.g. 1e3,1e6")
    p.add_argument("--tensors", type=_csv_list(int), help=f"layouts, e.g. 1,{MANY_TENSORS}")
    p.add_argument("--threads", type=_csv_list(int), help="thread counts, e.g. 1,2")
    p.add_argument("--repeats", type=int, help="samples per case (median reported)")
    p.add_argument("--bandwidth-size", type=_parse_size,
                   help="elements of the machine-summary bandwidth probe (default 1e8, 0: none)")
    p.add_argument("--simd", help="force a SIMD target (see fastoptim.simd_targets())")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.set_defaults(func=main)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    cfg = BenchConfig.quick_config() if args.quick else BenchConfig()
    for name in ("kernels", "dtypes", "sizes", "tensors", "threads", "repeats"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    if args.bandwidth_size is not None:
        cfg.bandwidth_n = args.bandwidth_size or None
    cfg.check()
    return cfg


def main(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
        if args.simd:
            _core.set_simd_target(args.simd)
    except (ValueError, RuntimeError) as e:
        print(f"fastoptim bench: error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    result = run(cfg)
    for s in result.skipped:
        print(f"skipped: {s}")
    write_outputs(result, args.out, make_plot=not args.no_plot)
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


__all__ = [
    "BenchConfig",
    "BenchResult",
    "KERNELS",
    "KernelSpec",
    "Timed",
    "aligned_full",
    "available_kernels",
    "bytes_per_element",
    "goal_mark",
    "machine_lines",
    "markdown_table",
    "machine_summary",
    "measure_interleaved",
    "median",
    "paired_ratio",
    "plot",
    "register_kernel",
    "roofline_candidate",
    "run",
    "split_sizes",
    "write_outputs",
]

