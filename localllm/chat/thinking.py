"""Reasoning models' thinking, split off their answer: `<think>…</think>` in the output, parsed as it streams.

Qwen3, DeepSeek-R1 and their kin write their reasoning between `<think>` and `</think>` before the answer.
Some templates open `<think>` in the prompt itself (DeepSeek-R1's distills), so the output starts inside
the thinking and only `</think>` appears. `ThinkParser` reads the pieces as they come (a tag may be split
over several) and says which text is thinking and which is the answer; `split_thinking` turns a stream of
`Token` events into `Thinking` and `Token` events, so the reasoning is never mixed into the answer and never
read as a tool call. `/api/generate` uses it; a chat's output is read by its template's format family
(`chat/formats/`, which knows every family's reasoning tags, gpt-oss's channels among them).

Two request fields map onto thinking here, once for every dialect: a reasoning effort (OpenAI's
`reasoning_effort`, Responses' `reasoning.effort`) as a `Think` (`effort`), and a thinking budget (Anthropic's
`thinking.budget_tokens`, llama-server's and vLLM's budget fields), honoured by `budgeted`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace
from typing import Literal

from ..domain.errors import InvalidRequest
from ..domain.events import Done, Event, Thinking, Token

OPEN = "<think>"
CLOSE = "</think>"
LEVELS = ("low", "medium", "high")  # `think` levels, for templates that take `reasoning_effort`

Think = bool | str | None  # a request's `think`: None (the template's default), on or off, or a level
Kind = Literal["thinking", "content"]

# OpenAI's reasoning efforts as a `think`: "none" and "minimal" ask for no reasoning (thinking off, and never
# refused on a model that cannot think), the others are levels (a template that takes no level just thinks).
EFFORTS: dict[str, Think] = {
    "none": False,
    "minimal": False,
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
}


def effort(raw: object, field: str) -> Think:
    """The `think` of a reasoning effort sent in `field` (None when it is not sent)."""
    if raw is None:
        return None
    if not isinstance(raw, str) or raw not in EFFORTS:
        raise InvalidRequest(f"{field} must be one of {', '.join(EFFORTS)}", field=field)
    return EFFORTS[raw]


class ThinkParser:
    """A state machine over streamed text: before the thinking (leading whitespace, then `<think>` or not),
    inside it (until `</think>`), then the answer. Text that may be the start of a tag is held until the
    next piece says whether it is."""

    def __init__(self, *, opened: bool = False) -> None:
        self.state: Literal["start", "thinking", "content"] = "thinking" if opened else "start"
        self._held = ""
        self._trim = opened  # whitespace right after a tag is not part of what follows it

    def feed(self, text: str) -> list[tuple[Kind, str]]:
        """The parts of `text` that are known now, in order, each as thinking or answer."""
        out: list[tuple[Kind, str]] = []
        held = self._held + text
        self._held = ""
        while held:
            if self.state == "start":
                head = held.lstrip()
                if head.startswith(OPEN):
                    self.state, self._trim = "thinking", True
                    held = head[len(OPEN) :]
                elif head and not OPEN.startswith(head):
                    self.state = "content"
                    held = head
                else:  # only whitespace, or the beginning of `<think>`: wait for more
                    self._held = held
                    return out
            elif self.state == "thinking":
                if self._trim:
                    held = held.lstrip()
                    if not held:
                        return out
                    self._trim = False
                end = held.find(CLOSE)
                if end >= 0:
                    _add(out, "thinking", held[:end].rstrip())
                    self.state, self._trim = "content", True
                    held = held[end + len(CLOSE) :]
                    continue
                # the start of `</think>`, and whitespace that may turn out to be just before it, wait
                body = held[: len(held) - _partial_suffix(held, CLOSE)]
                said = body.rstrip()
                _add(out, "thinking", said)
                self._held = held[len(said) :]
                return out
            else:
                if self._trim:
                    held = held.lstrip()
                    if not held:
                        return out
                    self._trim = False
                _add(out, "content", held)
                return out
        return out

    def flush(self) -> list[tuple[Kind, str]]:
        """What is still held at the end of the output: never a tag, so it is text of its state."""
        held, self._held = self._held, ""
        if not held:
            return []
        if self.state == "start":
            return [("content", held.lstrip())] if held.strip() else []
        return [("thinking" if self.state == "thinking" else "content", held)]


def _add(out: list[tuple[Kind, str]], kind: Kind, text: str) -> None:
    if text:
        out.append((kind, text))


def _partial_suffix(text: str, tag: str) -> int:
    """How many characters at the end of `text` are the beginning of `tag` (so may be completed later)."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


def opens_thinking(prompt: str) -> bool:
    """Whether the rendered prompt leaves a `<think>` open, so the output starts inside the thinking."""
    tail = prompt.rstrip()
    return tail.endswith(OPEN)


