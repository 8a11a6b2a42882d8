"""Operating the daemon (issue 15, parts 3-5), on one real daemon: Prometheus metrics read by the official
parser after a known set of requests, JSON logs carrying the request ids the answers carried, and systemd's
readiness and stop notifications through a stand-in of its notification socket, then SIGTERM in the middle
of a stream."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import STORIES_REPO
from ..hubstub import HubStub
from .conftest import Daemon, start_daemon, stop_daemon

MODEL = f"hf.co/{STORIES_REPO}"
LABEL = f"{MODEL}:latest"  # the model's full name, as the metrics and logs give it
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def notify_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[socket.socket]:
    """systemd's side of sd_notify: a unix datagram socket the daemon finds in $NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path_factory.mktemp("notify") / "notify.sock"))
    sock.settimeout(30)
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory, hub: HubStub, notify_socket: socket.socket) -> Iterator[Daemon]:
    d = start_daemon(
        tmp_path_factory.mktemp("ops"),
        hub,
        LOCALLLM_METRICS="1",
        LOCALLLM_LOG_FORMAT="json",
        LOCALLLM_STREAM_INTERVAL="0",
        LOCALLLM_SHUTDOWN_GRACE="0",
        NOTIFY_SOCKET=notify_socket.getsockname(),
    )
    try:
        pulled = d.cli("pull", MODEL)
        assert pulled.returncode == 0, pulled.stderr
        yield d
    finally:
        stop_daemon(d)


