"""The demo runs end to end and its report covers every model, category and slice."""

from __future__ import annotations

import json

import pytest

from crossrec.data.synthetic import tiny_config
from crossrec.demo import DEMO_MODELS, run_demo


@pytest.mark.slow
def test_demo_writes_the_per_category_report(tmp_path):
    # The whole pipeline on the tiny world (the default one takes minutes; this checks the report's
    # shape, not its numbers): every model, category and slice still appears.
    table = run_demo(tmp_path, seed=0, epochs=2, world=tiny_config(seed=0))
    md = (tmp_path / "results.md").read_text()
    assert "protocol: full ranking" in md and "gain crossrec" in md
    for entry in DEMO_MODELS:
        assert entry["label"] in md
    for cat in ("books", "electronics", "kitchen", "garden", "ALL"):
        assert cat in md
    assert {"all", "warm", "new_to_category", "cold_item"} <= set(table["slice"].to_list())
    data = json.loads((tmp_path / "results.json").read_text())
    assert {r["model"] for r in data["summary"]} == {e["label"] for e in DEMO_MODELS}
    assert (tmp_path / "models" / "bprmf-single" / "seed-0" / "model.safetensors").exists()
