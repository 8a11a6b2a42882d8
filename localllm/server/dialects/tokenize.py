"""Tokenize and detokenize through a model's own vocabulary: llama-server's shape and an Ollama-style one.

    POST /tokenize     {"content", "add_special"?: false, "with_pieces"?: false, "parse_special"?: true, "model"?}
                       -> {"tokens": [id, ...]}, or with pieces {"tokens": [{"id", "piece"}, ...]} (a piece that
                       is not whole UTF-8 is a list of its bytes, as llama-server writes it). `compat.py` hands
                       bodies with `content` here (`inputs` is TGI's, `prompt` vLLM's).
    POST /detokenize   {"tokens": [id, ...], "model"?} -> {"content"}
    POST /api/tokenize     {"model", "content", "add_special"?, "with_pieces"?, "keep_alive"?}
                           -> {"model", "tokens": [...]} (the same tokens as /tokenize)
    POST /api/detokenize   {"model", "tokens", "keep_alive"?} -> {"model", "content"}

Special tokens are written out in pieces and content (`<s>`, `[CLS]`), as llama-server does. The model is named
by `model`, else LOCALLLM_DEFAULT_MODEL (llama-server serves one model and its clients send none). A token id
outside the vocabulary is a 400 naming `tokens`. Errors: TGI's shape on /tokenize (as its other bodies),
OpenAI's (llama-server's `{"error": {"message", "type", ...}}`) on /detokenize, Ollama's on /api/*.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...domain.errors import InvalidRequest
from .. import requests as rq
from ..errors import guarded
from ..fields import Field, Fields
from ..schema import ANY_LIST, INT, KEEP_ALIVE, MODEL, OLLAMA_ERROR, OPENAI_ERROR, STR, body, obj, responses
from ..streaming import until_disconnect
from .contract import Dialect
from .ollama import api as ollama_api
from .openai import api as openai_api
from .shared import choose_model, service_of

TOKENIZE = Fields(
    Field("content", str, required=True),
    Field("add_special", bool, default=False),
    Field("with_pieces", bool, default=False),
    Field("parse_special", bool, default=True),
    Field("model", str),
)
DETOKENIZE = Fields(Field("tokens", list, required=True), Field("model", str))


def token_ids(value: list[Any]) -> list[int]:
    for i, item in enumerate(value):
        if not isinstance(item, int) or isinstance(item, bool) or item < 0:
            raise InvalidRequest(
                f"tokens[{i}] must be a token id (an integer of 0 or more), got {item!r}", field="tokens"
            )
    return value


def piece_json(piece: bytes) -> str | list[int]:
    """llama-server's piece: the text when it is whole UTF-8, else its bytes."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return list(piece)


async def tokenized(request: Request, raw: dict[str, Any], *, also: tuple[str, ...] = ()) -> list[Any]:
    """The `tokens` of a tokenize body: ids, or `{"id", "piece"}` objects with `with_pieces`."""
    TOKENIZE.check(raw, also=also)
    values = TOKENIZE.read(raw)
    if not values["parse_special"]:
        raise InvalidRequest(
            "parse_special: only true is supported (special tokens in the text are read)", field="parse_special"
        )
    service = service_of(request)
    name = choose_model(raw, service)
    keep = rq.keep_alive(raw)
    pieces = await until_disconnect(
        service.tokenize(name, values["content"], add_bos=values["add_special"], keep_alive=keep), request
    )
    ids = [t for t, _ in pieces]
    if not values["with_pieces"]:
        return ids
    texts = await until_disconnect(service.detokenize(name, ids, keep_alive=keep), request)
    return [{"id": t, "piece": piece_json(p)} for t, p in zip(ids, texts, strict=True)]


async def detokenized(request: Request, raw: dict[str, Any], *, also: tuple[str, ...] = ()) -> str:
    DETOKENIZE.check(raw, also=also)
    values = DETOKENIZE.read(raw)
    service = service_of(request)
    name = choose_model(raw, service)
    work = service.detokenize(name, token_ids(values["tokens"]), keep_alive=rq.keep_alive(raw))
    pieces = await until_disconnect(work, request)
    return b"".join(pieces).decode("utf-8", "replace")


async def llama_tokenize(request: Request, raw: dict[str, Any]) -> Response:
    """llama-server's `POST /tokenize` (a body with `content`), called by `compat.tokenize`."""
    return JSONResponse({"tokens": await tokenized(request, raw)})


@guarded(openai_api.ERRORS)
async def llama_detokenize(request: Request) -> Response:
    return JSONResponse({"content": await detokenized(request, await rq.read_json(request))})


@guarded(ollama_api.ERRORS)
async def api_tokenize(request: Request) -> Response:
    raw = await rq.read_json(request)
    rq.model_name(raw)
    tokens = await tokenized(request, raw, also=("keep_alive",))
    return JSONResponse({"model": raw["model"], "tokens": tokens})


@guarded(ollama_api.ERRORS)
async def api_detokenize(request: Request) -> Response:
    raw = await rq.read_json(request)
    rq.model_name(raw)
    content = await detokenized(request, raw, also=("keep_alive",))
    return JSONResponse({"model": raw["model"], "content": content})


routes = [
    Route("/detokenize", llama_detokenize, methods=["POST"]),
    Route("/api/tokenize", api_tokenize, methods=["POST"]),
    Route("/api/detokenize", api_detokenize, methods=["POST"]),
]

TOKENS_OUT = obj({"tokens": ANY_LIST})
TOKEN_IDS = {"type": "array", "items": INT}


def paths() -> dict[str, Any]:
    detok = DETOKENIZE.schema(closed=True, tokens=TOKEN_IDS, model=MODEL)
    return {
        "/detokenize": {
            "post": {
                "summary": "token ids to text (llama-server's shape)",
                "requestBody": body(detok),
                "responses": responses(OPENAI_ERROR, obj({"content": STR})),
            }
        },
        "/api/tokenize": {
            "post": {
                "summary": "text to the model's token ids (with `with_pieces`, each token's text)",
                "requestBody": body(
                    {**TOKENIZE.schema(model=MODEL, keep_alive=KEEP_ALIVE), "required": ["model", "content"]}
                ),
                "responses": responses(OLLAMA_ERROR, obj({"model": STR, "tokens": ANY_LIST})),
            }
        },
        "/api/detokenize": {
            "post": {
                "summary": "the model's token ids to text",
                "requestBody": body(
                    {**DETOKENIZE.schema(tokens=TOKEN_IDS, keep_alive=KEEP_ALIVE), "required": ["model", "tokens"]}
                ),
                "responses": responses(OLLAMA_ERROR, obj({"model": STR, "content": STR})),
            }
        },
    }


DIALECT = Dialect("tokenize", routes, openai_api.ERRORS, paths)
