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
decision. Rank 0 alone writes checkpoints and the artifact. docs/SCALE.md says how far this goes.

Example:
    $ crossrec train run.yaml --nproc 2            # 2 processes on this machine (gloo on CPU)
    $ torchrun --nproc_per_node 8 -m crossrec.cli train run.yaml --train.device=cuda
"""

from __future__ import annotations

import io
import os
from typing import Any

import polars as pl
import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


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
    return True


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast_state(model: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every process (replicas start identical)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, 0)


def average_gradients(model: nn.Module) -> None:
    """Replace every gradient by its mean over the processes (a missing gradient counts as zero;
    a parameter that no process has a gradient for keeps none)."""
    world = world_size()
    if world == 1:
        return
    from crossrec.training.optim import split_parameters

    dense, sparse = split_parameters(model)
    params = dense + sparse
    if not params:
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    dist.all_reduce(has)
    live = {id(p) for p, h in zip(params, has.tolist()) if h > 0}
    dense = [p for p in dense if id(p) in live]
    if dense:
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in dense])
        dist.all_reduce(flat)
        flat.div_(world)
        offset = 0
        for p in dense:
            p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()
    for p in sparse:
        if id(p) in live:
            p.grad = _gather_sparse(p, world)


def _gather_sparse(p: nn.Parameter, world: int) -> torch.Tensor:
    """All ranks' uncoalesced row gradients of one table, concatenated and divided by `world`."""
    g = p.grad
    if g is None:
        idx = torch.zeros(0, dtype=torch.long, device=p.device)
        vals = torch.zeros((0,) + tuple(p.shape[1:]), dtype=p.dtype, device=p.device)
    else:
        idx, vals = g._indices()[0], g._values()
    sizes = [torch.zeros(1, dtype=torch.long, device=p.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(idx)], dtype=torch.long, device=p.device))
    n = [int(s) for s in sizes]
    top = max(n)
    pad_idx = torch.zeros(top, dtype=idx.dtype, device=p.device)
    pad_idx[: len(idx)] = idx
    pad_vals = torch.zeros((top,) + tuple(vals.shape[1:]), dtype=vals.dtype, device=p.device)
    pad_vals[: len(vals)] = vals
    all_idx = [torch.empty_like(pad_idx) for _ in range(world)]
    all_vals = [torch.empty_like(pad_vals) for _ in range(world)]
    dist.all_gather(all_idx, pad_idx)
    dist.all_gather(all_vals, pad_vals)
    idx = torch.cat([t[:k] for t, k in zip(all_idx, n)])
    vals = torch.cat([t[:k] for t, k in zip(all_vals, n)]).div_(world)
    return torch.sparse_coo_tensor(idx.unsqueeze(0), vals, p.shape, is_coalesced=False, check_invariants=False)


def gather_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Every process's frame, concatenated in rank order, on every process (Arrow IPC bytes)."""
    world = world_size()
    if world == 1:
        return frame
    buf = io.BytesIO()
    frame.write_ipc(buf)
    data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    data = data.to(device)
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(data)], dtype=torch.long, device=device))
    n = [int(s) for s in sizes]
    padded = torch.zeros(max(n), dtype=torch.uint8, device=device)
    padded[: len(data)] = data
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    frames = [pl.read_ipc(io.BytesIO(t[:k].cpu().numpy().tobytes())) for t, k in zip(parts, n)]
    return pl.concat([f for f in frames if f.height], how="vertical") if any(f.height for f in frames) else frame


def describe() -> dict[str, Any]:
    """world size, rank and backend, for logs and artifacts."""
    if world_size() == 1:
        return {"world_size": 1}
    return {"world_size": world_size(), "rank": rank(), "backend": dist.get_backend()}
