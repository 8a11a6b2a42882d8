"""Entry point of a runner process: `python -m localllm.runner.main '<LoadSpec as JSON>'`.

The process owns one model. It answers requests (see `protocol`) on its stdin/stdout. Before
loading anything it moves its stdout to a private descriptor and points fd 1 at stderr, so nothing that
llama.cpp prints can corrupt the protocol stream. A thread reads commands; the main thread runs the
decode loop (`batch.Batcher`).
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..limits import prompt_cache_ram
from ..memory import SystemMemory
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
)

if TYPE_CHECKING:
    from .engine import Engine


class Channel:
    """The protocol stream back to the daemon; writes are whole lines under a lock."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, rid: str | None, event: Event) -> None:
        data = encode_event(rid, event)
        with self._lock:
            self._out.write(data)


def _take_stdout() -> BinaryIO:
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(proto_fd, "wb", buffering=0)


def _read_commands(inbox: queue.Queue[tuple[str, Request] | None], channel: Channel) -> None:
    for line in sys.stdin.buffer:
        try:
            inbox.put(decode_request(line))
        except ProtocolError as exc:
            if exc.rid is None:
                logging.warning("ignoring a malformed command: %s", exc)
            else:
                channel.send(exc.rid, Failure("request", str(exc)))
    inbox.put(None)


def open_states(spec: LoadSpec, engine: Engine) -> KVStates | None:
    """The prompt cache's saved states for this runner (None for a model whose states are not kept)."""
    if not engine.saves_states:
        return None
    ram = spec.cache_ram if spec.cache_ram >= 0 else prompt_cache_ram(SystemMemory(nvidia_smi=None).snapshot().ram_free)
    if spec.cache_dir:
        try:
            return KVStates(ram, KVFiles(Path(spec.cache_dir).expanduser(), engine.state_layout(), spec.cache_disk))
        except OSError as exc:
            logging.warning("prompt cache: no disk tier, %s is unusable: %s", spec.cache_dir, exc)
    return KVStates(ram)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="runner: %(levelname)s %(message)s")
    channel = Channel(_take_stdout())
    from . import embedding, rerank
    from .batch import Batcher
    from .engine import Engine, LoadError, Sampler, grammar_for

    spec = LoadSpec.from_argument(args[0])
    try:
        engine = Engine(spec)
    except LoadError as exc:  # the daemon reports this to the client that asked for the model
        channel.send(None, Failure(exc.kind, f"failed to load model: {exc}"))
        return 1
    except Exception as exc:
        channel.send(None, Failure("load", f"failed to load model: {exc}"))
        return 1
    states = open_states(spec, engine)  # before "ready": its disk tier is scanned as part of the load
    channel.send(None, engine.info())
    inbox: queue.Queue[tuple[str, Request] | None] = queue.Queue()
    threading.Thread(target=_read_commands, args=(inbox, channel), daemon=True, name="commands").start()

    def embed(request: Embed | Rerank) -> Vectors | Scores | Failure:  # pooled outputs, between decode steps
        if isinstance(request, Rerank):
            return rerank.answer(engine, request)
        return embedding.answer(engine, request)

    sampler = functools.partial(Sampler, engine)
    embedder = embed if engine.embedding else None
    Batcher(engine, channel.send, sampler, grammar_for, embedder, spec.stream_interval, states).run(inbox)
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
