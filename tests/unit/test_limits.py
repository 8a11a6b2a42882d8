"""The amplifier bounds of limits.py: each refusal names its field and its bound."""

from __future__ import annotations

import math

import pytest

from localllm.domain import limits
from localllm.domain.errors import InvalidRequest
from localllm.domain.messages import Tool
from localllm.domain.options import Constraints, check_range, parse_options


def refused(**kwargs: object) -> InvalidRequest:
    args: dict[str, object] = {"constraints": Constraints(), "stop": None, **kwargs}
    messages = args.pop("messages", ())
    with pytest.raises(InvalidRequest) as err:
        limits.check_generation(messages, **args)  # type: ignore[arg-type]
    return err.value


def test_counts() -> None:
    assert refused(messages=[{}] * (limits.MAX_MESSAGES + 1)).field == "messages"
    assert refused(tools=[Tool(f"t{i}") for i in range(limits.MAX_TOOLS + 1)]).field == "tools"
    assert refused(stop=["x"] * (limits.MAX_STOP + 1)).field == "stop"
    assert refused(stop=["x" * (limits.MAX_STOP_BYTES + 1)]).field == "stop"
    bias = tuple((i, 1.0) for i in range(limits.MAX_LOGIT_BIAS + 1))
    assert refused(constraints=Constraints(logit_bias=bias)).field == "logit_bias"
    limits.check_generation([{}] * 10, tools=[Tool("t")], constraints=Constraints(), stop=["a", "b"])


def test_schemas() -> None:
    deep: dict[str, object] = {"type": "string"}
    for _ in range(limits.SCHEMA_MAX_DEPTH):
        deep = {"type": "array", "items": deep}
    assert "nests deeper" in str(refused(constraints=Constraints(format=deep)))
    huge = {"type": "array", "items": {"type": "string"}, "minItems": limits.SCHEMA_MAX_REPEAT + 1}
    assert "minItems" in str(refused(constraints=Constraints(format=huge)))
    many = {"type": "object", "properties": {f"p{i}": {"type": "string", "maxLength": 9000} for i in range(20)}}
    assert "add up to" in str(refused(constraints=Constraints(format=many)))
    tool = Tool("t", parameters={"type": "object", "description": "x" * limits.SCHEMA_MAX_BYTES})
    assert refused(tools=[tool]).field == "tools[0].function.parameters"
    limits.check_schema({"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}}})


def test_a_tool_schemas_counts_matter_only_when_a_call_is_forced() -> None:
    """Claude Code declares `maxLength: 524288` in its tools and never forces a call: the counts are a grammar's
    cost, paid only by a forced call's schema (`constraints.format`), which still refuses them."""
    schema = {"type": "object", "properties": {"content": {"type": "string", "maxLength": 524288}}}
    limits.check_generation((), tools=[Tool("Write", parameters=schema)], constraints=Constraints(), stop=None)
    forced = {"type": "object", "properties": {"name": {"const": "Write"}, "arguments": schema}}
    assert "maxLength 524288" in str(
        refused(tools=[Tool("Write", parameters=schema)], constraints=Constraints(format=forced))
    )


def test_grammars() -> None:
    err = refused(constraints=Constraints(grammar='root ::= "aaaa"{100000}'))
    assert err.field == "grammar" and "repetitions" in str(err)
    assert refused(constraints=Constraints(grammar="root ::= x{100000}\nx ::= [a-z]{100000}")).field == "grammar"
    limits.check_grammar('root ::= "yes" | "no" # a comment with {99999999}\nitem ::= [0-9]{1,5}')
    limits.check_grammar('root ::= "{" "}"')  # braces inside literals are not repetitions


def test_a_nul_in_a_grammar_or_schema_is_refused_not_cut() -> None:
    # llama.cpp takes a grammar as a C string: a NUL would cut it there, and the constraint would vanish.
    err = refused(constraints=Constraints(grammar='root ::= "yes"\0 | "no"'))
    assert err.field == "grammar" and "NUL" in str(err)
    assert refused(constraints=Constraints(format={"const": "a\0b"})).field == "format"
    assert refused(constraints=Constraints(format={"properties": {"a\0": {}}})).field == "format"
    tool = Tool("t", parameters={"type": "object", "properties": {"x": {"enum": ["\0"]}}})
    assert refused(tools=[tool]).field == "tools[0].function.parameters"
    with pytest.raises(InvalidRequest, match="NUL") as regex:
        limits.check_regex("a\0b", "grammar.value")
    assert regex.value.field == "grammar.value"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_in_no_range(value: float) -> None:
    for low, high in ((0.0, None), (0.0, 2.0), (None, None)):
        with pytest.raises(InvalidRequest, match="temperature must be a finite number") as err:
            check_range(value, "temperature", low, high)
        assert err.value.field == "temperature"
    with pytest.raises(InvalidRequest, match="options.top_p must be a finite number"):
        parse_options({"top_p": value})
    with pytest.raises(InvalidRequest, match="options.presence_penalty must be a finite number"):
        parse_options({"presence_penalty": value})  # an option with no range of its own
    check_range(10**400, "seed", 0)  # a huge integer is finite (and no OverflowError)


def test_prompt_bytes_are_relative_to_the_context_and_capped() -> None:
    assert limits.prompt_bytes(2048) == limits.BYTES_PER_TOKEN * 2048
    assert limits.prompt_bytes(1 << 24) == limits.PROMPT_MAX_BYTES


def test_regexes_turned_into_grammars_are_bounded() -> None:
    from localllm.server.dialects.tgi.regex_grammar import UnsupportedRegex, regex_to_gbnf

    with pytest.raises(UnsupportedRegex, match="longer than"):
        regex_to_gbnf("a" * (limits.REGEX_MAX_BYTES + 1))
    with pytest.raises(UnsupportedRegex):  # Python's own parser or ours: refused, never a RecursionError
        regex_to_gbnf("(" * 1500 + "a" + ")" * 1500)
    assert regex_to_gbnf("[a-z]{2,3}") == "root ::= [a-z]{2,3}\n"


def test_the_prompt_caches_default_ram_is_a_share_of_the_free_ram_and_capped() -> None:
    assert limits.prompt_cache_ram(4 << 30) == 1 << 30
    assert limits.prompt_cache_ram(256 << 30) == limits.PROMPT_CACHE_RAM_MAX == 8 << 30
    assert limits.prompt_cache_ram(0) == 0
