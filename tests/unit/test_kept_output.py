"""The output kept after a whole prompt: a prompt sent again takes its first token from it and evaluates nothing.

llama-server (and our loop before this) evaluates the last prompt token again on a full cache hit, to get the
logits it samples from: on a long context that one-token decode is most of the time to first token. The loop
keeps the logits after each prompt with its slot, and with the slot's saved state in RAM (kvstates.py).
"""

from __future__ import annotations

import json
from array import array
from pathlib import Path
from typing import Any

from localllm.runner.batch import Batcher
from localllm.runner.kvfiles import KVFiles
from localllm.runner.kvstates import KVStates, PromptOutput
from localllm.runner.protocol import Event, Job, encode_event

from .test_batch import ScriptEngine, done_of, run, text_of
from .test_kvstates import LAYOUT, Seqs, state_of, toks


class Recording(ScriptEngine):
    """Keeps, as its logits, which decode and output they came from; counts the logprobs asked from kept ones."""

    def keep_logits(self, index: int) -> bytes:
        return f"decode {len(self.decoded)} output {index}".encode()

    def logprobs(self, at: Any, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
        self.kept_logprobs = getattr(self, "kept_logprobs", 0) + (not isinstance(at, int))
        return super().logprobs(at, token, top)


class Sampling:
    """Writes its script; remembers what it sampled from (a decode's output index, or kept logits)."""

    seen: list[Any] = []

    def __init__(self, script: str) -> None:
        self.script, self.calls = script, 0

    def sample(self, engine: Any, at: Any) -> int:
        Sampling.seen.append(at)
        self.calls += 1
        return ord(self.script[self.calls - 1]) if self.calls <= len(self.script) else 0

    def close(self) -> None:
        pass


def make(script: str, *, states: KVStates | None = None, **kwargs: Any) -> tuple[Batcher, Recording, list[Any]]:
    engine = Recording(script, **kwargs)
    sent: list[dict[str, Any]] = []

    def send(rid: str | None, event: Event) -> None:
        message = json.loads(encode_event(rid, event))
        message["decodes"] = len(engine.decoded)  # how many decodes had run when it was sent
        sent.append(message)

    Sampling.seen = []
    return Batcher(engine, send, lambda params: Sampling(script), states=states), engine, sent


def test_a_prompt_sent_again_evaluates_nothing_and_its_first_token_goes_out_before_any_decode() -> None:
    batcher, engine, sent = make("hi!", n_parallel=1)
    batcher.handle("a", Job("the cat sat"))
    run(batcher)
    decodes = len(engine.decoded)
    batcher.handle("b", Job("the cat sat"))
    run(batcher)
    assert text_of(sent, "b") == text_of(sent, "a") == "hi!"
    done = done_of(sent, "b")
    assert done["cached_tokens"] == len("the cat sat") and done["prompt_eval_count"] == 0
    # a's prompt went in two chunks (a batch holds 8): its last token was the second decode's third output
    assert Sampling.seen[4] == b"decode 2 output 2", "b's first token: the logits kept after a's prompt"
    first = next(m for m in sent if m.get("id") == "b" and m["ev"] == "text")
    assert first["text"] == "h" and first["decodes"] == decodes, "sent before b's first decode"
    batch = engine.decoded[decodes]
    assert [(chr(t), pos) for t, pos, _, _ in batch] == [("h", len("the cat sat"))], "only the new token"
    assert engine.kv[0] == [ord(c) for c in "the cat sathi!"]
    assert batcher.slots[0].tokens == engine.kv[0]


def test_a_prompt_that_ends_before_or_after_the_kept_output_evaluates_as_before() -> None:
    batcher, engine, sent = make("!", n_parallel=1)
    batcher.handle("a", Job("the cat sat"))
    run(batcher)
    batcher.handle("shorter", Job("the cat"))  # held whole by the slot, but no output kept after it
    run(batcher)
    assert done_of(sent, "shorter")["prompt_eval_count"] == 1 and isinstance(Sampling.seen[-1], int)
    assert batcher.slots[0].output is not None and batcher.slots[0].output.n == len("the cat")
    batcher.handle("longer", Job("the cat!x"))
    run(batcher)
    done = done_of(sent, "longer")
    assert done["cached_tokens"] == len("the cat!") and done["prompt_eval_count"] == 1


def test_the_kept_output_goes_with_the_tokens_it_follows() -> None:
    batcher, engine, sent = make("!", n_parallel=1)
    batcher.handle("a", Job("the cat sat"))
    run(batcher)
    batcher.handle("b", Job("the dog ran far away"))  # shares "the " only: the slot is cut to it
    run(batcher)
    output = batcher.slots[0].output
    assert output is not None and output.n == len("the dog ran far away"), "b's output replaced a's"
    batcher.handle("c", Job("the cat sat"))
    run(batcher)
    assert done_of(sent, "c")["prompt_eval_count"] == len("cat sat"), "a's output is gone: evaluated again"


def test_log_probabilities_of_the_first_token_come_from_the_kept_logits() -> None:
    batcher, engine, sent = make("ok", n_parallel=1)
    batcher.handle("a", Job("question"))
    run(batcher)
    batcher.handle("b", Job("question", logprobs=1))
    run(batcher)
    lps = [lp for m in sent if m.get("id") == "b" and m.get("logprobs") for lp in m["logprobs"]]
    assert [lp["token"] for lp in lps] == ["o", "k"] and engine.kept_logprobs == 1


def test_a_saved_state_keeps_the_output_and_a_prompt_back_from_ram_evaluates_nothing() -> None:
    states = KVStates(1 << 20)
    batcher, engine, sent = make("!", states=states, n_parallel=2, n_ctx=512, n_batch=64)
    long = "".join(chr(0x4E00 + i) for i in range(200))
    batcher.handle("long", Job(long))
    run(batcher)
    for i in range(2):  # other traffic takes both slots: the long prompt's slot is saved first
        batcher.handle(f"other{i}", Job(chr(0x6000 + i) * 150))
    run(batcher)
    saved = states.find([ord(c) for c in long])[0]
    assert saved is not None and saved.output is not None and saved.output.n == len(long)
    assert states.ram_bytes == sum(s.ram_size for s in states._ram) and saved.ram_size > saved.size
    batcher.handle("again", Job(long))
    run(batcher)
    done = done_of(sent, "again")
    assert done["cached_tokens"] == len(long) and done["prompt_eval_count"] == 0
    assert text_of(sent, "again") == text_of(sent, "long") == "!"
    assert [m for m in sent if m["ev"] == "cache"][-1]["ram_hits"] == 1


def test_the_ram_bound_counts_the_outputs_and_they_go_with_their_state() -> None:
    tokens = toks(1, 100)
    output = PromptOutput(100, b"x" * 1000, 1000)
    one = len(state_of(tokens))
    cache = KVStates(one + 1000)
    state = cache.save(tokens, state_of(tokens), output)
    assert state is not None and state.output is output and cache.ram_bytes == one + 1000
    cache.save(toks(2, 100), state_of(toks(2, 100)))  # over the bound: the first goes, its output with it
    assert cache.find(tokens) == (None, 0) and state.output is None and cache.ram_bytes == one


def test_a_covering_state_takes_the_output_of_a_sequence_it_covers() -> None:
    tokens = toks(3, 200)
    cache = KVStates(1 << 20)
    state = cache.save(tokens, state_of(tokens))
    assert state is not None and state.output is None
    shorter = PromptOutput(150, b"y" * 64, 64)
    assert not cache.wants(tokens[:180], shorter), "covered: not saved again"
    assert state.output is shorter and cache.ram_bytes == state.size + 64


def test_a_state_file_carries_the_output_through_a_restart(tmp_path: Path) -> None:
    tokens = toks(4, 300)
    logits = array("f", [0.5 * i for i in range(64)])
    first = KVStates(1 << 20, KVFiles(tmp_path, LAYOUT, 1 << 30))
    first.save(tokens, state_of(tokens), PromptOutput(250, logits, len(logits.tobytes())))
    first.close()
    for ram in (1 << 20, 0):  # kept in RAM once restored, or not kept at all: the output comes back either way
        again = KVStates(ram, KVFiles(tmp_path, LAYOUT, 1 << 30))
        state, n = again.find(tokens[:250])
        assert state is not None and n == 250 and state.output is None, "read with the state, not at the scan"
        source, output = again.restore(Seqs(), 0, state)
        assert source == "disk" and output is not None and output.n == 250 and output.logits == logits.tobytes()
        assert (state.output is output) == (ram > 0) and again.ram_bytes == (state.ram_size if ram else 0)
        again.close()


def test_a_restart_restores_a_prompt_with_its_output_and_evaluates_nothing(tmp_path: Path) -> None:
    def runner() -> tuple[Batcher, Recording, list[Any]]:
        return make("!", states=KVStates(1 << 20, KVFiles(tmp_path, LAYOUT, 1 << 30)), n_parallel=1, n_ctx=512)

    prompt = "".join(chr(0x4E00 + i) for i in range(100))
    batcher, _, sent = runner()
    batcher.handle("a", Job(prompt))
    run(batcher)
    batcher.close()  # a runner stopping writes its slots out
    batcher, engine, sent = runner()
    batcher.handle("b", Job(prompt))
    run(batcher)
    done = done_of(sent, "b")
    assert done["cached_tokens"] == len(prompt) and done["prompt_eval_count"] == 0 and text_of(sent, "b") == "!"
    assert [m for m in sent if m["ev"] == "cache"][-1]["disk_hits"] == 1
