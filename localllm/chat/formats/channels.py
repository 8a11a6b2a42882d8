"""Formats whose output is a sequence of addressed messages or sections rather than reasoning-then-answer:
gpt-oss's harmony channels, Muse's recipients, Functionary v3.2's `>>>` turns; and the call syntaxes that
need more than one pattern (Kimi K2's sections, DeepSeek's tool tokens, MiniMax M3's nested XML, Llama 3's
bare JSON).

gpt-oss is parsed here by hand rather than with OpenAI's `openai-harmony` package: that package reads tokens,
not text, and loads its tokenizer's vocabulary from the network on first use, which a daemon that must work
offline cannot do (tried with openai-harmony 0.0.8: "error downloading or loading vocab file").
"""

from __future__ import annotations

import re
from typing import Any

from . import calls as c
from . import values
from .base import Call, Found, Parsed, Tools

# -- gpt-oss (harmony) ------------------------------------------------------------------------------------------

_HARMONY_END = re.compile(r"<\|end\|>|<\|call\|>|<\|return\|>")
_HARMONY_START = "<|start|>assistant"


def harmony(text: str, tools: Tools, opened: bool, reasoning: bool, partial: bool) -> Parsed:
    """gpt-oss: messages `[to=R]<|channel|>C[ to=R][ <|constrain|>X]<|message|>BODY<|end|>`, each after
    `<|start|>assistant`. `analysis` is reasoning, `final` and `commentary` the answer, `to=functions.NAME`
    a call; messages to other recipients (built-in tools) are dropped."""
    out = Parsed()
    content: list[str] = []
    thoughts: list[str] = []
    if opened:  # the prompt left an analysis message open
        text = "<|channel|>analysis<|message|>" + text
    elif (
        not partial
        and "<|message|>" not in text.split(_HARMONY_START, 1)[0]
        and not text.lstrip().startswith(("<|channel|>", "to="))
    ):
        text = "<|message|>" + text  # the answer's text, the prompt having opened its message
    for raw in _harmony_messages(text):
        head, sep, body = raw.partition("<|message|>")
        if not sep:
            continue
        end = _HARMONY_END.search(body)
        closing = body[end.start() : end.end()] if end else ""
        body = body[: end.start()] if end else body
        channel = re.findall(r"<\|channel\|>\s*(\w+)", head)
        recipient = re.findall(r"to=([^\s<]+)", head)
        to = recipient[-1] if recipient else None
        kind = channel[-1] if channel else "final"
        if to and to.startswith("functions."):
            name = to[len("functions.") :]
            got = values.json_prefix(body)
            if tools and name in tools and got is not None and isinstance(got[0], dict):
                out.calls.append(Call(name, got[0]))
            continue
        if to not in (None, "assistant", "user"):
            continue
        if kind == "analysis":
            if reasoning:
                thoughts.append(body)
            else:
                content.append(raw[: raw.find("<|message|>")] + "<|message|>" + body + closing)
        else:
            content.append(body)
    out.reasoning = "".join(thoughts).strip()
    out.content = "".join(content)
    return out


def _harmony_messages(text: str) -> list[str]:
    return [m for m in text.split(_HARMONY_START)]


# -- Muse (glimmer) ---------------------------------------------------------------------------------------------

_MUSE_INVOKE = c.invoke("atem:", ("<atem:function_calls>", "</atem:function_calls>"))


def muse(text: str, tools: Tools, opened: bool, reasoning: bool, partial: bool) -> Parsed:
    """Muse: messages ` to=RECIPIENT<|message|>BODY<|eot|>` after `<|start|>assistant`: `user` is the answer,
    `self` reasoning, a tool's name a call in `<atem:function_calls>`."""
    out = Parsed()
    content: list[str] = []
    thoughts: list[str] = []
    for raw in text.split(_HARMONY_START):
        head, sep, body = raw.partition("<|message|>")
        if not sep:
            continue
        body = re.split(r"<\|eot\|>|<\|eom\|>", body, maxsplit=1)[0]
        m = re.search(r"to=(\S+)", head)
        to = m.group(1) if m else "user"
        if to == "user":
            content.append(body)
        elif to == "self":
            thoughts.append(body)
        elif tools:
            start = body.find("<atem:function_calls>")
            got = _MUSE_INVOKE(body, start, tools) if start >= 0 else None
            if got is not None:
                out.calls.extend(got[0])
    out.content = "".join(content)
    out.reasoning = "".join(thoughts).strip() if reasoning else ""
    return out


# -- Functionary v3.2 ------------------------------------------------------------------------------------------


