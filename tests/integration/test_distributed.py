"""Multi-process training on torch.distributed (gloo, CPU): `crossrec train --nproc 2` runs two
processes under torchrun and reaches what one process reaches."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
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
