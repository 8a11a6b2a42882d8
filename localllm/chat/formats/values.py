"""Argument values as the call formats write them, turned into JSON values.

JSON arguments are read as JSON. XML-like formats write each argument as text; its JSON type comes from the
tool's schema (a string stays text, a number or object is parsed), as llama.cpp does. LFM2 writes Python
calls (`f(a=1, b="x")`), Gemma 4 a JSON-like object with bare keys and `<|"|>` quotes.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

Schema = dict[str, Any]


def loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return _Missing


class _MissingType:
    pass


_Missing: Any = _MissingType()


def missing(value: Any) -> bool:
    return value is _Missing


def json_prefix(text: str, start: int = 0) -> tuple[Any, int] | None:
    """The JSON value at `text[start:]` (after whitespace) and where it ends; None when there is none."""
    i = start
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    try:
        value, end = json.JSONDecoder().raw_decode(text, i)
    except ValueError:
        return None
    return value, end


def types_of(schema: Schema | None) -> set[str]:
    """The JSON types a schema allows (empty when it says nothing)."""
    if not isinstance(schema, dict):
        return set()
    kinds: set[str] = set()
    kind = schema.get("type")
    if isinstance(kind, str):
        kinds.add(kind)
    elif isinstance(kind, list):
        kinds.update(k for k in kind if isinstance(k, str))
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key) or []:
            kinds |= types_of(sub)
    if "enum" in schema and not kinds:
        kinds |= {type_name(v) for v in schema["enum"]}
    if "const" in schema and not kinds:
        kinds.add(type_name(schema["const"]))
    return kinds


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "array" if isinstance(value, list) else "object"


def _fits(value: Any, kinds: set[str]) -> bool:
    name = type_name(value)
    return name in kinds or (name == "integer" and "number" in kinds)


def coerce(text: str, schema: Schema | None) -> Any:
    """An argument written as text, as the JSON value its schema asks for: text where a string is allowed
    and the text is not another allowed type's JSON; else the JSON it holds, or the text when it holds none."""
    kinds = types_of(schema)
    parsed = loads(text.strip())
    if not kinds:
        return text if missing(parsed) or isinstance(parsed, str) else parsed
    if not missing(parsed) and _fits(parsed, kinds - {"string"}):
        return parsed
    if "string" in kinds or missing(parsed):
        return text
    return parsed


def property_schema(parameters: Schema | None, name: str) -> Schema | None:
    if not isinstance(parameters, dict):
        return None
    props = parameters.get("properties")
    return props.get(name) if isinstance(props, dict) else None


# -- Python calls (LFM2) ---------------------------------------------------------------------------------------

_PY_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


def python_calls(text: str) -> list[tuple[str, dict[str, Any]]] | None:
    """`[f(a=1), g.h(b="x")]` (or one call) as (name, arguments); None when it is not that."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError):
        return None
    items = tree.elts if isinstance(tree, ast.List) else [tree]
    out: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        if not isinstance(item, ast.Call) or item.args:
            return None
        name = _dotted(item.func)
        if name is None:
            return None
        arguments: dict[str, Any] = {}
        for keyword in item.keywords:
            if keyword.arg is None:
                return None
            try:
                arguments[keyword.arg] = _literal(keyword.value)
            except ValueError:
                return None
        out.append((name, arguments))
    return out


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in _PY_NAMES:
        return _PY_NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values, strict=True):
            key = _literal(k) if k is not None else None
            if not isinstance(key, str):
                raise ValueError("key")
            out[key] = _literal(v)
        return out
    raise ValueError("not a literal")


# -- Gemma 4's objects -----------------------------------------------------------------------------------------

_GEMMA_QUOTE = '<|"|>'
_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


def gemma_object(text: str) -> dict[str, Any] | None:
    """Gemma 4's `{key:value,...}`: bare keys, strings between `<|"|>`, else JSON values."""
    out: list[str] = []
    i = 0
    expect_key = False
    depth: list[str] = []
    while i < len(text):
        if text.startswith(_GEMMA_QUOTE, i):
            end = text.find(_GEMMA_QUOTE, i + len(_GEMMA_QUOTE))
            if end < 0:
                return None
            out.append(json.dumps(text[i + len(_GEMMA_QUOTE) : end]))
            i = end + len(_GEMMA_QUOTE)
            expect_key = False
            continue
        c = text[i]
        if c in "{[":
            depth.append(c)
            expect_key = c == "{"
            out.append(c)
        elif c in "}]":
            if depth:
                depth.pop()
            out.append(c)
            expect_key = False
        elif c == ",":
            out.append(c)
            expect_key = bool(depth) and depth[-1] == "{"
        elif c == ":":
            out.append(c)
            expect_key = False
        elif c == '"':
            m = re.compile(r'"(?:\\.|[^"\\])*"').match(text, i)
            if m is None:
                return None
            out.append(m.group(0))
            i = m.end()
            expect_key = False
            continue
        elif expect_key and (m := _BARE.match(text, i)):
            out.append(json.dumps(m.group(0)))
            i = m.end()
            expect_key = False
            continue
        else:
            out.append(c)
        i += 1
    value = loads("".join(out))
    return value if isinstance(value, dict) else None