def functionary_v32(text: str, tools: Tools, opened: bool, reasoning: bool, partial: bool) -> Parsed:
    """Functionary v3.2: turns after `>>>` (the prompt ends with the first): `all\\nTEXT` is the answer,
    `NAME\\n{…}` a call."""
    out = Parsed()
    content: list[str] = []
    turns = text.split(">>>")
    if partial and "\n" not in turns[-1]:
        turns.pop()  # its recipient is not known yet
    for turn in turns:
        name, _, body = turn.partition("\n")
        name = name.strip()
        if name == "all":
            content.append(body)
            continue
        got = values.json_prefix(body)
        if tools and name in tools and got is not None and isinstance(got[0], dict):
            out.calls.append(Call(name, got[0]))
        elif not (partial and tools and name in tools):  # a call still being written is not the answer
            content.append(turn)
    out.content = "".join(content)
    return out


# -- Kimi K2 ---------------------------------------------------------------------------------------------------

_KIMI_CALL = re.compile(r"\s*<\|tool_call_begin\|>\s*([^<]+?)\s*<\|tool_call_argument_begin\|>")


def kimi_section(text: str, pos: int, tools: Tools) -> tuple[list[Call], int] | None:
    """`<|tool_calls_section_begin|>` then `<|tool_call_begin|>functions.NAME:i<|tool_call_argument_begin|>{…}
    <|tool_call_end|>` calls (ids `functions.NAME:i`), then `<|tool_calls_section_end|>`."""
    at = pos
    if text.startswith("<|tool_calls_section_begin|>", at):
        at += len("<|tool_calls_section_begin|>")
    out: list[Call] = []
    while m := _KIMI_CALL.match(text, at):
        call_id = m.group(1)
        name = call_id.split(":", 1)[0].removeprefix("functions.")
        got = values.json_prefix(text, m.end())
        if name not in tools or got is None or not isinstance(got[0], dict):
            return None
        out.append(Call(name, got[0], call_id))
        at = got[1]
        e = re.compile(r"\s*<\|tool_call_end\|>").match(text, at)
        at = e.end() if e else at
    if not out:
        return None
    e = re.compile(r"\s*<\|tool_calls_section_end\|>").match(text, at)
    return out, e.end() if e else at


# -- DeepSeek R1 / V3 ------------------------------------------------------------------------------------------

_DS_CALL = re.compile(r"\s*<｜tool▁call▁begin｜>\s*(?:function\s*<｜tool▁sep｜>\s*([^\n<]+)|([^<]+?)\s*<｜tool▁sep｜>)")


def deepseek_calls(text: str, pos: int, tools: Tools) -> tuple[list[Call], int] | None:
    """`<｜tool▁calls▁begin｜>` then `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{…}<｜tool▁call▁end｜>` calls (V3.1),
    or R1's `function<｜tool▁sep｜>NAME\\n```json\\n{…}```` ones, then `<｜tool▁calls▁end｜>`."""
    at = pos
    if text.startswith("<｜tool▁calls▁begin｜>", at):
        at += len("<｜tool▁calls▁begin｜>")
    out: list[Call] = []
    while m := _DS_CALL.match(text, at):
        name = (m.group(1) or m.group(2)).strip()
        at = m.end()
        f = re.compile(r"\s*```(?:json)?\s*").match(text, at)
        at = f.end() if f else at
        got = values.json_prefix(text, at)
        if name not in tools or got is None or not isinstance(got[0], dict):
            return None
        out.append(Call(name, got[0]))
        at = got[1]
        e = re.compile(r"\s*(?:```)?\s*<｜tool▁call▁end｜>").match(text, at)
        at = e.end() if e else at
    if not out:
        return None
    e = re.compile(r"\s*<｜tool▁calls▁end｜>").match(text, at)
    return out, e.end() if e else at


# -- MiniMax M3 ------------------------------------------------------------------------------------------------

_NS = "]<]minimax[>["


def minimax_m3(text: str, tools: Tools) -> Found | None:
    """`]<]minimax[>[<tool_call>` then `<invoke name="f">` with each argument an element named for it
    (`<city>Tokyo</city>`), objects and arrays (`<item>`) nested, each tag after the namespace token."""
    start = text.find(_NS + "<tool_call>")
    if start < 0:
        return None
    at = start + len(_NS + "<tool_call>")
    inv = re.compile(r"\s*" + re.escape(_NS) + r'<invoke name="([^"]+)">')
    out: list[Call] = []
    while m := inv.match(text, at):
        name = m.group(1)
        close = text.find(_NS + "</invoke>", m.end())
        if name not in tools or close < 0:
            return None
        value = _mm_children(text[m.end() : close], tools[name].parameters)
        if not isinstance(value, dict):
            return None
        out.append(Call(name, value))
        at = close + len(_NS + "</invoke>")
    if not out:
        return None
    e = re.compile(r"\s*" + re.escape(_NS) + r"</tool_call>").match(text, at)
    return Found(start, e.end() if e else at, out)


