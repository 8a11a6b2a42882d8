"""A request's images and audio, checked once for every dialect before anything renders or loads: the model can
read them (its `vision` / `audio` capability), remote images are allowed and fetched (`imagefetch`), and
every item is within the bounds (`domain.mediacheck`); then the prompt holds one `MARKER` per item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace

from ..domain import mediacheck
from ..domain.errors import InvalidRequest
from ..domain.media import MARKER, Media, count_markers
from ..domain.messages import ChatMessage
from ..modelstore.models import Model
from . import imagefetch

NEEDS = {"image": "vision", "audio": "audio"}  # the capability each kind of media needs
URLS_OFF = (
    "remote image URLs are not fetched by this server (a daemon fetching URLs for its clients can be made to "
    "read private addresses): send the image as a data URL (data:image/png;base64,...), or start the server "
    "with LOCALLLM_ALLOW_IMAGE_URLS=1 to allow http(s) URLs"
)

Fetcher = Callable[[str, str], bytes]  # (url, field) -> the body; blocking


def media_of(messages: Sequence[ChatMessage]) -> tuple[Media, ...]:
    """The conversation's media in the order of their markers in the rendered prompt."""
    return tuple(item for m in messages for item in m.media)


def check_capable(model: Model, items: Sequence[Media]) -> None:
    """Media only for a model that reads that kind: else a 400 naming the first part it cannot read."""
    capabilities = model.capabilities
    for item in items:
        need = NEEDS[item.kind]
        if need not in capabilities:
            raise InvalidRequest(
                f'{item.source}: "{model.name}" cannot read {item.kind}s: it has no "{need}" capability (its '
                f"capabilities: {', '.join(capabilities) or 'none'})",
                field=item.source,
            )


async def prepare(model: Model, items: Sequence[Media], *, allow_urls: bool, fetch: Fetcher) -> tuple[Media, ...]:
    """The items, checked (capability, bounds) and remote ones fetched, in order."""
    if not items:
        return ()
    check_capable(model, items)
    out = []
    for item in items:
        if item.url:
            if not allow_urls:
                raise InvalidRequest(f"{item.source}: {URLS_OFF}", field=item.source)
            data = await asyncio.to_thread(fetch, item.url, item.source)
            item = replace(item, data=data, url="")
        out.append(item)
    mediacheck.check_all(out)
    return tuple(out)


async def prepare_messages(
    model: Model, messages: Sequence[ChatMessage], *, allow_urls: bool, fetch: Fetcher = imagefetch.fetch
) -> list[ChatMessage]:
    """The messages with their media checked and fetched (`prepare`)."""
    items = await prepare(model, media_of(messages), allow_urls=allow_urls, fetch=fetch)
    if not items:
        return list(messages)
    out = []
    at = 0
    for m in messages:
        if m.media:
            m = replace(m, media=items[at : at + len(m.media)])
            at += len(m.media)
        out.append(m)
    return out


def check_markers(model: Model, text: str, items: Sequence[Media], field: str) -> None:
    """The prompt holds one marker per item (text sent with a marker in it is refused where it is parsed;
    this catches one that came another way: a template, a model's system prompt) where the runner would read
    markers: a request with media, or a model that reads media."""
    if not items and not any(need in model.capabilities for need in NEEDS.values()):
        return
    found = count_markers(text)
    if found != len(items):
        raise InvalidRequest(
            f"{field}: the prompt holds {found} {MARKER} markers for {len(items)} images and audio clips: text "
            f"cannot hold {MARKER}, which marks where media goes",
            field=field,
        )
