"""One training loop for every neural model: optimiser, schedule, early stopping, checkpoints.

The model owns its loss (`model.loss(batch)`); the trainer owns the loop. Early stopping watches a
validation metric (full ranking on the valid split) with patience and restores the best weights.
Checkpoints (model + best weights + optimiser + sampler RNG + counters) are one atomic set: each is
written into its own directory `checkpoint/set-<epoch>` and then published by atomically replacing
the pointer `checkpoint/current.json`, so a kill at any instant leaves the previous set or the new
one, never a mix; the set's `checksums.json` (written last) holds the SHA-256 of each of its files,
and a resume verifies them all before it loads anything. `resume=True` continues an interrupted
run exactly where it stopped; options that change the result (lr, batch size, the model, the
data, ...) must match the checkpoint's or the resume is refused (`ResumeError`), while the others
(`RESUMABLE`: epochs, patience, ...) are applied and recorded in the result's `resumes`.

Example:
    >>> trainer = Trainer(TrainConfig(epochs=20, lr=1e-3), out_dir="runs/mf")   # doctest: +SKIP
    >>> result = trainer.fit(model, bundle)                                     # doctest: +SKIP
    >>> result.best_epoch, result.best_metric                                   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossrec import collectives, kernels
from crossrec.data.bundle import Bundle
from crossrec.data.sampling import Prefetch, TrainSampler
from crossrec.errors import InputDataError
from crossrec.evaluation.evaluator import EvalConfig, Evaluator
from crossrec.evaluation.report import LOWER_IS_BETTER
from crossrec.models.base import (
    Calibrates,
    Fittable,
    HasSetup,
    Staged,
    Trainable,
    TrainsEncoder,
)
from crossrec.training import fused, sharding
from crossrec.training.callbacks import (  # noqa: F401  (TrainResult: named here too, where fit returns it)
    Callback,
    Checkpointing,
    EarlyStopping,
    History,
    LogLine,
    Observers,
    Run,
    TensorBoard,
    TrainResult,
    best_start,
)
from crossrec.training.checkpoints import (  # noqa: F401  (RESUMABLE, ResumeError: named here too, the loop's docs name them)
    RESUMABLE,
    Checkpoints,
    ResumeError,
)
from crossrec.training.config import TrainConfig
from crossrec.training.optim import Optimizers
from crossrec.training.picks import pick_tools
from crossrec.training.steps import AdversarialStep, AutogradStep, ManualStep, pick_step
from crossrec.training.threads import AutoThreads
from crossrec.typed import ConfigError

log = logging.getLogger(__name__)


# Callbacks every Trainer created inside `observe(...)` gets: how a caller that does not build the
# trainers itself (the tuner, around pipeline.train) watches their validation scores.
_OBSERVERS: contextvars.ContextVar[tuple[tuple[str, Any], ...]] = contextvars.ContextVar(
    "trainer_observers", default=()
)


@contextlib.contextmanager
def observe(event: str, fn: Any) -> Iterator[None]:
    """Add `fn(trainer, logs)` on `event` (on_epoch_end | on_validation) to every Trainer built inside
    the block (an exception it raises, e.g. optuna's TrialPruned, ends the fit)."""
    token = _OBSERVERS.set(_OBSERVERS.get() + ((event, fn),))
    try:
        yield
    finally:
        _OBSERVERS.reset(token)


Observer = Callable[["Trainer", dict[str, float]], None]  # a user callback: fn(trainer, logs)


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda[:n]` or `auto`; a CUDA device that is not there is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name!r} but no CUDA device is available here; use cpu or auto")
        index = torch.device(name).index
        if index is not None and index >= torch.cuda.device_count():
            raise ConfigError(f"train.device={name!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device(name)


class Trainer:
    """Trains a model that defines `loss(batch)`; fits one that defines `fit(bundle)`.

    A trainable model may also define `setup(bundle, categories)`: it is called once before the
    loop, to build structures derived from the training split (e.g. LightGCN's graph).

    With `adv_eps > 0` the loop adds APR's adversarial loss from epoch `adv_start` on
    (training/adversarial.py): it optimises `loss + adv_reg * adv_loss`, where `adv_loss` is the
    model's loss with every nn.Embedding lookup perturbed by `adv_eps` along its loss gradient. The
    history's `loss` stays the clean loss; `adv_loss` is logged beside it.

    Args:
        cfg: loop settings.
        out_dir: checkpoint / TensorBoard directory (None: nothing is written).
        categories: train (and validate) on these category indices only (None = all).
        identity: JSON of what else the checkpoint must match on resume (model spec, Bundle
            fingerprint); a difference raises ResumeError.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: str | Path | None = None,
        categories: Sequence[int] | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        cfg.validate()
        self.cfg = cfg
        self.identity = json.loads(json.dumps(identity or {}, default=str))  # as it reads back from JSON
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.categories = None if categories is None else [int(c) for c in categories]
        self.callbacks: dict[str, list[Observer]] = {"on_epoch_end": [], "on_validation": []}
        for event, fn in _OBSERVERS.get():
            self.add_callback(event, fn)
        self.device = resolve_device(cfg.device)
        self._threads = AutoThreads(on=not (cfg.threads or cfg.deterministic))  # train.threads: 0 (training/threads.py)

    def add_callback(self, event: str, fn: Observer) -> None:
        if event not in self.callbacks:
            raise ValueError(f"unknown event {event!r}; expected {sorted(self.callbacks)}")
        self.callbacks[event].append(fn)

    def _emit(self, event: str, logs: dict[str, float]) -> None:
        for fn in self.callbacks[event]:
            fn(self, logs)

    def _has_valid(self, bundle: Bundle) -> bool:
        rows = bundle.rows("valid", self.categories)
        return rows.height > 0

    # ------------------------------------------------------------------ the loop
    def fit(self, model: nn.Module, bundle: Bundle, resume: bool = False) -> TrainResult:
        """Train `model` on the bundle's training split; returns the TrainResult.

        The loop only trains: validation and early stopping, history, TensorBoard, logging,
        observers and checkpoints are callbacks (training/callbacks.py) called after each epoch,
        and how a batch becomes an optimiser step is a step strategy (training/steps.py). Under
        `train.threads: 0` torch's thread count follows the free cores and is put back at the end."""
        t0 = time.perf_counter()
        if self.cfg.threads:  # torch's intra-op threads, and so the kernels' (kernels.threads follows torch)
            torch.set_num_threads(self.cfg.threads)
        if self.cfg.deterministic:  # 1 torch + kernel thread, deterministic algorithms (kernels/__init__.py)
            kernels.deterministic(self.device)
        with self._threads:  # neither pinned: the free cores, now and at each epoch's start (training/threads.py)
            return self._fit(model, bundle, resume, t0)

    def _fit(self, model: nn.Module, bundle: Bundle, resume: bool, t0: float) -> TrainResult:
        """`fit` under its thread setting."""
        if isinstance(model, Fittable) and not isinstance(model, Trainable):
            model.fit(bundle, self.categories)
            return TrainResult(epochs_run=1, seconds=time.perf_counter() - t0)
        if not isinstance(model, Trainable):
            raise TypeError(f"{type(model).__name__} has neither loss(batch) nor fit(bundle)")
        run = self._start(model, bundle, t0)
        while True:  # one pass per stage of a staged model (`Staged`), else one
            self._stage(run, self._callbacks(resume))
            if not (isinstance(model, Staged) and model.next_stage()):
                break
            log.info("next training stage")
            run.extra["epochs_before"] = run.result.epochs_run
            run.start_epoch, run.stop, run.bad_rounds, run.best_state = 0, False, 0, None
            run.result.best_metric = best_start(self.cfg.metric in LOWER_IS_BETTER)
            resume = False
        if run.sharded is not None:
            run.result.sharding = dict(run.sharded.plan)
            run.sharded.close()
        self._finish(run)
        run.result.seconds = time.perf_counter() - t0
        return run.result

    def _stage(self, run: Run, callbacks: list[Callback]) -> None:
        """Epochs until early stopping or the budget, then the callbacks' end (the best weights back)."""
        # Callbacks see the model whole: a sharded fit's tables are gathered for them (sharding.py).
        with sharding.whole(run.sharded) as run.sharded_state:
            for cb in callbacks:
                cb.on_fit_start(run)
        for epoch in range(run.start_epoch, self.cfg.epochs):
            logs = self._train_epoch(run, epoch)
            with sharding.whole(run.sharded) as run.sharded_state:
                for cb in callbacks:
                    cb.on_epoch_end(run, logs)
            if run.stop:
                log.info("early stop at epoch %d (best %d: %.5f)", epoch, run.result.best_epoch, run.result.best_metric)
                break
        with sharding.whole(run.sharded) as run.sharded_state:
            for cb in callbacks:
                cb.on_fit_end(run)

    def _start(self, model: nn.Module, bundle: Bundle, t0: float) -> Run:
        """Set-up before the first epoch: the model's data structures, device, sampler, optimisers."""
        c = self.cfg
        if isinstance(model, HasSetup):  # data-derived structures (e.g. a graph) from this training data
            model.setup(bundle, self.categories)
        model.to(self.device)
        collectives.broadcast_state(model)  # replicas start from rank 0's weights
        sharded = sharding.start(model, c, self.device)  # train.sharding: the ID tables onto TorchRec
        sampler = TrainSampler(
            bundle,
            c.batch_size,
            c.n_negatives,
            self.categories,
            seed=c.seed,
            rank=collectives.rank(),
            world=collectives.world_size(),
        )
        if sampler.n_rows == 0:
            raise InputDataError(f"no training interactions in categories {self.categories}")
        opts = Optimizers(model, c)
        evaluator = None
        if self._has_valid(bundle):
            k = int(c.metric.split("@")[1]) if "@" in c.metric else 10
            # Only the top k are ranked (topk, no full comparison pass) unless the metric is AUC.
            ecfg = EvalConfig(
                ks=(k,),
                batch_size=c.eval_batch_size,
                slices=False,
                auc=c.metric == "auc",
                beyond=False,
                max_users=c.valid_users,
                seed=c.seed,
            )
            evaluator = Evaluator(bundle, ecfg, split="valid")
        if c.fused:
            fused.check(model, self.device, collectives.world_size())
        result = TrainResult(best_metric=best_start(c.metric in LOWER_IS_BETTER))
        return Run(model, bundle, sampler, opts, result, t0, evaluator, sharded=sharded)

    def _callbacks(self, resume: bool) -> list[Callback]:
        """The built-in callbacks in the order they run (training/callbacks.py)."""
        c = self.cfg
        out: list[Callback] = [
            EarlyStopping(
                c, self.categories, c.metric in LOWER_IS_BETTER, lambda logs: self._emit("on_validation", logs)
            ),
            History(time.perf_counter),
        ]
        if c.tensorboard and self.out_dir is not None and collectives.is_main():
            out.append(TensorBoard(self.out_dir / "tensorboard"))
        out += [LogLine(), Observers(lambda logs: self._emit("on_epoch_end", logs))]
        if self.out_dir is not None:
            store = Checkpoints(self.out_dir, c, self.identity, self.device)  # only with an out_dir
            out.append(Checkpointing(store, resume, save=c.checkpoint))
        return out

    def _train_epoch(self, run: Run, epoch: int) -> dict[str, float]:
        """One pass over the training batches; returns the epoch's logs."""
        model, opts = run.model, run.opts
        model.train()
        threads = self._threads.apply()  # train.threads: 0 follows the load; otherwise the pinned count
        epoch_t0 = time.perf_counter()
        step = pick_step(model, opts, self.cfg, epoch) if run.sharded is None else AutogradStep(model, opts, epoch)
        total, adv_total, n = 0.0, 0.0, 0
        whole = None
        if type(step) is ManualStep and not step.fused:  # the default step: its whole-epoch form where one exists
            whole = fused.adam_epoch(model, opts.sparse, self.device, collectives.world_size())
        if whole is not None:
            total, n = whole(run.sampler, lambda chunks, count: self._progress(chunks, epoch, count))
            opts.zero_grad()
            opts.step()  # no gradients, so no update: the LR schedulers' check that a step came before theirs
        for batch in () if whole is not None else self._progress(run.sampler, epoch):
            batch = batch.to(self.device)
            loss, adv = step(batch)
            total += float(loss) * len(batch)
            n += len(batch)
            if adv is not None:
                adv_total += float(adv) * len(batch)
        opts.epoch_end()
        if isinstance(model, TrainsEncoder):
            model.epoch_end()  # re-encode the catalogue with the weights this epoch trained
        logs = {
            "epoch": epoch,
            "loss": total / max(n, 1),
            "lr": opts.lr,
            "train_seconds": time.perf_counter() - epoch_t0,
            "threads": threads,
        }
        if isinstance(step, AdversarialStep):
            logs["adv_loss"] = adv_total / max(n, 1)
        return logs

    def _finish(self, run: Run) -> None:
        """After the last epoch (the best weights are back): the models' post-training steps."""
        model = run.model
        if isinstance(model, TrainsEncoder):
            model.fit_end()
        if isinstance(model, Calibrates):  # post-hoc: the flagship's borrowed ID parts, cold offset (on validation)
            model.eval()
            model.calibrate(run.bundle, self.categories, pick_tools())
        model.eval()

    # ------------------------------------------------------------------ helpers
    def _progress(self, items: Any, epoch: int, total: int | None = None) -> Any:
        """`items` (the sampler's batches, or the chunks of a whole-epoch step with their count) under
        the epoch's progress bar."""
        if isinstance(items, TrainSampler):
            total = len(items)
            items = Prefetch(items) if self.cfg.prefetch else items
        if not self.cfg.progress or not collectives.is_main():  # one bar, rank 0's
            return items
        from tqdm.auto import tqdm

        return tqdm(items, total=total, desc=f"epoch {epoch}", leave=False, mininterval=1.0)
