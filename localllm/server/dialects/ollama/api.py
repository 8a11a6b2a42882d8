"""Ollama's native API (`/api/*`): NDJSON streams, `{"error": ...}` bodies, durations in nanoseconds."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import math
from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .... import __version__
from ....chat.thinking import LEVELS, Think
from ....chat.tools import new_call_id, parse_tools
from ....domain.errors import InvalidRequest
from ....domain.types import (
    ROLES,
    ChatMessage,
    Constraints,
    Done,
    Event,
    ModelDetails,
    Thinking,
    Token,
    TokenLogprob,
    ToolCall,
    ToolCalls,
    parse_options,
)
from ....modelstore import modelfile
from ....modelstore.models import DamagedModel, Model
from ....modelstore.store import MEDIA_ADAPTER, Store
from ....service import create
from ....service.generation import Answer, ChatRequest, GenerateRequest, collect
from ... import requests as rq
from ...errors import ErrorShape, guarded, message_of
from ...fields import Field
from ...streaming import EventStream, first_item, ndjson_line, prepend, until_disconnect
from ..shared import service_of


def timestamp(t: float | None = None) -> str:
    """RFC 3339 with nanosecond-style precision, as Ollama writes `created_at`."""
    moment = datetime.datetime.fromtimestamp(
        t if t is not None else datetime.datetime.now().timestamp(), tz=datetime.timezone.utc
    )
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


TOP_LOGPROBS = Field("top_logprobs", int, low=0, high=20)  # the fields with bounds (`options`: types.py)


def ollama_error(exc: BaseException) -> dict[str, Any]:
    return {"error": message_of(exc)}


ERRORS = ErrorShape(ollama_error)
error_response = ERRORS.response


async def stream_or_whole(items: AsyncGenerator[dict[str, Any], None], request: Request, *, stream: bool) -> Response:
    """Progress lines (pull, create) streamed (the first pulled first, so early errors get a real status), or,
    with `stream: false`, merged into one object: the last status."""
    try:
        first = await first_item(items, request)
    except StopAsyncIteration:
        return JSONResponse({})
    if stream:
        return EventStream(
            prepend(first, items), frame=ndjson_line, on_error=ollama_error, media_type="application/x-ndjson"
        )

    async def merge_all() -> dict[str, Any]:
        merged: dict[str, Any] = first
        async with contextlib.aclosing(items):
            async for item in items:
                merged = {**merged, **item}
        return merged

    return JSONResponse(await until_disconnect(merge_all(), request))


def _done_fields(done: Done) -> dict[str, Any]:
    fields = {
        "done": True,
        "done_reason": done.reason,
        "total_duration": done.total_duration,
        "load_duration": done.load_duration,
        "prompt_eval_count": done.prompt_eval_count,
        "prompt_eval_duration": done.prompt_eval_duration,
        "eval_count": done.eval_count,
        "eval_duration": done.eval_duration,
    }
    if done.truncated:  # never cut silently: how many input tokens were dropped to fit the context
        fields["truncated"] = done.truncated
    return fields


def _logprobs(lps: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    return [
        {
            "token": lp.token,
            "logprob": lp.logprob,
            "bytes": list(lp.bytes),
            "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for _, t, v in lp.top],
        }
        for lp in lps
    ]


def _text(key: str, piece: str, calls: Sequence[ToolCall] = (), thinking: str = "") -> dict[str, Any]:
    """The text of a generate (`key` "response") or chat (`key` "message") object, with its reasoning apart."""
    if key == "response":
        return {"response": piece, "thinking": thinking} if thinking else {"response": piece}
    message: dict[str, Any] = {"role": "assistant", "content": piece}
    if thinking:
        message["thinking"] = thinking
    if calls:
        message["tool_calls"] = _ollama_calls(calls)
    return {"message": message}


def _done_line(done: Done, *, context: bool) -> dict[str, Any]:
    line = _done_fields(done)
    if context and done.context and done.reason not in ("load", "unload"):
        line["context"] = list(done.context)
    return line


def encode(event: Event, model: str, key: str, *, context: bool) -> dict[str, Any]:
    """One event as Ollama's stream object for generate (`key` "response") or chat (`key` "message")."""
    head = {"model": model, "created_at": timestamp()}
    if isinstance(event, Token):
        line = {**head, **_text(key, event.text), "done": False}
        if event.logprobs:
            line["logprobs"] = _logprobs(event.logprobs)
        return line
    if isinstance(event, ToolCalls):
        return {**head, **_text(key, "", event.calls), "done": False}
    if isinstance(event, Thinking):
        return {**head, **_text(key, "", thinking=event.text), "done": False}
    return {**head, **_text(key, ""), **_done_line(event, context=context)}


