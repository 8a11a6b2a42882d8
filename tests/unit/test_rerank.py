"""Rerank and detokenize without a model: llama-server's pair format, the runner's answers, the dialect's
sorting and encoders (the real daemon and llama.cpp: tests/e2e/test_rerank_tokenize.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from localllm.domain.errors import InvalidRequest
from localllm.domain.events import Ranking
from localllm.runner import detokenize, rerank
from localllm.runner.protocol import Detokenize, Failure, ProtocolError, Rerank, Scores, TokenList, decode_request
from localllm.runner.rerank import RerankFrame
from localllm.server import dialects
from localllm.server.dialects import rerank as dialect
from localllm.server.dialects import tokenize

from .test_registry import app_client


class FakeEngine:
    """Words are tokens (id = 10 + length), `embed` scores a prompt by its length."""

    n_ctx_seq = 12
    n_vocab = 100

    def __init__(self, frame: RerankFrame | None) -> None:
        self.rerank_frame = frame
        self.calls: list[list[list[int]]] = []
        self.parsed: list[bool] = []

    def tokenize(self, text: str, *, add_bos: bool = True, parse_special: bool = True) -> list[int]:
        assert not add_bos
        self.parsed.append(parse_special)
        return [10 + len(w) for w in text.split()]

    def embed(self, prompts: list[list[int]], *, normalize: bool = True) -> list[list[float]]:
        assert not normalize
        self.calls.append(prompts)
        return [[float(len(p)), 99.0] for p in prompts]

    def ran_out_of_memory(self) -> bool:
        return False

    def piece(self, token: int, *, special: bool = False) -> bytes:
        assert special
        return b"<s>" if token == 1 else f"t{token}".encode()


BERT = RerankFrame(bos=101, eos=102, sep=None, template=None)


def test_pairs_are_formatted_as_llama_server_does() -> None:
    engine = FakeEngine(BERT)
    assert rerank.pair_tokens(engine, BERT, "a bb", "ccc") == [101, 11, 12, 102, 13, 102]
    assert engine.parsed == [False, False]  # query and document: special tokens in them are text
    with_sep = RerankFrame(bos=1, eos=2, sep=3, template=None)
    assert rerank.pair_tokens(engine, with_sep, "a", "b") == [1, 11, 2, 3, 11, 2]
    bare = RerankFrame(bos=None, eos=None, sep=None, template=None)
    assert rerank.pair_tokens(engine, bare, "a", "b") == [11, 11]
    templated = RerankFrame(bos=1, eos=2, sep=None, template="Q: {query} D: {document}")
    assert rerank.pair_tokens(engine, templated, "aa", "bbb") == [12, 12, 12, 13]  # "Q:" "aa" "D:" "bbb"
    assert engine.parsed[-1] is True


def test_all_pairs_go_to_the_engine_in_one_call_and_scores_are_first_outputs() -> None:
    engine = FakeEngine(BERT)
    event = rerank.answer(engine, Rerank("q", ("a", "b c", "d e f")))
    assert event == Scores((5.0, 6.0, 7.0), 18)
    assert len(engine.calls) == 1 and len(engine.calls[0]) == 3


def test_rerank_refusals() -> None:
    not_a_reranker = rerank.answer(FakeEngine(None), Rerank("q", ("a",)))
    assert isinstance(not_a_reranker, Failure) and not_a_reranker.kind == "request"
    long = rerank.answer(FakeEngine(BERT), Rerank("q", ("a " * 20,)))
    assert isinstance(long, Failure) and (long.kind, long.n_tokens, long.n_ctx) == ("context", 24, 12)
    assert "document 0" in long.message
    with pytest.raises(ProtocolError, match="documents must be a list of strings"):
        decode_request(b'{"op":"rerank","id":"1","query":"q","documents":[3]}')


def test_detokenize_writes_special_tokens_and_refuses_ids_outside_the_vocabulary() -> None:
    engine = FakeEngine(BERT)
    assert detokenize.answer(engine, Detokenize((1, 5))) == TokenList((1, 5), (b"<s>", b"t5"))
    bad = detokenize.answer(engine, Detokenize((1, 100)))
    assert isinstance(bad, Failure) and bad.kind == "request" and "0..99" in bad.message
    with pytest.raises(ProtocolError, match="tokens must be a list of token ids"):
        decode_request(b'{"op":"detokenize","id":"2","tokens":[true]}')


def test_ranked_sorts_by_score_keeps_ties_in_order_and_cuts_to_top_n() -> None:
    scores = [0.5, 2.0, -1.0, 2.0]
    assert [r.index for r in dialect.ranked(scores, None)] == [1, 3, 0, 2]
    assert [r.index for r in dialect.ranked(scores, 2)] == [1, 3]
    assert [r.index for r in dialect.ranked(scores, 10)] == [1, 3, 0, 2]


def test_documents_are_strings_or_text_objects() -> None:
    assert dialect.texts_of(["a", {"text": "b", "title": "t"}], "documents") == ["a", "b"]
    with pytest.raises(InvalidRequest) as bad:
        dialect.texts_of(["a", {"title": "t"}], "documents")
    assert bad.value.field == "documents" and "documents[1]" in str(bad.value)


def test_encoders() -> None:
    result = Ranking([0.0, 3.0], prompt_eval_count=11)
    top = dialect.ranked(result.scores, 1)
    jina = dialect.encode_jina("m", ["x", "y"], result, top, True)
    assert jina["results"] == [{"index": 1, "relevance_score": 3.0, "document": {"text": "y"}}]
    assert jina["usage"] == {"prompt_tokens": 11, "total_tokens": 11} and jina["model"] == "m"
    v2 = dialect.encode_cohere_v2(["x", "y"], result, top, False)
    assert v2["results"] == [{"index": 1, "relevance_score": 3.0}] and v2["meta"]["api_version"]["version"] == "2"
    tei = dialect.encode_tei(["x", "y"], result, False, True)
    assert tei == [
        {"index": 1, "score": 1 / (1 + math.exp(-3.0)), "text": "y"},
        {"index": 0, "score": 0.5, "text": "x"},
    ]
    assert [r["score"] for r in dialect.encode_tei(["x", "y"], result, True, False)] == [3.0, 0.0]
    assert dialect.sigmoid(-1000.0) == 0.0 and dialect.sigmoid(1000.0) == 1.0


def test_token_pieces_and_ids() -> None:
    assert tokenize.piece_json(b"hi") == "hi"
    assert tokenize.piece_json(b"\xe2\x82") == [0xE2, 0x82]  # half a character: its bytes, as llama-server
    with pytest.raises(InvalidRequest) as bad:
        tokenize.token_ids([1, -2])
    assert bad.value.field == "tokens"


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/v1/rerank", "rerank"),
        ("/rerank", "rerank"),
        ("/v2/rerank", "rerank"),
        ("/api/rerank", "rerank"),
        ("/detokenize", "tokenize"),
        ("/api/tokenize", "tokenize"),
        ("/api/detokenize", "tokenize"),
        ("/tokenize", "compat"),
    ],
)
def test_owners(path: str, name: str) -> None:
    assert dialects.owner(path, "POST").name == name
    assert path in dialects.paths()


def test_bad_bodies_are_refused_in_each_shape_naming_the_field(tmp_path: Path) -> None:
    for client in app_client(tmp_path, default_model="m"):
        r = client.post("/v1/rerank", json={"model": "m", "documents": ["a"]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "query"
        r = client.post("/v2/rerank", json={"query": "q", "documents": ["a"], "top_n": 0})
        assert r.status_code == 400 and r.json()["error"]["param"] == "top_n"
        r = client.post("/rerank", json={"query": "q", "texts": [1]})
        assert r.status_code == 422 and "texts[0]" in r.json()["error"]  # TEI's shape: TGI's
        r = client.post("/api/rerank", json={"model": "m", "query": "q", "documents": ["a"], "extra": 1})
        assert r.headers["x-localllm-ignored-fields"] == "extra", "an unknown field is reported (fieldpolicy)"
        r = client.post("/tokenize", json={"content": "x", "with_pieces": "yes"})
        assert r.status_code == 422 and "with_pieces" in r.json()["error"]
        r = client.post("/detokenize", json={"tokens": [1, "a"]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "tokens"
        r = client.post("/api/detokenize", json={"tokens": [1]})
        assert r.status_code == 400 and r.json()["error"] == "model is required"
