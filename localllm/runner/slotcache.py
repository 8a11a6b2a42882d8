"""Which slot a waiting request goes to, and how much of its prompt that slot's cache already holds.

A slot keeps the tokens whose KV it holds, so a new request goes to the free slot sharing the longest prefix
with it and evaluates only what follows (multi-turn chats re-send their history). Beyond the slots, saved
states (kvstates.py): before a slot is reused, what it held is saved when worth it, and a prompt that a saved
state begins better than any free slot gets that state restored into its slot. For a model whose state cannot
be cut back, the slot is kept whole, or a checkpoint restored (checkpoints.py); the decode loop (batch.py)
asks for checkpoints (`SlotCache.checkpoint`) at the end of each prompt and at a long prompt's chunk boundaries.
"""

from __future__ import annotations

import collections
import time

from . import checkpoints
from .kvstates import BLOCK, KVStates, Source
from .mediaprompt import snap
from .slots import EngineLike, Slot, Work, common_prefix, output_for


class SlotCache:
    """The slots' prompt cache, with the saved states beyond them (`states`, None: only the slots')."""

    def __init__(self, engine: EngineLike, slots: list[Slot], states: KVStates | None) -> None:
        self.engine = engine
        self.slots = slots  # the decode loop's own list
        self.states = states
        self.report_due = False  # the prompt cache's figures changed: a `CacheReport` goes out after the step

    def assign(self, waiting: collections.deque[Work]) -> None:
        """Give the waiting requests free slots, in order, while there are some."""
        while waiting:
            free = [s for s in self.slots if s.work is None]
            if not free:
                return
            work = waiting.popleft()
            # The slot whose cache holds the longest prefix of this prompt, if reusing it keeps at least half of
            # what it holds; else the least recently used slot (an empty one first). So a prompt that shares
            # only a BOS with a conversation's slot leaves that conversation's cache alone.
            # (never inside a media chunk: `snap` moves a cut to its start)
            reuse = {
                s.seq: snap(work.spans, min(common_prefix(s.tokens, work.prompt), len(work.prompt) - 1)) for s in free
            }
            good = [s for s in free if reuse[s.seq] > 0 and 2 * reuse[s.seq] >= len(s.tokens)]
            if good:
                slot = max(good, key=lambda s: (reuse[s.seq], -s.last_used))
            else:
                slot = min(free, key=lambda s: s.last_used)
            work.t_start = time.perf_counter()
            keep, source = self._reuse(slot, work, reuse[slot.seq])
            output = output_for(slot, work.prompt)
            if output is not None:  # nothing to evaluate, not even the prompt's last token again
                keep = len(work.prompt)
            if keep < len(slot.tokens) and not self.engine.forget(slot.seq, keep):
                keep, source, output = 0, "none", None
            slot.cut(keep)
            work.slot, work.n_past, work.cached, work.checkpointed = slot.seq, keep, keep, keep
            work.pending = work.prompt[keep:]
            work.first = output.logits if output is not None else None
            slot.work = work
            if self.states is not None:
                self.states.note(source, keep, len(work.prompt))
                self.report_due = True

    def _reuse(self, slot: Slot, work: Work, keep: int) -> tuple[int, Source]:
        """How much of `work.prompt` `slot` holds once it takes it, and from where: the `keep` tokens it holds
        already, or more from a saved state restored into it (kvstates.py). What the slot loses is saved
        first, when that is worth it."""
        states, prompt = self.states, work.prompt
        if states is None:
            return keep, "slot"
        if states.exact:
            return self._reuse_checkpoint(slot, prompt, keep)
        state, n = states.find(prompt)
        n = snap(work.spans, min(n, len(prompt) - 1))
        if state is None or n < keep + BLOCK:  # restore only for a block or more beyond what the slot holds
            self.save(slot, keep)
            return keep, "slot" if keep else "none"
        self.save(slot, 0)
        slot.cut(0)
        source, output = states.restore(self.engine, slot.seq, state)
        if source == "none":
            return 0, source
        slot.tokens.extend(state.tokens)
        slot.output = output
        return n, source

    def _reuse_checkpoint(self, slot: Slot, prompt: list[int], keep: int) -> tuple[int, Source]:
        """`_reuse` for a model whose state cannot be cut back: the slot as it is, or cut if the engine can, or
        the checkpoint restoring the most (checkpoints.choose); the slot then holds exactly what is kept."""
        assert self.states is not None
        if output_for(slot, prompt) is not None:
            keep = len(prompt)
        state, n = self.states.find(prompt)
        plan = checkpoints.choose(len(slot.tokens), keep, n, BLOCK)
        if plan == "slot":
            return keep, "slot" if keep else "none"
        self.save(slot, keep if plan == "cut" else 0)
        if plan == "cut" and self.engine.forget(slot.seq, keep):
            slot.cut(keep)
            return keep, "slot"
        self.engine.forget(slot.seq, 0)
        slot.cut(0)
        if state is None:
            return 0, "none"
        source, output = self.states.restore(self.engine, slot.seq, state)
        if source == "none":
            return 0, source
        slot.tokens.extend(state.tokens)
        slot.output = output
        return n, source

    def checkpoint(self, slot: Slot) -> None:
        """Keep what `slot` holds now as a checkpoint (a model whose state cannot be cut back: checkpoints.py)."""
        states = self.states
        if states is None or not states.exact or not states.wants(slot.tokens, slot.output):
            return
        data = self.engine.save_state(slot.seq)
        if data is not None and states.save(slot.tokens, data, slot.output) is not None:
            self.report_due = True

    def save(self, slot: Slot, keep: int) -> None:
        """Save what `slot` holds before it is cut to `keep` tokens, if a block or more would be lost."""
        states = self.states
        if states is None or len(slot.tokens) - keep < BLOCK or not states.wants(slot.tokens, slot.output):
            return
        data = self.engine.save_state(slot.seq)
        if data is not None:
            states.save(slot.tokens, data, slot.output)
