"""The sentence encoder trained with the flagship (encoder.finetune): LoRA and top layers, end to end
on the tiny world; the artifact keeps the re-encoded vectors, not the language model."""

from __future__ import annotations

import pytest
import torch

from crossrec.artifact import load_artifact
from crossrec.config import load_config
from crossrec.pipeline import evaluate, seed_everything, train


@pytest.mark.slow  # fine-tunes MiniLM
@pytest.mark.parametrize("mode", ["lora", "top_layers"])
def test_finetuning_runs_end_to_end_and_moves_the_vectors(mode, tiny_bundle, tiny_text, tmp_path):
    cfg = load_config(
        None,
        [
            f"--data.bundle={tiny_bundle.root}",
            "--model.name=crossrec",
            "--model.dim=16",
            "--model.item_tower=text+id",
            "--model.history.length=10",
            "--train.epochs=1",  # one epoch trains the encoder and re-encodes the catalogue once
            "--train.batch_size=1024",
            "--train.progress=false",
            "--train.checkpoint=false",
            f"--encoder.finetune={mode}",
            "--encoder.train_items=16",
            "--encoder.top_layers=1",
            "--encoder.lr=1e-3",
            f"--out={tmp_path / 'm'}",
        ],
    )
    seed_everything(0)
    art = train(cfg, tiny_bundle)
    tower = art.model.items
    assert tower.live is None, "the language model is dropped when training ends"
    moved = (tower.text_ - torch.from_numpy(tiny_text)).norm(dim=1)
    assert moved.max() > 1e-3, "the catalogue was re-encoded with the trained encoder"
    assert torch.allclose(tower.text_.norm(dim=1)[moved > 0], torch.ones(int((moved > 0).sum())), atol=1e-4)

    loaded = load_artifact(tmp_path / "m")  # safetensors without any language-model weight
    assert not any("live" in k for k in loaded.model.state_dict())
    users = torch.arange(20)
    with torch.no_grad():
        for c in range(tiny_bundle.n_categories):
            assert torch.allclose(art.model.score(users, c), loaded.model.score(users, c), atol=1e-5)
    assert evaluate(tmp_path / "m", tiny_bundle).metric("ndcg@10") > 0


def test_finetune_needs_a_model_that_trains_text(tiny_bundle, tmp_path):
    cfg = load_config(
        None,
        [
            f"--data.bundle={tiny_bundle.root}",
            "--model.name=mf",
            "--encoder.finetune=lora",
            f"--out={tmp_path / 'm'}",
            "--train.epochs=1",
            "--train.progress=false",
        ],
    )
    with pytest.raises(ValueError, match="does not train a text encoder"):
        train(cfg, tiny_bundle)


def test_a_zero_shot_category_trains_and_is_recommended_from_text(tiny_text, tmp_path):
    from crossrec.data.prepare import PrepareConfig, prepare
    from crossrec.data.synthetic import generate, tiny_config

    inter, items = generate(tiny_config())
    first = sorted(set(items["category"].to_list()))[0]
    bundle = prepare(inter, items, PrepareConfig(zero_shot_category=first), tmp_path / "b")
    assert bundle.manifest["counts"][first]["train"] == 0
    cfg = load_config(
        None,
        [
            f"--data.bundle={bundle.root}",
            "--model.name=crossrec",
            "--model.dim=16",
            "--model.item_tower=text+id",
            "--train.epochs=2",
            "--train.progress=false",
            "--train.checkpoint=false",
            f"--out={tmp_path / 'm'}",
        ],
    )
    seed_everything(0)
    train(cfg, bundle)
    res = evaluate(tmp_path / "m", bundle)
    assert res.metric("ndcg@10", first) > 0  # items nobody trained on are still ranked, from their text
