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
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...domain.errors import InvalidRequest
from ...domain.names import ModelName
from ...domain.types import Constraints, Event, Options, Token
from ...service.generation import GenerateRequest
from .. import requests as rq
from ..errors import ErrorShape, guarded, message_of, status_of
from ..fields import Field, Fields, check_fields
from ..streaming import EventStream
from .contract import Dialect
from .shared import VLLM_SAMPLING, Events, choose_model, collect_all, flag, opened_merged, service_of, vllm_sampling

FIELDS = (
    Fields(
        Field("prompt", str, required=True),
        Field("stream", bool, default=False),
        Field("model", str),
        Field("n", int, low=1, high=128, default=1),
        Field("best_of", int, low=1),
        Field("stop_token_ids", list, default=[]),
        Field("include_stop_str_in_output", bool, default=False),
        Field("skip_special_tokens", bool, default=True),  # no effect: special tokens never appear in the output
        Field("spaces_between_special_tokens", bool, default=True),  # no effect, for the same reason
    )
    + VLLM_SAMPLING
)
_KINDS = {400: "BadRequestError", 413: "BadRequestError", 404: "NotFoundError", 503: "ServiceUnavailableError"}


@dataclass(frozen=True)
class VLLMRequest:
    model: ModelName
    prompt: str
    options: Options
    constraints: Constraints
    n: int
    stream: bool


def parse(body: dict[str, Any], model: ModelName) -> VLLMRequest:
    """Translate a demo-server request body (every sampling field at the top level)."""
    FIELDS.check(body)
    values = FIELDS.read(body)
    n = values["n"]
    if values["best_of"] is not None and values["best_of"] != n:
        raise InvalidRequest("best_of other than n is not supported (vLLM V1 dropped it too)", field="best_of")
    if values["stop_token_ids"]:
        raise InvalidRequest("stop_token_ids is not supported: use stop with the text", field="stop_token_ids")
    if values["include_stop_str_in_output"]:
        raise InvalidRequest("include_stop_str_in_output is not supported", field="include_stop_str_in_output")
    options, constraints = vllm_sampling(values)
    return VLLMRequest(model, values["prompt"], options, constraints, n, values["stream"])


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
async def answer(request: Request, body: dict[str, Any]) -> Response:
    service = service_of(request)
    req = parse(body, choose_model(body, service))
    streams: list[Events] = [
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
async def tokenize(request: Request, body: dict[str, Any]) -> Response:
    """vLLM's `POST /tokenize` (`prompt`): the token ids, their count and the model's context length."""
    service = service_of(request)
    check_fields(body, ("prompt", "model", "add_special_tokens", "return_token_strs"))
    prompt = rq.field(body, "prompt", str, required=True)
    name = choose_model(body, service)
    model = service.model(name)
    pieces = await service.tokenize(name, prompt, add_bos=flag(body, "add_special_tokens", True))
    strs = flag(body, "return_token_strs")
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
DIALECT = Dialect("vllm", (), ERRORS)
