"""Hugging Face text-embeddings-inference (TEI): `POST /embed`, and `POST /` when the model is an embedding one.

    POST /embed  {"inputs": str | [str], "normalize": true, "truncate": false, "dimensions": N, "model": ...}
                 -> [[float, ...], ...]                     one vector per input, always a list of lists
    POST /       the same, when the model the body names (or LOCALLLM_DEFAULT_MODEL) is an embedding model:
                 what huggingface_hub's InferenceClient(base_url=...).feature_extraction() posts; otherwise
                 `POST /` is TGI's generation (tgi_api.py)

The model is chosen as for TGI (`model` in the body, else LOCALLLM_DEFAULT_MODEL, else a 422). Errors have
TGI's shape, `{"error", "error_type"}`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import InvalidRequest, LocalLLMError
from ..types import Embeddings
from . import requests as rq
from . import tgi_api
from .dialect import check_fields, choose_model, service_of
from .streaming import ClientGone, until_disconnect
from .tgi_api import error_response

FIELDS = ("inputs", "normalize", "truncate", "truncation_direction", "dimensions", "prompt_name", "model")


def is_embedding_request(body: dict[str, Any], request: Request) -> bool:
    """Whether `POST /` with `body` asks an embedding model (TEI), rather than a generative one (TGI)."""
    service = service_of(request)
    try:
        return "embedding" in service.model(choose_model(body, service)).capabilities
    except (LocalLLMError, OSError):  # TGI's path reports a bad or unknown model in its own words
        return False


def inputs_of(body: dict[str, Any]) -> list[str]:
    value = body.get("inputs")
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise InvalidRequest("inputs must be a non-empty string or a non-empty list of non-empty strings", field="inputs")


async def root(request: Request) -> Response:
    """`POST /`: TEI's embeddings when the model is an embedding model, else TGI's generation (`stream` in the
    body decides; a whole answer is a list of one, as the Inference API's)."""
    try:
        body = await rq.read_json(request)
    except Exception as exc:
        return error_response(exc)
    if is_embedding_request(body, request):
        return await answer(request, body)
    return await tgi_api.answer(request, body, stream=None, listed=True)


async def embed(request: Request) -> Response:
    try:
        return await answer(request, await rq.read_json(request))
    except Exception as exc:
        return error_response(exc)


async def answer(request: Request, body: dict[str, Any]) -> Response:
    """Embed `body` (already read) in TEI's shape."""
    service = service_of(request)
    try:
        check_fields(body, FIELDS)
        name = choose_model(body, service)
        inputs = inputs_of(body)
        normalize = rq.field(body, "normalize", bool, True)
        truncate = rq.field(body, "truncate", bool, False)
        direction = rq.field(body, "truncation_direction", str, "right")
        if str(direction).lower() != "right":
            raise InvalidRequest("truncation_direction: only 'right' is supported (the end is cut)", field="inputs")
        if body.get("prompt_name") is not None:
            raise InvalidRequest("prompt_name is not supported: put the prompt in the text", field="prompt_name")
        dims = rq.field(body, "dimensions", int)
        if dims is not None and dims < 1:
            raise InvalidRequest(f"dimensions must be at least 1, got {dims}", field="dimensions")
        work = service.embed(name, inputs, truncate=truncate, dimensions=dims, normalize=normalize)
        result: Embeddings = await until_disconnect(work, request)
    except ClientGone:
        return Response(status_code=499)
    except Exception as exc:
        return error_response(exc)
    return JSONResponse(result.vectors)


routes = [Route("/", root, methods=["POST"]), Route("/embed", embed, methods=["POST"])]
