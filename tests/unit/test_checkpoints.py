"""Checkpoints (runner/checkpoints.py): the prompt cache of models whose state cannot be cut back, over a scripted
engine that refuses every cut as a recurrent model's cache does."""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import Any

import pytest

from localllm.domain.limits import PROMPT_CHECKPOINT_SPACING, PROMPT_CHECKPOINT_TAIL
from localllm.runner import checkpoints
from localllm.runner.batch import Batcher
from localllm.runner.kvfiles import KVFiles
from localllm.runner.kvstates import BLOCK, KVState, KVStates, PromptOutput, chain
from localllm.runner.protocol import Job

from .test_batch import ScriptEngine, ScriptSampler, done_of, recorder, run, text_of
from .test_kvstates import LAYOUT, Seqs, state_of, toks


class RecurrentEngine(ScriptEngine):
    """A sequence is dropped whole or not at all: cutting part of it fails and empties it (llama.cpp's recurrent
    and hybrid caches; a restored sliding window is the same)."""

    def forget(self, seq: int, from_pos: int) -> bool:
        self.forgotten.append((seq, from_pos))
        held = self.kv.setdefault(seq, [])
        if from_pos >= len(held):
            return True
        held.clear()
        return from_pos == 0


def recurrent(script: str = "!", **kwargs: Any) -> tuple[Batcher, RecurrentEngine, list[dict[str, Any]], KVStates]:
    engine = RecurrentEngine(script, **{"n_parallel": 2, "n_ctx": 2048, "n_batch": 64, **kwargs})
    sent: list[dict[str, Any]] = []
    states = KVStates(1 << 24, exact=True)
    batcher = Batcher(engine, recorder(sent), lambda params: ScriptSampler(script), states=states)
    return batcher, engine, sent, states


def serve(batcher: Batcher, rid: str, prompt: str) -> None:
    batcher.handle(rid, Job(prompt))
    run(batcher, 200)


def text(n: int, base: int = 0x4E00) -> str:
    return "".join(chr(base + i) for i in range(n))  # one token a character


def state(n: int, *, size: int = 10, output: int = 0) -> KVState:
    tokens = array("i", range(n))
    kept = PromptOutput(output, b"x", 1) if output else None
    return KVState(tokens, chain(tokens), size, data=bytearray(size), output=kept)


def test_the_best_checkpoint_leaves_a_token_to_evaluate_unless_it_kept_the_output_after_the_whole_prompt() -> None:
    assert checkpoints.best([], 100) is None
    short, mid, whole = state(40), state(90), state(100)
    assert checkpoints.best([short, mid, whole], 100) is mid, "the whole prompt without its output: no logits"
    kept = state(100, output=100)
    assert checkpoints.best([short, mid, kept], 100) is kept, "with the output after it, nothing is evaluated"
    assert checkpoints.best([state(100, output=60)], 100) is None, "an output after another prefix does not serve"
    small, big = state(90, size=5), state(90, size=50)
    assert checkpoints.best([big, small], 100) is small, "a tie goes to the cheaper copy"


@pytest.mark.parametrize(
    ("held", "keep", "checkpoint", "plan"),
    [
        (100, 100, 0, "slot"),  # the slot holds a prefix of the prompt and nothing else
        (100, 100, 120, "slot"),  # a checkpoint less than a block better is not worth its copy
        (100, 100, 100 + BLOCK, "restore"),
        (150, 100, 0, "cut"),  # it holds more: cut, if the engine can (else the checkpoint, if any)
        (150, 100, 90, "cut"),
        (150, 40, 100, "restore"),
        (150, 0, 0, "none"),
        (0, 0, 0, "slot"),  # an empty slot: nothing to save or drop
        (0, 0, 64, "restore"),
    ],
)
def test_the_choice_between_the_slot_and_a_checkpoint(held: int, keep: int, checkpoint: int, plan: str) -> None:
    assert checkpoints.choose(held, keep, checkpoint, BLOCK) == plan


