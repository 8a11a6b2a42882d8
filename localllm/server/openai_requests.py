"""Translate OpenAI request bodies onto the service's requests: pure functions, each bad field a 400 naming it.

Besides OpenAI's own fields, the sampling extras that llama.cpp's server and vLLM accept at the top level
(`top_k`, `min_p`, `repeat_penalty`/`repetition_penalty`, `typical_p`, `ignore_eos`, `grammar`) and
Ollama's `options` object (with `num_ctx`) are honoured. Fields that do not apply to a local server
(`user`, `store`, `metadata`, `service_tier`, `parallel_tool_calls`, ...) are accepted and ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from ..errors import InvalidRequest
from ..limits import MAX_CHOICES
from ..service import ChatRequest, GenerateRequest
from ..tools import ToolChoice, call_schema, new_call_id, parse_tool_choice, parse_tools
from ..types import ROLES, ChatMessage, Constraints, Options, Tool, ToolCall, parse_options
from . import requests as rq


@dataclass(frozen=True)
class Shape:
    """How the answer is framed: how many choices, streamed or not, with a usage chunk or not."""

    n: int = 1
    stream: bool = False
    include_usage: bool = False
    tools: tuple[Tool, ...] = ()  # calls to look for in the output (none when tool_choice is "none")
    forced: bool = False  # the output is constrained to a call
    echo: bool = False  # /v1/completions: the prompt comes back before the completion
    best_of: int = 1  # /v1/completions: candidates generated per prompt, the n most likely returned
    logprobs: bool = True  # whether log-probabilities asked for are returned (not when only best_of needed them)


def _content(value: Any, label: str) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequest(
                    f"{label}[{i}] must be a text part ({{'type': 'text', 'text': ...}})", field=f"{label}[{i}]"
                )
            texts.append(part["text"])
        return "".join(texts)
    raise InvalidRequest(f"{label} must be a string or a list of content parts", field=label)


def _messages(body: dict[str, Any]) -> tuple[ChatMessage, ...]:
    raw = rq.field(body, "messages", list, required=True)
    if not raw:
        raise InvalidRequest("messages must hold at least one message", field="messages")
    out = []
    for i, item in enumerate(raw):
        label = f"messages[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{label} must be an object", field=label)
        role = rq.field(item, "role", str, required=True, prefix=f"{label}.")
        role = "system" if role == "developer" else role
        if role not in ROLES:
            raise InvalidRequest(
                f"{label}.role must be one of system, developer, user, assistant, tool", field=f"{label}.role"
            )
        calls = _tool_calls(item.get("tool_calls"), f"{label}.tool_calls") if role == "assistant" else ()
        call_id = None
        if role == "tool":
            call_id = rq.field(item, "tool_call_id", str, required=True, prefix=f"{label}.")
        out.append(ChatMessage(role, _content(item.get("content"), f"{label}.content"), calls, call_id))
    return tuple(out)


def _tool_calls(raw: Any, label: str) -> tuple[ToolCall, ...]:
    """An assistant message's earlier calls; OpenAI sends their arguments as a JSON string."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidRequest(f"{label} must be a list", field=label)
    calls = []
    for i, item in enumerate(raw):
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest(f"{label}[{i}].function.name must be a string", field=f"{label}[{i}].function")
        arguments = function.get("arguments", "{}")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except ValueError:
                arguments = None
        if not isinstance(arguments, dict):
            raise InvalidRequest(
                f"{label}[{i}].function.arguments must be a JSON object (as a string)",
                field=f"{label}[{i}].function.arguments",
            )
        call_id = item.get("id")
        calls.append(ToolCall(call_id if isinstance(call_id, str) else new_call_id(), function["name"], arguments))
    return tuple(calls)


def _ranged(body: dict[str, Any], key: str, kind: type, low: float, high: float) -> Any:
    value = rq.field(body, key, kind)
    if value is not None and not low <= value <= high:
        raise InvalidRequest(f"{key} must be between {low} and {high}, got {value}", field=key)
    return value


