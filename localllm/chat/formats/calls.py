"""The tool-call syntaxes of the format families, each a `Finder`: the calls in an answer and where they are.

A finder returns None when the text holds no well-formed call of a declared tool, so the text stays the
answer. Several calls in a row (parallel calls) are one `Found`; text before them is the answer's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from . import values
from .base import Call, Finder, Found, Tools

One = Callable[[str, int, Tools], "tuple[list[Call], int] | None"]  # calls at text[pos:] and where they end


def repeated(starts: tuple[str, ...], one: One, *, anywhere: bool = True) -> Finder:
    """Calls that begin at one of `starts`, one after another (whitespace between)."""

    def find(text: str, tools: Tools) -> Found | None:
        pos = 0
        while True:
            hits = [(i, s) for s in starts if (i := text.find(s, pos)) >= 0]
            if not hits:
                return None
            begin = min(hits)[0]
            if not anywhere and text[:begin].strip():
                return None
            calls: list[Call] = []
            at = begin
            while True:
                got = one(text, at, tools)
                if got is None:
                    break
                more, at = got
                calls.extend(more)
                nxt = at
                while nxt < len(text) and text[nxt].isspace():
                    nxt += 1
                if not any(text.startswith(s, nxt) for s in starts):
                    break
                at = nxt
            if calls:
                return Found(begin, at, calls)
            pos = begin + 1

    return find


def _call(item: Any, tools: Tools, *, id_key: str | None = None) -> Call | None:
    """A JSON call object in any of the usual shapes: `{"name", "arguments"|"parameters"}`, OpenAI's
    `{"function": {...}}`, Cohere's `{"tool_name", "parameters"}` or Apertus' `{name: arguments}`."""
    if not isinstance(item, dict):
        return None
    call_id = ""
    if isinstance(item.get("id"), str):
        call_id = item["id"]
    if id_key and isinstance(item.get(id_key), str):
        call_id = item[id_key]
    if isinstance(item.get("function"), dict):
        item = item["function"]
    name = item.get("name", item.get("tool_name"))
    if name is None and len(item) == 1:
        ((name, arguments),) = item.items()
    else:
        arguments = item.get("arguments", item.get("parameters", {}))
    if isinstance(arguments, str):
        arguments = values.loads(arguments)
    if not isinstance(name, str) or name not in tools or not isinstance(arguments, dict):
        return None
    return Call(name, arguments, call_id)


def _calls(value: Any, tools: Tools, *, id_key: str | None = None) -> list[Call] | None:
    items = value if isinstance(value, list) else [value]
    out = [_call(i, tools, id_key=id_key) for i in items]
    return None if not out or any(c is None for c in out) else [c for c in out if c is not None]


def json_block(start: str, end: str, *, id_key: str | None = None, fence: bool = False) -> One:
    """`start` JSON (a call or a list of calls) `end`; the end may be missing at the end of the output."""

    def one(text: str, pos: int, tools: Tools) -> tuple[list[Call], int] | None:
        at = pos + len(start)
        if fence:
            m = re.compile(r"\s*```(?:json)?\s*").match(text, at)
            at = m.end() if m else at
        got = values.json_prefix(text, at)
        if got is None:
            return None
        value, at = got
        calls = _calls(value, tools, id_key=id_key)
        if calls is None:
            return None
        m = re.compile(r"\s*(?:```\s*)?" + re.escape(end) if fence else r"\s*" + re.escape(end)).match(text, at)
        if m:
            at = m.end()
        elif text[at:].strip():
            return None
        return calls, at

    return one


def xml_function(wrap: tuple[str, str] | None, *, trim: bool) -> One:
    """Qwen3-Coder's `<tool_call><function=NAME><parameter=KEY>VALUE</parameter></function></tool_call>`
    (the wrapper optional), each value typed by the tool's schema; `trim`: one newline around it is not part
    of the value."""
    head = re.compile(r"\s*<function=([^>\n]+)>")
    param = re.compile(r"\s*<parameter=([^>\n]+)>(.*?)</parameter>", re.S)
    tail = re.compile(r"\s*</function>")

    def one(text: str, pos: int, tools: Tools) -> tuple[list[Call], int] | None:
        at = pos
        if wrap and text.startswith(wrap[0], at):
            at += len(wrap[0])
        m = head.match(text, at)
        if m is None or m.group(1).strip() not in tools:
            return None
        name = m.group(1).strip()
        schema = tools[name].parameters
        arguments: dict[str, Any] = {}
        at = m.end()
        while p := param.match(text, at):
            raw = p.group(2)
            if trim:
                raw = raw[1:] if raw.startswith("\n") else raw
                raw = raw[:-1] if raw.endswith("\n") else raw
            arguments[p.group(1).strip()] = values.coerce(raw, values.property_schema(schema, p.group(1).strip()))
            at = p.end()
        t = tail.match(text, at)
        if t is None:
            return None
        at = t.end()
        if wrap:
            w = re.compile(r"\s*" + re.escape(wrap[1])).match(text, at)
            at = w.end() if w else at
        return [Call(name, arguments)], at

    return one


def invoke(prefix: str, block: tuple[str, str], *, typed_attr: bool = False) -> One:
    """`<P:block><P:invoke name="f"><P:parameter name="k">v</P:parameter></P:invoke></P:block>`: MiniMax M2,
    DeepSeek V3.2's DSML (with `string="true|false"`), Muse's `atem:`."""
    inv = re.compile(r"\s*<" + re.escape(prefix) + r'invoke name="([^"]+)">')
    param = re.compile(
        r"\s*<"
        + re.escape(prefix)
        + r'parameter name="([^"]+)"(?: string="(true|false)")?>(.*?)</'
        + re.escape(prefix)
        + r"parameter>",
        re.S,
    )
    inv_end = re.compile(r"\s*</" + re.escape(prefix) + r"invoke>")
    close = re.compile(r"\s*" + re.escape(block[1]))

    def one(text: str, pos: int, tools: Tools) -> tuple[list[Call], int] | None:
        at = pos + len(block[0])
        calls: list[Call] = []
        while m := inv.match(text, at):
            name = m.group(1)
            if name not in tools:
                return None
            arguments: dict[str, Any] = {}
            at = m.end()
            while p := param.match(text, at):
                schema = values.property_schema(tools[name].parameters, p.group(1))
                raw = p.group(3)
                if typed_attr and p.group(2) == "true":
                    arguments[p.group(1)] = raw
                elif typed_attr and p.group(2) == "false":
                    parsed = values.loads(raw)
                    arguments[p.group(1)] = raw if values.missing(parsed) else parsed
                else:
                    arguments[p.group(1)] = values.coerce(raw, schema)
                at = p.end()
            e = inv_end.match(text, at)
            if e is None:
                return None
            at = e.end()
            calls.append(Call(name, arguments))
        if not calls:
            return None
        c = close.match(text, at)
        if c is None and text[at:].strip():
            return None
        return calls, c.end() if c else at

    return one


def arg_key(start: str, end: str) -> One:
    """GLM 4.x / Ling 3: `<tool_call>NAME<arg_key>k</arg_key><arg_value>v</arg_value>...</tool_call>`."""
    head = re.compile(r"\s*([^\s<]+)")
    pair = re.compile(r"\s*<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)
    close = re.compile(r"\s*" + re.escape(end))

    def one(text: str, pos: int, tools: Tools) -> tuple[list[Call], int] | None:
        m = head.match(text, pos + len(start))
        if m is None or m.group(1) not in tools:
            return None
        name = m.group(1)
        arguments: dict[str, Any] = {}
        at = m.end()
        while p := pair.match(text, at):
            arguments[p.group(1).strip()] = values.coerce(
                p.group(2), values.property_schema(tools[name].parameters, p.group(1).strip())
            )
            at = p.end()
        c = close.match(text, at)
        if c is None:
            return None
        return [Call(name, arguments)], c.end()

    return one


def name_then_json(
    start: str, sep: str, end: str, *, id_sep: str | None = None, name_prefix: str = "", fence: bool = False
) -> One:
    """`start NAME sep {json} end` (end optional): DeepSeek's tool tokens, Mistral's `[TOOL_CALLS]name[ARGS]`,
    Kimi K2's `functions.NAME:0`, Functionary v3.1's `<function=NAME>`."""

    def one(text: str, pos: int, tools: Tools) -> tuple[list[Call], int] | None:
        at = pos + len(start)
        s = text.find(sep, at)
        if s < 0:
            return None
        name = text[at:s].strip()
        call_id = ""
        if id_sep and id_sep in name:
            name, call_id = (x.strip() for x in name.split(id_sep, 1))
        if name_prefix and name.startswith(name_prefix):
            name = name[len(name_prefix) :]
        if id_sep == ":":  # Kimi's ids are the whole `functions.NAME:i`
            call_id = text[at:s].strip()
        if name not in tools:
            return None
        at = s + len(sep)
        if fence:
            m = re.compile(r"\s*```(?:json)?\s*").match(text, at)
            at = m.end() if m else at
        got = values.json_prefix(text, at)
        if got is None or not isinstance(got[0], dict):
            return None
        arguments, at = got
        if fence:
            m = re.compile(r"\s*```").match(text, at)
            at = m.end() if m else at
        if end:
            m = re.compile(r"\s*" + re.escape(end)).match(text, at)
            at = m.end() if m else at
        return [Call(name, arguments, call_id)], at

    return one


def mistral(text: str, pos: int, tools: Tools) -> tuple[list[Call], int] | None:
    """`[TOOL_CALLS]name[CALL_ID]id[ARGS]{...}`, `[TOOL_CALLS]name[ARGS]{...}` or `[TOOL_CALLS][{...}]`."""
    marker = "[TOOL_CALLS]"
    at = pos + len(marker)
    got = values.json_prefix(text, at)
    if got is not None and isinstance(got[0], list):
        calls = _calls(got[0], tools)
        return (calls, got[1]) if calls else None
    s = text.find("[ARGS]", at)
    if s < 0:
        return None
    name, call_id = text[at:s], ""
    if "[CALL_ID]" in name:
        name, call_id = name.split("[CALL_ID]", 1)
    name = name.strip()
    if name not in tools:
        return None
    got = values.json_prefix(text, s + len("[ARGS]"))
    if got is None or not isinstance(got[0], dict):
        return None
    return [Call(name, got[0], call_id.strip())], got[1]


def python_list(start: str, end: str) -> One:
    """LFM2's `<|tool_call_start|>[f(a=1), g(b="x")]<|tool_call_end|>`."""

    def one(text: str, pos: int, tools: Tools) -> tuple[list[Call], int] | None:
        at = pos + len(start)
        e = text.find(end, at)
        if e < 0:
            return None
        parsed = values.python_calls(text[at:e])
        if not parsed or any(name not in tools for name, _ in parsed):
            return None
        return [Call(name, arguments) for name, arguments in parsed], e + len(end)

    return one