def encode_whole(answer: Answer, model: str, key: str, *, context: bool) -> dict[str, Any]:
    """The whole answer as one object (`stream: false`)."""
    line = {"model": model, "created_at": timestamp(), **_text(key, answer.text, answer.tool_calls, answer.thinking)}
    line["done"] = False
    if answer.logprobs:
        line["logprobs"] = _logprobs(answer.logprobs)
    return {**line, **_done_line(answer.done, context=context)}


async def _generation(
    events: AsyncGenerator[Event, None], request: Request, model: str, key: str, *, stream: bool, context: bool
) -> Response:
    """A generation streamed as NDJSON (its first event awaited first, so early errors get a real status), or
    whole."""
    if not stream:
        answer = await until_disconnect(collect(events), request)
        return JSONResponse(encode_whole(answer, model, key, context=context))

    async def lines(items: AsyncGenerator[Event, None]) -> AsyncGenerator[dict[str, Any], None]:
        async with contextlib.aclosing(items):
            async for event in items:
                yield encode(event, model, key, context=context)

    first = await first_item(events, request)
    return EventStream(
        lines(prepend(first, events)), frame=ndjson_line, on_error=ollama_error, media_type="application/x-ndjson"
    )


def _ollama_calls(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "function": {"index": i, "name": c.name, "arguments": c.arguments}} for i, c in enumerate(calls)
    ]


def _refuse_unsupported(body: dict[str, Any]) -> None:
    """Fields whose meaning we cannot honour yet get a 400 rather than being silently ignored."""
    if body.get("images"):
        raise InvalidRequest("this model has no vision support: images cannot be used", field="images")


def parse_think(raw: Any, *, field: str = "think") -> Think:
    """Ollama's `think`: true, false, or a level ("low", "medium", "high") for models that take one."""
    if raw is None or isinstance(raw, bool) or raw in LEVELS:
        return cast(Think, raw)
    raise InvalidRequest(
        f'invalid {field} value: {json.dumps(raw)} (must be "high", "medium", "low", true, or false)', field=field
    )


def _constraints(body: dict[str, Any]) -> Constraints:
    """`format` ("json" or a JSON schema: grammar-constrained), `logprobs` and `top_logprobs` (0-20)."""
    fmt = body.get("format")
    if fmt == "":
        fmt = None
    if fmt is not None and fmt != "json" and not isinstance(fmt, dict):
        raise InvalidRequest('format must be "json" or a JSON schema object', field="format")
    top = TOP_LOGPROBS.read(body)
    wanted = rq.field(body, "logprobs", bool, False)
    if top and not wanted:
        raise InvalidRequest("top_logprobs needs logprobs set to true", field="top_logprobs")
    return Constraints(format=fmt, logprobs=(top or 0) if wanted else None)


def _truncate(body: dict[str, Any]) -> bool:
    """Ollama's `truncate` (default true: cut an over-long input, and say so); `shift` is accepted."""
    rq.field(body, "shift", bool)
    return bool(rq.field(body, "truncate", bool, True))


def _context(body: dict[str, Any]) -> tuple[int, ...]:
    raw = rq.field(body, "context", list, [])
    if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in raw):
        raise InvalidRequest("context must be a list of token ids", field="context")
    return tuple(raw)


@guarded(ERRORS)
async def generate(request: Request) -> Response:
    req, stream = to_generate_request(await rq.read_json(request))
    events = service_of(request).generate(req)
    return await _generation(events, request, str(req.model), "response", stream=stream, context=not req.raw)


def to_generate_request(body: dict[str, Any]) -> tuple[GenerateRequest, bool]:
    """Translate a generate body (and whether to stream the answer)."""
    name = rq.model_name(body)
    _refuse_unsupported(body)
    raw = rq.field(body, "raw", bool, False)
    context = _context(body)
    if raw and (body.get("template") or body.get("system") or context):
        raise InvalidRequest("raw mode does not support template, system, or context", field="raw")
    req = GenerateRequest(
        model=name,
        prompt=rq.field(body, "prompt", str, ""),
        system=rq.field(body, "system", str),
        raw=raw,
        options=parse_options(body.get("options")),
        keep_alive=rq.keep_alive(body),
        constraints=replace(_constraints(body), context=context),
        suffix=rq.field(body, "suffix", str) or None,
        template=rq.field(body, "template", str) or None,
        truncate=_truncate(body),
        think=parse_think(body.get("think")),
    )
    return req, bool(rq.field(body, "stream", bool, True))


