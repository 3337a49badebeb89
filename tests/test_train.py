"""The training loop and `fastoptim train`: accuracy on real data, determinism, exact
resume, callbacks, CLI errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from fastoptim import cli, data, nn, optim, schedules, train
from fastoptim.checkpoint import CheckpointError

HAVE_FASHION = os.path.isdir(data.FASHION_MNIST_DIR)
needs_fashion = pytest.mark.skipif(not HAVE_FASHION and os.environ.get("CI") != "true",
                                   reason="apt-get install dataset-fashion-mnist")


@pytest.fixture(scope="module")
def digits():
    ds = data.load("digits")
    st = data.Standardizer().fit(ds.X_train)
    return st.transform(ds.X_train), ds.y_train, st.transform(ds.X_test), ds.y_test


def make(seed=0, dropout=0.0, lr=1e-3):
    layers = [nn.Dense(64, 32, "relu")]
    if dropout:
        layers.append(nn.Dropout(dropout))
    model = nn.Sequential(*layers, nn.Dense(32, 10), seed=seed)
    return model, optim.Adam(model.parameters(), lr=lr)


def test_cli_default_run_reaches_96_percent(tmp_path, capsys):
    assert cli.main(["train", "--output", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "metrics.json").read_text())["test"]
    assert result["accuracy"] >= 0.96
    assert "confusion matrix" in out and "f1 (macro)" in out
    cm = np.array(result["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == result["n_test"]
    assert np.trace(cm) / cm.sum() == pytest.approx(result["accuracy"])
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["epochs"]) == 30 and "val_loss" in history["history"]
    assert (tmp_path / "checkpoint.npz").is_file() and (tmp_path / "curves.png").is_file()


def test_fit_is_deterministic(digits):
    X, y, Xv, yv = digits
    runs = []
    for _ in range(2):
        model, opt = make(dropout=0.2)
        h = train.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=3,
                      batch_size=64, seed=5, validation_data=(Xv, yv), verbose=False)
        runs.append((h["loss"], h["val_loss"], model.flat_parameters().copy()))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    assert runs[0][2].tobytes() == runs[1][2].tobytes()


def test_resume_2_plus_2_equals_4(digits, tmp_path):
    """Model, optimizer state, schedule position and dropout stream all resume exactly."""
    X, y, _, _ = digits
    kw = dict(loss="cross_entropy", batch_size=50, seed=3, verbose=False,
              schedule=schedules.cosine(3e-3, total_steps=4 * 29))
    model, opt = make(dropout=0.3)
    full = train.fit(model, X, y, optimizer=opt, epochs=4, **kw)
    want = model.flat_parameters().copy()

    ckpt = tmp_path / "ck-{epoch}.npz"
    m1, o1 = make(dropout=0.3)
    train.fit(m1, X, y, optimizer=o1, epochs=2, callbacks=[train.ModelCheckpoint(ckpt)], **kw)
    m2, o2 = make(seed=99, dropout=0.3)  # a fresh process would start from other weights
    resumed = train.fit(m2, X, y, optimizer=o2, epochs=4,
                        resume_from=tmp_path / "ck-2.npz", **kw)
    assert m2.flat_parameters().tobytes() == want.tobytes()
    assert resumed["loss"] == full["loss"] and resumed.epochs == [0, 1, 2, 3]
    assert o2.state_dict()["state"][0]["step"] == o1.state_dict()["state"][0]["step"] * 2


def test_resume_refuses_damaged_checkpoint(digits, tmp_path):
    X, y, _, _ = digits
    model, opt = make()
    path = tmp_path / "c.npz"
    train.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=1, verbose=False,
              callbacks=[train.ModelCheckpoint(path)])
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError):
        train.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=2, verbose=False,
                  resume_from=path)


def test_resume_refuses_other_dropout_layout(digits, tmp_path):
    X, y, _, _ = digits
    model, opt = make(dropout=0.2)
    path = tmp_path / "c.npz"
    train.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=1, verbose=False,
              callbacks=[train.ModelCheckpoint(path)])
    plain, plain_opt = make()
    before = plain.flat_parameters().copy()
    with pytest.raises(CheckpointError, match="dropout"):
        train.fit(plain, X, y, loss="cross_entropy", optimizer=plain_opt, epochs=2,
                  verbose=False, resume_from=path)
    assert plain.flat_parameters().tobytes() == before.tobytes()  # nothing loaded


def test_early_stopping_restores_best(digits):
    X, y, Xv, yv = digits
    model, opt = make(lr=0.05)  # a high lr: validation loss soon stops improving
    stop = train.EarlyStopping("val_loss", patience=1, restore_best_weights=True)
    h = train.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=60, batch_size=16,
                  seed=0, validation_data=(Xv, yv), callbacks=[stop], verbose=False)
    assert stop.stopped_epoch is not None and len(h.epochs) < 60
    best = min(h["val_loss"])
    loss = train.evaluate(model, Xv, yv, loss="cross_entropy")["loss"]
    assert loss == pytest.approx(best, rel=1e-5)


def test_full_batch_and_views_not_copies(digits):
    X, y, _, _ = digits
    seen = []

    class Spy(nn.Sequential):
        def forward(self, x, training=False):
            seen.append(x)
            return super().forward(x, training)

    model = Spy(nn.Dense(64, 10), seed=0)
    opt = optim.SGD(model.parameters(), lr=0.1)
    h = train.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=3, batch_size=None,
                  verbose=False, metrics=())
    assert all(np.shares_memory(x, X) for x in seen)  # full batch: X itself
    assert h["loss"][2] < h["loss"][0]
    seen.clear()
    train.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=2, batch_size=100,
              verbose=False, metrics=(), seed=1)
    bases = {id(x.base if x.base is not None else x) for x in seen}
    assert len(bases) == 1  # every shuffled batch is a view of one reused buffer


def test_loggers_and_plateau(digits, tmp_path):
    X, y, Xv, yv = digits
    model, opt = make()
    plateau = train.ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=10.0)
    train.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=3, verbose=False,
              validation_data=(Xv, yv),
              callbacks=[train.CSVLogger(tmp_path / "log.csv"),
                         train.JSONLinesLogger(tmp_path / "log.jsonl"), plateau])
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,loss,accuracy,val_loss,val_accuracy,lr") and len(rows) == 4
    lines = [json.loads(s) for s in (tmp_path / "log.jsonl").read_text().splitlines()]
    # min_delta=10 makes every epoch after the first a stall: the lr halves after epochs
    # 1 and 2 (the loggers run first, so they record the lr each epoch trained with).
    assert [r["lr"] for r in lines] == [1e-3, 1e-3, 5e-4]
    assert opt.param_groups[0]["lr"] == 2.5e-4


def test_fit_rejects_bad_arguments(digits):
    X, y, _, _ = digits
    model, opt = make()
    with pytest.raises(ValueError, match="batch_size"):
        train.fit(model, X, y, loss="cross_entropy", optimizer=opt, batch_size=0)
    with pytest.raises(ValueError, match="samples"):
        train.fit(model, X, y[:-1], loss="cross_entropy", optimizer=opt)
    with pytest.raises(ValueError, match="unknown loss"):
        train.fit(model, X, y, loss="hinge", optimizer=opt)
    with pytest.raises(ValueError, match="validation_split"):
        train.fit(model, X, y, loss="cross_entropy", optimizer=opt, validation_split=1.0)


@pytest.mark.parametrize("argv,fragment", [
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--dataset", "/nonexistent/folder"], "unknown dataset"),
    (["--dropout", "1.5"], "--dropout must be in"),
    (["--batch-size", "zero"], "positive integer or 'full'"),
    (["--optimizer", "nonesuch"], "invalid choice"),
    (["--nesterov"], "--nesterov needs momentum > 0"),
])
def test_cli_bad_options_one_line_exit_2(tmp_path, capsys, argv, fragment):
    with pytest.raises(SystemExit) if "invalid" in fragment or "positive" in fragment \
            else _no_raise() as exc:
        code = cli.main(["train", "--output", str(tmp_path), "--quiet", *argv])
    code = exc.value.code if hasattr(exc, "value") and exc.value is not None else code
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_cli_empty_idx_folder(tmp_path, capsys):
    (tmp_path / "idx").mkdir()
    assert cli.main(["train", "--dataset", str(tmp_path / "idx"), "--output",
                     str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and len(err.strip().splitlines()) == 1


def test_cli_config_file(tmp_path, capsys):
    cfg = tmp_path / "best.json"
    cfg.write_text(json.dumps({"params": {"lr": 0.003, "hidden": [16], "epochs": 2}}))
    assert cli.main(["train", "--config", str(cfg), "--epochs", "3", "--output",
                     str(tmp_path / "o"), "--quiet"]) == 0
    options = json.loads((tmp_path / "o" / "metrics.json").read_text())["options"]
    assert options["lr"] == 0.003 and options["hidden"] == [16] and options["epochs"] == 3
    cfg.write_text(json.dumps({"learning_rate": 1}))
    assert cli.main(["train", "--config", str(cfg), "--output", str(tmp_path / "o")]) == 2
    assert "unknown option 'learning_rate'" in capsys.readouterr().err


@needs_fashion
def test_fashion_mnist_88_percent_in_10_epochs(tmp_path):
    out = tmp_path / "fm"
    assert cli.main(["train", "--dataset", "fashion-mnist", "--hidden", "128", "--epochs",
                     "10", "--batch-size", "128", "--validation-split", "0", "--threads", "1",
                     "--output", str(out), "--quiet"]) == 0
    result = json.loads((out / "metrics.json").read_text())["test"]
    assert result["accuracy"] >= 0.88 and result["n_test"] == 10000
