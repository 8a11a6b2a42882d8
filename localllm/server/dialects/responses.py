"""OpenAI's Responses API (`/v1/responses`), stateful: what Codex CLI and the `openai` SDK's `client.responses`
speak, over the same chat generation as `/v1/chat/completions` (its tools, forced calls and errors).

A response is kept (`store`, the default) with the conversation it ends (`responses_store`): a request with
`previous_response_id` is that conversation followed by its own `input`, so its prompt begins with the
earlier prompt and the runner's slot reuses the KV cache of it (`usage.input_tokens_details.cached_tokens`).
Streams are SSE with an `event:` line and a `sequence_number` on every event, ending with
`response.completed` (or `response.incomplete`, `response.failed`), without `[DONE]`.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...errors import InvalidRequest
from ...responses_store import ResponseStore
from ...service import Answer, ChatRequest
from ...tools import call_schema, parse_tool_choice, parse_tools
from ...types import ChatMessage, Constraints, Done, Event, Options, Thinking, Token, ToolCall, ToolCalls
from .. import requests as rq
from ..errors import RouteError, guarded
from ..fields import Field, Fields, as_options, check_fields
from ..schema import ANY_LIST, BOOL, INT, OBJ, OPENAI_ERROR, SSE, STR, body, obj, path_parameter, responses
from ..streaming import EventStream
from .contract import Dialect
from .openai.api import ERRORS, openai_error
from .shared import collect_all, opened, service_of, with_default_model

# Fields, declared once: parse, the unknown-field check and the OpenAPI schema. `input` and `tool_choice`
# (a string or a list/object) are read below and listed in `OTHER`.
FIELDS = Fields(
    Field("model", str),
    Field("instructions", str),
    Field("tools", list, default=[]),
    Field("temperature", float, low=0, high=2, option="temperature"),
    Field("top_p", float, low=0, high=1, option="top_p"),
    Field("max_output_tokens", int, low=1, option="num_predict"),
    Field("text", dict, default={}),
    Field("reasoning", dict, default={}),
    Field("stream", bool, default=False),
    Field("store", bool, default=True),
    Field("previous_response_id", str),
    Field("metadata", dict),
    Field("parallel_tool_calls", bool, default=True),
    Field("user", str),
    Field("truncation", str, default="disabled"),
    Field("include", list, default=[]),
    Field("prompt_cache_key", str),
    Field("safety_identifier", str),
    Field("service_tier", str),
    Field("seed", int, option="seed"),
    Field("top_logprobs", int, low=0, high=20),
    Field("max_tool_calls", int, low=1),
    Field("background", bool, default=False),
    Field("stream_options", dict),
)
OTHER = ("input", "tool_choice")
COUNT_FIELDS: tuple[str, ...] = ("model", "input", "instructions", "tools", "tool_choice", "previous_response_id")
COUNT_FIELDS += ("text", "reasoning", "parallel_tool_calls", "truncation")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


@dataclass(frozen=True)
class Turn:
    """A translated request: the chat to run, the conversation it continues, and the fields echoed back."""

    chat: ChatRequest
    conversation: tuple[ChatMessage, ...]  # without the instructions: what a stored response keeps
    echo: dict[str, Any]
    stream: bool = False
    store: bool = True
    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))


# -- translating requests ---------------------------------------------------------------------------------


def _text(value: Any, label: str, kinds: tuple[str, ...]) -> str:
    """A message's content: a string, or a list of text parts of `kinds`."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise InvalidRequest(f"{label} must be a string or a list of content parts", field=label)
    out = []
    for i, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in kinds or not isinstance(part.get("text"), str):
            what = f"'{kind}' parts are not supported here" if isinstance(kind, str) else "it must be an object"
            raise InvalidRequest(
                f"{label}[{i}] must be a text part ({' or '.join(kinds)}): {what}", field=f"{label}[{i}]"
            )
        out.append(part["text"])
    return "".join(out)


TEXT_PARTS = ("input_text", "output_text", "text", "refusal", "summary_text", "reasoning_text")


