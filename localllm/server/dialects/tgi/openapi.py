"""The OpenAPI paths of TGI's API (`/generate_stream`, `/info`, `/health`) and its request body, which
`POST /generate` and `POST /` take too; `parameters` is the table `requests.PARAMETERS` that the parser reads."""

from __future__ import annotations

from typing import Any

from ...schema import BOOL, MODEL, OBJ, SSE, TGI_ERROR, body, obj, responses
from .requests import PARAMETERS

TGI_PARAMETERS = PARAMETERS.schema()
TGI_GENERATE = obj(
    {"inputs": {"type": "string", "minLength": 1}, "parameters": TGI_PARAMETERS, "stream": BOOL, "model": MODEL},
    required=("inputs",),
    closed=True,
)
TGI_CODES = ("401", "403", "404", "413", "422", "424", "429", "5XX")


def paths() -> dict[str, Any]:
    return {
        "/generate_stream": {
            "post": {
                "summary": "TGI streaming generation",
                "requestBody": body(TGI_GENERATE),
                "responses": responses(TGI_ERROR, stream=SSE, codes=TGI_CODES),
            }
        },
        "/info": {"get": {"summary": "TGI server info", "responses": responses(TGI_ERROR, OBJ, codes=("5XX",))}},
        "/health": {"get": {"summary": "health", "responses": {"200": {"description": "healthy"}}}},
    }
