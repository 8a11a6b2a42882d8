"""Hugging Face TGI's API: `POST /generate`, `/generate_stream`, `POST /` (with `stream`), `GET /info`,
`GET /health`, `POST /tokenize`; errors `{"error", "error_type"}` with 422, 424 or 429.

Request bodies are translated in `requests.py`. Each generated token comes with its id and
log-probability; a generation that ends on the end-of-sequence token lists that token last (`special: true`,
its log-probability null). `prefill` tokens have null log-probabilities: the runner evaluates the prompt
without computing them.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .... import __version__
from ....domain.errors import (
    AccessDenied,
    BodyTooLarge,
    EngineError,
    InvalidRequest,
    ModelNotFound,
    QuotaExceeded,
    ServerBusy,
)
from ....domain.events import Done, Token, TokenLogprob
from ....modelstore.models import Model
from ....service.core import Service
from ....service.generation import Answer, GenerateRequest
from ... import requests as rq
from ...errors import ErrorShape, guarded, message_of, status_of
from ...replies import SSE, TGIError, responses
from ...streaming import EventStream
from ...wire import as_model, request_body
from ..shared import Events, choose_model, collect_all, opened, service_of
from . import replies as r
from . import wire
from .requests import TGIRequest, parse

# -- errors --------------------------------------------------------------------------------------------


def _status(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, BodyTooLarge):
        return 413, "validation"
    if isinstance(exc, InvalidRequest):
        return 422, "validation"
    if isinstance(exc, ModelNotFound):
        return 404, "not_found"
    if isinstance(exc, (ServerBusy, QuotaExceeded)):
        return 429, "overloaded"
    if isinstance(exc, AccessDenied):
        return status_of(exc), "authentication"
    if isinstance(exc, EngineError):
        return 424, "generation"
    status = status_of(exc)  # a route that is not there (404, 405), or an unexpected error (500)
    return status, "validation" if status < 500 else "incomplete_generation"


def tgi_error(exc: BaseException) -> dict[str, Any]:
    return {"error": message_of(exc), "error_type": _status(exc)[1]}


ERRORS = ErrorShape(tgi_error, lambda exc: _status(exc)[0])
error_response = ERRORS.response


def _sse(obj: Any) -> bytes:
    """TGI's framing: `data:` with no space, one JSON object per event, and no `[DONE]`."""
    return b"data:" + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


# -- tokens --------------------------------------------------------------------------------------------


def char_offsets(text: str, pieces: Sequence[tuple[int, bytes]]) -> list[tuple[int, int]]:
    """Where each token's text lies in `text`, in characters (a special token is empty where it stands).

    The tokenizer may add a space before the first word (SentencePiece): a piece that matches only without
    its leading space is placed on the word."""
    data = text.encode()
    pos = 0
    spans = []
    for _, piece in pieces:
        start = pos
        if piece and data.startswith(piece, pos):
            pos += len(piece)
        elif piece[:1] == b" " and data.startswith(piece[1:], pos):
            pos += len(piece) - 1
        else:
            pos = min(pos + len(piece), len(data))
        spans.append((start, pos))
    return [(_chars(data, a), _chars(data, b)) for a, b in spans]


def _chars(data: bytes, offset: int) -> int:
    return len(data[:offset].decode("utf-8", "ignore"))


def split_text(tokens: Iterable[Token]) -> list[tuple[TokenLogprob, str]]:
    """Each generated token with its share of the text, so that the shares add up to the output exactly:
    text held back or completed later (a stop sequence's start, a split UTF-8 character) goes to the token
    whose event carried it."""
    out: list[tuple[TokenLogprob, str]] = []
    for token in tokens:
        if not token.logprobs:
            if out:
                out[-1] = (out[-1][0], out[-1][1] + token.text)
            continue
        rest = token.text
        for k, lp in enumerate(token.logprobs):
            last = k == len(token.logprobs) - 1
            share = rest if last else (lp.token if lp.token and rest.startswith(lp.token) else "")
            rest = rest[len(share) :]
            out.append((lp, share))
    return out


def _token(lp: TokenLogprob, text: str) -> dict[str, Any]:
    return {"id": lp.id, "text": text, "logprob": lp.logprob, "special": False}


def _top(lp: TokenLogprob) -> list[dict[str, Any]]:
    return [{"id": t, "text": text, "logprob": v, "special": False} for t, text, v in lp.top]


