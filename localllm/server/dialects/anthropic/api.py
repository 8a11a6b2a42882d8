"""Anthropic's Messages routes, their error shape, and the encoders from the service's events to Anthropic's
objects: a whole `message`, or SSE events with `event:` lines (and `ping` while the first event is awaited)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncGenerator
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ....domain.events import Done, Event, Thinking, Token, ToolCallArguments, ToolCalls, ToolCallStart
from ....domain.messages import ToolCall
from ....observability import logs
from ....service.generation import Answer
from ... import requests as rq
from ...errors import ErrorShape, guarded, message_of, status_of
from ...replies import SSE, reply, responses
from ...streaming import EventStream, until_disconnect
from ...wire import request_body
from ..shared import collect_all, service_of
from . import replies as r
from . import wire
from .requests import parse, parse_count

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

# -- encoders: events to Anthropic's objects --------------------------------------------------------------


def new_id() -> str:
    return "msg_" + secrets.token_hex(12)


def stop_reason(done: Done, called: bool) -> r.StopReason:
    if called:
        return "tool_use"
    if done.reason == "length":
        return "max_tokens"
    return "stop_sequence" if done.stop_sequence else "end_turn"


def usage(done: Done | None, prompt: int = 0) -> r.AnthropicUsage:
    """Anthropic's usage: `input_tokens` excludes the cached ones (`cache_read_input_tokens`); before the end,
    the `prompt` counted."""
    return r.AnthropicUsage(
        input_tokens=done.prompt_eval_count if done else prompt,
        output_tokens=done.eval_count if done else 0,
        cache_read_input_tokens=done.cached_tokens if done else 0,
        cache_creation_input_tokens=0,
    )


def tool_use(call: ToolCall) -> r.AnthropicToolUse:
    return r.AnthropicToolUse(id=call.id, name=call.name, input=call.arguments)


def whole(mid: str, model: str, answer: Answer) -> r.AnthropicMessageObject:
    """The whole answer as one `message`."""
    content: list[r.Block] = []
    if answer.thinking:
        content.append(r.AnthropicThinking(thinking=answer.thinking, signature=""))
    if answer.text:
        content.append(r.AnthropicText(text=answer.text))
    content += [tool_use(c) for c in answer.tool_calls]
    return r.AnthropicMessageObject(
        id=mid,
        model=model,
        content=content,
        stop_reason=stop_reason(answer.done, bool(answer.tool_calls)),
        stop_sequence=answer.done.stop_sequence,
        usage=usage(answer.done),
    )


Sse = r.StreamEvent  # its `type` is the SSE event's name


def _prompt_counted() -> int:
    """The prompt's tokens, counted before generating (`ChatRequest.count_prompt`): known once the first event
    came, so `message_start` carries them unless the stream had to open first (a model loading: 0 then; the
    count comes in `message_delta`)."""
    info = logs.current()
    return info.prompt_counted or 0 if info is not None else 0


async def sse_events(mid: str, model: str, events: AsyncGenerator[Event, None]) -> AsyncGenerator[Sse, None]:
    """The stream's events: `message_start`, a block per kind of output (thinking, text, each tool call) with
    its deltas, then `message_delta` (stop reason, usage) and `message_stop`."""
    opening = r.AnthropicMessageObject(
        id=mid, model=model, content=[], stop_reason=None, stop_sequence=None, usage=usage(None, _prompt_counted())
    )
    yield r.MessageStart(message=opening)
    index, open_kind, called, streamed = -1, "", False, False

    def start(kind: str, block: r.Block) -> list[Sse]:
        nonlocal index, open_kind
        out = [stop()] if open_kind else []
        index, open_kind = index + 1, kind
        return [*out, r.ContentBlockStart(index=index, content_block=block)]

    def stop() -> Sse:
        return r.ContentBlockStop(index=index)

    def delta(body: r.ThinkingDelta | r.TextDelta | r.InputJsonDelta) -> Sse:
        return r.ContentBlockDelta(index=index, delta=body)

    async with contextlib.aclosing(events):
        async for event in events:
            if isinstance(event, Thinking) and event.text:
                if open_kind != "thinking":
                    for item in start("thinking", r.AnthropicThinking(thinking="", signature="")):
                        yield item
                yield delta(r.ThinkingDelta(thinking=event.text))
            elif isinstance(event, Token) and event.text:
                if open_kind != "text":
                    for item in start("text", r.AnthropicText(text="")):
                        yield item
                yield delta(r.TextDelta(text=event.text))
            elif isinstance(event, ToolCallStart):
                streamed = True
                for item in start("tool_use", r.AnthropicToolUse(id=event.id, name=event.name, input={})):
                    yield item
            elif isinstance(event, ToolCallArguments) and event.text:
                yield delta(r.InputJsonDelta(partial_json=event.text))
            elif isinstance(event, ToolCalls):
                called = True
                for call in () if streamed else event.calls:
                    for item in start("tool_use", r.AnthropicToolUse(id=call.id, name=call.name, input={})):
                        yield item
                    yield delta(r.InputJsonDelta(partial_json=json.dumps(call.arguments, ensure_ascii=False)))
            elif isinstance(event, Done):
                if open_kind:
                    yield stop()
                    open_kind = ""
                stopped = r.StopDelta(stop_reason=stop_reason(event, called), stop_sequence=event.stop_sequence)
                yield r.MessageDelta(delta=stopped, usage=usage(event))
    yield r.MessageStop()


def sse_frame(item: Sse | dict[str, Any]) -> bytes:
    """An SSE event with its `event:` line (the SDK drops events without one): its `type`; an error (a dict,
    from `anthropic_error`) is the `error` event."""
    if isinstance(item, dict):
        data = json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()
        return b"event: error\ndata: " + data + b"\n\n"
    return b"event: " + str(item.__struct_config__.tag).encode() + b"\ndata: " + msgspec.json.encode(item) + b"\n\n"


PING: Sse = r.Ping()


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
    body = await rq.read_wire(request, wire.MessagesRequest)
    parsed = parse(body)
    model = body.model  # as the client named it
    stream = service_of(request).chat(parsed.chat)
    mid = new_id()
    if not parsed.stream:
        answer = (await collect_all([stream], request))[0]
        return reply(whole(mid, model, answer))
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
    req = parse_count(await rq.read_wire(request, wire.CountTokensRequest))
    count = await until_disconnect(service_of(request).count_chat(req), request)
    return reply(r.AnthropicInputTokens(input_tokens=count))


# -- the OpenAPI paths: request bodies are the wire models' schemas --------------------------------------

CODES = ("400", "401", "403", "404", "413", "429", "500", "529")


def paths() -> dict[str, Any]:
    headers = [
        {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
        for name in ("x-api-key", "anthropic-version", "anthropic-beta")
    ]
    return {
        "/v1/messages": {
            "post": {
                "summary": "Anthropic Messages",
                "parameters": headers,
                "requestBody": request_body(wire.MessagesRequest),
                "responses": responses(
                    r.AnthropicError, r.AnthropicMessageObject, stream=(SSE, r.StreamEvent), codes=CODES
                ),
            }
        },
        "/v1/messages/count_tokens": {
            "post": {
                "summary": "Anthropic Messages: count a request's input tokens",
                "parameters": headers,
                "requestBody": request_body(wire.CountTokensRequest),
                "responses": responses(r.AnthropicError, r.AnthropicInputTokens, codes=CODES),
            }
        },
    }


routes = [
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
