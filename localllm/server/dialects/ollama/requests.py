"""Translate Ollama's wire models (`wire.py`) onto the service's requests: pure functions; what the models
cannot say (cross-field rules, roles in any case, fields we cannot honour yet) is a 400 naming the field here.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, cast

import msgspec

from ....chat.thinking import LEVELS, Think
from ....chat.tools import new_call_id, parse_tools
from ....domain import mediacheck, parts
from ....domain.errors import InvalidRequest
from ....domain.media import Media
from ....domain.messages import ROLES, ChatMessage, ToolCall
from ....domain.names import ModelName
from ....domain.options import Constraints
from ....service.create import CreateRequest
from ....service.generation import ChatRequest, GenerateRequest
from ... import requests as rq
from ...wire import as_model, read_options
from . import wire


def images(raw: list[str] | None, field: str) -> list[Media]:
    """Ollama's `images`: base64 files (a data URL is taken too). Ollama's API has no other field for media, so
    an audio file sent there (WAV, MP3, FLAC, told by its bytes, as `localllm run` sends one) is audio."""
    out = []
    for i, item in enumerate(raw or ()):
        where = f"{field}[{i}]"
        read = mediacheck.data_url if item[:5].lower() == "data:" else mediacheck.decode_base64
        data = read(item, where, kind="image")
        info = mediacheck.sniff(data, where)
        out.append(
            Media("audio" if info is not None and info.format in mediacheck.AUDIO_FORMATS else "image", data, where)
        )
    return out


def named(body: wire.Named) -> ModelName:
    """The model a body names, as `model` or (Ollama's older field) `name`."""
    if body.model is not None or body.name is None:
        return rq.name_of(body.model, "model")
    return rq.name_of(body.name, "name")


def parse_think(raw: Any, *, field: str = "think") -> Think:
    """Ollama's `think`: true, false, or a level ("low", "medium", "high") for models that take one."""
    if raw is None or isinstance(raw, bool) or raw in LEVELS:
        return cast(Think, raw)
    raise InvalidRequest(
        f'invalid {field} value: {json.dumps(raw)} (must be "high", "medium", "low", true, or false)', field=field
    )


def _constraints(body: wire.Generation) -> Constraints:
    """`format` ("json" or a JSON schema: grammar-constrained), `logprobs` and `top_logprobs` (0-20)."""
    if body.top_logprobs and not body.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs set to true", field="top_logprobs")
    fmt = body.format or None
    return Constraints(format=fmt, logprobs=(body.top_logprobs or 0) if body.logprobs else None)


def _context(raw: list[int] | None) -> tuple[int, ...]:
    if not all(t >= 0 for t in raw or ()):
        raise InvalidRequest("context must be a list of token ids", field="context")
    return tuple(raw or ())


def to_generate_request(raw: wire.GenerateBody | dict[str, Any]) -> tuple[GenerateRequest, bool]:
    """Translate a generate body (and whether to stream the answer)."""
    body = as_model(raw, wire.GenerateBody)
    name = rq.name_of(body.model)
    context = _context(body.context)
    if body.raw and (body.template or body.system or context):
        raise InvalidRequest("raw mode does not support template, system, or context", field="raw")
    prompt, media = parts.join([*images(body.images, "images"), parts.text_part(body.prompt, "prompt")])
    for text, where in ((body.system, "system"), (body.suffix, "suffix")):
        parts.text_part(text or "", where)
    req = GenerateRequest(
        model=name,
        prompt=prompt,
        media=media,
        system=body.system,
        raw=body.raw,
        options=read_options(body.options),
        keep_alive=rq.duration_of(body.keep_alive),
        constraints=replace(_constraints(body), context=context),
        suffix=body.suffix or None,
        template=body.template or None,
        truncate=body.truncate,
        think=parse_think(body.think),
    )
    return req, body.stream


def messages(raw: list[wire.OllamaMessage], field: str = "messages", *, media: bool = True) -> tuple[ChatMessage, ...]:
    """Ollama's messages; a message's `images` come before its text (`domain.parts`), where `media` is taken."""
    out = []
    for i, item in enumerate(raw):
        label = f"{field}[{i}]"
        role = item.role.lower()
        if role not in ROLES:
            raise InvalidRequest(
                f"{label}.role must be one of {', '.join(ROLES)}, got {item.role!r}", field=f"{label}.role"
            )
        if item.images and not media:
            raise InvalidRequest(f"{label}.images: a model's own messages cannot hold images", field=f"{label}.images")
        content, items = parts.join(
            [*images(item.images, f"{label}.images"), parts.text_part(item.content, f"{label}.content")]
        )
        calls = _message_calls(item.tool_calls) if role == "assistant" else ()
        call_id = item.tool_call_id if role == "tool" else None
        thought = item.thinking or "" if role == "assistant" else ""
        out.append(ChatMessage(role, content, calls, call_id, thought, items))
    return tuple(out)


def _message_calls(raw: list[wire.OllamaToolCall] | None) -> tuple[ToolCall, ...]:
    """An assistant message's earlier tool calls, Ollama's shape: arguments as an object."""
    return tuple(
        ToolCall(call.id if call.id is not None else new_call_id(), call.function.name, call.function.arguments or {})
        for call in raw or ()
    )


def to_chat_request(raw: wire.ChatBody | dict[str, Any]) -> tuple[ChatRequest, bool]:
    """Translate a chat body (and whether to stream the answer)."""
    body = as_model(raw, wire.ChatBody)
    name = rq.name_of(body.model)
    if body.images:
        raise InvalidRequest("images go on a message (messages[].images), not on the request", field="images")
    req = ChatRequest(
        model=name,
        messages=messages(body.messages),
        options=read_options(body.options),
        keep_alive=rq.duration_of(body.keep_alive),
        constraints=_constraints(body),
        tools=parse_tools(msgspec.to_builtins(body.tools)),
        truncate=body.truncate,
        think=parse_think(body.think),
    )
    return req, body.stream


def embed_inputs(value: str | list[str] | None) -> list[str]:
    """`input` of `/api/embed`: a string or a non-empty list of strings; missing or "" is no input at all."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if not value:
        raise InvalidRequest("input must not be an empty list", field="input")
    return value


def to_create_request(raw: wire.CreateBody | dict[str, Any]) -> CreateRequest:
    """Ollama's create body: `model`, `from` or `files`, and the layers of the model's own."""
    body = as_model(raw, wire.CreateBody)
    name = named(body)
    if body.modelfile:
        raise InvalidRequest(
            "modelfile is the old form of create: send from/files/parameters/... (localllm create -f does)",
            field="modelfile",
        )
    if body.quantize:
        raise InvalidRequest("quantize is not supported: pull the quantization you want", field="quantize")
    license = (body.license,) if isinstance(body.license, str) else body.license
    return CreateRequest(
        model=name,
        from_=body.from_,
        files=dict(body.files or {}),
        adapters=dict(body.adapters or {}),
        draft=body.draft,
        template=body.template,
        system=body.system,
        parameters=read_options(body.parameters, field="parameters") if body.parameters else None,
        messages=messages(body.messages, media=False) if body.messages is not None else None,
        license=tuple(license) if license is not None else None,
    )
