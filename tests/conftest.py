"""Shared fixtures: a tiny synthetic world prepared once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Under pytest-xdist (`make test` runs `-n 2`) each worker gets an equal share of the cores for its
# intra-op threads (OpenMP, torch, polars): two workers with two threads each on two cores would
# oversubscribe them (OpenMP's spinning waiters; see `one_thread` below).
# Set before anything imports torch or polars; a plain `pytest` run keeps every default.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
WORKER_THREADS = max(1, (os.cpu_count() or 1) // _WORKERS) if _WORKERS else None
if WORKER_THREADS is not None:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS"):
        os.environ.setdefault(_var, str(WORKER_THREADS))

# The real datasets: $CROSSREC_SHARED_DATA, else ../shared/data beside the repository.
SHARED_DATA = Path(
    os.environ.get("CROSSREC_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    from crossrec.data.prepare import PrepareConfig, prepare
    from crossrec.data.synthetic import generate, tiny_config

    inter, items = generate(tiny_config())
    return prepare(inter, items, PrepareConfig(cold_user_fraction=0.2), tmp_path_factory.mktemp("tiny") / "bundle")


@pytest.fixture(scope="session", autouse=True)
def text_cache(tmp_path_factory):
    """Item-text vectors are cached in a session directory, never in the user's ~/.cache."""
    path = tmp_path_factory.mktemp("text-cache")
    old = os.environ.get("CROSSREC_CACHE")
    os.environ["CROSSREC_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("CROSSREC_CACHE", None)
    else:
        os.environ["CROSSREC_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_text(tiny_bundle, text_cache):
    """[n_items, 384] MiniLM vectors of the tiny world's item texts (encoded once per session)."""
    from crossrec.encoders.config import EncoderConfig
    from crossrec.encoders.text import encode_bundle

    return encode_bundle(tiny_bundle, EncoderConfig(), progress=False).vectors


@pytest.fixture(scope="session")
def text_flagship(tiny_bundle, tiny_text, tmp_path_factory):
    """The text+id flagship trained briefly on the tiny world, saved and loaded back as an
    artifact: what the serving tests serve (each with its own store)."""
    import torch

    from tests.unit.serving.test_service import trained

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    tiny_bundle.text_vectors = tiny_text
    # the content term on: the serving tests cover its columns in the index and its explanations
    art = trained(
        tiny_bundle,
        tmp_path_factory.mktemp("flagship") / "a",
        "crossrec",
        {"dim": 16, "item_tower": "text+id", "text": {"content_term": True}},
    )
    torch.set_num_threads(old)
    return art


def medium_config(seed: int = 0):
    """Half the default world (1500 users, 1850 items, ~60k interactions): for quality floors whose
    question is qualitative (does a model beat popularity), at a fraction of the default's cost."""
    from crossrec.data.synthetic import SyntheticConfig

    return SyntheticConfig(n_users=1500, items_per_category=(1200, 600, 300, 120), seed=seed)


@pytest.fixture(scope="session")
def medium_bundle(tmp_path_factory):
    """The medium synthetic world (`medium_config`), prepared once."""
    from crossrec.data.prepare import PrepareConfig, prepare
    from crossrec.data.synthetic import generate

    inter, items = generate(medium_config())
    return prepare(inter, items, PrepareConfig(cold_user_fraction=0.2), tmp_path_factory.mktemp("medium") / "bundle")


@pytest.fixture
def one_thread():
    """One intra-op thread while a test runs (restored after). The tensors in these tests are
    small, so a second thread buys little; on a shared, loaded CPU, OpenMP's spinning worker threads
    made training 10-100x slower (measured); and the compiled kernels (crossrec/kernels/) apply
    their updates in a fixed order only with one thread. Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_configure(config: pytest.Config) -> None:
    if WORKER_THREADS is not None:
        import torch

        torch.set_num_threads(WORKER_THREADS)


# Under xdist, the modules whose tests run independently of each other (no module-scoped fixture
# worth sharing), so their tests spread over the workers one by one; every other module's tests
# stay together on one worker, so its module-scoped fixtures (trained models) are built once.
SPREAD_MODULES = {"tests/integration/test_real_datasets.py", "tests/integration/test_distributed.py"}

# The longest work units, longest first (by `--durations`, issue 34): under xdist they start first,
# so the short ones fill in around them and no worker is left with a long tail.
HEAVY_FIRST = (
    "tests/unit/models/test_text_models.py",
    "tests/integration/test_real_datasets.py",
    "tests/integration/test_distributed.py",
    "tests/unit/models/test_sasrec.py",
    "tests/unit/models/test_crossrec_prior.py",
    "tests/unit/models/test_cdr_baselines.py",
    "tests/integration/test_hardening.py",
    "tests/unit/models/test_emcdr_bitgcf.py",
    "tests/integration/test_demo.py",
    "tests/unit/models/test_crossrec_warm.py",
    "tests/unit/models/test_crossrec.py",
    "tests/integration/test_tune.py",
    "tests/integration/test_serving_workers.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that train on the medium synthetic world (`medium_bundle`, `cold_valid_bundle`: several
    epochs each) are `slow`: `make test-fast` skips them, `make test` (CI) runs them. Under xdist the HEAVY_FIRST
    modules come first (a stable sort: each module's tests keep their order)."""
    for item in items:
        if {"medium_bundle", "cold_valid_bundle"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if _WORKERS:
        rank = {m: i for i, m in enumerate(HEAVY_FIRST)}
        items.sort(key=lambda it: rank.get(it.nodeid.split("::")[0], len(rank)))


@pytest.hookimpl(optionalhook=True)  # an xdist hook: harmless under `-p no:xdist`
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`-n N`: one work unit per module (per test in SPREAD_MODULES), handed out in collection order
    (HEAVY_FIRST first). Not xdist's `loadgroup` marks: with them a module's module-scoped fixtures
    were set up again for every few tests (measured: test_text_models' trained models 4 times)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return nodeid if module in SPREAD_MODULES else module

    config.option.loadscopereorder = False  # keep the heavy-first order (not by number of tests)
    return ModuleScheduling(config, log)
