"""The serving dialects beyond Ollama and OpenAI (TGI, vLLM, LMDeploy, Triton), and the one path they share.

Each dialect is a translator in its own module; this one holds what several of them claim:
`POST /generate`, whose body decides the dialect, and `POST /tokenize`:

    POST /generate   body has `inputs`                               -> TGI       (tgi_api)
                     body has a session field: `session_id`,          -> LMDeploy  (lmdeploy_api)
                       `instance_id`, `interactive_mode`, `sequence_start`,
                       `sequence_end`, `request_output_len` or `cancel`
                     body has `prompt`                               -> vLLM      (vllm_api)
    POST /tokenize   body has `inputs` -> TGI;  `prompt` -> vLLM
    POST /           an embedding model -> TEI (tei_api); else TGI
    POST /embed      TEI (tei_api)
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import InvalidRequest
from . import lmdeploy_api, tei_api, tgi_api, triton_api, vllm_api
from . import requests as rq

_DIALECTS = "TGI (`inputs`), vLLM (`prompt`) or LMDeploy (`prompt` with `session_id`)"


def dialect_of(body: dict[str, Any]) -> str:
    """Which dialect a `POST /generate` body speaks: "tgi", "lmdeploy" or "vllm"."""
    if "inputs" in body:
        return "tgi"
    if any(body.get(key) is not None for key in lmdeploy_api.SESSION_FIELDS):
        return "lmdeploy"
    if "prompt" in body:
        return "vllm"
    raise InvalidRequest(f"the body of POST /generate must be one of {_DIALECTS}", field="inputs")


async def generate(request: Request) -> Response:
    try:
        body = await rq.read_json(request)
        dialect = dialect_of(body)
    except Exception as exc:
        return tgi_api.error_response(exc)  # `{"error": ...}`: readable whichever dialect was meant
    if dialect == "tgi":
        return await tgi_api.answer(request, body, stream=False)
    if dialect == "lmdeploy":
        return await lmdeploy_api.answer(request, body)
    return await vllm_api.answer(request, body)


async def tokenize(request: Request) -> Response:
    try:
        body = await rq.read_json(request)
        if "inputs" not in body and "prompt" not in body:
            raise InvalidRequest(
                "the body of POST /tokenize must have `inputs` (TGI) or `prompt` (vLLM)", field="inputs"
            )
    except Exception as exc:
        return tgi_api.error_response(exc)
    if "inputs" in body:
        return await tgi_api.tokenize(request, body)
    return await vllm_api.tokenize(request, body)


routes = [
    Route("/generate", generate, methods=["POST"]),
    Route("/tokenize", tokenize, methods=["POST"]),
    *tei_api.routes,
    *tgi_api.routes,
    *lmdeploy_api.routes,
    *triton_api.routes,
]
