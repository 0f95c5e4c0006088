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
wrong or missing key is 401. A bad value is 422 naming the field (FastAPI's error shape, also for
the service's own checks); an unknown user, item or category is 404; a request body over
`serve.max_body_bytes` is 413. Strings, k and vectors are bounded.

`/recommend` requests that arrive together are answered by one batched call
(`Service.recommend_many` through serving/batcher.py: one index search for the batch; at most
`serve.batch_max` requests, waiting `serve.batch_wait_ms` for company). The request timer and body
limit are a plain ASGI middleware (no per-request task or body copy).

Reload builds the new service first and then swaps one reference: a request in flight finishes on
the service it started with.

Example:
    >>> app = create_app(lambda: Service(load_artifact(out), bundle), ServeConfig())   # doctest: +SKIP
    >>> uvicorn.run(app, port=8000)                                                   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hmac
import os
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Optional

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from crossrec.serving.batcher import MicroBatcher
from crossrec.serving.config import ServeConfig
from crossrec.serving.metrics import Metrics
from crossrec.serving.service import Service, ServingError

ID = Field(min_length=1, max_length=256)
PAGE = (Path(__file__).with_name("page.html")).read_text(encoding="utf-8")


class NewItem(BaseModel):
    item: str = ID
    category: str = ID
    title: str = Field(min_length=1, max_length=1000)
    description: Optional[str] = Field(default=None, max_length=10_000)
    image_vector: Optional[list[float]] = Field(default=None, max_length=4096)


class Feedback(BaseModel):
    user: str = ID
    item: str = ID
    event: str = Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]*$")
    timestamp: Optional[float] = Field(default=None, ge=0, le=1e11)


def _field_error(status: int, field: str, msg: str, where: str = "query") -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": [{"loc": [where, field], "msg": msg}]})


class _BoundedAndTimed:
    """ASGI middleware: a body over `max_body_bytes` (by its Content-Length) is 413 before any
    handler reads it; every request's status and latency go to `metrics` under its route."""

    def __init__(self, app: Any, max_body_bytes: int, metrics: Metrics) -> None:
        self.app, self.max_body, self.metrics = app, max_body_bytes, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def send_and_note(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        size = dict(scope.get("headers") or []).get(b"content-length")
        if size is not None and (not size.isdigit() or int(size) > self.max_body):
            await _field_error(413, "body", f"request body over {self.max_body} bytes", "body")(scope, receive, send_and_note)
        else:
            await self.app(scope, receive, send_and_note)
        self.metrics.observe(getattr(scope.get("route"), "path", "other"), status[0], time.perf_counter() - t0)


def create_app(load: Callable[[], Service], cfg: ServeConfig = ServeConfig(), api_key: str | None = None) -> FastAPI:
    """The app. `load()` builds a Service (at start and on /admin/reload); `api_key` defaults to
    the environment variable `cfg.api_key_env`."""
    key = api_key if api_key is not None else os.environ.get(cfg.api_key_env) or None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(title="crossrec", version="1", description="Cross-category recommendations, live.", lifespan=lifespan)
    app.state.service = load()
    metrics = Metrics()
    reload_lock = threading.Lock()
    # the batch runs on the service of its moment: a reload swaps it between batches
    batcher = MicroBatcher(lambda reqs: app.state.service.recommend_many(reqs), cfg.batch_max, cfg.batch_wait_ms)
    app.state.batcher = batcher
    app.add_middleware(_BoundedAndTimed, max_body_bytes=cfg.max_body_bytes, metrics=metrics)

    def service() -> Service:
        return app.state.service

    def require_key(x_api_key: Optional[str] = Header(default=None, max_length=256)) -> None:
        if key is None:
            raise HTTPException(403, f"write endpoints are disabled: no API key is configured (${cfg.api_key_env})")
        if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), key.encode()):
            raise HTTPException(401, "missing or wrong X-API-Key")

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError) -> JSONResponse:
        where = "query" if request.method == "GET" else "body"
        return _field_error(exc.status, exc.field, str(exc), where)

    @app.get("/health")
    def health(svc: Service = Depends(service)) -> dict[str, Any]:
        return {"status": "ok", "model_version": svc.version, "categories": svc.categories}

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus(svc: Service = Depends(service)) -> str:
        return metrics.render(svc.version) + (
            "# HELP crossrec_recommend_batches_total Batched /recommend calls (micro-batching).\n"
            "# TYPE crossrec_recommend_batches_total counter\n"
            f"crossrec_recommend_batches_total {batcher.batches}\n"
            "# HELP crossrec_recommend_batched_requests_total /recommend requests answered in those calls.\n"
            "# TYPE crossrec_recommend_batched_requests_total counter\n"
            f"crossrec_recommend_batched_requests_total {batcher.requests}\n")

    @app.get("/recommend", response_class=JSONResponse)
    async def recommend(user: str = Query(min_length=1, max_length=256),
                        category: str = Query(min_length=1, max_length=256),
                        k: int = Query(10, ge=1, le=cfg.max_k), exclude_seen: bool = True) -> JSONResponse:
        result = await asyncio.wrap_future(batcher.submit((user, category, k, exclude_seen)))
        return JSONResponse(result)

    @app.get("/similar")
    def similar(item: str = Query(min_length=1, max_length=256), k: int = Query(10, ge=1, le=cfg.max_k),
                category: Optional[str] = Query(None, min_length=1, max_length=256),
                svc: Service = Depends(service)) -> dict[str, Any]:
        return svc.similar(item, k, category)

    @app.get("/explain")
    def explain(user: str = Query(min_length=1, max_length=256), item: str = Query(min_length=1, max_length=256),
                svc: Service = Depends(service)) -> dict[str, Any]:
        return svc.explain(user, item)

    @app.get("/history")
    def history(user: str = Query(min_length=1, max_length=256), svc: Service = Depends(service)) -> dict[str, Any]:
        return svc.history(user)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE

    @app.post("/items", dependencies=[Depends(require_key)], status_code=201)
    def add_item(body: NewItem, svc: Service = Depends(service)) -> dict[str, Any]:
        return svc.add_item(body.item, body.category, body.title, body.description, body.image_vector)

    @app.post("/feedback", dependencies=[Depends(require_key)], status_code=201)
    def feedback(body: Feedback, svc: Service = Depends(service)) -> dict[str, Any]:
        return svc.feedback(body.user, body.item, body.event, body.timestamp if body.timestamp is not None else time.time())

    @app.post("/admin/reload", dependencies=[Depends(require_key)])
    def reload() -> dict[str, Any]:
        with reload_lock:
            old = app.state.service.version
            app.state.service = load()  # built first; in-flight requests keep the one they hold
        return {"previous": old, "model_version": app.state.service.version}

    return app


__all__ = ["create_app"]
