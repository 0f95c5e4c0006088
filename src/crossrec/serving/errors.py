"""The error every serving request can meet (serving/service.py raises it, serving/api.py turns it
into an HTTP answer)."""

from __future__ import annotations

from crossrec.errors import RequestError


class ServingError(RequestError):
    """A request the service cannot answer: `field` is the request field, `status` the HTTP code."""

    def __init__(self, message: str, field: str, status: int = 422) -> None:
        super().__init__(message)
        self.field, self.status = field, status


__all__ = ["ServingError"]
