#!/usr/bin/env python3
"""A bounded load test of one localllm daemon: many concurrent clients, a mix of requests, memory afterwards.

It starts its own Hub stand-in (tests/hubstub.py) and its own daemon on 127.0.0.1 with a throwaway store,
pulls stories260K (generate, chat) and all-MiniLM (embeddings), warms both up, then runs `--clients`
concurrent clients for `--duration` seconds. Each client loops over a random mix of: /api/generate
(streaming and not), /api/chat, /v1/chat/completions (streaming), /api/embed, GET /api/tags, GET /api/ps,
/api/pull of an already-pulled model, and a client that opens a stream, reads one line and disconnects.

    .venv/bin/python bench/load.py                       # 64 clients, 120 s
    .venv/bin/python bench/load.py --clients 16 --duration 8 --max-queue 4

Every request has a client-side deadline (`--timeout`, whole request): passing it counts as a hang. The
verdict is PASS when every response is 2xx or a documented 429/503 carrying Retry-After, no request timed
out or lost its connection (the deliberate disconnects aside), no stream ended with an error line, and the
RSS of the daemon and its runners settled back within `--tolerance-mb` of the pre-load baseline (and the
daemon alone, once the models are unloaded, within it of the daemon's own pre-load RSS). Exit status 0 on
PASS, 1 otherwise. Traffic stays on 127.0.0.1; the daemon is killed at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from tests.hubstub import HubStub  # noqa: E402  (the Hub stand-in the test suite uses)

MODELS = Path(os.environ.get("LOCALLLM_TEST_MODELS") or ROOT.parent / "shared" / "models").resolve()
STORIES_REPO = "testorg/stories260K-GGUF"
EMBED_REPO = "testorg/all-MiniLM-L6-v2-GGUF"
STORIES = f"hf.co/{STORIES_REPO}"
EMBED = f"hf.co/{EMBED_REPO}"
HOST = "127.0.0.1"


# -- the daemon ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def localllm_command() -> list[str]:
    script = Path(sys.executable).parent / "localllm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "localllm_cli.main"]


@dataclass
class Daemon:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # runners too (the daemon's own process group)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def start_daemon(work: Path, hub: HubStub, max_queue: int | None) -> Daemon:
    port = free_port()
    env = {
        **os.environ,
        "LOCALLLM_HOST": f"{HOST}:{port}",
        "LOCALLLM_MODELS": str(work / "models"),
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(work / "hf"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "XDG_STATE_HOME": str(work / "state"),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    for name in ("HF_HUB_OFFLINE", "LOCALLLM_API_KEYS", "LOCALLLM_API_KEY", "LOCALLLM_KEYS_FILE", "LOCALLLM_ORIGINS"):
        env.pop(name, None)
    if max_queue is not None:
        env["LOCALLLM_MAX_QUEUE"] = str(max_queue)
    log_path = work / "daemon.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*localllm_command(), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    daemon = Daemon(f"http://{HOST}:{port}", proc, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(daemon.url + "/", timeout=1).status_code == 200:
                return daemon
        except httpx.HTTPError:
            time.sleep(0.1)
    daemon.stop()
    raise RuntimeError(f"daemon did not start:\n{log_path.read_text(errors='replace')}")


# -- memory ----------------------------------------------------------------------------------------------


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


@dataclass
class Rss:
    daemon_mb: float
    runners_mb: float
    runners: int

    @property
    def total_mb(self) -> float:
        return self.daemon_mb + self.runners_mb


def rss(pid: int) -> Rss:
    """The daemon's RSS and that of its child processes (the runners), from /proc."""
    kids = _children(pid)
    return Rss(_rss_kb(pid) / 1024, sum(_rss_kb(k) for k in kids) / 1024, len(kids))


# -- the load --------------------------------------------------------------------------------------------


@dataclass
class Kind:
    count: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # what failed, for the report (first few)

    def record(self, outcome: str, seconds: float, ok: bool, detail: str = "") -> None:
        self.count += 1
        self.statuses[outcome] = self.statuses.get(outcome, 0) + 1
        self.latencies.append(seconds)
        if not ok and len(self.bad) < 5:
            self.bad.append(f"{outcome}: {detail}"[:300])


