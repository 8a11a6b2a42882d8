"""Speculative decoding in the decode loop, over an engine whose logits the test controls: a drafted token is kept
only where the target's own pick agrees (greedy: the same text as without speculation, with exactly the agreeing
prefix kept; sampled: the target's distribution), the rejected tail's KV is removed, and the counts reach
`Finished`."""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from localllm.runner.batch import Batcher
from localllm.runner.draftpolicy import StepCosts
from localllm.runner.protocol import Event, Job, Sampling, encode_event
from localllm.runner.speculate import (
    DraftModel,
    LookupMemory,
    NgramDraft,
    Speculation,
    draft_room,
    same_vocabulary,
)

V = 16  # tokens are the letters a..p; "a" (0) ends the generation
Row = npt.NDArray[np.float64]


def tokens(text: str) -> list[int]:
    return [ord(c) - ord("a") for c in text]


def letters(toks: list[int]) -> str:
    return "".join(chr(ord("a") + t) for t in toks)


class TableEngine:
    """A model whose next-token log-probabilities depend on the last token only (`table[last]`); it keeps each
    sequence's cache as its tokens and checks that positions follow it."""

    def __init__(self, table: Row, n_parallel: int = 2, n_ctx: int = 64, n_batch: int = 32) -> None:
        self.table = table
        self.n_vocab, self.n_parallel, self.n_ctx_seq, self.n_batch, self.tail_tile = V, n_parallel, n_ctx, n_batch, 0
        self.kv: dict[int, list[int]] = {}
        self.staged: list[tuple[int, int, int, bool]] = []
        self.outputs: dict[int, Row] = {}
        self.decodes: list[list[tuple[int, int, int, bool]]] = []
        self.forgotten: list[tuple[int, int]] = []

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return tokens(text)

    def piece(self, token: int, *, special: bool = False) -> bytes:
        return letters([token]).encode()

    def is_eog(self, token: int) -> bool:
        return token == 0

    def clear_batch(self) -> None:
        self.staged = []

    @property
    def batch_size(self) -> int:
        return len(self.staged)

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        assert len(self.kv.setdefault(seq, [])) == pos, "positions must follow the sequence's cache"
        assert pos < self.n_ctx_seq, "past the context window"
        self.kv[seq].append(token)
        self.staged.append((token, pos, seq, logits))
        return len(self.staged) - 1

    def decode(self) -> int:
        assert len(self.staged) <= self.n_batch
        self.decodes.append(list(self.staged))
        self.outputs = {i: self.table[t] for i, (t, _, _, out) in enumerate(self.staged) if out}
        return 0

    def logits(self, at: Any) -> Row:
        return self.outputs[at] if isinstance(at, int) else np.asarray(at)

    def argmax(self, at: int) -> int:
        return int(self.logits(at).argmax())

    def forget(self, seq: int, from_pos: int) -> bool:
        self.forgotten.append((seq, from_pos))
        del self.kv.setdefault(seq, [])[from_pos:]
        return True

    def cuttable(self, seq: int, from_pos: int) -> bool:
        return True

    def worth_a_tile(self, n_new: int, n_past: int) -> bool:
        return False

    def logprobs(self, at: Any, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
        return float(self.logits(at)[token]), []

    def keep_logits(self, index: int) -> Row:
        kept: Row = self.outputs[index].copy()
        return kept

    def ran_out_of_memory(self) -> bool:
        return False

    def save_state(self, seq: int) -> bytearray | None:
        return None

    def load_state(self, seq: int, data: bytearray) -> bool:
        return False


class Greedy:
    def sample(self, engine: Any, at: Any) -> int:
        return int(engine.logits(at).argmax())

    def close(self) -> None:
        pass


class Dist:
    """Samples from the softmax of the logits at `at`, with its own seeded generator."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def sample(self, engine: Any, at: Any) -> int:
        logits = engine.logits(at)
        p = np.exp(logits - logits.max())
        return int(self.rng.choice(len(p), p=p / p.sum()))

    def close(self) -> None:
        pass


def chain_table(successor: dict[int, int]) -> Row:
    """Greedy picks `successor[last]` (ties impossible); every other token is far less likely."""
    table = np.full((V, V), -10.0)
    for last, nxt in successor.items():
        table[last, nxt] = 0.0
    return table


def run(
    engine: TableEngine,
    jobs: dict[str, Job],
    make_sampler: Callable[[Sampling], Any] = lambda _: Greedy(),
    draft: DraftModel | None = None,
    costs: StepCosts | None = None,
) -> list[dict[str, Any]]:
    """Run `jobs` to their end; step `costs` flat (any draft pays) unless given."""
    sent: list[dict[str, Any]] = []

    def send(rid: str | None, event: Event) -> None:
        sent.append(json.loads(encode_event(rid, event)))

    batcher = Batcher(engine, send, make_sampler, stream_interval=0.0, draft=draft, costs=costs or StepCosts(flat=True))
    for rid, job in jobs.items():
        batcher.handle(rid, job)
    for _ in range(100_000):
        if not batcher.busy:
            break
        batcher.step()
    return sent


def text_of(sent: list[dict[str, Any]], rid: str) -> str:
    return "".join(m["text"] for m in sent if m.get("id") == rid and m["ev"] == "text")


def done_of(sent: list[dict[str, Any]], rid: str) -> dict[str, Any]:
    return next(m for m in sent if m.get("id") == rid and m["ev"] == "done")


# A prompt whose "bcd" is followed by "efgh" (what lookup drafts after "bcd" again); the target agrees on "e",
# then picks "j" where the draft says "f".
PROMPT = "lbcdefghmbc"
SUCCESSOR = {2: 3, 3: 4, 4: 9, 9: 10, 10: 0}  # c->d, d->e, e->j, j->k, k->end


def test_greedy_keeps_exactly_the_prefix_the_target_agrees_with() -> None:
    engine = TableEngine(chain_table(SUCCESSOR))
    sent = run(engine, {"r": Job(PROMPT, draft_ngram=True, num_draft=4)})
    assert text_of(sent, "r") == "dejk"
    done = done_of(sent, "r")
    assert (done["draft_count"], done["draft_accepted"]) == (4, 1), "drafted efgh, kept e"
    verify = next(batch for batch in engine.decodes if len(batch) > 1 and batch[0][0] == tokens("d")[0])
    assert [t for t, _, _, _ in verify] == tokens("defgh"), "the next token and its draft in one batch"
    assert all(out for _, _, _, out in verify), "every drafted position has its output"
    assert (0, len(PROMPT) + 2) in engine.forgotten, "the rejected fgh removed from the cache"
    assert engine.kv[0] == tokens(PROMPT + "dejk"), "the cache holds what was evaluated and kept, in order"


def test_greedy_speculation_gives_the_text_without_it_in_fewer_steps() -> None:
    copy = "bcdefghijklmno"  # the target copies this run of letters, which the prompt holds
    table = chain_table({tokens(copy)[i]: tokens(copy)[i + 1] for i in range(len(copy) - 1)} | {14: 0})
    prompt = "p" + copy + "pbcd"
    plain_engine, spec_engine = TableEngine(table), TableEngine(table)
    plain = run(plain_engine, {"r": Job(prompt)})
    spec = run(spec_engine, {"r": Job(prompt, draft_ngram=True, num_draft=8)})
    assert text_of(spec, "r") == text_of(plain, "r") == "efghijklmno"
    done = done_of(spec, "r")
    # (every draft pays on these flat costs: each is num_draft long) "fghijklm" after "bcde", kept whole; the
    # token after it is "n"; then "opbcdefg" after "klmn", kept up to "o", where the target ends
    assert (done["draft_count"], done["draft_accepted"]) == (16, 9)
    assert done["eval_count"] == done_of(plain, "r")["eval_count"] == len("efghijklmno")
    assert len(spec_engine.decodes) < len(plain_engine.decodes), "several tokens per step"


def test_bounds_hold_for_the_kept_tokens() -> None:
    copy = "bcdefghijklmno"
    table = chain_table({tokens(copy)[i]: tokens(copy)[i + 1] for i in range(len(copy) - 1)} | {14: 0})
    prompt = "p" + copy + "pbcd"
    sent = run(
        TableEngine(table),
        {"n": Job(prompt, num_predict=5, draft_ngram=True), "s": Job(prompt, stop=("ij",), draft_ngram=True)},
    )
    assert text_of(sent, "n") == "efghi" and done_of(sent, "n")["reason"] == "length"
    assert text_of(sent, "s") == "efgh" and done_of(sent, "s")["stop_sequence"] == "ij"
    plain = run(TableEngine(table, n_ctx=len(prompt) + 6), {"c": Job(prompt)})
    sent = run(TableEngine(table, n_ctx=len(prompt) + 6), {"c": Job(prompt, draft_ngram=True, num_draft=16)})
    assert done_of(sent, "c")["reason"] == done_of(plain, "c")["reason"] == "length", "the context bound holds"
    assert text_of(sent, "c") == text_of(plain, "c") == "efghij"


class WindowEngine(TableEngine):
    """A cache that cannot drop a tail alone (as a sliding window cut back past its window): all of it goes."""

    def forget(self, seq: int, from_pos: int) -> bool:
        super().forget(seq, 0)
        return from_pos == 0


def test_a_cache_that_cannot_drop_the_rejected_tail_is_evaluated_again() -> None:
    engine = WindowEngine(chain_table(SUCCESSOR))
    sent = run(engine, {"r": Job(PROMPT, draft_ngram=True, num_draft=4)})
    assert text_of(sent, "r") == "dejk", "the same answer"
    assert engine.kv[0] == tokens(PROMPT + "dejk"), "the sequence evaluated again, then continued"
    again = [batch for batch in engine.decodes if len(batch) > 1 and batch[0][1] == 0]
    assert len(again) == 2, "the prompt, then the prompt and the kept tokens again"
    assert [t for t, _, _, _ in again[1]] == tokens(PROMPT + "de") and not any(out for *_, out in again[1])


def test_no_speculation_unless_asked() -> None:
    engine = TableEngine(chain_table(SUCCESSOR))
    sent = run(engine, {"r": Job(PROMPT)})
    assert text_of(sent, "r") == "dejk"
    assert done_of(sent, "r")["draft_count"] == 0
    assert all(len(batch) == 1 for batch in engine.decodes[1:]), "one token per step"


def test_sampled_speculation_follows_the_target_distribution() -> None:
    """The standard rejection rule with a one-hot draft: the answers' distribution is the target's (a chi-square
    test over 3,000 answers of three tokens, seeded), with drafts both kept and refused."""
    rng = np.random.default_rng(7)
    p = rng.dirichlet(np.ones(V - 1) * 0.7, size=V)
    p[tokens("defghij"), 0] += 1.0  # after d..j, "b" (what the prompt says follows them) half the time
    p /= p.sum(axis=1, keepdims=True)
    table = np.concatenate([np.full((V, 1), -np.inf), np.log(p)], axis=1)  # no end of generation
    prompt = "bcdbcebcfbcgbchbcibcjbc"  # "bcX" was followed by "b" for X in d..j: lookup drafts "b" after them
    engine = TableEngine(table, n_parallel=4, n_ctx=64)
    sampler_rng = np.random.default_rng(11)
    n = 3000
    jobs = {f"r{i}": Job(prompt, num_predict=3, draft_ngram=True, num_draft=4) for i in range(n)}
    sent = run(engine, jobs, lambda _: Dist(sampler_rng))
    texts: dict[str, str] = collections.defaultdict(str)
    for m in sent:
        if m["ev"] == "text":
            texts[m["id"]] += m["text"]
    answers = [texts[rid] for rid in jobs]
    dones = [m for m in sent if m["ev"] == "done"]
    assert len(dones) == n
    drafted = sum(m["draft_count"] for m in dones)
    accepted = sum(m["draft_accepted"] for m in dones)
    assert drafted > n / 3 and 0.2 * drafted < accepted < 0.8 * drafted, (drafted, accepted)
    # the last two tokens' joint distribution: P(a, b) = sum over the first t of p(t|c) p(a|t) p(b|a)
    probs = np.exp(table)
    first = probs[tokens("c")[0]]
    pair = (first @ probs)[:, None] * probs
    counts = collections.Counter(answer[1:] for answer in answers)
    cells = {letters([a, b]): pair[a, b] for a in range(1, V) for b in range(1, V)}
    big = [k for k, e in cells.items() if e * n >= 5]  # cells expected 5+ times; the rest pooled
    observed = [counts[k] for k in big] + [n - sum(counts[k] for k in big)]
    expected = [cells[k] * n for k in big] + [n * (1 - sum(cells[k] for k in big))]
    chi2 = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True) if e > 0)
    dof = len(observed) - 1
    assert chi2 < dof + 4 * (2 * dof) ** 0.5, f"chi2 {chi2:.1f} with {dof} degrees of freedom"
    # the first token is never drafted: its distribution is the target's too
    firsts = collections.Counter(answer[0] for answer in answers)
    assert abs(firsts["d"] / n - first[tokens("d")[0]]) < 4 * (first[tokens("d")[0]] / n) ** 0.5 + 0.01


def test_draft_model_drafts_greedily_and_stays_in_step_with_the_slot() -> None:
    target = chain_table(SUCCESSOR)
    draft_engine = TableEngine(chain_table({2: 3, 3: 4, 4: 5, 5: 6, 6: 7}), n_batch=32)  # agrees up to "e"
    draft = DraftModel(draft_engine)
    engine = TableEngine(target)
    sent = run(engine, {"r": Job(PROMPT, num_draft=4)}, draft=draft)
    assert text_of(sent, "r") == "dejk"
    done = done_of(sent, "r")
    assert done["draft_count"] > 0 and done["draft_accepted"] >= 1
    held = draft.held[0]
    assert held == draft_engine.kv[0], "what the draft's sequence holds is what it evaluated"
    assert held[: len(PROMPT) + 2] == tokens(PROMPT + "de"), "caught up to the target's kept tokens"


def test_ngram_lookup_takes_the_longest_match_the_latest_of_equals() -> None:
    lookup = NgramDraft()
    assert lookup.draft(tokens("xabcq" + "zabcr" + "zabc"), 3) == tokens("rza"), "the 4-gram zabc, latest"
    assert lookup.draft(tokens("xabcq" + "zabcr" + "zabcy" + "ab"), 2) == tokens("cy"), "grown history, 2-gram"
    assert NgramDraft().draft(tokens("abcdef"), 4) == [], "nothing repeats"
    assert NgramDraft().draft(tokens("ghijkl" + "m" + "jkn" + "ghijk"), 1) == tokens("l"), "the longest match wins"
    assert NgramDraft().draft(tokens("qabcabc"), 7) == tokens("abcabca"), "a loop: continued past the history's end"


def test_ngram_lookup_drafts_from_the_runners_memory_of_earlier_requests() -> None:
    memory = LookupMemory()
    memory.add(tokens("xyzabcdefgh"))
    lookup = NgramDraft(memory)
    assert lookup.draft(tokens("qqxyzabc"), 3) == tokens("def"), "an earlier request's answer"
    assert lookup.matched == 6
    memory = LookupMemory()
    memory.add(tokens("ab"))
    memory.add(tokens("cd"))
    assert NgramDraft(memory).draft(tokens("xab"), 3) == [], "never across two histories"
    memory.add(tokens("zcdq"))
    assert NgramDraft(memory).draft(tokens("abzcd"), 1) == tokens("q"), "the longer match of two"


def test_ngram_lookup_never_drafts_a_media_chunks_pseudo_ids() -> None:
    """A media chunk's positions hold negative pseudo ids (mediaprompt.py): a lookup stops before them."""
    image = [-5, -6, -7]
    history = tokens("ab") + image + tokens("cd") + tokens("ab")
    assert NgramDraft().draft(history, 4) == [], "what followed `ab` was an image"
    history = tokens("xab") + tokens("c") + image + tokens("yab")
    assert NgramDraft().draft(history, 4) == tokens("c"), "cut at the image"


def test_draft_room_bounds() -> None:
    spec = Speculation(ngram=True, num_draft=16)
    assert draft_room(spec, generated=3, num_predict=-1, n_past=10, n_ctx=64, share=100) == 16
    assert draft_room(spec, generated=3, num_predict=5, n_past=10, n_ctx=64, share=100) == 1
    assert draft_room(spec, generated=3, num_predict=-1, n_past=58, n_ctx=64, share=100) == 4
    assert draft_room(spec, generated=3, num_predict=-1, n_past=10, n_ctx=64, share=5) == 5


def test_same_vocabulary() -> None:
    class Vocab:
        def __init__(self, pieces: list[bytes], eog: list[int]) -> None:
            self.n_vocab, self.add_bos, self.eog_tokens, self.pieces = len(pieces), True, eog, pieces

        def piece(self, token: int, *, special: bool = False) -> bytes:
            return self.pieces[token]

    a = Vocab([b"<s>", b"a", b"b"], [0])
    assert same_vocabulary(a, Vocab([b"<s>", b"a", b"b"], [0])) is None
    assert "2 tokens" in (same_vocabulary(a, Vocab([b"<s>", b"a"], [0])) or "")
    assert "token 2" in (same_vocabulary(a, Vocab([b"<s>", b"a", b"c"], [0])) or "")
    assert "special" in (same_vocabulary(a, Vocab([b"<s>", b"a", b"b"], [1])) or "")
