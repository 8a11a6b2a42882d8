"""Fields declared once: one table drives the parser, the unknown-field check and the OpenAPI schema; one range
check and one stop-list parser serve every dialect."""

from __future__ import annotations

from typing import Any

import pytest

from localllm.domain.errors import InvalidRequest
from localllm.domain.types import check_range, parse_options, parse_stop
from localllm.server import fieldpolicy
from localllm.server.dialects.openai.wire import ChatCompletionRequest
from localllm.server.dialects.tgi.openapi import TGI_PARAMETERS
from localllm.server.dialects.tgi.requests import PARAMETERS
from localllm.server.fields import STOP, Field, Fields
from localllm.server.wire import components

TABLE = Fields(
    Field("n", int, low=1, high=8, default=1),
    Field("p", float, low=0, high=1, open_low=True, option="top_p"),
    Field("stop", STOP, limit=2, option="stop"),
    Field("name", str, required=True),
)


def test_a_table_reads_checks_and_maps_onto_options() -> None:
    values = TABLE.read({"p": 1, "stop": ["a", ""], "name": "x"})
    assert values == {"n": 1, "p": 1.0, "stop": ("a",), "name": "x"}
    assert isinstance(values["p"], float)
    assert TABLE.options(values) == {"top_p": 1.0, "stop": ("a",)}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"name": "x", "n": 9}, "n", "n must be between 1 and 8, got 9"),
        ({"name": "x", "p": 0}, "p", "p must be > 0 and <= 1, got 0"),
        ({"name": "x", "n": True}, "n", "n must be an integer, got bool"),
        ({"name": "x", "stop": ["a", "b", "c"]}, "stop", "stop holds 3 stop sequences, at most 2 are allowed"),
        ({}, "name", "name is required"),
    ],
)
def test_each_refusal_names_its_field(body: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        TABLE.read(body)
    assert (raised.value.field, str(raised.value)) == (field, message)


def test_unknown_fields_follow_the_field_policy() -> None:
    TABLE.check({"n": 1, "extra": 2}, also=("extra",))
    with fieldpolicy.begin(strict=False, client="c") as report:
        TABLE.check({"nope": 1, "user": "u"}, prefix="parameters.")
    assert report.ignored == ["parameters.nope"], "reported, never dropped silently; `user` is metadata"
    with fieldpolicy.begin(strict=True, client="c"), pytest.raises(InvalidRequest) as raised:
        TABLE.check({"nope": 1}, prefix="parameters.")
    assert raised.value.field == "parameters.nope" and "unknown field 'parameters.nope' (accepted: n, name" in str(
        raised.value
    )


def test_the_schema_is_the_table() -> None:
    assert TABLE.schema(closed=True) == {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 1, "maximum": 8},
            "p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 2}]},
            "name": {"type": "string"},
        },
        "required": ["name"],
        "additionalProperties": False,
    }


def test_the_openapi_document_uses_the_dialects_tables() -> None:
    assert TGI_PARAMETERS["properties"]["top_p"] == {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}
    assert set(TGI_PARAMETERS["properties"]) == set(PARAMETERS.names)
    chat = components([ChatCompletionRequest])["ChatCompletionRequest"]["properties"]
    assert chat["temperature"]["anyOf"][0] == {"type": "number", "minimum": 0, "maximum": 2}


def test_one_range_check_and_one_stop_parser() -> None:
    check_range(0.5, "x", 0, 1)
    with pytest.raises(InvalidRequest, match=r"^x must be at least 0, got -1$"):
        check_range(-1, "x", 0)
    with pytest.raises(InvalidRequest, match=r"^x must be < 1, got 1$"):
        check_range(1, "x", None, 1, open_high=True)
    assert parse_stop("a", "stop") == ("a",)
    with pytest.raises(InvalidRequest, match="a string or a list of strings"):
        parse_stop([1], "stop")
    with pytest.raises(InvalidRequest, match=r"options.top_p must be between 0.0 and 1.0, got 1.5"):
        parse_options({"top_p": 1.5})
