"""The daemon's handle on a runner process: start it, stream requests through it, notice when it dies.

No llama_cpp here: the runner is a child process (`python -m localllm.runner.main`), so a crash in
llama.cpp ends that process only. Requests in flight when it dies end with an `EngineError`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ContextLengthExceeded, EngineError, InvalidRequest
from ..types import Done, Token, TokenLogprob
from .protocol import STREAM_INTERVAL, Message, decode, encode

log = logging.getLogger("localllm.runner")

_STREAM_LIMIT = 1 << 24
_ids = itertools.count(1)


@dataclass(frozen=True)
class RunnerSpec:
    """How to load a model; the same fields as `engine.LoadSpec`, known without importing llama_cpp."""

    model_path: str
    n_ctx: int  # per sequence: the context is n_ctx * n_parallel tokens
    num_gpu: int = -1
    n_threads: int = 0
    n_batch: int = 512
    use_mmap: bool = True
    n_parallel: int = 1  # sequence slots decoded together
    embedding: bool = False  # an embedding model: loaded with pooled outputs, answers `embed` only
    lora: tuple[str, ...] = ()  # LoRA adapter files (Modelfile ADAPTER)
    stream_interval: float = STREAM_INTERVAL  # seconds between a stream's text messages (LOCALLLM_STREAM_INTERVAL)
    flash_attention: str = "auto"  # "auto", "on" or "off" (LOCALLLM_FLASH_ATTENTION)


class RunnerProcess:
    """A running runner: one model, requests multiplexed by id over its pipes."""

    def __init__(self, spec: RunnerSpec, proc: asyncio.subprocess.Process, info: Message) -> None:
        self.spec = spec
        self.proc = proc
        self.info = info
        self._queues: dict[str, asyncio.Queue[Message]] = {}
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._reader: asyncio.Task[None] | None = None
        self._stderr_reader: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._last_heard = time.monotonic()  # the last message from the runner, or the start of its work
        self._hung: str | None = None
        self._stopping = False  # stop() was called: the exit is the one asked for
        self.exit_reason: str | None = None

    @property
    def alive(self) -> bool:
        return self.exit_reason is None and self.proc.returncode is None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def start(
        cls, spec: RunnerSpec, *, load_timeout: float = 600.0, hang_timeout: float = 300.0
    ) -> RunnerProcess:
        """Start a runner and wait until its model is loaded; raise `EngineError` if it is not.

        Once loaded, a runner that has requests in hand but says nothing for `hang_timeout` seconds (stopped,
        deadlocked, swapping itself to death) is killed: its requests end with an error saying so, and the
        next request loads the model again."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "localllm.runner.main",
            json.dumps(asdict(spec)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=_STREAM_LIMIT,
            start_new_session=True,
        )
        runner = cls(spec, proc, {})
        assert proc.stderr is not None and proc.stdout is not None
        runner._stderr_reader = asyncio.create_task(runner._drain_stderr())
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), load_timeout)
        except asyncio.TimeoutError:
            await runner.stop()
            raise EngineError(f"the model took longer than {load_timeout:.0f}s to load") from None
        first = _safe_decode(line)
        if first.get("ev") != "ready":
            await runner.stop()
            message = first.get("message") or runner._death_message("while loading the model")
            raise EngineError(str(message))
        runner.info = first
        runner._reader = asyncio.create_task(runner._read())
        runner._watchdog = asyncio.create_task(runner._watch(hang_timeout))
        return runner

    async def _watch(self, timeout: float) -> None:
        while self.alive:
            await asyncio.sleep(min(1.0, timeout / 4))
            silent = time.monotonic() - self._last_heard
            if self._queues and silent > timeout and self.alive:
                self._hung = f"the model runner made no progress for {silent:.0f}s and was stopped (hung)"
                log.warning("runner %d for %s: %s", self.proc.pid, self.spec.model_path, self._hung)
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                return

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr.append(line)
                log.debug("runner %d: %s", self.proc.pid, line)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            async for line in self.proc.stdout:
                self._last_heard = time.monotonic()
                message = _safe_decode(line)
                queue = self._queues.get(str(message.get("id")))
                if queue is not None:
                    queue.put_nowait(message)
        finally:
            await self.proc.wait()
            self.exit_reason = self._hung or self._death_message("")
            if self._hung is None and (self._stopping or self.proc.returncode == 0):  # keep-alive, stop, shutdown
                log.info("runner %d for %s stopped", self.proc.pid, self.spec.model_path)
            else:
                log.warning("runner %d for %s exited: %s", self.proc.pid, self.spec.model_path, self.exit_reason)
            for queue in self._queues.values():
                queue.put_nowait({"ev": "error", "kind": "engine", "message": self.exit_reason})

    def _death_message(self, when: str) -> str:
        code = self.proc.returncode
        if code is not None and code < 0:
            try:
                what = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                what = f"was killed by signal {-code}"
        elif code is not None:
            what = f"exited with status {code}"
        else:
            what = "stopped answering"
        tail = f" ({self._stderr[-1]})" if self._stderr and code not in (None, 0) else ""
        return f"the model runner {what}{' ' + when if when else ''}{tail}"

    def _send(self, message: Message) -> None:
        if not self.alive or self.proc.stdin is None:
            raise EngineError(self.exit_reason or "the model runner is not running")
        self.proc.stdin.write(encode(message))

    async def _request(self, message: Message) -> AsyncGenerator[Message, None]:
        rid = str(next(_ids))
        queue: asyncio.Queue[Message] = asyncio.Queue()
        if not self._queues:  # work starts now: the hang clock counts from here
            self._last_heard = time.monotonic()
        self._queues[rid] = queue
        finished = False
        try:
            self._send({**message, "id": rid})
            while True:
                event = await queue.get()
                if event.get("ev") == "text" and not queue.empty():
                    event = _coalesce(event, queue)
                kind = event.get("ev")
                if kind == "error":
                    finished = True
                    raise _error_from(event)
                finished = kind in {"done", "tokens", "embeddings", "scores"}
                yield event
                if finished:
                    return
        finally:
            self._queues.pop(rid, None)
            if not finished and self.alive:
                with contextlib.suppress(EngineError, OSError):
                    self._send({"op": "cancel", "id": rid})

    async def generate(self, prompt: str, options: dict[str, Any]) -> AsyncGenerator[Token | Done, None]:
        """Stream the generation of `prompt`; closing the iterator early cancels it in the runner."""
        async for event in self._request({"op": "generate", "prompt": prompt, "options": options}):
            if event["ev"] == "text":
                lps = event.get("logprobs")
                yield Token(event["text"], tuple(_logprob(x) for x in lps) if lps else ())
            elif event["ev"] == "done":
                yield Done(
                    reason=event["reason"],
                    prompt_eval_count=event["prompt_eval_count"],
                    prompt_eval_duration=event["prompt_eval_duration"],
                    eval_count=event["eval_count"],
                    eval_duration=event["eval_duration"],
                    context=tuple(event.get("context") or ()),
                    cached_tokens=event.get("cached_tokens", 0),
                    truncated=event.get("truncated", 0),
                )

    async def tokenize(self, text: str) -> list[int]:
        async for event in self._request({"op": "tokenize", "text": text}):
            return list(event["tokens"])
        raise EngineError("the model runner did not answer")

    async def pieces(self, text: str, *, add_bos: bool = True) -> list[tuple[int, bytes]]:
        """The tokens of `text`, each with its bytes (a special token's are empty)."""
        message = {"op": "tokenize", "text": text, "add_bos": add_bos, "pieces": True}
        async for event in self._request(message):
            return [(int(t), bytes(p)) for t, p in zip(event["tokens"], event["pieces"], strict=True)]
        raise EngineError("the model runner did not answer")

    async def embed(
        self, inputs: Sequence[str] | Sequence[Sequence[int]], truncate: bool = True, *, normalize: bool = True
    ) -> tuple[list[list[float]], int]:
        """One embedding per input (text or token ids) and the count of tokens evaluated.

        Unit vectors unless `normalize` is false. An input longer than the context is cut to fit with
        `truncate`, else `ContextLengthExceeded`.
        """
        message = {"op": "embed", "inputs": [i if isinstance(i, str) else list(i) for i in inputs]}
        async with contextlib.aclosing(self._request({**message, "truncate": truncate, "normalize": normalize})) as ev:
            async for event in ev:
                return [list(v) for v in event["embeddings"]], int(event["prompt_eval_count"])
        raise EngineError("the model runner did not answer")

    async def detokenize(self, tokens: Sequence[int]) -> list[bytes]:
        """Each token's bytes, special tokens written out (a token outside the vocabulary: InvalidRequest)."""
        async for event in self._request({"op": "detokenize", "tokens": list(tokens)}):
            return [bytes(p) for p in event["pieces"]]
        raise EngineError("the model runner did not answer")

    async def rerank(self, query: str, documents: Sequence[str]) -> tuple[list[float], int]:
        """One relevance score per document (llama.cpp's raw classifier output) and the tokens evaluated."""
        message = {"op": "rerank", "query": query, "documents": list(documents)}
        async with contextlib.aclosing(self._request(message)) as events:
            async for event in events:
                return [float(s) for s in event["scores"]], int(event["prompt_eval_count"])
        raise EngineError("the model runner did not answer")

    async def stop(self, timeout: float = 5.0) -> None:
        """End the process (closing stdin first, then SIGTERM, then SIGKILL)."""
        self._stopping = True
        if self.proc.returncode is None:
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self._watchdog is not None:
            self._watchdog.cancel()
        for task in (self._reader, self._stderr_reader):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, 1.0)


