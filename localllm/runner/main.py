"""Entry point of a runner process: `python -I -m localllm.runner.main '<LoadSpec as JSON>'`.

The process owns one model. It answers requests (see `protocol`) on its stdin/stdout. Before
loading anything it moves its stdout to a private descriptor and points fd 1 at stderr, so nothing that
llama.cpp prints can corrupt the protocol stream. One thread runs the decode loop (`batch.Batcher`) and
reads the commands itself, between steps (`Commands`).
"""

from __future__ import annotations

import functools
import logging
import os
import select
import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..domain.limits import prompt_cache_ram
from ..observability.machine import SystemMemory
from .kvfiles import KVFiles
from .kvstates import KVStates
from .protocol import (
    Embed,
    Event,
    Failure,
    LoadSpec,
    ProtocolError,
    Request,
    Rerank,
    Scores,
    Vectors,
    decode_request,
    encode_event,
    frame,
    parts,
)

if TYPE_CHECKING:
    from .engine import Engine


class Channel:
    """The protocol stream back to the daemon, written by the decode loop's thread only, in whole lines: a long
    answer in parts (`events.parts`), a long message in pieces of `wire.FRAME` bytes, so the daemon's line limit is
    never reached.

    `send` writes at once (the load's outcome; answers to malformed commands). The decode loop `hold`s its
    events and `flush`es them once a pass: one write, so one wake-up of the daemon however many events.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._held: list[bytes] = []

    def send(self, rid: str | None, event: Event) -> None:
        self._write(b"".join(frame(encode_event(rid, part)) for part in parts(event)))

    def hold(self, rid: str | None, event: Event) -> None:
        self._held.extend(frame(encode_event(rid, part)) for part in parts(event))

    def flush(self) -> None:
        if self._held:
            data = b"".join(self._held)
            self._held.clear()
            self._write(data)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # a pipe may take less than all of it
            written = self._out.write(view)
            view = view[written or 0 :]


def _take_stdout() -> BinaryIO:
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(proto_fd, "wb", buffering=0)


class Commands:
    """The daemon's commands, read from stdin by the decode loop's thread: waiting for them when it has nothing
    to do, else taking what came in between two steps. (A reader thread handing each command over cost one more
    wake-up on every request's way to its first token: 0.2-0.6 ms on a 2-core machine.)"""

    def __init__(self, fd: int, channel: Channel) -> None:
        self.fd = fd
        self.channel = channel
        self._partial = b""  # the start of a line still coming
        self._closed = False
        os.set_blocking(fd, False)

    def take(self, wait: bool) -> list[tuple[str, Request]] | None:
        """The commands that came in (after waiting for input, with `wait`); None once stdin is closed and
        every command before that was taken."""
        if self._closed:
            return None
        if wait:
            select.select([self.fd], [], [])
        chunks = [self._partial]
        while True:
            try:
                data = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                break
            if not data:
                self._closed = True
                break
            chunks.append(data)
        lines = b"".join(chunks).split(b"\n")
        self._partial = lines.pop()
        commands = [command for line in lines if line.strip() and (command := self._decode(line)) is not None]
        if self._closed and not commands:
            return None
        return commands

    def _decode(self, line: bytes) -> tuple[str, Request] | None:
        try:
            return decode_request(line)
        except ProtocolError as exc:
            if exc.rid is None:
                logging.warning("ignoring a malformed command: %s", exc)
            else:
                self.channel.send(exc.rid, Failure("request", str(exc)))
            return None


def open_states(spec: LoadSpec, engine: Engine) -> KVStates | None:
    """The prompt cache's saved states for this runner (None for a model whose states are not kept)."""
    if not engine.saves_states:
        return None
    ram = spec.cache_ram if spec.cache_ram >= 0 else prompt_cache_ram(SystemMemory(nvidia_smi=None).snapshot().ram_free)
    if spec.cache_dir:
        try:
            files = KVFiles(Path(spec.cache_dir).expanduser(), engine.state_layout(), spec.cache_disk)
            return KVStates(ram, files, exact=engine.checkpoints)
        except OSError as exc:
            logging.warning("prompt cache: no disk tier, %s is unusable: %s", spec.cache_dir, exc)
    return KVStates(ram, exact=engine.checkpoints)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="runner: %(levelname)s %(message)s")
    channel = Channel(_take_stdout())
    from . import embedding, rerank, scripted
    from .batch import Batcher
    from .engine import Engine, LoadError
    from .sampler import Sampler, grammar_for
    from .speculate import DraftModel

    spec = LoadSpec.from_argument(args[0])
    try:
        engine = Engine(spec)
    except LoadError as exc:  # the daemon reports this to the client that asked for the model
        channel.send(None, Failure(exc.kind, f"failed to load model: {exc}"))
        return 1
    except Exception as exc:
        channel.send(None, Failure("load", f"failed to load model: {exc}"))
        return 1
    try:
        draft = engine.load_draft()
    except LoadError as exc:
        engine.close()
        channel.send(None, Failure(exc.kind, f"failed to load the draft model: {exc}"))
        return 1
    states = open_states(spec, engine)  # before "ready": its disk tier is scanned as part of the load
    channel.send(None, engine.info())
    commands = Commands(sys.stdin.fileno(), channel)

    def embed(request: Embed | Rerank) -> Vectors | Scores | Failure:  # pooled outputs, between decode steps
        if isinstance(request, Rerank):
            return rerank.answer(engine, request)
        return embedding.answer(engine, request)

    sampler = functools.partial(Sampler, engine)
    embedder = embed if engine.embedding else None
    script = scripted.from_environment()  # tests only: see scripted.py
    batcher = Batcher(
        engine,
        channel.hold,
        sampler,
        grammar_for,
        embedder,
        spec.stream_interval,
        states,
        channel.flush,
        script,
        engine.projector,
        draft=DraftModel(draft) if draft is not None else None,
        speculate=engine.can_speculate,
    )
    batcher.run(commands.take)
    if draft is not None:
        draft.close()
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
