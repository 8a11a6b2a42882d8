"""Checkpoints: the prompt cache of models whose sequence state cannot be cut back to a shorter prefix.

A llama-shaped model's KV cache holds one entry per token, so a slot or a saved state is cut back to the prefix
a new prompt shares (`Engine.forget`) and the rest is evaluated. Three kinds of model cannot be cut so:

- sliding-window attention (Gemma 2/3, gpt-oss, Cohere2, ...): a window layer keeps only the last `n_swa`
  positions; cut back further than its window, it lacks what the next tokens attend to (and a restored state
  holds the window only, so it cannot be cut back at all);
- recurrent models (Mamba, RWKV): one state per sequence, the sum of every token so far;
- hybrids (LFM2, Granite 4, Jamba, ...): attention layers and recurrent ones.

For them the prompt cache keeps checkpoints, as llama.cpp's server does (`--ctx-checkpoints`): whole states
of a sequence at the points a later prompt may come back to, each restored as it is, never cut. The decode loop
(batch.py) takes one at the end of each prompt (with the output after it, so the same prompt again evaluates
nothing; at the next step, once the first token went out), 4 + n_batch and 4 tokens before that end (its
batches end there: `stops`, as llama-server's), at the chunk boundaries of a long prompt
(`PROMPT_CHECKPOINT_SPACING` apart), and when a slot is about to lose what it holds (the end of an answer: the
next turn of that chat begins with it). They live in the prompt cache's RAM and disk tiers (kvstates.py,
`exact`), under the same bounds and layout keys.

A new prompt then takes, of the slot the scheduler picked and the checkpoints, whichever gives more without
a cut (`choose`): the slot when it holds a prefix of the prompt and nothing else; the slot cut back when the
engine can cut it (a sliding window still holding what the next tokens attend to); else the checkpoint that
restores the most (`best`), evaluating from there.

No llama.cpp here: unit tests drive the choice over plain numbers and the fake engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Protocol, TypeVar

from ..domain.limits import PROMPT_CHECKPOINT_SPACING, PROMPT_CHECKPOINT_TAIL

Plan = Literal["slot", "cut", "restore", "none"]


class Checkpoint(Protocol):  # kvstates.KVState
    @property
    def n_tokens(self) -> int: ...
    @property
    def size(self) -> int: ...
    def has_output_after(self, n: int) -> bool: ...


C = TypeVar("C", bound=Checkpoint)


def best(states: Iterable[C], n_prompt: int) -> C | None:
    """Of `states`, whose tokens all begin a prompt of `n_prompt` tokens, the one restoring the most of it: it
    must leave a token to evaluate (whose logits give the answer's first token) unless it kept the output after
    the whole prompt. The smaller state wins a tie (it is cheaper to copy)."""
    found: C | None = None
    for state in states:
        n = state.n_tokens
        if n > n_prompt or (n == n_prompt and not state.has_output_after(n)):
            continue
        if found is None or n > found.n_tokens or (n == found.n_tokens and state.size < found.size):
            found = state
    return found


def choose(held: int, keep: int, checkpoint: int, margin: int) -> Plan:
    """How a slot holding `held` tokens, of which `keep` begin the new prompt, takes it when a checkpoint would
    restore `checkpoint` of its tokens (0: none), restoring only for `margin` tokens more than the slot gives:

    - "slot": the slot as it is (it holds nothing beyond the `keep` tokens), unless a checkpoint gives more;
    - "cut": cut the slot back to `keep` (it holds more), unless a checkpoint gives more; should the
      engine refuse the cut, the checkpoint is restored instead (if any);
    - "restore": restore the checkpoint;
    - "none": evaluate the whole prompt.
    """
    if keep > 0 and keep + margin > checkpoint:
        return "slot" if keep >= held else "cut"
    if checkpoint > 0:
        return "restore"
    return "slot" if held == 0 else "none"


def stops(n_prompt: int, n_batch: int) -> tuple[int, int]:
    """Where a prompt of `n_prompt` tokens ends a chunk for a checkpoint before its end, as llama-server does
    (4 + n_ubatch and 4 tokens before it): a prompt that differs from it only in its last tokens (a chat template
    that renders the previous answer's opening otherwise, an edited last message) is restored from there."""
    return n_prompt - PROMPT_CHECKPOINT_TAIL - n_batch, n_prompt - PROMPT_CHECKPOINT_TAIL


def chunk(n_done: int, n_prompt: int, room: int, n_batch: int) -> int:
    """How many more tokens of a prompt of `n_prompt` tokens, `n_done` of them evaluated, go in a batch with
    `room` left: as many as fit, up to the next of its `stops`."""
    ahead = [stop - n_done for stop in stops(n_prompt, n_batch) if stop > n_done]
    return min(room, *ahead) if ahead else room


def due(n_done: int, last: int, n_prompt: int, n_batch: int) -> bool:
    """Whether a prompt of `n_prompt` tokens, `n_done` of them evaluated (a chunk boundary, before the end),
    takes a checkpoint there, its last one having been at `last` tokens: at its `stops`, and at chunk boundaries
    `PROMPT_CHECKPOINT_SPACING` apart."""
    if not 0 < n_done < n_prompt:
        return False
    return n_done in stops(n_prompt, n_batch) or n_done - last >= PROMPT_CHECKPOINT_SPACING
