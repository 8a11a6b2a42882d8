"""A prompt with images and audio, as the decode loop sees it: tokens, and the spans of media chunks among them.

The projector (multimodal.py, llama.cpp's mtmd) cuts a prompt into text chunks and media chunks. The decode loop
keeps a prompt as one list of token ids, whatever its chunks: a text chunk's tokens, and for each position of a
media chunk a *pseudo id* (`pseudo_ids`): a negative number, which no text token equals, derived from the
sha256 of the item's bytes and the position within the chunk. So everything that compares token lists (the
slot whose cache holds the longest prefix, the saved states of kvstates.py in RAM and on disk, the prompt's
kept output) works on media unchanged: the same image again at the same place matches, its KV is reused and
it is not encoded again; a different image differs from its first position on.

A cache is only ever cut at a chunk's edge (`snap`): half an image's KV is no use, as the chunk is evaluated
whole. And a pseudo id never goes back to a client as a token (`Finished.context` is empty for a media prompt).

No llama.cpp here: the decode loop reaches the projector through `Projector`, so unit tests drive it with a fake.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..domain.media import Media

_ID_RANGE = 2**31 - 1  # pseudo ids are -1 .. -(2**31 - 1): int32, as the token arrays of saved states hold


class MediaError(Exception):
    """A media item the projector cannot take (not an image or audio it decodes, the wrong kind for this
    model); the message names the item's request field."""


@dataclass(frozen=True)
class MediaSpan:
    """One media chunk of a prompt: its tokens are prompt[start : start + n]."""

    start: int
    n: int
    chunk: Any  # the projector's handle for the chunk (evaluated by `Projector.evaluate`)
    source: str  # the request field it came from, for errors

    @property
    def end(self) -> int:
        return self.start + self.n


@dataclass(frozen=True)
class MediaPrompt:
    tokens: list[int]  # text tokens and each span's pseudo ids, in order
    spans: tuple[MediaSpan, ...]


class Projector(Protocol):
    """What the decode loop asks of a loaded projector (multimodal.Projector)."""

    vision: bool
    audio: bool

    def tokenize(self, text: str, media: Sequence[Media], *, add_bos: bool) -> MediaPrompt:
        """`text` with one `MARKER` per item of `media`, as tokens and spans; raises MediaError."""
        ...

    def evaluate(self, span: MediaSpan, n_past: int, seq: int) -> int:
        """Encode the span's chunk and decode its embeddings into sequence `seq` at `n_past`; 0 on success.
        (No logits: llama.cpp's helper asks for none after a media chunk, so a prompt never ends with one.)"""
        ...

    def release(self, spans: Sequence[MediaSpan]) -> None:
        """Free the spans' chunks (their request is done with them)."""
        ...


def media_prompt(
    projector: Projector | None, text: str, media: Sequence[Media], context: Sequence[int] = ()
) -> MediaPrompt:
    """The tokens and media spans of `text` with `media`, after the tokens of an earlier exchange (`context`);
    raises MediaError, naming the item, when the model has no projector, the projector refuses an item, or the
    prompt ends with an item (llama.cpp gives no logits after a media chunk: the first token is sampled after
    text)."""
    first = media[0]
    if projector is None:
        raise MediaError(f"{first.source or first.kind}: this model has no projector, so it takes no images or audio")
    made = projector.tokenize(text, media, add_bos=not context)
    if made.spans and made.spans[-1].end == len(made.tokens):
        projector.release(made.spans)
        where = made.spans[-1].source
        raise MediaError(f"{where}: the prompt ends with it; text must follow the last image or audio")
    if not context:
        return made
    spans = tuple(dataclasses.replace(s, start=s.start + len(context)) for s in made.spans)
    return MediaPrompt([*context, *made.tokens], spans)


def pseudo_ids(digest: str, n: int, part: int = 0) -> list[int]:
    """The ids that stand for the `n` positions of a media chunk whose item's sha256 is `digest` (hex); `part`
    counts the item's chunks (an image cut in slices is several)."""
    seed = bytes.fromhex(digest) + part.to_bytes(4, "little")
    base = int.from_bytes(hashlib.sha256(seed).digest()[:8], "little")
    return [-(1 + (base + i) % _ID_RANGE) for i in range(n)]


def is_text(token: int) -> bool:
    return token >= 0


def snap(spans: Sequence[MediaSpan], n: int) -> int:
    """`n` (a number of the prompt's tokens kept in a cache), moved back to the start of the media chunk it
    would fall inside of; unchanged at a chunk's edge or in text."""
    for span in spans:
        if span.start < n < span.end:
            return span.start
    return n


def span_at(spans: Sequence[MediaSpan], start: int) -> MediaSpan | None:
    """The span that begins at prompt position `start`, if one does."""
    return next((s for s in spans if s.start == start), None)


def text_run(pending: Sequence[int], limit: int) -> int:
    """How many of `pending`'s first tokens (at most `limit`) are text: they go into the decode batch; the
    media chunk after them is evaluated by the projector."""
    n = min(limit, len(pending))
    for i in range(n):
        if pending[i] < 0:
            return i
    return n
