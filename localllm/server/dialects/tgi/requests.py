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

from ....errors import InvalidRequest
from ....names import ModelName
from ....service import Service
from ....types import Constraints, Options
from ... import requests as rq
from ..shared import check_fields, choose_model, flag, number, stop_strings
from .regex_grammar import UnsupportedRegex, regex_to_gbnf

MAX_BEST_OF = 4
MAX_STOP_SEQUENCES = 4
MAX_TOP_N_TOKENS = 5
DEFAULT_MAX_NEW_TOKENS = 1024
PARAMETERS = (
    "adapter_id",
    "best_of",
    "decoder_input_details",
    "details",
    "do_sample",
    "frequency_penalty",
    "grammar",
    "max_new_tokens",
    "repetition_penalty",
    "return_full_text",
    "seed",
    "stop",
    "temperature",
    "top_k",
    "top_n_tokens",
    "top_p",
    "truncate",
    "typical_p",
    "watermark",  # accepted and ignored: no watermarking here
)
PREFIX = "parameters."


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
    check_fields(body, ("inputs", "parameters", "stream", "model"))
    inputs = rq.field(body, "inputs", str, required=True)
    if not inputs:
        raise InvalidRequest("inputs must not be empty", field="inputs")
    params = rq.field(body, "parameters", dict, {})
    check_fields(params, PARAMETERS, prefix=PREFIX)
    asked = rq.field(body, "stream", bool)
    if stream is None:
        stream = bool(asked)
    elif stream and asked is False:
        raise InvalidRequest("stream cannot be false on /generate_stream", field="stream")
    elif asked:
        stream = True
    if params.get("adapter_id") is not None:
        raise InvalidRequest(f"{PREFIX}adapter_id: LoRA adapters are not supported", field=f"{PREFIX}adapter_id")
    best_of = number(params, "best_of", integer=True, low=1, high=MAX_BEST_OF, prefix=PREFIX) or 1
    temperature = number(params, "temperature", low=0, open_low=True, prefix=PREFIX)
    top_k = number(params, "top_k", integer=True, low=0, open_low=True, prefix=PREFIX)
    top_p = number(params, "top_p", low=0, high=1, open_low=True, open_high=True, prefix=PREFIX)
    typical_p = number(params, "typical_p", low=0, high=1, open_low=True, open_high=True, prefix=PREFIX)
    seed = number(params, "seed", integer=True, low=0, high=2**64 - 1, prefix=PREFIX)
    repetition = number(params, "repetition_penalty", low=0, open_low=True, prefix=PREFIX)
    sampling = (
        flag(params, "do_sample", prefix=PREFIX)
        or any(v is not None for v in (top_k, top_p, typical_p))
        or temperature not in (None, 1.0)
    )
    decoder_input_details = flag(params, "decoder_input_details", prefix=PREFIX)
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
    flag(params, "watermark", prefix=PREFIX)  # checked, then ignored
    fmt, grammar = _grammar(params.get("grammar"))
    top_n = number(params, "top_n_tokens", integer=True, low=0, high=MAX_TOP_N_TOKENS, prefix=PREFIX) or 0
    stop = stop_strings(params, "stop", prefix=PREFIX, limit=MAX_STOP_SEQUENCES)
    options = Options(
        temperature=(temperature or 1.0) if sampling else 0.0,
        top_k=top_k or 0,
        top_p=top_p or 1.0,
        typical_p=typical_p or 1.0,
        min_p=0.0,
        repeat_penalty=repetition or 1.0,
        repeat_last_n=-1 if repetition else None,  # TGI penalises over the whole text
        frequency_penalty=number(params, "frequency_penalty", low=-2, high=2, prefix=PREFIX) or 0.0,
        presence_penalty=0.0,
        num_predict=number(params, "max_new_tokens", integer=True, low=1, prefix=PREFIX) or DEFAULT_MAX_NEW_TOKENS,
        stop=stop or None,
        seed=seed if seed is not None or not sampling else secrets.randbelow(2**32),
    )
    return TGIRequest(
        model=choose_model(body, service),
        inputs=inputs,
        options=options,
        constraints=Constraints(format=fmt, grammar=grammar, logprobs=top_n),
        stream=stream,
        details=flag(params, "details", True, prefix=PREFIX) or decoder_input_details,
        decoder_input_details=decoder_input_details,
        return_full_text=flag(params, "return_full_text", prefix=PREFIX),
        best_of=best_of,
        top_n=top_n,
        sampling=sampling,
        truncate=number(params, "truncate", integer=True, low=0, open_low=True, prefix=PREFIX),
    )
