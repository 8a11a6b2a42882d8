"""A tiny vision (and audio) model made here, never downloaded, and the media files to feed it.

`write_vision_model(tokenizer_from, folder)` writes two GGUFs with seeded random weights (numpy and the `gguf`
package, no torch), deterministic for a seed:

- `tiny-vlm.gguf`: a 2-layer llama (n_embd 64, 2 heads of 32) with the real 32,000-token tokenizer copied from
  `tokenizer_from` (llama-2-tiny-random.gguf), F16 token embeddings tied to the output (no `output.weight`),
  and a short chat template (`VLM_TEMPLATE`). About 5 MB.
- `tiny-vlm-mmproj.gguf`: a LLaVA-style projector as llama.cpp's mtmd loads it (`clip.projector_type` "mlp"):
  a CLIP ViT over 32x32 images in 8x8 patches (16 patches, a class embedding, 2 blocks of width 32, of which
  LLaVA uses all but the last) and the two-layer MLP projector (`mm.0`, GELU, `mm.2`) into the text model's 64
  dimensions. Every image becomes `IMAGE_TOKENS` (16) tokens whatever its size (mtmd resizes it to 32x32).
  With `audio=True` the same file also holds a tiny Ultravox-style whisper encoder (`clip.has_audio_encoder`:
  80 mel bins, 1 block of width 32, frames stacked by 4, the SwiGLU projector), so the model takes audio too:
  mtmd pads audio to 30 s chunks, each `AUDIO_TOKENS` (375) tokens. (Stacked by 8, as the real Ultravox is, the
  encoder makes 188 tokens where mtmd counts 187, and llama.cpp aborts: `clip_encode: expected output 187 tokens`.)

The media to feed it: `png(width, height, seed)` and `wav(seconds)` from tests/media.py (re-exported here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGUFWriter

from .ggufcopy import write_random_llama
from .media import png, wav

__all__ = ["AUDIO_TOKENS", "IMAGE_TOKENS", "VLM_TEMPLATE", "VisionModel", "png", "wav", "write_vision_model"]

VLM_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
N_EMBD = 64  # the text model's width: the projector's output
IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # what one image costs in the prompt
AUDIO_TOKENS = 375  # what each 30 s of audio costs: 3,000 mel frames, halved by the convolution, stacked by 4
V_EMBD, V_FF, V_LAYERS, V_HEADS = 32, 64, 2, 2
A_EMBD, A_FF, A_LAYERS, A_HEADS, A_MELS, A_STACK, A_POS = 32, 64, 1, 2, 80, 4, 1500


@dataclass(frozen=True)
class VisionModel:
    model: Path  # the text model GGUF
    projector: Path  # the mmproj GGUF
    audio: bool  # whether the projector holds an audio encoder too


def write_vision_model(tokenizer_from: Path, folder: Path, *, audio: bool = False, seed: int = 0) -> VisionModel:
    """The tiny model and its projector, written into `folder` (see the module's doc)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = _write_text_model(tokenizer_from, folder / "tiny-vlm.gguf", seed)
    projector = _write_projector(
        folder / ("tiny-vlm-mmproj-audio.gguf" if audio else "tiny-vlm-mmproj.gguf"), audio, seed
    )
    return VisionModel(model, projector, audio)


def _write_text_model(tokenizer_from: Path, dst: Path, seed: int) -> Path:
    """A 2-layer llama of width `N_EMBD` (the projector's output) with tied embeddings and `VLM_TEMPLATE`."""
    return write_random_llama(
        tokenizer_from,
        dst,
        n_embd=N_EMBD,
        seed=seed,
        chat_template=VLM_TEMPLATE,
        context_length=4096,
        name="tiny-vlm",
        tied=True,
    )


def _write_projector(dst: Path, audio: bool, seed: int) -> Path:
    writer = GGUFWriter(str(dst), "clip")
    writer.add_name("tiny-vlm projector")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_audio_encoder", audio)
    writer.add_string("clip.vision.projector_type", "mlp")
    writer.add_uint32("clip.vision.embedding_length", V_EMBD)
    writer.add_uint32("clip.vision.feed_forward_length", V_FF)
    writer.add_uint32("clip.vision.block_count", V_LAYERS)
    writer.add_uint32("clip.vision.projection_dim", N_EMBD)
    writer.add_uint32("clip.vision.attention.head_count", V_HEADS)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_bool("clip.use_gelu", True)
    rng = np.random.default_rng(seed + 1)

    def rand(*shape: int, scale: float | None = None) -> np.ndarray:
        s = scale if scale is not None else 1.0 / math.sqrt(shape[-1])
        return (rng.standard_normal(shape) * s).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)

    def block(prefix: str, i: int, width: int, ff: int, *, k_bias: bool) -> None:
        b = f"{prefix}.blk.{i}"
        for part in ("ln1", "ln2"):
            writer.add_tensor(f"{b}.{part}.weight", ones(width))
            writer.add_tensor(f"{b}.{part}.bias", zeros(width))
        for part in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"{b}.{part}.weight", rand(width, width))
            if part != "attn_k" or k_bias:
                writer.add_tensor(f"{b}.{part}.bias", rand(width, scale=0.02))
        writer.add_tensor(f"{b}.ffn_up.weight", rand(ff, width))
        writer.add_tensor(f"{b}.ffn_up.bias", rand(ff, scale=0.02))
        writer.add_tensor(f"{b}.ffn_down.weight", rand(width, ff))
        writer.add_tensor(f"{b}.ffn_down.bias", rand(width, scale=0.02))

    n_patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    # numpy order is ggml's reversed: the patch convolution's kernel is [out, in, kh, kw]
    writer.add_tensor("v.patch_embd.weight", rand(V_EMBD, 3, PATCH_SIZE, PATCH_SIZE, scale=0.1))
    writer.add_tensor("v.class_embd", rand(V_EMBD, scale=0.1))
    writer.add_tensor("v.position_embd.weight", rand(n_patches + 1, V_EMBD, scale=0.1))
    writer.add_tensor("v.pre_ln.weight", ones(V_EMBD))
    writer.add_tensor("v.pre_ln.bias", zeros(V_EMBD))
    for i in range(V_LAYERS):
        block("v", i, V_EMBD, V_FF, k_bias=True)
    writer.add_tensor("mm.0.weight", rand(N_EMBD, V_EMBD))
    writer.add_tensor("mm.0.bias", rand(N_EMBD, scale=0.02))
    writer.add_tensor("mm.2.weight", rand(N_EMBD, N_EMBD))
    writer.add_tensor("mm.2.bias", rand(N_EMBD, scale=0.02))
    if audio:
        _audio_encoder(writer, rand, ones, zeros, block)
    _close(writer)
    return dst


