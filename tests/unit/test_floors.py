"""The import order of ../shared/ARCHITECTURE.md ("Floors"): a module imports only from its own
floor or below, lazy and TYPE_CHECKING imports included, and no two files import each other.

Floors, lowest first (a package's modules share its floor):
io, integrity, typed, errors, extras, collectives, kernels -> data -> encoders -> models -> evaluation
-> training -> artifact, distributed -> config, pipeline, update -> experiment -> serving -> cli, demo.
`collectives` (process-group primitives the loop and the evaluator call) sits with `io`;
`distributed` (launching and joining the group) stays above training. `integrity` (checksummed
files) imports `io`, never the reverse.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
FLOORS = [
    (
        "crossrec",
        "crossrec.io",
        "crossrec.integrity",
        "crossrec.typed",
        "crossrec.errors",
        "crossrec.extras",
        "crossrec.collectives",
        "crossrec.kernels",
    ),
    ("crossrec.data",),
    ("crossrec.encoders",),
    ("crossrec.models",),
    ("crossrec.evaluation",),
    ("crossrec.training",),
    ("crossrec.artifact", "crossrec.distributed"),
    ("crossrec.config", "crossrec.pipeline", "crossrec.update"),
    ("crossrec.experiment",),
    ("crossrec.serving",),
    ("crossrec.cli", "crossrec.cli_errors", "crossrec.demo"),
]


def floor(module: str) -> int:
    """The floor of a module: its longest declared prefix (`crossrec` itself: the package root)."""
    best, length = None, -1
    for i, names in enumerate(FLOORS):
        for name in names:
            if (
                (module == name or module.startswith(name + "."))
                and len(name) > length
                and (name != "crossrec" or module == "crossrec")
            ):
                best, length = i, len(name)
    assert best is not None, f"{module} is on no floor: add it to FLOORS (and to ARCHITECTURE's order)"
    return best


def module_of(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    base = SRC / name.replace(".", "/")
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every crossrec import in the file: top-level, lazy and TYPE_CHECKING."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("crossrec")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("crossrec"):
            subs = [f"{node.module}.{a.name}" for a in node.names if is_module(f"{node.module}.{a.name}")]
            out += [(node.lineno, m) for m in subs] or [(node.lineno, node.module)]
    return out


def graph() -> dict[str, list[tuple[int, str]]]:
    return {module_of(p): imports(p) for p in sorted((SRC / "crossrec").rglob("*.py"))}


def test_no_import_climbs_a_floor():
    climbs = [
        f"{m} (floor {floor(m)}) imports {t} (floor {floor(t)}) at line {line}"
        for m, targets in graph().items()
        for line, t in targets
        if floor(t) > floor(m)
    ]
    assert not climbs, "imports that climb a floor:\n" + "\n".join(climbs)


def test_no_two_files_import_each_other():
    g = {m: {t for _, t in targets if t != m} for m, targets in graph().items()}
    pairs = sorted({tuple(sorted((a, b))) for a, ts in g.items() for b in ts if a in g.get(b, set())})
    assert not pairs, f"files that import each other: {pairs}"


def test_every_module_is_on_a_floor():
    for m in graph():
        floor(m)
