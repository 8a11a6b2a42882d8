"""Building blocks of the OpenAPI document: JSON schema pieces, error shapes shared by several dialects,
and the `responses`/`body` helpers each dialect's paths are written with (`server/openapi.py` assembles them).
"""

from __future__ import annotations

from typing import Any

from ..domain.options import _RANGES as OPTION_RANGES
from ..domain.options import DEPRECATED_OPTIONS, OPTION_CHOICES, OPTION_TYPES

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
MODEL: Schema = {"type": "string", "minLength": 1}
KEEP_ALIVE: Schema = {"type": ["string", "number"]}
SSE = "text/event-stream"
NDJSON = "application/x-ndjson"


def obj(properties: dict[str, Schema], *, required: tuple[str, ...] = (), closed: bool = False) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def ranged(
    kind: Schema,
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> Schema:
    schema = dict(kind)
    if low is not None:
        schema["exclusiveMinimum" if open_low else "minimum"] = low
    if high is not None:
        schema["exclusiveMaximum" if open_high else "maximum"] = high
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
SERVING_CODES = ("400", "401", "403", "404", "413", "422", "424", "429", "5XX")


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


def path_parameter(name: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": STR}]


# -- Ollama's `options` object (also taken by OpenAI's routes and the embeddings) ----------------------


def _option_schema(key: str) -> Schema:
    types = OPTION_TYPES[key]
    if key == "stop":
        return STOP
    if key in OPTION_CHOICES:
        return {"type": "string", "enum": list(OPTION_CHOICES[key])}
    kind = STR if str in types else BOOL if bool in types else NUM if float in types else INT
    low, high = OPTION_RANGES.get(key, (None, None))
    return ranged(kind, low, high)


OPTIONS = obj(
    {**{key: _option_schema(key) for key in OPTION_TYPES}, **{key: {} for key in sorted(DEPRECATED_OPTIONS)}},
    closed=True,
)
