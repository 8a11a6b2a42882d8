"""The engine's pure helpers (no model needed)."""

from __future__ import annotations

import re

import pytest

from localllm.runner.engine import grammar_for


def _char_rule(grammar: str) -> str:
    match = re.search(r"^char ::= (.*)$", grammar, re.M)
    assert match, grammar
    return match.group(1)


def test_schema_strings_cannot_hold_raw_control_characters() -> None:
    grammar = grammar_for({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]})
    # A raw newline inside a JSON string makes json.loads fail: the character class must exclude it.
    assert r"\x00-\x1F" in _char_rule(grammar).split("|")[0]


def test_json_format_uses_the_strict_json_grammar() -> None:
    assert r"\x00-\x1F" in grammar_for("json")


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format must be"):
        grammar_for("yaml")
