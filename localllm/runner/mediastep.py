"""The decode loop's media step: one media chunk (mediaprompt.py) evaluated through the projector
(multimodal.py) per step, the requests whose prompts go on with a chunk taking turns."""

from __future__ import annotations

from .mediaprompt import Projector, span_at
from .slots import Slot, Work


class MediaTurns:
    """Whose media chunk a step evaluates: counts the chunks evaluated, and marks each request with its turn."""

    def __init__(self, projector: Projector) -> None:
        self.projector = projector
        self.turns = 0  # media chunks evaluated

    def evaluate(self, active: list[Work], slots: list[Slot]) -> tuple[Work, str] | None:
        """Evaluate one media chunk: a step holds at most one chunk's evaluation (the encoder and the decode of
        its embeddings), so the other requests wait no longer than that, and their text still goes in this
        step's batch. The request whose last chunk was longest ago (then the oldest) goes first. None when
        done; else the request that failed, and why (the caller fails it)."""
        work = min((w for w in active if w.pending and w.pending[0] < 0), key=lambda w: (w.media_turn, w.t_start))
        self.turns += 1
        work.media_turn = self.turns
        span = span_at(work.spans, work.n_past)
        if span is None:  # not expected: a cut is never inside a chunk
            return work, "a media chunk was cut"
        code = self.projector.evaluate(span, work.n_past, work.slot)
        if code != 0:
            return work, f"{span.source}: llama.cpp failed to evaluate it (code {code})"
        slots[work.slot].tokens.extend(work.pending[: span.n])
        work.n_past += span.n
        del work.pending[: span.n]  # (text follows: a prompt never ends with a media chunk)
        return None
