"""Speculative decoding: where a generating request's drafted tokens come from, and how many it may have.

Two drafters propose the tokens that may follow a request's next token: `NgramDraft` (prompt lookup: the
tokens that followed the latest earlier occurrence of the last few tokens, in the prompt or the answer so
far; no model) and `DraftModel` (a small model of the same vocabulary in the runner, its own context with the
target's slots, drafting greedily). The decode loop (batch.py, its steps in drafts.py) stages the drafted
tokens after the request's next token in the same batch as the other requests' tokens, and keeps a drafted
token only while it is the token the request's own sampler chain picks from the target's logits at that
position.

That is the standard rejection rule, exactly: a deterministic draft is a one-hot q, so "keep x with
probability min(1, p(x)/q(x)) = p(x), else sample from max(0, p − q) normalised" is "sample from p; keep x
when the sample is x, else the sample is the correction". The answer follows the target's distribution (and
is the target's own argmax when greedy), and the sampler chain sees exactly the kept tokens (grammars,
penalties). The first token that differs is the step's last, and the rejected tail's KV is removed.

How many tokens a request may draft (`draft_room`): at most its `num_draft`, what its `num_predict` and the
context window leave, and its share of the batch's room. How many of those it does draft is what pays on this
machine (draftpolicy.py): the step costs measured by batch size, and how much of its recent drafts was kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from .draftpolicy import COST_WEIGHT, Acceptance

MATCH_MOST = 16  # a lookup's match is extended backwards up to this many tokens (the longest wins)
LONG_MATCH = 8  # a lookup matching at least this many tokens is taken for copying (`Speculation.long`)
MEMORY_TOKENS = 1 << 16  # tokens of earlier requests' histories a runner keeps for lookups (`LookupMemory`)
LOOKUP_CANDIDATES = 64  # the latest occurrences of the last pair a lookup compares


class DraftEngine(Protocol):
    """What `DraftModel` needs of its engine (engine.Engine offers it)."""

    n_parallel: int
    n_batch: int

    def clear_batch(self) -> None: ...
    def add(self, token: int, pos: int, seq: int, logits: bool) -> int: ...
    def decode(self) -> int: ...
    def forget(self, seq: int, from_pos: int) -> bool: ...
    def argmax(self, at: int) -> int: ...


@dataclass
class Speculation:
    """A request's speculation: its drafter's settings, how much of its drafts is kept, and its counts."""

    ngram: bool = False  # prompt lookup
    model: bool = False  # the runner's draft model
    num_draft: int = 0  # the most tokens drafted in one step (0: none)
    acceptance: Acceptance = field(default_factory=Acceptance)  # the draft model's, and short lookups'
    long: Acceptance = field(default_factory=Acceptance.after_long_matches)  # lookups matching LONG_MATCH+
    staged_from: Acceptance | None = None  # the estimate whose draft is staged (its outcome goes there)
    drafted: int = 0  # tokens drafted, over the request
    accepted: int = 0  # drafted tokens kept
    lookup: NgramDraft | None = None
    draft: list[int] = field(default_factory=list)  # this step's drafted tokens, staged after the next token

    @property
    def on(self) -> bool:
        return self.num_draft > 0 and (self.ngram or self.model)


def draft_room(spec: Speculation, *, generated: int, num_predict: int, n_past: int, n_ctx: int, share: int) -> int:
    """How many tokens `spec`'s request may draft this step: after its next token (at position `n_past`), every
    drafted token must fit the context window (`n_ctx`) and be one that `num_predict` (negative: no bound)
    still lets it have after the `generated` ones; and at most `share`, its part of the batch's room."""
    n = min(spec.num_draft, share, n_ctx - n_past - 2)
    if num_predict >= 0:
        n = min(n, num_predict - generated - 1)
    return max(0, n)


