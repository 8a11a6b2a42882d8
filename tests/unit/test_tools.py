"""Tool declarations, forced calls and finding calls in model output (no model needed)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from localllm.chat import prompt
from localllm.chat.tools import call_schema, may_be_a_call, parse_tool_calls, parse_tool_choice, parse_tools
from localllm.domain.errors import InvalidRequest
from localllm.domain.messages import ChatMessage, Tool, ToolCall

from ..fakes import render_chat

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ADD = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
TOOLS = parse_tools([WEATHER, ADD])


def test_parse_tools_keeps_name_description_and_schema() -> None:
    assert TOOLS[0] == Tool("get_weather", "The weather in a city", WEATHER["function"]["parameters"])  # type: ignore[index]
    assert TOOLS[1].parameters == {"type": "object"}
    assert TOOLS[0].as_dict() == WEATHER


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"name": "x"}, "tools"),
        ([{"type": "retrieval"}], "tools[0]"),
        ([{"type": "function"}], "tools[0].function"),
        ([{"type": "function", "function": {"name": "bad name!"}}], "tools[0].function.name"),
        ([{"type": "function", "function": {"name": "f", "parameters": "nope"}}], "tools[0].function.parameters"),
        ([ADD, ADD], "tools[1].function.name"),
    ],
)
def test_bad_tools_name_the_field(raw: Any, field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_tools(raw)
    assert err.value.field == field


def test_tool_choice() -> None:
    assert parse_tool_choice(None, TOOLS).mode == "auto"
    assert parse_tool_choice(None, ()).mode == "none"
    assert parse_tool_choice("required", TOOLS).mode == "required"
    named = parse_tool_choice({"type": "function", "function": {"name": "add"}}, TOOLS)
    assert (named.mode, named.name) == ("named", "add")
    for bad in ("sometimes", {"type": "function", "function": {"name": "nope"}}, 3):
        with pytest.raises(InvalidRequest) as err:
            parse_tool_choice(bad, TOOLS)
        assert err.value.field == "tool_choice"
    with pytest.raises(InvalidRequest, match="needs tools"):
        parse_tool_choice("required", ())


def test_call_schema_only_when_a_call_is_required() -> None:
    assert call_schema(TOOLS, parse_tool_choice("auto", TOOLS)) is None
    named = call_schema(TOOLS, parse_tool_choice({"type": "function", "function": {"name": "get_weather"}}, TOOLS))
    assert named is not None
    jsonschema.validate({"name": "get_weather", "arguments": {"city": "Oslo"}}, named)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "add", "arguments": {}}, named)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "get_weather", "arguments": {}}, named)
    either = call_schema(TOOLS, parse_tool_choice("required", TOOLS))
    assert either is not None
    jsonschema.validate({"name": "add", "arguments": {"a": 1}}, either)
    # (that llama.cpp compiles both into grammars: tests/e2e/test_engine.py)


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Oslo"}}]',
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}',
        ' {"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"} ',
        '{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}',
    ],
)
def test_calls_are_found_in_every_usual_format(text: str) -> None:
    calls = parse_tool_calls(text, TOOLS)
    assert calls is not None and len(calls) == 1
    assert (calls[0].name, calls[0].arguments) == ("get_weather", {"city": "Oslo"})
    assert calls[0].id.startswith("call_")


def test_several_calls_and_non_calls() -> None:
    two = (
        '<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>'
        '<tool_call>{"name": "add", "arguments": {}}</tool_call>'
    )
    calls = parse_tool_calls(two, TOOLS)
    assert calls is not None and [c.arguments for c in calls] == [{"a": 1}, {}]
    assert calls[0].id != calls[1].id
    assert parse_tool_calls("Once upon a time", TOOLS) is None
    assert parse_tool_calls('{"name": "unknown", "arguments": {}}', TOOLS) is None
    assert parse_tool_calls('{"city": "Oslo"}', TOOLS) is None
    assert parse_tool_calls('Sure! <tool_call>{"name": "add", "arguments": {}}</tool_call>', TOOLS) is None
    assert parse_tool_calls('{"name": "add", "arguments": {"a": ', TOOLS) is None  # cut short


def test_may_be_a_call_holds_back_only_what_could_start_one() -> None:
    for head in ("", " ", "<tool", "<tool_call>{", "[TOOL", "{", "<|python"):
        assert may_be_a_call(head), head
    for head in ("Once", "The answer", "<b>"):
        assert not may_be_a_call(head), head


TOOL_TEMPLATE = (
    "{% if tools %}TOOLS:{{ tools | tojson }}\n{% endif %}"
    "{% for m in messages %}{{ m.role }}:{{ m.content }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}CALL {{ c.function.name }} {{ c.function.arguments | tojson }}"
    "{% endfor %}{% endif %}{% if m.tool_call_id %} (for {{ m.tool_call_id }}){% endif %}{{ '\\n' }}{% endfor %}"
)


def test_a_tools_template_gets_tools_and_calls_as_objects() -> None:
    history = [
        ChatMessage("user", "Weather in Oslo?"),
        ChatMessage("assistant", "", (ToolCall("call_1", "get_weather", {"city": "Oslo"}),)),
        ChatMessage("tool", "sunny", tool_call_id="call_1"),
    ]
    text = render_chat(history, template=TOOL_TEMPLATE, tools=TOOLS)
    first, *rest = text.splitlines()
    assert json.loads(first.removeprefix("TOOLS:")) == [WEATHER, TOOLS[1].as_dict()]
    assert rest == ["user:Weather in Oslo?", 'assistant:CALL get_weather {"city": "Oslo"}', "tool:sunny (for call_1)"]
    assert prompt.supports_tools(TOOL_TEMPLATE) and not prompt.supports_tools("{{ messages }}")


def test_other_templates_get_the_tools_described_in_the_system_message() -> None:
    text = render_chat([ChatMessage("user", "hi")], template=None, tools=TOOLS)
    assert text.startswith("You may call these functions:")
    assert json.dumps(WEATHER) in text and "<tool_call>" in text
    assert text.endswith("User: hi\nAssistant:")
    with_system = render_chat(
        [ChatMessage("system", "Be brief."), ChatMessage("user", "hi")],
        template="{{ messages[0].content }}",
        tools=TOOLS,
    )
    assert with_system.startswith("Be brief.\n\nYou may call these functions:")
