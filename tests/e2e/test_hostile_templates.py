"""One hostile request must not take the daemon down (issue 19), end to end on a real daemon.

Each hostile chat template of the issue arrives three ways (the request's `template`, a Modelfile TEMPLATE
through /api/create, a GGUF's own chat template pulled from the Hub stand-in), while another client polls
/api/version every 100 ms. Every poll answers within 1 s, the hostile request gets a 400 naming the bound and
the template's source within the time bound, the daemon and its render workers stay within the memory bound
below, and a normal chat right after works. One daemon (and one Hub stand-in) serves the whole module.
"""

from __future__ import annotations

import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from localllm.domain import limits

from ..conftest import STORY_TEMPLATE, model_file
from ..ggufcopy import copy_with_metadata, with_raw_kv
from ..hubstub import HubStub
from .conftest import Daemon, start_daemon, stop_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.model]

HOSTILE = {
    "nested-writing": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "huge-string": "{{ 'x' * 300000000 }}",
    "nested-empty": "{% for i in range(100000) %}{% for j in range(3000) %}{% endfor %}{% endfor %}",
}
# Hostile only past 4 messages, so it passes the check at create and pull and is met at chat time.
SLEEPER = "{% if messages|length > 4 %}{{ 'x' * 300000000 }}{% endif %}" + STORY_TEMPLATE
# A template the counters do not see (one filter call) that wants 600 MB: the worker's RLIMIT_AS stops it.
GREEDY_FILTER = "{{ 'x'|center(600000000)|length }}"

DEADLINE = limits.TEMPLATE_SECONDS + 2.0  # a hostile request's answer: its bound, plus a worker's restart
DAEMON_GROWTH = 150 << 20  # the daemon's RSS may grow this much over the whole module, no more
NORMAL = {"temperature": 0, "num_predict": 8}
HUGE_ARRAY = 64 << 20  # uint8 elements of a crafted metadata array (the old reader made a Python object of each)


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    stories = model_file("stories260K.gguf")
    out = tmp_path_factory.mktemp("hostile-gguf")
    files = {
        name: copy_with_metadata(stories, out / f"{name}.gguf", {"tokenizer.chat_template": template})
        for name, template in {**HOSTILE, "sleeper": SLEEPER, "chat": STORY_TEMPLATE}.items()
    }
    array = struct.pack("<IIQ", 9, 0, HUGE_ARRAY)  # ARRAY of UINT8, then the elements (a sparse hole)
    files["huge-array"] = with_raw_kv(stories, out / "huge-array.gguf", "junk.bytes", array, hole=HUGE_ARRAY)
    strings = struct.pack("<IIQ", 9, 8, limits.GGUF_MAX_ARRAY + 1)  # ARRAY of STRING: too many to walk
    files["many-strings"] = with_raw_kv(stories, out / "many-strings.gguf", "junk.strings", strings)
    return files


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ggufs: dict[str, Path]) -> Iterator[Daemon]:
    repos = {f"hostile/{name}-GGUF": {f"{name}.gguf": path} for name, path in ggufs.items()}
    with HubStub(repos) as hub:
        d = start_daemon(tmp_path_factory.mktemp("hostile"), hub)
        try:
            assert d.cli("pull", "hf.co/hostile/chat-GGUF").returncode == 0
            yield d
        finally:
            stop_daemon(d)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10
    return 0


def workers(daemon: Daemon) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(daemon.proc.pid), "-f", "localllm.chat.sandbox"], capture_output=True, text=True
    )
    return [int(p) for p in out.stdout.split()]


