"""Typed configs: YAML + dotted overrides, unknown keys and wrong types are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossrec.config import RunConfig, load_config, parse_overrides, to_dict
from crossrec.models.base import config_from_dict
from crossrec.models.mf import MFConfig
from crossrec.typed import ConfigError


def test_defaults_without_a_file():
    cfg = load_config()
    assert isinstance(cfg, RunConfig) and cfg.model.name == "mf" and cfg.train.lr == 1e-3


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 0.01\n  epochs: 3\nmodel:\n  name: mf\n  dim: 16\neval:\n  ks: [5, 10]\n")
    cfg = load_config(p, ["--train.lr=3e-4", "--model.dim", "128", "--eval.ks=[1,2]"])
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.train.epochs == 3
    assert cfg.model.params == {"dim": 128}
    assert cfg.eval.ks == (1, 2)


def test_the_shipped_presets_load():
    for name in ("quickstart", "amazon-arts-office", "anime-mal"):
        cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml")  # from any cwd
        config_from_dict(cfg.model.name, cfg.model.params)


@pytest.mark.parametrize(
    "override, message",
    [
        ("--train.lrr=1", "train.lrr"),
        ("--trian.lr=1", "trian"),
        ("--train.epochs=abc", "expected an integer"),
        ("--train.epochs=1.5", "expected an integer"),
        ("--prepare.valid=maybe", "true/false"),
        ("--eval.ks=[a]", "expected an integer"),
    ],
)
def test_unknown_keys_and_wrong_types_are_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_model_options_checked_against_the_model_dataclass():
    with pytest.raises(ConfigError, match="dimm"):  # checked when the config loads
        load_config(None, ["--model.name=mf", "--model.dimm=3"])
    with pytest.raises(ConfigError, match="dimm"):
        config_from_dict("mf", {"dimm": 3})
    assert config_from_dict("mf", {"dim": 8}) == MFConfig(dim=8)


def test_overrides_are_parsed_safely_not_evaluated():
    assert parse_overrides(["--a.b=__import__('os')"]) == {"a": {"b": "__import__('os')"}}
    with pytest.raises(ConfigError):
        parse_overrides(["train.lr=1"])


def test_to_dict_round_trips_through_load(tmp_path):
    import yaml

    cfg = load_config(None, ["--model.dim=12", "--train.epochs=2"])
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(to_dict(cfg)))
    assert load_config(p) == cfg


def test_switching_model_drops_the_preset_options_of_the_other_model(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  name: mf\n  mode: single\n  dim: 128\n")
    cfg = load_config(p, ["--model.name=itemknn", "--model.k=50"])
    assert (cfg.model.name, cfg.model.mode, cfg.model.params) == ("itemknn", "single", {"k": 50})
    assert load_config(p, ["--model.dim=8"]).model.params == {"dim": 8}  # same model: options merge


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: __import__("crossrec.training.config", fromlist=["TrainConfig"]).TrainConfig(epochs=0),
            r"train\.epochs=0; expected an integer >= 1",
        ),
        (
            lambda: __import__("crossrec.config", fromlist=["ServeConfig"]).ServeConfig(port=70000),
            r"serve\.port=70000; expected a value <= 65535",
        ),
        (
            lambda: __import__("crossrec.data.config", fromlist=["PrepareConfig"]).PrepareConfig(test_ratio=1.0),
            r"prepare\.test_ratio=1\.0; expected a share in \[0, 1\)",
        ),
        (
            lambda: __import__("crossrec.models.mf", fromlist=["MFConfig"]).MFConfig(dim=0),
            r"dim=0; expected an integer >= 1",
        ),
    ],
)
def test_a_fields_range_is_declared_beside_it_and_holds_for_python_built_configs(build, message):
    """Ranges are declared in the field's annotation (typed.Bounds): a config built in Python is
    checked on construction as a YAML one is by from_dict."""
    from crossrec.typed import ConfigError

    with pytest.raises(ConfigError, match=message):
        build()
