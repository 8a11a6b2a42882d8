"""Stored responses (OpenAI's Responses API, `store: true`): each answer kept with the conversation it ends,
so that `previous_response_id` continues it and `GET`/`DELETE /v1/responses/{id}` find it.

In memory, bounded three ways (`limits.RESPONSES_MAX_COUNT`, `limits.RESPONSES_MAX_BYTES`,
`limits.RESPONSES_TTL_S`): the oldest go first when a bound is passed, and an expired one is gone.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import limits
from .types import ChatMessage


@dataclass(frozen=True)
class StoredResponse:
    """A response object as answered, and the conversation it ends (its input, then its output, as messages:
    what a later turn's prompt begins with; the instructions are not carried over, as OpenAI's are not)."""

    response: dict[str, Any]
    conversation: tuple[ChatMessage, ...]
    size: int
    expires: float


def _size(response: dict[str, Any], conversation: tuple[ChatMessage, ...]) -> int:
    text = sum(len(m.content.encode()) + sum(len(json.dumps(c.arguments)) for c in m.tool_calls) for m in conversation)
    return len(json.dumps(response, ensure_ascii=False).encode()) + text + 64 * len(conversation)


class ResponseStore:
    """Responses by id, oldest first; thread-safe."""

    def __init__(
        self,
        *,
        max_count: int = limits.RESPONSES_MAX_COUNT,
        max_bytes: int = limits.RESPONSES_MAX_BYTES,
        ttl: float = limits.RESPONSES_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.clock = clock
        self.items: OrderedDict[str, StoredResponse] = OrderedDict()
        self.bytes = 0
        self.lock = threading.Lock()

    def put(self, response: dict[str, Any], conversation: tuple[ChatMessage, ...]) -> bool:
        """Keep `response` (under its `id`); False when it alone is over the byte bound (not kept)."""
        size = _size(response, conversation)
        if size > self.max_bytes:
            return False
        with self.lock:
            self._drop(response["id"])
            self.items[response["id"]] = StoredResponse(response, conversation, size, self.clock() + self.ttl)
            self.bytes += size
            self._expire()
            while len(self.items) > self.max_count or self.bytes > self.max_bytes:
                self._drop(next(iter(self.items)))
        return True

    def get(self, rid: str) -> StoredResponse | None:
        with self.lock:
            self._expire()
            return self.items.get(rid)

    def delete(self, rid: str) -> bool:
        with self.lock:
            self._expire()
            return self._drop(rid)

    def __len__(self) -> int:
        with self.lock:
            self._expire()
            return len(self.items)

    def _drop(self, rid: str) -> bool:
        item = self.items.pop(rid, None)
        if item is None:
            return False
        self.bytes -= item.size
        return True

    def _expire(self) -> None:
        now = self.clock()
        for rid in [rid for rid, item in self.items.items() if item.expires <= now]:
            self._drop(rid)
