"""Every rejected option or config value of `fastoptim train` and `fastoptim search` is one
line on stderr, no traceback, exit status 2; a closed stdout ends quietly. Each case runs
the real command in a subprocess."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from fastoptim.config import TrainConfig

CMD = [sys.executable, "-m", "fastoptim.cli"]

# (arguments, fragment of the one error line)
TRAIN = [
    (["--beta1", "1.0"], "--beta1 must be in [0, 1), got 1.0"),
    (["--beta2", "-0.1"], "--beta2 must be in [0, 1), got -0.1"),
    (["--eps", "-1"], "--eps must be a finite number >= 0"),
    (["--optimizer", "sgd", "--momentum", "-0.5"], "--momentum must be a finite number >= 0"),
    (["--lr", "0"], "--lr must be a finite number > 0"),
    (["--lr", "nan"], "--lr must be a finite number > 0"),
    (["--lr", "inf"], "--lr must be a finite number > 0"),
    (["--lr", "fast"], "argument --lr: invalid float value"),
    (["--weight-decay=-1e-4"], "--weight-decay must be"),
    (["--l1", "-1"], "--l1 must be"),
    (["--dropout", "1.0"], "--dropout must be in [0, 1)"),
    (["--validation-split", "1"], "--validation-split must be in [0, 1)"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--epochs", "3.5"], "argument --epochs: invalid int value"),
    (["--batch-size", "0"], "positive integer or 'full'"),
    (["--hidden", "64", "0"], "--hidden sizes must be >= 1"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--early-stopping", "-1"], "--early-stopping must be >= 0"),
    (["--early-stopping", "3", "--validation-split", "0"], "--early-stopping needs"),
    (["--warmup-epochs", "-1"], "--warmup-epochs must be"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--nesterov"], "--nesterov needs momentum > 0"),
    (["--optimizer", "newton"], "invalid choice"),
    (["--schedule", "linear"], "invalid choice"),
    (["--dataset", "/nonexistent/folder"], "unknown dataset"),
    (["--resume", "/nonexistent/run"], "--resume /nonexistent/run: no checkpoint.npz"),
    (["--bogus"], "unrecognized arguments"),
]

# (config file content, fragment)
CONFIGS = [
    ('{"lr": "fast"}', "lr must be a number, got 'fast'"),
    ('{"batch_size": "half"}', "batch_size must be a positive integer or 'full'"),
    ('{"optimizer": "newton"}', "optimizer must be one of"),
    ('{"hidden": 64}', "hidden must be a list of layer sizes, got 64"),
    ('{"hidden": [64, "x"]}', "hidden must be a list of integer layer sizes"),
    ('{"epochs": "3"}', "epochs must be an integer, got '3'"),
    ('{"dropout": null}', "dropout must be a number, got None"),
    ('{"nesterov": "yes"}', "nesterov must be true or false"),
    ('{"beta1": 1.5}', "beta1 must be in [0, 1), got 1.5"),
    ('{"bogus": 1}', "unknown option 'bogus'"),
    ('[1, 2]', "expected a JSON object of options"),
    ('{"lr": ', "Expecting value"),
]

SEARCH = [
    (["--grid", "batch-size=0,32"], "batch_size must be a positive integer or 'full'"),
    (["--grid", "lr=fast"], "lr: could not convert"),
    (["--grid", "lr=-1,1e-3"], "lr must be a finite number > 0"),
    (["--grid", "beta1=0.9,1.0"], "beta1 must be in [0, 1)"),
    (["--grid", "optimizer=adam,newton"], "'newton' is not one of"),
    (["--grid", "hidden=64x0"], "hidden sizes must be >= 1"),
    (["--grid", "nesterov=maybe"], "nesterov: expected true/false"),
    (["--grid", "bogus=1"], "unknown training option"),
    (["--grid", "lr"], "expected NAME=VALUES"),
    (["--random", "lr=loguniform:0:1"], "0 < low < high"),
    (["--grid", "lr=1e-3", "--epochs", "0"], "epochs must be >= 1"),
    (["--grid", "lr=1e-3", "--validation-split", "0"], "validation_split must be > 0"),
    (["--grid", "lr=1e-3", "--repeats", "0"], "repeats must be >= 1"),
    ([], "nothing to search"),
]

BENCH = [
    (["--threads", "0"], "threads must be a non-empty list of numbers >= 1"),
    (["--threads", ","], "threads must be a non-empty list"),
    (["--kernels", "bogus"], "unknown kernel(s) ['bogus']"),
    (["--repeats", "0"], "repeats must be >= 1"),
    (["--sizes", "0"], "sizes must be"),
    (["--sizes", "abc"], "argument --sizes"),
    (["--tensors", "0"], "tensors must be"),
    (["--dtypes", "float16"], "dtypes must be among"),
    (["--simd", "bogus"], "unknown SIMD target"),
]


def _run(args, cwd, **kw):
    return subprocess.run([*CMD, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, **kw)


def _assert_one_line(proc, fragment):
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err)
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    assert fragment in err, err


@pytest.mark.parametrize("args,fragment", TRAIN, ids=[" ".join(a) for a, _ in TRAIN])
def test_train_option_errors(tmp_path, args, fragment):
    _assert_one_line(_run(["train", "--quiet", "--output", "o", *args], tmp_path), fragment)


@pytest.mark.parametrize("content,fragment", CONFIGS, ids=[c for c, _ in CONFIGS])
def test_train_config_file_errors(tmp_path, content, fragment):
    (tmp_path / "c.json").write_text(content)
    proc = _run(["train", "--quiet", "--output", "o", "--config", "c.json"], tmp_path)
    _assert_one_line(proc, fragment)
    assert "--config c.json" in proc.stderr


@pytest.mark.parametrize("args,fragment", SEARCH, ids=[" ".join(a) or "none" for a, _ in SEARCH])
def test_search_errors(tmp_path, args, fragment):
    _assert_one_line(_run(["search", "--quiet", "--output", "o", *args], tmp_path), fragment)


@pytest.mark.parametrize("args,fragment", BENCH, ids=[" ".join(a) for a, _ in BENCH])
def test_bench_errors(tmp_path, args, fragment):
    _assert_one_line(_run(["bench", "--out", "o", *args], tmp_path), fragment)


def test_every_option_the_validator_rejects_is_one_line_on_the_command_line(tmp_path):
    # For each TrainConfig field, a value of the right type that the validator rejects.
    bad = {"validation_split": "-0.5", "dropout": "-0.1", "momentum": "-1", "beta1": "-1",
           "beta2": "1", "eps": "inf", "weight_decay": "nan", "l1": "inf", "epochs": "-3",
           "lr": "-1", "hidden": "-4", "batch_size": "-2", "threads": "-1",
           "early_stopping": "-2", "warmup_epochs": "nan", "seed": "-7"}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    # the rest are choices (argparse), a flag, or free text
    assert names - set(bad) == {"dataset", "activation", "dtype", "optimizer", "schedule",
                                "nesterov", "state_dtype"}
    for name, value in bad.items():
        option = "--" + name.replace("_", "-")
        proc = _run(["train", "--quiet", "--output", "o", f"{option}={value}"], tmp_path)
        _assert_one_line(proc, option if name != "batch_size" else "positive integer")


def test_config_batch_size_full_means_full_batch():
    assert TrainConfig.from_dict({"batch-size": "full"}).batch_size is None
    assert TrainConfig.from_dict({"batch_size": None}).batch_size is None


def test_help_prints_each_default_once(tmp_path):
    out = _run(["train", "--help"], tmp_path).stdout
    lines = " ".join(out.split())
    assert lines.count("(default: the optimizer's own: 0.999; lion 0.99)") == 1
    assert "default 0.999" not in lines and "(default: 0.999)" not in lines
    assert lines.count("(default: 30)") == 1 and "(default: 256)" in lines
    assert "(default: None)" not in lines and "(default: False)" not in lines
    assert "probability after each hidden layer (default: 0.0)" in lines  # zero is shown
    assert lines.count("(default:") == out.count("(default:")  # none split across lines


@pytest.mark.parametrize("command", [["train", "--hidden", "8", "--epochs", "1"],
                                     ["search", "--grid", "lr=1e-3,3e-3", "--epochs", "1",
                                      "--hidden", "8"]], ids=["train", "search"])
def test_a_closed_stdout_ends_quietly(tmp_path, command):
    # The reader is gone before the command prints anything: every write to stdout fails
    # (EPIPE). The command stops without a traceback, exit status 1.
    proc = subprocess.Popen([*CMD, *command, "--output", "o"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    proc.wait(timeout=120)
    assert err == "" and proc.returncode == 1


def test_shell_pipe_into_head(tmp_path):
    cmd = " ".join(CMD) + " train --hidden 8 --epochs 1 --output o | head -4"
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert len(proc.stdout.splitlines()) == 4 and proc.stderr == ""
    assert proc.stdout.startswith("held-out digits")


def test_search_config_values_are_checked(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"dropout": 2.0}))
    proc = _run(["search", "--grid", "lr=1e-3", "--config", "c.json", "--output", "o"],
                tmp_path)
    _assert_one_line(proc, "dropout must be in [0, 1)")
