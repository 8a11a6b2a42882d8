"""Embeddings in both dialects: Ollama's `/api/embed` and legacy `/api/embeddings`, OpenAI's `/v1/embeddings`.

Each route checks its body field by field (a 400 naming the field, with `param` on `/v1/*`), then asks
`Service.embed` once and answers one JSON object.

- `/api/embed`: `input` a string or a list of strings; unit vectors; `truncate` (default true) cuts an input
  longer than the context, false refuses it. No `input` (or "") loads the model and answers no vectors.
- `/api/embeddings`: `prompt`; the vector is not normalised, as Ollama's legacy endpoint does; a prompt longer
  than the context is refused (no silent truncation); an empty prompt loads the model.
- `/v1/embeddings`: `input` a string, a list of strings, a token array or a list of token arrays;
  `encoding_format` "float" or "base64" (little-endian float32); too long an input is refused, as OpenAI does.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import ContextLengthExceeded, InvalidRequest
from ..service import Service
from ..types import Embeddings, parse_options
from . import requests as rq
from .errors import headers_of, ollama_error, openai_error, status_of
from .streaming import ClientGone, until_disconnect

ENCODINGS = ("float", "base64")


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _ollama_error(exc: BaseException) -> JSONResponse:
    return JSONResponse(ollama_error(exc), status_code=status_of(exc), headers=headers_of(exc))


def _openai_error(exc: BaseException) -> JSONResponse:
    return JSONResponse(openai_error(exc), status_code=status_of(exc), headers=headers_of(exc))


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


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def openai_inputs(body: dict[str, Any]) -> list[str] | list[list[int]]:
    """`input` of `/v1/embeddings`: a string, a list of strings, a token array or a list of token arrays."""
    value = body.get("input")
    shapes = "a string, a list of strings, an array of token ids or a list of arrays of token ids"
    if value is None:
        raise InvalidRequest("input is required", field="input")
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("input must not be an empty string", field="input")
        return [value]
    if not isinstance(value, list):
        raise InvalidRequest(f"input must be {shapes}, got {type(value).__name__}", field="input")
    if not value:
        raise InvalidRequest("input must not be an empty list", field="input")
    if all(isinstance(item, str) for item in value):
        empty = next((i for i, item in enumerate(value) if not item), None)
        if empty is not None:
            raise InvalidRequest(f"input[{empty}] must not be an empty string", field="input")
        return list(value)
    if all(_is_token(item) for item in value):
        return [_tokens(value, "input")]
    if all(isinstance(item, list) for item in value):
        return [_tokens(item, f"input[{i}]") for i, item in enumerate(value)]
    raise InvalidRequest(f"input must be {shapes}, not a mix of them", field="input")


def _tokens(value: list[Any], label: str) -> list[int]:
    if not value:
        raise InvalidRequest(f"{label} must not be an empty array of token ids", field="input")
    for item in value:
        if not _is_token(item) or item < 0:
            raise InvalidRequest(f"{label} must hold token ids (integers of 0 or more), got {item!r}", field="input")
    return value


def dimensions(body: dict[str, Any]) -> int | None:
    value = rq.field(body, "dimensions", int)
    if value is not None and value < 1:
        raise InvalidRequest(f"dimensions must be at least 1, got {value}", field="dimensions")
    return value if value is None else int(value)


def encoding_format(body: dict[str, Any]) -> str:
    value = rq.field(body, "encoding_format", str, "float")
    if value not in ENCODINGS:
        raise InvalidRequest(f'encoding_format must be "float" or "base64", got {value!r}', field="encoding_format")
    return str(value)


def encode_base64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: the vector as little-endian float32, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


# -- routes ----------------------------------------------------------------------------------------------


async def embed(request: Request) -> Response:
    try:
        body = await rq.read_json(request)
        name = rq.model_name(body)
        inputs = ollama_inputs(body)
        truncate = rq.field(body, "truncate", bool, True)
        dims = dimensions(body)
        options = parse_options(body.get("options"))
        keep_alive = rq.keep_alive(body)
        work = _service(request).embed(
            name, inputs, truncate=truncate, dimensions=dims, keep_alive=keep_alive, options=options
        )
        result: Embeddings = await until_disconnect(work, request)
    except ClientGone:
        return Response(status_code=499)
    except Exception as exc:
        return _ollama_error(exc)
    return JSONResponse(
        {
            "model": str(name),
            "embeddings": result.vectors,
            "total_duration": result.total_duration,
            "load_duration": result.load_duration,
            "prompt_eval_count": result.prompt_eval_count,
        }
    )


async def embeddings(request: Request) -> Response:
    """Ollama's legacy endpoint: one `prompt`, one vector, not normalised."""
    try:
        body = await rq.read_json(request)
        name = rq.model_name(body)
        prompt = rq.field(body, "prompt", str, "")
        options = parse_options(body.get("options"))
        keep_alive = rq.keep_alive(body)
        work = _service(request).embed(
            name, [prompt] if prompt else [], truncate=False, keep_alive=keep_alive, options=options, normalize=False
        )
        try:
            result: Embeddings = await until_disconnect(work, request)
        except ContextLengthExceeded as exc:
            exc.field = "prompt"
            raise
    except ClientGone:
        return Response(status_code=499)
    except Exception as exc:
        return _ollama_error(exc)
    return JSONResponse({"embedding": result.vectors[0] if result.vectors else []})


async def openai_embeddings(request: Request) -> Response:
    try:
        body = await rq.read_json(request)
        name = rq.model_name(body)
        inputs = openai_inputs(body)
        fmt = encoding_format(body)
        dims = dimensions(body)
        rq.field(body, "user", str)  # accepted and ignored
        work = _service(request).embed(name, inputs, truncate=False, dimensions=dims)
        result: Embeddings = await until_disconnect(work, request)
    except ClientGone:
        return Response(status_code=499)
    except Exception as exc:
        return _openai_error(exc)
    data = [
        {"object": "embedding", "index": i, "embedding": encode_base64(v) if fmt == "base64" else v}
        for i, v in enumerate(result.vectors)
    ]
    usage = {"prompt_tokens": result.prompt_eval_count, "total_tokens": result.prompt_eval_count}
    return JSONResponse({"object": "list", "data": data, "model": body["model"], "usage": usage})


routes = [
    Route("/api/embed", embed, methods=["POST"]),
    Route("/api/embeddings", embeddings, methods=["POST"]),
    Route("/v1/embeddings", openai_embeddings, methods=["POST"]),
]
