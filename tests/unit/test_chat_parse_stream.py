"""The format families' parse while streaming (`formats.stream`), and the thinking default of the render."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from localllm.chat import formats
from localllm.chat.formats import stream
from localllm.domain.events import Done, Event, Thinking, Token, ToolCallArguments, ToolCalls, ToolCallStart
from localllm.domain.messages import Tool

from .chat_parse_cases import CASES, OURS, TOOLS, rendered, template

WHOLE = [
    c
    for c in CASES["cases"] + OURS["cases"]
    if not c["flags"].get("is_partial") and not c["flags"].get("continue_final_message")
]


def streamed(case: dict[str, Any], pieces: list[str]) -> list[Event]:
    flags = case["flags"]
    family = formats.detect(template(case["template"]))
    tools = [Tool(n, "", TOOLS[n]) for n in flags.get("tools", [])]
    text = rendered(case["template"], flags.get("enable_thinking", True), tuple(flags.get("tools", [])))

    async def source() -> AsyncGenerator[Event, None]:
        for piece in pieces:
            yield Token(piece)
        yield Done("stop")

    async def collect() -> list[Event]:
        split = flags.get("reasoning_format", "none") != "none"
        events = stream.parsed(
            source(), family, tools, prefix=family.opened(text), reasoning=split, new_id=lambda: "call_x"
        )
        return [e async for e in events]

    return asyncio.run(collect())


@pytest.mark.parametrize("case", WHOLE, ids=lambda c: f"{c['template']}:{c['line']}")
def test_streamed_a_character_at_a_time_gives_the_whole_outputs_message(case: dict[str, Any]) -> None:
    """Each piece's reasoning and answer go out as they are known, and all of them together are the message
    the whole output parses to: no partial marker leaks into the answer or the reasoning."""
    family = formats.detect(template(case["template"]))
    flags = case["flags"]
    tools = [Tool(n, "", TOOLS[n]) for n in flags.get("tools", [])]
    text = rendered(case["template"], flags.get("enable_thinking", True), tuple(flags.get("tools", [])))
    split = flags.get("reasoning_format", "none") != "none"
    whole = formats.parse(family, case["output"], tools, prefix=family.opened(text), reasoning=split)
    events = streamed(case, list(case["output"]))
    content = "".join(e.text for e in events if isinstance(e, Token))
    reasoning = "".join(e.text for e in events if isinstance(e, Thinking))
    calls = [c for e in events if isinstance(e, ToolCalls) for c in e.calls]
    assert content.strip() == whole.content.strip()
    assert reasoning.strip() == whole.reasoning.strip()
    assert [(c.name, c.arguments) for c in calls] == [(c.name, c.arguments) for c in whole.calls]
    assert [c.id for c in calls] == [c.id or "call_x" for c in whole.calls]  # the format's ids (Mistral's) kept
    assert isinstance(events[-1], Done)
    # each call also went out as it was read: begun once, with its arguments' pieces adding up to its JSON (a
    # call begun that turns out malformed stays begun: the only start with no call at the end)
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [(s.index, s.id, s.name) for s in starts][: len(calls)] == [(k, c.id, c.name) for k, c in enumerate(calls)]
    assert len(starts) == len(calls) or not calls
    for k, call in enumerate(calls):
        pieces = "".join(e.text for e in events if isinstance(e, ToolCallArguments) and e.index == k)
        assert pieces == call.arguments_json()


def said(events: list[Event]) -> list[tuple[str, str]]:
    return [
        ("thinking" if isinstance(e, Thinking) else "content", e.text)
        for e in events
        if isinstance(e, Token | Thinking)
    ]


def test_the_answer_streams_before_the_end_and_a_call_after_text_is_a_call() -> None:
    family = formats.detect(template("Qwen3.5-4B.jinja"))
    tools = [Tool("get_time", "", {"type": "object", "properties": {"city": {"type": "string"}}})]
    reader = stream.Reader(family, tools, prefix="<think>\n", reasoning=True)
    out: list[tuple[str, str]] = []
    for piece in ["Let me", " think", "\n</th", "ink>\n\nChecking", " now.\n<tool", "_call>\n<function=get_time>\n"]:
        out += said(reader.feed(piece, lambda: "call_x"))
    assert out == [("thinking", "Let me"), ("thinking", " think"), ("content", "Checking"), ("content", " now.\n")]
    reader.feed("<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>", lambda: "call_x")
    rest, message = reader.finish(lambda: "call_x")
    assert [(c.name, c.arguments) for c in message.calls] == [("get_time", {"city": "Paris"})]
    assert all(kind == "content" and not text.strip() for kind, text in said(rest))


def test_a_false_alarm_is_released() -> None:
    """`<tool` that turns out not to begin a call is the answer's text after all."""
    family = formats.detect(template("Qwen-Qwen2.5-7B-Instruct.jinja"))
    reader = stream.Reader(family, [Tool("f", "", {})], prefix=None, reasoning=True)
    assert said(reader.feed("a <tool", lambda: "call_x")) == [("content", "a ")]
    assert said(reader.feed("box> b", lambda: "call_x")) == [("content", "<toolbox> b")]


