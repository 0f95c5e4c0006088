"""Process-group primitives: rank, world size, barrier, and the collectives the training loop and
the evaluator use (parameter broadcast, gradient averaging with sparse rows all-gathered, Arrow
frames gathered). Outside a launch every call is a no-op for one process.

They sit on the lowest floor, beside `io`, so training and evaluation use them without importing
`crossrec.distributed`, which launches processes and joins the group (see its docstring for the
design: why our own averaging rather than DDP's wrapper, and how validation is sharded).

Every collective here is launched asynchronously, waited for, and its work handle kept (`_done`:
the latest `HELD` of them), so the work is destroyed by Python, on the main thread, and never by
gloo's worker thread. The worker drops its own reference to a finished work only after the caller
has been woken; had the caller dropped the handle by then, the worker would destroy the work and,
with it, its references to the tensors, and letting go of a tensor Python made needs the GIL. In a
process that exits right after its last collective (a replica, which writes nothing) the
interpreter can be finalizing at that moment, and a thread that asks for the GIL then is ended
inside a C++ destructor: the process aborts after a successful run ("terminate called without an
active exception", exit code -6).
"""

from __future__ import annotations

import io
from collections import deque
from typing import Any

import polars as pl
import torch
import torch.distributed as dist
from torch import nn

HELD = 64  # the work handles of the latest collectives kept (module docstring)
_held: deque[Any] = deque(maxlen=HELD)


def _done(work: Any) -> None:
    """Wait for a collective launched with `async_op=True` and keep its handle (module docstring)."""
    work.wait()
    _held.append(work)


def broadcast(tensor: torch.Tensor, src: int) -> None:
    """`tensor` from process `src` to every process, in place."""
    _done(dist.broadcast(tensor, src, async_op=True))


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        _done(dist.barrier(async_op=True))


def broadcast_state(model: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every process (replicas start identical)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            broadcast(t.data, 0)


def average_gradients(model: nn.Module) -> None:
    """Replace every gradient by its mean over the processes (a missing gradient counts as zero;
    a parameter that no process has a gradient for keeps none)."""
    world = world_size()
    if world == 1:
        return
    dense, sparse = split_parameters(model)
    params = dense + sparse
    if not params:
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    _done(dist.all_reduce(has, async_op=True))
    live = {id(p) for p, h in zip(params, has.tolist()) if h > 0}
    dense = [p for p in dense if id(p) in live]
    if dense:
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in dense])
        _done(dist.all_reduce(flat, async_op=True))
        flat.div_(world)
        offset = 0
        for p in dense:
            p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
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
    _done(dist.all_gather(sizes, torch.tensor([len(idx)], dtype=torch.long, device=p.device), async_op=True))
    n = [int(s) for s in sizes]
    top = max(n)
    pad_idx = torch.zeros(top, dtype=idx.dtype, device=p.device)
    pad_idx[: len(idx)] = idx
    pad_vals = torch.zeros((top,) + tuple(vals.shape[1:]), dtype=vals.dtype, device=p.device)
    pad_vals[: len(vals)] = vals
    all_idx = [torch.empty_like(pad_idx) for _ in range(world)]
    all_vals = [torch.empty_like(pad_vals) for _ in range(world)]
    _done(dist.all_gather(all_idx, pad_idx, async_op=True))
    _done(dist.all_gather(all_vals, pad_vals, async_op=True))
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
    _done(dist.all_gather(sizes, torch.tensor([len(data)], dtype=torch.long, device=device), async_op=True))
    n = [int(s) for s in sizes]
    padded = torch.zeros(max(n), dtype=torch.uint8, device=device)
    padded[: len(data)] = data
    parts = [torch.empty_like(padded) for _ in range(world)]
    _done(dist.all_gather(parts, padded, async_op=True))
    frames = [pl.read_ipc(io.BytesIO(t[:k].cpu().numpy().tobytes())) for t, k in zip(parts, n)]
    return pl.concat([f for f in frames if f.height], how="vertical") if any(f.height for f in frames) else frame


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(dense, sparse) trainable parameters; sparse = weights of nn.Embedding(sparse=True)."""
    sparse_ids = {
        id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse and m.weight.requires_grad
    }
    params = [p for p in model.parameters() if p.requires_grad]
    return [p for p in params if id(p) not in sparse_ids], [p for p in params if id(p) in sparse_ids]
