"""A trainer's checkpoint sets (training/trainer.py's module docstring says what a set holds and
how it is published atomically): writing one, checking a resume against it, loading it back."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from crossrec.evaluation.report import LOWER_IS_BETTER
from crossrec.integrity import load_tensors, save_tensors, verify_checksums, write_checksums
from crossrec.io import atomic_dir, clean_temporaries, read_json, write_json
from crossrec.training.callbacks import Run, TrainResult, best_start
from crossrec.training.config import TrainConfig
from crossrec.typed import ConfigError


class ResumeError(ConfigError):
    """`--resume` with options or data that differ from the checkpoint's."""


# Options a resumed run may change: they steer the loop, not what one epoch computes.
RESUMABLE = (
    "epochs",
    "patience",
    "min_delta",
    "eval_every",
    "eval_batch_size",
    "device",
    "checkpoint",
    "tensorboard",
    "progress",
    "prefetch",
    "threads",
    "deterministic",
)


class Checkpoints:
    """A trainer's checkpoint sets under `out_dir/checkpoint` (see the module docstring)."""

    def __init__(self, out_dir: Path, cfg: TrainConfig, identity: dict[str, Any], device: torch.device) -> None:
        self.dir = out_dir / "checkpoint"
        self.cfg, self.identity, self.device = cfg, identity, device

    def clean(self) -> None:
        clean_temporaries(self.dir)  # what a killed checkpoint write left behind

    def current_set(self) -> Path | None:
        """The directory of the current checkpoint set, or None when there is none."""
        d = self.dir
        if not (d / "current.json").is_file():
            return None
        pointer = read_json(d / "current.json", "checkpoint pointer")
        name = pointer.get("set") if isinstance(pointer, dict) else None
        if not isinstance(name, str) or "/" in name or not (d / name / "state.json").is_file():
            raise ResumeError(
                f"{d / 'current.json'} points at no complete checkpoint set ({name!r}); train without --resume"
            )
        return d / name

    def save(self, run: Run) -> None:
        """Write model, best weights, optimiser and state as one set, then publish it atomically."""
        d, result = self.dir, run.result
        name = f"set-{result.epochs_run:05d}"
        with atomic_dir(d / name) as tmp:
            save_tensors(tmp / "model.safetensors", run.model.state_dict())
            if run.best_state is not None:
                save_tensors(tmp / "best.safetensors", run.best_state)
            opt_tensors, opt_meta = run.opts.state()
            opt_tensors["rng.sampler"] = run.sampler.generator.get_state()
            opt_tensors.update({f"sharded.{k}.sum": v for k, v in run.sharded_state.items()})
            save_tensors(tmp / "optimizer.safetensors", opt_tensors)
            write_json(
                tmp / "state.json",
                {
                    "epoch": result.epochs_run,
                    "result": result.to_json(),
                    "bad_rounds": run.bad_rounds,
                    "has_best": run.best_state is not None,
                    "optimizer": opt_meta,
                    "train_config": asdict(self.cfg),
                    "identity": self.identity,
                },
            )
            write_checksums(tmp, sorted(p.name for p in tmp.iterdir() if p.is_file()))  # last
        write_json(d / "current.json", {"set": name})  # the atomic switch to the new set
        for old in d.iterdir():  # older sets (and pre-set-layout files) are no longer needed
            if old.name not in (name, "current.json") and not old.name.startswith("."):
                if old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.unlink(missing_ok=True)

    def check_resume(self, state: dict[str, Any], where: Path) -> list[dict[str, Any]]:
        """Refuse a resume whose identity or result-changing options differ; return applied changes."""
        if state.get("identity", {}) != self.identity:
            old, new = state.get("identity", {}), self.identity
            keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ResumeError(
                f"--resume: the checkpoint in {where} was written for another {' and '.join(keys)} "
                f"({', '.join(f'{k}: {_short(old.get(k))} -> {_short(new.get(k))}' for k in keys)}); "
                "train into a new `out`, or without --resume"
            )
        then, now = state.get("train_config", {}), asdict(self.cfg)
        changed = {k: [then.get(k), v] for k, v in now.items() if then.get(k) != v}
        refused = sorted(k for k in changed if k not in RESUMABLE)
        if refused:
            detail = ", ".join(f"train.{k}: {changed[k][0]!r} -> {changed[k][1]!r}" for k in refused)
            raise ResumeError(
                f"--resume: {detail} would change what the checkpoint in {where} computed; only "
                f"{', '.join(RESUMABLE)} may change on resume. Train into a new `out`, or without --resume"
            )
        return [{"epoch": int(state["epoch"]), "changed": changed}] if changed else [{"epoch": int(state["epoch"])}]

    def load(self, run: Run) -> None:
        """Restore the model, optimiser, sampler RNG and counters of the current set into `run`."""
        d = self.current_set()
        assert d is not None
        # every file of the set, before anything is read (a set written before checksums: refused)
        verify_checksums(d, "checkpoint set", remedy="train without --resume")
        state = read_json(d / "state.json", "checkpoint state")
        applied = self.check_resume(state, d)
        run.model.load_state_dict(load_tensors(d / "model.safetensors", str(self.device)))
        tensors = load_tensors(d / "optimizer.safetensors")
        run.sampler.generator.set_state(tensors.pop("rng.sampler"))
        for key in [k for k in tensors if k.startswith("sharded.")]:  # a sharded fit's row accumulators
            run.sharded_state[key[len("sharded.") : -len(".sum")]] = tensors.pop(key)
        run.opts.load(tensors, state["optimizer"])
        run.best_state = load_tensors(d / "best.safetensors") if state["has_best"] else None
        r = state["result"]
        best = r["best_metric"]  # null: no validation score yet (strict JSON has no infinities)
        run.result = TrainResult(
            r["best_epoch"],
            best_start(self.cfg.metric in LOWER_IS_BETTER) if best is None else best,
            r["epochs_run"],
            r["seconds"],
            r["history"],
            list(r.get("resumes", [])) + applied,
        )
        run.start_epoch, run.bad_rounds = int(state["epoch"]), int(state["bad_rounds"])


def _short(value: Any, width: int = 80) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."
