"""`crossrec experiment`: train a list of models over seeds, compare them per category and slice.

Three parts:

- the spec (`crossrec.experiment.spec`): `ExperimentConfig`, `ModelRun`, `load_experiment`,
  `select`: the experiment YAML (its format is in that module's docstring), checked before
  anything trains;
- the runner (`crossrec.experiment.runner`): `run_experiment`: prepare once, train and evaluate
  every (model, seed), reuse finished runs, write `results.json` and `results.md`;
- the report (`crossrec.experiment.results`): `ExperimentResult`: mean ± std over seeds,
  best single-category model, gains from transfer, the flagship's acceptance check, markdown.

Example:
    >>> res = run_experiment(load_experiment("configs/experiments/anime-mal.yaml"))  # doctest: +SKIP
    >>> res.mean("crossrec", "ndcg@10", "Music", "all")                              # doctest: +SKIP
"""

from __future__ import annotations

from crossrec.experiment.results import ExperimentResult
from crossrec.experiment.runner import run_experiment
from crossrec.experiment.spec import ExperimentConfig, ModelRun, load_experiment, select

__all__ = ["ExperimentConfig", "ExperimentResult", "ModelRun", "load_experiment", "run_experiment", "select"]
