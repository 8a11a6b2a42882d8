"""Framing of event streams as NDJSON (`/api/*`) and SSE (`/v1/*`), with the mid-stream error rule.

An error before the first byte is an ordinary error response with its status. The route therefore
pulls the first item of a stream before answering (`first_or_error`). An error after that becomes the
last line (`{"error": ...}`) or event (`data: {"error": {...}}`), and the stream ends. When the client
goes away, the stream is closed, which cancels the generation behind it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

log = logging.getLogger("localllm.server")

Frame = Callable[[Any], bytes]


def ndjson_line(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def sse_event(obj: Any) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


class EventStream(StreamingResponse):
    """Stream JSON-ready objects from an async iterator, framed by `frame`; errors become a last frame."""

    def __init__(
        self,
        items: AsyncIterator[Any],
        *,
        frame: Frame,
        on_error: Callable[[BaseException], Any],
        media_type: str,
        trailer: bytes = b"",
    ) -> None:
        super().__init__(items, media_type=media_type, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.items = items
        self.frame = frame
        self.on_error = on_error
        self.trailer = trailer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            try:
                async for item in self.items:
                    await send({"type": "http.response.body", "body": self.frame(item), "more_body": True})
                tail = self.trailer
            except OSError:
                log.info("client disconnected; generation cancelled")
                return
            except Exception as exc:
                tail = self.frame(self.on_error(exc))
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        except OSError:
            log.info("client disconnected")
        finally:
            aclose = getattr(self.items, "aclose", None)
            if aclose is not None:
                await aclose()


async def prepend(first: Any, rest: AsyncGenerator[Any, None]) -> AsyncIterator[Any]:
    """`first`, then the items of `rest`; closing this closes `rest`."""
    async with contextlib.aclosing(rest):
        yield first
        async for item in rest:
            yield item