class Outcome(Exception):
    """How a request ended when it is not a plain status: raised inside a request, caught by `timed`."""

    def __init__(self, label: str, ok: bool, detail: str = "") -> None:
        super().__init__(label)
        self.label, self.ok, self.detail = label, ok, detail


_OK = {"200", "429", "503"}


def _judge(response: httpx.Response) -> tuple[str, bool]:
    status = response.status_code
    if 200 <= status < 300:
        return str(status), True
    if status in (429, 503):
        retry = response.headers.get("retry-after")
        return (f"{status}", True) if retry else (f"{status} without Retry-After", False)
    return str(status), False


async def _stream_lines(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> tuple[str, bool, str]:
    """Read a whole stream; an `error` line (NDJSON or SSE) fails it."""
    async with client.stream("POST", path, json=body) as response:
        label, ok = _judge(response)
        if response.status_code != 200:
            text = (await response.aread()).decode(errors="replace")
            return label, ok, text
        async for line in response.aiter_lines():
            data = line[6:] if line.startswith("data: ") else line
            if not data or data == "[DONE]":
                continue
            with contextlib.suppress(ValueError):
                doc = json.loads(data)
                if isinstance(doc, dict) and doc.get("error"):
                    return "200 with error in stream", False, data
        return label, ok, ""


async def _plain(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> tuple[str, bool, str]:
    response = await client.request(method, path, json=body)
    label, ok = _judge(response)
    return label, ok, "" if ok else response.text


async def _disconnect(client: httpx.AsyncClient) -> tuple[str, bool, str]:
    body = {"model": STORIES, "prompt": "Once upon a time", "options": {"num_predict": 200}}
    async with client.stream("POST", "/api/generate", json=body) as response:
        label, ok = _judge(response)
        if response.status_code == 200:
            async for _ in response.aiter_lines():
                break  # one line, then close the connection mid-stream
    return label, ok, ""


def _prompt() -> str:
    return random.choice(["Once upon a time", "The little dog", "Lily wanted to", "One day, a boy"])


REQUESTS: dict[str, Callable[[httpx.AsyncClient], Awaitable[tuple[str, bool, str]]]] = {
    "generate": lambda c: _plain(
        c,
        "POST",
        "/api/generate",
        {"model": STORIES, "prompt": _prompt(), "stream": False, "options": {"num_predict": 8}},
    ),
    "generate stream": lambda c: _stream_lines(
        c, "/api/generate", {"model": STORIES, "prompt": _prompt(), "options": {"num_predict": 16}}
    ),
    "chat": lambda c: _plain(
        c,
        "POST",
        "/api/chat",
        {
            "model": STORIES,
            "messages": [{"role": "user", "content": _prompt()}],
            "stream": False,
            "options": {"num_predict": 8},
        },
    ),
    "openai chat stream": lambda c: _stream_lines(
        c,
        "/v1/chat/completions",
        {"model": STORIES, "messages": [{"role": "user", "content": _prompt()}], "stream": True, "max_tokens": 16},
    ),
    "embed": lambda c: _plain(c, "POST", "/api/embed", {"model": EMBED, "input": [_prompt(), _prompt()]}),
    "tags": lambda c: _plain(c, "GET", "/api/tags", None),
    "ps": lambda c: _plain(c, "GET", "/api/ps", None),
    "pull (present)": lambda c: _plain(c, "POST", "/api/pull", {"model": STORIES, "stream": False}),
    "disconnect mid-stream": _disconnect,
}
# How often each kind is picked (pulls are rarer: each one asks the Hub stand-in).
WEIGHTS = {
    "generate": 4,
    "generate stream": 4,
    "chat": 3,
    "openai chat stream": 3,
    "embed": 3,
    "tags": 2,
    "ps": 2,
    "pull (present)": 1,
    "disconnect mid-stream": 2,
}


async def one(client: httpx.AsyncClient, kind: str, stats: Kind, timeout: float) -> None:
    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            label, ok, detail = await REQUESTS[kind](client)
    except TimeoutError:
        label, ok, detail = "timeout (hang)", False, f"no complete answer in {timeout:.0f} s"
    except httpx.TimeoutException as exc:
        label, ok, detail = "timeout (hang)", False, repr(exc)
    except httpx.TransportError as exc:
        label, ok, detail = "connection error", False, repr(exc)
    stats.record(label, time.monotonic() - start, ok, detail)


async def client_loop(url: str, stop_at: float, timeout: float, stats: dict[str, Kind], rng: random.Random) -> None:
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=2)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits, trust_env=False) as client:
        while time.monotonic() < stop_at:
            kind = rng.choices(kinds, weights)[0]
            await one(client, kind, stats[kind], timeout)


