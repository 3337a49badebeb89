"""The benchmark machinery (fastoptim.bench, `fastoptim bench`): schema and outputs at tiny
sizes, the roofline kernel's arithmetic, and that each benchmarked statement performs the
update it claims to. No timing is asserted."""

from __future__ import annotations

import csv
import json
import math
import sys

import fastoptim
import numpy as np
import pytest
import reference
from fastoptim import _core, bench, cli

TINY = bench.BenchConfig(sizes=[1000, 4099], threads=[1, 2], tensors=[1, 200], repeats=2,
                         target_s=1e-5, bandwidth_n=20000)


@pytest.fixture(scope="module")
def tiny_result():
    before = fastoptim.get_num_threads()
    result = bench.run(TINY, log=None)
    assert fastoptim.get_num_threads() == before  # the benchmark restores the thread count
    return result


def test_rows_cover_the_grid(tiny_result):
    kernels = bench.available_kernels()
    assert {"sgd", "sgd_momentum", "adam", "adamw"} <= set(kernels)
    rows = tiny_result.rows
    # one kernel row and one roofline row per (kernel, dtype, size, layout, threads)
    assert len(rows) == 2 * len(kernels) * 2 * 2 * 2 * 2
    keys = {(r["kernel"], r["dtype"], r["n"], r["tensors"], r["threads"])
            for r in rows if r["kind"] == "kernel"}
    assert len(keys) == len(rows) // 2
    assert {r["tensors"] for r in rows} == {1, 200}
    assert not tiny_result.skipped


def test_row_schema_and_consistency(tiny_result):
    nout = {k.name: k.nout for k in bench.KERNELS}
    for r in tiny_result.rows:
        assert set(r) == set(bench.ROW_FIELDS)
        assert r["simd"] == fastoptim.simd_target()
        itemsize = np.dtype(r["dtype"]).itemsize
        assert r["us_per_call"] > 0 and math.isfinite(r["us_per_call"])
        assert r["ns_per_elem"] * r["n"] / 1e3 == pytest.approx(r["us_per_call"], rel=1e-9)
        assert r["gbps"] == pytest.approx(r["bytes_per_elem"] / r["ns_per_elem"], rel=1e-9)
        assert r["ratio"] > 0 and math.isfinite(r["ratio"])
        if r["kind"] == "kernel":
            assert r["bytes_per_elem"] == (2 * nout[r["kernel"]] + 1) * itemsize
            assert r["paired_with"] == ""
        else:
            assert r["kind"] == "roofline"
            assert r["kernel"] == f"roofline{nout[r['paired_with']]}"
            assert r["ratio"] == 1.0
            assert r["ns_per_elem"] == r["roofline_ns_per_elem"]


def test_each_kernel_row_has_its_roofline_row(tiny_result):
    rows = tiny_result.rows
    for k, rf in zip(rows[0::2], rows[1::2], strict=True):
        assert k["kind"] == "kernel" and rf["kind"] == "roofline"
        assert rf["paired_with"] == k["kernel"]
        for f in ("dtype", "n", "tensors", "threads", "bytes_per_elem",
                  "roofline_ns_per_elem"):
            assert k[f] == rf[f]
    # 28 bytes per float32 element for Adam, as in the design's performance model
    adam = next(r for r in rows if r["kernel"] == "adam" and r["dtype"] == "float32")
    assert adam["bytes_per_elem"] == 28


def test_machine_summary(tiny_result):
    m = tiny_result.machine
    assert m["cores"] == bench.cpu_count() >= 1
    assert m["simd_target"] == fastoptim.simd_target()
    assert [b["threads"] for b in m["bandwidth"]] == TINY.threads
    assert all(b["n"] == 20000 and b["gbps"] > 0 for b in m["bandwidth"])
    text = "\n".join(bench.machine_lines(m))
    assert m["cpu"] in text and "GB/s" in text


