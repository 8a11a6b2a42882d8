"""Which models are loaded, in which runner, for how long, and who waits for them.

One runner per model file, serving up to `n_parallel` requests at once (its sequence slots). A request
`use()`s a model: it joins that model's line, first come first served; the first in line takes a free slot,
or loads the model (one load at a time) and takes the first slot of the new runner. Loading makes room
first: it unloads idle models, the one whose keep-alive ends first before the others, while
`max_loaded_models` are loaded or while the model's memory estimate (`memory.py`) does not fit next to
theirs, and it offloads as many layers to the GPU as fit in its free memory. When a model falls idle its
keep-alive clock starts. A runner that died is dropped and the next request loads the model again.

No more than `max_queue` requests wait at once (for a slot or a load); the next gets `ServerBusy`. A request
cancelled while waiting (its client went away) leaves the line without taking a slot. Once the daemon stops
(`stop_taking`), the requests waiting and every new one get `ServerBusy` at once, so a load balancer sends
them to another replica, while those holding a slot go on.

The runner factory, the clock and the memory probe are injected so tests can drive the logic with fakes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings
from ..domain.errors import EngineError, ServerBusy
from ..domain.modelinfo import LoadedModel
from ..observability import logs, metrics
from ..observability.machine import Memory, MemoryProbe, SystemMemory
from ..runner.process import RunnerProcess
from ..runner.protocol import LoadSpec
from ..runner.workers import WorkerMemory
from ..runner.workers import probe as probe_workers
from .fit_errors import too_big, workers_lost
from .memory import GPU_OVERHEAD, Estimate, Placement, format_bytes
from .memory import place as place_model
from .refs import ModelRef, Runner, RunnerFactory, WorkerProbe

log = logging.getLogger("localllm.scheduler")

BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
STOPPING_MESSAGE = "the daemon is stopping: send the request again (to another replica, or once it is back)"
_POLL = 1.0  # seconds between re-checks while waiting, should a wake-up be missed


@dataclass(eq=False)
class _Loaded:
    ref: ModelRef  # as requested (the spec a later request must match to share this runner)
    runner: Runner
    spec: LoadSpec  # as loaded (num_gpu fitted to the free VRAM)
    estimate: Estimate
    keep_alive: float
    slots: int = 1
    ram: int = 0  # bytes this model is counted for in RAM and in VRAM
    vram: int = 0
    users: int = 0
    expires_at: float = math.inf  # on the scheduler's clock; inf while in use
    draining: bool = False  # takes no new requests: a load waits for it to fall idle and go


@dataclass(eq=False)
class _Waiter:
    ticket: int
    turn: asyncio.Future[None]


@dataclass(frozen=True)
class _Failure:
    upto: int  # waiters with tickets up to this one were in line when the load failed
    spec: LoadSpec
    error: EngineError


@dataclass(eq=False)
class _Line:
    """The requests waiting for one model, in arrival order; only the first one acts, the others wait
    for their turn. `changed` wakes the first when a slot frees or the runner goes."""

    waiters: collections.deque[_Waiter] = field(default_factory=collections.deque)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    failure: _Failure | None = None
    name: str = ""  # the model's, for the metrics


@dataclass(frozen=True)
class Lease:
    runner: Runner
    load_duration: int  # ns spent loading for this request (0 when it was loaded already)


class Scheduler:
    def __init__(
        self,
        *,
        max_loaded: int = Settings.max_loaded_models,
        max_queue: int = Settings.max_queue,
        factory: RunnerFactory = RunnerProcess.start,
        clock: Callable[[], float] = time.monotonic,
        memory: MemoryProbe | None = None,
        gpu_overhead: int = GPU_OVERHEAD,
        workers: WorkerProbe = probe_workers,
    ) -> None:
        self._max_loaded = max_loaded
        self._max_queue = max_queue
        self._factory = factory
        self._clock = clock
        self._memory: MemoryProbe = memory if memory is not None else SystemMemory()
        self._machine: Memory | None = None
        self._gpu_overhead = gpu_overhead
        self._workers = workers
        self._loaded: dict[str, _Loaded] = {}
        self._lines: dict[str, _Line] = {}
        self._waiting = 0
        self._tickets = 0
        self._load_lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # the reaper's: an expiry changed
        self._idle = asyncio.Event()  # a model fell idle or went: room may have been made
        self._stopping = False  # the daemon stops: no request gets a slot any more

    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            # not awaited without a bound: after uvicorn cancels requests at shutdown, Python 3.11's wait_for
            # in the reaper was seen to lose this cancellation and the daemon never exited
            await asyncio.wait([self._reaper], timeout=2.0)
        await asyncio.gather(*(entry.runner.stop() for entry in self._loaded.values()), return_exceptions=True)
        self._loaded.clear()

    def stop_taking(self) -> None:
        """The daemon stops: the requests waiting for a slot or a load, and every new one, get `ServerBusy` now
        rather than a slot (a balancer retries them elsewhere); the requests holding a slot go on."""
        self._stopping = True
        for line in self._lines.values():
            line.changed.set()
            for waiter in line.waiters:
                if not waiter.turn.done():
                    waiter.turn.set_result(None)

    def machine(self) -> Memory:
        """The machine's memory, probed once (totals do not change while the daemon runs)."""
        if self._machine is None:
            self._machine = self._memory.snapshot()
        return self._machine

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot or a load now."""
        return self._waiting

    @contextlib.asynccontextmanager
    async def use(self, ref: ModelRef, *, keep_alive: float) -> AsyncIterator[Lease]:
        """Hold a slot of a loaded runner of `ref` for one request; `ServerBusy` when too many wait."""
        if self._stopping:
            raise ServerBusy(STOPPING_MESSAGE)
        if not self._ready_now(ref) and self._waiting >= self._max_queue:
            log.info("%d requests waiting: refusing one for %s", self._waiting, ref.name)
            raise ServerBusy(BUSY_MESSAGE)
        self._waiting += 1
        try:
            entry, load_ns = await self._acquire(ref, keep_alive)
        finally:
            self._waiting -= 1
        try:
            yield Lease(entry.runner, load_ns)
        finally:
            await self._release(entry)

    def _ready_now(self, ref: ModelRef) -> bool:
        """Whether `ref` would get a slot without waiting (nobody in its line, a free slot)."""
        key = ref.spec.model_path
        entry = self._loaded.get(key)
        return (
            key not in self._lines
            and entry is not None
            and entry.runner.alive
            and entry.ref.spec == ref.spec
            and entry.users < entry.slots
            and not entry.draining
        )

    async def _acquire(self, ref: ModelRef, keep_alive: float) -> tuple[_Loaded, int]:
        key = ref.spec.model_path
        line = self._lines.setdefault(key, _Line(name=ref.name))
        self._tickets += 1
        me = _Waiter(self._tickets, asyncio.get_running_loop().create_future())
        line.waiters.append(me)
        try:
            if line.waiters[0] is not me:
                await me.turn
            return await self._first_in_line(line, ref, keep_alive, me.ticket)
        finally:
            line.waiters.remove(me)
            if line.waiters:
                first = line.waiters[0]
                if not first.turn.done():
                    first.turn.set_result(None)
            elif self._lines.get(key) is line:
                del self._lines[key]

    async def _first_in_line(self, line: _Line, ref: ModelRef, keep_alive: float, ticket: int) -> tuple[_Loaded, int]:
        key = ref.spec.model_path
        while True:
            if self._stopping:
                raise ServerBusy(STOPPING_MESSAGE)
            failure = line.failure
            if failure is not None and ticket <= failure.upto and failure.spec == ref.spec:
                raise EngineError(str(failure.error), kind=failure.error.kind)
            entry = self._loaded.get(key)
            if entry is not None and not entry.runner.alive:
                self._drop(entry)  # its requests end with errors; whoever is next loads it again
                entry = None
            if entry is None:
                # The load goes on if this request goes away meanwhile: the model is then loaded (and idle)
                # for the next one, and no half-started runner process is left behind.
                load = asyncio.ensure_future(self._load(line, ref, keep_alive))
                load.add_done_callback(_retrieve)
                loaded, load_ns = await asyncio.shield(load)
                if loaded is None:
                    continue  # another load got there first
                self._take(loaded, keep_alive)
                return loaded, load_ns
            if entry.ref.spec != ref.spec:
                if entry.users == 0:
                    log.info("reloading %s with new load options", ref.name)
                    await self._unload(entry)
                else:
                    await self._wait(line)
                continue
            if entry.users < entry.slots and not entry.draining:
                self._take(entry, keep_alive)
                return entry, 0
            await self._wait(line)

    def _take(self, entry: _Loaded, keep_alive: float) -> None:
        entry.users += 1
        entry.keep_alive = keep_alive
        entry.expires_at = math.inf

    async def _wait(self, line: _Line) -> None:
        line.changed.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(line.changed.wait(), _POLL)

    async def _release(self, entry: _Loaded) -> None:
        entry.users -= 1
        key = entry.ref.spec.model_path
        if not entry.runner.alive:
            self._drop(entry)
        elif entry.users == 0:
            entry.expires_at = self._clock() + entry.keep_alive
            if entry.keep_alive <= 0 and key not in self._lines:
                await self._unload(entry)
            self._wake.set()
        self._changed(key, idle=entry.users == 0)

    def _changed(self, key: str, *, idle: bool = True) -> None:
        """Wake the first in `key`'s line (a slot freed, or the runner went), and with `idle` a load waiting
        for room (a model fell idle or went)."""
        line = self._lines.get(key)
        if line is not None:
            line.changed.set()
        if idle:
            self._idle.set()

    # -- loading -------------------------------------------------------------------------------------

    async def _load(self, line: _Line, ref: ModelRef, keep_alive: float) -> tuple[_Loaded | None, int]:
        """Load `ref`, idle until taken; None if it was loaded by the time the load lock was ours."""
        logs.detach()  # the runner outlives the request that loads it: its log lines are not that request's
        async with self._load_lock:
            if ref.spec.model_path in self._loaded:
                return None, 0
            return await self._load_locked(line, ref, keep_alive)

    async def _load_locked(self, line: _Line, ref: ModelRef, keep_alive: float) -> tuple[_Loaded, int]:
        est = ref.estimate()
        placement, servers = await self._make_room(ref, est)
        spec = ref.spec if servers == ref.spec.rpc_servers else dataclasses.replace(ref.spec, rpc_servers=servers)
        if spec.num_gpu < 0 and placement.gpu_layers >= 0:
            spec = dataclasses.replace(spec, num_gpu=placement.gpu_layers)
        started = time.perf_counter_ns()
        try:
            runner, spec = await self._start(ref, spec, on_gpu=placement.vram > 0)
        except EngineError as exc:
            line.failure = _Failure(line.waiters[-1].ticket if line.waiters else 0, ref.spec, exc)
            raise
        load_ns = time.perf_counter_ns() - started
        if runner.info.workers_lost:
            log.warning("%s loaded without the RPC workers %s", ref.name, ", ".join(runner.info.workers_lost))
        metrics.count_load(ref.name, load_ns / 1e9)
        slots = runner.info.n_parallel or spec.n_parallel or 1
        entry = _Loaded(ref, runner, spec, est, keep_alive, slots=max(1, slots))
        entry.vram = self._vram_of(entry)
        entry.ram = est.total - entry.vram
        if runner.info.devices:  # split across RPC workers: only this machine's part is in its RAM
            entry.ram = min(entry.ram, sum(d.memory for d in runner.info.devices if not d.where) + est.compute)
        entry.expires_at = self._clock() + keep_alive
        self._loaded[ref.spec.model_path] = entry
        self._wake.set()
        return entry, load_ns

    async def _start(self, ref: ModelRef, spec: LoadSpec, *, on_gpu: bool) -> tuple[Runner, LoadSpec]:
        """Start a runner; if it ran out of memory with layers we chose for the GPU, once more with half."""
        log.info(
            "loading %s (ctx %d x %d slots, ~%s, gpu layers %s)",
            ref.name,
            spec.n_ctx,
            spec.n_parallel,
            format_bytes(ref.estimate().total),
            "auto" if spec.num_gpu < 0 else spec.num_gpu,
        )
        try:
            return await self._factory(spec), spec
        except EngineError as exc:
            if ref.spec.num_gpu >= 0 or not on_gpu or exc.kind != "out_of_memory":
                raise
            fewer = dataclasses.replace(spec, num_gpu=max(0, spec.num_gpu // 2))
            log.warning("loading %s ran out of memory (%s); trying %d gpu layers", ref.name, exc, fewer.num_gpu)
            return await self._factory(fewer), fewer

    def _vram_of(self, entry: _Loaded) -> int:
        """Bytes the runner holds in VRAM, from what it reported once loaded."""
        info = entry.runner.info
        if not info.gpu_offload:
            return 0
        n_gpu = info.n_gpu_layers
        n_layer = info.n_layer
        if n_layer and n_gpu > n_layer:
            return entry.estimate.total
        return entry.estimate.on_gpu(n_gpu)

    async def _make_room(self, ref: ModelRef, est: Estimate) -> tuple[Placement, tuple[str, ...]]:
        """Unload idle models until `ref` fits (in count and in memory); where it goes once it does, and the
        RPC workers it is split across.

        When only busy models stand in the way, one of them stops taking new requests (it drains) until it
        is idle and can go, so a steady stream of requests to it cannot starve this load.

        RPC workers count as GPU memory (llama.cpp puts offloaded layers on them): their free memory comes
        from asking them (`runner.workers`). A worker that cannot be used is left out if the model still
        fits without it, else the load fails (kind "worker") saying so.
        """
        remote: list[WorkerMemory] | None = None
        try:
            while True:
                self._idle.clear()  # set by any release from here on, so a wait below cannot miss it
                snapshot = await asyncio.to_thread(self._memory.snapshot)
                for entry in [e for e in self._loaded.values() if not e.runner.alive]:
                    self._drop(entry)
                loaded = list(self._loaded.values())
                idle = [e for e in loaded if e.users == 0 and (e.draining or e.ref.spec.model_path not in self._lines)]
                used_ram, used_vram = sum(e.ram for e in loaded), sum(e.vram for e in loaded)
                # An RPC worker serves one runner at a time: a model on the same workers goes first.
                sharing = [e for e in loaded if set(e.spec.rpc_servers) & set(ref.spec.rpc_servers)]
                if sharing:
                    await self._make_way(sharing, [e for e in idle if e in sharing], ref)
                    continue
                if ref.spec.rpc_servers and remote is None:
                    remote = await self._workers(ref.spec.rpc_servers)
                    for worker in remote:
                        if worker.error is not None:
                            log.warning("RPC worker %s cannot be used: %s", worker.endpoint, worker.error)
                lost = [w for w in remote or () if w.error is not None]
                servers = tuple(w.endpoint for w in remote or () if w.error is None)
                placement = self._place(est, snapshot.minus(used_ram, used_vram), ref, remote)
                if not placement.fits:
                    alone = self._place(est, snapshot.plus(used_ram, used_vram), ref, remote)
                    if alone.ram > snapshot.ram_total:  # more than the machine has: unload nothing for it
                        raise workers_lost(ref.name, est, lost) if lost else too_big(ref.name, est, alone, snapshot)
                if len(loaded) >= self._max_loaded or not placement.fits:
                    if idle or loaded:
                        await self._make_way(loaded, idle, ref)
                    else:
                        if lost:
                            raise workers_lost(ref.name, est, lost)
                        log.warning(
                            "%s needs %s of RAM, %s more than is free now; loading it anyway",
                            ref.name,
                            format_bytes(placement.ram),
                            format_bytes(placement.ram - snapshot.ram_free),
                        )
                        return placement, servers
                    continue
                # Would more of it go on the GPU if idle models gave up theirs? Then they go (as Ollama does).
                on_gpu = [e for e in idle if e.vram > 0]
                if ref.spec.num_gpu < 0 and on_gpu:
                    freed = sum(e.vram for e in on_gpu)
                    best = self._place(est, snapshot.plus(0, freed).minus(used_ram, used_vram - freed), ref, remote)
                    if placement.gpu_layers < best.gpu_layers:
                        await self._evict(on_gpu, ref)
                        continue
                if lost:
                    log.warning("%s loads without the RPC workers %s", ref.name, ", ".join(w.endpoint for w in lost))
                return placement, servers
        finally:
            for entry in self._loaded.values():
                if entry.draining:
                    entry.draining = False
                    self._changed(entry.ref.spec.model_path)

    def _place(self, est: Estimate, free: Memory, ref: ModelRef, remote: list[WorkerMemory] | None) -> Placement:
        """Where `ref` goes in `free`, the usable RPC workers' memory counted as GPU memory; for a model loaded
        whole on one GPU (`main_gpu`), that GPU's memory only."""
        if ref.spec.main_gpu >= 0:
            free = free.on_gpu(ref.spec.main_gpu)
        usable = [w for w in remote or () if w.error is None]
        if usable:
            free = dataclasses.replace(
                free,
                vram_total=free.vram_total + sum(w.total for w in usable),
                vram_free=free.vram_free + sum(w.free for w in usable),
            )
        return place_model(est, free, num_gpu=ref.spec.num_gpu, gpu_overhead=self._gpu_overhead)

    async def _make_way(self, loaded: list[_Loaded], idle: list[_Loaded], ref: ModelRef) -> None:
        """Unload one of `idle`; with none, let one of `loaded` drain and wait for a model to fall idle."""
        if idle:
            await self._evict(idle, ref)
            return
        if not any(e.draining for e in loaded):
            victim = min(loaded, key=lambda e: (e.users, e.expires_at))
            log.info("%s waits for %s to finish its requests", ref.name, victim.ref.name)
            victim.draining = True
        await self._wait_for_idle()

    async def _evict(self, idle: list[_Loaded], ref: ModelRef) -> None:
        victim = min(idle, key=lambda e: e.expires_at)  # the one whose keep-alive ends first
        log.info("unloading idle %s to make room for %s", victim.ref.name, ref.name)
        await self._unload(victim)

    async def _wait_for_idle(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), _POLL)

    # -- unloading -----------------------------------------------------------------------------------

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
        key = entry.ref.spec.model_path
        if self._loaded.get(key) is entry:
            del self._loaded[key]
            metrics.count_unload(entry.ref.name, crashed=not entry.runner.alive)
            self._changed(key)

    async def _reap(self) -> None:
        while True:
            now = self._clock()
            for entry in list(self._loaded.values()):
                if entry.users == 0 and entry.expires_at <= now and entry.ref.spec.model_path not in self._lines:
                    await self._unload(entry)
                elif not entry.runner.alive and entry.users == 0:
                    self._drop(entry)
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)

    def usage(self) -> list[tuple[str, int, int, int]]:
        """(model, requests running, slots, requests waiting) of each model loaded or waited for (the
        metrics' gauges)."""
        rows = {e.ref.spec.model_path: (e.ref.name, e.users, e.slots, 0) for e in self._loaded.values()}
        for key, line in self._lines.items():
            name, users, slots, _ = rows.get(key, (line.name, 0, 0, 0))
            rows[key] = (name, users, slots, len(line.waiters))
        return list(rows.values())

    def loaded(self) -> list[LoadedModel]:
        now_mono, now_wall = self._clock(), time.time()
        out = []
        for entry in self._loaded.values():
            info = entry.runner.info
            remaining = entry.keep_alive if entry.users else entry.expires_at - now_mono
            n_layer = (info.n_layer or entry.estimate.layers) + 1
            gpu_share = min(info.n_gpu_layers, n_layer) / n_layer
            size = entry.estimate.size
            out.append(
                LoadedModel(
                    name=entry.ref.name,
                    digest=entry.ref.digest,
                    size=size,
                    size_vram=int(size * gpu_share) if info.gpu_offload else 0,
                    context_length=info.n_ctx or entry.ref.spec.n_ctx,
                    expires_at=now_wall + remaining if math.isfinite(remaining) else math.inf,
                    details=entry.ref.details,
                    kv_cache_type=entry.spec.kv_cache_type,
                    swa_full=entry.spec.swa_full,
                    prompt_cache=entry.runner.prompt_cache,
                    speculation=entry.runner.speculation if entry.runner.speculation.requests else None,
                    devices=info.devices,
                )
            )
        out.sort(key=lambda m: m.expires_at, reverse=True)
        return out


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a task's exception as seen (its requester may have gone; the error was logged or raised)."""
    if not task.cancelled():
        task.exception()
