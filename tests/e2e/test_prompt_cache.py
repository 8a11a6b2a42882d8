"""The prompt cache beyond the slots, on the real daemon and llama.cpp: saved KV states in RAM and on disk.

Not timed (bench/ has the figures). Each test sends a long greedy prompt, then enough other prompts to pass
through every slot, then the long prompt again, and reads what was evaluated (`usage`) and `/api/ps`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import CHAT_REPO, STORIES_REPO
from ..hubstub import HubStub
from .conftest import Daemon, daemon_with, start_daemon, stop_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.model]

STORIES = f"hf.co/{STORIES_REPO}"
LONG = "Once upon a time there was a little girl named Lily. She liked to play in the park with her dog Max. " * 12
OTHERS = [f"{name} went to the big shop with a red bag and a small hat. " * 6 for name in ("Tom", "Sue", "Ben", "Amy")]


def complete(d: Daemon, prompt: str, model: str = STORIES, **extra: Any) -> tuple[str, int, int]:
    """Greedy text, prompt tokens and cached prompt tokens of one completion."""
    body = {"model": model, "prompt": prompt, "temperature": 0, "max_tokens": 24, **extra}
    r = httpx.post(d.url + "/v1/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    return r.json()["choices"][0]["text"], usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]


def cache_of(d: Daemon, model: str = STORIES) -> dict[str, Any]:
    models = httpx.get(d.url + "/api/ps", timeout=10).json()["models"]
    entry = next(m for m in models if m["name"].split(":latest")[0] == model)
    cache: dict[str, Any] = entry["prompt_cache"]
    return cache


@pytest.fixture(scope="module")
def two_slots(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    with daemon_with(
        tmp_path_factory.mktemp("cache"), hub, [STORIES_REPO], LOCALLLM_NUM_PARALLEL="2", LOCALLLM_DEBUG="1"
    ) as d:
        yield d


def unload(d: Daemon) -> None:
    assert d.cli("stop", STORIES).returncode == 0
    deadline = time.monotonic() + 30
    while httpx.get(d.url + "/api/ps", timeout=10).json()["models"] and time.monotonic() < deadline:
        time.sleep(0.2)


def test_a_long_prompt_comes_back_from_ram_after_traffic_through_every_slot(two_slots: Daemon) -> None:
    fresh, n_prompt, cached = complete(two_slots, LONG)
    assert n_prompt > 200 and cached < 64
    for other in OTHERS:  # sequential: each takes the least recently used slot
        complete(two_slots, other)
    text, n_again, cached = complete(two_slots, LONG)
    assert n_again == n_prompt and cached == n_prompt, "all restored, with the output after it: nothing evaluated"
    assert text == fresh, "a restored state gives the same greedy text as a fresh evaluation"
    cache = cache_of(two_slots)
    assert cache["ram_hits"] >= 1 and cache["ram_states"] >= 2 and 0 < cache["ram_bytes"] <= cache["ram_limit"]
    assert cache["disk_limit"] == 0 and cache["hits"] <= cache["requests"] and cache["hit_rate"] > 0
    assert "prompt cache: ram hit" in two_slots.log() and "prompt cache: miss" in two_slots.log(), "the debug log"
    shown = two_slots.cli("ps")
    assert shown.returncode == 0 and "PROMPT CACHE" in shown.stdout and "% hits" in shown.stdout, shown.stdout


def test_a_prompt_sent_again_evaluates_nothing_and_answers_as_a_fresh_evaluation(two_slots: Daemon) -> None:
    """Its first token comes from the logits kept after it, not from evaluating its last token again."""

    def first_logprobs(prompt: str, **extra: Any) -> tuple[str, int, int, dict[str, float]]:
        body = {"model": STORIES, "prompt": prompt, "max_tokens": 24, "logprobs": 3, **extra}
        r = httpx.post(two_slots.url + "/v1/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        choice, usage = r.json()["choices"][0], r.json()["usage"]
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        return choice["text"], usage["prompt_tokens"], cached, choice["logprobs"]["top_logprobs"][0]

    for extra in ({"temperature": 0}, {"temperature": 1.0, "top_p": 0.9, "seed": 11}):
        unload(two_slots)
        fresh, n_prompt, cold, top = first_logprobs(LONG, **extra)
        again, n_again, cached, top_again = first_logprobs(LONG, **extra)
        assert cold < 32 and n_again == n_prompt and cached == n_prompt, "nothing evaluated the second time"
        assert again == fresh, f"the same text as a fresh evaluation ({extra})"
        assert top_again.keys() == top.keys() and all(abs(top_again[t] - top[t]) < 1e-3 for t in top)


def test_a_state_is_cut_to_the_prefix_a_shorter_prompt_shares(two_slots: Daemon) -> None:
    unload(two_slots)  # a new runner: no saved state yet
    longer = LONG + "One day Max found a big stick by the river and ran home."
    complete(two_slots, longer)
    for other in OTHERS:
        complete(two_slots, other)
    text, n_prompt, cached = complete(two_slots, LONG)  # restored from the longer prompt's state, cut
    assert cached == n_prompt - 1
    unload(two_slots)
    fresh, _, cold = complete(two_slots, LONG)
    assert cold < 32 and text == fresh


def test_the_ram_bound_holds_and_the_oldest_states_go(tmp_path: Path, hub: HubStub) -> None:
    with daemon_with(tmp_path, hub, [STORIES_REPO], LOCALLLM_NUM_PARALLEL="1", LOCALLLM_CACHE_RAM="400KiB") as d:
        prompts = [f"{name} and the little cat sat in the warm sun by the old red door. " * 5 for name in
                   ("Ann", "Bob", "Cid", "Dot", "Eve", "Fay", "Gus")]  # fmt: skip
        for prompt in prompts:
            complete(d, prompt)
        cache = cache_of(d)
        assert cache["ram_limit"] == 400 * 1024 and 0 < cache["ram_bytes"] <= cache["ram_limit"]
        assert 1 <= cache["ram_states"] < len(prompts) - 1
        _, n, cached = complete(d, prompts[-2])  # the last one saved (the slot held the last prompt)
        assert cached == n
        _, n, cached = complete(d, prompts[0])  # the oldest went
        assert cached < 32


def test_states_survive_a_restart_on_disk_and_never_cross_models_or_contexts(tmp_path: Path, hub: HubStub) -> None:
    cache_dir = tmp_path / "kv"
    env = {"LOCALLLM_NUM_PARALLEL": "2", "LOCALLLM_CACHE_DIR": str(cache_dir)}
    with daemon_with(tmp_path, hub, [STORIES_REPO, CHAT_REPO], **env) as d:
        fresh, n_prompt, _ = complete(d, LONG)
        assert cache_of(d)["disk_limit"] > 0
    # stopped: the slots' states were written on the way out
    files = list(cache_dir.glob("*/*.kvstate"))
    assert files and all(f.stat().st_mode & 0o077 == 0 for f in files)

    d = start_daemon(tmp_path, hub, **env)
    try:
        text, n_again, cached = complete(d, LONG)
        assert cached == n_prompt and text == fresh, "restored from disk after a daemon restart, with its output"
        cache = cache_of(d)
        assert cache["disk_hits"] == 1 and cache["disk_states"] >= 1
        _, _, other_model = complete(d, LONG, model=f"hf.co/{CHAT_REPO}")
        assert other_model < 32, "another model's state is never restored"
    finally:
        stop_daemon(d)

    d = start_daemon(tmp_path, hub, **env)
    try:
        body = {"model": STORIES, "prompt": LONG, "stream": False, "raw": True, "options": {"num_ctx": 1024}}
        r = httpx.post(d.url + "/api/generate", json=body, timeout=120).json()
        assert r["prompt_eval_count"] >= n_prompt - 1, "a state of another context size is never restored"
    finally:
        stop_daemon(d)


def test_a_corrupt_state_file_is_refused_and_removed(tmp_path: Path, hub: HubStub) -> None:
    cache_dir = tmp_path / "kv"
    env = {"LOCALLLM_NUM_PARALLEL": "1", "LOCALLLM_CACHE_DIR": str(cache_dir), "LOCALLLM_DEBUG": "1"}
    with daemon_with(tmp_path, hub, [STORIES_REPO], **env) as d:
        fresh, n_prompt, _ = complete(d, LONG)
    (file,) = cache_dir.glob("*/*.kvstate")
    raw = bytearray(file.read_bytes())
    raw[len(raw) // 2] ^= 0x5A
    file.write_bytes(raw)
    d = start_daemon(tmp_path, hub, **env)
    try:
        text, _, cached = complete(d, LONG)
        assert cached < 32 and text == fresh, "evaluated again, not loaded"
        assert not file.exists() and "corrupt or truncated; deleted, not loaded" in d.log()
    finally:
        stop_daemon(d)
