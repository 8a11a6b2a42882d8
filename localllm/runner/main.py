"""Entry point of a runner process: `python -m localllm.runner.main '<LoadSpec as JSON>'`.

The process owns one model. It answers protocol messages (see `protocol`) on its stdin/stdout. Before
loading anything it moves its stdout to a private descriptor and points fd 1 at stderr, so nothing that
llama.cpp prints can corrupt the protocol stream. A thread reads commands; the main thread runs the
decode loop (`batch.Batcher`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import sys
import threading
from typing import BinaryIO

from .protocol import STREAM_INTERVAL, Message, decode, encode


class Channel:
    """The protocol stream back to the daemon; writes are whole lines under a lock."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, message: Message) -> None:
        data = encode(message)
        with self._lock:
            self._out.write(data)


def _take_stdout() -> BinaryIO:
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(proto_fd, "wb", buffering=0)


def _read_commands(inbox: queue.Queue[Message | None]) -> None:
    for line in sys.stdin.buffer:
        try:
            inbox.put(decode(line))
        except ValueError:
            logging.warning("ignoring a malformed command")
    inbox.put(None)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="runner: %(levelname)s %(message)s")
    channel = Channel(_take_stdout())
    from . import embedding, rerank
    from .batch import Batcher
    from .engine import Engine, LoadSpec, Sampler, grammar_for

    spec = json.loads(args[0])
    stream_interval = float(spec.pop("stream_interval", STREAM_INTERVAL))
    try:
        engine = Engine(LoadSpec(**spec))
    except Exception as exc:  # the daemon reports this to the client that asked for the model
        channel.send({"ev": "error", "kind": "load", "message": f"failed to load model: {exc}"})
        return 1
    channel.send({"ev": "ready", **engine.info()})
    inbox: queue.Queue[Message | None] = queue.Queue()
    threading.Thread(target=_read_commands, args=(inbox,), daemon=True, name="commands").start()

    def embed(message: Message) -> Message:  # `embed` and `rerank` messages, between decode steps
        if message.get("op") == "rerank":
            return rerank.answer(engine, message)
        return embedding.answer(engine, message)

    sampler = functools.partial(Sampler, engine)
    Batcher(engine, channel.send, sampler, grammar_for, embed if engine.embedding else None, stream_interval).run(inbox)
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
