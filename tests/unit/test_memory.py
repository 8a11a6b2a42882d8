"""Memory estimates, the probes of free RAM and VRAM, and how many layers go on the GPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from localllm.config import Settings
from localllm.domain.errors import InvalidRequest
from localllm.observability.machine import Memory, SystemMemory, parse_meminfo, parse_nvidia_smi_gpus
from localllm.scheduling.memory import (
    Estimate,
    GiB,
    MiB,
    ModelShape,
    context_that_fits,
    estimate,
    fit_layers,
    format_bytes,
    kv_bytes,
    kv_cache_type_for,
    place,
)

LLAMA_8B = {
    "llama.block_count": 32,
    "llama.embedding_length": 4096,
    "llama.attention.head_count": 32,
    "llama.attention.head_count_kv": 8,
}


def test_shape_from_gguf_metadata() -> None:
    shape = ModelShape.from_metadata(LLAMA_8B, "llama")
    assert shape == ModelShape(block_count=32, embedding_length=4096, head_count=32, head_count_kv=8)
    assert shape.kv_width() == 8 * (128 + 128), "K and V of 8 KV heads of 4096/32 dims"


def test_shape_prefers_key_and_value_lengths_and_reads_per_layer_arrays() -> None:
    meta = {
        "gemma.block_count": 4,
        "gemma.embedding_length": 2048,
        "gemma.attention.head_count": 8,
        "gemma.attention.head_count_kv": [1, 2, 2, 1],
        "gemma.attention.key_length": 256,
        "gemma.attention.value_length": 128,
    }
    shape = ModelShape.from_metadata(meta, "gemma")
    assert shape.head_count_kv == 2, "the largest of the per-layer counts"
    assert shape.kv_width() == 2 * (256 + 128)


def test_shape_without_head_counts_assumes_full_attention() -> None:
    shape = ModelShape.from_metadata({"tiny.block_count": 2, "tiny.embedding_length": 8}, "tiny")
    assert shape.kv_width() == 16
    assert ModelShape().kv_width() == 0
    assert ModelShape.from_metadata({"x.block_count": True, "x.embedding_length": "8"}, "x") == ModelShape()


def test_estimate_counts_kv_for_every_slot_and_a_compute_allowance() -> None:
    shape = ModelShape.from_metadata(LLAMA_8B, "llama")
    est = estimate(5 * GiB, shape, n_ctx=8192, n_parallel=4)
    assert est.kv == 2 * 32 * 8192 * 4 * 2048 == 4 * GiB, "f16 K+V x layers x tokens of all slots x width"
    assert est.compute == 5 * GiB // 20
    assert est.size == 9 * GiB and est.total == 9 * GiB + est.compute
    assert estimate(10 * MiB, ModelShape(), n_ctx=128, n_parallel=1) == Estimate(10 * MiB, 0, 64 * MiB, 0)


def test_the_kv_cache_type_scales_the_kv_estimate_by_its_block_size() -> None:
    shape = ModelShape.from_metadata(LLAMA_8B, "llama")
    f16 = estimate(5 * GiB, shape, n_ctx=8192, n_parallel=4)
    q8 = estimate(5 * GiB, shape, n_ctx=8192, n_parallel=4, kv_cache_type="q8_0")
    q4 = estimate(5 * GiB, shape, n_ctx=8192, n_parallel=4, kv_cache_type="q4_0")
    elements = f16.kv // 2
    assert q8.kv == elements * 34 // 32, "q8_0: 34 bytes per block of 32"
    assert q4.kv == elements * 18 // 32, "q4_0: 18 bytes per block of 32"
    assert q8.weights == q4.weights == f16.weights and q8.compute == f16.compute
    assert kv_bytes(33, "q8_0") == 36 and kv_bytes(3) == 6, "rounded up, never down"
    # a quantised cache lets the default context grow on the same machine
    wide = ModelShape(block_count=32, embedding_length=4096, head_count=32, head_count_kv=8)
    tight = context_that_fits(5 * GiB, wide, n_parallel=4, memory=8 * GiB, want=32768)
    assert context_that_fits(5 * GiB, wide, n_parallel=4, memory=8 * GiB, want=32768, kv_cache_type="q4_0") > tight


def test_the_kv_cache_type_a_model_loads_with() -> None:
    heads_of_64 = ModelShape(block_count=30, embedding_length=576, head_count=9, head_count_kv=3)
    heads_of_8 = ModelShape(block_count=5, embedding_length=64, head_count=8, head_count_kv=4)  # stories260K
    assert heads_of_64.holds("q4_0") and not heads_of_8.holds("q8_0") and heads_of_8.holds("f16")
    assert ModelShape().holds("q8_0"), "an unknown shape is left to llama.cpp"
    settings = Settings.from_env({"LOCALLLM_KV_CACHE_TYPE": "q8_0"})
    assert kv_cache_type_for(settings, None, heads_of_64, embedding=False) == "q8_0", "the daemon's type"
    assert kv_cache_type_for(settings, "q4_0", heads_of_64, embedding=False) == "q4_0", "the model's option wins"
    assert kv_cache_type_for(settings, "q4_0", heads_of_64, embedding=True) == "f16", "an embedding model: f16"
    assert kv_cache_type_for(settings, None, heads_of_8, embedding=False) == "f16", "the daemon's does not fit"
    with pytest.raises(InvalidRequest) as err:
        kv_cache_type_for(settings, "q8_0", heads_of_8, embedding=False)
    assert err.value.field == "options.kv_cache_type"
    assert "q8_0 stores blocks of 32 values, and this model's attention heads hold 8" in str(err.value)
    off = Settings.from_env({"LOCALLLM_FLASH_ATTENTION": "off"})
    assert kv_cache_type_for(off, None, heads_of_64, embedding=False) == "f16"
    with pytest.raises(InvalidRequest) as err:
        kv_cache_type_for(off, "q8_0", heads_of_64, embedding=False)
    assert err.value.field == "options.kv_cache_type"
    assert "q8_0 needs flash attention, but LOCALLLM_FLASH_ATTENTION is off" in str(err.value)


def test_bytes_on_gpu_per_layer() -> None:
    est = Estimate(weights=30 * GiB, kv=2 * GiB, compute=GiB, layers=32)
    assert est.on_gpu(0) == 0
    assert est.on_gpu(8) == 8 * GiB + GiB, "a quarter of weights and KV, and the compute buffer"
    assert est.on_gpu(32) == est.on_gpu(33) == est.total
    assert Estimate(weights=GiB, kv=0, compute=0, layers=0).on_gpu(1) == GiB, "layers unknown: all of it"


def test_fit_layers() -> None:
    est = Estimate(weights=30 * GiB, kv=2 * GiB, compute=GiB, layers=32)
    assert fit_layers(est, 40 * GiB) == 33, "everything, the output layer too"
    assert fit_layers(est, 9 * GiB) == 8
    assert fit_layers(est, 9 * GiB - 1) == 7
    assert fit_layers(est, GiB) == 0


def test_place_on_cpu_only_machine() -> None:
    est = Estimate(weights=4 * GiB, kv=GiB, compute=GiB, layers=32)
    p = place(est, Memory(ram_total=16 * GiB, ram_free=8 * GiB), num_gpu=-1)
    assert (p.gpu_layers, p.ram, p.vram, p.fits) == (-1, 6 * GiB, 0, True)
    assert not place(est, Memory(ram_total=16 * GiB, ram_free=5 * GiB), num_gpu=-1).fits


def test_place_fits_layers_to_free_vram_less_the_overhead() -> None:
    est = Estimate(weights=30 * GiB, kv=2 * GiB, compute=GiB, layers=32)
    free = Memory(ram_total=64 * GiB, ram_free=64 * GiB, vram_total=24 * GiB, vram_free=9 * GiB + 512 * MiB)
    p = place(est, free, num_gpu=-1, gpu_overhead=512 * MiB)
    assert (p.gpu_layers, p.vram, p.ram, p.fits) == (8, 9 * GiB, 24 * GiB, True)
    whole = place(est, Memory(64 * GiB, 64 * GiB, 48 * GiB, 48 * GiB), num_gpu=-1)
    assert (whole.gpu_layers, whole.vram, whole.ram) == (33, est.total, 0)


def test_place_honours_an_explicit_num_gpu() -> None:
    est = Estimate(weights=30 * GiB, kv=2 * GiB, compute=GiB, layers=32)
    free = Memory(ram_total=64 * GiB, ram_free=64 * GiB, vram_total=24 * GiB, vram_free=4 * GiB)
    p = place(est, free, num_gpu=16, gpu_overhead=0)
    assert p.gpu_layers == 16 and p.vram == 17 * GiB and not p.fits, "16 layers do not fit in 4 GiB"
    assert place(est, free, num_gpu=0).vram == 0


def test_place_with_unknown_layers_is_all_or_nothing() -> None:
    est = Estimate(weights=GiB, kv=0, compute=64 * MiB, layers=0)
    big = Memory(8 * GiB, 8 * GiB, 8 * GiB, 8 * GiB)
    assert place(est, big, num_gpu=-1).gpu_layers == -1
    small = Memory(8 * GiB, 8 * GiB, GiB, GiB)
    assert place(est, small, num_gpu=-1).gpu_layers == 0


def test_free_memory_counts_what_loaded_models_need() -> None:
    m = Memory(ram_total=16 * GiB, ram_free=12 * GiB, vram_total=8 * GiB, vram_free=8 * GiB)
    assert m.minus(6 * GiB, 2 * GiB) == Memory(16 * GiB, 10 * GiB, 8 * GiB, 6 * GiB)
    assert m.minus(2 * GiB, 0).ram_free == 12 * GiB, "the OS's figure when it is the tighter one"
    assert m.minus(20 * GiB, 0).ram_free == 0
    assert m.plus(6 * GiB, 1 * GiB) == Memory(16 * GiB, 16 * GiB, 8 * GiB, 8 * GiB)


def test_parse_meminfo() -> None:
    text = "MemTotal:       16303428 kB\nMemFree:         1000000 kB\nMemAvailable:    8151714 kB\nHugePages_Total: 0\n"
    assert parse_meminfo(text) == (16303428 * 1024, 8151714 * 1024)
    old = "MemTotal: 1000 kB\nMemFree: 100 kB\nCached: 200 kB\n"
    assert parse_meminfo(old) == (1000 * 1024, 300 * 1024), "no MemAvailable (old kernels): free + cached"
    with pytest.raises(ValueError):
        parse_meminfo("")


def parse_nvidia_smi(text: str, visible: str | None = None) -> tuple[int, int]:
    """(free, total) over the GPUs, as SystemMemory sums them."""
    gpus = parse_nvidia_smi_gpus(text, visible)
    return sum(free for free, _ in gpus), sum(total for _, total in gpus)


def test_parse_nvidia_smi() -> None:
    text = "0, 20000, 24564\n1, [N/A], [N/A]\n2, 1000, 8192\n"
    assert parse_nvidia_smi(text) == (21000 * MiB, 32756 * MiB)
    assert parse_nvidia_smi(text, "2") == (1000 * MiB, 8192 * MiB), "CUDA_VISIBLE_DEVICES by index"
    assert parse_nvidia_smi(text, "GPU-1234") == (21000 * MiB, 32756 * MiB), "UUIDs: not filtered"
    assert parse_nvidia_smi("") == (0, 0)


def test_system_memory_without_meminfo_asks_sysconf(tmp_path: Path) -> None:
    m = SystemMemory(meminfo=tmp_path / "missing", nvidia_smi=None).snapshot()
    assert m.ram_total == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") and 0 < m.ram_free <= m.ram_total


def test_this_machine_has_memory() -> None:
    m = SystemMemory().snapshot()
    assert m.ram_total > 0 and 0 < m.ram_free <= m.ram_total
    assert m.vram_free <= m.vram_total


def test_format_bytes() -> None:
    assert format_bytes(3 * GiB // 2) == "1.5 GiB"
    assert format_bytes(64 * MiB) == "64 MiB"


def test_default_context_shrinks_to_fit_the_machine() -> None:
    shape = ModelShape(block_count=32, embedding_length=4096, head_count=32, head_count_kv=8)  # 8B-like
    weights = 5 * GiB
    per_token = 2 * 32 * 8 * 128 * 2  # f16 K and V, 32 layers, 8 KV heads of 128
    roomy = context_that_fits(weights, shape, n_parallel=4, memory=64 * GiB, want=8192)
    assert roomy == 8192
    tight = context_that_fits(weights, shape, n_parallel=4, memory=8 * GiB, want=8192)
    assert tight < 8192 and tight % 256 == 0
    assert estimate(weights, shape, n_ctx=tight, n_parallel=4).total <= 8 * GiB
    assert estimate(weights, shape, n_ctx=tight * 2, n_parallel=4).total > 8 * GiB
    assert per_token * 4 * tight < 3 * GiB
    # Never shrunk to nothing: below the floor the scheduler refuses with a message instead.
    assert context_that_fits(weights, shape, n_parallel=4, memory=1 * GiB, want=8192) == 2048
    assert context_that_fits(weights, shape, n_parallel=4, memory=1 * GiB, want=512) == 512


GEMMA3_1B = {  # Gemma 3 1B's geometry: 26 layers, a global one every 6th (llama.cpp's pattern), a 512 window
    "gemma3.block_count": 26,
    "gemma3.embedding_length": 1152,
    "gemma3.attention.head_count": 4,
    "gemma3.attention.head_count_kv": 1,
    "gemma3.attention.key_length": 256,
    "gemma3.attention.value_length": 256,
    "gemma3.attention.sliding_window": 512,
}


def test_sliding_window_layers_keep_their_window_unless_swa_full() -> None:
    shape = ModelShape.from_metadata(GEMMA3_1B, "gemma3")
    assert shape.sliding_window == 512 and shape.window_layers == 26 - 4, "layers 5, 11, 17, 23 are global"
    width = 1 * (256 + 256)
    window = estimate(1 * GiB, shape, n_ctx=8192, n_parallel=2)
    full = estimate(1 * GiB, shape, n_ctx=8192, n_parallel=2, swa_full=True)
    # llama.cpp's window layers: the window and a micro-batch (512 + 512), padded to 256 cells, per slot
    assert window.kv == 2 * 2 * width * (4 * 8192 + 22 * 1024)
    assert full.kv == 2 * 2 * width * 26 * 8192, "swa_full: every layer at the full context"
    assert full.total - window.total == 2 * 2 * width * 22 * (8192 - 1024)
    small_batch = estimate(1 * GiB, shape, n_ctx=8192, n_parallel=2, n_batch=64)
    assert small_batch.kv == 2 * 2 * width * (4 * 8192 + 22 * 768), "512 + 64 cells, padded to 768"
    short = estimate(1 * GiB, shape, n_ctx=512, n_parallel=2)
    assert short.kv == estimate(1 * GiB, shape, n_ctx=512, n_parallel=2, swa_full=True).kv, "never past n_ctx"


def test_a_window_pattern_the_gguf_writes_wins_and_an_unknown_one_counts_every_layer_in_full() -> None:
    flags = [True, True, False, True]
    written = ModelShape.from_metadata(
        {**GEMMA3_1B, "gemma3.block_count": 4, "gemma3.attention.sliding_window_pattern": flags}, "gemma3"
    )
    assert written.window_layers == 3
    every_third = ModelShape.from_metadata({**GEMMA3_1B, "gemma3.attention.sliding_window_pattern": 3}, "gemma3")
    assert every_third.window_layers == 26 - 26 // 3
    other = {key.replace("gemma3.", "mistral3."): value for key, value in GEMMA3_1B.items()}
    unknown = ModelShape.from_metadata(other, "mistral3")
    assert unknown.sliding_window == 512 and unknown.window_layers == 0
    assert (
        estimate(GiB, unknown, n_ctx=8192, n_parallel=1).kv
        == estimate(GiB, unknown, n_ctx=8192, n_parallel=1, swa_full=True).kv
    ), "the pattern unknown: an upper bound, as if swa_full"
    plain = ModelShape.from_metadata({k: v for k, v in GEMMA3_1B.items() if "sliding" not in k}, "gemma3")
    assert plain.window_layers == 0, "no window: no window layers, whatever the architecture"
