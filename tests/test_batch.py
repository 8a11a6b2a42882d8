"""The decode loop over a scripted engine: slots, prompt cache, stop strings, cancellation."""

from __future__ import annotations

from typing import Any

import pytest

from localllm.runner import batch
from localllm.runner.batch import Batcher
from localllm.runner.context import cut_to_fit

EOG = 0


class ScriptEngine:
    """Tokens are characters (token = ord(c)); each sequence writes `script` after its prompt, then EOG."""

    def __init__(self, script: str, n_parallel: int = 2, n_ctx: int = 64, n_batch: int = 8) -> None:
        self.script = script
        self.n_parallel, self.n_ctx_seq, self.n_batch = n_parallel, n_ctx, n_batch
        self.staged: list[tuple[int, int, int, bool]] = []
        self.decoded: list[list[tuple[int, int, int, bool]]] = []
        self.kv: dict[int, list[int]] = {}
        self.forgotten: list[tuple[int, int]] = []

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return [ord(c) for c in text]

    def piece(self, token: int) -> bytes:
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

    def logprobs(self, index: int, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
        return -0.5, [(token, -0.5)][:top]


class ScriptSampler:
    """The n-th token it samples is the n-th character of the script (then end of generation)."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.calls = 0

    def sample(self, engine: Any, index: int) -> int:
        self.calls += 1
        return ord(self.script[self.calls - 1]) if self.calls <= len(self.script) else EOG

    def close(self) -> None:
        pass


def make(script: str, **kwargs: Any) -> tuple[Batcher, ScriptEngine, list[dict[str, Any]]]:
    engine = ScriptEngine(script, **kwargs)
    sent: list[dict[str, Any]] = []
    return Batcher(engine, sent.append, lambda params: ScriptSampler(script)), engine, sent


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
    batcher.handle({"op": "generate", "id": "a", "prompt": "ab", "options": {}})
    batcher.handle({"op": "generate", "id": "b", "prompt": "cd", "options": {}})
    run(batcher)
    assert text_of(sent, "a") == text_of(sent, "b") == "hello"
    assert done_of(sent, "a")["reason"] == "stop" and done_of(sent, "a")["eval_count"] == 5
    assert all({entry[2] for entry in batch} == {0, 1} for batch in engine.decoded), "both slots in every batch"


def test_long_prompts_are_fed_in_chunks_of_the_batch_size() -> None:
    batcher, engine, sent = make("x", n_batch=8)
    batcher.handle({"op": "generate", "id": "a", "prompt": "p" * 20, "options": {}})
    run(batcher)
    assert [len(b) for b in engine.decoded[:3]] == [8, 8, 4]
    assert done_of(sent, "a")["prompt_eval_count"] == 20


def test_stop_string_across_tokens_is_cut_and_never_sent() -> None:
    batcher, _, sent = make("one. END more")
    batcher.handle({"op": "generate", "id": "a", "prompt": "q", "options": {"stop": ["END"]}})
    run(batcher)
    assert text_of(sent, "a") == "one. "
    assert done_of(sent, "a")["reason"] == "stop"


def test_num_predict_and_context_limit() -> None:
    batcher, _, sent = make("abcdefghij", n_ctx=6)
    batcher.handle({"op": "generate", "id": "a", "prompt": "q", "options": {"num_predict": 3}})
    batcher.handle({"op": "generate", "id": "b", "prompt": "q", "options": {}})
    batcher.handle({"op": "generate", "id": "c", "prompt": "123456", "options": {}})
    run(batcher)
    assert text_of(sent, "a") == "abc" and done_of(sent, "a")["reason"] == "length"
    assert done_of(sent, "b")["reason"] == "length" and len(text_of(sent, "b")) < 6
    error = next(m for m in sent if m.get("id") == "c")
    assert error["ev"] == "error" and error["kind"] == "context" and error["n_ctx"] == 6


def test_prompt_cache_takes_the_slot_with_the_longest_prefix() -> None:
    batcher, engine, sent = make("!", n_parallel=2)
    batcher.handle({"op": "generate", "id": "a", "prompt": "the cat sat", "options": {}})
    batcher.handle({"op": "generate", "id": "b", "prompt": "a dog ran", "options": {}})
    run(batcher)
    batcher.handle({"op": "generate", "id": "c", "prompt": "a dog ran far", "options": {}})
    run(batcher)
    done = done_of(sent, "c")
    assert done["cached_tokens"] == len("a dog ran")
    assert done["prompt_eval_count"] == len(" far")
    assert batcher.slots[1].tokens[: len("a dog ran")] == [ord(c) for c in "a dog ran"]


def test_cancel_frees_the_slot_for_the_next_request() -> None:
    batcher, _, sent = make("z" * 50, n_parallel=1)
    batcher.handle({"op": "generate", "id": "a", "prompt": "q", "options": {}})
    batcher.handle({"op": "generate", "id": "b", "prompt": "r", "options": {"num_predict": 2}})
    batcher.step()
    batcher.step()
    assert batcher.slots[0].job is not None and batcher.slots[0].job.rid == "a"
    batcher.handle({"op": "cancel", "id": "a"})
    batcher.step()
    assert done_of(sent, "a")["reason"] == "cancel"
    run(batcher)
    assert text_of(sent, "b") == "zz"


def test_logprobs_travel_with_the_text() -> None:
    batcher, _, sent = make("ok")
    batcher.handle({"op": "generate", "id": "a", "prompt": "q", "options": {"logprobs": 1}})
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
    batcher = Batcher(engine, sent.append, EagerToEnd)
    batcher.handle({"op": "generate", "id": "a", "prompt": "ab", "options": {"min_tokens": 3}})
    batcher.handle({"op": "generate", "id": "b", "prompt": "cd", "options": {}})
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
    batcher.handle({"op": "generate", "id": "long", "prompt": "x" * 40, "options": {"truncate": True}})
    batcher.handle({"op": "generate", "id": "refused", "prompt": "x" * 40, "options": {}})
    run(batcher)
    done = done_of(sent, "long")
    assert done["truncated"] == 40 - 12 and done["prompt_eval_count"] == 12 and text_of(sent, "long") == "ok"
    error = next(m for m in sent if m.get("id") == "refused")
    assert error["ev"] == "error" and error["kind"] == "context" and error["n_tokens"] == 40


def test_text_goes_out_first_token_at_once_then_in_small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch, "FLUSH_INTERVAL", 60.0)  # nothing but the first token before the end
    batcher, engine, sent = make("hello")
    batcher.handle({"op": "generate", "id": "a", "prompt": "ab", "options": {}})
    run(batcher)
    assert [m["text"] for m in sent if m["ev"] == "text"] == ["h", "ello"]
    monkeypatch.setattr(batch, "FLUSH_INTERVAL", 0.0)  # every token as it comes
    batcher, engine, sent = make("hello")
    batcher.handle({"op": "generate", "id": "b", "prompt": "ab", "options": {}})
    run(batcher)
    assert [m["text"] for m in sent if m["ev"] == "text"] == ["h", "e", "l", "l", "o"]
