"""The registry of dialects: every wire format the daemon speaks, one line each.

The app builds its routes from it (in this order, which is also the order a path's owner is looked for), and
middleware errors (auth 401, host 403, body 413) and Starlette's 404/405 are answered in the shape of the
dialect that owns the path (`shape_of`). Adding a dialect is one module under `dialects/` plus one line here:
see `docs/dialects.md`.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.routing import BaseRoute

from ..errors import ErrorShape
from . import anthropic, compat, lmdeploy, ollama, openai, rerank, responses, tei, tgi, tokenize, triton, vllm
from .contract import Dialect

DIALECTS: tuple[Dialect, ...] = (
    ollama.DIALECT,
    responses.DIALECT,
    openai.DIALECT,
    anthropic.DIALECT,
    compat.DIALECT,
    tei.DIALECT,
    rerank.DIALECT,
    tokenize.DIALECT,
    tgi.DIALECT,
    lmdeploy.DIALECT,
    triton.DIALECT,
    vllm.DIALECT,
)
DEFAULT = ollama.DIALECT  # paths no dialect claims (the token endpoint, unknown paths outside /v1/ and /v2/)


def routes() -> list[BaseRoute]:
    return [route for dialect in DIALECTS for route in dialect.routes]


def owner(path: str, method: str | None = None) -> Dialect:
    """The dialect whose route serves `path` (with `method` first, then with any method: a 405 is the
    owner's), else the one whose prefix it is under, else Ollama."""
    for wanted in (method, None):
        for dialect in DIALECTS:
            if dialect.serves(path, wanted):
                return dialect
    for dialect in DIALECTS:
        if dialect.prefix and path.startswith(dialect.prefix):
            return dialect
    return DEFAULT


def shape_of(path: str, method: str | None = None) -> ErrorShape:
    return owner(path, method).errors


def paths() -> dict[str, Any]:
    """Every dialect's part of the OpenAPI document."""
    out: dict[str, Any] = {}
    for dialect in DIALECTS:
        out.update(dialect.paths())
    return out


def wire_models() -> list[type[msgspec.Struct]]:
    """Every dialect's wire models (their schemas are the OpenAPI document's components)."""
    return [model for dialect in DIALECTS for model in dialect.wire]


def reply_models() -> list[Any]:
    """Every dialect's reply models (their schemas are the OpenAPI document's components too)."""
    return [model for dialect in DIALECTS for model in dialect.replies]
