"""Saved KV states of the runner's sequences: the prompt cache beyond the slots, in RAM and on disk.

A slot's sequence holds the KV cache of the tokens it last evaluated; a new prompt that begins with them
evaluates only the rest (slotcache.py). With more users than slots, that cache is overwritten. So before a slot
is reused, the decode loop saves what its sequence holds (llama.cpp's state of one sequence, and the tokens it
was computed from) here, and a new prompt takes whichever shares the longest prefix with it: a slot, or a saved
state, which is copied back into a slot (`engine.load_state`) and trimmed to the common prefix.

States are found through a `PrefixIndex`: the prompt's tokens in blocks of `BLOCK`, each block's hash chained
on the previous one's, so one dictionary entry names a whole prefix. A lookup binary-searches the deepest block
some state shares with the prompt, then compares at most one block of tokens with each of those states; never
every state token by token. The RAM tier is bounded in bytes (`LOCALLLM_CACHE_RAM`) and in count, least
recently used first out. With a disk tier (`kvfiles.KVFiles`, `LOCALLLM_CACHE_DIR`), every saved state is
also written to a file (by a background thread) and stays findable once RAM lets it go, and across restarts.

Saving is kept off the common path: a sequence shorter than `PROMPT_CACHE_MIN_TOKENS` is not saved, nor one a
saved state already covers (its tokens are a prefix of that state's); a state that is a prefix of the new one
is dropped, as the new one serves every prompt it served.

A model whose state cannot be cut back (sliding-window, hybrid, recurrent: `exact`) keeps checkpoints instead
(checkpoints.py): each state is restored whole, at exactly the tokens it holds, so a prompt takes the longest
state whose tokens begin it, a longer state serves no shorter prompt, and none is dropped for covering another.

No llama.cpp here: the engine's save and load go through `StateEngine`, so unit tests drive this with bytes.
"""

from __future__ import annotations

import collections
import logging
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..domain.limits import PROMPT_CACHE_CANDIDATES, PROMPT_CACHE_MAX_STATES, PROMPT_CACHE_MIN_TOKENS
from ..domain.modelinfo import PromptCacheStats
from . import checkpoints
from .kvfiles import KVFiles, StoredState

log = logging.getLogger("localllm.runner")

BLOCK = 32  # tokens per hashed block of the prefix index
Source = Literal["slot", "ram", "disk", "none"]


class StateEngine(Protocol):
    def save_state(self, seq: int) -> bytearray | None: ...
    def load_state(self, seq: int, data: bytearray) -> bool: ...


def chain(tokens: Sequence[int]) -> list[int]:
    """The chained hash of each whole block of `tokens`: the k-th names tokens[: (k + 1) * BLOCK]."""
    out: list[int] = []
    h = 0
    for end in range(BLOCK, len(tokens) + 1, BLOCK):
        h = hash((h, *tokens[end - BLOCK : end]))
        out.append(h)
    return out


def _agree(a: array[int], b: array[int], start: int, stop: int) -> int:
    """The first position in [start, stop) where `a` and `b` differ (or where either ends, or `stop`)."""
    stop = min(stop, len(a), len(b))
    if a[start:stop] == b[start:stop]:
        return stop
    for i in range(start, stop):
        if a[i] != b[i]:
            return i
    return stop


@dataclass(frozen=True)
class PromptOutput:
    """The model's output after the first `n` tokens of a sequence: the logits of the token that follows, as the
    engine kept them. A prompt of exactly those `n` tokens takes its first token from them and evaluates
    nothing, where a prompt cache without them evaluates its last token again (batch.py)."""

    n: int
    logits: Any
    size: int  # bytes


@dataclass(eq=False)
class KVState:
    """One saved sequence: its tokens, its state's bytes in RAM (`data`) and/or its file (`file`), and the output
    after a prefix of its tokens when the decode loop had one (with `data` in RAM; in the file too, when the
    file was written with it)."""

    tokens: array[int]
    hashes: list[int]
    size: int  # bytes of the state
    data: bytearray | None = None
    file: str | None = None  # its file's name in the disk tier, once written
    file_size: int = 0
    last_used: float = 0.0
    output: PromptOutput | None = None
    file_output_n: int = 0  # the tokens the output in its file follows (0: none)

    def has_output_after(self, n: int) -> bool:
        """Whether it has the output after exactly its first `n` tokens: in RAM, or in its file when it is not."""
        if self.output is not None:
            return self.output.n == n
        return self.data is None and self.file_output_n == n > 0

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def ram_size(self) -> int:
        """What it takes in RAM while there: its state and its output."""
        return self.size + (self.output.size if self.output is not None else 0)


