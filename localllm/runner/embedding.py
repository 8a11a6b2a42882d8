"""Embedding requests in the runner: inputs to token lists (checked against the context), then pooled vectors.

`answer(engine, request)` turns one `Embed` request into the event that answers it. The decode
loop (`batch.Batcher`) calls it between decode steps, so embeddings share the command queue with generation.
No llama_cpp here: the engine computes; this module only prepares and checks, so a fake engine can drive it.
"""

from __future__ import annotations

from typing import Protocol

from .protocol import Embed, Failure, Vectors


class EmbeddingEngine(Protocol):
    n_ctx_seq: int
    n_vocab: int
    special_suffix: list[int]  # what tokenize appends after the text (BERT's [SEP]), kept when truncating

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]: ...
    def embed(self, prompts: list[list[int]], *, normalize: bool = True) -> list[list[float]]: ...
    def ran_out_of_memory(self) -> bool: ...


class _Refused(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def answer(engine: EmbeddingEngine, request: Embed) -> Vectors | Failure:
    """The vectors for an `Embed` request, or a failure (kind context, request, out_of_memory or engine)."""
    try:
        prompts = [_prompt(engine, i, item, request.truncate) for i, item in enumerate(request.inputs)]
    except _Refused as refused:
        return refused.failure
    try:
        vectors = engine.embed(prompts, normalize=request.normalize) if prompts else []
    except ValueError as exc:
        return Failure("request", str(exc))
    except RuntimeError as exc:
        return Failure("out_of_memory" if engine.ran_out_of_memory() else "engine", str(exc))
    return Vectors(vectors, sum(map(len, prompts)))


def _prompt(engine: EmbeddingEngine, i: int, item: str | tuple[int, ...], truncate: bool) -> list[int]:
    suffix: list[int] = []
    if isinstance(item, str):
        tokens = engine.tokenize(item)
        suffix = engine.special_suffix
    else:
        tokens = list(item)
        bad = next((t for t in tokens if not 0 <= t < engine.n_vocab), None)
        if bad is not None:
            raise _Refused(
                Failure("request", f"input {i}: token {bad} is not in the vocabulary (0..{engine.n_vocab - 1})")
            )
    if not tokens:
        raise _Refused(Failure("request", f"input {i} is empty"))
    n_ctx = engine.n_ctx_seq
    if len(tokens) <= n_ctx:
        return tokens
    if not truncate:
        message = f"input {i} is {len(tokens)} tokens, longer than the context window of {n_ctx}"
        raise _Refused(Failure("context", message, n_tokens=len(tokens), n_ctx=n_ctx))
    if suffix and len(suffix) < n_ctx and tokens[-len(suffix) :] == suffix:
        return tokens[: n_ctx - len(suffix)] + suffix
    return tokens[:n_ctx]
