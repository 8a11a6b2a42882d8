"""Framing of event streams as NDJSON (`/api/*`) and SSE (`/v1/*`), with the mid-stream error rule.

An error before the first byte is an ordinary error response with its status, so a route pulls the
first item of a stream before answering (`first_item`). An error after that becomes the last line
(`{"error": ...}`) or event (`data: {"error": {...}}`), and the stream ends.

A client that goes away is noticed at once, not at the next write: both `first_item` and `EventStream`
listen for the disconnect while they wait, and then close the stream, which cancels the generation
behind it (its slot is free within one decode step).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..domain.errors import ServerBusy

log = logging.getLogger("localllm.server")

T = TypeVar("T")

Frame = Callable[[Any], bytes]


_stopping = False


def begin_shutdown() -> None:
    """The daemon stops: streams cut short from now on end with an error line saying so."""
    global _stopping
    _stopping = True


class ClientGone(Exception):
    """The client disconnected before the answer began."""


def ndjson_line(obj: Any) -> bytes:
    if isinstance(obj, msgspec.Struct):  # a reply model (server/replies.py)
        return msgspec.json.encode(obj) + b"\n"
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def sse_event(obj: Any) -> bytes:
    if isinstance(obj, msgspec.Struct):  # a reply model (server/replies.py)
        return b"data: " + msgspec.json.encode(obj) + b"\n\n"
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(work: Awaitable[T], request: Request) -> T:
    """Await `work`, cancelling it and raising `ClientGone` if the client leaves first."""
    task: asyncio.Future[Any] = asyncio.ensure_future(work)
    gone: asyncio.Future[Any] = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait([task, gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if task.done():
        result: T = task.result()
        return result
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    log.info("client disconnected before the answer was ready; request cancelled")
    raise ClientGone


async def first_item(items: AsyncGenerator[Any, None], request: Request) -> Any:
    """The first item of `items` (waiting covers the queue, the model load and the prompt evaluation);
    `ClientGone` if the client leaves meanwhile. On any failure `items` is closed."""
    try:
        return await until_disconnect(items.__anext__(), request)
    except BaseException:
        await items.aclose()
        raise


class EventStream(StreamingResponse):
    """Stream JSON-ready objects from an async iterator, framed by `frame`; errors become a last frame."""

    def __init__(
        self,
        items: AsyncGenerator[Any, None],
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
        try:
            await self._watched(receive, send)
        except asyncio.CancelledError:
            if not _stopping:  # else uvicorn cancelled it when the grace after SIGTERM was over: it has ended
                raise
        finally:
            with anyio.CancelScope(shield=True):
                await self.items.aclose()

    async def _watched(self, receive: Receive, send: Send) -> None:
        done = False
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                await _disconnected(receive)
                if not done:
                    log.info("client disconnected; generation cancelled")
                group.cancel_scope.cancel()

            group.start_soon(watch)
            await self._stream(send)
            done = True
            group.cancel_scope.cancel()

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for item in self.items:
                await send({"type": "http.response.body", "body": self.frame(item), "more_body": True})
            tail = self.trailer
        except OSError:
            return
        except asyncio.CancelledError:
            if not _stopping:
                raise
            # The daemon stops and the grace is over (uvicorn cancelled this request): say so, and end.
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                error = self.frame(self.on_error(ServerBusy("localllm is shutting down: the answer was cut short")))
                await send({"type": "http.response.body", "body": error, "more_body": False})
            return
        except Exception as exc:
            tail = self.frame(self.on_error(exc))
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": tail, "more_body": False})


async def prepend(first: Any, rest: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
    """`first`, then the items of `rest`; closing this closes `rest`."""
    async with contextlib.aclosing(rest):
        yield first
        async for item in rest:
            yield item
