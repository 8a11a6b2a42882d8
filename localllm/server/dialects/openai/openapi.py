"""The OpenAPI paths of OpenAI's API (`/v1/*`): request bodies are the field tables the parser reads
(`requests.FIELDS` and the fields of each endpoint)."""

from __future__ import annotations

from typing import Any

from ....chat.thinking import EFFORTS
from ...schema import (
    ANY_LIST,
    BOOL,
    INT,
    MODEL,
    OBJ,
    OPENAI_ERROR,
    OPTIONS,
    SSE,
    STR,
    STRINGS,
    Schema,
    body,
    obj,
    responses,
)
from .requests import BEST_OF, FIELDS, LEGACY_LOGPROBS, THINKING_BUDGETS, TOP_LOGPROBS

OPENAI_SAMPLING: dict[str, Schema] = {
    "model": MODEL,
    "stream": BOOL,
    "stream_options": obj({"include_usage": BOOL}),
    **FIELDS.schema()["properties"],
    "options": OPTIONS,
}
CHAT_MESSAGE = obj(
    {
        "role": STR,
        "content": {"anyOf": [STR, ANY_LIST]},
        "tool_calls": ANY_LIST,
        "tool_call_id": STR,
        "reasoning_content": STR,
    }
)
CHAT_COMPLETIONS = obj(
    {
        **OPENAI_SAMPLING,
        "messages": {"type": "array", "items": CHAT_MESSAGE, "minItems": 1},
        "logprobs": BOOL,
        "top_logprobs": TOP_LOGPROBS.schema(),
        "response_format": OBJ,
        "tools": ANY_LIST,
        "tool_choice": {"anyOf": [STR, OBJ]},
        "reasoning_effort": {"enum": list(EFFORTS)},
        **THINKING_BUDGETS.schema()["properties"],
    },
    required=("model", "messages"),
)
COMPLETIONS = obj(
    {
        **OPENAI_SAMPLING,
        "prompt": {"anyOf": [STR, STRINGS]},
        "suffix": STR,
        "echo": BOOL,
        "best_of": BEST_OF.schema(),
        "logprobs": LEGACY_LOGPROBS.schema(),
    },
    required=("model",),
)
COMPLETION_OK = obj(
    {"id": STR, "object": STR, "created": INT, "model": STR, "choices": ANY_LIST}, required=("choices",)
)
MODEL_OK = obj({"id": STR, "object": STR, "created": INT, "owned_by": STR}, required=("id", "object"))
MODEL_PATH = [{"name": "model", "in": "path", "required": True, "schema": STR}]


# generation may leave the model to LOCALLLM_DEFAULT_MODEL ("dummy", as InferenceClient sends): 422 without one
GENERATE_CODES = ("400", "401", "403", "404", "413", "422", "429", "5XX")


def paths() -> dict[str, Any]:
    err = OPENAI_ERROR
    return {
        "/v1/chat/completions": {
            "post": {
                "summary": "OpenAI chat completions",
                "requestBody": body(CHAT_COMPLETIONS),
                "responses": responses(err, COMPLETION_OK, stream=SSE, codes=GENERATE_CODES),
            }
        },
        "/v1/completions": {
            "post": {
                "summary": "OpenAI (legacy) completions",
                "requestBody": body(COMPLETIONS),
                "responses": responses(err, COMPLETION_OK, stream=SSE, codes=GENERATE_CODES),
            }
        },
        "/v1/models": {
            "get": {
                "summary": "models",
                "responses": responses(err, obj({"object": STR, "data": {"type": "array", "items": MODEL_OK}})),
            }
        },
        "/v1/models/{model}": {
            "get": {"summary": "one model", "parameters": MODEL_PATH, "responses": responses(err, MODEL_OK)}
        },
        "/v1/embeddings": {
            "post": {
                "summary": "OpenAI embeddings",
                "requestBody": body(obj({"model": MODEL, "input": {"anyOf": [STR, ANY_LIST]}}, required=("model",))),
                "responses": responses(err, obj({"object": STR, "data": ANY_LIST, "model": STR})),
            }
        },
    }
