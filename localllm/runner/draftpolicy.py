"""How many tokens a request drafts in a step: as many as pay for themselves on this machine, for this model.

A drafted token costs its place in the step's batch whether it is kept or not, and what a place costs depends on
the hardware. On a GPU a batch of 17 tokens takes about as long as one, so even a draft that is mostly refused
pays. On a CPU it does not: there a step's time grows almost with its tokens (measured on 2 cores, a 135M model
after 1,500 cached tokens: 1 token 12 ms, 2 tokens 24 ms, 5 tokens 35 ms, 17 tokens 100 ms), so a draft pays only
when nearly all of it is kept. A fixed draft length is right for one machine and a loss on the other, so the length
is chosen each step from two measurements:

- `StepCosts`: what a decode step of n tokens took, measured as the steps happen (from the decode to the last of
  its tokens sampled, since a verified position is sampled too), for the n seen; between them, interpolated; past
  the largest, proportional to n (the cautious guess). Before any step is measured, every n is assumed to cost n
  one-token steps, so nothing is drafted until the machine has shown that more tokens cost less each.
- `Acceptance`: how likely the request's next drafted token is to be kept, from its recent drafts (a geometric
  estimate: kept tokens over kept tokens and refusals, the older outcomes fading). A prompt lookup's draft that
  was not staged is still scored, against the tokens the request then generated (`shadow`), so a request learns
  when its answer starts to copy (or stops) without paying for a single refused draft. A request keeps two: one
  for lookups that matched its last 8 tokens or more (most often copying: it starts at 0.9) and one for the rest.

`choose` takes the length k that gives the step the most tokens per second: (tokens in the batch + expected kept
tokens) / cost(tokens in the batch + k), where k drafted tokens are expected to keep p + p² + ... + p^k (p the
acceptance estimate); k = 0 unless a draft beats no draft by a margin. The tokens already in the step (other
requests, prompt chunks) count as useful work, so a draft that would slow its neighbours' step more than it gains
is not staged.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

COST_WEIGHT = 0.25  # weight of a new measurement in the running average of a batch size's step time
FADE = 0.97  # an acceptance outcome's weight after each later drafted position (about 30 positions' memory)
PRIOR_KEPT, PRIOR_TRIED = 1.0, 2.0  # a new request's acceptance estimate: 1/2, worth two outcomes
LONG_MATCH_PRIOR = 0.9  # the estimate for drafts after a lookup matched its longest (the answer is copying), at first
MARGIN = 1.10  # a draft must promise 10% more tokens per second than none (the estimates are rough)
PROBE_EVERY = 16  # a drafter that cannot be scored unstaged (the draft model) drafts one token this often


class StepCosts:
    """Seconds a decode step took, by its number of tokens (a running average per size)."""

    def __init__(self, flat: bool = False, fixed: dict[int, float] | None = None) -> None:
        """`flat`: every size costs the same (a GPU's shape: any draft pays); `fixed`: these costs, never
        measured (both for tests, over engines whose steps take no time)."""
        self.flat, self.frozen = flat, flat or fixed is not None
        self.sizes: list[int] = sorted(fixed or {})  # measured sizes, ascending
        self.seconds: dict[int, float] = dict(fixed or {})

    def record(self, n_tokens: int, seconds: float) -> None:
        if self.frozen or n_tokens <= 0 or seconds <= 0:
            return
        old = self.seconds.get(n_tokens)
        if old is None:
            bisect.insort(self.sizes, n_tokens)
            self.seconds[n_tokens] = seconds
        else:
            self.seconds[n_tokens] = old + COST_WEIGHT * (seconds - old)

    def knows(self, n_tokens: int) -> bool:
        """Whether a step of `n_tokens` or fewer was measured: only then does a step's cost say what more tokens
        add (a prompt's chunk of 512 alone says nothing of one token's step)."""
        return self.flat or (bool(self.sizes) and self.sizes[0] <= n_tokens)

    def cost(self, n_tokens: int) -> float:
        """The expected seconds of a step of `n_tokens` tokens (in units of one token where nothing is measured)."""
        if self.flat:
            return 1.0
        sizes = self.sizes
        if not sizes:
            return float(n_tokens)
        i = bisect.bisect_left(sizes, n_tokens)
        if i < len(sizes) and sizes[i] == n_tokens:
            return self.seconds[n_tokens]
        if i == 0:  # smaller than any measured: no cheaper than the smallest
            return self.seconds[sizes[0]]
        if i == len(sizes):  # larger than any measured: as many times the largest's cost
            top = sizes[-1]
            return self.seconds[top] * n_tokens / top
        lo, hi = sizes[i - 1], sizes[i]
        c_lo, c_hi = self.seconds[lo], self.seconds[hi]
        return c_lo + (c_hi - c_lo) * (n_tokens - lo) / (hi - lo)


@dataclass
class Acceptance:
    """A request's estimate of how likely its next drafted token is to be kept, and its unstaged lookup draft."""

    kept: float = PRIOR_KEPT
    tried: float = PRIOR_TRIED
    shadow: list[int] = field(default_factory=list)  # a lookup draft not staged, scored against what came next
    shadow_at: int = 0  # the history's length when it was drafted: shadow[i] predicts history[shadow_at + i]
    idle: int = 0  # steps since this request last drafted (for PROBE_EVERY)

    @classmethod
    def after_long_matches(cls) -> Acceptance:
        """The estimate for a lookup's drafts where it matched the answer's last 8 tokens or more: text that long,
        found again, is most often being copied, so these start at LONG_MATCH_PRIOR (the evidence soon takes over)."""
        return cls(kept=LONG_MATCH_PRIOR * PRIOR_TRIED, tried=PRIOR_TRIED)

    @property
    def rate(self) -> float:
        return self.kept / self.tried

    def outcome(self, kept: int, refused: bool) -> None:
        """A draft's (or a shadow's) result: `kept` tokens kept, then a refusal or the draft's end."""
        tried = kept + (1 if refused else 0)
        if tried == 0:
            return
        fade = FADE**tried
        self.kept = self.kept * fade + kept
        self.tried = self.tried * fade + tried

    def score_shadow(self, history: list[int]) -> None:
        """Score the unstaged draft against the tokens generated since (`history`: prompt and answer)."""
        if not self.shadow:
            return
        came = history[self.shadow_at : self.shadow_at + len(self.shadow)]
        agree = next((i for i, (a, b) in enumerate(zip(came, self.shadow, strict=False)) if a != b), len(came))
        if agree < len(came) or len(came) == len(self.shadow):
            self.outcome(agree, agree < len(came))
            self.shadow = []
        elif came:  # all of it so far agrees and more is to come: count it, keep scoring the rest
            self.outcome(agree, False)
            del self.shadow[:agree]
            self.shadow_at += agree


def expected_kept(rate: float, k: int) -> float:
    """Tokens kept of a k-token draft when each is kept with probability `rate` while the ones before it were."""
    if rate >= 1.0:
        return float(k)
    return rate * (1.0 - rate**k) / (1.0 - rate)


def choose(costs: StepCosts, rate: float, in_batch: int, most: int, per_draft_token: float = 0.0) -> int:
    """The draft length (0 to `most`) that gives the step the most tokens per second, with `in_batch` tokens
    already in it (this request's next token included), each drafted token costing `per_draft_token` seconds to
    make (a draft model's step; a lookup's is nothing); 0 unless a draft beats none by MARGIN."""
    if most <= 0 or in_batch <= 0 or not costs.knows(in_batch):
        return 0
    plain = in_batch / costs.cost(in_batch)
    best, best_k = plain * MARGIN, 0
    for k in range(1, most + 1):
        speed = (in_batch + expected_kept(rate, k)) / (costs.cost(in_batch + k) + k * per_draft_token)
        if speed > best:
            best, best_k = speed, k
    return best_k
