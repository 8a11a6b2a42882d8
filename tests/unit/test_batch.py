"""The decode loop over a scripted engine: slots, prompt cache, stop strings, cancellation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from localllm.runner.batch import Batcher
from localllm.runner.context import cut_to_fit
from localllm.runner.kvstates import KVStates
from localllm.runner.protocol import STREAM_INTERVAL, Cancel, Event, Job, encode_event

EOG = 0


class ScriptEngine:
    """Tokens are characters (token = ord(c)); each sequence writes `script` after its prompt, then EOG."""

    def __init__(self, script: str, n_parallel: int = 2, n_ctx: int = 64, n_batch: int = 8, tail_tile: int = 0) -> None:
        self.script = script
        self.tail_tile = tail_tile
        self.n_vocab = 0x110000  # tokens are characters
        self.n_parallel, self.n_ctx_seq, self.n_batch = n_parallel, n_ctx, n_batch
        self.staged: list[tuple[int, int, int, bool]] = []
        self.decoded: list[list[tuple[int, int, int, bool]]] = []
        self.kv: dict[int, list[int]] = {}
        self.forgotten: list[tuple[int, int]] = []
        self.cut_floor = 0  # the fewest tokens a sequence can be cut back to (`Engine.cuttable`), but 0

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return [ord(c) for c in text]

    def piece(self, token: int, *, special: bool = False) -> bytes:
        return chr(token).encode()

    def is_eog(self, token: int) -> bool:
        return token == EOG

    def clear_batch(self) -> None:
        self.staged = []

    @property
    def batch_size(self) -> int:
        return len(self.staged)

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        assert len(self.kv.setdefault(seq, [])) == pos, "positions must follow the sequence's cache"
        self.kv[seq].append(token)
        self.staged.append((token, pos, seq, logits))
        return len(self.staged) - 1

    def decode(self) -> int:
        assert len(self.staged) <= self.n_batch
        self.decoded.append(list(self.staged))
        return 0

    def forget(self, seq: int, from_pos: int) -> bool:
        self.forgotten.append((seq, from_pos))
        del self.kv.setdefault(seq, [])[from_pos:]
        return True

    def cuttable(self, seq: int, from_pos: int) -> bool:
        return from_pos == 0 or from_pos >= self.cut_floor

    def worth_a_tile(self, n_new: int, n_past: int) -> bool:
        return n_new >= 2  # a one-token tail is never worth it

    def logprobs(self, at: Any, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
        return -0.5, [(token, -0.5)][:top]

    def keep_logits(self, index: int) -> bytes:
        return b"logits"

    def ran_out_of_memory(self) -> bool:
        return False

    def save_state(self, seq: int) -> bytearray | None:
        self.saves = getattr(self, "saves", 0) + 1
        return bytearray(json.dumps(self.kv.get(seq, [])).encode())

    def load_state(self, seq: int, data: bytearray) -> bool:
        self.kv[seq] = json.loads(data)
        return True


class ScriptSampler:
    """The n-th token it samples is the n-th character of the script (then end of generation)."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.calls = 0

    def sample(self, engine: Any, at: Any) -> int:
        self.calls += 1
        return ord(self.script[self.calls - 1]) if self.calls <= len(self.script) else EOG

    def close(self) -> None:
        pass


def make(
    script: str, *, stream_interval: float = STREAM_INTERVAL, **kwargs: Any
) -> tuple[Batcher, ScriptEngine, list[dict[str, Any]]]:
    engine = ScriptEngine(script, **kwargs)
    sent: list[dict[str, Any]] = []
    sampler = lambda params: ScriptSampler(script)  # noqa: E731
    return Batcher(engine, recorder(sent), sampler, stream_interval=stream_interval), engine, sent


def recorder(sent: list[dict[str, Any]]) -> Callable[[str | None, Event], None]:
    """A `send` that keeps each event as the message the daemon would read."""
    return lambda rid, event: sent.append(json.loads(encode_event(rid, event)))


def run(batcher: Batcher, steps: int = 100) -> None:
    for _ in range(steps):
        if not batcher.busy:
            return
        batcher.step()


def text_of(sent: list[dict[str, Any]], rid: str) -> str:
    return "".join(m["text"] for m in sent if m.get("id") == rid and m["ev"] == "text")


def done_of(sent: list[dict[str, Any]], rid: str) -> dict[str, Any]:
    return next(m for m in sent if m.get("id") == rid and m["ev"] == "done")


def test_two_requests_share_each_decode() -> None:
    batcher, engine, sent = make("hello")
    batcher.handle("a", Job("ab"))
    batcher.handle("b", Job("cd"))
    run(batcher)
    assert text_of(sent, "a") == text_of(sent, "b") == "hello"
    assert done_of(sent, "a")["reason"] == "stop" and done_of(sent, "a")["eval_count"] == 5
    assert all({entry[2] for entry in batch} == {0, 1} for batch in engine.decoded), "both slots in every batch"