def test_outputs(tiny_result, tmp_path):
    paths = bench.write_outputs(tiny_result, tmp_path, log=None)
    with open(paths["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == bench.ROW_FIELDS
    assert len(rows) == len(tiny_result.rows)
    assert {r["kind"] for r in rows} == {"kernel", "roofline"}
    assert float(rows[0]["ns_per_elem"]) == pytest.approx(tiny_result.rows[0]["ns_per_elem"])
    data = json.loads(paths["json"].read_text())
    assert set(data) == {"machine", "config", "rows", "skipped"}
    assert data["rows"] == tiny_result.rows
    assert data["config"]["sizes"] == TINY.sizes
    if bench.have_matplotlib():
        assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "png" not in paths


def test_memory_cap_skips_and_reports():
    cfg = bench.BenchConfig(kernels=["sgd"], dtypes=["float32"], sizes=[1000], threads=[1],
                            repeats=1, target_s=1e-5, bandwidth_n=1000, memory_fraction=0.0)
    result = bench.run(cfg, log=None)
    assert result.rows == []
    assert result.skipped and "memory" in result.skipped[0]
    assert "bandwidth" not in result.machine


def test_unknown_kernel_raises():
    with pytest.raises(ValueError, match="nope"):
        bench.run(bench.BenchConfig(kernels=["nope"]), log=None)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("nout", [1, 2, 3])
def test_roofline_update_adds_x(simd_target, num_threads, rng, dtype, nout):
    n = 2**17 + 5  # above the parallel threshold, odd tail
    outs = [rng.standard_normal(n).astype(dtype) for _ in range(nout)]
    x = rng.standard_normal(n).astype(dtype)
    want = [o + x for o in outs]
    x_before = x.copy()
    _core.roofline_update(outs, x)
    for o, w in zip(outs, want, strict=True):
        np.testing.assert_array_equal(o, w)
    np.testing.assert_array_equal(x, x_before)


def test_roofline_update_rejects_bad_input():
    a = np.zeros(10, np.float32)
    with pytest.raises(ValueError):
        _core.roofline_update([], a)
    with pytest.raises(TypeError):
        _core.roofline_update([np.zeros(10, np.float64)], a)


@pytest.mark.parametrize("spec", bench.KERNELS, ids=lambda s: s.name)
@pytest.mark.parametrize("tensors", [1, 3])
def test_benchmarked_statement_performs_the_update(spec, tensors):
    sizes = bench.split_sizes(301, tensors)
    ns = bench._buffers(spec, sizes, np.float64)
    as_list = (lambda v: [v]) if tensors == 1 else (lambda v: v)
    before = {k: [a.copy() for a in as_list(ns[k])] for k in (*spec.buffers, "g")}
    exec(spec.stmt, dict(ns))
    after = {k: as_list(ns[k]) for k in spec.buffers}
    for i in range(len(sizes)):
        p, g = before["p"][i], before["g"][i]
        if spec.name in ("adagrad", "rmsprop", "rmsprop_momentum"):
            torch = pytest.importorskip("torch")
            _check_against_torch(torch, spec, before, after, i)
            continue
        if spec.name.startswith("sgd"):
            buf = before["buf"][i] if "buf" in before else None
            kw = {"momentum": 0.9} if buf is not None else {}
            want_p, want_buf = reference.sgd(p, g, buf, lr=1e-3, **kw)
            if buf is not None:
                np.testing.assert_allclose(after["buf"][i], want_buf, rtol=1e-12)
        else:
            wd = {"weight_decay": 1e-2, "decoupled_weight_decay": True} \
                if spec.name == "adamw" else {}
            want_p, m, v, _ = reference.adam(p, g, before["m"][i], before["v"][i], None,
                                             step=10, lr=1e-3, **wd)
            np.testing.assert_allclose(after["m"][i], m, rtol=1e-12)
            np.testing.assert_allclose(after["v"][i], v, rtol=1e-12)
        assert not np.array_equal(after["p"][i], p)
        np.testing.assert_allclose(after["p"][i], want_p, rtol=1e-12)


def _check_against_torch(torch, spec, before, after, i):
    """One torch.optim step from the benchmark's initial state; compares every buffer."""
    t = torch.nn.Parameter(torch.from_numpy(before["p"][i].copy()))
    t.grad = torch.from_numpy(before["g"][i].copy())
    if spec.name == "adagrad":
        opt = torch.optim.Adagrad([t], lr=1e-2)
        opt.state[t] = {"step": torch.tensor(9.0), "sum": torch.from_numpy(before["sums"][i])}
        state = {"sums": "sum"}
    else:
        mom = 0.9 if spec.name == "rmsprop_momentum" else 0.0
        opt = torch.optim.RMSprop([t], lr=1e-2, momentum=mom)
        opt.state[t] = {"step": torch.tensor(0.0),
                        "square_avg": torch.from_numpy(before["sq"][i])}
        state = {"sq": "square_avg"}
        if mom:
            opt.state[t]["momentum_buffer"] = torch.from_numpy(before["buf"][i])
            state["buf"] = "momentum_buffer"
    opt.step()
    np.testing.assert_allclose(after["p"][i], t.detach().numpy(), rtol=1e-12)
    assert not np.array_equal(after["p"][i], before["p"][i])
    for ours, theirs in state.items():
        np.testing.assert_allclose(after[ours][i], opt.state[t][theirs].numpy(), rtol=1e-12)


def test_buffers_are_aligned_and_filled():
    for n in (0, 1, 17, 1000):
        a = bench.aligned_full(n, 0.25, np.float32)
        assert a.shape == (n,) and a.dtype == np.float32 and a.flags.c_contiguous
        assert n == 0 or a.ctypes.data % bench.ALIGN_BYTES == 0
        assert np.all(a == 0.25)


@pytest.mark.parametrize("total,count", [(1000, 200), (1001, 200), (7, 200), (0, 3), (5, 1)])
def test_split_sizes(total, count):
    sizes = bench.split_sizes(total, count)
    assert sum(sizes) == total
    assert max(sizes) - min(sizes) <= 1
    assert len(sizes) == (min(count, total) if total else 1)


def test_cli_bench(tmp_path, capsys):
    rc = cli.main(["bench", "--kernels", "adam,sgd", "--dtypes", "float32", "--sizes", "1e3",
                   "--tensors", "1", "--threads", "1", "--repeats", "1",
                   "--bandwidth-size", "1e4", "--out", str(tmp_path), "--no-plot"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "adam" in out and "GB/s" in out and "wrote" in out
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [(r["kind"], r["kernel"]) for r in rows] == [
        ("kernel", "sgd"), ("roofline", "roofline1"), ("kernel", "adam"),
        ("roofline", "roofline3")]
    assert not (tmp_path / "bench.png").exists()


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    assert cli.main(["bench", "--dtypes", "float16", "--out", str(tmp_path)]) == 2
    assert "float16" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["bench", "--sizes", "big"])
    with pytest.raises(SystemExit):
        cli.main([])


def _load_bench_script(name):
    """A script of the repository's bench/ folder, imported as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    if not path.exists():
        pytest.skip(f"bench/{name}.py is not in this checkout")
    spec = importlib.util.spec_from_file_location(f"bench_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_run_all_report(tiny_result, tmp_path):
    import dataclasses

    run_all = _load_bench_script("run_all")
    data = json.loads(json.dumps(dataclasses.asdict(tiny_result)))
    tables = run_all.kernel_tables(data)
    assert "### Update kernels, 1 thread, one array" in tables
    assert "### Update kernels, 1 thread, 200 arrays" in tables
    assert "speed-up of 2 threads over 1" in tables
    for k in bench.available_kernels():
        for d in ("float32", "float64"):
            assert f"| {k} {d} |" in tables
    assert "| kernel | 1e3 | 4e3 |" in tables
    outcomes = [
        {"script": "bench_x.py", "status": "ok", "title": "X", "machine": None,
         "goals": [{"goal": "g1", "measured": "1×", "met": False},
                   {"goal": "g2", "measured": "not run", "met": None}],
         "markdown": "### x table\n"},
        {"script": "bench_mlp.py", "status": "not present"},
    ]
    report = run_all.compose(tmp_path, True, data, outcomes, "python bench/run_all.py --quick")
    assert report.startswith("<!-- Generated by bench/run_all.py")
    assert "| g1 | 1× | **no** | bench_x.py |" in report
    assert "| g2 | not run | n/a | bench_x.py |" in report
    assert "## X (`bench/bench_x.py`)\n\n### x table" in report
    assert "`bench/bench_mlp.py`: not present" in report
    assert tiny_result.machine["cpu"] in report


def test_peer_adams_compute_the_same_update(monkeypatch):
    pytest.importorskip("torch")
    opt = _load_bench_script("bench_optimizers")
    # DeepSpeed (when installed) takes this same check each time the script runs
    names = ["fastoptim", "numpy", "torch for-loop", "torch foreach", "torch fused"]
    assert set(names) < set(opt.CONTENDERS)
    dropped = opt.check_same_update(names, lambda _s: None)
    assert dropped == {}
    # a different update is caught: the peers with beta1 = 0.8 (fastoptim keeps 0.9)
    monkeypatch.setattr(opt, "BETA1", 0.8)
    dropped = opt.check_same_update(["fastoptim", "numpy", "torch fused"], lambda _s: None)
    assert "differs" in dropped["numpy"] and "differs" in dropped["torch fused"]


def test_measure_interleaved_rounds_and_budget():
    import time

    slow = bench.Timed("slow", "sleep(0.005)", {"sleep": time.sleep})
    fast = bench.Timed("fast", "x + 1", {"x": 1})
    s = bench.measure_interleaved([slow, fast], repeats=6, target_s=1e-4)
    assert [len(v) for v in s.values()] == [6, 6]
    assert bench.median(s["slow"]) >= 0.004  # a batch of one call: seconds per call
    s = bench.measure_interleaved([slow, fast], repeats=6, target_s=1e-4, budget_s=0.005)
    assert [len(v) for v in s.values()] == [3, 3]
    assert bench.paired_ratio([2.0, 4.0, 9.0], [1.0, 1.0, 3.0]) == 3.0


def test_table_columns_stay_apart_for_the_longest_kernel_name():
    longest = max((k.name for k in bench.KERNELS), key=len)
    row = {"kernel": longest, "dtype": "float32", "tensors": 1, "n": 1000, "threads": 1,
           "us_per_call": 1.0, "ns_per_elem": 1.0, "gbps": 1.0, "roofline_ns_per_elem": 1.0,
           "ratio": 1.0}
    line, head = bench._line(row), bench._header()
    assert line.split()[:2] == [longest, "float32"]  # never "rmsprop_momentumfloat32"
    assert head.index("dtype") == line.index("float32")
