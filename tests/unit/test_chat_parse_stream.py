"""The format families' parse while streaming (`formats.stream`), and the thinking default of the render."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from localllm.chat import formats
from localllm.chat.formats import stream
from localllm.domain.types import Done, Event, Thinking, Token, Tool, ToolCalls

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
    assert isinstance(events[-1], Done)


def test_the_answer_streams_before_the_end_and_a_call_after_text_is_a_call() -> None:
    family = formats.detect(template("Qwen3.5-4B.jinja"))
    tools = [Tool("get_time", "", {"type": "object", "properties": {"city": {"type": "string"}}})]
    reader = stream.Reader(family, tools, prefix="<think>\n", reasoning=True)
    said: list[tuple[str, str]] = []
    for piece in ["Let me", " think", "\n</th", "ink>\n\nChecking", " now.\n<tool", "_call>\n<function=get_time>\n"]:
        said += reader.feed(piece)
    assert said == [("thinking", "Let me"), ("thinking", " think"), ("content", "Checking"), ("content", " now.\n")]
    reader.feed("<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>")
    rest, message = reader.finish()
    assert [(c.name, c.arguments) for c in message.calls] == [("get_time", {"city": "Paris"})]
    assert all(kind == "content" and not text.strip() for kind, text in rest)


def test_a_false_alarm_is_released() -> None:
    """`<tool` that turns out not to begin a call is the answer's text after all."""
    family = formats.detect(template("Qwen-Qwen2.5-7B-Instruct.jinja"))
    reader = stream.Reader(family, [Tool("f", "", {})], prefix=None, reasoning=True)
    assert reader.feed("a <tool") == [("content", "a ")]
    assert reader.feed("box> b") == [("content", "<toolbox> b")]


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
