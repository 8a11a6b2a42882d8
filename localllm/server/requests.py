"""Reading request bodies: into a dialect's wire model (`read_wire`, `wire.py`), or as JSON objects whose fields
are checked one by one (the dialects not yet declared as wire models), each error naming its field."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from starlette.requests import Request

from ..config import Settings
from ..config.values import parse_duration
from ..domain.errors import BodyTooLarge, ConfigError, InvalidRequest
from ..domain.limits import size_text
from ..domain.names import ModelName, parse_name
from . import fieldpolicy, wire
from .bodydecoder import BodyDecoder

T = TypeVar("T")
W = TypeVar("W", bound=msgspec.Struct)


async def read_body(request: Request) -> bytes:
    """The body, refused (413) once it passes the daemon's limit: never more than limit+1 bytes are held."""
    return b"".join(await read_chunks(request))


async def read_chunks(request: Request) -> list[bytes]:
    """The body as it came, in pieces (joining 60 MB takes the event loop ~0.1 s), refused (413) once it passes
    the daemon's limit."""
    limit: int = getattr(request.app.state, "max_body", Settings.max_body)  # the app's own limit, else the default
    too_large = BodyTooLarge(f"request body is larger than the limit of {size_text(limit)} (LOCALLLM_MAX_BODY)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        if chunk:
            chunks.append(chunk)
    return chunks


async def read_wire(request: Request, model: type[W]) -> W:
    """The body as the wire model `model`: decoded on the event loop up to `wire.INLINE_BYTES`, in the body
    decoder process beyond (so that no body blocks the loop); every refusal a 400 naming the field. The
    top-level fields `model` does not declare go to the field policy (`fieldpolicy.unknown`)."""
    return await decode_wire(request, await read_chunks(request), model)


async def decode_wire(request: Request, chunks: list[bytes], model: type[W]) -> W:
    """A body already read (`read_chunks`) as the wire model `model`, as `read_wire` decodes it: a route that
    decodes one body twice (first the fields that decide its dialect, then the dialect's model) reads it once,
    and the field policy sees it as the model it turned out to be (`wire.Lenient.partial`)."""
    if sum(map(len, chunks)) <= wire.INLINE_BYTES:
        raw = b"".join(chunks)
        value = wire.decode(raw, model)
        unknown = [] if getattr(model, "partial", False) else wire.unknown_fields(raw, model)
    else:
        decoder: BodyDecoder | None = getattr(request.app.state, "body_decoder", None)
        if decoder is None:
            decoder = request.app.state.body_decoder = BodyDecoder()
        value, unknown = await decoder.decode(chunks, model)
    if unknown and not getattr(model, "partial", False):
        fieldpolicy.unknown(unknown, wire.accepted_names(model))
    return value


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "an object",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds if k is not int or float not in kinds)


def field(
    body: dict[str, Any],
    name: str,
    kind: type[T] | tuple[type, ...],
    default: Any = None,
    *,
    required: bool = False,
    prefix: str = "",
) -> Any:
    """`body[name]` checked against `kind`; a missing or null field is `default` (or an error when required)."""
    value = body.get(name)
    label = f"{prefix}{name}"
    if value is None:
        if required:
            raise InvalidRequest(f"{label} is required", field=label)
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    elif float in kinds and isinstance(value, int):
        ok = True
    else:
        ok = isinstance(value, kinds)
    if not ok:
        raise InvalidRequest(f"{label} must be {_type_name(kind)}, got {type(value).__name__}", field=label)
    return value


def name_of(value: Any, field: str = "model") -> ModelName:
    """The model a (wire model's) field names; none, or "", is a 400."""
    if value is None or value == "":
        raise InvalidRequest(f"{field} is required", field=field)
    return parse_name(value, field=field)


def duration_of(value: str | float | None, field: str = "keep_alive") -> float | None:
    """`keep_alive` in seconds: a duration ("5m") or a number of seconds; None when not sent."""
    if value is None:
        return None
    try:
        return parse_duration(value, name=field)
    except ConfigError as exc:
        raise InvalidRequest(str(exc), field=field) from None
