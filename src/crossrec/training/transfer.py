"""Transfer paradigms as a plan of training stages: joint, source -> target, sequential.

A paradigm is a list of `Stage`s (`plan`); `run_stages` trains one model through them in order,
each stage an ordinary `Trainer.fit` restricted to the stage's categories, with the stage's
freezing policy, learning-rate scale and epoch budget. The model carries its weights from one stage
to the next; every stage starts a fresh optimiser (Adam moments and schedules do not carry over)
and early-stops on the validation rows of its own categories.

- joint: one stage on all categories (the pooled model, bidirectional transfer).
- source_target: pretrain on `source` (nothing frozen), then fine-tune on `target` with `freeze`.
- sequential: one stage per category in `order`; the first trains everything, every later one
  fine-tunes with `freeze`.

Freezing works on the model's parameter groups (`parameter_groups(model)`): "shared" (parts every
category uses: shared user parts, the item tower, encoders), "specific" (per-category user parts)
and "heads" (per-category output parts: biases, prediction layers). Policies: none | shared
(freeze "shared") | all_but_heads (freeze "shared" and "specific"). A model without a
`parameter_groups()` method counts as all "shared". Frozen parameters get `requires_grad=False` for
the stage, so the optimisers never see them (dense or sparse) and they stay bit-identical; the
flags are restored afterwards. Buffers are not parameters and are never frozen.

`Trainer.fit` calls `model.setup(bundle, categories)` at the start of every stage, with the stage's
categories: data-derived structures (LightGCN's graph, for example) are those of the stage being
trained, and after the last stage, those of the last stage. That is intended: a model whose setup
must see every category regardless (CrossRec's cross-category history) reads the whole bundle there.
Parameter groups are read before that call, so parameters a setup creates stay trainable.

Example:
    >>> cfg = TransferConfig(paradigm="source_target", source=["books"], freeze="shared")  # doctest: +SKIP
    >>> stages = plan(cfg, bundle.categories)                                               # doctest: +SKIP
    >>> results = run_stages(model, bundle, TrainConfig(epochs=10), stages, "runs/st")      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from crossrec.data.bundle import Bundle
from crossrec.errors import ConfigError, CrossrecError
from crossrec.integrity import load_tensors, save_tensors, verify_checksums, write_checksums
from crossrec.io import name_slug, read_json, write_text
from crossrec.models.base import HasParameterGroups, Trainable
from crossrec.training.config import (
    FREEZE_POLICIES,
    FROZEN_GROUPS,
    GROUPS,
    TransferConfig,
)
from crossrec.training.trainer import ResumeError, TrainConfig, Trainer, TrainResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One training stage of a plan."""

    name: str  # stage label: joint | pretrain | finetune | the category name (sequential)
    categories: list[int] | None  # category indices trained (and validated) on; None = all
    freeze: str  # freezing policy: none | shared | all_but_heads
    lr_scale: float  # multiplier of train.lr
    epochs: int  # max epochs (0 = train.epochs)


