"""Reduced-precision optimizer state where users reach it: ``state_dtype=`` on
fastoptim.optim, its state_dict and checkpoints, TrainConfig / `fastoptim train
--state-dtype` / the estimators. The kernels themselves are checked step by step against
float64 references of the same quantized algorithm in test_formats.py; here each entry
point must give exactly the kernel's results, round-trip exactly and refuse bad input
without changing anything."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastoptim import cli, formats, optim
from fastoptim.checkpoint import load_checkpoint
from fastoptim.config import ConfigError, TrainConfig

SIZES = [(70, 90), (5,), (300,)]  # 6300 elements (8-bit kept), and two small fp32 ones
FLAGS = [dict(), dict(amsgrad=True), dict(weight_decay=0.1),
         dict(maximize=True, amsgrad=True, weight_decay=0.01)]


def _params(rng):
    return [rng.standard_normal(s).astype(np.float32) for s in SIZES]


def _grads(rng):
    return [(rng.standard_normal(s) * 10.0 ** rng.uniform(-3, 0, s)).astype(np.float32)
            for s in SIZES]


@pytest.mark.parametrize("fmt", ["bf16", "int8"])
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "-".join(f) or "plain")
def test_optim_state_dtype_steps_exactly_as_the_format_kernel(simd_target, rng, fmt, name,
                                                              flags):
    ps = _params(rng)
    mine = [p.copy() for p in ps]
    opt = getattr(optim, name)(ps, lr=1e-2, state_dtype=fmt, **flags)
    amsgrad = flags.get("amsgrad", False)
    states = [formats.new_state(p, fmt, amsgrad=amsgrad) for p in mine]
    wd = flags.get("weight_decay", 1e-2 if name == "AdamW" else 0.0)
    for _ in range(4):
        gs = _grads(rng)
        opt.step(gs)
        formats.adam_step(mine, gs, states, lr=1e-2, weight_decay=wd,
                          decoupled_weight_decay=name == "AdamW", amsgrad=amsgrad,
                          maximize=flags.get("maximize", False))
    for i, (p, q) in enumerate(zip(ps, mine, strict=True)):
        assert np.array_equal(p, q)
        st = opt.state[i]
        assert st["state_format"] == states[i]["state_format"]
        assert st["state_format"] == (fmt if p.size >= formats.MIN_8BIT_SIZE or fmt == "bf16"
                                      else "fp32")
        for k, v in states[i].items():
            assert np.array_equal(st[k], v), k
    assert opt.state[0]["exp_avg"].dtype == (np.uint8 if fmt == "int8" else np.uint16)


@pytest.mark.parametrize("fmt", ["bf16", "int8"])
def test_optim_reduced_state_tracks_fp32_adam(rng, fmt):
    """Sanity of the whole path: 30 steps of 8-bit / bf16 state stay within a fraction of
    the learning rate per step of fp32 Adam (the state's quantization error)."""
    p0 = rng.standard_normal(8192).astype(np.float32)
    a, b = p0.copy(), p0.copy()
    oa, ob = optim.Adam([a], lr=1e-3), optim.Adam([b], lr=1e-3, state_dtype=fmt)
    for _ in range(30):
        g = rng.standard_normal(8192).astype(np.float32)
        oa.step([g])
        ob.step([g])
    drift = float(np.abs(a - b).max())
    assert 0 < drift <= 30 * 1e-3 * 0.5  # moved, and less than half an lr per step
    assert ob.state[0]["state_format"] == fmt


@pytest.mark.parametrize("fmt", ["bf16", "int8"])
def test_optim_state_dict_round_trips_exactly_and_continues_identically(rng, fmt):
    ps = _params(rng)
    opt = optim.Adam(ps, lr=1e-2, amsgrad=True, state_dtype=fmt)
    for _ in range(3):
        opt.step(_grads(rng))
    sd = opt.state_dict()
    qs = [p.copy() for p in ps]
    again = optim.Adam(qs, lr=1e-2, amsgrad=True, state_dtype=fmt)
    again.load_state_dict(sd)
    for i in opt.state:
        assert opt.state[i].keys() == again.state[i].keys()
        for k, v in opt.state[i].items():
            w = again.state[i][k]
            assert (v == w) if not isinstance(v, np.ndarray) else (
                v.dtype == w.dtype and v.tobytes() == w.tobytes()), k
    for _ in range(3):
        gs = _grads(rng)
        opt.step(gs)
        again.step(gs)
    for p, q in zip(ps, qs, strict=True):
        assert p.tobytes() == q.tobytes()


def _snapshot(opt, ps):
    return ([p.copy() for p in ps],
            {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
             for i, s in opt.state.items()})


def _same(snap, opt, ps):
    params, state = snap
    if not all(a.tobytes() == b.tobytes() for a, b in zip(params, ps, strict=True)):
        return False
    if state.keys() != opt.state.keys():
        return False
    for i, s in state.items():
        if s.keys() != opt.state[i].keys():
            return False
        for k, v in s.items():
            w = opt.state[i][k]
            if isinstance(v, np.ndarray):
                if v.dtype != w.dtype or v.tobytes() != w.tobytes():
                    return False
            elif v != w:
                return False
    return True


def _bad_state_dicts(sd_int8, sd_fp32):
    def with_state(sd, i, **changes):
        out = {"param_groups": sd["param_groups"],
               "state": {k: dict(v) for k, v in sd["state"].items()}}
        out["state"][i].update(changes)
        for k, v in changes.items():
            if v is None:
                del out["state"][i][k]
        return out

    st = sd_int8["state"][0]
    return {
        "fp32-into-int8": sd_fp32,
        "tag-mismatch": with_state(sd_int8, 0, state_format="bf16"),
        "codes-dtype": with_state(sd_int8, 0, exp_avg=st["exp_avg"].astype(np.uint16)),
        "codes-shape": with_state(sd_int8, 0, exp_avg=st["exp_avg"].ravel()),
        "absmax-shape": with_state(sd_int8, 0, exp_avg_absmax=st["exp_avg_absmax"][:-1]),
        "absmax-dtype": with_state(sd_int8, 0,
                                   exp_avg_absmax=st["exp_avg_absmax"].astype(np.float64)),
        "absmax-missing": with_state(sd_int8, 0, exp_avg_sq_absmax=None),
        "block-size": with_state(sd_int8, 0, exp_avg_absmax=np.repeat(
            st["exp_avg_absmax"], 2)),  # 128-element blocks
    }


@pytest.mark.parametrize("case", ["fp32-into-int8", "tag-mismatch", "codes-dtype",
                                  "codes-shape", "absmax-shape", "absmax-dtype",
                                  "absmax-missing", "block-size", "int8-into-fp32"])
def test_optim_bad_state_dicts_are_refused_and_nothing_changes(rng, case):
    ps = _params(rng)
    src = optim.Adam([p.copy() for p in ps], state_dtype="int8")
    src.step(_grads(rng))
    plain = optim.Adam([p.copy() for p in ps])
    plain.step(_grads(rng))
    if case == "int8-into-fp32":
        target, sd = plain, src.state_dict()
        target_ps = plain._params
    else:
        target = optim.Adam(ps, state_dtype="int8")
        target.step(_grads(rng))
        target_ps = ps
        sd = _bad_state_dicts(src.state_dict(), plain.state_dict())[case]
    snap = _snapshot(target, target_ps)
    with pytest.raises((TypeError, ValueError)) as e:
        target.load_state_dict(sd)
    assert "state" in str(e.value)
    assert _same(snap, target, target_ps)


def test_optim_state_dtype_is_checked():
    p = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="state_dtype must be one of"):
        optim.Adam([p], state_dtype="int4")
    with pytest.raises(ValueError, match="state_dtype must be 'fp32' for Rprop"):
        optim.Rprop([p], state_dtype="int8")
    with pytest.raises(TypeError, match="state_dtype='bf16' needs float32"):
        optim.Adam([np.zeros(10)], state_dtype="bf16")
    opt = optim.Adam([p], state_dtype="bf16")
    with pytest.raises(TypeError, match="needs float32"):
        opt.add_param_group({"params": [np.zeros(3)]})
    assert len(opt.param_groups) == 1


