"""The clients a newcomer tries (issue 18, items 3 and 12), against a real daemon and the real MiniLM model:
token-id input refused on /v1/embeddings unless the operator opts in, TEI's `POST /embed` and `POST /`, and
huggingface_hub's InferenceClient(base_url=...) with no model."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError

from ..conftest import CHAT_REPO, EMBED_FILE, EMBED_REPO, model_file
from ..hubstub import HubStub
from .conftest import Daemon, daemon_with

EMBED = f"hf.co/{EMBED_REPO}"
CHAT = f"hf.co/{CHAT_REPO}"
CAT = "The cat sits on the mat."
CAT_TOKENS = [101, 1996, 4937, 7719, 2006, 1996, 13523, 1012, 102]  # MiniLM's own ids for CAT


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    """A daemon whose default model is the embedding model (as a TEI server serves one)."""
    model_file(EMBED_FILE)
    with daemon_with(tmp_path_factory.mktemp("tei"), hub, (EMBED_REPO,), LOCALLLM_DEFAULT_MODEL=EMBED) as d:
        yield d


def vector(d: Daemon, text: str) -> list[float]:
    r = httpx.post(d.url + "/api/embed", json={"model": EMBED, "input": text}, timeout=60)
    assert r.status_code == 200, r.text
    out: list[float] = r.json()["embeddings"][0]
    return out


def close(a: Any, b: list[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(float(x), y, abs_tol=1e-5) for x, y in zip(a, b, strict=True))


# -- item 3: token ids --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokens", [CAT_TOKENS, [CAT_TOKENS, CAT_TOKENS[:4]]])
def test_token_ids_are_refused_by_default_saying_to_send_text(embedder: Daemon, tokens: list[Any]) -> None:
    client = openai.OpenAI(base_url=embedder.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=EMBED, input=tokens, encoding_format="float")
    error = info.value.body
    assert isinstance(error, dict)
    assert error["param"] == "input" and error["type"] == "invalid_request_error"
    assert "Send the text instead" in error["message"]
    assert "check_embedding_ctx_length=False" in error["message"]
    assert "LOCALLLM_EMBED_TOKEN_IDS=1" in error["message"]


def test_text_still_embeds(embedder: Daemon) -> None:
    client = openai.OpenAI(base_url=embedder.url + "/v1", api_key="unused", max_retries=0)
    out = client.embeddings.create(model=EMBED, input=CAT, encoding_format="float")
    assert close(out.data[0].embedding, vector(embedder, CAT))


# -- item 12: TEI and InferenceClient ------------------------------------------------------------------------


def test_tei_embed_answers_a_list_of_vectors(embedder: Daemon) -> None:
    one = httpx.post(embedder.url + "/embed", json={"inputs": CAT}, timeout=60)
    assert one.status_code == 200, one.text
    assert len(one.json()) == 1 and close(one.json()[0], vector(embedder, CAT))
    two = httpx.post(embedder.url + "/embed", json={"inputs": [CAT, "a kitten"], "normalize": False}, timeout=60)
    assert two.status_code == 200 and len(two.json()) == 2
    assert abs(math.fsum(x * x for x in two.json()[0]) - 1) > 1e-3, "normalize: false gives the raw vector"
    bad = httpx.post(embedder.url + "/embed", json={"inputs": [], "model": EMBED}, timeout=60)
    assert bad.status_code == 422 and bad.json()["error_type"] == "validation"


def test_inference_client_feature_extraction_gets_embeddings(embedder: Daemon) -> None:
    client = InferenceClient(base_url=embedder.url)
    out = client.feature_extraction(CAT)
    flat = out.reshape(-1).tolist()
    assert close(flat, vector(embedder, CAT))


def test_post_root_still_generates_for_a_generative_model(embedder: Daemon, hub: HubStub) -> None:
    """`POST /` with a generative model is TGI's generation, even where the default is an embedding model."""
    pulled = embedder.cli("pull", CHAT)
    assert pulled.returncode == 0, pulled.stderr
    body = {"inputs": "Once upon a time", "model": CHAT, "parameters": {"max_new_tokens": 4}}
    r = httpx.post(embedder.url + "/", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert isinstance(r.json(), list) and r.json()[0]["generated_text"]


@pytest.fixture(scope="module")
def chatter(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    with daemon_with(tmp_path_factory.mktemp("chat"), hub, (CHAT_REPO,), LOCALLLM_DEFAULT_MODEL=CHAT) as d:
        yield d


def test_inference_client_chat_completion_with_no_model_uses_the_default(chatter: Daemon) -> None:
    client = InferenceClient(base_url=chatter.url)
    out = client.chat_completion([{"role": "user", "content": "Once upon a time"}], max_tokens=4, seed=1)
    assert out.choices[0].message.content
    assert out.model == CHAT + ":latest" or out.model.startswith(CHAT)


def test_inference_client_chat_completion_without_a_default_is_a_422_saying_how(daemon: Daemon) -> None:
    client = InferenceClient(base_url=daemon.url)
    with pytest.raises(HfHubHTTPError) as info:
        client.chat_completion([{"role": "user", "content": "hi"}], max_tokens=4)
    assert info.value.response is not None and info.value.response.status_code == 422
    assert "LOCALLLM_DEFAULT_MODEL" in str(info.value)
    raw = httpx.post(daemon.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert raw.status_code == 422 and raw.json()["error"]["param"] == "model"
