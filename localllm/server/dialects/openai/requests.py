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

from ....chat.thinking import effort
from ....chat.tools import ToolChoice, call_schema, new_call_id, parse_tool_choice, parse_tools
from ....domain.errors import InvalidRequest
from ....domain.limits import MAX_CHOICES
from ....domain.types import ROLES, ChatMessage, Constraints, Options, Tool, ToolCall, parse_options
from ....service.generation import ChatRequest, GenerateRequest
from ... import requests as rq
from ...fields import STOP, Field, Fields, as_options
from ..shared import block_text


@dataclass(frozen=True)
class Shape:
    """How the answer is framed: how many choices, streamed or not, with a usage chunk or not."""

    n: int = 1
    stream: bool = False
    include_usage: bool = False
    echo: bool = False  # /v1/completions: the prompt comes back before the completion
    best_of: int = 1  # /v1/completions: candidates generated per prompt, the n most likely returned
    logprobs: bool = True  # whether log-probabilities asked for are returned (not when only best_of needed them)


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
        thought = rq.field(item, "reasoning_content", str, "", prefix=f"{label}.") if role == "assistant" else ""
        raw_content = "" if item.get("content") is None else item["content"]
        content = block_text(raw_content, f"{label}.content", noun="text part")
        out.append(ChatMessage(role, content, calls, call_id, thought or ""))
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


# The fields both endpoints take: OpenAI's sampling fields and the llama.cpp/vLLM extras (`top_k`, `min_p`,
# `repeat_penalty`/`repetition_penalty`, `typical_p`, `mirostat*`, `min_tokens`, `ignore_eos`, `grammar`).
FIELDS = Fields(
    Field("max_tokens", int, low=1),
    Field("max_completion_tokens", int, low=1),
    Field("n", int, low=1, high=128, default=1),
    Field("temperature", float, low=0, high=2, option="temperature"),
    Field("top_p", float, low=0, high=1, option="top_p"),
    Field("top_k", int, low=-1, high=1 << 20),
    Field("min_p", float, low=0, high=1, option="min_p"),
    Field("typical_p", float, low=0, high=1, option="typical_p"),
    Field("repeat_penalty", float, low=0, high=10),
    Field("repetition_penalty", float, low=0, high=10),
    Field("presence_penalty", float, low=-2, high=2, option="presence_penalty"),
    Field("frequency_penalty", float, low=-2, high=2, option="frequency_penalty"),
    Field("mirostat", int, low=0, high=2, option="mirostat"),
    Field("mirostat_tau", float, low=0, high=100, option="mirostat_tau"),
    Field("mirostat_eta", float, low=0, high=10, option="mirostat_eta"),
    Field("min_tokens", int, low=0, high=1 << 20, default=0),
    Field("seed", int, option="seed"),
    Field("stop", STOP, option="stop"),
    Field("logit_bias", dict, default={}),
    Field("grammar", str),
    Field("ignore_eos", bool, default=False),
)
TOP_LOGPROBS = Field("top_logprobs", int, low=0, high=20)  # chat
LEGACY_LOGPROBS = Field("logprobs", int, low=0, high=5)  # text completions
BEST_OF = Field("best_of", int, low=1, high=20)  # text completions
# A thinking budget in tokens (chat), under llama-server's names and vLLM's; -1 (or none): no budget.
THINKING_BUDGETS = Fields(
    Field("reasoning_budget_tokens", int, low=-1),
    Field("thinking_budget_tokens", int, low=-1),
    Field("thinking_token_budget", int, low=-1),
)


def sampling_options(body: dict[str, Any], *, default_max_tokens: int | None = None) -> Options:
    """The sampling `FIELDS`, over Ollama's `options` when given, over OpenAI's defaults (temperature 1, top_p 1)."""
    v = FIELDS.read(body)
    max_tokens = v["max_completion_tokens"] if v["max_completion_tokens"] is not None else v["max_tokens"]
    repeat = v["repeat_penalty"] if v["repeat_penalty"] is not None else v["repetition_penalty"]
    top_k = v["top_k"]
    top = as_options(
        v,
        FIELDS,
        top_k=None if top_k is None or top_k < 0 else top_k,
        repeat_penalty=repeat,
        num_predict=max_tokens if max_tokens is not None else default_max_tokens,
    )
    base = parse_options(body.get("options")).merged_over(Options(temperature=1.0, top_p=1.0))
    return top.merged_over(base)


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
        logprobs = LEGACY_LOGPROBS.read(body)
    else:
        top = TOP_LOGPROBS.read(body)
        if top is not None and not body.get("logprobs"):
            raise InvalidRequest("top_logprobs needs logprobs set to true", field="top_logprobs")
        logprobs = (top or 0) if rq.field(body, "logprobs", bool, False) else None
    return Constraints(
        format=fmt,
        grammar=FIELDS["grammar"].read(body),
        logprobs=logprobs,
        logit_bias=_logit_bias(body),
        ignore_eos=FIELDS["ignore_eos"].read(body),
        min_tokens=FIELDS["min_tokens"].read(body),
    )


def _logit_bias(body: dict[str, Any]) -> tuple[tuple[int, float], ...]:
    raw = FIELDS["logit_bias"].read(body)
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
    n = FIELDS["n"].read(body)
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
        model=name,
        messages=_messages(body),
        options=sampling_options(body),
        constraints=limits,
        tools=offered,
        call_required=schema is not None,
        think=effort(body.get("reasoning_effort"), "reasoning_effort"),
        think_field="reasoning_effort",
        think_budget=next((b for b in THINKING_BUDGETS.read(body).values() if b is not None and b >= 0), None),
    )
    return request, shape(body)


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
    best_of = BEST_OF.read(body) or framing.n
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
