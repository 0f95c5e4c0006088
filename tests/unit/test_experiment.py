"""`crossrec experiment`: config parsing, mean ± std over seeds, gains, reuse of finished runs."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest

from crossrec.experiment import ExperimentResult, load_experiment, run_experiment
from crossrec.typed import ConfigError

TRAIN = {"epochs": 2, "batch_size": 512, "lr": 0.01, "progress": False, "checkpoint": False}


def experiment_dict(out, bundle_root, **extra):
    return {
        "data": {"bundle": str(bundle_root)},
        "train": TRAIN,
        "eval": {"ks": [10]},
        "seeds": [0, 1],
        "out": str(out),
        "models": [
            {"label": "pop", "name": "pop", "single_category": True},
            {"label": "mf-single", "name": "mf", "mode": "single", "dim": 8},
            {"label": "mf-pooled", "name": "mf", "dim": 8, "baseline": "mf-single"},
            {"label": "mf-once", "name": "mf", "dim": 8, "seeds": [1]},
        ],
        **extra,
    }


def test_config_errors_name_the_field(tmp_path):
    good = experiment_dict(tmp_path, tmp_path)
    with pytest.raises(ConfigError, match="unknown experiment key"):
        load_experiment(data=good | {"modles": []})
    dup = dict(good, models=good["models"] + [{"label": "pop", "name": "pop"}])
    with pytest.raises(ConfigError, match="duplicate label"):
        load_experiment(data=dup)
    bad_base = dict(good, models=[{"label": "a", "name": "mf", "baseline": "nope"}])
    with pytest.raises(ConfigError, match=r"models\[0\]\.baseline"):
        load_experiment(data=bad_base)
    with pytest.raises(KeyError, match="unknown model"):
        load_experiment(data=dict(good, models=[{"label": "a", "name": "nosuchmodel"}]))
    with pytest.raises(ConfigError, match=r"model\.dimm|dimm"):
        load_experiment(data=dict(good, models=[{"label": "a", "name": "mf", "dimm": 3}]))
    with pytest.raises(ConfigError, match=r"models\[0\]: missing 'name'"):
        load_experiment(data=dict(good, models=[{"label": "a"}]))
    with pytest.raises(ConfigError, match=r"models\[0\]\.flagship: expected true/false"):
        load_experiment(data=dict(good, models=[{"label": "a", "name": "mf", "flagship": "yes"}]))
    with pytest.raises(ConfigError, match=r"models\[1\]\.seeds"):
        load_experiment(
            data=dict(good, models=[{"label": "a", "name": "mf"}, {"label": "b", "name": "mf", "seeds": ["x"]}])
        )
    with pytest.raises(ConfigError, match=r"models\[0\]\.mode='both'"):
        load_experiment(data=dict(good, models=[{"label": "a", "name": "mf", "mode": "both"}]))


def test_model_entries_and_overrides(tmp_path):
    cfg = load_experiment(data=experiment_dict(tmp_path, tmp_path), overrides=["--seeds=[3]"])
    assert cfg.seeds == (3,)
    pop, single, pooled, once = cfg.models
    assert once.seeds == (1,) and pooled.seeds is None
    assert pop.single_category and pop.closed_form
    assert single.single_category and not single.closed_form
    assert not pooled.single_category and pooled.params == {"dim": 8}
    assert not any(m.flagship for m in cfg.models)
    # The flags come from the entry, never from the model's name.
    bare = load_experiment(data=experiment_dict(tmp_path, tmp_path, models=[{"label": "p", "name": "pop"}]))
    assert not bare.models[0].single_category and not bare.models[0].flagship
    run = cfg.run_config(pooled, 3)
    assert run.train.seed == 3 and run.seed == 3 and run.model.params == {"dim": 8}
    assert run.out.endswith("mf-pooled/seed-3")
    # A model's own `encoder:` options merge over the experiment's.
    tuned = load_experiment(
        data=experiment_dict(
            tmp_path,
            tmp_path,
            models=[
                {
                    "label": "t",
                    "name": "crossrec",
                    "item_tower": "text+id",
                    "encoder": {"finetune": "lora", "lora_r": 4},
                }
            ],
        )
    )
    run = tuned.run_config(tuned.models[0], 0)
    assert run.encoder.finetune == "lora" and run.encoder.lora_r == 4 and run.model.params == {"item_tower": "text+id"}


def test_run_experiment_means_stds_and_report(tiny_bundle, tmp_path, monkeypatch):
    cfg = load_experiment(data=experiment_dict(tmp_path / "exp", tiny_bundle.root))
    res = run_experiment(cfg, bundle=tiny_bundle)
    runs = res.runs
    # pop is fitted once and reported for every seed; the trained models once per seed.
    assert set(runs.filter(pl.col("model") == "pop")["seed"].to_list()) == {0, 1}
    assert res.seconds["pop"] and len(res.seconds["pop"]) == 1 and len(res.seconds["mf-single"]) == 2
    assert runs.filter(pl.col("model") == "mf-once")["seed"].unique().to_list() == [1]
    # Mean and (population) std over the seeds, checked by hand on one row.
    vals = runs.filter((pl.col("model") == "mf-pooled") & (pl.col("category") == "ALL") & (pl.col("slice") == "all"))
    a, b = vals.sort("seed")["ndcg@10"].to_list()
    summ = res.summary().filter(
        (pl.col("model") == "mf-pooled") & (pl.col("category") == "ALL") & (pl.col("slice") == "all")
    )
    assert summ["ndcg@10"][0] == pytest.approx((a + b) / 2)
    assert summ["ndcg@10_std"][0] == pytest.approx(abs(a - b) / 2)
    md = (tmp_path / "exp" / "results.md").read_text()
    assert "protocol: full ranking" in md and "gain mf-pooled" in md and " ± " in md and "(1 seed)" in md
    for cat in tiny_bundle.categories:
        assert f"### {cat}, slice `all`" in md and f"### {cat}, slice `new_to_category`" in md
    data = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert {r["model"] for r in data["summary"]} == {"pop", "mf-single", "mf-pooled", "mf-once"}

    # A second run reuses every finished run: nothing trains.
    import crossrec.pipeline

    def boom(*args, **kwargs):
        raise AssertionError("should not train again")

    monkeypatch.setattr(crossrec.pipeline, "train", boom)
    again = run_experiment(cfg, bundle=tiny_bundle)
    assert again.summary().equals(res.summary())

    # A run whose resolved options differ (a code default changed since) is not reused.
    path = tmp_path / "exp" / "runs" / "mf-pooled" / "seed-0.json"
    stored = json.loads(path.read_text())
    assert stored["model_options"]["dim"] == 8 and "reg" in stored["model_options"]
    stored["model_options"]["reg"] = -1.0
    path.write_text(json.dumps(stored))
    with pytest.raises(AssertionError, match="should not train again"):
        run_experiment(cfg, bundle=tiny_bundle)


def test_runs_on_a_bundle_prepared_again_in_place_are_not_reused(tiny_bundle, tmp_path, monkeypatch):
    """Same path, same run config, other split (another seed): every stored run is stale."""
    from dataclasses import replace

    from crossrec.data.prepare import PrepareConfig, prepare
    from crossrec.data.synthetic import generate, tiny_config

    inter, items = generate(tiny_config())
    # A random split leaves some (category, slice) cells empty: the report shows "–" there.
    first = prepare(inter, items, PrepareConfig(split="random", seed=0), tmp_path / "bundle")
    data = experiment_dict(tmp_path / "exp", first.root)
    data["models"] = [{"label": "pop", "name": "pop"}]
    cfg = load_experiment(data=data)
    run_experiment(cfg, bundle=first)
    again = prepare(inter, items, PrepareConfig(split="random", seed=1), tmp_path / "bundle")  # same path
    assert again.n_users == first.n_users and again.fingerprint()["bundle"] != first.fingerprint()["bundle"]
    import crossrec.pipeline

    trained = []
    real = crossrec.pipeline.train
    monkeypatch.setattr(crossrec.pipeline, "train", lambda *a, **k: trained.append(1) or real(*a, **k))
    run_experiment(replace(cfg), bundle=again)
    assert trained == [1]


def test_gain_and_best_single_by_hand(tmp_path):
    cfg = load_experiment(
        data={
            "models": [
                {"label": "pop", "name": "pop", "single_category": True},
                {"label": "s", "name": "mf", "mode": "single"},
                {"label": "x", "name": "crossrec", "flagship": True},
            ],
            "seeds": [0],
            "out": str(tmp_path),
        }
    )
    rows = []
    for model, books, music in (("pop", 0.10, 0.05), ("s", 0.20, 0.04), ("x", 0.25, 0.03)):
        for cat, v in (("books", books), ("music", music)):
            rows.append(
                {
                    "model": model,
                    "seed": 0,
                    "protocol": "full ranking",
                    "category": cat,
                    "slice": "all",
                    "n_users": 10,
                    "ndcg@10": v,
                    "recall@10": v,
                }
            )
    info = {
        "n_users": 10,
        "n_items": 5,
        "n_interactions": 50,
        "categories": ["books", "music"],
        "split": "x",
        "train_rows": {"books": 40, "music": 10},
    }
    res = ExperimentResult(cfg, pl.DataFrame(rows), info, {})
    assert res.best_single("ndcg@10", "books", "all") == ("s", pytest.approx(0.20))
    assert res.best_single("ndcg@10", "music", "all") == ("pop", pytest.approx(0.05))
    assert res._gain(cfg.models[2], "ndcg@10", "books", "all") == ("s", "+25.0%")
    assert res._gain(cfg.models[2], "ndcg@10", "music", "all") == ("pop", "-40.0%")
    checks = {c["check"]: c for c in res.acceptance()}
    sparse, dense = checks["sparsest category (music)"], checks["densest category (books)"]
    assert not sparse["passed"] and math.isclose(sparse["best_single_value"], 0.05)
    assert dense["passed"]  # 0.25 >= 0.98 * 0.20
