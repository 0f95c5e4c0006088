"""Hostile HTTP requests never get a 500: chunked bodies over the limit are 413, the API key is
checked before a body is read, non-finite numbers / lone surrogates / invalid UTF-8 in a JSON body
are 422, a damaged newest version makes /admin/reload 503 while the old model keeps serving, a
model with non-finite scores is 503 (never an empty 200), and `crossrec serve` on a busy port says
one line and exits 2. One tiny MF model (trained once per module) serves them all."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket

import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from crossrec.artifact import load_artifact
from crossrec.config import load_config
from crossrec.serving.api import create_app
from crossrec.serving.config import ServeConfig
from crossrec.serving.loader import service_loader
from crossrec.serving.service import Service
from tests.unit.serving.test_service import trained

pytestmark = pytest.mark.usefixtures("one_thread")

KEY = "adversarial-key"
LIMIT = 4096
AUTH = {"X-API-Key": KEY, "content-type": "application/json"}
WRITES = ["/items", "/feedback", "/admin/reload"]


@pytest.fixture(scope="module")
def world(tiny_bundle, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("adv-http") / "out"
    trained(tiny_bundle, out, "mf", {"dim": 8})
    return tiny_bundle, out


def run_config(bundle, out, *extra):
    return load_config(
        None, [f"--out={out}", f"--data.bundle={bundle.root}", "--model.name=mf", "--model.dim=8", *extra]
    )


@pytest.fixture(scope="module")
def app(world):
    bundle, out = world
    return create_app(service_loader(run_config(bundle, out)), ServeConfig(max_body_bytes=LIMIT), api_key=KEY)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def ids(world):
    bundle = world[0]
    return {
        "user": str(bundle.raw_user_ids()[0]),
        "item": str(bundle.raw_item_ids()[0]),
        "category": bundle.categories[0],
    }


def chunks(n: int, size: int = 256):
    for _ in range(n):
        yield b" " * size


def drive(app, method: str, path: str, headers: dict[str, str], parts: list[bytes]) -> tuple[int, dict, int]:
    """Run one request through the ASGI app with the body in `parts` (no Content-Length: chunked);
    returns (status, JSON answer, bytes the app pulled from receive())."""
    sent: list[dict] = []
    pulled = [0]
    queue = list(parts)

    async def receive() -> dict:
        if not queue:
            return {"type": "http.disconnect"}
        body = queue.pop(0)
        pulled[0] += len(body)
        return {"type": "http.request", "body": body, "more_body": bool(queue)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), pulled[0]


class TestChunkedBodiesOverTheLimit:
    @pytest.mark.parametrize("path", ["/items", "/feedback"])  # (/admin/reload never reads a body)
    def test_a_chunked_body_over_the_limit_is_413(self, client, path):
        r = client.post(path, content=chunks(40), headers=AUTH)  # a generator: Transfer-Encoding: chunked
        assert r.request.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.request.headers
        assert r.status_code == 413, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "body"] and str(LIMIT) in r.json()["detail"][0]["msg"]

    @pytest.mark.parametrize("chunk", [64, 1000, LIMIT + 1])
    def test_the_app_never_reads_past_the_limit(self, app, chunk):
        status, answer, pulled = drive(app, "POST", "/feedback", AUTH, [b" " * chunk] * (4 * LIMIT // chunk + 2))
        assert status == 413 and answer["detail"][0]["loc"] == ["body", "body"]
        assert pulled <= LIMIT + chunk  # the message that crossed the limit, and not one more

    def test_a_chunked_body_under_the_limit_is_answered(self, client, ids):
        body = json.dumps({"user": "chunky", "item": ids["item"], "event": "click", "timestamp": 1.0}).encode()
        r = client.post("/feedback", content=iter([body[:10], body[10:]]), headers=AUTH)
        assert r.request.headers.get("transfer-encoding") == "chunked"
        assert r.status_code == 201, r.text


BAD_BODIES = {
    "large chunked": lambda: chunks(40),
    "large": lambda: b"{" + b" " * (2 * LIMIT) + b"}",
    "malformed": lambda: b'{"user": ',
    "NaN": lambda: b'{"user": NaN}',
    "invalid UTF-8": lambda: b'{"user": "\xff"}',
}


class TestTheKeyIsCheckedBeforeTheBody:
    @pytest.mark.parametrize("body", BAD_BODIES, ids=list(BAD_BODIES))
    @pytest.mark.parametrize("key", [None, "wrong"])
    @pytest.mark.parametrize("path", WRITES)
    def test_a_wrong_or_missing_key_is_401_whatever_the_body(self, client, path, key, body):
        headers = {"content-type": "application/json"} | ({"X-API-Key": key} if key else {})
        r = client.post(path, content=BAD_BODIES[body](), headers=headers)
        assert r.status_code == 401, r.text
        assert "X-API-Key" in r.json()["detail"]

    @pytest.mark.parametrize("path", WRITES)
    def test_no_key_configured_is_403_whatever_the_body(self, world, path, monkeypatch):
        monkeypatch.delenv("CROSSREC_API_KEY", raising=False)
        bundle, out = world
        bare = create_app(service_loader(run_config(bundle, out)), ServeConfig(max_body_bytes=LIMIT))
        status, _, _ = drive(bare, "POST", path, {"X-API-Key": KEY}, [b'{"user": NaN'] + [b" " * 1024] * 8)
        assert status == 403

    @pytest.mark.parametrize("path", WRITES)
    def test_a_refused_request_has_no_byte_of_its_body_read(self, app, path):
        status, answer, pulled = drive(
            app,
            "POST",
            path,
            {"X-API-Key": "wrong", "content-type": "application/json"},
            [b'{"item": "x", "user": ', b'"y"}'],
        )
        assert (status, pulled) == (401, 0), answer


NON_FINITE = [
    ("/feedback", b'{"user": "u", "item": "@item", "event": "click", "timestamp": NaN}', "timestamp"),
    ("/feedback", b'{"user": "u", "item": "@item", "event": "click", "timestamp": Infinity}', "timestamp"),
    ("/feedback", b'{"user": "u", "item": "@item", "event": "click", "timestamp": -Infinity}', "timestamp"),
    ("/feedback", b'{"user": "u", "item": "@item", "event": "click", "timestamp": 1e999}', "timestamp"),
    ("/feedback", b'{"user": NaN, "item": "@item", "event": "click"}', "user"),
    ("/feedback", b'{"user": "\\ud800", "item": "@item", "event": "click"}', "user"),
    ("/feedback", b'{"user": "ok\\udfff", "item": "@item", "event": "click", "timestamp": 3.0}', "user"),
    ("/feedback", b'{"user": "u", "item": "@item", "event": "click", "extra": {"\\ud800": 1}}', "extra"),
    ("/feedback", b'{"user": "u\xff", "item": "@item", "event": "click"}', None),
    ("/feedback", b'{"user": "\xc0\xaf", "item": "@item", "event": "click"}', None),  # overlong UTF-8
    ("/feedback", b'{"user": "\xed\xa0\x80", "item": "@item", "event": "click"}', None),  # an encoded surrogate
    ("/items", b'{"item": "n1", "category": "@category", "title": "t", "image_vector": [1.0, NaN]}', "image_vector"),
    ("/items", b'{"item": "n1", "category": "@category", "title": "t", "image_vector": [Infinity]}', "image_vector"),
    ("/items", b'{"item": "\\ud800", "category": "@category", "title": "t"}', "item"),
    ("/items", b'{"item": "n1", "category": "@category", "title": "a \\udc00 title"}', "title"),
    ("/items", b'{"item": "n1", "category": "@category", "title": "t", "description": "\\ud83d"}', "description"),
]


class TestNonFiniteAndInvalidJSON:
    @pytest.mark.parametrize("path,raw,field", NON_FINITE, ids=[f"{p}-{r[:60]!r}" for p, r, _ in NON_FINITE])
    def test_is_422_naming_the_field_and_nothing_is_stored(self, client, app, ids, path, raw, field):
        raw = raw.replace(b"@item", ids["item"].encode()).replace(b"@category", ids["category"].encode())
        store = app.state.service.store
        before = (len(store.all_feedback()), len(store.items()))
        r = client.post(path, content=raw, headers=AUTH)
        assert r.status_code == 422, r.text
        loc = r.json()["detail"][0]["loc"]
        assert loc[0] == "body" and (field is None or field in loc), r.text
        assert (len(store.all_feedback()), len(store.items())) == before

    @pytest.mark.parametrize("k", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "1e3", "10.5", "0x10", ""])
    @pytest.mark.parametrize("path", ["/recommend", "/similar"])
    def test_non_finite_query_numbers_are_422(self, client, ids, path, k):
        params = {"user": ids["user"], "category": ids["category"], "item": ids["item"], "k": k}
        r = client.get(path, params=params)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "k"], r.text


def new_version(bundle, out, root):
    """What `crossrec update` writes: root/versions/v0001/{model,bundle} (here: copies of `out`'s)."""
    version = root / "versions" / "v0001"
    shutil.copytree(out, version / "model", ignore=shutil.ignore_patterns("serving", "versions"))
    shutil.copytree(bundle.root, version / "bundle")
    return version / "model"


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "flipped byte in model.safetensors": lambda m: flip_a_byte(m / "model.safetensors"),
    "truncated config.json": lambda m: (m / "config.json").write_bytes((m / "config.json").read_bytes()[:100]),
    "empty model.safetensors": lambda m: (m / "model.safetensors").write_bytes(b""),
    "ids.json missing": lambda m: (m / "ids.json").unlink(),
}


