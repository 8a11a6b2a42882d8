"""Write a copy of a GGUF with extra metadata (e.g. a chat template), tensors unchanged."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path

from gguf import GGUFReader, GGUFValueType, GGUFWriter

from localllm.modelstore.gguf import _Reader


def copy_with_metadata(src: Path, dst: Path, extra: Mapping[str, str | int | list[str]]) -> Path:
    """A copy of `src` with `extra` metadata set (replacing what it had under those keys)."""
    reader = GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(str(dst), arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture" or field.name in extra:
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    for key, value in extra.items():
        if isinstance(value, list):
            writer.add_array(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_string(key, value)
    for tensor in reader.tensors:
        writer.add_tensor_info(
            tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data)
    writer.close()
    return dst


def write_lora(
    base: Path, dst: Path, *, tensors: tuple[str, ...], rank: int = 4, scale: float = 1.0, seed: int = 0
) -> Path:
    """A LoRA adapter GGUF for `base` (random A and B, times `scale`; 0 leaves the model unchanged), in the layout
    llama.cpp loads: `<tensor>.lora_a` is [in, rank] and `<tensor>.lora_b` is [rank, out] (ggml order)."""
    import numpy as np

    reader = GGUFReader(str(base))
    arch = reader.fields["general.architecture"].contents()
    shapes = {t.name: t.data.shape for t in reader.tensors}  # numpy order: (out, in)
    writer = GGUFWriter(str(dst), arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    rng = np.random.default_rng(seed)
    for name in tensors:
        out, inp = shapes[name]
        writer.add_tensor(f"{name}.lora_a", (rng.standard_normal((rank, inp)) * scale).astype(np.float32))
        writer.add_tensor(f"{name}.lora_b", (rng.standard_normal((out, rank)) * scale).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def with_raw_kv(src: Path, dst: Path, key: str, payload: bytes, *, hole: int = 0) -> Path:
    """A copy of `src` with one more metadata key (its type and value bytes in `payload`, then `hole` zero bytes
    written as a sparse hole), tensors unchanged: tensor offsets are relative to the aligned data section."""
    data = src.read_bytes()
    with _Reader(str(src), verbose=False) as reader:
        reader.read_metadata()
        kv_end = reader.pos
        reader.tensors()
        infos_end = reader.pos
        align = int(reader.meta.get("general.alignment") or 32)
    data_start = -(-infos_end // align) * align
    n_tensors, n_keys = struct.unpack_from("<QQ", data, 8)
    head = data[:8] + struct.pack("<QQ", n_tensors, n_keys + 1) + data[24:kv_end]
    key_bytes = struct.pack("<Q", len(key.encode())) + key.encode()
    with dst.open("wb") as f:
        f.write(head + key_bytes + payload)
        f.seek(hole, 1)
        f.write(data[kv_end:infos_end])
        f.write(b"\0" * (-f.tell() % align))
        f.write(data[data_start:])
    return dst


def write_reranker(src: Path, dst: Path, *, seed: int = 0) -> Path:
    """A cross-encoder reranker made from a BERT embedding GGUF (`src`): its tensors and metadata, pooling type
    rank (4), and a seeded random classification head as llama.cpp's BERT loader reads it: `cls.weight`
    [n_embd, n_embd] and `cls.bias`, then `cls.output.weight` [n_embd -> 1] and `cls.output.bias`. llama.cpp
    scores a (query, document) pair as cls.output · tanh(cls · h[CLS] + cls.bias) + cls.output.bias."""
    import numpy as np

    reader = GGUFReader(str(src))
    arch = str(reader.fields["general.architecture"].contents())
    n_embd = int(reader.fields[f"{arch}.embedding_length"].contents())
    pooling = f"{arch}.pooling_type"
    writer = GGUFWriter(str(dst), arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", pooling):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    writer.add_uint32(pooling, 4)
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(n_embd)
    head = {
        "cls.weight": (rng.standard_normal((n_embd, n_embd)) * scale).astype(np.float32),
        "cls.bias": (rng.standard_normal(n_embd) * 0.1).astype(np.float32),
        "cls.output.weight": (rng.standard_normal((1, n_embd)) * scale * 4).astype(np.float32),
        "cls.output.bias": np.array([0.25], dtype=np.float32),
    }
    for tensor in reader.tensors:
        writer.add_tensor_info(
            tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
        )
    for name, array in head.items():
        writer.add_tensor_info(name, array.shape, array.dtype, array.nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data)
    for array in head.values():
        writer.write_tensor_data(array)
    writer.close()
    return dst


def write_random_llama(
    tokenizer_from: Path,
    dst: Path,
    *,
    n_embd: int = 64,
    n_head: int = 2,
    n_layer: int = 2,
    seed: int = 0,
    chat_template: str | None = None,
    context_length: int | None = None,
    name: str | None = None,
    tied: bool = False,
) -> Path:
    """A llama with seeded random F32 weights and the tokenizer (and context length) of `tokenizer_from`:
    gibberish at the cost of its shape. Heads of n_embd / n_head values (64 / 2 = 32: whole q8_0 and q4_0
    blocks, which stories260K's heads of 8 are not), one KV head per two query heads. `chat_template`,
    `context_length` and `name` replace the source's; `tied`: no output matrix, the token embeddings (F16,
    unscaled, so that greedy choices are not all ties) are the output too."""
    import numpy as np

    reader = GGUFReader(str(tokenizer_from))
    writer = GGUFWriter(str(dst), "llama")
    for field in reader.fields.values():
        if chat_template is not None and field.name == "tokenizer.chat_template":
            continue
        if context_length is not None and field.name == "llama.context_length":
            continue
        if field.name.startswith("tokenizer.") or field.name == "llama.context_length":
            vtype = field.types[0]
            sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    if chat_template is not None:
        writer.add_string("tokenizer.chat_template", chat_template)
    if context_length is not None:
        writer.add_context_length(context_length)
    if name is not None:
        writer.add_name(name)
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    n_head_kv, n_ff, head = max(1, n_head // 2), 2 * n_embd, n_embd // n_head
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head)
    writer.add_layer_norm_rms_eps(1e-5)
    rng = np.random.default_rng(seed)

    def mat(name: str, rows: int, cols: int) -> None:
        writer.add_tensor(name, (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32))

    def norm(name: str) -> None:
        writer.add_tensor(name, np.ones(n_embd, dtype=np.float32))

    if tied:
        writer.add_tensor("token_embd.weight", rng.standard_normal((n_vocab, n_embd)).astype(np.float16))
    else:
        mat("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layer):
        norm(f"blk.{i}.attn_norm.weight")
        mat(f"blk.{i}.attn_q.weight", n_embd, n_embd)
        mat(f"blk.{i}.attn_k.weight", head * n_head_kv, n_embd)
        mat(f"blk.{i}.attn_v.weight", head * n_head_kv, n_embd)
        mat(f"blk.{i}.attn_output.weight", n_embd, n_embd)
        norm(f"blk.{i}.ffn_norm.weight")
        mat(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        mat(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        mat(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    norm("output_norm.weight")
    if not tied:
        mat("output.weight", n_vocab, n_embd)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst
