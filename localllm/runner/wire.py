"""The runner protocol's lines: one JSON object per line, read and written only here and in the message
types (`loadspec`, `requests`, `events`); `protocol` is the whole boundary in one place."""

from __future__ import annotations

import json
from typing import Any

Message = dict[str, Any]


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