class TestReloadOfADamagedVersion:
    @pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
    def test_is_503_and_the_old_model_keeps_serving(self, world, ids, tmp_path, damage):
        bundle, out = world
        root = tmp_path / "out"
        shutil.copytree(out, root, ignore=shutil.ignore_patterns("serving", "versions"))
        with TestClient(
            create_app(service_loader(run_config(bundle, root)), ServeConfig(), api_key=KEY),
            raise_server_exceptions=False,
        ) as c:
            before = c.get("/recommend", params={"user": ids["user"], "category": ids["category"], "k": 5})
            assert before.status_code == 200
            version = c.get("/health").json()["model_version"]
            DAMAGE[damage](new_version(bundle, out, root))
            r = c.post("/admin/reload", headers={"X-API-Key": KEY})
            assert r.status_code == 503, r.text
            detail = r.json()["detail"][0]
            assert detail["loc"][-1] == "model" and version in detail["msg"] and len(detail["msg"]) < 1000
            again = c.get("/recommend", params={"user": ids["user"], "category": ids["category"], "k": 5})
            assert again.status_code == 200 and again.json() == before.json()
            assert c.get("/health").json()["model_version"] == version


@pytest.fixture(scope="module")
def broken(world):
    """Models whose weights were made non-finite, each behind its own app."""
    bundle, out = world

    def make(value: float, rows: slice | None = None):
        art = load_artifact(out)
        with torch.no_grad():
            if rows is None:
                for p in art.model.parameters():
                    p.fill_(value)
            else:
                art.model.user_emb.weight[rows] = value
        return TestClient(
            create_app(lambda: Service(art, bundle), ServeConfig(), api_key=KEY), raise_server_exceptions=False
        )

    return make


