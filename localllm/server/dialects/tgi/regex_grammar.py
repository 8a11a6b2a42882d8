"""Regular expressions as GBNF grammars, for TGI's `grammar: {"type": "regex"}`.

The whole output must match the expression (as TGI's outlines-based guidance does), so the result is
`root ::= <expression>`. What GBNF has a direct form for is translated: literals and escapes, `.`, classes
(`[a-z_]`, `[^"]`, `\\d \\w \\s` and their negations), groups (`( )`, `(?: )`, `(?P<name> )`), alternation,
and the quantifiers `* + ? {m} {m,} {m,n}` (lazy and possessive forms constrain the same text). A `^` at the
very start and a `$` at the very end are accepted (they change nothing for a full match). Anything else
(backreferences, lookaround, word boundaries, inline flags, Unicode properties) is refused with
`UnsupportedRegex` naming it, never approximated.
"""

from __future__ import annotations

import re
import warnings

from ....domain.limits import REGEX_MAX_BYTES

_CLASSES = {
    "d": [("0", "9")],
    "w": [("a", "z"), ("A", "Z"), ("0", "9"), ("_", "_")],
    "s": [(c, c) for c in " \t\n\r\f\v"],
}
_CONTROL = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a", "e": "\x1b", "0": "\0"}


_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')


class UnsupportedRegex(ValueError):
    """A regular expression (or a part of one) with no GBNF translation here."""


def regex_to_gbnf(pattern: str) -> str:
    """The GBNF grammar whose language is the full matches of `pattern` (at most `REGEX_MAX_BYTES`)."""
    if len(pattern.encode("utf-8", "surrogatepass")) > REGEX_MAX_BYTES:
        raise UnsupportedRegex(f"longer than the {REGEX_MAX_BYTES} bytes allowed")
    try:
        with warnings.catch_warnings():  # e.g. "possible nested set": a future change, not an error here
            warnings.simplefilter("ignore")
            re.compile(pattern)
        return f"root ::= {_Parser(pattern).parse()}\n"
    except re.error as exc:
        raise UnsupportedRegex(f"not a valid regular expression: {exc}") from None
    except RecursionError:
        raise UnsupportedRegex("its groups nest too deeply") from None


def _char(c: str, *, in_class: bool) -> str:
    """One character as GBNF writes it inside a class or a string literal."""
    code = ord(c)
    special = "]\\-^[" if in_class else '"\\'
    if c in special or code < 0x20 or code == 0x7F:
        return f"\\x{code:02X}"
    return c


