"""Stored responses (OpenAI's Responses API, `store: true`): each answer kept with the conversation it ends,
so that `previous_response_id` continues it and `GET`/`DELETE /v1/responses/{id}` find it.

In memory, bounded three ways (`limits.RESPONSES_MAX_COUNT`, `limits.RESPONSES_MAX_BYTES`,
`limits.RESPONSES_TTL_S`): the oldest go first when a bound is passed, and an expired one is gone.

With a `directory` (`LOCALLLM_RESPONSES_DIR`) each response is also written there, one JSON file per response
(`<id>.json`, written whole and renamed into place), and the files are read back when the store is made, so
conversations survive a restart. The files mirror the memory: a response dropped (by a bound, its expiry or
`DELETE`) loses its file, and at start the newest files within the bounds are read, the rest removed. A file
that does not parse (truncated, corrupt, not ours) is removed and logged, never served. A response not in
memory is looked for on disk too (written by another daemon sharing the directory); each daemon bounds what it
knows of.

Each response belongs to the principal (API key, app) of the request that made it (`auth.principal.tenant()`,
kept in its record): for any other one it does not exist, so a key can neither read, chain
(`previous_response_id`) nor delete another's responses. The bounds are the daemon's, over every owner.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..auth.principal import tenant
from ..domain import limits
from ..domain.media import MEDIA_KINDS, Media
from ..domain.messages import ChatMessage, ToolCall

log = logging.getLogger("localllm.responses")

ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # a response id that may name a file
SUFFIX = ".json"
PARTIAL = ".partial"  # a file being written (renamed into place when whole)


@dataclass(frozen=True)
class StoredResponse:
    """A response object as answered, and the conversation it ends (its input, then its output, as messages:
    what a later turn's prompt begins with; the instructions are not carried over, as OpenAI's are not)."""

    response: dict[str, Any]
    conversation: tuple[ChatMessage, ...]
    size: int  # bytes of its record (`_record`): what its file holds
    expires: float  # when it expires, in seconds of the store's clock (the epoch by default)
    owner: str = ""  # the principal whose request stored it (auth.principal.tenant)


def _record(response: dict[str, Any], conversation: tuple[ChatMessage, ...], expires: float, owner: str) -> bytes:
    """A stored response as its file's bytes."""
    messages = [
        {
            "role": m.role,
            "content": m.content,
            "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in m.tool_calls],
            "tool_call_id": m.tool_call_id,
            "thinking": m.thinking,
            "media": [
                {"kind": i.kind, "data": base64.b64encode(i.data).decode(), "source": i.source, "url": i.url}
                for i in m.media
            ],
        }
        for m in conversation
    ]
    record = {"expires": expires, "owner": owner, "response": response, "conversation": messages}
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


def _parsed(data: bytes, rid: str) -> StoredResponse:
    """A stored response read from its file; a `ValueError` when it is not one (or not the response `rid`)."""
    record = json.loads(data)
    response, messages, expires = record["response"], record["conversation"], record["expires"]
    if not isinstance(response, dict) or response.get("id") != rid or not isinstance(messages, list):
        raise ValueError("not a stored response")
    if isinstance(expires, bool) or not isinstance(expires, (int, float)):
        raise ValueError("no expiry")
    owner = record.get("owner", "")  # a record written before responses had owners: the anonymous tenant's
    if not isinstance(owner, str):
        raise ValueError("an owner that is not a string")
    conversation = []
    for m in messages:
        calls = tuple(ToolCall(str(c["id"]), str(c["name"]), dict(c["arguments"])) for c in m["tool_calls"])
        call_id = m["tool_call_id"]
        if not all(isinstance(m[k], str) for k in ("role", "content", "thinking")) or not isinstance(
            call_id, (str, type(None))
        ):
            raise ValueError("a message of the wrong shape")
        media = tuple(_media(i) for i in m.get("media", ()))
        conversation.append(ChatMessage(m["role"], m["content"], calls, call_id, m["thinking"], media))
    return StoredResponse(response, tuple(conversation), len(data), float(expires), owner)


def _media(item: Any) -> Media:
    kind = item["kind"]
    if kind not in MEDIA_KINDS or not isinstance(item["data"], str):
        raise ValueError("a media item of the wrong shape")
    data = base64.b64decode(item["data"], validate=True)
    return Media(kind, data, str(item.get("source", "")), url=str(item.get("url", "")))


