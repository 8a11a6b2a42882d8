"""The routes of the Responses API and their OpenAPI paths."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ....domain.events import Done, Event
from ....domain.messages import ChatMessage
from ....service.responses_store import ResponseStore
from ... import requests as rq
from ...errors import RouteError, guarded
from ...replies import SSE, OpenAIError, path_parameter, responses
from ...streaming import EventStream
from ...wire import request_body
from ..openai.api import ERRORS
from ..shared import collect_all, default_model, opened, service_of
from . import replies as r
from . import wire
from .encode import Encoder, answered, arguments_of, error_event, sse_named, whole
from .requests import Turn, to_turn

# -- routes -------------------------------------------------------------------------------------------------


def store_of(request: Request) -> ResponseStore:
    """The daemon's stored responses, made (and read from `LOCALLLM_RESPONSES_DIR`) at the first use."""
    store: ResponseStore | None = getattr(request.app.state, "responses", None)
    if store is None:
        store = request.app.state.responses = ResponseStore(directory=service_of(request).settings.responses_dir)
    return store


def keep(store: ResponseStore, turn: Turn, final: dict[str, Any]) -> None:
    if turn.store:
        store.put(final, answered(turn.conversation, final["output"]))


@guarded(ERRORS)
async def create(request: Request) -> Response:
    service = service_of(request)
    body = await rq.read_wire(request, wire.ResponsesRequest)
    body = msgspec.structs.replace(body, model=default_model(body.model, service))
    store = store_of(request)
    turn = to_turn(body, store)
    if not turn.stream:
        answer = (await collect_all([service.chat(turn.chat)], request))[0]
        final = whole(turn, answer)
        keep(store, turn, final)
        return JSONResponse(final)
    events = await opened(service.chat(turn.chat), request)  # an early error is answered with its status
    return EventStream(stream(turn, events, store), frame=sse_named, on_error=error_event, media_type=SSE)


async def stream(
    turn: Turn, events: AsyncGenerator[Event, None], store: ResponseStore
) -> AsyncGenerator[dict[str, Any], None]:
    """The response's SSE events; an error once streaming has begun ends it with `response.failed`."""
    encoder = Encoder(turn)
    for out in encoder.start():
        yield out
    async with contextlib.aclosing(events):
        try:
            async for event in events:
                if isinstance(event, Done):
                    tail, final = encoder.finish(event)
                    keep(store, turn, final)
                else:
                    tail = encoder.feed(event)
                for out in tail:
                    yield out
        except Exception as exc:
            yield encoder.fail(exc)


def _stored(request: Request) -> tuple[ResponseStore, str]:
    return store_of(request), request.path_params["response_id"]


@guarded(ERRORS)
async def retrieve(request: Request) -> Response:
    store, rid = _stored(request)
    stored = store.get(rid)
    if stored is None:
        raise RouteError(f"response '{rid}' not found (not stored, deleted, or expired)", 404)
    return JSONResponse(stored.response)


@guarded(ERRORS)
async def delete(request: Request) -> Response:
    store, rid = _stored(request)
    if not store.delete(rid):
        raise RouteError(f"response '{rid}' not found (not stored, deleted, or expired)", 404)
    return JSONResponse({"id": rid, "object": "response.deleted", "deleted": True})


@guarded(ERRORS)
async def input_items(request: Request) -> Response:
    """The stored conversation's input items (messages and calls, oldest first)."""
    store, rid = _stored(request)
    stored = store.get(rid)
    if stored is None:
        raise RouteError(f"response '{rid}' not found (not stored, deleted, or expired)", 404)
    items = [item for m in stored.conversation[:-1] for item in as_items(m)]
    return JSONResponse({"object": "list", "data": items, "first_id": None, "last_id": None, "has_more": False})


def as_items(message: ChatMessage) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [{"type": "function_call_output", "call_id": message.tool_call_id, "output": message.content}]
    out: list[dict[str, Any]] = []
    if message.content or not message.tool_calls:
        kind = "output_text" if message.role == "assistant" else "input_text"
        out.append({"type": "message", "role": message.role, "content": [{"type": kind, "text": message.content}]})
    for call in message.tool_calls:
        out.append({"type": "function_call", "call_id": call.id, "name": call.name, "arguments": arguments_of(call)})
    return out


@guarded(ERRORS)
async def input_tokens(request: Request) -> Response:
    """The input tokens a request would have: its prompt (instructions, conversation, tools) as generation lays it
    out, each image or audio clip counted as the positions it takes (`Service.count_chat`, as Anthropic's)."""
    service = service_of(request)
    body = await rq.read_wire(request, wire.InputTokensRequest)
    body = msgspec.structs.replace(body, model=default_model(body.model, service))
    turn = to_turn(body, store_of(request), counting=True)
    count = await service.count_chat(turn.chat)
    return JSONResponse({"object": "response.input_tokens", "input_tokens": count})


routes = [
    Route("/v1/responses", create, methods=["POST"]),
    Route("/v1/responses/input_tokens", input_tokens, methods=["POST"]),
    Route("/v1/responses/{response_id}", retrieve, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete, methods=["DELETE"]),
    Route("/v1/responses/{response_id}/input_items", input_items, methods=["GET"]),
]


# -- OpenAPI -------------------------------------------------------------------------------------------------

CODES = ("400", "401", "403", "404", "413", "422", "429", "5XX")


def paths() -> dict[str, Any]:
    err = OpenAIError
    one = {"parameters": path_parameter("response_id")}
    return {
        "/v1/responses": {
            "post": {
                "summary": "OpenAI Responses: a response, stored for previous_response_id unless store is false",
                "requestBody": request_body(wire.ResponsesRequest),
                "responses": responses(err, r.ResponseObject, stream=(SSE, r.StreamEvent), codes=CODES),
            }
        },
        "/v1/responses/input_tokens": {
            "post": {
                "summary": "the input tokens of a Responses request",
                "requestBody": request_body(wire.InputTokensRequest),
                "responses": responses(err, r.ResponsesInputTokens, codes=CODES),
            }
        },
        "/v1/responses/{response_id}": {
            "get": {"summary": "a stored response", **one, "responses": responses(err, r.ResponseObject)},
            "delete": {
                "summary": "delete a stored response",
                **one,
                "responses": responses(err, r.ResponsesDeleted),
            },
        },
        "/v1/responses/{response_id}/input_items": {
            "get": {
                "summary": "a stored response's input items",
                **one,
                "responses": responses(err, r.ResponsesInputItems),
            }
        },
    }
