"""What the serving dialects (TGI, vLLM, LMDeploy, Triton) share: the model a request means, field checks,
and generations opened, collected or merged.

A request of these dialects may name no model (their servers serve one): it then goes to
`LOCALLLM_DEFAULT_MODEL`, and with none set it is refused with a message that says how to choose.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request

from ..errors import EngineError, InvalidRequest, NoModelChosen
from ..names import ModelName, parse_name
from ..service import Service
from ..types import Constraints, Done, Options, Token, TokenLogprob
from . import requests as rq
from .streaming import first_item, prepend, until_disconnect

T = TypeVar("T")
Events = AsyncGenerator[Token | Done, None]


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


# What huggingface_hub's InferenceClient(base_url=...) sends as the model when it is given none.
PLACEHOLDER_MODEL = "dummy"


def choose_model(body: dict[str, Any], service: Service, *, field: str = "model") -> ModelName:
    """The model `body` names, else the daemon's default model; never a guess."""
    value = body.get(field)
    if value is not None and value != "" and value != PLACEHOLDER_MODEL:
        if not isinstance(value, str):
            raise InvalidRequest(f"{field} must be a string, got {type(value).__name__}", field=field)
        return parse_name(value, field=field)
    if service.settings.default_model:
        return parse_name(service.settings.default_model, field=field)
    raise InvalidRequest(
        f"no model chosen: name one in the `{field}` field of the body, or start the daemon with "
        "LOCALLLM_DEFAULT_MODEL set to the model that requests without one should use",
        field=field,
    )


def with_default_model(body: dict[str, Any], service: Service) -> dict[str, Any]:
    """`body` with its model chosen as for TGI when it names none or huggingface_hub's placeholder ("dummy"),
    and TGI's 422 when there is no default."""
    if body.get("model") not in (None, "", PLACEHOLDER_MODEL):
        return body
    try:
        return {**body, "model": str(choose_model(body, service))}
    except InvalidRequest as exc:
        raise NoModelChosen(str(exc)) from None


def check_fields(body: dict[str, Any], known: Iterable[str], *, prefix: str = "") -> None:
    """Refuse a field this dialect does not know (a typo must not be dropped silently)."""
    allowed = set(known)
    for key in body:
        if key not in allowed:
            raise InvalidRequest(
                f"unknown field '{prefix}{key}' (accepted: {', '.join(sorted(allowed))})", field=f"{prefix}{key}"
            )


def number(
    body: dict[str, Any],
    key: str,
    *,
    integer: bool = False,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    prefix: str = "",
) -> Any:
    """`body[key]` as a number within bounds (None when absent); the error names the field and the range."""
    value = rq.field(body, key, int if integer else float, prefix=prefix)
    if value is None:
        return None
    below = low is not None and (value <= low if open_low else value < low)
    above = high is not None and (value >= high if open_high else value > high)
    if below or above:
        parts = []
        if low is not None:
            parts.append(f"{'>' if open_low else '>='} {low}")
        if high is not None:
            parts.append(f"{'<' if open_high else '<='} {high}")
        raise InvalidRequest(f"{prefix}{key} must be {' and '.join(parts)}, got {value}", field=f"{prefix}{key}")
    return value if integer else float(value)


def flag(body: dict[str, Any], key: str, default: bool = False, *, prefix: str = "") -> bool:
    return bool(rq.field(body, key, bool, default, prefix=prefix))


