"""vLLM's demo API (`vllm.entrypoints.api_server`): `POST /generate` with `prompt` and the sampling fields at
the top level, answered `{"text": [prompt + output, ...]}` (one per choice); with `stream`, one JSON line per
step, each with every choice's cumulative text. Also vLLM's `POST /tokenize`.

The prompt is used as given (no chat template). Defaults are vLLM's `SamplingParams` ones: temperature 1,
top_p 1, no top_k, 16 tokens. Errors are vLLM's flat `{"object": "error", "message", "type", "param", "code"}`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from typing import Annotated, Any

from msgspec import Meta
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...domain.errors import InvalidRequest
from ...domain.events import Event, Token
from ...domain.limits import MAX_CHOICES, MAX_STOP, PROMPT_MAX_BYTES
from ...domain.names import ModelName
from ...domain.options import Constraints, Options
from ...service.generation import GenerateRequest
from .. import requests as rq
from ..errors import ErrorShape, guarded, message_of, status_of
from ..replies import Reply, ServingError
from ..streaming import EventStream
from ..wire import Strict, as_model, check_text
from .contract import Dialect
from .shared import VLLMSampling, choose_model, collect_all, opened_merged, service_of, vllm_options

# -- the request bodies, declared once (server/wire.py): unknown fields refused, null is a field's default ----


class VLLMGenerateRequest(VLLMSampling, kw_only=True):
    """The demo server's `POST /generate`: the prompt, and every sampling field at the top level."""

    prompt: str
    stream: bool | None = None
    model: str | None = None
    n: Annotated[int, Meta(ge=1, le=MAX_CHOICES)] | None = None
    best_of: Annotated[int, Meta(ge=1)] | None = None  # only equal to n
    stop_token_ids: Annotated[list[int], Meta(max_length=MAX_STOP)] | None = None  # refused when not empty
    include_stop_str_in_output: bool | None = None  # refused when true
    skip_special_tokens: bool | None = None  # no effect: special tokens never appear in the output
    spaces_between_special_tokens: bool | None = None  # no effect, for the same reason

    def check(self) -> None:
        check_text([self.prompt], PROMPT_MAX_BYTES, "prompt", "prompt")


class VLLMTokenizeRequest(Strict, kw_only=True):
    """vLLM's `POST /tokenize`."""

    prompt: str
    model: str | None = None
    add_special_tokens: bool | None = None  # none: true
    return_token_strs: bool | None = None

    def check(self) -> None:
        check_text([self.prompt], PROMPT_MAX_BYTES, "prompt", "prompt")


MODELS = (VLLMGenerateRequest, VLLMTokenizeRequest)
_KINDS = {400: "BadRequestError", 413: "BadRequestError", 404: "NotFoundError", 503: "ServiceUnavailableError"}


@dataclass(frozen=True)
class VLLMRequest:
    model: ModelName
    prompt: str
    options: Options
    constraints: Constraints
    n: int
    stream: bool


def parse(raw: VLLMGenerateRequest | dict[str, Any], model: ModelName) -> VLLMRequest:
    """Translate a demo-server request body (every sampling field at the top level)."""
    body = as_model(raw, VLLMGenerateRequest)
    n = body.n or 1
    if body.best_of is not None and body.best_of != n:
        raise InvalidRequest("best_of other than n is not supported (vLLM V1 dropped it too)", field="best_of")
    if body.stop_token_ids:
        raise InvalidRequest("stop_token_ids is not supported: use stop with the text", field="stop_token_ids")
    if body.include_stop_str_in_output:
        raise InvalidRequest("include_stop_str_in_output is not supported", field="include_stop_str_in_output")
    options, constraints = vllm_options(body)
    return VLLMRequest(model, body.prompt, options, constraints, n, bool(body.stream))


def vllm_error(exc: BaseException) -> dict[str, Any]:
    status = status_of(exc)
    param = exc.field if isinstance(exc, InvalidRequest) else None
    kind = _KINDS.get(status, "InternalServerError")
    return {"object": "error", "message": message_of(exc), "type": kind, "param": param, "code": status}


ERRORS = ErrorShape(vllm_error)
error_response = ERRORS.response


def _line(obj: Any) -> bytes:
    """The demo server's framing: `json.dumps(ret) + "\\n"`, with its default separators."""
    return (json.dumps(obj) + "\n").encode()


@guarded(ERRORS)
async def answer(request: Request, chunks: list[bytes]) -> Response:
    """`POST /generate` with vLLM's body (`chunks`, as read by `compat.generate`): decoded here, so that its
    refusals are in vLLM's shape."""
    service = service_of(request)
    body = await rq.decode_wire(request, chunks, VLLMGenerateRequest)
    req = parse(body, choose_model({"model": body.model}, service))
    streams = [
        service.generate(
            GenerateRequest(
                model=req.model,
                prompt=req.prompt,
                raw=True,
                options=req.options if req.options.seed is None else replace(req.options, seed=req.options.seed + i),
                constraints=req.constraints,
            )
        )
        for i in range(req.n)
    ]
    if req.stream:
        events = await opened_merged(streams, request)
        return EventStream(
            _cumulative(events, req.n, req.prompt),
            frame=_line,
            on_error=vllm_error,
            media_type="application/x-ndjson",
        )
    gens = await collect_all(streams, request)
    return JSONResponse({"text": [req.prompt + gen.text for gen in gens]})


async def _cumulative(
    events: AsyncGenerator[tuple[int, Event], None], n: int, prompt: str
) -> AsyncGenerator[Any, None]:
    texts = [prompt] * n
    async for i, event in events:
        if isinstance(event, Token) and event.text:
            texts[i] += event.text
            yield {"text": list(texts)}


@guarded(ERRORS)
async def tokenize(request: Request, chunks: list[bytes]) -> Response:
    """vLLM's `POST /tokenize` (`prompt`; `chunks` as read by `compat.tokenize`): the token ids, their count and
    the model's context length."""
    service = service_of(request)
    body = await rq.decode_wire(request, chunks, VLLMTokenizeRequest)
    name = choose_model({"model": body.model}, service)
    model = service.model(name)
    pieces = await service.tokenize(name, body.prompt, add_bos=body.add_special_tokens is not False)
    strs = bool(body.return_token_strs)
    trained = model.info.context_length or service.settings.context_length
    out: dict[str, Any] = {
        "count": len(pieces),
        "max_model_len": min(service.settings.context_length, trained),
        "tokens": [t for t, _ in pieces],
        "token_strs": None,
    }
    if strs:
        out["token_strs"] = [p.decode("utf-8", "replace") for _, p in pieces]
    return JSONResponse(out)


# No routes of its own: `POST /generate` and `POST /tokenize` (compat.py) hand vLLM's bodies to it.
class VLLMText(Reply, kw_only=True):
    """The demo server's answer: each choice's text, the prompt first; in a stream, every line has it all so far."""

    text: list[str]


class VLLMTokenized(Reply, kw_only=True):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None  # with `return_token_strs`


DIALECT = Dialect("vllm", (), ERRORS, wire=MODELS, replies=(ServingError, VLLMText, VLLMTokenized))
