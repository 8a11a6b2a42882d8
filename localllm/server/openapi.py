"""The OpenAPI 3.1 document of the whole API, served at `GET /openapi.json`, assembled from the paths each
dialect declares (`dialects/*`) and the JSON schemas of their models: the request bodies (`wire.py`, generated
from the one declaration that also parses them) and the answers (`replies.py`, the reply models).

Request bodies say what the validators enforce (types, ranges, bounds); responses give each status with its
body: the route's reply model on success (and the model of each event of its stream), the dialect's error
shape otherwise.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from . import dialects, wire


def document() -> dict[str, Any]:
    """The whole API as one OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "localllm",
            "version": __version__,
            "description": "Ollama's API, OpenAI's, and the TGI, vLLM, LMDeploy and Triton dialects, in one daemon.",
        },
        "paths": dialects.paths(),
        "components": {"schemas": wire.components([*dialects.wire_models(), *dialects.reply_models()])},
    }


async def openapi_json(request: Request) -> Response:
    return JSONResponse(document())


routes = [Route("/openapi.json", openapi_json, methods=["GET", "HEAD"])]