def vllm_sampling(s: dict[str, Any], *, stop_key: str = "stop", seed_key: str = "seed") -> tuple[Options, Constraints]:
    """vLLM's sampling fields with vLLM's defaults (temperature 1, top_p 1, no top_k, 16 tokens), as vLLM and
    Triton's vLLM backend take them; `repetition_penalty` covers the prompt and the output, as vLLM's does."""
    top_k = number(s, "top_k", integer=True, low=-1)
    repetition = number(s, "repetition_penalty", low=0, open_low=True)
    options = Options(
        temperature=_or(number(s, "temperature", low=0), 1.0),
        top_p=_or(number(s, "top_p", low=0, high=1, open_low=True), 1.0),
        top_k=top_k if top_k is not None and top_k > 0 else 0,
        min_p=_or(number(s, "min_p", low=0, high=1), 0.0),
        typical_p=1.0,
        num_predict=number(s, "max_tokens", integer=True, low=1) or 16,
        stop=stop_strings(s, stop_key) or None,
        seed=number(s, seed_key, integer=True),
        presence_penalty=_or(number(s, "presence_penalty", low=-2, high=2), 0.0),
        frequency_penalty=_or(number(s, "frequency_penalty", low=-2, high=2), 0.0),
        repeat_penalty=repetition or 1.0,
        repeat_last_n=-1 if repetition else None,
    )
    constraints = Constraints(
        ignore_eos=flag(s, "ignore_eos"), min_tokens=number(s, "min_tokens", integer=True, low=0) or 0
    )
    return options, constraints


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def stop_strings(body: dict[str, Any], key: str, *, prefix: str = "", limit: int | None = None) -> tuple[str, ...]:
    """A string or a list of strings; empty strings are dropped."""
    value = body.get(key)
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise InvalidRequest(f"{prefix}{key} must be a string or a list of strings", field=f"{prefix}{key}")
    if limit is not None and len(items) > limit:
        raise InvalidRequest(
            f"{prefix}{key} holds {len(items)} stop sequences, at most {limit} are allowed", field=f"{prefix}{key}"
        )
    return tuple(s for s in items if s)


@dataclass(frozen=True)
class Generation:
    """One finished generation: its pieces of text (with log-probabilities when asked for) and its end."""

    tokens: tuple[Token, ...]
    done: Done

    @property
    def text(self) -> str:
        return "".join(t.text for t in self.tokens)

    @property
    def logprobs(self) -> list[TokenLogprob]:
        return [lp for t in self.tokens for lp in t.logprobs]


async def collect(events: Events) -> Generation:
    tokens: list[Token] = []
    done: Done | None = None
    async with contextlib.aclosing(events):
        async for event in events:
            if isinstance(event, Token):
                tokens.append(event)
            else:
                done = event
    if done is None:
        raise EngineError("a generation ended without a result")
    return Generation(tuple(tokens), done)


async def opened(stream: AsyncGenerator[T, None], request: Request) -> AsyncGenerator[T, None]:
    """The stream with its first event already there: the queue, the load and the prompt evaluation are
    behind it, so an early error is raised here (and answered with a status). `ClientGone` if the client
    leaves meanwhile; either way the stream is closed on failure."""
    return prepend(await first_item(stream, request), stream)


async def opened_merged(streams: Sequence[Events], request: Request) -> AsyncGenerator[tuple[int, Token | Done], None]:
    """`merged(streams)` with its first event there (as `opened`). The streams are consumed together, so
    more of them than the model has slots cannot wait on each other."""
    return await opened(merged(streams), request)


async def collect_all(streams: Sequence[Events], request: Request) -> list[Generation]:
    """Every stream collected, together; the first error is raised once all have ended (`ClientGone` if the
    client leaves first, which closes them all)."""
    results = await until_disconnect(asyncio.gather(*(collect(s) for s in streams), return_exceptions=True), request)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, Generation)]


async def merged(streams: Sequence[Events]) -> AsyncGenerator[tuple[int, Token | Done], None]:
    """The events of every stream as they come, tagged with the stream's index; closing closes them all."""
    if len(streams) == 1:
        async with contextlib.aclosing(streams[0]):
            async for event in streams[0]:
                yield 0, event
        return
    queue: asyncio.Queue[tuple[int, Token | Done | BaseException | None]] = asyncio.Queue()

    async def pump(i: int) -> None:
        try:
            async for event in streams[i]:
                await queue.put((i, event))
        except Exception as exc:
            await queue.put((i, exc))
        finally:
            await queue.put((i, None))

    tasks = [asyncio.create_task(pump(i)) for i in range(len(streams))]
    try:
        remaining = len(streams)
        while remaining:
            i, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for task in tasks:
            task.cancel()
        for stream in streams:
            await stream.aclose()
