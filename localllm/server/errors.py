"""The one table from localllm's exceptions to HTTP statuses, and the error bodies of each dialect."""

from __future__ import annotations

import logging
from typing import Any

from ..errors import (
    BodyTooLarge,
    ConfigError,
    ContextLengthExceeded,
    DownloadError,
    EngineError,
    Forbidden,
    InvalidRequest,
    LocalLLMError,
    ModelNotFound,
    NoModelChosen,
    QuotaExceeded,
    ServerBusy,
    Unauthorized,
)

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
    (DownloadError, 502),
    (EngineError, 500),
    (ConfigError, 500),
]


def status_of(exc: BaseException) -> int:
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


def error_body(path: str, exc: BaseException) -> dict[str, Any]:
    """The error body in the dialect of `path`: OpenAI's shape under /v1/, Ollama's elsewhere."""
    return openai_error(exc) if path.startswith("/v1/") else ollama_error(exc)


def ollama_error(exc: BaseException) -> dict[str, Any]:
    return {"error": message_of(exc)}


def openai_error(exc: BaseException) -> dict[str, Any]:
    status = status_of(exc)
    kind = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        403: "invalid_request_error",
        404: "invalid_request_error",
        413: "invalid_request_error",
        422: "invalid_request_error",
        429: "insufficient_quota",
        503: "server_error",
    }.get(status, "server_error")
    code: str | None = None
    if isinstance(exc, Unauthorized):
        code = "invalid_api_key"
    elif isinstance(exc, QuotaExceeded):
        code = "insufficient_quota"
    elif isinstance(exc, ContextLengthExceeded):
        code = "context_length_exceeded"
    elif isinstance(exc, ModelNotFound):
        code = "model_not_found"
    param = exc.field if isinstance(exc, InvalidRequest) else None
    return {"error": {"message": message_of(exc), "type": kind, "param": param, "code": code}}
