"""The servers bench.py compares (localllm, llama-server, llama_cpp.server): how each is started on a free
127.0.0.1 port and stopped with everything below it, the streaming completion request every figure is made of,
and what a server's measurements come to (`ServerResult`)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
HOST = "127.0.0.1"
LOCALLLM_MODEL_NAME = "bench"
SERVER_NAMES = ("localllm", "llama-server", "python")


# -- processes -----------------------------------------------------------------------------------------

_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, grandchildren...), found through /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def stop_process(proc: subprocess.Popen[bytes], *, grace: float = 15.0) -> None:
    """SIGTERM the server's process group, then SIGKILL what is left, including detached descendants."""
    below = descendants(proc.pid)  # localllm's runners run in their own sessions: remember them by pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    deadline = time.monotonic() + 5
    for pid in below:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    _LIVE.pop(proc.pid, None)


@atexit.register
def _cleanup() -> None:
    for proc in list(_LIVE.values()):
        stop_process(proc, grace=3)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# -- servers -------------------------------------------------------------------------------------------


@dataclass
class Config:
    model: Path
    threads: int
    ctx: int  # per sequence
    parallel: int
    tokens: int
    repeat: int
    concurrency: tuple[int, ...]
    history_tokens: int
    answer_tokens: int
    long_tokens: int  # the repeated long prompt's size
    figures: tuple[str, ...]
    start_timeout: float
    request_timeout: float
    llama_server: Path
    peer_python: Path
    logs: Path


