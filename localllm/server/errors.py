"""The one table from localllm's exceptions to HTTP statuses, and the one way a route turns an exception into
its dialect's error response (`ErrorShape`, `guarded`); each dialect declares its own error body."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec

from starlette.responses import JSONResponse, Response

from ..domain.errors import (
    BodyTooLarge,
    ConfigError,
    DownloadError,
    EngineError,
    Forbidden,
    InvalidRequest,
    LocalLLMError,
    ModelNotFound,
    NoModelChosen,
    QuotaExceeded,
    ServerBusy,
    StoreUnwritable,
    Unauthorized,
)
from .streaming import ClientGone

log = logging.getLogger("localllm.server")

RETRY_AFTER_SECONDS = 2  # what a 503 Server Busy asks clients to wait (the openai SDK honours it)

_STATUS: list[tuple[type[BaseException], int]] = [
    (BodyTooLarge, 413),
    (NoModelChosen, 422),
    (InvalidRequest, 400),
    (ModelNotFound, 404),
    (Unauthorized, 401),
    (Forbidden, 403),
    (QuotaExceeded, 429),
    (ServerBusy, 503),
    (StoreUnwritable, 507),
    (DownloadError, 502),
    (EngineError, 500),
    (ConfigError, 500),
]


class RouteError(LocalLLMError):
    """No route for the path (404), or not for the method (405): Starlette's refusals, in the dialect's shape."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def status_of(exc: BaseException) -> int:
    if isinstance(exc, RouteError):
        return exc.status
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def headers_of(exc: BaseException) -> dict[str, str] | None:
    """Headers an error response carries: `Retry-After` when the server is busy or a quota is used up,
    `WWW-Authenticate` when a key is needed."""
    if isinstance(exc, ServerBusy):
        return {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if isinstance(exc, QuotaExceeded):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": 'Bearer realm="localllm"'}
    return None


def message_of(exc: BaseException) -> str:
    """What the client is told; unexpected exceptions are logged here with their traceback, never sent."""
    if isinstance(exc, LocalLLMError):
        return str(exc)
    log.error("unexpected error", exc_info=exc)
    return "internal error (the daemon's log has the details)"


@dataclass(frozen=True)
class ErrorShape:
    """How a dialect answers an error: its body, and its status (the table above unless it has its own)."""

    body: Callable[[BaseException], dict[str, Any]]
    status: Callable[[BaseException], int] = status_of

    def response(self, exc: BaseException) -> JSONResponse:
        return JSONResponse(self.body(exc), status_code=self.status(exc), headers=headers_of(exc))


P = ParamSpec("P")


def guarded(shape: ErrorShape) -> Callable[[Callable[P, Awaitable[Response]]], Callable[P, Awaitable[Response]]]:
    """The tail every route shares, written once: a client that left before the answer began gets a 499
    (nobody reads it, the log says so), any other exception the dialect's error response with its status.
    Errors after the first byte of a stream are the stream's own (`streaming.EventStream`)."""

    def wrap(handler: Callable[P, Awaitable[Response]]) -> Callable[P, Awaitable[Response]]:
        @functools.wraps(handler)
        async def answer(*args: P.args, **kwargs: P.kwargs) -> Response:
            try:
                return await handler(*args, **kwargs)
            except ClientGone:
                return Response(status_code=499)
            except Exception as exc:
                return shape.response(exc)

        return answer

    return wrap
