"""The HTTP API (FastAPI) in front of the service (serving/service.py).

    GET  /recommend?user=&category=&k=&exclude_seen=   top-k items with explanations
    GET  /similar?item=&k=&category=                   nearest items
    GET  /explain?user=&item=                          the history behind one score
    GET  /history?user=                                the user's items by category
    GET  /                                             the web page (serving/page.html)
    POST /items      {item, category, title, description?, image_vector?}   (API key)
    POST /feedback   {user, item, event, timestamp?}                       (API key)
    POST /admin/reload                                  swap in the newest artifact (API key)
    GET  /health, GET /metrics (Prometheus text), GET /openapi.json, GET /docs

Write and admin endpoints need the `X-API-Key` header to equal the key in `$CROSSREC_API_KEY`
(`serve.api_key_env`), compared in constant time; with no key configured they refuse (403), and a
wrong or missing key is 401; the key is checked before the body is read (a refused write never has
its body read or parsed). A bad value is 422 naming the field (FastAPI's error shape, also for the
service's own checks); JSON bodies are parsed strictly: NaN, Infinity, numbers that overflow to
infinity, lone surrogates (`"\ud800"`) and invalid UTF-8 are 422 naming the field. An unknown item
or category is 404 (an unknown user too, except on /recommend, which serves them from their
feedback or by popularity); a request body over `serve.max_body_bytes` is 413, by its
Content-Length or, chunked or not, by the bytes received (the handler never gets more than the
limit). A model whose scores for a request are not finite is 503 naming it; a reload whose newest
version cannot be loaded is 503 and the running version keeps serving. Strings, k and vectors are
bounded.

`/recommend` requests that arrive together are answered by one batched call
(`Service.recommend_many` through serving/batcher.py: one index search for the batch; at most
`serve.batch_max` requests, waiting `serve.batch_wait_ms` for company). The request timer and body
limit are a plain ASGI middleware (no per-request task or body copy), and bodies are parsed
strictly: both in serving/bodies.py.

Reload builds the new service first and then swaps one reference: a request in flight finishes on
the service it started with. It reloads the process that answers it: with several server processes
(`serve.workers`), restart the server to move them all to a new version.

Several server processes (`crossrec serve --serve.workers N`) share the port and the store; each
applies the items and feedback that the others stored every `serve.follow_ms` (a thread started
with the server), and `/health` names the process that answered (`worker`: its pid).

Example:
    >>> app = create_app(lambda: Service(load_artifact(out), bundle), ServeConfig())   # doctest: +SKIP
    >>> uvicorn.run(app, port=8000)                                                   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from crossrec.serving.batcher import MicroBatcher
from crossrec.serving.bodies import BoundedAndTimed, StrictJSONRoute, as_text, field_error
from crossrec.serving.config import ServeConfig
from crossrec.serving.metrics import Metrics
from crossrec.serving.service import Service, ServingError

log = logging.getLogger(__name__)

ID = Field(min_length=1, max_length=256)
PAGE = (Path(__file__).with_name("page.html")).read_text(encoding="utf-8")


class NewItem(BaseModel):
    item: str = ID
    category: str = ID
    title: str = Field(min_length=1, max_length=1000)
    description: str | None = Field(default=None, max_length=10_000)
    image_vector: list[float] | None = Field(default=None, max_length=4096)


class Feedback(BaseModel):
    user: str = ID
    item: str = ID
    event: str = Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]*$")
    timestamp: float | None = Field(default=None, ge=0, le=1e11)


def create_app(load: Callable[[], Service], cfg: ServeConfig = ServeConfig(), api_key: str | None = None) -> FastAPI:
    """The app. `load()` builds a Service (at start and on /admin/reload); `api_key` defaults to
    the environment variable `cfg.api_key_env`."""
    key = api_key if api_key is not None else os.environ.get(cfg.api_key_env) or None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        follower = _follow(app, cfg.follow_ms, stop)
        yield
        stop.set()
        if follower is not None:
            follower.join(timeout=10)
        batcher.close()

    app = FastAPI(title="crossrec", version="1", description="Cross-category recommendations, live.", lifespan=lifespan)
    app.router.route_class = StrictJSONRoute  # JSON bodies: finite numbers, UTF-8 text only
    app.state.service = load()
    metrics = Metrics()
    # the batch runs on the service of its moment: a reload swaps it between batches
    batcher: MicroBatcher[Any] = MicroBatcher(
        lambda reqs: app.state.service.recommend_many(reqs), cfg.batch_max, cfg.batch_wait_ms
    )
    app.state.batcher = batcher
    refusal = _key_check(key, cfg.api_key_env)

    def refuse(header: bytes | None) -> Response | None:  # in the middleware: before the body is read
        no = refusal(None if header is None else header.decode("latin-1"))
        return None if no is None else JSONResponse(status_code=no[0], content={"detail": no[1]})

    app.add_middleware(BoundedAndTimed, max_body_bytes=cfg.max_body_bytes, metrics=metrics, refuse=refuse)

    def service() -> Service:
        return app.state.service

    _error_handlers(app)
    _read_routes(app, cfg, service, metrics, batcher)
    _write_routes(app, load, service, refusal)
    return app


def _follow(app: FastAPI, every_ms: float, stop: threading.Event) -> threading.Thread | None:
    """A thread that applies what other server processes stored (`Service.sync`) every `every_ms`
    while the server runs, to the service of the moment (a reload swaps it)."""
    if every_ms <= 0:
        return None

    def loop() -> None:
        try:
            app.state.service.warm()
        except Exception:  # the encoder cannot load: an item added later says so on its own request
            log.exception("loading the text encoder failed")
        while not stop.wait(every_ms / 1000):
            try:
                app.state.service.sync()
            except Exception:  # a locked or damaged store: say so and try again next time
                log.exception("applying the store's new rows failed")

    thread = threading.Thread(target=loop, name="crossrec-store-follower", daemon=True)
    thread.start()
    return thread


# the API-key check: the X-API-Key header -> None (accepted) or the (status, detail) to refuse with
_Refusal = Callable[[str | None], tuple[int, str] | None]


def _key_check(key: str | None, env: str) -> _Refusal:
    """The API-key check of the write endpoints: a function of the `X-API-Key` header that gives
    None when the key matches (constant time), else the (status, detail) to refuse with: 403 when no
    key is configured (in `$env`), 401 for a missing or wrong one."""

    def refusal(x_api_key: str | None) -> tuple[int, str] | None:
        if key is None:
            return 403, f"write endpoints are disabled: no API key is configured (${env})"
        if x_api_key is None or not hmac.compare_digest(x_api_key.encode("utf-8", "surrogateescape"), key.encode()):
            return 401, "missing or wrong X-API-Key"
        return None

    return refusal


def _error_handlers(app: FastAPI) -> None:
    """Register the error handlers: a bad value is FastAPI's 422 shape (without the offending
    input), a `ServingError` its status naming the field."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's shape, without the offending input (raw bytes or odd text cannot always be JSON)
        detail = [
            {
                "type": as_text(e.get("type", "")),
                "loc": [x if isinstance(x, int) else as_text(x, 256) for x in e.get("loc", ())],
                "msg": as_text(e.get("msg", "")),
            }
            for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError) -> JSONResponse:
        where = "query" if request.method == "GET" else "body"
        return field_error(exc.status, exc.field, str(exc), where)