class Server:
    name = ""
    ready_path = "/"
    model_field: str | None = None  # the "model" value each request carries (None: leave it out)

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = cfg.logs / f"{self.name}.log"
        self.notes: list[str] = []

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def missing(self) -> str | None:
        """Why this server cannot run here, or None."""
        return None

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for key in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            env.pop(key, None)
        env["NO_PROXY"] = env["no_proxy"] = HOST
        env["HF_HUB_OFFLINE"] = "1"
        return env

    def prepare(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    def start(self) -> None:
        self.prepare()
        self.port = free_port()
        self.cfg.logs.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=str(self.cfg.logs),
                start_new_session=True,
            )
        _LIVE[self.proc.pid] = self.proc

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        self.cleanup()

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    async def wait_ready(self, client: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + self.cfg.start_timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                r = await client.get(self.base_url + self.ready_path, timeout=5)
                if r.status_code == 200:
                    return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {self.cfg.start_timeout:.0f}s:\n{self.log_tail()}")

    def rss(self) -> dict[str, float]:
        """RSS in MB of the server process and everything below it."""
        if self.proc is None:
            return {}
        out = {"main": rss_mb(self.proc.pid) or 0.0}
        out["children"] = sum(rss_mb(p) or 0.0 for p in descendants(self.proc.pid))
        return out

    async def after_measurements(self, client: httpx.AsyncClient, result: ServerResult) -> None:
        pass


class LocalLLM(Server):
    name = "localllm"
    ready_path = "/"
    model_field = LOCALLLM_MODEL_NAME

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.store_dir: Path | None = None

    def command(self) -> list[str]:
        script = Path(sys.executable).parent / "localllm"
        if script.exists():
            return [str(script), "serve"]
        return [sys.executable, "-c", "from localllm_cli.main import main; main()", "serve"]

    def prepare(self) -> None:
        """A throwaway store holding only the benchmark model (hard-linked when possible, else copied)."""
        from localllm.domain.names import parse_name
        from localllm.modelstore.store import Manifest, Store

        WORK.mkdir(parents=True, exist_ok=True)
        self.store_dir = Path(tempfile.mkdtemp(prefix="store-", dir=WORK))
        store = Store(self.store_dir)
        layer = store.add_blob_file(self.cfg.model)
        store.write_manifest(parse_name(LOCALLLM_MODEL_NAME), Manifest((layer,)))

    def cleanup(self) -> None:
        if self.store_dir is not None:
            import shutil

            shutil.rmtree(self.store_dir, ignore_errors=True)
            self.store_dir = None

    def env(self) -> dict[str, str]:
        env = super().env()
        assert self.store_dir is not None
        env.update(
            LOCALLLM_HOST=f"{HOST}:{self.port}",
            LOCALLLM_MODELS=str(self.store_dir),
            LOCALLLM_NUM_THREADS=str(self.cfg.threads),
            LOCALLLM_NUM_PARALLEL=str(self.cfg.parallel),
            LOCALLLM_CONTEXT_LENGTH=str(self.cfg.ctx),
            LOCALLLM_KEEP_ALIVE="-1",
            LOCALLLM_DEBUG="0",
        )
        return env

    async def after_measurements(self, client: httpx.AsyncClient, result: ServerResult) -> None:
        """Unload the model the Ollama way (empty prompt, keep_alive 0) and read the daemon's RSS again."""
        assert self.proc is not None
        body = {"model": LOCALLLM_MODEL_NAME, "keep_alive": 0, "stream": False}
        r = await client.post(self.base_url + "/api/generate", json=body, timeout=60)
        if r.status_code != 200:
            self.notes.append(f"unload failed: HTTP {r.status_code} {r.text[:200]}")
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ps = (await client.get(self.base_url + "/api/ps", timeout=10)).json()
            if not ps.get("models") and not descendants(self.proc.pid):
                break
            await asyncio.sleep(0.2)
        else:
            self.notes.append("the runner was still there 30 s after the unload")
        await asyncio.sleep(1.0)
        result.rss_after_unload = rss_mb(self.proc.pid)


class LlamaServer(Server):
    name = "llama-server"
    ready_path = "/health"

    def missing(self) -> str | None:
        if not os.access(self.cfg.llama_server, os.X_OK):
            return f"{self.cfg.llama_server} not built (run bench/build_llama_server.sh)"
        return None

    def command(self) -> list[str]:
        c = self.cfg
        return [
            str(c.llama_server),
            "-m", str(c.model),
            "-c", str(c.ctx * c.parallel),  # split evenly: each of the -np slots gets c.ctx
            "-np", str(c.parallel),
            "-t", str(c.threads),
            "-tb", str(c.threads),
            "-b", "512",
            "-ub", "512",
            "--host", HOST,
            "--port", str(self.port),
        ]  # fmt: skip


class PythonPeer(Server):
    name = "python"
    ready_path = "/v1/models"

    def missing(self) -> str | None:
        python = self.cfg.peer_python
        if not os.access(python, os.X_OK):
            return f"{python} missing (python3 -m venv bench/.venv-peer && bench/.venv-peer/bin/pip install ...)"
        probe = subprocess.run(
            [str(python), "-c", "import llama_cpp.server, uvicorn, sse_starlette"], capture_output=True, timeout=60
        )
        if probe.returncode != 0:
            return f"{python} cannot import llama_cpp.server (pip install 'llama-cpp-python[server]')"
        return None

    def command(self) -> list[str]:
        c = self.cfg
        return [
            str(c.peer_python), "-m", "llama_cpp.server",
            "--model", str(c.model),
            "--n_ctx", str(c.ctx),
            "--n_threads", str(c.threads),
            "--n_threads_batch", str(c.threads),
            "--host", HOST,
            "--port", str(self.port),
        ]  # fmt: skip


SERVERS: dict[str, Callable[[Config], Server]] = {
    "localllm": LocalLLM,
    "llama-server": LlamaServer,
    "python": PythonPeer,
}


# -- requests ------------------------------------------------------------------------------------------


@dataclass
class Stream:
    status: int = 0
    chunks: int = 0  # SSE chunks carrying non-empty text
    usage_tokens: int | None = None  # usage.completion_tokens when the server reported it
    prompt_tokens: int | None = None
    finish: str | None = None
    done: bool = False  # saw `data: [DONE]`
    error: str | None = None
    t_start: float = 0.0
    t_first: float | None = None
    t_last: float | None = None
    t_end: float = 0.0
    text: str = ""

    max_tokens: int = 0

    @property
    def tokens(self) -> int:
        """Tokens delivered: see COUNT_METHOD (a chunk may carry several tokens, e.g. localllm coalesces)."""
        if self.usage_tokens is not None:
            return int(self.usage_tokens)
        if self.finish == "length" and self.chunks:
            return self.max_tokens
        return self.chunks

    @property
    def method(self) -> str:
        if self.usage_tokens is not None:
            return "usage"
        return "max_tokens" if self.finish == "length" and self.chunks else "chunks"

    @property
    def complete(self) -> bool:
        """Ended properly: HTTP 200, a finish_reason, `[DONE]`, no error event."""
        return self.status == 200 and self.error is None and self.finish is not None and self.done

    @property
    def ttft(self) -> float | None:
        return None if self.t_first is None else self.t_first - self.t_start

    @property
    def decode_rate(self) -> float | None:
        """Tokens per second after the first one: (tokens - 1) / (last text chunk - first text chunk)."""
        if self.t_first is None or self.t_last is None or self.tokens < 2 or self.t_last <= self.t_first:
            return None
        return (self.tokens - 1) / (self.t_last - self.t_first)

    @property
    def overall_rate(self) -> float | None:
        """Tokens per second from sending the request to the last text chunk (TTFT included)."""
        if self.t_last is None or self.t_last <= self.t_start:
            return None
        return self.tokens / (self.t_last - self.t_start)


async def stream_completion(
    client: httpx.AsyncClient, server: Server, prompt: str, max_tokens: int, *, timeout: float
) -> Stream:
    body: dict[str, Any] = {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if server.model_field is not None:
        body["model"] = server.model_field
    s = Stream(t_start=time.perf_counter(), max_tokens=max_tokens)
    parts: list[str] = []

    async def consume() -> None:
        async with client.stream("POST", server.base_url + "/v1/completions", json=body) as r:
            s.status = r.status_code
            if r.status_code != 200:
                s.error = f"HTTP {r.status_code}: {(await r.aread())[:300]!r}"
                return
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    s.done = True
                    return
                try:
                    obj = json.loads(data)
                except ValueError:
                    s.error = f"bad SSE data: {data[:200]!r}"
                    continue
                if obj.get("error"):
                    s.error = json.dumps(obj["error"])[:300]
                    continue
                for choice in obj.get("choices") or ():
                    text = choice.get("text")
                    if text:
                        now = time.perf_counter()
                        if s.t_first is None:
                            s.t_first = now
                        s.t_last = now
                        s.chunks += 1
                        parts.append(text)
                    if choice.get("finish_reason"):
                        s.finish = choice["finish_reason"]
                usage = obj.get("usage")
                if isinstance(usage, dict):
                    s.usage_tokens = usage.get("completion_tokens", s.usage_tokens)
                    s.prompt_tokens = usage.get("prompt_tokens", s.prompt_tokens)

    try:
        await asyncio.wait_for(consume(), timeout)
    except asyncio.TimeoutError:
        s.error = f"no end after {timeout:.0f}s"
    except httpx.HTTPError as exc:
        s.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        s.t_end = time.perf_counter()
        s.text = "".join(parts)
    return s


@dataclass
class ServerResult:
    name: str
    skipped: str | None = None
    failed: str | None = None
    decode_tps: float | None = None
    ttft_ms: float | None = None
    overall_tps: float | None = None
    single_rates: list[float | None] = field(default_factory=list)  # decode tok/s of each single stream
    single_tokens: list[int] = field(default_factory=list)
    single_chunks: list[int] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    concurrent: dict[int, dict[str, Any]] = field(default_factory=dict)
    chat: dict[str, Any] = field(default_factory=dict)
    repeat: dict[str, Any] = field(default_factory=dict)
    rss_idle: float | None = None
    rss_loaded: dict[str, float] = field(default_factory=dict)
    rss_after_unload: float | None = None
    notes: list[str] = field(default_factory=list)
