#!/usr/bin/env python3
"""Benchmark localllm against llama.cpp's `llama-server` and `python -m llama_cpp.server` on one model.

Each server is started in turn on a free 127.0.0.1 port with the same model, the same thread count and the
same per-sequence context, warmed up with one short request, then driven with the same streaming
`POST /v1/completions` requests (prompt string, temperature 0, stream true), and stopped. The figures are
printed as one Markdown table with a column per server and the ratios localllm / peer.

    .venv/bin/python bench/bench.py --model stories --threads 2
    .venv/bin/python bench/bench.py --model bench-135m --threads 2 --only localllm,llama-server
    .venv/bin/python bench/bench.py --model stories --figures repeat --only localllm,llama-server

See bench/README.md for how to build the peers and what each figure means. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import datetime
import functools
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED_MODELS = ROOT.parent / "shared" / "models"
MODELS = {
    "stories": SHARED_MODELS / "stories260K.gguf",
    "bench-135m": HERE / "models" / "bench-135m.gguf",  # make_model.py --preset bench-135m (Q8_0)
    "bench-135m-f16": HERE / "models" / "bench-135m-f16.gguf",  # the same with --type f16
}
MAKE_MODEL = {
    "bench-135m": "--preset bench-135m",
    "bench-135m-f16": "--preset bench-135m --type f16",
}
# GGUF file types whose matmuls llama.cpp runs on its AMX kernels when the CPU has AMX (ggml-cpu/amx/common.h)
AMX_FILE_TYPES = {2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K"}
DEFAULT_LLAMA_SERVER = HERE / ".build" / "llama-server"
DEFAULT_PEER_PYTHON = HERE / ".venv-peer" / "bin" / "python"
WORK = HERE / ".work"
HOST = "127.0.0.1"
LOCALLLM_MODEL_NAME = "bench"
SERVER_NAMES = ("localllm", "llama-server", "python")
COUNT_METHOD = (
    "usage.completion_tokens of the final chunk where the server sends it (stream_options.include_usage), "
    'else max_tokens when finish_reason is "length", else the number of text-bearing SSE chunks'
)

# Prompts that stories260K continues for well over 256 tokens without an end-of-story token (greedy), so
# every server delivers the full max_tokens; the random 135M model never stops early either.
SINGLE_PROMPTS = (
    "Once upon a time",
    "Once upon a time, there was a little dog named Max.",
    "The sun was shining",
    "Lily and Tom went to the park.",
    "One day, a little bird",
)
CONCURRENT_PROMPTS = (
    "Once upon a time, there was a little girl named Lily.",
    "Once upon a time, there was a big red ball.",
    "Tom had a new toy car.",
    "The cat sat on the mat and looked at the moon.",
    "One day, a boy named Tim found a shiny stone.",
    "Sue liked to play in the garden with her mom.",
    "There was a small fish in a big pond.",
    "Ben and his dad went to the store to buy milk.",
)
CHAT_TURNS = (
    (
        "Can you tell me a story about a cat?",
        "Once upon a time, there was a little cat named Tom. Tom liked to "
        "play in the sun. One day, he saw a big ball in the garden. He ran to the ball and pushed it with his paw.",
    ),
    (
        "What did Tom do next?",
        "Tom played with the ball all day. His friend, a small dog named Spot, came to "
        "play too. They ran and jumped and laughed. When the sun went down, they were very tired and happy.",
    ),
    (
        "Where did they sleep?",
        "They slept in a warm bed by the door. Mom gave them a blanket and a bowl of "
        "milk. Tom and Spot said thank you and closed their eyes.",
    ),
    (
        "Tell me about a bird.",
        "There was a little bird named Sue. Sue lived in a tall tree near the park. "
        "Every morning she sang a happy song, and the children in the park stopped to listen.",
    ),
    (
        "Was Sue ever sad?",
        "One day it rained and Sue could not fly. She felt sad and cold. A kind girl named "
        "Lily saw her and made a little house out of a box. Sue was warm again and sang for Lily.",
    ),
)
# The figures (--figures): single-stream decode, N concurrent streams, the two-turn chat, and a long prompt
# repeated after other traffic has passed through every slot.
FIGURES = ("single", "concurrent", "chat", "repeat")
REPEAT_ANSWER = 8  # max_tokens of the long prompt's answers: TTFT is what is measured
FILLER_WAVES = 2  # waves of `--parallel` concurrent requests between the long prompt and its repeat
CHAT_QUESTION_1 = "Can you tell me one more story?"
CHAT_QUESTION_2 = "Thank you! What happened next?"


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


def _on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


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
        from localllm.names import parse_name
        from localllm.store import Manifest, Store

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


# -- measurements --------------------------------------------------------------------------------------


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


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


class Tokenizer:
    """Counts the model's tokens locally (llama.cpp vocab only), to size the chat history the same for all."""

    def __init__(self, model: Path) -> None:
        self._llama: Any = None
        saved = os.dup(2)  # llama.cpp logs to fd 2 even with verbose=False
        try:
            import llama_cpp

            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 2)
                self._llama = llama_cpp.Llama(str(model), vocab_only=True, verbose=False)
        except Exception as exc:  # anything: fall back to an estimate
            os.dup2(saved, 2)
            print(f"note: counting tokens as chars/4 ({exc})", file=sys.stderr)
        finally:
            os.dup2(saved, 2)
            os.close(saved)

    def count(self, text: str) -> int:
        if self._llama is None:
            return len(text) // 4
        return len(self._llama.tokenize(text.encode(), add_bos=True, special=False))


