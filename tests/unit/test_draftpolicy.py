"""How long a draft is (draftpolicy.py): step costs measured by batch size, the acceptance estimate (with unstaged
lookups scored against what came next), and the length that gives the step the most tokens per second; then the
same through the decode loop, over an engine whose logits the test controls and step costs shaped like a CPU's."""

from __future__ import annotations

import pytest

from localllm.runner.draftpolicy import Acceptance, StepCosts, choose, expected_kept
from localllm.runner.protocol import Job

from .test_speculate import TableEngine, chain_table, done_of, run, text_of, tokens

# Measured on 2 CPU cores, a 135M model after 1,500 cached tokens (ms per step of n tokens); a GPU's are flat.
CPU = {1: 12.3, 2: 24.0, 4: 35.2, 8: 56.4, 16: 99.0, 32: 180.4, 64: 271.6}


def test_costs_are_interpolated_and_cautious_past_what_was_measured() -> None:
    costs = StepCosts()
    assert costs.cost(7) == 7.0, "nothing measured: n tokens cost n one-token steps (no draft pays)"
    costs.record(1, 0.010)
    costs.record(9, 0.050)
    assert costs.cost(5) == pytest.approx(0.030), "between two sizes: interpolated"
    assert costs.cost(18) == pytest.approx(0.100), "past the largest: in proportion to it"
    costs.record(9, 0.090)
    assert costs.cost(9) == pytest.approx(0.060), "a running average of the size's steps"
    costs.record(0, 1.0)
    costs.record(3, 0.0)
    assert costs.sizes == [1, 9], "an empty step or an unmeasured one is not recorded"


def test_no_draft_before_a_step_as_small_was_measured() -> None:
    costs = StepCosts()
    costs.record(512, 0.9)  # a prompt's chunk
    assert choose(costs, 0.99, 1, 16) == 0, "what one token's step costs is not known yet"
    costs.record(1, 0.012)
    assert choose(costs, 0.99, 1, 16) > 0


def test_expected_kept() -> None:
    assert expected_kept(0.5, 3) == pytest.approx(0.5 + 0.25 + 0.125)
    assert expected_kept(1.0, 5) == 5.0


def test_on_a_cpu_only_a_draft_that_is_nearly_always_kept_pays() -> None:
    cpu = StepCosts(fixed={n: ms / 1000 for n, ms in CPU.items()})
    assert choose(cpu, 0.5, 1, 16) == 0, "half kept: a loss on these costs"
    assert choose(cpu, 0.7, 1, 16) == 0
    assert choose(cpu, 0.99, 1, 16) >= 12, "a copying answer: a long draft"
    assert choose(cpu, 0.99, 1, 3) == 3, "no longer than the lookup found"
    gpu = StepCosts(flat=True)
    assert choose(gpu, 0.3, 1, 16) == 16, "flat costs: any draft pays"
    assert choose(gpu, 0.3, 1, 0) == 0
    assert choose(gpu, 0.9, 1, 8, per_draft_token=1.0) == 0, "a draft model as slow as its target never pays"
    assert choose(gpu, 0.9, 1, 8, per_draft_token=0.05) > 0, "a fast one does"


def test_a_draft_that_would_slow_a_full_step_is_not_staged() -> None:
    """Beside 64 tokens of other work (here past the measured sizes, so in proportion), a draft costs its share
    of the step whatever it keeps: 0.9 is not enough, where it is for a step of its own."""
    cpu = StepCosts(fixed={1: 1.0, 2: 1.05, 64: 40.0})
    assert choose(cpu, 0.9, 1, 1) == 1
    assert choose(cpu, 0.9, 64, 8) == 0


