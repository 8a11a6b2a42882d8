"""A few long-lived render worker processes (`python -I -m localllm.chat.sandbox`), so that no chat template runs on
the daemon's event loop, and none runs for longer than `TEMPLATE_SECONDS` or in more than `TEMPLATE_MEMORY`.

```
 request ─▶ RenderPool.render(job) ─ waits (FIFO) for an idle worker ─▶ worker: sandboxed render ─▶ text
                                    └ over RENDER_QUEUE waiting: ServerBusy (503)
            no reply within TEMPLATE_SECONDS, or the worker died: it is killed, a fresh one replaces it
```

Fairness: workers are handed out first come, first served, and no render holds one for longer than
`TEMPLATE_SECONDS`, so a request waits at most (renders ahead of it / workers) × that bound (plus a worker's
start when several are killed at once: one started spare takes a killed worker's place at once); a hostile
template costs its sender a 400 and the others at most one bounded render's wait. Workers start on the first
render (0.1-0.5 s), not with the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from dataclasses import dataclass
from typing import Any

from ..domain import limits
from ..domain.child import python_command
from ..domain.errors import EngineError, InvalidRequest, ServerBusy
from . import sandbox
from .templatecaps import TemplateCaps

log = logging.getLogger("localllm.render")

_START_SECONDS = 60.0


class RenderTooLong(InvalidRequest):
    """A render whose output passed its `max_bytes`."""


@dataclass(frozen=True)
class TemplateSource:
    """Where a chat template comes from, as an error names it, and the request field to blame."""

    label: str  # "the request's template", "the Modelfile TEMPLATE of 'x'", "the chat template in the GGUF of 'x'"
    field: str = "messages"


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls) -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            *python_command("localllm.chat.sandbox"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        worker = cls(proc)
        try:  # the time bound of a render must not include the worker's own start (slow on a busy machine)
            await asyncio.wait_for(worker.reply(), _START_SECONDS)
        except BaseException as exc:  # also cancelled (the pool closes): no worker is left behind
            await asyncio.shield(worker.kill())
            if isinstance(exc, Exception):
                raise OSError(f"the render worker did not start within {_START_SECONDS} s: {exc!r}") from None
            raise
        return worker

    async def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(sandbox.frame(request))
        await self.proc.stdin.drain()
        return await self.reply()

    async def reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        (size,) = struct.unpack(">I", await self.proc.stdout.readexactly(4))
        data = await self.proc.stdout.readexactly(size)
        reply: dict[str, Any] = json.loads(data)
        return reply

    async def kill(self) -> None:
        """End the worker and wait for it; its pipes are closed, so nothing of it outlives the event loop."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        await self.proc.wait()
        await asyncio.sleep(0)  # the transport closes once both pipes have seen the end


class Renderer:
    """Renders chat templates through `_ask`, one request of the sandbox's worker protocol (`sandbox.outcome`)."""

    async def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def render(self, template: str, variables: dict[str, Any], *, max_bytes: int, source: TemplateSource) -> str:
        """`template` rendered with `variables`, or `InvalidRequest` naming the bound and the template's source
        (`RenderTooLong` when the output passed `max_bytes`)."""
        reply = await self._ask({"op": "render", "template": template, "variables": variables, "max_bytes": max_bytes})
        if "text" in reply:
            return str(reply["text"])
        raise _error(reply, source, template)

    async def probe(self, template: str, source: TemplateSource) -> TemplateCaps:
        """What `template` can take (`templatecaps.probe`, run in a worker with a render's bounds)."""
        reply = await self._ask({"op": "probe", "template": template})
        if "caps" in reply:
            return TemplateCaps.from_dict(dict(reply["caps"]))
        raise _error(reply, source, template)

    async def check(self, template: str, source: TemplateSource) -> None:
        """Refuse a template that does not compile (e.g. an Ollama Go template) or is too large."""
        reply = await self._ask({"op": "check", "template": template})
        if "error" in reply:
            raise _error(reply, source, template)

    async def close(self) -> None:
        """Let go of whatever the renderer holds."""


class InlineRenderer(Renderer):
    """The sandbox in this process, without worker processes (the unit tests, tools): the counted bounds hold,
    the time and memory bounds of a worker do not."""

    async def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        return sandbox.outcome(request)


