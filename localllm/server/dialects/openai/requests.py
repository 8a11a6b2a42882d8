"""Translate OpenAI's wire models (`wire.py`) onto the service's requests: pure functions; what the models
cannot say (cross-field rules, JSON in strings, tool names) is a 400 naming the field here.

Besides OpenAI's own fields, the sampling extras that llama.cpp's server and vLLM accept at the top level
(`top_k`, `min_p`, `repeat_penalty`/`repetition_penalty`, `typical_p`, `ignore_eos`, `grammar`) and
Ollama's `options` object (with `num_ctx`) are honoured. Fields that do not apply to a local server
(`user`, `store`, `metadata`, `service_tier`, `parallel_tool_calls`, ...) are accepted and ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import msgspec

from ....chat.thinking import effort
from ....chat.tools import ToolChoice, call_schema, new_call_id, parse_tool_choice, parse_tools
from ....domain import mediacheck, parts
from ....domain.errors import InvalidRequest
from ....domain.limits import MAX_CHOICES
from ....domain.media import Media
from ....domain.messages import ChatMessage, Tool, ToolCall
from ....domain.names import parse_name
from ....domain.options import Constraints, Options, parse_stop
from ....service.generation import ChatRequest, GenerateRequest
from ...wire import as_model, read_options
from . import wire


@dataclass(frozen=True)
class Shape:
    """How the answer is framed: how many choices, streamed or not, with a usage chunk or not."""

    n: int = 1
    stream: bool = False
    include_usage: bool = False
    echo: bool = False  # /v1/completions: the prompt comes back before the completion
    best_of: int = 1  # /v1/completions: candidates generated per prompt, the n most likely returned
    logprobs: bool = True  # whether log-probabilities asked for are returned (not when only best_of needed them)


def _messages(body: wire.ChatCompletionRequest) -> tuple[ChatMessage, ...]:
    out = []
    for i, item in enumerate(body.messages):
        label = f"messages[{i}]"
        role = "system" if item.role == "developer" else item.role
        calls = _tool_calls(item.tool_calls, f"{label}.tool_calls") if role == "assistant" else ()
        call_id = None
        if role == "tool":
            if item.tool_call_id is None:
                raise InvalidRequest(f"{label}.tool_call_id is required", field=f"{label}.tool_call_id")
            call_id = item.tool_call_id
        thought = item.reasoning_content or "" if role == "assistant" else ""
        text, media = content(item.content, f"{label}.content")
        out.append(ChatMessage(role, text, calls, call_id, thought, media))
    return tuple(out)


def content(raw: wire.Content, label: str) -> tuple[str, tuple[Media, ...]]:
    """A message's content: a string, or parts (text, `image_url`, `input_audio`) joined by `domain.parts`."""
    if raw is None:
        return "", ()
    if isinstance(raw, str):
        return parts.text_part(raw, label), ()
    out: list[parts.Part] = []
    for i, part in enumerate(raw):
        where = f"{label}[{i}]"
        if isinstance(part, wire.TextPart):
            out.append(parts.text_part(part.text, f"{where}.text"))
        elif isinstance(part, wire.ImagePart):
            url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
            out.append(mediacheck.from_url(url, where))
        else:
            data = mediacheck.decode_base64(part.input_audio.data, where, kind="audio")
            out.append(Media("audio", data, where))
    return parts.join(out)


def _tool_calls(raw: list[wire.ToolCall] | None, label: str) -> tuple[ToolCall, ...]:
    """An assistant message's earlier calls; OpenAI sends their arguments as a JSON string."""
    calls = []
    for i, item in enumerate(raw or ()):
        arguments: Any = item.function.arguments
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except (ValueError, RecursionError):
                arguments = None
        if not isinstance(arguments, dict):
            raise InvalidRequest(
                f"{label}[{i}].function.arguments must be a JSON object (as a string)",
                field=f"{label}[{i}].function.arguments",
            )
        calls.append(ToolCall(item.id if item.id is not None else new_call_id(), item.function.name, arguments))
    return tuple(calls)


def sampling_options(body: wire.Sampling, *, default_max_tokens: int | None = None) -> Options:
    """The sampling fields, over Ollama's `options` when given, over OpenAI's defaults (temperature 1, top_p 1)."""
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    repeat = body.repeat_penalty if body.repeat_penalty is not None else body.repetition_penalty
    top_k = body.top_k
    top = Options(
        temperature=body.temperature,
        top_p=body.top_p,
        min_p=body.min_p,
        typical_p=body.typical_p,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        mirostat=body.mirostat,
        mirostat_tau=body.mirostat_tau,
        mirostat_eta=body.mirostat_eta,
        seed=body.seed,
        stop=parse_stop(body.stop, "stop") if body.stop is not None else None,
        top_k=None if top_k is None or top_k < 0 else top_k,
        repeat_penalty=repeat,
        num_predict=max_tokens if max_tokens is not None else default_max_tokens,
    )
    base = read_options(body.options).merged_over(Options(temperature=1.0, top_p=1.0))
    return top.merged_over(base)


