"""Ollama's native API (`/api/*`): NDJSON streams, `{"error": ...}` bodies, durations in nanoseconds."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import math
from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .. import __version__, create, modelfile
from ..errors import InvalidRequest
from ..service import ChatRequest, GenerateRequest, Model, Service
from ..store import MEDIA_ADAPTER, Store
from ..tools import HeldText, new_call_id, parse_tool_calls, parse_tools
from ..types import ROLES, ChatMessage, Constraints, Done, Token, Tool, ToolCall, parse_options
from . import requests as rq
from .errors import headers_of, ollama_error, status_of
from .streaming import ClientGone, EventStream, first_item, ndjson_line, prepend, until_disconnect


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def timestamp(t: float | None = None) -> str:
    """RFC 3339 with nanosecond-style precision, as Ollama writes `created_at`."""
    moment = datetime.datetime.fromtimestamp(
        t if t is not None else datetime.datetime.now().timestamp(), tz=datetime.timezone.utc
    )
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def error_response(exc: BaseException) -> JSONResponse:
    return JSONResponse(ollama_error(exc), status_code=status_of(exc), headers=headers_of(exc))


async def _stream_or_error(items: AsyncGenerator[Any, None], request: Request, *, stream: bool) -> Response:
    """Answer with the stream (its first item pulled first, so early errors get a real status), or, with
    `stream: false`, the items merged into one object."""
    try:
        first = await first_item(items, request)
    except StopAsyncIteration:
        return JSONResponse({})
    except ClientGone:
        return Response(status_code=499)
    except Exception as exc:
        await items.aclose()
        return error_response(exc)
    if stream:
        return EventStream(
            prepend(first, items), frame=ndjson_line, on_error=ollama_error, media_type="application/x-ndjson"
        )

    async def merge_all() -> dict[str, Any]:
        merged: dict[str, Any] = first
        async with contextlib.aclosing(items):
            async for item in items:
                merged = _merge(merged, item)
        return merged

    try:
        return JSONResponse(await until_disconnect(merge_all(), request))
    except ClientGone:
        return Response(status_code=499)
    except Exception as exc:
        return error_response(exc)


def _merge(acc: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    out = {**acc, **item}
    if "response" in acc:
        out["response"] = acc["response"] + item.get("response", "")
    if "message" in acc and "message" in item:
        out["message"] = {
            **acc["message"],
            **item["message"],
            "content": acc["message"]["content"] + item["message"]["content"],
        }
    if "logprobs" in acc or "logprobs" in item:
        out["logprobs"] = acc.get("logprobs", []) + item.get("logprobs", [])
    return out


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


def _logprobs(token: Token) -> list[dict[str, Any]]:
    return [
        {
            "token": lp.token,
            "logprob": lp.logprob,
            "bytes": list(lp.bytes),
            "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for _, t, v in lp.top],
        }
        for lp in token.logprobs
    ]


async def _lines(
    events: AsyncGenerator[Token | Done, None],
    model: str,
    key: str,
    *,
    context: bool,
    tools: tuple[Tool, ...] = (),
) -> AsyncGenerator[dict[str, Any], None]:
    """Ollama's stream objects for generate (`key` "response") or chat (`key` "message").

    With `tools`, output that may be a tool call is held back; a call found in it goes out as the
    message's `tool_calls` (arguments as an object), anything else as content."""

    def text(piece: str) -> dict[str, Any]:
        return {"response": piece} if key == "response" else {"message": {"role": "assistant", "content": piece}}

    def chunk(token: Token) -> dict[str, Any]:
        line = {"model": model, "created_at": timestamp(), **text(token.text), "done": False}
        if token.logprobs:
            line["logprobs"] = _logprobs(token)
        return line

    held = HeldText() if tools else None
    async with contextlib.aclosing(events):
        async for event in events:
            if isinstance(event, Token):
                if held is not None:
                    if held.take(event, forced=False):
                        continue
                    event, held = held.release(), None
                yield chunk(event)
                continue
            if held is not None and held.parts:
                calls = parse_tool_calls(held.text, tools)
                if calls:
                    message = {"role": "assistant", "content": "", "tool_calls": _ollama_calls(calls)}
                    yield {"model": model, "created_at": timestamp(), "message": message, "done": False}
                else:
                    yield chunk(held.release())
            line = {"model": model, "created_at": timestamp(), **text(""), **_done_fields(event)}
            if context and event.context and event.reason not in ("load", "unload"):
                line["context"] = list(event.context)
            yield line


def _ollama_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "function": {"index": i, "name": c.name, "arguments": c.arguments}} for i, c in enumerate(calls)
    ]


