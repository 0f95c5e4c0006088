"""Issue 9: never lose a user's data, never serve a wrong answer silently.

Every case feeds the CLI hostile input as a careful new user might, and checks three things: the
exit code (2 for bad input), a one-line `error: ...` that says what, where and what was expected,
and that nothing was lost or half-written. `assert_clean_error` also checks that no traceback
reached the output. The two serious findings of the probe come first, reproduced as described.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from crossrec.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def write_tiny(tmp_path: Path, **extra: str) -> Path:
    from crossrec.data.synthetic import tiny_config, write_world

    raw = tmp_path / "raw"
    if not (raw / "interactions.csv.gz").exists():
        write_world(raw, tiny_config())
    cfg = tmp_path / "run.yaml"
    text = (
        f"data:\n  interactions: {raw / 'interactions.csv.gz'}\n  items: {raw / 'items.csv.gz'}\n"
        f"  columns: {{user: user, item: item, category: category, timestamp: timestamp, rating: rating}}\n"
        f"  item_columns: {{item: item, category: category, title: title, description: description}}\n"
        f"  bundle: {extra.get('bundle', tmp_path / 'bundle')}\n"
        f"prepare:\n  split: {extra.get('split', 'leave_last_out')}\n  seed: {extra.get('seed', 0)}\n"
        f"model:\n  name: mf\n  mode: pooled\n  dim: 8\n"
        f"train:\n  epochs: 2\n  batch_size: 512\n  lr: 0.01\n  progress: false\n  patience: 0\n"
        f"out: {extra.get('out', tmp_path / 'model')}\n"
    )
    cfg.write_text(text)
    return cfg


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(r, *needles: str, code: int = 2) -> str:
    """Exit code `code`, an `error:` line naming every needle, no traceback anywhere."""
    text = r.output + (getattr(r, "stderr", "") or "")
    assert r.exit_code == code, text
    assert isinstance(r.exception, SystemExit), repr(r.exception)  # nothing escaped as a traceback
    assert "Traceback" not in text
    assert "error:" in text, text
    for n in needles:
        assert n in text, f"{n!r} not in {text!r}"
    return text


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The installed CLI in a real process (real stderr, real exit code)."""
    exe = Path(sys.executable).with_name("crossrec")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "crossrec.cli"]
    return subprocess.run(
        cmd + [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A prepared bundle and a trained artifact on the tiny world (shared, read-only)."""
    tmp = tmp_path_factory.mktemp("trained")
    cfg = write_tiny(tmp)
    assert invoke("prepare", cfg).exit_code == 0
    r = invoke("train", cfg)
    assert r.exit_code == 0, r.output
    return tmp, cfg


# ---- finding 1: prepare deleted a directory it did not own ------------------------------------


def test_prepare_refuses_a_folder_of_the_users_files_and_touches_nothing(tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "thesis.tex").write_text("four years of work")
    cfg = write_tiny(tmp_path, bundle=folder)
    shutil.copy(tmp_path / "raw" / "interactions.csv.gz", folder / "interactions.csv.gz")
    before = snapshot(folder)
    p = cli("prepare", cfg)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and p.stderr.startswith("error:")
    assert "did not write" in p.stderr and "thesis" in p.stderr
    assert snapshot(folder) == before


def test_prepare_with_dotdot_cannot_empty_the_current_directory(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "keep.txt").write_text("mine")
    cfg = write_tiny(tmp_path)
    before = snapshot(tmp_path)
    p = cli("prepare", cfg, "--data.bundle=..", cwd=work)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "did not write" in p.stderr
    p = cli("prepare", cfg, "--data.bundle=.", cwd=work)  # an empty cwd is fine to fill ...
    assert p.returncode == 0, p.stderr
    assert (work / "manifest.json").exists()
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("work")} == before  # ... nothing else moved


def test_prepare_pointed_at_the_input_file_leaves_it_in_place(tmp_path):
    cfg = write_tiny(tmp_path)
    src = tmp_path / "raw" / "interactions.csv.gz"
    before = src.read_bytes()
    r = invoke("prepare", cfg, f"--data.bundle={src}")
    assert_clean_error(r, "is a file")
    assert src.read_bytes() == before


def test_prepare_refuses_a_bundle_directory_that_holds_the_input(tmp_path):
    cfg = write_tiny(tmp_path)
    assert invoke("prepare", cfg).exit_code == 0
    copy = tmp_path / "bundle" / "mine.csv.gz"
    shutil.copy(tmp_path / "raw" / "interactions.csv.gz", copy)
    r = invoke("prepare", cfg, f"--data.interactions={copy}")
    assert_clean_error(r, "mine.csv.gz")
    assert copy.exists()


def test_prepare_rewrites_its_own_bundle_and_fills_an_empty_directory(tmp_path):
    cfg = write_tiny(tmp_path)
    (tmp_path / "bundle").mkdir()
    assert invoke("prepare", cfg).exit_code == 0
    first = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    r = invoke("prepare", cfg, "--prepare.k_core=2")
    assert r.exit_code == 0, r.output
    second = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert second["settings"]["k_core"] == 2 and first["fingerprint"] != second["fingerprint"]
    assert json.loads((tmp_path / "bundle" / ".crossrec.json").read_text())["kind"] == "bundle"


def test_train_experiment_and_demo_refuse_foreign_or_other_kind_directories(tmp_path):
    cfg = write_tiny(tmp_path)
    assert invoke("prepare", cfg).exit_code == 0
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8")
    assert_clean_error(invoke("train", cfg, f"--out={folder}"), "did not write")
    assert_clean_error(invoke("train", cfg, f"--out={tmp_path / 'bundle'}"), "holds a crossrec bundle")
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        f"data: {{bundle: {tmp_path / 'bundle'}}}\nmodels: [{{label: pop, name: pop}}]\nseeds: [0]\nout: {folder}\n"
    )
    assert_clean_error(invoke("experiment", exp), "did not write")
    assert_clean_error(invoke("demo", "--out", folder), "did not write")
    assert (folder / "cat.jpg").read_bytes() == b"\xff\xd8"


def test_stale_temporaries_of_a_killed_write_are_cleaned(tmp_path):
    cfg = write_tiny(tmp_path)
    stale = tmp_path / ".bundle.crossrec-tmp-abc123"
    stale.mkdir()
    (stale / "interactions.parquet").write_bytes(b"half")
    assert invoke("prepare", cfg).exit_code == 0
    assert not stale.exists()
    assert not [p for p in tmp_path.iterdir() if "crossrec-tmp" in p.name]


def test_a_second_run_on_a_busy_path_is_refused(tmp_path):
    from crossrec.io import run_lock

    cfg = write_tiny(tmp_path)
    with run_lock(tmp_path / "bundle", "data.bundle"):
        p = cli("prepare", cfg)  # another process: the lock is held
    assert p.returncode == 2 and "busy" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "bundle").exists()
    assert cli("prepare", cfg).returncode == 0  # released with the holder


def test_files_follow_the_users_umask(tmp_path):
    cfg = write_tiny(tmp_path)
    old = os.umask(0o027)
    try:
        assert invoke("prepare", cfg).exit_code == 0
        assert invoke("train", cfg).exit_code == 0
    finally:
        os.umask(old)
    for root in (tmp_path / "bundle", tmp_path / "model"):
        for p in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode == (0o750 if p.is_dir() else 0o640), f"{p}: {oct(mode)}"


# ---- finding 2: an artifact was used with any Bundle of the same size -------------------------


def test_evaluate_and_recommend_refuse_the_same_data_resplit_with_another_seed(trained, tmp_path):
    tmp, cfg = trained
    other = write_tiny(tmp_path, bundle=tmp_path / "b2", out=tmp / "model", split="random", seed=0)
    assert invoke("prepare", other).exit_code == 0
    from crossrec.data.bundle import Bundle

    a, b = Bundle.load(tmp / "bundle"), Bundle.load(tmp_path / "b2")
    assert (a.n_users, a.n_items) == (b.n_users, b.n_items)  # same counts: sizes alone cannot tell
    text = assert_clean_error(
        invoke("evaluate", other), "trained on another bundle", "split", "split: 'leave_last_out' -> 'random'"
    )
    assert "ndcg" not in text.lower()
    user = b.raw_user_ids()[0]
    assert_clean_error(invoke("recommend", other, "--user", user, "--category", b.categories[0]), "another bundle")


def test_evaluate_refuses_another_dataset_with_the_same_counts(trained, tmp_path):
    tmp, cfg = trained
    raw = pl.read_csv(tmp / "raw" / "interactions.csv.gz", infer_schema=False)
    raw = raw.with_columns(("x" + pl.col("user")).alias("user"))  # other people, same shape
    path = tmp_path / "other.csv"
    raw.write_csv(path)
    r = invoke("prepare", cfg, f"--data.interactions={path}", f"--data.bundle={tmp_path / 'b3'}")
    assert r.exit_code == 0, r.output
    assert_clean_error(invoke("evaluate", cfg, f"--data.bundle={tmp_path / 'b3'}"), "id maps")


def test_evaluate_on_its_own_bundle_still_works(trained):
    tmp, cfg = trained
    r = invoke("evaluate", cfg)
    assert r.exit_code == 0 and "ndcg@10" in r.output, r.output


@pytest.mark.parametrize("damage", ["flip", "truncate", "config", "missing"])
def test_a_damaged_artifact_is_a_clear_error(trained, tmp_path, damage):
    tmp, cfg = trained
    art = tmp_path / "model"
    shutil.copytree(tmp / "model", art)
    tensors = art / "model.safetensors"
    data = bytearray(tensors.read_bytes())
    if damage == "flip":
        data[-3] ^= 0xFF
        tensors.write_bytes(bytes(data))
        needle = "checksum"
    elif damage == "truncate":
        tensors.write_bytes(bytes(data[: len(data) // 2]))
        needle = "model.safetensors"
    elif damage == "config":
        (art / "config.json").write_text('{"format": 2, "model": ')
        needle = "config.json:1"
    else:
        tensors.unlink()
        needle = "model.safetensors"
    assert_clean_error(invoke("evaluate", cfg, f"--out={art}"), needle)


@pytest.mark.parametrize("damage", ["truncate", "manifest", "edited", "missing"])
def test_a_damaged_bundle_is_a_clear_error(trained, tmp_path, damage):
    tmp, cfg = trained
    b = tmp_path / "bundle"
    shutil.copytree(tmp / "bundle", b)
    inter = b / "interactions.parquet"
    if damage == "truncate":
        inter.write_bytes(inter.read_bytes()[:100])
        needle = "interactions.parquet"
    elif damage == "manifest":
        (b / "manifest.json").write_text("{not json")
        needle = "manifest.json:1"
    elif damage == "edited":  # a valid file with other content: the fingerprint tells
        df = pl.read_parquet(inter)
        df.with_columns(
            pl.when(pl.col("split") == 2).then(0).otherwise(pl.col("split")).cast(pl.Int8).alias("split")
        ).write_parquet(inter)
        needle = "no longer matches"
    else:
        (b / "users.parquet").unlink()
        needle = "users.parquet"
    assert_clean_error(invoke("evaluate", cfg, f"--data.bundle={b}"), needle)


# ---- checkpoints and resume ------------------------------------------------------------------


KILL_SCRIPT = """
import json, os, sys
import torch._dynamo  # what training imports on first use: once here, not in every child
import crossrec.data.fingerprint, crossrec.kernels.bpr, crossrec.kernels.optim, safetensors.torch
import crossrec.io as io
import crossrec.training.checkpoints as tr
from crossrec.config import load_config
from crossrec.pipeline import seed_everything, train

def run(cfg_path, kill_at, log_path):
    log, calls = open(log_path, "w"), [0]
    def step(name):
        calls[0] += 1
        log.write(f"{calls[0]} {name}\\n"); log.flush()
        if calls[0] == kill_at:
            os._exit(9)  # as a kill -9: no cleanup, no finally
    def counting(fn):
        def wrapped(path, *a, **k):
            step(f"write {path}")
            return fn(path, *a, **k)
        return wrapped
    tr.save_tensors, tr.write_json = counting(tr.save_tensors), counting(tr.write_json)
    real_replace = os.replace
    def replace(a, b):  # the renames that put files and sets in place
        step(f"rename {b}")
        return real_replace(a, b)
    io.os.replace = replace
    cfg = load_config(cfg_path, ["--train.epochs=3"])
    seed_everything(cfg.seed)
    train(cfg)

# one process imports crossrec once; each run is a forked child (no torch thread pool exists yet)
codes = {}
for cfg_path, kill_at, log_path in json.loads(sys.argv[1]):
    pid = os.fork()
    if pid == 0:
        try:
            run(cfg_path, kill_at, log_path)
        finally:
            os._exit(0)
    codes[cfg_path] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps(codes))
"""


@pytest.mark.slow  # a dozen training runs killed and resumed
def test_checkpoints_are_one_atomic_set_whatever_instant_a_kill_hits(tmp_path):
    from crossrec.integrity import load_tensors

    cfg = write_tiny(tmp_path)
    assert invoke("prepare", cfg).exit_code == 0
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)

    def runs(points: dict[str, int]) -> dict[str, int]:
        """Run training once per (name, kill point); each run's exit code by name."""
        jobs = []
        for name, kill_at in points.items():
            run_cfg = tmp_path / f"{name}.yaml"
            run_cfg.write_text(cfg.read_text().replace(f"out: {tmp_path / 'model'}", f"out: {tmp_path / name}"))
            jobs.append([str(run_cfg), kill_at, str(tmp_path / f"{name}.log")])
        p = subprocess.run([sys.executable, str(script), json.dumps(jobs)], capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr
        codes = json.loads(p.stdout.strip().splitlines()[-1])
        return {name: codes[str(tmp_path / f"{name}.yaml")] for name in points}

    assert runs({"reference": 10**9}) == {"reference": 0}  # uninterrupted: the weights every resume must reproduce
    events = (tmp_path / "reference.log").read_text().splitlines()
    reference = load_tensors(tmp_path / "reference" / "model.safetensors")
    published = [
        i + 1 for i, e in enumerate(events) if e.split()[1] == "rename" and e.endswith("checkpoint/current.json")
    ]
    # Every write and rename between the first checkpoint's publication and the second's.
    # A kill hits just before the numbered event; the last point is after the pointer's rename.
    points = list(range(published[0] + 1, published[1] + 2))
    assert len(points) >= 10, events
    codes = runs({f"killed-{k}": k for k in points})
    for kill_at in points:
        name = f"killed-{kill_at}"
        assert codes[name] == 9, (name, codes)
        out, run_cfg = tmp_path / name, tmp_path / f"{name}.yaml"
        pointer = json.loads((out / "checkpoint" / "current.json").read_text())
        state = json.loads((out / "checkpoint" / pointer["set"] / "state.json").read_text())
        assert state["epoch"] == (2 if kill_at > published[1] else 1), events[kill_at - 1]
        r = invoke("train", run_cfg, "--train.epochs=3", "--resume")
        assert r.exit_code == 0, r.output
        resumed = load_tensors(out / "model.safetensors")
        assert all(torch.equal(resumed[k], reference[k]) for k in reference), f"kill at {events[kill_at - 1]}"
        assert not [q for q in (out / "checkpoint").iterdir() if "crossrec-tmp" in q.name]


def test_resume_applies_loop_options_and_refuses_the_others(tmp_path):
    cfg = write_tiny(tmp_path)
    assert invoke("prepare", cfg).exit_code == 0
    assert invoke("train", cfg, "--train.epochs=1").exit_code == 0
    assert_clean_error(invoke("train", cfg, "--train.epochs=2", "--train.lr=0.05", "--resume"), "train.lr", "0.01")
    assert_clean_error(invoke("train", cfg, "--train.epochs=2", "--model.dim=16", "--resume"), "model")
    r = invoke("train", cfg, "--train.epochs=2", "--resume")
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    assert meta["run_config"]["train"]["epochs"] == 2  # what was actually used
    resumes = meta["train_result"]["all"]["resumes"]
    assert resumes == [{"epoch": 1, "changed": {"epochs": [1, 2]}}]


# ---- every failure is a message ----------------------------------------------------------------


def test_bad_yaml_names_the_file_and_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("data:\n  bundle: x\n  columns: {user: [a,\n")
    assert_clean_error(invoke("prepare", cfg), "bad.yaml:")
    cfg.write_text("data:\n  bundle: &b x\nout: *b\n")
    assert_clean_error(invoke("prepare", cfg), "bad.yaml:3", "aliases")
    assert_clean_error(invoke("prepare", tmp_path / "nope.yaml"), "nope.yaml", "no such config file")
    assert_clean_error(invoke("prepare", tmp_path), "is a directory")


def test_a_config_cannot_blow_up(tmp_path):
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9)
    )
    cfg = tmp_path / "laughs.yaml"
    cfg.write_text(laughs)
    assert_clean_error(invoke("train", cfg), "aliases")
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 21) + "\n")
    assert_clean_error(invoke("train", big), "at most")


