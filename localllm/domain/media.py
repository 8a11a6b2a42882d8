"""Images and audio a request brings (content parts), as the service and the runner see them.

Every dialect turns its own form (Ollama `images`, OpenAI `image_url` data URLs and `input_audio`, Anthropic
`image` blocks, Responses `input_image`) into `Media` and writes `MARKER` into the message text where the part
was; the rendered prompt then holds one `MARKER` per media item, in order, and the runner's multimodal
tokenizer (llama.cpp's mtmd, whose default marker this is) replaces each with that item's tokens.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

MediaKind = Literal["image", "audio"]
MEDIA_KINDS: tuple[MediaKind, ...] = ("image", "audio")
MARKER = "<__media__>"  # llama.cpp's mtmd_default_marker(): where a media item goes in the prompt text


@dataclass(frozen=True)
class Media:
    """One image or audio clip: the file's bytes (PNG, JPEG, GIF, BMP, WebP…; WAV, MP3, FLAC) and the request
    field it came from (named by any error about it, e.g. `messages[0].content[1].image_url`)."""

    kind: MediaKind
    data: bytes = field(repr=False)
    source: str = ""  # the request field, for errors
    url: str = ""  # a remote image not fetched yet (`data` empty): the service fetches it, or refuses it

    @property
    def digest(self) -> str:
        """sha256 of the bytes: the item's identity in the prompt cache."""
        return hashlib.sha256(self.data).hexdigest()


def count_markers(text: str) -> int:
    return text.count(MARKER)