def test_long_prompts_are_fed_in_chunks_of_the_batch_size() -> None:
    batcher, engine, sent = make("x", n_batch=8)
    batcher.handle("a", Job("p" * 20))
    run(batcher)
    assert [len(b) for b in engine.decoded[:3]] == [8, 8, 4]
    assert done_of(sent, "a")["prompt_eval_count"] == 20


def test_stop_string_across_tokens_is_cut_and_never_sent() -> None:
    batcher, _, sent = make("one. END more")
    batcher.handle("a", Job("q", stop=("END",)))
    run(batcher)
    assert text_of(sent, "a") == "one. "
    assert done_of(sent, "a")["reason"] == "stop" and done_of(sent, "a")["stop_sequence"] == "END"


def test_an_end_of_text_names_no_stop_sequence() -> None:
    batcher, _, sent = make("hello")
    batcher.handle("a", Job("q", stop=("END",)))
    run(batcher)
    assert done_of(sent, "a")["reason"] == "stop" and done_of(sent, "a")["stop_sequence"] is None


def test_num_predict_and_context_limit() -> None:
    batcher, _, sent = make("abcdefghij", n_ctx=6)
    batcher.handle("a", Job("q", num_predict=3))
    batcher.handle("b", Job("q"))
    batcher.handle("c", Job("123456"))
    run(batcher)
    assert text_of(sent, "a") == "abc" and done_of(sent, "a")["reason"] == "length"
    assert done_of(sent, "b")["reason"] == "length" and len(text_of(sent, "b")) < 6
    error = next(m for m in sent if m.get("id") == "c")
    assert error["ev"] == "error" and error["kind"] == "context" and error["n_ctx"] == 6


def test_prompt_cache_takes_the_slot_with_the_longest_prefix() -> None:
    batcher, engine, sent = make("!", n_parallel=2)
    batcher.handle("a", Job("the cat sat"))
    batcher.handle("b", Job("a dog ran"))
    run(batcher)
    batcher.handle("c", Job("a dog ran far"))
    run(batcher)
    done = done_of(sent, "c")
    assert done["cached_tokens"] == len("a dog ran")
    assert done["prompt_eval_count"] == len(" far")
    assert batcher.slots[1].tokens[: len("a dog ran")] == [ord(c) for c in "a dog ran"]


def test_a_short_prompt_tail_is_rounded_up_to_a_tile_with_cached_tokens() -> None:
    """With a tile of 8, the 4 new tokens of a follow-up prompt go with the 4 cached tokens before them:
    the same tokens at the same positions, so the cache ends up exactly as without the rounding."""
    batcher, engine, sent = make("!", n_parallel=1, n_batch=16, tail_tile=8)
    batcher.handle("a", Job("the big cat"))
    run(batcher)
    batcher.handle("b", Job("the big cat! sat"))
    run(batcher)
    done = done_of(sent, "b")
    first = engine.decoded[-2]  # the follow-up's prompt step (the last one sampled its end)
    assert [(chr(t), pos) for t, pos, _, _ in first] == [(c, 8 + i) for i, c in enumerate("cat! sat")]
    assert done["cached_tokens"] == 8 and done["prompt_eval_count"] == len("the big cat! sat") - 8
    assert engine.kv[0] == [ord(c) for c in "the big cat! sat!"]  # with the answer
    assert batcher.slots[0].tokens == engine.kv[0]
    # a one-token tail is left as it is
    batcher.handle("c", Job("the big cat! sat!x"))
    run(batcher)
    assert [pos for _, pos, _, _ in engine.decoded[-2]] == [17]


def test_a_tail_is_not_rounded_up_where_the_cache_cannot_be_cut_back() -> None:
    """A sliding-window model with swa_full rounds up a slot's tail, but not the tail after a restored
    checkpoint, whose window layers hold their last positions only (`Engine.cuttable` says no): its new tokens
    are evaluated as they are and the cache is kept, not cut and evaluated again from the start."""
    batcher, engine, sent = make("!", n_parallel=1, n_batch=16, tail_tile=8)
    engine.cut_floor = 9  # the cache cannot be cut back to fewer than 9 tokens
    batcher.handle("a", Job("the big cat"))
    run(batcher)
    batcher.handle("b", Job("the big cat! sat"))
    run(batcher)
    done = done_of(sent, "b")
    assert [(chr(t), pos) for t, pos, _, _ in engine.decoded[-2]] == [(c, 12 + i) for i, c in enumerate(" sat")]
    assert done["cached_tokens"] == 12 and done["prompt_eval_count"] == 4
    assert (0, 0) not in engine.forgotten, "nothing evaluated again"
    assert engine.kv[0] == [ord(c) for c in "the big cat! sat!"]


