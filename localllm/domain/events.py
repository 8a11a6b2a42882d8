"""What a generation yields, the same for every dialect: tokens, reasoning, tool calls (whole, or streamed as
they are read), the closing `Done` with timings and counts; and the answers of embed, rerank and pull."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .messages import ToolCall


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token with its log-probability and the most likely alternatives."""

    id: int
    token: str
    bytes: tuple[int, ...]
    logprob: float
    top: tuple[tuple[int, str, float], ...] = ()


@dataclass(frozen=True)
class Token:
    """A piece of generated text (one or more tokens), with their log-probabilities when asked for."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Done:
    """The end of a generation, with Ollama's counters (durations in nanoseconds)."""

    reason: str
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    load_duration: int = 0
    total_duration: int = 0
    context: tuple[int, ...] | None = None
    cached_tokens: int = 0  # prompt tokens whose KV was reused (not counted in prompt_eval_count)
    truncated: int = 0  # input tokens dropped to fit the context (never silently: reported to the client)
    stop_sequence: str | None = None  # the stop sequence that ended the generation, when one did
    draft_count: int = 0  # tokens drafted by speculative decoding (runner/speculate.py)
    draft_accepted: int = 0  # drafted tokens the model kept (each counted in eval_count too)


@dataclass(frozen=True)
class Thinking:
    """A piece of the model's reasoning, apart from its answer (`thinking.split_thinking`)."""

    text: str


@dataclass(frozen=True)
class ToolCalls:
    """The answer is a request to call tools: the output held back while it might be one, parsed, once for
    every dialect (`tools.held_back`). It comes just before `Done`, instead of the text it was parsed from."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class ToolCallStart:
    """A tool call begins: the `index`-th call of the answer, its id and its tool's name (streamed as soon as
    the family's parser has read them). Its arguments follow as `ToolCallArguments` pieces."""

    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ToolCallArguments:
    """A piece of the `index`-th call's arguments as JSON text: the pieces of a call, joined, are its
    arguments as `ToolCall.arguments_json` writes them (the `ToolCalls` event before `Done` still carries
    every call whole, for the dialects that send calls whole and for the collected answer)."""

    index: int
    text: str


# What the service yields for a generation: text pieces (and reasoning), tool calls (begun and their arguments
# in pieces, then whole), then one `Done`.
Event = Token | Thinking | ToolCallStart | ToolCallArguments | ToolCalls | Done


@dataclass(frozen=True)
class Embeddings:
    """The answer to an embedding request: one vector per input, in order (durations in nanoseconds)."""

    vectors: list[list[float]]
    prompt_eval_count: int = 0  # tokens evaluated, over every input
    total_duration: int = 0
    load_duration: int = 0


@dataclass(frozen=True)
class Ranking:
    """The answer to a rerank request: one relevance score per document, in the documents' order (llama.cpp's
    raw classifier output, higher is more relevant)."""

    scores: list[float]
    prompt_eval_count: int = 0  # tokens evaluated, over every (query, document) pair
    total_duration: int = 0
    load_duration: int = 0


@dataclass(frozen=True)
class Progress:
    """One step of a pull, shaped like Ollama's progress lines."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}
