"""OpenAI's API (`/v1/*`): translators onto the same service, framed as SSE or one JSON object.

`n` choices (and several prompts on `/v1/completions`) run as concurrent generations, which the runner
batches; their streamed chunks interleave, each carrying its choice `index`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ....domain.errors import (
    ContextLengthExceeded,
    EngineError,
    InvalidRequest,
    ModelNotFound,
    QuotaExceeded,
    Unauthorized,
)
from ....domain.events import Done, Event, Thinking, Token, TokenLogprob, ToolCallArguments, ToolCalls, ToolCallStart
from ....domain.messages import ToolCall
from ....domain.names import parse_name
from ....modelstore.models import Model
from ....modelstore.store import StoredModel
from ....service.generation import Answer
from ... import requests as rq
from ...errors import ErrorShape, guarded, message_of, status_of
from ...schema import ANY_LIST, INT, OPENAI_ERROR, SSE, STR, STRINGS, obj, path_parameter, responses
from ...streaming import EventStream, prepend, sse_event, until_disconnect
from ...wire import request_body
from ..shared import collect_all, default_model, merged, service_of
from . import wire
from .requests import Shape, to_chat_request, to_completion_request

FINISH = {"stop": "stop", "length": "length", "cancel": "stop"}
SYSTEM_FINGERPRINT = "fp_localllm"
Events = AsyncGenerator[Event, None]


def openai_error(exc: BaseException) -> dict[str, Any]:
    status = status_of(exc)
    kind = "insufficient_quota" if status == 429 else "invalid_request_error" if status < 500 else "server_error"
    code: str | None = None
    if isinstance(exc, Unauthorized):
        code = "invalid_api_key"
    elif isinstance(exc, QuotaExceeded):
        code = "insufficient_quota"
    elif isinstance(exc, ContextLengthExceeded):
        code = "context_length_exceeded"
    elif isinstance(exc, ModelNotFound):
        code = "model_not_found"
    param = exc.field if isinstance(exc, InvalidRequest) else None
    return {"error": {"message": message_of(exc), "type": kind, "param": param, "code": code}}


ERRORS = ErrorShape(openai_error)
error_response = ERRORS.response


def _seeded(options: Any, i: int) -> Any:
    """Choice `i` of `n`: the same seed gives the same choices, and the choices differ from each other."""
    return options if options.seed is None or i == 0 else replace(options, seed=options.seed + i)


@guarded(ERRORS)
async def chat_completions(request: Request) -> Response:
    service = service_of(request)
    body = await rq.read_wire(request, wire.ChatCompletionRequest)
    model = default_model(body.model, service)  # InferenceClient's "dummy", or none
    req, shape = to_chat_request(msgspec.structs.replace(body, model=model))
    streams = [service.chat(replace(req, options=_seeded(req.options, i))) for i in range(shape.n)]
    return await _answer(request, streams, Framing.new(model, True, shape, [0] * shape.n))


@guarded(ERRORS)
async def completions(request: Request) -> Response:
    service = service_of(request)
    body = await rq.read_wire(request, wire.CompletionRequest)
    model = default_model(body.model, service)
    reqs, shape = to_completion_request(msgspec.structs.replace(body, model=model))
    each = shape.best_of  # candidates per prompt (n unless best_of asks for more)
    streams = [service.generate(replace(r, options=_seeded(r.options, i))) for r in reqs for i in range(each)]
    groups = [g for g in range(len(reqs)) for _ in range(each)]
    echoes = [r.prompt for r in reqs for _ in range(each)] if shape.echo else []
    return await _answer(request, streams, Framing.new(model, False, shape, groups, echoes))


@dataclass(frozen=True)
class Framing:
    """What every object of one answer shares: its id, time, model and kind (chat or text completion), how
    it is shaped, the prompt each generation belongs to, and the prompts echoed (`echo`), one per generation."""

    id: str
    created: int
    model: str
    chat: bool
    shape: Shape
    groups: tuple[int, ...]
    echoes: tuple[str, ...] = ()

    @classmethod
    def new(cls, model: str, chat: bool, shape: Shape, groups: Sequence[int], echoes: Sequence[str] = ()) -> Framing:
        cid = f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}"
        return cls(cid, int(time.time()), model, chat, shape, tuple(groups), tuple(echoes))

    @property
    def chunk_object(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    def envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        }


async def _answer(request: Request, streams: list[Events], framing: Framing) -> Response:
    """Generations as a chat completion or a text completion, streamed as SSE or whole."""
    if not framing.shape.stream:
        answers = await collect_all(streams, request)
        return JSONResponse(whole(framing, answers))
    # Every generation's first event or error, so that an early error in any of them is answered with a status;
    # none is still running when they are closed (closing a generator while it runs raises RuntimeError: a 500
    # where the first error is the answer).
    try:
        results = await until_disconnect(
            asyncio.gather(*(s.__anext__() for s in streams), return_exceptions=True), request
        )
    except BaseException:
        for stream in streams:
            await stream.aclose()
        raise
    failed = next((r for r in results if isinstance(r, BaseException)), None)
    if failed is not None:
        for stream in streams:
            await stream.aclose()
        raise failed
    firsts = [r for r in results if not isinstance(r, BaseException)]
    events = merged([prepend(first, stream) for first, stream in zip(firsts, streams, strict=True)])
    return EventStream(
        chunks(framing, events, len(streams)),
        frame=sse_event,
        on_error=openai_error,
        media_type="text/event-stream",
        trailer=sse_event("[DONE]"),
    )


# -- encoders: events to OpenAI's objects ----------------------------------------------------------------


async def chunks(
    framing: Framing, events: AsyncGenerator[tuple[int, Event], None], n: int
) -> AsyncGenerator[dict[str, Any], None]:
    """The stream's chunks: each choice's opening, then one chunk per event of any choice (tagged with its
    index), then the usage when asked for."""
    extra = {"usage": None} if framing.shape.include_usage else {}
    dones: list[Done | None] = [None] * n
    offsets = [0] * n  # where each text completion's next piece begins (legacy log-probabilities)
    called = [False] * n
    streamed = [False] * n  # the choice's calls went out as deltas (their whole `ToolCalls` adds nothing)
    if framing.chat:
        for i in range(n):
            opening = {
                "index": i,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            yield {**framing.envelope(framing.chunk_object, [opening]), **extra}
    for i, echo in enumerate(framing.echoes):
        opening = {"index": i, "text": echo, "logprobs": None, "finish_reason": None}
        yield {**framing.envelope(framing.chunk_object, [opening]), **extra}
        offsets[i] = len(echo)
    async with contextlib.aclosing(events):
        async for i, event in events:
            if isinstance(event, Token):
                choice = token_choice(framing.chat, i, event, offsets[i])
                offsets[i] += len(event.text)
            elif isinstance(event, Thinking) and framing.chat:  # as llama-server, vLLM and DeepSeek's API
                choice = {
                    "index": i,
                    "delta": {"reasoning_content": event.text},
                    "logprobs": None,
                    "finish_reason": None,
                }
            elif isinstance(event, ToolCallStart | ToolCallArguments) and framing.chat:
                streamed[i] = True
                choice = {"index": i, "delta": {"tool_calls": [_call_delta(event)]}, "logprobs": None}
                choice["finish_reason"] = None
            elif isinstance(event, ToolCalls):
                called[i] = True
                if streamed[i]:
                    continue
                calls = {"tool_calls": _tool_call_dicts(event.calls, indexed=True)}
                choice = {"index": i, "delta": calls, "logprobs": None, "finish_reason": None}
            elif isinstance(event, Done):
                dones[i] = event
                finish = "tool_calls" if called[i] else FINISH.get(event.reason, "stop")
                choice = {"index": i, "logprobs": None, "finish_reason": finish}
                if framing.chat:
                    choice["delta"] = {}
                else:
                    choice["text"] = ""
            else:
                continue  # reasoning has no place in a text completion
            yield {**framing.envelope(framing.chunk_object, [choice]), **extra}
    if framing.shape.include_usage:
        yield {**framing.envelope(framing.chunk_object, []), "usage": _usage([d for d in dones if d], framing.groups)}


def token_choice(chat: bool, i: int, token: Token, offset: int) -> dict[str, Any]:
    """A streamed piece of choice `i`: a chat delta, or a text completion's text at `offset`."""
    choice: dict[str, Any] = {"index": i, "logprobs": None, "finish_reason": None}
    if chat:
        choice["delta"] = {"content": token.text}
        if token.logprobs:
            choice["logprobs"] = _chat_logprobs(token.logprobs)
    else:
        choice["text"] = token.text
        if token.logprobs:
            choice["logprobs"] = _legacy_logprobs(token.logprobs, offset)
    return choice