def test_ids_come_from_the_format_or_are_new() -> None:
    case: dict[str, Any] = {
        "template": "Kimi-K2-Thinking.jinja",
        "output": "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_time:0"
        '<|tool_call_argument_begin|>{"city": "X"}<|tool_call_end|><|tool_calls_section_end|>',
        "flags": {"tools": ["get_time"]},
    }
    (calls,) = [e for e in streamed(case, [case["output"]]) if isinstance(e, ToolCalls)]
    assert [c.id for c in calls.calls] == ["functions.get_time:0"]
    case["template"] = "Qwen-Qwen2.5-7B-Instruct.jinja"
    case["output"] = '<tool_call>\n{"name": "get_time", "arguments": {"city": "X"}}\n</tool_call>'
    (calls,) = [e for e in streamed(case, [case["output"]]) if isinstance(e, ToolCalls)]
    assert [c.id for c in calls.calls] == ["call_x"]
    assert json.dumps(calls.calls[0].arguments) == '{"city": "X"}'


def test_a_json_call_streams_its_name_first_then_its_arguments_in_pieces() -> None:
    """Qwen's `<tool_call>` JSON a few characters at a time: the call begins once its name is whole, and its
    arguments go out in several pieces before the end, each a beginning of the final JSON (a number waits
    for what follows it)."""
    tool = Tool("get_weather", "", {"type": "object", "properties": {"city": {"type": "string"}}})
    family = formats.detect(template("Qwen-Qwen2.5-7B-Instruct.jinja"))
    reader = stream.Reader(family, [tool], prefix=None, reasoning=True)
    arguments = '{"city": "São Paulo", "days": 12, "x": [1, {"y": null}]}'
    output = 'Sure.<tool_call>\n{"name": "get_weather", "arguments": ' + arguments + "}\n</tool_call>"
    events: list[Event] = []
    for at in range(0, len(output), 3):
        events += reader.feed(output[at : at + 3], lambda: "call_1")
    before = list(events)
    events += reader.finish(lambda: "call_1")[0]
    assert "".join(text for _, text in said(events)) == "Sure."
    assert [e for e in events if isinstance(e, ToolCallStart)] == [ToolCallStart(0, "call_1", "get_weather")]
    pieces = [e.text for e in before if isinstance(e, ToolCallArguments)]
    assert len(pieces) > 5
    assert "12" in "".join(pieces) and '"days": 1,' not in "".join(pieces)
    whole = [e.text for e in events if isinstance(e, ToolCallArguments)]
    assert "".join(whole) == '{"city": "São Paulo", "days": 12, "x": [1, {"y": null}]}'
    (calls,) = [e for e in events if isinstance(e, ToolCalls)]
    assert calls.calls[0].id == "call_1"
