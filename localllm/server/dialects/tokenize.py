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

from typing import Annotated, Any

from msgspec import Meta
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...domain.errors import InvalidRequest
from ...domain.limits import MAX_TOKENIZE_IDS, PROMPT_MAX_BYTES
from ...domain.names import parse_name
from .. import requests as rq
from ..errors import guarded
from ..replies import UNSET, OllamaError, OpenAIError, Reply, Unset, responses
from ..streaming import until_disconnect
from ..wire import Strict, check_text, request_body
from .contract import Dialect
from .ollama import api as ollama_api
from .openai import api as openai_api
from .shared import choose_model, service_of

# -- the request bodies, declared once (server/wire.py): unknown fields refused, null is a field's default ----

# token ids: `token_ids` checks each (naming `tokens`)
TokenIds = Annotated[
    list[Any], Meta(max_length=MAX_TOKENIZE_IDS, extra_json_schema={"items": {"type": "integer", "minimum": 0}})
]
KeepAlive = str | float | None  # a duration ("5m") or seconds (rq.keep_alive reads it)


class _Tokenize(Strict, kw_only=True):
    content: str
    add_special: bool | None = None
    with_pieces: bool | None = None
    parse_special: bool | None = None  # only true (none: true)

    def check(self) -> None:
        check_text([self.content], PROMPT_MAX_BYTES, "content", "content")


class LlamaTokenizeRequest(_Tokenize, kw_only=True):
    """llama-server's `POST /tokenize` (a body with `content`)."""

    model: str | None = None


class LlamaDetokenizeRequest(Strict, kw_only=True):
    """llama-server's `POST /detokenize`."""

    tokens: TokenIds
    model: str | None = None


class ApiTokenizeRequest(_Tokenize, kw_only=True):
    """`POST /api/tokenize`, Ollama-style."""

    model: str
    keep_alive: KeepAlive = None


class ApiDetokenizeRequest(Strict, kw_only=True):
    """`POST /api/detokenize`, Ollama-style."""

    model: str
    tokens: TokenIds
    keep_alive: KeepAlive = None


MODELS = (LlamaTokenizeRequest, LlamaDetokenizeRequest, ApiTokenizeRequest, ApiDetokenizeRequest)


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


async def tokenized(request: Request, body: LlamaTokenizeRequest | ApiTokenizeRequest) -> list[Any]:
    """The `tokens` of a tokenize body: ids, or `{"id", "piece"}` objects with `with_pieces`."""
    if body.parse_special is False:
        raise InvalidRequest(
            "parse_special: only true is supported (special tokens in the text are read)", field="parse_special"
        )
    service = service_of(request)
    name = choose_model({"model": body.model}, service)
    keep = rq.duration_of(getattr(body, "keep_alive", None))
    pieces = await until_disconnect(
        service.tokenize(name, body.content, add_bos=bool(body.add_special), keep_alive=keep), request
    )
    ids = [t for t, _ in pieces]
    if not body.with_pieces:
        return ids
    texts = await until_disconnect(service.detokenize(name, ids, keep_alive=keep), request)
    return [{"id": t, "piece": piece_json(p)} for t, p in zip(ids, texts, strict=True)]


async def detokenized(request: Request, body: LlamaDetokenizeRequest | ApiDetokenizeRequest) -> str:
    service = service_of(request)
    name = choose_model({"model": body.model}, service)
    keep = rq.duration_of(getattr(body, "keep_alive", None))
    work = service.detokenize(name, token_ids(body.tokens), keep_alive=keep)
    pieces = await until_disconnect(work, request)
    return b"".join(pieces).decode("utf-8", "replace")


async def llama_tokenize(request: Request, chunks: list[bytes]) -> Response:
    """llama-server's `POST /tokenize` (a body with `content`, as read by `compat.tokenize`)."""
    body = await rq.decode_wire(request, chunks, LlamaTokenizeRequest)
    return JSONResponse({"tokens": await tokenized(request, body)})


@guarded(openai_api.ERRORS)
async def llama_detokenize(request: Request) -> Response:
    return JSONResponse({"content": await detokenized(request, await rq.read_wire(request, LlamaDetokenizeRequest))})


def _named(model: str) -> str:
    """An `/api/` body's model: required, and a valid name."""
    if not model:
        raise InvalidRequest("model is required", field="model")
    parse_name(model, field="model")
    return model


@guarded(ollama_api.ERRORS)
async def api_tokenize(request: Request) -> Response:
    body = await rq.read_wire(request, ApiTokenizeRequest)
    model = _named(body.model)
    return JSONResponse({"model": model, "tokens": await tokenized(request, body)})


@guarded(ollama_api.ERRORS)
async def api_detokenize(request: Request) -> Response:
    body = await rq.read_wire(request, ApiDetokenizeRequest)
    model = _named(body.model)
    return JSONResponse({"model": model, "content": await detokenized(request, body)})


routes = [
    Route("/detokenize", llama_detokenize, methods=["POST"]),
    Route("/api/tokenize", api_tokenize, methods=["POST"]),
    Route("/api/detokenize", api_detokenize, methods=["POST"]),
]


class Piece(Reply, kw_only=True):
    id: int
    piece: str | list[int]  # a piece that is not whole UTF-8 is a list of its bytes


class Tokenized(Reply, kw_only=True):
    """`/tokenize` (llama-server's, no `model`) and `/api/tokenize`: ids, or with `with_pieces` each one's text."""

    model: str | Unset = UNSET
    tokens: list[int | Piece]


class Detokenized(Reply, kw_only=True):
    model: str | Unset = UNSET
    content: str


def paths() -> dict[str, Any]:
    return {
        "/detokenize": {
            "post": {
                "summary": "token ids to text (llama-server's shape)",
                "requestBody": request_body(LlamaDetokenizeRequest),
                "responses": responses(OpenAIError, Detokenized),
            }
        },
        "/api/tokenize": {
            "post": {
                "summary": "text to the model's token ids (with `with_pieces`, each token's text)",
                "requestBody": request_body(ApiTokenizeRequest),
                "responses": responses(OllamaError, Tokenized),
            }
        },
        "/api/detokenize": {
            "post": {
                "summary": "the model's token ids to text",
                "requestBody": request_body(ApiDetokenizeRequest),
                "responses": responses(OllamaError, Detokenized),
            }
        },
    }


DIALECT = Dialect("tokenize", routes, openai_api.ERRORS, paths, wire=MODELS, replies=(Tokenized, Detokenized))
