"""The stages of bench_scale.py, each run in a process of its own so that its peak RSS is its own:

    python benchmarks/scale_stages.py STAGE ROOT N [OPTIONS_JSON]

prints one JSON line: the stage's numbers, `seconds` and `peak_rss_mb` (the peak RSS of the whole
process, VmHWM: interpreter, imports, the loaded data and the step; `ru_maxrss_mb` beside it). Where a stage loads data or a model
before the step it measures, `seconds` is the step alone, the loading is in `*_seconds` keys of its
own, and `rss_before_mb` is the peak before the step. ROOT holds what earlier stages wrote:
raw/ (generate), bundle/ (prepare), mf/ (the BPR-MF artifact bprmf_epoch saves after one epoch).
Every library is imported inside its stage, so a stage's peak RSS holds only what it needs.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

DIM = 64
MF_PARAMS = {"dim": DIM}
FLAGSHIP_PARAMS = {"dim": DIM}
STARTED = [0.0]  # when this process's stage began (main)
OPTIONS = {"valid_users": 50_000, "text_max_items": 5_000, "requests": 500}  # bench_scale.py's flags


def rss_mb() -> float:
    """This process's own peak RSS in MB: VmHWM, the high-water mark of its address space. Not
    ru_maxrss alone: on Linux a child's ru_maxrss starts at its parent's RSS (fork copies it, exec
    keeps it), so every stage would read at least bench_scale.py's own RSS, torch included."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return ru_maxrss_mb()


def ru_maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def timed(out: dict[str, Any], key: str = "seconds") -> Iterator[None]:
    """Time the block into out[key]; the step (`seconds`) also records the peak RSS before it."""
    if key == "seconds":
        out["rss_before_mb"] = rss_mb()
    t0 = time.perf_counter()
    yield
    out[key] = time.perf_counter() - t0


def _bundle(root: Path) -> Any:
    from crossrec.data.bundle import Bundle

    return Bundle.load(root / "bundle")


def _loaded(root: Path, out: dict[str, Any]) -> tuple[Any, Any]:
    """(the BPR-MF artifact bprmf_epoch saved, its bundle), their load time in out["load_seconds"]."""
    from crossrec.artifact import check_bundle, load_artifact

    with timed(out, "load_seconds"):
        bundle = _bundle(root)
        art = load_artifact(root / "mf")
        check_bundle(art, bundle)
    return art, bundle


def _users_with_rows(bundle: Any, split: str) -> int:
    return int((np.diff(bundle.csr(split).indptr) > 0).sum())


# ---------------------------------------------------------------- data


def generate(root: Path, n: int, opt: dict[str, Any]) -> dict[str, Any]:
    from crossrec.data.scale_world import ScaleConfig, write_scale

    return {"rows": write_scale(root / "raw", ScaleConfig(interactions=n, categories=50))[2]}


def prepare(root: Path, n: int, opt: dict[str, Any]) -> dict[str, Any]:
    import polars as pl

    from crossrec.data.prepare import PrepareConfig, prepare

    inter = pl.read_parquet(root / "raw" / "interactions.parquet")
    items = pl.read_parquet(root / "raw" / "items.parquet")
    prepare(inter, items, PrepareConfig(split="leave_last_out"), root / "bundle")
    return {}


# ---------------------------------------------------------------- models


def _model(name: str, params: dict[str, Any], bundle: Any) -> tuple[Any, Any]:
    import torch

    from crossrec.data.batch import Sizes
    from crossrec.models.per_category import build

    sizes = Sizes.from_bundle(bundle)
    torch.manual_seed(0)
    return build(name, "pooled", params, sizes), sizes


def flagship_build(root: Path, n: int, opt: dict[str, Any]) -> dict[str, Any]:
    """Build and set up the flagship (its warm start included), with its parameter bytes."""
    bundle = _bundle(root)
    model, sizes = _model("crossrec", FLAGSHIP_PARAMS, bundle)
    model.setup(bundle)
    return {
        "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "pair_rows": len(model.pair_keys_),
        "dense_rows": sizes.n_users * sizes.n_categories,
        "dense_table_bytes": sizes.n_users * sizes.n_categories * DIM * 4,
    }


def warm_start(root: Path, n: int, opt: dict[str, Any]) -> dict[str, Any]:
    """The flagship's warm start alone (models/crossrec/warm.py: iALS on the training rows, its
    factors copied into the ID tables), after a set-up that skips it."""
    from crossrec.models.crossrec.warm import warm_start as warm

    out: dict[str, Any] = {}
    with timed(out, "setup_seconds"):
        bundle = _bundle(root)
        model, _ = _model("crossrec", FLAGSHIP_PARAMS, bundle)
        model.warmed = True  # setup() then leaves the warm start to the timed call below
        model.setup(bundle)
    with timed(out):
        out["warmed"] = warm(model, bundle, None)
    return out


