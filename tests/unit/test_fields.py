"""Fields declared once: the wire models drive the parser, the bounds and the OpenAPI schema; one range check
and one stop-list parser serve every dialect."""

from __future__ import annotations

import pytest

from localllm.domain.errors import InvalidRequest
from localllm.domain.options import check_range, parse_options, parse_stop
from localllm.server.dialects.openai.wire import ChatCompletionRequest
from localllm.server.dialects.tgi.wire import TGIParameters
from localllm.server.wire import components


def test_the_openapi_document_uses_the_dialects_declarations() -> None:
    tgi = components([TGIParameters])["TGIParameters"]["properties"]
    assert tgi["top_p"]["anyOf"][0] == {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}
    assert set(tgi) == set(TGIParameters.__struct_fields__)
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
