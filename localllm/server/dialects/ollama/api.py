"""Ollama's native API (`/api/*`): NDJSON streams, `{"error": ...}` bodies, durations in nanoseconds."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .... import __version__
from ....domain.events import Event, ToolCallArguments, ToolCallStart
from ....modelstore import modelfile
from ....modelstore.models import DamagedModel, Model
from ....modelstore.store import MEDIA_ADAPTER, MEDIA_DRAFT, Store
from ....service import create
from ....service.generation import collect
from ... import requests as rq
from ...errors import ErrorShape, guarded, message_of
from ...replies import NDJSON, AccessToken, OllamaError, path_parameter, reply, responses
from ...streaming import EventStream, first_item, ndjson_line, prepend, until_disconnect
from ...wire import request_body
from ..shared import service_of
from . import replies as r
from . import wire
from .encode import Line, damaged_entry, encode, encode_whole, model_entry, timestamp
from .requests import named, to_chat_request, to_generate_request


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


async def _generation(
    events: AsyncGenerator[Event, None], request: Request, model: str, key: str, *, stream: bool, context: bool
) -> Response:
    """A generation streamed as NDJSON (its first event awaited first, so early errors get a real status), or
    whole."""
    if not stream:
        answer = await until_disconnect(collect(events), request)
        return reply(encode_whole(answer, model, key, context=context))

    async def lines(items: AsyncGenerator[Event, None]) -> AsyncGenerator[Line, None]:
        async with contextlib.aclosing(items):
            async for event in items:
                if not isinstance(event, ToolCallStart | ToolCallArguments):  # Ollama sends calls whole
                    yield encode(event, model, key, context=context)

    first = await first_item(events, request)
    return EventStream(
        lines(prepend(first, events)), frame=ndjson_line, on_error=ollama_error, media_type="application/x-ndjson"
    )


@guarded(ERRORS)
async def generate(request: Request) -> Response:
    req, stream = to_generate_request(await rq.read_wire(request, wire.GenerateBody))
    events = service_of(request).generate(req)
    return await _generation(events, request, str(req.model), "response", stream=stream, context=not req.raw)


@guarded(ERRORS)
async def chat(request: Request) -> Response:
    req, stream = to_chat_request(await rq.read_wire(request, wire.ChatBody))
    events = service_of(request).chat(req)
    return await _generation(events, request, str(req.model), "message", stream=stream, context=False)


async def tags(request: Request) -> Response:
    damaged: list[DamagedModel] = []
    models = [model_entry(m) for m in service_of(request).list_models(damaged)]
    return JSONResponse({"models": models + [damaged_entry(m) for m in damaged]})


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
    FROM (and a second FROM, its projector) and ADAPTER name the blobs, then its template, system text,
    parameters, messages and license."""
    try:
        text = _format_modelfile(model, store)
    except ValueError as exc:  # Ollama's format has no escapes: a rare text cannot be written in it
        return f'# this model cannot be written as a Modelfile: {exc}\nFROM "{model.path}"\n'
    return '# Modelfile generated by "localllm show"\n' + text


def _format_modelfile(model: Model, store: Store) -> str:
    return modelfile.format(
        modelfile.Modelfile(
            from_=str(model.path),
            projector=str(model.projector) if model.projector is not None else None,
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
            draft=str(store.blob_path(draft.digest)) if (draft := model.stored.manifest.layer(MEDIA_DRAFT)) else None,
        )
    )


