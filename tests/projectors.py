"""Small multimodal projector GGUFs (mmproj) for the store's tests: the metadata llama.cpp's converter writes
(`general.type` mmproj, architecture `clip`, `clip.has_vision_encoder` / `clip.has_audio_encoder`, the encoder's
sizes) and a couple of random tensors. Enough for the store, `show`, pull and create; not a projector mtmd can
run (the runner's tests load the tiny real vision model for that)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFWriter


def write_projector(
    path: Path,
    *,
    vision: bool = True,
    audio: bool = False,
    general_type: str | None = "mmproj",
    architecture: str = "clip",
    seed: int = 0,
    size: int = 4096,
) -> Path:
    """A projector GGUF at `path` with about `size` bytes of tensors; `seed` makes its bytes (and digest) its own."""
    rng = np.random.default_rng(seed)
    writer = GGUFWriter(str(path), architecture)
    if general_type is not None:
        writer.add_string("general.type", general_type)
    writer.add_string("general.name", path.stem)
    writer.add_bool("clip.has_vision_encoder", vision)
    writer.add_bool("clip.has_audio_encoder", audio)
    writer.add_string("clip.projector_type", "gemma3" if vision else "ultravox")
    if vision:
        writer.add_uint32("clip.vision.embedding_length", 64)
        writer.add_uint32("clip.vision.projection_dim", 32)
        writer.add_uint32("clip.vision.block_count", 2)
        writer.add_uint32("clip.vision.image_size", 224)
    if audio:
        writer.add_uint32("clip.audio.embedding_length", 48)
        writer.add_uint32("clip.audio.projection_dim", 32)
    width = max(8, size // (4 * 64))
    writer.add_tensor("v.patch_embd.weight", rng.standard_normal((width, 64)).astype(np.float32))
    writer.add_tensor("mm.input_projection.weight", rng.standard_normal((32, 64)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