class Poller:
    """Another client: GET /api/version every 100 ms, each answer's latency kept; also the peak memory seen."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.latencies: list[float] = []
        self.peak_daemon = 0
        self.peak_worker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                start = time.monotonic()
                assert client.get(self.daemon.url + "/api/version").status_code == 200
                self.latencies.append(time.monotonic() - start)
                self.peak_daemon = max(self.peak_daemon, rss(self.daemon.proc.pid))
                for pid in workers(self.daemon):
                    try:
                        self.peak_worker = max(self.peak_worker, rss(pid))
                    except OSError:  # a worker just killed and replaced
                        pass
                self._stop.wait(0.1)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)
        assert self.latencies, "the poller never got an answer"
        assert max(self.latencies) < 1.0, f"/api/version took {max(self.latencies):.2f} s"
        assert self.peak_worker < limits.TEMPLATE_MEMORY


@pytest.fixture(scope="module")
def baseline(server: Daemon) -> int:
    return rss(server.proc.pid)


def refused(response: httpx.Response, started: float, *words: str) -> str:
    elapsed = time.monotonic() - started
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert elapsed < DEADLINE, f"{elapsed:.1f} s: {message}"
    for word in words:
        assert word in message, message
    return str(message)


def normal_chat_works(daemon: Daemon, model: str = "hf.co/hostile/chat-GGUF") -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "Once upon a time"}], "stream": False}
    r = httpx.post(daemon.url + "/api/chat", json={**body, "options": NORMAL}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["message"]["content"]


@pytest.mark.parametrize("name", list(HOSTILE))
def test_request_template(server: Daemon, baseline: int, name: str) -> None:
    with Poller(server) as poller:
        body = {"model": "hf.co/hostile/chat-GGUF", "prompt": "hi", "template": HOSTILE[name], "stream": False}
        started = time.monotonic()
        r = httpx.post(server.url + "/api/generate", json=body, timeout=60)
        refused(r, started, "the request's template", "exceeded a bound")
        assert r.json().get("error")
        normal_chat_works(server)
    assert poller.peak_daemon < baseline + DAEMON_GROWTH


def test_request_template_past_the_memory_bound(server: Daemon, baseline: int) -> None:
    with Poller(server) as poller:
        body = {"model": "hf.co/hostile/chat-GGUF", "prompt": "hi", "template": GREEDY_FILTER, "stream": False}
        started = time.monotonic()
        r = httpx.post(server.url + "/api/generate", json=body, timeout=60)
        refused(r, started, "the request's template", f"more than {limits.size_text(limits.TEMPLATE_MEMORY)}")
        normal_chat_works(server)
    assert poller.peak_daemon < baseline + DAEMON_GROWTH


@pytest.mark.parametrize("name", list(HOSTILE))
def test_modelfile_template_is_refused_at_create(server: Daemon, baseline: int, name: str) -> None:
    with Poller(server) as poller:
        body = {"model": f"bad-{name}", "from": "hf.co/hostile/chat-GGUF", "template": HOSTILE[name], "stream": False}
        started = time.monotonic()
        r = httpx.post(server.url + "/api/create", json=body, timeout=60)
        refused(r, started, "the template", "exceeded a bound")
        assert httpx.post(server.url + "/api/show", json={"model": f"bad-{name}"}).status_code == 404
        normal_chat_works(server)
    assert poller.peak_daemon < baseline + DAEMON_GROWTH


def test_modelfile_template_hostile_at_chat_time(server: Daemon, baseline: int) -> None:
    """A TEMPLATE that passes create's check and turns hostile on a longer chat: a 400 naming the Modelfile."""
    modelfile = server.models_dir.parent / "Modelfile"
    modelfile.write_text(f'FROM hf.co/hostile/chat-GGUF\nTEMPLATE """{SLEEPER}"""\n')
    created = server.cli("create", "sleeper", "-f", str(modelfile))
    assert created.returncode == 0, created.stderr
    with Poller(server) as poller:
        turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": "hi"} for i in range(5)]
        started = time.monotonic()
        r = httpx.post(server.url + "/v1/chat/completions", json={"model": "sleeper", "messages": turns}, timeout=60)
        message = refused(r, started, "the Modelfile TEMPLATE of", "exceeded a bound")
        assert r.json()["error"]["type"] == "invalid_request_error", message
        normal_chat_works(server, "sleeper")
    assert poller.peak_daemon < baseline + DAEMON_GROWTH


@pytest.mark.parametrize("name", list(HOSTILE))
def test_gguf_template_is_refused_at_pull(server: Daemon, baseline: int, name: str) -> None:
    with Poller(server) as poller:
        started = time.monotonic()
        r = httpx.post(server.url + "/api/pull", json={"model": f"hf.co/hostile/{name}-GGUF"}, timeout=120)
        last = r.text.strip().splitlines()[-1]
        assert "the chat template in the GGUF" in last and "exceeded a bound" in last, last
        assert time.monotonic() - started < 30
        listed = [m["name"] for m in httpx.get(server.url + "/api/tags").json()["models"]]
        assert not any(name in m for m in listed), listed
        normal_chat_works(server)
    assert poller.peak_daemon < baseline + DAEMON_GROWTH