def _refuse_unsupported(body: dict[str, Any]) -> None:
    """Fields whose meaning we cannot honour yet get a 400 rather than being silently ignored."""
    if body.get("images"):
        raise InvalidRequest("this model has no vision support: images cannot be used", field="images")
    if body.get("think") not in (None, False):
        raise InvalidRequest("this model does not support thinking", field="think")


def _constraints(body: dict[str, Any]) -> Constraints:
    """`format` ("json" or a JSON schema: grammar-constrained), `logprobs` and `top_logprobs` (0-20)."""
    fmt = body.get("format")
    if fmt == "":
        fmt = None
    if fmt is not None and fmt != "json" and not isinstance(fmt, dict):
        raise InvalidRequest('format must be "json" or a JSON schema object', field="format")
    top = rq.field(body, "top_logprobs", int)
    if top is not None and not 0 <= top <= 20:
        raise InvalidRequest("top_logprobs must be between 0 and 20", field="top_logprobs")
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


async def generate(request: Request) -> Response:
    try:
        body = await rq.read_json(request)
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
        )
        stream = rq.field(body, "stream", bool, True)
    except Exception as exc:
        return error_response(exc)

    events = _service(request).generate(req)
    return await _stream_or_error(
        _lines(events, str(req.model), "response", context=not req.raw), request, stream=stream
    )


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
        out.append(ChatMessage(role, content, calls, call_id))
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


async def chat(request: Request) -> Response:
    try:
        body = await rq.read_json(request)
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
        )
        stream = rq.field(body, "stream", bool, True)
    except Exception as exc:
        return error_response(exc)

    events = _service(request).chat(req)
    lines = _lines(events, str(req.model), "message", context=False, tools=req.tools)
    return await _stream_or_error(lines, request, stream=stream)


def model_entry(model: Model) -> dict[str, Any]:
    return {
        "name": model.name,
        "model": model.name,
        "modified_at": timestamp(model.stored.modified_at),
        "size": model.stored.manifest.size,
        "digest": model.stored.manifest.digest.removeprefix("sha256:"),
        "details": model.details.as_dict(),
    }


async def tags(request: Request) -> Response:
    return JSONResponse({"models": [model_entry(m) for m in _service(request).list_models()]})


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


async def show(request: Request) -> Response:
    try:
        body = await rq.read_json(request)
        model = _service(request).model(rq.model_name(body, _name_field(body)))
        verbose = rq.field(body, "verbose", bool, False)
    except Exception as exc:
        return error_response(exc)
    from ..gguf import read_metadata

    # verbose reads the vocabulary (bounded by limits.GGUF_MAX_VERBOSE_ARRAY): in a thread, off the event loop
    info = await asyncio.to_thread(read_metadata, model.path, verbose=True) if verbose else dict(model.info.metadata)
    info["general.parameter_count"] = model.info.parameter_count
    return JSONResponse(
        {
            "modelfile": _modelfile(model, _service(request).store),
            "parameters": _parameters_text(model),
            "template": model.template or "",
            "system": model.system or "",
            "details": model.details.as_dict(),
            "model_info": info,
            "capabilities": model.capabilities,
            "modified_at": timestamp(model.stored.modified_at),
            **({"license": "\n\n".join(model.license)} if model.license else {}),
            **(
                {"messages": [{"role": m.role, "content": m.content} for m in model.messages]} if model.messages else {}
            ),
        }
    )


async def pull(request: Request) -> Response:
    try:
        body = await rq.read_json(request)
        name = rq.model_name(body, _name_field(body))
        stream = rq.field(body, "stream", bool, True)
    except Exception as exc:
        return error_response(exc)

    async def lines() -> AsyncGenerator[dict[str, Any], None]:
        async with contextlib.aclosing(create.pull(_service(request), name)) as progress:
            async for step in progress:
                yield step.as_dict()

    return await _stream_or_error(lines(), request, stream=stream)


async def delete(request: Request) -> Response:
    try:
        body = await rq.read_json(request)
        await _service(request).delete(rq.model_name(body, _name_field(body)))
    except Exception as exc:
        return error_response(exc)
    return Response(status_code=200)


async def copy(request: Request) -> Response:
    try:
        body = await rq.read_json(request)
        _service(request).copy(rq.model_name(body, "source"), rq.model_name(body, "destination"))
    except Exception as exc:
        return error_response(exc)
    return Response(status_code=200)


async def ps(request: Request) -> Response:
    models = []
    for m in _service(request).loaded():
        models.append(
            {
                "name": m.name,
                "model": m.name,
                "size": m.size,
                "digest": m.digest.removeprefix("sha256:"),
                "details": m.details.as_dict(),
                "expires_at": timestamp(m.expires_at) if math.isfinite(m.expires_at) else "2318-01-01T00:00:00Z",
                "size_vram": m.size_vram,
                "context_length": m.context_length,
            }
        )
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
