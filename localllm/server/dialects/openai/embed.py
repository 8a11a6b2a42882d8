"""OpenAI's embeddings, `POST /v1/embeddings`: `input` a string, a list of strings, a token array or a list of
token arrays; `encoding_format` "float" or "base64" (little-endian float32); too long an input is refused, as
OpenAI does. The body is `wire.EmbeddingRequest` (a 400 naming the field in `param`)."""

from __future__ import annotations

import base64
import struct
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ....domain.errors import InvalidRequest
from ....domain.events import Embeddings
from ....domain.names import parse_name
from ... import requests as rq
from ...errors import guarded
from ...replies import reply
from ...streaming import until_disconnect
from ..shared import service_of
from . import replies as r
from . import wire
from .api import ERRORS


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def openai_inputs(value: str | list[Any]) -> list[str] | list[list[int]]:
    """`input` of `/v1/embeddings`: a string, a list of strings, a token array or a list of token arrays."""
    shapes = "a string, a list of strings, an array of token ids or a list of arrays of token ids"
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("input must not be an empty string", field="input")
        return [value]
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


def encode_base64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: the vector as little-endian float32, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


# -- routes ----------------------------------------------------------------------------------------------


@guarded(ERRORS)
async def openai_embeddings(request: Request) -> Response:
    body = await rq.read_wire(request, wire.EmbeddingRequest)
    if not body.model:
        raise InvalidRequest("model is required", field="model")
    name = parse_name(body.model, field="model")
    inputs = openai_inputs(body.input)
    fmt = body.encoding_format
    work = service_of(request).embed(name, inputs, truncate=False, dimensions=body.dimensions)
    result: Embeddings = await until_disconnect(work, request)
    data = [
        r.EmbeddingObject(index=i, embedding=encode_base64(v) if fmt == "base64" else v)
        for i, v in enumerate(result.vectors)
    ]
    usage = r.EmbeddingUsage(prompt_tokens=result.prompt_eval_count, total_tokens=result.prompt_eval_count)
    return reply(r.EmbeddingList(data=data, model=body.model, usage=usage))


routes = [Route("/v1/embeddings", openai_embeddings, methods=["POST"])]
