"""llama.cpp's chat-output parse cases (tests/data/chat_parse/cases.json) run through `chat.formats`.

Each case is rendered as llama.cpp renders it (the template with the case's tools, `enable_thinking` true
unless the case turns it off) to know whether the prompt leaves the thinking open, then its output is parsed
by the family the template's text picks. A continued final message (`continue_final_message`) starts in its
state (the reasoning or the answer) with the message's text before it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from localllm.chat import formats, prompt, sandbox
from localllm.domain.messages import ChatMessage, Tool

DATA = Path(__file__).parent.parent / "data"
CASES: dict[str, Any] = json.loads((DATA / "chat_parse" / "cases.json").read_text())
OURS: dict[str, Any] = json.loads((DATA / "chat_parse" / "ours.json").read_text())
TOOLS: dict[str, Any] = {**CASES["tools"], **OURS["tools"]}


def case_id(case: dict[str, Any]) -> str:
    return f"{case['template']}:{case['line']}"


@functools.cache
def template(name: str) -> str:
    return (DATA / "templates" / name).read_text()


@functools.cache
def rendered(name: str, think: bool, tools: tuple[str, ...]) -> str:
    declared = [Tool(n, "", TOOLS[n]) for n in tools]
    render = prompt.chat_render(
        [ChatMessage("user", "Hey there!")], template=template(name), tools=declared, think=think
    )
    assert isinstance(render, prompt.Render)
    try:
        return sandbox.render(render.template, render.variables, max_bytes=1 << 22)
    except Exception:  # a template our renderer cannot take: parse as after a closed prompt
        return ""


def parse(case: dict[str, Any]) -> formats.Parsed:
    flags = case["flags"]
    family = formats.detect(template(case["template"]))
    tools = [Tool(n, "", TOOLS[n]) for n in flags.get("tools", [])]
    split = flags.get("reasoning_format", "none") != "none"
    continued = flags.get("continue_final_message")
    if continued:
        final = flags["messages"][-1]
        start = "" if continued == "reasoning" else None  # the final message, not the prompt, opened it
        got = formats.parse(family, case["output"], tools, prefix=start, reasoning=split)
        if continued == "reasoning":
            lead = case["output"][: len(case["output"]) - len(case["output"].lstrip())]
            got.reasoning = final["reasoning_content"] + lead + got.reasoning
        else:
            got.reasoning = final["reasoning_content"] if split else ""
            got.content = final["content"] + got.content
        return got
    text = rendered(case["template"], flags.get("enable_thinking", True), tuple(flags.get("tools", [])))
    partial = flags.get("is_partial", False)
    return formats.parse(family, case["output"], tools, prefix=family.opened(text), reasoning=split, partial=partial)


def matches(case: dict[str, Any], got: formats.Parsed) -> bool:
    """llama.cpp's comparison: content and reasoning without surrounding whitespace, call names, JSON-equal
    arguments (arguments cut off mid-way compare equal to any), ids."""
    want = case["expect"]
    if got.content.strip() != want["content"].strip() or got.reasoning.strip() != want["reasoning_content"].strip():
        return False
    if len(got.calls) != len(want["tool_calls"]):
        return False
    for call, expected in zip(got.calls, want["tool_calls"], strict=True):
        if call.name != expected["name"] or call.id != expected["id"]:
            return False
        try:
            arguments = json.loads(expected["arguments"] or "{}")
        except ValueError:
            continue
        if call.arguments != arguments:
            return False
    return True
