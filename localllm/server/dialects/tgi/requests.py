"""Translate TGI request bodies (`wire.TGIGenerateRequest`: `{"inputs", "parameters"}`) onto a generation: pure
functions; what the model cannot say is an `InvalidRequest` naming the field as `parameters.<name>` (a 422 in
TGI's shape).

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
from ....domain.options import Constraints, Options, check_range, parse_stop
from ....service.core import Service
from ...wire import as_model
from ..shared import choose_model
from . import wire
from .regex_grammar import UnsupportedRegex, regex_to_gbnf

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


def _grammar(raw: wire.Grammar | None) -> tuple[Any, str | None]:
    """TGI's `grammar` as (format, GBNF): a JSON schema for `json`/`json_schema`, a grammar for `regex`."""
    if raw is None:
        return None, None
    if isinstance(raw, wire.TGIJsonGrammar):
        value: Any = _json_value(raw.value) if isinstance(raw.value, str) else raw.value
        if not isinstance(value, dict):
            raise InvalidRequest(f"{PREFIX}grammar.value must be a JSON schema object", field=f"{PREFIX}grammar.value")
        return value or "json", None
    if isinstance(raw, wire.TGIJsonSchemaGrammar):
        return raw.value.schema or "json", None
    if not raw.value:
        raise InvalidRequest(
            f"{PREFIX}grammar.value must be a non-empty regular expression", field=f"{PREFIX}grammar.value"
        )
    limits.check_regex(raw.value, f"{PREFIX}grammar.value")
    try:
        return None, regex_to_gbnf(raw.value)
    except UnsupportedRegex as exc:
        raise InvalidRequest(
            f"{PREFIX}grammar.value: this regular expression cannot be enforced: {exc}",
            field=f"{PREFIX}grammar.value",
        ) from None


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidRequest(f"{PREFIX}grammar.value is not valid JSON", field=f"{PREFIX}grammar.value") from None


def parse(raw: wire.TGIGenerateRequest | dict[str, Any], service: Service, *, stream: bool | None) -> TGIRequest:
    """Translate a TGI request body; `stream` is the endpoint's (None: the body's `stream`, as on `POST /`)."""
    body = as_model(raw, wire.TGIGenerateRequest)
    if not body.inputs:
        raise InvalidRequest("inputs must not be empty", field="inputs")
    p = body.parameters or wire.TGIParameters()
    asked = body.stream
    if stream is None:
        stream = bool(asked)
    elif stream and asked is False:
        raise InvalidRequest("stream cannot be false on /generate_stream", field="stream")
    elif asked:
        stream = True
    if p.adapter_id is not None:
        raise InvalidRequest(f"{PREFIX}adapter_id: LoRA adapters are not supported", field=f"{PREFIX}adapter_id")
    best_of = p.best_of or 1
    seed, repetition = p.seed, p.repetition_penalty
    if seed is not None:
        check_range(seed, f"{PREFIX}seed", 0, wire.MAX_SEED)
    sampling = (
        bool(p.do_sample)
        or any(v is not None for v in (p.top_k, p.top_p, p.typical_p))
        or p.temperature not in (None, 1.0)
    )
    decoder_input_details = bool(p.decoder_input_details)
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
    fmt, grammar = _grammar(p.grammar)
    top_n = p.top_n_tokens or 0
    options = Options(
        temperature=(p.temperature or 1.0) if sampling else 0.0,
        top_k=p.top_k or 0,
        top_p=p.top_p or 1.0,
        typical_p=p.typical_p or 1.0,
        min_p=0.0,
        repeat_penalty=repetition or 1.0,
        repeat_last_n=-1 if repetition else None,  # TGI penalises over the whole text
        presence_penalty=0.0,
        frequency_penalty=p.frequency_penalty or 0.0,
        num_predict=p.max_new_tokens or wire.DEFAULT_MAX_NEW_TOKENS,
        stop=parse_stop(p.stop, f"{PREFIX}stop") or None if p.stop is not None else None,
        seed=seed if seed is not None or not sampling else secrets.randbelow(2**32),
    )
    return TGIRequest(
        model=choose_model({"model": body.model}, service),
        inputs=body.inputs,
        options=options,
        constraints=Constraints(format=fmt, grammar=grammar, logprobs=top_n),
        stream=stream,
        details=(p.details is not False) or decoder_input_details,
        decoder_input_details=decoder_input_details,
        return_full_text=bool(p.return_full_text),
        best_of=best_of,
        top_n=top_n,
        sampling=sampling,
        truncate=p.truncate,
    )