@pytest.mark.parametrize(
    "override,needle",
    [
        ("--data.columns={usr: u}", "data.columns.usr"),
        ("--data.item_columns={titel: t}", "data.item_columns.titel"),
        ("--train.lr=.nan", "train.lr"),
        ("--train.lr=.inf", "train.lr"),
        ("--train.lr=-1", "train.lr"),
        ("--model.dim=0", "model.dim"),
        ("--model.reg=.nan", "model.reg"),
        ("--eval.ks=[0]", "eval.ks"),
        ("--train.epochs=0", "train.epochs"),
        ("--train.device=cuda:7", "train.device"),
        ("--train.fused=true", "train.fused"),  # with lazy Adam, which has no fused form
        ("--model.name=nosuchmodel", "nosuchmodel"),
        ("--prepare.k_core=-1", "prepare.k_core"),
        ("--data.sep=;;", "data.sep"),
        ("--data.format=xlsx", "data.format"),
        ("--=1", "expected --section.key=value"),
    ],
)
def test_impossible_values_are_refused_before_anything_runs(tmp_path, override, needle):
    if override.startswith("--train.device") and __import__("torch").cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    cfg = write_tiny(tmp_path)
    assert_clean_error(invoke("train", cfg, override), needle)
    assert not (tmp_path / "model").exists()