async def sample_rss(pid: int, peak: list[Rss], done: asyncio.Event) -> None:
    while not done.is_set():
        now = rss(pid)
        if now.total_mb > peak[0].total_mb:
            peak[0] = now
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.5)


async def run_load(
    daemon: Daemon, clients: int, duration: float, timeout: float, seed: int
) -> tuple[dict[str, Kind], Rss]:
    stats = {kind: Kind() for kind in WEIGHTS}
    peak = [rss(daemon.proc.pid)]
    done = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(daemon.proc.pid, peak, done))
    stop_at = time.monotonic() + duration
    tasks = [
        asyncio.create_task(client_loop(daemon.url, stop_at, timeout, stats, random.Random(seed + i)))
        for i in range(clients)
    ]
    try:
        await asyncio.gather(*tasks)
    finally:
        done.set()
        await sampler
    return stats, peak[0]


# -- around the load -------------------------------------------------------------------------------------


def pull(url: str, model: str) -> None:
    r = httpx.post(url + "/api/pull", json={"model": model, "stream": False}, timeout=300)
    r.raise_for_status()


def warm_up(url: str) -> None:
    r = httpx.post(
        url + "/api/generate",
        json={"model": STORIES, "prompt": "Hi", "stream": False, "keep_alive": -1, "options": {"num_predict": 4}},
        timeout=120,
    )
    r.raise_for_status()
    r = httpx.post(url + "/api/embed", json={"model": EMBED, "input": "hi", "keep_alive": -1}, timeout=120)
    r.raise_for_status()


