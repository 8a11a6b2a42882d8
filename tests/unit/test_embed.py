"""Embeddings without a model: the request fields of both dialects, and the runner's input handling over a
fake engine (a real daemon and model: tests/e2e/test_embed.py)."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from localllm.domain.errors import InvalidRequest
from localllm.runner import embedding
from localllm.runner.protocol import Embed, Failure, ProtocolError, Vectors, decode_request
from localllm.server.dialects.ollama.embed import ollama_inputs
from localllm.server.dialects.openai.embed import encode_base64, openai_inputs
from localllm.server.dialects.openai.wire import EmbeddingRequest
from localllm.server.dialects.shared import dimensions
from localllm.server.wire import decode_dict

# -- request fields (no model) ------------------------------------------------------------------------------


def test_ollama_input_shapes() -> None:
    assert ollama_inputs({"input": "hi"}) == ["hi"]
    assert ollama_inputs({"input": ["a", "b"]}) == ["a", "b"]
    assert ollama_inputs({}) == [] and ollama_inputs({"input": ""}) == [], "no input: load the model only"
    for bad in ([], [1], {"a": 1}, 3):
        with pytest.raises(InvalidRequest) as info:
            ollama_inputs({"input": bad})
        assert info.value.field == "input"


def test_openai_input_shapes() -> None:
    assert openai_inputs("hi") == ["hi"]
    assert openai_inputs(["a", "b"]) == ["a", "b"]
    assert openai_inputs([1, 2, 3]) == [[1, 2, 3]]
    assert openai_inputs([[1, 2], [3]]) == [[1, 2], [3]]
    bad: object
    for bad in (None, "", [], [""], ["a", 1], [1, [2]], [[]], [-1], [True], [[1.5]], {"a": 1}):
        with pytest.raises(InvalidRequest) as info:
            openai_inputs(decode_dict({"model": "m", "input": bad}, EmbeddingRequest).input)
        assert info.value.field == "input", bad


def test_dimensions_and_encoding_format() -> None:
    assert dimensions({}) is None and dimensions({"dimensions": 64}) == 64
    for bad in (0, -3, "64", 6.5, True):
        with pytest.raises(InvalidRequest) as info:
            dimensions({"dimensions": bad})
        assert info.value.field == "dimensions"
    body = {"model": "m", "input": "x"}
    assert decode_dict(body, EmbeddingRequest).encoding_format == "float"
    assert decode_dict({**body, "encoding_format": "base64"}, EmbeddingRequest).encoding_format == "base64"
    for bad in ("binary", 1):
        with pytest.raises(InvalidRequest) as info:
            decode_dict({**body, "encoding_format": bad}, EmbeddingRequest)
        assert info.value.field == "encoding_format"
    for bad in (0, -3, "64", 6.5, True):
        with pytest.raises(InvalidRequest) as info:
            decode_dict({**body, "dimensions": bad}, EmbeddingRequest)
        assert info.value.field == "dimensions"


def test_base64_is_little_endian_float32() -> None:
    raw = base64.b64decode(encode_base64([1.0, -0.5, 0.25]))
    assert raw == struct.pack("<3f", 1.0, -0.5, 0.25)


# -- the runner's side, over a fake engine ------------------------------------------------------------------


class WordEngine:
    """Tokens are words (id = length of the word); [CLS]=101 before, [SEP]=102 after, like BERT."""

    n_ctx_seq = 6
    n_vocab = 200
    special_suffix = [102]

    def __init__(self) -> None:
        self.seen: list[list[int]] = []

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return [101, *(len(w) for w in text.split()), 102]

    def embed(self, prompts: list[list[int]], *, normalize: bool = True) -> list[list[float]]:
        self.seen.extend(prompts)
        return [[float(len(p)), 0.0] for p in prompts]

    def ran_out_of_memory(self) -> bool:
        return False


def test_runner_embeds_in_order_and_counts_tokens() -> None:
    engine = WordEngine()
    out = embedding.answer(engine, Embed(("a bb", (5, 6, 7))))
    assert out == Vectors([[4.0, 0.0], [3.0, 0.0]], prompt_eval_count=7)


def test_runner_truncates_keeping_the_end_token_or_refuses_naming_both_numbers() -> None:
    engine = WordEngine()
    text = "a bb ccc dddd eeeee ffffff ggggggg"  # 9 tokens with [CLS] and [SEP]
    out = embedding.answer(engine, Embed((text,), truncate=True))
    assert isinstance(out, Vectors) and engine.seen[-1] == [101, 1, 2, 3, 4, 102]
    refused = embedding.answer(engine, Embed(("x", text), truncate=False))
    assert isinstance(refused, Failure) and refused.kind == "context"
    assert (refused.n_tokens, refused.n_ctx) == (9, 6)


def test_runner_refuses_bad_inputs() -> None:
    engine = WordEngine()
    empty: list[int] = []
    for inputs in ([[500]], [empty]):
        out = embedding.answer(engine, Embed.of(inputs))
        assert isinstance(out, Failure) and out.kind == "request", inputs
    for raw in ([3.5], "text", [[1, True]]):  # not even an embed request: the runner's reader refuses it
        with pytest.raises(ProtocolError) as refused:
            decode_request(json.dumps({"op": "embed", "id": "7", "inputs": raw}).encode())
        assert refused.value.rid == "7", raw
    assert engine.seen == []
