"""Rerank and tokenize through the real daemon (issue 15 parts 1-2): a small reranker built from all-MiniLM plus a
seeded classification head, its scores checked against llama.cpp computing the same pairs in this process."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import EMBED_FILE, STORIES_REPO, model_file
from ..ggufcopy import write_reranker
from ..hubstub import HubStub
from .conftest import Daemon, start_daemon, stop_daemon

RERANK_REPO = "testorg/minilm-reranker-GGUF"
RERANKER = f"hf.co/{RERANK_REPO}"
STORIES = f"hf.co/{STORIES_REPO}"
QUERY = "what do cats eat"
DOCUMENTS = [
    "Cats are carnivores and eat meat such as fish and chicken.",
    "The stock market closed higher on Tuesday.",
    "A kitten needs several small meals a day.",
    "Paris is the capital of France.",
    "Dogs and cats are common household pets.",
]


@pytest.fixture(scope="module")
def reranker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reranker") / "minilm-reranker.gguf"
    return write_reranker(model_file(EMBED_FILE), out, seed=15)


def _llamacpp_scores(reranker: Path) -> tuple[list[float], list[float]]:
    """llama.cpp's own scores for (QUERY, each document), formatted as llama-server's format_prompt_rerank does:
    [BOS] query [EOS] document [EOS] (a BERT vocabulary adds BOS and EOS, not SEP), without special-token parsing.
    Twice: all pairs in one llama_decode, one sequence each (as `Llama.embed` packs its inputs, and as the
    daemon's runner evaluates one request), and each pair alone. The two differ by up to ~1e-3: an F16 model's
    matrix products take another path for a bigger batch."""
    import llama_cpp

    llm = llama_cpp.Llama(
        str(reranker),
        embedding=True,
        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_RANK,
        n_ctx=512,
        flash_attn=False,
        verbose=False,
    )
    vocab = llm._model.vocab
    assert llama_cpp.llama_vocab_get_add_bos(vocab) and llama_cpp.llama_vocab_get_add_eos(vocab)
    assert not llama_cpp.llama_vocab_get_add_sep(vocab)
    bos, eos = llama_cpp.llama_vocab_bos(vocab), llama_cpp.llama_vocab_eos(vocab)
    query = llm.tokenize(QUERY.encode(), add_bos=False, special=False)
    pairs = [[bos, *query, eos, *llm.tokenize(doc.encode(), add_bos=False, special=False), eos] for doc in DOCUMENTS]

    def run(group: list[list[int]]) -> list[float]:
        llm._batch.reset()  # type: ignore[no-untyped-call]
        for seq, tokens in enumerate(group):
            llm._batch.add_sequence(tokens, seq, True)
        llm._ctx.kv_cache_clear()  # type: ignore[no-untyped-call]
        llm._ctx.decode(llm._batch)
        return [float(llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, seq)[0]) for seq in range(len(group))]

    together = run(pairs)
    alone = [run([pair])[0] for pair in pairs]
    llm.close()
    return together, alone


@pytest.fixture(scope="module")
def scores(reranker: Path) -> tuple[list[float], list[float]]:
    return _llamacpp_scores(reranker)


@pytest.fixture(scope="module")
def expected(scores: tuple[list[float], list[float]]) -> list[float]:
    together, alone = scores
    assert len(set(together)) == len(together)  # distinct: the order is well defined
    assert _order(alone) == _order(together) and alone == pytest.approx(together, abs=2e-3)
    return together


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory, reranker: Path) -> Iterator[Daemon]:
    repos = {
        RERANK_REPO: {"minilm-reranker-F16.gguf": reranker},
        STORIES_REPO: {"stories260K.gguf": model_file("stories260K.gguf")},
    }
    with HubStub(repos) as hub:
        # Flash attention off on both sides: llama.cpp's "auto" may pick it or not, and it moves scores by ~1e-4.
        daemon = start_daemon(tmp_path_factory.mktemp("rerank"), hub, LOCALLLM_FLASH_ATTENTION="off")
        try:
            for name in (RERANKER, STORIES):
                pulled = daemon.cli("pull", name)
                assert pulled.returncode == 0, pulled.stderr
            yield daemon
        finally:
            stop_daemon(daemon)


def _order(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def post(d: Daemon, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(d.url + path, json=body, timeout=120)


def test_a_reranker_shows_the_rerank_capability(d: Daemon) -> None:
    show = post(d, "/api/show", {"model": RERANKER}).json()
    assert show["capabilities"] == ["rerank"]


def test_jina_cohere_shape_has_llamacpps_order_and_scores(d: Daemon, expected: list[float]) -> None:
    documents: list[object] = [DOCUMENTS[0], {"text": DOCUMENTS[1]}, *DOCUMENTS[2:]]
    r = post(d, "/v1/rerank", {"model": RERANKER, "query": QUERY, "documents": documents, "return_documents": True})
    assert r.status_code == 200, r.text
    out = r.json()
    results = out["results"]
    assert [x["index"] for x in results] == _order(expected)
    for x in results:
        assert x["relevance_score"] == pytest.approx(expected[x["index"]], abs=1e-4)
        assert x["document"] == {"text": DOCUMENTS[x["index"]]}
    assert out["model"] == RERANKER and out["id"]
    assert out["usage"]["total_tokens"] > 5 * 4

    plain = post(d, "/rerank", {"model": RERANKER, "query": QUERY, "documents": DOCUMENTS, "top_n": 2}).json()
    assert [x["index"] for x in plain["results"]] == _order(expected)[:2]
    assert all("document" not in x for x in plain["results"])


def test_cohere_v2_shape_honours_top_n(d: Daemon, expected: list[float]) -> None:
    r = post(d, "/v2/rerank", {"model": RERANKER, "query": QUERY, "documents": DOCUMENTS, "top_n": 3})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == _order(expected)[:3]
    assert [x["relevance_score"] for x in results] == pytest.approx(
        [expected[i] for i in _order(expected)[:3]], abs=1e-4
    )
    assert "meta" in r.json()


def test_tei_and_ollama_shapes(d: Daemon, expected: list[float]) -> None:
    tei = post(d, "/rerank", {"model": RERANKER, "query": QUERY, "texts": DOCUMENTS, "return_text": True})
    assert tei.status_code == 200, tei.text
    rows = tei.json()
    assert [x["index"] for x in rows] == _order(expected)
    for x in rows:
        assert x["score"] == pytest.approx(1 / (1 + math.exp(-expected[x["index"]])), abs=1e-4)
        assert x["text"] == DOCUMENTS[x["index"]]
    raw = post(d, "/rerank", {"model": RERANKER, "query": QUERY, "texts": DOCUMENTS, "raw_scores": True}).json()
    assert [x["score"] for x in raw] == pytest.approx(sorted(expected, reverse=True), abs=1e-4)

    ollama = post(d, "/api/rerank", {"model": RERANKER, "query": QUERY, "documents": DOCUMENTS, "top_n": 1})
    assert ollama.status_code == 200, ollama.text
    assert [x["index"] for x in ollama.json()["results"]] == _order(expected)[:1]
    assert ollama.json()["prompt_eval_count"] > 0


def test_a_generative_model_is_refused(d: Daemon) -> None:
    r = post(d, "/v1/rerank", {"model": STORIES, "query": QUERY, "documents": DOCUMENTS})
    assert r.status_code == 400
    error = r.json()["error"]
    assert "generative model, not a reranker" in error["message"] and error["param"] == "model"
    assert post(d, "/api/rerank", {"model": STORIES, "query": "q", "documents": ["x"]}).status_code == 400
    bad = post(d, "/v1/rerank", {"model": RERANKER, "query": QUERY, "documents": [3]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "documents"


@pytest.mark.parametrize("model", [STORIES, RERANKER])
def test_tokenize_then_detokenize_round_trips_with_pieces(d: Daemon, model: str) -> None:
    text = "Once upon a time, a little cat"
    r = post(d, "/tokenize", {"model": model, "content": text, "with_pieces": True})
    assert r.status_code == 200, r.text
    tokens = r.json()["tokens"]
    ids = [t["id"] for t in tokens]
    assert len(ids) > 3 and all(isinstance(t["piece"], str) for t in tokens)
    plain = post(d, "/tokenize", {"model": model, "content": text}).json()["tokens"]
    assert plain == ids
    content = post(d, "/detokenize", {"model": model, "tokens": ids}).json()["content"]
    assert content == "".join(t["piece"] for t in tokens)
    # What llama.cpp's own detokenize writes (llama-server's too): SentencePiece marks the first word's boundary
    # with a space; the WordPiece (BERT) vocabulary is lower-cased and splits punctuation off.
    assert content == {STORIES: " " + text, RERANKER: " once upon a time , a little cat"}[model]
    again = post(d, "/tokenize", {"model": model, "content": content.lstrip()}).json()["tokens"]
    assert again == ids

    api = post(d, "/api/tokenize", {"model": model, "content": text}).json()
    assert api == {"model": model, "tokens": ids}
    back = post(d, "/api/detokenize", {"model": model, "tokens": ids}).json()
    assert back == {"model": model, "content": content}


def test_tokenize_specials_and_bad_ids(d: Daemon) -> None:
    with_bos = post(d, "/tokenize", {"model": STORIES, "content": "Hi", "add_special": True, "with_pieces": True})
    assert with_bos.json()["tokens"][0] == {"id": 1, "piece": "<s>"}
    bad = post(d, "/detokenize", {"model": STORIES, "tokens": [1, 10**9]})
    assert bad.status_code == 400 and "vocabulary" in bad.json()["error"]["message"]
    assert bad.json()["error"]["param"] == "tokens"
    # the other /tokenize bodies keep their dialects
    tgi = post(d, "/tokenize", {"model": STORIES, "inputs": "Hi"})
    assert tgi.status_code == 200 and isinstance(tgi.json(), list)
    vllm = post(d, "/tokenize", {"model": STORIES, "prompt": "Hi"})
    assert vllm.status_code == 200 and "count" in vllm.json()