def _fit_one_epoch(name: str, params: dict[str, Any], root: Path) -> tuple[dict[str, Any], Any, Any, Any]:
    from crossrec.training.trainer import TrainConfig, Trainer

    bundle = _bundle(root)
    model, sizes = _model(name, params, bundle)
    cfg = TrainConfig(epochs=1, batch_size=2048, progress=False, checkpoint=False, patience=0, seed=0)
    t0 = time.perf_counter()
    res = Trainer(cfg).fit(model, bundle)  # set-up, one epoch, its validation, post-training steps
    out = {
        "fit_seconds": time.perf_counter() - t0,
        "epoch_train_seconds": res.history[0]["train_seconds"],  # the training steps alone
    }
    return out, model, sizes, bundle


def bprmf_epoch(root: Path, n: int, opt: dict[str, Any]) -> dict[str, Any]:
    """One BPR-MF epoch; then its artifact is saved (root/mf) for the evaluation and serving stages."""
    from crossrec.artifact import save_artifact

    out, model, sizes, bundle = _fit_one_epoch("mf", MF_PARAMS, root)
    out["seconds"] = time.perf_counter() - STARTED[0]  # as flagship_epoch's: the whole stage, not the save
    with timed(out, "save_seconds"):
        save_artifact(root / "mf", model, "mf", "pooled", MF_PARAMS, sizes, bundle=bundle)
    return out


def flagship_epoch(root: Path, n: int, opt: dict[str, Any]) -> dict[str, Any]:
    return _fit_one_epoch("crossrec", FLAGSHIP_PARAMS, root)[0]


# ---------------------------------------------------------------- evaluation


def _validation(root: Path, max_users: int) -> dict[str, Any]:
    """One validation pass as the trainer runs it (training/trainer.py: ks (10,), no AUC, no
    beyond-accuracy, `train.valid_users` users) of the BPR-MF artifact; the Evaluator is built
    once before training, so its construction is `setup_seconds`, not the pass."""
    from crossrec.evaluation.evaluator import EvalConfig, Evaluator
    from crossrec.training.config import TrainConfig

    out: dict[str, Any] = {}
    art, bundle = _loaded(root, out)
    t = TrainConfig()
    cfg = EvalConfig(
        ks=(10,), batch_size=t.eval_batch_size, slices=False, auc=False, beyond=False, max_users=max_users, seed=t.seed
    )
    with timed(out, "setup_seconds"):
        ev = Evaluator(bundle, cfg, split="valid")
    with timed(out):
        res = ev.evaluate(art.model)
    out["max_users"] = max_users
    out["users"] = len(ev.sample) if ev.sample is not None else _users_with_rows(bundle, "valid")
    out["ndcg@10"] = res.metric("ndcg@10")
    return out


def validation(root: Path, n: int, opt: dict[str, Any]) -> dict[str, Any]:
    return _validation(root, int(opt["valid_users"]))


def validation_full(root: Path, n: int, opt: dict[str, Any]) -> dict[str, Any]:
    return _validation(root, 0)


def test_eval(root: Path, n: int, opt: dict[str, Any]) -> dict[str, Any]:
    """Test evaluation as `crossrec evaluate` runs it by default (pipeline.evaluate with the default
    eval section: ks 5/10/20, slices, AUC, beyond-accuracy; users in chunks of eval.batch_size)."""
    from crossrec.evaluation.evaluator import EvalConfig, Evaluator

    out: dict[str, Any] = {}
    art, bundle = _loaded(root, out)
    with timed(out):
        res = Evaluator(bundle, EvalConfig(), split="test").evaluate(art.model)
    # then without the beyond-accuracy columns (their lists score every user in every category)
    with timed(out, "beyond_off_seconds"):
        Evaluator(bundle, EvalConfig(beyond=False), split="test").evaluate(art.model)
    out["users"] = _users_with_rows(bundle, "test")
    out["users_per_s"] = out["users"] / out["seconds"]
    out["ndcg@10"] = res.metric("ndcg@10")
    return out


# ---------------------------------------------------------------- text