def test_cancel_frees_the_slot_for_the_next_request() -> None:
    batcher, _, sent = make("z" * 50, n_parallel=1)
    batcher.handle("a", Job("q"))
    batcher.handle("b", Job("r", num_predict=2))
    batcher.step()
    batcher.step()
    assert batcher.slots[0].work is not None and batcher.slots[0].work.rid == "a"
    batcher.handle("a", Cancel())
    batcher.step()
    assert done_of(sent, "a")["reason"] == "cancel"
    run(batcher)
    assert text_of(sent, "b") == "zz"


def test_every_cancelled_request_is_answered_once_and_the_rest_are_left_alone() -> None:
    """The daemon keeps a cancelled request as unanswered (the hang clock runs) until the runner says it stopped."""
    batcher, _, sent = make("z" * 50, n_parallel=1)
    batcher.handle("a", Job("q"))
    batcher.handle("b", Job("r"))  # waits: the one slot is a's
    batcher.step()
    batcher.handle("b", Cancel())  # answered at once, without waiting for the slot
    assert done_of(sent, "b")["reason"] == "cancel" and not batcher.waiting
    batcher.handle("gone", Cancel())  # answered already (or never asked): nothing is kept for it
    assert batcher.cancelled == set()
    batcher.handle("a", Cancel())
    run(batcher)
    assert [m["id"] for m in sent if m["ev"] == "done"] == ["b", "a"] and batcher.cancelled == set()


def test_logprobs_travel_with_the_text() -> None:
    batcher, _, sent = make("ok")
    batcher.handle("a", Job("q", logprobs=1))
    run(batcher)
    lps = [lp for m in sent if m.get("logprobs") for lp in m["logprobs"]]
    assert [lp["token"] for lp in lps] == ["o", "k"] and lps[0]["top"] == [[ord("o"), "o", -0.5]]


def test_min_tokens_holds_off_the_end_until_reached() -> None:
    class EagerToEnd:
        """Ends at once, unless its parameters forbid the end: then writes "x"."""

        def __init__(self, params: Any) -> None:
            self.ignore_eos = params.ignore_eos

        def sample(self, engine: Any, index: int) -> int:
            return ord("x") if self.ignore_eos else EOG

        def close(self) -> None:
            pass

    engine = ScriptEngine("")
    sent: list[dict[str, Any]] = []
    batcher = Batcher(engine, recorder(sent), EagerToEnd)
    batcher.handle("a", Job("ab", min_tokens=3))
    batcher.handle("b", Job("cd"))
    run(batcher)
    assert text_of(sent, "a") == "xxx" and done_of(sent, "a")["reason"] == "stop"
    assert text_of(sent, "b") == "" and done_of(sent, "b")["eval_count"] == 0


def test_cut_to_fit_keeps_head_and_tail_and_room_for_the_answer() -> None:
    prompt = list(range(100))
    kept, dropped = cut_to_fit(prompt, 40, None)  # room: 40 - 10 reserved = 30; head 7, tail 23
    assert kept == list(range(7)) + list(range(77, 100)) and dropped == 70
    kept, dropped = cut_to_fit(prompt, 40, 4)  # a short answer needs less room
    assert len(kept) == 36 and kept[:9] == list(range(9)) and kept[-1] == 99 and dropped == 64


def test_truncate_cuts_an_over_long_prompt_and_says_so() -> None:
    batcher, engine, sent = make("ok", n_ctx=16)
    batcher.handle("long", Job("x" * 40, truncate=True))
    batcher.handle("refused", Job("x" * 40))
    run(batcher)
    done = done_of(sent, "long")
    assert done["truncated"] == 40 - 12 and done["prompt_eval_count"] == 12 and text_of(sent, "long") == "ok"
    error = next(m for m in sent if m.get("id") == "refused")
    assert error["ev"] == "error" and error["kind"] == "context" and error["n_tokens"] == 40


def test_text_goes_out_first_token_at_once_then_in_small_batches() -> None:
    batcher, engine, sent = make("hello", stream_interval=60.0)  # nothing but the first token before the end
    batcher.handle("a", Job("ab"))
    run(batcher)
    assert [m["text"] for m in sent if m["ev"] == "text"] == ["h", "ello"]
    batcher, engine, sent = make("hello", stream_interval=0.0)  # every token as it comes
    batcher.handle("b", Job("ab"))
    run(batcher)
    assert [m["text"] for m in sent if m["ev"] == "text"] == ["h", "e", "l", "l", "o"]


