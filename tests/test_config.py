"""TrainConfig: one set of defaults and checks behind `fastoptim train`, `search` and the
scikit-learn estimators; it builds the same model, optimizer and schedule for all three."""

from __future__ import annotations

import argparse
import dataclasses
import math

import numpy as np
import pytest
from fastoptim import optim, schedules
from fastoptim import train_command as tc
from fastoptim.config import ConfigError, TrainConfig, check_option


def test_command_line_defaults_are_the_dataclass_defaults():
    p = argparse.ArgumentParser()
    tc.add_arguments(p)
    parsed = vars(p.parse_args([]))
    assert {k: parsed[k] for k in TrainConfig.field_names()} == TrainConfig().to_dict()
    assert tc.config_from_args(p.parse_args([])) == TrainConfig()
    assert all(f.metadata.get("help") for f in dataclasses.fields(TrainConfig))


def test_from_dict_accepts_cli_spellings_and_rejects_unknown_names():
    cfg = TrainConfig.from_dict({"batch-size": "full", "weight-decay": 1e-4, "hidden": [8, 4]})
    assert cfg.batch_size is None and cfg.weight_decay == 1e-4 and cfg.hidden == [8, 4]
    assert cfg.replace(epochs=3).epochs == 3 and cfg.epochs == 30
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({"learning_rate": 1e-3})
    assert e.value.field == "learning_rate" and "not a training option" in str(e.value)


@pytest.mark.parametrize("field,value,detail", [
    ("lr", -1.0, "must be a finite number > 0"), ("lr", math.nan, "finite number > 0"),
    ("lr", "fast", "must be a number"), ("beta1", 1.0, "must be in [0, 1)"),
    ("beta2", -0.1, "must be in [0, 1)"), ("eps", -1.0, "finite number >= 0"),
    ("momentum", -0.5, "finite number >= 0"), ("epochs", "3", "must be an integer"),
    ("epochs", True, "must be an integer"), ("epochs", 0, "must be >= 1"),
    ("hidden", 64, "must be a list of layer sizes"), ("hidden", [8, 0], "sizes must be >= 1"),
    ("dropout", None, "must be a number"), ("optimizer", "newton", "must be one of"),
    ("batch_size", 0, "positive integer"), ("batch_size", 2.5, "positive integer"),
    ("nesterov", "yes", "true or false"), ("seed", -1, "must be >= 0"),
])
def test_bad_values_name_the_field(field, value, detail):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**{field: value})
    assert e.value.field == field and detail in e.value.detail
    assert isinstance(e.value, ValueError)
    with pytest.raises(ConfigError):
        check_option(field, value)


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="nesterov needs momentum > 0"):
        TrainConfig(nesterov=True)
    assert TrainConfig(nesterov=True, momentum=0.9, optimizer="sgd").nesterov
    with pytest.raises(ConfigError, match="early_stopping needs a validation split"):
        TrainConfig(early_stopping=3, validation_split=0.0)
    # check_option judges one value alone: nesterov=True is fine until combined.
    assert check_option("nesterov", True) is True


def test_build_model_optimizer_and_schedule():
    cfg = TrainConfig(hidden=[12, 7], dropout=0.25, dtype="float64", optimizer="sgd", lr=0.1,
                      momentum=0.9, weight_decay=1e-3, schedule="cosine", epochs=4)
    model, opt, lr = cfg.build(5, 3)
    assert [type(layer).__name__ for layer in model.layers] == \
        ["Dense", "Dropout", "Dense", "Dropout", "Dense"]
    assert model.dtype == np.float64 and lr == 0.1
    assert isinstance(opt, optim.SGD)
    weights, biases = opt.param_groups
    assert weights["weight_decay"] == 1e-3 and biases["weight_decay"] == 0.0
    assert weights["momentum"] == 0.9 and len(weights["params"]) == 3
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "2.weight", "4.weight", "0.bias", "2.bias", "4.bias"]
    sched = cfg.build_schedule(lr, steps_per_epoch=10)
    ref = schedules.cosine(0.1, total_steps=40)
    assert [sched(s) for s in (0, 13, 39)] == [ref(s) for s in (0, 13, 39)]
    assert TrainConfig().build_schedule(1e-3, 10) is None  # constant: the optimizer's lr
    assert TrainConfig(optimizer="adagrad").learning_rate == 1e-2


def test_the_estimator_builds_what_the_cli_builds():
    from fastoptim.sklearn import MLPClassifier

    est = MLPClassifier(hidden_layer_sizes=(9,), optimizer="adamw", lr=3e-3,
                        betas=(0.8, 0.99), weight_decay=0.01, epochs=5, batch_size=None)
    cfg = est._options(seed=4)
    assert cfg == TrainConfig(hidden=[9], optimizer="adamw", lr=3e-3, beta1=0.8, beta2=0.99,
                              weight_decay=0.01, epochs=5, batch_size=None,
                              validation_split=0.0, seed=4)
    assert tc.as_config(argparse.Namespace(**{**cfg.to_dict(), "config": None})) == cfg


def test_an_option_typed_at_its_default_still_wins_over_the_config_file(tmp_path,
                                                                        monkeypatch):
    from fastoptim import cli

    (tmp_path / "c.json").write_text('{"params": {"dropout": 0.2, "epochs": 5, "lr": 0.01}}')
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--config", str(tmp_path / "c.json"), "--dropout", "0",
                              "--epochs", "30"])
    cfg = tc.config_from_args(args)
    assert (cfg.dropout, cfg.epochs, cfg.lr) == (0.0, 30, 0.01)
    # the same for a resumed run's saved options
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"params": {"dropout": 0.2, "seed": 4}}')
    args = parser.parse_args(["train", "--resume", str(tmp_path / "run"), "--dropout", "0.0"])
    cfg = tc.config_from_args(args)
    assert (cfg.dropout, cfg.seed) == (0.0, 4)
    # search reads the same way
    from fastoptim import search

    captured = {}
    args = parser.parse_args(["search", "--grid", "lr=1e-3", "--config",
                              str(tmp_path / "c.json"), "--dropout", "0", "--quiet",
                              "--output", str(tmp_path / "s")])
    real = search.run_search
    monkeypatch.setattr(search, "run_search",
                        lambda space, **kw: (captured.update(kw), real({}, **kw))[1])
    assert args.func(args) == 2  # run_search({}) refuses an empty space: nothing trains
    assert captured["fixed"]["dropout"] == 0 and captured["fixed"]["epochs"] == 5
