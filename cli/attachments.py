"""Image and audio files named in a prompt, attached to it as Ollama's CLI attaches them.

    localllm run MODEL "what is in ./cat.png"     sends "what is in" with the bytes of ./cat.png in `images`

The rule is Ollama's (`extractFileNames` / `extractFileData` of its interactive CLI):

- a path is found by its shape: it starts with `/`, `./`, `\\`, `.\\` or a drive letter (`C:\\`), and ends with
  `.jpg`, `.jpeg`, `.png` or `.webp` (any case); here also `.wav`, `.mp3` and `.flac` (audio, which Ollama has
  not) and a leading `~/` (the home folder, which Ollama leaves alone). A bare `cat.png` is not a path.
- spaces may be in it, escaped (`my\\ cat.png`) or not, or the path may be quoted with `'...'`; shell escapes
  (`\\(`, `\\'`, `'\\''`...) are undone;
- a path that names no file is left in the text, as typed; a file that cannot be read, or whose bytes are not
  the kind its name says (a JPEG, PNG or WebP image; WAV, MP3 or FLAC audio), or is over
  `limits.ATTACHMENT_MAX_BYTES`, is an `AttachmentError` and nothing is sent;
- each file attached is removed from the text (with its quotes), which is then trimmed (a prompt with no file
  attached is sent as it was).

Unlike Ollama, which reads paths only for models with vision, every model gets them: the daemon says, once and
in words, when a model cannot take images or audio.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from typing import Literal

from localllm.domain.limits import ATTACHMENT_MAX_BYTES

Kind = Literal["image", "audio"]
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
AUDIO_EXTENSIONS = ("wav", "mp3", "flac")

_PATH = re.compile(
    r"(?:[a-zA-Z]:|~)?(?:\./|/|\\)[\S\\ ]+?\.(?i:" + "|".join(IMAGE_EXTENSIONS + AUDIO_EXTENSIONS) + r")\b",
    re.ASCII,
)
# Ollama's normalizeFilePath: shell escapes undone, in this order of priority at each place.
_UNESCAPE = {
    "\\ ": " ",
    "\\(": "(",
    "\\)": ")",
    "\\[": "[",
    "\\]": "]",
    "\\{": "{",
    "\\}": "}",
    "\\$": "$",
    "\\&": "&",
    "\\;": ";",
    "\\'": "'",
    "\\\\": "\\",
    "\\*": "*",
    "\\?": "?",
    "\\~": "~",
    "'\\''": "'",
}
_ESCAPED = re.compile("|".join(re.escape(escaped) for escaped in _UNESCAPE))
_WHAT = {"image": "a JPEG, PNG or WebP image", "audio": "WAV, MP3 or FLAC audio"}


class AttachmentError(Exception):
    """A file named in the prompt that exists but cannot be sent (unreadable, too big, not what its name says)."""


@dataclass(frozen=True)
class Attachment:
    kind: Kind
    path: str  # as the prompt named it, escapes undone
    data: bytes = field(repr=False)

    @property
    def base64(self) -> str:
        """The bytes as Ollama's `images` carries them."""
        return base64.b64encode(self.data).decode("ascii")


def added(file: Attachment) -> str:
    """What the CLI says of a file it attached: Ollama's `Added image '<path>'`."""
    return f"Added {file.kind} '{file.path}'"


def file_names(text: str) -> list[str]:
    """Every stretch of `text` shaped like a path to an image or audio file, as written (escapes kept)."""
    return _PATH.findall(text)


def unescape(path: str) -> str:
    return _ESCAPED.sub(lambda m: _UNESCAPE[m.group()], path)


def kind_of(path: str) -> Kind:
    return "audio" if path.rsplit(".", 1)[-1].lower() in AUDIO_EXTENSIONS else "image"


def attach(text: str) -> tuple[str, list[Attachment]]:
    """The prompt without the files it names, and those files, in the order they were named."""
    found: list[Attachment] = []
    for written in file_names(text):
        path = unescape(written)
        data = _read(path, kind_of(path))
        if data is None:
            continue
        found.append(Attachment(kind_of(path), path, data))
        for form in (f"'{path}'", f"'{written}'", written):
            text = text.replace(form, "")
    return (text.strip() if found else text), found


def _read(path: str, kind: Kind) -> bytes | None:
    """The file's bytes; None when there is no such file (the text was not a path after all)."""
    try:
        with open(os.path.expanduser(path), "rb") as file:
            head = file.read(16)
            size = os.fstat(file.fileno()).st_size
            if size > ATTACHMENT_MAX_BYTES:
                raise AttachmentError(
                    f"couldn't read {kind} '{path}': {size:,} bytes is over the limit of {ATTACHMENT_MAX_BYTES:,}"
                )
            if _sniff(head) != kind:
                raise AttachmentError(f"couldn't read {kind} '{path}': the file is not {_WHAT[kind]}")
            return head + file.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AttachmentError(f"couldn't read {kind} '{path}': {exc.strerror or exc}") from None


def _sniff(head: bytes) -> Kind | None:
    """What the first bytes of a file say it is (the formats the extensions above name)."""
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE" or head.startswith((b"fLaC", b"ID3")):
        return "audio"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # an MPEG audio frame without ID3 tags
        return "audio"
    return None
