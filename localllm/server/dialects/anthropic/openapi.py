"""The OpenAPI paths of Anthropic's Messages API: request bodies from the same field tables the parser reads."""

from __future__ import annotations

from typing import Any

from ...fields import Fields
from ...schema import ANY_LIST, INT, SSE, STR, Schema, body, json_content, obj
from .api import usage
from .requests import COUNT_FIELDS, FIELDS, STRUCTURED

# -- OpenAPI --------------------------------------------------------------------------------------------

ERROR_SCHEMA = obj(
    {"type": {"const": "error"}, "error": obj({"type": STR, "message": STR}, required=("type", "message"))},
    required=("type", "error"),
)
USAGE = obj({k: INT for k in usage(None)}, required=("input_tokens", "output_tokens"))
MESSAGE_OK = obj(
    {
        "id": STR,
        "type": {"const": "message"},
        "role": {"const": "assistant"},
        "model": STR,
        "content": ANY_LIST,
        "stop_reason": {"enum": ["end_turn", "max_tokens", "stop_sequence", "tool_use"]},
        "stop_sequence": {"type": ["string", "null"]},
        "usage": USAGE,
    },
    required=("id", "type", "role", "content", "stop_reason", "usage"),
)
CODES = ("400", "401", "403", "404", "413", "429", "500", "529")


def _responses(ok: Schema, *, stream: bool = False) -> dict[str, Any]:
    content = json_content(ok)
    if stream:
        content[SSE] = {"schema": obj({"event": STR, "data": STR})}
    out: dict[str, Any] = {"200": {"description": "success", "content": content}}
    for code in CODES:
        out[code] = {"description": "error", "content": json_content(ERROR_SCHEMA)}
    return out


def _request_schema(fields: Fields) -> Schema:
    schema = fields.schema(closed=True, **STRUCTURED)
    schema["required"].append("messages")
    return schema


def paths() -> dict[str, Any]:
    headers = [
        {"name": name, "in": "header", "required": False, "schema": STR}
        for name in ("x-api-key", "anthropic-version", "anthropic-beta")
    ]
    return {
        "/v1/messages": {
            "post": {
                "summary": "Anthropic Messages",
                "parameters": headers,
                "requestBody": body(_request_schema(FIELDS)),
                "responses": _responses(MESSAGE_OK, stream=True),
            }
        },
        "/v1/messages/count_tokens": {
            "post": {
                "summary": "Anthropic Messages: count a request's input tokens",
                "parameters": headers,
                "requestBody": body(_request_schema(COUNT_FIELDS)),
                "responses": _responses(obj({"input_tokens": INT}, required=("input_tokens",))),
            }
        },
    }
