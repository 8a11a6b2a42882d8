"""Embeddings through a real daemon with the real MiniLM sentence-embedding model, through the official
`openai` and `ollama` packages and plain HTTP (request parsing and the runner's side: tests/unit/test_embed.py)."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import openai
import pytest

from ..conftest import EMBED_FILE, EMBED_REPO, STORIES_REPO, model_file
from ..hubstub import HubStub
from .conftest import Daemon, daemon_with

EMBED = f"hf.co/{EMBED_REPO}"
STORIES = f"hf.co/{STORIES_REPO}"
CAT, KITTEN, STOCKS = "The cat sits on the mat.", "A kitten is resting on a rug.", "Stock markets fell sharply today."


def dot(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


def norm(a: list[float]) -> float:
    return math.sqrt(dot(a, a))


# -- end to end: a real daemon, the real MiniLM model --------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    model_file(EMBED_FILE)
    # token-id input is refused unless the operator opts in (tests/e2e/test_clients_newcomer.py): this one does
    with daemon_with(
        tmp_path_factory.mktemp("embed"), hub, (EMBED_REPO, STORIES_REPO), LOCALLLM_EMBED_TOKEN_IDS="1"
    ) as d:
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
