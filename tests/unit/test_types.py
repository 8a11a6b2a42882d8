from __future__ import annotations

import pytest

from localllm.errors import InvalidRequest
from localllm.types import Options, parse_options


def test_parse_and_merge() -> None:
    req = parse_options({"temperature": 0, "stop": ["a", "b"], "num_predict": 5, "penalize_newline": True})
    assert req.temperature == 0.0 and isinstance(req.temperature, float)
    assert req.stop == ("a", "b")
    merged = req.merged_over(Options(temperature=0.8, top_k=40))
    assert merged.temperature == 0.0 and merged.top_k == 40
    assert merged.as_dict() == {"temperature": 0.0, "top_k": 40, "num_predict": 5, "stop": ["a", "b"]}


def test_mirostat_is_honoured_and_checked() -> None:
    assert parse_options({"mirostat": 2, "mirostat_tau": 3, "mirostat_eta": 0.2}).as_dict() == {
        "mirostat": 2,
        "mirostat_tau": 3.0,
        "mirostat_eta": 0.2,
    }
    with pytest.raises(InvalidRequest) as err:
        parse_options({"mirostat": 3})
    assert err.value.field == "options.mirostat"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"temperature": "hot"}, "options.temperature"),
        ({"top_k": 1.5}, "options.top_k"),
        ({"top_k": -5}, "options.top_k"),
        ({"top_p": 2}, "options.top_p"),
        ({"num_ctx": 10**9}, "options.num_ctx"),
        ({"stop": [1]}, "options.stop"),
        ({"seed": True}, "options.seed"),
        ({"no_such_option": 1}, "options.no_such_option"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_options(options)
    assert err.value.field == field
    assert field in str(err.value)


def test_options_must_be_an_object() -> None:
    with pytest.raises(InvalidRequest, match="options must be an object"):
        parse_options([1])
