"""A generation's events with its output read by its format family as it streams.

The text so far is parsed again at each piece (`parse(..., partial=True)`, as llama-server does), and what
the parse adds to the reasoning or the answer goes out at once as `Thinking` or `Token` events. Text that may
be the start of a marker (a thinking tag, a call's opening) is held only until the next pieces decide it; a
call begun is held until it is complete. At the end the whole output is parsed once more: what is still
held goes out, then the calls as one `ToolCalls` event, then `Done`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Sequence

from ...domain.types import Done, Event, Thinking, Token, TokenLogprob, Tool, ToolCall, ToolCalls
from .. import thinking
from .base import Family, Parsed, parse
from .registry import detect

log = logging.getLogger("localllm")

NewId = Callable[[], str]


def _held(text: str, markers: Sequence[str]) -> int:
    """How many characters at the end of `text` may be the beginning of one of `markers`: never fewer than a
    whole marker it ends with (`>>` at the end of `>>>` begins nothing more; `<|channel>` may still become
    `<|channel>thought`)."""
    whole = max((len(m) for m in markers if text.endswith(m)), default=0)
    best = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), max(best, whole - 1), -1):
            if marker.startswith(text[-n:]):
                best = n
                break
    return best


class Reader:
    """The output so far of one generation, with what of its reasoning and answer has been sent."""

    def __init__(self, family: Family, tools: Sequence[Tool], *, prefix: str | None, reasoning: bool) -> None:
        self.family, self.tools, self.prefix, self.reasoning = family, tools, prefix, reasoning
        self.text = ""
        self.sent_reasoning = ""
        self.sent_content = ""
        self.markers = tuple(
            m
            for m in (
                *(family.think or ()),
                *family.markers,
                *family.ends,
                *family.strip,
                "<|channel|>",
                "<|start|>",
                "<|message|>",
                "<|end|>",
                "<|eot|>",
                "<|eom|>",
                "<|call|>",
                "<|return|>",
            )
            if m.strip()
        )

    def parse(self, *, final: bool) -> Parsed:
        """The message so far: of all the text at the end, else of what is certain (the text without an end
        that may be the beginning of a marker)."""
        text = self.text if final else self.text[: len(self.text) - _held(self.text, self.markers)]
        return parse(self.family, text, self.tools, prefix=self.prefix, reasoning=self.reasoning, partial=not final)

    def feed(self, piece: str) -> list[tuple[str, str]]:
        """The reasoning and answer text that `piece` makes certain, in order, as ("thinking"|"content", text)."""
        self.text += piece
        return self._deltas(self.parse(final=False), final=False)

    def finish(self) -> tuple[list[tuple[str, str]], Parsed]:
        parsed = self.parse(final=True)
        return self._deltas(parsed, final=True), parsed

    def _deltas(self, parsed: Parsed, *, final: bool) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for kind, now in (("thinking", parsed.reasoning), ("content", parsed.content)):
            sent = self.sent_reasoning if kind == "thinking" else self.sent_content
            if not final:
                if kind == "thinking" and not parsed.content and not parsed.calls:
                    now = now.rstrip()  # whitespace that may turn out to be before the closing tag
            if not now.startswith(sent):
                if sent.strip() and now.startswith(sent.rstrip()):
                    continue  # whitespace sent that the parse now trims: nothing more to say yet
                if sent.strip():
                    log.debug("parsed %s differs from what was streamed: %r then %r", kind, sent, now)
                    continue
                sent = ""  # only whitespace was sent: the text goes out after it
            if len(now) > len(sent):
                out.append((kind, now[len(sent) :]))
                if kind == "thinking":
                    self.sent_reasoning = now
                else:
                    self.sent_content = now
        return out


async def parsed(
    events: AsyncGenerator[Event, None],
    family: Family,
    tools: Sequence[Tool],
    *,
    prefix: str | None,
    reasoning: bool,
    new_id: NewId,
) -> AsyncGenerator[Event, None]:
    """`events` with each `Token`'s text read by `family` into `Thinking` and answer `Token`s (a piece's
    log-probabilities go with its answer text, when it has some) and the calls found as `ToolCalls` just
    before `Done`, each with the id its format gave it or `new_id()`."""
    reader = Reader(family, tools, prefix=prefix, reasoning=reasoning)
    async with contextlib.aclosing(events):
        async for event in events:
            if isinstance(event, Token):
                for out in _events(reader.feed(event.text), event.logprobs):
                    yield out
                continue
            if isinstance(event, Done):
                deltas, message = reader.finish()
                for out in _events(deltas, ()):
                    yield out
                if message.calls:
                    yield ToolCalls(tuple(ToolCall(c.id or new_id(), c.name, c.arguments) for c in message.calls))
            yield event


def _events(deltas: list[tuple[str, str]], logprobs: tuple[TokenLogprob, ...]) -> list[Event]:
    out: list[Event] = []
    for kind, text in deltas:
        if kind == "thinking":
            out.append(Thinking(text))
        else:
            out.append(Token(text, logprobs))
            logprobs = ()
    return out


def read(
    events: AsyncGenerator[Event, None],
    template: str | None,
    tools: Sequence[Tool],
    capable: bool,
    think: thinking.Think,
    prompt: str,
    *,
    new_id: NewId,
) -> AsyncGenerator[Event, None]:
    """A chat's events read by its template's family (`parsed`): the reasoning split off where the template
    thinks (`thinking.splits`; a family that writes channels always), calls looked for when there are
    `tools`; the events as they are when neither applies."""
    family = detect(template)
    split = thinking.splits(capable or family.custom is not None, think, prompt)
    if not split and not tools:
        return events
    opened = family.opened(prompt) if split else None
    return parsed(events, family, tools, prefix=opened, reasoning=split, new_id=new_id)
