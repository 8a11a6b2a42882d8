"""Messages between the daemon and a runner: one JSON object per line over the runner's stdin/stdout.

daemon -> runner                                    runner -> daemon
  {"op": "generate", "id", "prompt", "options"}       {"ev": "ready", "n_ctx", "n_ctx_train", "gpu_offload", ...}
  {"op": "tokenize", "id", "text"}                    {"ev": "text", "id", "text"}          a piece of output
  {"op": "cancel", "id"}                              {"ev": "done", "id", "reason", counters...}
  EOF on stdin: exit                                  {"ev": "tokens", "id", "tokens"}
                                                      {"ev": "error", "id"?, "message", "kind", ...}

`kind` of an error is "context" (the input does not fit: `n_tokens`, `n_ctx` given), "request" (bad
input) or "engine" (llama.cpp failed). The runner writes nothing else on its protocol stream: llama.cpp's
own output goes to stderr.
"""

from __future__ import annotations

import json
from typing import Any

Message = dict[str, Any]


def encode(message: Message) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode(line: bytes) -> Message:
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("protocol message is not an object")
    return message
