"""Resuming is all-or-nothing (a refused resume changes no model, optimizer or trainer
byte), `fastoptim train --resume DIR` continues a run exactly, and a killed save's temp
files are removed by the next save (never a live writer's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from fastoptim import cli, data, nn, optim, train
from fastoptim.checkpoint import (
    CheckpointError,
    load_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
)
from fastoptim.config import TrainConfig


@pytest.fixture(scope="module")
def digits():
    ds = data.load("digits")
    st = data.Standardizer().fit(ds.X_train)
    return st.transform(ds.X_train).astype(np.float32), ds.y_train


def _cli_model(hidden=32, dropout=0.0, dtype="float32"):
    """The model and optimizer `fastoptim train` builds: two groups (weights, biases)."""
    model, opt, _ = TrainConfig(hidden=[hidden], dropout=dropout, dtype=dtype).build(64, 10)
    return model, opt


def _snapshot(model, opt) -> bytes:
    """Every byte of the model's parameters and the optimizer's state and groups."""
    parts = [model.flat_parameters().tobytes()]
    sd = opt.state_dict()
    for i in sorted(sd["state"]):
        for k in sorted(sd["state"][i]):
            parts.append(f"{i}.{k}={np.asarray(sd['state'][i][k]).tobytes()!r}".encode())
    parts.append(repr([{k: v for k, v in g.items() if k != "params"}
                       for g in sd["param_groups"]]).encode())
    parts += [repr((layer.seed, layer.calls)).encode() for layer in model.layers
              if isinstance(layer, nn.Dropout)]
    return b"".join(parts)


def _checkpoint(digits, tmp_path, **kw):
    X, y = digits
    model, opt = _cli_model(**kw)
    path = tmp_path / "checkpoint.npz"
    train.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=1, batch_size=64,
              verbose=False, seed=0, callbacks=[train.ModelCheckpoint(path)])
    return path


def _trained(make, digits):
    """A model and optimizer with non-trivial state (one epoch of its own)."""
    X, y = digits
    model, opt = make()
    X = X.astype(model.dtype)
    train.fit(model, X[:200], y[:200], loss="cross_entropy", optimizer=opt, epochs=1,
              batch_size=50, verbose=False, seed=7, metrics=())
    return model, opt


def test_the_issue_scenario_one_group_optimizer_changes_nothing(digits, tmp_path):
    # `fastoptim train` writes fastoptim-run/checkpoint.npz (its optimizer has two groups:
    # weights with decay, biases without); resuming it with optim.Adam over
    # model.parameters() (one group) is refused before any of the 19,210 weights change.
    run = tmp_path / "fastoptim-run"
    assert cli.main(["train", "--epochs", "1", "--output", str(run), "--quiet"]) == 0
    X, y = digits
    model = nn.Sequential(nn.Dense(64, 256, "relu"), nn.Dense(256, 10), seed=5)
    assert model.num_parameters() == 19_210
    opt = optim.Adam(model.parameters())
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match="2 optimizer parameter groups .* has 1"):
        train.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=2, verbose=False,
                  resume_from=run / "checkpoint.npz")
    assert _snapshot(model, opt) == before
    # The same checkpoint with the optimizer `fastoptim train` builds resumes.
    model2, opt2, _ = TrainConfig().build(64, 10)
    train.fit(model2, X, y, loss="cross_entropy", optimizer=opt2, epochs=1, verbose=False,
              resume_from=run / "checkpoint.npz")
    saved = load_checkpoint(run / "checkpoint.npz")[0]
    assert model2.flat_parameters()[:5].tobytes() != model.flat_parameters()[:5].tobytes()
    assert saved["model.0"].tobytes() == model2.layers[0].weight.tobytes()


def _other_group_sizes():
    model = _cli_model()[0]
    ps = model.parameters()
    return model, optim.Adam([{"params": ps[:1]}, {"params": ps[1:]}])


def _sgd_momentum():
    model = _cli_model()[0]
    named = model.named_parameters()
    groups = [{"params": [p for n, p in named if n.endswith("weight")]},
              {"params": [p for n, p in named if not n.endswith("weight")]}]
    return model, optim.SGD(groups, lr=0.1, momentum=0.9)


REFUSALS = [
    ("other hidden size", lambda: _cli_model(hidden=16), {}, "layout differs"),
    ("other dtype", lambda: _cli_model(dtype="float64"), {}, "layout differs"),
    ("dropout layer added", lambda: _cli_model(dropout=0.2), {}, "dropout"),
    ("other group sizes", _other_group_sizes, {}, "group 0 has 2 parameters"),
    ("other optimizer state", _sgd_momentum, {}, "optimizer state"),
    ("schedule non-finite at the step", _cli_model, {"schedule": lambda step: float("nan")},
     "non-finite learning rate"),
]


@pytest.mark.parametrize("make,fit_kw,match", [r[1:] for r in REFUSALS],
                         ids=[r[0] for r in REFUSALS])
def test_a_refused_resume_leaves_model_and_optimizer_bit_identical(digits, tmp_path, make,
                                                                   fit_kw, match):
    path = _checkpoint(digits, tmp_path)
    model, opt = _trained(make, digits)
    before = _snapshot(model, opt)
    X, y = digits
    with pytest.raises(CheckpointError, match=match):
        train.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=3, verbose=False,
                  resume_from=path, **fit_kw)
    assert _snapshot(model, opt) == before


@pytest.mark.parametrize("field,value,match", [
    ("epoch", -1, "schedule position"), ("step", -5, "schedule position"),
    ("lr_scale", float("inf"), "schedule position"), ("optimizer", None, "not a training"),
    ("dropout_streams", [[1, 2]], "dropout"),
])
def test_a_checkpoint_with_bad_metadata_is_refused_before_loading(digits, tmp_path, field,
                                                                  value, match):
    path = _checkpoint(digits, tmp_path)
    arrays, meta = load_checkpoint(path)
    meta[field] = value
    bad = tmp_path / "bad.npz"
    save_checkpoint(bad, arrays, meta)
    model, opt = _trained(_cli_model, digits)
    before = _snapshot(model, opt)
    X, y = digits
    with pytest.raises(CheckpointError, match=match):
        train.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=3, verbose=False,
                  resume_from=bad)
    assert _snapshot(model, opt) == before


def test_model_checkpoint_counts_epochs_from_1(digits, tmp_path):
    X, y = digits
    model, opt = _cli_model()
    train.fit(model, X[:100], y[:100], loss="cross_entropy", optimizer=opt, epochs=2,
              verbose=False, callbacks=[train.ModelCheckpoint(tmp_path / "ck-{epoch}.npz")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck-1.npz", "ck-2.npz"]
    assert load_checkpoint(tmp_path / "ck-2.npz")[1]["epoch"] == 2  # epochs completed


# ------------------------------------------------------------------------ CLI --resume

ARGS = ["--hidden", "16", "--dropout", "0.2", "--batch-size", "64", "--quiet"]


def _model_arrays(folder):
    arrays, meta = load_checkpoint(folder / "checkpoint.npz")
    return {k: v for k, v in arrays.items() if k.startswith("model")}, meta


def test_cli_resume_2_plus_2_epochs_equals_4(tmp_path, capsys):
    assert cli.main(["train", *ARGS, "--epochs", "4", "--output", str(tmp_path / "a")]) == 0
    assert cli.main(["train", *ARGS, "--epochs", "2", "--output", str(tmp_path / "b")]) == 0
    # The resumed run takes its options from b/config.json; --epochs raises the target.
    assert cli.main(["train", "--resume", str(tmp_path / "b"), "--epochs", "4",
                     "--quiet"]) == 0
    want, meta_a = _model_arrays(tmp_path / "a")
    got, meta_b = _model_arrays(tmp_path / "b")
    assert want.keys() == got.keys() and meta_a["epoch"] == meta_b["epoch"] == 4
    for k in want:
        assert want[k].tobytes() == got[k].tobytes(), k
    assert meta_a["dropout_streams"] == meta_b["dropout_streams"]
    ha = json.loads((tmp_path / "a" / "history.json").read_text())
    hb = json.loads((tmp_path / "b" / "history.json").read_text())
    assert ha["epochs"] == hb["epochs"] == [0, 1, 2, 3]
    assert ha["history"]["loss"] == hb["history"]["loss"]
    ma = json.loads((tmp_path / "a" / "metrics.json").read_text())["test"]
    mb = json.loads((tmp_path / "b" / "metrics.json").read_text())["test"]
    assert ma == mb


def test_cli_resume_refusals_are_one_line(tmp_path, capsys):
    assert cli.main(["train", "--resume", str(tmp_path / "none"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["train", *ARGS, "--epochs", "1", "--output", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    before = (tmp_path / "r" / "checkpoint.npz").read_bytes()
    assert cli.main(["train", "--resume", str(tmp_path / "r"), "--hidden", "8",
                     "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "layout differs" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "r" / "checkpoint.npz").read_bytes() == before


# ------------------------------------------------------------------ stale temp files

def _temp(folder, name, age=0.0, stem="c.npz"):
    p = folder / f".{stem}.{name}.tmp"
    p.write_bytes(b"partial zip")
    t = time.time() - age
    os.utime(p, (t, t))
    return p


def test_the_next_save_removes_a_killed_saves_old_temp_files(tmp_path):
    path = tmp_path / "c.npz"
    stale = [_temp(tmp_path, n, age=3600) for n in ("ab12cd_e", "zzzzzzzz")]
    young = _temp(tmp_path, "y0ung123", age=0)  # maybe a writer not yet holding its lock
    others = [_temp(tmp_path, "ab12cd_e", age=3600, stem="other.npz"),  # another checkpoint
              _temp(tmp_path, "toolongname", age=3600),  # not mkstemp's pattern
              tmp_path / "c.npz.ab12cd_e.tmp"]  # not hidden: not ours
    others[-1].write_bytes(b"x")
    os.utime(others[-1], (time.time() - 3600,) * 2)
    save_checkpoint(path, {"w": np.ones(3)}, {"epoch": 1})
    assert not any(p.exists() for p in stale)
    assert young.exists() and all(p.exists() for p in others)
    assert load_checkpoint(path)[1] == {"epoch": 1}


LOCKER = r"""
import fcntl, sys, time
f = open(sys.argv[1], "rb")
fcntl.flock(f.fileno(), fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_live_writers_temp_file_is_never_removed(tmp_path):
    # Another process saving the same checkpoint holds an flock on its temp file for as
    # long as it writes: even an old one is left alone until that process is gone.
    path = tmp_path / "c.npz"
    live = _temp(tmp_path, "l1vewrtr", age=3600)
    proc = subprocess.Popen([sys.executable, "-c", LOCKER, str(live)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        save_checkpoint(path, {"w": np.ones(3)}, {"epoch": 1})
        assert live.exists()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert remove_stale_temp_files(path) == [live] and not live.exists()


KILLED_WRITER = r"""
import sys, numpy as np
from fastoptim.checkpoint import save_checkpoint
k = 0
while True:
    save_checkpoint(sys.argv[1], {"w": np.full((1024, 1024), k, np.float32)}, {"epoch": k})
    k += 1
    print(k, flush=True)
"""


def test_temp_files_of_sigkilled_saves_are_cleaned_up(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"w": np.zeros(1)}, {"epoch": 0})
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)],
                                stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()
        time.sleep(0.01)
        proc.kill()
        proc.wait()
        proc.stdout.close()
    leftovers = list(tmp_path.glob(".c.npz.*.tmp"))
    for p in leftovers:  # as if the next save came a while later
        os.utime(p, (time.time() - 3600,) * 2)
    save_checkpoint(path, {"w": np.ones(1)}, {"epoch": 9})
    assert list(tmp_path.glob(".c.npz.*.tmp")) == []
    assert load_checkpoint(path)[1] == {"epoch": 9}


