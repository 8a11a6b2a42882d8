"""The OpenAPI paths of Ollama's API (`/api/*`): request bodies say what the validators enforce."""

from __future__ import annotations

from typing import Any

from ...schema import (
    ANY_LIST,
    BOOL,
    INT,
    KEEP_ALIVE,
    MODEL,
    NDJSON,
    OBJ,
    OLLAMA_ERROR,
    OPTIONS,
    STR,
    STRINGS,
    Schema,
    body,
    obj,
    responses,
)
from ..shared import DIMENSIONS
from .api import TOP_LOGPROBS

FORMAT: Schema = {"anyOf": [{"const": "json"}, {"const": ""}, OBJ]}
_SAMPLING_COMMON = {
    "model": MODEL,
    "options": OPTIONS,
    "keep_alive": KEEP_ALIVE,
    "stream": BOOL,
    "format": FORMAT,
    "logprobs": BOOL,
    "top_logprobs": TOP_LOGPROBS.schema(),
    "think": {"anyOf": [BOOL, {"enum": ["low", "medium", "high"]}]},
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


def paths() -> dict[str, Any]:
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
        "/api/verify": {
            "post": {
                "summary": "hash the store's blobs again (localllm's own): one line a blob, damaged ones moved aside",
                "requestBody": body(obj({"model": MODEL, "stream": BOOL})),
                "responses": responses(
                    err, obj({"status": STR, "checked": INT, "damaged": STRINGS, "blobs": ANY_LIST}), stream=NDJSON
                ),
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
                            "dimensions": DIMENSIONS.schema(),
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
