"""Extract llama.cpp's chat-output parse cases (tests/test-chat.cpp) as data: tests/data/chat_parse/cases.json.

    python tests/tools/extract_chat_parse_cases.py LLAMA_CPP_DIR > tests/data/chat_parse/cases.json

It reads the fluent `peg_tester(template).test(output).option(...).expect(...).run()` chains of
`test_template_output_peg_parsers` and `test_lfm2_parser` with a small C++ tokenizer and evaluator (string
literals, raw strings, the named messages and tools of the file, local string constants, `for` loops over
template paths). A chain it cannot evaluate is listed in `skipped` with the reason, never guessed.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

_TOKEN = re.compile(
    r"""(?P<raw>R"(?P<delim>[^(\s]*)\((?P<rawbody>.*?)\)(?P=delim)")"""
    r"""|(?P<str>"(?:\\.|[^"\\])*")"""
    r"""|(?P<chr>'(?:\\.|[^'\\])')"""
    r"""|(?P<comment>//[^\n]*|/\*.*?\*/|#[^\n]*)"""
    r"""|(?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*)"""
    r"""|(?P<num>[0-9][0-9.]*[A-Za-z]*)"""
    r"""|(?P<op>::|->|&&|\|\||==|!=|<=|>=|[{}()\[\];,.=+<>*&!:?/%|~^-])"""
    r"""|(?P<ws>\s+)""",
    re.S,
)
_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", '"': b'"', "'": b"'", "\\": b"\\", "0": b"\0", "?": b"?"}


class Unsupported(Exception):
    pass


def tokens(source: str) -> list[tuple[str, Any, int]]:
    out: list[tuple[str, Any, int]] = []
    pos = 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:
            raise SystemExit(f"cannot tokenize at line {source.count(chr(10), 0, pos) + 1}")
        line = source.count("\n", 0, pos) + 1
        pos = m.end()
        kind = m.lastgroup
        if kind in ("ws", "comment"):
            continue
        if kind == "raw" or m.group("raw"):
            out.append(("str", m.group("rawbody").encode(), line))
        elif kind == "str":
            out.append(("str", _unescape(m.group("str")[1:-1]), line))
        else:
            out.append((kind or "op", m.group(0), line))
    return out


