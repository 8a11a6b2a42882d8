"""Messages between the daemon and a runner: one JSON object per line over the runner's stdin/stdout.

daemon -> runner                                    runner -> daemon
  {"op": "generate", "id", "prompt", "options"}       {"ev": "ready", "n_ctx", "n_ctx_train", "gpu_offload", ...}
  {"op": "tokenize", "id", "text", "add_bos"?,        {"ev": "text", "id", "text"}          a piece of output
   "pieces"?}
  {"op": "embed", "id", "inputs", "truncate",         {"ev": "done", "id", "reason", counters...}
   "normalize"}                                       {"ev": "tokens", "id", "tokens"}
  {"op": "rerank", "id", "query", "documents"}        {"ev": "embeddings", "id", "embeddings", "prompt_eval_count"}
  {"op": "detokenize", "id", "tokens"}                {"ev": "scores", "id", "scores", "prompt_eval_count"}
  {"op": "cancel", "id"}
  EOF on stdin: exit                                  {"ev": "error", "id"?, "message", "kind", ...}

`embed` (embedding models only, loaded with `embedding`): `inputs` is a list of strings or of token-id lists;
the answer has one vector per input, in order, L2-normalised unless `normalize` is false. An input longer than
the context is cut to fit with `truncate` (default true: its end-of-text special tokens are kept), else refused
with a "context" error.

`rerank` (rerankers only: pooling type rank, loaded with `embedding`): one score per document for the pair
(query, document), formatted as llama-server does (`rerank.py`), all pairs evaluated together.
`detokenize` answers a `tokens` event whose `pieces` write special tokens out (`detokenize.py`).

`tokenize` adds the model's BOS unless `add_bos` is false; with `pieces` the answer also has each token's
bytes (`"pieces": [[int, ...], ...]`).

`kind` of an error is "context" (the input does not fit: `n_tokens`, `n_ctx` given), "request" (bad
input) or "engine" (llama.cpp failed). The runner writes nothing else on its protocol stream: llama.cpp's
own output goes to stderr.
"""

from __future__ import annotations

import json
from typing import Any

Message = dict[str, Any]

STREAM_INTERVAL = 0.025  # seconds between a stream's "text" messages (its first token goes at once)


def encode(message: Message) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode(line: bytes) -> Message:
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("protocol message is not an object")
    return message
