"""The daemon's side of the runner boundary over a scripted runner process (no process is started): long answers
come in parts and pieces and are joined, and a runner whose answers cannot be read is killed with its requests failed at
once (issue 26, finding 2), and the hang clock does not start again while a request waits."""

from __future__ import annotations

import asyncio
import json
import time
from typing import cast

import pytest

from localllm.domain.errors import EngineError
from localllm.runner.process import RunnerProcess
from localllm.runner.protocol import (
    FRAME,
    LINE_LIMIT,
    PART_TOKENS,
    PART_VECTORS,
    LoadSpec,
    Messages,
    ProtocolError,
    RunnerInfo,
    TokenList,
    Vectors,
    decode_event,
    encode_event,
    frame,
    join,
    parts,
)


class ScriptedRunner:
    """What `RunnerProcess` uses of an `asyncio.subprocess.Process`, played by the test: it reads the requests
    written to `stdin`, and writes the runner's lines with `say`."""

    pid = 4242

    def __init__(self) -> None:
        self.stdout = asyncio.StreamReader(limit=LINE_LIMIT)
        self.stderr = asyncio.StreamReader(limit=LINE_LIMIT)
        self.stdin = self
        self.returncode: int | None = None
        self.requests: list[dict[str, object]] = []
        self.killed = False
        self._exited = asyncio.Event()

    # stdin
    def write(self, data: bytes) -> None:
        self.requests.extend(json.loads(line) for line in data.splitlines())

    def close(self) -> None:
        self.exit(0)

    # the process
    def kill(self) -> None:
        self.killed = True
        self.exit(-9)

    def exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self.stdout.feed_eof()
            self.stderr.feed_eof()
            self._exited.set()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def say(self, data: bytes) -> None:
        self.stdout.feed_data(data)


async def attach(proc: ScriptedRunner, *, hang_timeout: float = 300.0) -> RunnerProcess:
    proc.say(frame(encode_event(None, RunnerInfo(n_ctx=64, n_parallel=2, n_vocab=100))))
    spec = LoadSpec(model_path="/models/m.gguf", n_ctx=64)
    process = cast(asyncio.subprocess.Process, proc)
    return await RunnerProcess.attach(spec, process, load_timeout=5, hang_timeout=hang_timeout)


async def sent(proc: ScriptedRunner, n: int) -> list[str]:
    """The ids of the first `n` requests, once the runner has them."""
    while len(proc.requests) < n:
        await asyncio.sleep(0.001)
    return [str(r["id"]) for r in proc.requests[:n]]


