"""Data-parallel training on `torch.distributed`: gloo on CPU, NCCL on GPU, started by `torchrun`
(or `crossrec train CONFIG --nproc N`, which runs torchrun for you).

Every process holds a full replica of the model (parameters broadcast from rank 0 at the start).
Each global batch of `train.batch_size` rows is split across the processes; after each backward
pass the gradients are averaged over the processes, so every replica takes the same optimiser step
and stays identical, as with `DistributedDataParallel`. The averaging is our own rather than DDP's
wrapper for two reasons: models with hand-written gradients (BPR-MF's `manual_backward`) never run
the autograd hooks DDP relies on, and sparse embedding gradients are exchanged by all-gather
(their row indices and rows), which works on gloo and NCCL alike, whereas NCCL has no sparse
all-reduce. Dense gradients go through one flattened all-reduce per step.

Validation is sharded by users: each process scores every `world`-th user, and the per-user metrics
are gathered (as Arrow IPC bytes, never pickle) so every process takes the same early-stopping
decision. Rank 0 alone writes checkpoints and the artifact. docs/user-guide/scale.md says how far this goes.

Example:
    $ crossrec train run.yaml --nproc 2            # 2 processes on this machine (gloo on CPU)
    $ torchrun --nproc_per_node 8 -m crossrec.cli train run.yaml --train.device=cuda
"""

from __future__ import annotations

import atexit
import os
from typing import Any

import torch
import torch.distributed as dist

from crossrec.collectives import (  # noqa: F401  (re-exported: the launch's view of the group)
    average_gradients,
    barrier,
    broadcast_state,
    gather_frame,
    is_main,
    rank,
    world_size,
)


def launched() -> bool:
    """True inside a multi-process launch (torchrun sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group torchrun described in the environment (gloo on CPU, NCCL on CUDA).
    Returns True when this process is one of several; a no-op outside a launch or when joined."""
    if not launched():
        return False
    if not dist.is_initialized():
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        atexit.register(leave)
    return True


def leave() -> None:
    """Destroy this process's groups (at exit, registered by `init_from_env`), before the
    interpreter's teardown. (The abort a replica could meet at exit came from gloo's worker thread
    destroying finished work: collectives.py keeps the handles so it never does.)"""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def describe() -> dict[str, Any]:
    """world size, rank and backend, for logs and artifacts."""
    if world_size() == 1:
        return {"world_size": 1}
    return {"world_size": world_size(), "rank": rank(), "backend": dist.get_backend()}
