"""Write a copy of a GGUF with extra metadata (e.g. a chat template), tensors unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from gguf import GGUFReader, GGUFValueType, GGUFWriter


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