def whole(framing: Framing, answers: Sequence[Answer]) -> dict[str, Any]:
    """The whole completion: the choices kept (the `n` most likely of `best_of`), and the usage of all."""
    shape = framing.shape
    if shape.best_of > shape.n:
        kept = _best(answers, framing.groups, shape.n)
    else:
        kept = list(range(len(answers)))
    choices = [
        whole_choice(framing, i, answers[k], framing.echoes[k] if framing.echoes else "") for i, k in enumerate(kept)
    ]
    obj = "chat.completion" if framing.chat else "text_completion"
    return {**framing.envelope(obj, choices), "usage": _usage([a.done for a in answers], framing.groups)}


def whole_choice(framing: Framing, i: int, answer: Answer, echo: str) -> dict[str, Any]:
    text = echo + answer.text
    lps = answer.logprobs if framing.shape.logprobs else []
    finish = FINISH.get(answer.done.reason, "stop")
    if not framing.chat:
        return {
            "index": i,
            "text": text,
            "logprobs": _legacy_logprobs(lps, 0) if lps else None,
            "finish_reason": finish,
        }
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if answer.thinking:
        message["reasoning_content"] = answer.thinking
    if answer.tool_calls:
        # the text the model wrote before its calls stays the answer's, as llama-server and OpenAI return it
        message = {**message, "content": text or None, "tool_calls": _tool_call_dicts(answer.tool_calls)}
        finish = "tool_calls"
    return {"index": i, "message": message, "logprobs": _chat_logprobs(lps) if lps else None, "finish_reason": finish}