def _unescape(body: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        e = body[i + 1]
        if e == "x":
            m = re.match(r"[0-9a-fA-F]+", body[i + 2 :])
            assert m
            out.append(int(m.group(0), 16))
            i += 2 + len(m.group(0))
        elif e == "u":
            out += chr(int(body[i + 2 : i + 6], 16)).encode()
            i += 6
        else:
            out += _ESCAPES[e]
            i += 2
    return bytes(out)


class Reader:
    def __init__(self, toks: list[tuple[str, Any, int]], env: dict[str, Any]) -> None:
        self.toks, self.i, self.env = toks, 0, env

    def peek(self, k: int = 0) -> tuple[str, Any, int]:
        return self.toks[self.i + k] if self.i + k < len(self.toks) else ("eof", None, 0)

    def take(self, value: str | None = None) -> tuple[str, Any, int]:
        tok = self.peek()
        if value is not None and tok[1] != value:
            raise Unsupported(f"expected {value!r}, got {tok[1]!r} at line {tok[2]}")
        self.i += 1
        return tok

    def expr(self) -> Any:
        """A value: string concatenations, a brace list, a call of a known helper, a named constant."""
        value = self.primary()
        while self.peek()[1] == "+":
            self.take()
            right = self.primary()
            if not (isinstance(value, bytes) and isinstance(right, bytes)):
                raise Unsupported("+ of non-strings")
            value += right
        return value

    def primary(self) -> Any:
        kind, value, line = self.peek()
        if kind == "str":
            out = b""
            while self.peek()[0] == "str":
                out += self.take()[1]
            return out
        if value == "{":
            self.take()
            items = []
            while self.peek()[1] != "}":
                items.append(self.expr())
                if self.peek()[1] == ",":
                    self.take()
            self.take("}")
            return items
        if kind == "num":
            self.take()
            return float(value) if "." in value else int(value)
        if kind == "ident":
            self.take()
            if value in ("true", "false"):
                return value == "true"
            if value == "std::string" and self.peek()[1] == "(":
                self.take()
                inner = self.expr()
                self.take(")")
                return inner
            if self.peek()[1] == "(":
                self.take()
                args = []
                while self.peek()[1] != ")":
                    args.append(self.expr())
                    if self.peek()[1] == ",":
                        self.take()
                self.take(")")
                return call(value, args)
            if value in self.env:
                return self.env[value]
            if value.startswith("COMMON_"):
                return value
            raise Unsupported(f"unknown name {value} at line {line}")
        raise Unsupported(f"unexpected {value!r} at line {line}")


def text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if value == [] or value is None:
        return ""
    raise Unsupported(f"not a string: {value!r}")


def msg(
    content: Any = b"", reasoning: Any = b"", name: Any = b"", arguments: Any = b"", id_: Any = b""
) -> dict[str, Any]:
    calls = []
    if text(name) or text(id_):
        calls.append({"name": text(name), "arguments": text(arguments), "id": text(id_)})
    return {"role": "assistant", "content": text(content), "reasoning_content": text(reasoning), "tool_calls": calls}


def call(name: str, args: list[Any]) -> Any:
    if name == "simple_assist_msg":
        return msg(*args)
    if name == "message_with_tool_calls":
        return msg(b"", b"", args[0], args[1])
    if name in ("message_with_tool_calls_and_reasoning",):
        return msg(b"", args[2], args[0], args[1])
    if name == "message_with_reasoning_and_tool_call":
        return msg(b"", args[0], args[1], args[2])
    if name == "message_with_content_and_tool_call":
        return msg(args[0], b"", args[1], args[2])
    if name == "message_with_reasoning_content_and_multiple_tool_calls":
        m = msg(args[1], args[0])
        m["tool_calls"] = [{"name": text(n), "arguments": text(a), "id": ""} for n, a in args[2]]
        return m
    raise Unsupported(f"unknown helper {name}")


def globals_of(toks: list[tuple[str, Any, int]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The file's tools (`static common_chat_tool x{name, description, parameters}`) and named messages."""
    env: dict[str, Any] = {}
    tools: dict[str, Any] = {}
    i = 0
    while i < len(toks):
        kind, value, _ = toks[i]
        if value == "common_chat_tool" and toks[i + 1][0] == "ident" and toks[i + 2][1] == "{":
            r = Reader(toks, env)
            r.i = i + 2
            fields = r.expr()
            name = text(fields[0])
            tools[name] = json.loads(text(fields[2]))
            env[toks[i + 1][1]] = {"tool": name}
            i = r.i
            continue
        if value == "common_chat_msg" and toks[i + 1][0] == "ident" and toks[i + 2][1] in ("=", "{"):
            r = Reader(toks, env)
            name = toks[i + 1][1]
            if toks[i + 2][1] == "=":
                r.i = i + 3
                try:
                    env[name] = r.expr()
                except Unsupported:
                    pass
            else:
                r.i = i + 2
                try:
                    f = r.expr()
                    env[name] = {
                        "role": text(f[0]),
                        "content": text(f[1]),
                        "content_parts": [[text(a), text(b)] for a, b in f[2]],
                        "tool_calls": [],
                        "reasoning_content": text(f[4]),
                    }
                except (Unsupported, IndexError, ValueError):
                    pass
            i = r.i
            continue
        i += 1
    return env, tools


def chains(
    toks: list[tuple[str, Any, int]], env: dict[str, Any], start: int, end: int, lfm2: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    cases: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    testers: dict[str, list[str]] = {}
    loop: list[str] = []
    local = dict(env)
    i = start
    while i < end:
        kind, value, line = toks[i]
        if value == "for" and toks[i + 1][1] == "(":
            # for (const auto & path : { "a", "b" }) / for (const char * tmpl : {...})
            j = i + 2
            while toks[j][1] != ":":
                j += 1
            if toks[j + 1][1] == "{":
                r = Reader(toks, local)
                r.i = j + 1
                try:
                    loop = [text(p) for p in r.expr()]
                except Unsupported:
                    loop = []
        if kind == "ident" and toks[i + 1][1] == "=" and toks[i + 2][1] == "peg_tester":
            arg = toks[i + 4]
            paths = [text(arg[1])] if arg[0] == "str" else (lfm2 if arg[1] == "template_path" else loop)
            testers[value] = [Path(p).name for p in paths]
        elif value in ("std::string", "char") and toks[i + 1][0] == "ident" and toks[i + 2][1] == "=":
            r = Reader(toks, local)
            r.i = i + 3
            try:
                local[toks[i + 1][1]] = r.expr()
            except Unsupported:
                pass
        elif value == "char" and toks[i + 1][1] == "*" and toks[i + 3][1] == "=":
            r = Reader(toks, local)
            r.i = i + 4
            local[toks[i + 2][1]] = r.expr()
        elif value == "common_chat_msg" and toks[i + 1][0] == "ident" and toks[i + 2][1] in ("=",):
            r = Reader(toks, local)
            r.i = i + 3
            try:
                local[toks[i + 1][1]] = r.expr()
            except Unsupported:
                pass
        elif kind == "ident" and value in testers and toks[i + 1][1] == "." and toks[i + 2][1] == "test":
            j = i
            while toks[j][1] != ";":
                j += 1
            try:
                case = chain(Reader(toks[i + 3 : j], local))
                for path in testers[value]:
                    cases.append({"template": path, "line": line, **case})
            except (Unsupported, IndexError, KeyError, TypeError) as exc:
                exc = Unsupported(f"{type(exc).__name__}: {exc}") if not isinstance(exc, Unsupported) else exc
                skipped.append({"line": line, "reason": str(exc)})
            i = j
        i += 1
    return cases, skipped


def chain(r: Reader) -> dict[str, Any]:
    r.take("(")
    output = text(r.expr())
    r.take(")")
    case: dict[str, Any] = {"output": output, "flags": {}}
    flags = case["flags"]
    expect: dict[str, Any] = {"content": "", "reasoning_content": "", "tool_calls": []}
    while r.peek()[0] != "eof":
        r.take(".")
        method = r.take()[1]
        r.take("(")
        args = []
        while r.peek()[1] != ")":
            args.append(r.expr())
            if r.peek()[1] == ",":
                r.take()
        r.take(")")
        if method == "run":
            continue
        if method == "expect":
            expect = {k: args[0][k] for k in ("content", "reasoning_content", "tool_calls")}
        elif method == "expect_content":
            expect["content"] = text(args[0])
        elif method == "expect_reasoning":
            expect["reasoning_content"] = text(args[0])
        elif method == "expect_tool_calls":
            expect["tool_calls"] = [{"name": text(n), "arguments": text(a), "id": text(d)} for n, a, d in args[0]]
        elif method == "tools":
            flags["tools"] = [t["tool"] for t in args[0]]
        elif method == "messages":
            flags["messages"] = args[0]
        elif method == "reasoning_format":
            flags["reasoning_format"] = args[0].removeprefix("COMMON_REASONING_FORMAT_").lower()
        elif method == "continue_final_message":
            flags["continue_final_message"] = args[0].removeprefix("COMMON_CHAT_CONTINUATION_").lower()
        elif method == "tool_choice":
            flags["tool_choice"] = args[0].removeprefix("COMMON_CHAT_TOOL_CHOICE_").lower()
        elif method == "json_schema":
            flags["json_schema"] = json.loads(text(args[0]))
        elif method in ("enable_thinking", "parallel_tool_calls", "add_generation_prompt", "is_partial"):
            flags[method] = args[0]
        elif method == "expect_reconstruction":
            pass
        else:
            raise Unsupported(f"unknown option {method}")
    case["expect"] = expect
    return case


def main() -> None:
    root = Path(sys.argv[1])
    source = (root / "tests" / "test-chat.cpp").read_text()
    toks = tokens(source)
    env, tools = globals_of(toks)

    def span(function: str) -> tuple[int, int]:
        start = next(
            i for i, t in enumerate(toks) if t[1] == function and toks[i + 1][1] == "(" and toks[i - 1][1] == "void"
        )
        depth, i = 0, start
        while toks[i][1] != "{":
            i += 1
        while True:
            depth += {"{": 1, "}": -1}.get(toks[i][1], 0)
            if depth == 0:
                return start, i
            i += 1

    lfm2 = [
        "LFM2-8B-A1B.jinja",
        "LFM2.5-Instruct.jinja",
        "LFM2.5-8B-A1B.jinja",
    ]
    cases: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for function in ("test_lfm2_parser", "test_template_output_peg_parsers"):
        found, missed = chains(toks, env, *span(function), lfm2)
        cases += found
        skipped += missed
    used = sorted({t for c in cases for t in c["flags"].get("tools", [])})
    out = {
        "source": "ggml-org/llama.cpp tests/test-chat.cpp, as vendored in llama-cpp-python 0.3.36",
        "tools": {name: tools[name] for name in used},
        "cases": cases,
        "skipped": skipped,
    }
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
