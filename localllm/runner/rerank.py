"""Rerank requests in the runner: (query, document) pairs to token lists, as llama.cpp's server formats them,
then one score per pair from a model loaded with pooling type rank.

`answer(engine, request)` turns one `Rerank` request into the `Scores` event that answers it (or a
`Failure`). All pairs
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
from typing import Protocol

from .protocol import Failure, Rerank, Scores


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
    def ran_out_of_memory(self) -> bool: ...


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


def answer(engine: RerankEngine, request: Rerank) -> Scores | Failure:
    """The scores for a `Rerank` request: one float per document, in the documents' order."""
    frame = engine.rerank_frame
    if frame is None:
        return Failure("request", "this model is not a reranker (its pooling type is not rank)")
    prompts = [pair_tokens(engine, frame, request.query, document) for document in request.documents]
    n_ctx = engine.n_ctx_seq
    for i, prompt in enumerate(prompts):
        if len(prompt) > n_ctx:
            message = f"document {i} with the query is {len(prompt)} tokens, longer than the context window of {n_ctx}"
            return Failure("context", message, n_tokens=len(prompt), n_ctx=n_ctx)
    try:
        outputs = engine.embed(prompts, normalize=False) if prompts else []
    except ValueError as exc:
        return Failure("request", str(exc))
    except RuntimeError as exc:
        return Failure("out_of_memory" if engine.ran_out_of_memory() else "engine", str(exc))
    return Scores(tuple(float(out[0]) for out in outputs), sum(map(len, prompts)))