def test_exact_states_are_found_only_whole_and_a_longer_one_covers_no_shorter() -> None:
    states = KVStates(1 << 20, exact=True)
    tokens = list(range(1000, 1200))
    assert states.save(tokens[:100], bytearray(10)) is not None
    assert states.save(tokens, bytearray(20)) is not None, "a longer one does not replace it"
    assert states.stats().ram_states == 2 and states.wants(tokens[:150])
    found, n = states.find(tokens[:150] + [7, 8])
    assert found is not None and n == 100, "the longest whole prefix: the 200-token state is not cut"
    assert states.find(tokens[:99])[0] is None
    assert not states.wants(tokens[:100]), "the same tokens again: already kept"


def test_the_same_long_prompt_after_other_traffic_comes_back_from_its_checkpoint() -> None:
    batcher, engine, sent, states = recurrent()
    long = text(300)
    serve(batcher, "long", long)
    assert states.stats().ram_states == 3, "at the end of the prompt, and 4 + 64 and 4 tokens before it"
    for i in range(2):  # other traffic takes both slots
        serve(batcher, f"other{i}", chr(0x6000 + i) * 150)
    assert all(s.tokens[:1] != [ord(long[0])] for s in batcher.slots)
    serve(batcher, "again", long)
    done = done_of(sent, "again")
    assert done["cached_tokens"] == 300 and done["prompt_eval_count"] == 0, "restored with the output after it"
    slot = next(s for s in batcher.slots if s.tokens[:300] == [ord(c) for c in long])
    assert engine.kv[slot.seq] == slot.tokens, "evaluation went on from the restored state's last position"
    report = [m for m in sent if m["ev"] == "cache"][-1]
    assert (
        report["ram_hits"] == 1
        and report["cached_tokens"] == 300
        and report["checkpoints"] == states.stats().checkpoints
    )
    assert report["checkpoints"] >= 3, "the three prompts' ends (and what the slots held when they were taken)"


def test_the_same_prompt_while_its_slot_holds_the_answer_too_restores_instead_of_cutting() -> None:
    batcher, engine, sent, _ = recurrent("abc", n_parallel=1)
    long = text(200)
    serve(batcher, "a", long)
    serve(batcher, "b", long)  # the slot holds long + "ab" (evaluated): a recurrent state cannot drop them
    done = done_of(sent, "b")
    assert done["cached_tokens"] == 200 and done["prompt_eval_count"] == 0
    assert (0, 200) in engine.forgotten, "the cut was tried, refused, and the checkpoint restored"


def test_a_chats_next_turn_restores_the_state_its_slot_held_at_the_end_of_the_answer() -> None:
    batcher, engine, sent, _ = recurrent("abc", n_parallel=1)
    first = text(200)
    serve(batcher, "turn1", first)
    serve(batcher, "other", chr(0x6000) * 150)  # the slot goes to other traffic: what it held is saved first
    serve(batcher, "turn2", first + "abc" + text(20, 0x7000))
    done = done_of(sent, "turn2")
    assert done["cached_tokens"] == 203, "the prompt and the answer (its end-of-generation token never is evaluated)"


def test_a_long_prompt_keeps_checkpoints_at_its_chunk_boundaries_and_before_its_end() -> None:
    batcher, engine, sent, states = recurrent(n_parallel=1)  # a batch of 64 tokens
    n = PROMPT_CHECKPOINT_SPACING + 200
    long = text(n)
    serve(batcher, "long", long)
    stops = checkpoints.stops(n, 64)
    assert stops == (n - PROMPT_CHECKPOINT_TAIL - 64, n - PROMPT_CHECKPOINT_TAIL)
    chunks = [len(batch) for batch in engine.decoded if all(t[0] >= 0x4E00 for t in batch)]
    assert sum(chunks) == n and chunks[-1] == PROMPT_CHECKPOINT_TAIL, "the batches end where the stops are"
    assert states.stats().ram_states == 4, "at the spacing's first chunk boundary, the two stops, and the end"
    for shared, restored in ((PROMPT_CHECKPOINT_SPACING + 100, PROMPT_CHECKPOINT_SPACING), (stops[0] + 50, stops[0])):
        serve(batcher, f"fork{shared}", long[:shared] + text(n - shared, 0x7000))
        assert done_of(sent, f"fork{shared}")["cached_tokens"] == restored
    serve(batcher, "last", long[:-2] + "ab")  # the last two tokens differ: from 4 before the end
    assert done_of(sent, "last")["cached_tokens"] == stops[1]


