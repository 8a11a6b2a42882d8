"""Reply models: what each route answers (its bodies, its stream's events, its errors) declared once, as typed
`msgspec` structs, the counterpart of the request models of `wire.py`.

The OpenAPI document's response schemas are generated from them (`responses`), as the request schemas are
from the wire models. The encoders of the busiest answers (OpenAI's completions and their stream chunks,
Ollama's generate and chat lines, Anthropic's messages and their events) build them, so that what is sent
is what is declared; every other route's real answers are held to them by the schemathesis run of
tests/e2e/test_openapi.py and by tests/unit/test_replies.py.

A field sometimes absent from an answer is `Unset` (`UNSET` is never written); `None` is written as null.
A model closed to other fields (`Reply`) says so in its schema (`additionalProperties: false`); one that
echoes a request's fields (the Responses API's object) is `OpenReply`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import msgspec
from starlette.responses import Response

from .wire import REF

Unset = msgspec.UnsetType
UNSET = msgspec.UNSET
SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
ERROR_CODES = ("400", "401", "403", "404", "413", "429", "5XX")
SERVING_CODES = ("400", "401", "403", "404", "413", "422", "424", "429", "5XX")  # vLLM's, LMDeploy's


class Reply(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An answer's body, or one event of its stream: every field it may have, no other."""


class OpenReply(msgspec.Struct, kw_only=True):
    """An answer that may carry fields its model does not name (a request's own fields echoed back)."""


def reply(body: msgspec.Struct, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """`body` as a JSON response (as compact as starlette's `JSONResponse`, non-ASCII text as UTF-8)."""
    return Response(msgspec.json.encode(body), status_code, headers, media_type="application/json")


def schema_of(kind: Any) -> dict[str, Any]:
    """The JSON schema of `kind` (a reply model, a list of them, a union ...; a tuple of them: any one, as a
    union of untagged models cannot be written), its models by reference to the document's components."""
    if isinstance(kind, tuple):
        return {"anyOf": [schema_of(k) for k in kind]}
    (schema,), _ = msgspec.json.schema_components((kind,), ref_template=REF)
    return schema


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _stream(media: str, item: Any, trailer: str | None) -> dict[str, Any]:
    """A stream's content: SSE described event by event (`data` is `item` as JSON, or the `trailer` that ends
    the stream: OpenAI's `[DONE]`), NDJSON as text whose every line is `item`."""
    data: dict[str, Any] = {"type": "string", "contentMediaType": "application/json", "contentSchema": schema_of(item)}
    if trailer is not None:
        data = {"type": "string", "if": {"const": trailer}, "else": data}
    if media == SSE:
        return {
            "schema": {
                "type": "object",
                "properties": {"event": {"type": "string"}, "data": data, "id": {"type": "string"}},
            }
        }
    return {"schema": {**data, "description": "one JSON object a line"}}


def responses(
    error: Any,
    ok: Any = None,
    *,
    stream: tuple[str, Any] | None = None,
    trailer: str | None = None,
    codes: Iterable[str] = ERROR_CODES,
) -> dict[str, Any]:
    """An operation's `responses`: 200 with `ok` (a reply type; None: no body) and, when it can stream,
    `stream`: its media type and the type of each event (with the error event that ends a stream cut short:
    a tuple of types is any one of them), then each of `codes` with the `error` body."""
    content: dict[str, Any] = _json(schema_of(ok)) if ok is not None else {}
    if stream is not None:
        media, item = stream
        content[media] = _stream(media, item, trailer)
    out: dict[str, Any] = {"200": {"description": "success", **({"content": content} if content else {})}}
    for code in codes:
        out[code] = {"description": "error", "content": _json(schema_of(error))}
    return out


def path_parameter(name: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}]


# -- shapes several dialects answer with ----------------------------------------------------------------------


class OllamaError(Reply):
    """Ollama's error (and Triton's): the message alone."""

    error: str


class OpenAIErrorDetail(Reply):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(Reply):
    """OpenAI's error (and the Responses API's, the tokenize and rerank routes')."""

    error: OpenAIErrorDetail


class TGIError(Reply):
    """text-generation-inference's error (and TEI's)."""

    error: str
    error_type: str


class ServingError(Reply):
    """vLLM's and LMDeploy's error."""

    object: Literal["error"]
    message: str
    type: str
    param: str | None
    code: int


class TopLogprob(Reply):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(Reply):
    """A generated token's log-probability and its most likely alternatives (OpenAI's chat `logprobs.content`,
    Ollama's `logprobs`)."""

    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprob]


class AccessToken(Reply):
    """`GET /api/v1/token`: a registered app's access token."""

    access_token: str
    token_type: str
    expires_in: int
    expires_at: int