def parse_input(raw: Any) -> tuple[ChatMessage, ...]:
    """`input`: a string (one user message), or items: messages (`input_text`/`output_text` parts or a string,
    roles user, system, developer, assistant), `function_call` and `function_call_output` items; `reasoning`
    items are accepted and left out of the prompt."""
    if isinstance(raw, str):
        return (ChatMessage("user", raw),)
    if not isinstance(raw, list):
        raise InvalidRequest("input must be a string or a list of input items", field="input")
    out: list[ChatMessage] = []
    for i, item in enumerate(raw):
        label = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{label} must be an object", field=label)
        kind = item.get("type", "message")
        if kind == "message":
            role = rq.field(item, "role", str, required=True, prefix=f"{label}.")
            if role not in ("user", "system", "developer", "assistant"):
                raise InvalidRequest(
                    f"{label}.role must be one of user, system, developer, assistant", field=f"{label}.role"
                )
            content = _text(item.get("content"), f"{label}.content", TEXT_PARTS)
            out.append(ChatMessage("system" if role == "developer" else role, content))
        elif kind == "function_call":
            call_id = rq.field(item, "call_id", str, required=True, prefix=f"{label}.")
            name = rq.field(item, "name", str, required=True, prefix=f"{label}.")
            arguments = _arguments(rq.field(item, "arguments", str, "{}", prefix=f"{label}."), f"{label}.arguments")
            call = ToolCall(call_id, name, arguments)
            if out and out[-1].role == "assistant" and out[-1].tool_calls and not out[-1].content:
                out[-1] = replace(out[-1], tool_calls=(*out[-1].tool_calls, call))  # parallel calls: one turn
            else:
                out.append(ChatMessage("assistant", "", (call,)))
        elif kind == "function_call_output":
            call_id = rq.field(item, "call_id", str, required=True, prefix=f"{label}.")
            output = item.get("output")
            text = _text(output if output is not None else "", f"{label}.output", TEXT_PARTS)
            out.append(ChatMessage("tool", text, tool_call_id=call_id))
        elif kind == "reasoning":
            continue  # the model's earlier reasoning: not part of the next prompt (as chat templates drop it)
        else:
            raise InvalidRequest(
                f"{label}.type '{kind}' is not supported (message, function_call, function_call_output, reasoning)",
                field=f"{label}.type",
            )
    return tuple(out)