def test_gguf_template_hostile_at_chat_time(server: Daemon, baseline: int) -> None:
    assert server.cli("pull", "hf.co/hostile/sleeper-GGUF").returncode == 0
    with Poller(server) as poller:
        turns = [{"role": "user", "content": "hi"}] * 5
        body = {"model": "hf.co/hostile/sleeper-GGUF", "messages": turns, "stream": False}
        started = time.monotonic()
        r = httpx.post(server.url + "/api/chat", json=body, timeout=60)
        refused(r, started, "the chat template in the GGUF of", "exceeded a bound")
        normal_chat_works(server)
    assert poller.peak_daemon < baseline + DAEMON_GROWTH


def test_crafted_metadata_arrays(server: Daemon, baseline: int) -> None:
    """64 Mi metadata bytes are skipped, not loaded: pulled, listed and shown without the daemon growing; an array
    of more strings than the reader walks is refused at pull, naming it."""
    with Poller(server) as poller:
        assert server.cli("pull", "hf.co/hostile/huge-array-GGUF").returncode == 0
        names = [m["name"] for m in httpx.get(server.url + "/api/tags").json()["models"]]
        assert any("huge-array" in n for n in names), names
        shown = httpx.post(server.url + "/api/show", json={"model": "hf.co/hostile/huge-array-GGUF"}, timeout=30)
        assert shown.status_code == 200 and shown.json()["model_info"]["junk.bytes"] is None
        verbose = {"model": "hf.co/hostile/huge-array-GGUF", "verbose": True}
        assert httpx.post(server.url + "/api/show", json=verbose, timeout=30).status_code == 200
        normal_chat_works(server, "hf.co/hostile/huge-array-GGUF")
        pulled = server.cli("pull", "hf.co/hostile/many-strings-GGUF")
        assert pulled.returncode != 0 and "junk.strings" in pulled.stderr and "more than" in pulled.stderr
    assert poller.peak_daemon < baseline + DAEMON_GROWTH


def test_prompt_that_cannot_fit_is_refused_or_cut_before_the_runner(server: Daemon) -> None:
    text = "word " * (limits.BYTES_PER_TOKEN * 512 // 5 + 10)
    body = {"model": "hf.co/hostile/chat-GGUF", "prompt": text, "raw": True, "stream": False, "truncate": False}
    r = httpx.post(server.url + "/api/generate", json={**body, "options": {"num_ctx": 512}}, timeout=60)
    assert r.status_code == 400 and "options.num_ctx" in r.json()["error"], r.text
    # With truncate (Ollama's default), a conversation too long for the context loses its oldest turns by
    # bytes before it is tokenized, then by tokens; the answer says how much was cut.
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"{i} " + "word " * 200} for i in range(41)]
    chat = {"model": "hf.co/hostile/chat-GGUF", "messages": turns, "stream": False}
    r = httpx.post(server.url + "/api/chat", json={**chat, "options": {"num_ctx": 256, **NORMAL}}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["truncated"] > 0


def test_amplifier_bounds_are_refused_in_each_dialect(server: Daemon) -> None:
    """A few of docs/limits.md's bounds, each refused in its dialect's error shape, naming the field."""
    model = "hf.co/hostile/chat-GGUF"
    hi = [{"role": "user", "content": "hi"}]
    bias = {str(i): 1 for i in range(limits.MAX_LOGIT_BIAS + 1)}
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": model, "messages": hi, "logit_bias": bias})
    assert r.status_code == 400 and r.json()["error"]["param"] == "logit_bias", r.text
    deep: dict[str, object] = {"type": "string"}
    for _ in range(limits.SCHEMA_MAX_DEPTH):
        deep = {"type": "array", "items": deep}
    r = httpx.post(server.url + "/api/chat", json={"model": model, "messages": hi, "format": deep, "stream": False})
    assert r.status_code == 400 and "nests deeper" in r.json()["error"], r.text
    regex = {"type": "regex", "value": "a" * (limits.REGEX_MAX_BYTES + 1)}
    body = {"model": model, "inputs": "hi", "parameters": {"grammar": regex}}
    r = httpx.post(server.url + "/generate", json=body)
    assert r.status_code == 422 and "parameters.grammar.value" in r.json()["error"], r.text
    prompts = ["a"] * (limits.MAX_CHOICES // 4 + 1)
    r = httpx.post(server.url + "/v1/completions", json={"model": model, "prompt": prompts, "n": 4})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text
