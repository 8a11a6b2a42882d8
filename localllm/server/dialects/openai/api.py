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
from starlette.responses import Response
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
from ...replies import SSE, UNSET, OpenAIError, TopLogprob, Unset, path_parameter, reply, responses
from ...replies import TokenLogprob as ReplyLogprob
from ...streaming import EventStream, prepend, sse_event, until_disconnect
from ...wire import request_body
from ..shared import collect_all, default_model, merged, service_of
from . import replies as r
from . import wire
from .requests import Shape, to_chat_request, to_completion_request

FINISH = {"stop": "stop", "length": "length", "cancel": "stop"}
SYSTEM_FINGERPRINT = "fp_localllm"
DONE = "[DONE]"  # the stream's last event
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

    def chat_chunk(self, choices: list[r.ChunkChoice], usage: r.Usage | None | Unset = UNSET) -> r.ChatCompletionChunk:
        """A chat stream's chunk; with `include_usage`, its `usage` is null until the last."""
        if usage is UNSET and self.shape.include_usage:
            usage = None
        return r.ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            system_fingerprint=SYSTEM_FINGERPRINT,
            choices=choices,
            usage=usage,
        )

    def text_chunk(self, choices: list[r.TextChoice], usage: r.Usage | None | Unset = UNSET) -> r.TextCompletion:
        """A text completion's stream chunk, or (with its usage) the whole completion."""
        if usage is UNSET and self.shape.include_usage:
            usage = None
        return r.TextCompletion(
            id=self.id,
            created=self.created,
            model=self.model,
            system_fingerprint=SYSTEM_FINGERPRINT,
            choices=choices,
            usage=usage,
        )


async def _answer(request: Request, streams: list[Events], framing: Framing) -> Response:
    """Generations as a chat completion or a text completion, streamed as SSE or whole."""
    if not framing.shape.stream:
        answers = await collect_all(streams, request)
        return reply(whole(framing, answers))
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
        trailer=sse_event(DONE),
    )


# -- encoders: events to OpenAI's objects ----------------------------------------------------------------


Chunk = r.ChatCompletionChunk | r.TextCompletion


async def chunks(
    framing: Framing, events: AsyncGenerator[tuple[int, Event], None], n: int
) -> AsyncGenerator[Chunk, None]:
    """The stream's chunks: each choice's opening, then one chunk per event of any choice (tagged with its
    index), then the usage when asked for."""
    dones: list[Done | None] = [None] * n
    offsets = [0] * n  # where each text completion's next piece begins (legacy log-probabilities)
    called = [False] * n
    streamed = [False] * n  # the choice's calls went out as deltas (their whole `ToolCalls` adds nothing)
    chat = framing.chat
    if chat:
        for i in range(n):
            yield framing.chat_chunk([r.ChunkChoice(index=i, delta=r.Delta(role="assistant", content=""))])
    for i, echo in enumerate(framing.echoes):
        yield framing.text_chunk([r.TextChoice(index=i, text=echo, logprobs=None, finish_reason=None)])
        offsets[i] = len(echo)
    async with contextlib.aclosing(events):
        async for i, event in events:
            if isinstance(event, Token):
                if chat:
                    yield framing.chat_chunk([chat_token_choice(i, event)])
                else:
                    yield framing.text_chunk([text_token_choice(i, event, offsets[i])])
                offsets[i] += len(event.text)
                continue
            delta: r.Delta | None = None
            if isinstance(event, Thinking):  # as llama-server, vLLM and DeepSeek's API
                delta = r.Delta(reasoning_content=event.text)
            elif isinstance(event, ToolCallStart | ToolCallArguments):
                streamed[i] = True
                delta = r.Delta(tool_calls=[_call_delta(event)])
            elif isinstance(event, ToolCalls):
                called[i] = True
                if streamed[i]:
                    continue
                delta = r.Delta(tool_calls=_call_deltas(event.calls))
            elif isinstance(event, Done):
                dones[i] = event
                finish = "tool_calls" if called[i] else FINISH.get(event.reason, "stop")
                if chat:
                    yield framing.chat_chunk([r.ChunkChoice(index=i, delta=r.Delta(), finish_reason=finish)])
                else:
                    yield framing.text_chunk([r.TextChoice(index=i, text="", logprobs=None, finish_reason=finish)])
                continue
            if delta is not None and chat:  # reasoning and calls have no place in a text completion
                yield framing.chat_chunk([r.ChunkChoice(index=i, delta=delta)])
    if framing.shape.include_usage:
        usage = _usage([d for d in dones if d], framing.groups)
        yield framing.chat_chunk([], usage) if chat else framing.text_chunk([], usage)


