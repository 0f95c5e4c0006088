"""Request bodies and bounds for the HTTP API (serving/api.py), below any handler.

- `strict_json`: a JSON body parsed strictly (UTF-8 only, finite numbers only, no lone
  surrogates), each refusal a 422 naming the field; `StrictJSONRoute` makes FastAPI parse bodies
  with it.
- `BoundedAndTimed`: the ASGI middleware that refuses a write without the right API key before its
  body is read, cuts a body over the limit (by its Content-Length or, chunked or not, by the bytes
  received: the handler never gets more than the limit) with a 413, and times every request.
- `field_error`, `as_text`: FastAPI's error shape, and text that JSON-encodes as UTF-8.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from crossrec.serving.metrics import Metrics

WRITE_PATHS = frozenset({"/items", "/feedback", "/admin/reload"})  # need the API key, checked before the body is read


def field_error(status: int, field: str, msg: str, where: str = "query") -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": [{"loc": [where, field], "msg": msg}]})


def as_text(x: Any, limit: int = 500) -> str:
    """`x` as text that JSON-encodes as UTF-8 (lone surrogates escaped), at most `limit` chars."""
    return str(x)[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


class _NonFinite:
    """What the strict parser reads NaN, Infinity, -Infinity or an overflowing number as."""

    def __init__(self, text: str) -> None:
        self.text = text


def _finite_float(text: str) -> Any:
    x = float(text)
    return x if math.isfinite(x) else _NonFinite(text)


def _body_error(loc: list[Any], msg: str) -> HTTPException:
    return HTTPException(422, [{"type": "json_invalid", "loc": ["body", *loc], "msg": msg}])


def strict_json(body: bytes) -> Any:
    """Parse a JSON request body strictly: UTF-8 only (a leading BOM is allowed), finite numbers
    only, no lone surrogates in any string or key. Raises json.JSONDecodeError for malformed JSON
    and HTTPException(422) naming the field for the rest (FastAPI turns both into 422)."""
    try:
        text = body.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise _body_error([], f"the body is not valid UTF-8 (byte {e.start})") from None
    try:
        value = json.loads(text, parse_constant=_NonFinite, parse_float=_finite_float)
    except RecursionError:
        raise _body_error([], "the body is nested too deeply") from None
    except json.JSONDecodeError:
        raise
    except ValueError as e:  # an integer of more digits than Python converts
        raise _body_error([], f"a number in the body is out of range ({as_text(e, 100)})") from None
    stack: list[tuple[list[Any], Any]] = [([], value)]  # iterative: depth is bounded by the parser only
    while stack:
        loc, v = stack.pop()
        if isinstance(v, _NonFinite):
            raise _body_error(loc, f"{v.text} is not a finite number (NaN and infinities are not JSON)")
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise _body_error(loc, "a lone surrogate (an unpaired \\ud800-\\udfff escape) is not text") from None
        elif isinstance(v, dict):
            for k, x in v.items():
                try:
                    k.encode("utf-8")
                except UnicodeEncodeError:
                    raise _body_error(
                        loc, "a key holds a lone surrogate (an unpaired \\ud800-\\udfff escape)"
                    ) from None
                stack.append(([*loc, k], x))
        elif isinstance(v, list):
            stack.extend(([*loc, j], x) for j, x in enumerate(v))
    return value


class _StrictRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is parsed by `strict_json`."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictRequest(request.scope, request.receive))

        return strict


class _BodyTooLarge(Exception):
    """Raised to the app by receive() once the body it streamed passes the limit."""


class BoundedAndTimed:
    """ASGI middleware, before any handler reads a body: a request to a write path
    (`WRITE_PATHS`) without the right API key is refused (`refuse`: 401, or 403 with no key
    configured); a body over `max_body_bytes` is 413, by its Content-Length or, with none
    (chunked), by the bytes received so far: the handler never receives more than the limit.
    Every request's status and latency go to `metrics` under its route."""

    def __init__(
        self,
        app: Any,
        max_body_bytes: int,
        metrics: Metrics,
        refuse: Callable[[bytes | None], Response | None] = lambda _: None,
    ) -> None:
        self.app, self.max_body, self.metrics, self.refuse = app, max_body_bytes, metrics, refuse

    def _too_large(self) -> JSONResponse:
        return field_error(413, "body", f"request body over {self.max_body} bytes", "body")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]
        over, started, got = [False], [False], [0]

        async def send_and_note(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started[0], status[0] = True, message["status"]
            await send(message)

        async def from_app(message: dict) -> None:
            if over[0] and not started[0]:
                return  # the app's answer to a cut-off body (a 400 or 422) gives way to the 413
            await send_and_note(message)

        async def bounded_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                got[0] += len(message.get("body", b""))
                if got[0] > self.max_body:
                    over[0] = True
                    raise _BodyTooLarge(f"request body over {self.max_body} bytes")
            return message

        headers = dict(scope.get("headers") or [])
        size = headers.get(b"content-length")
        answer: Response | None = None
        if (scope.get("path") or "/").rstrip("/") in WRITE_PATHS:
            answer = self.refuse(headers.get(b"x-api-key"))
        if answer is None and size is not None and (not size.isdigit() or int(size) > self.max_body):
            answer = self._too_large()
        if answer is None:
            try:
                await self.app(scope, bounded_receive, from_app)
            except Exception:
                if not over[0]:
                    raise
            if over[0] and not started[0]:
                answer = self._too_large()
        if answer is not None:
            await answer(scope, receive, send_and_note)
        self.metrics.observe(getattr(scope.get("route"), "path", "other"), status[0], time.perf_counter() - t0)


__all__ = ["WRITE_PATHS", "BoundedAndTimed", "StrictJSONRoute", "field_error", "as_text", "strict_json"]
