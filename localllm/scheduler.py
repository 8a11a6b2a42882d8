"""Which models are loaded, in which runner, for how long.

One runner per model file. A request `use()`s a model: the scheduler loads it (one load at a time,
unloading the least useful idle model when `max_loaded_models` is reached), serves the request on it,
and when the model falls idle starts its keep-alive clock. A runner that died is dropped and the next
request loads the model again. The runner factory is injected so tests can drive the logic with fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .runner.process import RunnerProcess, RunnerSpec
from .types import Done, LoadedModel, ModelDetails, Token

log = logging.getLogger("localllm.scheduler")


class Runner(Protocol):
    info: dict[str, Any]

    @property
    def alive(self) -> bool: ...

    def generate(self, prompt: str, options: dict[str, Any]) -> AsyncGenerator[Token | Done, None]: ...

    async def tokenize(self, text: str) -> list[int]: ...

    async def stop(self, timeout: float = 5.0) -> None: ...


RunnerFactory = Callable[[RunnerSpec], Awaitable[Runner]]


@dataclass(frozen=True)
class ModelRef:
    """A model as the scheduler sees it: what to load, and what to report in `/api/ps`."""

    name: str
    digest: str
    spec: RunnerSpec
    size: int
    details: ModelDetails = field(default_factory=ModelDetails)


@dataclass
class _Loaded:
    ref: ModelRef
    runner: Runner
    keep_alive: float
    users: int = 0
    expires_at: float = math.inf  # on the scheduler's clock; inf while in use
    turn: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))


@dataclass(frozen=True)
class Lease:
    runner: Runner
    load_duration: int  # ns spent loading for this request (0 when it was loaded already)


class Scheduler:
    def __init__(
        self,
        *,
        max_loaded: int = 3,
        factory: RunnerFactory = RunnerProcess.start,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_loaded = max_loaded
        self._factory = factory
        self._clock = clock
        self._loaded: dict[str, _Loaded] = {}
        self._load_lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.gather(*(entry.runner.stop() for entry in self._loaded.values()), return_exceptions=True)
        self._loaded.clear()

    @contextlib.asynccontextmanager
    async def use(self, ref: ModelRef, *, keep_alive: float) -> AsyncIterator[Lease]:
        """Hold a loaded runner of `ref` for one request."""
        entry, load_ns = await self._acquire(ref, keep_alive)
        try:
            async with entry.turn:
                yield Lease(entry.runner, load_ns)
        finally:
            entry.users -= 1
            if not entry.runner.alive:
                self._drop(entry)
            elif entry.users == 0:
                entry.expires_at = self._clock() + entry.keep_alive
                if entry.keep_alive <= 0:
                    await self._unload(entry)
                self._wake.set()

    async def _acquire(self, ref: ModelRef, keep_alive: float) -> tuple[_Loaded, int]:
        key = ref.spec.model_path
        async with self._load_lock:
            entry = self._loaded.get(key)
            if entry is not None and not entry.runner.alive:
                self._drop(entry)
                entry = None
            if entry is not None and entry.ref.spec != ref.spec:
                log.info("reloading %s with new load options", ref.name)
                while entry.users > 0:
                    await asyncio.sleep(0.05)
                await self._unload(entry)
                entry = None
            load_ns = 0
            if entry is None:
                await self._make_room()
                started = time.perf_counter_ns()
                log.info("loading %s (ctx %d)", ref.name, ref.spec.n_ctx)
                runner = await self._factory(ref.spec)
                load_ns = time.perf_counter_ns() - started
                entry = _Loaded(ref, runner, keep_alive)
                self._loaded[key] = entry
            entry.users += 1
            entry.keep_alive = keep_alive
            entry.expires_at = math.inf
            return entry, load_ns

    async def _make_room(self) -> None:
        while len(self._loaded) >= self._max_loaded:
            idle = [e for e in self._loaded.values() if e.users == 0]
            if idle:
                await self._unload(min(idle, key=lambda e: e.expires_at))
            else:
                await asyncio.sleep(0.05)

    async def unload(self, model_path: str) -> bool:
        """Unload a model now if it is loaded and idle, or when its requests end; False if not loaded."""
        entry = self._loaded.get(model_path)
        if entry is None:
            return False
        entry.keep_alive = 0
        if entry.users == 0:
            await self._unload(entry)
        return True

    def set_keep_alive(self, model_path: str, keep_alive: float) -> bool:
        entry = self._loaded.get(model_path)
        if entry is None:
            return False
        entry.keep_alive = keep_alive
        if entry.users == 0:
            entry.expires_at = self._clock() + keep_alive
            self._wake.set()
        return True

    def is_loaded(self, model_path: str) -> bool:
        entry = self._loaded.get(model_path)
        return entry is not None and entry.runner.alive

    async def _unload(self, entry: _Loaded) -> None:
        self._drop(entry)
        log.info("unloading %s", entry.ref.name)
        await entry.runner.stop()

    def _drop(self, entry: _Loaded) -> None:
        if self._loaded.get(entry.ref.spec.model_path) is entry:
            del self._loaded[entry.ref.spec.model_path]

    async def _reap(self) -> None:
        while True:
            now = self._clock()
            for entry in list(self._loaded.values()):
                if entry.users == 0 and entry.expires_at <= now:
                    await self._unload(entry)
                elif not entry.runner.alive and entry.users == 0:
                    self._drop(entry)
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)

    def loaded(self) -> list[LoadedModel]:
        now_mono, now_wall = self._clock(), time.time()
        out = []
        for entry in self._loaded.values():
            info = entry.runner.info
            remaining = entry.keep_alive if entry.users else entry.expires_at - now_mono
            n_layer = int(info.get("n_layer") or 0) + 1
            gpu_share = min(int(info.get("n_gpu_layers") or 0), n_layer) / n_layer if n_layer else 0.0
            out.append(
                LoadedModel(
                    name=entry.ref.name,
                    digest=entry.ref.digest,
                    size=entry.ref.size,
                    size_vram=int(entry.ref.size * gpu_share) if info.get("gpu_offload") else 0,
                    context_length=int(info.get("n_ctx") or entry.ref.spec.n_ctx),
                    expires_at=now_wall + remaining if math.isfinite(remaining) else math.inf,
                    details=entry.ref.details,
                )
            )
        out.sort(key=lambda m: m.expires_at, reverse=True)
        return out