def chat_token_choice(i: int, token: Token) -> r.ChunkChoice:
    """A streamed piece of chat choice `i`."""
    logprobs = _chat_logprobs(token.logprobs) if token.logprobs else None
    return r.ChunkChoice(index=i, delta=r.Delta(content=token.text), logprobs=logprobs)


def text_token_choice(i: int, token: Token, offset: int) -> r.TextChoice:
    """A streamed piece of text completion choice `i`, its text at `offset`."""
    logprobs = _legacy_logprobs(token.logprobs, offset) if token.logprobs else None
    return r.TextChoice(index=i, text=token.text, logprobs=logprobs, finish_reason=None)


def whole(framing: Framing, answers: Sequence[Answer]) -> r.ChatCompletion | r.TextCompletion:
    """The whole completion: the choices kept (the `n` most likely of `best_of`), and the usage of all."""
    shape = framing.shape
    if shape.best_of > shape.n:
        kept = _best(answers, framing.groups, shape.n)
    else:
        kept = list(range(len(answers)))
    usage = _usage([a.done for a in answers], framing.groups)
    if not framing.chat:
        texts = [
            text_choice(i, answers[k], framing.echoes[k] if framing.echoes else "", shape.logprobs)
            for i, k in enumerate(kept)
        ]
        return framing.text_chunk(texts, usage)
    return r.ChatCompletion(
        id=framing.id,
        created=framing.created,
        model=framing.model,
        system_fingerprint=SYSTEM_FINGERPRINT,
        choices=[chat_choice(i, answers[k], shape.logprobs) for i, k in enumerate(kept)],
        usage=usage,
    )


def text_choice(i: int, answer: Answer, echo: str, logprobs: bool) -> r.TextChoice:
    lps = answer.logprobs if logprobs else []
    finish = FINISH.get(answer.done.reason, "stop")
    legacy = _legacy_logprobs(lps, 0) if lps else None
    return r.TextChoice(index=i, text=echo + answer.text, logprobs=legacy, finish_reason=finish)


def chat_choice(i: int, answer: Answer, logprobs: bool) -> r.ChatChoice:
    lps = answer.logprobs if logprobs else []
    finish = FINISH.get(answer.done.reason, "stop")
    message = r.AssistantMessage(content=answer.text, reasoning_content=answer.thinking or UNSET)
    if answer.tool_calls:
        # the text the model wrote before its calls stays the answer's, as llama-server and OpenAI return it
        message.content = answer.text or None
        message.tool_calls = _tool_calls(answer.tool_calls)
        finish = "tool_calls"
    return r.ChatChoice(index=i, message=message, logprobs=_chat_logprobs(lps) if lps else None, finish_reason=finish)


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


def _usage(dones: Sequence[Done], groups: Sequence[int]) -> r.Usage:
    """Usage over all choices: each prompt counted once, every choice's completion counted."""
    prompt = cached = 0
    seen: set[int] = set()
    for done, group in zip(dones, groups, strict=True):
        if group not in seen:
            seen.add(group)
            prompt += done.prompt_eval_count + done.cached_tokens
            cached += done.cached_tokens
    completion = sum(d.eval_count for d in dones)
    return r.Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=r.PromptTokensDetails(cached_tokens=cached),
    )


def _chat_logprobs(lps: Sequence[TokenLogprob]) -> r.ChatLogprobs:
    return r.ChatLogprobs(
        content=[
            ReplyLogprob(
                token=lp.token,
                logprob=lp.logprob,
                bytes=list(lp.bytes),
                top_logprobs=[TopLogprob(token=t, logprob=v, bytes=list(t.encode())) for _, t, v in lp.top],
            )
            for lp in lps
        ]
    )