def unload(url: str) -> None:
    for path, body in (
        ("/api/generate", {"model": STORIES, "keep_alive": 0}),
        ("/api/embed", {"model": EMBED, "keep_alive": 0}),
    ):
        r = httpx.post(url + path, json=body, timeout=60)
        if r.status_code != 200:
            print(f"unloading {body['model']}: {r.status_code} {r.text}", file=sys.stderr)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and httpx.get(url + "/api/ps", timeout=10).json().get("models"):
        time.sleep(0.5)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class Report:
    stats: dict[str, Kind]
    idle: Rss
    before: Rss
    peak: Rss
    after: Rss
    unloaded: Rss
    tolerance_mb: float
    clients: int
    duration: float

    def failures(self) -> list[str]:
        out = []
        for kind, s in self.stats.items():
            out += [f"{kind}: {b}" for b in s.bad]
        if self.after.total_mb - self.before.total_mb > self.tolerance_mb:
            out.append(
                f"RSS did not settle: {self.after.total_mb:.1f} MB after vs {self.before.total_mb:.1f} MB before"
            )
        if self.unloaded.daemon_mb - self.before.daemon_mb > self.tolerance_mb:
            out.append(
                f"daemon RSS after unloading {self.unloaded.daemon_mb:.1f} MB vs {self.before.daemon_mb:.1f} MB before"
            )
        if self.unloaded.runners:
            out.append(f"{self.unloaded.runners} runner process(es) still alive after keep_alive 0")
        return out

    def markdown(self) -> str:
        rows = [
            "| request | count | statuses | p50 ms | p99 ms | max ms |",
            "|---|---:|---|---:|---:|---:|",
        ]
        total = 0
        for kind, s in self.stats.items():
            total += s.count
            statuses = ", ".join(f"{k}: {v}" for k, v in sorted(s.statuses.items()))
            rows.append(
                f"| {kind} | {s.count} | {statuses} | {percentile(s.latencies, 0.5) * 1000:.0f} | "
                f"{percentile(s.latencies, 0.99) * 1000:.0f} | {max(s.latencies, default=0) * 1000:.0f} |"
            )
        everything = [x for s in self.stats.values() for x in s.latencies]
        failed = sum(n for s in self.stats.values() for k, n in s.statuses.items() if k not in _OK)
        rows.append(
            f"| **all** | {total} | {failed} failed | "
            f"{percentile(everything, 0.5) * 1000:.0f} | {percentile(everything, 0.99) * 1000:.0f} | "
            f"{max(everything, default=0) * 1000:.0f} |"
        )
        rows += [
            "",
            f"{self.clients} clients, {self.duration:.0f} s, {total / self.duration:.1f} requests/s",
            "",
            "| RSS (MB) | daemon | runners | total |",
            "|---|---:|---:|---:|",
        ]
        for label, r in (
            ("idle at start (no pulls yet)", self.idle),
            ("before the load (pulled, models loaded)", self.before),
            ("peak during the load", self.peak),
            ("after the load (settled)", self.after),
            ("after keep_alive 0 (models unloaded)", self.unloaded),
        ):
            rows.append(f"| {label} | {r.daemon_mb:.1f} | {r.runners_mb:.1f} ({r.runners}) | {r.total_mb:.1f} |")
        return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    ap.add_argument("--max-queue", type=int, default=None, help="LOCALLLM_MAX_QUEUE for the daemon")
    ap.add_argument("--timeout", type=float, default=60.0, help="per-request deadline; passing it is a hang")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds to wait after the load before measuring")
    ap.add_argument("--tolerance-mb", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not 1 <= args.clients <= 1024 or not 0 < args.duration <= 3600:
        ap.error("--clients must be 1..1024 and --duration 0..3600 seconds")
    stories, minilm = MODELS / "stories260K.gguf", MODELS / "all-minilm-l6-v2-f16.gguf"
    for f in (stories, minilm):
        if not f.is_file():
            ap.error(f"{f} not found (set LOCALLLM_TEST_MODELS to the models folder)")
    repos = {STORIES_REPO: {"stories260K.gguf": stories}, EMBED_REPO: {"all-MiniLM-L6-v2-F16.gguf": minilm}}

    with tempfile.TemporaryDirectory(prefix="localllm-load-") as tmp, HubStub(repos) as hub:
        work = Path(tmp)
        daemon = start_daemon(work, hub, args.max_queue)
        previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            time.sleep(1)
            idle = rss(daemon.proc.pid)
            print(f"daemon {daemon.url} (pid {daemon.proc.pid}); pulling and warming up", file=sys.stderr)
            pull(daemon.url, STORIES)
            pull(daemon.url, EMBED)
            warm_up(daemon.url)
            asyncio.run(run_load(daemon, 4, 3, args.timeout, args.seed + 10_000))  # every path once
            time.sleep(2)
            before = rss(daemon.proc.pid)
            print(f"load: {args.clients} clients for {args.duration:.0f} s", file=sys.stderr)
            stats, peak = asyncio.run(run_load(daemon, args.clients, args.duration, args.timeout, args.seed))
            time.sleep(args.settle)
            after = rss(daemon.proc.pid)
            unload(daemon.url)
            time.sleep(2)
            unloaded = rss(daemon.proc.pid)
            alive = daemon.proc.poll() is None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 1
        finally:
            signal.signal(signal.SIGTERM, previous)
            daemon.stop()
            log = daemon.log_path.read_text(errors="replace")
        report = Report(stats, idle, before, peak, after, unloaded, args.tolerance_mb, args.clients, args.duration)
        print(report.markdown())
        failures = report.failures()
        if not alive:
            failures.append("the daemon died during the test")
        tracebacks = log.count("Traceback")
        if tracebacks:
            failures.append(f"the daemon log has {tracebacks} traceback(s)")
            print("\n--- daemon log (tail) ---\n" + log[-4000:], file=sys.stderr)
        print()
        for f in failures[:40]:
            print(f"- {f}")
        verdict = "PASS" if not failures else f"FAIL ({len(failures)} problem(s))"
        print(f"\nverdict: {verdict}")
        return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
