"""Every output follows "your files are safe" (issue 33, class 6), non-finite scores are refused
(class 5, the command line), and every error is one line of at most 300 characters (class 3, the
command line's own errors).

`evaluate --json` and `report` write atomically, never replace a file crossrec did not write, and
refuse a missing parent directory; `recommend` refuses a model whose scores are NaN or +inf.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CLI = [sys.executable, "-m", "crossrec.cli"]


def real_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI in a real process: click's own usage errors, and a message echoed back."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def cli(*args: str) -> subprocess.CompletedProcess:
    """The CLI in this process (exit code, stdout and stderr kept apart, as a real run has them):
    the commands that train, evaluate or load a model, which a fresh interpreter would spend most
    of its time importing torch for."""
    from typer.testing import CliRunner

    from crossrec.cli import app

    r = CliRunner().invoke(app, list(args))
    return subprocess.CompletedProcess(list(args), r.exit_code, r.stdout, r.stderr)


def one_error_line(r: subprocess.CompletedProcess, code: int = 2) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and len(lines[0]) <= 300, lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny world prepared and a BPR-MF trained for one epoch, through the CLI."""
    from crossrec.data.synthetic import tiny_config, write_world

    root = tmp_path_factory.mktemp("outputs")
    paths = write_world(root / "raw", tiny_config())
    cfg = root / "run.yaml"
    cfg.write_text(
        json.dumps(
            {
                "data": {
                    "interactions": str(paths["interactions"]),
                    "items": str(paths["items"]),
                    "columns": {"user": "user", "item": "item", "category": "category", "timestamp": "timestamp"},
                    "item_columns": {"item": "item", "category": "category", "title": "title"},
                    "bundle": str(root / "bundle"),
                },
                "model": {"name": "mf", "mode": "pooled", "dim": 8},
                "train": {"epochs": 1, "batch_size": 512, "progress": False},
                "eval": {"ks": [10]},
                "out": str(root / "model"),
            }
        )
    )
    assert cli("prepare", str(cfg)).returncode == 0
    r = cli("train", str(cfg))
    assert r.returncode == 0, r.stderr
    return root, cfg


class TestEvaluateJson:
    def test_writes_marked_json_and_replaces_its_own(self, trained):
        root, cfg = trained
        out = root / "eval.json"
        for _ in range(2):  # the second run replaces the file the first wrote
            r = cli("evaluate", str(cfg), "--json", str(out))
            assert r.returncode == 0, r.stderr
        data = json.loads(out.read_text())
        assert data["written_by"]["kind"] == "evaluation" and data["rows"]
        assert not [p for p in root.iterdir() if "crossrec-tmp" in p.name]  # no temporaries left

    @pytest.mark.parametrize("content", ["my notes\n", '{"rows": []}\n', '{"written_by": {"kind": "report"}}'])
    def test_refuses_to_replace_a_file_it_did_not_write(self, trained, tmp_path, content):
        _, cfg = trained
        mine = tmp_path / "notes.json"
        mine.write_text(content)
        line = one_error_line(cli("evaluate", str(cfg), "--json", str(mine)))
        assert "did not write" in line and "notes.json" in line
        assert mine.read_text() == content

    def test_refuses_a_missing_parent(self, trained, tmp_path):
        _, cfg = trained
        target = tmp_path / "no" / "such" / "dir" / "eval.json"
        line = one_error_line(cli("evaluate", str(cfg), "--json", str(target)))
        assert "does not exist" in line
        assert not (tmp_path / "no").exists()

    def test_refuses_a_directory_or_a_link(self, trained, tmp_path):
        _, cfg = trained
        (tmp_path / "d.json").mkdir()
        (tmp_path / "target.txt").write_text("keep")
        (tmp_path / "link.json").symlink_to(tmp_path / "target.txt")
        for name in ("d.json", "link.json"):
            assert "not a regular file" in one_error_line(cli("evaluate", str(cfg), "--json", str(tmp_path / name)))
        assert (tmp_path / "target.txt").read_text() == "keep"