class RenderPool(Renderer):
    """The daemon's renderer: bounded worker processes, each request within a time bound (a worker that
    overruns or dies is killed and replaced)."""

    def __init__(self, workers: int | None = None, *, seconds: float = limits.TEMPLATE_SECONDS) -> None:
        self.size = workers or limits.render_workers()
        self.seconds = seconds
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._all: set[_Worker] = set()  # every started worker: in service (idle or busy), and the spare
        self._spare: _Worker | None = None  # started and waiting, to replace a killed worker at once
        self._waiting = 0
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # Every render ahead of a request, each within the time bound, plus a worker's start.
        self._longest_wait = _START_SECONDS + limits.RENDER_QUEUE * seconds / self.size
        self._spawning: set[asyncio.Task[None]] = set()

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._all]

    def _spawn(self) -> None:
        task = asyncio.create_task(self._add())
        self._spawning.add(task)
        task.add_done_callback(self._spawning.discard)

    async def _add(self) -> None:
        try:
            worker = await _Worker.start()
        except OSError as exc:
            log.error("cannot start a render worker: %s", exc)
            return
        if self._closed:
            await worker.kill()
            return
        self._all.add(worker)
        if len(self._all) - (self._spare is not None) > self.size:  # in service: full; it is the spare
            if self._spare is None:
                self._spare = worker
                return
            self._all.discard(worker)
            await worker.kill()
            return
        self._idle.put_nowait(worker)

    async def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request on one worker, within the time bound; a worker that overruns or dies is replaced."""
        if self._loop is not asyncio.get_running_loop():  # first use, or another event loop (tests): start anew
            self._forget()
            self._loop = asyncio.get_running_loop()
        for _ in range(self.size + 1 - len(self._all) - len(self._spawning)):  # the first render, or a failed start
            self._spawn()
        if self._waiting >= limits.RENDER_QUEUE:
            raise ServerBusy(f"too many chat templates waiting to be rendered ({limits.RENDER_QUEUE})")
        self._waiting += 1
        try:
            worker = await asyncio.wait_for(self._idle.get(), self._longest_wait)
        except TimeoutError:
            raise EngineError("no render worker became free (see the daemon's log)") from None
        finally:
            self._waiting -= 1
        healthy = False
        try:
            reply = await asyncio.wait_for(worker.ask(request), self.seconds)
            healthy = reply.get("error") != "memory"
            return reply
        except TimeoutError:
            return {"error": "bound", "message": f"it ran for longer than {self.seconds:g} s"}
        except (asyncio.IncompleteReadError, ConnectionError, struct.error, ValueError):
            returncode = worker.proc.returncode
            return {"error": "memory", "message": f"its worker died (exit status {returncode})"}
        finally:
            if healthy:
                self._idle.put_nowait(worker)
            else:  # timed out, died, or cancelled mid-render (the client left): its state is unknown
                self._all.discard(worker)
                if self._spare is not None:  # in service at once: the next request does not wait for a start
                    self._idle.put_nowait(self._spare)
                    self._spare = None
                await asyncio.shield(worker.kill())
                if not self._closed:
                    self._spawn()

    def _forget(self) -> None:
        """Drop the workers of an event loop that is gone (their pipes belong to it): killed, not awaited."""
        for worker in self._all:
            with contextlib.suppress(Exception):
                worker.proc.kill()
        self._all.clear()
        self._spare = None
        self._spawning.clear()
        self._idle = asyncio.Queue()

    async def close(self) -> None:
        self._closed = True
        for task in list(self._spawning):
            task.cancel()
        await asyncio.gather(*self._spawning, return_exceptions=True)
        for worker in list(self._all):
            await worker.kill()
        self._all.clear()
        self._spare = None


def _error(reply: dict[str, Any], source: TemplateSource, template: str) -> InvalidRequest:
    kind, message = reply.get("error"), str(reply.get("message", ""))
    if kind == "syntax":
        hint = " (this looks like a Go template; localllm templates are Jinja2)" if "{{ ." in template else ""
        return InvalidRequest(
            f"{source.label} is not a valid chat template: line {reply.get('line')}: {message}{hint}",
            field=source.field,
        )
    if kind == "refused":
        return InvalidRequest(f"{source.label} refused the messages: {message}", field=source.field)
    if kind == "output":
        return RenderTooLong(f"{source.label} exceeded a bound of chat templates: {message}", field=source.field)
    if kind in ("bound", "memory"):
        return InvalidRequest(f"{source.label} exceeded a bound of chat templates: {message}", field=source.field)
    return InvalidRequest(f"{source.label} failed: {message}", field=source.field)