def _read_routes(
    app: FastAPI, cfg: ServeConfig, service: Callable[[], Service], metrics: Metrics, batcher: MicroBatcher
) -> None:
    """Register the read endpoints (no key): /health, /metrics, /recommend (micro-batched),
    /similar, /explain, /history and the web page."""

    @app.get("/health")
    def health(svc: Service = Depends(service)) -> dict[str, Any]:
        ready = svc.encoder_ready
        return {"status": "ok", "model_version": svc.version, "categories": svc.categories} | {
            "worker": os.getpid(),  # which server process answered (serve.workers)
            "encoder_ready": ready,  # items can be added without waiting for the text encoder
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus(svc: Service = Depends(service)) -> str:
        return metrics.render(svc.version) + (
            "# HELP crossrec_recommend_batches_total Batched /recommend calls (micro-batching).\n"
            "# TYPE crossrec_recommend_batches_total counter\n"
            f"crossrec_recommend_batches_total {batcher.batches}\n"
            "# HELP crossrec_recommend_batched_requests_total /recommend requests answered in those calls.\n"
            "# TYPE crossrec_recommend_batched_requests_total counter\n"
            f"crossrec_recommend_batched_requests_total {batcher.requests}\n"
        )

    @app.get("/recommend", response_class=JSONResponse)
    async def recommend(
        user: str = Query(min_length=1, max_length=256),
        category: str = Query(min_length=1, max_length=256),
        k: int = Query(10, ge=1, le=cfg.max_k),
        exclude_seen: bool = True,
    ) -> JSONResponse:
        result = await asyncio.wrap_future(batcher.submit((user, category, k, exclude_seen)))
        return JSONResponse(result)

    @app.get("/similar")
    def similar(
        item: str = Query(min_length=1, max_length=256),
        k: int = Query(10, ge=1, le=cfg.max_k),
        category: str | None = Query(None, min_length=1, max_length=256),
        svc: Service = Depends(service),
    ) -> dict[str, Any]:
        return svc.similar(item, k, category)

    @app.get("/explain")
    def explain(
        user: str = Query(min_length=1, max_length=256),
        item: str = Query(min_length=1, max_length=256),
        svc: Service = Depends(service),
    ) -> dict[str, Any]:
        return svc.explain(user, item)

    @app.get("/history")
    def history(user: str = Query(min_length=1, max_length=256), svc: Service = Depends(service)) -> dict[str, Any]:
        return svc.history(user)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE


def _write_routes(app: FastAPI, load: Callable[[], Service], service: Callable[[], Service], refusal: _Refusal) -> None:
    """Register the write endpoints, each behind the API key: /items, /feedback and /admin/reload
    (which builds the newest service first, then swaps it in; a failed load keeps the old one)."""
    reload_lock = threading.Lock()

    def require_key(x_api_key: str | None = Header(default=None, max_length=256)) -> None:
        no = refusal(x_api_key)  # the middleware refused already; this documents the header in the schema
        if no is not None:
            raise HTTPException(*no)

    @app.post("/items", dependencies=[Depends(require_key)], status_code=201)
    def add_item(body: NewItem, svc: Service = Depends(service)) -> dict[str, Any]:
        return svc.add_item(body.item, body.category, body.title, body.description, body.image_vector)

    @app.post("/feedback", dependencies=[Depends(require_key)], status_code=201)
    def feedback(body: Feedback, svc: Service = Depends(service)) -> dict[str, Any]:
        return svc.feedback(
            body.user, body.item, body.event, body.timestamp if body.timestamp is not None else time.time()
        )

    @app.post("/admin/reload", dependencies=[Depends(require_key)])
    def reload() -> Any:
        with reload_lock:
            old = app.state.service.version
            try:
                new = load()  # built first; in-flight requests keep the one they hold
            except Exception as e:  # a damaged or half-written version: keep serving the old one
                log.warning("reload failed, still serving %s: %s: %s", old, type(e).__name__, e)
                return field_error(
                    503,
                    "model",
                    f"the newest model version could not be loaded, still serving {old}: {type(e).__name__}: {as_text(e)}",
                    "body",
                )
            app.state.service = new
        return {"previous": old, "model_version": app.state.service.version}


__all__ = ["create_app"]
