"""`crossrec tune`: an Optuna search per model of an experiment, on the validation split, resumable.

For every model of the experiment (or `--only` some), a TPE sampler draws options from the entry's
`search:` space (or the model's default, experiment/space.py); each trial trains the model with the
experiment's first seed and is scored by the experiment's first metric (ndcg@10) on the validation
split, ALL categories: by default on every user (slice `all`); `objective` (`--objective
all,new_to_category`) names the evaluation slices whose values are averaged, with equal weights, so
users new to a category (or cold items) are not traded away. Every named slice must have units in
validation (checked before the first trial: the prepare protocol must put such users or items there,
e.g. `prepare.cold_user_valid_fraction`); a study keeps its objective, and resuming it with another
is an error. The test split is never read: only validation evaluators are built, and the trainer's
early stopping reads validation too.

- **Pruning.** Every validation the trainer runs inside a trial is reported to Optuna (step = the
  trainer's index within the trial x `train.epochs` + the epoch, so single-category models report
  each category's curve on its own steps) and a median pruner stops trials that trail the median of
  earlier trials at the same step, after 3 complete trials and never in a trainer's first 2 epochs
  (`WARMUP_EPOCHS`; per trainer, so each category of a single-category model gets its warm-up).
- **Budget.** The same for every model: `trials` finished trials (complete, pruned or failed) and
  at most `timeout` seconds of trial time (0 = none), whichever comes first. A trial that started
  inside the time budget runs to its end.
- **Storage and resume.** Every model is one study in `OUT/study.sqlite3` (Optuna's RDB storage),
  written as each trial starts and ends. Rerunning the same command continues: finished trials are
  kept and counted against the budget; a trial that was running when the process died is marked
  failed (`interrupted`) and its options are queued to run again, so no trial is lost and none
  counts twice. The sampler is seeded per trial from the seed and the number of trials so far, so
  the draws after a resume follow from the stored history.
- **Start.** Trial 0 runs the entry's own options (where they lie inside the space), so a tuned
  model is never worse on validation than the hand-set one.
- **Failed trials.** A diverging loss (FloatingPointError) or an impossible combination of drawn
  options (ConfigError) ends that trial as failed, with the message in its `error` attribute.

Output in OUT (default `<experiment out>-tune`): `study.sqlite3`, `tuning.json` (the objective; every
trial: options, value, state, seconds, validation curve, values per category and per slice; the best
options per model), `tuning.md`, and `best.yaml`: the experiment with each tuned model's best
options filled in (its `search:` dropped), ready for `crossrec experiment OUT/best.yaml` (these two:
experiment/tune_output.py).

Example:
    >>> cfg = load_experiment("configs/experiments/anime-mal.yaml")          # doctest: +SKIP
    >>> tune_experiment(cfg, TuneBudget(trials=20, timeout=900))            # doctest: +SKIP
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from crossrec.config import merge_dicts
from crossrec.data.bundle import Bundle
from crossrec.evaluation.evaluator import Evaluator
from crossrec.experiment.space import Param, default_space, parse_space, split_point
from crossrec.experiment.spec import ExperimentConfig, ModelRun
from crossrec.experiment.tune_objective import check_names, check_slices, check_study, objective_label, score
from crossrec.experiment.tune_output import best_experiment, tuning_markdown
from crossrec.io import claim_output, write_json, write_marker, write_text
from crossrec.typed import ConfigError

log = logging.getLogger(__name__)

STORAGE = "study.sqlite3"
WARMUP_EPOCHS = 2  # no trainer (each category's, each stage's) is pruned in its first epochs


@dataclass(frozen=True)
class TuneBudget:
    """What every model gets: `trials` finished trials and `timeout` seconds of trial time (0 = no
    limit), whichever ends first; `seed` seeds the sampler; a trial's value is the mean of the
    validation metric (ALL categories) over the evaluation slices in `objective`."""

    trials: int = 20
    timeout: float = 0.0
    seed: int = 0
    objective: tuple[str, ...] = ("all",)

    def validate(self) -> None:
        if self.trials < 1:
            raise ConfigError(f"--trials {self.trials}: expected at least 1")
        if not self.timeout >= 0:
            raise ConfigError(f"--timeout {self.timeout}: expected seconds >= 0 (0 = no limit)")
        check_names(self.objective)


def space_of(m: ModelRun) -> dict[str, Param]:
    """The entry's own `search:` space, else its model's default."""
    return parse_space(m.search, m.label) if m.search else default_space(m.name)


def _finished(trial: Any) -> bool:
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and not trial.user_attrs.get("interrupted", False)


def _recover(study: Any, say: Callable[[str], None]) -> None:
    """Trials a previous process left unfinished: RUNNING ones (killed) and FAIL ones it marked
    `interrupted` (Ctrl-C). Each is marked failed + `interrupted` and its options are queued once
    more. Safe because the output directory's lock says no other tuner runs on this study."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    storage = study._storage
    for t in trials:
        stopped = t.state == TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried
        if t.state != TrialState.RUNNING and not stopped:
            continue
        if t.state == TrialState.RUNNING:
            storage.set_trial_user_attr(t._trial_id, "interrupted", True)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if t.params:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})
        say(f"{study.study_name}: trial {t.number} was interrupted; its options run again")