class TestNonFiniteScores:
    @pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
    def test_are_503_naming_the_model_never_an_empty_200(self, broken, ids, value):
        c = broken(value)
        asks = [
            ("/recommend", {"user": ids["user"], "category": ids["category"], "k": 5}),
            ("/similar", {"item": ids["item"], "k": 5}),
            ("/explain", {"user": ids["user"], "item": ids["item"]}),
        ]
        for path, params in asks:
            r = c.get(path, params=params)
            assert r.status_code == 503, (path, r.text)
            detail = r.json()["detail"][0]
            assert detail["loc"][-1] == "model" and "mf" in detail["msg"] and "non-finite" in detail["msg"]

    def test_one_users_nan_row_fails_that_user_only(self, broken, world, ids):
        bundle = world[0]
        c = broken(float("nan"), slice(0, 1))
        other = str(bundle.raw_user_ids()[1])
        reqs = [{"user": u, "category": ids["category"], "k": 5} for u in (ids["user"], other)]
        assert c.get("/recommend", params=reqs[0]).status_code == 503
        ok = c.get("/recommend", params=reqs[1])
        assert ok.status_code == 200 and len(ok.json()["items"]) == 5


class TestServeOnABusyPort:
    def test_says_one_line_and_exits_2(self, world, tmp_path):
        from crossrec.cli import app as cli

        bundle, out = world
        cfg = tmp_path / "serve.yaml"  # the trained model: the old code loaded it, then uvicorn failed
        cfg.write_text(f"data:\n  bundle: {bundle.root}\nmodel:\n  name: mf\n  dim: 8\nout: {out}\n")
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            r = CliRunner().invoke(cli, ["serve", str(cfg), f"--serve.port={port}"])
        lines = [line for line in r.output.splitlines() if line.strip()]
        assert r.exit_code == 2, r.output
        assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) <= 300, r.output
        assert str(port) in lines[0] and "address already in use" in lines[0].lower()