def test_a_long_message_goes_in_pieces_no_line_past_the_frame_and_is_joined_again() -> None:
    vectors = Vectors([[i / 7 for i in range(1024)] for _ in range(2048)], 2048)  # 2,048 inputs, 1,024 dimensions
    line = encode_event("7", vectors)
    assert len(line) > 16 << 20  # more than the one line the runner pipe's old 16 MiB limit allowed
    lines = frame(line).splitlines(keepends=True)
    assert len(lines) == -(-(len(line) - 1) // FRAME) and all(len(piece) <= FRAME + 2 for piece in lines)
    joined = Messages(1 << 30)
    assert [joined.add(piece) for piece in lines[:-1]] == [None] * (len(lines) - 1)
    assert decode_event(joined.add(lines[-1]) or b"") == ("7", vectors)
    assert frame(b'{"ev":"text","id":"1","text":"hi"}\n') == b'{"ev":"text","id":"1","text":"hi"}\n'


def test_a_long_answer_goes_as_several_messages_each_parsed_alone() -> None:
    tokens = TokenList(tuple(range(PART_TOKENS * 2 + 5)), tuple(b"x" * (i % 3) for i in range(PART_TOKENS * 2 + 5)))
    sent = [decode_event(encode_event("1", part))[1] for part in parts(tokens)]
    assert [len(p.tokens) for p in sent if isinstance(p, TokenList)] == [PART_TOKENS, PART_TOKENS, 5]
    assert [getattr(p, "more", None) for p in sent] == [True, True, False]
    assert join(sent) == tokens
    vectors = Vectors([[float(i)] for i in range(PART_VECTORS + 1)], 99)
    sent = [decode_event(encode_event("2", part))[1] for part in parts(vectors)]
    assert len(sent) == 2 and join(sent) == vectors  # the count of tokens evaluated comes once, with the last
    assert parts(TokenList((1, 2))) == [TokenList((1, 2))]
    with pytest.raises(ProtocolError):
        join([TokenList((1,), more=True), vectors])


def test_a_piece_may_begin_with_any_byte_even_a_mark() -> None:
    line = b'{"ev":"text","id":"1","text":"' + b"+" * 20 + b'"}\n'
    for size in range(1, 12):
        joined = Messages(1000)
        out = [joined.add(piece) for piece in frame(line, size).splitlines(keepends=True)]
        assert out[-1] == line[:-1] and out[:-1] == [None] * (len(out) - 1)


def test_a_message_past_its_bound_is_refused_before_it_is_kept() -> None:
    joined = Messages(10)
    assert joined.add(b"+12345\n") is None
    with pytest.raises(ProtocolError, match="longer than 10 bytes"):
        joined.add(b"+678901\n")


def test_a_runner_whose_answer_cannot_be_read_is_killed_and_its_requests_fail_at_once() -> None:
    async def scenario() -> None:
        proc = ScriptedRunner()
        runner = await attach(proc)
        tokenize = asyncio.ensure_future(runner.tokenize("hello"))
        detokenize = asyncio.ensure_future(runner.detokenize([1, 2]))
        first, _ = await sent(proc, 2)
        proc.say(b'{"ev":"tokens","id":"' + first.encode() + b'","tokens":[' + b"1," * LINE_LIMIT + b"1]}\n")
        started = time.monotonic()
        results = await asyncio.wait_for(asyncio.gather(tokenize, detokenize, return_exceptions=True), 5)
        assert time.monotonic() - started < 1.0  # at once, not after the hang timeout
        for result in results:
            assert isinstance(result, EngineError) and result.kind == "crash"
            assert "could not be read" in str(result) and "loads the model again" in str(result)
        assert proc.killed and not runner.alive
        with pytest.raises(EngineError, match="could not be read"):
            await runner.tokenize("again")  # (the scheduler drops it and loads the model again)
        await runner.stop()

    asyncio.run(scenario())


def test_a_runner_that_sends_what_is_not_a_message_is_killed_too() -> None:
    async def scenario() -> None:
        proc = ScriptedRunner()
        runner = await attach(proc)
        tokenize = asyncio.ensure_future(runner.tokenize("hello"))
        await sent(proc, 1)
        proc.say(b'{"ev":"tokens","id":"1","tokens":"not a list"\n')
        with pytest.raises(EngineError, match="could not be read"):
            await asyncio.wait_for(tokenize, 5)
        assert proc.killed
        await runner.stop()

    asyncio.run(scenario())


def test_a_long_answer_in_pieces_reaches_its_request() -> None:
    async def scenario() -> None:
        proc = ScriptedRunner()
        runner = await attach(proc)
        detokenize = asyncio.ensure_future(runner.detokenize(list(range(3)) * 100_000))
        (rid,) = await sent(proc, 1)
        pieces = tuple(b"piece" for _ in range(300_000))
        proc.say(frame(encode_event(rid, TokenList(tuple(range(3)) * 100_000, pieces))))  # 6.9 MB
        assert await asyncio.wait_for(detokenize, 20) == list(pieces)
        assert runner.alive and not proc.killed
        await runner.stop()

    asyncio.run(scenario())


def test_the_hang_clock_keeps_running_while_a_cancelled_request_is_unanswered() -> None:
    """A client that gives up does not make the runner look fresh again: the next request waits at most what is
    left of the hang timeout, not a whole one more."""

    async def scenario() -> None:
        proc = ScriptedRunner()
        runner = await attach(proc, hang_timeout=1.2)
        first = asyncio.ensure_future(runner.tokenize("stuck"))
        await sent(proc, 1)
        first.cancel()  # the client went away: the daemon cancels it in the runner, which never answers
        await asyncio.sleep(0.8)
        assert [r["op"] for r in proc.requests] == ["tokenize", "cancel"]
        started = time.monotonic()
        with pytest.raises(EngineError, match="no progress"):
            await asyncio.wait_for(runner.tokenize("next"), 5)
        assert time.monotonic() - started < 1.0, "the hang clock started again with the next request"
        assert proc.killed
        await runner.stop()

    asyncio.run(scenario())