def test_a_long_match_starts_from_a_high_estimate() -> None:
    """A lookup that matched the last 16 tokens is most often copying: its estimate starts at 0.9, where a first
    draft already pays on CPU costs; the other lookups' starts at 1/2, where none does."""
    cpu = StepCosts(fixed={n: ms / 1000 for n, ms in CPU.items()})
    assert Acceptance.after_long_matches().rate == pytest.approx(0.9)
    assert choose(cpu, Acceptance.after_long_matches().rate, 1, 64) > 0
    assert choose(cpu, Acceptance().rate, 1, 64) == 0


def test_acceptance_fades_and_scores_unstaged_drafts() -> None:
    seen = Acceptance()
    assert seen.rate == 0.5
    for _ in range(20):
        seen.outcome(0, True)
    assert seen.rate < 0.05, "refused drafts"
    for _ in range(10):
        seen.outcome(16, False)
    assert seen.rate > 0.9, "recent outcomes count most"
    seen = Acceptance(kept=0.0, tried=1.0)
    history = tokens("abcxyz")
    seen.shadow, seen.shadow_at = tokens("xyq"), 3  # drafted after "abc": "xyq"
    seen.score_shadow(history[:4])
    assert seen.kept == 1.0 and seen.tried == pytest.approx(0.97 + 1), "x agreed: counted"
    assert seen.shadow == tokens("yq"), "and the rest still to score"
    seen.score_shadow(history)
    assert seen.shadow == [] and seen.kept == pytest.approx(0.97**2 * 1.0 + 1), "y agreed, then z for q: refused"


def test_through_the_loop_a_request_drafts_once_its_answer_copies() -> None:
    """On CPU-shaped costs no draft is staged at first; the unstaged lookups, scored against the answer, show it
    copies, and then it drafts long runs: the same text, in fewer steps."""
    cpu = StepCosts(fixed={n: ms / 1000 for n, ms in CPU.items()})
    copy = "bcdefghijklmno"  # the target's chain: each letter to the next, o to the end
    table = chain_table({tokens(copy)[i]: tokens(copy)[i + 1] for i in range(len(copy) - 1)} | {14: 0})
    prompt = "p" + copy + "pb"
    plain, spec = TableEngine(table), TableEngine(table)
    out_plain = run(plain, {"r": Job(prompt)})
    out = run(spec, {"r": Job(prompt, draft_ngram=True, num_draft=16)}, costs=cpu)
    assert text_of(out, "r") == text_of(out_plain, "r") == copy[1:]
    done = done_of(out, "r")
    assert 0 < done["draft_accepted"] <= done["draft_count"], done
    assert len(spec.decodes) < len(plain.decodes)
    first_draft = next(i for i, step in enumerate(spec.decodes) if len(step) > 1 and i > 0)
    assert first_draft >= 2, "the first steps staged no draft: the estimate had to learn it copies"


def test_through_the_loop_a_request_whose_lookups_are_wrong_drafts_only_where_drafts_cost_nothing() -> None:
    """Every lookup finds the answer's last two letters in the prompt, followed by a "p" the target never picks:
    on flat costs it drafts anyway (a draft costs nothing there), on CPU-shaped ones never; the same text."""
    chain = "bcdefghijk"  # the target's answer after the prompt's last "b": c, d, ..., k, then the end
    table = chain_table({tokens(chain)[i]: tokens(chain)[i + 1] for i in range(len(chain) - 1)} | {10: 0})
    prompt = "".join(chain[i : i + 2] + "p" for i in range(1, len(chain) - 1)) + "b"  # "cdp" "dep" ... "jkp" "b"
    job = Job(prompt, draft_ngram=True, num_draft=8)
    flat = done_of(run(TableEngine(table), {"r": job}, costs=StepCosts(flat=True)), "r")
    assert flat["draft_count"] > 0 and flat["draft_accepted"] == 0, flat
    cpu = StepCosts(fixed={n: ms / 1000 for n, ms in CPU.items()})
    out = run(TableEngine(table), {"r": job}, costs=cpu)
    assert text_of(out, "r") == chain[1:]
    assert done_of(out, "r")["draft_count"] == 0
