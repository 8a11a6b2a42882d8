"""The JSON schema of Ollama's `options` object (also taken by OpenAI's routes and the embeddings), written
from the option tables of `domain/options.py`: the one request schema not generated from a wire model, as the
options are checked by the domain (`Options`), not by msgspec. Every other schema of the OpenAPI document comes
from the wire models (`wire.py`, requests) and the reply models (`replies.py`, answers).
"""

from __future__ import annotations

from typing import Any

from ..domain.options import _RANGES as OPTION_RANGES
from ..domain.options import DEPRECATED_OPTIONS, OPTION_CHOICES, OPTION_TYPES

Schema = dict[str, Any]


def _option_schema(key: str) -> Schema:
    types = OPTION_TYPES[key]
    if key == "stop":
        text: Schema = {"type": "string"}
        return {"anyOf": [text, {"type": "array", "items": text}]}
    if key in OPTION_CHOICES:
        return {"type": "string", "enum": list(OPTION_CHOICES[key])}
    kind = "string" if str in types else "boolean" if bool in types else "number" if float in types else "integer"
    schema: Schema = {"type": kind}
    low, high = OPTION_RANGES.get(key, (None, None))
    if low is not None:
        schema["minimum"] = low
    if high is not None:
        schema["maximum"] = high
    return schema


OPTIONS: Schema = {
    "type": "object",
    "properties": {
        **{key: _option_schema(key) for key in OPTION_TYPES},
        **{key: {} for key in sorted(DEPRECATED_OPTIONS)},
    },
    "additionalProperties": False,
}
