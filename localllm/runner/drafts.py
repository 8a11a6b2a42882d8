"""The decode loop's speculation steps (speculate.py says where drafts come from and how many): `stage`
drafts the generating requests' next tokens before a step's batch is built, and `verify` takes a request's
tokens from the step's outputs at its drafted positions, keeping drafted tokens while its sampler picks them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .slots import EngineLike, Slot, Work
from .speculate import DraftModel, draft_room


def stage(active: list[Work], engine: EngineLike, model: DraftModel | None) -> None:
    """The drafts of the generating requests that speculate, staged after their next token: at most their
    share of the batch's room (the requests still evaluating a prompt get theirs), and what
    `speculate.draft_room` allows. `model`: the draft model, if the runner has one."""
    drafting = [w for w in active if w.spec.on and not w.pending and w.next_token >= 0]
    if not drafting:
        return
    generating = sum(1 for w in active if not w.pending)
    share = (engine.n_batch - generating) // len(active)
    wanted: list[tuple[Work, list[int], int]] = []
    for work in drafting:
        n = draft_room(
            work.spec,
            generated=len(work.generated),
            num_predict=work.num_predict,
            n_past=work.n_past,
            n_ctx=engine.n_ctx_seq,
            share=share,
        )
        if n <= 0:
            continue
        history = work.prompt + work.generated  # the last is the next token, staged already
        if work.spec.lookup is not None:
            work.spec.draft = work.spec.lookup.draft(history, n)
        if not work.spec.draft and work.spec.model:
            wanted.append((work, history, n))
    if wanted and model is not None:
        drafts = model.draft([(w.slot, history, n) for w, history, n in wanted])
        for (work, _, _), draft in zip(wanted, drafts, strict=True):
            work.spec.draft = draft


def verify(
    work: Work,
    slot: Slot,
    engine: EngineLike,
    sample: Callable[[Work], int],
    emit: Callable[[Work, int, Any], None],
    take: Callable[[Work], None],
) -> None:
    """Take the tokens of a request whose draft was staged after its next token: at each drafted position
    the token its sampler picks from the target's output there (`sample`, then `emit`); while that is the
    drafted token the next position's output holds, else it is the step's last token (speculate.py: the
    rejection rule). After a draft kept whole, `take` gives the token after it. The rejected tail's KV is
    removed."""
    drafted, work.spec.draft = work.spec.draft, []
    kept = 0
    for token in drafted:
        picked = sample(work)
        if picked == token:
            kept += 1
            work.spec.accepted += 1
        emit(work, picked, work.out_index)
        if slot.work is not work or picked != token:
            break
        slot.tokens.append(token)  # its KV, from this batch, is the sequence's
        work.n_past += 1
        work.out_index += 1
    else:
        take(work)
    work.spec.verified(len(drafted), kept)
    if kept < len(drafted) and not engine.forget(slot.seq, len(slot.tokens)):
        slot.cut(0)  # the cache could not drop the tail alone (a sliding window): evaluated again
        if slot.work is work:
            work.pending = work.prompt + work.generated[:-1]
            work.n_past = 0
