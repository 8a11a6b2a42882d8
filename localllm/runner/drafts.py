"""The decode loop's speculation steps (speculate.py says where drafts come from and how many): `stage`
drafts the generating requests' next tokens before a step's batch is built, and `verify` takes a request's
tokens from the step's outputs at its drafted positions, keeping drafted tokens while its sampler picks them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .draftpolicy import PROBE_EVERY, StepCosts, choose
from .slots import EngineLike, Slot, Work
from .speculate import LONG_MATCH, DraftModel, draft_room


def stage(active: list[Work], engine: EngineLike, model: DraftModel | None, costs: StepCosts) -> None:
    """The drafts of the generating requests that speculate, staged after their next token: at most their
    share of the batch's room (the requests still evaluating a prompt get theirs), what `speculate.draft_room`
    allows, and as many as pay for themselves (`draftpolicy.choose`, over the step `costs` measured so far).
    `model`: the draft model, if the runner has one."""
    drafting = [w for w in active if w.spec.on and not w.pending and w.next_token >= 0]
    if not drafting:
        return
    generating = sum(1 for w in active if not w.pending)
    share = (engine.n_batch - generating) // len(active)
    # the step's tokens besides drafts: each generating request's next one, and prompt chunks up to the room
    in_batch = min(engine.n_batch, generating + sum(len(w.pending) for w in active))
    wanted: list[tuple[Work, list[int], int]] = []
    for work in drafting:
        spec, seen = work.spec, work.spec.acceptance
        history = work.prompt + work.generated  # the last is the next token, staged already
        seen.score_shadow(history)
        spec.long.score_shadow(history)
        n = draft_room(
            spec,
            generated=len(work.generated),
            num_predict=work.num_predict,
            n_past=work.n_past,
            n_ctx=engine.n_ctx_seq,
            share=share,
        )
        seen.idle += 1
        if n <= 0:
            continue
        if spec.lookup is not None:
            found = spec.lookup.draft(history, n)
            est = spec.long if spec.lookup.matched >= LONG_MATCH else seen
            k = choose(costs, est.rate, in_batch, len(found))
            if k > 0:
                spec.draft, spec.staged_from, est.shadow, seen.idle = found[:k], est, [], 0
                in_batch += k
            elif found and not est.shadow:  # scored later against what the request generates
                est.shadow, est.shadow_at = found, len(history)
        if not spec.draft and spec.model:
            making = model.seconds_per_token if model is not None else 0.0
            k = choose(costs, seen.rate, in_batch, n, making) or (1 if seen.idle >= PROBE_EVERY else 0)
            if k > 0:
                wanted.append((work, history, k))
                spec.staged_from, seen.idle = seen, 0
                in_batch += k
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
    (work.spec.staged_from or work.spec.acceptance).outcome(kept, kept < len(drafted))
    if kept < len(drafted) and not engine.forget(slot.seq, len(slot.tokens)):
        slot.cut(0)  # the cache could not drop the tail alone (a sliding window): evaluated again
        if slot.work is work:
            work.pending = work.prompt + work.generated[:-1]
            work.n_past = 0
