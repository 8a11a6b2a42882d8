"""Idle and slow connections through the real daemon (issue 26, finding 4).

1,100 connections that sent nothing, under the 1,024 open files a systemd unit gets by default, made every other
client fail for as long as they stayed open: uvicorn had no bound on the time to a request's headers, and a
slowloris dripping header bytes was never closed either. Now the daemon raises its open-files limit at start,
closes a connection whose headers are not in within `HEADER_SECONDS` (or whose body comes slower than
`BODY_MIN_RATE` after `BODY_SECONDS`), and past LOCALLLM_MAX_CONNECTIONS answers
503 and says so in its log, once.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from localllm.domain.limits import BODY_SECONDS, HEADER_SECONDS

from ..hubstub import HubStub
from .conftest import Daemon, start_daemon, stop_daemon

CAP = 1300


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10
    raise LookupError("VmRSS")


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    # Started with the soft limit a systemd unit gets by default (1,024 files): the daemon raises it itself.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard limit of open files here is {hard}: too low to open a thousand connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        daemon = start_daemon(tmp_path_factory.mktemp("connections"), hub, LOCALLLM_MAX_CONNECTIONS=str(CAP))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield daemon
    finally:
        stop_daemon(daemon)


def address(d: Daemon) -> tuple[str, int]:
    host, port = d.host.rsplit(":", 1)
    return host, int(port)


def closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


HEADERS = b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n"  # and then a header, a byte at a time
BODY = b"POST /api/tokenize HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n"  # then the body


@contextlib.contextmanager
def dripping(d: Daemon, n: int, start: bytes) -> Iterator[dict[int, float]]:
    """`n` slowloris connections: `start`, then one byte every 0.2 s; when each was closed."""
    socks = [socket.create_connection(address(d)) for _ in range(n)]
    for sock in socks:
        sock.sendall(start)
    closed: dict[int, float] = {}
    done = threading.Event()

    def drip() -> None:
        while not done.is_set() and len(closed) < n:
            for i, sock in enumerate(socks):
                if i in closed:
                    continue
                try:
                    sock.sendall(b"X")
                except OSError:
                    closed[i] = time.monotonic()
            done.wait(0.2)

    thread = threading.Thread(target=drip)
    thread.start()
    try:
        yield closed
    finally:
        done.set()
        thread.join()
        for sock in socks:
            sock.close()


def version_latencies(d: Daemon, seconds: float) -> list[float]:
    """`GET /api/version` every 0.1 s for `seconds`, each on a new connection: how long each took."""
    seen = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        assert httpx.get(d.url + "/api/version", timeout=10).status_code == 200
        seen.append(time.monotonic() - started)
        time.sleep(0.1)
    return seen


def test_idle_and_slowloris_connections_are_closed_and_others_still_answered(d: Daemon) -> None:
    assert "open files: limit raised from 1024 to" in d.log()
    quiet = version_latencies(d, 1)
    before = rss(d.proc.pid)
    started = time.monotonic()
    idle = [socket.create_connection(address(d)) for _ in range(1100)]  # more than the 1,024 files it started with
    try:
        with dripping(d, 50, HEADERS) as headers, dripping(d, 50, BODY) as bodies:
            latencies = version_latencies(d, min(HEADER_SECONDS, BODY_SECONDS) - 2)
            during = rss(d.proc.pid)
            assert not headers and not bodies, "a slowloris was closed before its time was up"
            assert max(latencies) < 1.0, latencies
            end = started + max(HEADER_SECONDS, BODY_SECONDS) + 5
            while len(headers) + len(bodies) < 100 and time.monotonic() < end:
                time.sleep(0.1)
            assert len(headers) == 50, "slowloris connections dripping header bytes were left open"
            assert len(bodies) == 50, "slowloris connections dripping a body were left open"
            last = max(*headers.values(), *bodies.values()) - started
        assert all(closed_by_peer(sock) for sock in idle), "idle connections were left open"
        print(
            f"1,100 idle + 100 slowloris: /api/version at most {max(latencies) * 1000:.0f} ms (median "
            f"{sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms; before them at most {max(quiet) * 1000:.0f} ms, "
            f"median {sorted(quiet)[len(quiet) // 2] * 1000:.0f} ms); daemon RSS {before >> 20} MiB before, "
            f"{during >> 20} MiB during; all closed {last:.1f}s after they opened"
        )
    finally:
        for sock in idle:
            sock.close()
    assert httpx.get(d.url + "/api/version", timeout=5).status_code == 200


def test_past_the_cap_requests_get_503_and_the_log_says_so_once(d: Daemon) -> None:
    held = [socket.create_connection(address(d)) for _ in range(CAP)]
    try:
        time.sleep(0.5)  # (the daemon has accepted them all)
        for _ in range(3):
            refused = httpx.get(d.url + "/api/version", timeout=5)
            assert refused.status_code == 503 and refused.headers["connection"] == "close"
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while "back under LOCALLLM_MAX_CONNECTIONS" not in d.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(d.url + "/api/version", timeout=5).status_code == 200
    log = d.log()
    assert log.count(f"past LOCALLLM_MAX_CONNECTIONS ({CAP})") == 1, log[-2000:]
    assert "3 requests were refused meanwhile" in log
