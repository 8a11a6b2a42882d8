"""The OpenAPI paths of OpenAI's API (`/v1/*`): request bodies say what the validators enforce."""

from __future__ import annotations

from typing import Any

from ...schema import (
    ANY_LIST,
    BOOL,
    INT,
    MODEL,
    NUM,
    OBJ,
    OPENAI_ERROR,
    OPTIONS,
    SSE,
    STOP,
    STR,
    STRINGS,
    Schema,
    body,
    obj,
    ranged,
    responses,
)

OPENAI_SAMPLING: dict[str, Schema] = {
    "model": MODEL,
    "stream": BOOL,
    "stream_options": obj({"include_usage": BOOL}),
    "max_tokens": ranged(INT, 1),
    "max_completion_tokens": ranged(INT, 1),
    "n": ranged(INT, 1, 128),
    "temperature": ranged(NUM, 0, 2),
    "top_p": ranged(NUM, 0, 1),
    "top_k": ranged(INT, -1, 1 << 20),
    "min_p": ranged(NUM, 0, 1),
    "typical_p": ranged(NUM, 0, 1),
    "repeat_penalty": ranged(NUM, 0, 10),
    "repetition_penalty": ranged(NUM, 0, 10),
    "presence_penalty": ranged(NUM, -2, 2),
    "frequency_penalty": ranged(NUM, -2, 2),
    "mirostat": ranged(INT, 0, 2),
    "mirostat_tau": ranged(NUM, 0, 100),
    "mirostat_eta": ranged(NUM, 0, 10),
    "min_tokens": ranged(INT, 0, 1 << 20),
    "seed": INT,
    "stop": STOP,
    "logit_bias": OBJ,
    "grammar": STR,
    "ignore_eos": BOOL,
    "options": OPTIONS,
}
CHAT_MESSAGE = obj({"role": STR, "content": {"anyOf": [STR, ANY_LIST]}, "tool_calls": ANY_LIST, "tool_call_id": STR})
CHAT_COMPLETIONS = obj(
    {
        **OPENAI_SAMPLING,
        "messages": {"type": "array", "items": CHAT_MESSAGE, "minItems": 1},
        "logprobs": BOOL,
        "top_logprobs": ranged(INT, 0, 20),
        "response_format": OBJ,
        "tools": ANY_LIST,
        "tool_choice": {"anyOf": [STR, OBJ]},
    },
    required=("model", "messages"),
)
COMPLETIONS = obj(
    {
        **OPENAI_SAMPLING,
        "prompt": {"anyOf": [STR, STRINGS]},
        "suffix": STR,
        "echo": BOOL,
        "best_of": ranged(INT, 1, 20),
        "logprobs": ranged(INT, 0, 5),
    },
    required=("model",),
)
COMPLETION_OK = obj(
    {"id": STR, "object": STR, "created": INT, "model": STR, "choices": ANY_LIST}, required=("choices",)
)
MODEL_OK = obj({"id": STR, "object": STR, "created": INT, "owned_by": STR}, required=("id", "object"))
MODEL_PATH = [{"name": "model", "in": "path", "required": True, "schema": STR}]


def paths() -> dict[str, Any]:
    err = OPENAI_ERROR
    return {
        "/v1/chat/completions": {
            "post": {
                "summary": "OpenAI chat completions",
                "requestBody": body(CHAT_COMPLETIONS),
                "responses": responses(err, COMPLETION_OK, stream=SSE),
            }
        },
        "/v1/completions": {
            "post": {
                "summary": "OpenAI (legacy) completions",
                "requestBody": body(COMPLETIONS),
                "responses": responses(err, COMPLETION_OK, stream=SSE),
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
