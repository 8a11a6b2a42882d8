"""What the dialects share: the text of a message's content blocks (OpenAI's, Responses' and Anthropic's), and
for the serving dialects (TGI, vLLM, LMDeploy, Triton) the model a request means, vLLM's sampling fields as a
wire model (`VLLMSampling`, which Triton's vLLM backend takes too), the fields that decide how a shared path
reads its body (`Presence`), and generations opened, collected together or merged.

A request of these dialects may name no model (their servers serve one): it then goes to
`LOCALLLM_DEFAULT_MODEL`, and with none set it is refused with a message that says how to choose.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from typing import Annotated, Any, ClassVar, TypeVar

from msgspec import Meta
from starlette.requests import Request

from ...domain.errors import InvalidRequest, NoModelChosen
from ...domain.events import Event
from ...domain.limits import MAX_STOP
from ...domain.names import ModelName, parse_name
from ...domain.options import Constraints, Options, parse_stop
from ...service.core import Service
from ...service.generation import Answer, collect
from ..streaming import first_item, prepend, until_disconnect
from ..wire import Lenient, Strict

T = TypeVar("T")
Events = AsyncGenerator[Event, None]


def block_text(value: Any, label: str, *, kinds: tuple[str, ...] = ("text",), sep: str = "", noun: str) -> str:
    """A message's content: a string, or the `text` of each block (a `noun`, e.g. "text part") whose type is
    one of `kinds`, joined by `sep`. Anything else is refused naming `label`, or the block (`label[i]`) that is
    not text."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise InvalidRequest(f"{label} must be a string or a list of {noun}s", field=label)
    texts = []
    for i, block in enumerate(value):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in kinds or not isinstance(block.get("text"), str):
            shape = f"{{'type': '{kinds[0]}', 'text': ...}}" if len(kinds) == 1 else f"of type {' or '.join(kinds)}"
            why = f": '{kind}' {noun}s are not supported here" if isinstance(kind, str) and kind not in kinds else ""
            raise InvalidRequest(f"{label}[{i}] must be a {noun} ({shape}){why}", field=f"{label}[{i}]")
        texts.append(block["text"])
    return sep.join(texts)


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


def default_model(model: str | None, service: Service) -> str:
    """The model a body names (its wire model's `model`), else the daemon's default when it names none or
    huggingface_hub's placeholder ("dummy"), and TGI's 422 when there is no default."""
    if model not in (None, "", PLACEHOLDER_MODEL):
        assert model is not None
        return model
    try:
        return str(choose_model({}, service))
    except InvalidRequest as exc:
        raise NoModelChosen(str(exc)) from None


class Presence(Lenient, kw_only=True):
    """A wire model of the top-level fields that decide how a shared path reads its body (which dialect, which
    shape): only whether each is there (and `model`, when a string) comes back from the body decoder (`check`
    keeps no more), so deciding costs the event loop nothing whatever the body's size; the body is then decoded
    again as the model it turned out to be (`requests.decode_wire`). Subclasses declare the fields, as `Any`."""

    partial: ClassVar[bool] = True  # the field policy waits for the body's own model
    model: Any = None

    def check(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is not None and not (name == "model" and isinstance(value, str)):
                setattr(self, name, True)

    def present(self) -> dict[str, Any]:
        """The fields that are there (not null), as a body to look into."""
        return {name: getattr(self, name) for name in self.__struct_fields__ if getattr(self, name) is not None}


# -- vLLM's sampling fields as a wire model (vllm.py's body, Triton's vLLM backend's): null is vLLM's default ------

Stop = str | Annotated[list[str], Meta(max_length=MAX_STOP)] | None
Penalty = Annotated[float, Meta(ge=-2, le=2)] | None


class VLLMSampling(Strict, kw_only=True):
    """vLLM's `SamplingParams` fields, with its defaults (temperature 1, top_p 1, no top_k, 16 tokens)."""

    temperature: Annotated[float, Meta(ge=0)] | None = None
    top_p: Annotated[float, Meta(gt=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=-1)] | None = None  # -1 (or none): no top_k
    min_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    min_tokens: Annotated[int, Meta(ge=0)] | None = None
    stop: Stop = None
    seed: int | None = None
    presence_penalty: Penalty = None
    frequency_penalty: Penalty = None
    repetition_penalty: Annotated[float, Meta(gt=0)] | None = None
    ignore_eos: bool | None = None


def vllm_options(s: VLLMSampling, *, stop: Stop = None, seed: int | None = None) -> tuple[Options, Constraints]:
    """Options and constraints from vLLM's sampling fields (`stop` and `seed` when given under other names):
    no top_k is 0 (vLLM's -1 too), and `repetition_penalty` covers the prompt and the output, as vLLM's does."""
    stop = stop if stop is not None else s.stop
    repetition = s.repetition_penalty
    options = Options(
        temperature=s.temperature if s.temperature is not None else 1.0,
        top_p=s.top_p if s.top_p is not None else 1.0,
        top_k=s.top_k if s.top_k is not None and s.top_k > 0 else 0,
        min_p=s.min_p if s.min_p is not None else 0.0,
        typical_p=1.0,
        num_predict=s.max_tokens if s.max_tokens is not None else 16,
        stop=(parse_stop(stop, "stop") or None) if stop is not None else None,
        seed=seed if seed is not None else s.seed,
        presence_penalty=s.presence_penalty or 0.0,
        frequency_penalty=s.frequency_penalty or 0.0,
        repeat_penalty=repetition or 1.0,
        repeat_last_n=-1 if repetition else None,
    )
    return options, Constraints(ignore_eos=bool(s.ignore_eos), min_tokens=s.min_tokens or 0)


async def opened(stream: AsyncGenerator[T, None], request: Request) -> AsyncGenerator[T, None]:
    """The stream with its first event already there: the queue, the load and the prompt evaluation are
    behind it, so an early error is raised here (and answered with a status). `ClientGone` if the client
    leaves meanwhile; either way the stream is closed on failure."""
    return prepend(await first_item(stream, request), stream)


async def opened_merged(streams: Sequence[Events], request: Request) -> AsyncGenerator[tuple[int, Event], None]:
    """`merged(streams)` with its first event there (as `opened`). The streams are consumed together, so
    more of them than the model has slots cannot wait on each other."""
    return await opened(merged(streams), request)


async def collect_all(streams: Sequence[Events], request: Request) -> list[Answer]:
    """Every stream collected, together; the first error is raised once all have ended (`ClientGone` if the
    client leaves first, which closes them all)."""
    results = await until_disconnect(asyncio.gather(*(collect(s) for s in streams), return_exceptions=True), request)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, Answer)]


async def merged(streams: Sequence[Events]) -> AsyncGenerator[tuple[int, Event], None]:
    """The events of every stream as they come, tagged with the stream's index; closing closes them all."""
    if len(streams) == 1:
        async with contextlib.aclosing(streams[0]):
            async for event in streams[0]:
                yield 0, event
        return
    queue: asyncio.Queue[tuple[int, Event | BaseException | None]] = asyncio.Queue()

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
