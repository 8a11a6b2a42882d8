"""Large request bodies decoded in a worker process (`python -m localllm.server.bodydecoder`), so that none
blocks the event loop: msgspec decodes in C while holding the GIL, so a thread would not do (1e6 logit_bias
entries took ~0.9 s, 1.5 million tiny messages ~0.4 s, on this project's 2-core machine).

```
 daemon ── frame(model "module:Class", body) ─▶ worker: wire.decode(body, Model)  (every check, every bound)
        ◀─ frame(0, msgpack of the model) ─────         or  frame(1, {"message", "field"})  (a 400)
 daemon: msgspec.msgpack.decode(reply, (Model, [str])): checked, every list and the text bounded
         (`Lenient.check`), with the top-level fields the model does not declare (`wire.unknown_fields`)
```

One worker (`python -I -m`, as every child: `domain/child.py`), started on the first large body and kept;
bodies wait their turn (each decode is bounded by the body limit); a worker that dies or overruns `SECONDS`
is killed and the next body starts a fresh one. Frames are a 4-byte big-endian length (and a kind byte on
replies) and the payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import struct
import sys
from collections.abc import Sequence
from typing import BinaryIO, TypeVar

import msgspec

from ..domain.child import python_command
from ..domain.errors import EngineError, InvalidRequest
from . import wire

log = logging.getLogger("localllm.server")

W = TypeVar("W", bound=msgspec.Struct)
SECONDS = 60.0  # the longest one body's decoding may take (a 64 MiB body takes ~1 s)
_OK, _REFUSED, _READY = 0, 1, 2


def _ref(model: type[msgspec.Struct]) -> bytes:
    return f"{model.__module__}:{model.__qualname__}".encode()


class BodyDecoder:
    """The daemon's decoder of large bodies: one worker process, one body at a time."""

    def __init__(self, *, seconds: float = SECONDS) -> None:
        self.seconds = seconds
        self._proc: asyncio.subprocess.Process | None = None
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def decode(self, chunks: Sequence[bytes], model: type[W]) -> tuple[W, list[str]]:
        """The body in `chunks` as `model`, decoded and checked in the worker (`wire.decode`'s refusals, as a
        400), and its top-level fields `model` does not declare. The pieces go to the worker one by one: the
        body is never joined, nor copied whole, here."""
        if self._loop is not asyncio.get_running_loop():  # first use, or another event loop (tests)
            self._forget()
            self._loop = asyncio.get_running_loop()
            self._lock = asyncio.Lock()
        assert self._lock is not None
        async with self._lock:
            try:
                kind, payload = await asyncio.wait_for(self._ask(_ref(model), chunks), self.seconds)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError, struct.error) as exc:
                await self._kill()
                raise EngineError(f"the body decoder failed ({exc!r}); see the daemon's log") from None
            except BaseException:  # cancelled (the client left): the worker's state is unknown
                await asyncio.shield(self._kill())
                raise
        if kind == _REFUSED:
            error = json.loads(payload)
            raise InvalidRequest(error["message"], field=error["field"])
        value, unknown = msgspec.msgpack.decode(payload, type=tuple[model, list[str]])  # type: ignore[valid-type]
        return value, unknown

    async def _ask(self, ref: bytes, chunks: Sequence[bytes]) -> tuple[int, bytes]:
        if self._proc is None or self._proc.returncode is not None:
            self._proc = await asyncio.create_subprocess_exec(
                *python_command("localllm.server.bodydecoder"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            kind, _ = await self._reply()
            if kind != _READY:
                raise OSError("the body decoder did not start")
        assert self._proc.stdin is not None
        self._proc.stdin.write(struct.pack(">II", len(ref), sum(map(len, chunks))) + ref)
        for chunk in chunks:
            self._proc.stdin.write(chunk)
            await self._proc.stdin.drain()
        return await self._reply()

    async def _reply(self) -> tuple[int, bytes]:
        assert self._proc is not None and self._proc.stdout is not None
        kind, size = struct.unpack(">BI", await self._proc.stdout.readexactly(5))
        return kind, await self._proc.stdout.readexactly(size)

    async def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        if proc.stdin is not None:
            proc.stdin.close()
        await proc.wait()
        await asyncio.sleep(0)  # the transport closes once both pipes have seen the end

    def _forget(self) -> None:
        """Drop a worker started on another event loop (it cannot be awaited from this one)."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc = None

    async def close(self) -> None:
        if self._loop is asyncio.get_running_loop():
            await self._kill()
        else:
            self._forget()


# -- the worker ---------------------------------------------------------------------------------------------


def _model(ref: str) -> type[msgspec.Struct]:
    module, _, name = ref.partition(":")
    if not module.startswith("localllm."):
        raise ValueError(f"not a wire model: {ref}")
    model: type[msgspec.Struct] = getattr(importlib.import_module(module), name)
    return model


def answer(ref: str, raw: bytes) -> tuple[int, bytes]:
    """One body decoded as the model `ref` names: the model and the top-level fields it does not declare, as
    msgpack, or the refusal."""
    try:
        model = _model(ref)
        value = wire.decode(raw, model)
    except InvalidRequest as exc:
        return _REFUSED, json.dumps({"message": str(exc), "field": exc.field}).encode()
    return _OK, msgspec.msgpack.encode((value, wire.unknown_fields(raw, model)))


def _write(out: BinaryIO, kind: int, payload: bytes) -> None:
    out.write(struct.pack(">BI", kind, len(payload)))
    out.write(payload)
    out.flush()


def main() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    _write(stdout, _READY, b"")
    while head := stdin.read(8):
        ref_size, size = struct.unpack(">II", head)
        ref = stdin.read(ref_size).decode()
        raw = stdin.read(size)
        kind, payload = answer(ref, raw)
        del raw
        _write(stdout, kind, payload)


if __name__ == "__main__":
    main()