def _arguments(text: str, label: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{label} must be a JSON object (as a string)", field=label)
    return value


def parse_tools_flat(raw: list[Any]) -> list[dict[str, Any]]:
    """Responses' flat function tools (`{"type": "function", "name", "description", "parameters", "strict"}`)
    in the chat shape `tools.parse_tools` reads; any other tool type is refused."""
    out = []
    for i, item in enumerate(raw):
        label = f"tools[{i}]"
        if not isinstance(item, dict) or item.get("type") != "function":
            kind = item.get("type") if isinstance(item, dict) else None
            raise InvalidRequest(
                f"{label}: only function tools are supported here (got type {kind!r})", field=f"{label}.type"
            )
        function = {k: item[k] for k in ("name", "description", "parameters") if item.get(k) is not None}
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(raw: Any) -> Any:
    """Responses' `{"type": "function", "name"}` in the chat shape; strings as they are."""
    if isinstance(raw, dict) and raw.get("type") == "function" and "function" not in raw:
        return {"type": "function", "function": {"name": raw.get("name")}}
    if isinstance(raw, dict) and raw.get("type") in ("none", "auto", "required"):
        return raw["type"]
    return raw


def text_format(text: dict[str, Any]) -> Any:
    """`text.format`: `text` (none), `json_object` ("json"), `json_schema` (its schema: constrained output)."""
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise InvalidRequest("text.format.schema must be a JSON schema object", field="text.format.schema")
        return schema
    raise InvalidRequest("text.format.type must be text, json_object or json_schema", field="text.format.type")


def to_turn(body: dict[str, Any], store: ResponseStore, *, counting: bool = False) -> Turn:
    """Translate a request (or, `counting`, an `input_tokens` request) onto a chat and what it echoes."""
    if counting:
        check_fields(body, COUNT_FIELDS)
        v = FIELDS.read({k: body[k] for k in body if k in FIELDS.by_name})
    else:
        FIELDS.check(body, also=OTHER)
        v = FIELDS.read(body)
    name = rq.model_name(body)
    if v["background"]:
        raise InvalidRequest("background responses are not supported: leave background false", field="background")
    if v["truncation"] not in ("auto", "disabled"):
        raise InvalidRequest("truncation must be auto or disabled", field="truncation")
    effort = v["reasoning"].get("effort")
    if effort is not None and effort not in EFFORTS:
        raise InvalidRequest(f"reasoning.effort must be one of {', '.join(EFFORTS)}", field="reasoning.effort")
    earlier: tuple[ChatMessage, ...] = ()
    if v["previous_response_id"] is not None:
        stored = store.get(v["previous_response_id"])
        if stored is None:
            raise RouteError(f"previous response '{v['previous_response_id']}' not found (not stored, or expired)", 404)
        earlier = stored.conversation
    if body.get("input") is None:
        raise InvalidRequest("input is required: a string or a list of input items", field="input")
    conversation = (*earlier, *parse_input(body["input"]))
    tools = parse_tools(parse_tools_flat(v["tools"]))
    choice = parse_tool_choice(_tool_choice(body.get("tool_choice")), tools)
    fmt = text_format(v["text"])
    schema = call_schema(tools, choice)
    if schema is not None:
        if fmt is not None:
            raise InvalidRequest("a required tool call cannot be combined with text.format", field="tool_choice")
        fmt = schema
    instructions = (ChatMessage("system", v["instructions"]),) if v["instructions"] else ()
    options = as_options(v, FIELDS).merged_over(Options(temperature=1.0, top_p=1.0))
    chat = ChatRequest(
        model=name,
        messages=(*instructions, *conversation),
        options=options,
        constraints=Constraints(format=fmt),
        tools=tools if choice.mode != "none" else (),
        truncate=v["truncation"] == "auto",
        call_required=schema is not None,
    )
    echo = {
        "model": body["model"],
        "instructions": v["instructions"],
        "max_output_tokens": v["max_output_tokens"],
        "metadata": v["metadata"] or {},
        "parallel_tool_calls": v["parallel_tool_calls"],
        "previous_response_id": v["previous_response_id"],
        "reasoning": {"effort": effort, "summary": None},
        "store": v["store"],
        "temperature": options.temperature,
        "text": {"format": v["text"].get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice") or ("auto" if tools else "none"),
        "tools": v["tools"],
        "top_p": options.top_p,
        "truncation": v["truncation"],
        "user": v["user"],
    }
    return Turn(chat, conversation, echo, stream=v["stream"], store=v["store"])


# -- encoders: events to the response object and its stream ------------------------------------------------


def usage(done: Done | None) -> dict[str, Any]:
    """Responses' usage: the input counts cached tokens (and says how many), as OpenAI's does."""
    cached = done.cached_tokens if done else 0
    inputs = (done.prompt_eval_count if done else 0) + cached
    outputs = done.eval_count if done else 0
    return {
        "input_tokens": inputs,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": outputs,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": inputs + outputs,
    }


def response_object(
    turn: Turn, status: str, output: list[dict[str, Any]], done: Done | None, error: dict[str, Any] | None = None
) -> dict[str, Any]:
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {
        "id": turn.id,
        "object": "response",
        "created_at": turn.created_at,
        "status": status,
        "error": error,
        "incomplete_details": incomplete,
        "model": turn.echo.get("model", str(turn.chat.model)),
        "output": output,
        **turn.echo,
        "usage": usage(done) if done else None,
    }


def status_of_done(done: Done) -> str:
    return "incomplete" if done.reason == "length" else "completed"


def reasoning_item(rid: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if text else []
    return {"id": rid, "type": "reasoning", "summary": [], "content": content, "status": status}


def message_item(mid: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    content = [] if text is None else [output_text(text)]
    return {"id": mid, "type": "message", "status": status, "role": "assistant", "content": content}


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(fid: str, call: ToolCall, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": fid,
        "type": "function_call",
        "status": status,
        "call_id": call.id,
        "name": call.name,
        "arguments": arguments,
    }


def arguments_of(call: ToolCall) -> str:
    return json.dumps(call.arguments, ensure_ascii=False)


def answered(conversation: tuple[ChatMessage, ...], output: list[dict[str, Any]]) -> tuple[ChatMessage, ...]:
    """The conversation with the response's output appended as the assistant's turn (what a later turn
    continues)."""
    text = "".join(p["text"] for item in output if item["type"] == "message" for p in item["content"])
    calls = tuple(
        ToolCall(item["call_id"], item["name"], json.loads(item["arguments"]))
        for item in output
        if item["type"] == "function_call"
    )
    return (*conversation, ChatMessage("assistant", text, calls))


class Encoder:
    """The stream of one response: each service event becomes its Responses events (numbered from 0), and
    the output items are built as they go (for the final object and the store)."""

    def __init__(self, turn: Turn) -> None:
        self.turn = turn
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the item being written (reasoning or message)
        self.text = ""

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        out = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return out

    def start(self) -> list[dict[str, Any]]:
        snapshot = response_object(self.turn, "in_progress", [], None)
        return [
            self.event("response.created", response=snapshot),
            self.event("response.in_progress", response=snapshot),
        ]

    def _index(self) -> int:
        return len(self.output)

    def _open(self, kind: str) -> list[dict[str, Any]]:
        events = self._close() if self.open is not None and self.open["type"] != kind else []
        if self.open is not None:
            return events
        index = self._index()
        if kind == "reasoning":
            self.open = reasoning_item(new_id("rs"), "", "in_progress")
            part = {"type": "reasoning_text", "text": ""}
        else:
            self.open = message_item(new_id("msg"), None, "in_progress")
            part = output_text("")
        self.text = ""
        iid = self.open["id"]
        return [
            *events,
            self.event("response.output_item.added", output_index=index, item=self.open),
            self.event("response.content_part.added", item_id=iid, output_index=index, content_index=0, part=part),
        ]

    def _close(self, status: str = "completed") -> list[dict[str, Any]]:
        if self.open is None:
            return []
        index, iid, text = self._index(), self.open["id"], self.text
        if self.open["type"] == "reasoning":
            item = reasoning_item(iid, text, status)
            part = {"type": "reasoning_text", "text": text}
            done = self.event(
                "response.reasoning_text.done", item_id=iid, output_index=index, content_index=0, text=text
            )
        else:
            item = message_item(iid, text, status)
            part = output_text(text)
            done = self.event(
                "response.output_text.done", item_id=iid, output_index=index, content_index=0, text=text, logprobs=[]
            )
        self.open = None
        self.output.append(item)
        return [
            done,
            self.event("response.content_part.done", item_id=iid, output_index=index, content_index=0, part=part),
            self.event("response.output_item.done", output_index=index, item=item),
        ]

    def feed(self, event: Event) -> list[dict[str, Any]]:
        if isinstance(event, (Thinking, Token)):
            kind = "reasoning" if isinstance(event, Thinking) else "message"
            events = self._open(kind)
            assert self.open is not None
            self.text += event.text
            name = "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
            extra: dict[str, Any] = {} if kind == "reasoning" else {"logprobs": []}
            iid, index = self.open["id"], self._index()
            delta = self.event(name, item_id=iid, output_index=index, content_index=0, delta=event.text, **extra)
            return [*events, delta]
        if isinstance(event, ToolCalls):
            events = self._close()
            for call in event.calls:
                index, fid, arguments = self._index(), new_id("fc"), arguments_of(call)
                events += [
                    self.event(
                        "response.output_item.added", output_index=index, item=call_item(fid, call, "", "in_progress")
                    ),
                    self.event(
                        "response.function_call_arguments.delta", item_id=fid, output_index=index, delta=arguments
                    ),
                    self.event(
                        "response.function_call_arguments.done",
                        item_id=fid,
                        output_index=index,
                        name=call.name,
                        arguments=arguments,
                    ),
                ]
                item = call_item(fid, call, arguments)
                self.output.append(item)
                events.append(self.event("response.output_item.done", output_index=index, item=item))
            return events
        return []

    def finish(self, done: Done) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        status = status_of_done(done)
        events = self._close("incomplete" if status == "incomplete" else "completed")
        final = response_object(self.turn, status, self.output, done)
        return [*events, self.event(f"response.{status}", response=final)], final

    def fail(self, exc: BaseException) -> dict[str, Any]:
        error = openai_error(exc)["error"]
        failed = response_object(
            self.turn,
            "failed",
            self.output,
            None,
            {"code": error["code"] or error["type"], "message": error["message"]},
        )
        return self.event("response.failed", response=failed)


def whole(turn: Turn, answer: Answer) -> dict[str, Any]:
    """The response object of a whole (not streamed) answer: its reasoning, text and calls as output items."""
    encoder = Encoder(turn)
    if answer.thinking:
        encoder.feed(Thinking(answer.thinking))
    if answer.text or not answer.tool_calls:
        encoder.feed(Token(answer.text))
    if answer.tool_calls:
        encoder.feed(ToolCalls(answer.tool_calls))
    return encoder.finish(answer.done)[1]


def sse_named(obj: dict[str, Any]) -> bytes:
    """An SSE event with its `event:` line (the event's `type`), as the Responses API frames them."""
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return f"event: {obj.get('type', 'error')}\ndata: {data}\n\n".encode()


def error_event(exc: BaseException) -> dict[str, Any]:
    error = openai_error(exc)["error"]
    return {"type": "error", "code": error["code"], "message": error["message"], "param": error["param"]}


# -- routes -------------------------------------------------------------------------------------------------


def store_of(request: Request) -> ResponseStore:
    store: ResponseStore | None = getattr(request.app.state, "responses", None)
    if store is None:
        store = request.app.state.responses = ResponseStore()
    return store


def keep(store: ResponseStore, turn: Turn, final: dict[str, Any]) -> None:
    if turn.store:
        store.put(final, answered(turn.conversation, final["output"]))


@guarded(ERRORS)
async def create(request: Request) -> Response:
    service = service_of(request)
    body = with_default_model(await rq.read_json(request), service)
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
    """The input tokens a request would have: its prompt (instructions, conversation, tools) tokenized."""
    service = service_of(request)
    body = with_default_model(await rq.read_json(request), service)
    turn = to_turn(body, store_of(request), counting=True)
    count = await count_tokens(service, turn.chat)
    return JSONResponse({"object": "response.input_tokens", "input_tokens": count})


async def count_tokens(service: Any, chat: ChatRequest) -> int:
    model = service.model(chat.model)
    messages = list(chat.messages)
    lead = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
    messages = [*messages[:lead], *model.messages, *messages[lead:]]  # as service.chat orders them
    if model.system and not (messages and messages[0].role == "system"):
        messages.insert(0, ChatMessage("system", model.system))
    text = await service.render(model, messages, tools=chat.tools)
    return len(await service.tokenize(chat.model, text))


routes = [
    Route("/v1/responses", create, methods=["POST"]),
    Route("/v1/responses/input_tokens", input_tokens, methods=["POST"]),
    Route("/v1/responses/{response_id}", retrieve, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete, methods=["DELETE"]),
    Route("/v1/responses/{response_id}/input_items", input_items, methods=["GET"]),
]


# -- OpenAPI -------------------------------------------------------------------------------------------------

RESPONSE = obj(
    {"id": STR, "object": STR, "created_at": INT, "status": STR, "model": STR, "output": ANY_LIST, "usage": OBJ},
    required=("id", "object", "status", "output"),
)
ITEMS: dict[str, Any] = {"input": {"anyOf": [STR, ANY_LIST]}, "tool_choice": {"anyOf": [STR, OBJ]}}
CODES = ("400", "401", "403", "404", "413", "422", "429", "5XX")


def paths() -> dict[str, Any]:
    err = OPENAI_ERROR
    one = {"parameters": path_parameter("response_id")}
    count_schema = obj(
        {k: s for k, s in {**FIELDS.schema()["properties"], **ITEMS}.items() if k in COUNT_FIELDS}, closed=True
    )
    return {
        "/v1/responses": {
            "post": {
                "summary": "OpenAI Responses: a response, stored for previous_response_id unless store is false",
                "requestBody": body(FIELDS.schema(closed=True, **ITEMS)),
                "responses": responses(err, RESPONSE, stream=SSE, codes=CODES),
            }
        },
        "/v1/responses/input_tokens": {
            "post": {
                "summary": "the input tokens of a Responses request",
                "requestBody": body(count_schema),
                "responses": responses(err, obj({"object": STR, "input_tokens": INT})),
            }
        },
        "/v1/responses/{response_id}": {
            "get": {"summary": "a stored response", **one, "responses": responses(err, RESPONSE)},
            "delete": {
                "summary": "delete a stored response",
                **one,
                "responses": responses(err, obj({"id": STR, "object": STR, "deleted": BOOL})),
            },
        },
        "/v1/responses/{response_id}/input_items": {
            "get": {"summary": "a stored response's input items", **one, "responses": responses(err, OBJ)}
        },
    }


DIALECT = Dialect("responses", routes, ERRORS, paths, prefix="/v1/responses")
