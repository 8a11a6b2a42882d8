"""Embedding requests in the runner: inputs to token lists (checked against the context), then pooled vectors.

`answer(engine, message)` turns one `{"op": "embed", ...}` message into the event that answers it. The decode
loop (`batch.Batcher`) calls it between decode steps, so embeddings share the command queue with generation.
No llama_cpp here: the engine computes; this module only prepares and checks, so a fake engine can drive it.
"""

from __future__ import annotations

from typing import Any, Protocol

from .protocol import Message


class EmbeddingEngine(Protocol):
    n_ctx_seq: int
    n_vocab: int
    special_suffix: list[int]  # what tokenize appends after the text (BERT's [SEP]), kept when truncating

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]: ...
    def embed(self, prompts: list[list[int]], *, normalize: bool = True) -> list[list[float]]: ...


class _Refused(Exception):
    def __init__(self, event: Message) -> None:
        super().__init__(event.get("message"))
        self.event = event


def answer(engine: EmbeddingEngine, message: Message) -> Message:
    """The `embeddings` event for an `embed` message, or an `error` event (kind context, request or engine)."""
    rid = str(message.get("id"))
    inputs = message.get("inputs")
    truncate = bool(message.get("truncate", True))
    try:
        if not isinstance(inputs, list):
            raise _Refused(_error(rid, "request", "inputs must be a list"))
        prompts = [_prompt(engine, rid, i, item, truncate) for i, item in enumerate(inputs)]
    except _Refused as refused:
        return refused.event
    try:
        vectors = engine.embed(prompts, normalize=bool(message.get("normalize", True))) if prompts else []
    except ValueError as exc:
        return _error(rid, "request", str(exc))
    except RuntimeError as exc:
        return _error(rid, "engine", str(exc))
    return {"ev": "embeddings", "id": rid, "embeddings": vectors, "prompt_eval_count": sum(map(len, prompts))}


def _prompt(engine: EmbeddingEngine, rid: str, i: int, item: Any, truncate: bool) -> list[int]:
    suffix: list[int] = []
    if isinstance(item, str):
        tokens = engine.tokenize(item)
        suffix = engine.special_suffix
    elif isinstance(item, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
        tokens = list(item)
        bad = next((t for t in tokens if not 0 <= t < engine.n_vocab), None)
        if bad is not None:
            raise _Refused(
                _error(rid, "request", f"input {i}: token {bad} is not in the vocabulary (0..{engine.n_vocab - 1})")
            )
    else:
        raise _Refused(_error(rid, "request", f"input {i} is neither a string nor a list of token ids"))
    if not tokens:
        raise _Refused(_error(rid, "request", f"input {i} is empty"))
    n_ctx = engine.n_ctx_seq
    if len(tokens) <= n_ctx:
        return tokens
    if not truncate:
        raise _Refused(
            {
                "ev": "error",
                "id": rid,
                "kind": "context",
                "n_tokens": len(tokens),
                "n_ctx": n_ctx,
                "message": f"input {i} is {len(tokens)} tokens, longer than the context window of {n_ctx}",
            }
        )
    if suffix and len(suffix) < n_ctx and tokens[-len(suffix) :] == suffix:
        return tokens[: n_ctx - len(suffix)] + suffix
    return tokens[:n_ctx]


def _error(rid: str, kind: str, message: str) -> Message:
    return {"ev": "error", "id": rid, "kind": kind, "message": message}
