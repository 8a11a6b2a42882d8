"""The OpenAPI paths of the OpenAI dialect (/v1/*) and of the serving dialects (TGI, vLLM, LMDeploy,
Triton); `openapi.py` puts them into the document."""

from __future__ import annotations

from typing import Any

from .openapi import (
    ANY_LIST,
    BOOL,
    COMPAT_ERROR,
    INT,
    MODEL,
    NUM,
    OBJ,
    OPENAI_ERROR,
    OPTIONS,
    SERVING_ERROR,
    STOP,
    STR,
    STRINGS,
    TGI_ERROR,
    TRITON_ERROR,
    Schema,
    body,
    obj,
    ranged,
    responses,
)

SSE = "text/event-stream"
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


# generation may leave the model to LOCALLLM_DEFAULT_MODEL ("dummy", as InferenceClient sends): 422 without one
OPENAI_GENERATE_CODES = ("400", "401", "403", "404", "413", "422", "429", "5XX")


def openai_paths() -> dict[str, Any]:
    err = OPENAI_ERROR
    return {
        "/v1/chat/completions": {
            "post": {
                "summary": "OpenAI chat completions",
                "requestBody": body(CHAT_COMPLETIONS),
                "responses": responses(err, COMPLETION_OK, stream=SSE, codes=OPENAI_GENERATE_CODES),
            }
        },
        "/v1/completions": {
            "post": {
                "summary": "OpenAI (legacy) completions",
                "requestBody": body(COMPLETIONS),
                "responses": responses(err, COMPLETION_OK, stream=SSE, codes=OPENAI_GENERATE_CODES),
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


TGI_PARAMETERS = obj(
    {
        "best_of": ranged(INT, 1, 4),
        "temperature": ranged(NUM, 0, open_low=True),
        "top_k": ranged(INT, 0, open_low=True),
        "top_p": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "typical_p": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "seed": ranged(INT, 0, 2**64 - 1),
        "repetition_penalty": ranged(NUM, 0, open_low=True),
        "frequency_penalty": ranged(NUM, -2, 2),
        "top_n_tokens": ranged(INT, 0, 5),
        "max_new_tokens": ranged(INT, 1),
        "truncate": ranged(INT, 0, open_low=True),
        "stop": {"type": "array", "items": STR, "maxItems": 4},
        "do_sample": BOOL,
        "details": BOOL,
        "decoder_input_details": BOOL,
        "return_full_text": BOOL,
        "watermark": BOOL,
        "grammar": OBJ,
    }
)
TGI_GENERATE = obj(
    {"inputs": {"type": "string", "minLength": 1}, "parameters": TGI_PARAMETERS, "stream": BOOL, "model": MODEL},
    required=("inputs",),
    closed=True,
)
SERVING_GENERATE = obj({"prompt": STR, "model": MODEL, "stream": BOOL})
TGI_CODES = ("401", "403", "404", "413", "422", "424", "429", "5XX")
SERVING_CODES = ("400", "401", "403", "404", "413", "422", "424", "429", "5XX")


def dialect_paths() -> dict[str, Any]:
    triton_generate = obj({"text_input": STR, "parameters": OBJ})
    return {
        "/generate": {
            "post": {
                "summary": "TGI (body with `inputs`), vLLM (`prompt`) or LMDeploy (`prompt` with `session_id`)",
                "requestBody": body({"anyOf": [TGI_GENERATE, SERVING_GENERATE]}),
                "responses": responses(
                    COMPAT_ERROR, obj({"generated_text": STR, "text": ANY_LIST}), codes=SERVING_CODES
                ),
            }
        },
        "/generate_stream": {
            "post": {
                "summary": "TGI streaming generation",
                "requestBody": body(TGI_GENERATE),
                "responses": responses(TGI_ERROR, stream=SSE, codes=TGI_CODES),
            }
        },
        "/tokenize": {
            "post": {
                "summary": "tokenize (TGI `inputs` or vLLM `prompt`)",
                "requestBody": body(OBJ),
                "responses": responses(COMPAT_ERROR, {"type": ["array", "object"]}, codes=SERVING_CODES),
            }
        },
        "/embed": {
            "post": {
                "summary": "TEI embeddings (also POST / when the model is an embedding model)",
                "requestBody": body(
                    obj(
                        {
                            "inputs": {"anyOf": [STR, ANY_LIST]},
                            "normalize": BOOL,
                            "truncate": BOOL,
                            "dimensions": INT,
                            "model": MODEL,
                        },
                        required=("inputs",),
                    )
                ),
                "responses": responses(TGI_ERROR, ANY_LIST, codes=TGI_CODES),
            }
        },
        "/info": {"get": {"summary": "TGI server info", "responses": responses(TGI_ERROR, OBJ, codes=("5XX",))}},
        "/health": {"get": {"summary": "health", "responses": {"200": {"description": "healthy"}}}},
        "/v1/chat/interactive": {
            "post": {
                "summary": "LMDeploy interactive session",
                "requestBody": body(OBJ),
                "responses": responses(SERVING_ERROR, OBJ, stream="application/x-ndjson", codes=SERVING_CODES),
            }
        },
        "/v1/encode": {
            "post": {
                "summary": "LMDeploy encode",
                "requestBody": body(OBJ),
                "responses": responses(
                    SERVING_ERROR, obj({"input_ids": ANY_LIST, "length": ANY_LIST}), codes=SERVING_CODES
                ),
            }
        },
        "/v2": {"get": {"summary": "Triton server metadata", "responses": responses(TRITON_ERROR, OBJ, codes=())}},
        "/v2/health/live": {"get": {"summary": "live", "responses": {"200": {"description": "live"}}}},
        "/v2/health/ready": {"get": {"summary": "ready", "responses": {"200": {"description": "ready"}}}},
        "/v2/models/{model}": {
            "get": {
                "summary": "Triton model metadata",
                "parameters": _path(),
                "responses": responses(TRITON_ERROR, OBJ),
            }
        },
        "/v2/models/{model}/ready": {
            "get": {
                "summary": "Triton model ready",
                "parameters": _path(),
                "responses": {
                    "200": {"description": "ready"},
                    "400": {"description": "not ready"},
                    "404": {"description": "unknown"},
                },
            }
        },
        "/v2/models/{model}/generate": {
            "post": {
                "summary": "Triton generate",
                "parameters": _path(),
                "requestBody": body(triton_generate),
                "responses": responses(TRITON_ERROR, obj({"text_output": STR, "model_name": STR})),
            }
        },
        "/v2/models/{model}/generate_stream": {
            "post": {
                "summary": "Triton streaming generate",
                "parameters": _path(),
                "requestBody": body(triton_generate),
                "responses": responses(TRITON_ERROR, stream=SSE),
            }
        },
    }


def _path() -> list[dict[str, Any]]:
    return [{"name": "model", "in": "path", "required": True, "schema": STR}]
