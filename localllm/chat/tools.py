"""Tools (functions) a chat model may call: their declarations, forcing a call, and finding calls in output.

A model asks for a call in its own words: Hermes/Qwen write `<tool_call>{"name": ..., "arguments": ...}
</tool_call>`, Mistral `[TOOL_CALLS] [{...}]`, Llama 3 `<|python_tag|>{...}` or a bare JSON object whose
`name` is a declared tool (`parameters` standing for `arguments`). `parse_tool_calls` reads all of these: it
reads a required call (below); free output is read by the template's format family (`chat/formats/`).

When a call is required (`tool_choice: "required"` or a named function), the output is constrained by a grammar
to a call of a declared tool whose arguments validate against its schema: in the template's own syntax where
`chat/formats/grammar.py` knows it, else to the JSON object `{"name": <a declared tool>, "arguments": <that
tool's parameters>}` of `call_schema`, read by `held_back`.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import string
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

from ..domain.errors import InvalidRequest
from ..domain.events import Done, Event, Token, ToolCalls
from ..domain.messages import Tool, ToolCall

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_MARKERS = ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>", "{", "[")


def parse_tools(raw: Any, *, field: str = "tools") -> tuple[Tool, ...]:
    """OpenAI's (and Ollama's) `tools`: `[{"type": "function", "function": {name, description, parameters}}]`."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidRequest(f"{field} must be a list of tools", field=field)
    tools: list[Tool] = []
    for i, item in enumerate(raw):
        label = f"{field}[{i}]"
        if not isinstance(item, dict) or item.get("type", "function") != "function":
            raise InvalidRequest(f'{label} must be an object with "type": "function"', field=label)
        function = item.get("function")
        if not isinstance(function, dict):
            raise InvalidRequest(f"{label}.function must be an object", field=f"{label}.function")
        name = tool_name(function.get("name"), f"{label}.function.name")
        description = function.get("description") or ""
        if not isinstance(description, str):
            raise InvalidRequest(
                f"{label}.function.description must be a string", field=f"{label}.function.description"
            )
        parameters = function.get("parameters")
        if parameters is None:
            parameters = {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise InvalidRequest(
                f"{label}.function.parameters must be a JSON schema object", field=f"{label}.function.parameters"
            )
        if name in {t.name for t in tools}:
            raise InvalidRequest(f"{label}: tool '{name}' is declared twice", field=f"{label}.function.name")
        tools.append(Tool(name, description, parameters))
    return tuple(tools)


def tool_name(name: Any, label: str) -> str:
    """A tool's name, checked (what every API allows: 1 to 64 letters, digits, '_', '-', '.' or ':')."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequest(f"{label} must be 1 to 64 letters, digits, '_', '-', '.' or ':'", field=label)
    return name


@dataclass(frozen=True)
class ToolChoice:
    """`none`: no call (tools are not shown to the model); `auto`: the model decides; `required`: one of
    `tools` must be called; a name: that one must be called."""

    mode: str = "auto"  # none | auto | required | named
    name: str | None = None


def parse_tool_choice(raw: Any, tools: Sequence[Tool], *, field: str = "tool_choice") -> ToolChoice:
    if raw is None:
        return ToolChoice("auto" if tools else "none")
    if raw in ("none", "auto", "required"):
        if raw == "required" and not tools:
            raise InvalidRequest('tool_choice "required" needs tools', field=field)
        return ToolChoice(str(raw))
    name = None
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("function"), dict):
        name = raw["function"].get("name")
    if not isinstance(name, str):
        raise InvalidRequest(
            'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
            field=field,
        )
    if name not in {t.name for t in tools}:
        raise InvalidRequest(f"tool_choice names '{name}', which is not among the tools", field=field)
    return ToolChoice("named", name)


def call_schema(tools: Sequence[Tool], choice: ToolChoice) -> dict[str, Any] | None:
    """The JSON schema that forces a call, when `choice` requires one; None otherwise."""
    if choice.mode not in ("required", "named"):
        return None
    chosen = [t for t in tools if choice.mode == "required" or t.name == choice.name]
    alternatives = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": t.parameters},
            "required": ["name", "arguments"],
        }
        for t in chosen
    ]
    return alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}


def chosen_tools(tools: Sequence[Tool], schema: Any) -> tuple[Tool, ...]:
    """The tools a required call's schema (`call_schema`) leaves to choose from."""
    alternatives = schema.get("anyOf", [schema]) if isinstance(schema, dict) else []
    names = {a.get("properties", {}).get("name", {}).get("const") for a in alternatives if isinstance(a, dict)}
    return tuple(t for t in tools if t.name in names)


def may_be_a_call(text: str) -> bool:
    """Whether output that begins with `text` may turn out to be a tool call (so it is held back while
    streaming rather than sent as content)."""
    head = text.lstrip()
    return any(head.startswith(m) or m.startswith(head) for m in _MARKERS) if head else True


def parse_tool_calls(text: str, tools: Sequence[Tool], *, short_ids: bool = False) -> list[ToolCall] | None:
    """The calls `text` asks for, in any of the usual formats; None when it is not (only) tool calls."""
    names = {t.name for t in tools}
    body = text.strip()
    candidates: list[Any] = []
    if "<tool_call>" in body:
        for block in _TAGGED.findall(body):
            candidates.append(_loads(block))
        if _TAGGED.sub("", body).strip():
            return None  # text besides the calls: leave it all as content
    else:
        for marker in ("[TOOL_CALLS]", "<|python_tag|>"):
            if body.startswith(marker):
                body = body[len(marker) :].strip()
        parsed = _loads(body)
        candidates.extend(parsed if isinstance(parsed, list) else [parsed])
    calls = []
    for item in candidates:
        call = _as_call(item, names, short_ids)
        if call is None:
            return None
        calls.append(call)
    return calls or None


async def held_back(
    events: AsyncGenerator[Event, None], tools: Sequence[Tool], *, forced: bool = False, short_ids: bool = False
) -> AsyncGenerator[Event, None]:
    """`events` with the output held back while it may still turn out to be a tool call (always, when a call
    is `forced`): once it plainly is not one, all of it goes out as one `Token` and the rest flows through;
    at the end, a call found in it goes out as `ToolCalls`, else the text as a `Token`, before `Done`."""
    held: list[Token] | None = []
    async with contextlib.aclosing(events):
        async for event in events:
            if held is not None and isinstance(event, Token):
                held.append(event)
                if forced or may_be_a_call("".join(t.text for t in held)):
                    continue
                event, held = _joined(held), None
            elif held is not None and isinstance(event, Done):
                if held:
                    calls = parse_tool_calls("".join(t.text for t in held), tools, short_ids=short_ids)
                    yield ToolCalls(tuple(calls)) if calls else _joined(held)
                held = None
            yield event


def _joined(parts: Sequence[Token]) -> Token:
    return Token("".join(t.text for t in parts), tuple(lp for t in parts for lp in t.logprobs))


def new_call_id(short: bool = False) -> str:
    """A fresh tool-call id: OpenAI's shape, or 9 alphanumerics where the template demands them (Mistral)."""
    if short:
        return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(9))
    return "call_" + secrets.token_hex(12)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _as_call(item: Any, names: set[str], short_ids: bool = False) -> ToolCall | None:
    if not isinstance(item, dict):
        return None
    if isinstance(item.get("function"), dict):  # {"type": "function", "function": {...}}
        item = item["function"]
    name = item.get("name")
    arguments = item.get("arguments", item.get("parameters", {}))
    if isinstance(arguments, str):
        arguments = _loads(arguments)
    if name not in names or not isinstance(arguments, dict):
        return None
    return ToolCall(new_call_id(short_ids), name, arguments)
