"""The HTTP API over a trained model of the tiny world: answers, field-naming errors, API keys on
every write endpoint, bounded requests, reload, metrics."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from crossrec.serving.api import create_app
from crossrec.serving.config import ServeConfig
from crossrec.serving.service import Service
from crossrec.serving.store import SQLiteStore

KEY = "s3cret-key"
WRITES = [
    ("/items", {"item": "n1", "category": None, "title": "A new thing"}),
    ("/feedback", {"user": "u", "item": None, "event": "click"}),
    ("/admin/reload", None),
]


@pytest.fixture(scope="module")
def served(tiny_bundle, text_flagship, tmp_path_factory):
    torch.set_num_threads(1)
    art, store = text_flagship, SQLiteStore(tmp_path_factory.mktemp("api") / "store.sqlite")
    loads = []

    def load():
        loads.append(1)
        return Service(art, tiny_bundle, store=store)

    return tiny_bundle, store, loads, load


@pytest.fixture()
def client(served):
    bundle, _, _, load = served
    return TestClient(create_app(load, ServeConfig(max_body_bytes=4096), api_key=KEY))


def body_for(path, body, bundle):
    if body is None:
        return None
    return {
        k: (bundle.categories[0] if k == "category" else str(bundle.raw_item_ids()[0])) if v is None else v
        for k, v in body.items()
    }


def test_recommend_similar_explain(client, served):
    bundle = served[0]
    user = str(bundle.raw_user_ids()[0])
    r = client.get("/recommend", params={"user": user, "category": bundle.categories[1], "k": 5})
    assert r.status_code == 200 and len(r.json()["items"]) == 5
    first = r.json()["items"][0]
    assert {"item", "title", "category", "score", "because"} <= set(first)
    assert client.get("/similar", params={"item": first["item"], "k": 3}).json()["items"]
    assert client.get("/explain", params={"user": user, "item": first["item"]}).status_code == 200
    assert client.get("/health").json()["status"] == "ok"


def test_bad_requests_name_the_field(client, served):
    bundle = served[0]
    user = str(bundle.raw_user_ids()[0])
    cases = [
        ({"user": user, "category": bundle.categories[0], "k": 0}, 422, "k"),
        ({"user": user, "category": bundle.categories[0], "k": 10_000}, 422, "k"),
        ({"user": user}, 422, "category"),
        ({"user": user, "category": "nope"}, 404, "category"),
        ({"user": "x" * 300, "category": bundle.categories[0]}, 422, "user"),
    ]
    for params, status, field in cases:
        r = client.get("/recommend", params=params)
        assert r.status_code == status, (params, r.text)
        assert field in r.json()["detail"][0]["loc"], r.text
    r = client.get("/similar", params={"item": "no-such-item"})
    assert r.status_code == 404 and r.json()["detail"][0]["loc"][-1] == "item"


@pytest.mark.parametrize("path,body", WRITES)
def test_every_write_endpoint_refuses_a_missing_or_wrong_key(client, served, path, body):
    body = body_for(path, body, served[0])
    assert client.post(path, json=body).status_code == 401
    assert client.post(path, json=body, headers={"X-API-Key": "wrong"}).status_code == 401


@pytest.mark.parametrize("path,body", WRITES)
def test_write_endpoints_refuse_when_no_key_is_configured(served, path, body, monkeypatch):
    bundle, _, _, load = served
    monkeypatch.delenv("CROSSREC_API_KEY", raising=False)
    c = TestClient(create_app(load, ServeConfig()))
    assert c.post(path, json=body_for(path, body, bundle), headers={"X-API-Key": ""}).status_code == 403


def test_feedback_is_stored_and_items_are_live(client, served):
    bundle, store, _, _ = served
    item = str(bundle.raw_item_ids()[0])
    r = client.post(
        "/feedback",
        json={"user": "api-user", "item": item, "event": "purchase", "timestamp": 5.0},
        headers={"X-API-Key": KEY},
    )
    assert r.status_code == 201 and r.json()["stored"]
    assert ("api-user", item, "purchase", 5.0) in store.all_feedback()
    bad = client.post("/feedback", json={"user": "u", "item": item, "event": "Bad Event"}, headers={"X-API-Key": KEY})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "event"
    r = client.post(
        "/items",
        json={"item": "api-new", "category": bundle.categories[0], "title": "Chef knife"},
        headers={"X-API-Key": KEY},
    )
    assert r.status_code == 201
    assert client.get("/similar", params={"item": "api-new", "k": 3}).status_code == 200
    again = client.post(
        "/items", json={"item": "api-new", "category": bundle.categories[0], "title": "x"}, headers={"X-API-Key": KEY}
    )
    assert again.status_code == 409


def test_bodies_are_bounded(client):
    r = client.post(
        "/items", content=b"{" + b" " * 5000 + b"}", headers={"X-API-Key": KEY, "Content-Type": "application/json"}
    )
    assert r.status_code == 413


def test_reload_swaps_the_service_and_metrics_count_requests(client, served):
    loads = served[2]
    before = len(loads)
    r = client.post("/admin/reload", headers={"X-API-Key": KEY})
    assert r.status_code == 200 and len(loads) == before + 1
    client.get("/health")
    text = client.get("/metrics").text
    assert 'crossrec_requests_total{path="/health",status="200"}' in text
    assert "crossrec_request_seconds_bucket" in text and "crossrec_model_info" in text


def test_history_and_the_page(client, served):
    bundle = served[0]
    user = str(bundle.raw_user_ids()[0])
    hist = client.get("/history", params={"user": user}).json()
    assert hist["known"] and set(hist["categories"]) <= set(bundle.categories) and hist["categories"]
    assert client.get("/history", params={"user": "nobody-at-all"}).status_code == 404
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and 'id="lookup"' in page.text
    assert "/" not in client.get("/openapi.json").json()["paths"]  # the page is not part of the API schema
