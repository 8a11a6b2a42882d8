"""How a model's load spec and memory estimate follow what it loads with (service/loadref.py): a draft model
(Modelfile DRAFT, runner/speculate.py), which loads beside it with a context of its own (the same slots, context
and cache type), so its weights, KV cache and compute buffer are counted with the model's; and `swa_full`
(LOCALLLM_SWA_FULL, the option), which gives a sliding-window model's window layers the full context."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from gguf import GGUFWriter

from localllm.config import Settings
from localllm.config.values import parse_host
from localllm.domain.names import parse_name
from localllm.domain.options import Options
from localllm.modelstore.models import read_model
from localllm.modelstore.store import MEDIA_DRAFT, Layer, Manifest, Store
from localllm.observability.machine import Memory
from localllm.runner.protocol import LoadSpec
from localllm.scheduling.memory import MIN_COMPUTE, GiB
from localllm.service.loadref import model_ref

from ..fakes import write_tiny_gguf


def write_draft(path: Path, arch: str = "llama", window: int = 0) -> Path:
    """A draft's geometry: 4 layers, 2 KV heads of 64 dims; 1 MiB of weights (`window`: sliding-window layers)."""
    w = GGUFWriter(str(path), arch)
    if window:
        w.add_sliding_window(window)
    w.add_block_count(4)
    w.add_embedding_length(256)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_context_length(4096)
    w.add_token_list(["<unk>", "<s>", "</s>", "a"])
    w.add_tensor("token_embd.weight", np.zeros((1024, 256), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_the_estimate_counts_the_draft_models_weights_kv_cache_and_compute(tmp_path: Path) -> None:
    store = Store(tmp_path / "models")
    tiny = store.add_blob_file(write_tiny_gguf(tmp_path / "tiny.gguf"))
    blob = store.add_blob_file(write_draft(tmp_path / "draft.gguf"))
    store.write_manifest(parse_name("plain"), Manifest((tiny,)))
    store.write_manifest(parse_name("drafted"), Manifest((tiny, Layer(MEDIA_DRAFT, blob.digest, blob.size))))
    settings = Settings(host=parse_host(""), models_dir=store.root)
    machine = Memory(ram_total=64 * GiB, ram_free=64 * GiB, vram_total=0, vram_free=0)
    options = Options(num_ctx=1024)

    plain = model_ref(read_model(store, parse_name("plain")), options, settings, store, lambda: machine)
    drafted = model_ref(read_model(store, parse_name("drafted")), options, settings, store, lambda: machine)
    assert drafted.spec.draft == str(store.blob_path(blob.digest))
    assert drafted.size == plain.size == tiny.size, "the model's weights are its own file's"
    assert blob.size > 1 << 20
    # the draft's KV: 4 layers x 1024 tokens x every slot x (K + V of 2 heads of 64) x 2 bytes (f16)
    draft_kv = 4 * 1024 * settings.num_parallel * 2 * (64 + 64) * 2
    est, base = drafted.estimate(), plain.estimate()
    assert est.draft == blob.size + draft_kv + MIN_COMPUTE
    assert est.total - base.total == blob.size + draft_kv + MIN_COMPUTE
    assert est.size - base.size == est.draft, "/api/ps's size counts the draft"
    assert est.on_gpu(est.layers + 1) == est.total, "all of it on the GPU with every layer"


def test_swa_full_follows_the_setting_and_the_option_for_a_sliding_window_model_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "models")
    gemma = store.add_blob_file(write_draft(tmp_path / "gemma3.gguf", "gemma3", window=128))
    llama = store.add_blob_file(write_draft(tmp_path / "llama.gguf"))
    store.write_manifest(parse_name("gemma"), Manifest((gemma,)))
    store.write_manifest(parse_name("llama"), Manifest((llama,)))
    machine = Memory(ram_total=64 * GiB, ram_free=64 * GiB, vram_total=0, vram_free=0)
    off = Settings(host=parse_host(""), models_dir=store.root)
    on = replace(off, swa_full=True)
    assert Settings.from_env({"LOCALLLM_SWA_FULL": "1"}).swa_full and not off.swa_full

    def spec_of(name: str, settings: Settings, swa_full: bool | None = None) -> LoadSpec:
        options = Options(num_ctx=4096, swa_full=swa_full)
        return model_ref(read_model(store, parse_name(name)), options, settings, store, lambda: machine).spec

    assert not spec_of("gemma", off).swa_full and spec_of("gemma", on).swa_full
    assert spec_of("gemma", off, True).swa_full and not spec_of("gemma", on, False).swa_full, "the option wins"
    assert not spec_of("llama", on).swa_full and not spec_of("llama", off, True).swa_full, "no window: ignored"
    assert spec_of("llama", on) == spec_of("llama", off), "the same runner either way"

    def total(settings: Settings) -> int:
        ref = model_ref(read_model(store, parse_name("gemma")), Options(num_ctx=4096), settings, store, lambda: machine)
        return ref.estimate().total

    # 4 layers, all sliding (gemma3's pattern: every 6th is global), a 128-token window and a micro-batch of
    # 512, padded to 768 cells; K and V of 2 heads of 64 dims in f16, every slot
    per_cell = off.num_parallel * 2 * (64 + 64) * 2
    assert total(on) - total(off) == 4 * (4096 - 768) * per_cell
