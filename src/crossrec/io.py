"""Safe writes: atomic files and directories, output ownership, run locks, JSON I/O.

Every write goes to a temporary sibling that is renamed into place, and is created with the user's
umask (not mkstemp's 0600 / mkdtemp's 0700). Safetensors files and checksums: `crossrec.integrity`.

**Output ownership.** `prepare`, `train` and `experiment` write only into a directory that is
missing, empty, or already theirs: it holds the marker `.crossrec.json` of the same kind (or, for
directories written before markers existed, its kind's main file), and nothing but the entries
that kind writes. Anything else -- a folder of the user's own files, a file, a directory of
another kind -- raises `OutputError` and nothing is touched. `claim_output` also takes a lock
(`.<name>.lock` beside the directory), so a second run on the same path fails at once with
"busy", and removes the temporary siblings a killed write left behind.

Example:
    >>> with claim_output("runs/bundle", "bundle") as root:         # doctest: +SKIP
    ...     write_json(root / "manifest.json", {...})
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from crossrec.errors import ArtifactError, MissingArtifactError, MissingInputError, OutputError  # noqa: F401

MARKER = ".crossrec.json"
TMP_TAG = ".crossrec-tmp-"  # every temporary sibling's name contains this

# What each kind of output directory may hold (name globs), and the main file that identifies one without a marker.
KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    "bundle": (
        (
            "manifest.json",
            "interactions.parquet",
            "items.parquet",
            "users.parquet",
            "image_vectors.safetensors",
            "checksums.json",
        ),
        "manifest.json",
    ),
    "artifact": (
        (
            "model.safetensors",
            "config.json",
            "ids.json",
            "checksums.json",
            "checkpoint",
            "categories",
            "stage-*",
            "tensorboard",
            "serving",
            "versions",
            "*.lock",
        ),
        "config.json",
    ),
    "experiment": (
        ("models", "runs", "tuning", "report", "results.json", "results.md", "raw", "bundle", "*.lock"),
        "results.json",
    ),
    "report": (("report.html", "*.png", "exposure_curve.json", "*.lock"), "report.html"),
    "tuning": (
        ("study.sqlite3", "study.sqlite3-*", "trials", "tuning.json", "tuning.md", "best.yaml", "*.lock"),
        "tuning.json",
    ),
    "synthetic": (("interactions.parquet", "items.parquet"), "interactions.parquet"),  # `crossrec synth`
}

_HELD: dict[str, int] = {}  # lock files this process holds -> nesting depth


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(path: Path, directory: bool) -> None:
    """Give `path` the mode a plain create would (0666 / 0777 less the umask)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_TAG}", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        apply_umask(Path(tmp), directory=False)  # after the write: some writers recreate the file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(root: str | Path, merge: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it takes the place of `root`.

    With `merge=False` the old directory is replaced as a whole; with `merge=True` only the files
    written into the temporary directory replace their namesakes (other files in `root` stay).
    On failure the temporary directory is removed and `root` is untouched. Callers that replace a
    directory first make sure it is theirs (`claim_output`).
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}{TMP_TAG}", dir=root.parent))
    apply_umask(tmp, directory=True)
    try:
        yield tmp
        if not root.exists():
            os.replace(tmp, root)
        elif merge:
            for f in tmp.iterdir():
                if f.is_dir() and (root / f.name).is_dir():
                    shutil.rmtree(root / f.name)
                os.replace(f, root / f.name)
        else:
            old = root.with_name(f".{root.name}{TMP_TAG}old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(root, old)
            os.replace(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def clean_temporaries(directory: str | Path, name: str | None = None) -> list[Path]:
    """Remove temporary siblings a killed write left in `directory` (only those of `name` if given)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    pattern = f".{name}{TMP_TAG}*" if name is not None else f".*{TMP_TAG}*"
    removed = []
    for p in directory.iterdir():
        if fnmatch.fnmatchcase(p.name, pattern):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def output_kind(root: str | Path) -> str | None:
    """The kind of crossrec output directory `root` is (by its marker or main file), else None."""
    root = Path(root)
    marker = root / MARKER
    if marker.is_file():
        try:
            kind = json.loads(marker.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            return None
        return kind if kind in KINDS else None
    for kind, (_, main) in KINDS.items():
        if (root / main).is_file() and _foreign(root, kind) == []:
            return kind
    return None


def _foreign(root: Path, kind: str) -> list[str]:
    """Entries of `root` that a `kind` directory does not hold (temporaries excluded)."""
    patterns = KINDS[kind][0] + (MARKER,)
    return sorted(
        p.name
        for p in root.iterdir()
        if TMP_TAG not in p.name and not any(fnmatch.fnmatchcase(p.name, pat) for pat in patterns)
    )


def check_output(root: str | Path, kind: str, what: str) -> Path:
    """Raise `OutputError` unless `root` is missing, an empty directory, or a `kind` directory.

    Args:
        root: the output directory.
        kind: "bundle", "artifact" or "experiment".
        what: the config key or option that named it, for the message (e.g. "data.bundle").
    """
    root = Path(root)
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    if not root.exists() and not root.is_symlink():
        return root
    if root.is_symlink() and not root.exists():
        raise OutputError(f"{what}={str(root)!r} is a broken symbolic link; expected a directory")
    if not root.is_dir():
        raise OutputError(f"{what}={str(root)!r} is a file, not a directory; choose a new directory for the {kind}")
    try:
        entries = [p for p in root.iterdir() if TMP_TAG not in p.name]
    except PermissionError:
        raise OutputError(f"{what}={str(root)!r}: permission denied") from None
    if not entries:
        return root
    have = output_kind(root)
    if have is None:
        shown = ", ".join(sorted(p.name for p in entries)[:5]) + (", ..." if len(entries) > 5 else "")
        raise OutputError(
            f"{what}={str(root)!r} is a directory crossrec did not write (it holds {shown}); "
            f"refusing to write the {kind} there: choose a missing or empty directory"
        )
    if have != kind:
        raise OutputError(f"{what}={str(root)!r} holds a crossrec {have}, not {_a(kind)}; choose another directory")
    foreign = _foreign(root, kind)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise OutputError(
            f"{what}={str(root)!r} is a crossrec {kind} but also holds files crossrec did not write "
            f"({shown}); move them away or choose another directory"
        )
    return root


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


FILE_MARK = "written_by"  # the key that marks a single JSON output file as crossrec's


def check_output_file(path: str | Path, kind: str, what: str) -> Path:
    """Raise `OutputError` unless `path` may receive a single-file output of `kind`.

    The parent directory must exist (a typo in it is an error, not a new tree), and an existing
    `path` must be a JSON file crossrec wrote for the same `kind` (key `written_by`); anything
    else -- your own file, a directory, a link to elsewhere -- is refused and left untouched.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{what}={_clip(path)}: its directory {_clip(parent)} does not exist; create it first")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise OutputError(f"{what}={_clip(path)} is not a regular file; choose a new file name")
    if path.exists():
        try:
            mark = json.loads(path.read_bytes()[: 1 << 24]).get(FILE_MARK, {})
        except (OSError, ValueError, AttributeError):
            mark = {}
        if not isinstance(mark, dict) or mark.get("kind") != kind:
            raise OutputError(
                f"{what}={_clip(path)} is a file crossrec did not write; refusing to replace it: choose a new file name"
            )
    return path


def write_output_json(path: str | Path, kind: str, data: dict[str, Any], what: str) -> Path:
    """Write `data` as the single-file output `path` (checked by `check_output_file`), atomically,
    with the `written_by` mark that lets a later run replace it."""
    from crossrec import __version__

    path = check_output_file(path, kind, what)
    write_json(path, {FILE_MARK: {"kind": kind, "crossrec_version": __version__}, **data})
    return path


def _clip(path: Path, width: int = 120) -> str:
    text = repr(str(path))
    return text if len(text) <= width else text[: width - 4] + "...'"


def name_slug(index: int, name: str, width: int = 40) -> str:
    """A directory name crossrec makes for the `index`-th thing called `name` (a category, a stage).

    Names from the data are never paths: `../x`, `/abs`, `..`, NUL or 300 characters all become
    `<index>-<ascii letters, digits, . _ ->` of at most `width` characters after the index, so
    the name cannot climb out of its parent, and the index keeps two names that slug alike apart.
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:width].lstrip(".") or "_"
    return f"{index}-{slug}"


def write_marker(root: str | Path, kind: str) -> None:
    """Mark `root` (an existing directory) as a crossrec output of `kind`."""
    from crossrec import __version__

    path = Path(root) / MARKER
    if not path.is_file():
        write_json(path, {"kind": kind, "crossrec_version": __version__})


@contextmanager
def run_lock(root: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `root` (the file `.<name>.lock` beside it) for the block.

    A second holder fails at once with `OutputError` ("busy"). The lock is an flock, so a killed
    run releases it (its lock file stays and is reused); a finished run removes the file.
    """
    root = Path(root)
    parent = root.parent if str(root.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    lock = parent / f".{root.name}.lock"
    key = str(lock.resolve())
    if key in _HELD:  # nested use in one process (the demo runs an experiment in its own folder)
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    fd = _acquire(lock, root, what)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
            lock.unlink(missing_ok=True)  # still holding it: a waiter re-checks the inode (see _acquire)
    finally:
        os.close(fd)  # closing releases the flock


def _acquire(lock: Path, root: Path, what: str) -> int:
    """Open and flock `lock`; retry when the file was unlinked by a releasing holder meanwhile."""
    import fcntl

    for _ in range(10):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise OutputError(
                f"{what}={str(root)!r} is busy: another crossrec run{f' (pid {holder})' if holder else ''} "
                "is writing it; wait for it to finish or choose another path"
            ) from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # we locked a file its holder had just unlinked: take the new one
    raise OutputError(f"{what}={str(root)!r}: could not take its lock {lock}")


@contextmanager
def claim_output(root: str | Path, kind: str, what: str) -> Iterator[Path]:
    """Lock `root`, check that it may be written (`check_output`), clean stale temporaries.

    The directory itself is not created here; writers create it (atomically) and call
    `write_marker`.
    """
    root = Path(root)
    if root.name in ("", ".", ".."):
        root = root.resolve()
    with run_lock(root, what):
        check_output(root, kind, what)
        clean_temporaries(root.parent, root.name)
        if root.is_dir():
            clean_temporaries(root)
        yield root


class CorruptFileError(ArtifactError):
    """A file crossrec wrote earlier that cannot be read back (truncated, edited, wrong checksum)."""


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Read a JSON file crossrec wrote; a missing, unreadable or damaged file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise MissingArtifactError(f"{str(path)!r} not found; expected {_a(what)}")
    try:
        return json.loads(path.read_text())
    except UnicodeDecodeError as e:
        raise CorruptFileError(
            f"{path}: expected {_a(what)} in UTF-8 JSON, got a byte that is not UTF-8 ({e.reason})"
        ) from None
    except json.JSONDecodeError as e:
        raise CorruptFileError(f"{path}:{e.lineno}: expected {_a(what)} in JSON: {e.msg} at column {e.colno}") from None
