"""Sharded embedding tables on TorchRec (`train.sharding`): a model's ID tables, split across the
processes of a `torchrun` group instead of replicated on each.

The tables a model names (`ShardableTables.shardable_tables`: BPR-MF's user and item tables, the
flagship's shared and per-(user, category) user tables) move into one TorchRec
`EmbeddingBagCollection`, sharded by `DistributedModelParallel` with the plan TorchRec's planner
picks from each process's memory; every other parameter stays replicated and data-parallel
(distributed.py). In the model each moved table is replaced by a `ShardedLookup`, a module
without parameters whose forward is a lookup through the sharded collection (TorchRec's
all-to-all: every process asks for its batch's rows and serves the rows it owns). Each step's
gradients of those rows go back the same way and TorchRec's fused optimiser updates them during
the backward pass (row-wise Adagrad or SGD; fbgemm's CPU kernels have no fused Adam), scaled by
1 / processes like the averaged gradients of the replicated parameters.

Validation, checkpoints and the end of training see the model whole: `ShardedTables.whole()`
gathers every table (and its optimiser's row accumulators) on every process, puts ordinary
`nn.Embedding` tables back for the duration, then writes any change back into the shards. So a
checkpoint or artifact written by a sharded run is an ordinary one, loaded unsharded for serving
or a single-process resume; the gathered weights are the only time a process holds a whole table.

Row-wise sharding exists in TorchRec for CUDA only (fbgemm's CPU build has table-wise,
column-wise and table-column-wise): on CPU `train.sharding: row` is refused.

Example:
    $ crossrec train run.yaml --nproc 2 --train.sharding=table --train.sparse_optimizer=adagrad
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from crossrec import collectives
from crossrec.extras import require
from crossrec.training.config import TrainConfig, sparse_kind
from crossrec.typed import ConfigError

log = logging.getLogger(__name__)

# train.sharding -> TorchRec's sharding types the planner may choose from
KINDS = {"table": ["table_wise"], "row": ["row_wise"], "column": ["column_wise"]}
AUTO = {"cpu": ["table_wise", "column_wise"], "cuda": ["table_wise", "row_wise", "column_wise"]}
# train.sharding: auto shards when a process's share of the machine's memory is under this many
# times the replicated tables' bytes (weights + optimiser state), so they would not fit with room
AUTO_HEADROOM = 4.0


@runtime_checkable
class ShardableTables(Protocol):
    """A model whose ID tables can be sharded: the attribute names of its `nn.Embedding` tables
    that are only read through their forward (a lookup) during training, each looked up once per
    step (TorchRec's fused optimiser steps a table once per lookup: two lookups would be two
    Adagrad steps, not one step of their summed gradient)."""

    def shardable_tables(self) -> list[str]: ...


def embedding(model: nn.Module, name: str) -> nn.Embedding:
    """The model's table `name` (a name its `shardable_tables` lists)."""
    table = model.get_submodule(name)
    if not isinstance(table, nn.Embedding):
        raise TypeError(f"{type(model).__name__}.{name} is {type(table).__name__}, not an nn.Embedding")
    return table


def available_memory() -> int:
    """Bytes of memory this machine has free for new work (/proc/meminfo's MemAvailable; the
    physical memory where that file is absent)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def table_bytes(model: nn.Module, cfg: TrainConfig) -> int:
    """The bytes the shardable tables take replicated on one process: weights plus the sparse
    optimiser's state (lazy Adam: two moments per entry; row-wise Adagrad: one float per row)."""
    if not isinstance(model, ShardableTables):
        return 0
    total = 0
    for name in model.shardable_tables():
        w = embedding(model, name).weight
        per_row = w.shape[1] * (3 if sparse_kind(cfg) == "adam" else 1) + (1 if sparse_kind(cfg) == "adagrad" else 0)
        total += w.shape[0] * per_row * w.element_size()
    return total