def test_report_refuses_a_missing_parent(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text("{}")
    line = one_error_line(cli("report", str(tmp_path / "run"), "--out", str(tmp_path / "nope" / "report")))
    assert "does not exist" in line and not (tmp_path / "nope").exists()


def test_recommend_refuses_non_finite_scores(trained, tmp_path):
    """A model whose weights went NaN (or +inf): recommend exits 2 naming the model, never a list."""
    from crossrec.integrity import file_sha256, load_tensors, save_tensors, write_checksums
    from crossrec.io import read_json, write_json

    root, cfg = trained
    import shutil

    for bad in (float("nan"), float("inf")):
        art = tmp_path / f"model-{bad}"
        shutil.copytree(root / "model", art)
        tensors = load_tensors(art / "model.safetensors")
        name = next(k for k, v in tensors.items() if v.is_floating_point() and v.ndim == 2)
        tensors[name] = torch.full_like(tensors[name], bad)
        save_tensors(art / "model.safetensors", tensors)
        meta = read_json(art / "config.json")
        meta["tensors_sha256"] = file_sha256(art / "model.safetensors")
        write_json(art / "config.json", meta)
        write_checksums(art, ["model.safetensors", "config.json", "ids.json"])  # a consistent, broken model
        user = json.loads((art / "ids.json").read_text())["users"][0]
        cat = json.loads((art / "ids.json").read_text())["categories"][0]
        line = one_error_line(cli("recommend", str(cfg), f"--out={art}", "--user", user, "--category", cat))
        assert "non-finite" in line and "mf" in line


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--nproc", "abc"], "--nproc"),
        (["report"], "run_dir"),
        (["no-such-command"], "no-such-command"),
        (["demo", "--epochs", "x" * 2000], "--epochs"),
        (["evaluate", "--no-such-option"], "--no-such-option"),
    ],
)
def test_usage_errors_are_one_line(args, needle, tmp_path):
    """click's own errors (a wrong type, a missing argument, an unknown command) are one line too,
    not click's boxed usage text, and a value echoed back cannot make it longer than 300 characters."""
    line = one_error_line(real_cli(*args, cwd=tmp_path))
    assert needle[:40] in line


def test_a_long_message_is_cut_to_one_line(tmp_path):
    """A config key of 5000 characters is echoed back: the line is still at most 300."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  ? " + "k" * 5000 + "\n  : 1\n")  # an explicit key: YAML caps implicit ones
    line = one_error_line(real_cli("prepare", str(cfg)))
    assert "unknown key" in line and line.endswith("...")


def test_training_anew_drops_the_versions_of_the_model_it_replaces(trained, tmp_path):
    """`update` writes out/versions/vNNNN from the model in `out`; `serve` serves the newest. A new
    model trained into that `out` takes the stale versions with it, so serve and recommend agree."""
    import shutil

    from crossrec.config import load_config
    from crossrec.serving.loader import service_loader
    from crossrec.update import newest_version

    root, cfg = trained
    out = tmp_path / "model"
    shutil.copytree(root / "model", out)
    (out / "versions" / "v0001").mkdir(parents=True)
    shutil.copytree(root / "model", out / "versions" / "v0001" / "model")
    shutil.copytree(root / "bundle", out / "versions" / "v0001" / "bundle")
    assert newest_version(out, root / "bundle")[2] == "v0001"
    r = cli("train", str(cfg), f"--out={out}", "--model.name=pop")
    assert r.returncode == 0, r.stderr
    assert not (out / "versions").exists() and newest_version(out, root / "bundle")[2] == "v0000"
    served = service_loader(load_config(cfg, [f"--out={out}"]))()
    assert served.name == "pop"  # the new model, not the stale v0001 (an mf)
    assert not [p for p in out.iterdir() if "crossrec-tmp" in p.name]


def test_a_store_item_of_an_unknown_category_is_a_clear_error(trained, tmp_path):
    from crossrec.artifact import load_artifact
    from crossrec.data.bundle import Bundle
    from crossrec.serving.service import Service
    from crossrec.serving.store import SQLiteStore, StoreError

    root, _ = trained
    store = SQLiteStore(tmp_path / "store.sqlite")
    store.add_item("n1", "gone", "a title", None, None)
    with pytest.raises(StoreError, match=r"store\.sqlite: item 'n1' is in category 'gone'"):
        Service(load_artifact(root / "model"), Bundle.load(root / "bundle"), store=store)
