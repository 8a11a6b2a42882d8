"""The OpenAPI 3.1 document of the whole API, served at `GET /openapi.json`.

Request bodies say what the validators enforce (types, ranges, unknown fields refused where the route
refuses them); responses give each status with the dialect's error shape. Bodies of the less used routes
are documented as objects with their main fields only: what is written is what the route accepts.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..types import _RANGES as OPTION_RANGES
from ..types import DEPRECATED_OPTIONS, OPTION_TYPES

Schema = dict[str, Any]

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
OBJ: Schema = {"type": "object"}
ANY_LIST: Schema = {"type": "array"}
STRINGS: Schema = {"type": "array", "items": STR}
STOP: Schema = {"anyOf": [STR, STRINGS]}
NULLABLE_STR: Schema = {"type": ["string", "null"]}


def obj(properties: dict[str, Schema], *, required: tuple[str, ...] = (), closed: bool = False) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def ranged(kind: Schema, low: float | None = None, high: float | None = None, *, open_low: bool = False) -> Schema:
    schema = dict(kind)
    if low is not None:
        schema["exclusiveMinimum" if open_low else "minimum"] = low
    if high is not None:
        schema["maximum"] = high
    return schema


# -- error shapes ---------------------------------------------------------------------------------------

OLLAMA_ERROR = obj({"error": STR}, required=("error",))
OPENAI_ERROR = obj(
    {
        "error": obj(
            {"message": STR, "type": STR, "param": NULLABLE_STR, "code": NULLABLE_STR},
            required=("message", "type", "param", "code"),
        )
    },
    required=("error",),
)
TGI_ERROR = obj({"error": STR, "error_type": STR}, required=("error", "error_type"))
SERVING_ERROR = obj(  # vLLM's and LMDeploy's shape
    {"object": {"const": "error"}, "message": STR, "type": STR, "param": NULLABLE_STR, "code": INT},
    required=("object", "message", "type", "code"),
)
TRITON_ERROR = OLLAMA_ERROR
COMPAT_ERROR: Schema = {"anyOf": [TGI_ERROR, SERVING_ERROR]}


def json_content(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def responses(
    error: Schema,
    ok: Schema | None = None,
    *,
    stream: str | None = None,
    codes: tuple[str, ...] = ("400", "401", "403", "404", "413", "429", "5XX"),
    ok_empty: bool = False,
) -> dict[str, Any]:
    content: dict[str, Any] = {} if ok_empty else json_content(ok or OBJ)
    if stream:
        # an SSE stream is described event by event ({"event", "data", "id"}); NDJSON as its text
        event = {"type": "object", "properties": {"event": STR, "data": STR, "id": STR}}
        content[stream] = {"schema": event if stream == "text/event-stream" else STR}
    out: dict[str, Any] = {"200": {"description": "success", **({"content": content} if content else {})}}
    for code in codes:
        out[code] = {"description": "error", "content": json_content(error)}
    return out


def body(schema: Schema) -> dict[str, Any]:
    return {"required": True, "content": json_content(schema)}


# -- Ollama (/api/*) -------------------------------------------------------------------------------------


def _option_schema(key: str) -> Schema:
    types = OPTION_TYPES[key]
    if key == "stop":
        return STOP
    kind = BOOL if bool in types else NUM if float in types else INT
    low, high = OPTION_RANGES.get(key, (None, None))
    return ranged(kind, low, high)


OPTIONS = obj(
    {**{key: _option_schema(key) for key in OPTION_TYPES}, **{key: {} for key in sorted(DEPRECATED_OPTIONS)}},
    closed=True,
)
MODEL = {"type": "string", "minLength": 1}
KEEP_ALIVE: Schema = {"type": ["string", "number"]}
FORMAT: Schema = {"anyOf": [{"const": "json"}, {"const": ""}, OBJ]}
_SAMPLING_COMMON = {
    "model": MODEL,
    "options": OPTIONS,
    "keep_alive": KEEP_ALIVE,
    "stream": BOOL,
    "format": FORMAT,
    "logprobs": BOOL,
    "top_logprobs": ranged(INT, 0, 20),
    "think": {"const": False},
    "truncate": BOOL,
    "shift": BOOL,
}
GENERATE = obj(
    {
        **_SAMPLING_COMMON,
        "prompt": STR,
        "suffix": STR,
        "system": STR,
        "template": STR,
        "context": {"type": "array", "items": INT},
        "raw": BOOL,
        "images": {"type": "array", "maxItems": 0},
    },
    required=("model",),
)
CHAT_MESSAGE = obj(
    {"role": STR, "content": STR, "tool_calls": ANY_LIST, "tool_call_id": STR, "images": {"maxItems": 0}},
    required=("role",),
)
CHAT = obj(
    {**_SAMPLING_COMMON, "messages": {"type": "array", "items": CHAT_MESSAGE}, "tools": ANY_LIST},
    required=("model",),
)
NAMED = obj({"model": MODEL, "name": MODEL})
GENERATE_OK = obj({"model": STR, "created_at": STR, "response": STR, "done": BOOL})
CHAT_OK = obj({"model": STR, "created_at": STR, "message": OBJ, "done": BOOL})
NDJSON = "application/x-ndjson"


def _ollama_paths() -> dict[str, Any]:
    err = OLLAMA_ERROR
    return {
        "/": {"get": {"summary": "liveness", "responses": {"200": {"description": "Ollama is running"}}}},
        "/api/version": {
            "get": {
                "summary": "daemon version",
                "responses": responses(err, obj({"version": STR}, required=("version",))),
            }
        },
        "/api/tags": {
            "get": {
                "summary": "local models",
                "responses": responses(err, obj({"models": ANY_LIST}, required=("models",))),
            }
        },
        "/api/ps": {
            "get": {
                "summary": "loaded models",
                "responses": responses(err, obj({"models": ANY_LIST}, required=("models",))),
            }
        },
        "/api/show": {
            "post": {
                "summary": "a model's details",
                "requestBody": body(obj({**NAMED["properties"], "verbose": BOOL})),
                "responses": responses(
                    err, obj({"modelfile": STR, "parameters": STR, "template": STR, "details": OBJ})
                ),
            }
        },
        "/api/pull": {
            "post": {
                "summary": "download a model",
                "requestBody": body(obj({**NAMED["properties"], "stream": BOOL, "insecure": BOOL})),
                "responses": responses(err, obj({"status": STR}), stream=NDJSON),
            }
        },
        "/api/delete": {
            "delete": {
                "summary": "delete a model",
                "requestBody": body(NAMED),
                "responses": responses(err, ok_empty=True),
            }
        },
        "/api/copy": {
            "post": {
                "summary": "copy a model under another name",
                "requestBody": body(obj({"source": MODEL, "destination": MODEL}, required=("source", "destination"))),
                "responses": responses(err, ok_empty=True),
            }
        },
        "/api/generate": {
            "post": {
                "summary": "complete a prompt",
                "requestBody": body(GENERATE),
                "responses": responses(err, GENERATE_OK, stream=NDJSON),
            }
        },
        "/api/chat": {
            "post": {"summary": "chat", "requestBody": body(CHAT), "responses": responses(err, CHAT_OK, stream=NDJSON)}
        },
        "/api/create": {
            "post": {
                "summary": "create a model (Modelfile fields)",
                "requestBody": body(obj({"model": MODEL, "from": STR, "files": OBJ, "stream": BOOL})),
                "responses": responses(err, obj({"status": STR}), stream=NDJSON),
            }
        },
        "/api/blobs/{digest}": {
            "parameters": [{"name": "digest", "in": "path", "required": True, "schema": STR}],
            "head": {
                "summary": "whether a blob exists",
                "responses": {"200": {"description": "present"}, "404": {"description": "absent"}},
            },
            "post": {
                "summary": "upload a blob",
                "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": STR}}},
                "responses": responses(err, ok_empty=True),
            },
        },
        "/api/embed": {
            "post": {
                "summary": "embeddings",
                "requestBody": body(
                    obj(
                        {
                            "model": MODEL,
                            "input": {"anyOf": [STR, STRINGS]},
                            "truncate": BOOL,
                            "options": OPTIONS,
                            "keep_alive": KEEP_ALIVE,
                            "dimensions": ranged(INT, 1),
                        },
                        required=("model",),
                    )
                ),
                "responses": responses(err, obj({"model": STR, "embeddings": ANY_LIST})),
            }
        },
        "/api/embeddings": {
            "post": {
                "summary": "one embedding (older API)",
                "requestBody": body(
                    obj(
                        {"model": MODEL, "prompt": STR, "options": OPTIONS, "keep_alive": KEEP_ALIVE},
                        required=("model",),
                    )
                ),
                "responses": responses(err, obj({"embedding": ANY_LIST})),
            }
        },
        "/api/v1/token": {
            "get": {
                "summary": "trade an app's secret for an access token",
                "parameters": [
                    {"name": "appid", "in": "query", "schema": STR},
                    {"name": "secret", "in": "query", "schema": STR},
                ],
                "responses": responses(err, obj({"accessToken": STR})),
            }
        },
    }


def document() -> dict[str, Any]:
    """The whole API as one OpenAPI 3.1 document."""
    from .openapi_dialects import dialect_paths, openai_paths

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "localllm",
            "version": __version__,
            "description": "Ollama's API, OpenAI's, and the TGI, vLLM, LMDeploy and Triton dialects, in one daemon.",
        },
        "paths": {**_ollama_paths(), **openai_paths(), **dialect_paths()},
    }


async def openapi_json(request: Request) -> Response:
    return JSONResponse(document())


routes = [Route("/openapi.json", openapi_json, methods=["GET", "HEAD"])]
