"""Helpers shared by the benchmark scripts: machine facts and writing results (JSON + markdown)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from crossrec.io import write_json, write_text

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(os.environ.get("CROSSREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "commit": commit,
    }


def write_results(name: str, data: dict[str, Any], markdown: str) -> None:
    """benchmarks/results/<name>.json and <name>.md, atomically."""
    write_json(RESULTS / f"{name}.json", {"machine": machine(), **data})
    write_text(RESULTS / f"{name}.md", markdown.rstrip() + "\n")


def run_experiment(cfg: Path, out: Path, *options: str, cwd: Path | None = None) -> dict[str, Any]:
    """`crossrec experiment CFG --out=OUT OPTIONS...` in a subprocess, and its results.json; a run
    already finished in OUT (a benchmark's `--keep` folder) is read back instead of re-run. A failed
    run stops the benchmark with the end of its output."""
    if not (out / "results.json").exists():
        cmd = [sys.executable, "-m", "crossrec.cli", "experiment", str(cfg), f"--out={out}", *options]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
        if p.returncode != 0:
            raise SystemExit(p.stdout[-2000:] + p.stderr[-2000:])
    return json.loads((out / "results.json").read_text())