def plan(cfg: TransferConfig, categories: Sequence[str], train_counts: Sequence[int] | None = None) -> list[Stage]:
    """The stages of `cfg`'s paradigm over `categories` (the bundle's names, in index order).

    `train_counts[c]` (training interactions of category c) sets the default sequential order:
    decreasing size, categories without training data left out. Without it the default order is
    the categories' own. An explicit `order` may name a subset: the categories it leaves out are
    not trained on.
    """
    cfg.validate(categories)
    names = list(categories)
    index = {n: i for i, n in enumerate(names)}
    if cfg.paradigm == "joint":
        return [Stage("joint", None, "none", 1.0, 0)]
    if cfg.paradigm == "source_target":
        source = [index[n] for n in cfg.source]
        if cfg.target:
            target = [index[n] for n in cfg.target]
        else:
            target = [i for i, n in enumerate(names) if n not in cfg.source]
        return [
            Stage("pretrain", source, "none", 1.0, 0),
            Stage("finetune", target, cfg.freeze, cfg.finetune_lr_scale, cfg.finetune_epochs),
        ]
    if cfg.order:
        order = [index[n] for n in cfg.order]
    elif train_counts is not None:
        order = sorted((i for i in range(len(names)) if train_counts[i] > 0), key=lambda i: (-train_counts[i], i))
    else:
        order = list(range(len(names)))
    return [
        Stage(names[c], [c], "none", 1.0, 0)
        if k == 0
        else Stage(names[c], [c], cfg.freeze, cfg.finetune_lr_scale, cfg.finetune_epochs)
        for k, c in enumerate(order)
    ]


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The model's "shared" / "specific" / "heads" parameters (every key present).

    Uses `model.parameter_groups()` where defined; parameters it leaves out count as "shared", and
    a model without the method is all "shared". A parameter in two groups is an error.
    """
    own = model.parameter_groups() if isinstance(model, HasParameterGroups) else {}
    unknown = sorted(set(own) - set(GROUPS))
    if unknown:
        raise ValueError(
            f"{type(model).__name__}.parameter_groups(): unknown group(s) {unknown}; expected {list(GROUPS)}"
        )
    groups: dict[str, list[nn.Parameter]] = {g: list(own.get(g, [])) for g in GROUPS}
    seen: dict[int, str] = {}
    for g, params in groups.items():
        for p in params:
            if id(p) in seen and seen[id(p)] != g:
                raise ValueError(
                    f"{type(model).__name__}.parameter_groups(): a parameter is in both {seen[id(p)]!r} and {g!r}"
                )
            seen[id(p)] = g
    groups["shared"] += [p for p in model.parameters() if id(p) not in seen]
    return groups


@contextmanager
def frozen(model: nn.Module, policy: str) -> Iterator[list[nn.Parameter]]:
    """Freeze the groups `policy` names (requires_grad=False) for the block; flags restored on exit."""
    if policy not in FROZEN_GROUPS:
        raise ConfigError(f"freeze={policy!r}; expected one of {list(FREEZE_POLICIES)}")
    groups = parameter_groups(model)
    params = [p for g in FROZEN_GROUPS[policy] for p in groups[g]]
    saved = [(p, p.requires_grad) for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield params
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def stage_dir(out_dir: str | Path, i: int, stage: Stage) -> Path:
    """out_dir/stage-<i>-<name> (the name made file-system safe and short: `io.name_slug`)."""
    return Path(out_dir) / f"stage-{name_slug(i, stage.name)}"


def run_stages(
    model: nn.Module,
    bundle: Bundle,
    train_cfg: TrainConfig,
    stages: Sequence[Stage],
    out_dir: str | Path | None = None,
    resume: bool = False,
    identity: dict[str, Any] | None = None,
) -> list[TrainResult]:
    """Train `model` through `stages` in order; one TrainResult per stage.

    Each stage runs `Trainer(replace(train_cfg, lr=lr * stage.lr_scale, epochs=...),
    out_dir/stage-<i>-<name>, categories=stage.categories).fit(model, bundle)` with the stage's
    groups frozen. With checkpoints on, a finished stage leaves `result.json` and its final weights
    (`final.safetensors`) in its directory, with `checksums.json` (their SHA-256, verified before
    a resume uses them); `resume=True` skips the leading finished stages (loading their final
    weights), resumes the first unfinished one from its checkpoint, and trains every
    stage after it from scratch (whatever an older run left there is stale by then). `identity`
    (model spec, Bundle fingerprint) is recorded with every stage: a finished stage is only
    skipped, and a checkpoint only resumed, when it matches (else `ResumeError`).
    """
    results: list[TrainResult] = []
    skipping = resume
    for i, stage in enumerate(stages):
        d = None if out_dir is None else stage_dir(out_dir, i, stage)
        ident = json.loads(json.dumps({**(identity or {}), "stage": asdict(stage)}, default=str))
        if skipping and d is not None and (d / "result.json").exists() and (d / "final.safetensors").exists():
            results.append(_finished_stage(model, d, i, ident))
            log.info("stage %d (%s) finished before: skipped", i, stage.name)
            continue
        resume_here, skipping = skipping, False  # only the first unfinished stage resumes
        if d is not None:
            (d / "result.json").unlink(missing_ok=True)  # not finished until this run says so
        result = _train_stage(model, bundle, train_cfg, i, stage, d, ident, resume_here)
        results.append(result)
        if d is not None and train_cfg.checkpoint:
            _save_stage(d, model, result, ident)
    return results


def _finished_stage(model: nn.Module, d: Path, i: int, ident: dict[str, Any]) -> TrainResult:
    """A stage a previous run finished in `d`: its files' checksums verified and its identity
    checked (else `ResumeError`), its final weights loaded into `model`; returns its result."""
    verify_checksums(d, f"stage {i}", remedy="train without --resume")  # before reading either
    done = read_json(d / "result.json", "stage result")
    if done.pop("identity", None) != ident:
        raise ResumeError(
            f"--resume: stage {i} in {d} was trained with another model, bundle or "
            "stage plan; train into a new `out`, or without --resume"
        )
    model.load_state_dict(load_tensors(d / "final.safetensors"))
    return TrainResult(**done)


def _train_stage(
    model: nn.Module,
    bundle: Bundle,
    train_cfg: TrainConfig,
    i: int,
    stage: Stage,
    d: Path | None,
    ident: dict[str, Any],
    resume_here: bool,
) -> TrainResult:
    """Train stage `i`: `train_cfg` with the stage's lr scale and epochs, on its categories, with its
    groups frozen (a freeze that leaves nothing to train is a `ConfigError`); errors carry the
    stage in front of their message."""
    cfg = replace(
        train_cfg, lr=train_cfg.lr * stage.lr_scale, epochs=stage.epochs if stage.epochs > 0 else train_cfg.epochs
    )
    trainer = Trainer(cfg, d, categories=stage.categories, identity=ident)
    where = "all categories" if stage.categories is None else [bundle.categories[c] for c in stage.categories]
    log.info("stage %d (%s): %s, freeze=%s, lr=%g, epochs=%d", i, stage.name, where, stage.freeze, cfg.lr, cfg.epochs)
    with frozen(model, stage.freeze) as frozen_params:
        if isinstance(model, Trainable) and not any(p.requires_grad for p in model.parameters()):
            hint = (
                ""
                if isinstance(model, HasParameterGroups)
                else (f" ({type(model).__name__} defines no parameter_groups(), so all of it counts as shared)")
            )
            raise ConfigError(f"stage {i} ({stage.name}): freeze={stage.freeze!r} leaves no trainable parameters{hint}")
        log.info("stage %d: %d parameter tensors frozen", i, len(frozen_params))
        try:
            return trainer.fit(model, bundle, resume=resume_here)
        except CrossrecError as e:  # bad input stays its kind (exit 2), with the stage in front
            e.args = (f"stage {i} ({stage.name}): {e}", *e.args[1:])
            raise
        except ValueError as e:
            raise ValueError(f"stage {i} ({stage.name}): {e}") from e


def _save_stage(d: Path, model: nn.Module, result: TrainResult, ident: dict[str, Any]) -> None:
    """Mark a stage finished in `d`: its final weights, the checksums of both files, then
    result.json (with `ident`), written last."""
    save_tensors(d / "final.safetensors", model.state_dict())
    text = json.dumps(result.to_json() | {"identity": ident}, indent=2, default=str) + "\n"
    # the checksums of both files, then result.json: written last, it marks the stage finished
    write_checksums(d, ["final.safetensors"], {"result.json": hashlib.sha256(text.encode()).hexdigest()})
    write_text(d / "result.json", text)


def stage_summary(
    stages: Sequence[Stage], results: Sequence[TrainResult], categories: Sequence[str], train_cfg: TrainConfig
) -> list[dict[str, Any]]:
    """JSON of each stage (category names, resolved lr and epochs) with its TrainResult."""
    out = []
    for i, (s, r) in enumerate(zip(stages, results)):
        info = asdict(s)
        info["categories"] = None if s.categories is None else [categories[c] for c in s.categories]
        info["lr"] = train_cfg.lr * s.lr_scale
        info["epochs"] = s.epochs if s.epochs > 0 else train_cfg.epochs
        out.append({"stage": i, **info, **r.to_json()})
    return out
