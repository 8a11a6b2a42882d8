"""Sliding-window, hybrid and recurrent models on the real daemon and llama.cpp: they load and generate, and the
prompt cache keeps checkpoints of their states (runner/checkpoints.py), which llama.cpp restores whole.

The models are random tiny ones of the real shapes (tests/shapes.py: Gemma 3, LFM2, Mamba). Not timed (bench/
has the figures). Greedy throughout: a restored checkpoint must give the text a fresh evaluation gives where the
batches are the same (a checkpoint at a 512-token chunk boundary, then the rest in one batch either way).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..hubstub import HubStub
from ..shapes import SHAPES
from .conftest import Daemon, daemon_with, shapes_repo

pytestmark = [pytest.mark.e2e, pytest.mark.model]

LONG = "The quick brown fox jumps over the lazy dog while the cat sleeps by the warm red door. " * 12
OTHERS = [f"{name} went to the big shop with a red bag and a small hat. " * 6 for name in ("Tom", "Sue", "Ben")]


@contextlib.contextmanager
def shapes_daemon_with(tmp: Path, hub: HubStub, **env: str) -> Iterator[Daemon]:
    with daemon_with(
        tmp, hub, [shapes_repo(arch) for arch in SHAPES], LOCALLLM_NUM_PARALLEL="2", LOCALLLM_DEBUG="1",
        LOCALLLM_MAX_LOADED_MODELS="1", LOCALLLM_CONTEXT_LENGTH="2048", **env,
    ) as d:  # fmt: skip
        yield d


@pytest.fixture(scope="module")
def shapes_daemon(tmp_path_factory: pytest.TempPathFactory, shapes_hub: HubStub) -> Iterator[Daemon]:
    with shapes_daemon_with(tmp_path_factory.mktemp("daemon"), shapes_hub) as d:
        yield d


def complete(d: Daemon, arch: str, prompt: str, **extra: Any) -> tuple[str, int, int]:
    """Greedy text, prompt tokens and cached prompt tokens of one completion."""
    body = {"model": f"hf.co/{shapes_repo(arch)}", "prompt": prompt, "temperature": 0, "max_tokens": 16, **extra}
    r = httpx.post(d.url + "/v1/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["completion_tokens"] > 0, r.json()
    return r.json()["choices"][0]["text"], usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]


def cache_of(d: Daemon, arch: str) -> dict[str, Any]:
    models = httpx.get(d.url + "/api/ps", timeout=10).json()["models"]
    entry = next(m for m in models if m["name"].split(":latest")[0] == f"hf.co/{shapes_repo(arch)}")
    cache: dict[str, Any] = entry["prompt_cache"]
    return cache


def unload(d: Daemon, arch: str) -> None:
    assert d.cli("stop", f"hf.co/{shapes_repo(arch)}").returncode == 0
    deadline = time.monotonic() + 30
    while httpx.get(d.url + "/api/ps", timeout=10).json()["models"] and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.mark.parametrize("arch", sorted(SHAPES))
def test_the_shape_loads_and_generates(shapes_daemon: Daemon, arch: str) -> None:
    r = httpx.post(
        shapes_daemon.url + "/api/generate",
        json={"model": f"hf.co/{shapes_repo(arch)}", "prompt": "Hello there", "stream": False, "raw": True,
              "options": {"temperature": 0, "num_predict": 8}},
        timeout=120,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["eval_count"] > 0 and body["response"], body
    shown = httpx.post(shapes_daemon.url + "/api/show", json={"model": f"hf.co/{shapes_repo(arch)}"}, timeout=30).json()
    assert shown["model_info"]["general.architecture"] == arch


@pytest.mark.parametrize("arch", sorted(SHAPES))
def test_the_same_long_prompt_after_other_traffic_is_restored_from_a_checkpoint(
    shapes_daemon: Daemon, arch: str
) -> None:
    unload(shapes_daemon, arch)
    fresh, n_prompt, cold = complete(shapes_daemon, arch, LONG)
    assert n_prompt > 200 and cold == 0
    for other in OTHERS:  # sequential: each takes the least recently used of the 2 slots
        complete(shapes_daemon, arch, other)
    text, n_again, cached = complete(shapes_daemon, arch, LONG)
    assert n_again == n_prompt and cached == n_prompt, "restored whole, with the output after it: nothing evaluated"
    assert text == fresh, "a restored checkpoint gives the same greedy text as a fresh evaluation"
    cache = cache_of(shapes_daemon, arch)
    assert cache["ram_hits"] >= 1 and cache["ram_states"] >= 2 and 0 < cache["ram_bytes"] <= cache["ram_limit"]
    assert cache["checkpoints"] >= 1 + len(OTHERS), "one at the end of each prompt"
    assert "prompt cache: saved a checkpoint" in shapes_daemon.log()


@pytest.mark.parametrize("arch", sorted(SHAPES))
def test_a_checkpoint_at_a_chunk_boundary_gives_the_text_of_a_fresh_evaluation(
    shapes_daemon: Daemon, arch: str
) -> None:
    """A long prompt of L tokens is evaluated in batches ending 4 + 512 and 4 tokens before its end, with a
    checkpoint at each (as llama-server does). A prompt of as many tokens differing from it in its last sentence
    restores the first one and evaluates the same two batches a fresh evaluation of it does."""
    long = LONG * 4
    unload(shapes_daemon, arch)
    _, n_long, _ = complete(shapes_daemon, arch, long)
    assert n_long > 700
    for other in OTHERS[:2]:  # out of both slots (a sliding window still holding the fork's prefix would be cut)
        complete(shapes_daemon, arch, other)
    head, _, tail = long.rpartition("cat")
    fork = head + "dog" + tail  # one word of the last sentence, as many tokens
    restored, n_fork, cached = complete(shapes_daemon, arch, fork)
    assert n_fork == n_long and cached == n_long - 4 - 512, "restored from the checkpoint 516 tokens before the end"
    unload(shapes_daemon, arch)
    fresh, n_fresh, cold = complete(shapes_daemon, arch, fork)
    assert cold == 0 and n_fresh == n_fork and restored == fresh


def test_a_chats_next_turn_continues_from_the_end_of_the_answer(shapes_daemon: Daemon) -> None:
    """A recurrent model's slot cannot be cut; its state at the end of the answer was kept when the slot went to
    other traffic, and the next turn (prompt + answer + more) restores it."""
    arch = "mamba"
    unload(shapes_daemon, arch)
    answer, n_prompt, _ = complete(shapes_daemon, arch, LONG)
    for other in OTHERS:
        complete(shapes_daemon, arch, other)
    _, n_next, cached = complete(shapes_daemon, arch, LONG + answer + " What happened next?")
    assert cached > n_prompt, f"{cached} of {n_next}: more than the first prompt"


def test_checkpoints_outlive_a_restart_in_the_disk_tier(tmp_path: Path, shapes_hub: HubStub) -> None:
    """The disk tier keeps checkpoints under the same layout keys: a runner started again restores the prompt's
    checkpoint, with the output after it, from its file."""
    with shapes_daemon_with(tmp_path, shapes_hub, LOCALLLM_CACHE_DIR=str(tmp_path / "kv")) as d:
        for arch in sorted(SHAPES):
            fresh, n_prompt, cold = complete(d, arch, LONG)
            assert cold == 0
            unload(d, arch)  # the runner stops: its checkpoints are on disk
            text, n_again, cached = complete(d, arch, LONG)
            assert n_again == n_prompt and cached == n_prompt, f"{arch}: restored from its file, nothing evaluated"
            assert text == fresh
            cache = cache_of(d, arch)
            assert cache["disk_hits"] == 1 and cache["disk_states"] >= 1 and cache["checkpoints"] == 0, cache
            unload(d, arch)


@pytest.mark.parametrize("arch", sorted(SHAPES))
def test_concurrent_long_prompts_each_come_back_from_their_checkpoints(shapes_daemon: Daemon, arch: str) -> None:
    """Two long prompts evaluated at once share each batch (their checkpoints' stops split it); after other
    traffic, both sent at once again are restored whole."""
    prompts = [f"{name} said: " + LONG for name in ("Alice", "Bob")]
    unload(shapes_daemon, arch)

    def both() -> list[tuple[str, int, int]]:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            return list(pool.map(lambda p: complete(shapes_daemon, arch, p), prompts))

    first = both()
    assert all(cold == 0 for _, _, cold in first)
    for other in OTHERS:
        complete(shapes_daemon, arch, other)
    again = both()
    for (_, n_prompt, _), (_, n_again, cached) in zip(first, again, strict=True):
        assert n_again == n_prompt and cached == n_prompt
