"""Serving: the index against full scoring, and `/recommend` under load on loopback.

1. A synthetic world with a category of over 100,000 items (`big`) beside a small one; BPR-MF (pooled, the
   index alone) and the flagship (neighbourhood term on: index + exact re-rank) trained briefly.
2. Exact index: share of 1,000 random users whose top-10 equals `score`'s. HNSW: recall@10
   against exact. Flagship: share of the same users whose top-10 (index + the neighbourhood's
   sparse candidates re-scored) equals full scoring.
3. Load: `crossrec serve`'s app under uvicorn (one process) on 127.0.0.1; N closed-loop clients
   (a minimal asyncio HTTP/1.1 client, one keep-alive connection each) ask `/recommend` for random
   users in `big` for a fixed time; p50/p99 latency, requests/s, errors and the mean micro-batch
   at 16 and 64 clients, for MF and for the flagship (neighbourhood term on). Client and server
   share the machine's cores.

    python benchmarks/bench_serving.py [--seconds 15 --users 50000 --items 160000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402
from crossrec.artifact import load_artifact, save_artifact  # noqa: E402
from crossrec.data.batch import Sizes  # noqa: E402
from crossrec.data.prepare import PrepareConfig, prepare  # noqa: E402
from crossrec.data.synthetic import SyntheticConfig, generate  # noqa: E402
from crossrec.models.per_category import build  # noqa: E402
from crossrec.serving.config import ServeConfig  # noqa: E402
from crossrec.serving.index import ItemIndex, recall_against_exact  # noqa: E402
from crossrec.serving.service import Service  # noqa: E402
from crossrec.training.trainer import TrainConfig, Trainer  # noqa: E402

PORT = 8791


def world(root: Path, users: int, items: int):
    cfg = SyntheticConfig(
        n_users=users,
        categories=("big", "small"),
        items_per_category=(items, 2_000),
        interactions_per_user=(12.0, 4.0),
        seed=0,
    )
    inter, items = generate(cfg)
    return prepare(inter, items, PrepareConfig(), root / "bundle")


def fit(bundle, root: Path, name: str, params: dict, epochs: int):
    torch.manual_seed(0)
    model = build(name, "pooled", params, Sizes.from_bundle(bundle))
    Trainer(TrainConfig(epochs=epochs, batch_size=4096, lr=5e-3, progress=False, seed=0, patience=epochs)).fit(
        model, bundle
    )
    save_artifact(root / name, model, name, "pooled", params, Sizes.from_bundle(bundle), bundle=bundle)
    return load_artifact(root / name)


def top10_agreement(svc: Service, art, bundle, users: np.ndarray) -> float:
    same = 0
    with torch.no_grad():
        full = art.model.score(torch.from_numpy(users), 0)
    ids = bundle.item_index(0)
    raw = bundle.raw_item_ids()
    for row, u in enumerate(users):
        s = full[row].numpy()
        order = np.lexsort((np.arange(len(s)), -s))[:10]
        want = [str(raw[ids[j]]) for j in order]
        got = [x["item"] for x in svc.recommend(str(raw_users[u]), "big", 10, exclude_seen=False)["items"]]
        same += got == want
    return same / len(users)


def serve(art_root: str, bundle_root: str, index: str) -> None:  # the server process
    import uvicorn

    from crossrec.data.bundle import Bundle
    from crossrec.serving.api import create_app

    torch.set_num_threads(1)
    art, bundle = load_artifact(art_root), Bundle.load(bundle_root)
    cfg = ServeConfig(index=index)  # type: ignore[arg-type]
    app = create_app(lambda: Service(art, bundle, cfg), cfg, api_key="bench")
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="error")


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> int:
    """One keep-alive HTTP/1.1 GET on an open connection; returns the status (the body is read
    and dropped). A minimal client, so that the load generator takes little of the shared cores."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(h.split(":", 1)[1]) for h in lines if h.lower().startswith("content-length:"))
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def load(users: list[str], clients: int, seconds: float, category: str = "big") -> dict:
    """`clients` closed-loop clients, one keep-alive connection each, for `seconds`."""
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    rng = np.random.default_rng(clients)
    port = PORT  # read when called: bench_serving_workers.py sets it

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop:
                u = users[int(rng.integers(len(users)))]
                t0 = time.perf_counter()
                status = await _get(reader, writer, f"/recommend?user={u}&category={category}&k=10")
                lat.append(time.perf_counter() - t0)
                errors += status != 200
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {
        "clients": clients,
        "requests": len(lat),
        "errors": errors,
        "rps": len(lat) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def batch_counters() -> tuple[float, float]:
    """(/recommend requests answered, batched calls made) so far, from the server's /metrics."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{PORT}/metrics", timeout=5.0).text
    val = {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines() if ln.startswith("crossrec_recommend_batch")}
    return val["crossrec_recommend_batched_requests_total"], val["crossrec_recommend_batches_total"]


def measured(users: list[str], clients: int, seconds: float) -> dict:
    """One load row, with the mean number of requests per batched call during it."""
    r0, b0 = batch_counters()
    row = asyncio.run(load(users, clients, seconds))
    r1, b1 = batch_counters()
    return row | {"mean_batch": (r1 - r0) / max(1.0, b1 - b0)}


def wait_up() -> None:
    import httpx

    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{PORT}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError("the server did not come up")


def main() -> None:
    global raw_users
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument(
        "--items",
        type=int,
        default=160_000,
        help="items drawn for the big category (those that get no interaction are dropped: ~107k remain)",
    )
    ap.add_argument("--out", default="serving", help="results name under benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    bundle = world(tmp, args.users, args.items)
    raw_users = bundle.raw_user_ids()
    rng = np.random.default_rng(0)
    sample = rng.choice(bundle.n_users, 1000, replace=False).astype(np.int64)
    out: dict = {"n_items_big": int(bundle.n_items_in(0)), "n_users": int(bundle.n_users)}
    arts = {
        "mf": fit(bundle, tmp, "mf", {"dim": 64}, args.epochs),
        "crossrec": fit(bundle, tmp, "crossrec", {"dim": 64, "neighbourhood": {"k": 50}}, 1),
    }
    svc = Service(arts["mf"], bundle)
    out["exact_top10_agreement_mf"] = top10_agreement(svc, arts["mf"], bundle, sample)
    idx = svc._indexes[0]
    vec = np.vstack([idx._index.reconstruct(i) for i in range(len(idx))])
    hnsw = ItemIndex(vec, idx.ids, kind="hnsw")
    q = svc._query(torch.from_numpy(sample), 0)
    out["hnsw_recall@10"] = recall_against_exact(hnsw, idx, q)
    flag = Service(arts["crossrec"], bundle)
    out["flagship_top10_agreement"] = top10_agreement(flag, arts["crossrec"], bundle, sample)
    with torch.no_grad():
        sizes = [len(flag.view.sparse_candidates(torch.tensor([int(u)]), 0)) for u in sample]
    out["flagship_sparse_candidates_mean"] = float(np.mean(sizes))
    out["load"] = {}
    for name, model, index in (("mf", "mf", "exact"), ("mf hnsw", "mf", "hnsw"), ("crossrec", "crossrec", "exact")):
        proc = mp.get_context("spawn").Process(target=serve, args=(str(tmp / model), str(bundle.root), index))
        proc.start()
        try:
            wait_up()
            users = [str(u) for u in raw_users[:5000]]
            asyncio.run(load(users, 4, 2.0))  # warm-up
            out["load"][name] = [measured(users, n, args.seconds) for n in (16, 64)]
            print(name, out["load"][name], flush=True)
        finally:
            proc.terminate()
            proc.join()
    rows = [
        f"| {m} | {r['clients']} | {r['requests']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['mean_batch']:.1f} | {r['errors']} |"
        for m, rs in out["load"].items()
        for r in rs
    ]
    md = f"""# Serving benchmark

A {out["n_items_big"]:,}-item category, {out["n_users"]:,} users (synthetic), 2 CPU cores shared by
server (uvicorn with httptools + uvloop, one process) and the load generator (closed-loop clients, one
keep-alive connection each, a minimal asyncio HTTP client), loopback, {args.seconds:.0f} s per row.
Concurrent `/recommend` requests are micro-batched (`batch` = mean requests per batched call).
`python benchmarks/bench_serving.py`.

- Exact index top-10 = `score`'s top-10 (BPR-MF): {out["exact_top10_agreement_mf"]:.1%} of 1,000 users.
- HNSW (M 32, efSearch 128) recall@10 against exact: {out["hnsw_recall@10"]:.3f}.
- Flagship (index with the content columns + the neighbourhood's sparse candidates re-scored,
  {out["flagship_sparse_candidates_mean"]:.0f} per user on average): top-10 = full scoring for
  {out["flagship_top10_agreement"]:.1%} of the same 1,000 users.

| model | clients | requests | req/s | p50 ms | p99 ms | batch | errors |
|---|---:|---:|---:|---:|---:|---:|---:|
""" + "\n".join(rows)
    write_results(args.out, out, md)
    print(md)


if __name__ == "__main__":
    main()
