"""Micro-batching: concurrent requests share one batched call and get the answers a single call
gives; one bad request fails alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from crossrec.serving.batcher import MicroBatcher
from crossrec.serving.service import Service, ServingError
from tests.unit.serving.test_service import flagship, mf, raw_users  # noqa: F401  (module fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_results_come_back_in_order_and_a_burst_is_batched():
    gate, sizes = threading.Event(), []

    def double(xs):
        gate.wait(5)  # the first batch holds the worker while the rest queue up
        sizes.append(len(xs))
        return [x * 2 for x in xs]

    b = MicroBatcher(double, max_batch=8)
    futures = [b.submit(i) for i in range(20)]
    gate.set()
    assert [f.result(5) for f in futures] == [i * 2 for i in range(20)]
    b.close()
    assert sum(sizes) == 20 and max(sizes) == 8 and len(sizes) < 20
    assert b.batches == len(sizes) and b.requests == 20
    with pytest.raises(RuntimeError, match="closed"):
        b.submit(1)


def test_one_failing_request_fails_alone_and_a_failing_call_fails_its_batch():
    b = MicroBatcher(lambda xs: [ValueError(f"bad {x}") if x < 0 else x for x in xs])
    good, bad = b.submit(3), b.submit(-1)
    assert good.result(5) == 3
    with pytest.raises(ValueError, match="bad -1"):
        bad.result(5)
    b.close()
    boom = MicroBatcher(lambda xs: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        boom.submit(1).result(5)
    assert boom.submit(2).exception(5) is not None  # the worker lives on
    boom.close()
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda xs: xs, max_batch=0)


def same_answer(a, b):
    """The same recommendations, up to float rounding of batched products."""
    assert [x["item"] for x in a["items"]] == [x["item"] for x in b["items"]]
    assert [x["score"] for x in a["items"]] == pytest.approx([x["score"] for x in b["items"]], rel=1e-5, abs=1e-6)
    assert [[h["item"] for h in x["because"]] for x in a["items"]] == [
        [h["item"] for h in x["because"]] for x in b["items"]
    ]
    assert {k: v for k, v in a.items() if k != "items"} == {k: v for k, v in b.items() if k != "items"}


@pytest.mark.parametrize("which", ["mf", "flagship"])
def test_recommend_many_equals_one_at_a_time(which, request, tiny_bundle):
    svc = Service(request.getfixturevalue(which), tiny_bundle)
    cats = tiny_bundle.categories
    reqs = [(u, cats[n % len(cats)], 5 + n % 3, n % 2 == 0) for n, u in enumerate(raw_users(tiny_bundle, 24))]
    reqs.insert(7, ("nobody-yet", cats[0], 5, True))  # an unknown user: popularity, in the same batch
    reqs.insert(3, (reqs[0][0], "no-such-category", 5, True))  # a bad request in the middle
    got = svc.recommend_many(reqs)
    assert isinstance(got[3], ServingError) and got[3].field == "category"
    for req, res in zip(reqs, got):
        if req[1] != "no-such-category":
            same_answer(res, svc.recommend(*req))
    assert got[8]["source"] == "popularity"


def test_concurrent_threads_get_their_own_answers(mf, tiny_bundle):  # noqa: F811  (the imported fixture)
    svc = Service(mf, tiny_bundle)
    users, cat = raw_users(tiny_bundle, 40), tiny_bundle.categories[0]
    want = {u: svc.recommend(u, cat, 10) for u in users}
    b = MicroBatcher(svc.recommend_many, max_batch=16, max_wait_ms=2.0)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda u: b.submit((u, cat, 10, True)).result(10), users * 3))
    b.close()
    for a, u in zip(got, users * 3):
        same_answer(a, want[u])
    assert b.batches < len(got)  # some requests shared a batch


def test_batched_exact_search_equals_one_query_at_a_time():
    import numpy as np

    from crossrec.serving.index import TORCH_BATCH, ItemIndex

    rng = np.random.default_rng(0)
    index = ItemIndex(rng.normal(size=(3000, 17)).astype(np.float32), np.arange(3000) + 100)
    index.add(
        10 * rng.normal(size=(5, 17)).astype(np.float32), np.arange(5) + 9000
    )  # added while serving (long: they show)
    queries = rng.normal(size=(TORCH_BATCH + 9, 17)).astype(np.float32)
    scores, ids = index.search(queries, 40)  # torch
    for q, s, i in zip(queries, scores, ids):
        one_s, one_i = index.search(q, 40)  # FAISS
        assert (one_i[0] == i).all() and np.allclose(one_s[0], s, atol=1e-4)
    assert set(ids.ravel()) & set(range(9000, 9005))