def _eos(model: Model) -> dict[str, Any]:
    eos_id = model.info.metadata.get("tokenizer.ggml.eos_token_id")
    return {
        "id": eos_id if isinstance(eos_id, int) else -1,
        "text": model.info.eos_token,
        "logprob": None,
        "special": True,
    }


def finish_reason(done: Done, stops: Sequence[str], lps: Sequence[TokenLogprob]) -> str:
    if done.reason == "length":
        return "length"
    if stops:
        generated = b"".join(bytes(lp.bytes) for lp in lps).decode("utf-8", "replace")
        if any(s in generated for s in stops):
            return "stop_sequence"
    return "eos_token"


def _mean_logprob(gen: Answer) -> float:
    lps = [lp.logprob for lp in gen.logprobs]
    return sum(lps) / len(lps) if lps else -math.inf


def _sequence(gen: Answer, req: TGIRequest, model: Model, prefill: list[dict[str, Any]]) -> dict[str, Any]:
    """The details of one generation, with its text (prefixed by the prompt with `return_full_text`)."""
    pairs = split_text(gen.tokens)
    tokens = [_token(lp, text) for lp, text in pairs]
    tops = [_top(lp) for lp, _ in pairs]
    finish = finish_reason(gen.done, req.options.stop or (), gen.logprobs)
    if finish == "eos_token":
        tokens.append(_eos(model))
        tops.append([])
    out: dict[str, Any] = {
        "generated_text": (req.inputs if req.return_full_text else "") + gen.text,
        "finish_reason": finish,
        "generated_tokens": len(tokens),
        "seed": req.options.seed if req.sampling else None,
        "prefill": prefill,
        "tokens": tokens,
    }
    if req.top_n:
        out["top_tokens"] = tops
    return out


# -- routes --------------------------------------------------------------------------------------------


async def generate_stream(request: Request) -> Response:
    return await answer(request, None, stream=True)


@guarded(ERRORS)
async def answer(
    request: Request,
    body: wire.TGIGenerateRequest | dict[str, Any] | None,
    *,
    stream: bool | None,
    listed: bool = False,
) -> Response:
    """Serve a TGI generation; `body` when the caller has read it already (the `/generate` dispatcher)."""
    started = time.perf_counter()
    service = service_of(request)
    body = body if body is not None else await rq.read_wire(request, wire.TGIGenerateRequest)
    req = parse(body, service, stream=stream)
    model = service.model(req.model)
    inputs = req.inputs
    if req.truncate is not None:
        pieces = await service.tokenize(req.model, inputs)
        if len(pieces) > req.truncate:
            inputs = inputs[char_offsets(inputs, pieces)[len(pieces) - req.truncate][0] :]
            req = replace(req, inputs=inputs)
    prefill: list[dict[str, Any]] = []
    if req.decoder_input_details:
        pieces = await service.tokenize(req.model, inputs)
        prefill = [_prefill(model, t, p) for t, p in pieces]
    seeds = [req.options.seed] if req.best_of == 1 else [secrets.randbelow(2**32) for _ in range(req.best_of)]
    streams = [
        service.generate(
            GenerateRequest(
                model=req.model,
                prompt=inputs,
                raw=True,
                options=replace(req.options, seed=s),
                constraints=req.constraints,
            )
        )
        for s in seeds
    ]
    if req.stream:  # one generation: best_of > 1 is refused with streaming
        events = await opened(streams[0], request)
        return EventStream(_events(events, req, model), frame=_sse, on_error=tgi_error, media_type="text/event-stream")
    gens = await collect_all(streams, request)
    order = sorted(range(len(gens)), key=lambda i: _mean_logprob(gens[i]), reverse=True)
    sequences = [
        _sequence(gens[i], replace(req, options=replace(req.options, seed=seeds[i])), model, prefill) for i in order
    ]
    best = sequences[0]
    out: dict[str, Any] = {"generated_text": best.pop("generated_text")}
    if req.details:
        if len(sequences) > 1:
            best["best_of_sequences"] = sequences[1:]
        out["details"] = best
    headers = {
        "x-compute-type": "gpu" if _on_gpu(service) else "cpu",
        "x-compute-characters": str(len(req.inputs)),
        "x-prompt-tokens": str(gens[order[0]].done.prompt_eval_count + gens[order[0]].done.cached_tokens),
        "x-generated-tokens": str(best["generated_tokens"]),
        "x-total-time": str(int((time.perf_counter() - started) * 1000)),
    }
    return JSONResponse([out] if listed else out, headers=headers)


