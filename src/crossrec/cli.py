"""`crossrec prepare | encode | train | evaluate | recommend | serve | update | experiment | tune | report | demo | synth`: parse arguments, call pipeline functions.

Every command takes an optional YAML preset and dotted overrides after it:

    crossrec train configs/quickstart.yaml --train.lr=3e-4 --model.dim=128

Unknown keys and wrongly typed values are errors.

Every failure is one line on stderr, `error: <what, where, what was expected>`, never a traceback:
exit code 2 for bad input (data, config, paths, damaged files), 1 for an internal error, 130 when
interrupted. `CROSSREC_DEBUG=1` prints the traceback as well (cli_errors.py).
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from pathlib import Path

import typer
from rich.console import Console

from crossrec.cli_errors import guard, print_error
from crossrec.extras import require

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="crossrec: cross-category recommendation (prepare, train, evaluate, recommend, demo).",
)
# no hard wrapping of long lines in logs and pipes; no emoji codes: a `:-1:` in a name stays text
console = Console(soft_wrap=True, emoji=False)
OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}
CONFIG_ARG = typer.Argument(None, help="YAML preset; dotted overrides (--section.key=value) may follow.")


def _config(path: Path | None, ctx: typer.Context):
    from crossrec.config import load_config

    cfg = load_config(path, list(ctx.args))  # checked before torch is imported: a bad one fails fast
    from crossrec.pipeline import seed_everything

    seed_everything(cfg.seed)
    return cfg


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log per-epoch progress.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")


@app.command(context_settings=OVERRIDES)
@guard
def prepare(ctx: typer.Context, config: Path | None = CONFIG_ARG) -> None:
    """Read raw data, filter, split, and write the Bundle to data.bundle."""
    cfg = _config(config, ctx)  # checked before torch is imported
    from crossrec.pipeline import prepare_data

    bundle = prepare_data(cfg)
    console.print(f"prepared {bundle.n_users} users, {bundle.n_items} items -> {bundle.root}")
    console.print(json.dumps(bundle.manifest["counts"], indent=2))


@app.command(context_settings=OVERRIDES)
@guard
def encode(ctx: typer.Context, config: Path | None = CONFIG_ARG) -> None:
    """Encode every item's text of the prepared Bundle with encoder.model into the vector cache."""
    from crossrec.data.bundle import Bundle
    from crossrec.encoders.text import encode_bundle

    cfg = _config(config, ctx)
    bundle = Bundle.load(cfg.data.bundle)
    tv = encode_bundle(bundle, cfg.encoder, progress=True)
    rate = tv.encoded / tv.seconds if tv.encoded else float("nan")
    console.print(
        f"{len(tv.vectors)} items ({int((~tv.present).sum())} without text): {tv.cached} from the cache, "
        f"{tv.encoded} encoded in {tv.seconds:.1f}s ({rate:.0f} texts/s) with {tv.model_id}"
    )


@app.command(context_settings=OVERRIDES)
@guard
def train(
    ctx: typer.Context,
    config: Path | None = CONFIG_ARG,
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoints in `out`."),
    nproc: int = typer.Option(
        1, "--nproc", min=1, help="Train in N processes on this machine (torchrun; gloo on CPU, NCCL on GPU)."
    ),
) -> None:
    """Train model.name (single or pooled) on the prepared Bundle; write the artifact to `out`."""
    cfg = _config(config, ctx)  # a bad config or override is refused before torch is imported
    from crossrec import distributed
    from crossrec.pipeline import train as run_train

    if nproc > 1 and not distributed.launched():
        _torchrun(nproc, config, list(ctx.args) + (["--resume"] if resume else []))
        return
    art = run_train(cfg, resume=resume)
    if distributed.is_main():
        console.print(f"trained {art.name} ({art.mode}) -> {art.root}")
        console.print(json.dumps(art.meta["train_result"], default=str)[:2000])


