"""Serving with several processes (`crossrec serve --serve.workers N`): `/recommend` p50/p99 and
requests/s at 64 closed-loop clients for 1 and 2 server processes, and how long feedback given to
one process takes to be served by the other (a new user's first event: popularity until then).

Data: a scale log (data/scale_world.py, `--interactions`, 50 categories), the flagship trained one
epoch (dim 64, its neighbourhood term on); each set-up runs the real CLI server (uvicorn, one
thread per process) on loopback, the load generator of bench_serving.py (one keep-alive
connection per client) beside it on the same cores. Requests ask the largest category for random
users of the log.

    python benchmarks/bench_serving_workers.py [--interactions 300k --seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serving  # noqa: E402
from bench_scale import count  # noqa: E402
from common import write_results  # noqa: E402
from crossrec.artifact import save_artifact  # noqa: E402
from crossrec.data.batch import Sizes  # noqa: E402
from crossrec.data.prepare import PrepareConfig, prepare  # noqa: E402
from crossrec.data.scale_world import ScaleConfig, write_scale  # noqa: E402
from crossrec.models.per_category import build  # noqa: E402
from crossrec.serving.config import ServeConfig  # noqa: E402
from crossrec.training.trainer import TrainConfig, Trainer  # noqa: E402

KEY = "bench"
PORT = 8792
FOLLOW_MS = ServeConfig().follow_ms


def setup(root: Path, n: int):
    write_scale(root / "raw", ScaleConfig(interactions=n, categories=50, seed=0))
    inter = pl.read_parquet(root / "raw" / "interactions.parquet")
    items = pl.read_parquet(root / "raw" / "items.parquet")
    bundle = prepare(inter, items, PrepareConfig(split="leave_last_out"), root / "bundle")
    torch.manual_seed(0)
    params = {"dim": 64}
    model = build("crossrec", "pooled", params, Sizes.from_bundle(bundle))
    Trainer(TrainConfig(epochs=1, progress=False, checkpoint=False, patience=0)).fit(model, bundle)
    save_artifact(root / "out", model, "crossrec", "pooled", params, Sizes.from_bundle(bundle), bundle=bundle)
    return bundle


def start(root: Path, bundle, workers: int) -> subprocess.Popen:
    serve = {"port": PORT, "workers": workers, "store": str(root / f"store-{workers}.sqlite")}
    cfg = root / f"serve-{workers}.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"bundle": str(bundle.root)}, "out": str(root / "out"), "serve": serve}))
    env = os.environ | {"CROSSREC_API_KEY": KEY, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "crossrec.cli", "serve", str(cfg)], env=env, start_new_session=True)
    seen: set[int] = set()
    deadline = time.time() + 600
    while len(seen) < workers:  # every process up: new connections until each has answered
        assert proc.poll() is None and time.time() < deadline, "the server did not start"
        try:
            seen.add(httpx.get(f"http://127.0.0.1:{PORT}/health", headers={"Connection": "close"}).json()["worker"])
        except httpx.HTTPError:
            time.sleep(0.5)
    return proc


def _pinned(other_than: int | None = None) -> tuple[httpx.Client, int]:
    """A keep-alive client whose connection one process holds (not `other_than`)."""
    for _ in range(200):
        c = httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=10.0, headers={"X-API-Key": KEY})
        pid = c.get("/health").json()["worker"]
        if pid != other_than:
            return c, pid
        c.close()
    raise RuntimeError("no connection reached another process")


def propagation(bundle, category: str, trials: int = 20) -> list[float]:
    """Seconds from a 201 on POST /feedback at one process until the other serves that new user
    from it, for `trials` new users."""
    a, pid_a = _pinned()
    b, _ = _pinned(other_than=pid_a)
    item = str(bundle.raw_item_ids()[int(bundle.item_index(bundle.categories.index(category))[0])])
    out = []
    for t in range(trials):
        user = f"bench-new-{t}"
        r = a.post("/feedback", json={"user": user, "item": item, "event": "click", "timestamp": 1.0})
        assert r.status_code == 201, r.text
        t0 = time.perf_counter()
        params = {"user": user, "category": category, "k": 10}
        while b.get("/recommend", params=params).json()["source"] == "popularity":
            time.sleep(0.005)
        out.append(time.perf_counter() - t0)
    a.close()
    b.close()
    return out


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--interactions", default="300k")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--clients", type=int, default=64)
    args = ap.parse_args()
    bench_serving.PORT = PORT
    root = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    bundle = setup(root, count(args.interactions))
    sizes = [bundle.n_items_in(c) for c in range(len(bundle.categories))]
    category = bundle.categories[int(np.argmax(sizes))]
    users = [str(u) for u in bundle.raw_user_ids()[:20_000]]
    rows = []
    for workers in (1, 2):
        proc = start(root, bundle, workers)
        try:
            asyncio.run(bench_serving.load(users, 4, 2.0, category))  # warm-up
            row = asyncio.run(bench_serving.load(users, args.clients, args.seconds, category))
            if workers > 1:
                lag = propagation(bundle, category)
                row |= {"feedback_lag_median_s": float(np.median(lag)), "feedback_lag_max_s": max(lag)}
        finally:
            stop(proc)
        rows.append({"workers": workers, **row})
        print(rows[-1], flush=True)
    data = {
        "interactions": bundle.split("train").height,
        "category": category,
        "category_items": int(max(sizes)),
        "seconds": args.seconds,
        "rows": rows,
    }
    table = [
        f"| {r['workers']} | {r['clients']} | {r['requests']:,} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
        f"| {r['errors']} |"
        for r in rows
    ]
    md = f"""# Serving with several processes (benchmarks/bench_serving_workers.py)

The flagship (dim 64, one epoch) on a scale log of {data["interactions"]:,} training interactions over
50 categories; `/recommend` for random users in its largest category ({data["category_items"]:,} items),
{args.clients} closed-loop clients for {args.seconds:.0f} s per row. `crossrec serve` with
`serve.workers` 1 and 2 (one thread per process); server and load generator share the machine's
{os.cpu_count()} cores.

| server processes | clients | requests | req/s | p50 ms | p99 ms | errors |
|---:|---:|---:|---:|---:|---:|---:|
""" + "\n".join(table)
    lagged = [r for r in rows if "feedback_lag_median_s" in r]
    for r in lagged:
        md += (
            f"\n\nFeedback given to one of {r['workers']} processes (a new user's first event), served by another"
            f" (`serve.follow_ms` {FOLLOW_MS:.0f}): median {r['feedback_lag_median_s'] * 1000:.0f} ms, "
            f"at most {r['feedback_lag_max_s'] * 1000:.0f} ms over 20 new users."
        )
    write_results("serving_workers", data, md)
    print(md)


if __name__ == "__main__":
    main()
