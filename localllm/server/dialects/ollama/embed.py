"""Ollama's embeddings: `/api/embed` and the legacy `/api/embeddings` (OpenAI's are in `openai/embed.py`).

Each route checks its body field by field (a 400 naming the field), then asks `Service.embed` once and answers
one JSON object.

- `/api/embed`: `input` a string or a list of strings; unit vectors; `truncate` (default true) cuts an input
  longer than the context, false refuses it. No `input` (or "") loads the model and answers no vectors.
- `/api/embeddings`: `prompt`; the vector is not normalised, as Ollama's legacy endpoint does; a prompt longer
  than the context is refused (no silent truncation); an empty prompt loads the model.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ....domain.errors import ContextLengthExceeded, InvalidRequest
from ....domain.types import Embeddings, parse_options
from ... import requests as rq
from ...errors import guarded
from ...streaming import until_disconnect
from ..shared import dimensions, service_of
from .api import ERRORS

# -- request fields ------------------------------------------------------------------------------------


def ollama_inputs(body: dict[str, Any]) -> list[str]:
    """`input` of `/api/embed`: a string or a non-empty list of strings; missing or "" is no input at all."""
    value = body.get("input")
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise InvalidRequest(f"input must be a string or a list of strings, got {type(value).__name__}", field="input")
    if not value:
        raise InvalidRequest("input must not be an empty list", field="input")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidRequest(f"input[{i}] must be a string, got {type(item).__name__}", field="input")
    return value


# -- routes ----------------------------------------------------------------------------------------------


@guarded(ERRORS)
async def embed(request: Request) -> Response:
    body = await rq.read_json(request)
    name = rq.model_name(body)
    inputs = ollama_inputs(body)
    truncate = rq.field(body, "truncate", bool, True)
    dims = dimensions(body)
    options = parse_options(body.get("options"))
    keep_alive = rq.keep_alive(body)
    work = service_of(request).embed(
        name, inputs, truncate=truncate, dimensions=dims, keep_alive=keep_alive, options=options
    )
    result: Embeddings = await until_disconnect(work, request)
    return JSONResponse(
        {
            "model": str(name),
            "embeddings": result.vectors,
            "total_duration": result.total_duration,
            "load_duration": result.load_duration,
            "prompt_eval_count": result.prompt_eval_count,
        }
    )


@guarded(ERRORS)
async def embeddings(request: Request) -> Response:
    """Ollama's legacy endpoint: one `prompt`, one vector, not normalised."""
    body = await rq.read_json(request)
    name = rq.model_name(body)
    prompt = rq.field(body, "prompt", str, "")
    options = parse_options(body.get("options"))
    keep_alive = rq.keep_alive(body)
    work = service_of(request).embed(
        name, [prompt] if prompt else [], truncate=False, keep_alive=keep_alive, options=options, normalize=False
    )
    try:
        result: Embeddings = await until_disconnect(work, request)
    except ContextLengthExceeded as exc:
        exc.field = "prompt"
        raise
    return JSONResponse({"embedding": result.vectors[0] if result.vectors else []})


routes = [
    Route("/api/embed", embed, methods=["POST"]),
    Route("/api/embeddings", embeddings, methods=["POST"]),
]
