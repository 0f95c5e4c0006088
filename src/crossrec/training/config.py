"""The training and transfer settings, as plain dataclasses (no torch import, so `config.py` and
the CLI's option parsing stay light): `TrainConfig` (the loop) and `TransferConfig` (paradigms).

Example:
    >>> TrainConfig(epochs=20, lr=1e-3).validate()      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from crossrec.typed import Bounds, Checked, ConfigError, Count, NonNegative, Positive, Size


@dataclass(frozen=True)
class TrainConfig(Checked):
    """The optimisation loop's settings."""

    section = "train"

    epochs: Size = 30  # (int) maximum number of epochs
    batch_size: Size = 2048  # (int) positives per batch
    n_negatives: Size = 1  # (int) in-category sampled negatives per positive
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"  # (str) adam | adamw | sgd
    lr: Positive = 1e-3  # (float) learning rate
    sparse_optimizer: Literal["auto", "adam", "adagrad", "sgd"] = (
        "auto"  # (str) sparse embedding tables: auto (follow optimizer) | adam (lazy) | adagrad (row-wise) | sgd
    )
    sparse_lr: NonNegative = 0.0  # (float) learning rate of the sparse embedding tables (0 = lr)
    weight_decay: NonNegative = 0.0  # (float) optimiser weight decay of dense parameters (decoupled for adamw)
    momentum: NonNegative = 0.9  # (float) sgd momentum
    scheduler: Literal["none", "cosine", "step", "exponential"] = "none"  # (str) none | cosine | step | exponential
    step_size: Count = 10  # (int) step scheduler: epochs between decays
    gamma: Annotated[float, Bounds(gt=0.0, le=1.0)] = 0.5  # (float) step / exponential scheduler decay factor
    grad_clip: NonNegative = 0.0  # (float) max gradient norm of dense parameters (0 = off)
    eval_every: Size = 1  # (int) validate every n epochs
    metric: str = "ndcg@10"  # (str) validation metric for early stopping; rmse/mae: lower is better
    patience: Count = 5  # (int) validations without improvement before stopping (0 = never stop)
    min_delta: NonNegative = 0.0  # (float) improvement smaller than this does not count
    eval_batch_size: Size = 1024  # (int) users per score() call during validation
    valid_users: Count = 0  # (int) 0: validate on every user; n: on a fixed, seeded sample of n users (eval.max_users), about n / users of the cost; early stopping then follows an estimate whose noise grows as 1 / sqrt(n), so keep n in the tens of thousands or raise patience
    seed: int = 0  # (int) seeds init-independent randomness: shuffling and negatives
    device: str = "cpu"  # (str) cpu | cuda | auto
    checkpoint: bool = True  # (bool) write a resumable checkpoint after every epoch (needs out_dir)
    tensorboard: bool = False  # (bool) write TensorBoard scalars to out_dir/tensorboard
    progress: bool = True  # (bool) show a progress bar per epoch
    fused: bool = False  # (bool) BPR-MF on CPU: one compiled Hogwild kernel per batch (needs sparse_optimizer adagrad | sgd; reproducible with 1 thread only)
    sharding: Literal["auto", "none", "table", "row", "column"] = (
        "auto"  # (str) ID tables across a process group (--nproc N) on TorchRec (training/sharding.py): auto (when the tables would not fit a process's share of memory) | none (replicated) | table | row (CUDA only) | column; needs sparse_optimizer adagrad | sgd
    )
    threads: Count = 0  # (int) 0: auto, the cores free when the fit and each epoch start (this process's cores less other work's runnable threads, Linux /proc; at least 1, at most torch's count when the fit started, put back after it; elsewhere torch's count) for torch and the compiled kernels (training/threads.py); n: n intra-op threads, for the rest of the process
    deterministic: bool = False  # (bool) the same weights and tables for a seed whatever the thread count: 1 torch + 1 kernel thread (kept for the evaluation after it, in this process), torch's deterministic algorithms, no Hogwild race in train.fused; slower on many idle cores
    prefetch: bool = False  # (bool) draw the next batches in a background thread while the model trains (pays on a GPU or many cores; not on 2 CPU cores)
    adv_eps: NonNegative = 0.0  # (float) APR adversarial perturbation size per embedding lookup (0 = off)
    adv_reg: NonNegative = 1.0  # (float) weight of the adversarial loss: optimise loss + adv_reg * adv_loss
    adv_start: Count = 0  # (int) first epoch (0-based) with the adversarial loss; APR pretrains without it

    def validate(self) -> None:
        """What spans fields (each field's own range is declared beside it, `Size`, `Positive`, ...,
        and checked when the config is built)."""
        if self.fused and sparse_kind(self) not in ("adagrad", "sgd"):
            raise ConfigError(
                f"train.fused=true needs train.sparse_optimizer adagrad or sgd (here {sparse_kind(self)!r}: "
                "lazy Adam has no per-row form)"
            )
        if self.fused and self.adv_eps > 0:
            raise ConfigError(
                "train.fused=true cannot run APR (train.adv_eps > 0): adversarial training needs autograd"
            )
        if self.device not in ("cpu", "auto") and not (self.device == "cuda" or self.device.startswith("cuda:")):
            raise ConfigError(f"train.device={self.device!r}; expected cpu, cuda, cuda:<n> or auto")
        name = self.metric.split("@")[0]
        if name not in ("recall", "ndcg", "hr", "mrr", "precision", "f1", "auc", "rmse", "mae"):
            raise ConfigError(f"train.metric={self.metric!r}; expected e.g. ndcg@10, recall@20, auc or rmse")
        if name in ("recall", "ndcg", "hr", "mrr", "precision", "f1") and not self.metric.split("@")[-1].isdigit():
            raise ConfigError(f"train.metric={self.metric!r} needs a cut-off, e.g. {name}@10")


