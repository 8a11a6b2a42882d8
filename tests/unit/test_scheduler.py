"""The scheduler over fake runners and a fake memory probe: loads, keep-alive, slots, the queue, memory."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import openai
import pytest
from starlette.testclient import TestClient

from localllm.config import Settings
from localllm.config.values import parse_host
from localllm.domain.errors import EngineError, InvalidRequest, ServerBusy
from localllm.domain.modelinfo import PromptCacheStats
from localllm.domain.names import parse_name
from localllm.modelstore.store import Manifest, Store
from localllm.observability.machine import Memory
from localllm.runner.protocol import LoadSpec
from localllm.scheduling.memory import GiB, MiB, ModelShape
from localllm.scheduling.refs import ModelRef
from localllm.scheduling.scheduler import BUSY_MESSAGE, STOPPING_MESSAGE, Lease, Scheduler
from localllm.server.app import create_app
from localllm.service.core import Service

from ..fakes import FakeFactory, FakeRunner, write_tiny_gguf


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeMemory:
    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self.snapshots = 0

    def snapshot(self) -> Memory:
        self.snapshots += 1
        return self.memory


def plenty() -> FakeMemory:
    return FakeMemory(Memory(ram_total=64 * GiB, ram_free=64 * GiB))


def ref(
    path: str,
    n_ctx: int = 128,
    *,
    size: int = 10,
    n_parallel: int = 1,
    num_gpu: int = -1,
    shape: ModelShape | None = None,
) -> ModelRef:
    spec = LoadSpec(model_path=path, n_ctx=n_ctx, n_parallel=n_parallel, num_gpu=num_gpu)
    return ModelRef(path, "sha256:" + "0" * 64, spec, size, shape=shape or ModelShape())


def test_loads_once_and_reuses() -> None:
    async def scenario() -> None:
        factory = FakeFactory()
        sched = Scheduler(factory=factory, memory=plenty())
        async with sched.use(ref("a"), keep_alive=60) as lease:
            assert lease.load_duration > 0
        async with sched.use(ref("a"), keep_alive=60) as lease:
            assert lease.load_duration == 0
        assert len(factory.runners) == 1
        assert [m.name for m in sched.loaded()] == ["a"]
        await sched.close()
        assert factory.runners[0].stopped

    asyncio.run(scenario())


def test_keep_alive_zero_unloads_when_done_and_expiry_unloads_idle() -> None:
    async def scenario() -> None:
        clock = Clock()
        factory = FakeFactory()
        sched = Scheduler(factory=factory, clock=clock, memory=plenty())
        await sched.start()
        async with sched.use(ref("a"), keep_alive=0):
            assert sched.is_loaded("a")
        assert not sched.is_loaded("a") and factory.runners[0].stopped
        async with sched.use(ref("b"), keep_alive=30):
            pass
        assert sched.is_loaded("b")
        clock.now += 31
        sched.set_keep_alive("b", 30)  # wakes the reaper with the clock already past the new expiry
        clock.now += 31
        for _ in range(50):
            if not sched.is_loaded("b"):
                break
            await asyncio.sleep(0.05)
        assert not sched.is_loaded("b")
        await sched.close()

    asyncio.run(scenario())


def test_max_loaded_evicts_the_idle_model_expiring_first() -> None:
    async def scenario() -> None:
        factory = FakeFactory()
        sched = Scheduler(max_loaded=2, factory=factory, memory=plenty())
        for name, keep in (("a", 100), ("b", 10)):
            async with sched.use(ref(name), keep_alive=keep):
                pass
        async with sched.use(ref("c"), keep_alive=100):
            pass
        assert sorted(m.name for m in sched.loaded()) == ["a", "c"]
        await sched.close()

    asyncio.run(scenario())


def test_dead_runner_is_replaced_on_next_use() -> None:
    async def scenario() -> None:
        factory = FakeFactory()
        sched = Scheduler(factory=factory, memory=plenty())
        async with sched.use(ref("a"), keep_alive=60) as lease:
            factory.runners[0].stopped = True  # as if the process died
            assert not lease.runner.alive
        async with sched.use(ref("a"), keep_alive=60):
            pass
        assert len(factory.runners) == 2
        await sched.close()

    asyncio.run(scenario())


def test_new_load_options_reload_the_model() -> None:
    async def scenario() -> None:
        factory = FakeFactory()
        sched = Scheduler(factory=factory, memory=plenty())
        async with sched.use(ref("a", n_ctx=128), keep_alive=60):
            pass
        async with sched.use(ref("a", n_ctx=256), keep_alive=60) as lease:
            assert lease.runner.info.n_ctx == 256
        assert factory.runners[0].stopped and len(factory.runners) == 2
        await sched.close()

    asyncio.run(scenario())


# -- slots and the queue ---------------------------------------------------------------------------------


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    for _ in range(int(timeout / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met in time")


async def settle() -> None:
    """Let every task that can run, run (loads go through a thread for the memory probe)."""
    await asyncio.sleep(0.05)


class Holder:
    """A request that leases `r`, notes `tag` in `order`, and holds the lease until released (or not at all)."""

    def __init__(
        self, sched: Scheduler, r: ModelRef, order: list[str], tag: str, *, hold: bool = True, keep_alive: float = 60
    ) -> None:
        self.lease: Lease | None = None
        self._done = asyncio.Event()
        if not hold:
            self._done.set()
        self.task = asyncio.create_task(self._run(sched, r, order, tag, keep_alive))

    async def _run(self, sched: Scheduler, r: ModelRef, order: list[str], tag: str, keep_alive: float) -> None:
        async with sched.use(r, keep_alive=keep_alive) as lease:
            self.lease = lease
            order.append(tag)
            await self._done.wait()

    async def release(self) -> None:
        self._done.set()
        await self.task

    async def cancel(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


def idle(sched: Scheduler, name: str) -> bool:
    """Loaded with no request on it (its keep-alive clock runs)."""
    return any(m.name == name and m.expires_at != float("inf") for m in sched.loaded())


def test_n_parallel_requests_share_one_runner_and_the_next_waits() -> None:
    async def scenario() -> None:
        factory = FakeFactory()
        sched = Scheduler(factory=factory, memory=plenty())
        a = ref("a", n_parallel=2)
        order: list[str] = []
        h1, h2 = Holder(sched, a, order, "1"), Holder(sched, a, order, "2")
        await until(lambda: len(order) == 2)
        assert len(factory.runners) == 1 and h1.lease is not None and h2.lease is not None
        assert h1.lease.runner is h2.lease.runner
        assert h1.lease.load_duration > 0 and h2.lease.load_duration == 0
        h3 = Holder(sched, a, order, "3")
        await settle()
        assert order == ["1", "2"] and sched.waiting == 1
        await h1.release()
        await until(lambda: order == ["1", "2", "3"])
        assert sched.waiting == 0
        await h2.release()
        await h3.release()
        assert idle(sched, "a") and len(factory.runners) == 1
        await sched.close()

    asyncio.run(scenario())


def test_waiters_are_served_first_come_first_served() -> None:
    async def scenario() -> None:
        sched = Scheduler(factory=FakeFactory(), memory=plenty())
        a = ref("a", n_parallel=1)
        order: list[str] = []
        first = Holder(sched, a, order, "0")
        await until(lambda: order == ["0"])
        waiters = [Holder(sched, a, order, str(i), hold=False) for i in range(1, 6)]
        await settle()
        assert sched.waiting == 5
        release = asyncio.create_task(first.release())
        late = Holder(sched, a, order, "6", hold=False)  # arrives as the slot frees: still behind the others
        await asyncio.gather(release, *(w.task for w in waiters), late.task)
        assert order == ["0", "1", "2", "3", "4", "5", "6"]
        await sched.close()

    asyncio.run(scenario())


def test_a_full_queue_refuses_at_once_with_server_busy() -> None:
    async def scenario() -> None:
        sched = Scheduler(max_queue=2, factory=FakeFactory(), memory=plenty())
        async with sched.use(ref("b", n_parallel=2), keep_alive=60):
            pass
        a = ref("a", n_parallel=1)
        order: list[str] = []
        holder = Holder(sched, a, order, "0")
        await until(lambda: order == ["0"])
        waiters = [Holder(sched, a, order, str(i)) for i in (1, 2)]
        await settle()
        assert sched.waiting == 2
        with pytest.raises(ServerBusy) as busy:
            await asyncio.wait_for(_use_once(sched, a), 1)
        assert str(busy.value) == BUSY_MESSAGE == "server busy, please try again.  maximum pending requests exceeded"
        with pytest.raises(ServerBusy):  # a model to load would wait too
            await asyncio.wait_for(_use_once(sched, ref("c")), 1)
        async with sched.use(ref("b", n_parallel=2), keep_alive=60):  # a free slot now: no waiting
            pass
        for h in (holder, *waiters):
            await h.release()
        assert order == ["0", "1", "2"] and sched.waiting == 0 and idle(sched, "a")
        await sched.close()

    asyncio.run(scenario())


def test_a_stopping_scheduler_refuses_the_waiting_and_the_new_while_the_holders_go_on() -> None:
    async def scenario() -> None:
        sched = Scheduler(factory=FakeFactory(), memory=plenty())
        a = ref("a", n_parallel=1)
        order: list[str] = []
        holder = Holder(sched, a, order, "0")
        await until(lambda: order == ["0"])
        waiters = [Holder(sched, a, order, str(i)) for i in (1, 2)]
        await settle()
        assert sched.waiting == 2
        sched.stop_taking()
        for w in waiters:  # at once, not after the holder's request ends
            with pytest.raises(ServerBusy) as busy:
                await asyncio.wait_for(w.task, 0.5)
            assert str(busy.value) == STOPPING_MESSAGE
        with pytest.raises(ServerBusy):  # a new request, to a loaded model with a free slot or to a new one
            await asyncio.wait_for(_use_once(sched, ref("b")), 1)
        assert holder.lease is not None and not holder.task.done()
        await holder.release()
        assert order == ["0"] and sched.waiting == 0
        await sched.close()

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_line_without_a_slot() -> None:
    async def scenario() -> None:
        sched = Scheduler(factory=FakeFactory(), memory=plenty())
        a = ref("a", n_parallel=1)
        order: list[str] = []
        holder = Holder(sched, a, order, "0")
        await until(lambda: order == ["0"])
        w1, w2, w3 = (Holder(sched, a, order, str(i)) for i in (1, 2, 3))
        await settle()
        assert sched.waiting == 3
        await w1.cancel()  # the first in line
        await w3.cancel()  # the last
        assert sched.waiting == 1
        await holder.release()
        await until(lambda: order == ["0", "2"])
        await w2.release()
        assert idle(sched, "a") and sched.waiting == 0
        await asyncio.wait_for(_use_once(sched, a), 1)  # the one slot is free again: no user count leaked
        await sched.close()

    asyncio.run(scenario())


class GatedFactory(FakeFactory):
    """Loads wait for `gate`; `error` makes them fail."""

    def __init__(self, error: str | None = None) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.error = error
        self.calls = 0

    async def __call__(self, spec: LoadSpec) -> FakeRunner:
        self.calls += 1
        await self.gate.wait()
        if self.error:
            raise EngineError(self.error, kind="load")
        return await super().__call__(spec)


def test_a_load_goes_on_when_its_request_leaves_and_serves_the_next() -> None:
    async def scenario() -> None:
        factory = GatedFactory()
        sched = Scheduler(factory=factory, memory=plenty())
        a = ref("a")
        order: list[str] = []
        starter = Holder(sched, a, order, "1")
        await until(lambda: factory.calls == 1)
        await starter.cancel()
        assert sched.waiting == 0
        follower = Holder(sched, a, order, "2", hold=False)
        factory.gate.set()
        await follower.task
        assert order == ["2"] and factory.calls == 1 and len(factory.runners) == 1
        assert idle(sched, "a")
        await sched.close()

    asyncio.run(scenario())


def test_a_failed_load_fails_those_waiting_for_it_once() -> None:
    async def scenario() -> None:
        factory = GatedFactory(error="failed to load model: unknown model architecture: 'x'")
        sched = Scheduler(factory=factory, memory=plenty())
        a = ref("a", n_parallel=4)
        tasks = [asyncio.create_task(_use_once(sched, a)) for _ in range(3)]
        await until(lambda: factory.calls == 1)
        factory.gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, EngineError) and "unknown model architecture" in str(r) for r in results)
        assert all(isinstance(r, EngineError) and r.kind == "load" for r in results), "the kind travels too"
        assert factory.calls == 1, "those in line when it failed share the one error"
        with pytest.raises(EngineError):
            await _use_once(sched, a)
        assert factory.calls == 2, "a later request tries again"
        assert sched.waiting == 0
        await sched.close()

    asyncio.run(scenario())


async def _use_once(sched: Scheduler, r: ModelRef) -> None:
    async with sched.use(r, keep_alive=60):
        pass


# -- memory -----------------------------------------------------------------------------------------------


def test_memory_pressure_unloads_the_idle_model_whose_keep_alive_ends_first() -> None:
    async def scenario() -> None:
        factory = FakeFactory()
        memory = FakeMemory(Memory(ram_total=10 * GiB, ram_free=10 * GiB))
        sched = Scheduler(max_loaded=10, factory=factory, memory=memory)
        for name, keep in (("a", 100), ("b", 10), ("c", 50)):  # 4.2 GiB each with the compute buffer
            async with sched.use(ref(name, size=4 * GiB), keep_alive=keep):
                pass
        assert sorted(m.name for m in sched.loaded()) == ["a", "c"]
        assert factory.runners[1].stopped and not factory.runners[0].stopped
        assert sched.loaded()[0].size == 4 * GiB, "/api/ps size: weights and KV cache"
        await sched.close()

    asyncio.run(scenario())


def test_a_busy_model_drains_for_a_load_that_needs_its_room() -> None:
    async def scenario() -> None:
        factory = FakeFactory()
        sched = Scheduler(max_loaded=1, factory=factory, memory=plenty())
        a, b = ref("a", n_parallel=4), ref("b")
        order: list[str] = []
        holder = Holder(sched, a, order, "a1")
        await until(lambda: order == ["a1"])
        loader = Holder(sched, b, order, "b", hold=False)
        await settle()
        later = Holder(sched, a, order, "a2", hold=False)
        await settle()
        assert order == ["a1"], "a takes no new requests while b waits for its room"
        await holder.release()
        await asyncio.gather(loader.task, later.task)
        assert order == ["a1", "b", "a2"]
        assert [r.spec.model_path for r in factory.runners] == ["a", "b", "a"]
        await sched.close()

    asyncio.run(scenario())


def test_a_model_that_cannot_fit_is_refused_with_the_numbers() -> None:
    async def scenario() -> None:
        factory = FakeFactory()
        sched = Scheduler(factory=factory, memory=FakeMemory(Memory(ram_total=8 * GiB, ram_free=6 * GiB)))
        await _use_once(sched, ref("small"))
        shape = ModelShape(block_count=32, embedding_length=4096, head_count=32, head_count_kv=8)
        big = ref("big", n_ctx=8192, n_parallel=4, size=5 * GiB, shape=shape)  # 5 GiB + 4 GiB KV + 256 MiB
        with pytest.raises(InvalidRequest) as refused:  # it would fit with a smaller context: the request's
            await _use_once(sched, big)
        assert refused.value.field == "options.num_ctx"
        assert str(refused.value) == (
            "options.num_ctx: model 'big' needs 9.2 GiB of system memory (weights 5.0 GiB, KV cache 4.0 GiB, "
            "compute 256 MiB), but only 8.0 GiB is installed (6.0 GiB available); "
            "a smaller num_ctx or LOCALLLM_NUM_PARALLEL shrinks the KV cache"
        )
        huge = ref("huge", n_ctx=2048, n_parallel=1, size=12 * GiB, shape=shape)
        with pytest.raises(EngineError, match="'huge' needs"):  # larger than the machine whatever the context
            await _use_once(sched, huge)
        assert len(factory.runners) == 1 and sched.waiting == 0
        assert [m.name for m in sched.loaded()] == ["small"], "nothing was unloaded for a model that cannot fit"
        await sched.unload("small")

        await _use_once(sched, ref("big", n_ctx=4096, n_parallel=4, size=5 * GiB, shape=shape))
        assert len(factory.runners) == 2, "7.2 GiB: more than is free, less than there is: loaded anyway"
        await sched.close()

    asyncio.run(scenario())


class GpuFactory(FakeFactory):
    """Runners that report the layers they offloaded, as the engine does; `fail` refuses some specs."""

    def __init__(self, layers: int, fail: Callable[[LoadSpec], EngineError | None] | None = None) -> None:
        super().__init__()
        self.layers = layers
        self.fail = fail
        self.specs: list[LoadSpec] = []

    async def __call__(self, spec: LoadSpec) -> FakeRunner:
        self.specs.append(spec)
        error = self.fail(spec) if self.fail else None
        if error:
            raise error
        runner = await super().__call__(spec)
        n = spec.num_gpu if spec.num_gpu >= 0 else 999
        runner.info = replace(runner.info, n_layer=self.layers, n_gpu_layers=min(n, self.layers + 1), gpu_offload=n > 0)
        return runner


# With 8 GiB of weights, n_ctx 128 and one slot: 32 layers of 256 MiB of weights and 0.5 MiB of KV cache, and a
# compute buffer of 409.6 MiB.
SHAPE = ModelShape(block_count=32, embedding_length=4096, head_count=32, head_count_kv=8)


def gpu_memory(vram_free: int, vram_total: int = 24 * GiB) -> FakeMemory:
    return FakeMemory(Memory(ram_total=64 * GiB, ram_free=64 * GiB, vram_total=vram_total, vram_free=vram_free))


def test_gpu_layers_fit_the_free_vram() -> None:
    async def scenario() -> None:
        factory = GpuFactory(32)
        # 4 GiB free - 512 MiB overhead - 409.6 MiB compute = 3174.4 MiB: 12 layers of 256.5 MiB
        sched = Scheduler(factory=factory, memory=gpu_memory(4 * GiB))
        async with sched.use(ref("a", size=8 * GiB, shape=SHAPE), keep_alive=60):
            pass
        assert factory.specs[-1].num_gpu == 12
        (ps,) = sched.loaded()
        assert ps.size == 8 * GiB + 16 * MiB
        assert ps.size_vram == int(ps.size * 12 / 33), "/api/ps: the CPU/GPU split"
        await sched.close()

        factory = GpuFactory(32)
        sched = Scheduler(factory=factory, memory=gpu_memory(24 * GiB))
        async with sched.use(ref("a", size=8 * GiB, shape=SHAPE), keep_alive=60):
            pass
        async with sched.use(ref("b", size=8 * GiB, shape=SHAPE, num_gpu=3), keep_alive=60):
            pass
        assert [s.num_gpu for s in factory.specs] == [33, 3], "all of it (output layer too); an explicit num_gpu"
        by_name = {m.name: m for m in sched.loaded()}
        assert by_name["a"].size_vram == by_name["a"].size and by_name["b"].size_vram == int(by_name["b"].size * 3 / 33)
        await sched.close()

        factory = GpuFactory(32)
        sched = Scheduler(factory=factory, memory=plenty())
        async with sched.use(ref("a", size=8 * GiB, shape=SHAPE), keep_alive=60):
            pass
        assert factory.specs[-1].num_gpu == -1, "no GPU: llama.cpp's own default"
        await sched.close()

    asyncio.run(scenario())


def test_vram_held_by_loaded_models_is_not_counted_twice_and_idle_ones_make_way() -> None:
    async def scenario() -> None:
        factory = GpuFactory(32)
        memory = gpu_memory(10 * GiB, vram_total=10 * GiB)
        sched = Scheduler(factory=factory, memory=memory)
        order: list[str] = []
        holder = Holder(sched, ref("a", size=8 * GiB, shape=SHAPE), order, "a")
        await until(lambda: order == ["a"])
        assert factory.specs[-1].num_gpu == 33
        # The driver still says 10 GiB free (mmapped weights not touched yet): a's share is counted anyway.
        async with sched.use(ref("b", size=8 * GiB, shape=SHAPE), keep_alive=60):
            pass
        assert factory.specs[-1].num_gpu == 2, "what busy a leaves: (10240 - 8617.6 - 512 - 409.6) / 256.5 MiB"
        await holder.release()
        await sched.close()

        factory = GpuFactory(32)
        sched = Scheduler(factory=factory, memory=gpu_memory(10 * GiB, vram_total=10 * GiB))
        await _use_once(sched, ref("a", size=8 * GiB, shape=SHAPE))
        await _use_once(sched, ref("b", size=8 * GiB, shape=SHAPE))
        assert [s.num_gpu for s in factory.specs] == [33, 33], "idle a gave up the GPU for b"
        assert [m.name for m in sched.loaded()] == ["b"] and factory.runners[0].stopped
        await sched.close()

    asyncio.run(scenario())


def test_out_of_memory_on_the_gpu_retries_once_with_half_the_layers() -> None:
    def oom_above(n: int) -> Callable[[LoadSpec], EngineError | None]:
        def fail(spec: LoadSpec) -> EngineError | None:
            if spec.num_gpu > n or spec.num_gpu < 0:
                return EngineError("failed to load model: llama.cpp could not load m.gguf", kind="out_of_memory")
            return None

        return fail

    async def scenario() -> None:
        factory = GpuFactory(32, fail=oom_above(20))
        sched = Scheduler(factory=factory, memory=gpu_memory(24 * GiB))
        await _use_once(sched, ref("a", size=8 * GiB, shape=SHAPE))
        assert [s.num_gpu for s in factory.specs] == [33, 16]
        (ps,) = sched.loaded()
        assert ps.size_vram == int(ps.size * 16 / 33)
        await sched.close()

        factory = GpuFactory(32, fail=oom_above(8))
        sched = Scheduler(factory=factory, memory=gpu_memory(24 * GiB))
        with pytest.raises(EngineError) as failed:
            await _use_once(sched, ref("a", size=8 * GiB, shape=SHAPE))
        assert failed.value.kind == "out_of_memory"
        assert [s.num_gpu for s in factory.specs] == [33, 16], "once only"
        with pytest.raises(EngineError) as failed:
            await _use_once(sched, ref("b", size=8 * GiB, shape=SHAPE, num_gpu=30))
        assert failed.value.kind == "out_of_memory"
        assert factory.specs[-1].num_gpu == 30 and len(factory.specs) == 3, "an explicit num_gpu is not second-guessed"
        await sched.close()

        # The message says "out of memory", but the runner said the load failed for another reason.
        message = "failed to load model: unknown model architecture (or out of memory)"
        factory = GpuFactory(32, fail=lambda spec: EngineError(message, kind="load"))
        sched = Scheduler(factory=factory, memory=gpu_memory(24 * GiB))
        with pytest.raises(EngineError, match="architecture"):
            await _use_once(sched, ref("a", size=8 * GiB, shape=SHAPE))
        assert len(factory.specs) == 1, "only running out of memory is worth another try"
        await sched.close()

    asyncio.run(scenario())


# -- over HTTP --------------------------------------------------------------------------------------------


def client_over(tmp_path: Path, scheduler: Scheduler) -> Iterator[TestClient]:
    settings = Settings(host=parse_host(""), models_dir=tmp_path / "models")
    store = Store(settings.models_dir)
    layer = store.add_blob_file(write_tiny_gguf(tmp_path / "tiny.gguf"))
    store.write_manifest(parse_name("tiny"), Manifest((layer,)))
    app = create_app(settings, service=Service(settings, store, scheduler))
    with TestClient(app, base_url="http://127.0.0.1") as client:  # a loopback Host passes the Host check
        yield client


def test_server_busy_is_503_with_retry_after_in_both_dialects(tmp_path: Path) -> None:
    # With no room to wait at all, even a load is refused: the simplest way to a full queue.
    for client in client_over(tmp_path, Scheduler(max_queue=0, factory=FakeFactory(), memory=plenty())):
        r = client.post("/api/generate", json={"model": "tiny", "prompt": "hi"})
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert r.json() == {"error": BUSY_MESSAGE}
        r = client.post("/api/chat", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        for stream in (False, True):
            r = client.post(
                "/v1/chat/completions",
                json={"model": "tiny", "stream": stream, "messages": [{"role": "user", "content": "x"}]},
            )
            assert r.status_code == 503 and r.headers["retry-after"] == "2"
            assert r.json() == {"error": {"message": BUSY_MESSAGE, "type": "server_error", "param": None, "code": None}}
        r = client.post("/api/generate", json={"model": "missing", "prompt": "hi"})
        assert r.status_code == 404 and "retry-after" not in r.headers


def test_server_busy_raises_the_openai_sdks_status_error(tmp_path: Path) -> None:
    for client in client_over(tmp_path, Scheduler(max_queue=0, factory=FakeFactory(), memory=plenty())):
        sdk = openai.OpenAI(base_url="http://127.0.0.1/v1", api_key="unused", http_client=client, max_retries=0)
        with pytest.raises(openai.InternalServerError) as err:
            sdk.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}])
        assert err.value.status_code == 503 and err.value.response.headers["retry-after"] == "2"
        assert err.value.body == {"message": BUSY_MESSAGE, "type": "server_error", "param": None, "code": None}


def test_ps_reports_the_memory_estimate(tmp_path: Path) -> None:
    for client in client_over(tmp_path, Scheduler(factory=FakeFactory(), memory=plenty())):
        assert client.post("/api/generate", json={"model": "tiny"}).status_code == 200
        (model,) = client.get("/api/ps").json()["models"]
        weights = json.loads(next((tmp_path / "models" / "manifests").rglob("latest")).read_text())["layers"][0]["size"]
        # tiny: 2 layers of 8 wide, n_ctx 256 (its trained context) x 4 slots, f16 K and V
        assert model["size"] == weights + 2 * 2 * 256 * 4 * 16 and model["size_vram"] == 0
        assert model["kv_cache_type"] == "f16"


def test_ps_counts_a_quantised_kv_cache_in_the_estimate(tmp_path: Path) -> None:
    for client in client_over(tmp_path, Scheduler(factory=FakeFactory(), memory=plenty())):
        answer = client.post("/api/generate", json={"model": "tiny", "options": {"kv_cache_type": "q8_0"}})
        assert answer.status_code == 200, answer.text
        (model,) = client.get("/api/ps").json()["models"]
        weights = json.loads(next((tmp_path / "models" / "manifests").rglob("latest")).read_text())["layers"][0]["size"]
        # as above, in q8_0: 34 bytes per 32 elements instead of 2 bytes per element
        assert model["size"] == weights + 2 * 256 * 4 * 16 * 34 // 32 and model["kv_cache_type"] == "q8_0"


def test_ps_reports_each_runners_prompt_cache(tmp_path: Path) -> None:
    factory = FakeFactory()
    for client in client_over(tmp_path, Scheduler(factory=factory, memory=plenty())):
        assert client.post("/api/generate", json={"model": "tiny"}).status_code == 200
        (model,) = client.get("/api/ps").json()["models"]
        assert "prompt_cache" not in model, "nothing reported yet"
        factory.runners[-1].prompt_cache = PromptCacheStats(ram_bytes=4096, ram_states=2, requests=4, ram_hits=3)
        (model,) = client.get("/api/ps").json()["models"]
        cache = model["prompt_cache"]
        assert cache["ram_bytes"] == 4096 and cache["hits"] == 3 and cache["hit_rate"] == 0.75
        assert cache["disk_limit"] == 0
