"""Capabilities are declared, not probed (docs STYLE §10): no `hasattr(...)` anywhere in src, and no
`getattr(...)` on a model-like name. A model says what it can do through the runtime-checkable
protocols of models/base.py, and callers ask with `isinstance(model, Proto)`; the contract suite
(tests/unit/models/test_contract.py) pins each model's set.

An AST walk, so comments and strings do not count. A use that is not about a model is allowed
below, by file and call text, with the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "crossrec"

# Names that hold a model (or a model's part) at a call site: `model`, `m`, `sub`, `self.model`,
# `art.model`, `model.encoder`, ... (an attribute chain counts when any link is model-like).
MODEL_NAMES = {"model", "models", "m", "sub", "subs", "wrapped", "inner", "net", "module_", "recommender"}

ALLOWED = {
    # (path under src/crossrec, call as ast.unparse writes it): why it is not a model probe
    ("integrity.py", "hasattr(value, 'dtype')"): "duck-typing a tensor value being written, not a model",
    ("integrity.py", "hasattr(value, 'shape')"): "duck-typing a tensor value being written, not a model",
    ("models/registry.py", "hasattr(config_cls, 'section')"): "a config dataclass's option section, not a model",
    ("serving/bodies.py", "hasattr(self, '_json')"): "the request's parsed-body cache (Starlette's own pattern)",
    ("experiment/spec.py", "getattr(model, section)"): "`model` is a ModelRun (an experiment entry), not a model",
    ("experiment/tune_output.py", "getattr(m, key)"): "`m` is a ModelRun (an experiment entry), not a model",
}


def _names(node: ast.expr) -> list[str]:
    """The links of a name or attribute chain (`self.model.items` -> ["self", "model", "items"])."""
    out: list[str] = []
    while isinstance(node, ast.Attribute):
        out.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        out.append(node.id)
    return out[::-1]


def _model_like(node: ast.expr) -> bool:
    return any(n in MODEL_NAMES or n.endswith("_model") for n in _names(node))


def probes() -> list[tuple[str, int, str]]:
    """(path, line, call) of every hasattr call, and of every getattr on a model-like name, in src."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args):
                continue
            if node.func.id == "hasattr" or (node.func.id == "getattr" and _model_like(node.args[0])):
                found.append((rel, node.lineno, ast.unparse(node)))
    return found


def test_no_capability_probes_in_src():
    bad = [f"src/crossrec/{rel}:{line}: {call}" for rel, line, call in probes() if (rel, call) not in ALLOWED]
    assert not bad, (
        "probe(s) of what an object can do; declare a protocol in models/base.py and use "
        "isinstance (or allow a non-model use in ALLOWED, with the reason):\n" + "\n".join(bad)
    )


def test_every_allowed_probe_still_exists():
    """An allow-list entry whose call is gone is stale: drop it."""
    present = {(rel, call) for rel, _, call in probes()}
    assert set(ALLOWED) <= present, sorted(set(ALLOWED) - present)


def test_the_walk_finds_a_probe():
    tree = ast.parse("ok = hasattr(x, 'a')\nbad = getattr(self.model, 'lenders', None)\nfine = getattr(cfg, 'lr')")
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    flagged = [
        ast.unparse(c) for c in calls if c.func.id == "hasattr" or (c.func.id == "getattr" and _model_like(c.args[0]))
    ]
    assert flagged == ["hasattr(x, 'a')", "getattr(self.model, 'lenders', None)"]
