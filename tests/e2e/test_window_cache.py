"""A sliding-window model's cache on real llama.cpp (the tiny random Gemma 3 of tests/shapes.py: 5 window layers
of 64 tokens and 1 global), with and without `swa_full`: what `Engine.cuttable` and `forget` allow, and what
the engine turns on for it (tail rounding, checkpoints, the state layout)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from localllm.runner.engine import FA_TILE, Engine, Logits
from localllm.runner.protocol import LoadSpec

from ..conftest import model_file
from ..shapes import write_shape

pytestmark = [pytest.mark.model]

N_CTX = 1024  # per slot; without swa_full the window layers keep 768 cells a slot (64 + a ubatch of 512, padded)
PROMPT = [(i * 7919) % 30000 + 100 for i in range(1000)]


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gemma3")
    return write_shape(folder / "gemma3-tiny-F16.gguf", "gemma3", model_file("llama-2-tiny-random.gguf"))


@pytest.fixture(scope="module", params=[False, True], ids=["window", "swa_full"])
def engine(request: pytest.FixtureRequest, gemma3: Path) -> Iterator[Engine]:
    e = Engine(LoadSpec(model_path=str(gemma3), n_ctx=N_CTX, n_parallel=2, swa_full=request.param, cache_ram=0))
    assert e.swa_full is request.param
    try:
        yield e
    finally:
        e.close()


def evaluate(engine: Engine, seq: int, tokens: list[int], start: int) -> Logits:
    """Evaluate `tokens[start:]` into `seq` (whose cache holds `tokens[:start]`); the last token's logits."""
    last = 0
    for at in range(start, len(tokens), 256):
        engine.clear_batch()
        for pos in range(at, min(len(tokens), at + 256)):
            last = engine.add(tokens[pos], pos, seq, pos == len(tokens) - 1)
        assert engine.decode() == 0
    return engine.keep_logits(last)


def pos_max(engine: Engine, seq: int) -> int:
    return int(llama_cpp.llama_memory_seq_pos_max(engine.memory, seq))


def test_what_swa_full_turns_on(engine: Engine) -> None:
    assert engine.n_swa == 64 and engine.checkpoints, "a restored state holds its window only: checkpoints either way"
    assert engine.tail_tile == (FA_TILE if engine.swa_full else 0), "a slot can be cut: its tail is rounded up"
    assert ("swa_full" in engine.state_layout()) is engine.swa_full


def test_a_slot_is_cut_back_to_a_short_prefix_with_swa_full_only(engine: Engine) -> None:
    """A thousand tokens overflow the window layers' 768 cells: without swa_full they reused the cells of the
    beginning, and a cut to 200 tokens is refused (the sequence emptied); with it, the cut gives the logits a
    fresh evaluation of the same tokens gives."""
    for seq in (0, 1):
        engine.forget(seq, 0)
    evaluate(engine, 0, PROMPT, 0)
    assert engine.cuttable(0, 990), "within the window, either way"
    assert engine.cuttable(0, 200) is engine.swa_full
    assert engine.forget(0, 200) is engine.swa_full
    if not engine.swa_full:
        assert pos_max(engine, 0) == -1, "refused: all of it dropped"
        return
    assert pos_max(engine, 0) == 199
    other = PROMPT[:200] + [5000 + i for i in range(50)]
    cut = evaluate(engine, 0, other, 200)
    fresh = evaluate(engine, 1, other, 0)
    assert int(cut.argmax()) == int(fresh.argmax())
    assert np.allclose(cut, fresh, atol=0.05), float(np.abs(cut - fresh).max())


def test_a_restored_state_is_never_cut_back_past_its_end(engine: Engine) -> None:
    """llama.cpp saves a window layer's last 64 positions only, with swa_full too: restored, a cut anywhere
    before its end is refused and the sequence emptied (it once passed when the cut emptied the window layers,
    leaving no position to compare, and the next tokens attended to nothing there)."""
    for seq in (0, 1):
        engine.forget(seq, 0)
    evaluate(engine, 0, PROMPT[:400], 0)
    state = engine.save_state(0)
    assert state is not None and engine.load_state(1, state)
    assert pos_max(engine, 1) == 399
    for keep in (200, 380):
        assert not engine.cuttable(1, keep)
    assert not engine.forget(1, 200) and pos_max(engine, 1) == -1
    assert engine.load_state(1, state)
    assert not engine.forget(1, 380) and pos_max(engine, 1) == -1
    assert engine.load_state(1, state)
    assert engine.forget(1, 400) and pos_max(engine, 1) == 399, "nothing cut: nothing lost"
