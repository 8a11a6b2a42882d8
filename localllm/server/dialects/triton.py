"""NVIDIA Triton's HTTP API (KServe v2) with its generate extension: `GET /v2`, `/v2/health/live`,
`/v2/health/ready`, `GET /v2/models/{m}`, `/v2/models/{m}/ready`, `POST /v2/models/{m}/generate` and
`/generate_stream` (SSE), each also under `/v2/models/{m}/versions/1/...`.

The model is the one the path names (every stored model is version 1). The body is the generate
extension's, as Triton's vLLM backend reads it: `text_input`, the sampling fields in `parameters` (or at
the top level, as TensorRT-LLM's ensemble takes them), and the optional inputs `stream`,
`exclude_input_in_output`, `return_finish_reason`, `return_num_input_tokens`, `return_num_output_tokens`.
As with the vLLM backend, `text_output` begins with the prompt unless `exclude_input_in_output` is true, and
a stream sends new text only. Errors are `{"error": "..."}`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ... import __version__
from ...domain.errors import InvalidRequest, ModelNotFound
from ...domain.events import Done, Token
from ...domain.limits import PROMPT_MAX_BYTES
from ...domain.names import ModelName, parse_name
from ...domain.options import Constraints, Options
from ...service.generation import GenerateRequest, collect
from .. import requests as rq
from ..errors import ErrorShape, guarded, message_of
from ..replies import SSE, UNSET, OllamaError, Reply, Unset, path_parameter, responses
from ..streaming import EventStream, sse_event, until_disconnect
from ..wire import as_model, check_text, request_body
from .contract import Dialect
from .shared import Events, Stop, VLLMSampling, opened, service_of, vllm_options

VERSION = "1"
_VERSIONED = re.compile(r"(?P<model>.+)/versions/(?P<version>[^/]+)")

# -- the request body, declared once (server/wire.py): unknown fields refused, null is a field's default -----


class TritonSampling(VLLMSampling, kw_only=True):
    """vLLM's sampling fields, with TensorRT-LLM's names for two of them."""

    stop_words: Stop = None
    random_seed: int | None = None


class TritonParameters(TritonSampling, kw_only=True):
    stream: bool | None = None
    exclude_input_in_output: bool | None = None


class TritonGenerateRequest(TritonSampling, kw_only=True):
    reported: ClassVar[Mapping[str, type[msgspec.Struct]]] = {"parameters": TritonParameters}  # parameters.typo too
    """The generate extension's body: the sampling fields in `parameters`, or at the top level (not both)."""

    text_input: str
    parameters: TritonParameters | None = None
    stream: bool | None = None
    exclude_input_in_output: bool | None = None
    return_finish_reason: bool | None = None
    return_num_input_tokens: bool | None = None
    return_num_output_tokens: bool | None = None
    id: str | None = None

    def check(self) -> None:
        check_text([self.text_input], PROMPT_MAX_BYTES, "text_input", "text_input")


MODELS = (TritonGenerateRequest,)
SAMPLING = TritonSampling.__struct_fields__


def triton_error(exc: BaseException) -> dict[str, Any]:
    return {"error": message_of(exc)}


ERRORS = ErrorShape(triton_error)
error_response = ERRORS.response


def _model(request: Request) -> tuple[str, ModelName]:
    """The model the path names (as written, and parsed); a version other than 1 does not exist."""
    raw = request.path_params["model"]
    match = _VERSIONED.fullmatch(raw)
    if match:
        raw = match["model"]
        if match["version"] != VERSION:
            raise ModelNotFound(f"model '{raw}' has no version {match['version']} (only {VERSION})")
    return raw, parse_name(raw, field="model")


@dataclass(frozen=True)
class TritonRequest:
    text: str
    options: Options
    constraints: Constraints
    stream: bool | None
    exclude_input: bool | None
    finish_reason: bool
    input_tokens: bool
    output_tokens: bool
    id: str | None


