"""Wire models (server/wire.py): msgspec's errors mapped onto ours in one place, the unknown-field switch,
nesting refused as a 400 on every converted route, and the OpenAPI schemas generated from the models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import msgspec
import pytest
from starlette.testclient import TestClient

from localllm.chat.thinking import EFFORTS
from localllm.domain.errors import InvalidRequest
from localllm.domain.limits import MAX_JSON_DEPTH, MAX_UNKNOWN_FIELDS
from localllm.server import bodydecoder, wire
from localllm.server.dialects import wire_models
from localllm.server.dialects.openai import wire as openai_wire

from ..fakes import FakeFactory
from .test_server import make_client


class Part(wire.Strict, tag_field="type", tag="text"):
    text: str


class Inner(wire.Strict):
    role: Literal["user", "assistant"]
    parts: list[Part] = []


class Body(wire.Strict, kw_only=True):
    name: str
    n: Annotated[int, msgspec.Meta(ge=1, le=8)] = 1
    p: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    items: Annotated[list[Inner], msgspec.Meta(min_length=1, max_length=2)] = []
    extra: dict[str, Any] | None = None


def refused(body: Any, field: str | None) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(InvalidRequest) as raised:
        wire.decode(raw, Body)
    assert raised.value.field == field, raised.value
    return str(raised.value)


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({}, "name", "name is required"),
        ({"name": 3}, "name", "name must be a string, got int"),
        ({"name": "x", "n": 9}, "n", "n must be between 1 and 8, got 9"),
        ({"name": "x", "n": True}, "n", "n must be an integer, got bool"),
        ({"name": "x", "p": 0}, "p", "p must be > 0 and <= 1, got 0"),
        ({"name": "x", "items": []}, "items", "items must hold at least one item"),
        ({"name": "x", "items": [{"role": "user"}] * 3}, "items", "items holds 3 items, more than the 2 allowed"),
        ({"name": "x", "items": [{"role": "bot"}]}, "items[0].role", "items[0].role must be one of assistant, user"),
        (
            {"name": "x", "items": [{"role": "user", "parts": [{"type": "image"}]}]},
            "items[0].parts[0].type",
            "one of text",
        ),
        ([1], None, "request body must be a JSON object, got list"),
        (b"", None, "missing request body"),
        (b"{", None, "invalid JSON in request body"),
        (b'{"name": "x", "p": NaN}', "p", "p must be a finite number, got nan"),
        (
            b'{"name": "x", "extra": {"a": [1, -Infinity]}}',
            "extra.a[1]",
            "extra.a[1] must be a finite number, got -inf",
        ),
        (b'{"name": "x", "p": 1e999}', "p", "p is out of range"),
    ],
)
def test_msgspec_errors_become_ours_naming_the_field(body: Any, field: str | None, message: str) -> None:
    assert message in refused(body, field)


def test_nesting_past_the_bound_is_a_400_never_a_recursion_error() -> None:
    deep: Any = {}
    for _ in range(MAX_JSON_DEPTH):
        deep = {"a": deep}
    assert "nests deeper than 128 levels" in refused({"name": "x", "extra": deep}, None)
    assert "nests deeper" in refused(b'{"name": "x", "extra": {"a": ' + b"[" * 2000 + b"]" * 2000 + b"}}", None)
    shallow: Any = {}
    for _ in range(MAX_JSON_DEPTH - 2):
        shallow = {"a": shallow}
    assert wire.decode(json.dumps({"name": "x", "extra": shallow}).encode(), Body).extra is not None


def test_unknown_fields_are_decoded_past_and_the_top_level_ones_named() -> None:
    raw = json.dumps({"zed": 1, "name": "x", "items": [{"role": "user", "x": 1}], "alpha": {"deep": [1]}}).encode()
    assert wire.decode(raw, Body).name == "x", "no model forbids unknown fields: the policy decides (fieldpolicy)"
    assert wire.unknown_fields(raw, Body) == ["zed", "alpha"], "top-level only, in the body's order"
    assert wire.unknown_fields(b'{"type": "text", "text": "t"}', Part) == [], "a tag field is declared"
    assert not any(m.__struct_config__.forbid_unknown_fields for m in wire_models())
    nested = json.dumps({"name": "x", "items": [{"role": "user"}], "inner": {"role": "user", "zz": 1}, "q": 1})

    class Reporting(Body, kw_only=True):
        reported = {"inner": Inner}  # as TGI's `parameters`
        inner: Inner | None = None

    assert wire.unknown_fields(nested.encode(), Reporting) == ["q", "inner.zz"]
    assert wire.unknown_fields(b'{"name": "x", "inner": null}', Reporting) == []
    assert "reported" not in Reporting.__struct_fields__
    flood = json.dumps({"name": "x", **{f"k{i}": i for i in range(MAX_UNKNOWN_FIELDS + 10)}}).encode()
    assert wire.unknown_fields(flood, Body) == [f"k{i}" for i in range(MAX_UNKNOWN_FIELDS)], "the first ones"


def test_the_body_decoder_answers_a_model_or_a_refusal() -> None:
    model = openai_wire.EmbeddingRequest
    ref = f"{model.__module__}:{model.__name__}"
    kind, payload = bodydecoder.answer(ref, b'{"input": "x", "dimensions": 2, "novel": 1}')
    value = msgspec.msgpack.decode(payload, type=tuple[openai_wire.EmbeddingRequest, list[str]])
    assert kind == 0 and value == (model(input="x", dimensions=2), ["novel"]), "with the unknown top-level fields"
    kind, payload = bodydecoder.answer(ref, b'{"input": "x", "dimensions": 0}')
    expected = {"message": "dimensions must be at least 1, got 0", "field": "dimensions"}
    assert kind == 1 and json.loads(payload) == expected
    with pytest.raises(ValueError):
        bodydecoder.answer("os:system", b"{}")


def test_the_openapi_schemas_come_from_the_models() -> None:
    schemas = wire.components(wire_models())
    assert not [name for name in schemas if "." in name], "two wire models of one name: rename one"
    chat = schemas["ChatCompletionRequest"]
    assert chat["required"] == ["messages"]
    assert chat["properties"]["n"] == {"type": "integer", "minimum": 1, "maximum": 128, "default": 1}
    assert chat["properties"]["logit_bias"]["maxProperties"] == 1024
    assert set(schemas["Message"]["properties"]["role"]["enum"]) == {"system", "developer", "user", "assistant", "tool"}
    assert list(get_args(openai_wire.Effort)) == list(EFFORTS)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from make_client(tmp_path, FakeFactory())


DEEP = b"[" * 2000 + b"]" * 2000
USER = b'"messages": [{"role": "user", "content": "hi"}]'
BODIES = {  # each nests 2,000 levels deep, at the top and where the model takes any JSON
    "/v1/chat/completions": [DEEP, b'{"model": "tiny", %s, "options": {"a": %s}}' % (USER, DEEP)],
    "/v1/completions": [DEEP, b'{"model": "tiny", "prompt": "x", "options": {"a": %s}}' % DEEP],
    "/v1/embeddings": [DEEP, b'{"model": "tiny", "input": %s}' % DEEP],
    "/api/generate": [DEEP, b'{"model": "tiny", "options": {"a": %s}}' % DEEP],
    "/api/chat": [DEEP, b'{"model": "tiny", "format": {"a": %s}}' % DEEP],
    "/api/embed": [DEEP, b'{"model": "tiny", "options": {"a": %s}}' % DEEP],
    "/api/embeddings": [DEEP, b'{"model": "tiny", "options": {"a": %s}}' % DEEP],
    "/api/create": [DEEP, b'{"model": "x", "parameters": {"a": %s}}' % DEEP],
    "/api/show": [DEEP],
    "/api/pull": [DEEP],
    "/api/copy": [DEEP],
    "/v1/messages": [DEEP, b'{"model": "tiny", "max_tokens": 5, %s, "metadata": {"a": %s}}' % (USER, DEEP)],
    "/v1/messages/count_tokens": [
        DEEP,
        b'{"model": "tiny", %s, "tools": [{"name": "f", "input_schema": %s}]}' % (USER, b'{"a": ' + DEEP + b"}"),
    ],
    "/v1/responses": [DEEP, b'{"model": "tiny", "input": "x", "metadata": {"a": %s}}' % DEEP],
    "/v1/responses/input_tokens": [DEEP, b'{"model": "tiny", "input": "x", "tools": [%s]}' % DEEP],
}


@pytest.mark.parametrize(("path", "body"), [(p, b) for p, bodies in BODIES.items() for b in bodies])
def test_2000_levels_deep_is_a_400_on_each_converted_route(client: TestClient, path: str, body: bytes) -> None:
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    if not body.startswith(b"["):  # at the top: not an object, refused as it opens
        assert "nests deeper than" in json.dumps(r.json())