def test_streams_sharing_the_model_send_less_often(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each step takes one interval on a fake clock: one stream gets every token as its own message; with two
    streams each waits two intervals; beyond four streams the wait stops growing."""
    step = 1 / 64  # exact in binary: no rounding at the interval's edge
    now = [1024.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])

    def texts(n_streams: int) -> list[list[str]]:
        batcher, engine, sent = make("abcdefghijklmnop", stream_interval=step, n_parallel=n_streams, n_batch=16)
        for i in range(n_streams):
            batcher.handle(str(i), Job("xy", num_predict=13))
        while batcher.busy:
            now[0] += step
            batcher.step()
        return [[m["text"] for m in sent if m["ev"] == "text" and m["id"] == str(i)] for i in range(n_streams)]

    one = texts(1)[0]
    assert one == list("abcdefghijklm")
    for stream in texts(2):
        assert "".join(stream) == "abcdefghijklm" and stream[:3] == ["a", "bc", "de"]
    for n in (4, 6):
        for stream in texts(n):
            assert "".join(stream) == "abcdefghijklm" and stream[:3] == ["a", "bcde", "fghi"]


def test_a_format_the_grammar_converter_cannot_take_is_refused_and_the_loop_goes_on() -> None:
    def converter(fmt: Any) -> str:
        assert isinstance(fmt, str), f"Unrecognized schema: {fmt}"  # as llama-cpp-python's converter does
        return "root ::= [a-z]"

    engine = ScriptEngine("ok")
    sent: list[dict[str, Any]] = []
    batcher = Batcher(engine, recorder(sent), lambda params: ScriptSampler("ok"), converter)
    batcher.handle("bad", Job("q", format={"": {"x": [None, True]}}))
    batcher.handle("good", Job("q", format="json"))
    run(batcher)
    error = next(m for m in sent if m.get("id") == "bad")
    assert error["ev"] == "error" and error["kind"] == "request" and "Unrecognized schema" in error["message"]
    assert text_of(sent, "good") == "ok"


def with_states(script: str, ram: int = 1 << 20, **kwargs: Any) -> tuple[Batcher, ScriptEngine, list[dict[str, Any]]]:
    engine = ScriptEngine(script, **kwargs)
    sent: list[dict[str, Any]] = []
    sampler = lambda params: ScriptSampler(script)  # noqa: E731
    return Batcher(engine, recorder(sent), sampler, states=KVStates(ram)), engine, sent


def test_a_prompt_that_went_out_of_every_slot_comes_back_from_a_saved_state() -> None:
    batcher, engine, sent = with_states("!", n_parallel=2, n_ctx=512, n_batch=64)
    long = "".join(chr(0x4E00 + i) for i in range(200))  # one token a character
    batcher.handle("long", Job(long))
    run(batcher)
    for i in range(2):  # other traffic takes both slots
        batcher.handle(f"other{i}", Job(chr(0x6000 + i) * 150))
    run(batcher)
    assert all(s.tokens[0] != ord(long[0]) for s in batcher.slots), "no slot holds the long prompt any more"
    saves = engine.saves
    batcher.handle("again", Job(long + "?"))
    run(batcher)
    done = done_of(sent, "again")
    assert done["cached_tokens"] == len(long) and done["prompt_eval_count"] == 1
    assert engine.saves == saves + 1, "the slot it took was saved first (the other traffic's prompt)"
    slot = next(s for s in batcher.slots if s.tokens[:200] == [ord(c) for c in long])
    assert engine.kv[slot.seq] == slot.tokens, "the restored state was cut to what the prompt shares"
    report = [m for m in sent if m["ev"] == "cache"][-1]
    assert "id" not in report and report["ram_hits"] == 1 and report["ram_states"] >= 2
    assert report["requests"] == 4 and report["cached_tokens"] == len(long)


def test_a_slot_that_keeps_its_prefix_is_not_saved_again() -> None:
    batcher, engine, sent = with_states("!", n_parallel=1, n_ctx=512, n_batch=64)
    long = "x" * 150
    batcher.handle("a", Job(long))
    run(batcher)
    batcher.handle("b", Job(long + "y"))  # the slot keeps everything: nothing lost, nothing saved
    run(batcher)
    assert getattr(engine, "saves", 0) == 0 and done_of(sent, "b")["cached_tokens"] == 150
    assert [m for m in sent if m["ev"] == "cache"][-1]["slot_hits"] == 1


def test_the_common_prefix_is_counted_to_the_token() -> None:
    import random

    from localllm.runner.slots import common_prefix

    rng = random.Random(7)
    for _ in range(300):
        a = [rng.randrange(4) for _ in range(rng.randrange(0, 200))]
        b = a[: rng.randrange(0, len(a) + 1)] + [rng.randrange(4) for _ in range(rng.randrange(0, 60))]
        naive = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        assert common_prefix(a, b) == common_prefix(b, a) == naive