def test_recommend_k_below_one_and_unknown_user(trained):
    tmp, cfg = trained
    from crossrec.data.bundle import Bundle

    b = Bundle.load(tmp / "bundle")
    user = b.raw_user_ids()[0]
    assert_clean_error(invoke("recommend", cfg, "--user", user, "--category", b.categories[0], "-k", "0"), "-k 0")
    assert_clean_error(invoke("recommend", cfg, "--user", "nobody", "--category", b.categories[0]), "unknown user")
    assert_clean_error(invoke("recommend", cfg, "--user", user, "--category", "nope"), "unknown category")
    assert_clean_error(invoke("evaluate", cfg, "--split", "tset"), "tset")


def test_unreadable_inputs_name_the_file(tmp_path, monkeypatch):
    cfg = write_tiny(tmp_path)
    folder = tmp_path / "adir.csv"
    folder.mkdir()
    assert_clean_error(invoke("prepare", cfg, f"--data.interactions={folder}"), "adir.csv", "a directory")
    assert_clean_error(invoke("prepare", cfg, f"--data.interactions={tmp_path / 'gone.csv'}"), "gone.csv")

    import builtins

    real = builtins.open

    def denied(file, *args, **kwargs):
        if Path(str(file)).name == "interactions.csv.gz":
            raise PermissionError(13, "Permission denied", str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)  # root ignores chmod, so deny at the call (readers stream)
    assert_clean_error(invoke("prepare", cfg), "interactions.csv.gz", "permission denied")


