"""OpenAI's API (`/v1/*`): translators onto the same service, framed as SSE or one JSON object.

`n` choices (and several prompts on `/v1/completions`) run as concurrent generations, which the runner
batches; their streamed chunks interleave, each carrying its choice `index`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import EngineError, ModelNotFound
from ..names import parse_name
from ..service import Service
from ..tools import HeldText, parse_tool_calls
from ..types import Done, Token, TokenLogprob, ToolCall
from . import requests as rq
from .dialect import merged
from .errors import headers_of, openai_error, status_of
from .openai_requests import Shape, to_chat_request, to_completion_request
from .streaming import ClientGone, EventStream, prepend, sse_event, until_disconnect

FINISH = {"stop": "stop", "length": "length", "cancel": "stop"}
SYSTEM_FINGERPRINT = "fp_localllm"
Events = AsyncGenerator[Token | Done, None]


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def error_response(exc: BaseException) -> JSONResponse:
    return JSONResponse(openai_error(exc), status_code=status_of(exc), headers=headers_of(exc))


def _seeded(options: Any, i: int) -> Any:
    """Choice `i` of `n`: the same seed gives the same choices, and the choices differ from each other."""
    return options if options.seed is None or i == 0 else replace(options, seed=options.seed + i)


async def chat_completions(request: Request) -> Response:
    try:
        body = await rq.read_json(request)
        req, shape = to_chat_request(body)
    except Exception as exc:
        return error_response(exc)
    service = _service(request)
    streams = [service.chat(replace(req, options=_seeded(req.options, i))) for i in range(shape.n)]
    return await _answer(request, streams, [0] * shape.n, model=body["model"], chat=True, shape=shape)


async def completions(request: Request) -> Response:
    try:
        body = await rq.read_json(request)
        reqs, shape = to_completion_request(body)
    except Exception as exc:
        return error_response(exc)
    service = _service(request)
    each = shape.best_of  # candidates per prompt (n unless best_of asks for more)
    streams = [service.generate(replace(r, options=_seeded(r.options, i))) for r in reqs for i in range(each)]
    groups = [g for g in range(len(reqs)) for _ in range(each)]
    echoes = [r.prompt for r in reqs for _ in range(each)] if shape.echo else []
    return await _answer(request, streams, groups, model=body["model"], chat=False, shape=shape, echoes=echoes)


def _best(tokens: Sequence[Sequence[Token]], groups: Sequence[int], n: int) -> list[int]:
    """Of each prompt's candidates, the `n` with the highest mean log-probability per token, best first."""

    def score(i: int) -> float:
        lps = [lp.logprob for t in tokens[i] for lp in t.logprobs]
        return sum(lps) / len(lps) if lps else -math.inf

    kept = []
    for group in dict.fromkeys(groups):
        candidates = [i for i, g in enumerate(groups) if g == group]
        kept += sorted(candidates, key=score, reverse=True)[:n]
    return kept


def _usage(dones: Sequence[Done], groups: Sequence[int]) -> dict[str, Any]:
    """Usage over all choices: each prompt counted once, every choice's completion counted."""
    prompt = cached = 0
    seen: set[int] = set()
    for done, group in zip(dones, groups, strict=True):
        if group not in seen:
            seen.add(group)
            prompt += done.prompt_eval_count + done.cached_tokens
            cached += done.cached_tokens
    completion = sum(d.eval_count for d in dones)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _chat_logprobs(lps: Sequence[TokenLogprob]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": list(lp.bytes),
                "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for _, t, v in lp.top],
            }
            for lp in lps
        ],
        "refusal": None,
    }