def _torchrun(nproc: int, config: Path | None, args: list[str]) -> None:
    """Re-run `train` under torchrun with `nproc` local processes; exit with its status."""
    import subprocess

    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "crossrec.cli",
        "train",
        *([str(config)] if config is not None else []),
        *args,
    ]
    code = subprocess.call(cmd)
    if code:
        raise typer.Exit(code)


@app.command(context_settings=OVERRIDES)
@guard
def evaluate(
    ctx: typer.Context,
    config: Path | None = CONFIG_ARG,
    split: str = typer.Option("test", help="Split to evaluate: valid or test."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the table as JSON here."),
) -> None:
    """Evaluate the artifact in `out` on data.bundle (full ranking by default; see eval.*)."""
    cfg = _config(config, ctx)  # checked before torch is imported
    from crossrec.data.bundle import Bundle
    from crossrec.io import check_output_file, write_output_json
    from crossrec.pipeline import evaluate as run_eval

    if json_out is not None:  # before the work: a refused path fails fast
        check_output_file(json_out, "evaluation", "--json")
    result = run_eval(cfg.out, Bundle.load(cfg.data.bundle), cfg.eval, split)
    console.print(result.to_markdown(), markup=False)
    if json_out is not None:
        write_output_json(json_out, "evaluation", result.to_json(), "--json")


@app.command(context_settings=OVERRIDES)
@guard
def recommend(
    ctx: typer.Context,
    config: Path | None = CONFIG_ARG,
    user: str = typer.Option(..., "--user", help="Raw user id, as in the source data."),
    category: str = typer.Option(..., "--category", help="Category name to recommend from."),
    k: int = typer.Option(10, "-k", help="How many items."),
) -> None:
    """Print the top-k items (with titles) of a category for one user."""
    cfg = _config(config, ctx)  # checked before torch is imported
    from crossrec.data.bundle import Bundle
    from crossrec.pipeline import recommend as run_rec

    table = run_rec(cfg.out, Bundle.load(cfg.data.bundle), user, category, k)
    from rich.table import Table

    t = Table(title=f"top {k} in {category} for user {user}")
    for col in table.columns:
        t.add_column(col)
    for row in table.iter_rows():
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    console.print(t)


@app.command(context_settings=OVERRIDES)
@guard
def serve(ctx: typer.Context, config: Path | None = CONFIG_ARG) -> None:
    """Serve the trained artifact (`out`) over HTTP: recommendations, similar items, explanations, new
    items, feedback (serving/api.py; `serve:` section: index, store, host, port, processes)."""
    require("serve", "crossrec serve")
    import uvicorn

    from crossrec.serving.api import create_app
    from crossrec.serving.loader import service_loader

    cfg = _config(config, ctx)
    host, port = cfg.serve.host, cfg.serve.port
    # the socket is bound here, before the model loads, and handed to uvicorn (no window for another
    # process to take the port): a busy port or a bad host is one line and exit 2
    sock: socket.socket | None = None
    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a listening port still refuses
        sock.bind(addr)
    except OSError as e:
        if sock is not None:
            sock.close()
        reason = (e.strerror or str(e)).lower()
        from crossrec.errors import ConfigError

        raise ConfigError(
            f"cannot listen on {host}:{port}: {reason} (is another server using it? choose another with --serve.port)"
        ) from None
    try:
        console.print(f"serving {cfg.out} on http://{host}:{port} ({cfg.serve.workers} process(es); API docs at /docs)")
        if cfg.serve.workers > 1:
            from crossrec.serving import worker  # N processes, each loading the model

            return worker.serve_workers(cfg, sock)
        app_ = create_app(service_loader(cfg), cfg.serve)
        server = uvicorn.Server(uvicorn.Config(app_, host=host, port=port, log_level="warning"))
        server.run(sockets=[sock])
        if not server.started:
            raise RuntimeError(f"the server on {host}:{port} did not start (see the lines above)")
    finally:
        sock.close()


@app.command(context_settings=OVERRIDES)
@guard
def update(
    ctx: typer.Context,
    config: Path | None = CONFIG_ARG,
    interactions: list[Path] | None = typer.Option(
        None, "--interactions", help="New interaction file(s), read like data.interactions (repeatable)."
    ),
) -> None:
    """Fine-tune the served model on its stored feedback and new interaction files into a new
    version under out/versions/ (the served one is never overwritten; POST /admin/reload swaps the
    new one in)."""
    from crossrec.serving.loader import stored_feedback
    from crossrec.update import update as run_update

    cfg = _config(config, ctx)
    done = run_update(cfg, list(interactions or []), stored_feedback(cfg))
    if not done["updated"]:
        console.print(
            f"nothing to learn: {done['events']} events ({done['file_rows']} from files), none new for known "
            "users and items; "
            f"serving stays at {done['version']}"
        )
        return
    console.print(
        f"{done['version']}: {done['added']} new training rows from {done['events']} events "
        f"({done['file_rows']} from files) "
        f"(skipped: {done['negative']} negative, {done['unknown_user']} unknown users, "
        f"{done['unknown_item']} unknown items, {done['known_pair']} already known)"
    )


@app.command(context_settings=OVERRIDES)
@guard
def experiment(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="Experiment YAML (models + seeds); dotted overrides may follow."),
    only: str | None = typer.Option(None, "--only", help="Comma-separated model labels to run (default: all)."),
) -> None:
    """Train a list of models over seeds; write per-category and per-slice tables (mean ± std, gain)."""
    from crossrec.experiment import load_experiment, run_experiment, select

    cfg = load_experiment(config, list(ctx.args))
    if only:
        cfg = select(cfg, [x.strip() for x in only.split(",") if x.strip()])
    result = run_experiment(cfg, progress=lambda s: console.print(s, markup=False, highlight=False))
    metric = cfg.metrics[0]
    print("\n" + result.summary_table(metric, "all"), flush=True)
    for check in result.acceptance():
        mark = "yes" if check["passed"] else "no"
        console.print(
            f"{check['model']}: {check['check']}: {check['value']:.4f} vs {check['best_single']} "
            f"{check['best_single_value']:.4f} ({check['rule']}): {mark}",
            markup=False,
            highlight=False,
        )
    console.print(f"wrote {Path(cfg.out) / 'results.md'} and results.json")