def test_bundle_path_that_is_not_a_bundle(trained, tmp_path):
    tmp, cfg = trained
    assert_clean_error(invoke("evaluate", cfg, f"--data.bundle={tmp_path}"), "manifest.json")
    assert_clean_error(invoke("evaluate", cfg, f"--out={tmp_path}"), "not a crossrec artifact")


def test_debug_env_shows_the_traceback(tmp_path):
    cfg = write_tiny(tmp_path)
    p = cli("train", cfg, "--train.lr=-1")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "error:" in p.stderr
    p = cli("train", cfg, "--train.lr=-1", env={"CROSSREC_DEBUG": "1"})
    assert p.returncode == 2 and "Traceback" in p.stderr


# ---- data that is almost certainly a mistake -----------------------------------------------------


@pytest.mark.parametrize(
    "content,needle",
    [
        ("user_id,item_id,category,user_id\nu1,i1,b,u2\nu2,i2,b,u3\n", "user_id"),  # duplicate header
        ("user_id,item_id,category\nu1,i\x001,b\nu2,i2,b\n", "control characters"),  # NUL in an id
        ("user_id,item_id,category,ts\nu1,i1,b,1600000000000\nu2,i2,b,1600000000\n", "between 1970 and 2100"),
        ("user_id,item_id,category,ts\nu1,i1,b,-5\nu2,i2,b,1600000000\n", "between 1970 and 2100"),
    ],
)
def test_data_that_is_almost_certainly_a_mistake_is_refused(tmp_path, content, needle):
    path = tmp_path / "in.csv"
    path.write_text(content)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data:\n  interactions: {path}\n  columns: {{timestamp: ts}}\n  bundle: {tmp_path / 'b'}\n"
        if "ts" in content.splitlines()[0]
        else f"data:\n  interactions: {path}\n  bundle: {tmp_path / 'b'}\n"
    )
    text = assert_clean_error(invoke("prepare", cfg), "in.csv:", needle)
    assert max(len(line) for line in text.splitlines()) < 400  # an excerpt, not the file
    assert not (tmp_path / "b").exists()


def test_format_and_delimiter_can_be_set_from_the_cli(tmp_path):
    path = tmp_path / "export.txt"
    path.write_text("user_id;item_id;category\nu1;i1;b\nu1;i2;b\nu2;i1;b\nu2;i2;b\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  interactions: {path}\n  bundle: {tmp_path / 'b'}\n")
    assert_clean_error(invoke("prepare", cfg), "export.txt", "data.format")
    r = invoke("prepare", cfg, "--data.format=csv")
    assert_clean_error(r, "export.txt:1", "user_id")  # read with "," the header is one column
    r = invoke("prepare", cfg, "--data.format=csv", "--data.sep=;")
    assert r.exit_code == 0, r.output


def test_ids_are_stripped_by_the_documented_rule(tmp_path):
    from crossrec.data.readers import read_interactions

    path = tmp_path / "a.csv"
    path.write_text("user_id,item_id,category\n u1 ,i1, books\nu1,\ti1,books\n")
    out = read_interactions(path)
    assert out.select("user", "item", "category").unique().rows() == [("u1", "i1", "books")]