class ResponseStore:
    """Responses by id, oldest first, in memory and optionally on disk; thread-safe."""

    def __init__(
        self,
        *,
        max_count: int = limits.RESPONSES_MAX_COUNT,
        max_bytes: int = limits.RESPONSES_MAX_BYTES,
        ttl: float = limits.RESPONSES_TTL_S,
        clock: Callable[[], float] = time.time,
        directory: Path | None = None,
    ) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.clock = clock
        self.items: OrderedDict[str, StoredResponse] = OrderedDict()
        self.bytes = 0
        self.lock = threading.Lock()
        self.directory = directory
        if directory is not None:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.error("stored responses stay in memory only: cannot use %s (%s)", directory, exc)
                self.directory = None
            else:
                self._load()

    def put(self, response: dict[str, Any], conversation: tuple[ChatMessage, ...]) -> bool:
        """Keep `response` (under its `id`) for the current request's principal; False when it alone is over
        the byte bound (not kept)."""
        expires = self.clock() + self.ttl
        owner = tenant()
        data = _record(response, conversation, expires, owner)
        if len(data) > self.max_bytes:
            return False
        rid = response["id"]
        with self.lock:
            self._drop(rid)
            self.items[rid] = StoredResponse(response, conversation, len(data), expires, owner)
            self.bytes += len(data)
            self._write(rid, data)
            self._expire()
            self._bound()
        return True

    def get(self, rid: str) -> StoredResponse | None:
        """The response `rid` if the current request's principal stored it (else None, as if there were none)."""
        with self.lock:
            self._expire()
            item = self.items.get(rid)
            if item is None and self._from_file(rid):
                self._bound()
                item = self.items.get(rid)
            return item if item is not None and item.owner == tenant() else None

    def delete(self, rid: str) -> bool:
        """Drop the response `rid` if the current request's principal stored it."""
        with self.lock:
            self._expire()
            if rid not in self.items and not self._from_file(rid):
                return False
            return self.items[rid].owner == tenant() and self._drop(rid)

    def __len__(self) -> int:
        with self.lock:
            self._expire()
            return len(self.items)

    # -- memory and files together (under the lock) -----------------------------------------------------------

    def _from_file(self, rid: str) -> bool:
        """Whether the response `rid`, not in memory, was read from its file (another daemon sharing the
        directory wrote it)."""
        if self.directory is None or not ID.fullmatch(rid):
            return False
        item = self._read(self.directory / f"{rid}{SUFFIX}", rid)
        if item is not None:
            self._add(rid, item)
        return item is not None

    def _add(self, rid: str, item: StoredResponse) -> None:
        self.items[rid] = item
        self.bytes += item.size

    def _bound(self) -> None:
        while len(self.items) > self.max_count or self.bytes > self.max_bytes:
            self._drop(next(iter(self.items)))

    def _drop(self, rid: str) -> bool:
        item = self.items.pop(rid, None)
        if item is None:
            return False
        self.bytes -= item.size
        if self.directory is not None:
            _remove(self.directory / f"{rid}{SUFFIX}")
        return True

    def _expire(self) -> None:
        now = self.clock()
        for rid in [rid for rid, item in self.items.items() if item.expires <= now]:
            self._drop(rid)

    def _write(self, rid: str, data: bytes) -> None:
        """Write the response's file whole, then rename it into place; a failure leaves it in memory only."""
        if self.directory is None or not ID.fullmatch(rid):
            return
        partial = self.directory / f".{rid}.{secrets.token_hex(4)}{PARTIAL}"
        try:
            with open(partial, "wb") as out:
                out.write(data)
            os.replace(partial, self.directory / f"{rid}{SUFFIX}")
        except OSError as exc:
            log.warning("response %s is kept in memory only: cannot write it to %s (%s)", rid, self.directory, exc)
            _remove(partial)

    def _read(self, path: Path, rid: str) -> StoredResponse | None:
        """The stored response in `path`; None when there is none, and a file that is not a whole, unexpired
        stored response within the bounds is removed."""
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                raise ValueError(f"{size} bytes, more than the {limits.size_text(self.max_bytes)} bound")
            item = _parsed(path.read_bytes(), rid)
        except FileNotFoundError:
            return None
        except Exception as exc:  # untrusted bytes: whatever they hold, they are not served
            log.warning("removed the stored response %s: it does not read back (%s)", path, exc)
            _remove(path)
            return None
        if item.expires <= self.clock():
            _remove(path)
            return None
        return item

    def _load(self) -> None:
        """Read the directory's responses, newest first while they fit the bounds; remove the rest."""
        assert self.directory is not None
        found: list[tuple[float, str, Path]] = []
        for path in self.directory.iterdir():
            if path.name.endswith(PARTIAL) and path.name.startswith("."):
                _remove(path)  # a write that did not finish
            elif path.name.endswith(SUFFIX) and ID.fullmatch(path.name[: -len(SUFFIX)]):
                with contextlib.suppress(OSError):
                    found.append((path.stat().st_mtime, path.name[: -len(SUFFIX)], path))
        kept: list[tuple[str, StoredResponse]] = []
        size = 0
        for _, rid, path in sorted(found, reverse=True):
            if len(kept) >= self.max_count:
                _remove(path)
                continue
            item = self._read(path, rid)
            if item is None:
                continue
            if size + item.size > self.max_bytes:
                _remove(path)
                continue
            kept.append((rid, item))
            size += item.size
        with self.lock:
            for rid, item in reversed(kept):  # oldest first, as they were stored
                self._add(rid, item)
        if kept:
            log.info("read %d stored responses from %s", len(kept), self.directory)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
