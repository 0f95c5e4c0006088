"""The errors crossrec raises for bad input: one base, `CrossrecError`, and one kind per cause.

The CLI (`cli_errors.guard`) prints a `CrossrecError` as `error: <message>` and exits 2 ("your input");
any other exception is a bug in crossrec: exit 1, "internal error, please report it".

    CrossrecError
    ├── InputDataError      bad input data: a file's rows, ids, an unknown user/category/dataset
    │   ├── UnknownNameError    (also a KeyError) a name that is not there: user, category, dataset
    │   └── MissingInputError   (also a FileNotFoundError) a data path that does not exist
    ├── ConfigError         a config key or value: unknown, wrongly typed, impossible
    ├── ArtifactError       a stored file crossrec wrote earlier: damaged, incomplete or foreign
    │   └── MissingArtifactError (also a FileNotFoundError) a bundle/artifact file that is not there
    ├── OutputError         an output path crossrec will not write to
    ├── RequestError        a request a running service cannot answer (serving.errors.ServingError)
    └── NumericError        (also a FloatingPointError) numbers that went non-finite: a diverging loss,
                            NaN scores

Every kind is also a `ValueError` (or the built-in it replaced: KeyError, FileNotFoundError,
FloatingPointError), so code that caught those before still catches them. The classes other
modules define (`data.schema.DataError`, `io.CorruptFileError`, `serving.artifact.ProvenanceError`,
...) subclass a kind here and stay importable where they are.

This module imports nothing from crossrec: every other module may import it.
"""

from __future__ import annotations


class CrossrecError(Exception):
    """Bad input to crossrec (data, config, paths, stored files, requests): the CLI exits 2."""


class InputDataError(CrossrecError, ValueError):
    """Input data crossrec cannot use: a file's content, an id, a split, an unknown name."""


class UnknownNameError(InputDataError, KeyError):
    """A name that is not in the data (a user, a category, a dataset, a metric); also a KeyError."""

    def __str__(self) -> str:  # the message as written, not KeyError's repr of it
        return BaseException.__str__(self)


class MissingInputError(InputDataError, FileNotFoundError):
    """A path the user gave that does not exist; also a FileNotFoundError."""


class ConfigError(CrossrecError, ValueError):
    """A configuration key or value that is unknown, of the wrong type, or impossible."""


class ArtifactError(CrossrecError, ValueError):
    """A file crossrec wrote earlier (bundle, artifact, checkpoint, store) that is damaged,
    incomplete, of another version, or used with data it does not belong to."""


class MissingArtifactError(ArtifactError, FileNotFoundError):
    """A bundle's or artifact's file that is not there; also a FileNotFoundError."""


class OutputError(CrossrecError, ValueError):
    """An output path crossrec will not write to (not its own, or busy with another run)."""


class RequestError(CrossrecError, ValueError):
    """A request a running service cannot answer (the base of `serving.errors.ServingError`)."""


class NumericError(CrossrecError, ValueError, FloatingPointError):
    """Numbers that went non-finite on the user's data and options (a diverging loss: lower
    train.lr; a model giving NaN scores); also a ValueError and a FloatingPointError."""


__all__ = [
    "ArtifactError",
    "ConfigError",
    "CrossrecError",
    "InputDataError",
    "MissingArtifactError",
    "MissingInputError",
    "NumericError",
    "OutputError",
    "RequestError",
    "UnknownNameError",
]