def gemma(text: str, pos: int, tools: Tools) -> tuple[list[Call], int] | None:
    """Gemma 4's `<|tool_call>call:NAME{key:value}<tool_call|>`."""
    m = re.compile(r"<\|tool_call>call:([^{\s]+)").match(text, pos)
    if m is None or m.group(1) not in tools:
        return None
    e = text.find("<tool_call|>", m.end())
    if e < 0:
        return None
    arguments = values.gemma_object(text[m.end() : e])
    if arguments is None:
        return None
    return [Call(m.group(1), arguments)], e + len("<tool_call|>")


def kimi3(text: str, pos: int, tools: Tools) -> tuple[list[Call], int] | None:
    """Kimi K3's `<|open|>tools<|sep|><|open|>call tool="f" index="1"<|sep|><|open|>argument key="k"
    type="number"<|sep|>v<|close|>argument<|sep|>...<|close|>call<|sep|>...<|close|>tools<|sep|>`."""
    at = pos + len("<|open|>tools<|sep|>")
    call = re.compile(r'\s*<\|open\|>call tool="([^"]+)"[^<]*<\|sep\|>')
    arg = re.compile(
        r'\s*<\|open\|>argument key="([^"]+)"(?: type="([^"]+)")?<\|sep\|>(.*?)<\|close\|>argument<\|sep\|>', re.S
    )
    call_end = re.compile(r"\s*<\|close\|>call<\|sep\|>")
    calls: list[Call] = []
    while m := call.match(text, at):
        name = m.group(1)
        if name not in tools:
            return None
        at = m.end()
        arguments: dict[str, Any] = {}
        while a := arg.match(text, at):
            raw = a.group(3)
            arguments[a.group(1)] = (
                raw
                if a.group(2) == "string"
                else values.coerce(raw, values.property_schema(tools[name].parameters, a.group(1)))
            )
            at = a.end()
        e = call_end.match(text, at)
        if e is None:
            return None
        at = e.end()
        calls.append(Call(name, arguments))
    if not calls:
        return None
    c = re.compile(r"\s*<\|close\|>tools<\|sep\|>").match(text, at)
    return calls, c.end() if c else at


def first_of(*finders: Finder) -> Finder:
    """The finder whose calls start first."""

    def find(text: str, tools: Tools) -> Found | None:
        hits = [f for f in (finder(text, tools) for finder in finders) if f is not None]
        return min(hits, key=lambda f: f.start) if hits else None

    return find
