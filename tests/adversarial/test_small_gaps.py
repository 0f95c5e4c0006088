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
