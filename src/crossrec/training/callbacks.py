"""Callbacks: what the training loop does around its epochs, each at a named point.

`Trainer.fit` builds a `Run` (the state one fit carries) and calls, in order, every callback's
`on_fit_start(run)` once, `on_epoch_end(run, logs)` after each epoch and `on_fit_end(run)` once.
The built-in ones, in the order the loop calls them:

- `EarlyStopping`: validates every `eval_every` epochs (and after the last), keeps the best
  weights, counts rounds without improvement and sets `run.stop` after `patience` of them; the
  user's `on_validation` observers see the logs with the validation score.
- `History`: the epoch's logs (with `elapsed_seconds` since the first start) go to the result.
- `TensorBoard`: every logged number as a scalar (`train.tensorboard`, rank 0).
- `LogLine`: one `epoch {...}` log line.
- `Observers`: the user's `on_epoch_end` callbacks (`Trainer.add_callback`, `trainer.observe`).
- `Checkpointing`: the atomic checkpoint set after each epoch (`train.checkpoint`, rank 0 writes).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from crossrec import collectives
from crossrec.data.bundle import Bundle
from crossrec.data.sampling import TrainSampler
from crossrec.evaluation.evaluator import Evaluator
from crossrec.extras import require
from crossrec.training.config import TrainConfig


class CheckpointStore(Protocol):
    """Where `Checkpointing` reads and writes sets (the trainer's `Checkpoints`)."""

    def clean(self) -> None: ...

    def current_set(self) -> Path | None: ...

    def load(self, run: Run) -> None: ...

    def save(self, run: Run) -> None: ...


log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a fit produced: the best validation score and the per-epoch history."""

    best_epoch: int = -1
    best_metric: float = -math.inf
    epochs_run: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    resumes: list[dict[str, Any]] = field(default_factory=list)  # each --resume: epoch and applied changes
    sharding: dict[str, str] = field(
        default_factory=dict
    )  # train.sharding: each sharded table's TorchRec sharding type

    def to_json(self) -> dict[str, Any]:
        """The result as strict JSON: a number that is not finite (`best_metric` of a fit without
        validation is -inf) is written as null, which every JSON reader accepts."""
        return _finite(asdict(self))


def _finite(value: Any) -> Any:
    """`value` with every non-finite float, at any depth, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


@dataclass
class Run:
    """What one fit carries from epoch to epoch (and into a checkpoint)."""

    model: nn.Module
    bundle: Bundle
    sampler: TrainSampler
    opts: Any
    result: TrainResult
    t0: float  # when this process started the fit
    evaluator: Evaluator | None = None
    best_state: dict[str, torch.Tensor] | None = None
    bad_rounds: int = 0
    start_epoch: int = 0
    stop: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    sharded: Any = None  # training/sharding.py ShardedTables when train.sharding shards this fit
    sharded_state: dict[str, torch.Tensor] = field(default_factory=dict)  # its row accumulators, whole (callbacks only)


class Callback:
    """A no-op at every point; subclasses override what they need."""

    def on_fit_start(self, run: Run) -> None:
        pass

    def on_epoch_end(self, run: Run, logs: dict[str, float]) -> None:
        pass

    def on_fit_end(self, run: Run) -> None:
        pass


class EarlyStopping(Callback):
    """Validation, best weights and patience (see the module docstring)."""

    def __init__(
        self,
        cfg: TrainConfig,
        categories: list[int] | None,
        lower_better: bool,
        on_validation: Callable[[dict[str, float]], None],
    ) -> None:
        self.cfg, self.categories, self.on_validation = cfg, categories, on_validation
        self.sign = -1.0 if lower_better else 1.0

    def on_epoch_end(self, run: Run, logs: dict[str, float]) -> None:
        c, epoch = self.cfg, int(logs["epoch"])
        if run.evaluator is None or not ((epoch + 1) % c.eval_every == 0 or epoch + 1 == c.epochs):
            return
        run.model.eval()
        value = run.evaluator.evaluate(run.model, self.categories).metric(c.metric)
        logs[f"valid_{c.metric}"] = value
        if self.sign * value > self.sign * run.result.best_metric + c.min_delta:
            run.result.best_metric, run.result.best_epoch, run.bad_rounds = value, epoch, 0
            run.best_state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
        else:
            run.bad_rounds += 1
            run.stop = c.patience > 0 and run.bad_rounds >= c.patience
        self.on_validation(logs)

    def on_fit_end(self, run: Run) -> None:
        if run.best_state is not None:
            run.model.load_state_dict(run.best_state)


class History(Callback):
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock

    def on_epoch_end(self, run: Run, logs: dict[str, float]) -> None:
        logs["elapsed_seconds"] = run.result.seconds + self.clock() - run.t0  # since the (first) start
        run.result.history.append(logs)
        run.result.epochs_run = int(run.extra.get("epochs_before", 0)) + int(logs["epoch"]) + 1  # earlier stages too


class TensorBoard(Callback):
    def __init__(self, directory: Path) -> None:
        require("report", "train.tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(directory))

    def on_epoch_end(self, run: Run, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, int(logs["epoch"]))

    def on_fit_end(self, run: Run) -> None:
        self.writer.close()


class LogLine(Callback):
    def on_epoch_end(self, run: Run, logs: dict[str, float]) -> None:
        log.info("epoch %s", json.dumps({k: round(v, 5) for k, v in logs.items()}))


class Observers(Callback):
    def __init__(self, emit: Callable[[dict[str, float]], None]) -> None:
        self.emit = emit

    def on_epoch_end(self, run: Run, logs: dict[str, float]) -> None:
        self.emit(logs)


class Checkpointing(Callback):
    """Cleans what a killed write left, resumes (`resume`), and saves a set after every epoch."""

    def __init__(self, checkpoints: CheckpointStore, resume: bool, save: bool) -> None:
        self.checkpoints, self.resume, self.save = checkpoints, resume, save

    def on_fit_start(self, run: Run) -> None:
        if collectives.is_main():
            self.checkpoints.clean()
        if self.resume and self.checkpoints.current_set() is not None:
            self.checkpoints.load(run)
            log.info("resumed from epoch %d", run.start_epoch)

    def on_epoch_end(self, run: Run, logs: dict[str, float]) -> None:
        if not self.save:
            return
        if collectives.is_main():  # one writer; the others wait until the set is published
            self.checkpoints.save(run)
        collectives.barrier()


def best_start(lower_better: bool) -> float:
    """The best metric before any validation."""
    return math.inf if lower_better else -math.inf
