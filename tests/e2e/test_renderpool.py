"""The render worker pool with real worker processes (no daemon): time and memory bounds kill and replace a
worker, a light render is not starved by heavy ones, and closing leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from localllm.chat.renderpool import RenderPool, TemplateSource
from localllm.domain import limits
from localllm.domain.errors import InvalidRequest

SOURCE = TemplateSource("the request's template", "template")
LIGHT = "{% for m in messages %}{{ m.content }}{% endfor %}"
# Slow but within the step budget (400k iterations, each building a 200 KB string: not a counted step). It runs
# for about 3 s on an idle 2-core machine, far past the bounds below, so every heavy render is cut however fast
# the machine (at 8 KB a string it finished within 0.5 s when the machine was idle).
SLOW = "{% for i in range(400000) %}{% set x = 'ab' * 100000 %}{% endfor %}done"
VARS = {"messages": [{"role": "user", "content": "hi"}]}


async def render(pool: RenderPool, template: str) -> str:
    return await pool.render(template, VARS, max_bytes=1 << 20, source=SOURCE)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_a_slow_template_is_killed_at_the_time_bound_and_its_worker_replaced() -> None:
    async def scenario() -> None:
        pool = RenderPool(1, seconds=0.3)
        try:
            assert await render(pool, LIGHT) == "hi"
            first = pool.pids()
            started = time.monotonic()
            with pytest.raises(InvalidRequest, match=r"the request's template exceeded .* longer than 0\.3 s"):
                await render(pool, SLOW)
            assert time.monotonic() - started < 1.5
            assert await render(pool, LIGHT) == "hi"  # the spare, or a fresh worker
            assert not all(alive(pid) for pid in first)  # the one that overran is gone
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_a_template_past_the_memory_bound_is_a_400_and_its_worker_replaced() -> None:
    async def scenario() -> None:
        pool = RenderPool(1)
        try:
            with pytest.raises(InvalidRequest, match=f"more than {limits.size_text(limits.TEMPLATE_MEMORY)}"):
                await render(pool, "{{ 'x'|center(600000000)|length }}")
            assert await render(pool, LIGHT) == "hi"
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_light_renders_are_not_starved_by_heavy_ones() -> None:
    """Four slow renders and one light one on two workers: first come, first served, each heavy one cut at the
    time bound, so the light one waits at most two bounded renders (each plus a fresh worker's start)."""

    async def scenario() -> float:
        pool = RenderPool(2, seconds=0.5)
        try:
            await asyncio.gather(render(pool, LIGHT), render(pool, LIGHT))  # both workers started
            heavy = [asyncio.create_task(render(pool, SLOW)) for _ in range(4)]
            await asyncio.sleep(0.05)
            started = time.monotonic()
            assert await render(pool, LIGHT) == "hi"
            waited = time.monotonic() - started
            results = await asyncio.gather(*heavy, return_exceptions=True)
            assert all(isinstance(r, InvalidRequest) for r in results)
            return waited
        finally:
            await pool.close()

    assert asyncio.run(scenario()) < 2 * (0.5 + 1.0)


def test_close_leaves_no_worker() -> None:
    async def scenario() -> list[int]:
        pool = RenderPool(2)
        await render(pool, LIGHT)
        await asyncio.sleep(0.2)
        pids = pool.pids()
        await pool.close()
        return pids

    pids = asyncio.run(scenario())
    assert pids and not any(alive(p) for p in pids)


def test_any_text_travels_to_a_worker_and_back() -> None:
    async def scenario() -> str:
        pool = RenderPool(1)
        try:
            variables = {"messages": [{"role": "user", "content": "é ✓ \ud800 \x00"}]}
            return await pool.render(LIGHT, variables, max_bytes=1 << 20, source=SOURCE)
        finally:
            await pool.close()

    assert asyncio.run(scenario()) == "é ✓ \ud800 \x00"
