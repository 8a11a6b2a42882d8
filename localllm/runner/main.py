"""Entry point of a runner process: `python -m localllm.runner.main '<LoadSpec as JSON>'`.

The process owns one model. It answers protocol messages (see `protocol`) on its stdin/stdout. Before
loading anything it moves its stdout to a private descriptor and points fd 1 at stderr, so nothing that
llama.cpp prints can corrupt the protocol stream.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import sys
import threading
from typing import Any, BinaryIO

from .protocol import Message, decode, encode


class Channel:
    """The protocol stream back to the daemon; writes are whole lines under a lock."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, message: Message) -> None:
        data = encode(message)
        with self._lock:
            self._out.write(data)
            self._out.flush()


def _take_stdout() -> BinaryIO:
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(proto_fd, "wb", buffering=0)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="runner: %(levelname)s %(message)s")
    channel = Channel(_take_stdout())
    from .engine import ContextOverflow, Engine, Finished, LoadSpec

    try:
        spec = LoadSpec(**json.loads(args[0]))
        engine = Engine(spec)
    except Exception as exc:  # the daemon reports this to the client that asked for the model
        channel.send({"ev": "error", "kind": "load", "message": f"failed to load model: {exc}"})
        return 1
    channel.send({"ev": "ready", **engine.info()})

    work: queue.Queue[Message | None] = queue.Queue()
    cancelled: set[str] = set()

    def read_commands() -> None:
        for line in sys.stdin.buffer:
            try:
                message = decode(line)
            except ValueError:
                continue
            if message.get("op") == "cancel":
                cancelled.add(str(message.get("id")))
            else:
                work.put(message)
        work.put(None)

    threading.Thread(target=read_commands, daemon=True, name="commands").start()
    while (message := work.get()) is not None:
        rid = str(message.get("id"))
        try:
            if message.get("op") == "tokenize":
                channel.send({"ev": "tokens", "id": rid, "tokens": engine.tokenize(str(message["text"]))})
            elif message.get("op") == "generate":
                if rid in cancelled:
                    continue
                options: dict[str, Any] = message.get("options") or {}
                for event in engine.generate(
                    str(message["prompt"]), options, functools.partial(cancelled.__contains__, rid)
                ):
                    if isinstance(event, Finished):
                        channel.send({"ev": "done", "id": rid, **event.__dict__})
                    else:
                        channel.send({"ev": "text", "id": rid, "text": event.text})
        except ContextOverflow as exc:
            channel.send(
                {
                    "ev": "error",
                    "id": rid,
                    "kind": "context",
                    "message": str(exc),
                    "n_tokens": exc.n_tokens,
                    "n_ctx": exc.n_ctx,
                }
            )
        except Exception as exc:
            logging.exception("request %s failed", rid)
            channel.send({"ev": "error", "id": rid, "kind": "engine", "message": str(exc)})
        finally:
            cancelled.discard(rid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