def text_encoding(root: Path, n: int, opt: dict[str, Any]) -> dict[str, Any]:
    """The item texts through the offline MiniLM encoder into a fresh cache (a fixed seeded sample
    of at most `text_max_items` when there are more items), then every item's text from the cache.

    When sampled, the cache is topped up with the other items' hashes and random unit vectors
    before the cached call, so that call reads a full-size cache: its cost (hashing, reading the
    file, the row look-up) does not depend on the vectors' values."""
    from crossrec.encoders.config import EncoderConfig
    from crossrec.encoders.text import bundle_texts, encode_texts, load_text_model, read_cache, text_hashes, write_cache

    out: dict[str, Any] = {}
    bundle = _bundle(root)
    cfg = EncoderConfig(cache=str(root / "text-cache"))
    texts = bundle_texts(bundle, cfg)
    cap = int(opt["text_max_items"]) or len(texts)
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(texts), cap, replace=False)) if cap < len(texts) else np.arange(len(texts))
    with timed(out, "model_load_seconds"):
        model = load_text_model(cfg)
    with timed(out, "cold_seconds"):
        cold = encode_texts([texts[i] for i in pick], cfg, progress=False, model=model)
    out |= {"items": len(texts), "cold_titles": cold.encoded, "titles_per_s": cold.encoded / out["cold_seconds"]}
    out["cold_full_seconds_est"] = len(texts) / out["titles_per_s"]
    (path,) = (root / "text-cache").glob("*.safetensors")
    if len(pick) < len(texts):
        keys, vecs = read_cache(path)
        rest = np.setdiff1d(np.arange(len(texts)), pick)
        fill = rng.standard_normal((len(rest), vecs.shape[1])).astype(np.float32)
        fill /= np.linalg.norm(fill, axis=1, keepdims=True)
        meta = {"model_id": cold.model_id, "max_tokens": str(cfg.max_tokens)}
        write_cache(
            path, np.concatenate([keys, text_hashes([texts[i] for i in rest])]), np.concatenate([vecs, fill]), meta
        )
    del model
    with timed(out):  # the cached call: every item's text, none through the model
        cached = encode_texts(texts, cfg, progress=False)
    out |= {"cached_items": cached.cached, "cached_encoded": cached.encoded, "cache_mb": path.stat().st_size / 2**20}
    return out


# ---------------------------------------------------------------- serving


def index_build(root: Path, n: int, opt: dict[str, Any]) -> dict[str, Any]:
    """Every category's serving index of the BPR-MF artifact's item vectors, as the service builds
    them at start (serving/service.py `_build_index`, the default `serve.index`)."""
    import torch

    from crossrec.models.base import IndexColumns
    from crossrec.serving.config import ServeConfig
    from crossrec.serving.flagship import serving_view
    from crossrec.serving.index import ItemIndex

    out: dict[str, Any] = {}
    art, bundle = _loaded(root, out)
    model, view, cfg = art.model, serving_view(art.model), ServeConfig()
    kinds: list[str] = []
    with torch.no_grad(), timed(out):
        for c in range(bundle.n_categories):
            v = model.item_vectors(c)
            if isinstance(view, IndexColumns):
                v = torch.cat([v, view.index_item_columns(c)], 1)
            kinds.append(ItemIndex(v.float().cpu().numpy(), bundle.item_index(c), cfg.index, cfg.hnsw_above).kind)
    out |= {"items": int(bundle.n_items), "categories": bundle.n_categories, "kinds": sorted(set(kinds))}
    return out


def serving_p99(root: Path, n: int, opt: dict[str, Any]) -> dict[str, Any]:
    """`requests` top-10 recommendations answered one at a time by the Service object in process
    (no HTTP, no micro-batching): each for a (user, category) of a random training row, so known
    users in the categories they use; 20 requests first as a warm-up."""
    from crossrec.serving.service import Service

    out: dict[str, Any] = {}
    art, bundle = _loaded(root, out)
    with timed(out, "service_seconds"):
        svc = Service(art, bundle)
    rows = bundle.rows("train")
    rng = np.random.default_rng(0)
    at = rng.integers(0, rows.height, int(opt["requests"]) + 20)
    users, cats = rows["user"].to_numpy()[at], rows["category"].to_numpy()[at]
    raw, names = bundle.raw_user_ids(), bundle.categories
    lat = []
    for u, c in zip(users, cats, strict=True):
        t0 = time.perf_counter()
        svc.recommend(str(raw[u]), names[c], 10)
        lat.append(time.perf_counter() - t0)
    ms = np.array(lat[20:]) * 1000
    out |= {
        "seconds": float(ms.sum() / 1000),
        "requests": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }
    return out


STAGES: dict[str, Callable[[Path, int, dict[str, Any]], dict[str, Any]]] = {
    "generate": generate,
    "prepare": prepare,
    "flagship_build": flagship_build,
    "warm_start": warm_start,
    "bprmf_epoch": bprmf_epoch,
    "flagship_epoch": flagship_epoch,
    "validation": validation,
    "validation_full": validation_full,
    "test_eval": test_eval,
    "text_encoding": text_encoding,
    "index_build": index_build,
    "serving_p99": serving_p99,
}


def main(argv: list[str]) -> None:
    stage, root, n = argv[0], Path(argv[1]), int(argv[2])
    opt = OPTIONS | (json.loads(argv[3]) if len(argv) > 3 else {})
    STARTED[0] = time.perf_counter()
    out = STAGES[stage](root, n, opt)
    out.setdefault("seconds", time.perf_counter() - STARTED[0])  # a stage without a step of its own: all of it
    out["peak_rss_mb"] = rss_mb()
    out["ru_maxrss_mb"] = ru_maxrss_mb()  # the same where the parent's RSS was smaller
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
