"""A call's arguments while they are being written: what of their JSON text is already certain.

As llama.cpp does (its "healing marker"), the JSON begun after a call's opening is closed with a marker
placed where the text stops: inside a string the marker ends the string so far; after a whole value, a
comma or an opening bracket it stands for the next key or value. The family parses the healed text as a
whole output, and the arguments it reads, written as JSON, are cut at the marker: that text is a beginning
of the arguments' final JSON. A number or literal still being written (`12` may become `123`) is left out
until what follows it decides it. Text that does not heal into a call decides nothing yet.
"""

from __future__ import annotations

from dataclasses import dataclass

MARK = "\u2063heal\u2063"  # an invisible separator: written as itself by json.dumps(ensure_ascii=False)


@dataclass(frozen=True)
class Healed:
    """`text` closed with the marker; `cut` is what to look for in the arguments' JSON: the marker itself
    (inside a string), or the marker as a new key or value with `sep` (", ") before it to cut too."""

    text: str
    cut: str
    sep: str


def heal(text: str, start: int) -> Healed | None:
    """`text` with the JSON that begins at its first `{` from `start` closed (None: no JSON begun, or it is
    already closed)."""
    begin = text.find("{", start)
    if begin < 0:
        return None
    stack: list[str] = []
    in_string = False
    escaped = False
    key = False  # the string being written is an object's key
    last = ""  # the last significant character outside strings
    i = begin
    for i in range(begin, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
                last = ":" if key else '"'  # after a whole key its value is what comes next
            continue
        if ch == '"':
            in_string = True
            key = bool(stack) and stack[-1] == "}" and last in ("{", ",")
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
            last = ch
        elif ch in "}]":
            if not stack or stack.pop() != ch:
                return None
            last = ch
            if not stack:
                return None  # the JSON is whole: nothing to heal
        elif not ch.isspace():
            last = ch
    body = text
    if in_string:
        if escaped or _open_escape(body):
            return None
        body += MARK + '"' + (": 0" if key else "")
        cut, sep = MARK, ""
    else:
        body = body.rstrip()
        if last not in ("{", "[", ",", ":", '"', "}", "]"):
            # a number or literal being written: left out, with what it follows
            j = len(body)
            while j > begin and body[j - 1] not in "{[,: \t\r\n":
                j -= 1
            body = body[:j].rstrip()
            last = body[-1] if body else ""
        in_object = stack[-1] == "}"
        if last == ":":
            body += ("" if body.endswith(":") else ":") + '"' + MARK + '"'
            cut, sep = '"' + MARK, ""
        elif last in ("{", "[", ","):
            body += '"' + MARK + '"' + (": 0" if in_object and last != "[" else "")
            cut, sep = '"' + MARK, ""
        elif last in ('"', "}", "]"):
            body += ', "' + MARK + '"' + (": 0" if in_object else "")
            cut, sep = '"' + MARK, ", "
        else:
            return None
    return Healed(body + "".join(reversed(stack)), cut, sep)


def _open_escape(text: str) -> bool:
    r"""The text ends inside a `\uXXXX` escape."""
    at = text.rfind("\\u")
    if at < 0:
        return False
    slashes = len(text[:at]) - len(text[:at].rstrip("\\"))
    return slashes % 2 == 0 and len(text) - at < 6


def certain(arguments_json: str, healed: Healed) -> str | None:
    """The beginning of the final arguments' JSON that `arguments_json` (written from the healed text) makes
    certain; None when the marker is not in it (the marker fell elsewhere: the name, say)."""
    at = arguments_json.find(healed.cut)
    if at < 0:
        return None
    out = arguments_json[:at]
    if healed.sep and out.endswith(healed.sep):
        out = out[: -len(healed.sep)]
    return out
