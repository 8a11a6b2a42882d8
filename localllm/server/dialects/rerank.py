"""Reranking: a query scored against documents by a reranker GGUF (a cross-encoder, pooling type rank).

    POST /v1/rerank, POST /rerank   Jina's and Cohere's v1 shape (what llama-server and vLLM answer):
        {"model", "query", "documents": [str | {"text": str}], "top_n"?, "return_documents"?}
        -> {"id", "model", "object": "list", "results": [{"index", "relevance_score", "document"?: {"text"}}],
            "usage": {"prompt_tokens", "total_tokens"}}
    POST /v2/rerank                 Cohere v2's shape: the same body -> {"id", "results": [{"index",
                                    "relevance_score", "document"?}], "meta": {"api_version", "billed_units"}}
    POST /rerank with `texts`       text-embeddings-inference's shape (dispatched by the body):
        {"query", "texts": [str], "raw_scores"?, "return_text"?, "truncate"?, "model"?}
        -> [{"index", "score", "text"?}]        (scores through a sigmoid unless raw_scores, as TEI)
    POST /api/rerank                Ollama-style: {"model", "query", "documents": [str], "top_n"?,
                                    "return_documents"?, "keep_alive"?} -> {"model", "results": [{"index",
                                    "relevance_score", "document"?: str}], "total_duration", "load_duration",
                                    "prompt_eval_count"}

Results are sorted by score, highest first, and cut to `top_n`. A score is llama.cpp's raw classifier output
for the pair (what llama-server returns). The model is named by `model`, else LOCALLLM_DEFAULT_MODEL; a model
that is not a reranker is a 400 naming `model`. Errors: OpenAI's shape on the Jina/Cohere routes, TGI's
`{"error", "error_type"}` for TEI's body, Ollama's `{"error"}` on /api/rerank.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from msgspec import Meta
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...domain.errors import InvalidRequest
from ...domain.events import Ranking
from ...domain.limits import MAX_RERANK_DOCUMENTS, PROMPT_MAX_BYTES
from ...domain.names import parse_name
from .. import requests as rq
from ..errors import guarded
from ..replies import UNSET, OllamaError, OpenAIError, Reply, TGIError, Unset, responses
from ..streaming import until_disconnect
from ..wire import Strict, check_text, request_body, request_body_of
from .contract import Dialect
from .ollama import api as ollama_api
from .openai import api as openai_api
from .shared import Presence, choose_model, service_of
from .tgi import api as tgi_api

# -- the request bodies, declared once (server/wire.py): unknown fields refused, null is a field's default ----

# Each document a string or an object with a string `text` (`texts_of` reads them, naming `documents`).
_TEXT = {"type": "string"}
_DOCUMENT = {"anyOf": [_TEXT, {"type": "object", "properties": {"text": _TEXT}, "required": ["text"]}]}
Documents = Annotated[list[Any], Meta(max_length=MAX_RERANK_DOCUMENTS, extra_json_schema={"items": _DOCUMENT})]
Texts = Annotated[list[Any], Meta(max_length=MAX_RERANK_DOCUMENTS, extra_json_schema={"items": _TEXT})]
KeepAlive = str | float | None  # a duration ("5m") or seconds (rq.keep_alive reads it)


def _check(query: str, documents: list[Any], field: str) -> None:
    texts = [d if isinstance(d, str) else d.get("text") if isinstance(d, dict) else None for d in documents]
    check_text([query, *(t for t in texts if isinstance(t, str))], PROMPT_MAX_BYTES, field, "query and documents")


class RerankRequest(Strict, kw_only=True):
    """Jina's and Cohere's body (v1 and v2); Cohere's `rank_fields`, `max_chunks_per_doc` and
    `max_tokens_per_doc` are read and ignored (a document is its `text`; a pair longer than the context is
    refused)."""

    query: str
    documents: Documents
    model: str | None = None
    top_n: Annotated[int, Meta(ge=1)] | None = None
    return_documents: bool | None = None
    rank_fields: Annotated[list[str], Meta(max_length=MAX_RERANK_DOCUMENTS)] | None = None
    max_chunks_per_doc: int | None = None
    max_tokens_per_doc: int | None = None

    def check(self) -> None:
        _check(self.query, self.documents, "documents")


class TEIRerankRequest(Strict, kw_only=True):
    """text-embeddings-inference's body (`POST /rerank` with `texts`)."""

    query: str
    texts: Texts
    model: str | None = None
    raw_scores: bool | None = None
    return_text: bool | None = None
    truncate: bool | None = None
    truncation_direction: str | None = None

    def check(self) -> None:
        _check(self.query, self.texts, "texts")