def _sampling(body: TritonGenerateRequest, params: TritonParameters) -> TritonSampling:
    """The sampling fields, from `parameters` or the top level (not both)."""
    merged: dict[str, Any] = {}
    for key in SAMPLING:
        top, inner = getattr(body, key), getattr(params, key)
        if top is not None and inner is not None:
            raise InvalidRequest(f"{key} is given both at the top level and in parameters", field=key)
        merged[key] = top if top is not None else inner
    return TritonSampling(**merged)


def parse(raw: TritonGenerateRequest | dict[str, Any]) -> TritonRequest:
    """Translate a generate-extension body; defaults are vLLM's (temperature 1, top_p 1, 16 tokens)."""
    body = as_model(raw, TritonGenerateRequest)
    params = body.parameters or TritonParameters()
    s = _sampling(body, params)
    if s.stop is not None and s.stop_words is not None:
        raise InvalidRequest("give stop or stop_words, not both", field="stop_words")
    options, constraints = vllm_options(s, stop=s.stop_words, seed=s.random_seed)
    return TritonRequest(
        text=body.text_input,
        options=options,
        constraints=constraints,
        stream=_either(body.stream, params.stream, "stream"),
        exclude_input=_either(body.exclude_input_in_output, params.exclude_input_in_output, "exclude_input_in_output"),
        finish_reason=bool(body.return_finish_reason),
        input_tokens=bool(body.return_num_input_tokens),
        output_tokens=bool(body.return_num_output_tokens),
        id=body.id,
    )


def _either(top: bool | None, inner: bool | None, key: str) -> bool | None:
    if top is not None and inner is not None and top != inner:
        raise InvalidRequest(f"{key} differs at the top level and in parameters", field=key)
    return top if top is not None else inner


# -- routes --------------------------------------------------------------------------------------------


async def server_metadata(request: Request) -> Response:
    return JSONResponse({"name": "localllm", "version": __version__, "extensions": ["generate"]})


async def health(request: Request) -> Response:
    return Response(status_code=200)


@guarded(ERRORS)
async def model_metadata(request: Request) -> Response:
    raw, name = _model(request)
    service_of(request).model(name)
    tensor = {"datatype": "BYTES", "shape": [1]}
    return JSONResponse(
        {
            "name": raw,
            "versions": [VERSION],
            "platform": "llama.cpp",
            "inputs": [
                {"name": "text_input", **tensor},
                {"name": "stream", "datatype": "BOOL", "shape": [1]},
                {"name": "exclude_input_in_output", "datatype": "BOOL", "shape": [1]},
            ],
            "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [-1]}],
        }
    )


@guarded(ERRORS)
async def model_ready(request: Request) -> Response:
    """Ready when stored: a model is loaded on its first request."""
    _, name = _model(request)
    service_of(request).model(name)
    return Response(status_code=200)


async def generate(request: Request) -> Response:
    return await _generate(request, streaming=False)


async def generate_stream(request: Request) -> Response:
    return await _generate(request, streaming=True)


@guarded(ERRORS)
async def _generate(request: Request, *, streaming: bool) -> Response:
    service = service_of(request)
    raw, name = _model(request)
    req = parse(await rq.read_wire(request, TritonGenerateRequest))
    if not streaming and req.stream:
        raise InvalidRequest("stream is true: use generate_stream for a streamed answer", field="stream")
    stream = streaming and req.stream is not False
    if stream and req.exclude_input is False:
        raise InvalidRequest("exclude_input_in_output must be true when streaming", field="exclude_input_in_output")
    prepend_input = not stream and req.exclude_input is not True
    events = service.generate(
        GenerateRequest(model=name, prompt=req.text, raw=True, options=req.options, constraints=req.constraints)
    )
    events = await opened(events, request)
    head: dict[str, Any] = {"model_name": raw, "model_version": VERSION}
    if req.id is not None:
        head["id"] = req.id
    if stream:
        return EventStream(
            _events(events, head, req), frame=sse_event, on_error=triton_error, media_type="text/event-stream"
        )
    gen = await until_disconnect(collect(events), request)
    out = {**head, "text_output": (req.text if prepend_input else "") + gen.text, **_extras(req, gen.done)}
    if not streaming:
        return JSONResponse(out)
    return EventStream(_one(out), frame=sse_event, on_error=triton_error, media_type="text/event-stream")