def chat_history(tok: Tokenizer, n_tokens: int, label: int, *, opening: str = "Conversation") -> str:
    """A User/Assistant transcript of about `n_tokens` tokens (whole sentences), opened by a line unique to
    `opening` and `label` so that no server can already hold it in a cache."""
    text = f"{opening} {label}.\n"
    i = 0
    while True:
        question, answer = CHAT_TURNS[i % len(CHAT_TURNS)]
        text += f"User: {question}\nAssistant:"
        for sentence in answer.split(". "):
            text += " " + sentence.rstrip(".") + "."
            if tok.count(text) >= n_tokens:
                return text + "\n"
        text += "\n"
        i += 1


class Measure:
    """One server's measurements, a phase at a time, so that servers can take turns (`--interleave`)."""

    def __init__(self, server: Server, cfg: Config, tok: Tokenizer, result: ServerResult) -> None:
        self.server, self.cfg, self.tok, self.result = server, cfg, tok, result
        self.singles: list[Stream] = []
        concurrency = cfg.concurrency if "concurrent" in cfg.figures else ()
        self.rounds: dict[int, list[tuple[float, list[Stream]]]] = {n: [] for n in concurrency}
        self.chats: list[tuple[Stream, Stream, int, int]] = []
        self.repeats: list[tuple[Stream, Stream, int]] = []

    def run(self, client: httpx.AsyncClient, prompt: str, n: int) -> Any:
        return stream_completion(client, self.server, prompt, n, timeout=self.cfg.request_timeout)

    async def setup(self, client: httpx.AsyncClient) -> None:
        server = self.server
        await server.wait_ready(client)
        if isinstance(server, LocalLLM):
            await asyncio.sleep(1.0)
            self.result.rss_idle = rss_mb(server.proc.pid) if server.proc else None
        warm = await self.run(client, "Hello there. Once", 8)
        if not warm.complete:
            raise RuntimeError(f"warm-up request failed: {warm.error or warm.finish}\n{server.log_tail()}")

    async def single(self, client: httpx.AsyncClient, i: int) -> None:
        self.singles.append(await self.run(client, SINGLE_PROMPTS[i % len(SINGLE_PROMPTS)], self.cfg.tokens))

    async def concurrent(self, client: httpx.AsyncClient, n: int, rep: int) -> None:
        """One round of n streams with n different prompts."""
        prompts = [CONCURRENT_PROMPTS[(i + rep) % len(CONCURRENT_PROMPTS)] for i in range(n)]
        t0 = time.perf_counter()
        batch = await asyncio.gather(*(self.run(client, p, self.cfg.tokens) for p in prompts))
        self.rounds[n].append((max(s.t_end for s in batch) - t0, list(batch)))

    async def chat(self, client: httpx.AsyncClient, k: int) -> None:
        """A fresh conversation with a long history, then its second turn."""
        history = chat_history(self.tok, self.cfg.history_tokens, k + 1)
        prompt1 = history + f"User: {CHAT_QUESTION_1}\nAssistant:"
        t1 = await self.run(client, prompt1, self.cfg.answer_tokens)
        prompt2 = prompt1 + t1.text + f"\nUser: {CHAT_QUESTION_2}\nAssistant:"
        t2 = await self.run(client, prompt2, 16)
        self.chats.append((t1, t2, self.tok.count(prompt1), self.tok.count(prompt2)))

    async def repeat_prompt(self, client: httpx.AsyncClient, k: int) -> None:
        """A long prompt, then `FILLER_WAVES` waves of `--parallel` short distinct requests sent at once (each
        wave takes every slot, so the long prompt's slot is reused), then the same long prompt again."""
        prompt = chat_history(self.tok, self.cfg.long_tokens, k + 1, opening="Transcript")
        cold = await self.run(client, prompt, REPEAT_ANSWER)
        for wave in range(FILLER_WAVES):
            openers = [
                f"Story {k}.{wave}.{i}: {CONCURRENT_PROMPTS[i % len(CONCURRENT_PROMPTS)]}"
                for i in range(self.cfg.parallel)
            ]
            await asyncio.gather(*(self.run(client, p, REPEAT_ANSWER) for p in openers))
        again = await self.run(client, prompt, REPEAT_ANSWER)
        self.repeats.append((cold, again, self.tok.count(prompt)))

    async def finish(self, client: httpx.AsyncClient) -> None:
        """Sum up into the result; read RSS; let the server unload (localllm)."""
        result = self.result
        for s in self.singles:
            if not s.complete:
                result.notes.append(f"single stream incomplete: {s.error or s.finish}")
        result.single_rates = [s.decode_rate for s in self.singles]
        result.decode_tps = _median(result.single_rates)
        result.ttft_ms = _median([s.ttft * 1000 if s.ttft is not None else None for s in self.singles])
        result.overall_tps = _median([s.overall_rate for s in self.singles])
        result.single_tokens = [s.tokens for s in self.singles]
        result.single_chunks = [s.chunks for s in self.singles]
        result.methods.extend(s.method for s in self.singles)
        for n, rounds in self.rounds.items():
            streams = [s for _, batch in rounds for s in batch]
            rates = [sum(s.tokens for s in batch) / wall if wall > 0 else None for wall, batch in rounds]
            ttfts = [s.ttft * 1000 for s in streams if s.ttft is not None]
            result.methods.extend(s.method for s in streams)
            result.concurrent[n] = {
                "aggregate_tps": _median(rates),
                "all_aggregate_tps": rates,
                "completed": sum(s.complete for s in streams),
                "full_length": sum(s.complete and s.tokens >= self.cfg.tokens for s in streams),
                "streams": len(streams),
                "tokens": [s.tokens for s in streams],
                "chunks": [s.chunks for s in streams],
                "finish": [s.finish for s in streams],
                "wall_s": [wall for wall, _ in rounds],
                "ttft_p50_ms": statistics.median(ttfts) if ttfts else None,
                "ttft_max_ms": max(ttfts) if ttfts else None,
                "errors": sorted({s.error for s in streams if s.error})[:3],
            }
        firsts, seconds = [], []
        for t1, t2, _, _ in self.chats:
            for label, s in (("turn 1", t1), ("turn 2", t2)):
                if not s.complete:
                    result.notes.append(f"chat {label} incomplete: {s.error or s.finish}")
            firsts.append(t1.ttft * 1000 if t1.ttft is not None else None)
            seconds.append(t2.ttft * 1000 if t2.ttft is not None else None)
        ratios = [b / a for a, b in zip(firsts, seconds, strict=True) if a and b]
        if self.chats:
            result.chat = {
                "turn1_ttft_ms": _median(firsts),
                "turn2_ttft_ms": _median(seconds),
                "ratio": _median(ratios),
                "turn1_prompt_tokens": [c[2] for c in self.chats],
                "turn2_prompt_tokens": [c[3] for c in self.chats],
                "all_turn1_ms": firsts,
                "all_turn2_ms": seconds,
            }
        colds, agains = [], []
        for cold, again, _ in self.repeats:
            for label, s in (("first", cold), ("repeated", again)):
                if not s.complete:
                    result.notes.append(f"long prompt ({label}) incomplete: {s.error or s.finish}")
            colds.append(cold.ttft * 1000 if cold.ttft is not None else None)
            agains.append(again.ttft * 1000 if again.ttft is not None else None)
        if self.repeats:
            result.repeat = {
                "cold_ttft_ms": _median(colds),
                "repeat_ttft_ms": _median(agains),
                "all_cold_ms": colds,
                "all_repeat_ms": agains,
                "prompt_tokens": [r[2] for r in self.repeats],
            }
        result.rss_loaded = self.server.rss()
        await self.server.after_measurements(client, result)