class ApiRerankRequest(Strict, kw_only=True):
    """`POST /api/rerank`, Ollama-style."""

    model: str
    query: str
    documents: Texts
    top_n: Annotated[int, Meta(ge=1)] | None = None
    return_documents: bool | None = None
    keep_alive: KeepAlive = None

    def check(self) -> None:
        _check(self.query, self.documents, "documents")


class RerankShape(Presence, kw_only=True):
    """What decides the shape of a `POST /rerank` body: TEI's (`texts`, no `documents`) or Jina's/Cohere's."""

    texts: Any = None
    documents: Any = None


MODELS = (RerankRequest, TEIRerankRequest, ApiRerankRequest)


@dataclass(frozen=True)
class Ranked:
    index: int
    score: float


def texts_of(value: list[Any], field: str) -> list[str]:
    """The documents' texts: each a string or an object with a string `text`."""
    out = []
    for i, item in enumerate(value):
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            out.append(item["text"])
        elif isinstance(item, str):
            out.append(item)
        else:
            raise InvalidRequest(f'{field}[{i}] must be a string or an object with a string "text"', field=field)
    return out


def ranked(scores: list[float], top_n: int | None) -> list[Ranked]:
    """The documents by score, highest first (ties keep the documents' order), cut to `top_n`."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [Ranked(i, scores[i]) for i in order[: top_n if top_n is not None else len(order)]]


async def _rank(
    request: Request, model: str | None, query: str, documents: list[str], keep_alive: KeepAlive = None
) -> Ranking:
    service = service_of(request)
    name = choose_model({"model": model}, service)
    work = service.rerank(name, query, documents, keep_alive=rq.duration_of(keep_alive))
    result: Ranking = await until_disconnect(work, request)
    return result


def _results(docs: list[str], top: list[Ranked], with_docs: bool) -> list[dict[str, Any]]:
    """Jina's and Cohere's results: `document` as `{"text"}` when asked for."""
    out: list[dict[str, Any]] = [{"index": r.index, "relevance_score": r.score} for r in top]
    if with_docs:
        for row, r in zip(out, top, strict=True):
            row["document"] = {"text": docs[r.index]}
    return out


def sigmoid(x: float) -> float:
    """TEI's score without `raw_scores` (no overflow for a very negative logit)."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def encode_jina(model: str, docs: list[str], result: Ranking, top: list[Ranked], with_docs: bool) -> dict[str, Any]:
    return {
        "id": f"rerank-{uuid.uuid4().hex}",
        "model": model,
        "object": "list",
        "results": _results(docs, top, with_docs),
        "usage": {"prompt_tokens": result.prompt_eval_count, "total_tokens": result.prompt_eval_count},
    }


def encode_cohere_v2(docs: list[str], result: Ranking, top: list[Ranked], with_docs: bool) -> dict[str, Any]:
    return {
        "id": f"rerank-{uuid.uuid4().hex}",
        "results": _results(docs, top, with_docs),
        "meta": {
            "api_version": {"version": "2"},
            "billed_units": {"search_units": 1},
            "tokens": {"input_tokens": result.prompt_eval_count, "output_tokens": 0},
        },
    }


def encode_tei(docs: list[str], result: Ranking, raw: bool, with_text: bool) -> list[dict[str, Any]]:
    out = []
    for r in ranked(result.scores, None):
        score = r.score if raw else sigmoid(r.score)
        out.append({"index": r.index, "score": score, **({"text": docs[r.index]} if with_text else {})})
    return out


async def _jina_or_cohere(request: Request, chunks: list[bytes], *, v2: bool) -> Response:
    body = await rq.decode_wire(request, chunks, RerankRequest)
    docs = texts_of(body.documents, "documents")
    result = await _rank(request, body.model, body.query, docs)
    top = ranked(result.scores, body.top_n)
    with_docs = bool(body.return_documents)
    if v2:
        return JSONResponse(encode_cohere_v2(docs, result, top, with_docs))
    model = str(choose_model({"model": body.model}, service_of(request)))
    return JSONResponse(encode_jina(body.model or model, docs, result, top, with_docs))


async def _tei(request: Request, chunks: list[bytes]) -> Response:
    try:
        body = await rq.decode_wire(request, chunks, TEIRerankRequest)
        docs = texts_of(body.texts, "texts")
        result = await _rank(request, body.model, body.query, docs)
        return JSONResponse(encode_tei(docs, result, bool(body.raw_scores), bool(body.return_text)))
    except InvalidRequest as exc:
        return tgi_api.ERRORS.response(exc)