class PairIndex:
    """Where each pair of consecutive tokens of a growing token list occurs (the position after it), and the
    longest backward match of a history's last tokens among a pair's latest occurrences."""

    def __init__(self) -> None:
        self.ends: dict[tuple[int, int], list[int]] = {}
        self.indexed = 0  # pairs ending before this position are indexed

    def extend(self, tokens: list[int], upto: int) -> None:
        """Index the pairs of `tokens` that end before position `upto`."""
        for i in range(max(1, self.indexed), upto):
            self.ends.setdefault((tokens[i - 1], tokens[i]), []).append(i + 1)
        self.indexed = max(self.indexed, upto)

    def match(self, tokens: list[int], history: list[int]) -> tuple[int, int]:
        """The position in `tokens` after the occurrence of `history`'s last pair whose backward match with
        `history` is longest (up to MATCH_MOST; the latest of equals), and that match's length; (0, 0) if none."""
        ends = self.ends.get((history[-2], history[-1]))
        best, best_len = 0, 0
        for at in reversed(ends[-LOOKUP_CANDIDATES:] if ends else ()):  # latest first: a tie keeps the latest
            n = 2
            while n < MATCH_MOST and n < at and n < len(history) and tokens[at - 1 - n] == history[-1 - n]:
                n += 1
            if n > best_len:
                best, best_len = at, n
                if n == MATCH_MOST:
                    break
        return best, best_len


