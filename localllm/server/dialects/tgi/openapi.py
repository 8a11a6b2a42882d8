"""The OpenAPI paths of TGI's API (`/generate_stream`, `/info`, `/health`) and its request body, which
`POST /generate` and `POST /` take too."""

from __future__ import annotations

from typing import Any

from ...schema import BOOL, INT, MODEL, NUM, OBJ, SSE, STR, TGI_ERROR, body, obj, ranged, responses

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