def _stop(body: dict[str, Any]) -> tuple[str, ...] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(stop)
    raise InvalidRequest("stop must be a string or a list of strings", field="stop")


def sampling_options(body: dict[str, Any], *, default_max_tokens: int | None = None) -> Options:
    """OpenAI's sampling fields and the llama.cpp/vLLM extras, over Ollama's `options` when given."""
    max_tokens = rq.field(body, "max_completion_tokens", int)
    if max_tokens is None:
        max_tokens = rq.field(body, "max_tokens", int, default_max_tokens)
    if max_tokens is not None and max_tokens < 1:
        key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        raise InvalidRequest(f"{key} must be at least 1", field=key)
    repeat = _ranged(body, "repeat_penalty", float, 0, 10)
    if repeat is None:
        repeat = _ranged(body, "repetition_penalty", float, 0, 10)
    seed = rq.field(body, "seed", int)
    top_k = _ranged(body, "top_k", int, -1, 1 << 20)
    top = Options(
        temperature=_float(_ranged(body, "temperature", float, 0, 2)),
        top_p=_float(_ranged(body, "top_p", float, 0, 1)),
        top_k=None if top_k is None or top_k < 0 else top_k,
        min_p=_float(_ranged(body, "min_p", float, 0, 1)),
        typical_p=_float(_ranged(body, "typical_p", float, 0, 1)),
        repeat_penalty=_float(repeat),
        num_predict=max_tokens,
        stop=_stop(body),
        seed=seed,
        presence_penalty=_float(_ranged(body, "presence_penalty", float, -2, 2)),
        frequency_penalty=_float(_ranged(body, "frequency_penalty", float, -2, 2)),
        mirostat=_ranged(body, "mirostat", int, 0, 2),
        mirostat_tau=_float(_ranged(body, "mirostat_tau", float, 0, 100)),
        mirostat_eta=_float(_ranged(body, "mirostat_eta", float, 0, 10)),
    )
    # OpenAI's defaults (temperature 1, top_p 1) apply when neither the request nor `options` sets them.
    base = parse_options(body.get("options")).merged_over(Options(temperature=1.0, top_p=1.0))
    return top.merged_over(base)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def constraints(body: dict[str, Any], *, legacy_logprobs: bool = False) -> Constraints:
    fmt: Any = None
    response_format = body.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind == "json_object":
            fmt = "json"
        elif kind == "json_schema":
            spec = response_format.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if not isinstance(schema, dict):
                raise InvalidRequest(
                    "response_format.json_schema.schema must be a JSON schema object",
                    field="response_format.json_schema.schema",
                )
            fmt = schema
        elif kind != "text":
            raise InvalidRequest(
                "response_format.type must be text, json_object or json_schema", field="response_format.type"
            )
    if legacy_logprobs:
        logprobs = _ranged(body, "logprobs", int, 0, 5)
    else:
        top = _ranged(body, "top_logprobs", int, 0, 20)
        if top is not None and not body.get("logprobs"):
            raise InvalidRequest("top_logprobs needs logprobs set to true", field="top_logprobs")
        logprobs = (top or 0) if rq.field(body, "logprobs", bool, False) else None
    return Constraints(
        format=fmt,
        grammar=rq.field(body, "grammar", str),
        logprobs=logprobs,
        logit_bias=_logit_bias(body),
        ignore_eos=rq.field(body, "ignore_eos", bool, False),
        min_tokens=_ranged(body, "min_tokens", int, 0, 1 << 20) or 0,
    )


def _logit_bias(body: dict[str, Any]) -> tuple[tuple[int, float], ...]:
    raw = rq.field(body, "logit_bias", dict, {})
    out = []
    for key, value in raw.items():
        label = f"logit_bias.{key}"
        try:
            token = int(key)
        except ValueError:
            raise InvalidRequest(f"{label}: keys must be token ids", field="logit_bias") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -100 <= value <= 100:
            raise InvalidRequest(f"{label} must be a number between -100 and 100", field="logit_bias")
        out.append((token, float(value)))
    return tuple(out)