def _legacy_logprobs(lps: Sequence[TokenLogprob], offset: int) -> r.LegacyLogprobs:
    offsets = []
    for lp in lps:
        offsets.append(offset)
        offset += len(lp.token)
    return r.LegacyLogprobs(
        tokens=[lp.token for lp in lps],
        token_logprobs=[lp.logprob for lp in lps],
        top_logprobs=[{t: v for _, t, v in lp.top} for lp in lps],
        text_offset=offsets,
    )


def _call_delta(event: ToolCallStart | ToolCallArguments) -> r.OpenAIToolCallDelta:
    """A streamed call's delta, as OpenAI's: the first carries its id and name (`arguments` empty), the
    others a piece of its arguments."""
    if isinstance(event, ToolCallStart):
        function = r.OpenAIFunctionDelta(name=event.name, arguments="")
        return r.OpenAIToolCallDelta(index=event.index, id=event.id, type="function", function=function)
    return r.OpenAIToolCallDelta(index=event.index, function=r.OpenAIFunctionDelta(arguments=event.text))


def _call_deltas(calls: Sequence[ToolCall]) -> list[r.OpenAIToolCallDelta]:
    """Calls sent whole in one delta, each with its `index`."""
    return [
        r.OpenAIToolCallDelta(
            index=k,
            id=call.id,
            type="function",
            function=r.OpenAIFunctionDelta(name=call.name, arguments=call.arguments_json()),
        )
        for k, call in enumerate(calls)
    ]


def _tool_calls(calls: Sequence[ToolCall]) -> list[r.OpenAIToolCall]:
    """OpenAI's `tool_calls`: arguments as a JSON string."""
    return [
        r.OpenAIToolCall(id=call.id, function=r.OpenAIFunction(name=call.name, arguments=call.arguments_json()))
        for call in calls
    ]


def _model_object(stored: StoredModel, model: Model | None) -> r.ModelObject:
    """OpenAI's model object, with localllm's `input_modalities` (docs/multimodal.md): `text`, and `image` /
    `audio` for a model whose projector encodes them, as OpenRouter's models API names them; absent for a
    damaged model (one `localllm list` flags), whose files cannot be read."""
    return r.ModelObject(
        id=str(stored.name),
        created=int(stored.modified_at),
        owned_by=stored.name.namespace,
        input_modalities=list(model.input_modalities) if model is not None else UNSET,
    )


async def list_models(request: Request) -> Response:
    return reply(r.ModelList(data=[_model_object(m.stored, m) for m in service_of(request).list_models()]))


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
    return reply(_model_object(stored, model))


# -- the OpenAPI paths: request bodies are the wire models' schemas, answers the reply models' -----------------

# generation may leave the model to LOCALLLM_DEFAULT_MODEL ("dummy", as InferenceClient sends): 422 without one
GENERATE_CODES = ("400", "401", "403", "404", "413", "422", "429", "5XX")


def paths() -> dict[str, Any]:
    err = OpenAIError
    return {
        "/v1/chat/completions": {
            "post": {
                "summary": "OpenAI chat completions",
                "requestBody": request_body(wire.ChatCompletionRequest),
                "responses": responses(
                    err,
                    r.ChatCompletion,
                    stream=(SSE, (r.ChatCompletionChunk, err)),
                    trailer=DONE,
                    codes=GENERATE_CODES,
                ),
            }
        },
        "/v1/completions": {
            "post": {
                "summary": "OpenAI (legacy) completions",
                "requestBody": request_body(wire.CompletionRequest),
                "responses": responses(
                    err, r.TextCompletion, stream=(SSE, (r.TextCompletion, err)), trailer=DONE, codes=GENERATE_CODES
                ),
            }
        },
        "/v1/models": {"get": {"summary": "models", "responses": responses(err, r.ModelList)}},
        "/v1/models/{model}": {
            "get": {
                "summary": "one model",
                "parameters": path_parameter("model"),
                "responses": responses(err, r.ModelObject),
            }
        },
        "/v1/embeddings": {
            "post": {
                "summary": "OpenAI embeddings",
                "requestBody": request_body(wire.EmbeddingRequest),
                "responses": responses(err, r.EmbeddingList),
            }
        },
    }


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", get_model, methods=["GET"]),
]