def _legacy_logprobs(lps: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
    offsets = []
    for lp in lps:
        offsets.append(offset)
        offset += len(lp.token)
    return {
        "tokens": [lp.token for lp in lps],
        "token_logprobs": [lp.logprob for lp in lps],
        "top_logprobs": [{t: v for _, t, v in lp.top} for lp in lps],
        "text_offset": offsets,
    }


def _tool_call_dicts(calls: Sequence[ToolCall], *, indexed: bool = False) -> list[dict[str, Any]]:
    """OpenAI's `tool_calls`: arguments as a JSON string; in a stream's delta each call has its `index`."""
    out = []
    for k, call in enumerate(calls):
        item: dict[str, Any] = {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
        }
        out.append({"index": k, **item} if indexed else item)
    return out


def _merge(streams: list[Events], firsts: list[Token | Done]) -> AsyncGenerator[tuple[int, Token | Done], None]:
    """The events of every stream (each after its first, already read) as they come, tagged with the stream's
    index; closing closes them all."""
    return merged([prepend(first, stream) for first, stream in zip(firsts, streams, strict=True)])


async def _answer(
    request: Request,
    streams: list[Events],
    groups: list[int],
    *,
    model: str,
    chat: bool,
    shape: Shape,
    echoes: Sequence[str] = (),
) -> Response:
    """Frame generations as a chat completion or a text completion, streamed as SSE or whole.

    `echoes` (text completions with `echo`) are each stream's prompt, sent back before its completion."""
    cid = f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}"
    created = int(time.time())
    try:
        # Every stream's first event or error: none is still running when they are closed (a generator that
        # is closed while it runs raises RuntimeError, a 500 where the first error is the answer).
        results = await until_disconnect(
            asyncio.gather(*(s.__anext__() for s in streams), return_exceptions=True), request
        )
    except ClientGone:
        return Response(status_code=499)
    failed = next((r for r in results if isinstance(r, BaseException)), None)
    if failed is not None:
        for stream in streams:
            await stream.aclose()
        return error_response(failed if isinstance(failed, Exception) else RuntimeError(str(failed)))
    firsts = [r for r in results if not isinstance(r, BaseException)]
    chunk_object = "chat.completion.chunk" if chat else "text_completion"

    def envelope(obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": cid,
            "object": obj,
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        }

    if shape.stream:

        async def chunks() -> AsyncGenerator[Any, None]:
            dones: list[Done | None] = [None] * len(streams)
            offsets = [0] * len(streams)
            extra = {"usage": None} if shape.include_usage else {}
            if chat:
                for i in range(len(streams)):
                    opening = {
                        "index": i,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                    yield {**envelope(chunk_object, [opening]), **extra}
            for i, echo in enumerate(echoes):
                opening = {"index": i, "text": echo, "logprobs": None, "finish_reason": None}
                yield {**envelope(chunk_object, [opening]), **extra}
                offsets[i] = len(echo)
            held = [HeldText() if shape.tools else None for _ in streams]
            async with contextlib.aclosing(_merge(streams, firsts)) as events:
                async for i, event in events:
                    hold = held[i]
                    if isinstance(event, Token):
                        if hold is not None:
                            if hold.take(event, forced=shape.forced):
                                continue
                            event, held[i] = hold.release(), None
                        choice: dict[str, Any] = {"index": i, "logprobs": None, "finish_reason": None}
                        if chat:
                            choice["delta"] = {"content": event.text}
                            if event.logprobs:
                                choice["logprobs"] = _chat_logprobs(event.logprobs)
                        else:
                            choice["text"] = event.text
                            if event.logprobs:
                                choice["logprobs"] = _legacy_logprobs(event.logprobs, offsets[i])
                            offsets[i] += len(event.text)
                        yield {**envelope(chunk_object, [choice]), **extra}
                        continue
                    dones[i] = event
                    finish = FINISH.get(event.reason, "stop")
                    if hold is not None and hold.parts:
                        calls = parse_tool_calls(hold.text, shape.tools)
                        if calls:
                            finish = "tool_calls"
                            delta: dict[str, Any] = {"tool_calls": _tool_call_dicts(calls, indexed=True)}
                        else:
                            pending = hold.release()
                            lps = _chat_logprobs(pending.logprobs) if pending.logprobs else None
                            delta = {"content": pending.text}
                        opening = {"index": i, "delta": delta, "logprobs": None, "finish_reason": None}
                        if "content" in delta:
                            opening["logprobs"] = lps
                        yield {**envelope(chunk_object, [opening]), **extra}
                    choice = {"index": i, "logprobs": None, "finish_reason": finish}
                    if chat:
                        choice["delta"] = {}
                    else:
                        choice["text"] = ""
                    yield {**envelope(chunk_object, [choice]), **extra}
            if shape.include_usage:
                yield {**envelope(chunk_object, []), "usage": _usage([d for d in dones if d], groups)}

        return EventStream(
            chunks(),
            frame=sse_event,
            on_error=openai_error,
            media_type="text/event-stream",
            trailer=sse_event("[DONE]"),
        )

    async def collect() -> tuple[list[list[Token]], list[Done]]:
        tokens: list[list[Token]] = [[] for _ in streams]
        dones: list[Done | None] = [None] * len(streams)
        async with contextlib.aclosing(_merge(streams, firsts)) as events:
            async for i, event in events:
                if isinstance(event, Token):
                    tokens[i].append(event)
                else:
                    dones[i] = event
        if any(d is None for d in dones):
            raise EngineError("a generation ended without a result")
        return tokens, [d for d in dones if d is not None]

    try:
        tokens, dones = await until_disconnect(collect(), request)
    except ClientGone:
        return Response(status_code=499)
    except Exception as exc:
        return error_response(exc)
    kept = _best(tokens, groups, shape.n) if shape.best_of > shape.n else list(range(len(streams)))
    choices = []
    for i, k in enumerate(kept):
        parts, done = tokens[k], dones[k]
        text = (echoes[k] if echoes else "") + "".join(t.text for t in parts)
        lps = [lp for t in parts for lp in t.logprobs] if shape.logprobs else []
        finish = FINISH.get(done.reason, "stop")
        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
            calls = parse_tool_calls(text, shape.tools) if shape.tools else None
            if calls:
                message = {**message, "content": None, "tool_calls": _tool_call_dicts(calls)}
                finish = "tool_calls"
            choices.append(
                {
                    "index": i,
                    "message": message,
                    "logprobs": _chat_logprobs(lps) if lps else None,
                    "finish_reason": finish,
                }
            )
        else:
            choices.append(
                {
                    "index": i,
                    "text": text,
                    "logprobs": _legacy_logprobs(lps, 0) if lps else None,
                    "finish_reason": finish,
                }
            )
    obj = "chat.completion" if chat else "text_completion"
    return JSONResponse({**envelope(obj, choices), "usage": _usage(dones, groups)})


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
