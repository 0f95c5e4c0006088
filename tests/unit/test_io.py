"""Direct tests of crossrec/io.py (atomic writes, output ownership, locks) and integrity.py (checksummed tensors)."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from crossrec.integrity import file_sha256, load_tensors, save_tensors
from crossrec.io import (
    CorruptFileError,
    OutputError,
    atomic_dir,
    atomic_path,
    check_output,
    claim_output,
    clean_temporaries,
    output_kind,
    read_json,
    run_lock,
    write_json,
    write_marker,
)


def test_atomic_path_publishes_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert not target.exists()  # not visible until the block ends
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_dir_replaces_or_merges(tmp_path):
    root = tmp_path / "d"
    with atomic_dir(root) as tmp:
        (tmp / "x").write_text("1")
        (tmp / "y").write_text("1")
    with atomic_dir(root) as tmp:  # replace: y is gone
        (tmp / "x").write_text("2")
    assert sorted(p.name for p in root.iterdir()) == ["x"]
    with atomic_dir(root, merge=True) as tmp:  # merge: x stays, z joins
        (tmp / "z").write_text("3")
    assert sorted(p.name for p in root.iterdir()) == ["x", "z"] and (root / "x").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_writes_follow_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        write_json(tmp_path / "f.json", {"a": 1})
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o664
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o775


def test_check_output_rules(tmp_path):
    assert check_output(tmp_path / "missing", "bundle", "x") == tmp_path / "missing"
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", "bundle", "x")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("user data")
    with pytest.raises(OutputError, match="did not write.*notes.txt"):
        check_output(mine, "bundle", "data.bundle")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_output(tmp_path / "file", "bundle", "x")
    ours = tmp_path / "ours"
    ours.mkdir()
    write_marker(ours, "artifact")
    (ours / "model.safetensors").write_bytes(b"")
    assert output_kind(ours) == "artifact"
    check_output(ours, "artifact", "out")
    with pytest.raises(OutputError, match="holds a crossrec artifact, not a bundle"):
        check_output(ours, "bundle", "x")
    (ours / "thesis.pdf").write_bytes(b"")
    with pytest.raises(OutputError, match="thesis.pdf"):
        check_output(ours, "artifact", "out")


def test_lock_is_exclusive_reentrant_and_removed_on_release(tmp_path):
    import subprocess
    import sys

    root = tmp_path / "out"
    code = (
        "import sys; from crossrec.io import run_lock, OutputError\n"
        "try:\n    with run_lock(sys.argv[1], 'out'): print('got it')\n"
        "except OutputError as e: print(e)"
    )
    with run_lock(root, "out"):
        with run_lock(root, "out"):  # the same process may nest
            p = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True)
            assert "busy" in p.stdout and str(os.getpid()) in p.stdout
    assert not (tmp_path / ".out.lock").exists()
    p = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True)
    assert "got it" in p.stdout


def test_claim_output_cleans_stale_temporaries(tmp_path):
    stale = tmp_path / ".b.crossrec-tmp-x1"
    stale.mkdir()
    (tmp_path / ".other.crossrec-tmp-y").write_text("not ours to judge here")
    with claim_output(tmp_path / "b", "bundle", "data.bundle"):
        pass
    assert not stale.exists() and (tmp_path / ".other.crossrec-tmp-y").exists()
    assert clean_temporaries(tmp_path) == [tmp_path / ".other.crossrec-tmp-y"]


def test_tensors_round_trip_and_checksums(tmp_path):
    path = tmp_path / "t.safetensors"
    save_tensors(path, {"w": torch.arange(6.0).view(2, 3)})
    digest = file_sha256(path)
    assert torch.equal(load_tensors(path, sha256=digest)["w"], torch.arange(6.0).view(2, 3))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="checksum"):
        load_tensors(path, sha256=digest)
    path.write_bytes(bytes(data[:10]))
    with pytest.raises(CorruptFileError, match="safetensors"):
        load_tensors(path)


def test_read_json_names_file_and_line(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{\n  "a": 1,\n  oops\n}')
    with pytest.raises(CorruptFileError, match=r"x.json:3"):
        read_json(bad, "config")
    with pytest.raises(FileNotFoundError, match="expected a config"):
        read_json(tmp_path / "none.json", "config")