class PrefixIndex:
    """States by the blocks they begin with (see the module's doc)."""

    def __init__(self) -> None:
        self._through: dict[int, set[KVState]] = {}  # a prefix's chained hash -> the states beginning with it
        self._ending: dict[int, set[KVState]] = {}  # -> the states whose last whole block it is

    def add(self, state: KVState) -> None:
        for h in state.hashes:
            self._through.setdefault(h, set()).add(state)
        self._ending.setdefault(state.hashes[-1], set()).add(state)

    def remove(self, state: KVState) -> None:
        for table, keys in ((self._through, state.hashes), (self._ending, state.hashes[-1:])):
            for h in keys:
                states = table.get(h)
                if states is not None:
                    states.discard(state)
                    if not states:
                        del table[h]

    def longest(self, tokens: array[int], hashes: list[int]) -> tuple[KVState | None, int]:
        """The state sharing the longest prefix with `tokens` (whose chained hashes are `hashes`), and how
        many tokens they share; (None, 0) when none shares a whole block."""
        # A state holding the first k blocks holds the first k - 1: the blocks shared are a prefix of the
        # chain, so a binary search finds the deepest.
        low, high = 0, len(hashes)
        while low < high:
            mid = (low + high + 1) // 2
            if hashes[mid - 1] in self._through:
                low = mid
            else:
                high = mid - 1
        if low == 0:
            return None, 0
        base = low * BLOCK
        best: KVState | None = None
        best_n = -1
        for i, state in enumerate(self._through[hashes[low - 1]]):
            if i == PROMPT_CACHE_CANDIDATES:
                break
            n = _agree(state.tokens, tokens, base, base + BLOCK)
            if n > best_n or (n == best_n and best is not None and state.size < best.size):
                best, best_n = state, n
        # a hash names its blocks but could collide: what is restored is checked token for token (in C)
        if best is None or best.tokens[:base] != tokens[:base]:
            return None, 0
        return best, best_n

    def prefixes_of(self, tokens: array[int], hashes: list[int]) -> list[KVState]:
        """The states whose tokens are a prefix of `tokens`."""
        out = []
        for h in hashes:
            for state in self._ending.get(h, ()):
                n = state.n_tokens
                if n <= len(tokens) and state.tokens == tokens[:n]:
                    out.append(state)
        return out


@dataclass
class _Counts:
    requests: int = 0  # prompts of at least one block, looked up
    hits: dict[str, int] = field(default_factory=lambda: {"slot": 0, "ram": 0, "disk": 0})
    cached_tokens: int = 0
    prompt_tokens: int = 0
    checkpoints: int = 0