def _messages(body: dict[str, Any]) -> tuple[ChatMessage, ...]:
    raw = rq.field(body, "messages", list, [])
    out = []
    for i, item in enumerate(raw):
        label = f"messages[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{label} must be an object", field=label)
        role = rq.field(item, "role", str, required=True, prefix=f"{label}.").lower()
        if role not in ROLES:
            raise InvalidRequest(f"{label}.role must be one of {', '.join(ROLES)}, got {role!r}", field=f"{label}.role")
        if item.get("images"):
            raise InvalidRequest("this model has no vision support: images cannot be used", field=f"{label}.images")
        content = rq.field(item, "content", str, "", prefix=f"{label}.")
        calls = _message_calls(item, label) if role == "assistant" else ()
        call_id = rq.field(item, "tool_call_id", str, prefix=f"{label}.") if role == "tool" else None
        thought = rq.field(item, "thinking", str, "", prefix=f"{label}.") if role == "assistant" else ""
        out.append(ChatMessage(role, content, calls, call_id, thought))
    return tuple(out)


def _message_calls(item: dict[str, Any], label: str) -> tuple[ToolCall, ...]:
    """An assistant message's earlier tool calls, Ollama's shape: arguments as an object."""
    calls = []
    for i, call in enumerate(rq.field(item, "tool_calls", list, [], prefix=f"{label}.")):
        where = f"{label}.tool_calls[{i}].function"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest(f"{where}.name must be a string", field=where)
        arguments = function.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise InvalidRequest(f"{where}.arguments must be an object", field=f"{where}.arguments")
        call_id = call.get("id")
        calls.append(ToolCall(call_id if isinstance(call_id, str) else new_call_id(), function["name"], arguments))
    return tuple(calls)


@guarded(ERRORS)
async def chat(request: Request) -> Response:
    req, stream = to_chat_request(await rq.read_json(request))
    events = service_of(request).chat(req)
    return await _generation(events, request, str(req.model), "message", stream=stream, context=False)


def to_chat_request(body: dict[str, Any]) -> tuple[ChatRequest, bool]:
    """Translate a chat body (and whether to stream the answer)."""
    name = rq.model_name(body)
    _refuse_unsupported(body)
    req = ChatRequest(
        model=name,
        messages=_messages(body),
        options=parse_options(body.get("options")),
        keep_alive=rq.keep_alive(body),
        constraints=_constraints(body),
        tools=parse_tools(body.get("tools")),
        truncate=_truncate(body),
        think=parse_think(body.get("think")),
    )
    return req, bool(rq.field(body, "stream", bool, True))


def model_entry(model: Model) -> dict[str, Any]:
    return {
        "name": model.name,
        "model": model.name,
        "modified_at": timestamp(model.stored.modified_at),
        "size": model.stored.manifest.size,
        "digest": model.stored.manifest.digest.removeprefix("sha256:"),
        "details": model.details.as_dict(),
    }


def damaged_entry(model: DamagedModel) -> dict[str, Any]:
    """A model that cannot be read, listed as Ollama lists any model, with `damaged` (localllm's own) saying why."""
    return {
        "name": model.name,
        "model": model.name,
        "modified_at": timestamp(model.stored.modified_at),
        "size": model.stored.manifest.size,
        "digest": model.stored.manifest.digest.removeprefix("sha256:"),
        "details": ModelDetails().as_dict(),
        "damaged": model.problem,
    }


async def tags(request: Request) -> Response:
    damaged: list[DamagedModel] = []
    models = [model_entry(m) for m in service_of(request).list_models(damaged)]
    return JSONResponse({"models": models + [damaged_entry(m) for m in damaged]})


def _name_field(body: dict[str, Any]) -> str:
    return "model" if body.get("model") is not None or body.get("name") is None else "name"


def _parameters_text(model: Model) -> str:
    lines = []
    for key, value in model.parameters.as_dict().items():
        for v in value if isinstance(value, list) else [value]:
            lines.append(f"{key:<30} {_quote(v) if isinstance(v, str) else v}")
    return "\n".join(lines)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _modelfile(model: Model, store: Store) -> str:
    """The model as a Modelfile that `localllm create -f` (or `modelfile.parse`) reads back to the same model:
    FROM and ADAPTER name the blobs, then its template, system text, parameters, messages and license."""
    try:
        text = _format_modelfile(model, store)
    except ValueError as exc:  # Ollama's format has no escapes: a rare text cannot be written in it
        return f'# this model cannot be written as a Modelfile: {exc}\nFROM "{model.path}"\n'
    return '# Modelfile generated by "localllm show"\n' + text