def shape(body: dict[str, Any]) -> Shape:
    n = _ranged(body, "n", int, 1, 128) or 1
    stream = rq.field(body, "stream", bool, False)
    include_usage = False
    if stream:
        options = rq.field(body, "stream_options", dict, {})
        include_usage = bool(rq.field(options, "include_usage", bool, False, prefix="stream_options."))
    return Shape(n=n, stream=stream, include_usage=include_usage)


def _tools(body: dict[str, Any]) -> tuple[tuple[Tool, ...], ToolChoice]:
    """`tools` and `tool_choice`, or the legacy `functions` and `function_call` the SDKs still accept."""
    if body.get("tools") is None and body.get("functions") is not None:
        if not isinstance(body["functions"], list):
            raise InvalidRequest("functions must be a list of functions", field="functions")
        tools = parse_tools([{"type": "function", "function": f} for f in body["functions"]], field="functions")
        legacy = body.get("function_call")
        if isinstance(legacy, dict):
            legacy = {"type": "function", "function": legacy}
        return tools, parse_tool_choice(legacy, tools, field="function_call")
    tools = parse_tools(body.get("tools"))
    return tools, parse_tool_choice(body.get("tool_choice"), tools)


def to_chat_request(body: dict[str, Any]) -> tuple[ChatRequest, Shape]:
    """Translate a chat completion request."""
    name = rq.model_name(body)
    tools, choice = _tools(body)
    limits = constraints(body)
    schema = call_schema(tools, choice)
    if schema is not None:
        if limits.format is not None or limits.grammar:
            raise InvalidRequest("a required tool call cannot be combined with response_format", field="tool_choice")
        limits = replace(limits, format=schema)
    offered = tools if choice.mode != "none" else ()
    request = ChatRequest(
        model=name, messages=_messages(body), options=sampling_options(body), constraints=limits, tools=offered
    )
    return request, replace(shape(body), tools=offered, forced=schema is not None)


def to_completion_request(body: dict[str, Any]) -> tuple[list[GenerateRequest], Shape]:
    """Translate a legacy completion request: one generation per prompt, each used as given (no template)."""
    name = rq.model_name(body)
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise InvalidRequest("prompt must be a string or a list of strings", field="prompt")
    suffix = rq.field(body, "suffix", str)
    echo = rq.field(body, "echo", bool, False)
    framing = shape(body)
    best_of = _ranged(body, "best_of", int, 1, 20) or framing.n
    if best_of < framing.n:
        raise InvalidRequest(f"best_of ({best_of}) must be at least n ({framing.n})", field="best_of")
    if best_of > framing.n and framing.stream:
        raise InvalidRequest(
            "best_of cannot be used with stream: the best choices are known only at the end", field="best_of"
        )
    if len(prompts) * best_of > MAX_CHOICES:
        raise InvalidRequest(
            f"{len(prompts)} prompts × best_of/n {best_of} is more than the {MAX_CHOICES} generations allowed",
            field="prompt",
        )
    options = sampling_options(body, default_max_tokens=16)
    limits = constraints(body, legacy_logprobs=True)
    if echo and limits.logprobs is not None:
        raise InvalidRequest(
            "echo with logprobs is not supported: prompt tokens have no log-probabilities here", field="echo"
        )
    if best_of > framing.n and limits.logprobs is None:
        limits = replace(limits, logprobs=0)  # to rank the candidates; dropped from the answer
    requests = [
        GenerateRequest(model=name, prompt=p, raw=True, options=options, constraints=limits, suffix=suffix or None)
        for p in prompts
    ]
    return requests, replace(framing, echo=echo, best_of=best_of, logprobs=body.get("logprobs") is not None)