def _client(cfg: Config) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    return httpx.AsyncClient(timeout=httpx.Timeout(cfg.request_timeout, connect=10), limits=limits, trust_env=False)


async def measure(server: Server, cfg: Config, tok: Tokenizer, result: ServerResult) -> None:
    """Every measurement of one server, one after the other."""
    async with _client(cfg) as client:
        m = Measure(server, cfg, tok, result)
        await m.setup(client)
        for i in range(cfg.repeat if "single" in cfg.figures else 0):
            await m.single(client, i)
        for n in cfg.concurrency if "concurrent" in cfg.figures else ():
            for rep in range(cfg.repeat):
                await m.concurrent(client, n, rep)
        for k in range(cfg.repeat if "chat" in cfg.figures else 0):
            await m.chat(client, k)
        for k in range(cfg.repeat if "repeat" in cfg.figures else 0):
            await m.repeat_prompt(client, k)
        await m.finish(client)


async def measure_interleaved(pairs: list[tuple[Server, ServerResult]], cfg: Config, tok: Tokenizer) -> None:
    """The same measurements with every server running: each repeat of each figure goes to every server in
    turn, the order reversed every other repeat, so a machine whose speed drifts affects all servers alike.
    A server that fails is reported and leaves the rotation."""
    async with _client(cfg) as client:
        live = [Measure(server, cfg, tok, result) for server, result in pairs]

        async def each(rep: int, phase: str, *args: int) -> None:
            for m in list(live if rep % 2 == 0 else reversed(live)):
                try:
                    await getattr(m, phase)(client, *args)
                except Exception as exc:  # report it and go on with the others
                    m.result.failed = f"{type(exc).__name__}: {exc}"
                    print(f"[{m.server.name}] failed: {m.result.failed}", file=sys.stderr)
                    live.remove(m)

        await each(0, "setup")
        for i in range(cfg.repeat if "single" in cfg.figures else 0):
            await each(i, "single", i)
        for n in cfg.concurrency if "concurrent" in cfg.figures else ():
            for rep in range(cfg.repeat):
                await each(rep, "concurrent", n, rep)
        for k in range(cfg.repeat if "chat" in cfg.figures else 0):
            await each(k, "chat", k)
        for k in range(cfg.repeat if "repeat" in cfg.figures else 0):
            await each(k, "repeat_prompt", k)
        await each(0, "finish")


