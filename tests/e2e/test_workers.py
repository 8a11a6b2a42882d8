"""llama.cpp's RPC backend (issue 17, parts 1 and 2), on loopback only: two `localllm worker`s, a daemon whose
LOCALLLM_RPC_SERVERS names them, and a model split across them with no layer on the daemon's machine."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import STORIES_REPO, TINY_REPO
from .conftest import Daemon, daemon_with, free_port, localllm_command

pytestmark = [pytest.mark.e2e, pytest.mark.model]

STORIES = f"hf.co/{STORIES_REPO}"
TINY = f"hf.co/{TINY_REPO}"
GREEDY = {"temperature": 0, "num_predict": 60}


def test_the_installed_llama_cpp_has_its_rpc_backend() -> None:
    """install.sh builds llama.cpp with -DGGML_RPC=on; CI proves it on a clean machine."""
    code = "import llama_cpp; print(llama_cpp.llama_supports_rpc())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stdout + out.stderr


class Worker:
    def __init__(self, tmp: Path, name: str, *args: str) -> None:
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.log_path = tmp / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [*localllm_command(), "worker", "--port", str(self.port), "--threads", "1", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_listening(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the worker exited with {self.proc.returncode}:\n{self.log()}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"the worker did not listen:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started = [Worker(tmp_path, "worker1"), Worker(tmp_path, "worker2")]
    try:
        for worker in started:
            worker.wait_listening()
        yield started
    finally:
        for worker in started:
            worker.stop()


def generate(daemon: Daemon, model: str, **options: Any) -> dict[str, Any]:
    body = {"model": model, "prompt": "Once upon a time", "stream": False, "options": {**GREEDY, **options}}
    r = httpx.post(daemon.url + "/api/generate", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return dict(r.json())


def loaded(daemon: Daemon) -> dict[str, Any]:
    models = httpx.get(daemon.url + "/api/ps", timeout=10).json()["models"]
    assert len(models) == 1, models
    return dict(models[0])


def test_worker_says_what_it_serves_and_refuses_an_unknown_device(tmp_path: Path) -> None:
    worker = Worker(tmp_path, "worker")
    try:
        worker.wait_listening()
        assert f"LOCALLLM_RPC_SERVERS={worker.endpoint}" in worker.log()
        assert "WARNING" not in worker.log()  # loopback: no warning
    finally:
        worker.stop()
    bad = subprocess.run(
        [*localllm_command(), "worker", "--device", "NOPE0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "unknown device 'NOPE0'" in bad.stderr and "CPU" in bad.stderr


def test_split_across_two_workers_writes_as_one_machine(tmp_path: Path, hub: Any, workers: list[Worker]) -> None:
    (tmp_path / "alone").mkdir()
    (tmp_path / "split").mkdir()
    with daemon_with(tmp_path / "alone", hub, [STORIES_REPO]) as alone:
        expected = generate(alone, STORIES)["response"]
        assert "devices" not in loaded(alone)
    servers = ",".join(w.endpoint for w in workers)
    with daemon_with(tmp_path / "split", hub, [STORIES_REPO], LOCALLLM_RPC_SERVERS=servers) as split:
        assert generate(split, STORIES)["response"] == expected
        devices = loaded(split)["devices"]
        assert [d["where"] for d in devices if d["layers"]] == [w.endpoint for w in workers], devices
        assert all(d["layers"] > 0 and d["size"] > 0 and d["free"] > 0 for d in devices[:2]), devices
        assert sum(d["layers"] for d in devices) == 6  # stories260K: 5 layers and the output layer
        assert not [d for d in devices if d["where"] == "local" and d["layers"]], "no layer on this machine"
        ps = split.cli("ps")
        assert ps.returncode == 0, ps.stderr
        assert f"{STORIES}:latest is split across:" in ps.stdout, ps.stdout
        assert "100% RPC" in ps.stdout, ps.stdout
        for worker in workers:
            assert worker.endpoint in ps.stdout
        # a model that names none of the workers loads on this machine alone
        assert generate(split, STORIES, rpc_servers="none")["response"] == expected
        assert "devices" not in loaded(split)
        # and one may name only the daemon's own workers
        r = httpx.post(
            split.url + "/api/generate",
            json={"model": STORIES, "prompt": "x", "options": {"rpc_servers": "10.1.2.3:50052"}},
            timeout=30,
        )
        assert r.status_code == 400 and "options.rpc_servers" in r.json()["error"], r.text


def test_a_worker_killed_mid_stream_fails_that_stream_only(tmp_path: Path, hub: Any, workers: list[Worker]) -> None:
    servers = ",".join(w.endpoint for w in workers)
    with daemon_with(tmp_path, hub, [TINY_REPO], LOCALLLM_RPC_SERVERS=servers, LOCALLLM_STREAM_INTERVAL="0") as d:
        body = {"model": TINY, "prompt": "Hello", "options": {"num_predict": 100000, "seed": 1}}
        with httpx.stream("POST", d.url + "/api/generate", json=body, timeout=120) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            first = json.loads(next(lines))
            assert first["done"] is False
            workers[1].stop()
            rest = [json.loads(line) for line in lines if line.strip()]
        assert "error" in rest[-1], rest[-3:]
        assert workers[1].endpoint in rest[-1]["error"] and "stopped answering" in rest[-1]["error"]
        assert httpx.get(d.url + "/", timeout=10).status_code == 200
        # the next request loads the model again on the worker that is left (it fits there)
        again = httpx.post(d.url + "/api/generate", json={**body, "stream": False, "options": {"num_predict": 5}})
        assert again.status_code == 200, again.text
        assert again.json()["eval_count"] == 5
        devices = loaded(d)["devices"]
        assert [x["where"] for x in devices if x["layers"]] == [workers[0].endpoint], devices
        assert f"loads without the RPC workers {workers[1].endpoint}" in d.log()
