"""Hostile bodies on the serving dialects' shared paths (a real daemon): `POST /generate` decodes a body twice
(the fields that decide its dialect, then the dialect's model), both in the body decoder when it is large, so a
60 MB body neither blocks other clients nor costs the daemon more than a few times its size, and is refused
in the dialect's own shape naming the field (server/dialects/compat.py, tests/e2e/test_bodies.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..hubstub import HubStub
from .conftest import Daemon, daemon_with
from .test_bodies import BLOCK_MS, TRIES, Prober, _rss

pytestmark = [pytest.mark.e2e]

TEXT = "word, " * 10_000_000  # 60 MB: more than any prompt may be (16 MiB)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    with daemon_with(tmp_path_factory.mktemp("serving-bodies"), hub, []) as d:
        yield d


def _vllm(body: Any) -> str | None:
    assert body["object"] == "error" and body["code"] == 400, body
    return body["param"]  # type: ignore[no-any-return]


def _tgi(body: Any) -> str | None:
    assert body["error_type"] == "validation", body
    return "inputs" if "inputs" in body["error"] else None


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/generate", {"model": "absent", "prompt": TEXT}, 400, _vllm),  # vLLM's, through the dispatch
        ("/generate", {"model": "absent", "inputs": TEXT}, 422, _tgi),  # TGI's, through the dispatch
    ],
    ids=["vllm", "tgi"],
)
def test_a_60_mb_body_on_a_shared_path_neither_blocks_nor_costs_4x_its_size(
    server: Daemon, path: str, body: dict[str, Any], status: int, field: Callable[[Any], str | None]
) -> None:
    raw = json.dumps(body).encode()
    httpx.post(server.url + path, json={"prompt": "x", "n": 0}, timeout=30)  # the app's first request done
    Path(f"/proc/{server.proc.pid}/clear_refs").write_text("5")  # the peak RSS from now on
    before = _rss(server.proc.pid, "VmRSS")
    waits = []
    for _ in range(TRIES):
        with Prober(server.url) as prober:
            start = time.monotonic()
            r = httpx.post(server.url + path, content=raw, headers={"content-type": "application/json"}, timeout=120)
            took = time.monotonic() - start
        waits.append(prober.longest_ms)
        if prober.longest_ms < BLOCK_MS:
            break
    added = _rss(server.proc.pid, "VmHWM") - before
    assert r.status_code == status and field(r.json()) in ("prompt", "inputs"), r.text
    print(
        f"{path} 60 MB body: {took * 1000:.0f} ms; /api/version waited at most {min(waits):.0f} ms; "
        f"daemon RSS +{added >> 20} MiB ({added / len(raw):.1f}x)"
    )
    assert min(waits) < BLOCK_MS
    assert added < 4 * len(raw)