class KVStates:
    """The saved states of one runner: RAM (LRU, `ram_limit` bytes) and, with `files`, disk."""

    def __init__(
        self,
        ram_limit: int,
        files: KVFiles | None = None,
        *,
        max_states: int = PROMPT_CACHE_MAX_STATES,
        min_tokens: int = PROMPT_CACHE_MIN_TOKENS,
        clock: Callable[[], float] = time.time,
        exact: bool = False,
    ) -> None:
        self.ram_limit = max(0, ram_limit)
        self.exact = exact  # checkpoints: restored whole, never cut (see the module's doc)
        self.files = files
        self.max_states = max_states
        self.min_tokens = max(BLOCK, min_tokens)
        self.clock = clock
        self.index = PrefixIndex()
        self._ram: collections.OrderedDict[KVState, None] = collections.OrderedDict()  # oldest use first
        self._disk: collections.OrderedDict[KVState, None] = collections.OrderedDict()
        self.ram_bytes = 0
        self.disk_bytes = 0
        self.counts = _Counts()
        if files is not None:
            found = files.scan()  # oldest use first
            for stored in found:
                self._adopt(stored)
            self._bound()
            kept = {state.file for state in self._disk}
            files.prefetch([stored for stored in found if stored.name in kept], self.ram_limit)

    @property
    def enabled(self) -> bool:
        return self.ram_limit > 0 or self.files is not None

    def _adopt(self, stored: StoredState) -> None:
        tokens = array("i", stored.tokens)
        hashes = chain(tokens)
        if not hashes:
            return
        state = KVState(tokens, hashes, stored.size, file=stored.name, file_size=stored.file_size)
        state.file_output_n = stored.output_n
        state.last_used = stored.last_used
        self.index.add(state)
        self._disk[state] = None
        self.disk_bytes += state.file_size

    # -- lookups -------------------------------------------------------------------------------------

    def find(self, tokens: Sequence[int]) -> tuple[KVState | None, int]:
        """The saved state sharing the longest prefix with `tokens`, and the length of that prefix. With `exact`
        states, the checkpoint that restores the most of `tokens` (checkpoints.best)."""
        if not self.enabled or len(tokens) < BLOCK:
            return None, 0
        prompt = array("i", tokens)
        if self.exact:
            found = checkpoints.best(self.index.prefixes_of(prompt, chain(prompt)), len(prompt))
            return (found, found.n_tokens) if found is not None else (None, 0)
        return self.index.longest(prompt, chain(prompt))

    def _same(self, prompt: array[int], hashes: list[int]) -> KVState | None:
        """The saved state holding exactly `prompt`, or (not `exact`) one whose tokens begin with it."""
        if self.exact:
            return next((s for s in self.index.prefixes_of(prompt, hashes) if s.n_tokens == len(prompt)), None)
        have, n = self.index.longest(prompt, hashes)
        return have if have is not None and n == len(prompt) else None

    def note(self, source: Source, cached: int, n_prompt: int) -> None:
        """Count a prompt of `n_prompt` tokens that reused `cached` of them from `source`."""
        if n_prompt < BLOCK:
            return
        hit = source != "none" and cached >= BLOCK
        log.info("prompt cache: %s, %d of %d prompt tokens kept", f"{source} hit" if hit else "miss", cached, n_prompt)
        c = self.counts
        c.requests += 1
        c.prompt_tokens += n_prompt
        c.cached_tokens += cached
        if hit:
            c.hits[source] += 1

    def stats(self) -> PromptCacheStats:
        c = self.counts
        return PromptCacheStats(
            ram_bytes=self.ram_bytes,
            ram_states=len(self._ram),
            ram_limit=self.ram_limit,
            disk_bytes=self.disk_bytes,
            disk_states=len(self._disk),
            disk_limit=self.files.limit if self.files is not None else 0,
            requests=c.requests,
            slot_hits=c.hits["slot"],
            ram_hits=c.hits["ram"],
            disk_hits=c.hits["disk"],
            cached_tokens=c.cached_tokens,
            prompt_tokens=c.prompt_tokens,
            checkpoints=c.checkpoints,
        )

    # -- saving --------------------------------------------------------------------------------------

    def wants(self, tokens: Sequence[int], output: PromptOutput | None = None) -> bool:
        """Whether a sequence holding `tokens` is worth saving: long enough, and not covered by a saved state
        (which then counts as used now, and keeps `output` if it had none). Asked before the engine copies the
        state out."""
        if not self.enabled or len(tokens) < self.min_tokens:
            return False
        prompt = array("i", tokens)
        have = self._same(prompt, chain(prompt))
        if have is not None:
            self._covered(have, output)
            return False
        return True

    def save(self, tokens: Sequence[int], data: bytearray, output: PromptOutput | None = None) -> KVState | None:
        """Keep the state `data` of a sequence holding `tokens`, with the `output` after a prefix of them if
        given (unless a saved state covers it already, or it is bigger than the whole RAM bound); the states it
        covers go."""
        prompt = array("i", tokens)
        hashes = chain(prompt)
        if not hashes or not self.enabled:
            return None
        have = self._same(prompt, hashes)
        if have is not None:
            self._covered(have, output)
            return None
        in_ram = len(data) <= self.ram_limit
        written = None
        if self.files is not None:
            kept = (output.n, memoryview(output.logits).tobytes()) if output is not None else None
            written = self.files.write(prompt, data, kept)
        if not in_ram and written is None:
            return None
        for old in () if self.exact else self.index.prefixes_of(prompt, hashes):
            self._drop(old)
        state = KVState(prompt, hashes, len(data), last_used=self.clock())
        self.index.add(state)
        if in_ram:
            state.data = data
            state.output = output
            self._ram[state] = None
            self.ram_bytes += state.ram_size
        if written is not None:
            state.file, state.file_size = written
            state.file_output_n = output.n if output is not None else 0
            self._disk[state] = None
            self.disk_bytes += state.file_size
        self._bound()
        self.counts.checkpoints += self.exact
        kind = "a checkpoint" if self.exact else "a state"
        log.info("prompt cache: saved %s of %d tokens (%d bytes)", kind, len(prompt), len(data))
        return state

    def _covered(self, have: KVState, output: PromptOutput | None) -> None:
        """A sequence `have` covers was offered: `have` is used now, and takes its output if it has none (the
        sequence's tokens begin `have`'s, so an output after a prefix of them is one after a prefix of `have`)."""
        if output is not None and have.output is None and have in self._ram:
            have.output = output
            self.ram_bytes += output.size
        self.touch(have)
        self._bound()

    def _bound(self) -> None:
        while self._ram and (self.ram_bytes > self.ram_limit or len(self._ram) > self.max_states):
            self._let_go_ram(next(iter(self._ram)))
        limit = self.files.limit if self.files is not None else 0
        while self._disk and (self.disk_bytes > limit or len(self._disk) > self.max_states):
            self._let_go_disk(next(iter(self._disk)))

    def _let_go_ram(self, state: KVState) -> None:
        """Free the state's bytes in RAM; it stays findable while it has a file."""
        if state in self._ram:
            del self._ram[state]
            self.ram_bytes -= state.ram_size
        state.data = None
        state.output = None
        if state.file is None:
            self.index.remove(state)

    def _let_go_disk(self, state: KVState) -> None:
        """Delete the state's file; it stays findable while it is in RAM."""
        if state in self._disk:
            del self._disk[state]
            self.disk_bytes -= state.file_size
        if self.files is not None and state.file is not None:
            self.files.delete(state.file)
        state.file = None
        if state.data is None:
            self.index.remove(state)

    def _drop(self, state: KVState) -> None:
        """Forget `state` in both tiers."""
        self._let_go_ram(state)
        self._let_go_disk(state)
        self.index.remove(state)

    # -- restoring -----------------------------------------------------------------------------------

    def touch(self, state: KVState) -> None:
        state.last_used = self.clock()
        if state in self._ram:
            self._ram.move_to_end(state)
        if state in self._disk:
            self._disk.move_to_end(state)
            if self.files is not None and state.file is not None:
                self.files.touch(state.file)

    def restore(self, engine: StateEngine, seq: int, state: KVState) -> tuple[Source, PromptOutput | None]:
        """Load `state` into sequence `seq`; where it came from ("ram", "disk"), or "none" when it could not
        be (unreadable, or refused by llama.cpp: it is dropped, and the sequence is left empty); and the output
        kept after a prefix of its tokens, if it has one."""
        source: Source = "ram"
        data = state.data
        output = state.output
        if data is None and self.files is not None and state.file is not None:
            source = "disk"
            read = self.files.read(state.file, state.tokens)
            data = read.data if read is not None and len(read.data) == state.size else None
            if read is not None and read.output:
                output = PromptOutput(read.output_n, read.output, len(read.output))
        if data is None or not engine.load_state(seq, data):
            log.warning("prompt cache: a saved state of %d tokens could not be restored; dropped", state.n_tokens)
            self._drop(state)
            return "none", None
        if source == "disk" and len(data) <= self.ram_limit:  # it is in use again: keep it at hand
            state.data = data
            state.output = output
            self._ram[state] = None
            self.ram_bytes += state.ram_size
        self.touch(state)
        self._bound()
        return source, output

    def close(self) -> None:
        """Finish the disk writes under way."""
        if self.files is not None:
            self.files.close()
