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

from typing import Annotated, Any

from msgspec import Meta
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...domain.errors import InvalidRequest, LocalLLMError
from ...domain.events import Embeddings
from ...domain.limits import MAX_EMBED_INPUTS, PROMPT_MAX_BYTES
from .. import requests as rq
from ..errors import guarded
from ..replies import TGIError, responses
from ..streaming import until_disconnect
from ..wire import Strict, as_model, check_text, request_body
from .compat import read_keys
from .contract import Dialect
from .shared import choose_model, service_of
from .tgi import api as tgi_api
from .tgi import wire as tgi_wire

# -- the request body, declared once (server/wire.py): unknown fields refused, null is a field's default ------


class TEIEmbedRequest(Strict, kw_only=True):
    inputs: str | Annotated[list[str], Meta(max_length=MAX_EMBED_INPUTS)]
    normalize: bool | None = None  # none: true
    truncate: bool | None = None
    truncation_direction: str | None = None  # "right" (or "Right") only
    dimensions: Annotated[int, Meta(ge=1)] | None = None
    prompt_name: str | None = None  # refused: put the prompt in the text
    model: str | None = None

    def check(self) -> None:
        check_text([self.inputs] if isinstance(self.inputs, str) else self.inputs, PROMPT_MAX_BYTES, "inputs", "inputs")


MODELS = (TEIEmbedRequest,)


def is_embedding_request(model: Any, request: Request) -> bool:
    """Whether `POST /` naming `model` asks an embedding model (TEI), rather than a generative one (TGI)."""
    service = service_of(request)
    try:
        return "embedding" in service.model(choose_model({"model": model}, service)).capabilities
    except (LocalLLMError, OSError):  # TGI's path reports a bad or unknown model in its own words
        return False


def inputs_of(body: TEIEmbedRequest) -> list[str]:
    value = body.inputs
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(value):
        return list(value)
    raise InvalidRequest("inputs must be a non-empty string or a non-empty list of non-empty strings", field="inputs")


@guarded(tgi_api.ERRORS)
async def root(request: Request) -> Response:
    """`POST /`: TEI's embeddings when the model is an embedding model, else TGI's generation (`stream` in the
    body decides; a whole answer is a list of one, as the Inference API's)."""
    chunks, keys = await read_keys(request)
    if is_embedding_request(keys.model, request):
        return await answer(request, await rq.decode_wire(request, chunks, TEIEmbedRequest))
    body = await rq.decode_wire(request, chunks, tgi_wire.TGIGenerateRequest)
    return await tgi_api.answer(request, body, stream=None, listed=True)


@guarded(tgi_api.ERRORS)
async def embed(request: Request) -> Response:
    return await answer(request, await rq.read_wire(request, TEIEmbedRequest))


async def answer(request: Request, raw: TEIEmbedRequest | dict[str, Any]) -> Response:
    """Embed `raw` (already read) in TEI's shape."""
    service = service_of(request)
    body = as_model(raw, TEIEmbedRequest)
    name = choose_model({"model": body.model}, service)
    inputs = inputs_of(body)
    if (body.truncation_direction or "right").lower() != "right":
        raise InvalidRequest("truncation_direction: only 'right' is supported (the end is cut)", field="inputs")
    if body.prompt_name is not None:
        raise InvalidRequest("prompt_name is not supported: put the prompt in the text", field="prompt_name")
    work = service.embed(
        name, inputs, truncate=bool(body.truncate), dimensions=body.dimensions, normalize=body.normalize is not False
    )
    result: Embeddings = await until_disconnect(work, request)
    return JSONResponse(result.vectors)


routes = [Route("/", root, methods=["POST"]), Route("/embed", embed, methods=["POST"])]

Vectors = list[list[float]]  # the answer: one vector per input


def paths() -> dict[str, Any]:
    return {
        "/embed": {
            "post": {
                "summary": "TEI embeddings (also POST / when the model is an embedding model)",
                "requestBody": request_body(TEIEmbedRequest),
                "responses": responses(TGIError, Vectors, codes=tgi_api.CODES),
            }
        },
    }


DIALECT = Dialect("tei", routes, tgi_api.ERRORS, paths, wire=MODELS, replies=(Vectors,))
