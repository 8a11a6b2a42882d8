"""The e2e tier: a real daemon process (started here), the real models and real clients."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import STORIES_REPO, model_file
from ..hubstub import HubStub

TEMPLATES = Path(__file__).resolve().parent.parent / "data" / "templates"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def localllm_command() -> list[str]:
    script = Path(sys.executable).parent / "localllm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "localllm_cli.main"]


@dataclass
class Daemon:
    url: str
    host: str
    env: dict[str, str]
    models_dir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the real `localllm` CLI against this daemon."""
        return subprocess.run(
            [*localllm_command(), *args], env=self.env, input=input, capture_output=True, text=True, timeout=timeout
        )

    def runner_pids(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid), "-f", "localllm.runner.main"], capture_output=True, text=True
        )
        return [int(p) for p in out.stdout.split()]


def start_daemon(
    tmp: Path, hub: HubStub, *, bind: str = "127.0.0.1", cwd: str | None = None, **extra_env: str
) -> Daemon:
    """A daemon listening on `bind` (default loopback; requests always go to 127.0.0.1) at a free port, started in
    the directory `cwd` (default: the tests')."""
    port = free_port()
    host = f"127.0.0.1:{port}"
    env = {
        **os.environ,
        "LOCALLLM_HOST": f"{bind}:{port}",
        "LOCALLLM_MODELS": str(tmp / "models"),
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp / "hf"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "XDG_STATE_HOME": str(tmp / "state"),
        **extra_env,
    }
    env.pop("HF_HUB_OFFLINE", None)
    for name in ("LOCALLLM_API_KEYS", "LOCALLLM_API_KEY", "LOCALLLM_KEYS_FILE", "LOCALLLM_ORIGINS"):
        if name not in extra_env:  # the tester's own keys must not lock the test daemons
            env.pop(name, None)
    log_path = tmp / "daemon.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*localllm_command(), "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
        )
    url = f"http://{host}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                return Daemon(url, host, env, tmp / "models", proc, log_path)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"daemon did not start:\n{log_path.read_text()}")


def stop_daemon(daemon: Daemon) -> None:
    if daemon.proc.poll() is None:
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            daemon.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.proc.pid, signal.SIGKILL)
            daemon.proc.wait()


@contextlib.contextmanager
def daemon_with(tmp: Path, hub: HubStub, repos: Iterable[str], **extra_env: str) -> Iterator[Daemon]:
    """A daemon that has pulled `repos` (through its CLI), stopped afterwards."""
    d = start_daemon(tmp, hub, **extra_env)
    try:
        for repo in repos:
            pulled = d.cli("pull", f"hf.co/{repo}")
            assert pulled.returncode == 0, pulled.stderr
        yield d
    finally:
        stop_daemon(d)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    # Every token its own chunk: stories260K writes 40 tokens faster than one default stream interval, and
    # the tests that check streaming count the pieces. Other daemons (test_batching) keep the default.
    d = start_daemon(tmp_path_factory.mktemp("daemon"), hub, LOCALLLM_STREAM_INTERVAL="0")
    try:
        yield d
    finally:
        stop_daemon(d)


def create_with_template(d: Daemon, name: str, template_file: str, **parameters: Any) -> None:
    """A model `name` made of stories260K (pulled from the Hub stand-in) under a real chat template from
    tests/data/templates, with these Modelfile parameters."""
    template = (TEMPLATES / template_file).read_text(encoding="utf-8")
    body: dict[str, Any] = {"model": name, "from": f"hf.co/{STORIES_REPO}", "template": template, "stream": False}
    if parameters:
        body["parameters"] = parameters
    r = httpx.post(d.url + "/api/create", json=body, timeout=120)
    assert r.status_code == 200, r.text


def shapes_repo(arch: str) -> str:
    """The Hub stand-in's repo of the tiny model of architecture `arch` (tests/shapes.py)."""
    return f"testorg/{arch}-tiny-GGUF"


@pytest.fixture(scope="module")
def shapes_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStub]:
    """A Hub stand-in serving a tiny model of each architecture of tests/shapes.py (gemma3, lfm2, mamba)."""
    from ..shapes import SHAPES, write_shape

    tokenizer = model_file("llama-2-tiny-random.gguf")
    folder = tmp_path_factory.mktemp("shapes")
    files = {arch: write_shape(folder / f"{arch}-tiny-F16.gguf", arch, tokenizer) for arch in SHAPES}
    with HubStub({shapes_repo(arch): {path.name: path} for arch, path in files.items()}) as hub:
        yield hub
