"""Embeddings: request parsing and the runner's input handling (fast), then a real daemon with the real MiniLM
sentence-embedding model through the official `openai` and `ollama` packages and plain HTTP."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import openai
import pytest

from localllm.errors import InvalidRequest
from localllm.runner import embedding
from localllm.runner.protocol import Embed, Failure, ProtocolError, Vectors, decode_request
from localllm.server.embed_api import dimensions, encode_base64, encoding_format, ollama_inputs, openai_inputs

from .conftest import EMBED_FILE, EMBED_REPO, STORIES_REPO, Daemon, daemon_with, model_file
from .hubstub import HubStub

EMBED = f"hf.co/{EMBED_REPO}"
STORIES = f"hf.co/{STORIES_REPO}"
CAT, KITTEN, STOCKS = "The cat sits on the mat.", "A kitten is resting on a rug.", "Stock markets fell sharply today."


def dot(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


def norm(a: list[float]) -> float:
    return math.sqrt(dot(a, a))


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
    assert openai_inputs({"input": "hi"}) == ["hi"]
    assert openai_inputs({"input": ["a", "b"]}) == ["a", "b"]
    assert openai_inputs({"input": [1, 2, 3]}) == [[1, 2, 3]]
    assert openai_inputs({"input": [[1, 2], [3]]}) == [[1, 2], [3]]
    for bad in (None, "", [], [""], ["a", 1], [1, [2]], [[]], [-1], [True], [[1.5]], {"a": 1}):
        with pytest.raises(InvalidRequest) as info:
            openai_inputs({"input": bad})
        assert info.value.field == "input", bad


def test_dimensions_and_encoding_format() -> None:
    assert dimensions({}) is None and dimensions({"dimensions": 64}) == 64
    for bad in (0, -3, "64", 6.5, True):
        with pytest.raises(InvalidRequest) as info:
            dimensions({"dimensions": bad})
        assert info.value.field == "dimensions"
    assert encoding_format({}) == "float" and encoding_format({"encoding_format": "base64"}) == "base64"
    for bad in ("binary", 1):
        with pytest.raises(InvalidRequest) as info:
            encoding_format({"encoding_format": bad})
        assert info.value.field == "encoding_format"


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
    for inputs in ([[500]], [[]]):
        out = embedding.answer(engine, Embed.of(inputs))
        assert isinstance(out, Failure) and out.kind == "request", inputs
    for raw in ([3.5], "text", [[1, True]]):  # not even an embed request: the runner's reader refuses it
        with pytest.raises(ProtocolError) as refused:
            decode_request(json.dumps({"op": "embed", "id": "7", "inputs": raw}).encode())
        assert refused.value.rid == "7", raw
    assert engine.seen == []


# -- end to end: a real daemon, the real MiniLM model --------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    model_file(EMBED_FILE)
    with daemon_with(tmp_path_factory.mktemp("embed"), hub, (EMBED_REPO, STORIES_REPO)) as d:
        yield d


@pytest.fixture
def client(server: Daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def post(server: Daemon, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=60)


@pytest.mark.e2e
@pytest.mark.model
def test_openai_embeddings_are_unit_vectors_that_rank_meaning(client: openai.OpenAI) -> None:
    out = client.embeddings.create(model=EMBED, input=[CAT, KITTEN, STOCKS], encoding_format="float")
    vectors = [d.embedding for d in out.data]
    assert [d.index for d in out.data] == [0, 1, 2] and out.model == EMBED and out.object == "list"
    assert all(len(v) == 384 and abs(norm(v) - 1) < 1e-5 for v in vectors)
    assert dot(vectors[0], vectors[1]) == pytest.approx(0.64, abs=0.02)
    assert dot(vectors[0], vectors[2]) == pytest.approx(0.05, abs=0.03)
    assert dot(vectors[0], vectors[1]) > dot(vectors[0], vectors[2]) + 0.4
    assert out.usage.prompt_tokens == out.usage.total_tokens == 9 + 10 + 8  # with [CLS] and [SEP]


@pytest.mark.e2e
@pytest.mark.model
def test_openai_base64_decodes_to_the_same_floats(server: Daemon, client: openai.OpenAI) -> None:
    floats = post(server, "/v1/embeddings", {"model": EMBED, "input": CAT}).json()["data"][0]["embedding"]
    raw = post(server, "/v1/embeddings", {"model": EMBED, "input": CAT, "encoding_format": "base64"}).json()
    decoded = struct.unpack("<384f", base64.b64decode(raw["data"][0]["embedding"]))
    assert list(decoded) == pytest.approx(floats, abs=1e-7)
    sdk = client.embeddings.create(model=EMBED, input=CAT)  # the SDK asks for base64 and decodes it itself
    assert sdk.data[0].embedding == pytest.approx(floats, abs=1e-6)


@pytest.mark.e2e
@pytest.mark.model
def test_openai_dimensions_and_token_arrays(client: openai.OpenAI) -> None:
    short = client.embeddings.create(model=EMBED, input=[CAT, KITTEN], dimensions=64, encoding_format="float")
    assert all(len(d.embedding) == 64 and abs(norm(d.embedding) - 1) < 1e-5 for d in short.data)
    text = client.embeddings.create(model=EMBED, input=CAT, encoding_format="float").data[0].embedding
    cat_tokens = [101, 1996, 4937, 7719, 2006, 1996, 13523, 1012, 102]  # "The cat sits on the mat." in MiniLM
    one = client.embeddings.create(model=EMBED, input=cat_tokens, encoding_format="float")
    assert one.data[0].embedding == pytest.approx(text, abs=1e-5) and one.usage.prompt_tokens == 9
    two = client.embeddings.create(model=EMBED, input=[cat_tokens, cat_tokens[:4]], encoding_format="float")
    assert len(two.data) == 2 and two.usage.prompt_tokens == 13


@pytest.mark.e2e
@pytest.mark.model
def test_openai_errors(client: openai.OpenAI, server: Daemon) -> None:
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="hf.co/testorg/no-such-model", input=CAT)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=STORIES, input=CAT)
    assert "does not support embeddings" in str(info.value) and "stories260K" in str(info.value)
    for body, param in (
        ({"model": EMBED, "input": []}, "input"),
        ({"model": EMBED, "input": [CAT, 3]}, "input"),
        ({"model": EMBED, "input": CAT, "encoding_format": "binary"}, "encoding_format"),
        ({"model": EMBED, "input": CAT, "dimensions": 0}, "dimensions"),
        ({"model": EMBED, "input": CAT, "dimensions": 385}, "dimensions"),
        ({"model": EMBED, "input": [[10**9]]}, None),
        ({"input": CAT}, "model"),
    ):
        r = post(server, "/v1/embeddings", body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == param, (body, r.text)
    long = post(server, "/v1/embeddings", {"model": EMBED, "input": "word " * 600})
    assert long.status_code == 400 and long.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.e2e
@pytest.mark.model
def test_ollama_embed_and_legacy_embeddings(server: Daemon) -> None:
    api = ollama.Client(host=server.url)
    out = api.embed(model=EMBED, input=[CAT, KITTEN, STOCKS])
    vectors = [list(v) for v in out.embeddings]
    assert all(len(v) == 384 and abs(norm(v) - 1) < 1e-5 for v in vectors)
    assert dot(vectors[0], vectors[1]) > dot(vectors[0], vectors[2]) + 0.4
    assert out.prompt_eval_count == 27 and (out.total_duration or 0) > 0
    short = api.embed(model=EMBED, input=CAT, dimensions=64)
    assert len(short.embeddings[0]) == 64 and abs(norm(list(short.embeddings[0])) - 1) < 1e-5
    legacy = list(api.embeddings(model=EMBED, prompt=CAT).embedding)
    assert len(legacy) == 384 and abs(norm(legacy) - 1) > 0.1, "the legacy endpoint does not normalise"
    assert [x / norm(legacy) for x in legacy] == pytest.approx(vectors[0], abs=1e-5)


@pytest.mark.e2e
@pytest.mark.model
def test_ollama_errors(server: Daemon) -> None:
    api = ollama.Client(host=server.url)
    with pytest.raises(ollama.ResponseError) as info:
        api.embed(model=STORIES, input=CAT)
    assert info.value.status_code == 400 and "does not support embeddings" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        api.embed(model="hf.co/testorg/no-such-model", input=CAT)
    assert info.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as info:
        api.embed(model=EMBED, input="word " * 600, truncate=False)
    assert info.value.status_code == 400 and "602" in info.value.error and "512" in info.value.error
    cut = api.embed(model=EMBED, input="word " * 600)  # truncate defaults to true
    assert len(cut.embeddings) == 1 and cut.prompt_eval_count == 512
    for body in ({"model": EMBED, "input": []}, {"model": EMBED, "input": [1]}, {"model": EMBED, "truncate": "no"}):
        r = post(server, "/api/embed", body)
        assert r.status_code == 400 and "error" in r.json(), (body, r.text)
    loaded = post(server, "/api/embed", {"model": EMBED}).json()
    assert loaded["embeddings"] == [] and loaded["model"].startswith(EMBED), "no input loads the model"
    assert post(server, "/api/embeddings", {"model": EMBED, "prompt": ""}).json() == {"embedding": []}
    too_long = post(server, "/api/embeddings", {"model": EMBED, "prompt": "word " * 600})
    assert too_long.status_code == 400 and "602" in too_long.json()["error"]
