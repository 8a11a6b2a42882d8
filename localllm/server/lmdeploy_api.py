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
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import InvalidRequest
from ..sessions import Sessions, Turn
from ..types import Constraints, Options, Token
from . import requests as rq
from .dialect import (
    Events,
    Generation,
    check_fields,
    choose_model,
    collect,
    flag,
    number,
    opened,
    service_of,
    stop_strings,
)
from .errors import headers_of, message_of, status_of
from .streaming import ClientGone, EventStream, ndjson_line, until_disconnect

FIELDS = (
    "prompt",
    "session_id",
    "instance_id",
    "interactive_mode",
    "sequence_start",
    "sequence_end",
    "stream",
    "stop",
    "request_output_len",
    "top_p",
    "top_k",
    "temperature",
    "repetition_penalty",
    "ignore_eos",
    "cancel",
    "seed",
    "min_new_tokens",
    "min_p",
    "model",
    "image_url",
    "adapter_name",
    "skip_special_tokens",  # no effect: special tokens never appear in the output
    "spaces_between_special_tokens",  # no effect, for the same reason
)
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


def error_response(exc: BaseException) -> JSONResponse:
    return JSONResponse(lmdeploy_error(exc), status_code=status_of(exc), headers=headers_of(exc))


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


def _session_id(body: dict[str, Any]) -> int:
    sid = rq.field(body, "session_id", int)
    legacy = rq.field(body, "instance_id", int)
    if sid is not None and legacy is not None and sid != legacy:
        raise InvalidRequest("session_id and instance_id name different sessions", field="instance_id")
    value = sid if sid is not None else legacy
    if value is None or value == -1:
        return -1
    if value < 0:
        raise InvalidRequest(f"session_id must be -1 (a new session) or at least 0, got {value}", field="session_id")
    return int(value)


def _sampling(body: dict[str, Any], stops: tuple[str, ...], *, legacy: bool) -> tuple[Options, Constraints]:
    """LMDeploy's defaults: temperature 0.8, top_p 0.8, top_k 40; the legacy API answers 512 tokens at most."""
    length = number(body, "request_output_len", integer=True, low=0)
    options = Options(
        temperature=_or(number(body, "temperature", low=0, high=2), 0.8),
        top_p=_or(number(body, "top_p", low=0, high=1, open_low=True), 0.8),
        top_k=_or(number(body, "top_k", integer=True, low=0), 40),
        min_p=_or(number(body, "min_p", low=0, high=1), 0.0),
        typical_p=1.0,
        repeat_penalty=_or(number(body, "repetition_penalty", low=0, open_low=True), 1.0),
        num_predict=length if length is not None else (512 if legacy else -1),
        stop=stops or None,
        seed=number(body, "seed", integer=True),
    )
    constraints = Constraints(
        ignore_eos=flag(body, "ignore_eos"),
        min_tokens=number(body, "min_new_tokens", integer=True, low=0) or 0,
    )
    return options, constraints


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


async def interactive(request: Request) -> Response:
    try:
        body = await rq.read_json(request)
    except Exception as exc:
        return error_response(exc)
    return await answer(request, body)


async def answer(request: Request, body: dict[str, Any]) -> Response:
    """One turn of a session (or a cancel), as `/v1/chat/interactive` and the legacy `/generate` take it."""
    service = service_of(request)
    sessions = sessions_of(request)
    try:
        check_fields(body, FIELDS)
        for unsupported in ("image_url", "adapter_name"):
            if body.get(unsupported) is not None:
                raise InvalidRequest(f"{unsupported} is not supported here", field=unsupported)
        flag(body, "skip_special_tokens", True)
        flag(body, "spaces_between_special_tokens", True)
        sid = _session_id(body)
        stop = body.get("stop")
        cancel = flag(body, "cancel") or stop is True  # the legacy API's `stop: true` meant cancel
        stops = () if isinstance(stop, bool) else stop_strings(body, "stop")
        if cancel:
            if sid == -1:
                raise InvalidRequest("please set a session_id to cancel a request", field="session_id")
            sessions.cancel(sid)
            return JSONResponse(_nothing(0))
        legacy = body.get("sequence_start") is not None or body.get("sequence_end") is not None
        if legacy and body.get("interactive_mode") is not None:
            raise InvalidRequest(
                "use either interactive_mode or sequence_start/sequence_end, not both", field="interactive_mode"
            )
        text: str = rq.field(body, "prompt", str, required=True)
        stream = flag(body, "stream")
        if sid == -1:
            sid = sessions.new_id()
        existing = sessions.get(sid)
        if legacy:
            start, end = flag(body, "sequence_start", True), flag(body, "sequence_end")
            if not start and existing is None:
                raise InvalidRequest(
                    f"session {sid} does not exist (it ended, expired, or its model was unloaded): "
                    "open it with sequence_start true",
                    field="sequence_start",
                )
        else:
            start, end = existing is None, not flag(body, "interactive_mode")
        if not text:
            if not end:
                raise InvalidRequest("prompt is empty: nothing to say in this turn", field="prompt")
            history = len(existing.context) if existing is not None else 0
            sessions.end(sid)
            return JSONResponse(_nothing(history))
        if existing is not None and body.get("model") is None:
            name = existing.model
        else:
            name = choose_model(body, service)
        options, constraints = _sampling(body, stops, legacy=legacy)
        if stream:
            constraints = replace(constraints, logprobs=0)  # to count the tokens as they come
        turn, events = await sessions.turn(
            sid, name, text, start=start, end=end, options=options, constraints=constraints
        )
    except Exception as exc:
        return error_response(exc)
    try:
        events = await opened(events, request)
    except ClientGone:
        return Response(status_code=499)
    except Exception as exc:
        return error_response(exc)
    if stream:
        return EventStream(
            _lines(events, turn), frame=ndjson_line, on_error=lmdeploy_error, media_type="application/x-ndjson"
        )
    try:
        gen = await until_disconnect(collect(events), request)
    except ClientGone:
        return Response(status_code=499)
    except Exception as exc:
        return error_response(exc)
    return JSONResponse(_final(gen.text, gen, turn))


def _final(text: str, gen: Generation, turn: Turn) -> dict[str, Any]:
    done = gen.done
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
        if held is None:
            held = _answer_object("", 0, turn, None)
        final = _final(held["text"], Generation((), event), turn)
        yield final if event.reason != "cancel" else {**final, "tokens": count}
        return


async def encode(request: Request) -> Response:
    """`POST /v1/encode`: token ids of one input or several, through the chat template with `do_preprocess`."""
    service = service_of(request)
    try:
        body = await rq.read_json(request)
        check_fields(body, ("input", "do_preprocess", "add_bos", "model"))
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            raise InvalidRequest("input must be a string or a list of strings", field="input")
        name = choose_model(body, service)
        model = service.model(name)
        preprocess = flag(body, "do_preprocess")
        add_bos = flag(body, "add_bos", True)
        ids = []
        for item in inputs:
            if preprocess:
                item = await service.render_prompt(model, item, system=model.system)
            ids.append([t for t, _ in await service.tokenize(name, item, add_bos=add_bos)])
    except Exception as exc:
        return error_response(exc)
    if isinstance(raw, str):
        return JSONResponse({"input_ids": ids[0], "length": len(ids[0])})
    return JSONResponse({"input_ids": ids, "length": [len(i) for i in ids]})


routes = [
    Route("/v1/chat/interactive", interactive, methods=["POST"]),
    Route("/v1/encode", encode, methods=["POST"]),
]
