"""Helpers shared by the benchmark scripts: machine facts and writing results (JSON + markdown)."""

from __future__ import annotations

import os
import platform
import subprocess
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
