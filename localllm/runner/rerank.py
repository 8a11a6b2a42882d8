"""Rerank requests in the runner: (query, document) pairs to token lists, as llama.cpp's server formats them,
then one score per pair from a model loaded with pooling type rank.

`answer(engine, message)` turns one `{"op": "rerank", "id", "query", "documents"}` message into the
`{"ev": "scores", "id", "scores", "prompt_eval_count"}` event that answers it (or an `error` event). All pairs
of one request are evaluated together (`engine.embed` packs them into as few decodes as fit). The score of a
pair is the first (and, with one classifier output, only) value of its pooled output: the raw classifier
logit, as llama-server returns it.

A pair is formatted as llama-server's `format_prompt_rerank`: with a `tokenizer.chat_template.rerank` in the
GGUF, that template with `{query}` and `{document}` replaced, tokenized with special tokens parsed; otherwise
`[BOS] query [EOS] [SEP] document [EOS]` (each special token only where the vocabulary adds it: BERT adds BOS
([CLS]) and EOS ([SEP]); EOS falls back to SEP), query and document tokenized without parsing special tokens.
No llama_cpp here: the engine computes, so a fake engine can drive this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .protocol import Message


@dataclass(frozen=True)
class RerankFrame:
    """What llama.cpp's rerank format needs from the vocabulary (token ids, or None where not added)."""

    bos: int | None
    eos: int | None
    sep: int | None
    template: str | None  # tokenizer.chat_template.rerank


class RerankEngine(Protocol):
    n_ctx_seq: int
    rerank_frame: RerankFrame | None  # None: the model was not loaded with pooling type rank

    def tokenize(self, text: str, *, add_bos: bool = True, parse_special: bool = True) -> list[int]: ...
    def embed(self, prompts: list[list[int]], *, normalize: bool = True) -> list[list[float]]: ...


def pair_tokens(engine: RerankEngine, frame: RerankFrame, query: str, document: str) -> list[int]:
    """The tokens llama-server evaluates for one (query, document) pair."""
    if frame.template is not None:
        prompt = frame.template.replace("{query}", query).replace("{document}", document)
        return engine.tokenize(prompt, add_bos=False, parse_special=True)
    out: list[int] = [] if frame.bos is None else [frame.bos]
    out += engine.tokenize(query, add_bos=False, parse_special=False)
    out += [] if frame.eos is None else [frame.eos]
    out += [] if frame.sep is None else [frame.sep]
    out += engine.tokenize(document, add_bos=False, parse_special=False)
    out += [] if frame.eos is None else [frame.eos]
    return out


def answer(engine: RerankEngine, message: Message) -> Message:
    """The `scores` event for a `rerank` message: one float per document, in the documents' order."""
    rid = str(message.get("id"))
    query, documents = message.get("query"), message.get("documents")
    frame = engine.rerank_frame
    if frame is None:
        return _error(rid, "request", "this model is not a reranker (its pooling type is not rank)")
    if not isinstance(query, str) or not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
        return _error(rid, "request", "rerank needs a query string and a list of document strings")
    prompts = [pair_tokens(engine, frame, query, document) for document in documents]
    for i, prompt in enumerate(prompts):
        if len(prompt) > engine.n_ctx_seq:
            return {
                "ev": "error",
                "id": rid,
                "kind": "context",
                "n_tokens": len(prompt),
                "n_ctx": engine.n_ctx_seq,
                "message": f"document {i} with the query is {len(prompt)} tokens, longer than the context "
                f"window of {engine.n_ctx_seq}",
            }
    try:
        outputs = engine.embed(prompts, normalize=False) if prompts else []
    except ValueError as exc:
        return _error(rid, "request", str(exc))
    except RuntimeError as exc:
        return _error(rid, "engine", str(exc))
    scores: list[Any] = [float(out[0]) for out in outputs]
    return {"ev": "scores", "id": rid, "scores": scores, "prompt_eval_count": sum(map(len, prompts))}


def _error(rid: str, kind: str, message: str) -> Message:
    return {"ev": "error", "id": rid, "kind": kind, "message": message}
