"""Anthropic's Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`), as the `anthropic` package
and Claude Code speak it, over the same chat service as every other dialect.

Requests: `system` (a string or text blocks), `messages` (a string or blocks: `text`, `tool_use`,
`tool_result`, `thinking`), custom `tools`, `tool_choice` (`auto`, `any`, `tool`, `none`: the forced ones
constrain the output by the tools' schemas, as `/v1/chat/completions` does), `stop_sequences`, `temperature`,
`top_p`, `top_k`, `thinking`, `metadata`, `stream`. `thinking` blocks of earlier assistant turns are dropped
from the prompt, as Anthropic does; `image` and `document` blocks and server tools are refused.

Answers: a `message` object, or SSE with an `event:` line on every event (`message_start`, `content_block_*`,
`message_delta`, `message_stop`, and `ping` while the first token is awaited, e.g. during a model load).
Errors: `{"type": "error", "error": {"type", "message"}}`, a busy server's 503 as Anthropic's 529.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...errors import InvalidRequest
from ...service import Answer, ChatRequest
from ...tools import ToolChoice, call_schema, tool_name
from ...types import ChatMessage, Constraints, Done, Event, Options, Thinking, Token, Tool, ToolCall, ToolCalls
from .. import requests as rq
from ..errors import ErrorShape, guarded, message_of, status_of
from ..fields import STOP, Field, Fields, as_options
from ..schema import ANY_LIST, INT, OBJ, SSE, STR, Schema, body, json_content, obj
from ..streaming import EventStream, until_disconnect
from .contract import Dialect
from .shared import collect_all, service_of

PING_AFTER = 1.0  # seconds without a first event before the stream opens and pings (a model loading)
PING_EVERY = 5.0
OVERLOADED = 529  # Anthropic's status for a busy server (our 503)

# -- errors ----------------------------------------------------------------------------------------------

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    OVERLOADED: "overloaded_error",
}


def anthropic_status(exc: BaseException) -> int:
    status = status_of(exc)
    return OVERLOADED if status == 503 else 400 if status == 422 else status


def anthropic_error(exc: BaseException) -> dict[str, Any]:
    status = anthropic_status(exc)
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message_of(exc)}}


ERRORS = ErrorShape(anthropic_error, anthropic_status)

# -- requests: the fields, declared once ----------------------------------------------------------------

# Fields whose values are structured (blocks, tools): parsed below, declared here for the unknown-field check
# and the schema.
BLOCKS: Schema = {"type": "array", "items": OBJ}
STRUCTURED: dict[str, Schema] = {
    "messages": {"type": "array", "items": obj({"role": STR, "content": {"anyOf": [STR, BLOCKS]}}), "minItems": 1},
    "system": {"anyOf": [STR, BLOCKS]},
    "tools": {"type": "array", "items": obj({"name": STR, "description": STR, "input_schema": OBJ})},
    "tool_choice": obj({"type": {"enum": ["auto", "any", "tool", "none"]}, "name": STR}),
    "thinking": obj({"type": {"enum": ["enabled", "adaptive", "disabled"]}, "budget_tokens": {**INT, "minimum": 1}}),
    "output_config": obj({"format": obj({"type": {"const": "json_schema"}, "schema": OBJ}), "effort": STR}),
}
COUNT_FIELDS = Fields(Field("model", str, required=True))
FIELDS = COUNT_FIELDS + Fields(
    Field("max_tokens", int, low=1, required=True, option="num_predict"),
    Field("temperature", float, low=0, high=1, default=1.0, option="temperature"),
    Field("top_p", float, low=0, high=1, option="top_p"),
    Field("top_k", int, low=0, option="top_k"),
    Field("stop_sequences", STOP, option="stop"),
    Field("stream", bool, default=False),
    Field("metadata", dict),  # accepted and ignored (`user_id`)
    Field("service_tier", str),  # accepted and ignored, as the next three
    Field("speed", str),
    Field("inference_geo", str),
    Field("cache_control", dict),  # prompt caching is automatic here (a slot's KV is reused)
)


@dataclass(frozen=True)
class Parsed:
    """A Messages request: the chat request, whether it streams, and the thinking budget asked for."""

    chat: ChatRequest
    stream: bool = False
    thinking_budget: int | None = None


def parse(body: dict[str, Any]) -> Parsed:
    """Translate `POST /v1/messages`."""
    FIELDS.check(body, also=STRUCTURED)
    values = FIELDS.read(body)
    chat = _chat(body, as_options(values, FIELDS))
    fmt = _output_format(body)
    if fmt is not None:
        if chat.call_required:
            raise InvalidRequest(
                "a forced tool_choice cannot be combined with output_config.format", field="tool_choice"
            )
        chat = replace(chat, constraints=replace(chat.constraints, format=fmt))
    return Parsed(chat, values["stream"], _thinking(body, values["max_tokens"]))


def _output_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """`output_config.format` (`{"type": "json_schema", "schema": ...}`): the output is constrained to it;
    `output_config.effort` is accepted and ignored."""
    config = rq.field(body, "output_config", dict)
    if config is None:
        return None
    fmt = rq.field(config, "format", dict, prefix="output_config.")
    if fmt is None:
        return None
    if fmt.get("type") != "json_schema":
        raise InvalidRequest('output_config.format.type must be "json_schema"', field="output_config.format.type")
    schema: dict[str, Any] = rq.field(fmt, "schema", dict, required=True, prefix="output_config.format.")
    return schema


def parse_count(body: dict[str, Any]) -> ChatRequest:
    """Translate `POST /v1/messages/count_tokens`: the same prompt, no sampling."""
    COUNT_FIELDS.check(body, also=STRUCTURED)
    _thinking(body, None)
    return _chat(body, Options())


def _chat(body: dict[str, Any], options: Options) -> ChatRequest:
    name = rq.model_name(body)
    tools = _tools(body.get("tools"))
    choice = _tool_choice(body.get("tool_choice"), tools)
    schema = call_schema(tools, choice)
    return ChatRequest(
        model=name,
        messages=(*_system(body.get("system")), *_messages(body)),
        options=options,
        constraints=Constraints(format=schema),
        tools=tools if choice.mode != "none" else (),
        call_required=schema is not None,
    )


def _text(blocks: Any, label: str, *, allow: tuple[str, ...] = ()) -> str:
    """A string, or text blocks joined by newlines (blocks of the `allow`ed types are skipped)."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise InvalidRequest(f"{label} must be a string or a list of text blocks", field=label)
    texts = []
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind in allow:
            continue
        if kind != "text" or not isinstance(block.get("text"), str):
            raise InvalidRequest(f"{label}[{i}] must be a text block ({{'type': 'text', 'text': ...}})", field=label)
        texts.append(block["text"])
    return "\n".join(texts)


