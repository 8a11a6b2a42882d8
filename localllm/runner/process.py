"""The daemon's handle on a runner process: start it, stream requests through it, notice when it dies.

No llama_cpp here: the runner is a child process (`python -I -m localllm.runner.main`), so a crash in
llama.cpp ends that process only. Requests in flight when it dies end with an `EngineError`, and so do they
when its answers cannot be read (a message that does not parse or passes `RUNNER_MESSAGE_MAX`): the runner is
killed then, at once, rather than left running with nobody reading it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import signal
import time
from collections.abc import AsyncGenerator, Sequence

from ..config import Settings
from ..domain.child import llama_environment, python_command
from ..domain.errors import EngineError
from ..domain.events import Done, Token
from ..domain.limits import RUNNER_MESSAGE_MAX
from ..domain.media import Media
from ..domain.modelinfo import PromptCacheStats, SpeculationStats
from .protocol import (
    FRAME,
    LINE_LIMIT,
    CacheReport,
    Cancel,
    Detokenize,
    Embed,
    Event,
    Failure,
    Finished,
    Job,
    LoadSpec,
    Messages,
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
    join,
)
from .workers import listening

log = logging.getLogger("localllm.runner")

_ids = itertools.count(1)
_BREATHE = 64 << 10  # after a message this long, the reader lets the event loop run before it reads the next
# What llama.cpp's RPC client says before it ends the process when a worker goes away (ggml-rpc.cpp aborts).
_WORKER_GONE = ("Remote RPC server crashed", "Failed to connect to", "RPC handshake failed")


class RunnerProcess:
    """A running runner: one model, requests multiplexed by id over its pipes."""

    def __init__(self, spec: LoadSpec, proc: asyncio.subprocess.Process) -> None:
        self.spec = spec
        self.proc = proc
        self.info = RunnerInfo()
        self.prompt_cache: PromptCacheStats | None = None  # the runner's last `CacheReport`
        self.speculation = SpeculationStats()  # over the generations that drafted
        self._queues: dict[str, asyncio.Queue[Event]] = {}
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._worker_gone = False  # llama.cpp said an RPC worker went away (its backtrace may follow)
        self._reader: asyncio.Task[None] | None = None
        self._stderr_reader: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._messages = Messages(RUNNER_MESSAGE_MAX)
        # Requests sent and not answered yet, those given up on (cancelled) included: the runner answers each
        # once. While there are any, silence counts towards `hang_timeout`.
        self._unanswered: set[str] = set()
        self._last_heard = time.monotonic()  # the last message from the runner, or the start of its work
        self._hung: str | None = None
        self._failed: str | None = None  # why its answers could not be read (it was killed then)
        self._stopping = False  # stop() was called: the exit is the one asked for
        self.exit_reason: str | None = None

    @property
    def alive(self) -> bool:
        return self.exit_reason is None and self._failed is None and self.proc.returncode is None

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
            *python_command("localllm.runner.main", spec.to_argument()),
            env=llama_environment(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=LINE_LIMIT,
            start_new_session=True,
        )
        return await cls.attach(spec, proc, load_timeout=load_timeout, hang_timeout=hang_timeout)

    @classmethod
    async def attach(
        cls, spec: LoadSpec, proc: asyncio.subprocess.Process, *, load_timeout: float, hang_timeout: float
    ) -> RunnerProcess:
        """The runner `proc` just started for `spec`, once it says its model is loaded (see `start`)."""
        runner = cls(spec, proc)
        assert proc.stderr is not None and proc.stdout is not None
        runner._stderr_reader = asyncio.create_task(runner._drain_stderr())
        try:
            line = await asyncio.wait_for(runner._next_message(), load_timeout)
            first = decode_event(line)[1] if line else None
        except asyncio.TimeoutError:
            await runner.stop()
            raise EngineError(f"the model took longer than {load_timeout:.0f}s to load", kind="hang") from None
        except (ValueError, OSError) as exc:  # a line past the limit, a message that does not parse
            await runner.stop()
            raise EngineError(f"the model runner's first message could not be read: {exc}", kind="crash") from None
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
            if self._unanswered and silent > timeout and self.alive:
                self._hung = f"the model runner made no progress for {silent:.0f}s and was stopped (hung)"
                log.warning("runner %d for %s: %s", self.proc.pid, self.spec.model_path, self._hung)
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                return

    async def _drain_stderr(self) -> None:
        """Keep llama.cpp's last words (and log them at debug); never stop reading while the runner lives, or
        it would block writing to a full pipe."""
        assert self.proc.stderr is not None
        try:
            while raw := await _readline(self.proc.stderr, too_long=b"(a line too long to keep)"):
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    self._stderr.append(line)
                    if any(s in line for s in _WORKER_GONE):
                        self._worker_gone = True
                    log.debug("runner %d: %s", self.proc.pid, line)
        except Exception as exc:  # (the event loop's own failure: nothing else raises here)
            self._fail(f"its output could not be read ({exc!r})")

    async def _next_message(self) -> bytes:
        """The runner's next message, joined from its pieces (b"" once its stdout closed); `ValueError` for a
        line past `LINE_LIMIT` or a message past `RUNNER_MESSAGE_MAX` (neither is ever written by a runner)."""
        assert self.proc.stdout is not None
        while True:
            try:
                line = await self.proc.stdout.readline()
            except ValueError:  # (asyncio's words for it: "Separator is not found, and chunk exceed the limit")
                raise ProtocolError(f"a line longer than {LINE_LIMIT} bytes") from None
            if not line:
                return b""
            message = self._messages.add(line)
            if message is not None:
                return message

    async def _read(self) -> None:
        try:
            while line := await self._next_message():
                self._last_heard = time.monotonic()
                if len(line) > FRAME:  # a big answer (tokens of 16 MiB of text) is parsed off the event loop
                    rid, event = await asyncio.to_thread(decode_event, line)
                else:
                    rid, event = decode_event(line)
                if rid is None:
                    if isinstance(event, CacheReport):
                        self.prompt_cache = event
                    continue
                if isinstance(event, Finished) and event.draft_count:
                    self.speculation.count(event.draft_count, event.draft_accepted)
                if not isinstance(event, Text) and not (isinstance(event, TokenList | Vectors) and event.more):
                    self._unanswered.discard(rid)  # its last event: the runner is done with it
                queue = self._queues.get(rid)
                if queue is not None:
                    queue.put_nowait(event)
                if len(line) > _BREATHE:  # the next message may be waiting already: let the event loop run first
                    await asyncio.sleep(0)
        except Exception as exc:  # a line past the limit, a message that does not parse: nobody would read it
            self._fail(f"its answers could not be read ({exc})")
        finally:
            await self.proc.wait()  # (not `alive` from here on)
            gone = None if self._hung or self._failed or self._stopping else await self._workers_gone()
            self.exit_reason = self._hung or self._failed or gone or self._death_message("")
            if self._failed is None and self._hung is None and (self._stopping or self.proc.returncode == 0):
                log.info("runner %d for %s stopped", self.proc.pid, self.spec.model_path)
            elif self._failed is None:  # (a failure was logged as it happened)
                log.warning("runner %d for %s exited: %s", self.proc.pid, self.spec.model_path, self.exit_reason)
            death = Failure("hang" if self._hung else "worker" if gone else "crash", self.exit_reason)
            for queue in self._queues.values():
                queue.put_nowait(death)

    def _fail(self, what: str) -> None:
        """The runner cannot be talked to any more: kill it, so that its requests end now and the next request
        loads the model again (rather than wait for a runner nobody reads)."""
        if self._failed is not None or self.proc.returncode is not None:
            return
        self._failed = f"the model runner was stopped: {what}; the next request loads the model again"
        log.error("runner %d for %s: %s", self.proc.pid, self.spec.model_path, self._failed)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

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
            raise EngineError(self._failed or self.exit_reason or "the model runner is not running", kind="crash")
        self.proc.stdin.write(encode_request(rid, request))

    async def _request(self, request: Request) -> AsyncGenerator[Event, None]:
        rid = str(next(_ids))
        queue: asyncio.Queue[Event] = asyncio.Queue()
        if not self._unanswered:  # work starts now: the hang clock counts from here (not again while any waits)
            self._last_heard = time.monotonic()
        self._queues[rid] = queue
        self._unanswered.add(rid)
        finished = False
        held: list[Event] = []  # the parts of a long answer so far
        try:
            self._send(rid, request)
            while True:
                event = await queue.get()
                if isinstance(event, TokenList | Vectors) and (event.more or held):
                    held.append(event)
                    if event.more:
                        continue
                    event, held = join(held), []
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
            cancelled = False
            if not finished and self.alive:  # it stays unanswered until the runner says it stopped it
                with contextlib.suppress(EngineError, OSError):
                    self._send(rid, Cancel())
                    cancelled = True
            if not cancelled:
                self._unanswered.discard(rid)

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

    async def tokenize(self, text: str, media: Sequence[Media] = ()) -> list[int]:
        """The prompt's tokens as generation lays them out (BOS first); with `media` (one per `MARKER` in
        `text`), each media chunk's positions as pseudo ids (negative), so its length is what the prompt takes
        in the context. A media item the projector refuses: InvalidRequest naming it."""
        answer = await self._answer(Tokenize(text, media=tuple(media)))
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


async def _readline(stream: asyncio.StreamReader, *, too_long: bytes) -> bytes:
    """The next line of `stream`, `too_long` in place of one past its limit (the rest of that line is skipped)."""
    try:
        return await stream.readline()
    except ValueError:  # asyncio dropped what it had of the line; what is left of it comes as the next line
        return too_long