def _audio_encoder(writer: GGUFWriter, rand: object, ones: object, zeros: object, block: object) -> None:
    """An Ultravox-style whisper encoder and projector (see the module's doc)."""
    r, o, z, blk = rand, ones, zeros, block
    assert callable(r) and callable(o) and callable(z) and callable(blk)
    writer.add_string("clip.audio.projector_type", "ultravox")
    writer.add_uint32("clip.audio.embedding_length", A_EMBD)
    writer.add_uint32("clip.audio.feed_forward_length", A_FF)
    writer.add_uint32("clip.audio.block_count", A_LAYERS)
    writer.add_uint32("clip.audio.projection_dim", N_EMBD)
    writer.add_uint32("clip.audio.attention.head_count", A_HEADS)
    writer.add_float32("clip.audio.attention.layer_norm_epsilon", 1e-5)
    writer.add_uint32("clip.audio.num_mel_bins", A_MELS)
    writer.add_uint32("clip.audio.projector.stack_factor", A_STACK)
    # whisper's two convolutions over the mel frames ([out, in, k]; their biases [out, 1])
    writer.add_tensor("a.conv1d.1.weight", r(A_EMBD, A_MELS, 3, scale=0.05))
    writer.add_tensor("a.conv1d.1.bias", r(A_EMBD, 1, scale=0.02))
    writer.add_tensor("a.conv1d.2.weight", r(A_EMBD, A_EMBD, 3, scale=0.05))
    writer.add_tensor("a.conv1d.2.bias", r(A_EMBD, 1, scale=0.02))
    writer.add_tensor("a.position_embd.weight", r(A_POS, A_EMBD, scale=0.1))
    for i in range(A_LAYERS):
        blk("a", i, A_EMBD, A_FF, k_bias=False)
    writer.add_tensor("a.post_ln.weight", o(A_EMBD))
    writer.add_tensor("a.post_ln.bias", z(A_EMBD))
    stacked, hidden = A_EMBD * A_STACK, 2 * N_EMBD
    writer.add_tensor("mm.a.norm_pre.weight", o(stacked))
    writer.add_tensor("mm.a.mlp.1.weight", r(2 * hidden, stacked))
    writer.add_tensor("mm.a.norm_mid.weight", o(hidden))
    writer.add_tensor("mm.a.mlp.2.weight", r(N_EMBD, hidden))


def _close(writer: GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.mediamodels FOLDER [--audio] [--tokenizer-from GGUF]`: write the model and projector
    there (for trying them by hand, or with llama-server's `--mmproj`)."""
    import argparse

    from .testmodels import models_dir

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--audio", action="store_true")
    parser.add_argument("--tokenizer-from", type=Path, default=models_dir() / "llama-2-tiny-random.gguf")
    args = parser.parse_args(argv)
    made = write_vision_model(args.tokenizer_from, args.folder, audio=args.audio)
    print(made.model)
    print(made.projector)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
