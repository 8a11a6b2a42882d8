from __future__ import annotations

import pytest

from localllm.domain.errors import InvalidModelName
from localllm.domain.names import ModelName, parse_name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("stories", ModelName("localllm", "library", "stories", "latest")),
        ("stories:q8", ModelName("localllm", "library", "stories", "q8")),
        ("me/stories:v1", ModelName("localllm", "me", "stories", "v1")),
        ("hf.co/TheBloke/Llama-2-7B-GGUF", ModelName("hf.co", "TheBloke", "Llama-2-7B-GGUF", "latest")),
        ("huggingface.co/u/r:Q4_K_M", ModelName("hf.co", "u", "r", "Q4_K_M")),
        ("https://hf.co/u/r:model-00001-of-00002.gguf", ModelName("hf.co", "u", "r", "model-00001-of-00002.gguf")),
    ],
)
def test_parse(raw: str, expected: ModelName) -> None:
    assert parse_name(raw) == expected
    assert parse_name(str(expected)) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "../../etc/passwd",
        "..",
        "a/../b",
        "hf.co/../../x",
        "a:..",
        "a\x00b",
        "a\nb",
        "a\\b",
        "/abs",
        "a/",
        ":tag",
        "x:",
        "a/b/c/d",
        "evil.com/u/r",
        ".hidden",
        "name with space",
        "",
        "   ",
    ],
)
def test_path_tricks_are_refused(raw: str) -> None:
    with pytest.raises(InvalidModelName) as err:
        parse_name(raw)
    assert err.value.field == "model"


def test_non_string_names_the_field() -> None:
    with pytest.raises(InvalidModelName, match="destination must be a string"):
        parse_name(42, field="destination")


def test_comparison_key_ignores_case() -> None:
    assert parse_name("hf.co/User/Repo:Q8_0").key() == parse_name("HF.co/user/repo:q8_0").key()
