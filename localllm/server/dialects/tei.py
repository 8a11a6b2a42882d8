"""Hugging Face text-embeddings-inference (TEI): `POST /embed`, and `POST /` when the model is an embedding one.

    POST /embed  {"inputs": str | [str], "normalize": true, "truncate": false, "dimensions": N, "model": ...}
                 -> [[float, ...], ...]                     one vector per input, always a list of lists
    POST /       the same, when the model the body names (or LOCALLLM_DEFAULT_MODEL) is an embedding model:
                 what huggingface_hub's InferenceClient(base_url=...).feature_extraction() posts; otherwise
                 `POST /` is TGI's generation (`tgi/`)

The model is chosen as for TGI (`model` in the body, else LOCALLLM_DEFAULT_MODEL, else a 422). Errors have
TGI's shape, `{"error", "error_type"}`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...domain.errors import InvalidRequest, LocalLLMError
from ...domain.types import Embeddings
from .. import requests as rq
from ..errors import guarded
from ..fields import Field, Fields
from ..schema import ANY_LIST, MODEL, STR, TGI_ERROR, body, responses
from ..streaming import until_disconnect
from .contract import Dialect
from .shared import DIMENSIONS, choose_model, service_of
from .tgi import api as tgi_api
from .tgi.api import CODES as TGI_CODES

FIELDS = Fields(  # and `inputs`, a string or a list of strings: `inputs_of` reads it
    Field("normalize", bool, default=True),
    Field("truncate", bool, default=False),
    Field("truncation_direction", str, default="right"),
    DIMENSIONS,
    Field("prompt_name", str),
    Field("model", str),
)


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


@guarded(tgi_api.ERRORS)
async def root(request: Request) -> Response:
    """`POST /`: TEI's embeddings when the model is an embedding model, else TGI's generation (`stream` in the
    body decides; a whole answer is a list of one, as the Inference API's)."""
    body = await rq.read_json(request)
    if is_embedding_request(body, request):
        return await answer(request, body)
    return await tgi_api.answer(request, body, stream=None, listed=True)


@guarded(tgi_api.ERRORS)
async def embed(request: Request) -> Response:
    return await answer(request, await rq.read_json(request))


async def answer(request: Request, body: dict[str, Any]) -> Response:
    """Embed `body` (already read) in TEI's shape."""
    service = service_of(request)
    FIELDS.check(body, also=("inputs",))
    name = choose_model(body, service)
    inputs = inputs_of(body)
    values = FIELDS.read(body)
    if str(values["truncation_direction"]).lower() != "right":
        raise InvalidRequest("truncation_direction: only 'right' is supported (the end is cut)", field="inputs")
    if values["prompt_name"] is not None:
        raise InvalidRequest("prompt_name is not supported: put the prompt in the text", field="prompt_name")
    work = service.embed(
        name, inputs, truncate=values["truncate"], dimensions=values["dimensions"], normalize=values["normalize"]
    )
    result: Embeddings = await until_disconnect(work, request)
    return JSONResponse(result.vectors)


routes = [Route("/", root, methods=["POST"]), Route("/embed", embed, methods=["POST"])]


def paths() -> dict[str, Any]:
    schema = {**FIELDS.schema(inputs={"anyOf": [STR, ANY_LIST]}, model=MODEL), "required": ["inputs"]}
    return {
        "/embed": {
            "post": {
                "summary": "TEI embeddings (also POST / when the model is an embedding model)",
                "requestBody": body(schema),
                "responses": responses(TGI_ERROR, ANY_LIST, codes=TGI_CODES),
            }
        },
    }


DIALECT = Dialect("tei", routes, tgi_api.ERRORS, paths)
