"""Write the CLI reference (reference/cli.md) from the typer app itself.

Runs inside `mkdocs build` through mkdocs-gen-files; `python docs/gen_cli.py` prints the page.
Every command's help, arguments and options come from `crossrec.cli.app`, so the page cannot
drift from the code.
"""

from __future__ import annotations

import inspect
import sys

import typer.main

from crossrec.cli import app


def _param_row(p, ctx) -> str:
    if getattr(p, "param_type_name", "") == "argument":
        name = f"`{(p.metavar or p.name).upper()}`"
        kind = "argument"
    else:
        opts = [*p.opts, *p.secondary_opts]
        name = " / ".join(f"`{o}`" for o in opts)
        kind = "flag" if getattr(p, "is_flag", False) else "option"
    help_text = (getattr(p, "help", None) or "").replace("\n", " ").replace("|", "\\|")
    default = p.default if not callable(p.default) else None
    shown = "" if default in (None, (), [], False) else f"`{default}`"
    if p.required:
        shown = "required"
    ann = getattr(getattr(p, "type_descriptor", None), "annotation", None)
    type_name = getattr(ann, "__name__", None) or str(ann or "")
    type_name = type_name.replace("typing.", "").replace("|", "or")
    return f"| {name} | {kind} | {type_name} | {shown} | {help_text} |"


def render() -> str:
    group = typer.main.get_command(app)
    # typer vendors click (typer._click), so contexts come from the command's own classes
    ctx = group.make_context("crossrec", [], resilient_parsing=True)
    lines = [
        "# CLI reference",
        "",
        "Generated from the typer app (`crossrec.cli.app`) by `docs/gen_cli.py` at build time.",
        "",
    ]
    if group.help:
        lines += [inspect.cleandoc(group.help), ""]
    lines += [
        "Every command that takes a `CONFIG` also takes dotted overrides after it "
        "(`--train.lr=3e-4 --model.dim=128`); see [Configuration](../user-guide/prepare.md#configuration).",
        "",
    ]
    commands = group.list_commands(ctx)
    lines += ["| command | what it does |", "| --- | --- |"]
    for name in commands:
        cmd = group.get_command(ctx, name)
        short = cmd.get_short_help_str(limit=120).replace("|", "\\|") if cmd else ""
        lines.append(f"| [`{name}`](#{name}) | {short} |")
    lines.append("")
    for name in commands:
        cmd = group.get_command(ctx, name)
        if cmd is None:
            continue
        sub = cmd.make_context(name, [], parent=ctx, resilient_parsing=True)
        usage = " ".join(cmd.collect_usage_pieces(sub))
        lines += [f"## {name}", "", "```", f"crossrec {name} {usage}".rstrip(), "```", ""]
        if cmd.help:
            lines += [inspect.cleandoc(cmd.help).replace("\b\n", ""), ""]
        params = [p for p in cmd.get_params(sub) if p.name != "help"]
        if params:
            lines += ["| name | kind | type | default | help |", "| --- | --- | --- | --- | --- |"]
            lines += [_param_row(p, sub) for p in params]
            lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__" and "mkdocs" not in sys.modules:
    sys.stdout.write(render())
else:
    import mkdocs_gen_files

    with mkdocs_gen_files.open("reference/cli.md", "w") as fh:
        fh.write(render())
