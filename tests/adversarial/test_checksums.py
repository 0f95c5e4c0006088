"""Every stored file is verified: one flipped byte in a checkpoint set, an artifact, a Bundle or a
finished transfer stage is an error that names the file (never a silent resume or load).

Each case copies a tiny trained run, damages one byte of one file -- at offset 0, in the middle,
and (the subtle case) one bit of the middle byte, for a JSON file a digit nearest the middle, so
the file still parses -- and checks the one-line error (exit 2 through the CLI).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from crossrec.integrity import CHECKSUMS, load_tensors, verify_checksums
from crossrec.io import CorruptFileError
from tests.integration.test_hardening import assert_clean_error, invoke, write_tiny

pytestmark = pytest.mark.usefixtures("one_thread")

HOW = ("first", "middle", "bit")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A prepared Bundle and a model trained 2 epochs with checkpoints (shared, read-only)."""
    tmp = tmp_path_factory.mktemp("checksums")
    cfg = write_tiny(tmp)
    assert invoke("prepare", cfg).exit_code == 0
    r = invoke("train", cfg)
    assert r.exit_code == 0, r.output
    return tmp, cfg


def flip(path: Path, how: str) -> None:
    """Damage one byte of `path` (see the module docstring)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    if how == "first":
        data[0] ^= 0xFF
    elif how == "middle":
        data[mid] ^= 0xFF
    elif path.suffix == ".json":  # a digit -> another digit: still valid JSON, another value
        at = min((i for i, b in enumerate(data) if 0x30 <= b <= 0x39), key=lambda i: abs(i - mid))
        data[at] ^= 0x01
    else:
        data[mid] ^= 0x01
    path.write_bytes(bytes(data))


def one_line(text: str, name: str) -> str:
    """The `error:` line naming `name`: one line, at most 300 characters."""
    lines = sorted({ln for ln in text.splitlines() if "error:" in ln})  # the runner echoes stderr into output
    assert len(lines) == 1, text
    line = lines[0]
    assert name in line and len(line) <= 300 + len("error: "), line
    return line


def set_dir(out: Path) -> Path:
    return out / "checkpoint" / json.loads((out / "checkpoint" / "current.json").read_text())["set"]


def checkpoint_files(out: Path) -> list[str]:
    d = set_dir(out)
    return ["current.json"] + sorted(f"{d.name}/{p.name}" for p in d.iterdir())


CHECKPOINT_FILES = [
    "current.json",
    "model.safetensors",
    "best.safetensors",
    "optimizer.safetensors",
    "state.json",
    CHECKSUMS,
]


# ---------------------------------------------------------------------- checkpoint sets
def test_a_checkpoint_set_records_every_file(run):
    tmp, _ = run
    d = set_dir(tmp / "model")
    assert sorted(p.name for p in d.iterdir()) == sorted(CHECKPOINT_FILES[1:])
    assert sorted(verify_checksums(d, "checkpoint set")) == sorted(CHECKPOINT_FILES[1:-1])


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_a_flipped_byte_in_a_checkpoint_set_stops_the_resume(run, tmp_path, name, how):
    tmp, cfg = run
    out = tmp_path / "model"
    shutil.copytree(tmp / "model", out)
    target = out / "checkpoint" / name if name == "current.json" else set_dir(out) / name
    if name == "current.json" and how == "bit":
        pytest.skip("current.json has a digit only in the set name: covered by first/middle")
    flip(target, how)
    r = invoke("train", cfg, f"--out={out}", "--train.epochs=3", "--resume")
    one_line(assert_clean_error(r, name), name)
    assert json.loads((out / "config.json").read_text())["train_result"]["all"]["epochs_run"] == 2  # untouched


def test_a_checkpoint_set_without_checksums_is_refused_as_older(run, tmp_path):
    tmp, cfg = run
    out = tmp_path / "model"
    shutil.copytree(tmp / "model", out)
    (set_dir(out) / CHECKSUMS).unlink()
    r = invoke("train", cfg, f"--out={out}", "--train.epochs=3", "--resume")
    one_line(assert_clean_error(r, CHECKSUMS, "older crossrec", "without --resume"), CHECKSUMS)


def test_an_untouched_set_resumes_to_the_uninterrupted_result(run, tmp_path):
    tmp, cfg = run
    out = tmp_path / "model"
    shutil.copytree(tmp / "model", out)
    r = invoke("train", cfg, f"--out={out}", "--train.epochs=3", "--resume")
    assert r.exit_code == 0, r.output
    straight = tmp_path / "straight"
    assert invoke("train", cfg, f"--out={straight}", "--train.epochs=3").exit_code == 0
    a, b = load_tensors(out / "model.safetensors"), load_tensors(straight / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(verify_checksums(set_dir(out), "checkpoint set")) == sorted(CHECKPOINT_FILES[1:-1])


# ---------------------------------------------------------------------- artifacts
ARTIFACT_FILES = ["model.safetensors", "config.json", "ids.json", CHECKSUMS]


def test_an_artifact_records_every_file(run):
    tmp, _ = run
    assert sorted(verify_checksums(tmp / "model", "artifact")) == sorted(ARTIFACT_FILES[:-1])


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("name", ARTIFACT_FILES)
def test_a_flipped_byte_in_an_artifact_is_an_error_naming_the_file(run, tmp_path, name, how):
    from crossrec.artifact import load_artifact

    tmp, cfg = run
    art = tmp_path / "model"
    shutil.copytree(tmp / "model", art)
    flip(art / name, how)
    with pytest.raises(ValueError, match=name.replace(".", r"\.")) as e:
        load_artifact(art)
    assert isinstance(e.value, CorruptFileError) and "\n" not in str(e.value) and len(str(e.value)) <= 300
    one_line(assert_clean_error(invoke("evaluate", cfg, f"--out={art}"), name), name)


def test_an_artifact_without_checksums_still_checks_its_tensors(run, tmp_path):
    """Written before checksums.json existed: its recorded tensors_sha256 is still verified."""
    from crossrec.artifact import load_artifact

    tmp, _ = run
    art = tmp_path / "model"
    shutil.copytree(tmp / "model", art)
    (art / CHECKSUMS).unlink()
    load_artifact(art)
    flip(art / "model.safetensors", "bit")
    with pytest.raises(CorruptFileError, match="model.safetensors.*checksum"):
        load_artifact(art)


# ---------------------------------------------------------------------- Bundles
BUNDLE_FILES = ["manifest.json", "interactions.parquet", "items.parquet", "users.parquet", CHECKSUMS]


def test_a_bundle_records_every_file(run):
    tmp, _ = run
    assert sorted(verify_checksums(tmp / "bundle", "bundle")) == sorted(BUNDLE_FILES[:-1])


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("name", BUNDLE_FILES)
def test_a_flipped_byte_in_a_bundle_is_an_error_naming_the_file(run, tmp_path, name, how):
    from crossrec.data.bundle import Bundle

    tmp, _ = run
    b = tmp_path / "bundle"
    shutil.copytree(tmp / "bundle", b)
    flip(b / name, how)
    with pytest.raises(CorruptFileError, match=name.replace(".", r"\.")) as e:
        Bundle.load(b)
    assert "\n" not in str(e.value) and len(str(e.value)) <= 300


def test_a_bundle_without_checksums_is_checked_by_its_fingerprint(run, tmp_path):
    from crossrec.data.bundle import Bundle

    tmp, _ = run
    b = tmp_path / "bundle"
    shutil.copytree(tmp / "bundle", b)
    (b / CHECKSUMS).unlink()
    assert Bundle.load(b).n_users > 0


# ---------------------------------------------------------------------- transfer stages
@pytest.mark.parametrize("name", ["final.safetensors", "result.json", CHECKSUMS])
def test_a_flipped_byte_in_a_finished_stage_stops_the_resume(tiny_bundle, tmp_path, name):
    from crossrec.data.batch import Sizes
    from crossrec.models.per_category import build
    from crossrec.training.trainer import TrainConfig
    from crossrec.training.transfer import Stage, run_stages, stage_dir

    def model():
        torch.manual_seed(0)
        return build("mf", "pooled", {"dim": 4}, Sizes.from_bundle(tiny_bundle))

    cfg = TrainConfig(epochs=1, batch_size=256, lr=1e-2, progress=False, patience=0, seed=0)
    stages = [Stage("first", None, "none", 1.0, 1), Stage("second", None, "none", 0.5, 1)]
    first = run_stages(model(), tiny_bundle, cfg, stages, tmp_path)
    again = run_stages(model(), tiny_bundle, cfg, stages, tmp_path, resume=True)  # untouched: skipped
    assert again[0].to_json() == first[0].to_json()
    flip(stage_dir(tmp_path, 0, stages[0]) / name, "middle" if name != "result.json" else "bit")
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        run_stages(model(), tiny_bundle, cfg, stages, tmp_path, resume=True)