def _best(answers: Sequence[Answer], groups: Sequence[int], n: int) -> list[int]:
    """Of each prompt's candidates, the `n` with the highest mean log-probability per token, best first."""

    def score(i: int) -> float:
        lps = [lp.logprob for lp in answers[i].logprobs]
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


def _call_delta(event: ToolCallStart | ToolCallArguments) -> dict[str, Any]:
    """A streamed call's delta, as OpenAI's: the first carries its id and name (`arguments` empty), the
    others a piece of its arguments."""
    if isinstance(event, ToolCallStart):
        function = {"name": event.name, "arguments": ""}
        return {"index": event.index, "id": event.id, "type": "function", "function": function}
    return {"index": event.index, "function": {"arguments": event.text}}


def _tool_call_dicts(calls: Sequence[ToolCall], *, indexed: bool = False) -> list[dict[str, Any]]:
    """OpenAI's `tool_calls`: arguments as a JSON string; in a stream's delta each call has its `index`."""
    out = []
    for k, call in enumerate(calls):
        item: dict[str, Any] = {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments_json()},
        }
        out.append({"index": k, **item} if indexed else item)
    return out


def _model_object(stored: StoredModel, model: Model | None) -> dict[str, Any]:
    """OpenAI's model object, with localllm's `input_modalities` (docs/multimodal.md): `text`, and `image` /
    `audio` for a model whose projector encodes them, as OpenRouter's models API names them; absent for a
    damaged model (one `localllm list` flags), whose files cannot be read."""
    out = {
        "id": str(stored.name),
        "object": "model",
        "created": int(stored.modified_at),
        "owned_by": stored.name.namespace,
    }
    if model is not None:
        out["input_modalities"] = list(model.input_modalities)
    return out


async def list_models(request: Request) -> Response:
    data = [_model_object(m.stored, m) for m in service_of(request).list_models()]
    return JSONResponse({"object": "list", "data": data})


@guarded(ERRORS)
async def get_model(request: Request) -> Response:
    raw = request.path_params["model"]
    service = service_of(request)
    stored = service.store.find(parse_name(raw))
    if stored is None:
        raise ModelNotFound(f"model '{raw}' not found")
    try:
        model: Model | None = service.model(stored.name)
    except EngineError:  # a damaged model (a blob moved aside, a GGUF that does not parse): listed, flagged
        model = None
    return JSONResponse(_model_object(stored, model))


# -- the OpenAPI paths: request bodies are the wire models' schemas -----------------------------------------

COMPLETION_OK = obj(
    {"id": STR, "object": STR, "created": INT, "model": STR, "choices": ANY_LIST}, required=("choices",)
)
MODEL_OK = obj(
    {"id": STR, "object": STR, "created": INT, "owned_by": STR, "input_modalities": STRINGS}, required=("id", "object")
)
# generation may leave the model to LOCALLLM_DEFAULT_MODEL ("dummy", as InferenceClient sends): 422 without one
GENERATE_CODES = ("400", "401", "403", "404", "413", "422", "429", "5XX")


def paths() -> dict[str, Any]:
    err = OPENAI_ERROR
    generated = responses(err, COMPLETION_OK, stream=SSE, codes=GENERATE_CODES)
    return {
        "/v1/chat/completions": {
            "post": {
                "summary": "OpenAI chat completions",
                "requestBody": request_body(wire.ChatCompletionRequest),
                "responses": generated,
            }
        },
        "/v1/completions": {
            "post": {
                "summary": "OpenAI (legacy) completions",
                "requestBody": request_body(wire.CompletionRequest),
                "responses": generated,
            }
        },
        "/v1/models": {
            "get": {
                "summary": "models",
                "responses": responses(err, obj({"object": STR, "data": {"type": "array", "items": MODEL_OK}})),
            }
        },
        "/v1/models/{model}": {
            "get": {
                "summary": "one model",
                "parameters": path_parameter("model"),
                "responses": responses(err, MODEL_OK),
            }
        },
        "/v1/embeddings": {
            "post": {
                "summary": "OpenAI embeddings",
                "requestBody": request_body(wire.EmbeddingRequest),
                "responses": responses(err, obj({"object": STR, "data": ANY_LIST, "model": STR})),
            }
        },
    }


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", get_model, methods=["GET"]),
]
