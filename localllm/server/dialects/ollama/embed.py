"""Ollama's embeddings: `/api/embed` and the legacy `/api/embeddings` (OpenAI's are in `openai/embed.py`).

Each route reads its body as its wire model (a 400 naming the field), then asks `Service.embed` once and answers
one JSON object.

- `/api/embed`: `input` a string or a list of strings; unit vectors; `truncate` (default true) cuts an input
  longer than the context, false refuses it. No `input` (or "") loads the model and answers no vectors.
- `/api/embeddings`: `prompt`; the vector is not normalised, as Ollama's legacy endpoint does; a prompt longer
  than the context is refused (no silent truncation); an empty prompt loads the model.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ....domain.errors import ContextLengthExceeded
from ....domain.events import Embeddings
from ... import requests as rq
from ...errors import guarded
from ...streaming import until_disconnect
from ...wire import read_options
from ..shared import service_of
from . import wire
from .api import ERRORS
from .requests import embed_inputs

# -- routes ----------------------------------------------------------------------------------------------


@guarded(ERRORS)
async def embed(request: Request) -> Response:
    body = await rq.read_wire(request, wire.EmbedBody)
    name = rq.name_of(body.model)
    inputs = embed_inputs(body.input)
    options = read_options(body.options)
    keep_alive = rq.duration_of(body.keep_alive)
    work = service_of(request).embed(
        name, inputs, truncate=body.truncate, dimensions=body.dimensions, keep_alive=keep_alive, options=options
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
    body = await rq.read_wire(request, wire.EmbeddingsBody)
    name = rq.name_of(body.model)
    prompt = body.prompt
    options = read_options(body.options)
    keep_alive = rq.duration_of(body.keep_alive)
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
