"""Answers longer than a runner pipe's line, through the real daemon and a real runner (issue 26, finding 2).

A tokenize of 3.4 MiB of text or a detokenize of 1,000,000 ids made an answer longer than the pipe's 16 MiB
line limit: the daemon's reader died, and every later request for the model hung for 5 minutes. Such answers
now come in pieces and are joined again; the same runner goes on answering.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import EMBED_FILE, EMBED_REPO, STORIES_REPO, model_file
from ..hubstub import HubStub
from .conftest import Daemon, daemon_with

STORIES = f"hf.co/{STORIES_REPO}"
SENTENCE = "Once upon a time, there was a little cat who liked to play."


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    model_file(EMBED_FILE)  # (skips without it)
    with daemon_with(tmp_path_factory.mktemp("boundary"), hub, [STORIES_REPO, EMBED_REPO]) as daemon:
        yield daemon


def post(d: Daemon, path: str, body: dict[str, object], timeout: float = 20) -> httpx.Response:
    r = httpx.post(d.url + path, json=body, timeout=timeout)
    assert r.status_code == 200, r.text[:500]
    return r


def rss(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory in bytes (VmHWM: its peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) << 10
    raise LookupError(field)


@contextlib.contextmanager
def pulse(d: Daemon) -> Iterator[list[float]]:
    """`GET /api/version` every 0.1 s meanwhile: the latencies seen (the daemon's event loop must stay free)."""
    seen: list[float] = []
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=30) as client:
            while not done.is_set():
                started = time.monotonic()
                client.get(d.url + "/api/version").raise_for_status()
                seen.append(time.monotonic() - started)
                done.wait(0.1)

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()


def still_answers(d: Daemon, runners: list[int]) -> None:
    """The model generates afterwards, in the same runner (nothing was killed and loaded again)."""
    started = time.monotonic()
    body = {"model": STORIES, "prompt": "Once", "stream": False, "options": {"num_predict": 4}}
    out = post(d, "/api/generate", body)
    assert out.json()["done"] and time.monotonic() - started < 10
    assert d.runner_pids() == runners


def test_a_million_ids_detokenize_whole(d: Daemon) -> None:
    unit = post(d, "/api/tokenize", {"model": STORIES, "content": SENTENCE}).json()["tokens"]
    text = post(d, "/api/detokenize", {"model": STORIES, "tokens": unit}).json()["content"]
    runners = d.runner_pids()
    times = 1_000_000 // len(unit)
    before = rss(d.proc.pid)
    started = time.monotonic()
    with pulse(d) as latencies:
        whole = post(d, "/api/detokenize", {"model": STORIES, "tokens": unit * times}, timeout=180).json()["content"]
    peak = rss(d.proc.pid, "VmHWM")
    print(
        f"detokenize of {len(unit) * times} ids: {time.monotonic() - started:.1f}s; /api/version meanwhile at most "
        f"{max(latencies) * 1000:.0f} ms; daemon RSS {before >> 20} MiB before, peak {peak >> 20} MiB"
    )
    assert whole == text * times
    assert max(latencies) < 1.0
    still_answers(d, runners)


def test_four_mib_of_text_tokenize_whole(d: Daemon) -> None:
    def tokens(times: int) -> list[int]:
        body: dict[str, object] = {"model": STORIES, "content": (SENTENCE + " ") * times}
        return list(post(d, "/api/tokenize", body, timeout=180).json()["tokens"])

    one = tokens(1)
    unit, tail = one[:-1], one[-1:]  # the sentence, then the space after it (a token of its own at the end)
    assert tokens(2) == unit * 2 + tail and tokens(3) == unit * 3 + tail
    runners = d.runner_pids()
    times = (4 << 20) // (len(SENTENCE) + 1)
    before = rss(d.proc.pid)
    started = time.monotonic()
    with pulse(d) as latencies:
        whole = tokens(times)
    peak = rss(d.proc.pid, "VmHWM")
    print(
        f"tokenize of {times * (len(SENTENCE) + 1)} bytes: {time.monotonic() - started:.1f}s, {len(whole)} tokens; "
        f"/api/version meanwhile at most {max(latencies) * 1000:.0f} ms; daemon RSS {before >> 20} MiB before, "
        f"peak {peak >> 20} MiB"
    )
    assert whole == unit * times + tail
    assert max(latencies) < 1.0
    still_answers(d, runners)


def test_many_embeddings_come_in_parts_joined_in_order(d: Daemon) -> None:
    """200 inputs: four messages of at most 64 vectors from the runner, joined in their order."""
    model = f"hf.co/{EMBED_REPO}"
    inputs = [f"a story about the number {i}" for i in range(200)]
    out = post(d, "/api/embed", {"model": model, "input": inputs}, timeout=120).json()
    assert len(out["embeddings"]) == 200 and out["prompt_eval_count"] > 200
    for i in (0, 63, 64, 199):
        alone = post(d, "/api/embed", {"model": model, "input": inputs[i]}).json()["embeddings"][0]
        cosine = sum(a * b for a, b in zip(alone, out["embeddings"][i], strict=True))
        assert cosine > 0.999, (i, cosine)