def splits(capable: bool, think: Think, prompt: str, *, default: bool = True) -> bool:
    """Whether the output of `prompt` is parsed for reasoning: where the template supports thinking, unless
    `think` is false (then the template was told not to think), and with `think` unset only by `default` (a
    templated prompt, not a raw one). A prompt that opens `<think>` itself is always parsed: its template
    cannot turn thinking off, and the answer must not begin with the reasoning."""
    if not capable:
        return False
    return opens_thinking(prompt) or (think is not False and (think is not None or default))


async def split_thinking(events: AsyncGenerator[Event, None], *, opened: bool = False) -> AsyncGenerator[Event, None]:
    """`events` with the text of each `Token` split into `Thinking` and answer `Token`s (its log-probabilities
    go with the answer part, when it has one); what is held at the end comes out before `Done`."""
    parser = ThinkParser(opened=opened)
    async with contextlib.aclosing(events):
        async for event in events:
            if isinstance(event, Token):
                logprobs = event.logprobs
                for kind, text in parser.feed(event.text):
                    if kind == "thinking":
                        yield Thinking(text)
                    else:
                        yield Token(text, logprobs)
                        logprobs = ()
                continue
            if isinstance(event, Done):
                for kind, text in parser.flush():
                    yield Thinking(text) if kind == "thinking" else Token(text)
            yield event


# -- the thinking budget --------------------------------------------------------------------------------------

# What a budgeted generation writes around the thinking, as Qwen3's and DeepSeek-R1's templates do: the prompt
# opens the thinking (unless the template did), and a thinking cut at its budget is closed before the answer.
PREFILL = OPEN + "\n"
SEPARATOR = "\n\n"  # between the closed thinking and the answer

Run = Callable[[str, int, tuple[str, ...]], AsyncGenerator[Token | Done, None]]  # prompt, num_predict, stop


def prefilled(prompt: str) -> str:
    """`prompt` ending inside an open thinking block, as a budgeted generation starts."""
    return prompt if opens_thinking(prompt) else prompt + PREFILL


async def budgeted(
    run: Run, prompt: str, budget: int, *, num_predict: int = -1, stop: tuple[str, ...] = ()
) -> AsyncGenerator[Token | Done, None]:
    """Generate from `prompt` (which opens the thinking: `prefilled`) with at most `budget` tokens of thinking.

    The thinking runs as its own generation, stopped at `</think>` or after `budget` tokens; then the thinking
    is closed (the tag and the separator the model would write, or `</think>` after a cut) and a second
    generation writes the answer from the prompt and the thinking so far (the slot's prompt cache has them
    already). `num_predict` bounds both together, and the `Done` counts both: the input tokens are the first
    prompt's, the output tokens all that were generated. Out of the text comes, in order, the thinking, the
    closing, the answer: `split_thinking` parses it as any other."""
    thought: list[str] = []
    first: Done | None = None
    if budget > 0:
        limit = budget if num_predict < 0 else min(budget, num_predict)
        async with contextlib.aclosing(run(prompt, limit, (*stop, CLOSE))) as events:
            async for event in events:
                if isinstance(event, Done):
                    first = event
                else:
                    thought.append(event.text)
                    yield event
        if first is None:
            return
        if 0 <= num_predict <= first.eval_count:  # all the output there may be is spent
            yield replace(first, reason="length", stop_sequence=None)
            return
        cut = first.reason == "length" and first.eval_count == budget
        if first.stop_sequence != CLOSE and not cut:
            yield first  # the end of the output, a stop sequence, or a full context
            return
    text = "".join(thought)
    closing = CLOSE + SEPARATOR
    if first is None or first.stop_sequence != CLOSE:  # cut short: the tag on a line of its own
        closing = ("" if text.endswith("\n") else "\n") + closing
    yield Token(closing)
    left = -1 if num_predict < 0 else num_predict - (first.eval_count if first else 0)
    async with contextlib.aclosing(run(prompt + text + closing, left, stop)) as events:
        async for event in events:
            yield event if first is None or not isinstance(event, Done) else _both(first, event)


def _both(first: Done, second: Done) -> Done:
    """The `Done` of a budgeted generation: the first prompt's input, both parts' output and time."""
    return replace(
        second,
        prompt_eval_count=first.prompt_eval_count,
        cached_tokens=first.cached_tokens,
        prompt_eval_duration=first.prompt_eval_duration,
        eval_count=first.eval_count + second.eval_count,
        eval_duration=first.eval_duration + second.prompt_eval_duration + second.eval_duration,
        truncated=first.truncated,
        draft_count=first.draft_count + second.draft_count,
        draft_accepted=first.draft_accepted + second.draft_accepted,
    )
