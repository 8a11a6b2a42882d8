from __future__ import annotations

import pytest

from localllm.domain.errors import InvalidRequest
from localllm.domain.options import Options, parse_options


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
        ({"kv_cache_type": "q5_1"}, "options.kv_cache_type"),
        ({"kv_cache_type": 8}, "options.kv_cache_type"),
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


def test_kv_cache_type_is_a_load_option_read_in_lower_case() -> None:
    assert parse_options({"kv_cache_type": " Q8_0"}).kv_cache_type == "q8_0"
    assert parse_options({"kv_cache_type": "f16"}).merged_over(Options(kv_cache_type="q4_0")).kv_cache_type == "f16"
    assert Options().merged_over(Options(kv_cache_type="q4_0")).kv_cache_type == "q4_0", "a Modelfile's value"
    with pytest.raises(InvalidRequest, match="must be one of f16, q8_0, q4_0, got 'q5_1'"):
        parse_options({"kv_cache_type": "q5_1"})