def scrape(d: Daemon) -> Samples:
    answer = httpx.get(d.url + "/metrics", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            out[sample.name, frozenset(sample.labels.items())] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_readiness_is_notified_once_the_daemon_listens(ops: Daemon, notify_socket: socket.socket) -> None:
    message = notify_socket.recv(4096).decode()
    assert "READY=1" in message.splitlines()
    assert httpx.get(ops.url + "/", timeout=10).status_code == 200


def test_counters_and_histograms_equal_what_was_sent(ops: Daemon) -> None:
    before = scrape(ops)
    ollama = [
        httpx.post(
            ops.url + "/api/generate",
            json={"model": MODEL, "prompt": f"Once upon a time {i}", "stream": False, "options": {"num_predict": 5}},
            timeout=120,
        ).json()
        for i in range(3)
    ]
    openai = [
        httpx.post(
            ops.url + "/v1/completions",
            json={"model": MODEL, "prompt": f"The cat {i}", "max_tokens": 4, "ignore_eos": True},
            timeout=120,
        ).json()
        for i in range(2)
    ]
    missing = httpx.post(ops.url + "/api/generate", json={"model": "nope", "prompt": "hi"}, timeout=30)
    assert missing.status_code == 404
    after = scrape(ops)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    o, a = {"model": LABEL, "dialect": "ollama"}, {"model": LABEL, "dialect": "openai"}
    reasons = {r["done_reason"] for r in ollama}
    assert len(reasons) == 1  # all stopped the same way ("length" unless the story ended before 5 tokens)
    assert delta("localllm_request_success_total", **o, finished_reason=reasons.pop()) == 3
    assert delta("localllm_request_success_total", **a, finished_reason="length") == 2
    assert delta("localllm_generation_tokens_total", **o) == sum(r["eval_count"] for r in ollama)
    assert delta("localllm_generation_tokens_total", **a) == sum(r["usage"]["completion_tokens"] for r in openai) == 8
    prompt = delta("localllm_prompt_tokens_total", **o) - delta("localllm_prompt_tokens_cached_total", **o)
    assert prompt == sum(r["prompt_eval_count"] for r in ollama)
    assert delta("localllm_prompt_tokens_total", **a) == sum(r["usage"]["prompt_tokens"] for r in openai)
    for histogram in ("time_to_first_token_seconds", "e2e_request_latency_seconds", "request_queue_time_seconds"):
        assert delta(f"localllm_{histogram}_count", **o) == 3, histogram
        assert delta(f"localllm_{histogram}_count", **a) == 2, histogram
    assert delta("localllm_request_generation_tokens_sum", **o) == sum(r["eval_count"] for r in ollama)
    assert delta("localllm_prefix_cache_queries_total", **o) == 3
    assert delta("localllm_http_requests_total", **o, status="200") == 3
    assert delta("localllm_http_requests_total", **a, status="200") == 2
    assert delta("localllm_http_requests_total", model="", dialect="ollama", status="404") == 1
    # the model was loaded once (by the first request), and nothing runs or waits now
    assert value(after, "localllm_model_loads_total", model=LABEL) == 1
    assert value(after, "localllm_model_load_seconds_count", model=LABEL) == 1
    assert value(after, "localllm_num_requests_running", model=LABEL) == 0
    assert value(after, "localllm_num_requests_waiting", model=LABEL) == 0
    assert value(after, "localllm_num_slots", model=LABEL) >= 1
    assert value(after, "localllm_model_crashes_total", model=LABEL) == 0


def test_pull_bytes_count_the_download(ops: Daemon, hub: HubStub) -> None:
    samples = scrape(ops)
    pulled = sum(v for (name, _), v in samples.items() if name == "localllm_pull_bytes_total")
    assert pulled == Path(hub.repos[STORIES_REPO]["stories260K.gguf"]).stat().st_size


def test_streamed_pieces_give_the_inter_token_latencies(ops: Daemon) -> None:
    before = scrape(ops)
    body = {"model": MODEL, "prompt": "A dog", "options": {"num_predict": 8}}
    with httpx.stream("POST", ops.url + "/api/generate", json=body, timeout=120) as answer:
        lines = [json.loads(line) for line in answer.iter_lines() if line]
    pieces = [line for line in lines if not line["done"]]
    after = scrape(ops)
    labels = {"model": LABEL, "dialect": "ollama"}
    itl = value(after, "localllm_inter_token_latency_seconds_count", **labels) - value(
        before, "localllm_inter_token_latency_seconds_count", **labels
    )
    assert itl == len(pieces) - 1


def test_json_logs_carry_the_request_ids_of_the_answers(ops: Daemon) -> None:
    mine = httpx.post(
        ops.url + "/api/generate",
        json={"model": MODEL, "prompt": "Hello", "stream": False, "options": {"num_predict": 3}},
        headers={"X-Request-Id": "trace-42.a"},
        timeout=120,
    )
    made = httpx.get(ops.url + "/api/tags", timeout=30)
    bad = httpx.post(ops.url + "/v1/chat/completions", json={"model": MODEL, "messages": "x"}, timeout=30)
    assert mine.headers["x-request-id"] == "trace-42.a"
    assert len(made.headers["x-request-id"]) == 32
    assert bad.status_code == 400 and bad.headers["x-request-id"] != made.headers["x-request-id"]
    time.sleep(0.2)
    records = [json.loads(line) for line in ops.log().splitlines() if line.strip()]  # every line is JSON
    assert all({"time", "level", "message"} <= set(r) for r in records)
    by_id = {r["request_id"]: r for r in records if r.get("request_id") and "status" in r}
    generated = by_id["trace-42.a"]
    assert generated["status"] == 200 and generated["path"] == "/api/generate"
    assert generated["model"] == LABEL and generated["dialect"] == "ollama"
    assert generated["eval_tokens"] == mine.json()["eval_count"] and generated["duration_ms"] > 0
    assert by_id[made.headers["x-request-id"]]["status"] == 200
    refused = by_id[bad.headers["x-request-id"]]
    assert refused["status"] == 400 and refused["dialect"] == "openai"


def test_sigterm_ends_a_running_stream_with_an_error_line_then_stopping(
    ops: Daemon, notify_socket: socket.socket
) -> None:
    """Last: it stops the daemon. With LOCALLLM_SHUTDOWN_GRACE=0 the stream is cut at once, with a last line."""
    body = {"model": MODEL, "prompt": "Once", "max_tokens": 100000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", ops.url + "/v1/completions", json=body, timeout=60) as answer:
        events = answer.iter_lines()
        first = next(line for line in events if line.startswith("data: "))
        assert "choices" in first
        started = time.monotonic()
        os.kill(ops.proc.pid, signal.SIGTERM)
        rest = [line for line in events if line.startswith("data: ")]
    assert rest, "the stream ended without a last line"
    last = json.loads(rest[-1].removeprefix("data: "))
    assert "shutting down" in last["error"]["message"]
    assert ops.proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn ends by raising the signal it caught again
    assert time.monotonic() - started < 15
    messages = []
    notify_socket.settimeout(5)
    while True:
        try:
            messages.append(notify_socket.recv(4096).decode())
        except TimeoutError:
            break
    assert any("STOPPING=1" in m.splitlines() for m in messages)