DEEP = b"[" * 1500 + b"]" * 1500
HOSTILE = [
    ("GET", "/recommend?user=@user&category=@category&k=1000000000000000000000000", None, None),
    ("GET", "/recommend?user=@user&category=@category&k=0", None, None),
    ("GET", "/recommend?user=@user&category=@category&k=-1", None, None),
    ("GET", "/recommend?user=@user&category=@category&k=101", None, None),
    ("GET", "/recommend?user=@user&category=@category&k=1&k=2&k=x", None, None),
    ("GET", "/recommend?user=a&user=@user&category=@category&category=nope", None, None),
    ("GET", "/recommend?user=%E7%94%A8%E6%88%B7%F0%9F%99%82&category=@category", None, None),
    ("GET", "/recommend?user=%ED%A0%80&category=@category", None, None),
    ("GET", "/recommend?user=%FF%FE&category=%C0%AF", None, None),
    ("GET", "/recommend?user=%00&category=@category", None, None),
    ("GET", "/recommend?user=&category=", None, None),
    ("GET", "/recommend?user=..%2F..%2Fetc%2Fpasswd&category=..%2F..", None, None),
    ("GET", "/recommend?user=@user&category=@category&exclude_seen=maybe", None, None),
    ("GET", "/recommend", None, None),
    ("GET", "/similar?item=..%2F..%2Fetc%2Fpasswd", None, None),
    ("GET", "/similar?item=@item&category=%ED%A0%80&k=99999999999999999999999999999", None, None),
    ("GET", "/explain?user=%ED%A0%80&item=@item", None, None),
    ("GET", "/explain?user=@user&item=", None, None),
    ("GET", "/history?user=%00%ED%A0%80", None, None),
    ("GET", "/history?user=" + "x" * 5000, None, None),
    ("GET", "/../../etc/passwd", None, None),
    ("GET", "/recommend/%2e%2e/%2e%2e", None, None),
    ("PUT", "/items", b"{}", "application/json"),
    ("DELETE", "/feedback", None, None),
    ("POST", "/recommend?user=@user&category=@category", b"null", "application/json"),
    ("POST", "/feedback", b"", "application/json"),
    ("POST", "/feedback", b"null", "application/json"),
    ("POST", "/feedback", b"[]", "application/json"),
    ("POST", "/feedback", b'[{"user": "u"}]', "application/json"),
    ("POST", "/feedback", b'"just a string"', "application/json"),
    ("POST", "/feedback", b"12345678901234567890", "application/json"),
    ("POST", "/feedback", b"1" * 4000, "application/json"),
    ("POST", "/feedback", DEEP, "application/json"),
    ("POST", "/feedback", b'{"a":' * 1000 + b"1" + b"}" * 1000, "application/json"),
    ("POST", "/feedback", b'{"user": "u", "item": "@item", "event": "click"}', "text/plain"),
    ("POST", "/feedback", b"\xff\xfe\x00{", "text/plain"),
    ("POST", "/feedback", b"\xff\xfe\x00{", None),
    ("POST", "/feedback", b"user=u&item=x", "application/x-www-form-urlencoded"),
    ("POST", "/feedback", b"--b\r\n\r\n--b--", "multipart/form-data; boundary=b"),
    ("POST", "/feedback", b'{"user": "u", "item": "@item", "event": "click"}', "application/json; charset=latin-1"),
    ("POST", "/feedback", b'\xef\xbb\xbf{"user": "u", "item": "@item", "event": "click"}', "application/json"),
    ("POST", "/feedback", b'{"user": "", "item": "", "event": ""}', "application/json"),
    ("POST", "/feedback", b'{"user": "\\u0000", "item": "@item", "event": "click"}', "application/json"),
    ("POST", "/feedback", b'{"user": "../../etc/passwd", "item": "../../x", "event": "click"}', "application/json"),
    ("POST", "/feedback", b'{"user": "u", "item": "@item", "event": "click", "timestamp": 1e308}', "application/json"),
    ("POST", "/feedback", b'{"user": "u", "item": "@item", "event": "click", "timestamp": -0.0}', "application/json"),
    ("POST", "/feedback", b'{"user": "u", "item": "@item", "event": "click", "timestamp": "now"}', "application/json"),
    ("POST", "/feedback", b'{"user": ["u"], "item": {"x": 1}, "event": true}', "application/json"),
    ("POST", "/feedback", b'{"user": "u", "user": "v", "item": "@item", "event": "click"}', "application/json"),
    ("POST", "/items", b'{"item": "n", "category": "@category", "title": "   "}', "application/json"),
    ("POST", "/items", b'{"item": "n", "category": "../..", "title": "t"}', "application/json"),
    (
        "POST",
        "/items",
        b'{"item": "n", "category": "@category", "title": "t", "image_vector": "abc"}',
        "application/json",
    ),
    (
        "POST",
        "/items",
        b'{"item": "n", "category": "@category", "title": "t", "image_vector": [1e308, -1e308]}',
        "application/json",
    ),
    ("POST", "/admin/reload", b"[[[[", "application/json"),
]


class TestHostileRequestSweep:
    @pytest.mark.parametrize(
        "method,url,body,ctype", HOSTILE, ids=[f"{m} {u[:50]} {(b or b'')[:30]!r} {c}" for m, u, b, c in HOSTILE]
    )
    def test_no_500(self, client, ids, method, url, body, ctype):
        def fill(x):
            for name, value in ids.items():
                x = x.replace(
                    f"@{name}".encode() if isinstance(x, bytes) else f"@{name}",
                    value.encode() if isinstance(x, bytes) else value,
                )
            return x

        headers = {"X-API-Key": KEY} | ({"content-type": ctype} if ctype else {})
        r = client.request(method, fill(url), content=None if body is None else fill(body), headers=headers)
        assert r.status_code < 500, (r.status_code, r.text[:300])
        if r.headers.get("content-type", "").startswith("application/json"):
            r.json()