def run_server(name: str, cfg: Config, tok: Tokenizer) -> ServerResult:
    server = SERVERS[name](cfg)
    result = ServerResult(name)
    t0 = time.monotonic()
    if not _start(server, result):
        return result
    try:
        asyncio.run(measure(server, cfg, tok, result))
    except Exception as exc:  # report it and go on with the next server
        result.failed = f"{type(exc).__name__}: {exc}"
        print(f"[{name}] failed: {result.failed}", file=sys.stderr)
    finally:
        server.stop()
    result.notes.extend(server.notes)
    print(f"[{name}] done in {time.monotonic() - t0:.0f}s (log: {server.log_path})", file=sys.stderr)
    return result


def _start(server: Server, result: ServerResult) -> bool:
    """Start `server`; False (with the reason in `result`) when it is missing or does not start."""
    reason = server.missing()
    if reason:
        result.skipped = reason
        print(f"[{server.name}] skipped: {reason}", file=sys.stderr)
        return False
    try:
        server.start()
    except Exception as exc:  # report it and go on with the next server
        server.stop()
        result.failed = f"{type(exc).__name__}: {exc}"
        print(f"[{server.name}] failed to start: {result.failed}", file=sys.stderr)
        return False
    shown = ["localllm", "serve"] if server.name == "localllm" else server.command()
    print(f"[{server.name}] started: {' '.join(shown)}", file=sys.stderr)
    return True