@guarded(openai_api.ERRORS)
async def rerank_v1(request: Request) -> Response:
    chunks = await rq.read_chunks(request)
    shape = (await rq.decode_wire(request, chunks, RerankShape)).present()
    if "texts" in shape and "documents" not in shape:
        return await _tei(request, chunks)
    return await _jina_or_cohere(request, chunks, v2=False)


@guarded(openai_api.ERRORS)
async def rerank_v2(request: Request) -> Response:
    return await _jina_or_cohere(request, await rq.read_chunks(request), v2=True)


@guarded(ollama_api.ERRORS)
async def rerank_ollama(request: Request) -> Response:
    body = await rq.read_wire(request, ApiRerankRequest)
    if not body.model:
        raise InvalidRequest("model is required", field="model")
    parse_name(body.model, field="model")
    docs = texts_of(body.documents, "documents")
    result = await _rank(request, body.model, body.query, docs, body.keep_alive)
    with_docs = bool(body.return_documents)
    return JSONResponse(
        {
            "model": body.model,
            "results": [
                {"index": r.index, "relevance_score": r.score, **({"document": docs[r.index]} if with_docs else {})}
                for r in ranked(result.scores, body.top_n)
            ],
            "total_duration": result.total_duration,
            "load_duration": result.load_duration,
            "prompt_eval_count": result.prompt_eval_count,
        }
    )


routes = [
    Route("/v1/rerank", rerank_v1, methods=["POST"]),
    Route("/rerank", rerank_v1, methods=["POST"]),
    Route("/v2/rerank", rerank_v2, methods=["POST"]),
    Route("/api/rerank", rerank_ollama, methods=["POST"]),
]


class RerankedText(Reply, kw_only=True):
    text: str


class RerankResult(Reply, kw_only=True):
    index: int
    relevance_score: float
    document: RerankedText | Unset = UNSET  # with `return_documents`


class RerankUsage(Reply, kw_only=True):
    prompt_tokens: int
    total_tokens: int


class JinaRerank(Reply, kw_only=True):
    """`/v1/rerank` and `/rerank` with `documents`: Jina's and Cohere's v1 shape."""

    id: str
    model: str
    object: Literal["list"]
    results: list[RerankResult]
    usage: RerankUsage


class ApiVersion(Reply, kw_only=True):
    version: str


class BilledUnits(Reply, kw_only=True):
    search_units: int


class MetaTokens(Reply, kw_only=True):
    input_tokens: int
    output_tokens: int


class CohereMeta(Reply, kw_only=True):
    api_version: ApiVersion
    billed_units: BilledUnits
    tokens: MetaTokens


class CohereRerank(Reply, kw_only=True):
    """`/v2/rerank`: Cohere's v2 shape."""

    id: str
    results: list[RerankResult]
    meta: CohereMeta


class TEIRank(Reply, kw_only=True):
    """A text of text-embeddings-inference's `/rerank` (`texts`): its index, score and, asked for, its text."""

    index: int
    score: float
    text: str | Unset = UNSET


class ApiRerankResult(Reply, kw_only=True):
    index: int
    relevance_score: float
    document: str | Unset = UNSET


class ApiRerank(Reply, kw_only=True):
    """`/api/rerank`: Ollama-style, with Ollama's counters."""

    model: str
    results: list[ApiRerankResult]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


def paths() -> dict[str, Any]:
    return {
        "/v1/rerank": {
            "post": {
                "summary": "rerank documents for a query (Jina / Cohere v1 shape)",
                "requestBody": request_body(RerankRequest),
                "responses": responses(OpenAIError, JinaRerank),
            }
        },
        "/rerank": {
            "post": {
                "summary": "rerank: Jina / Cohere shape (`documents`), or text-embeddings-inference's (`texts`)",
                "requestBody": request_body_of(RerankRequest, TEIRerankRequest),
                "responses": responses((OpenAIError, TGIError), (JinaRerank, list[TEIRank])),
            }
        },
        "/v2/rerank": {
            "post": {
                "summary": "rerank documents for a query (Cohere v2 shape)",
                "requestBody": request_body(RerankRequest),
                "responses": responses(OpenAIError, CohereRerank),
            }
        },
        "/api/rerank": {
            "post": {
                "summary": "rerank documents for a query (Ollama-style body)",
                "requestBody": request_body(ApiRerankRequest),
                "responses": responses(OllamaError, ApiRerank),
            }
        },
    }


REPLIES = (JinaRerank, list[TEIRank], CohereRerank, ApiRerank)
DIALECT = Dialect("rerank", routes, openai_api.ERRORS, paths, wire=MODELS, replies=REPLIES)