def _system(raw: Any) -> tuple[ChatMessage, ...]:
    if raw is None:
        return ()
    text = _text(raw, "system")
    return (ChatMessage("system", text),) if text else ()


def _messages(body: dict[str, Any]) -> list[ChatMessage]:
    raw = rq.field(body, "messages", list, required=True)
    if not raw:
        raise InvalidRequest("messages must hold at least one message", field="messages")
    out: list[ChatMessage] = []
    for i, item in enumerate(raw):
        label = f"messages[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{label} must be an object", field=label)
        role = rq.field(item, "role", str, required=True, prefix=f"{label}.")
        if role not in ("user", "assistant"):
            raise InvalidRequest(
                f"{label}.role must be user or assistant (system goes in `system`)", field=f"{label}.role"
            )
        content = item.get("content")
        if isinstance(content, str):
            out.append(ChatMessage(role, content))
        elif isinstance(content, list):
            out += _blocks(role, content, f"{label}.content")
        else:
            raise InvalidRequest(f"{label}.content must be a string or a list of blocks", field=f"{label}.content")
    return out


def _blocks(role: str, blocks: list[Any], label: str) -> list[ChatMessage]:
    """One turn's blocks as chat messages: a user turn's tool results become tool messages (before its text),
    an assistant turn's `tool_use` blocks its tool calls; `thinking` blocks are dropped."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[ChatMessage] = []
    for j, block in enumerate(blocks):
        where = f"{label}[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(block, dict) or not isinstance(kind, str):
            raise InvalidRequest(f"{where} must be a block with a type", field=where)
        if kind == "text":
            texts.append(rq.field(block, "text", str, required=True, prefix=f"{where}."))
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            continue  # an earlier turn's reasoning is not part of the prompt (as Anthropic's API does)
        elif kind == "tool_use" and role == "assistant":
            name = tool_name(block.get("name"), f"{where}.name")
            arguments = rq.field(block, "input", dict, {}, prefix=f"{where}.")
            call_id = rq.field(block, "id", str, required=True, prefix=f"{where}.")
            calls.append(ToolCall(call_id, name, arguments))
        elif kind == "tool_result" and role == "user":
            call_id = rq.field(block, "tool_use_id", str, required=True, prefix=f"{where}.")
            text = _text(block.get("content") or "", f"{where}.content")
            if rq.field(block, "is_error", bool, False, prefix=f"{where}."):
                text = f"Error: {text}"
            results.append(ChatMessage("tool", text, tool_call_id=call_id))
        elif kind in ("image", "document"):
            raise InvalidRequest(f"{where}: {kind} blocks are not supported (the models here read text)", field=where)
        else:
            raise InvalidRequest(f"{where}: a {role} turn cannot hold a '{kind}' block here", field=where)
    text = "\n".join(texts)
    if role == "assistant":
        return [ChatMessage("assistant", text, tuple(calls))] if text or calls else []
    return [*results, *([ChatMessage("user", text)] if text or not results else [])]


def _tools(raw: Any) -> tuple[Tool, ...]:
    """Custom tools (`name`, `description`, `input_schema`); Anthropic's server tools are refused."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidRequest("tools must be a list of tools", field="tools")
    tools: list[Tool] = []
    for i, item in enumerate(raw):
        label = f"tools[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{label} must be an object", field=label)
        if item.get("type", "custom") != "custom":
            raise InvalidRequest(
                f"{label}: server tools (type '{item.get('type')}') are not supported, only custom tools", field=label
            )
        name = tool_name(item.get("name"), f"{label}.name")
        description = rq.field(item, "description", str, "", prefix=f"{label}.")
        schema = rq.field(item, "input_schema", dict, required=True, prefix=f"{label}.")
        if any(t.name == name for t in tools):
            raise InvalidRequest(f"{label}: tool '{name}' is declared twice", field=f"{label}.name")
        tools.append(Tool(name, description, schema))
    return tuple(tools)


CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def _tool_choice(raw: Any, tools: tuple[Tool, ...]) -> ToolChoice:
    if raw is None:
        return ToolChoice("auto" if tools else "none")
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind not in (*CHOICES, "tool"):
        raise InvalidRequest('tool_choice.type must be "auto", "any", "tool" or "none"', field="tool_choice.type")
    if kind in ("any", "tool") and not tools:
        raise InvalidRequest(f'tool_choice "{kind}" needs tools', field="tool_choice")
    if kind != "tool":
        return ToolChoice(CHOICES[kind])
    name = rq.field(raw, "name", str, required=True, prefix="tool_choice.")
    if name not in {t.name for t in tools}:
        raise InvalidRequest(f"tool_choice names '{name}', which is not among the tools", field="tool_choice.name")
    return ToolChoice("named", name)


def _thinking(body: dict[str, Any], max_tokens: int | None) -> int | None:
    """The thinking budget asked for (`{"type": "enabled", "budget_tokens": n}`), checked as Anthropic does."""
    raw = rq.field(body, "thinking", dict)
    if raw is None or raw.get("type") in ("disabled", "adaptive"):
        return None
    if raw.get("type") != "enabled":
        raise InvalidRequest('thinking.type must be "enabled", "adaptive" or "disabled"', field="thinking.type")
    budget: int = rq.field(raw, "budget_tokens", int, required=True, prefix="thinking.")
    if budget < 1 or (max_tokens is not None and budget >= max_tokens):
        raise InvalidRequest(
            f"thinking.budget_tokens must be at least 1 and less than max_tokens, got {budget}",
            field="thinking.budget_tokens",
        )
    return budget


# -- encoders: events to Anthropic's objects --------------------------------------------------------------


def new_id() -> str:
    return "msg_" + secrets.token_hex(12)


def stop_reason(done: Done, called: bool) -> str:
    if called:
        return "tool_use"
    if done.reason == "length":
        return "max_tokens"
    return "stop_sequence" if done.stop_sequence else "end_turn"


def usage(done: Done | None) -> dict[str, Any]:
    """Anthropic's usage: `input_tokens` excludes the cached ones (`cache_read_input_tokens`)."""
    return {
        "input_tokens": done.prompt_eval_count if done else 0,
        "output_tokens": done.eval_count if done else 0,
        "cache_read_input_tokens": done.cached_tokens if done else 0,
        "cache_creation_input_tokens": 0,
    }


def tool_use(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}


def envelope(mid: str, model: str) -> dict[str, Any]:
    return {"id": mid, "type": "message", "role": "assistant", "model": model}


def whole(mid: str, model: str, answer: Answer) -> dict[str, Any]:
    """The whole answer as one `message`."""
    content: list[dict[str, Any]] = []
    if answer.thinking:
        content.append({"type": "thinking", "thinking": answer.thinking, "signature": ""})
    if answer.text:
        content.append({"type": "text", "text": answer.text})
    content += [tool_use(c) for c in answer.tool_calls]
    return {
        **envelope(mid, model),
        "content": content,
        "stop_reason": stop_reason(answer.done, bool(answer.tool_calls)),
        "stop_sequence": answer.done.stop_sequence,
        "usage": usage(answer.done),
    }


Sse = tuple[str, dict[str, Any]]  # an event's name and data


