"""Acknowledged feedback survives `kill -9` of the server: a real uvicorn process takes a stream of
POST /feedback, is killed mid-stream, and every event it answered 201 to is in the store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import pytest

from crossrec.serving.store import SQLiteStore
from tests.unit.serving.test_service import trained

KEY = "durable-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVER = textwrap.dedent("""
    import sys, torch, uvicorn
    from crossrec.data.bundle import Bundle
    from crossrec.serving.api import create_app
    from crossrec.artifact import load_artifact
    from crossrec.serving.service import Service
    from crossrec.serving.store import SQLiteStore
    torch.set_num_threads(1)
    art, bundle, store = load_artifact(sys.argv[1]), Bundle.load(sys.argv[2]), SQLiteStore(sys.argv[3])
    app = create_app(lambda: Service(art, bundle, store=store), api_key=sys.argv[5])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[4]), log_level="error")
""")


def start(args: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, *args, str(port), KEY], env=os.environ | {"OMP_NUM_THREADS": "1"}
    )
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the server did not start")


@pytest.mark.skipif(os.name != "posix", reason="kill -9 is POSIX")
def test_no_acknowledged_feedback_is_lost_after_kill_9(tiny_bundle, tmp_path):
    trained(tiny_bundle, tmp_path / "a", "mf", {"dim": 8})
    args = [str(tmp_path / "a"), str(tiny_bundle.root), str(tmp_path / "store.sqlite")]
    port = free_port()
    proc = start(args, port)
    item = str(tiny_bundle.raw_item_ids()[0])
    acked: list[tuple[str, str, str, float]] = []
    done = threading.Event()

    def writer(w: int) -> None:
        with httpx.Client(timeout=5.0) as c:
            n = 0
            while not done.is_set():
                body = {"user": f"w{w}", "item": item, "event": "click", "timestamp": float(n)}
                try:
                    r = c.post(f"http://127.0.0.1:{port}/feedback", json=body, headers={"X-API-Key": KEY})
                except httpx.HTTPError:
                    return  # the server is gone: this request was never acknowledged
                if r.status_code == 201:
                    acked.append((body["user"], item, "click", body["timestamp"]))
                n += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    while len(acked) < 200:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # mid-stream: requests are in flight
    proc.wait()
    done.set()
    for t in threads:
        t.join()
    stored = set(SQLiteStore(tmp_path / "store.sqlite").all_feedback())
    assert len(acked) >= 200 and not set(acked) - stored
    # The restarted server serves the same store, with the feedback in it.
    proc = start(args, port)
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/history", params={"user": "w0"})
        assert r.status_code == 200 and r.json()["categories"]
    finally:
        proc.kill()
        proc.wait()
