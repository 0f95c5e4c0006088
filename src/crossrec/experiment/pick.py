"""Compose trained models into a `pick` model (models/pick.py): each category answered by the
candidate with the best validation objective there.

`compose` checks that every candidate was trained on the Bundle given, evaluates each on the
validation split (never test), picks per category (`models.pick.choose`) and returns the composite
with a report of the values it picked on. An experiment entry `pick: [label, ...]` runs it per seed
on the artifacts of those labels and writes the composite's artifact (experiment/runner.py).

Example:
    >>> picked, report = compose(bundle, {"joint": load_artifact(a), "residual": load_artifact(b)}, EvalConfig())  # doctest: +SKIP
    >>> report["choice"]          # category -> the label that answers it     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from crossrec.artifact import Artifact, check_bundle
from crossrec.data.bundle import Bundle
from crossrec.evaluation.config import EvalConfig
from crossrec.evaluation.evaluator import Evaluator
from crossrec.models.pick import SLICES, PickConfig, Picked, choose
from crossrec.typed import ConfigError


def spec(label: str, art: Artifact) -> dict[str, Any]:
    """A candidate as `PickConfig.candidates` holds it."""
    return {"label": label, "name": art.name, "mode": art.mode, "params": dict(art.params)}


def compose(
    bundle: Bundle, candidates: Mapping[str, Artifact], eval_cfg: EvalConfig, slices: Sequence[str] = SLICES
) -> tuple[Picked, dict[str, Any]]:
    """The `pick` model of `candidates` (label -> artifact, all trained on `bundle`), chosen per
    category on the validation split, and a report: the labels, the slices, each category's
    choice and every candidate's objective value there.

    Raises:
        ConfigError: fewer than two candidates, or none with a validation split to pick on.
        ProvenanceError: a candidate was trained on another Bundle.
    """
    if len(candidates) < 2:
        raise ConfigError(f"pick: expected at least two candidate models, got {list(candidates)}")
    if bundle.split("valid").height == 0:
        raise ConfigError("pick: the choice is made on the validation split, and this Bundle has none")
    labels = list(candidates)
    arts = [candidates[label] for label in labels]
    for art in arts:
        check_bundle(art, bundle)
    valid = Evaluator(bundle, replace(eval_cfg, ks=(10,), beyond=False, slices=True), split="valid")
    tables = [valid.evaluate(art.model).table for art in arts]
    choice, values = choose(tables, bundle.categories, slices)
    cfg = PickConfig(candidates=tuple(spec(label, art) for label, art in zip(labels, arts)), slices=tuple(slices))
    picked = Picked(cfg, arts[0].sizes, models=[art.model for art in arts])
    picked.set_choice(choice)
    report = {
        "labels": labels,
        "slices": list(slices),
        "choice": {c: labels[k] for c, k in zip(bundle.categories, choice)},
        "valid": {c: dict(zip(labels, row)) for c, row in zip(bundle.categories, values)},
    }
    return picked, report


__all__ = ["compose", "spec"]
