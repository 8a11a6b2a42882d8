"""Replicas behind a real load balancer (issue 17, part 3): two daemons serving one model store behind Debian's
nginx, then behind Debian's HAProxy, each started here on loopback ports with its shipped config
(deploy/nginx/localllm.conf, deploy/haproxy/localllm.cfg, through deploy/standalone.py, which replaces only the
daemons' `server` lines and the listening line). Requests are spread over both; a key or a session keeps to
one daemon, and a conversation finds its prompt cache there; a daemon that stops loses no request that had not
started answering: the balancer retries those on the other one.

Each daemon names itself in `X-Localllm-Replica` (LOCALLLM_REPLICA). Without the balancer the tests skip,
except in CI (`CI` set, as .ci/run does), where they fail: .ci/run installs both."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from ..conftest import CHAT_REPO, ROOT, TINY_REPO
from ..hubstub import HubStub
from .conftest import Daemon, free_port, start_daemon, stop_daemon

DEPLOY = ROOT / "deploy"
STANDALONE = DEPLOY / "standalone.py"
SHIPPED = {"nginx": DEPLOY / "nginx" / "localllm.conf", "haproxy": DEPLOY / "haproxy" / "localllm.cfg"}
KEYS = [f"llk-replica-test-{i:02d}" for i in range(24)]  # enough that two replicas both get some
CHAT = f"hf.co/{CHAT_REPO}"
TINY = f"hf.co/{TINY_REPO}"
REPLICA = "x-localllm-replica"


def balancer_binary(name: str) -> str:
    for candidate in (os.environ.get(f"LOCALLLM_TEST_{name.upper()}"), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    reason = (
        f"no {name} (/usr/sbin/{name}): install Debian's (apt-get install {name}; .ci/run does) for the replica tests"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; in CI it must be there", pytrace=False)
    pytest.skip(reason)


@dataclass
class Proxy:
    balancer: str
    url: str
    prefix: Path
    proc: subprocess.Popen[bytes]

    def access_log(self) -> list[str]:
        return (self.prefix / "access.log").read_text().splitlines()


@pytest.fixture(scope="module", params=sorted(SHIPPED))
def balancer(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, hub: HubStub, balancer: str) -> Iterator[dict[str, Daemon]]:
    """Daemons `a` and `b` on one store (new ones for each balancer): `a` pulls into it, `b` serves what is there."""
    store = tmp_path_factory.mktemp("store") / "models"
    env = {
        "LOCALLLM_MODELS": str(store),
        "LOCALLLM_API_KEYS": ",".join(KEYS),
        "LOCALLLM_API_KEY": KEYS[0],  # the CLI's
        "LOCALLLM_NUM_PARALLEL": "1",  # one slot: a second request waits in the daemon's queue
        "LOCALLLM_SHUTDOWN_GRACE": "2s",
        "LOCALLLM_METRICS": "1",
    }
    daemons: dict[str, Daemon] = {}
    try:
        for name in ("a", "b"):
            daemons[name] = start_daemon(tmp_path_factory.mktemp(name), hub, LOCALLLM_REPLICA=name, **env)
            if name == "a":
                for repo in (CHAT_REPO, TINY_REPO):
                    pulled = daemons[name].cli("pull", f"hf.co/{repo}")
                    assert pulled.returncode == 0, pulled.stderr
        yield daemons
    finally:
        for d in daemons.values():
            stop_daemon(d)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, balancer: str, replicas: dict[str, Daemon]) -> Iterator[Proxy]:
    binary = balancer_binary(balancer)
    prefix = tmp_path_factory.mktemp(balancer)
    port = free_port()
    args = [sys.executable, str(STANDALONE), balancer, "--binary", binary, "--listen", f"127.0.0.1:{port}"]
    args += ["--prefix", str(prefix)]
    for d in replicas.values():
        args += ["--upstream", d.host]
    check = subprocess.run([*args, "--check"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, [p.read_text() for p in prefix.glob("*.log")]
            try:
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, f"{balancer} did not answer"
                time.sleep(0.1)
        yield Proxy(balancer, url, prefix, proc)
    finally:
        proc.send_signal(signal.SIGTERM)  # a fast shutdown, for both
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def replica_of(proxy: Proxy, headers: dict[str, str]) -> str:
    answer = httpx.get(proxy.url + "/api/tags", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.headers[REPLICA]


def session_on(proxy: Proxy, replica: str, prefix: str) -> str:
    """A session id that the balancer sends to `replica`."""
    for i in range(200):
        session = f"{prefix}-{i}"
        if replica_of(proxy, {"Authorization": f"Bearer {KEYS[0]}", "X-Session-Id": session}) == replica:
            return session
    raise AssertionError(f"no session id went to {replica}")


def test_the_balancer_runs_the_shipped_rules_and_the_health_route_answers(proxy: Proxy) -> None:
    shipped = SHIPPED[proxy.balancer].read_text().splitlines()
    running = (proxy.prefix / "localllm.conf").read_text().splitlines()
    changed = [line for line in running if line not in shipped] + [line for line in shipped if line not in running]
    assert changed and all(re.match(r"\s*(server |listen |bind )", line) for line in changed), changed
    health = httpx.get(proxy.url + "/health", timeout=10)  # open, as a balancer's check needs
    assert health.status_code == 200 and health.headers[REPLICA] in {"a", "b"}


def test_requests_are_spread_and_a_key_keeps_to_one_daemon(proxy: Proxy) -> None:
    by_key = {}
    for key in KEYS:
        bearer = {replica_of(proxy, {"Authorization": f"Bearer {key}"}) for _ in range(2)}
        x_api_key = replica_of(proxy, {"x-api-key": key})
        assert len(bearer) == 1 and bearer == {x_api_key}, f"{key}: {bearer} and {x_api_key}"
        by_key[key] = x_api_key
    assert set(by_key.values()) == {"a", "b"}, by_key
    # An explicit session beats the key: one key's sessions are spread too.
    sessions = {replica_of(proxy, {"Authorization": f"Bearer {KEYS[0]}", "X-Session-Id": f"s{i}"}) for i in range(24)}
    assert sessions == {"a", "b"}
    # Neither: the client's address (all of ours are 127.0.0.1, so one daemon), refused by it for want of a key.
    anonymous = {httpx.get(proxy.url + "/api/tags", timeout=10) for _ in range(4)}
    assert {r.status_code for r in anonymous} == {401} and len({r.headers[REPLICA] for r in anonymous}) == 1


def test_a_conversation_keeps_to_its_daemon_and_finds_its_prompt_cache_there(proxy: Proxy) -> None:
    session = "story-1"
    client = openai.OpenAI(
        base_url=proxy.url + "/v1", api_key=KEYS[1], default_headers={"X-Session-Id": session}, max_retries=0
    )
    history: list[dict[str, str]] = [
        {"role": "user", "content": "Once upon a time, " + "there was a little cat who liked to play. " * 12}
    ]
    options = {"model": CHAT, "temperature": 0, "max_tokens": 8}
    first = client.chat.completions.with_raw_response.create(messages=history, **options)  # type: ignore[call-overload]
    one = first.parse()
    history += [{"role": "assistant", "content": one.choices[0].message.content}, {"role": "user", "content": " End."}]
    second = client.chat.completions.with_raw_response.create(messages=history, **options)  # type: ignore[call-overload]
    two = second.parse()
    home = first.headers[REPLICA]
    assert second.headers[REPLICA] == home
    assert one.usage.prompt_tokens > 100
    cached = two.usage.prompt_tokens_details.cached_tokens
    assert cached > one.usage.prompt_tokens - 10, (cached, one.usage.prompt_tokens)  # the first turn, all but its end
    # The same turn on the other daemon: its cache holds nothing of this conversation.
    elsewhere = session_on(proxy, "b" if home == "a" else "a", "elsewhere")
    other = client.chat.completions.with_raw_response.create(
        messages=history,
        extra_headers={"X-Session-Id": elsewhere},
        **options,  # type: ignore[call-overload]
    )
    assert other.headers[REPLICA] != home
    assert other.parse().usage.prompt_tokens_details.cached_tokens == 0


def waiting(daemon: Daemon) -> int:
    scrape = httpx.get(daemon.url + "/metrics", headers={"Authorization": f"Bearer {KEYS[0]}"}, timeout=10).text
    return sum(int(float(v)) for v in re.findall(r"^localllm_num_requests_waiting\{[^}]*\} (\S+)$", scrape, re.M))


def test_a_stopping_daemon_loses_no_request_that_had_not_started_answering(
    proxy: Proxy, replicas: dict[str, Daemon]
) -> None:
    session = session_on(proxy, "a", "drain")
    headers = {"Authorization": f"Bearer {KEYS[2]}", "X-Session-Id": session}
    options = {"temperature": 0, "num_ctx": 65536}
    long = {"model": TINY, "prompt": "Hello", "options": {**options, "num_predict": 60000}}
    short = {"model": TINY, "prompt": "Hi", "stream": False, "options": {**options, "num_predict": 4}}

    def ask() -> httpx.Response:
        return httpx.post(proxy.url + "/api/generate", json=short, headers=headers, timeout=120)

    started = threading.Event()
    replica: list[str] = []

    def follow() -> list[dict[str, object]]:
        """The long stream, read to its end as it comes (a reader that lags would hold the daemon's writes)."""
        with httpx.stream("POST", proxy.url + "/api/generate", json=long, headers=headers, timeout=120) as stream:
            replica.append(stream.headers[REPLICA])
            lines = (json.loads(line) for line in stream.iter_lines() if line)
            first = next(lines)
            started.set()
            return [first, *lines]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        streamed = pool.submit(follow)
        assert started.wait(60), "the long stream did not begin"  # a's only slot is busy with it now
        queued = [pool.submit(ask) for _ in range(3)]
        deadline = time.monotonic() + 60
        while waiting(replicas["a"]) < 3:  # they wait in a's queue: not one has begun answering
            assert time.monotonic() < deadline, "the requests did not reach a's queue"
            time.sleep(0.2)
        os.kill(replicas["a"].proc.pid, signal.SIGTERM)
        answers = [f.result(timeout=120) for f in queued]
        after = [ask() for _ in range(2)]  # a no longer listens
        events = streamed.result(timeout=120)
    for answer in [*answers, *after]:
        assert answer.status_code == 200, answer.text
        assert answer.headers[REPLICA] == "b" and answer.json()["done"] is True
    # The stream that had begun stayed on a, to its end: cut short by the stop, never started again elsewhere.
    assert replica == ["a"] and events[0]["done"] is False
    assert "shutting down" in str(events[-1].get("error")), events[-1]
    assert replicas["a"].proc.wait(30) in (0, -signal.SIGTERM)
    log = proxy.access_log()
    if proxy.balancer == "nginx":  # first a's 503, then b's answer
        a_port, b_port = (replicas[n].host.rsplit(":", 1)[1] for n in ("a", "b"))
        retried = [line for line in log if re.search(rf":{a_port}, \S+:{b_port} upstream_status=503, 200", line)]
        assert len(retried) == 3, log[-8:]  # the three waiting in a's queue
    else:  # b's answer after one retry (+1); those sent after the stop may have been retried too
        retried = [
            line for line in log if re.search(r'localllm/replica2 \S+ 200 \d+ .*/\+1 \S+ "POST /api/generate', line)
        ]
        assert len(retried) >= 3, log[-8:]
        deadline = time.monotonic() + 15  # the active health check takes a out
        while not any("Server localllm/replica1 is DOWN" in line for line in proxy.access_log()):
            assert time.monotonic() < deadline, proxy.access_log()[-8:]
            time.sleep(0.5)
