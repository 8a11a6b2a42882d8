"""A tool call in a family's own syntax, as a grammar the runner constrains the output to (`CallSyntax`).

With `tool_choice: auto` the grammar is lazy, as llama.cpp's: the output is free until the family's call
marker (its trigger), and from there a call of a declared tool with arguments valid against its schema. A
required call (`required`, or a named tool) is constrained from the first token, in the same syntax, so the
family's parser reads it. Families not listed here keep the generic JSON call (`tools.call_schema`) for a
required call and free output for `auto` (docs/templates.md lists them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from ...domain.messages import Tool
from ...domain.options import CallSyntax
from .registry import detect

Part = str | dict[str, Any]


def _json_call(start: str, end: str, arguments: str = "arguments") -> Callable[[Tool], tuple[Part, ...]]:
    def call(tool: Tool) -> tuple[Part, ...]:
        schema = {
            "type": "object",
            "properties": {"name": {"const": tool.name}, arguments: tool.parameters},
            "required": ["name", arguments],
        }
        return (start, schema, end) if end else (start, schema)

    return call


def _mistral(tool: Tool) -> tuple[Part, ...]:
    return ("[TOOL_CALLS]" + tool.name + "[ARGS]", tool.parameters)


# family name: how one call of a tool is written, and the pattern that begins one (the lazy grammar's trigger)
SYNTAXES: dict[str, tuple[Callable[[Tool], tuple[Part, ...]], str]] = {
    "hermes": (_json_call("<tool_call>\n", "\n</tool_call>"), re.escape("<tool_call>")),
    "mistral": (_mistral, re.escape("[TOOL_CALLS]")),  # Mistral Small 3.2, Devstral: NAME[ARGS]{…}
    "mistral-list": (_json_call("[TOOL_CALLS][", "]"), re.escape("[TOOL_CALLS]")),  # Mistral Nemo: [{…}]
    "ministral-3": (_mistral, re.escape("[TOOL_CALLS]")),
    "llama-3": (_json_call("", "", "parameters"), r"^\s*(\{)"),
}


def syntax_of(template: str | None) -> str:
    """The call syntax a template teaches: its family's name, or `mistral-list` for a Mistral template that
    writes its calls as a JSON list (Nemo's) rather than `NAME[ARGS]{…}`."""
    family = detect(template).name
    if family == "mistral" and "[ARGS]" not in (template or ""):
        return "mistral-list"
    return family


def call_syntax(syntax: str, tools: Sequence[Tool], *, lazy: bool) -> CallSyntax | None:
    """The grammar of a call of one of `tools` in `syntax` (`syntax_of` a template; None for one without a
    grammar here): lazy, started by the family's call marker, or from the first token."""
    if not tools or syntax not in SYNTAXES:
        return None
    write, trigger = SYNTAXES[syntax]
    return CallSyntax(tuple(write(t) for t in tools), (trigger,) if lazy else ())