def sparse_kind(cfg: Any) -> str:
    """The sparse tables' optimiser that `cfg` (a TrainConfig) picks: adam (lazy), adagrad or sgd."""
    kind = getattr(cfg, "sparse_optimizer", "auto")
    return {"adamw": "adam"}.get(cfg.optimizer, cfg.optimizer) if kind == "auto" else kind


PARADIGMS = ("joint", "source_target", "sequential")
FREEZE_POLICIES = ("none", "shared", "all_but_heads")
GROUPS = ("shared", "specific", "heads")
FROZEN_GROUPS = {"none": (), "shared": ("shared",), "all_but_heads": ("shared", "specific")}


@dataclass(frozen=True)
class TransferConfig(Checked):
    """Which transfer paradigm trains a pooled model, and how its fine-tuning stages run."""

    section = "transfer"

    paradigm: Literal["joint", "source_target", "sequential"] = "joint"  # (str) joint | source_target | sequential
    source: list[str] = field(default_factory=list)  # (list) source_target: pretrain on these categories
    target: list[str] = field(default_factory=list)  # (list) source_target: fine-tune on these (empty = not source)
    order: list[str] = field(default_factory=list)  # (list) sequential: category order (empty = by training size)
    freeze: Literal["none", "shared", "all_but_heads"] = (
        "none"  # (str) fine-tuning stages freeze: none | shared | all_but_heads
    )
    finetune_lr_scale: float = 1.0  # (float) learning-rate multiplier of the fine-tuning stages
    finetune_epochs: int = 0  # (int) max epochs of each fine-tuning stage (0 = train.epochs)

    def validate(self, categories: Sequence[str] | None = None) -> None:
        """Check the settings; with `categories`, also the category names the paradigm uses."""
        if not (self.finetune_lr_scale > 0 and self.finetune_lr_scale < float("inf")):
            raise ConfigError(f"transfer.finetune_lr_scale={self.finetune_lr_scale}; expected > 0")
        if self.finetune_epochs < 0:
            raise ConfigError(f"transfer.finetune_epochs={self.finetune_epochs}; expected >= 0 (0 = train.epochs)")
        if categories is None:
            return
        used = {"source_target": ("source", "target"), "sequential": ("order",)}.get(self.paradigm, ())
        for name in used:
            values = getattr(self, name)
            unknown = [v for v in values if v not in categories]
            if unknown:
                raise ConfigError(f"transfer.{name}: unknown categories {unknown}; the bundle has {list(categories)}")
            dup = sorted({v for v in values if values.count(v) > 1})
            if dup:
                raise ConfigError(f"transfer.{name}: {dup} listed more than once")
        if self.paradigm == "source_target":
            if not self.source:
                raise ConfigError("transfer.source: paradigm source_target needs at least one source category")
            if not self.target and set(self.source) >= set(categories):
                raise ConfigError(
                    "transfer.target: empty means every category not in transfer.source, and that is none; "
                    "name the target categories"
                )
