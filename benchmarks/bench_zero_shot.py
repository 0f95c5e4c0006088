"""Zero-shot categories against warm, and the ceiling (issue 37, item 4): for each held-out
category, the warm runs and the zero-shot run, then `zero_shot_share.py` on the same test rows.

Per dataset, one warm run (`configs/experiments/<dataset>.yaml`, seed 0) of popularity, the ID
flagship and the flagship with a text-only item tower (`item_tower: text`: every item read from
its text alone, trained with the category's interactions); per held-out category, one zero-shot run
(`configs/experiments/<dataset>-zero-shot.yaml --prepare.zero_shot_category=C`). The text-only
warm flagship is the reference for what the item text can carry at all: it reads the same text as
the zero-shot model and has the category's own interactions besides, which a zero-shot model
never has. Each run keeps its own Bundle, so this script does not share a folder with other runs.

    python benchmarks/bench_zero_shot.py [--datasets anime-mal ...] [--keep DIR]
    # -> benchmarks/results/text_zero-shot_like-for-like.{json,md} (a row per held-out category)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run_experiment  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = {"amazon-arts-office": ["Arts_Crafts_and_Sewing", "Office_Products"], "anime-mal": ["Movie", "Music"]}
TEXT_ONLY = "crossrec-textonly"


def run(cfg: Path, out: Path, extra: list[str]) -> None:
    run_experiment(cfg, out, "--seeds=[0]", f"--data.bundle={out / 'bundle'}", *extra)


def warm_models(cfg: Path) -> list[dict]:
    """The experiment's popularity and ID flagship entries, and the flagship entry with a text-only
    item tower."""
    entries = {m["label"]: m for m in yaml.safe_load(cfg.read_text())["models"]}
    text_only = {**entries["crossrec"], "label": TEXT_ONLY, "item_tower": "text"}
    text_only.pop("flagship", None)
    return [entries["pop"], entries["crossrec"], text_only]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(HELD_OUT), choices=list(HELD_OUT))
    ap.add_argument("--keep", help="a folder for the runs, kept (finished runs are reused by a rerun)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-zero-shot-") as t:
        work = Path(args.keep or t).resolve()
        for ds in args.datasets:
            cfg = ROOT / "configs" / "experiments" / f"{ds}.yaml"
            warm = work / f"{ds}-warm"
            run(cfg, warm, [f"--models={json.dumps(warm_models(cfg))}"])
            for cat in HELD_OUT[ds]:
                zs = work / f"{ds}-zero-shot-{cat}"
                zs_cfg = ROOT / "configs" / "experiments" / f"{ds}-zero-shot.yaml"
                run(zs_cfg, zs, [f"--prepare.zero_shot_category={cat}"])
                model = "models/{}/seed-0"
                cmd = [sys.executable, str(ROOT / "benchmarks" / "zero_shot_share.py"), ds, cat]
                cmd += [str(warm / "bundle"), str(warm / model.format("crossrec"))]
                cmd += [str(zs / "bundle"), str(zs / model.format("crossrec-text"))]
                cmd += ["--textknn", str(zs / model.format("textknn")), "--pop", str(warm / model.format("pop"))]
                cmd += ["--text-warm", str(warm / model.format(TEXT_ONLY))]
                subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
