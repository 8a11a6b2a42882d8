"""The runner protocol's lines: one JSON object per line, read and written only here and in the message
types (`loadspec`, `requests`, `events`); `protocol` is the whole boundary in one place.

A runner's message longer than `FRAME` bytes (a tokenize answer for 16 MiB of text, the pieces of a million
ids, 2,048 embeddings) leaves as several lines, each at most `FRAME` bytes plus its mark and newline, so no
line the daemon reads is ever longer than `LINE_LIMIT`:

```
{"ev": ...}\n                      a message in one line (every JSON object begins with "{")
+<the first FRAME bytes>\n         a message in pieces: "+" a piece, more follow
+<the next FRAME bytes>\n
=<the rest>\n                      "=" its last piece; the message is the pieces joined
```

A piece may be cut anywhere, even inside a character: JSON escapes every newline, so the line's own bytes never
hold one. `Messages` joins the pieces again, refusing a message longer than its bound.
"""

from __future__ import annotations

import json
from typing import Any

Message = dict[str, Any]

FRAME = 1 << 20  # bytes of a message per line at most
LINE_LIMIT = 2 * FRAME  # what a reader of the lines may take as its line limit: more than any line written
MORE, LAST = b"+", b"="


class ProtocolError(ValueError):
    """A message that is not what the protocol says; `rid` is its id when it had one."""

    def __init__(self, message: str, rid: str | None = None) -> None:
        super().__init__(message)
        self.rid = rid


def encode_line(message: Message) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode_line(line: bytes | str) -> Message:
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError("a protocol message is a JSON object")
    return message


def frame(line: bytes, size: int = FRAME) -> bytes:
    """`line` (one message and its newline) as it is written: itself, or in pieces of `size` bytes when longer."""
    if len(line) <= size + 1:
        return line
    body = memoryview(line)[:-1]
    cuts = range(0, len(body), size)
    return b"".join(
        (LAST if start + size >= len(body) else MORE) + body[start : start + size] + b"\n" for start in cuts
    )


class Messages:
    """Whole messages from the lines read (see the module's doc): `add` gives each message once its last line came.

    A message longer than `max_bytes` is a `ProtocolError` as soon as its pieces pass that, before more is kept."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._pieces: list[bytes] = []
        self._size = 0

    def add(self, line: bytes) -> bytes | None:
        """The message `line` ends, or None while its pieces are still coming."""
        mark = line[:1]
        if mark != MORE and mark != LAST:
            if self._pieces:
                raise ProtocolError("a message's pieces were cut off by another message")
            return line
        piece = line[1:-1] if line.endswith(b"\n") else line[1:]
        self._size += len(piece)
        if self._size > self.max_bytes:
            raise ProtocolError(f"a message longer than {self.max_bytes} bytes")
        self._pieces.append(piece)
        if mark == MORE:
            return None
        message = b"".join(self._pieces)
        self._pieces.clear()
        self._size = 0
        return message