class LookupMemory:
    """The runner's recent histories (prompt and answer) of requests that looked up, for the lookups of those
    that follow: an agent or a client asking again often gets much the same answer, and llama.cpp's ngram-mod
    keeps its table across requests likewise. A history is added when its request ends; the oldest go past
    MEMORY_TOKENS. Separators (a negative id, never drafted) keep a match from running across two histories."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.index = PairIndex()

    def add(self, history: list[int]) -> None:
        if len(history) > MEMORY_TOKENS:
            history = history[-MEMORY_TOKENS:]
        if len(self.tokens) + len(history) + 1 > MEMORY_TOKENS:
            self.tokens, self.index = [], PairIndex()  # start over: the newest are what repeats
        self.tokens.extend((*history, -1))
        self.index.extend(self.tokens, len(self.tokens))


class NgramDraft:
    """Prompt lookup: the tokens that followed the earlier occurrence of the history's last tokens that matches
    the longest (up to MATCH_MOST tokens; the latest of equals; at least the last two), continued periodically
    past the history's end; where the runner's `memory` of earlier requests holds a longer match, what followed
    there. A long match finds the place being copied where the last few tokens alone (`    def `, a closing
    bracket) occur all over a file."""

    def __init__(self, memory: LookupMemory | None = None) -> None:
        self.index = PairIndex()
        self.memory = memory
        self.matched = 0  # how many tokens the last lookup's match had

    def draft(self, history: list[int], k: int) -> list[int]:
        self.matched = 0
        if k <= 0 or len(history) < 2:
            return []
        self.index.extend(history, len(history) - 1)  # the pair ending at the last token is the key
        at, n = self.index.match(history, history)
        found: list[int] = []
        if n:
            # what followed, and past the history's end the same again: a match ending `period` tokens back says
            # the text repeats with that period (a loop), as llama.cpp's ngram-mod extends a draft
            period = len(history) - at
            found = [history[at + i % period] for i in range(k)]
        if n < MATCH_MOST and self.memory is not None:
            m_at, m = self.memory.index.match(self.memory.tokens, history)
            if m > n:
                n, found = m, self.memory.tokens[m_at : m_at + k]
        self.matched = n
        # a media chunk's positions hold pseudo ids, a memory's separators -1 (negative): never tokens to draft
        return found[: next((i for i, t in enumerate(found) if t < 0), len(found))]


class DraftModel:
    """A draft model beside the target, with a sequence per slot: each holds what the target's slot holds (caught
    up before a draft), and drafts greedily, the slots that draft together in one batch per token."""

    def __init__(self, engine: DraftEngine) -> None:
        self.engine = engine
        self.held: list[list[int]] = [[] for _ in range(engine.n_parallel)]  # tokens in each sequence's cache
        self.seconds_per_token = 0.0  # what a drafted token took to make (a running average; draftpolicy.py)

    def draft(self, wanted: list[tuple[int, list[int], int]]) -> list[list[int]]:
        """Drafts for `wanted` (slot, history to continue, how many tokens), in order; an empty one where the
        draft model failed."""
        out: list[list[int]] = [[] for _ in wanted]
        if not wanted:
            return out
        started = time.perf_counter()
        out = self._draft(wanted, out)
        made = max(len(draft) for draft in out)
        if made:
            took = (time.perf_counter() - started) / made
            old = self.seconds_per_token
            self.seconds_per_token = old + COST_WEIGHT * (took - old) if old else took
        return out

    def _draft(self, wanted: list[tuple[int, list[int], int]], out: list[list[int]]) -> list[list[int]]:
        engine = self.engine
        todo = [self._catch_up(seq, history) for seq, history, _ in wanted]  # what each sequence still lacks
        at: dict[int, int] = {}
        while any(todo):  # the histories' new tokens, a batch at a time; the last of each gives the first draft
            engine.clear_batch()
            room = engine.n_batch
            for i, (seq, _, _) in enumerate(wanted):
                chunk = todo[i][:room]
                if not chunk:
                    continue
                pos = len(self.held[seq])
                for j, token in enumerate(chunk):
                    last = j == len(chunk) - 1 and len(chunk) == len(todo[i])
                    index = engine.add(token, pos + j, seq, last)
                if len(chunk) == len(todo[i]):
                    at[i] = index
                self.held[seq].extend(chunk)
                del todo[i][: len(chunk)]
                room -= len(chunk)
            if engine.decode() != 0:
                return self._failed(wanted, out)
        for i in at:
            out[i].append(engine.argmax(at[i]))
        steps = max(k for _, _, k in wanted)
        for _ in range(1, steps):
            going = [i for i in at if len(out[i]) < wanted[i][2]]
            if not going:
                break
            engine.clear_batch()
            for i in going:
                seq = wanted[i][0]
                at[i] = engine.add(out[i][-1], len(self.held[seq]), seq, True)
                self.held[seq].append(out[i][-1])
            if engine.decode() != 0:
                return self._failed(wanted, out)
            for i in going:
                out[i].append(engine.argmax(at[i]))
        return out

    def _catch_up(self, seq: int, history: list[int]) -> list[int]:
        """Cut sequence `seq` to what it shares with `history` (one token short of it, so a token's logits come
        out); the tokens of `history` it lacks."""
        held = self.held[seq]
        n = min(len(held), len(history) - 1)
        keep = n if held[:n] == history[:n] else 0  # the common case (a slice compared in C): one step later
        while keep < n and held[keep] == history[keep]:
            keep += 1
        if keep < len(held):
            if not self.engine.forget(seq, keep):
                keep = 0
            del held[keep:]
        return history[keep:]

    def _failed(self, wanted: list[tuple[int, list[int], int]], out: list[list[int]]) -> list[list[int]]:
        for seq, _, _ in wanted:
            self.engine.forget(seq, 0)
            self.held[seq].clear()
        return [[] for _ in out]


def same_vocabulary(target: Any, draft: Any, sample: int = 0) -> str | None:
    """Why `draft` cannot draft for `target` (None when it can): the same number of tokens, the same special
    tokens (BOS added or not, the ends of generation) and the same piece for every token (or every `sample`-th)."""
    if target.n_vocab != draft.n_vocab:
        return f"its vocabulary has {draft.n_vocab} tokens, the model's {target.n_vocab}"
    if target.add_bos != draft.add_bos or target.eog_tokens != draft.eog_tokens:
        return "its special tokens (BOS, end of generation) differ from the model's"
    step = max(1, sample)
    for token in range(0, target.n_vocab, step):
        ours, theirs = target.piece(token, special=True), draft.piece(token, special=True)
        if ours != theirs:
            return f"its token {token} is {theirs!r}, the model's {ours!r}"
    return None