# ------------------------------------------------------------- training entry points

def test_train_config_and_fit_with_state_dtype():
    from fastoptim import data, nn, train

    cfg = TrainConfig(hidden=[128], state_dtype="int8", epochs=2)
    ds = data.load("digits")
    X = data.Standardizer().fit(ds.X_train).transform(ds.X_train).astype(np.float32)
    model, opt, lr = cfg.build(X.shape[1], 10)
    assert opt.state_dtype == "int8"
    hist = train.fit(model, X, ds.y_train, loss="cross_entropy", optimizer=opt, epochs=2,
                     verbose=False)
    formats_used = {s["state_format"] for s in opt.state.values()}
    assert formats_used == {"int8", "fp32"}  # the 64x128 weight 8-bit, biases fp32
    assert hist["loss"][-1] < hist["loss"][0]
    assert isinstance(model, nn.Sequential)
    for bad, field in [(dict(state_dtype="int4"), "state_dtype"),
                       (dict(state_dtype="int8", optimizer="rprop"), "state_dtype"),
                       (dict(state_dtype="bf16", dtype="float64"), "state_dtype")]:
        with pytest.raises(ConfigError) as e:
            TrainConfig(**bad)
        assert e.value.field == field


ARGS = ["--hidden", "128", "--batch-size", "64", "--quiet", "--state-dtype", "int8"]