def _on_gpu(service: Service) -> bool:
    return any(getattr(m, "size_vram", 0) for m in service.loaded())


def _prefill(model: Model, token: int, piece: bytes) -> dict[str, Any]:
    text = piece.decode("utf-8", "replace")
    if not piece and token == model.info.metadata.get("tokenizer.ggml.bos_token_id"):
        text = model.info.bos_token
    return {"id": token, "text": text, "logprob": None}


async def _events(stream: Events, req: TGIRequest, model: Model) -> AsyncGenerator[Any, None]:
    """One event per token; each is held until the next arrives, so the last one carries the whole text and
    the details."""
    held: dict[str, Any] | None = None
    index = 0
    texts: list[str] = []
    lps: list[TokenLogprob] = []
    done: Done | None = None

    def event(token: dict[str, Any], top: list[dict[str, Any]]) -> dict[str, Any]:
        nonlocal index
        index += 1
        out: dict[str, Any] = {"index": index, "token": token}
        if req.top_n:
            out["top_tokens"] = top
        return {**out, "generated_text": None, "details": None}

    async for item in stream:
        if isinstance(item, Done):
            done = item
            continue
        if not isinstance(item, Token):
            continue
        texts.append(item.text)
        lps.extend(item.logprobs)
        if not item.logprobs:
            if held is not None:
                held["token"]["text"] += item.text
            continue
        for lp, text in split_text([item]):
            if held is not None:
                yield held
            held = event(_token(lp, text), _top(lp))
    if done is None:
        raise EngineError("the generation ended without a result")
    finish = finish_reason(done, req.options.stop or (), lps)
    if finish == "eos_token" or held is None:
        if held is not None:
            yield held
        held = event(_eos(model), [])
    held["generated_text"] = (req.inputs if req.return_full_text else "") + "".join(texts)
    if req.details:
        held["details"] = {
            "finish_reason": finish,
            "generated_tokens": index,
            "seed": req.options.seed if req.sampling else None,
            "input_length": done.prompt_eval_count + done.cached_tokens,
        }
    yield held


async def info(request: Request) -> Response:
    settings = service_of(request).settings
    return JSONResponse(
        {
            "model_id": settings.default_model,
            "model_sha": None,
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": settings.max_queue,
            "max_best_of": wire.MAX_BEST_OF,
            "max_stop_sequences": wire.MAX_STOP_SEQUENCES,
            "max_input_tokens": settings.context_length - 1,
            "max_total_tokens": settings.context_length,
            "max_client_batch_size": 1,
            "validation_workers": 1,
            "router": "localllm",
            "version": __version__,
            "sha": None,
            "docker_label": None,
        }
    )


async def health(request: Request) -> Response:
    return Response(status_code=200)


@guarded(ERRORS)
async def tokenize(request: Request, raw: wire.TGIGenerateRequest | dict[str, Any]) -> Response:
    """`POST /tokenize` with TGI's body: each token's id, text and character offsets in `inputs`."""
    service = service_of(request)
    body = as_model(raw, wire.TGIGenerateRequest)
    inputs = body.inputs
    pieces = await service.tokenize(choose_model({"model": body.model}, service), inputs)
    spans = char_offsets(inputs, pieces)
    return JSONResponse(
        [
            {"id": token, "text": inputs[start:stop], "start": start, "stop": stop}
            for (token, _), (start, stop) in zip(pieces, spans, strict=True)
        ]
    )


# -- the OpenAPI paths: the request body is the wire model's schema, the answers the reply models' ---------

CODES = ("401", "403", "404", "413", "422", "424", "429", "5XX")


def paths() -> dict[str, Any]:
    return {
        "/generate_stream": {
            "post": {
                "summary": "TGI streaming generation",
                "requestBody": request_body(wire.TGIGenerateRequest),
                "responses": responses(TGIError, stream=(SSE, (r.TGIStreamEvent, TGIError)), codes=CODES),
            }
        },
        "/info": {"get": {"summary": "TGI server info", "responses": responses(TGIError, r.TGIInfo, codes=("5XX",))}},
        "/health": {"get": {"summary": "health", "responses": {"200": {"description": "healthy"}}}},
    }


routes = [  # POST / is tei.root: TGI's generation, or TEI's embeddings for an embedding model
    Route("/generate_stream", generate_stream, methods=["POST"]),
    Route("/info", info, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
]
