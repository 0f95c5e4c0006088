"""Scale: seconds and peak RSS of each stage on synthetic logs of N interactions over 50 categories
(users N/10, items N/50; data/scale_world.py), each stage in its own process so its peak RSS is
its own (benchmarks/scale_stages.py): generate, prepare, building the flagship (its parameter
bytes, with the compact pair index and what the dense users x categories table would have been),
its warm start alone, one BPR-MF epoch (whose model the later stages load), one flagship epoch,
validation (the trainer's pass, on a `--valid-users` sample and on every user), test evaluation
(`crossrec evaluate`'s default), text encoding (cold on at most `--text-max-items` titles, then
every item from the cache), the serving index build, and serving latency (p50/p99). The log-log
slope of each stage across sizes says how it grows (1.0: linear); scale.png plots them.

    python benchmarks/bench_scale.py --sizes 1M 3M      # writes benchmarks/results/scale.{json,md,png}
    python benchmarks/bench_scale.py --sizes 10M 30M --keep   # adds sizes to the existing results
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, write_results  # noqa: E402
from scale_stages import OPTIONS  # noqa: E402
from scale_stages import STAGES as STAGE_FUNCS  # noqa: E402

SCRIPT = Path(__file__).resolve().parent / "scale_stages.py"
STAGES = tuple(STAGE_FUNCS)
NEEDS_MF = ("validation", "validation_full", "test_eval", "index_build", "serving_p99")  # bprmf_epoch's artifact


def count(text: str) -> int:
    scale = {"k": 1_000, "m": 1_000_000}
    t = text.lower()
    return int(float(t[:-1]) * scale[t[-1]]) if t[-1] in scale else int(t)


def with_prerequisites(stages: list[str]) -> tuple[str, ...]:
    """The stages asked for and those they read from (the log, the Bundle, the BPR-MF artifact),
    in the order of STAGES: each size starts from an empty directory."""
    want = set(stages)
    if want - {"generate"}:
        want |= {"generate", "prepare"}
    if want & set(NEEDS_MF):
        want.add("bprmf_epoch")
    return tuple(s for s in STAGES if s in want)


def run(
    sizes: list[int], stages: tuple[str, ...], options: dict, done: Callable[[int, dict[str, dict]], None]
) -> dict[int, dict[str, dict]]:
    """Every stage at every size; `done(n, stages)` after each size, so a long run keeps what it has."""
    out: dict[int, dict[str, dict]] = {}
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            out[n] = {}
            for stage in stages:
                cmd = [sys.executable, str(SCRIPT), stage, tmp, str(n), json.dumps(options)]
                p = subprocess.run(cmd, capture_output=True, text=True)
                if p.returncode != 0:
                    raise SystemExit(f"{stage} at {n}: {p.stderr[-2000:]}")
                out[n][stage] = json.loads(p.stdout.strip().splitlines()[-1])
                print(n, stage, out[n][stage], flush=True)
        done(n, out[n])
    return out


def slope(sizes: list[int], values: list[float]) -> float | None:
    if len(sizes) < 2 or len(values) != len(sizes) or min(values) <= 0:
        return None
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def _secs(x: float) -> str:
    """Seconds to three significant figures (0.0123, 1.23, 45.6), whole seconds from 100."""
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def _slope_text(sizes: list[int], values: list[float]) -> str:
    s = slope(sizes, values)
    return "" if s is None else f"{round(s, 2) + 0.0:.2f}"  # never "-0.00"


LABELS = {"text_encoding": "text_encoding (cached)", "serving_p99": "serving_p99 (all requests)"}
DEFINED = {
    "generate": "write the synthetic log (`write_scale`: interactions.parquet, items.parquet).",
    "prepare": "read the log and prepare a Bundle (leave-last-out split).",
    "flagship_build": "load the Bundle, build the flagship (dim 64) and run its set-up, warm start included.",
    "warm_start": "the flagship's warm start alone (iALS on the training rows, its factors into the ID tables), "
    "after a set-up that skips it.",
    "bprmf_epoch": "load the Bundle, build BPR-MF (dim 64) and `Trainer.fit` one epoch: set-up, the epoch, its "
    "validation on every user; its artifact is then saved (untimed) for the stages below.",
    "flagship_epoch": "the same for the flagship (dim 64).",
    "validation": "one validation pass as training runs it (ks (10,), no AUC, no beyond-accuracy) of the BPR-MF "
    "artifact on a `train.valid_users` sample of {valid_users:,} users (every user where there are fewer).",
    "validation_full": "the same pass on every validation user (`train.valid_users: 0`, the default).",
    "test_eval": "test evaluation as `crossrec evaluate` runs it by default (ks 5/10/20, slices, AUC, "
    "beyond-accuracy; users in chunks of 1,024) of the BPR-MF artifact; its artifact load left out.",
    "text_encoding": "every item's text (N/50 items) from the offline MiniLM encoder's vector cache, the call "
    "after the cold one; the cold encoding (at most {text_max_items:,} titles) is in the text table.",
    "index_build": "every category's serving index (`serve.index` default: exact FAISS) of the BPR-MF item vectors.",
    "serving_p99": "{requests} top-10 requests answered one at a time by the `Service` object in process (no "
    "HTTP, no micro-batching), users and categories of random training rows; latencies in the serving table.",
}


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def main_table(res: dict[int, dict[str, dict]], options: dict) -> list[str]:
    sizes = sorted(res)
    stages = [s for s in STAGES if all(s in res[n] for n in sizes)]
    rows = []
    for stage in stages:
        cells = [f"{_secs(res[n][stage]['seconds'])} / {res[n][stage]['peak_rss_mb']:.0f}" for n in sizes]
        secs = _slope_text(sizes, [res[n][stage]["seconds"] for n in sizes])
        mem = _slope_text(sizes, [res[n][stage]["peak_rss_mb"] for n in sizes])
        rows.append([LABELS.get(stage, stage), *cells, secs, mem])
    head = ["stage", *(f"N={n:,}: s / peak MB" for n in sizes), "slope (s)", "slope (peak MB)"]
    lines = _table(head, rows)
    lines += ["", "What each row times (`seconds`: the step; loading the Bundle or the model is left out where a"]
    lines += ["stage loads them first; peak MB: the process's own peak RSS, VmHWM, imports and loaded data"]
    lines += ["included):", ""]
    lines += [f"- `{s}`: " + DEFINED[s].format(**options) for s in stages]
    return lines


def _get(res: dict[int, dict[str, dict]], n: int, stage: str, key: str, fmt: str) -> str:
    value = res[n].get(stage, {}).get(key)
    if value is None:
        return ""
    return _secs(value) if fmt == "s" else format(value, fmt)


# (column head, stage, key, format: "s" = seconds) of the tables below the main one
EVAL_COLUMNS = [
    ("validation users", "validation", "users", ","),
    ("validation s", "validation", "seconds", "s"),
    ("full validation users", "validation_full", "users", ","),
    ("full validation s", "validation_full", "seconds", "s"),
    ("test users", "test_eval", "users", ","),
    ("test s", "test_eval", "seconds", "s"),
    ("test users/s", "test_eval", "users_per_s", ",.0f"),
    ("test s, beyond off", "test_eval", "beyond_off_seconds", "s"),
]
TEXT_COLUMNS = [
    ("items", "text_encoding", "items", ","),
    ("model load s", "text_encoding", "model_load_seconds", "s"),
    ("cold titles", "text_encoding", "cold_titles", ","),
    ("cold s", "text_encoding", "cold_seconds", "s"),
    ("titles/s", "text_encoding", "titles_per_s", ".0f"),
    ("cold, all items (est.) s", "text_encoding", "cold_full_seconds_est", "s"),
    ("cached s", "text_encoding", "seconds", "s"),
]
SERVING_COLUMNS = [
    ("index build s", "index_build", "seconds", "s"),
    ("service start s", "serving_p99", "service_seconds", "s"),
    ("requests", "serving_p99", "requests", ","),
    ("p50 ms", "serving_p99", "p50_ms", ".2f"),
    ("p99 ms", "serving_p99", "p99_ms", ".2f"),
]
NO_SLOPE = {"requests", "cold_titles", "model_load_seconds"}  # fixed by the options, not by N
DETAILS = [
    (
        "Evaluation of the BPR-MF artifact (seconds of the pass alone; the last column: the same test pass\n"
        "without the beyond-accuracy columns, `eval.beyond: false`, run after it in the same process):",
        EVAL_COLUMNS,
    ),
    (
        "Text encoding (offline MiniLM, `encoder:` defaults; cold: a seeded sample where there are more items\n"
        "than `--text-max-items`, all items extrapolated at its rate; cached: every item, from a full-size cache):",
        TEXT_COLUMNS,
    ),
    ("Serving the BPR-MF artifact in process (one request at a time, k = 10):", SERVING_COLUMNS),
]


def detail_tables(res: dict[int, dict[str, dict]]) -> list[str]:
    """A table per group of DETAILS that has a stage measured, a row per N, then a slope row."""
    sizes, lines = sorted(res), []
    for title, columns in DETAILS:
        if not any(stage in res[n] for n in sizes for _, stage, _, _ in columns):
            continue
        rows = [[f"{n:,}"] + [_get(res, n, stage, key, fmt) for _, stage, key, fmt in columns] for n in sizes]
        if len(sizes) > 1:
            rows.append(
                ["slope"]
                + [
                    "" if key in NO_SLOPE else _slope_text(sizes, _values(res, stage, key))
                    for _, stage, key, _ in columns
                ]
            )
        lines += ["", *title.split("\n"), "", *_table(["N", *(c[0] for c in columns)], rows)]
    return lines


def _values(res: dict[int, dict[str, dict]], stage: str, key: str) -> list[float]:
    got = [res[n].get(stage, {}).get(key) for n in sorted(res)]
    return [float(v) for v in got] if all(isinstance(v, int | float) for v in got) else []


def markdown(
    res: dict[int, dict[str, dict]],
    options: dict,
    measured_on: dict[str, dict] | None = None,
    reruns: dict[str, list[dict]] | None = None,
) -> str:
    sizes = sorted(res)
    where = measured_on or {}
    lines = [
        "# Scale (benchmarks/bench_scale.py)",
        "",
        "Synthetic logs over 50 categories (users N/10, items N/50); each stage in its own process.",
        "Slopes are log-log across the sizes: 1.0 grows linearly in N.",
        *(
            [
                "Measured: "
                + "; ".join(
                    f"N={n:,} at {where[str(n)].get('commit', '?')}, {where[str(n)].get('date', '?')}, "
                    f"{where[str(n)].get('cpu_count', '?')} cores"
                    for n in sizes
                    if str(n) in where
                )
                + "."
            ]
            if where
            else []
        ),
        *(
            f"N={int(n):,}: {', '.join(r['stages'])} re-run at {r.get('commit', '?')}, {r.get('date', '?')}."
            for n, runs in (reruns or {}).items()
            for r in runs
        ),
        "",
        *main_table(res, options),
        "",
        "![seconds and peak RSS of each stage against N, log-log](scale.png)",
        *detail_tables(res),
        "",
        "One epoch's training steps alone (the epoch rows above also hold the model's set-up, e.g. the",
        "flagship's warm start, its validation and its post-training steps):",
        "",
    ]
    lines += ["| N | BPR-MF epoch (s) | flagship epoch (s) | flagship / BPR-MF |", "|---:|---:|---:|---:|"]
    for n in sizes:
        b, f = res[n].get("bprmf_epoch", {}), res[n].get("flagship_epoch", {})
        if "epoch_train_seconds" in b and "epoch_train_seconds" in f:
            bs, fs = b["epoch_train_seconds"], f["epoch_train_seconds"]
            lines.append(f"| {n:,} | {bs:.1f} | {fs:.1f} | {fs / bs:.1f}x |")
    lines += ["", "Flagship parameters with the compact (user, category) index:", ""]
    lines += ["| N | pair rows | dense rows (users x categories) | parameter MB | dense table alone MB |"]
    lines += ["|---:|---:|---:|---:|---:|"]
    for n in sizes:
        b = res[n].get("flagship_build")
        if b:
            lines.append(
                f"| {n:,} | {b['pair_rows']:,} | {b['dense_rows']:,} | {b['param_bytes'] / 2**20:.0f} "
                f"| {b['dense_table_bytes'] / 2**20:.0f} |"
            )
    return "\n".join(lines)


def plot(res: dict[int, dict[str, dict]], path: Path) -> None:
    """Log-log seconds and peak RSS against N, one line per stage, with a slope-1 guide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossrec.io import atomic_path

    sizes = sorted(res)
    stages = [s for s in STAGES if all(s in res[n] for n in sizes)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, key, label in ((axes[0], "seconds", "seconds"), (axes[1], "peak_rss_mb", "peak RSS (MB)")):
        for i, stage in enumerate(stages):
            ax.plot(sizes, [res[n][stage][key] for n in sizes], marker="o", ls="-" if i < 10 else "--", label=stage)
        top = max(res[n][s][key] for n in sizes for s in stages)
        ax.plot(sizes, [top * n / sizes[-1] for n in sizes], color="grey", ls=":", label="slope 1")
        ax.set(xscale="log", yscale="log", xlabel="interactions N", ylabel=label, title=f"{label} per stage")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["1M", "3M"])
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES, help="with the stages they read from")
    ap.add_argument("--valid-users", type=int, default=OPTIONS["valid_users"], help="the validation stage's sample")
    ap.add_argument(
        "--text-max-items",
        type=int,
        default=OPTIONS["text_max_items"],
        help="most titles encoded cold (a seeded sample; 0: every item); the cached call reads every item",
    )
    ap.add_argument("--requests", type=int, default=OPTIONS["requests"], help="serving requests timed")
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep what the existing results/scale.json has that this run does not measure: other sizes, and "
        "other stages of these sizes (same options only)",
    )
    args = ap.parse_args()
    sizes = [count(s) for s in args.sizes]
    options = {"valid_users": args.valid_users, "text_max_items": args.text_max_items, "requests": args.requests}
    res: dict[int, dict[str, dict]] = {}
    measured_on: dict[str, dict] = {}
    reruns: dict[str, list[dict]] = {}
    if args.keep and (RESULTS / "scale.json").exists():
        old = json.loads((RESULTS / "scale.json").read_text())
        if old["options"] != options:
            raise SystemExit(f"--keep: results/scale.json was measured with {old['options']}, not {options}")
        res = {int(n): r for n, r in old["results"].items()}
        measured_on = {n: old.get("measured_on", {}).get(n, old["machine"]) for n in map(str, res)}
        reruns = old.get("reruns", {})
    kept = set(res)

    def done(n: int, stages: dict[str, dict]) -> None:
        if n in kept:  # --keep: these stages re-run; the size's other stages stay as they were
            reruns.setdefault(str(n), []).append({"stages": sorted(stages), **machine()})
        else:
            measured_on[str(n)] = machine()
        res[n] = res.get(n, {}) | stages
        order = sorted(res)
        data = {
            "sizes": order,
            "options": options,
            "results": {str(k): res[k] for k in order},
            "measured_on": {str(k): measured_on[str(k)] for k in order},
            "reruns": reruns,
        }
        write_results("scale", data, markdown({k: res[k] for k in order}, options, data["measured_on"], reruns))
        plot(res, RESULTS / "scale.png")

    run(sizes, with_prerequisites(args.stages), options, done)


if __name__ == "__main__":
    main()