def test_cli_state_dtype_resume_continues_bitwise(tmp_path):
    assert cli.main(["train", *ARGS, "--epochs", "3", "--output", str(tmp_path / "a")]) == 0
    assert cli.main(["train", *ARGS, "--epochs", "1", "--output", str(tmp_path / "b")]) == 0
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["params"]["state_dtype"] == "int8"
    assert cli.main(["train", "--resume", str(tmp_path / "b"), "--epochs", "3",
                     "--quiet"]) == 0
    a, meta_a = load_checkpoint(tmp_path / "a" / "checkpoint.npz")
    b, meta_b = load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    assert a.keys() == b.keys() and meta_a["epoch"] == meta_b["epoch"] == 3
    codes = [k for k, v in a.items() if k.startswith("optimizer") and v.dtype == np.uint8]
    assert codes  # the checkpoint holds the 8-bit codes as they are
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    assert meta_a["optimizer"] == meta_b["optimizer"]  # format tags and steps included


def test_cli_state_dtype_errors_are_one_line(tmp_path, capsys):
    for argv in (["--state-dtype", "int8", "--optimizer", "rprop"],
                 ["--state-dtype", "int8", "--shard-optimizer"],
                 ["--state-dtype", "int8", "--dtype", "float64"],
                 ["--state-dtype", "int4"]):
        try:
            rc = cli.main(["train", "--epochs", "1", "--quiet", *argv])
        except SystemExit as e:  # argparse's own choice check
            rc = e.code
        assert rc == 2
        err = capsys.readouterr().err
        assert "--state-dtype" in err and len(err.strip().splitlines()) == 1, err


def test_estimator_state_dtype():
    from fastoptim.sklearn import MLPClassifier
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    clf = MLPClassifier(hidden_layer_sizes=(128,), epochs=5, random_state=0,
                        state_dtype="bf16").fit(X, y)
    assert clf.get_params()["state_dtype"] == "bf16"
    assert {s["state_format"] for s in clf._opt.state.values()} == {"bf16"}
    assert clf.score(X, y) > 0.9
    with pytest.raises(ValueError, match="state_dtype"):
        MLPClassifier(optimizer="rprop", state_dtype="int8", epochs=1).fit(X, y)