def _mm_elements(text: str) -> list[tuple[str, str]] | None:
    """The top-level `NS<key>…NS</key>` elements of `text`, as (key, inner text); None if text is not that."""
    out: list[tuple[str, str]] = []
    at = 0
    opening = re.compile(r"\s*" + re.escape(_NS) + r"<([A-Za-z_][\w.\-]*)>")
    while at < len(text) and text[at:].strip():
        m = opening.match(text, at)
        if m is None:
            return None
        key, depth, i = m.group(1), 1, m.end()
        while depth:
            o = text.find(_NS + f"<{key}>", i)
            e = text.find(_NS + f"</{key}>", i)
            if e < 0:
                return None
            if 0 <= o < e:
                depth, i = depth + 1, o + len(_NS) + len(key) + 2
            else:
                depth, i = depth - 1, e + len(_NS) + len(key) + 3
        out.append((key, text[m.end() : i - len(_NS) - len(key) - 3]))
        at = i
    return out


def _mm_children(text: str, schema: dict[str, Any] | None) -> Any:
    kinds = values.types_of(schema)
    if "string" in kinds:
        return text
    elements = _mm_elements(text)
    if elements is None:
        return values.coerce(text, schema)
    if not elements:
        return [] if kinds == {"array"} else {}
    if "array" in kinds and all(k == "item" for k, _ in elements):
        item_schema = schema.get("items") if isinstance(schema, dict) else None
        if not isinstance(item_schema, dict) and isinstance(schema, dict):
            for sub in schema.get("anyOf") or schema.get("oneOf") or []:
                if isinstance(sub, dict) and sub.get("type") == "array":
                    item_schema = sub.get("items")
        return [_mm_children(v, item_schema) for _, v in elements]
    props_schema = schema
    if isinstance(schema, dict) and "properties" not in schema:
        for sub in schema.get("anyOf") or schema.get("oneOf") or []:
            if isinstance(sub, dict) and sub.get("type") == "object":
                props_schema = sub
    return {k: _mm_children(v, values.property_schema(props_schema, k)) for k, v in elements}


# -- Llama 3.x ---------------------------------------------------------------------------------------------------


def llama3(text: str, tools: Tools) -> Found | None:
    """A bare JSON call `{"name": …, "parameters": {…}}` (or after `<|python_tag|>`), alone in the answer."""
    start = text.find("<|python_tag|>")
    body_at = start + len("<|python_tag|>") if start >= 0 else 0
    if start < 0:
        stripped = text.lstrip()
        if not stripped.startswith(("{", "[")):
            return None
        start = len(text) - len(stripped)
        body_at = start
    got = values.json_prefix(text, body_at)
    if got is None or text[got[1] :].strip():
        return None
    found = c._calls(got[0], tools)
    return Found(start, got[1], found) if found else None


# -- MiniCPM 5 -------------------------------------------------------------------------------------------------

_CPM_PARAM = re.compile(r'\s*<param name="([^"]+)">(?:<!\[CDATA\[(.*?)\]\]>|(.*?))</param>', re.S)


def minicpm(text: str, pos: int, tools: Tools) -> tuple[list[Call], int] | None:
    """MiniCPM 5's `<function name="f"><param name="k">v</param></function>` (a value may be CDATA)."""
    m = re.compile(r'<function name="([^"]+)">').match(text, pos)
    if m is None or m.group(1) not in tools:
        return None
    name, at = m.group(1), m.end()
    arguments: dict[str, Any] = {}
    while p := _CPM_PARAM.match(text, at):
        raw = p.group(2) if p.group(2) is not None else p.group(3)
        arguments[p.group(1)] = values.coerce(raw, values.property_schema(tools[name].parameters, p.group(1)))
        at = p.end()
    e = re.compile(r"\s*</function>").match(text, at)
    if e is None:
        return None
    return [Call(name, arguments)], e.end()


def json_after(pattern: str) -> c.One:
    """A marker matched by `pattern` (a regular expression), then one JSON call: GigaChat's."""
    marker = re.compile(pattern)

    def one(text: str, pos: int, tools: Tools) -> tuple[list[Call], int] | None:
        m = marker.match(text, pos)
        got = values.json_prefix(text, m.end()) if m else None
        if got is None:
            return None
        found = c._calls(got[0], tools)
        return (found, got[1]) if found else None

    return one