def test_a_checkpoints_chunk_ends_at_its_next_stop() -> None:
    n, n_batch = 1000, 512
    first, second = checkpoints.stops(n, n_batch)
    assert (first, second) == (1000 - 4 - 512, 996)
    assert checkpoints.chunk(0, n, 512, n_batch) == first
    assert checkpoints.chunk(first, n, 512, n_batch) == 512 and checkpoints.chunk(first + 1, n, 512, n_batch) == 511
    assert checkpoints.chunk(990, n, 3, n_batch) == 3, "never more than the room"
    assert checkpoints.due(first, 0, n, n_batch) and checkpoints.due(second, first, n, n_batch)
    assert not checkpoints.due(300, 0, n, n_batch) and checkpoints.due(PROMPT_CHECKPOINT_SPACING, 0, 2000, n_batch)
    assert not checkpoints.due(n, 0, n, n_batch), "the end's own checkpoint is taken with its output"


def test_without_checkpoints_a_refused_cut_evaluates_the_whole_prompt() -> None:
    engine = RecurrentEngine("abc", n_parallel=1, n_ctx=2048, n_batch=64)
    sent: list[dict[str, Any]] = []
    batcher = Batcher(engine, recorder(sent), lambda params: ScriptSampler("abc"))
    serve(batcher, "a", text(200))
    serve(batcher, "b", text(200))
    assert done_of(sent, "b")["cached_tokens"] == 0  # what the checkpoints are for


def test_a_checkpoint_of_a_whole_prompt_on_disk_serves_it_after_a_restart_with_its_output(tmp_path: Path) -> None:
    tokens = toks(4, 300)
    logits = array("f", [0.5 * i for i in range(64)])
    first = KVStates(1 << 20, KVFiles(tmp_path, LAYOUT, 1 << 30), exact=True)
    first.save(tokens, state_of(tokens), PromptOutput(300, logits, len(logits.tobytes())))
    first.save(tokens[:200], state_of(tokens[:200]))
    first.close()
    again = KVStates(0, KVFiles(tmp_path, LAYOUT, 1 << 30), exact=True)
    state, n = again.find(tokens)
    assert state is not None and n == 300, "its file says it carries the output after all 300 tokens"
    source, output = again.restore(Seqs(), 0, state)
    assert source == "disk" and output is not None and output.n == 300 and output.logits == logits.tobytes()
    state, n = again.find(tokens[:250])
    assert state is not None and n == 200, "a shorter prompt: the longest checkpoint beginning it, not a cut one"
    again.close()


def test_the_checkpoint_after_a_prompt_is_taken_once_its_first_token_went_out() -> None:
    batcher, engine, sent, states = recurrent("abc", n_parallel=1)
    seen: list[str] = []
    save = engine.save_state

    def saving(seq: int) -> bytearray | None:
        seen.append(text_of(sent, "a"))
        return save(seq)

    engine.save_state = saving  # type: ignore[method-assign]
    serve(batcher, "a", text(200))
    assert seen == ["", "", "a"] and states.stats().checkpoints == 3, "the end's copy after the first token's text"
    assert engine.kv[0][:200] == [ord(c) for c in text(200)]
    serve(batcher, "b", text(200))
    assert done_of(sent, "b")["cached_tokens"] == 200, "the checkpoint holds the prompt alone"