def _format(body: wire.Sampling, response_format: wire.ResponseFormat | None = None) -> Any:
    """The constraint on the output's shape: OpenAI's `response_format`, or llama-server's top-level
    `json_schema` (never both: which one would win is no answer to give)."""
    if body.json_schema is not None:
        if response_format is not None and not isinstance(response_format, wire.TextFormat):
            raise InvalidRequest(
                "json_schema and response_format cannot both constrain the output", field="json_schema"
            )
        return body.json_schema or "json"
    if isinstance(response_format, wire.JsonObjectFormat):
        return response_format.schema or "json"
    if isinstance(response_format, wire.JsonSchemaFormat):
        return response_format.json_schema.schema
    if isinstance(response_format, wire.JsonValueFormat):
        return response_format.value
    return None


def constraints(body: wire.Sampling, *, logprobs: int | None = None, fmt: Any = None) -> Constraints:
    return Constraints(
        format=fmt,
        grammar=body.grammar,
        logprobs=logprobs,
        logit_bias=_logit_bias(body.logit_bias),
        ignore_eos=body.ignore_eos,
        min_tokens=body.min_tokens,
    )


def _logit_bias(raw: dict[str, float]) -> tuple[tuple[int, float], ...]:
    out = []
    for key, value in raw.items():
        try:
            token = int(key)
        except ValueError:
            raise InvalidRequest(f"logit_bias.{key}: keys must be token ids", field="logit_bias") from None
        out.append((token, value))
    return tuple(out)


def shape(body: wire.Sampling) -> Shape:
    include_usage = body.stream and body.stream_options is not None and body.stream_options.include_usage
    return Shape(n=body.n, stream=body.stream, include_usage=include_usage)


def _tools(body: wire.ChatCompletionRequest) -> tuple[tuple[Tool, ...], ToolChoice]:
    """`tools` and `tool_choice`, or the legacy `functions` and `function_call` the SDKs still accept."""
    if body.tools is None and body.functions is not None:
        declared = [{"type": "function", "function": msgspec.to_builtins(f)} for f in body.functions]
        tools = parse_tools(declared, field="functions")
        legacy: Any = body.function_call
        if isinstance(legacy, wire.NamedFunction):
            legacy = {"type": "function", "function": {"name": legacy.name}}
        return tools, parse_tool_choice(legacy, tools, field="function_call")
    tools = parse_tools(msgspec.to_builtins(body.tools))
    choice: Any = body.tool_choice
    if isinstance(choice, wire.NamedTool):
        choice = {"type": "function", "function": {"name": choice.function.name}}
    return tools, parse_tool_choice(choice, tools)


def _model(value: str | None) -> Any:
    if not value:
        raise InvalidRequest("model is required", field="model")
    return parse_name(value, field="model")


def to_chat_request(raw: wire.ChatCompletionRequest | dict[str, Any]) -> tuple[ChatRequest, Shape]:
    """Translate a chat completion request."""
    body = as_model(raw, wire.ChatCompletionRequest)
    name = _model(body.model)
    tools, choice = _tools(body)
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs set to true", field="top_logprobs")
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    limits = constraints(body, logprobs=logprobs, fmt=_format(body, body.response_format))
    schema = call_schema(tools, choice)
    if schema is not None:
        if limits.format is not None or limits.grammar:
            raise InvalidRequest("a required tool call cannot be combined with response_format", field="tool_choice")
        limits = replace(limits, format=schema)
    offered = tools if choice.mode != "none" else ()
    budgets = (body.reasoning_budget_tokens, body.thinking_budget_tokens, body.thinking_token_budget)
    request = ChatRequest(
        model=name,
        messages=_messages(body),
        options=sampling_options(body),
        constraints=limits,
        tools=offered,
        call_required=schema is not None,
        think=effort(body.reasoning_effort, "reasoning_effort"),
        think_field="reasoning_effort",
        think_budget=next((b for b in budgets if b is not None and b >= 0), None),
    )
    return request, shape(body)


def to_completion_request(raw: wire.CompletionRequest | dict[str, Any]) -> tuple[list[GenerateRequest], Shape]:
    """Translate a legacy completion request: one generation per prompt, each used as given (no template)."""
    body = as_model(raw, wire.CompletionRequest)
    name = _model(body.model)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    framing = shape(body)
    best_of = body.best_of or framing.n
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
    limits = constraints(body, logprobs=body.logprobs, fmt=_format(body))
    if body.echo and limits.logprobs is not None:
        raise InvalidRequest(
            "echo with logprobs is not supported: prompt tokens have no log-probabilities here", field="echo"
        )
    if best_of > framing.n and limits.logprobs is None:
        limits = replace(limits, logprobs=0)  # to rank the candidates; dropped from the answer
    requests = [
        GenerateRequest(model=name, prompt=p, raw=True, options=options, constraints=limits, suffix=body.suffix or None)
        for p in prompts
    ]
    return requests, replace(framing, echo=body.echo, best_of=best_of, logprobs=body.logprobs is not None)
