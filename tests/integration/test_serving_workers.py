"""`crossrec serve --serve.workers 2`: two server processes on one port and one store. An item
added through one process is recommended by the other within a second, and feedback given to one
serves a new user on the other."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from tests.integration.test_serving_durability import free_port
from tests.unit.serving.test_service import trained

KEY = "workers-key"


def _client_on(port: int, pid: int | None, other_than: int | None = None) -> tuple[httpx.Client, int]:
    """A keep-alive client whose connection a worker holds (`pid`, or any but `other_than`)."""
    deadline = time.time() + 30
    while time.time() < deadline:
        c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60.0, headers={"X-API-Key": KEY})
        worker = c.get("/health").json()["worker"]
        if (pid is None or worker == pid) and worker != other_than:
            return c, worker
        c.close()
    raise AssertionError("no connection reached the other worker")


def _lag(a: httpx.Client, b: httpx.Client, pid_b: int, write: tuple[str, dict], ask: dict, served) -> float | None:
    """Seconds from a 201 to `a`'s POST `write` until `served(b's /recommend answer to ask)` holds
    (at most 10 s), or None when `b`'s connection is no longer held by process `pid_b` (a
    keep-alive timeout reconnected it to another process: the measurement says nothing)."""
    if b.get("/health").json()["worker"] != pid_b:
        return None
    r = a.post(write[0], json=write[1])
    assert r.status_code == 201, r.text
    t0 = time.perf_counter()
    while not served(b.get("/recommend", params=ask).json()) and time.perf_counter() - t0 < 10.0:
        time.sleep(0.02)
    lag = time.perf_counter() - t0
    return lag if b.get("/health").json()["worker"] == pid_b else None


def _lists(item: str):
    return lambda answer: item in [x["item"] for x in answer["items"]]


def _from_feedback(answer: dict) -> bool:
    return answer["source"] != "popularity"


@pytest.mark.slow  # two server processes
@pytest.mark.skipif(os.name != "posix", reason="process groups")
def test_what_one_worker_is_told_the_other_serves_within_a_second(tiny_bundle, tiny_text, tmp_path):
    tiny_bundle.text_vectors = tiny_text
    out = tmp_path / "out"
    trained(tiny_bundle, out, "textknn", {})
    port = free_port()
    cfg = tmp_path / "serve.yaml"
    serve = {"port": port, "workers": 2, "store": str(tmp_path / "store.sqlite")}
    cfg.write_text(yaml.safe_dump({"data": {"bundle": str(tiny_bundle.root)}, "out": str(out), "serve": serve}))
    env = os.environ | {"CROSSREC_API_KEY": KEY, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "crossrec.cli", "serve", str(cfg)], env=env, start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.time() < deadline, "the server did not start"
            time.sleep(0.2)
        name = tiny_bundle.categories[1]
        user = str(tiny_bundle.raw_user_ids()[0])
        for attempt in range(3):  # a connection that moved to the other process measures nothing: again
            a, pid_a = _client_on(port, None)
            b, pid_b = _client_on(port, None, other_than=pid_a)
            best = b.get("/recommend", params={"user": user, "category": name, "k": 1}).json()["items"][0]
            deadline = time.time() + 120  # both processes following, each with its text encoder loaded
            while not all(c.get("/health").json()["encoder_ready"] for c in (a, b)):
                assert time.time() < deadline, "the text encoder did not load"
                time.sleep(0.1)
            row = tiny_bundle.items.filter(tiny_bundle.items["raw_item"] == best["item"])  # the best item's text
            new = f"brand-new-{attempt}"
            body = {"item": new, "category": name, "title": best["title"], "description": row["description"][0]}
            item_lag = _lag(a, b, pid_b, ("/items", body), {"user": user, "category": name}, _lists(new))
            newcomer = {"user": f"newcomer-{attempt}", "item": best["item"], "event": "purchase", "timestamp": 1.0}
            ask = {"user": newcomer["user"], "category": name}
            feedback_lag = _lag(a, b, pid_b, ("/feedback", newcomer), ask, _from_feedback)
            a.close()
            b.close()
            if item_lag is not None and feedback_lag is not None:
                break
        assert item_lag is not None and feedback_lag is not None, "no connection stayed on one process"
        assert item_lag < 1.0, f"the other process recommended the new item after {item_lag:.2f} s"
        assert feedback_lag < 1.0, f"the other process served the feedback after {feedback_lag:.2f} s"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
