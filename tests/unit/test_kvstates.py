"""The prompt cache's saved states without llama.cpp: the prefix index, the RAM bound and LRU, the disk tier."""

from __future__ import annotations

import os
import stat
from array import array
from pathlib import Path

import pytest

from localllm.runner import kvfiles, kvstates
from localllm.runner.kvfiles import KVFiles
from localllm.runner.kvstates import BLOCK, KVState, KVStates, PrefixIndex, chain

LAYOUT = {"model": "sha256:" + "ab" * 32, "n_ctx_seq": 2048, "n_parallel": 4, "kv_cache_type": "f16"}


class Seqs:
    """A stand-in engine: a sequence's state is the bytes of its tokens."""

    def __init__(self) -> None:
        self.kv: dict[int, list[int]] = {}
        self.refuse = False

    def save_state(self, seq: int) -> bytearray | None:
        return bytearray(array("i", self.kv[seq]).tobytes())

    def load_state(self, seq: int, data: bytearray) -> bool:
        if self.refuse:
            self.kv[seq] = []
            return False
        self.kv[seq] = list(array("i", bytes(data)))
        return True


def toks(seed: int, n: int) -> list[int]:
    return [(seed * 7919 + i * 31) % 5000 + 1 for i in range(n)]


def state_of(tokens: list[int]) -> bytearray:
    return bytearray(array("i", tokens).tobytes())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_the_index_finds_the_longest_common_prefix_to_the_token() -> None:
    cache = KVStates(1 << 20)
    base = toks(1, 300)
    short = cache.save(base[:100], state_of(base[:100]))
    other = cache.save(toks(2, 200), state_of(toks(2, 200)))
    assert short is not None and other is not None
    long = base[:250] + toks(3, 50)
    assert cache.save(long, state_of(long)) is not None  # covers base[:100]: that state goes
    found, n = cache.find(base[:270] + toks(4, 40))
    assert found is not None and list(found.tokens) == long and n == 250
    found, n = cache.find(base[:137])
    assert found is not None and n == 137
    assert cache.find(toks(9, 100)) == (None, 0), "nothing shares a whole block"
    assert cache.find(base[: BLOCK - 1]) == (None, 0), "shorter than a block"
    assert cache.stats().ram_states == 2


