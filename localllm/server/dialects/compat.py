"""The paths several serving dialects claim: `POST /generate`, whose body decides the dialect, and
`POST /tokenize`. Errors before the dialect is known are TGI's `{"error", "error_type"}` (readable whichever
dialect was meant); after that, the dialect's own.

    POST /generate   body has `inputs`                               -> TGI       (tgi/)
                     body has a session field: `session_id`,          -> LMDeploy  (lmdeploy.py)
                       `instance_id`, `interactive_mode`, `sequence_start`,
                       `sequence_end`, `request_output_len` or `cancel`
                     body has `prompt`                               -> vLLM      (vllm.py)
    POST /tokenize   body has `inputs` -> TGI;  `prompt` -> vLLM;  `content` -> llama-server (tokenize.py)
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...domain.errors import InvalidRequest
from .. import requests as rq
from ..errors import guarded
from ..replies import NDJSON, SERVING_CODES, ServingError, TGIError, responses
from ..wire import request_body_of
from . import lmdeploy, vllm
from . import tokenize as tokenize_dialect
from .contract import Dialect
from .shared import Presence
from .tgi import api as tgi_api
from .tgi import replies as tgi_replies
from .tgi.wire import TGIGenerateRequest


class Keys(Presence, kw_only=True):
    """The top-level fields that decide which dialect a body of a shared path speaks (`shared.Presence`)."""

    inputs: Any = None
    prompt: Any = None
    content: Any = None
    session_id: Any = None
    instance_id: Any = None
    interactive_mode: Any = None
    sequence_start: Any = None
    sequence_end: Any = None
    request_output_len: Any = None
    cancel: Any = None


async def read_keys(request: Request) -> tuple[list[bytes], Keys]:
    """The body (as read, to be decoded again as the dialect's model) and the fields that decide its dialect."""
    chunks = await rq.read_chunks(request)
    return chunks, await rq.decode_wire(request, chunks, Keys)


_DIALECTS = "TGI (`inputs`), vLLM (`prompt`) or LMDeploy (`prompt` with `session_id`)"


def dialect_of(body: dict[str, Any]) -> str:
    """Which dialect a `POST /generate` body speaks: "tgi", "lmdeploy" or "vllm"."""
    if "inputs" in body:
        return "tgi"
    if any(body.get(key) is not None for key in lmdeploy.SESSION_FIELDS):
        return "lmdeploy"
    if "prompt" in body:
        return "vllm"
    raise InvalidRequest(f"the body of POST /generate must be one of {_DIALECTS}", field="inputs")


@guarded(tgi_api.ERRORS)
async def generate(request: Request) -> Response:
    chunks, keys = await read_keys(request)
    dialect = dialect_of(keys.present())
    if dialect == "tgi":
        return await tgi_api.answer(request, await rq.decode_wire(request, chunks, TGIGenerateRequest), stream=False)
    if dialect == "lmdeploy":
        return await lmdeploy.answer(request, chunks)
    return await vllm.answer(request, chunks)


@guarded(tgi_api.ERRORS)
async def tokenize(request: Request) -> Response:
    chunks, keys = await read_keys(request)
    body = keys.present()
    if "inputs" not in body and "prompt" not in body and "content" not in body:
        raise InvalidRequest(
            "the body of POST /tokenize must have `inputs` (TGI), `prompt` (vLLM) or `content` (llama-server)",
            field="inputs",
        )
    if "content" in body and "inputs" not in body and "prompt" not in body:
        return await tokenize_dialect.llama_tokenize(request, chunks)
    if "inputs" in body:
        return await tgi_api.tokenize(request, await rq.decode_wire(request, chunks, TGIGenerateRequest))
    return await vllm.tokenize(request, chunks)


routes = [
    Route("/generate", generate, methods=["POST"]),
    Route("/tokenize", tokenize, methods=["POST"]),
]


ERROR = (TGIError, ServingError)  # TGI's, or vLLM's and LMDeploy's when the body is theirs


def paths() -> dict[str, Any]:
    return {
        "/generate": {
            "post": {
                "summary": "TGI (body with `inputs`), vLLM (`prompt`) or LMDeploy (`prompt` with `session_id`)",
                "requestBody": request_body_of(TGIGenerateRequest, vllm.VLLMGenerateRequest, lmdeploy.LMDeployRequest),
                "responses": responses(
                    ERROR,
                    (tgi_replies.TGIGeneration, vllm.VLLMText, lmdeploy.LMDeployAnswer),
                    stream=(NDJSON, (vllm.VLLMText, lmdeploy.LMDeployAnswer, ServingError)),  # vLLM's, LMDeploy's
                    codes=SERVING_CODES,
                ),
            }
        },
        "/tokenize": {
            "post": {
                "summary": "tokenize (TGI `inputs`, vLLM `prompt` or llama-server `content`)",
                "requestBody": request_body_of(
                    TGIGenerateRequest, vllm.VLLMTokenizeRequest, tokenize_dialect.LlamaTokenizeRequest
                ),
                "responses": responses(
                    ERROR,
                    (list[tgi_replies.TGITokenSpan], vllm.VLLMTokenized, tokenize_dialect.Tokenized),
                    codes=SERVING_CODES,
                ),
            }
        },
    }


DIALECT = Dialect("compat", routes, tgi_api.ERRORS, paths)
