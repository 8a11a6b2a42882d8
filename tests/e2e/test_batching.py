"""Continuous batching and the prompt cache, on real llama.cpp (not timed: the figures live in bench/)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..conftest import CHAT_REPO, STORIES_REPO, TINY_REPO
from ..hubstub import HubStub
from .conftest import Daemon, start_daemon, stop_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.model]

STORIES = f"hf.co/{STORIES_REPO}"
PROMPTS = ["Once upon a time", "The little dog", "Tom and Sue went to the park", "One day, a big bird"]


@pytest.fixture(scope="module")
def parallel(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("parallel"), hub, LOCALLLM_NUM_PARALLEL="4")
    try:
        for repo in (STORIES_REPO, CHAT_REPO):
            assert d.cli("pull", f"hf.co/{repo}").returncode == 0
        yield d
    finally:
        stop_daemon(d)


async def generate(client: httpx.AsyncClient, prompt: str, **options: object) -> tuple[str, dict[str, Any]]:
    body = {"model": STORIES, "prompt": prompt, "options": {"temperature": 0, "num_predict": 64, **options}}
    parts = []
    async with client.stream("POST", "/api/generate", json=body) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line:
                parts.append(json.loads(line))
    return "".join(p.get("response", "") for p in parts), parts[-1]


def test_concurrent_greedy_requests_match_their_solo_text(parallel: Daemon) -> None:
    async def scenario() -> tuple[list[str], list[str], list[dict[str, Any]]]:
        async with httpx.AsyncClient(base_url=parallel.url, timeout=120) as client:
            solo = [(await generate(client, p))[0] for p in PROMPTS]
            together = await asyncio.gather(*(generate(client, p) for p in PROMPTS))
        return solo, [t for t, _ in together], [d for _, d in together]

    solo, together, finals = asyncio.run(scenario())
    for prompt, alone, batched, final in zip(PROMPTS, solo, together, finals, strict=True):
        assert final["done"] is True and final["eval_count"] > 0, final
        # Batched kernels may reorder float sums and flip a late near-tie; the opening must be identical.
        head = min(len(alone), 120)
        assert batched[:head] == alone[:head], f"{prompt!r}: differs from character {_first_diff(alone, batched)}"


def _first_diff(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def test_second_chat_turn_evaluates_only_new_tokens(parallel: Daemon) -> None:
    history = [{"role": "user", "content": "Once upon a time, " + "there was a cat who liked to play. " * 20}]
    body = {
        "model": f"hf.co/{CHAT_REPO}",
        "messages": history,
        "stream": False,
        "options": {"temperature": 0, "num_predict": 16},
    }
    first = httpx.post(parallel.url + "/api/chat", json=body, timeout=60).json()
    history += [first["message"], {"role": "user", "content": " The end."}]
    second = httpx.post(parallel.url + "/api/chat", json={**body, "messages": history}, timeout=60).json()
    assert first["prompt_eval_count"] > 150
    assert second["prompt_eval_count"] < 30, "the shared history should come from the slot's cache"


def test_abandoned_stream_frees_its_slot(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> None:
    d = start_daemon(tmp_path_factory.mktemp("one-slot"), hub, LOCALLLM_NUM_PARALLEL="1")
    try:
        assert d.cli("pull", f"hf.co/{TINY_REPO}").returncode == 0
        long = {
            "model": f"hf.co/{TINY_REPO}",
            "prompt": "Hello",
            "options": {"temperature": 0, "num_predict": 60000, "num_ctx": 65536},
        }
        with httpx.stream("POST", d.url + "/api/generate", json=long, timeout=60) as r:
            lines = r.iter_lines()
            assert json.loads(next(lines))["done"] is False
            assert json.loads(next(lines))["done"] is False
        # The only slot is ours again within a decode step, not after 60,000 tokens.
        started = time.monotonic()
        short = {**long, "stream": False, "options": {**long["options"], "num_predict": 4}}  # type: ignore[dict-item]
        r2 = httpx.post(d.url + "/api/generate", json=short, timeout=30)
        assert r2.status_code == 200 and r2.json()["eval_count"] == 4
        assert time.monotonic() - started < 20
    finally:
        stop_daemon(d)