def _coalesce(first: Message, queue: asyncio.Queue[Message]) -> Message:
    """Merge the text events already waiting behind `first`, so a slow reader gets fewer, larger pieces.

    Stops at the first event of another kind, which is put back at the front by re-queueing the rest.
    """
    text = [first["text"]]
    logprobs = list(first.get("logprobs") or ())
    rest: list[Message] = []
    while not queue.empty():
        event = queue.get_nowait()
        if rest or event.get("ev") != "text":
            rest.append(event)
            continue
        text.append(event["text"])
        logprobs.extend(event.get("logprobs") or ())
    for event in rest:
        queue.put_nowait(event)
    merged: Message = {"ev": "text", "id": first["id"], "text": "".join(text)}
    if logprobs:
        merged["logprobs"] = logprobs
    return merged


def _logprob(raw: dict[str, Any]) -> TokenLogprob:
    return TokenLogprob(
        raw["id"],
        raw["token"],
        tuple(raw["bytes"]),
        raw["logprob"],
        tuple((t, text, lp) for t, text, lp in raw.get("top", ())),
    )


def _safe_decode(line: bytes) -> Message:
    try:
        return decode(line) if line else {}
    except ValueError:
        return {}


def _error_from(event: Message) -> Exception:
    kind = event.get("kind")
    message = str(event.get("message", "the model runner failed"))
    if kind == "context":
        return ContextLengthExceeded(int(event["n_tokens"]), int(event["n_ctx"]))
    if kind == "request":
        return InvalidRequest(message)
    return EngineError(message)
