"""How the CLI ends a command that failed (crossrec/cli.py): one `error:` line on stderr of at most
`MAX_ERROR_CHARS` characters, exit 2 for bad input (a `CrossrecError`, an OSError about a path or a
full disk), exit 1 with "internal error, please report it" for anything else (a bug);
`CROSSREC_DEBUG=1` adds the traceback. `guard` wraps every command."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from errno import EDQUOT, ENOSPC

import typer
from rich.console import Console

from crossrec.errors import CrossrecError

err_console = Console(stderr=True, soft_wrap=True, emoji=False)


def message(err: BaseException) -> str:
    """The user-facing text of an error: KeyError without its quotes, OSError with its path."""
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    if isinstance(err, OSError) and err.strerror:
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror.lower()}"
    return str(err)


MAX_ERROR_CHARS = 300  # an error is one line of at most this many characters, "error: " included


def one_line(text: str, limit: int = MAX_ERROR_CHARS - len("error: ")) -> str:
    """`text` on one line (every run of white space, newlines included, becomes one space), cut to
    `limit` characters with an ellipsis: a message that echoes data can never flood the terminal."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def print_error(text: str) -> None:
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(one_line(text))}", highlight=False)  # brackets stay literal


def fail(err: BaseException, code: int = 2) -> None:
    if os.environ.get("CROSSREC_DEBUG"):
        traceback.print_exception(err, file=sys.stderr)
    if code == 2:
        text = message(err)
    else:  # the report-it hint comes first, so the cut to one line never loses it
        text = (
            f"internal error, please report it (CROSSREC_DEBUG=1 shows the traceback): "
            f"{type(err).__name__}: {message(err)}"
        )
    print_error(text)
    raise typer.Exit(code=code)


# Bad input, exit 2: every CrossrecError (errors.py: data, config, stored files, outputs, requests,
# a diverging loss), and an OSError about a path (one that names its file: not found, permission
# denied, is a directory...) or a full disk. Anything else, a ValueError or KeyError included, is a
# bug in crossrec: exit 1, "internal error, please report it".
USER_ERRORS = (CrossrecError,)
_DISK_FULL = (ENOSPC, EDQUOT)  # the machine's state, not crossrec's fault


def is_user_error(err: BaseException) -> bool:
    if isinstance(err, USER_ERRORS):
        return True
    return isinstance(err, OSError) and (err.filename is not None or err.errno in _DISK_FULL)


def guard(fn):
    """Turn every exception a command raises into `error: ...` and an exit code (see the module doc)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            print_error("interrupted")
            raise typer.Exit(code=130) from None
        except Exception as e:  # bad input: exit 2; a bug: exit 1, still one line, with the type for the report
            fail(e, code=2 if is_user_error(e) else 1)

    return run
