"""Logs for operators: text lines, or one JSON object per line (`LOCALLLM_LOG_FORMAT=json`), and the HTTP
request each line belongs to.

Every request gets an id (its `X-Request-Id` header when it sends a sane one, else a new one), kept with
what is learnt about the request as it goes (its dialect, its model, its token counts) in a `RequestInfo`
that a context variable makes current for everything the request runs: log lines written while it is
current carry its id, dialect and model. The object is shared (not copied) by the tasks the request starts,
so what the service learns is seen by the HTTP layer's closing line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

FORMATS = ("text", "json")
_SANE_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
# Extra fields a log call may pass (`log.info(..., extra={...})`) that JSON lines carry.
FIELDS = ("method", "path", "status", "duration_ms", "prompt_tokens", "eval_tokens", "client")


@dataclass(eq=False)
class RequestInfo:
    id: str
    dialect: str = ""
    model: str = ""
    prompt_tokens: int | None = None
    eval_tokens: int | None = None
    prompt_counted: int | None = None  # the prompt's tokens, when counted before generating (`note_prompt`)
    started: float = field(default_factory=time.perf_counter)


_CURRENT: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar("localllm_request", default=None)


def current() -> RequestInfo | None:
    return _CURRENT.get()


def begin(request_id: str | None, dialect: str) -> tuple[RequestInfo, contextvars.Token[RequestInfo | None]]:
    """Make a request current: its id is `request_id` when that is sane (letters, digits, `._:/+=@-`, up to
    128), else a new one."""
    rid = request_id if request_id and _SANE_ID.fullmatch(request_id) else uuid.uuid4().hex
    info = RequestInfo(rid, dialect)
    return info, _CURRENT.set(info)


def end(token: contextvars.Token[RequestInfo | None]) -> None:
    _CURRENT.reset(token)


def detach() -> None:
    """No request is current from here on in this task (one that outlives its request, such as a load)."""
    _CURRENT.set(None)


def note_model(name: str) -> None:
    """The current request is for model `name` (the service says so once it has resolved it)."""
    info = _CURRENT.get()
    if info is not None:
        info.model = name


def note_prompt(tokens: int) -> None:
    """The current request's prompt has `tokens` tokens (counted before generating: Anthropic's
    `message_start` reports them)."""
    info = _CURRENT.get()
    if info is not None:
        info.prompt_counted = tokens


def note_tokens(prompt: int, generated: int) -> None:
    info = _CURRENT.get()
    if info is not None:
        info.prompt_tokens = (info.prompt_tokens or 0) + prompt
        info.eval_tokens = (info.eval_tokens or 0) + generated


class _RequestFilter(logging.Filter):
    """Stamp each record with the current request (at the time of the call, in its own context)."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = _CURRENT.get()
        if info is not None and not hasattr(record, "request_id"):
            record.request_id = info.id
            record.dialect = info.dialect
            record.model = info.model
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request's id, dialect and model, and the
    extra fields of `FIELDS` a call passes."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "dialect", "model", *FIELDS):
            value = getattr(record, key, None)
            if value not in (None, ""):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", None)
        return f"{line} [{rid}]" if rid and record.levelno >= logging.WARNING else line


def setup(*, debug: bool, fmt: str) -> None:
    """Log to stderr at INFO (DEBUG with `debug`), as text lines or JSON objects (`fmt`)."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    if fmt == "json":  # uvicorn's own lines (errors, its shutdown notes) through the same handler
        for name in ("uvicorn", "uvicorn.error"):
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True