class _Objective:
    """One trial: draw the options, train on the first seed, score on validation (pruning as it goes)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        m: ModelRun,
        space: dict[str, Param],
        bundle: Bundle,
        out: Path,
        valid: Evaluator,
        objective: tuple[str, ...] = ("all",),
    ) -> None:
        self.cfg, self.m, self.space, self.bundle, self.out, self.valid = cfg, m, space, bundle, out, valid
        self.objective = objective
        self.metric = cfg.metrics[0]
        self.seed = cfg.seeds[0]

    def run_for(self, point: dict[str, Any]) -> ModelRun:
        params, train = split_point(point)
        return replace(
            self.m,
            params=merge_dicts(dict(self.m.params), params),
            train=merge_dicts(dict(self.m.train), train),
            search={},
            grid={},
        )

    def __call__(self, trial: Any) -> float:
        import optuna

        from crossrec.pipeline import seed_everything, train
        from crossrec.training.trainer import observe

        t0 = time.perf_counter()
        point = {k: p.suggest(trial, k) for k, p in self.space.items()}
        work = self.out / "trials" / self.m.label / f"trial-{trial.number}"
        trainers: list[int] = []
        try:
            run_cfg = replace(self.cfg.run_config(self.run_for(point), self.seed), out=str(work))
            epochs = run_cfg.train.epochs

            def report(trainer: Any, logs: dict[str, float]) -> None:
                if id(trainer) not in trainers:
                    trainers.append(id(trainer))
                key = f"valid_{trainer.cfg.metric}"
                if key not in logs:
                    return
                step = trainers.index(id(trainer)) * epochs + int(logs["epoch"])
                trial.report(float(logs[key]), step)
                if int(logs["epoch"]) >= WARMUP_EPOCHS and trial.should_prune():
                    raise optuna.TrialPruned(f"valid {trainer.cfg.metric} {logs[key]:.4f} at step {step}")

            seed_everything(self.seed)
            with observe("on_validation", report):
                art = train(run_cfg, self.bundle)
            table = self.valid.evaluate(art.model).table
            per_cat, by_slice, value = score(table, self.metric, self.objective)
            trial.set_user_attr("valid_by_category", per_cat)
            trial.set_user_attr("valid_by_slice", by_slice)
            return value
        except (ConfigError, FloatingPointError) as e:  # a failed trial (`catch=` in _tune_model)
            trial.set_user_attr("error", str(e))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)  # rerun by the next start (`_recover`)
            raise
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - t0)
            if work.exists():
                shutil.rmtree(work)  # the trial's artifact: only its score is kept


def _study(m: ModelRun, out: Path, create: bool) -> Any:
    import optuna

    storage = optuna.storages.RDBStorage(f"sqlite:///{(out / STORAGE).resolve()}")
    if not create:
        names = {x.study_name for x in optuna.get_all_study_summaries(storage)}
        return optuna.load_study(study_name=m.label, storage=storage) if m.label in names else None
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3)  # warm-up per trainer: WARMUP_EPOCHS
    return optuna.create_study(
        study_name=m.label, storage=storage, direction="maximize", pruner=pruner, load_if_exists=True
    )


def _configured_point(cfg: ExperimentConfig, m: ModelRun, space: dict[str, Param]) -> dict[str, Any]:
    """The values the entry runs with (its options, else the defaults) of the searched options that
    lie inside the space."""
    from dataclasses import asdict

    from crossrec.models.base import config_from_dict

    run_cfg = cfg.run_config(m, cfg.seeds[0])
    have = {"model": asdict(config_from_dict(m.name, m.params)), "train": asdict(run_cfg.train)}
    point = {}
    for key, p in space.items():
        section, path = ("train", key[len("train.") :]) if key.startswith("train.") else ("model", key)
        node: Any = have[section]
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if p.choices and node in p.choices:
            point[key] = node
        elif (
            not p.choices and isinstance(node, (int, float)) and not isinstance(node, bool) and p.low <= node <= p.high
        ):
            point[key] = int(node) if p.integer else float(node)
    return point


def _spent(study: Any) -> tuple[int, int, float]:
    """(trials stored, trials finished, seconds of finished trials) of a study."""
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if _finished(t)]
    return len(trials), len(done), sum(float(t.user_attrs.get("seconds", 0.0)) for t in done)


def _tune_model(
    cfg: ExperimentConfig,
    m: ModelRun,
    space: dict[str, Param],
    bundle: Bundle,
    out: Path,
    budget: TuneBudget,
    valid: Evaluator,
    say: Callable[[str], None],
) -> None:
    import optuna

    study = _study(m, out, create=True)
    check_study(study, budget.objective)
    _recover(study, say)
    if not study.get_trials(deepcopy=False):
        start = _configured_point(cfg, m, space)
        if start:  # the entry's own options are trial 0: tuning never ends below the hand-set run
            study.enqueue_trial(start, user_attrs={"configured": True})
    objective = _Objective(cfg, m, space, bundle, out, valid, budget.objective)
    while True:
        stored, done, spent = _spent(study)
        if done >= budget.trials or (budget.timeout and spent >= budget.timeout):
            break
        study.sampler = optuna.samplers.TPESampler(seed=budget.seed + stored, multivariate=True)
        study.optimize(objective, n_trials=1, catch=(FloatingPointError, ConfigError), gc_after_trial=True)
        last = study.get_trials(deepcopy=False)[-1]
        value = "" if last.value is None else f" {objective_label(objective.metric, budget.objective)} {last.value:.4f}"
        say(
            f"{m.label} trial {last.number} {last.state.name.lower()}{value} "
            f"({float(last.user_attrs.get('seconds', 0)):.0f}s) {last.params}"
        )


def _summary(study: Any, space: dict[str, Param], budget: TuneBudget, metric: str) -> dict[str, Any]:
    from optuna.trial import TrialState

    spent = _spent(study)[2]
    trials = []
    for t in study.get_trials(deepcopy=False):
        trials.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                "params": dict(t.params),
                "seconds": t.user_attrs.get("seconds"),
                "curve": {int(k): v for k, v in t.intermediate_values.items()},
                **{
                    k: t.user_attrs[k]
                    for k in ("configured", "retry_of", "interrupted", "error", "valid_by_category", "valid_by_slice")
                    if k in t.user_attrs
                },
            }
        )
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
    return {
        "space": {k: p.to_json() for k, p in space.items()},
        "metric": objective_label(metric, budget.objective),
        "budget": {"trials": budget.trials, "timeout": budget.timeout},
        "seconds": spent,
        "trials": trials,
        "best": None if best is None else {"number": best.number, "value": best.value, "params": dict(best.params)},
    }


def tune_experiment(
    cfg: ExperimentConfig,
    budget: TuneBudget = TuneBudget(),
    out: str | Path | None = None,
    bundle: Bundle | None = None,
    progress: Callable[[str], None] | None = None,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Tune the models of `cfg` (or the labels in `only`) with `budget` (see the module docstring);
    returns tuning.json's content, which covers every model of `cfg` with a study in `out` (earlier
    `--only` runs included), as does best.yaml.

    `out` (default `<cfg.out>-tune`) must be missing, empty or a tuning directory; it is locked while
    the tuner runs, so two tuners never share a study."""
    import optuna

    budget.validate()
    say = progress or (lambda s: log.info(s))
    out = Path(out if out is not None else f"{cfg.out}-tune")
    by_label = {m.label: m for m in cfg.models}
    unknown = sorted(set(only or ()) - set(by_label))
    if unknown:
        raise ConfigError(f"--only: unknown model label(s) {unknown}; have {list(by_label)}")
    chosen = list(cfg.models) if only is None else [by_label[label] for label in dict.fromkeys(only)]  # in that order
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with claim_output(out, "tuning", "--out"):
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, "tuning")
        if (out / STORAGE).exists():  # before any work: every study here must share the objective
            for m in cfg.models:
                if (study := _study(m, out, create=False)) is not None:
                    check_study(study, budget.objective)
        if bundle is None:
            from crossrec.pipeline import prepare_data

            bundle = prepare_data(cfg.run_config(cfg.models[0], cfg.seeds[0]))
        if bundle.split("valid").height == 0:
            raise ConfigError("tuning needs a validation split (prepare.valid_ratio > 0 or a leave-out split)")
        valid_cfg = replace(cfg.run_config(cfg.models[0], cfg.seeds[0]).eval, beyond=False, slices=True)
        valid = Evaluator(bundle, valid_cfg, split="valid")  # the score and its slices only
        check_slices(valid, budget.objective)
        for m in chosen:
            space = space_of(m)
            if not space:
                say(f"{m.label}: nothing to tune ({m.name} has no options in its search space)")
                continue
            _tune_model(cfg, m, space, bundle, out, budget, valid, say)
            _write(out, cfg, budget)  # after every model: a kill loses no finished study
        return _write(out, cfg, budget)


def _write(out: Path, cfg: ExperimentConfig, budget: TuneBudget) -> dict[str, Any]:
    tuned: dict[str, dict[str, Any]] = {}
    for m in cfg.models:
        study = _study(m, out, create=False) if (out / STORAGE).exists() else None
        if study is not None:
            tuned[m.label] = _summary(study, space_of(m), budget, cfg.metrics[0])
    result = {
        "experiment": cfg.name,
        "budget": {"trials": budget.trials, "timeout": budget.timeout, "seed": budget.seed},
        "objective": {"metric": f"valid {cfg.metrics[0]}", "category": "ALL", "slices": list(budget.objective)},
        "models": tuned,
    }
    write_json(out / "tuning.json", result)
    write_text(out / "best.yaml", yaml.safe_dump(best_experiment(cfg, tuned), sort_keys=False))
    write_text(out / "tuning.md", tuning_markdown(cfg, tuned, budget.trials, budget.timeout, budget.objective))
    return result


__all__ = ["STORAGE", "TuneBudget", "best_experiment", "space_of", "tune_experiment"]
