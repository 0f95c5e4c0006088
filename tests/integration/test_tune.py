"""`crossrec tune`: search spaces, validation only, pruning, resume after a kill, best.yaml."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from crossrec.data.bundle import Bundle
from crossrec.experiment import load_experiment
from crossrec.experiment.space import parse_space, split_point
from crossrec.experiment.tune import TuneBudget, tune_experiment
from crossrec.typed import ConfigError

TRAIN = {"epochs": 3, "batch_size": 512, "lr": 0.01, "progress": False, "checkpoint": False}


def _experiment(out, bundle_root, models):
    return {
        "data": {"bundle": str(bundle_root)},
        "train": TRAIN,
        "eval": {"ks": [10]},
        "seeds": [0],
        "out": str(out),
        "models": models,
    }


def test_search_spaces_parse_and_bad_ones_name_the_key(tmp_path):
    space = parse_space(
        {"dim": [8, 16], "reg": {"low": 1e-6, "high": 1e-2, "log": True}, "history.length": {"low": 5, "high": 20}},
        "models[0]",
    )
    assert space["dim"].choices == (8, 16)
    assert space["reg"].log and not space["reg"].integer
    assert space["history.length"].integer
    assert split_point({"dim": 8, "train.lr": 0.1, "history.length": 5}) == (
        {"dim": 8, "history": {"length": 5}},
        {"lr": 0.1},
    )
    for bad, where in [
        ({"reg": {"low": 0, "high": 1, "log": True}}, "log: true needs low > 0"),
        ({"reg": {"low": 2, "high": 1}}, "above high"),
        ({"reg": {"low": 1}}, "needs both low and high"),
        ({"reg": "big"}, "expected a list"),
        ({"reg": {"low": 0.1, "high": 1, "step": 2}}, "unknown key"),
    ]:
        with pytest.raises(ConfigError, match=where):
            parse_space(bad, "models[0]")
    base = _experiment(tmp_path / "o", tmp_path / "b", [])
    with pytest.raises(ConfigError, match=r"models\[0\]\.search\.dimm"):
        load_experiment(data=base | {"models": [{"label": "a", "name": "mf", "search": {"dimm": [1, 2]}}]})
    with pytest.raises(ConfigError, match="grid and search"):
        load_experiment(
            data=base | {"models": [{"label": "a", "name": "mf", "grid": {"dim": [4]}, "search": {"dim": [4, 8]}}]}
        )


def test_tune_reads_validation_only_and_writes_a_usable_best_yaml(tiny_bundle, tmp_path, monkeypatch):
    seen: list[str] = []
    for name in ("split", "rows", "csr"):
        original = getattr(Bundle, name)

        def spy(self, split, *a, _original=original, **k):
            seen.extend([split] if isinstance(split, str) else list(split))
            return _original(self, split, *a, **k)

        monkeypatch.setattr(Bundle, name, spy)
    cfg = load_experiment(
        data=_experiment(
            tmp_path / "exp",
            tiny_bundle.root,
            [
                {"label": "pop", "name": "pop", "single_category": True},
                {
                    "label": "mf",
                    "name": "mf",
                    "dim": 8,
                    "search": {"dim": [8, 16], "train.lr": {"low": 0.001, "high": 0.05, "log": True}},
                },
                {"label": "knn", "name": "itemknn", "mode": "single"},  # the default space
            ],
        )
    )
    result = tune_experiment(cfg, TuneBudget(trials=3), tmp_path / "tune", bundle=tiny_bundle)
    assert "test" not in seen and "valid" in seen  # the test split was never read while tuning
    assert set(result["models"]) == {"mf", "knn"}  # pop has nothing to tune
    mf = result["models"]["mf"]
    assert len(mf["trials"]) == 3 and mf["best"]["value"] > 0
    assert {t["params"]["dim"] for t in mf["trials"]} <= {8, 16}
    best = max((t for t in mf["trials"] if t["state"] == "complete"), key=lambda t: t["value"])
    assert mf["best"]["params"] == best["params"]
    assert set(result["models"]["knn"]["space"]) == {"k", "shrink", "normalize_user"}
    assert not any((tmp_path / "tune" / "trials").rglob("model.safetensors"))  # trial artifacts are removed
    # best.yaml is an experiment with the best options filled in
    tuned = load_experiment(tmp_path / "tune" / "best.yaml")
    entry = {m.label: m for m in tuned.models}["mf"]
    assert entry.params["dim"] == best["params"]["dim"] and not entry.search
    assert entry.train["lr"] == pytest.approx(best["params"]["train.lr"])
    assert json.loads((tmp_path / "tune" / "tuning.json").read_text())["models"]["mf"]["best"] == mf["best"]
    assert "| mf | 3 (" in (tmp_path / "tune" / "tuning.md").read_text()
    # a rerun with the budget already spent adds no trial
    again = tune_experiment(cfg, TuneBudget(trials=3), tmp_path / "tune", bundle=tiny_bundle, only=["mf"])
    assert len(again["models"]["mf"]["trials"]) == 3


def test_pruning_reports_every_validation_and_stops_trailing_trials(tiny_bundle, tmp_path):
    cfg = load_experiment(
        data=_experiment(
            tmp_path / "exp",
            tiny_bundle.root,
            [
                {
                    "label": "mf",
                    "name": "mf",
                    "dim": 8,
                    "train": {"epochs": 5, "patience": 0},
                    "search": {"train.lr": {"low": 1e-5, "high": 0.05, "log": True}},
                }
            ],
        )
    )
    result = tune_experiment(cfg, TuneBudget(trials=8), tmp_path / "tune", bundle=tiny_bundle)
    trials = result["models"]["mf"]["trials"]
    assert all(len(t["curve"]) >= 1 for t in trials)  # each validation was reported
    complete = [t for t in trials if t["state"] == "complete"]
    assert all(len(t["curve"]) == 5 for t in complete)
    assert any(t["state"] == "pruned" for t in trials)  # lr ~1e-5 learns nothing in 5 epochs: pruned


def _states(db: Path) -> list[tuple[int, str]]:
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return list(con.execute("select number, state from trials order by number"))
    except sqlite3.Error:
        return []


def _reported(db, number: int) -> bool:
    """Whether trial `number` has reported a validation to Optuna: it is inside its training."""
    try:
        with sqlite3.connect(db, timeout=1) as con:
            q = "select count(*) from trial_intermediate_values v join trials t using (trial_id) where t.number = ?"
            return con.execute(q, (number,)).fetchone()[0] > 0
    except sqlite3.Error:
        return False


@pytest.mark.slow  # real processes killed and resumed
def test_killed_mid_trial_resumes_without_losing_or_duplicating_a_trial(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        yaml.safe_dump(
            {
                "data": {"dataset": "synthetic", "bundle": str(tmp_path / "bundle")},
                "prepare": {"split": "leave_last_out"},
                "eval": {"ks": [10]},
                "seeds": [0],
                "out": str(tmp_path / "exp"),
                "train": {"epochs": 10, "patience": 0, "batch_size": 1024, "progress": False, "checkpoint": False},
                "models": [
                    {
                        "label": "mf",
                        "name": "mf",
                        "search": {"dim": [16, 32, 64], "train.lr": {"low": 0.001, "high": 0.01}},
                    }
                ],
            }
        )
    )
    cmd = [sys.executable, "-m", "crossrec.cli", "tune", str(exp), "--trials", "3", "--out", str(tmp_path / "tune")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    db = tmp_path / "tune" / "study.sqlite3"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not _reported(db, 1):  # trial 1 has validated its first epoch
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (1, "RUNNING") in _states(db)  # killed mid-trial
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "trial 1 was interrupted" in done.stdout
    trials = json.loads((tmp_path / "tune" / "tuning.json").read_text())["models"]["mf"]["trials"]
    interrupted = [t for t in trials if t.get("interrupted")]
    assert [t["number"] for t in interrupted] == [1]
    finished = [t for t in trials if not t.get("interrupted")]
    assert len(finished) == 3 and all(t["state"] in ("complete", "pruned") for t in finished)
    retried = [t for t in finished if t.get("retry_of") == 1]
    assert len(retried) == 1 and retried[0]["params"] == interrupted[0]["params"]  # rerun once, same options
    assert finished[0]["number"] == 0  # trial 0 was kept, not rerun
    assert len({json.dumps(t["params"], sort_keys=True) for t in finished}) == 3


def test_ctrl_c_mid_trial_resumes_like_a_kill(tiny_bundle, tmp_path, monkeypatch):
    import crossrec.pipeline as pipeline

    cfg = load_experiment(
        data=_experiment(
            tmp_path / "exp",
            tiny_bundle.root,
            [
                {
                    "label": "mf",
                    "name": "mf",
                    "dim": 8,
                    "search": {"dim": [4, 8, 16], "train.lr": {"low": 0.001, "high": 0.05}},
                }
            ],
        )
    )
    real, calls = pipeline.train, []

    def interrupted_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "train", interrupted_second)
    with pytest.raises(KeyboardInterrupt):
        tune_experiment(cfg, TuneBudget(trials=3), tmp_path / "tune", bundle=tiny_bundle)
    monkeypatch.setattr(pipeline, "train", real)
    said: list[str] = []
    trials = tune_experiment(cfg, TuneBudget(trials=3), tmp_path / "tune", bundle=tiny_bundle, progress=said.append)[
        "models"
    ]["mf"]["trials"]
    assert any("trial 1 was interrupted" in s for s in said)
    finished = [t for t in trials if not t.get("interrupted")]
    assert len(finished) == 3 and [t.get("retry_of") for t in finished].count(1) == 1
    assert next(t for t in finished if t.get("retry_of") == 1)["params"] == trials[1]["params"]


def test_every_registered_model_has_a_valid_default_space():
    from crossrec.experiment.space import check_space, default_space
    from crossrec.models.base import REGISTRY, Fittable, Trainable

    for name, entry in REGISTRY.items():
        space = default_space(name)
        check_space(name, {}, space, name)  # every searched option exists and both ends are valid
        closed_form = issubclass(entry.cls, Fittable) and not issubclass(entry.cls, Trainable)
        if issubclass(entry.cls, Trainable) and not closed_form:
            assert "train.lr" in space, name  # every trained model searches its learning rate


def _knn(tmp_path, bundle_root):
    return load_experiment(
        data=_experiment(tmp_path / "exp", bundle_root, [{"label": "knn", "name": "itemknn", "mode": "single"}])
    )


def test_objective_averages_the_named_slices_and_a_resume_must_keep_it(tmp_path):
    from crossrec.data.prepare import PrepareConfig, prepare
    from crossrec.data.synthetic import generate, tiny_config

    inter, items = generate(tiny_config())
    prep = PrepareConfig(cold_user_fraction=0.2, cold_user_valid_fraction=0.2)  # new-to-category users in valid
    bundle = prepare(inter, items, prep, tmp_path / "bundle")
    cfg, objective = _knn(tmp_path, bundle.root), ("all", "new_to_category")
    result = tune_experiment(cfg, TuneBudget(trials=2, objective=objective), tmp_path / "tune", bundle=bundle)
    trials = [t for t in result["models"]["knn"]["trials"] if t["state"] == "complete"]
    assert trials
    for t in trials:
        by_slice = t["valid_by_slice"]
        assert by_slice["new_to_category"] != by_slice["all"]  # the slices differ, so the mean is not `all`
        assert t["value"] == pytest.approx((by_slice["all"] + by_slice["new_to_category"]) / 2, abs=1e-9)
        assert by_slice["all"] == t["valid_by_category"]["ALL"]
    assert result["objective"]["slices"] == list(objective)
    assert "averaged over the slices all, new_to_category" in (tmp_path / "tune" / "tuning.md").read_text()
    # values of another objective are not comparable: resuming with one is an error, before any trial
    with pytest.raises(ConfigError, match=r"--objective all: the study of knn was scored by --objective all,new_"):
        tune_experiment(cfg, TuneBudget(trials=3), tmp_path / "tune", bundle=bundle)
    again = tune_experiment(cfg, TuneBudget(trials=2, objective=objective), tmp_path / "tune", bundle=bundle)
    assert len(again["models"]["knn"]["trials"]) == 2


def test_an_unknown_or_absent_objective_slice_stops_the_tune(tiny_bundle, tmp_path):
    from typer.testing import CliRunner

    from crossrec.cli import app

    cfg = _knn(tmp_path, tiny_bundle.root)
    with pytest.raises(ConfigError, match=r"--objective all,cold_users: .*new_to_category.*unknown: 'cold_users'"):
        tune_experiment(cfg, TuneBudget(trials=1, objective=("all", "cold_users")), tmp_path / "t", bundle=tiny_bundle)
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(_experiment(tmp_path / "exp", tiny_bundle.root, [{"label": "k", "name": "itemknn"}])))
    r = CliRunner().invoke(app, ["tune", str(exp), "--objective", "all,cold_users", "--out", str(tmp_path / "t")])
    assert r.exit_code == 2 and "--objective" in r.output
    # the tiny world puts no new-to-category user in validation: the tune stops before any trial
    with pytest.raises(ConfigError, match="no new_to_category units.*prepare.cold_user_valid_fraction"):
        tune_experiment(cfg, TuneBudget(trials=1, objective=("new_to_category",)), tmp_path / "t", bundle=tiny_bundle)
    assert not (tmp_path / "t" / "study.sqlite3").exists()