def _extras(req: TritonRequest, done: Done | None) -> dict[str, Any]:
    """The outputs asked for besides `text_output`: in a stream on every event, null until the last."""
    out: dict[str, Any] = {}
    if req.finish_reason:
        out["finish_reason"] = None if done is None else ("length" if done.reason == "length" else "stop")
    if req.input_tokens:
        out["num_input_tokens"] = None if done is None else done.prompt_eval_count + done.cached_tokens
    if req.output_tokens:
        out["num_output_tokens"] = None if done is None else done.eval_count
    return out


async def _one(item: dict[str, Any]) -> AsyncGenerator[Any, None]:
    yield item


async def _events(events: Events, head: dict[str, Any], req: TritonRequest) -> AsyncGenerator[Any, None]:
    """New text per event; the last event (held until the end) carries the final extras."""
    held: str | None = None
    async for event in events:
        if isinstance(event, Token):
            if held is not None:
                yield {**head, "text_output": held, **_extras(req, None)}
            held = event.text
        elif isinstance(event, Done):
            yield {**head, "text_output": held or "", **_extras(req, event)}


routes = [
    Route("/v2", server_metadata, methods=["GET"]),
    Route("/v2/health/live", health, methods=["GET"]),
    Route("/v2/health/ready", health, methods=["GET"]),
    Route("/v2/models/{model:path}/generate", generate, methods=["POST"]),
    Route("/v2/models/{model:path}/generate_stream", generate_stream, methods=["POST"]),
    Route("/v2/models/{model:path}/ready", model_ready, methods=["GET"]),
    Route("/v2/models/{model:path}", model_metadata, methods=["GET"]),
]


TritonError = OllamaError  # `{"error": message}`


class ServerMetadata(Reply, kw_only=True):
    name: str
    version: str
    extensions: list[str]


class Tensor(Reply, kw_only=True):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(Reply, kw_only=True):
    name: str
    versions: list[str]
    platform: str
    inputs: list[Tensor]
    outputs: list[Tensor]


class TritonGeneration(Reply, kw_only=True):
    """A generation's answer, or an event of its stream (the new text); the outputs asked for besides
    `text_output` are null until the last event."""

    model_name: str
    model_version: str
    id: str | Unset = UNSET
    text_output: str
    finish_reason: str | None | Unset = UNSET
    num_input_tokens: int | None | Unset = UNSET
    num_output_tokens: int | None | Unset = UNSET


def paths() -> dict[str, Any]:
    model = path_parameter("model")
    generate = request_body(TritonGenerateRequest)
    return {
        "/v2": {
            "get": {"summary": "Triton server metadata", "responses": responses(TritonError, ServerMetadata, codes=())}
        },
        "/v2/health/live": {"get": {"summary": "live", "responses": {"200": {"description": "live"}}}},
        "/v2/health/ready": {"get": {"summary": "ready", "responses": {"200": {"description": "ready"}}}},
        "/v2/models/{model}": {
            "get": {
                "summary": "Triton model metadata",
                "parameters": model,
                "responses": responses(TritonError, ModelMetadata),
            }
        },
        "/v2/models/{model}/ready": {
            "get": {
                "summary": "Triton model ready",
                "parameters": model,
                "responses": {
                    "200": {"description": "ready"},
                    "400": {"description": "not ready"},
                    "404": {"description": "unknown"},
                },
            }
        },
        "/v2/models/{model}/generate": {
            "post": {
                "summary": "Triton generate",
                "parameters": model,
                "requestBody": generate,
                "responses": responses(TritonError, TritonGeneration),
            }
        },
        "/v2/models/{model}/generate_stream": {
            "post": {
                "summary": "Triton streaming generate",
                "parameters": model,
                "requestBody": generate,
                "responses": responses(TritonError, stream=(SSE, (TritonGeneration, TritonError))),
            }
        },
    }


DIALECT = Dialect(
    "triton",
    routes,
    ERRORS,
    paths,
    prefix="/v2/",
    wire=MODELS,
    replies=(ServerMetadata, ModelMetadata, TritonGeneration),
)