def _fit_with_monitors(digits, tmp_path, epochs, resume=None, lr=0.5):
    """A fit whose early stopping and plateau callbacks act within 8 epochs (a high lr and
    a small validation split make val_loss wander)."""
    X, y = digits
    model, opt = _cli_model()
    for g in opt.param_groups:
        g["lr"] = lr
    stop = train.EarlyStopping("val_loss", patience=2, restore_best_weights=True)
    plateau = train.ReduceLROnPlateau("val_loss", factor=0.5, patience=0)
    ckpt = train.ModelCheckpoint(tmp_path / "c-{epoch}.npz")
    hist = train.fit(model, X[:400], y[:400], loss="cross_entropy", optimizer=opt,
                     epochs=epochs, batch_size=64, verbose=False, seed=0,
                     validation_data=(X[400:600], y[400:600]),
                     callbacks=[ckpt, stop, plateau], resume_from=resume)
    return model, opt, stop, plateau, hist


def test_resume_continues_early_stopping_and_plateau_exactly(digits, tmp_path):
    full = tmp_path / "full"
    part = tmp_path / "part"
    full.mkdir()
    part.mkdir()
    m1, o1, s1, p1, h1 = _fit_with_monitors(digits, full, 30)
    assert s1.stopped_epoch is not None and s1.stopped_epoch >= 3  # it stopped early
    assert p1.plateau.lr < 1.0  # and the plateau cut the lr on the way
    k = s1.best_epoch + 1  # resume after the best epoch: the wait counter must carry on
    _fit_with_monitors(digits, part, k)
    m2, o2, s2, p2, h2 = _fit_with_monitors(digits, part, 30, resume=part / f"c-{k}.npz")
    assert s2.stopped_epoch == s1.stopped_epoch and s2.best_epoch == s1.best_epoch
    assert p2.plateau.lr == p1.plateau.lr and s2.best == s1.best
    assert h2["val_loss"] == h1["val_loss"]
    assert _snapshot(m2, o2) == _snapshot(m1, o1)  # restored best weights, same optimizer


def test_a_bad_callback_state_is_refused_before_anything_changes(digits, tmp_path):
    _fit_with_monitors(digits, tmp_path, 2)
    arrays, meta = load_checkpoint(tmp_path / "c-2.npz")
    skel = meta["callbacks"]
    for name, st in skel:
        if name == "EarlyStopping":
            st["__dict__"] = [kv if kv[0] != "wait" else ["wait", "two"]
                              for kv in st["__dict__"]]
    bad = tmp_path / "bad.npz"
    save_checkpoint(bad, arrays, meta)
    model, opt = _cli_model()
    before = _snapshot(model, opt)
    stop = train.EarlyStopping("val_loss", patience=2)
    X, y = digits
    with pytest.raises(CheckpointError, match="EarlyStopping callback's state: wait"):
        train.fit(model, X[:400], y[:400], loss="cross_entropy", optimizer=opt, epochs=4,
                  batch_size=64, verbose=False, seed=0, callbacks=[stop],
                  validation_data=(X[400:600], y[400:600]), resume_from=bad)
    assert _snapshot(model, opt) == before
