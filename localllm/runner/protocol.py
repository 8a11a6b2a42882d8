"""The runner boundary: what the daemon asks of a runner process and what the runner answers, as types.

The daemon starts a runner with a `LoadSpec` (its one argument, as JSON) and then sends requests on the
runner's stdin, one JSON object per line, each with an `id` it chose; the runner answers on its stdout with
events carrying the same `id`:

daemon -> runner                                      runner -> daemon
  argv[1]: LoadSpec                                     RunnerInfo  {"ev": "ready", "n_ctx", ...}  once loaded
  Job       {"op": "generate", "id", "prompt", ...}     Text        {"ev": "text", "id", "text", "logprobs"?}
  Tokenize  {"op": "tokenize", "id", "text", ...}       Finished    {"ev": "done", "id", "reason", counters...}
  Embed     {"op": "embed", "id", "inputs", ...}        TokenList   {"ev": "tokens", "id", "tokens", "pieces"?}
  Rerank    {"op": "rerank", "id", "query", ...}        Vectors     {"ev": "embeddings", "id", "embeddings", ...}
  Detokenize {"op": "detokenize", "id", "tokens"}       Scores      {"ev": "scores", "id", "scores", ...}
  Cancel    {"op": "cancel", "id"}                      Failure     {"ev": "error", "id"?, "kind", "message", ...}
                                                        CacheReport {"ev": "cache", "ram_bytes", "requests", ...}
  EOF on stdin: exit

Every request is answered by exactly one last event (anything but `Text`): a `Cancel`led generation still running
by `Finished` with reason "cancel" (a cancel for one already answered is ignored), so the daemon knows when the
runner is done with each request it sent.

Each type has `to_message()` and `from_message()`; `encode_request`/`decode_request` and
`encode_event`/`decode_event` put the `id` around them and make the line; a runner's line longer than
`FRAME` goes out in pieces (`frame`) that the daemon joins again (`Messages`), and a long answer goes as several
messages (`parts`, joined again by `join`). Only these modules handle the
messages as dicts: the rest of the daemon and of the runner sees the types. They are, by what they hold:
`loadspec` (how to load), `requests` (what is asked), `events` (what is answered) and `wire` (the lines);
this module names the whole boundary in one place.
"""

from __future__ import annotations

from ..domain.options import STREAM_INTERVAL
from .events import (
    ERROR_KINDS,
    PART_TOKENS,
    PART_VECTORS,
    CacheReport,
    ErrorKind,
    Event,
    Failure,
    Finished,
    RunnerInfo,
    Scores,
    Text,
    TokenList,
    Vectors,
    decode_event,
    encode_event,
    join,
    parts,
)
from .loadspec import LoadSpec
from .requests import (
    RANDOM_SEED,
    SAMPLING_OPTIONS,
    Cancel,
    Detokenize,
    Embed,
    Job,
    Request,
    Rerank,
    Sampling,
    Tokenize,
    decode_request,
    encode_request,
)
from .wire import FRAME, LINE_LIMIT, Message, Messages, ProtocolError, frame

__all__ = [
    "ERROR_KINDS",
    "FRAME",
    "LINE_LIMIT",
    "PART_TOKENS",
    "PART_VECTORS",
    "RANDOM_SEED",
    "SAMPLING_OPTIONS",
    "STREAM_INTERVAL",
    "CacheReport",
    "Cancel",
    "Detokenize",
    "Embed",
    "ErrorKind",
    "Event",
    "Failure",
    "Finished",
    "Job",
    "LoadSpec",
    "Message",
    "Messages",
    "ProtocolError",
    "Request",
    "Rerank",
    "RunnerInfo",
    "Sampling",
    "Scores",
    "Text",
    "TokenList",
    "Tokenize",
    "Vectors",
    "decode_event",
    "decode_request",
    "encode_event",
    "encode_request",
    "frame",
    "join",
    "parts",
]
