"""bf16 and 8-bit state for the optimizers other than Adam, against their float32 kernels.

For each optimizer with reduced-precision state (SGD momentum, RMSprop, Adagrad, Adamax,
NAdam, RAdam, Adadelta, Lion, AdEMAMix), size and thread count, times one step of:
  its float32 kernel (``_core.<name>_step``, float32 parameters, gradients and state);
  its format kernel (``_core.<name>_format_step``) on fp32, bf16 and 8-bit state, float32
  parameters and gradients (fp32 state there measures the cost of the chunked scheme).
Each contender is timed in interleaved rounds; the figure is the minimum over rounds, in
ns per element, with the bytes the step moves per element.

    python bench/bench_formats_more.py --json results/bench_formats_more.json \
        --markdown results/bench_formats_more.md         # 1e6 and 1e7, 1 and 2 threads
    python bench/bench_formats_more.py --quick           # 1e6, 1 thread
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import fastoptim
import numpy as np
from bench_formats import cpu_name, time_min
from fastoptim import _core, formats
from fastoptim import spec as fspec

# optimizer -> (kernel hyperparameters, extra arguments of the float32 kernel)
CASES: dict[str, tuple[dict, dict]] = {
    "SGD": (dict(lr=0.01, momentum=0.9), dict()),
    "RMSprop": (dict(lr=1e-3, momentum=0.9), dict()),
    "Adagrad": (dict(lr=1e-2), dict(step=3)),
    "Adamax": (dict(lr=2e-3), dict(step=3)),
    "NAdam": (dict(lr=2e-3, mu_product=0.5), dict(step=3)),
    "RAdam": (dict(lr=1e-3), dict(step=30)),
    "Adadelta": (dict(lr=1.0), dict()),
    "Lion": (dict(lr=1e-4), dict()),
    "AdEMAMix": (dict(lr=1e-3), dict(step=3)),
}
STATE_BYTES = {"fp32": 8.0, "bf16": 4.0, "int8": 2.0 + 8.0 / 256}  # read + written


def buffers(name: str) -> list:
    s = fspec.get(name)
    hp = CASES[name][0]
    return [b for b in s.state if b.when is None or hp.get(b.when)]


def case(name: str, n: int, fmt: str | None, rng) -> Callable[[], None]:
    """One step of ``name`` on n elements: the float32 kernel (fmt None) or the format
    kernel on state in ``fmt``."""
    hp, extra = CASES[name]
    s = fspec.get(name)
    p = rng.standard_normal(n).astype(np.float32)
    g = (rng.standard_normal(n) * 1e-2).astype(np.float32)
    used = buffers(name)
    if fmt is None:
        state = [[np.full_like(p, 0.1)] if b in used else None for b in s.state]
        fn = getattr(_core, s.kernel)

        def step() -> None:
            fn([p], [g], *state, **hp, **extra)
        return step
    st = formats.new_buffers(p, fmt, [(b.key, b.signed, 0.1) for b in used])
    vals = [[st[b.key]] if b in used else None for b in s.state]
    absmax = [[st[formats.absmax_key(b.key)]] if b in used and fmt == "int8" else None
              for b in s.state]
    fn = getattr(_core, s.format_kernel)
    kw = dict(hp, step=extra.get("step", 3))

    def fstep() -> None:
        fn([p], [g], *vals, *absmax, None, **kw)
    return fstep


def run(sizes: list[int], threads: list[int], rounds: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        reps = max(3, int(3e7 // n))
        for nt in threads:
            fastoptim.set_num_threads(nt)
            for name in CASES:
                k = len(buffers(name))
                contenders = {"fp32 kernel": case(name, n, None, rng)}
                for fmt in ("fp32", "bf16", "int8"):
                    contenders[f"{fmt} state"] = case(name, n, fmt, rng)
                best = dict.fromkeys(contenders, float("inf"))
                for _ in range(rounds):
                    for label, fn in contenders.items():
                        fn()  # warm
                        best[label] = min(best[label], time_min(fn, reps))
                base = best["fp32 kernel"]
                for label, t in best.items():
                    fmt = label.split()[0]
                    nbytes = 12.0 + k * STATE_BYTES["fp32" if label == "fp32 kernel" else fmt]
                    rows.append(dict(optimizer=name, n=n, threads=nt, contender=label,
                                     ns_per_element=1e9 * t / n, vs_fp32_kernel=t / base,
                                     bytes_per_element=nbytes))
                    print(f"{name:9s} n={n:>9d} threads={nt} {label:12s} "
                          f"{1e9 * t / n:7.3f} ns/elem  x{t / base:5.2f}  "
                          f"{nbytes:5.1f} B/elem", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    from fastoptim.bench import markdown_table

    out = [f"Machine: {cpu_name()}; format kernels `{_core.format_kernels()}`. ns per "
           f"element of one step (minimum over interleaved rounds), and the ratio to the "
           f"optimizer's float32 kernel; float32 parameters and gradients.\n"]
    for n in sorted({r["n"] for r in rows}):
        for nt in sorted({r["threads"] for r in rows}):
            table = []
            for name in CASES:
                sel = {r["contender"]: r for r in rows
                       if r["optimizer"] == name and r["n"] == n and r["threads"] == nt}
                if not sel:
                    continue
                table.append([name] + [
                    f"{sel[c]['ns_per_element']:.3f} (x{sel[c]['vs_fp32_kernel']:.2f}, "
                    f"{sel[c]['bytes_per_element']:.1f} B)"
                    for c in ("fp32 kernel", "fp32 state", "bf16 state", "int8 state")])
            out.append(f"### {n:.0e} elements, {nt} thread(s)\n")
            out.append(markdown_table(["optimizer", "fp32 kernel", "format kernel, fp32 state",
                                       "bf16 state", "int8 state"], table))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="1e6 elements, 1 thread, 2 rounds")
    ap.add_argument("--json", default=None, help="write the rows as JSON here")
    ap.add_argument("--markdown", default=None, help="write the tables as markdown here")
    a = ap.parse_args()
    if a.quick:
        a.sizes, a.threads, a.rounds = [1_000_000], [1], 2
    print(f"# {cpu_name()}, SIMD target {fastoptim.simd_target()}, format kernels "
          f"{_core.format_kernels()}")
    rows = run(a.sizes, a.threads, a.rounds)
    from fastoptim.bench import write_script_outputs

    write_script_outputs(a.json, a.markdown,
                         title="Reduced-precision state beyond Adam", rows=rows,
                         markdown=markdown(rows), cpu=cpu_name(),
                         format_kernels=_core.format_kernels())


if __name__ == "__main__":
    main()
