"""A generation's events with its output read by its format family as it streams.

The text so far is parsed again at each piece (`parse(..., partial=True)`, as llama-server does), and what
the parse adds to the reasoning or the answer goes out at once as `Thinking` or `Token` events. Text that may
be the start of a marker (a thinking tag, a call's opening) is held only until the next pieces decide it. A
call goes out as it is read: `ToolCallStart` once its tool's name is known, then its arguments' JSON text in
`ToolCallArguments` pieces as they become certain (`partial`: JSON arguments heal; a family whose arguments
are not JSON as written sends them in one piece when the call is complete). At the end the whole output is
parsed once more: what is still held goes out (the rest of each call's arguments too), then the calls whole
as one `ToolCalls` event (with the ids their starts carried), then `Done`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Sequence

from ...domain.events import Done, Event, Thinking, Token, TokenLogprob, ToolCallArguments, ToolCalls, ToolCallStart
from ...domain.messages import Tool, ToolCall, arguments_json
from .. import thinking
from . import partial
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
        self.started: list[tuple[str, str]] = []  # the calls begun: id, name
        self.sent_arguments: list[str] = []  # what of each begun call's arguments went out
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

    def certain(self) -> str:
        """The text without an end that may be the beginning of a marker."""
        return self.text[: len(self.text) - _held(self.text, self.markers)]

    def parse(self, *, final: bool) -> Parsed:
        """The message so far: of all the text at the end, else of what is certain."""
        text = self.text if final else self.certain()
        return parse(self.family, text, self.tools, prefix=self.prefix, reasoning=self.reasoning, partial=not final)

    def feed(self, piece: str, new_id: NewId) -> list[Event]:
        """The events `piece` makes certain, in order: reasoning and answer text, calls begun and their
        arguments' pieces."""
        self.text += piece
        parsed = self.parse(final=False)
        out = _events(self._deltas(parsed, final=False), ())
        if parsed.calls:
            out += self._calls(new_id)
        return out

    def finish(self, new_id: NewId) -> tuple[list[Event], Parsed]:
        """What is still held of the whole output, then its calls whole (`ToolCalls`), and its message."""
        parsed = self.parse(final=True)
        out = _events(self._deltas(parsed, final=True), ())
        calls = []
        for k, call in enumerate(parsed.calls):
            text = arguments_json(call.arguments)
            if k < len(self.started) and self.started[k][1] == call.name:
                call_id, sent = self.started[k][0], self.sent_arguments[k]
                if not text.startswith(sent):
                    log.warning("call %d's arguments differ from what was streamed: %r then %r", k, sent, text)
                elif len(text) > len(sent):
                    out.append(ToolCallArguments(k, text[len(sent) :]))
            else:
                call_id = call.id or new_id()
                out += [ToolCallStart(k, call_id, call.name), ToolCallArguments(k, text)]
            calls.append(ToolCall(call_id, call.name, call.arguments))
        if calls:
            out.append(ToolCalls(tuple(calls)))
        return out, parsed

    def _calls(self, new_id: NewId) -> list[Event]:
        """The calls begun in the certain text and their arguments' certain pieces (not sent yet)."""
        text = self.certain()
        hits = [(i, m) for m in self.family.markers if (i := text.rfind(m)) >= 0]
        if not hits:
            return []
        at, marker = max(hits)
        healed = partial.heal(text, at + len(marker))
        source = healed.text if healed is not None else text
        # healed, the text reads as a whole output (a name not yet whole names no tool: no call yet)
        found = parse(
            self.family, source, self.tools, prefix=self.prefix, reasoning=self.reasoning, partial=healed is None
        )
        out: list[Event] = []
        for k, call in enumerate(found.calls):
            if healed is None and k == len(found.calls) - 1 and not call.id and k >= len(self.started):
                break  # may be still being written, its id too (Mistral's `[CALL_ID]`): it starts when read whole
            if k < len(self.started):
                if self.started[k][1] != call.name:
                    return out  # read another way now: the end decides
            else:
                self.started.append((call.id or new_id(), call.name))
                self.sent_arguments.append("")
                out.append(ToolCallStart(k, *self.started[k]))
            if healed is None:
                continue  # the arguments are not healed JSON: they go out when the call is read whole
            written = arguments_json(call.arguments)
            now = partial.certain(written, healed)
            if now is None:
                if k < len(found.calls) - 1:
                    now = written  # a call before the healed one: whole
                else:
                    continue
            sent = self.sent_arguments[k]
            if now.startswith(sent) and len(now) > len(sent):
                out.append(ToolCallArguments(k, now[len(sent) :]))
                self.sent_arguments[k] = now
        return out

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
                for out in _with_logprobs(reader.feed(event.text, new_id), event.logprobs):
                    yield out
                continue
            if isinstance(event, Done):
                for out in reader.finish(new_id)[0]:
                    yield out
            yield event


def _events(deltas: list[tuple[str, str]], logprobs: tuple[TokenLogprob, ...]) -> list[Event]:
    return [Thinking(text) if kind == "thinking" else Token(text) for kind, text in deltas]


def _with_logprobs(events: list[Event], logprobs: tuple[TokenLogprob, ...]) -> list[Event]:
    """`events` with a piece's log-probabilities on its first answer text."""
    out: list[Event] = []
    for event in events:
        if logprobs and isinstance(event, Token):
            event, logprobs = Token(event.text, logprobs), ()
        out.append(event)
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