async def sse_events(mid: str, model: str, events: AsyncGenerator[Event, None]) -> AsyncGenerator[Sse, None]:
    """The stream's events: `message_start`, a block per kind of output (thinking, text, each tool call) with
    its deltas, then `message_delta` (stop reason, usage) and `message_stop`."""
    yield (
        "message_start",
        {
            "type": "message_start",
            "message": {
                **envelope(mid, model),
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage(None),
            },
        },
    )
    index, open_kind, called = -1, "", False

    def start(kind: str, block: dict[str, Any]) -> list[Sse]:
        nonlocal index, open_kind
        out = [stop()] if open_kind else []
        index, open_kind = index + 1, kind
        return [*out, ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})]

    def stop() -> Sse:
        return "content_block_stop", {"type": "content_block_stop", "index": index}

    def delta(body: dict[str, Any]) -> Sse:
        return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": body}

    async with contextlib.aclosing(events):
        async for event in events:
            if isinstance(event, Thinking) and event.text:
                if open_kind != "thinking":
                    for item in start("thinking", {"type": "thinking", "thinking": "", "signature": ""}):
                        yield item
                yield delta({"type": "thinking_delta", "thinking": event.text})
            elif isinstance(event, Token) and event.text:
                if open_kind != "text":
                    for item in start("text", {"type": "text", "text": ""}):
                        yield item
                yield delta({"type": "text_delta", "text": event.text})
            elif isinstance(event, ToolCalls):
                called = True
                for call in event.calls:
                    for item in start("tool_use", {**tool_use(call), "input": {}}):
                        yield item
                    yield delta(
                        {"type": "input_json_delta", "partial_json": json.dumps(call.arguments, ensure_ascii=False)}
                    )
            elif isinstance(event, Done):
                if open_kind:
                    yield stop()
                    open_kind = ""
                yield (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": stop_reason(event, called), "stop_sequence": event.stop_sequence},
                        "usage": usage(event),
                    },
                )
    yield "message_stop", {"type": "message_stop"}


def sse_frame(item: Sse | dict[str, Any]) -> bytes:
    """An SSE event with its `event:` line (the SDK drops events without one); an error is the `error` event."""
    name, data = item if isinstance(item, tuple) else ("error", item)
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


PING: Sse = ("ping", {"type": "ping"})


async def with_pings(
    opening: AsyncGenerator[Sse, None], pending: asyncio.Future[Any], stream: AsyncGenerator[Any, None], every: float
) -> AsyncGenerator[Sse, None]:
    """`message_start`, then a `ping` every `every` seconds until `pending` (the first event of `stream`) is
    there, then the rest of `opening`; closing this closes `stream` (cancelling the wait)."""
    try:
        async with contextlib.aclosing(opening):
            yield await opening.__anext__()
            while not (await asyncio.wait({pending}, timeout=every))[0]:
                yield PING
            async for item in opening:
                yield item
    finally:
        await _abandon(pending, stream)


async def _abandon(pending: asyncio.Future[Any], stream: AsyncGenerator[Any, None]) -> None:
    """Cancel the wait for `stream`'s next event (when still waiting) and close `stream`."""
    if not pending.done():
        pending.cancel()
        with contextlib.suppress(BaseException):
            await pending
    await stream.aclose()


async def _first_then(first: asyncio.Future[Event], rest: AsyncGenerator[Event, None]) -> AsyncGenerator[Event, None]:
    yield await first
    async for event in rest:
        yield event


# -- routes ---------------------------------------------------------------------------------------------


@guarded(ERRORS)
async def messages(request: Request) -> Response:
    raw = await rq.read_json(request)
    parsed = parse(raw)
    model = str(raw["model"])  # as the client named it
    stream = service_of(request).chat(parsed.chat)
    mid = new_id()
    if not parsed.stream:
        answer = (await collect_all([stream], request))[0]
        return JSONResponse(whole(mid, model, answer))
    # The first event within PING_AFTER: an early error (an unknown model) is answered with its status.
    # Later (a model loading), the stream opens and pings until it comes.
    pending: asyncio.Future[Event] = asyncio.ensure_future(stream.__anext__())
    try:
        await until_disconnect(asyncio.wait({pending}, timeout=PING_AFTER), request)
        if pending.done():
            pending.result()
    except BaseException:
        await _abandon(pending, stream)
        raise
    items = with_pings(sse_events(mid, model, _first_then(pending, stream)), pending, stream, PING_EVERY)
    return EventStream(items, frame=sse_frame, on_error=anthropic_error, media_type=SSE)


@guarded(ERRORS)
async def count_tokens(request: Request) -> Response:
    req = parse_count(await rq.read_json(request))
    count = await until_disconnect(service_of(request).count_chat(req), request)
    return JSONResponse({"input_tokens": count})


routes = [
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]

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


DIALECT = Dialect("anthropic", routes, ERRORS, paths)
