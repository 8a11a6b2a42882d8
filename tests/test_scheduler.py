from __future__ import annotations

import asyncio

from localllm.runner.process import RunnerSpec
from localllm.scheduler import ModelRef, Scheduler

from .fakes import FakeFactory


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ref(path: str, n_ctx: int = 128) -> ModelRef:
    return ModelRef(name=path, digest="sha256:" + "0" * 64, spec=RunnerSpec(model_path=path, n_ctx=n_ctx), size=10)


def test_loads_once_and_reuses() -> None:
    async def scenario() -> None:
        factory = FakeFactory()
        sched = Scheduler(factory=factory)
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
        sched = Scheduler(factory=factory, clock=clock)
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
        sched = Scheduler(max_loaded=2, factory=factory)
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
        sched = Scheduler(factory=factory)
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
        sched = Scheduler(factory=factory)
        async with sched.use(ref("a", n_ctx=128), keep_alive=60):
            pass
        async with sched.use(ref("a", n_ctx=256), keep_alive=60) as lease:
            assert lease.runner.info["n_ctx"] == 256
        assert factory.runners[0].stopped and len(factory.runners) == 2
        await sched.close()

    asyncio.run(scenario())
