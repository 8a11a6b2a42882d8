"""LMDeploy's interactive API: `POST /v1/chat/interactive`, its older form `POST /generate`, and
`POST /v1/encode`.

A session (`session_id`, or the legacy `instance_id`) keeps its conversation and KV cache in the daemon
between calls (`localllm.sessions`), so a client sends only the new turn. Two ways to drive it:
`interactive_mode` (LMDeploy's v1: a turn continues the session if there is one, and `interactive_mode: false`
makes it the last), or the legacy `sequence_start` / `sequence_end` (start anew / end after this turn). The
prompt goes through the model's chat template when it has one, else it is used as given. `cancel: true` (or
the legacy `stop: true`) stops the turn in flight. The answer is `{"text", "tokens", "input_tokens",
"history_tokens", "finish_reason"}`, streamed as JSON lines of new text; the last object also says how many
prompt tokens the turn evaluated (`prompt_eval_count`): the rest came from the session's cache.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Annotated, Any

from msgspec import Meta
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...domain.errors import InvalidRequest
from ...domain.events import Done, Token
from ...domain.limits import MAX_EMBED_INPUTS, MAX_STOP, PROMPT_MAX_BYTES
from ...domain.options import Constraints, Options, parse_stop
from ...service.generation import collect
from ...service.sessions import Sessions, Turn
from .. import requests as rq
from ..errors import ErrorShape, guarded, message_of, status_of
from ..replies import NDJSON, SERVING_CODES, UNSET, Reply, ServingError, Unset, responses
from ..streaming import EventStream, ndjson_line, until_disconnect
from ..wire import Strict, as_model, check_text, request_body
from .contract import Dialect
from .shared import Events, choose_model, opened, service_of

# -- the request bodies, declared once (server/wire.py): unknown fields refused, null is a field's default ----


class LMDeploySampling(Strict, kw_only=True):
    """LMDeploy's sampling fields, with its defaults: temperature 0.8, top_p 0.8, top_k 40."""

    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(gt=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    min_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    repetition_penalty: Annotated[float, Meta(gt=0)] | None = None
    request_output_len: Annotated[int, Meta(ge=0)] | None = None
    seed: int | None = None
    min_new_tokens: Annotated[int, Meta(ge=0)] | None = None
    ignore_eos: bool | None = None


class LMDeployRequest(LMDeploySampling, kw_only=True):
    """A turn of `/v1/chat/interactive` (and of the legacy `POST /generate`), or a cancel."""

    prompt: str | None = None  # required, but for a cancel
    session_id: int | None = None
    instance_id: int | None = None  # the legacy name of session_id
    interactive_mode: bool | None = None
    sequence_start: bool | None = None
    sequence_end: bool | None = None
    stream: bool | None = None
    cancel: bool | None = None
    model: str | None = None
    skip_special_tokens: bool | None = None  # no effect: special tokens never appear in the output
    spaces_between_special_tokens: bool | None = None  # no effect, for the same reason
    # stop sequences, or the legacy API's `true` that cancels
    stop: bool | str | Annotated[list[str], Meta(max_length=MAX_STOP)] | None = None
    image_url: Any = None  # refused when given
    adapter_name: Any = None  # refused when given

    def check(self) -> None:
        check_text([self.prompt or ""], PROMPT_MAX_BYTES, "prompt", "prompt")


class LMDeployEncodeRequest(Strict, kw_only=True):
    """`POST /v1/encode`."""

    input: str | Annotated[list[str], Meta(max_length=MAX_EMBED_INPUTS)]
    do_preprocess: bool | None = None
    add_bos: bool | None = None  # none: true
    model: str | None = None

    def check(self) -> None:
        check_text([self.input] if isinstance(self.input, str) else self.input, PROMPT_MAX_BYTES, "input", "input")


MODELS = (LMDeployRequest, LMDeployEncodeRequest)
# Fields only LMDeploy's interactive API has: a `POST /generate` body with one of them is LMDeploy's.
SESSION_FIELDS = (
    "session_id",
    "instance_id",
    "interactive_mode",
    "sequence_start",
    "sequence_end",
    "request_output_len",
    "cancel",
)
FINISH = {"stop": "stop", "length": "length", "cancel": "abort"}


def sessions_of(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


def lmdeploy_error(exc: BaseException) -> dict[str, Any]:
    status = status_of(exc)
    param = exc.field if isinstance(exc, InvalidRequest) else None
    kind = "invalid_request_error" if status < 500 else "internal_error"
    return {"object": "error", "message": message_of(exc), "code": status, "param": param, "type": kind}


ERRORS = ErrorShape(lmdeploy_error)
error_response = ERRORS.response


def _answer_object(text: str, tokens: int, turn: Turn, finish: str | None) -> dict[str, Any]:
    return {
        "text": text,
        "tokens": tokens,
        "input_tokens": turn.input_tokens,
        "history_tokens": turn.history_tokens,
        "finish_reason": finish,
    }


def _nothing(history: int) -> dict[str, Any]:
    """The answer to a request that generates nothing: a cancel, or a session's end with no last words."""
    return {"text": "", "tokens": 0, "input_tokens": 0, "history_tokens": history, "finish_reason": "stop"}


def _session_id(body: LMDeployRequest) -> int:
    sid, legacy = body.session_id, body.instance_id
    if sid is not None and legacy is not None and sid != legacy:
        raise InvalidRequest("session_id and instance_id name different sessions", field="instance_id")
    value = sid if sid is not None else legacy
    if value is None or value == -1:
        return -1
    if value < 0:
        raise InvalidRequest(f"session_id must be -1 (a new session) or at least 0, got {value}", field="session_id")
    return int(value)


def sampling(
    raw: LMDeploySampling | dict[str, Any], stops: tuple[str, ...], *, legacy: bool
) -> tuple[Options, Constraints]:
    """The sampling fields; with no `request_output_len` the legacy API answers 512 tokens at most."""
    s = raw if isinstance(raw, LMDeploySampling) else as_model(raw, LMDeploySampling)
    length = s.request_output_len
    options = Options(
        temperature=s.temperature if s.temperature is not None else 0.8,
        top_p=s.top_p if s.top_p is not None else 0.8,
        top_k=s.top_k if s.top_k is not None else 40,
        min_p=s.min_p if s.min_p is not None else 0.0,
        repeat_penalty=s.repetition_penalty if s.repetition_penalty is not None else 1.0,
        seed=s.seed,
        typical_p=1.0,
        num_predict=length if length is not None else (512 if legacy else -1),
        stop=stops or None,
    )
    return options, Constraints(ignore_eos=bool(s.ignore_eos), min_tokens=s.min_new_tokens or 0)


@guarded(ERRORS)
async def interactive(request: Request) -> Response:
    return await answer(request, await rq.read_chunks(request))


@guarded(ERRORS)
async def answer(request: Request, chunks: list[bytes]) -> Response:
    """One turn of a session (or a cancel), as `/v1/chat/interactive` and the legacy `/generate` take it
    (`chunks`: the body as read, decoded here so that its refusals are in LMDeploy's shape)."""
    service = service_of(request)
    sessions = sessions_of(request)
    body = await rq.decode_wire(request, chunks, LMDeployRequest)
    for unsupported in ("image_url", "adapter_name"):
        if getattr(body, unsupported) is not None:
            raise InvalidRequest(f"{unsupported} is not supported here", field=unsupported)
    sid = _session_id(body)
    stop = body.stop
    cancel = bool(body.cancel) or stop is True  # the legacy API's `stop: true` meant cancel
    stops = () if isinstance(stop, bool) or stop is None else parse_stop(stop, "stop")
    if cancel:
        if sid == -1:
            raise InvalidRequest("please set a session_id to cancel a request", field="session_id")
        sessions.cancel(sid)
        return JSONResponse(_nothing(0))
    legacy = body.sequence_start is not None or body.sequence_end is not None
    if legacy and body.interactive_mode is not None:
        raise InvalidRequest(
            "use either interactive_mode or sequence_start/sequence_end, not both", field="interactive_mode"
        )
    if body.prompt is None:
        raise InvalidRequest("prompt is required", field="prompt")
    text = body.prompt
    stream = bool(body.stream)
    if sid == -1:
        sid = sessions.new_id()
    existing = sessions.get(sid)
    if legacy:
        start, end = body.sequence_start is not False, bool(body.sequence_end)
        if not start and existing is None:
            raise InvalidRequest(
                f"session {sid} does not exist (it ended, expired, or its model was unloaded): "
                "open it with sequence_start true",
                field="sequence_start",
            )
    else:
        start, end = existing is None, not body.interactive_mode
    if not text:
        if not end:
            raise InvalidRequest("prompt is empty: nothing to say in this turn", field="prompt")
        history = len(existing.context) if existing is not None else 0
        sessions.end(sid)
        return JSONResponse(_nothing(history))
    if existing is not None and body.model is None:
        name = existing.model
    else:
        name = choose_model({"model": body.model}, service)
    options, constraints = sampling(body, stops, legacy=legacy)
    if stream:
        constraints = replace(constraints, logprobs=0)  # to count the tokens as they come
    turn, events = await sessions.turn(sid, name, text, start=start, end=end, options=options, constraints=constraints)
    events = await opened(events, request)
    if stream:
        return EventStream(
            _lines(events, turn), frame=ndjson_line, on_error=lmdeploy_error, media_type="application/x-ndjson"
        )
    gen = await until_disconnect(collect(events), request)
    return JSONResponse(_final(gen.text, gen.done, turn))


def _final(text: str, done: Done, turn: Turn) -> dict[str, Any]:
    out = _answer_object(text, done.eval_count, turn, FINISH.get(done.reason, "stop"))
    out["prompt_eval_count"] = done.prompt_eval_count
    return out


async def _lines(events: Events, turn: Turn) -> AsyncGenerator[Any, None]:
    """The new text as it comes; the last line (held until the end) carries the finish reason."""
    held: dict[str, Any] | None = None
    count = 0
    async for event in events:
        if isinstance(event, Token):
            count += len(event.logprobs)
            if held is not None:
                yield held
            held = _answer_object(event.text, count, turn, None)
            continue
        if not isinstance(event, Done):
            continue
        if held is None:
            held = _answer_object("", 0, turn, None)
        final = _final(held["text"], event, turn)
        yield final if event.reason != "cancel" else {**final, "tokens": count}
        return


@guarded(ERRORS)
async def encode(request: Request) -> Response:
    """`POST /v1/encode`: token ids of one input or several, through the chat template with `do_preprocess`."""
    service = service_of(request)
    body = await rq.read_wire(request, LMDeployEncodeRequest)
    raw = body.input
    inputs = [raw] if isinstance(raw, str) else raw
    name = choose_model({"model": body.model}, service)
    model = service.model(name)
    preprocess = bool(body.do_preprocess)
    add_bos = body.add_bos is not False
    ids = []
    for item in inputs:
        if preprocess:
            item = await service.templates.render_prompt(model, item, system=model.system)
        ids.append([t for t, _ in await service.tokenize(name, item, add_bos=add_bos)])
    if isinstance(raw, str):
        return JSONResponse({"input_ids": ids[0], "length": len(ids[0])})
    return JSONResponse({"input_ids": ids, "length": [len(i) for i in ids]})


routes = [
    Route("/v1/chat/interactive", interactive, methods=["POST"]),
    Route("/v1/encode", encode, methods=["POST"]),
]


class LMDeployAnswer(Reply, kw_only=True):
    """An interactive turn's answer, or a line of its stream (the new text; the last has the finish reason
    and, when whole, `prompt_eval_count`)."""

    text: str
    tokens: int
    input_tokens: int
    history_tokens: int
    finish_reason: str | None
    prompt_eval_count: int | Unset = UNSET


class LMDeployEncoded(Reply, kw_only=True):
    """`/v1/encode`: one input's ids and their count, or for a list of inputs a list of each."""

    input_ids: list[int | list[int]]  # one input: its ids; a list of inputs: the ids of each
    length: int | list[int]


def paths() -> dict[str, Any]:
    return {
        "/v1/chat/interactive": {
            "post": {
                "summary": "LMDeploy interactive session",
                "requestBody": request_body(LMDeployRequest),
                "responses": responses(
                    ServingError, LMDeployAnswer, stream=(NDJSON, (LMDeployAnswer, ServingError)), codes=SERVING_CODES
                ),
            }
        },
        "/v1/encode": {
            "post": {
                "summary": "LMDeploy encode",
                "requestBody": request_body(LMDeployEncodeRequest),
                "responses": responses(ServingError, LMDeployEncoded, codes=SERVING_CODES),
            }
        },
    }


DIALECT = Dialect("lmdeploy", routes, ERRORS, paths, wire=MODELS, replies=(LMDeployAnswer, LMDeployEncoded))
