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
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...domain.errors import InvalidRequest
from ...domain.types import Ranking
from .. import requests as rq
from ..errors import guarded
from ..fields import Field, Fields
from ..schema import (
    ANY_LIST,
    INT,
    KEEP_ALIVE,
    MODEL,
    NUM,
    OLLAMA_ERROR,
    OPENAI_ERROR,
    STR,
    TGI_ERROR,
    body,
    obj,
    responses,
)
from ..streaming import until_disconnect
from .contract import Dialect
from .ollama import api as ollama_api
from .openai import api as openai_api
from .shared import choose_model, service_of
from .tgi import api as tgi_api

# Jina's and Cohere's fields; Cohere's `rank_fields`, `max_chunks_per_doc` and `max_tokens_per_doc` are read and
# ignored (a document is its `text`; a pair longer than the context is refused).
FIELDS = Fields(
    Field("model", str),
    Field("query", str, required=True),
    Field("documents", list, required=True),
    Field("top_n", int, low=1),
    Field("return_documents", bool, default=False),
    Field("rank_fields", list),
    Field("max_chunks_per_doc", int),
    Field("max_tokens_per_doc", int),
)
OLLAMA_FIELDS = Fields(
    Field("model", str, required=True),
    Field("query", str, required=True),
    Field("documents", list, required=True),
    Field("top_n", int, low=1),
    Field("return_documents", bool, default=False),
)
TEI_FIELDS = Fields(
    Field("model", str),
    Field("query", str, required=True),
    Field("texts", list, required=True),
    Field("raw_scores", bool, default=False),
    Field("return_text", bool, default=False),
    Field("truncate", bool, default=False),
    Field("truncation_direction", str, default="right"),
)


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


async def _rank(request: Request, values: dict[str, Any], documents: list[str], *, body_: dict[str, Any]) -> Ranking:
    service = service_of(request)
    name = choose_model(body_, service)
    work = service.rerank(name, values["query"], documents, keep_alive=rq.keep_alive(body_))
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


async def _jina_or_cohere(request: Request, raw: dict[str, Any], *, v2: bool) -> Response:
    FIELDS.check(raw)
    values = FIELDS.read(raw)
    docs = texts_of(values["documents"], "documents")
    result = await _rank(request, values, docs, body_=raw)
    top = ranked(result.scores, values["top_n"])
    if v2:
        return JSONResponse(encode_cohere_v2(docs, result, top, values["return_documents"]))
    model = str(choose_model(raw, service_of(request)))
    return JSONResponse(encode_jina(raw.get("model") or model, docs, result, top, values["return_documents"]))


async def _tei(request: Request, raw: dict[str, Any]) -> Response:
    try:
        TEI_FIELDS.check(raw)
        values = TEI_FIELDS.read(raw)
        docs = texts_of(values["texts"], "texts")
        result = await _rank(request, values, docs, body_=raw)
        return JSONResponse(encode_tei(docs, result, values["raw_scores"], values["return_text"]))
    except InvalidRequest as exc:
        return tgi_api.ERRORS.response(exc)


@guarded(openai_api.ERRORS)
async def rerank_v1(request: Request) -> Response:
    raw = await rq.read_json(request)
    if "texts" in raw and "documents" not in raw:
        return await _tei(request, raw)
    return await _jina_or_cohere(request, raw, v2=False)


@guarded(openai_api.ERRORS)
async def rerank_v2(request: Request) -> Response:
    return await _jina_or_cohere(request, await rq.read_json(request), v2=True)


@guarded(ollama_api.ERRORS)
async def rerank_ollama(request: Request) -> Response:
    raw = await rq.read_json(request)
    OLLAMA_FIELDS.check(raw, also=("keep_alive",))
    values = OLLAMA_FIELDS.read(raw)
    docs = texts_of(values["documents"], "documents")
    result = await _rank(request, values, docs, body_=raw)
    with_docs = values["return_documents"]
    return JSONResponse(
        {
            "model": values["model"],
            "results": [
                {"index": r.index, "relevance_score": r.score, **({"document": docs[r.index]} if with_docs else {})}
                for r in ranked(result.scores, values["top_n"])
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

_DOCS = {"type": "array", "items": {"anyOf": [STR, obj({"text": STR}, required=("text",))]}}
_RESULT = obj({"index": INT, "relevance_score": NUM, "document": obj({"text": STR})})


def paths() -> dict[str, Any]:
    jina = FIELDS.schema(closed=True, documents=_DOCS, model=MODEL)
    jina_out = obj({"id": STR, "model": STR, "results": {"type": "array", "items": _RESULT}, "usage": obj({})})
    tei = TEI_FIELDS.schema(closed=True, texts={"type": "array", "items": STR})
    ollama = OLLAMA_FIELDS.schema(documents={"type": "array", "items": STR}, keep_alive=KEEP_ALIVE)
    return {
        "/v1/rerank": {
            "post": {
                "summary": "rerank documents for a query (Jina / Cohere v1 shape)",
                "requestBody": body(jina),
                "responses": responses(OPENAI_ERROR, jina_out),
            }
        },
        "/rerank": {
            "post": {
                "summary": "rerank: Jina / Cohere shape (`documents`), or text-embeddings-inference's (`texts`)",
                "requestBody": body({"anyOf": [jina, tei]}),
                "responses": responses({"anyOf": [OPENAI_ERROR, TGI_ERROR]}, {"anyOf": [jina_out, ANY_LIST]}),
            }
        },
        "/v2/rerank": {
            "post": {
                "summary": "rerank documents for a query (Cohere v2 shape)",
                "requestBody": body(jina),
                "responses": responses(
                    OPENAI_ERROR, obj({"id": STR, "results": {"type": "array", "items": _RESULT}, "meta": obj({})})
                ),
            }
        },
        "/api/rerank": {
            "post": {
                "summary": "rerank documents for a query (Ollama-style body)",
                "requestBody": body(ollama),
                "responses": responses(
                    OLLAMA_ERROR,
                    obj({"model": STR, "results": ANY_LIST, "total_duration": INT, "prompt_eval_count": INT}),
                ),
            }
        },
    }


DIALECT = Dialect("rerank", routes, openai_api.ERRORS, paths)
