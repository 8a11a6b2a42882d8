"""A message's content parts (text, and images or audio as `Media`) as the one text a template renders, with
`MARKER` where each media item goes: the rule every dialect follows, so that the same parts make the same
prompt whichever API they came in (docs/multimodal.md).

The rule is llama.cpp's (`common_chat_msg::to_json_oaicompat`, as llama-server joins parts): text parts are
joined with a newline, and no newline goes before or after a media marker. "An image, then the text X" is
`<__media__>X` in every dialect; Ollama's `images` come before the message's text.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import InvalidRequest
from .media import MARKER, Media

Part = str | Media


def text_part(text: str, source: str) -> str:
    """A text part, refused if it holds `MARKER`: the runner would take it for a media item's place (and every
    item after it would move), so it cannot be sent as text."""
    if MARKER in text:
        raise InvalidRequest(
            f"{source}: the text holds {MARKER}, which marks where an image or audio clip goes in a prompt; "
            "it cannot be sent as text",
            field=source,
        )
    return text


def join(parts: Iterable[Part]) -> tuple[str, tuple[Media, ...]]:
    """The parts' text, a `MARKER` for each media item, and the items in the order of their markers."""
    text = ""
    media: list[Media] = []
    after_media = False
    for part in parts:
        if isinstance(part, Media):
            text += MARKER
            media.append(part)
            after_media = True
        else:
            if text and not after_media:
                text += "\n"
            text += part
            after_media = False
    return text, tuple(media)