def wanted(model: nn.Module, cfg: TrainConfig, device: torch.device) -> list[str] | None:
    """The sharding types for this fit, or None to train replicated. `auto` shards a model with
    shardable tables, in a group of more than one process, when its tables would not fit one
    process's share of memory with `AUTO_HEADROOM` to spare; `none` never shards; `table`, `row`
    and `column` always do (a single process or a model without shardable tables is refused)."""
    kind, world = cfg.sharding, collectives.world_size()
    if kind == "none" or (kind == "auto" and (world == 1 or table_bytes(model, cfg) == 0)):
        return None
    if kind == "auto":
        share = available_memory() / world
        if table_bytes(model, cfg) * AUTO_HEADROOM < share:
            return None
        if sparse_kind(cfg) not in ("adagrad", "sgd") or cfg.fused or cfg.adv_eps > 0:
            log.warning(
                "the ID tables (%.1f GB with their optimiser state) would fit better sharded "
                "(train.sharding: auto), but sharding needs train.sparse_optimizer adagrad or sgd "
                "without train.fused or APR: training them replicated",
                table_bytes(model, cfg) / 1e9,
            )
            return None
        return AUTO[device.type]
    if world == 1:
        raise ConfigError(f"train.sharding={kind} needs a process group of 2 or more (crossrec train CONFIG --nproc 2)")
    if not isinstance(model, ShardableTables) or not model.shardable_tables():
        raise ConfigError(f"train.sharding={kind}: {type(model).__name__} has no shardable tables (use none)")
    if kind == "row" and device.type != "cuda":
        raise ConfigError(
            "train.sharding=row needs CUDA: TorchRec's CPU kernels (fbgemm-gpu-cpu) have no row-wise "
            "sharding; use table or column on CPU"
        )
    return KINDS[kind]


def check(cfg: TrainConfig) -> None:
    """What a sharded fit cannot do, refused before it starts."""
    if sparse_kind(cfg) not in ("adagrad", "sgd"):
        raise ConfigError(
            f"train.sharding={cfg.sharding} trains the sharded tables with TorchRec's fused optimiser: "
            f"set train.sparse_optimizer to adagrad or sgd (here {sparse_kind(cfg)!r}; fbgemm's CPU "
            "kernels have no fused Adam)"
        )
    if cfg.fused or cfg.adv_eps > 0:
        raise ConfigError(f"train.sharding={cfg.sharding} cannot run with train.fused or APR (train.adv_eps > 0)")


class ShardedLookup(nn.Module):
    """A sharded table's place in the model: `forward(ids)` is `table(ids)` through TorchRec. It
    owns no parameters (the rows live in the shards), so the model's optimisers never see them."""

    def __init__(self, owner: ShardedTables, name: str, rows: int, dim: int) -> None:
        super().__init__()
        self._owner = [owner]  # a list: not registered as a submodule (no state-dict keys)
        self.name, self.num_embeddings, self.embedding_dim = name, rows, dim

    def forward(self, ids: Tensor) -> Tensor:
        return self._owner[0].lookup(self.name, ids)


