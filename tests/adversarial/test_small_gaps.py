"""Small gaps (issue 33 "Trust II", item 7): duplicate YAML keys, the timestamp bound, a dataset
too small to split, and the message for a size option below 1."""

from __future__ import annotations

import pytest

from crossrec.data.readers import read_interactions
from crossrec.data.schema import ColumnMap, DataError
from crossrec.typed import ConfigError


def test_a_repeated_yaml_key_names_the_file_line_and_key(tmp_path):
    from crossrec.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("data:\n  bundle: a\n  sep: ','\n  bundle: b\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:4: duplicate key 'bundle' \(first at line 2\)"):
        load_config(path)
    path.write_text("model: {name: mf, dim: 8, dim: 16}\n")  # flow style, one line
    with pytest.raises(ConfigError, match=r"c\.yaml:1: duplicate key 'dim'"):
        load_config(path)


def test_a_repeated_key_in_an_experiment_spec(tmp_path):
    from crossrec.experiment.spec import load_experiment

    path = tmp_path / "e.yaml"
    path.write_text("seeds: [0]\nmodels:\n  - name: mf\nseeds: [1]\n")
    with pytest.raises(ConfigError, match=r"e\.yaml:4: duplicate key 'seeds'"):
        load_experiment(path)


def test_timestamps_of_the_whole_year_2100_are_accepted(tmp_path):
    # README: timestamps outside the years 1970..2100 (both included) are refused
    path = tmp_path / "a.csv"
    for stamp in ("2100-12-31", "2100-12-31T23:59:59", "4133980799", "2100-06-01", "1970-01-01", "0"):
        path.write_text(f"user_id,item_id,category,ts\nu1,i1,b,{stamp}\n")
        assert read_interactions(path, ColumnMap(timestamp="ts")).height == 1, stamp
    for stamp in ("2101-01-01", "4133980800", "-1", "1969-12-31T23:59:59"):
        path.write_text(f"user_id,item_id,category,ts\nu1,i1,b,{stamp}\n")
        with pytest.raises(DataError, match="between 1970 and 2100"):
            read_interactions(path, ColumnMap(timestamp="ts"))


@pytest.mark.parametrize("split", ["leave_last_out", "random"])
def test_a_dataset_too_small_to_split_says_so_in_one_line(tmp_path, split):
    from typer.testing import CliRunner

    from crossrec.cli import app

    data = tmp_path / "tiny.csv"
    data.write_text("user_id,item_id,category\nu1,i1,A\nu2,i2,A\nu3,i1,A\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  interactions: {data}\n  bundle: {tmp_path / 'b'}\nprepare:\n  split: {split}\n")
    r = CliRunner().invoke(app, ["prepare", str(cfg)])
    text = r.output  # stdout and stderr together
    assert r.exit_code == 2, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and len(lines[0]) <= 300, text
    assert "too little data to split" in lines[0] and "3 interactions of 3 users" in lines[0], lines[0]
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("option", ["dim", "k"])
def test_a_size_below_one_says_an_integer_at_least_one(option):
    from crossrec.models.base import config_from_dict

    name = "mf" if option == "dim" else "itemknn"
    with pytest.raises(ConfigError, match=rf"model\.{option}=-3; expected an integer >= 1"):
        config_from_dict(name, {option: -3})


def test_dim_below_one_from_the_command_line():
    from crossrec.config import load_config

    with pytest.raises(ConfigError, match=r"model\.dim=-3; expected an integer >= 1"):
        load_config(None, ["--model.dim=-3"])


@pytest.mark.parametrize(
    "override",
    [
        "--serve.port=99999",
        "--serve.port=0",
        "--serve.batch_wait_ms=inf",
        "--serve.batch_wait_ms=1e13",
        "--serve.batch_wait_ms=nan",
        "--serve.max_body_bytes=0",
    ],
)
def test_serve_settings_are_checked_when_the_config_loads(override):
    """A port out of range, a batch wait that kills the batcher's worker: refused before any work."""
    from crossrec.config import load_config
    from crossrec.typed import ConfigError

    with pytest.raises(ConfigError, match=override.split("=")[0].lstrip("-").replace(".", r"\.")):
        load_config(None, [override])


def test_a_config_that_is_a_device_is_refused_without_reading_it(tmp_path):
    from crossrec.typed import ConfigError, read_config_file

    link = tmp_path / "zero.yaml"
    link.symlink_to("/dev/zero")
    with pytest.raises(ConfigError, match="not a regular file"):
        read_config_file(link)


def test_a_yaml_merge_key_is_refused(tmp_path):
    from crossrec.typed import ConfigError, read_config_file

    cfg = tmp_path / "m.yaml"
    cfg.write_text("train:\n  <<: {epochs: 1}\n")
    with pytest.raises(ConfigError, match=r"m\.yaml:2: YAML merge keys"):
        read_config_file(cfg)


def test_an_error_line_prints_names_as_they_are(tmp_path):
    """rich would turn `:-1:` into an emoji: names from the user or the data are printed as text."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "crossrec.cli", "train", ":-1:.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == 2 and ":-1:.yaml" in r.stderr, r.stderr
