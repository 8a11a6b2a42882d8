"""Translate TGI request bodies (`{"inputs", "parameters"}`) onto a generation: pure functions, each bad
field an `InvalidRequest` naming it as `parameters.<name>` (a 422 in TGI's shape).

Sampling follows TGI: greedy unless `do_sample` is set or a warper asks for sampling (a temperature other than
1, `top_k`, `top_p` or `typical_p`); a sampled request without a seed gets one, which `details.seed` reports.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from ....domain import limits
from ....domain.errors import InvalidRequest
from ....domain.names import ModelName
from ....domain.types import Constraints, Options
from ....service.core import Service
from ... import requests as rq
from ...fields import STOP, Field, Fields, as_options, check_fields
from ..shared import choose_model
from .regex_grammar import UnsupportedRegex, regex_to_gbnf

MAX_BEST_OF = 4
MAX_STOP_SEQUENCES = 4
MAX_TOP_N_TOKENS = 5
DEFAULT_MAX_NEW_TOKENS = 1024
PARAMETERS = Fields(
    Field("adapter_id", str),  # refused: no LoRA adapters per request
    Field("best_of", int, low=1, high=MAX_BEST_OF, default=1),
    Field("temperature", float, low=0, open_low=True),
    Field("top_k", int, low=0, open_low=True),
    Field("top_p", float, low=0, high=1, open_low=True, open_high=True),
    Field("typical_p", float, low=0, high=1, open_low=True, open_high=True),
    Field("seed", int, low=0, high=2**64 - 1),
    Field("repetition_penalty", float, low=0, open_low=True),
    Field("frequency_penalty", float, low=-2, high=2, default=0.0, option="frequency_penalty"),
    Field("max_new_tokens", int, low=1, default=DEFAULT_MAX_NEW_TOKENS, option="num_predict"),
    Field("stop", STOP, limit=MAX_STOP_SEQUENCES, default=()),
    Field("top_n_tokens", int, low=0, high=MAX_TOP_N_TOKENS, default=0),
    Field("truncate", int, low=0, open_low=True),
    Field("do_sample", bool, default=False),
    Field("details", bool, default=True),
    Field("decoder_input_details", bool, default=False),
    Field("return_full_text", bool, default=False),
    Field("watermark", bool, default=False),  # accepted and ignored: no watermarking here
    Field("grammar", dict),  # `{"type": "json" | "json_schema" | "regex", "value": ...}`
)
PREFIX = "parameters."
BODY = ("inputs", "parameters", "stream", "model")


@dataclass(frozen=True)
class TGIRequest:
    model: ModelName
    inputs: str
    options: Options
    constraints: Constraints
    stream: bool
    details: bool
    decoder_input_details: bool
    return_full_text: bool
    best_of: int
    top_n: int
    sampling: bool
    truncate: int | None


def _grammar(raw: Any) -> tuple[Any, str | None]:
    """TGI's `grammar` as (format, GBNF): a JSON schema for `json`/`json_schema`, a grammar for `regex`."""
    if raw is None:
        return None, None
    kind = raw.get("type") if isinstance(raw, dict) else None
    value = raw.get("value") if isinstance(raw, dict) else None
    if kind == "json":
        if isinstance(value, str):
            value = _json_value(value)
        if not isinstance(value, dict):
            raise InvalidRequest(f"{PREFIX}grammar.value must be a JSON schema object", field=f"{PREFIX}grammar.value")
        return value or "json", None
    if kind == "json_schema":
        schema = value.get("schema") if isinstance(value, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest(
                f"{PREFIX}grammar.value.schema must be a JSON schema object", field=f"{PREFIX}grammar.value.schema"
            )
        return schema or "json", None
    if kind == "regex":
        if not isinstance(value, str) or not value:
            raise InvalidRequest(
                f"{PREFIX}grammar.value must be a non-empty regular expression", field=f"{PREFIX}grammar.value"
            )
        limits.check_regex(value, f"{PREFIX}grammar.value")
        try:
            return None, regex_to_gbnf(value)
        except UnsupportedRegex as exc:
            raise InvalidRequest(
                f"{PREFIX}grammar.value: this regular expression cannot be enforced: {exc}",
                field=f"{PREFIX}grammar.value",
            ) from None
    raise InvalidRequest(f"{PREFIX}grammar.type must be json, json_schema or regex", field=f"{PREFIX}grammar.type")


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidRequest(f"{PREFIX}grammar.value is not valid JSON", field=f"{PREFIX}grammar.value") from None


def parse(body: dict[str, Any], service: Service, *, stream: bool | None) -> TGIRequest:
    """Translate a TGI request body; `stream` is the endpoint's (None: the body's `stream`, as on `POST /`)."""
    check_fields(body, BODY)
    inputs = rq.field(body, "inputs", str, required=True)
    if not inputs:
        raise InvalidRequest("inputs must not be empty", field="inputs")
    params = rq.field(body, "parameters", dict, {})
    PARAMETERS.check(params, prefix=PREFIX)
    asked = rq.field(body, "stream", bool)
    if stream is None:
        stream = bool(asked)
    elif stream and asked is False:
        raise InvalidRequest("stream cannot be false on /generate_stream", field="stream")
    elif asked:
        stream = True
    v = PARAMETERS.read(params, prefix=PREFIX)
    if v["adapter_id"] is not None:
        raise InvalidRequest(f"{PREFIX}adapter_id: LoRA adapters are not supported", field=f"{PREFIX}adapter_id")
    best_of, seed, repetition = v["best_of"], v["seed"], v["repetition_penalty"]
    sampling = (
        v["do_sample"]
        or any(v[key] is not None for key in ("top_k", "top_p", "typical_p"))
        or v["temperature"] not in (None, 1.0)
    )
    decoder_input_details = v["decoder_input_details"]
    if best_of > 1:
        if not sampling:
            raise InvalidRequest(
                f"{PREFIX}best_of > 1 needs sampling: set do_sample, temperature, top_k, top_p or typical_p",
                field=f"{PREFIX}best_of",
            )
        if seed is not None:
            raise InvalidRequest(f"{PREFIX}seed must not be set when best_of > 1", field=f"{PREFIX}seed")
        if stream:
            raise InvalidRequest(f"{PREFIX}best_of > 1 cannot be used with streaming", field=f"{PREFIX}best_of")
    if decoder_input_details and stream:
        raise InvalidRequest(
            f"{PREFIX}decoder_input_details cannot be used with streaming", field=f"{PREFIX}decoder_input_details"
        )
    fmt, grammar = _grammar(v["grammar"])
    options = as_options(
        v,
        PARAMETERS,
        temperature=(v["temperature"] or 1.0) if sampling else 0.0,
        top_k=v["top_k"] or 0,
        top_p=v["top_p"] or 1.0,
        typical_p=v["typical_p"] or 1.0,
        min_p=0.0,
        repeat_penalty=repetition or 1.0,
        repeat_last_n=-1 if repetition else None,  # TGI penalises over the whole text
        presence_penalty=0.0,
        stop=v["stop"] or None,
        seed=seed if seed is not None or not sampling else secrets.randbelow(2**32),
    )
    return TGIRequest(
        model=choose_model(body, service),
        inputs=inputs,
        options=options,
        constraints=Constraints(format=fmt, grammar=grammar, logprobs=v["top_n_tokens"]),
        stream=stream,
        details=v["details"] or decoder_input_details,
        decoder_input_details=decoder_input_details,
        return_full_text=v["return_full_text"],
        best_of=best_of,
        top_n=v["top_n_tokens"],
        sampling=sampling,
        truncate=v["truncate"],
    )