class ShardedTables:
    """The model's shardable tables on TorchRec for one fit (see the module docstring)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, types: list[str], device: torch.device) -> None:
        require("sharding", "train.sharding")
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
        from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
        from torchrec.distributed.model_parallel import DistributedModelParallel
        from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
        from torchrec.distributed.planner.types import ParameterConstraints
        from torchrec.modules.embedding_configs import PoolingType
        from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
        from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

        assert isinstance(model, ShardableTables)
        self.model, self.device, self.world = model, device, collectives.world_size()
        self.adagrad = sparse_kind(cfg) == "adagrad"
        self.names = [
            n
            for n in model.shardable_tables()
            if embedding(model, n).weight.requires_grad and len(embedding(model, n).weight)
        ]
        full = {n: embedding(model, n).weight.detach() for n in self.names}
        configs = [
            EmbeddingBagConfig(
                name=f"t_{n}",  # not "items" etc.: TorchRec's ModuleDict would clash with its methods
                embedding_dim=int(full[n].shape[1]),
                num_embeddings=int(full[n].shape[0]),
                feature_names=[n],
                pooling=PoolingType.SUM,
            )
            for n in self.names
        ]
        ebc = EmbeddingBagCollection(tables=configs, device=torch.device("meta"))
        lr = cfg.sparse_lr or cfg.lr
        if sparse_kind(cfg) == "adagrad":
            apply_optimizer_in_backward(RowWiseAdagrad, ebc.parameters(), {"lr": lr, "eps": 1e-8})
        else:
            apply_optimizer_in_backward(torch.optim.SGD, ebc.parameters(), {"lr": lr})
        constraints = {f"t_{n}": ParameterConstraints(sharding_types=list(types)) for n in self.names}
        topology = Topology(world_size=self.world, compute_device=device.type)
        planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
        sharders: list[Any] = [EmbeddingBagCollectionSharder()]
        plan = planner.collective_plan(ebc, sharders, dist.GroupMember.WORLD)
        self.dmp = DistributedModelParallel(ebc, device=device, plan=plan, sharders=sharders, init_data_parallel=False)
        self.plan = {n: str(plan.plan[""][f"t_{n}"].sharding_type) for n in self.names}
        log.info("train.sharding: %s on TorchRec across %d processes", self.plan, self.world)
        self._weights = self._shards(self.dmp.state_dict(), "weight")
        with torch.no_grad():
            for n in self.names:  # every process holds rank 0's full tables (broadcast): copy out its part
                for (r0, c0), t in self._weights[n]:
                    t.copy_(full[n][r0 : r0 + t.shape[0], c0 : c0 + t.shape[1]])
        self._accumulators = self._optimizer_shards()
        self._accumulator_layout = {n: self._layout(n) for n in self.names}
        self.shapes = {n: tuple(full[n].shape) for n in self.names}
        self.sparse = {n: embedding(model, n).sparse for n in self.names}
        del full
        self._install_lookups()

    # ------------------------------------------------------------------ the shards
    def _shards(self, state: dict[str, Any], suffix: str) -> dict[str, list[tuple[tuple[int, int], Tensor]]]:
        """This process's shards of each table: ((row offset, column offset), local tensor)."""
        out: dict[str, list[tuple[tuple[int, int], Tensor]]] = {}
        for n in self.names:
            key = next(k for k in state if k.endswith(f"t_{n}.{suffix}"))
            out[n] = [
                ((s.metadata.shard_offsets[0], s.metadata.shard_offsets[1]), s.tensor)
                for s in state[key].local_shards()
            ]
        return out

    def _momentum(self, n: str) -> Any:
        """Row-wise Adagrad's accumulator of table `n` (a ShardedTensor: one [rows] shard per
        weight shard, a column-wise shard's over its own columns), or None (SGD, or no shard here)."""
        state = self.dmp.fused_optimizer.state_dict()["state"]
        key = next((k for k in state if k.endswith(f"t_{n}.weight")), None)
        return None if key is None else next((v for k, v in state[key].items() if "momentum1" in k), None)

    def _layout(self, n: str) -> list[tuple[int, int, int]]:
        """Every accumulator shard of table `n` in every process: (owner rank, row offset, rows),
        one per weight shard, in the weights' global order (the same list on every process)."""
        return [(owner, r0, nr) for owner, (r0, _), (nr, _) in self._all_shards(n)] if self.adagrad else []

    def _optimizer_shards(self) -> dict[str, list[tuple[int, Tensor]]]:
        """This process's accumulator shards of each table: (row offset, [rows]); empty for SGD."""
        out: dict[str, list[tuple[int, Tensor]]] = {}
        for n in self.names:
            mom = self._momentum(n) if self.adagrad else None
            out[n] = [] if mom is None else [(s.metadata.shard_offsets[0], s.tensor) for s in mom.local_shards()]
        return out

    def _all_shards(self, n: str) -> list[tuple[int, tuple[int, int], tuple[int, int]]]:
        """Every shard of table `n` in every process: (owner rank, (row, col) offsets, sizes)."""
        state = self.dmp.state_dict()  # built once: each call assembles every table's ShardedTensor
        md = next(v for k, v in state.items() if k.endswith(f"t_{n}.weight")).metadata()
        return [
            (int(s.placement.rank()), (s.shard_offsets[0], s.shard_offsets[1]), (s.shard_sizes[0], s.shard_sizes[1]))
            for s in md.shards_metadata
        ]

    def local_bytes(self) -> int:
        """Bytes of this process's shards: weights plus their optimiser's row accumulators."""
        weights = sum(t.numel() * t.element_size() for shards in self._weights.values() for _, t in shards)
        return weights + sum(a.numel() * a.element_size() for accs in self._accumulators.values() for _, a in accs)

    # ------------------------------------------------------------------ training
    def lookup(self, name: str, ids: Tensor) -> Tensor:
        """`table(ids)` for any shape of ids: one collective lookup (every process calls it the
        same number of times per step: each model's loss looks each table up a fixed number of times)."""
        from torchrec import KeyedJaggedTensor

        flat = ids.reshape(-1).to(torch.int64)
        zeros = torch.zeros(len(flat), dtype=torch.int32)
        lengths = torch.cat([torch.ones_like(zeros) if n == name else zeros for n in self.names])
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=self.names, values=flat.cpu(), lengths=lengths)
        out = self.dmp(kjt.to(self.device)).to_dict()[name]
        if out.requires_grad and self.world > 1:  # the averaged-gradient convention of the replicated parameters
            out.register_hook(lambda g: g / self.world)
        return out.reshape(*ids.shape, -1)

    def _install_lookups(self) -> None:
        for n in self.names:
            setattr(self.model, n, ShardedLookup(self, n, *self.shapes[n]))

    # ------------------------------------------------------------------ the whole model
    def _gather(self, n: str) -> Tensor:
        """The whole table `n` on every process (each shard broadcast by its owner)."""
        rows, dim = self.shapes[n]
        whole = torch.empty(rows, dim, device=self.device)
        mine = dict(self._weights[n])
        for owner, (r0, c0), (nr, nc) in self._all_shards(n):
            dst = whole[r0 : r0 + nr, c0 : c0 + nc]  # a row block is contiguous: broadcast into it
            part = dst if dst.is_contiguous() else torch.empty(nr, nc, device=self.device)
            if owner == collectives.rank():
                part.copy_(mine[(r0, c0)])
            collectives.broadcast(part, owner)
            if part is not dst:
                dst.copy_(part)
        return whole

    def _gather_accumulator(self, n: str) -> Tensor | None:
        """The whole row accumulator of table `n` on every process (a column-wise table's: the mean
        of its shards', each the mean square over its own columns), or None under SGD."""
        if not self.adagrad:
            return None
        rows, me = self.shapes[n][0], collectives.rank()
        total, count = torch.zeros(rows, device=self.device), torch.zeros(rows, device=self.device)
        mine = iter(t for _, t in self._accumulators[n])  # local shards, in the metadata's order
        for md in self._accumulator_layout[n]:
            owner, r0, nr = md
            part = next(mine).contiguous() if owner == me else torch.empty(nr, device=self.device)
            collectives.broadcast(part, owner)
            total[r0 : r0 + nr] += part
            count[r0 : r0 + nr] += 1
        return total / count.clamp_min(1)

    def _table(self, n: str, weight: Tensor) -> nn.Embedding:
        """An ordinary table `n` holding `weight` (as the model built it: sparse or not)."""
        rows, dim = self.shapes[n]
        return nn.Embedding(rows, dim, sparse=self.sparse[n], _weight=weight, device=self.device)

    @contextlib.contextmanager
    def whole(self) -> Iterator[dict[str, Tensor]]:
        """The model with ordinary tables (gathered on every process) inside the block, and the
        tables' row accumulators as `{name: [rows]}`; whatever the block changed (a resume, the
        best weights put back) is written back into the shards after it."""
        tables, accs = {}, {}
        for n in self.names:
            w = self._gather(n)
            tables[n] = self._table(n, w)
            acc = self._gather_accumulator(n)
            if acc is not None:
                accs[n] = acc
        for n in self.names:
            setattr(self.model, n, tables[n])
        try:
            yield accs
        finally:
            with torch.no_grad():
                for n in self.names:
                    w = embedding(self.model, n).weight
                    for (r0, c0), t in self._weights[n]:
                        t.copy_(w[r0 : r0 + t.shape[0], c0 : c0 + t.shape[1]])
                    for r0, a in self._accumulators[n]:
                        if n in accs:
                            a.copy_(accs[n][r0 : r0 + len(a)])
            self._install_lookups()

    def close(self) -> None:
        """End of the fit: the model keeps ordinary, whole tables (for the artifact and the test
        evaluation); the shards and TorchRec's modules are dropped."""
        whole = {n: self._gather(n) for n in self.names}
        for n in self.names:
            setattr(self.model, n, self._table(n, whole[n]))
        self._weights, self._accumulators = {}, {}
        del self.dmp


def start(model: nn.Module, cfg: TrainConfig, device: torch.device) -> ShardedTables | None:
    """The model's tables sharded for this fit when `train.sharding` asks for it (see `wanted`)."""
    types = wanted(model, cfg, device)
    if types is None:
        return None
    check(cfg)
    return ShardedTables(model, cfg, types, device)


@contextlib.contextmanager
def whole(sharded: ShardedTables | None) -> Iterator[dict[str, Tensor]]:
    """`sharded.whole()`, or nothing to do when the fit is not sharded."""
    if sharded is None:
        yield {}
        return
    with sharded.whole() as accs:
        yield accs


__all__ = ["ShardableTables", "ShardedLookup", "ShardedTables", "start", "table_bytes", "wanted", "whole"]
