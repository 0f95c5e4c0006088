"""`train.deterministic`: a seeded run gives bit-identical weights and metrics whatever thread count
the process started with (1 torch thread, so 1 kernel thread; torch's deterministic algorithms).

Each run is a fresh process: thread counts and numba's pool are per process, and the option pins
them for the rest of the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from crossrec.training.config import TrainConfig

# Trains BPR-MF (autograd, and the fused Hogwild kernel) and the flagship (its numba kernels:
# attention, neighbourhood, in-batch softmax, lazy Adam) on the tiny world; prints per model a hash
# of the state dict and the test NDCG@10, and the thread settings after training.
SCRIPT = r"""
import hashlib, json, sys
import torch
torch.set_num_threads(int(sys.argv[2]))
from crossrec.data.batch import Sizes
from crossrec.data.bundle import Bundle
from crossrec.evaluation.evaluator import EvalConfig, Evaluator
from crossrec.models.per_category import build
from crossrec.training.trainer import TrainConfig, Trainer

bundle = Bundle.load(sys.argv[1])
runs = {
    "mf": ("mf", {"dim": 16}, {}),
    "mf-fused": ("mf", {"dim": 16}, {"fused": True, "sparse_optimizer": "adagrad", "lr": 0.05}),
    "crossrec": ("crossrec", {"dim": 16}, {}),
}
out = {}
for label, (name, params, train) in runs.items():
    torch.manual_seed(0)
    model = build(name, "pooled", params, Sizes.from_bundle(bundle))
    cfg = TrainConfig(**({"epochs": 2, "batch_size": 256, "n_negatives": 2, "lr": 3e-3, "progress": False,
                          "checkpoint": False, "patience": 0, "seed": 0, "deterministic": True} | train))
    Trainer(cfg).fit(model, bundle)
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    res = Evaluator(bundle, EvalConfig(ks=(10,), slices=False, beyond=False), split="test").evaluate(model)
    out[label] = {"state": h.hexdigest(), "ndcg@10": res.metric("ndcg@10")}
out["threads"] = torch.get_num_threads()
out["deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
print(json.dumps(out))
"""


def _run(bundle_root: str, threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env.pop(var, None)  # the process starts with `threads`, whatever pytest-xdist set
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, bundle_root, str(threads)], capture_output=True, text=True, timeout=600, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_option_is_off_by_default_and_checked():
    assert TrainConfig().deterministic is False
    TrainConfig(deterministic=True).validate()


@pytest.mark.slow
def test_deterministic_runs_are_identical_across_thread_counts(tiny_bundle):
    one, two = _run(str(tiny_bundle.root), 1), _run(str(tiny_bundle.root), 2)
    for r in (one, two):
        assert r["threads"] == 1 and r["deterministic_algorithms"] is True
    for label in ("mf", "mf-fused", "crossrec"):
        assert one[label]["state"] == two[label]["state"], label
        assert one[label]["ndcg@10"] == two[label]["ndcg@10"], label