@guarded(ERRORS)
async def show(request: Request) -> Response:
    body = await rq.read_wire(request, wire.ShowBody)
    model = service_of(request).model(named(body))
    verbose = body.verbose
    from ....modelstore.gguf import read_metadata

    # verbose reads the vocabulary (bounded by limits.GGUF_MAX_VERBOSE_ARRAY): in a thread, off the event loop
    info = await asyncio.to_thread(read_metadata, model.path, verbose=True) if verbose else dict(model.info.metadata)
    info["general.parameter_count"] = model.info.parameter_count
    projector: dict[str, Any] = {}  # Ollama's projector_info: the projector GGUF's metadata, as model_info's
    if model.projector is not None and model.projector_info is not None:
        projector = (
            await asyncio.to_thread(read_metadata, model.projector, verbose=True)
            if verbose
            else dict(model.projector_info.metadata)
        )
        projector["general.parameter_count"] = model.projector_info.parameter_count
    return JSONResponse(
        {
            "modelfile": _modelfile(model, service_of(request).store),
            "parameters": _parameters_text(model),
            "template": model.template or "",
            "system": model.system or "",
            "details": model.details.as_dict(),
            "model_info": info,
            **({"projector_info": projector} if projector else {}),
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
    body = await rq.read_wire(request, wire.PullBody)
    name = named(body)
    stream = body.stream

    async def lines() -> AsyncGenerator[dict[str, Any], None]:
        async with contextlib.aclosing(create.pull(service_of(request), name)) as progress:
            async for step in progress:
                yield step.as_dict()

    return await stream_or_whole(lines(), request, stream=stream)


@guarded(ERRORS)
async def delete(request: Request) -> Response:
    body = await rq.read_wire(request, wire.DeleteBody)
    await service_of(request).delete(named(body))
    return Response(status_code=200)


@guarded(ERRORS)
async def copy(request: Request) -> Response:
    body = await rq.read_wire(request, wire.CopyBody)
    service_of(request).copy(rq.name_of(body.source, "source"), rq.name_of(body.destination, "destination"))
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
        if m.swa_full:  # localllm's own: a sliding-window model's full-size cache (LOCALLLM_SWA_FULL)
            entry["swa_full"] = True
        if m.prompt_cache is not None:  # localllm's own field (Ollama's clients ignore it)
            entry["prompt_cache"] = m.prompt_cache.as_dict()
        if m.speculation is not None:  # localllm's own: speculative decoding's drafted and kept tokens
            entry["speculation"] = m.speculation.as_dict()
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


# -- the OpenAPI paths: request bodies are the wire models' schemas, answers the reply models' -----------------


def paths() -> dict[str, Any]:
    err = OllamaError
    return {
        "/": {"get": {"summary": "liveness", "responses": {"200": {"description": "Ollama is running"}}}},
        "/api/version": {"get": {"summary": "daemon version", "responses": responses(err, r.OllamaVersion)}},
        "/api/tags": {"get": {"summary": "local models", "responses": responses(err, r.OllamaTags)}},
        "/api/ps": {"get": {"summary": "loaded models", "responses": responses(err, r.OllamaLoaded)}},
        "/api/show": {
            "post": {
                "summary": "a model's details",
                "requestBody": request_body(wire.ShowBody),
                "responses": responses(err, r.OllamaShow),
            }
        },
        "/api/pull": {
            "post": {
                "summary": "download a model",
                "requestBody": request_body(wire.PullBody),
                "responses": responses(err, r.OllamaProgress, stream=(NDJSON, (r.OllamaProgress, err))),
            }
        },
        "/api/delete": {
            "delete": {
                "summary": "delete a model",
                "requestBody": request_body(wire.DeleteBody),
                "responses": responses(err),
            }
        },
        "/api/copy": {
            "post": {
                "summary": "copy a model under another name",
                "requestBody": request_body(wire.CopyBody),
                "responses": responses(err),
            }
        },
        "/api/generate": {
            "post": {
                "summary": "complete a prompt",
                "requestBody": request_body(wire.GenerateBody),
                "responses": responses(err, r.OllamaGenerateLine, stream=(NDJSON, (r.OllamaGenerateLine, err))),
            }
        },
        "/api/chat": {
            "post": {
                "summary": "chat",
                "requestBody": request_body(wire.ChatBody),
                "responses": responses(err, r.OllamaChatLine, stream=(NDJSON, (r.OllamaChatLine, err))),
            }
        },
        "/api/create": {
            "post": {
                "summary": "create a model (Modelfile fields)",
                "requestBody": request_body(wire.CreateBody),
                "responses": responses(err, r.OllamaProgress, stream=(NDJSON, (r.OllamaProgress, err))),
            }
        },
        "/api/verify": {
            "post": {
                "summary": "hash the store's blobs again (localllm's own): one line a blob, damaged ones moved aside",
                "requestBody": request_body(wire.VerifyBody),
                "responses": responses(err, r.OllamaVerifyLine, stream=(NDJSON, (r.OllamaVerifyLine, err))),
            }
        },
        "/api/blobs/{digest}": {
            "parameters": path_parameter("digest"),
            "head": {
                "summary": "whether a blob exists",
                "responses": {"200": {"description": "present"}, "404": {"description": "absent"}},
            },
            "post": {
                "summary": "upload a blob",
                "requestBody": {
                    "required": True,
                    "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                },
                "responses": responses(err),
            },
        },
        "/api/embed": {
            "post": {
                "summary": "embeddings",
                "requestBody": request_body(wire.EmbedBody),
                "responses": responses(err, r.OllamaEmbed),
            }
        },
        "/api/embeddings": {
            "post": {
                "summary": "one embedding (older API)",
                "requestBody": request_body(wire.EmbeddingsBody),
                "responses": responses(err, r.OllamaEmbedding),
            }
        },
        "/api/v1/token": {
            "get": {
                "summary": "trade an app's secret for an access token",
                "parameters": [
                    {"name": "appid", "in": "query", "schema": {"type": "string"}},
                    {"name": "secret", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": responses(err, AccessToken),
            }
        },
    }


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