@app.command(context_settings=OVERRIDES)
@guard
def tune(
    ctx: typer.Context,
    config: Path = typer.Argument(
        ..., help="Experiment YAML (models, optional search: spaces); dotted overrides may follow."
    ),
    only: str | None = typer.Option(None, "--only", help="Comma-separated model labels to tune (default: all)."),
    trials: int = typer.Option(20, "--trials", help="Finished trials per model (the same for every model)."),
    timeout: float = typer.Option(0.0, "--timeout", help="Seconds of trial time per model (0 = no limit)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampler."),
    objective: str = typer.Option("all", "--objective", help="Comma-separated slices averaged into the score."),
    out: Path | None = typer.Option(None, "--out", help="Output directory (default: <experiment out>-tune)."),
) -> None:
    """Tune every model's options with Optuna on the validation split (TPE, median pruning); the
    study lives in OUT/study.sqlite3, so rerunning the command resumes it. Writes OUT/best.yaml."""
    require("tune", "crossrec tune")
    from crossrec.experiment import load_experiment
    from crossrec.experiment.tune import TuneBudget, tune_experiment

    cfg = load_experiment(config, list(ctx.args))
    labels = [x.strip() for x in only.split(",") if x.strip()] if only else None
    result = tune_experiment(
        cfg,
        TuneBudget(trials=trials, timeout=timeout, seed=seed, objective=tuple(s.strip() for s in objective.split(","))),
        out,
        progress=lambda s: console.print(s, markup=False, highlight=False),
        only=labels,
    )
    where = Path(out) if out is not None else Path(f"{cfg.out}-tune")
    for label, t in result["models"].items():
        best = t["best"]
        text = "no complete trial" if best is None else f"{t['metric']} {best['value']:.4f} {best['params']}"
        console.print(f"{label}: {text}", markup=False, highlight=False)
    console.print(f"wrote {where / 'tuning.md'}, tuning.json and best.yaml (crossrec experiment {where / 'best.yaml'})")


