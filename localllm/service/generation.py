"""What a generation takes and gives: the service's requests (`GenerateRequest`, `ChatRequest`), a whole answer
(`Answer`, `collect`), and the pure steps between them and the runner: the conversation a model starts from,
fitting it to the context, the bound on a prompt's bytes, and the runner's `Job`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..chat import thinking
from ..domain import limits
from ..domain.errors import EngineError, InvalidRequest, PromptTooLong
from ..domain.events import Done, Event, Thinking, Token, TokenLogprob, ToolCalls
from ..domain.media import Media
from ..domain.messages import ChatMessage, Tool, ToolCall
from ..domain.names import ModelName
from ..domain.options import Constraints, Options
from ..modelstore.models import Model
from ..runner.protocol import SAMPLING_OPTIONS, Job, Sampling


@dataclass(frozen=True)
class GenerateRequest:
    model: ModelName
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    options: Options = field(default_factory=Options)
    keep_alive: float | None = None
    constraints: Constraints = field(default_factory=Constraints)
    suffix: str | None = None  # text after the insertion point: fill-in-the-middle
    template: str | None = None  # a chat template for this request instead of the model's
    truncate: bool = False  # cut an input too long for the context (head and tail kept) rather than refuse it
    think: thinking.Think = None  # reasoning on or off (or a level); None: the template's default
    media: tuple[Media, ...] = ()  # images and audio, one per `media.MARKER` in `prompt`, in order


@dataclass(frozen=True)
class ChatRequest:
    model: ModelName
    messages: tuple[ChatMessage, ...] = ()
    options: Options = field(default_factory=Options)
    keep_alive: float | None = None
    constraints: Constraints = field(default_factory=Constraints)
    tools: tuple[Tool, ...] = ()  # functions the model may call (rendered into the prompt, calls parsed)
    truncate: bool = False  # drop the oldest turns of a conversation too long for the context, rather than refuse it
    call_required: bool = False  # the output is constrained to a call: all of it is held back as one
    think: thinking.Think = None  # reasoning on or off (or a level); None: the template's default
    think_field: str = "think"  # the request's field that set `think`, named when the model cannot think
    think_budget: int | None = None  # at most this many tokens of thinking (`thinking.budgeted`), where it thinks
    count_prompt: bool = False  # count the prompt's tokens before generating (`logs.note_prompt`)


@dataclass(frozen=True)
class Answer:
    """A whole generation (`collect`): its text pieces (with log-probabilities when asked for), its tool
    calls when it asked for some, its reasoning, and its end."""

    tokens: tuple[Token, ...]
    done: Done
    tool_calls: tuple[ToolCall, ...] = ()
    thinking: str = ""

    @property
    def text(self) -> str:
        return "".join(t.text for t in self.tokens)

    @property
    def logprobs(self) -> list[TokenLogprob]:
        return [lp for t in self.tokens for lp in t.logprobs]


async def collect(events: AsyncGenerator[Event, None]) -> Answer:
    """The whole answer of a stream of events (closed when done)."""
    tokens: list[Token] = []
    calls: tuple[ToolCall, ...] = ()
    thinking: list[str] = []
    done: Done | None = None
    async with contextlib.aclosing(events):
        async for event in events:
            if isinstance(event, Token):
                tokens.append(event)
            elif isinstance(event, ToolCalls):
                calls = event.calls
            elif isinstance(event, Thinking):
                thinking.append(event.text)
            elif isinstance(event, Done):
                done = event
    if done is None:
        raise EngineError("a generation ended without a result")
    return Answer(tuple(tokens), done, calls, "".join(thinking))


def conversation(model: Model, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """The request's own leading system messages first, then the model's stored conversation, then the rest;
    the model's system prompt first when the request has none."""
    lead = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
    out = [*messages[:lead], *model.messages, *messages[lead:]]
    if model.system and not (out and out[0].role == "system"):
        out.insert(0, ChatMessage("system", model.system))
    return out


async def fit_bytes(
    messages: list[ChatMessage], text: str, render: Callable[[Sequence[ChatMessage]], Awaitable[str]], budget: int
) -> tuple[list[ChatMessage], str]:
    """The fewest oldest turns dropped (binary search over renders) for the prompt to have at most
    `budget` bytes (`text` is all of them rendered), so that no prompt the context cannot hold is tokenized."""
    if limits.utf8_len(text) <= budget:
        return messages, text
    droppable = [i for i, m in enumerate(messages[:-1]) if m.role != "system"]

    def without(k: int) -> list[ChatMessage]:
        gone = set(droppable[:k])
        return [m for i, m in enumerate(messages) if i not in gone]

    low, high = 1, len(droppable)
    best = without(high)
    best_text = await render(best)
    while low < high:
        mid = (low + high) // 2
        mid_text = await render(without(mid))
        if limits.utf8_len(mid_text) <= budget:
            high, best, best_text = mid, without(mid), mid_text
        else:
            low = mid + 1
    return best, best_text


def check_prompt_bytes(text: str, n_ctx: int, *, truncate: bool, field: str) -> None:
    """Refuse, before it is tokenized, a prompt that cannot fit the context (unless it may be cut to fit) or
    that passes the bound on any prompt; the runner never receives hundreds of megabytes."""
    if len(text) * 4 <= limits.prompt_bytes(n_ctx):  # the common case, without encoding the text
        return
    size = limits.utf8_len(text)
    if size > limits.PROMPT_MAX_BYTES:
        raise InvalidRequest(
            f"{field}: the input is {size} bytes, more than the {limits.size_text(limits.PROMPT_MAX_BYTES)} "
            "any prompt may have",
            field=field,
        )
    if not truncate and size > limits.prompt_bytes(n_ctx):
        raise PromptTooLong(size, n_ctx, limits.BYTES_PER_TOKEN, field=field)


def runner_job(
    prompt: str, options: Options, constraints: Constraints, truncate: bool, media: tuple[Media, ...] = ()
) -> Job:
    """The runner's job for `prompt` under the merged options, with the `media` its markers stand for (checked:
    `service.media`); what the options leave unset keeps the defaults of `Job` and `Sampling`, the only copy
    of them."""
    sampling: dict[str, Any] = {k: v for k in SAMPLING_OPTIONS if (v := getattr(options, k)) is not None}
    bounds: dict[str, Any] = {k: v for k in ("num_predict", "stop") if (v := getattr(options, k)) is not None}
    return Job(
        prompt,
        Sampling(
            **sampling,
            grammar=constraints.grammar or None,
            calls=constraints.calls,
            logit_bias=constraints.logit_bias,
            ignore_eos=constraints.ignore_eos,
        ),
        **bounds,
        min_tokens=constraints.min_tokens,
        format=constraints.format,
        logprobs=constraints.logprobs,
        context=constraints.context,
        truncate=truncate,
        media=media,
    )