def _ranges(ranges: list[tuple[str, str]], *, negate: bool) -> str:
    body = "".join(
        _char(a, in_class=True) if a == b else f"{_char(a, in_class=True)}-{_char(b, in_class=True)}" for a, b in ranges
    )
    return f"[{'^' if negate else ''}{body}]"


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0

    def parse(self) -> str:
        if self.p.startswith("^"):
            self.i = 1
        end = len(self.p)
        if self.p.endswith("$") and not self.p.endswith("\\$") and end > self.i:
            end -= 1
        self.p = self.p[:end]
        out = self._alternation()
        if self.i != len(self.p):
            raise UnsupportedRegex(f"unexpected {self.p[self.i]!r} at position {self.i}")
        return out

    def _peek(self) -> str:
        return self.p[self.i] if self.i < len(self.p) else ""

    def _alternation(self) -> str:
        branches = [self._sequence()]
        while self._peek() == "|":
            self.i += 1
            branches.append(self._sequence())
        return branches[0] if len(branches) == 1 else "(" + " | ".join(branches) + ")"

    def _sequence(self) -> str:
        items: list[str] = []
        while self._peek() not in ("", "|", ")"):
            item = self._quantified(self._atom())
            if items and _LITERAL.fullmatch(item) and _LITERAL.fullmatch(items[-1]):
                item = items.pop()[:-1] + item[1:]  # "a" "b" -> "ab"
            items.append(item)
        return " ".join(items) if items else '""'

    def _quantified(self, atom: str) -> str:
        c = self._peek()
        if c in ("*", "+", "?"):
            self.i += 1
            quantifier = c
        elif c == "{" and (m := re.match(r"\{(\d+)(,(\d*))?\}", self.p[self.i :])):
            self.i += m.end()
            low, comma, high = m.group(1), m.group(2), m.group(3)
            quantifier = f"{{{int(low)}}}" if comma is None else f"{{{int(low)},{int(high) if high else ''}}}"
        else:
            return atom
        if self._peek() in ("?", "+"):  # lazy or possessive: the same language
            self.i += 1
        if self._peek() in ("*", "+", "?") or (self._peek() == "{" and re.match(r"\{\d", self.p[self.i :])):
            raise UnsupportedRegex(f"a repeated quantifier at position {self.i}")
        return atom + quantifier

    def _atom(self) -> str:
        c = self.p[self.i]
        if c == "(":
            return self._group()
        if c == "[":
            return self._class()
        if c == ".":
            self.i += 1
            return "[^\\x0A]"
        if c == "\\":
            return self._escape()
        if c in "^$":
            raise UnsupportedRegex(f"an anchor {c!r} inside the expression (position {self.i})")
        if c in "*+?":
            raise UnsupportedRegex(f"nothing to repeat at position {self.i}")
        self.i += 1
        return f'"{_char(c, in_class=False)}"'

    def _group(self) -> str:
        start = self.i
        self.i += 1
        if self.p.startswith("?:", self.i):
            self.i += 2
        elif self.p.startswith("?P<", self.i) or (self.p.startswith("?<", self.i) and self.p[self.i + 2] not in "=!"):
            self.i = self.p.index(">", self.i) + 1
        elif self._peek() == "?":
            raise UnsupportedRegex(f"the group {self.p[start : start + 3]!r}... (lookaround or flags) has no GBNF form")
        inner = self._alternation()
        if self._peek() != ")":
            raise UnsupportedRegex(f"an unclosed group at position {start}")
        self.i += 1
        return f"({inner})"

    def _escape(self) -> str:
        self.i += 1
        c = self._peek()
        if c.lower() in _CLASSES:
            self.i += 1
            return _ranges(_CLASSES[c.lower()], negate=c.isupper())
        return f'"{_char(self._escaped_char(), in_class=False)}"'

    def _escaped_char(self) -> str:
        """The character an escape outside `\\d`-like classes stands for; `self.i` is just past the backslash."""
        c = self._peek()
        if c == "x" and (m := re.match(r"x([0-9a-fA-F]{2})", self.p[self.i :])):
            self.i += m.end()
            return chr(int(m.group(1), 16))
        if c == "u" and (m := re.match(r"u([0-9a-fA-F]{4})", self.p[self.i :])):
            self.i += m.end()
            return chr(int(m.group(1), 16))
        if c in _CONTROL and not (c == "0" and self.p[self.i + 1 : self.i + 2].isdigit()):
            self.i += 1
            return _CONTROL[c]
        if c.isalnum():
            raise UnsupportedRegex(f"the escape \\{c} has no GBNF form")
        self.i += 1
        return c

    def _class(self) -> str:
        start = self.i
        self.i += 1
        negate = self._peek() == "^"
        if negate:
            self.i += 1
        ranges: list[tuple[str, str]] = []
        first = True
        while True:
            c = self._peek()
            if c == "":
                raise UnsupportedRegex(f"an unclosed character class at position {start}")
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if c == "[" and self.p[self.i + 1 : self.i + 2] in (":", "=", "."):
                raise UnsupportedRegex("POSIX classes ([:alpha:]) have no GBNF form")
            if c == "\\":
                self.i += 1
                e = self._peek()
                if e in _CLASSES:
                    self.i += 1
                    ranges += _CLASSES[e]
                    continue
                if e.lower() in _CLASSES:
                    raise UnsupportedRegex(f"a negated class \\{e} inside [...] has no GBNF form")
                low = self._escaped_char()
            else:
                self.i += 1
                low = c
            high = low
            if self._peek() == "-" and self.p[self.i + 1 : self.i + 2] not in ("]", ""):
                self.i += 1
                h = self._peek()
                if h == "\\":
                    self.i += 1
                    high = self._escaped_char()
                else:
                    self.i += 1
                    high = h
            ranges.append((low, high))
        return _ranges(ranges, negate=negate)
