"""Shared fixtures: the real test models, a Hub stand-in serving them, and a real daemon process."""

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

import httpx
import pytest

from .ggufcopy import copy_with_metadata
from .hubstub import HubStub
from .testmodels import models_dir

ROOT = Path(__file__).resolve().parent.parent
MODELS = models_dir()
MISSING_MODEL = "test model "  # how the skip reason of a test whose model is missing begins

# A template that passes the user's text through, so the story model continues it (and we can tell
# that the template, not the plain fallback, shaped the prompt).
STORY_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}{{ m.content }}\n"
    "{% else %}{{ m.content }}{% endif %}{% endfor %}"
)

# A JSON schema small enough that a grammar-constrained answer of stories260K always completes it.
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}

# Repositories the Hub stand-in serves: repo id -> {file name on the Hub: file on disk}.
STORIES_REPO = "testorg/stories260K-GGUF"
CHAT_REPO = "testorg/stories260K-chat-GGUF"
TINY_REPO = "testorg/tiny-random-GGUF"
EMBED_REPO = "testorg/all-MiniLM-L6-v2-GGUF"  # a real sentence-embedding model (BERT, 384-dim, mean pooling)
EMBED_FILE = "all-minilm-l6-v2-f16.gguf"
FIM_REPO = "testorg/stories260K-fim-GGUF"


def model_file(name: str) -> Path:
    path = MODELS / name
    if not path.is_file():
        pytest.skip(
            f"{MISSING_MODEL}{name} not found in {MODELS} (fetch them with scripts/test-models, or set "
            "LOCALLLM_TEST_MODELS to the models folder)"
        )
    return path


def pytest_sessionfinish(session: pytest.Session) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    session.config.stash[_MISSING] = sum(1 for report in skipped if MISSING_MODEL in str(report.longrepr))


def pytest_unconfigure(config: pytest.Config) -> None:
    """After pytest's own summary, one loud line when tests skipped for want of the test models."""
    missing = config.stash.get(_MISSING, 0)
    if missing:
        line = (
            f"!!! {missing} tests were SKIPPED because the test models are missing from {MODELS}: "
            "fetch them with scripts/test-models (or set LOCALLLM_TEST_MODELS to a folder holding them) !!!"
        )
        sys.stdout.write(f"\n\033[1;31m{line}\033[0m\n" if sys.stdout.isatty() else f"\n{line}\n")
        sys.stdout.flush()


_MISSING = pytest.StashKey[int]()


@pytest.fixture(scope="session")
def stories_gguf() -> Path:
    return model_file("stories260K.gguf")


@pytest.fixture(scope="session")
def stories_chat_gguf(tmp_path_factory: pytest.TempPathFactory, stories_gguf: Path) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "stories260K-chat.gguf"
    return copy_with_metadata(stories_gguf, out, {"tokenizer.chat_template": STORY_TEMPLATE})


@pytest.fixture(scope="session")
def stories_fim_gguf(tmp_path_factory: pytest.TempPathFactory, stories_gguf: Path) -> Path:
    """stories260K told that <s>, </s> and <unk> are its fill-in-the-middle tokens (prefix, suffix, middle)."""
    out = tmp_path_factory.mktemp("gguf") / "stories260K-fim.gguf"
    fim: dict[str, str | int] = {
        "tokenizer.ggml.fim_pre_token_id": 1,
        "tokenizer.ggml.fim_suf_token_id": 2,
        "tokenizer.ggml.fim_mid_token_id": 0,
    }
    return copy_with_metadata(stories_gguf, out, fim)


@pytest.fixture(scope="session")
def hub(stories_gguf: Path, stories_chat_gguf: Path, stories_fim_gguf: Path) -> Iterator[HubStub]:
    repos = {
        STORIES_REPO: {"stories260K.gguf": stories_gguf},
        CHAT_REPO: {"stories260K-chat-F32.gguf": stories_chat_gguf},
        FIM_REPO: {"stories260K-fim-F32.gguf": stories_fim_gguf},
    }
    tiny = MODELS / "llama-2-tiny-random.gguf"
    if tiny.is_file():
        repos[TINY_REPO] = {"llama-2-tiny-random.F16.gguf": tiny}
    minilm = MODELS / EMBED_FILE
    if minilm.is_file():
        repos[EMBED_REPO] = {"all-MiniLM-L6-v2-F16.gguf": minilm}
    with HubStub(repos) as stub:
        yield stub


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


def start_daemon(tmp: Path, hub: HubStub, *, bind: str = "127.0.0.1", **extra_env: str) -> Daemon:
    """A daemon listening on `bind` (default loopback; requests always go to 127.0.0.1) at a free port."""
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
            [*localllm_command(), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
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