def run_interleaved(names: list[str], cfg: Config, tok: Tokenizer) -> dict[str, ServerResult]:
    """Start every server, measure them taking turns (`measure_interleaved`), stop them all."""
    results = {name: ServerResult(name) for name in names}
    pairs: list[tuple[Server, ServerResult]] = []
    t0 = time.monotonic()
    try:
        for name in names:
            server = SERVERS[name](cfg)
            if _start(server, results[name]):
                pairs.append((server, results[name]))
        asyncio.run(measure_interleaved(pairs, cfg, tok))
    finally:
        for server, result in pairs:
            server.stop()
            result.notes.extend(server.notes)
    print(f"[interleaved] done in {time.monotonic() - t0:.0f}s (logs: {cfg.logs})", file=sys.stderr)
    return results


# -- report --------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def _round_rates(r: ServerResult, n: int) -> list[float | None]:
    return list(r.concurrent[n]["all_aggregate_tps"])


def report(cfg: Config, results: dict[str, ServerResult], header: list[str], *, interleaved: bool = False) -> str:
    cols = [n for n in SERVER_NAMES if n in results]
    peers = [n for n in ("llama-server", "python") if n in results and "localllm" in results]

    def get(name: str, fn: Callable[[ServerResult], Any]) -> Any:
        r = results[name]
        if r.skipped or r.failed:
            return None
        try:
            return fn(r)
        except (KeyError, TypeError):
            return None

    rows: list[tuple[str, Callable[[ServerResult], Any], Callable[[Any], str], bool]] = []

    def row(
        label: str, fn: Callable[[ServerResult], Any], fmt: Callable[[Any], str] = _fmt, ratio: bool = True
    ) -> None:
        rows.append((label, fn, fmt, ratio))

    def count_fmt(v: Any) -> str:
        return "–" if v is None else str(v)

    if "single" in cfg.figures:
        row(f"decode tok/s, 1 stream ({cfg.tokens} tokens, median of {cfg.repeat})", lambda r: r.decode_tps)
        row("tok/s incl. TTFT, 1 stream", lambda r: r.overall_tps)
        row("TTFT, 1 stream (ms)", lambda r: r.ttft_ms)
        row(
            "tokens / SSE chunks per single stream (count method)",
            lambda r: f"{min(r.single_tokens)} / {min(r.single_chunks)} ({','.join(sorted(set(r.methods)))})",
            count_fmt,
            False,
        )

    def conc(n: int, what: str) -> Callable[[ServerResult], Any]:
        def pick(r: ServerResult) -> Any:
            d = r.concurrent[n]
            if what == "completed":
                return f"{d['completed']}/{d['streams']} ({d['full_length']}/{d['streams']})"
            if what == "ttft":
                return f"{_fmt(d['ttft_p50_ms'], 0)} / {_fmt(d['ttft_max_ms'], 0)}"
            return d[what]

        return pick

    for n in cfg.concurrency if "concurrent" in cfg.figures else ():
        row(f"aggregate tok/s, {n} streams (median of {cfg.repeat} rounds)", conc(n, "aggregate_tps"))
        row(f"completed streams, {n} streams x {cfg.repeat} (full length)", conc(n, "completed"), count_fmt, False)
        row(f"TTFT p50 / max, {n} streams (ms)", conc(n, "ttft"), count_fmt, False)
    if "chat" in cfg.figures:
        row(f"chat turn 1 TTFT, ~{cfg.history_tokens}-token history (ms)", lambda r: r.chat["turn1_ttft_ms"])
        row("chat turn 2 TTFT, history + answer + new message (ms)", lambda r: r.chat["turn2_ttft_ms"])
        row("chat turn 2 / turn 1 TTFT", lambda r: r.chat["ratio"], lambda v: _fmt(v, 3))
    others = FILLER_WAVES * cfg.parallel
    if "repeat" in cfg.figures:
        row(f"long prompt TTFT, first time (~{cfg.long_tokens} tokens, ms)", lambda r: r.repeat["cold_ttft_ms"])
        row(f"long prompt TTFT, again after {others} other requests (ms)", lambda r: r.repeat["repeat_ttft_ms"])
    row("daemon idle RSS, no model loaded (MB)", lambda r: r.rss_idle)
    row(
        "RSS with the model loaded, all processes (MB)",
        lambda r: (r.rss_loaded["main"] + r.rss_loaded["children"]) if r.rss_loaded else None,
    )
    row("daemon RSS after unloading (MB)", lambda r: r.rss_after_unload)

    titles = {"localllm": "localllm", "llama-server": "llama-server", "python": "llama_cpp.server"}
    head = ["figure", *(titles[c] for c in cols), *(f"localllm / {titles[p]}" for p in peers)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, fn, fmt, ratio in rows:
        values = [get(c, fn) for c in cols]
        cells = [label, *(fmt(v) for v in values)]
        for p in peers:
            a, b = get("localllm", fn), get(p, fn)
            cells.append(_ratio(a, b) if ratio and isinstance(a, (int, float)) else "")
        lines.append("| " + " | ".join(cells) + " |")
    if interleaved:  # each repeat ran on every server back to back: compare them repeat by repeat
        paired: list[tuple[str, Callable[[ServerResult], list[float | None]]]] = []
        if "single" in cfg.figures:
            paired.append(("decode tok/s, 1 stream", lambda r: r.single_rates))
        for n in cfg.concurrency if "concurrent" in cfg.figures else ():
            paired.append((f"aggregate tok/s, {n} streams", functools.partial(_round_rates, n=n)))
        if "repeat" in cfg.figures:
            paired.append(
                (f"long prompt TTFT again after {others} other requests", lambda r: r.repeat["all_repeat_ms"])
            )
        for label, pick in paired:
            cells = [f"{label}: median of the {cfg.repeat} paired ratios", *("" for _ in cols)]
            for p in peers:
                a, b = get("localllm", pick) or [], get(p, pick) or []
                ratios = [x / y for x, y in zip(a, b, strict=False) if x and y]
                cells.append(f"**{statistics.median(ratios):.2f}×**" if ratios else "–")
            lines.append("| " + " | ".join(cells) + " |")

    out = [*header, "", *lines, ""]
    for c in cols:
        r = results[c]
        if r.skipped:
            out.append(f"- {titles[c]}: skipped ({r.skipped})")
        if r.failed:
            out.append(f"- {titles[c]}: FAILED ({r.failed.splitlines()[0]})")
        if r.rss_loaded and c == "localllm":
            out.append(
                f"- localllm RSS loaded: daemon {r.rss_loaded['main']:.1f} MB"
                f" + runner {r.rss_loaded['children']:.1f} MB"
            )
        for n, d in r.concurrent.items():
            if d["errors"]:
                out.append(f"- {titles[c]} @{n} errors: {'; '.join(d['errors'])}")
        for note in dict.fromkeys(r.notes):
            out.append(f"- {titles[c]}: {note}")
    sizes = {
        c: (results[c].chat["turn1_prompt_tokens"], results[c].chat["turn2_prompt_tokens"])
        for c in cols
        if results[c].chat
    }
    repeats = {c: results[c].repeat["prompt_tokens"] for c in cols if results[c].repeat}
    if repeats:
        out.append(f"- long prompt tokens (counted locally), each round: {next(iter(repeats.values()))}")
    if sizes:
        same = len({str(v) for v in sizes.values()}) == 1
        for c, (t1, t2) in sizes.items():
            who = "every server" if same else titles[c]
            out.append(f"- chat prompt tokens (counted locally), {who}: turn 1 {t1}, turn 2 {t2}")
            if same:
                break
    return "\n".join(out)


def amx_warning(model: Path) -> str | None:
    """On a CPU with AMX, llama.cpp 0.3.36's AMX kernels can crash (SIGSEGV) on these quant types."""
    try:
        with open("/proc/cpuinfo") as f:
            if "amx_int8" not in f.read():
                return None
        from gguf import GGUFReader

        file_type = int(GGUFReader(str(model)).fields["general.file_type"].contents())
    except Exception:  # no cpuinfo, no gguf package, no file type: say nothing
        return None
    if file_type not in AMX_FILE_TYPES:
        return None
    return (
        f"this CPU has AMX and the model is {AMX_FILE_TYPES[file_type]}: llama.cpp runs it on its AMX kernels, "
        "which crashed with SIGSEGV on this project's 2-core test machine (all three servers); "
        "bench-135m-f16 avoids them"
    )


def describe(cfg: Config, load_before: float, *, interleaved: bool = False) -> list[str]:
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "log", "--oneline", "-1"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    try:
        import llama_cpp

        lcp = llama_cpp.__version__
    except ImportError:
        lcp = "?"
    size = cfg.model.stat().st_size / 1e6
    server_version = "not built"
    if os.access(cfg.llama_server, os.X_OK):
        probe = subprocess.run([str(cfg.llama_server), "--version"], capture_output=True, text=True, timeout=30)
        lines = (probe.stdout + probe.stderr).strip().splitlines()
        server_version = next((x for x in lines if x.startswith("version")), "?")
    warning = amx_warning(cfg.model)
    return [
        f"## localllm benchmark: {cfg.model.name} ({size:.1f} MB), {cfg.threads} threads",
        *(["", f"**Warning**: {warning}"] if warning else []),
        "",
        f"- localllm commit: {commit or '?'}{' + uncommitted changes' if dirty else ''}; "
        f"llama-cpp-python {lcp}; llama-server {server_version}; "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- host: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"1-min load average before the run {load_before:.2f} (other work on the CPUs skews every figure)",
        f"- every server: context {cfg.ctx} tokens per sequence, {cfg.threads} threads (prompt and decode); "
        f"localllm and llama-server with {cfg.parallel} sequence slots (llama-server -c {cfg.ctx * cfg.parallel} "
        f"-np {cfg.parallel}), llama_cpp.server with its one sequence",
        f"- requests: streaming POST /v1/completions, temperature 0, max_tokens {cfg.tokens}; "
        f"tokens counted as {COUNT_METHOD}",
        "- servers were "
        + (
            "all running, taking turns at every repeat of every figure (the order reversed every other repeat)"
            if interleaved
            else "measured one after the other (--sequential)"
        ),
        *(
            [
                f"- long prompt: a ~{cfg.long_tokens}-token transcript unique to each round, answered with "
                f"{REPEAT_ANSWER} tokens, then {FILLER_WAVES} waves of {cfg.parallel} short distinct requests at once "
                "(each wave takes every slot), then the same long prompt again"
            ]
            if "repeat" in cfg.figures
            else []
        ),
        f"- figures: {', '.join(cfg.figures)}",
        "- ratios are localllm / peer: above 1 is better for tok/s, worse for TTFT and RSS",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="stories", help="stories, bench-135m or a GGUF path (default: stories)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for every server (default 2)")
    ap.add_argument("--tokens", type=int, default=256, help="max_tokens of each measured stream (default 256)")
    ap.add_argument("--ctx", type=int, default=2048, help="context per sequence (default 2048)")
    ap.add_argument("--parallel", type=int, default=4, help="sequence slots of localllm and llama-server (4)")
    ap.add_argument("--concurrency", default="4,8", help="concurrent stream counts (default 4,8)")
    ap.add_argument("--repeat", type=int, default=3, help="single-stream runs and chat conversations (3)")
    ap.add_argument("--history-tokens", type=int, default=1000, help="chat history size in tokens (1000)")
    ap.add_argument("--answer-tokens", type=int, default=64, help="max_tokens of the chat's first answer (64)")
    ap.add_argument("--long-tokens", type=int, default=1000, help="the repeated long prompt's tokens (1000)")
    ap.add_argument(
        "--figures",
        default=",".join(FIGURES),
        help=f"figures to measure, comma-separated (default: all of {','.join(FIGURES)}; e.g. repeat alone)",
    )
    ap.add_argument("--only", default=",".join(SERVER_NAMES), help="servers to run, comma-separated")
    ap.add_argument("--skip-missing", action="store_true", help="skip a peer that is not built/installed")
    ap.add_argument("--llama-server", type=Path, default=DEFAULT_LLAMA_SERVER, help="llama-server binary")
    ap.add_argument("--peer-python", type=Path, default=DEFAULT_PEER_PYTHON, help="python with llama_cpp.server")
    ap.add_argument("--start-timeout", type=float, default=180, help="seconds a server may take to be ready")
    ap.add_argument("--request-timeout", type=float, default=600, help="seconds one request may take")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument(
        "--sequential",
        action="store_true",
        help="measure one server after the other (default: all running, taking turns at every repeat)",
    )
    a = ap.parse_args(argv)

    model = MODELS.get(a.model, Path(a.model)).resolve()
    if not model.is_file():
        hint = ""
        if a.model in MAKE_MODEL:
            hint = f" (.venv/bin/python ../shared/tools/make_model.py {model} {MAKE_MODEL[a.model]})"
        raise SystemExit(f"model not found: {model}{hint}")
    only = [n.strip() for n in a.only.split(",") if n.strip()]
    unknown = [n for n in only if n not in SERVERS]
    if unknown:
        raise SystemExit(f"--only: unknown server(s) {unknown}; choose from {list(SERVERS)}")
    for name, value in (("--threads", a.threads), ("--tokens", a.tokens), ("--repeat", a.repeat)):
        if value < 1:
            raise SystemExit(f"{name} must be at least 1")
    figures = tuple(f for f in FIGURES if f in {x.strip() for x in a.figures.split(",")})
    if not figures or set(x.strip() for x in a.figures.split(",") if x.strip()) - set(FIGURES):
        raise SystemExit(f"--figures: choose from {','.join(FIGURES)}")
    cfg = Config(
        model=model,
        threads=a.threads,
        ctx=a.ctx,
        parallel=a.parallel,
        tokens=a.tokens,
        repeat=a.repeat,
        concurrency=tuple(int(x) for x in a.concurrency.split(",") if x.strip()),
        history_tokens=a.history_tokens,
        answer_tokens=a.answer_tokens,
        long_tokens=a.long_tokens,
        figures=figures,
        start_timeout=a.start_timeout,
        request_timeout=a.request_timeout,
        llama_server=a.llama_server.resolve(),
        peer_python=a.peer_python.absolute(),  # a venv's python is a symlink: keep the venv's path
        logs=WORK / "logs",
    )
    if "chat" in figures and cfg.history_tokens + cfg.answer_tokens + 64 > cfg.ctx:
        raise SystemExit("--ctx is too small for --history-tokens + --answer-tokens")
    if "repeat" in figures and cfg.long_tokens + 64 > cfg.ctx:
        raise SystemExit("--ctx is too small for --long-tokens (e.g. --long-tokens 4000 --ctx 4352)")

    if not a.skip_missing:
        for name in only:
            reason = SERVERS[name](cfg).missing()
            if reason:
                raise SystemExit(f"{name}: {reason} (or pass --skip-missing)")
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    load_before = os.getloadavg()[0]
    tok = Tokenizer(model)
    names = [n for n in SERVER_NAMES if n in only]
    if a.sequential:
        results = {name: run_server(name, cfg, tok) for name in names}
    else:
        results = run_interleaved(names, cfg, tok)
    header = describe(cfg, load_before, interleaved=not a.sequential)
    text = report(cfg, results, header, interleaved=not a.sequential)
    print(text)
    if a.json:
        a.json.write_text(json.dumps({"config": {k: str(v) for k, v in asdict(cfg).items()},
                                      "results": {k: asdict(v) for k, v in results.items()}}, indent=2))  # fmt: skip
    return 1 if any(r.failed for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