def test_a_lookup_compares_a_block_with_few_states_however_many_there_are(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = KVStates(1 << 30)
    for seed in range(400):
        tokens = toks(seed + 100, 96)
        cache.save(tokens, state_of(tokens))
    calls: list[int] = []
    real = kvstates._agree

    def counting(a: array[int], b: array[int], start: int, stop: int) -> int:
        calls.append(stop - start)
        return real(a, b, start, stop)

    monkeypatch.setattr(kvstates, "_agree", counting)
    wanted = toks(250, 96)
    found, n = cache.find(wanted[:80] + toks(7, 30))
    assert found is not None and list(found.tokens) == wanted and n == 80
    assert len(calls) == 1 and calls[0] <= BLOCK


def test_a_hash_that_names_other_tokens_is_never_taken() -> None:
    index = PrefixIndex()
    real = toks(5, 64)
    forged = KVState(array("i", toks(6, 64)), chain(real), size=1)  # hashes of `real`, tokens of something else
    index.add(forged)
    prompt = array("i", real)
    assert index.longest(prompt, chain(prompt)) == (None, 0)


def test_the_same_prefix_is_not_saved_twice() -> None:
    cache = KVStates(1 << 20)
    tokens = toks(1, 200)
    assert cache.wants(tokens)
    cache.save(tokens, state_of(tokens))
    assert not cache.wants(tokens) and not cache.wants(tokens[:150]), "covered by the saved state"
    assert not cache.wants(toks(2, 40)), "shorter than the minimum"
    assert cache.save(tokens[:150], state_of(tokens[:150])) is None
    assert cache.stats().ram_states == 1


def test_the_ram_bound_holds_and_the_least_recently_used_go_first() -> None:
    clock = Clock()
    one = len(state_of(toks(0, 100)))
    cache = KVStates(3 * one, clock=clock)
    saved = [cache.save(toks(seed, 100), state_of(toks(seed, 100))) for seed in range(3)]
    assert all(saved) and cache.stats().ram_bytes == 3 * one
    engine = Seqs()
    first = saved[0]
    assert first is not None and cache.restore(engine, 0, first)[0] == "ram"  # used: now the most recent
    for seed in (3, 4):
        cache.save(toks(seed, 100), state_of(toks(seed, 100)))
    stats = cache.stats()
    assert stats.ram_bytes <= 3 * one and stats.ram_states == 3
    assert cache.find(toks(0, 100))[1] == 100, "restored lately, kept"
    assert cache.find(toks(1, 100)) == (None, 0) and cache.find(toks(2, 100)) == (None, 0), "the oldest went"
    assert cache.find(toks(4, 100))[1] == 100
    assert cache.save(toks(9, 400), state_of(toks(9, 400))) is None, "bigger than the whole bound"


def test_the_count_of_states_is_bounded_too() -> None:
    cache = KVStates(1 << 30, max_states=5)
    for seed in range(8):
        cache.save(toks(seed, 70), state_of(toks(seed, 70)))
    assert cache.stats().ram_states == 5 and cache.find(toks(0, 70)) == (None, 0)


def test_zero_ram_and_no_disk_keep_nothing() -> None:
    cache = KVStates(0)
    assert not cache.enabled and not cache.wants(toks(1, 500))
    assert cache.save(toks(1, 500), state_of(toks(1, 500))) is None


def test_a_state_llama_cpp_refuses_is_dropped() -> None:
    cache = KVStates(1 << 20)
    state = cache.save(toks(1, 100), state_of(toks(1, 100)))
    engine = Seqs()
    engine.refuse = True
    assert state is not None and cache.restore(engine, 2, state)[0] == "none"
    assert cache.find(toks(1, 100)) == (None, 0) and cache.stats().ram_bytes == 0


def test_hits_and_misses_are_counted() -> None:
    cache = KVStates(1 << 20)
    cache.note("ram", 200, 210)
    cache.note("slot", 100, 120)
    cache.note("none", 0, 300)
    cache.note("slot", 1, 40)  # a BOS is no hit
    cache.note("none", 0, 5)  # too short to count
    stats = cache.stats()
    assert (stats.requests, stats.hits, stats.ram_hits, stats.slot_hits) == (4, 2, 1, 1)
    assert stats.hit_rate == 0.5 and stats.cached_tokens == 301 and stats.prompt_tokens == 670
    assert stats.as_dict()["hit_rate"] == 0.5


# -- the disk tier -------------------------------------------------------------------------------------


def disk(root: Path, layout: dict[str, object] = LAYOUT, limit: int = 1 << 30, ram: int = 1 << 20) -> KVStates:
    return KVStates(ram, KVFiles(root, layout, limit))


def test_states_on_disk_outlive_the_runner(tmp_path: Path) -> None:
    tokens = toks(1, 300)
    first = disk(tmp_path)
    first.save(tokens, state_of(tokens))
    first.close()
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (file,) = folder.glob("*.kvstate")
    assert stat.S_IMODE(file.stat().st_mode) == 0o600 and stat.S_IMODE(folder.stat().st_mode) == 0o700
    again = disk(tmp_path)
    state, n = again.find(tokens[:280] + toks(2, 10))
    assert state is not None and n == 280 and state.data is None
    engine = Seqs()
    assert again.restore(engine, 1, state)[0] == "disk" and engine.kv[1] == tokens
    assert state.data is not None, "kept in RAM once used"
    assert again.restore(engine, 0, state)[0] == "ram"
    again.close()


def test_a_state_of_another_layout_is_never_offered(tmp_path: Path) -> None:
    tokens = toks(1, 300)
    first = disk(tmp_path)
    first.save(tokens, state_of(tokens))
    first.close()
    for change in ({"n_ctx_seq": 4096}, {"kv_cache_type": "q8_0"}, {"model": "sha256:" + "cd" * 32}):
        other = disk(tmp_path, {**LAYOUT, **change})
        assert other.find(tokens) == (None, 0), change
        other.close()
    assert disk(tmp_path).find(tokens)[1] == 300, "the first layout's state is still there"


def test_a_corrupt_state_file_is_deleted_and_never_loaded(tmp_path: Path) -> None:
    tokens = toks(1, 300)
    first = disk(tmp_path)
    first.save(tokens, state_of(tokens))
    first.close()
    (file,) = tmp_path.glob("*/*.kvstate")
    raw = bytearray(file.read_bytes())
    raw[-10] ^= 0xFF  # a flipped byte in the state
    file.write_bytes(raw)
    again = disk(tmp_path)
    state, _ = again.find(tokens)
    engine = Seqs()
    assert state is not None and again.restore(engine, 0, state)[0] == "none"
    assert not file.exists() and 0 not in engine.kv, "refused before llama.cpp saw it"
    assert again.find(tokens) == (None, 0)


def test_a_truncated_or_foreign_state_file_is_deleted_when_found(tmp_path: Path) -> None:
    tokens = toks(1, 300)
    first = disk(tmp_path)
    first.save(tokens, state_of(tokens))
    first.save(toks(2, 300), state_of(toks(2, 300)))
    first.close()
    files = sorted(tmp_path.glob("*/*.kvstate"))
    files[0].write_bytes(files[0].read_bytes()[:-100])
    junk = files[0].parent / "junk.kvstate"
    junk.write_bytes(b"not a state")
    again = disk(tmp_path)
    assert not files[0].exists() and not junk.exists() and files[1].exists()
    assert again.stats().disk_states == 1


def test_the_disk_bound_holds_and_other_layouts_get_half_at_most(tmp_path: Path) -> None:
    size = len(state_of(toks(0, 100))) + 400 + kvfiles._HEAD_SIZE
    first = disk(tmp_path, limit=4 * size, ram=0)
    for seed in range(6):
        first.save(toks(seed, 100), state_of(toks(seed, 100)))
    first.close()
    assert len(list(tmp_path.glob("*/*.kvstate"))) == 4 and first.stats().disk_bytes <= 4 * size
    assert first.find(toks(0, 100)) == (None, 0) and first.find(toks(5, 100))[1] == 100
    for i, file in enumerate(sorted(tmp_path.glob("*/*.kvstate"), key=lambda p: p.stat().st_mtime)):
        os.utime(file, (1000.0 + i, 1000.0 + i))
    other = disk(tmp_path, {**LAYOUT, "n_parallel": 1}, limit=4 * size, ram=0)
    assert len(list(tmp_path.glob("*/*.kvstate"))) == 2, "the first layout's oldest went, to half the bound"
    assert other.stats().disk_limit == 2 * size
    other.close()


def test_a_starting_runner_reads_its_newest_states_back_in_the_background(tmp_path: Path) -> None:
    first = disk(tmp_path)
    saved = [toks(seed, 200) for seed in range(3)]
    for tokens in saved:
        first.save(tokens, state_of(tokens))
    first.close()
    one = len(state_of(saved[0])) + 4 * 200 + kvfiles._HEAD_SIZE
    again = disk(tmp_path, ram=2 * one)  # room for the two newest
    assert again.files is not None
    again.files.close()  # (waits for the reads queued at the start)
    for path in tmp_path.glob("*/*.kvstate"):
        path.unlink()  # what was read back needs no file any more; the rest does
    engine = Seqs()
    for tokens, restored in zip(saved, ("none", "disk", "disk"), strict=True):
        state, _ = again.find(tokens)
        assert state is not None and again.restore(engine, 0, state)[0] == restored
    assert engine.kv[0] == saved[2]
