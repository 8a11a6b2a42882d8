"""What every format family shares: the parsed message, a family's description, and the parse itself.

A model's output is read in two steps, as llama.cpp does: its reasoning (between the family's thinking tags,
or from the start when the prompt left the tag open) and then its answer, in which the family's tool-call
syntax is looked for. Text that is not a well-formed call of a declared tool stays in the answer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...domain.messages import Tool

log = logging.getLogger("localllm")


@dataclass
class Call:
    name: str
    arguments: dict[str, Any]
    id: str = ""


@dataclass
class Parsed:
    content: str = ""
    reasoning: str = ""
    calls: list[Call] = field(default_factory=list)


@dataclass(frozen=True)
class Found:
    """Calls found in a text: they span `text[start:end]`."""

    start: int
    end: int
    calls: list[Call]


Tools = Mapping[str, Tool]
Finder = Callable[[str, Tools], "Found | None"]


@dataclass(frozen=True)
class Family:
    """A format family: its name, thinking tags, call syntax and the markers its answer is wrapped in.

    `markers` are the texts that begin a call (an unclosed reasoning ends at one; streaming holds text that
    may become one). `strip` are wrappers removed from the answer. `custom` parses the whole output itself
    (formats whose structure is not reasoning-then-answer, e.g. gpt-oss's channels)."""

    name: str
    think: tuple[str, str] | None = None
    calls: Finder | None = None
    markers: tuple[str, ...] = ()
    strip: tuple[str, ...] = ()
    custom: Callable[[str, Tools, bool, bool, bool], Parsed] | None = None  # text, tools, opened, reasoning, partial
    description: str = ""
    ends: tuple[str, ...] = ()  # texts that end the reasoning without its closing tag (kept in the answer)
    unopened: bool = False  # the model may begin reasoning without the opening tag (only the closing one)
    keeps_start: bool = False  # the opening text is part of the reasoning (Apriel's "Here are my reasoning steps")

    def opened(self, prompt: str) -> str | None:
        """The end of `prompt` from a thinking tag it leaves open (the output starts inside the reasoning)."""
        if self.think is None:
            return None
        start = self.think[0]
        tail = prompt.rstrip()
        if not tail.endswith(start.rstrip()):
            return None
        return prompt[len(tail) - len(start.rstrip()) :]


def tool_map(tools: Sequence[Tool]) -> dict[str, Tool]:
    return {t.name: t for t in tools}


def parse(
    family: Family,
    text: str,
    tools: Sequence[Tool] = (),
    *,
    prefix: str | None = None,
    reasoning: bool = True,
    partial: bool = False,
) -> Parsed:
    """The message in `text`, a model's output after a prompt whose end `prefix` opened the thinking (None:
    it did not). With `reasoning` false the reasoning is left in the answer, tags and all (llama-server's
    `reasoning_format: none`). With `partial`, `text` is the output so far: a call begun but not finished is
    not the answer's text (it is returned with the arguments known so far: none). Output no reading can make
    sense of (nested past Python's recursion limit, say) is all answer: never an error."""
    try:
        return _parse(family, text, tool_map(tools), prefix, reasoning, partial)
    except (RecursionError, MemoryError, ValueError, TypeError, KeyError, IndexError) as exc:
        log.debug("%s output not parsed (%s): returned as the answer", family.name, type(exc).__name__)
        return Parsed(content=text)


def _parse(family: Family, text: str, table: Tools, prefix: str | None, reasoning: bool, partial: bool) -> Parsed:
    if family.custom is not None:
        return family.custom(text, table, prefix is not None, reasoning, partial)
    out = Parsed()
    rest = text
    head = ""  # the raw reasoning, kept in the answer when it is not split off
    if family.think is not None:
        start, close = family.think
        inside = prefix is not None
        if not inside:
            stripped = rest.lstrip()
            if stripped.startswith(start):
                inside = True
                rest = stripped[len(start) :]
            elif family.unopened and close in rest and start not in rest[: rest.find(close)]:
                inside = True
        if inside:
            end = rest.find(close)
            if end >= 0:
                thought, rest = rest[:end], rest[end + len(close) :]
            else:
                at = _first(rest, (*family.ends, *(family.markers if table else ())))
                thought, rest = (rest[:at], rest[at:]) if at >= 0 else (rest, "")
            if reasoning:
                out.reasoning = (
                    ((prefix or "") if family.keeps_start else "") + thought.strip() if thought.strip() else ""
                )
            elif thought.strip() or end >= 0:
                head = (prefix or "") + text[: len(text) - len(rest)]
            if not head:
                rest = rest.lstrip()  # the whitespace between the reasoning and the answer is neither
    found = family.calls(rest, table) if table and family.calls is not None else None
    if found is None and partial and table:
        found = _begun(family, rest, table)
    if found is not None:
        out.calls = found.calls
        rest = rest[: found.start] + ("" if partial else rest[found.end :])  # after a call: held to the end
    for marker in family.strip:
        rest = rest.replace(marker, "")
    out.content = head + rest if head else rest.strip() if found is not None else rest
    return out


def _first(text: str, markers: Sequence[str]) -> int:
    hits = [i for i in (text.find(m) for m in markers) if i >= 0]
    return min(hits) if hits else -1


_ID = re.compile(r'"tool_call_id"\s*:\s*"([^"]*)"|(functions\.[\w.\-]+:\d+)')


def _begun(family: Family, text: str, tools: Tools) -> Found | None:
    """A call begun at the end of a partial output: from the family's call marker on, with the first declared
    tool named after it (and the id the format carries, where it is already there)."""
    at = _first(text, family.markers)
    if at < 0:
        return None
    tail = text[at:]
    named = [(i, n) for n in tools if (i := tail.find(n)) >= 0]
    if not named:
        return Found(at, len(text), [])
    name = min(named)[1]
    m = _ID.search(tail)
    return Found(at, len(text), [Call(name, {}, (m.group(1) or m.group(2)) if m else "")])
