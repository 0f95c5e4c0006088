"""Fill the caches a fresh clone lacks, once, before the test suite's workers start.

`make test` runs this beside `make lint` (mypy holds one core, this the other). Without it, each
pytest-xdist worker and each CLI subprocess that starts before the caches exist pays for them
itself: numba compiles every kernel (crossrec/kernels/, cached on disk beside the source) and
Python writes the bytecode of every module it imports (`make setup` installs with --no-compile).

    python -m tests.warm
"""

from __future__ import annotations

import importlib
import tempfile
import time
from pathlib import Path

# What the suite imports from outside crossrec, heaviest first (bytecode is written on import).
MODULES = (
    "torch",
    "polars",
    "numba",
    "sentence_transformers",
    "peft",
    "fastapi",
    "fastapi.testclient",
    "uvicorn",
    "httpx",
    "optuna",
    "matplotlib.pyplot",
    "safetensors.torch",
    "scipy.sparse",
    "typer.testing",
    "hypothesis",
    "hypothesis.strategies",
    "yaml",
    "pyarrow.parquet",
    "duckdb",
    "implicit",
)


def warm() -> None:
    """Import what the suite imports and compile every kernel, by training each kernel's user
    briefly on the tiny synthetic world."""
    t0 = time.perf_counter()
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # an extra that is not installed: its tests skip
            pass
    import crossrec.cli  # noqa: F401  # every crossrec module the CLI reaches
    from crossrec.data.batch import Sizes
    from crossrec.data.prepare import PrepareConfig, prepare
    from crossrec.data.synthetic import generate, tiny_config
    from crossrec.models.per_category import build
    from crossrec.training.trainer import TrainConfig, Trainer

    inter, items = generate(tiny_config())
    with tempfile.TemporaryDirectory() as tmp:
        bundle = prepare(inter, items, PrepareConfig(), Path(tmp) / "bundle")
        sizes = Sizes.from_bundle(bundle)
        quick = dict(epochs=1, progress=False, checkpoint=False)
        # the flagship: attention, neighbourhood, in-batch softmax and row-wise Adam kernels
        Trainer(TrainConfig(**quick)).fit(build("crossrec", "pooled", {"dim": 8}, sizes), bundle)
        # BPR-MF's default step (lazy Adam, 64 batches per kernel call: training/fused.py adam_epoch)
        Trainer(TrainConfig(**quick)).fit(build("mf", "pooled", {"dim": 8}, sizes), bundle)
        # BPR-MF's fused step
        Trainer(TrainConfig(**quick, fused=True, sparse_optimizer="adagrad")).fit(
            build("mf", "pooled", {"dim": 8}, sizes), bundle
        )
    print(f"tests.warm: caches filled in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    warm()
