"""Shared fixtures: a tiny synthetic world prepared once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
    art = trained(tiny_bundle, tmp_path_factory.mktemp("flagship") / "a", "crossrec",
                  {"dim": 16, "item_tower": "text+id", "text": {"content_term": True}})
    torch.set_num_threads(old)
    return art


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory):
    """The default synthetic world: big enough for quality floors, prepared once."""
    from crossrec.data.prepare import PrepareConfig, prepare
    from crossrec.data.synthetic import SyntheticConfig, generate

    inter, items = generate(SyntheticConfig(seed=0))
    return prepare(inter, items, PrepareConfig(cold_user_fraction=0.2), tmp_path_factory.mktemp("small") / "bundle")


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that train on the default synthetic world (`small_bundle`, several epochs each) are
    `slow`: `make test-fast` skips them, `make test` (CI) runs them."""
    for item in items:
        if "small_bundle" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
