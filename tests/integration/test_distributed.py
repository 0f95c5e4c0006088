"""Multi-process training on torch.distributed (gloo, CPU): `crossrec train --nproc 2` runs two
processes under torchrun and reaches what one process reaches."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from crossrec.cli import app

from .test_cli import write_tiny

runner = CliRunner()


def train_result(out) -> dict:
    return json.loads((out / "config.json").read_text())["train_result"]["all"]


def two_processes(cfg, out, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "crossrec.cli", "train", str(cfg), "--nproc", "2", f"--out={out}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    cfg = write_tiny(root)
    assert runner.invoke(app, ["prepare", str(cfg)]).exit_code == 0
    return root, cfg


@pytest.mark.slow  # torchrun and two training processes
def test_two_gloo_processes_train_bpr_mf_like_one(tiny):
    root, cfg = tiny
    r = runner.invoke(app, ["train", str(cfg), "--train.epochs=2", f"--out={root / 'one'}"])
    assert r.exit_code == 0, r.output
    p = two_processes(cfg, root / "two", "--train.epochs=2")
    assert p.returncode == 0, p.stderr[-3000:]
    one, two = train_result(root / "one"), train_result(root / "two")
    meta = json.loads((root / "two" / "config.json").read_text())
    assert meta["distributed"] == {"world_size": 2, "rank": 0, "backend": "gloo"}
    # Same global batches, gradients averaged over the two halves: the same run up to float order.
    assert two["epochs_run"] == one["epochs_run"] == 2
    assert two["best_metric"] == pytest.approx(one["best_metric"], abs=1e-3)
    assert [h["valid_ndcg@10"] for h in two["history"]] == pytest.approx(
        [h["valid_ndcg@10"] for h in one["history"]], abs=1e-3
    )
    assert (root / "two" / "model.safetensors").exists()
    assert (root / "two" / "checkpoint" / "current.json").exists()  # rank 0 checkpointed


@pytest.mark.slow  # torchrun and two training processes
def test_two_gloo_processes_train_the_flagship(tiny):
    root, cfg = tiny
    common = ["--train.epochs=2", "--model.name=crossrec"]
    r = runner.invoke(app, ["train", str(cfg), *common, f"--out={root / 'flag-one'}"])
    assert r.exit_code == 0, r.output
    p = two_processes(cfg, root / "flag-two", *common)
    assert p.returncode == 0, p.stderr[-3000:]
    one, two = train_result(root / "flag-one"), train_result(root / "flag-two")
    # Dropout draws differ between one process and two, so the runs differ within noise only.
    assert two["best_metric"] == pytest.approx(one["best_metric"], abs=0.05)
    r = runner.invoke(app, ["evaluate", str(cfg), f"--out={root / 'flag-two'}"])
    assert r.exit_code == 0, r.output  # the artifact rank 0 wrote loads and scores


SHARDED = ["--train.sparse_optimizer=adagrad", "--train.sparse_lr=0.05"]


def sharded(root, cfg, model: str, sharding: str):
    """The two-process run of `model` with `sharding`, 2 epochs, in root/<model>-<sharding>: run once
    per module (the resume test's uninterrupted run is the bpr-mf table-wise one)."""
    out = root / f"{model}-{sharding}"
    if not (out / "model.safetensors").exists():
        p = two_processes(
            cfg, out, "--train.epochs=2", f"--model.name={model}", *SHARDED, f"--train.sharding={sharding}"
        )
        assert p.returncode == 0, p.stderr[-3000:]
    return out


@pytest.mark.slow  # torchrun, two training processes and TorchRec
@pytest.mark.parametrize(
    ("model", "sharding", "tol"),
    [("mf", "table", 1e-3), ("crossrec", "column", 0.05)],
    ids=["bpr-mf-table-wise", "flagship-column-wise"],
)
def test_torchrec_sharded_tables_follow_one_process_and_load_unsharded(tiny, model, sharding, tol):
    from crossrec.integrity import load_tensors

    root, cfg = tiny
    common = ["--train.epochs=2", f"--model.name={model}", *SHARDED]
    one = root / f"{model}-one"
    r = runner.invoke(app, ["train", str(cfg), *common, f"--out={one}"])
    assert r.exit_code == 0, r.output
    two = sharded(root, cfg, model, sharding)
    a, b = train_result(one), train_result(two)
    tables = {"mf": ["item_emb", "user_emb"], "crossrec": ["user_cat_emb", "user_emb"]}[model]
    assert sorted(b["sharding"]) == tables and not a["sharding"]
    # Same global batches, and RowAdagrad is TorchRec's exact row-wise Adagrad (each row's gradient
    # summed over the step first): the curves agree up to float order (and the flagship's dropout).
    assert [h["valid_ndcg@10"] for h in b["history"]] == pytest.approx(
        [h["valid_ndcg@10"] for h in a["history"]], abs=tol
    )
    # What a sharded run writes is whole: the artifact and the checkpoint's weights load unsharded.
    art, ckpt = load_tensors(two / "model.safetensors"), two / "checkpoint"
    pointer = json.loads((ckpt / "current.json").read_text())["set"]
    saved = load_tensors(ckpt / pointer / "model.safetensors")
    for name, t in load_tensors(one / "model.safetensors").items():
        assert art[name].shape == t.shape and saved[name].shape == t.shape, name
    assert any(k.startswith("sharded.") for k in load_tensors(ckpt / pointer / "optimizer.safetensors"))
    r = runner.invoke(app, ["evaluate", str(cfg), f"--out={two}"])
    assert r.exit_code == 0, r.output


@pytest.mark.slow  # torchrun, two training processes and TorchRec, three runs (one shared)
def test_a_sharded_run_resumes_where_it_stopped(tiny):
    from crossrec.integrity import load_tensors

    root, cfg = tiny
    common = ["--model.name=mf", *SHARDED, "--train.sharding=table"]
    full, cut = sharded(root, cfg, "mf", "table"), root / "resume-cut"
    for out, args in [
        (cut, ["--train.epochs=1"]),
        (cut, ["--train.epochs=2", "--resume"]),
    ]:
        p = two_processes(cfg, out, *args, *common)
        assert p.returncode == 0, p.stderr[-3000:]
    # The checkpoint carried the shards' weights and row accumulators: the resumed run is the uninterrupted one.
    a, b = load_tensors(full / "model.safetensors"), load_tensors(cut / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
