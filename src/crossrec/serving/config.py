"""The `serve:` section of a run config: how `crossrec serve` answers requests.

torch-free, like the other config modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from crossrec.typed import Checked


@dataclass(frozen=True)
class ServeConfig(Checked):
    """The service, its index, its store and the HTTP server."""

    section = "serve"

    index: Literal["exact", "hnsw", "auto"] = "exact"  # (str) exact inner product (top-k equals score's) | hnsw | auto (hnsw above hnsw_above items)
    hnsw_above: int = 200_000  # (int) index=auto: categories with more items get an HNSW index
    rerank_pool: int = 200  # (int) candidates the index returns for the exact re-rank of models with user-item terms (the flagship's neighbourhood)
    batch_max: int = 64  # (int) most /recommend requests answered by one batched search (micro-batching)
    batch_wait_ms: float = 0.0  # (float) how long a lone /recommend request waits for others to batch with, 0..10000 (0: answered at once; a burst batches by itself)
    max_k: int = 100  # (int) the largest k a request may ask for
    explain_top: int = 3  # (int) history items named per explanation
    store: str | None = None  # (str|None) feedback / new-item database; None = <out>/serving/store.sqlite
    host: str = "127.0.0.1"  # (str) address to listen on
    port: int = 8000  # (int) port to listen on
    api_key_env: str = "CROSSREC_API_KEY"  # (str) environment variable holding the API key of the write and admin endpoints (unset: they refuse)
    max_body_bytes: int = 65_536  # (int) largest request body accepted

    def validate(self) -> None:
        if not 0 <= self.batch_wait_ms <= 10_000:  # NaN fails too; a lone request never waits over 10 s
            raise ValueError(f"serve.batch_wait_ms={self.batch_wait_ms}; expected 0..10000 (milliseconds)")
        for name in ("hnsw_above", "rerank_pool", "batch_max", "max_k", "explain_top", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"serve.{name}={getattr(self, name)}; expected >= 1")
        if not 0 < self.port < 65536:
            raise ValueError(f"serve.port={self.port}; expected 1..65535")


__all__ = ["ServeConfig"]
