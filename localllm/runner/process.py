"""The daemon's handle on a runner process: start it, stream requests through it, notice when it dies.

No llama_cpp here: the runner is a child process (`python -m localllm.runner.main`), so a crash in
llama.cpp ends that process only. Requests in flight when it dies end with an `EngineError`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import signal
import sys
import time
from collections.abc import AsyncGenerator, Sequence

from ..config import Settings
from ..domain.errors import EngineError
from ..domain.types import Done, PromptCacheStats, Token
from .protocol import (
    CacheReport,
    Cancel,
    Detokenize,
    Embed,
    Event,
    Failure,
    Finished,
    Job,
    LoadSpec,
    ProtocolError,
    Request,
    Rerank,
    RunnerInfo,
    Scores,
    Text,
    Tokenize,
    TokenList,
    Vectors,
    decode_event,
    encode_request,
)
from .workers import listening

log = logging.getLogger("localllm.runner")

_STREAM_LIMIT = 1 << 24
_ids = itertools.count(1)
# What llama.cpp's RPC client says before it ends the process when a worker goes away (ggml-rpc.cpp aborts).
_WORKER_GONE = ("Remote RPC server crashed", "Failed to connect to", "RPC handshake failed")


class RunnerProcess:
    """A running runner: one model, requests multiplexed by id over its pipes."""

    def __init__(self, spec: LoadSpec, proc: asyncio.subprocess.Process) -> None:
        self.spec = spec
        self.proc = proc
        self.info = RunnerInfo()
        self.prompt_cache: PromptCacheStats | None = None  # the runner's last `CacheReport`
        self._queues: dict[str, asyncio.Queue[Event]] = {}
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._worker_gone = False  # llama.cpp said an RPC worker went away (its backtrace may follow)
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
        cls, spec: LoadSpec, *, load_timeout: float = 600.0, hang_timeout: float = Settings.runner_timeout
    ) -> RunnerProcess:
        """Start a runner and wait until its model is loaded; raise `EngineError` if it is not.

        Once loaded, a runner that has requests in hand but says nothing for `hang_timeout` seconds (stopped,
        deadlocked, swapping itself to death) is killed: its requests end with an error saying so, and the
        next request loads the model again."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "localllm.runner.main",
            spec.to_argument(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=_STREAM_LIMIT,
            start_new_session=True,
        )
        runner = cls(spec, proc)
        assert proc.stderr is not None and proc.stdout is not None
        runner._stderr_reader = asyncio.create_task(runner._drain_stderr())
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), load_timeout)
        except asyncio.TimeoutError:
            await runner.stop()
            raise EngineError(f"the model took longer than {load_timeout:.0f}s to load", kind="hang") from None
        _, first = _safe_decode(line)
        if not isinstance(first, RunnerInfo):
            await runner.stop()
            if isinstance(first, Failure):  # kind "load" or "out_of_memory"
                raise first.error()
            gone = await runner._workers_gone()
            if gone is not None:
                raise EngineError(gone, kind="worker")
            raise EngineError(runner._death_message("while loading the model"), kind="crash")
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
                if any(s in line for s in _WORKER_GONE):
                    self._worker_gone = True
                log.debug("runner %d: %s", self.proc.pid, line)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            async for line in self.proc.stdout:
                self._last_heard = time.monotonic()
                rid, event = _safe_decode(line)
                if rid is None and isinstance(event, CacheReport):
                    self.prompt_cache = event
                    continue
                queue = self._queues.get(rid) if rid is not None else None
                if queue is not None and event is not None:
                    queue.put_nowait(event)
        finally:
            await self.proc.wait()  # (not `alive` from here on)
            gone = None if self._hung or self._stopping else await self._workers_gone()
            self.exit_reason = self._hung or gone or self._death_message("")
            if self._hung is None and (self._stopping or self.proc.returncode == 0):  # keep-alive, stop, shutdown
                log.info("runner %d for %s stopped", self.proc.pid, self.spec.model_path)
            else:
                log.warning("runner %d for %s exited: %s", self.proc.pid, self.spec.model_path, self.exit_reason)
            death = Failure("hang" if self._hung else "worker" if gone else "crash", self.exit_reason)
            for queue in self._queues.values():
                queue.put_nowait(death)

    async def _workers_gone(self) -> str | None:
        """Why the runner died if an RPC worker it used went away (llama.cpp ends the process then), else None."""
        if not self.spec.rpc_servers:
            return None
        if self._stderr_reader is not None:  # llama.cpp's last words may still be in the pipe
            await asyncio.wait([self._stderr_reader], timeout=2.0)
        if not self._worker_gone:
            return None
        down = [endpoint for endpoint in self.spec.rpc_servers if not await listening(endpoint)]
        which = f"the RPC worker {', '.join(down)}" if down else "an RPC worker"
        return (
            f"{which} the model is split across stopped answering, and llama.cpp ended the model runner; "
            "the next request loads the model again, without the workers that are gone if it still fits"
        )

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

    def _send(self, rid: str, request: Request) -> None:
        if not self.alive or self.proc.stdin is None:
            raise EngineError(self.exit_reason or "the model runner is not running", kind="crash")
        self.proc.stdin.write(encode_request(rid, request))

    async def _request(self, request: Request) -> AsyncGenerator[Event, None]:
        rid = str(next(_ids))
        queue: asyncio.Queue[Event] = asyncio.Queue()
        if not self._queues:  # work starts now: the hang clock counts from here
            self._last_heard = time.monotonic()
        self._queues[rid] = queue
        finished = False
        try:
            self._send(rid, request)
            while True:
                event = await queue.get()
                if isinstance(event, Text):
                    if not queue.empty():
                        event = _coalesce(event, queue)
                    yield event
                    continue
                finished = True
                if isinstance(event, Failure):
                    raise event.error()
                yield event
                return
        finally:
            self._queues.pop(rid, None)
            if not finished and self.alive:
                with contextlib.suppress(EngineError, OSError):
                    self._send(rid, Cancel())

    async def _answer(self, request: Request) -> Event:
        """The one event that answers `request`."""
        async with contextlib.aclosing(self._request(request)) as events:
            async for event in events:
                return event
        raise EngineError("the model runner did not answer", kind="crash")

    async def generate(self, job: Job) -> AsyncGenerator[Token | Done, None]:
        """Stream the generation of `job`; closing the iterator early cancels it in the runner."""
        async with contextlib.aclosing(self._request(job)) as events:
            async for event in events:
                if isinstance(event, Text | Finished):
                    yield event

    async def tokenize(self, text: str) -> list[int]:
        answer = await self._answer(Tokenize(text))
        if not isinstance(answer, TokenList):
            raise EngineError(f"the model runner answered a tokenize request with {answer!r}")
        return list(answer.tokens)

    async def pieces(self, text: str, *, add_bos: bool = True) -> list[tuple[int, bytes]]:
        """The tokens of `text`, each with its bytes (a special token's are empty)."""
        answer = await self._answer(Tokenize(text, add_bos=add_bos, pieces=True))
        if not isinstance(answer, TokenList) or answer.pieces is None:
            raise EngineError(f"the model runner answered a tokenize request with {answer!r}")
        return list(zip(answer.tokens, answer.pieces, strict=True))

    async def embed(
        self, inputs: Sequence[str] | Sequence[Sequence[int]], truncate: bool = True, *, normalize: bool = True
    ) -> tuple[list[list[float]], int]:
        """One embedding per input (text or token ids) and the count of tokens evaluated.

        Unit vectors unless `normalize` is false. An input longer than the context is cut to fit with
        `truncate`, else `ContextLengthExceeded`.
        """
        answer = await self._answer(Embed.of(inputs, truncate, normalize))
        if not isinstance(answer, Vectors):
            raise EngineError(f"the model runner answered an embed request with {answer!r}")
        return answer.vectors, answer.prompt_eval_count

    async def detokenize(self, tokens: Sequence[int]) -> list[bytes]:
        """Each token's bytes, special tokens written out (a token outside the vocabulary: InvalidRequest)."""
        answer = await self._answer(Detokenize(tuple(tokens)))
        if not isinstance(answer, TokenList) or answer.pieces is None:
            raise EngineError(f"the model runner answered a detokenize request with {answer!r}")
        return list(answer.pieces)

    async def rerank(self, query: str, documents: Sequence[str]) -> tuple[list[float], int]:
        """One relevance score per document (llama.cpp's raw classifier output) and the tokens evaluated."""
        answer = await self._answer(Rerank(query, tuple(documents)))
        if not isinstance(answer, Scores):
            raise EngineError(f"the model runner answered a rerank request with {answer!r}")
        return list(answer.scores), answer.prompt_eval_count

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


def _coalesce(first: Text, queue: asyncio.Queue[Event]) -> Text:
    """Merge the text events already waiting behind `first`, so a slow reader gets fewer, larger pieces.

    Stops at the first event of another kind, which is put back at the front by re-queueing the rest.
    """
    text = [first.text]
    logprobs = list(first.logprobs)
    rest: list[Event] = []
    while not queue.empty():
        event = queue.get_nowait()
        if rest or not isinstance(event, Text):
            rest.append(event)
            continue
        text.append(event.text)
        logprobs.extend(event.logprobs)
    for event in rest:
        queue.put_nowait(event)
    return Text("".join(text), tuple(logprobs))


def _safe_decode(line: bytes) -> tuple[str | None, Event | None]:
    if not line:
        return None, None
    try:
        return decode_event(line)
    except ProtocolError as exc:
        log.warning("ignoring a malformed message from a runner: %s", exc)
        return None, None
