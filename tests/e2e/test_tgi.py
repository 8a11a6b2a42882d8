"""Hugging Face TGI's API through the official `text-generation` client and huggingface_hub's InferenceClient,
against a real daemon and real llama.cpp (stories260K, greedy unless said otherwise)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from huggingface_hub import InferenceClient

from ..conftest import STORIES_REPO
from ..hubstub import HubStub
from .conftest import Daemon, daemon_with

text_generation = pytest.importorskip(
    "text_generation", reason="the `text-generation` client (pip install --no-deps text-generation)"
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.model,
    # the client calls pydantic's deprecated `.dict()`
    pytest.mark.filterwarnings("ignore::DeprecationWarning:text_generation.*"),
]

STORIES = f"hf.co/{STORIES_REPO}"
PROMPT = "Once upon a time"
GREEDY_12 = ", there was a little girl named Lily. She"  # stories260K's greedy continuation, 12 tokens


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    env = {"LOCALLLM_DEFAULT_MODEL": STORIES, "LOCALLLM_NUM_PARALLEL": "2"}
    with daemon_with(tmp_path_factory.mktemp("tgi"), hub, (STORIES_REPO,), **env) as d:
        yield d


@pytest.fixture
def client(server: Daemon) -> Any:
    return text_generation.Client(server.url, timeout=60)


def test_generate_with_details_prefill_and_top_tokens(client: Any) -> None:
    out = client.generate(PROMPT, max_new_tokens=12, decoder_input_details=True, top_n_tokens=2)
    assert out.generated_text == GREEDY_12
    details = out.details
    assert details.finish_reason == "length" and details.generated_tokens == 12 and details.seed is None
    assert "".join(t.text for t in details.tokens) == GREEDY_12
    assert [t.id for t in details.tokens][:2] == [432, 383]  # "," " there"
    assert all(t.logprob is not None and t.logprob <= 0 and not t.special for t in details.tokens)
    # prefill: the prompt's tokens from BOS on (log-probabilities are not computed for them)
    assert [t.id for t in details.prefill] == [1, 403, 407, 261, 378]
    assert details.prefill[0].text == "<s>" and all(t.logprob is None for t in details.prefill)
    # greedy: the chosen token is the most likely of the top two
    assert len(details.top_tokens) == 12
    for token, top in zip(details.tokens, details.top_tokens, strict=True):
        assert len(top) == 2 and top[0].id == token.id and math.isclose(top[0].logprob, token.logprob)
        assert top[1].logprob <= top[0].logprob


def test_generate_stream_one_event_per_token(client: Any) -> None:
    events = list(client.generate_stream(PROMPT, max_new_tokens=12))
    assert len(events) == 12
    assert "".join(e.token.text for e in events) == GREEDY_12
    assert all(e.generated_text is None and e.details is None for e in events[:-1])
    last = events[-1]
    assert last.generated_text == GREEDY_12
    assert last.details.finish_reason == "length" and last.details.generated_tokens == 12


def test_best_of_returns_the_most_likely_candidate(client: Any) -> None:
    out = client.generate(PROMPT, max_new_tokens=8, best_of=3, do_sample=True, temperature=1.5)
    others = out.details.best_of_sequences
    assert len(others) == 2
    assert out.details.seed is not None and len({out.details.seed, *(o.seed for o in others)}) == 3

    def mean(tokens: list[Any]) -> float:
        return float(sum(t.logprob for t in tokens)) / len(tokens)

    assert all(mean(out.details.tokens) >= mean(o.tokens) for o in others)
    assert all(o.generated_text == "".join(t.text for t in o.tokens) for o in others)


def test_sampling_with_a_seed_is_reproducible_and_reports_it(client: Any) -> None:
    first = client.generate(PROMPT, max_new_tokens=10, do_sample=True, temperature=1.2, seed=42)
    again = client.generate(PROMPT, max_new_tokens=10, do_sample=True, temperature=1.2, seed=42)
    assert first.generated_text == again.generated_text and first.details.seed == 42


def test_stop_sequence_return_full_text_and_regex_grammar(client: Any) -> None:
    out = client.generate(PROMPT, max_new_tokens=20, stop_sequences=["girl"], return_full_text=True)
    assert out.generated_text == PROMPT + ", there was a little "
    assert out.details.finish_reason == "stop_sequence"
    grammar = text_generation.types.Grammar(type="regex", value=r"\d{3}-\d{2}")
    out = client.generate(PROMPT, max_new_tokens=20, grammar=grammar)
    assert re.fullmatch(r"\d{3}-\d{2}", out.generated_text)
    # the grammar is complete, so the model ends: TGI lists the end-of-sequence token last
    assert out.details.finish_reason == "eos_token"
    assert out.details.tokens[-1].special and out.details.tokens[-1].text == "</s>"


def test_json_grammar_output_parses(server: Daemon) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    for grammar in ({"type": "json", "value": schema}, {"type": "json_schema", "value": {"schema": schema}}):
        body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 40, "grammar": grammar}}
        out = httpx.post(server.url + "/generate", json=body, timeout=60).json()
        assert isinstance(json.loads(out["generated_text"])["n"], int)


def test_inference_client_details_and_stream(server: Daemon) -> None:
    hf = InferenceClient(base_url=server.url)
    out = hf.text_generation(PROMPT, max_new_tokens=12, details=True)
    assert out.generated_text == GREEDY_12 and out.details is not None
    assert out.details.finish_reason == "length" and len(out.details.tokens) == 12
    assert hf.text_generation(PROMPT, max_new_tokens=12) == GREEDY_12
    events = list(hf.text_generation(PROMPT, max_new_tokens=12, details=True, stream=True))
    assert "".join(e.token.text for e in events) == GREEDY_12
    assert events[-1].generated_text == GREEDY_12 and events[-1].details is not None
    assert events[-1].details.finish_reason == "length"
    assert "".join(hf.text_generation(PROMPT, max_new_tokens=12, stream=True)) == GREEDY_12


def test_stream_bytes_have_no_space_and_no_done(server: Daemon) -> None:
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 3}}
    response = httpx.post(server.url + "/generate_stream", json=body, timeout=60)
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = response.content
    assert raw.startswith(b'data:{"index":1,"token":{"id":432,"text":","')
    assert b"data: " not in raw and b"[DONE]" not in raw
    events = raw.split(b"\n\n")
    assert events[-1] == b"" and len(events) == 4
    last = json.loads(events[-2].removeprefix(b"data:"))
    assert last["generated_text"] == ", there was" and last["details"]["input_length"] == 5
    # `POST /` with `stream` is the same stream; without it, a list of one answer
    same = httpx.post(server.url + "/", json={**body, "stream": True}, timeout=60).content
    assert same == raw
    whole = httpx.post(server.url + "/", json=body, timeout=60).json()
    assert isinstance(whole, list) and whole[0]["generated_text"] == ", there was"


def test_info_health_and_tokenize(server: Daemon) -> None:
    info = httpx.get(server.url + "/info").json()
    assert info["model_id"] == STORIES + ":latest" and info["max_best_of"] >= 2
    health = httpx.get(server.url + "/health")
    assert health.status_code == 200 and health.content == b""
    tokens = httpx.post(server.url + "/tokenize", json={"inputs": "Once upon a time"}).json()
    assert [t["id"] for t in tokens] == [1, 403, 407, 261, 378]
    assert [(t["text"], t["start"], t["stop"]) for t in tokens[1:]] == [
        ("Once", 0, 4),
        (" upon", 4, 9),
        (" a", 9, 11),
        (" time", 11, 16),
    ]


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"top_p": 1.0}, "parameters.top_p"),
        ({"temperature": 0}, "parameters.temperature"),
        ({"max_new_tokens": 0}, "parameters.max_new_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "parameters.stop"),
        ({"best_of": 2}, "parameters.best_of"),  # best_of needs sampling
        ({"grammar": {"type": "regex", "value": r"(a)\1"}}, "parameters.grammar.value"),
        ({"top_n_tokens": 99}, "parameters.top_n_tokens"),
        ({"audio": 1}, "parameters.audio"),  # would change the answer: refused (an unknown one is reported)
    ],
)
def test_validation_errors_are_422_in_tgi_shape(server: Daemon, parameters: dict[str, Any], field: str) -> None:
    response = httpx.post(server.url + "/generate", json={"inputs": PROMPT, "parameters": parameters})
    assert response.status_code == 422
    body = response.json()
    assert body["error_type"] == "validation" and field in body["error"]


def test_an_unknown_parameter_is_reported_not_dropped(server: Daemon) -> None:
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 2, "typo": 1}, "extra": True}
    response = httpx.post(server.url + "/generate", json=body, timeout=60)
    assert response.status_code == 200 and response.headers["x-localllm-ignored-fields"] == "extra, parameters.typo"


def test_client_raises_typed_errors(client: Any, server: Daemon) -> None:
    with pytest.raises(text_generation.errors.ValidationError, match="top_n_tokens"):
        client.generate(PROMPT, max_new_tokens=4, top_n_tokens=99)
    body = {"inputs": PROMPT, "parameters": {"decoder_input_details": True}}
    response = httpx.post(server.url + "/generate_stream", json=body)
    error = text_generation.errors.parse_error(response.status_code, response.json())
    assert isinstance(error, text_generation.errors.ValidationError) and "streaming" in str(error)
    # a model named in the body (localllm's one addition) that is not there
    response = httpx.post(server.url + "/generate", json={"inputs": PROMPT, "model": "nope"})
    assert response.status_code == 404 and response.json()["error_type"] == "not_found"
    assert isinstance(text_generation.errors.parse_error(404, response.json()), text_generation.errors.NotFoundError)
