"""What the decode loop (batch.py) keeps in its slots, and what it drives them with.

A `Slot` is one of the context's sequences: the tokens whose KV it holds, the output kept after a prompt, and
the generation in it (`Work`: a request's prompt, sampler chains, progress and the text still to send). The
loop evaluates through an `EngineLike` (engine.py, or a fake in tests) and samples through `SamplerLike`s
(sampler.py). `common_prefix` and `output_for` say how much of a prompt a slot already holds.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..domain.events import TokenLogprob
from .kvstates import PromptOutput
from .mediaprompt import MediaSpan
from .speculate import Speculation


class SamplerLike(Protocol):
    def sample(self, engine: Any, at: Any) -> int: ...  # `at`: an output of the last decode, or kept logits

    def close(self) -> None: ...


class EngineLike(Protocol):
    n_parallel: int
    n_batch: int
    n_ctx_seq: int
    n_vocab: int
    tail_tile: int  # 0: no rounding of prompt tails

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]: ...
    def piece(self, token: int, *, special: bool = False) -> bytes: ...
    def is_eog(self, token: int) -> bool: ...
    def clear_batch(self) -> None: ...
    @property
    def batch_size(self) -> int: ...
    def add(self, token: int, pos: int, seq: int, logits: bool) -> int: ...
    def decode(self) -> int: ...
    def cuttable(self, seq: int, from_pos: int) -> bool: ...
    def forget(self, seq: int, from_pos: int) -> bool: ...
    def worth_a_tile(self, n_new: int, n_past: int) -> bool: ...
    def ran_out_of_memory(self) -> bool: ...
    def logprobs(self, at: Any, token: int, top: int) -> tuple[float, list[tuple[int, float]]]: ...
    def keep_logits(self, index: int) -> Any: ...
    def save_state(self, seq: int) -> bytearray | None: ...
    def load_state(self, seq: int, data: bytearray) -> bool: ...


@dataclass(eq=False)
class Work:
    """A generation in progress."""

    rid: str
    prompt: list[int]
    sampler: SamplerLike | None = None
    early: SamplerLike | None = None  # used until `min_tokens` are generated: cannot end the answer
    truncated: int = 0  # prompt tokens cut out to fit the context
    min_tokens: int = 0
    num_predict: int = -1
    stops: tuple[str, ...] = ()
    top_logprobs: int = -1  # -1: no log-probabilities
    spec: Speculation = field(default_factory=Speculation)  # its drafted tokens (speculate.py)
    # progress
    slot: int = -1
    pending: list[int] = field(default_factory=list)  # prompt tokens still to evaluate
    n_past: int = 0  # tokens of this sequence in the cache
    cached: int = 0
    next_token: int = -1  # sampled, not yet evaluated
    out_index: int = -1  # where this request's logits are in the current batch
    first: Any = None  # kept logits its first token is taken from (its whole prompt was cached with them)
    checkpointed: int = 0  # where its prompt's last checkpoint was taken (checkpoints.py)
    generated: list[int] = field(default_factory=list)
    held: str = ""  # text held back: it may begin a stop string
    text: list[str] = field(default_factory=list)  # to send after this step
    lps: list[TokenLogprob] = field(default_factory=list)
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    t_start: float = 0.0
    t_first: float = 0.0
    t_flushed: float = 0.0  # when text last went out
    spans: tuple[MediaSpan, ...] = ()  # the prompt's media chunks (mediaprompt.py): their positions hold pseudo ids
    media_turn: int = 0  # when its last media chunk was evaluated (mediastep.MediaTurns): requests take turns


@dataclass
class Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)  # what this sequence's cache holds
    work: Work | None = None
    last_used: float = 0.0
    output: PromptOutput | None = None  # the output after the first `output.n` of `tokens`

    def cut(self, keep: int) -> None:
        """This slot holds its first `keep` tokens only (its sequence was cut there)."""
        del self.tokens[keep:]
        if self.output is not None and self.output.n > keep:
            self.output = None


def output_for(slot: Slot, prompt: list[int]) -> PromptOutput | None:
    """The output `slot` kept after exactly `prompt`, if it holds `prompt` whole and kept the output after it."""
    output = slot.output
    if output is None or output.n != len(prompt) or len(slot.tokens) < output.n or slot.tokens[: output.n] != prompt:
        return None
    return output


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens `a` and `b` begin with in common: slices compared in C, halving the span where they first
    differ (a token-by-token loop over a 1,000-token prompt and four slots took half a millisecond)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low], and they differ before `high`
    while high - low > 16:
        mid = (low + high) // 2
        if a[low:mid] == b[low:mid]:
            low = mid
        else:
            high = mid
    while a[low] == b[low]:
        low += 1
    return low
