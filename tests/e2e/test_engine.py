"""The engine: its pure helpers, and sampling on real llama.cpp."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import pytest

from localllm.chat.tools import call_schema, parse_tool_choice, parse_tools
from localllm.runner import engine as engine_module
from localllm.runner.batch import Batcher
from localllm.runner.engine import Engine, LoadError
from localllm.runner.protocol import Job, LoadSpec, Sampling
from localllm.runner.sampler import Sampler, grammar_for
from localllm.runner.slots import common_prefix

from ..conftest import model_file
from ..ggufcopy import write_random_llama
from ..unit.test_batch import recorder


def _char_rule(grammar: str) -> str:
    match = re.search(r"^char ::= (.*)$", grammar, re.M)
    assert match, grammar
    return match.group(1)


def test_schema_strings_cannot_hold_raw_control_characters() -> None:
    grammar = grammar_for({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]})
    # A raw newline inside a JSON string makes json.loads fail: the character class must exclude it.
    assert r"\x00-\x1F" in _char_rule(grammar).split("|")[0]


def test_json_format_uses_the_strict_json_grammar() -> None:
    assert r"\x00-\x1F" in grammar_for("json")


def test_tool_call_schemas_compile_into_grammars() -> None:
    weather = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    tools = parse_tools(
        [
            {"type": "function", "function": {"name": "get_weather", "parameters": weather}},
            {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}},
        ]
    )
    named = call_schema(tools, parse_tool_choice({"type": "function", "function": {"name": "get_weather"}}, tools))
    either = call_schema(tools, parse_tool_choice("required", tools))
    assert named is not None and either is not None
    assert "get_weather" in grammar_for(named) and "add" in grammar_for(either)


def test_a_load_failure_says_whether_llama_cpp_ran_out_of_memory(tmp_path: Path) -> None:
    """The kind comes from what llama.cpp logged while loading, not from our message (which names both)."""
    missing = str(tmp_path / "missing.gguf")
    with pytest.raises(LoadError) as failed:
        Engine(LoadSpec(model_path=missing, n_ctx=64))
    assert failed.value.kind == "load" and missing in str(failed.value)
    engine_module._log(2, b"ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size 1 GiB\n", None)
    assert LoadError("llama.cpp could not create the context").kind == "out_of_memory"
    engine_module._recent_log.clear()
    assert LoadError("llama.cpp could not create the context").kind == "load"


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format must be"):
        grammar_for("yaml")


@pytest.fixture(scope="module", params=["stories260K.gguf", "llama-2-tiny-random.gguf"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    loaded = Engine(LoadSpec(model_path=str(model_file(request.param)), n_ctx=1024, n_threads=2, n_parallel=2))
    yield loaded
    loaded.close()


def _greedy_tokens(engine: Engine, sampler: Sampler, prompt: str, n: int) -> list[int]:
    tokens = engine.tokenize(prompt)
    engine.forget(0, 0)
    engine.clear_batch()
    for pos, token in enumerate(tokens):
        index = engine.add(token, pos, 0, pos == len(tokens) - 1)
    out = []
    for step in range(n):
        assert engine.decode() == 0
        token = sampler.sample(engine, index)
        out.append(token)
        engine.clear_batch()
        index = engine.add(token, len(tokens) + step, 0, True)
    sampler.close()
    return out


@pytest.mark.model
def test_plain_greedy_picks_what_llama_cpps_greedy_chain_picks(engine: Engine) -> None:
    """temperature 0 with nothing else takes the largest logit itself; a zero logit bias forces llama.cpp's own
    chain (logit bias, then greedy) on the same logits. Both must pick the same 48 tokens."""
    for prompt in ("Once upon a time", "The little dog ran to"):
        fast = Sampler(engine, Sampling(temperature=0))
        chain = Sampler(engine, Sampling(temperature=0, logit_bias=((5, 0.0),)))
        assert fast._ptr is None and chain._ptr is not None
        assert _greedy_tokens(engine, fast, prompt, 48) == _greedy_tokens(engine, chain, prompt, 48)


@pytest.mark.model
def test_a_rounded_up_prompt_tail_gives_the_text_a_fresh_cache_gives(engine: Engine) -> None:
    """A follow-up prompt re-sends a cached conversation plus a short tail; on the CPU the tail is evaluated
    as a whole flash-attention tile, with cached tokens evaluated again. The greedy answer must be the one
    the same prompt gets with nothing cached, and `cached_tokens` must count only what was kept."""
    story = "Once upon a time there was a little girl named Lily. She liked to play in the park with her dog. " * 20
    follow = story + "One day the dog saw a big red ball under a tree. He ran to get it, and Lily was very happy."

    def answer(batcher: Batcher, sent: list[dict[str, Any]], rid: str, prompt: str) -> dict[str, Any]:
        batcher.handle(rid, Job(prompt, Sampling(temperature=0), num_predict=24))
        while batcher.busy:
            batcher.step()
        done = next(m for m in sent if m.get("id") == rid and m["ev"] == "done")
        done["text"] = "".join(m["text"] for m in sent if m.get("id") == rid and m["ev"] == "text")
        return done

    for slot in range(engine.n_parallel):
        engine.forget(slot, 0)
    sent: list[dict[str, Any]] = []
    batcher = Batcher(engine, recorder(sent), functools.partial(Sampler, engine))
    answer(batcher, sent, "story", story)
    tokens = engine.tokenize(follow)
    prefix = max(common_prefix(s.tokens, tokens) for s in batcher.slots)  # what the slot holding the story shares
    cached = answer(batcher, sent, "follow", follow)
    for slot in range(engine.n_parallel):
        engine.forget(slot, 0)
    fresh_sent: list[dict[str, Any]] = []
    fresh = answer(Batcher(engine, recorder(fresh_sent), functools.partial(Sampler, engine)), fresh_sent, "f", follow)
    assert fresh["cached_tokens"] == 0 and cached["text"] == fresh["text"] and cached["text"]

    tail = len(tokens) - prefix
    assert 16 < tail < engine.tail_tile
    rounded = engine.worth_a_tile(tail, prefix)
    assert rounded or engine.n_vocab > 512  # stories260K: attention is most of the work, so it is rounded
    assert cached["cached_tokens"] == (prefix - (engine.tail_tile - tail) if rounded else prefix)
    assert cached["prompt_eval_count"] == len(tokens) - cached["cached_tokens"]


@pytest.mark.model
def test_flash_attention_off_gives_the_same_greedy_text_and_rounds_nothing() -> None:
    path = str(model_file("stories260K.gguf"))
    texts = []
    for flash in ("auto", "off"):
        engine = Engine(LoadSpec(model_path=path, n_ctx=256, n_threads=2, flash_attention=flash))
        try:
            assert bool(engine.tail_tile) == (flash == "auto")
            tokens = _greedy_tokens(engine, Sampler(engine, Sampling(temperature=0)), "Once upon a time", 24)
            texts.append(b"".join(engine.piece(t) for t in tokens).decode())
        finally:
            engine.close()
    assert texts[0] == texts[1] and "Lily" in texts[0]


@pytest.mark.model
def test_a_quantised_kv_cache_is_what_llama_cpp_keeps_and_it_answers(tmp_path: Path) -> None:
    """q8_0 and q4_0 reach llama.cpp (the sequence's saved state shrinks as their blocks do) and decode; a model
    whose heads a block does not divide (stories260K: 8) and flash attention off are refused, saying why."""
    path = str(write_random_llama(model_file("stories260K.gguf"), tmp_path / "heads-of-32.gguf"))
    state: dict[str, int] = {}
    for kv in ("f16", "q8_0", "q4_0"):
        engine = Engine(LoadSpec(model_path=path, n_ctx=256, n_threads=2, kv_cache_type=kv))
        try:
            tokens = _greedy_tokens(engine, Sampler(engine, Sampling(temperature=0)), "Once upon a time", 16)
            assert len(tokens) == 16 and all(0 <= t < engine.n_vocab for t in tokens)
            assert engine.decode() == 0
            state[kv] = int(llama_cpp.llama_state_seq_get_size(engine.ctx, 0))
        finally:
            engine.close()
    assert state["q4_0"] < state["q8_0"] < state["f16"], state
    with pytest.raises(LoadError, match="needs flash attention, but LOCALLLM_FLASH_ATTENTION is off"):
        Engine(LoadSpec(model_path=path, n_ctx=256, kv_cache_type="q8_0", flash_attention="off"))
    stories = str(model_file("stories260K.gguf"))
    with pytest.raises(LoadError, match="K cache type q8_0 with block size 32 does not divide n_embd_head_k=8"):
        Engine(LoadSpec(model_path=stories, n_ctx=256, kv_cache_type="q8_0"))


@pytest.fixture(scope="module")
def stories() -> Iterator[Engine]:
    loaded = Engine(LoadSpec(model_path=str(model_file("stories260K.gguf")), n_ctx=1024, n_threads=2))
    yield loaded
    loaded.close()


@pytest.mark.model
def test_repetition_penalties_take_effect(stories: Engine) -> None:
    """repeat_penalty (Ollama's Modelfiles often set 1.1), frequency and presence penalties build llama.cpp's
    penalties sampler (whose arguments differ between llama.cpp versions) and change what greedy decoding writes
    after a prompt that invites repetition (stories260K repeats itself; the random model never does)."""
    engine = stories
    prompt = "the cat the cat the cat the cat the cat"
    plain = _greedy_tokens(engine, Sampler(engine, Sampling(temperature=0)), prompt, 24)
    for penalty in ({"repeat_penalty": 1.8}, {"frequency_penalty": 1.5}, {"presence_penalty": 1.5}):
        sampler = Sampler(engine, Sampling(temperature=0, **penalty))  # type: ignore[arg-type]
        assert sampler._ptr is not None
        penalised = _greedy_tokens(engine, sampler, prompt, 24)
        assert penalised != plain, penalty
        assert len(set(penalised)) >= len(set(plain)), f"{penalty}: no less varied than without"
