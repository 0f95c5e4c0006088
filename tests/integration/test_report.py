"""`crossrec report`: one self-contained HTML page whose numbers are results.json's, plus PNGs."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from crossrec.cli import app
from crossrec.experiment import load_experiment, run_experiment
from crossrec.experiment.tune import TuneBudget, tune_experiment

TRAIN = {"epochs": 2, "batch_size": 512, "lr": 0.01, "progress": False, "checkpoint": False}


def test_report_renders_offline_with_the_results_numbers(tiny_bundle, tmp_path):
    run = tmp_path / "exp"
    cfg = load_experiment(
        data={
            "data": {"bundle": str(tiny_bundle.root)},
            "train": TRAIN,
            "eval": {"ks": [5, 10]},
            "seeds": [0, 1],
            "out": str(run),
            "models": [
                {"label": "pop", "name": "pop", "single_category": True},
                {"label": "mf-single", "name": "mf", "mode": "single", "dim": 8},
                {"label": "flag", "name": "mf", "dim": 8, "flagship": True},
            ],
        }
    )
    run_experiment(cfg, bundle=tiny_bundle)
    tune_experiment(cfg, TuneBudget(trials=2), tmp_path / "exp-tune", bundle=tiny_bundle, only=["flag"])
    got = CliRunner().invoke(app, ["report", str(run), "--exposure-curve", "flag"])
    assert got.exit_code == 0, got.output
    page = (run / "report" / "report.html").read_text()
    pngs = sorted(p.name for p in (run / "report").glob("*.png"))
    assert {
        "per_category.png",
        "cold_start.png",
        "metric_vs_k.png",
        "learning_curves.png",
        "exposure.png",
        "exposure_curve.png",
        "tuning.png",
    } <= set(pngs)
    assert page.count('src="data:image/png;base64,') == len(pngs)  # every figure embedded
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from the network
    assert "<script" not in page
    res = json.loads((run / "results.json").read_text())
    for check in res["acceptance"]:  # the acceptance table's numbers
        assert f"{check['value']:.4f}" in page
    for row in res["summary"]:  # every mean ± std of the first metric
        if row["n_seeds"] == 2:
            assert f"{row['ndcg@10']:.4f} ± {row['ndcg@10_std']:.4f}" in page
    for row in res["beyond"]:
        if row["category"] == "ALL":
            assert f"{row['exposure_gap@10']:.4f}" in page
    curve = json.loads((run / "report" / "exposure_curve.json").read_text())
    assert curve["model"] == "flag" and [p["weight"] for p in curve["points"]][0] == 0.0
    assert "Tuning history" in page and "flag" in page
    run_experiment(cfg, bundle=tiny_bundle)  # the experiment directory stays usable with its report inside
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    refused = CliRunner().invoke(app, ["report", str(run), "--out", str(mine)])
    assert refused.exit_code == 2 and "did not write" in refused.output
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
