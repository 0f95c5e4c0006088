"""One error base: every crossrec error is a CrossrecError; the CLI exits 2 for those, 1 for bugs."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil

import pytest
from typer.testing import CliRunner

import crossrec
from crossrec import errors
from crossrec.cli import app

runner = CliRunner()


def _exception_classes() -> list[type]:
    """Every exception class defined in a crossrec module (modules whose optional dependencies are
    missing are skipped: their classes cannot be reached either)."""
    found = []
    for info in pkgutil.walk_packages(crossrec.__path__, "crossrec."):
        try:
            module = importlib.import_module(info.name)
        except ImportError:
            continue
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == info.name and issubclass(obj, BaseException):
                found.append(obj)
    return found


def test_every_crossrec_error_is_a_crossrec_error():
    classes = _exception_classes()
    names = {c.__name__ for c in classes}
    assert {
        "ConfigError",
        "DataError",
        "CorruptFileError",
        "ProvenanceError",
        "ServingError",
        "StoreError",
        "ResumeError",
        "PseudonymKeyError",
        "OutputError",
        "EncoderError",
    } <= names
    # private classes (a leading underscore) are control flow inside one module, never raised to a caller
    public = [c for c in classes if not c.__name__.startswith("_")]
    stray = [f"{c.__module__}.{c.__name__}" for c in public if not issubclass(c, errors.CrossrecError)]
    assert not stray, f"exception classes outside the CrossrecError hierarchy: {stray}"


def test_old_names_stay_importable_and_value_errors():
    from crossrec.artifact import ProvenanceError
    from crossrec.data.pseudonym import PseudonymKeyError
    from crossrec.data.schema import DataError
    from crossrec.encoders.text import EncoderError
    from crossrec.io import CorruptFileError, OutputError
    from crossrec.serving.errors import ServingError
    from crossrec.serving.store import StoreError
    from crossrec.training.trainer import ResumeError
    from crossrec.typed import ConfigError

    kinds = {
        DataError: errors.InputDataError,
        ConfigError: errors.ConfigError,
        ResumeError: errors.ConfigError,
        PseudonymKeyError: errors.ConfigError,
        EncoderError: errors.ConfigError,
        OutputError: errors.OutputError,
        CorruptFileError: errors.ArtifactError,
        ProvenanceError: errors.ArtifactError,
        StoreError: errors.ArtifactError,
        ServingError: errors.RequestError,
    }
    for cls, kind in kinds.items():
        assert issubclass(cls, kind) and issubclass(cls, ValueError), cls


def test_kinds_keep_the_builtin_they_replaced():
    assert issubclass(errors.UnknownNameError, KeyError)
    assert str(errors.UnknownNameError("unknown user 'u1'")) == "unknown user 'u1'"  # not KeyError's repr
    assert issubclass(errors.MissingInputError, FileNotFoundError)
    assert issubclass(errors.MissingArtifactError, FileNotFoundError)
    assert issubclass(errors.NumericError, FloatingPointError)
    for kind in (
        errors.InputDataError,
        errors.ConfigError,
        errors.ArtifactError,
        errors.OutputError,
        errors.RequestError,
        errors.NumericError,
    ):
        assert issubclass(kind, errors.CrossrecError) and issubclass(kind, ValueError)


def test_errors_module_imports_nothing_from_crossrec():
    tree = ast.parse(inspect.getsource(errors))
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.split(".")[0] == "crossrec"]


def _prepare_raising(monkeypatch, exc: BaseException):
    import crossrec.pipeline

    def boom(cfg):
        raise exc

    monkeypatch.setattr(crossrec.pipeline, "prepare_data", boom)
    return runner.invoke(app, ["prepare"])


@pytest.mark.parametrize("exc", [KeyError("user"), ValueError("bad shape"), TypeError("oops"), OSError("no path")])
def test_a_bug_exits_1_as_an_internal_error(monkeypatch, exc):
    r = _prepare_raising(monkeypatch, exc)
    assert r.exit_code == 1, r.output
    assert "internal error, please report it" in r.output
    assert type(exc).__name__ in r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize(
    "exc",
    [
        errors.ConfigError("train.lr=-1; expected a number > 0"),
        errors.UnknownNameError("unknown user 'nobody'"),
        errors.MissingInputError("no such file: 'x.csv'"),
        errors.NumericError("loss became nan at epoch 1; lower train.lr"),
        FileNotFoundError(2, "No such file or directory", "/nowhere/x.csv"),  # an OSError about a path
        PermissionError(13, "Permission denied", "/root/x.csv"),
    ],
)
def test_bad_input_exits_2_with_its_message(monkeypatch, exc):
    r = _prepare_raising(monkeypatch, exc)
    assert r.exit_code == 2, r.output
    assert "internal error" not in r.output
    text = str(exc) if isinstance(exc, errors.CrossrecError) else exc.filename
    assert text in " ".join(r.output.split())


def test_interrupt_exits_130(monkeypatch):
    r = _prepare_raising(monkeypatch, KeyboardInterrupt())
    assert r.exit_code == 130
    assert "interrupted" in r.output