@app.command()
@guard
def report(
    run_dir: Path = typer.Argument(..., help="An experiment's output directory (results.json, results.md, models/)."),
    tuning: Path | None = typer.Option(None, "--tuning", help="The tuner's directory (default: <RUN_DIR>-tune)."),
    exposure_curve: str | None = typer.Option(
        None, "--exposure-curve", help="Model label: also measure the category-exposure re-ranker's trade-off curve."
    ),
    out: Path | None = typer.Option(None, "--out", help="Output directory (default: RUN_DIR/report)."),
) -> None:
    """Render an experiment as one self-contained HTML page plus PNGs (opens offline)."""
    require("report", "crossrec report", "matplotlib")
    from crossrec.experiment.html_report import write_report

    path = write_report(run_dir, tuning, exposure_curve, out)
    console.print(f"wrote {path} and its figures in {path.parent}")


@app.command()
@guard
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Output directory."),
    seed: int = typer.Option(0, help="Seed of the synthetic world and of training."),
    epochs: int = typer.Option(20, help="Max epochs of the neural baselines."),
) -> None:
    """Generate the synthetic world, prepare, train single + pooled baselines, print the table."""
    from crossrec.demo import run_demo

    run_demo(out, seed=seed, epochs=epochs, console=console)


def _count(text: str) -> int:
    """'10M', '2.5k', '300000' -> an integer count (a ConfigError names the bad value)."""
    from crossrec.errors import ConfigError

    scale = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000, "b": 1_000_000_000}
    t = text.strip().lower().replace("_", "")
    try:
        value = float(t[:-1]) * scale[t[-1]] if t and t[-1] in scale else float(t)
        return int(round(value))
    except (ValueError, OverflowError):
        raise ConfigError(f"--interactions={text!r}; expected a count such as 300000, 2.5k or 10M") from None


@app.command()
@guard
def synth(
    out: Path = typer.Option(..., help="Output directory (interactions.parquet, items.parquet)."),
    interactions: str = typer.Option("1M", help="Interactions to draw: 300000, 2.5k, 10M."),
    categories: int = typer.Option(50, help="Number of categories."),
    seed: int = typer.Option(0, help="Seed of every draw."),
) -> None:
    """Write a synthetic log of any size in O(N) time and memory (data/scale_world.py): users
    N/10, items N/50, each user in a few categories, titles, cross-category tastes."""
    from crossrec.data.scale_world import ScaleConfig, write_scale

    cfg = ScaleConfig(interactions=_count(interactions), categories=categories, seed=seed)
    inter, items, rows = write_scale(out, cfg)
    console.print(f"wrote {rows} interactions ({cfg.n_users} users, {cfg.n_items} items, {categories} categories)")
    console.print(f"  {inter}\n  {items}")


def run() -> None:
    """The `crossrec` command: the app, with click's usage errors (unknown option, missing or
    unreadable argument, a value of the wrong type) as one `error:` line and exit 2 like every
    other bad input, instead of click's boxed usage text."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as e:  # click's ClickException family, as typer vendors it
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:  # bare `crossrec`: the help
            console.print(ctx.get_help(), markup=False, highlight=False)
            sys.exit(0)
        where = f"{ctx.command_path}: " if ctx is not None else ""
        message = e.format_message() if callable(getattr(e, "format_message", None)) else str(e)
        print_error(f"{where}{message} (--help lists the options)")
        code = 2
    except typer.Abort:
        print_error("interrupted")
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    run()