def _format_modelfile(model: Model, store: Store) -> str:
    return modelfile.format(
        modelfile.Modelfile(
            from_=str(model.path),
            parameters=model.parameters.as_dict(),
            template=model.template,
            system=model.system,
            adapters=tuple(
                str(store.blob_path(layer.digest))
                for layer in model.stored.manifest.layers
                if layer.media_type == MEDIA_ADAPTER
            ),
            license=model.license,
            messages=model.messages,
        )
    )


@guarded(ERRORS)
async def show(request: Request) -> Response:
    body = await rq.read_json(request)
    model = service_of(request).model(rq.model_name(body, _name_field(body)))
    verbose = rq.field(body, "verbose", bool, False)
    from ....modelstore.gguf import read_metadata

    # verbose reads the vocabulary (bounded by limits.GGUF_MAX_VERBOSE_ARRAY): in a thread, off the event loop
    info = await asyncio.to_thread(read_metadata, model.path, verbose=True) if verbose else dict(model.info.metadata)
    info["general.parameter_count"] = model.info.parameter_count
    return JSONResponse(
        {
            "modelfile": _modelfile(model, service_of(request).store),
            "parameters": _parameters_text(model),
            "template": model.template or "",
            "system": model.system or "",
            "details": model.details.as_dict(),
            "model_info": info,
            "capabilities": await service_of(request).templates.capabilities(model),
            "modified_at": timestamp(model.stored.modified_at),
            **({"license": "\n\n".join(model.license)} if model.license else {}),
            **(
                {"messages": [{"role": m.role, "content": m.content} for m in model.messages]} if model.messages else {}
            ),
        }
    )


@guarded(ERRORS)
async def pull(request: Request) -> Response:
    body = await rq.read_json(request)
    name = rq.model_name(body, _name_field(body))
    stream = rq.field(body, "stream", bool, True)

    async def lines() -> AsyncGenerator[dict[str, Any], None]:
        async with contextlib.aclosing(create.pull(service_of(request), name)) as progress:
            async for step in progress:
                yield step.as_dict()

    return await stream_or_whole(lines(), request, stream=stream)


@guarded(ERRORS)
async def delete(request: Request) -> Response:
    body = await rq.read_json(request)
    await service_of(request).delete(rq.model_name(body, _name_field(body)))
    return Response(status_code=200)


@guarded(ERRORS)
async def copy(request: Request) -> Response:
    body = await rq.read_json(request)
    service_of(request).copy(rq.model_name(body, "source"), rq.model_name(body, "destination"))
    return Response(status_code=200)


async def ps(request: Request) -> Response:
    models = []
    for m in service_of(request).loaded():
        entry = {
            "name": m.name,
            "model": m.name,
            "size": m.size,
            "digest": m.digest.removeprefix("sha256:"),
            "details": m.details.as_dict(),
            "expires_at": timestamp(m.expires_at) if math.isfinite(m.expires_at) else "2318-01-01T00:00:00Z",
            "size_vram": m.size_vram,
            "context_length": m.context_length,
            "kv_cache_type": m.kv_cache_type,
        }
        if m.prompt_cache is not None:  # localllm's own field (Ollama's clients ignore it)
            entry["prompt_cache"] = m.prompt_cache.as_dict()
        if m.devices:  # localllm's own: a model split across RPC workers (docs/workers.md)
            entry["devices"] = [
                {"name": d.name, "where": d.where or "local", "layers": d.layers, "size": d.memory, "free": d.free}
                for d in m.devices
            ]
        models.append(entry)
    return JSONResponse({"models": models})


async def root(request: Request) -> Response:
    return PlainTextResponse("localllm is running")


async def version(request: Request) -> Response:
    return JSONResponse({"version": __version__})


routes = [
    Route("/", root, methods=["GET", "HEAD"]),
    Route("/api/version", version, methods=["GET", "HEAD"]),
    Route("/api/tags", tags, methods=["GET", "HEAD"]),
    Route("/api/ps", ps, methods=["GET"]),
    Route("/api/show", show, methods=["POST"]),
    Route("/api/pull", pull, methods=["POST"]),
    Route("/api/delete", delete, methods=["DELETE"]),
    Route("/api/copy", copy, methods=["POST"]),
    Route("/api/generate", generate, methods=["POST"]),
    Route("/api/chat", chat, methods=["POST"]),
]
