"""OpenAI's API (`/v1/*`): translators onto the same `Service.chat`, framed as SSE or one JSON object."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import EngineError, InvalidRequest, ModelNotFound
from ..names import parse_name
from ..service import ChatRequest, GenerateRequest, Service
from ..types import ROLES, ChatMessage, Done, Options, Token
from . import requests as rq
from .errors import openai_error, status_of
from .streaming import ClientGone, EventStream, first_item, prepend, sse_event, until_disconnect

FINISH = {"stop": "stop", "length": "length", "cancel": "stop"}
SYSTEM_FINGERPRINT = "fp_localllm"


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def error_response(exc: BaseException) -> JSONResponse:
    return JSONResponse(openai_error(exc), status_code=status_of(exc))


def _content(value: Any, label: str) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequest(
                    f"{label}[{i}] must be a text part ({{'type': 'text', 'text': ...}})", field=f"{label}[{i}]"
                )
            texts.append(part["text"])
        return "".join(texts)
    raise InvalidRequest(f"{label} must be a string or a list of content parts", field=label)


def to_chat_request(body: dict[str, Any]) -> tuple[ChatRequest, bool]:
    """Translate an OpenAI chat completion request; every bad field is a 400 naming it."""
    name = rq.model_name(body)
    raw_messages = rq.field(body, "messages", list, required=True)
    if not raw_messages:
        raise InvalidRequest("messages must hold at least one message", field="messages")
    messages = []
    for i, item in enumerate(raw_messages):
        label = f"messages[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{label} must be an object", field=label)
        role = rq.field(item, "role", str, required=True, prefix=f"{label}.")
        role = "system" if role == "developer" else role
        if role not in ROLES:
            raise InvalidRequest(
                f"{label}.role must be one of system, developer, user, assistant, tool", field=f"{label}.role"
            )
        messages.append(ChatMessage(role, _content(item.get("content"), f"{label}.content")))
    if rq.field(body, "n", int, 1) != 1:
        raise InvalidRequest("n other than 1 is not supported yet", field="n")
    for key in ("tools", "response_format", "logprobs", "logit_bias"):
        value = body.get(key)
        if value and not (key == "response_format" and isinstance(value, dict) and value.get("type") == "text"):
            raise InvalidRequest(f"{key} is not supported yet", field=key)
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise InvalidRequest("stop must be a string or a list of strings", field="stop")
    max_tokens = rq.field(body, "max_completion_tokens", int) or rq.field(body, "max_tokens", int)
    if max_tokens is not None and max_tokens < 1:
        raise InvalidRequest("max_tokens must be at least 1", field="max_tokens")
    temperature = rq.field(body, "temperature", float, 1.0)
    if not 0 <= temperature <= 2:
        raise InvalidRequest("temperature must be between 0 and 2", field="temperature")
    top_p = rq.field(body, "top_p", float, 1.0)
    if not 0 <= top_p <= 1:
        raise InvalidRequest("top_p must be between 0 and 1", field="top_p")
    options = Options(
        temperature=float(temperature),
        top_p=float(top_p),
        num_predict=max_tokens,
        stop=(stop,) if isinstance(stop, str) else tuple(stop) if stop else None,
        seed=rq.field(body, "seed", int),
        presence_penalty=_penalty(body, "presence_penalty"),
        frequency_penalty=_penalty(body, "frequency_penalty"),
    )
    stream = rq.field(body, "stream", bool, False)
    return ChatRequest(model=name, messages=tuple(messages), options=options), stream


def _penalty(body: dict[str, Any], key: str) -> float | None:
    value = rq.field(body, key, float)
    if value is not None and not -2 <= value <= 2:
        raise InvalidRequest(f"{key} must be between -2 and 2", field=key)
    return None if value is None else float(value)


def _usage(done: Done) -> dict[str, Any]:
    prompt = done.prompt_eval_count + done.cached_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": done.eval_count,
        "total_tokens": prompt + done.eval_count,
        "prompt_tokens_details": {"cached_tokens": done.cached_tokens},
    }


async def chat_completions(request: Request) -> Response:
    try:
        body = await rq.read_json(request)
        req, stream = to_chat_request(body)
        include_usage = _include_usage(body) if stream else False
    except Exception as exc:
        return error_response(exc)

    return await _answer(
        request, _service(request).chat(req), model=body["model"], chat=True, stream=stream, include_usage=include_usage
    )


def to_completion_request(body: dict[str, Any]) -> tuple[GenerateRequest, bool]:
    """Translate a legacy completions request: the prompt is used as given (no chat template)."""
    name = rq.model_name(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequest("prompt must be a string (lists of prompts are not supported yet)", field="prompt")
    unsupported = {
        "suffix": bool(body.get("suffix")),
        "echo": bool(body.get("echo")),
        "logprobs": body.get("logprobs") is not None,
        "best_of": body.get("best_of") not in (None, 1),
        "logit_bias": bool(body.get("logit_bias")),
    }
    for key, present in unsupported.items():
        if present:
            raise InvalidRequest(f"{key} is not supported yet", field=key)
    chat, stream = to_chat_request(
        {**body, "messages": [{"role": "user", "content": prompt}], "max_tokens": rq.field(body, "max_tokens", int, 16)}
    )
    return GenerateRequest(model=name, prompt=prompt, raw=True, options=chat.options), stream


async def completions(request: Request) -> Response:
    try:
        body = await rq.read_json(request)
        req, stream = to_completion_request(body)
        include_usage = _include_usage(body) if stream else False
    except Exception as exc:
        return error_response(exc)
    return await _answer(
        request,
        _service(request).generate(req),
        model=body["model"],
        chat=False,
        stream=stream,
        include_usage=include_usage,
    )


def _include_usage(body: dict[str, Any]) -> bool:
    options = rq.field(body, "stream_options", dict, {})
    return bool(rq.field(options, "include_usage", bool, False, prefix="stream_options."))


async def _answer(
    request: Request,
    events: AsyncGenerator[Token | Done, None],
    *,
    model: str,
    chat: bool,
    stream: bool,
    include_usage: bool,
) -> Response:
    """Frame one generation as a chat completion or a text completion, streamed as SSE or whole."""
    cid = f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}"
    created = int(time.time())
    try:
        first = await first_item(events, request)
    except ClientGone:
        return Response(status_code=499)
    except Exception as exc:
        await events.aclose()
        return error_response(exc)

    def envelope(obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": cid,
            "object": obj,
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        }

    def choice(text: str | None, finish: str | None) -> dict[str, Any]:
        if chat:
            delta = {} if text is None else {"content": text}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}

    chunk_object = "chat.completion.chunk" if chat else "text_completion"

    def chunk(text: str | None, finish: str | None) -> dict[str, Any]:
        out = envelope(chunk_object, [choice(text, finish)])
        if include_usage:
            out["usage"] = None
        return out

    if stream:

        async def chunks() -> AsyncGenerator[Any, None]:
            async with contextlib.aclosing(prepend(first, events)) as all_events:
                if chat:
                    opening = chunk(None, None)
                    opening["choices"][0]["delta"] = {"role": "assistant", "content": ""}
                    yield opening
                async for event in all_events:
                    if isinstance(event, Token):
                        yield chunk(event.text, None)
                        continue
                    yield chunk(None, FINISH.get(event.reason, "stop"))
                    if include_usage:
                        yield {**envelope(chunk_object, []), "usage": _usage(event)}

        return EventStream(
            chunks(),
            frame=sse_event,
            on_error=openai_error,
            media_type="text/event-stream",
            trailer=sse_event("[DONE]"),
        )

    async def collect() -> tuple[str, Done]:
        text: list[str] = []
        async with contextlib.aclosing(prepend(first, events)) as all_events:
            async for event in all_events:
                if isinstance(event, Token):
                    text.append(event.text)
                else:
                    return "".join(text), event
        raise EngineError("the generation ended without a result")

    try:
        text, done = await until_disconnect(collect(), request)
    except ClientGone:
        return Response(status_code=499)
    except Exception as exc:
        return error_response(exc)
    finish = FINISH.get(done.reason, "stop")
    if chat:
        choices = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ]
        return JSONResponse({**envelope("chat.completion", choices), "usage": _usage(done)})
    choices = [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]
    return JSONResponse({**envelope("text_completion", choices), "usage": _usage(done)})


def _model_object(name: str, modified_at: float, owner: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(modified_at), "owned_by": owner}


async def list_models(request: Request) -> Response:
    data = [
        _model_object(m.name, m.stored.modified_at, m.stored.name.namespace) for m in _service(request).list_models()
    ]
    return JSONResponse({"object": "list", "data": data})


async def get_model(request: Request) -> Response:
    try:
        raw = request.path_params["model"]
        stored = _service(request).store.find(parse_name(raw))
        if stored is None:
            raise ModelNotFound(f"model '{raw}' not found")
    except Exception as exc:
        return error_response(exc)
    return JSONResponse(_model_object(str(stored.name), stored.modified_at, stored.name.namespace))


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", get_model, methods=["GET"]),
]
