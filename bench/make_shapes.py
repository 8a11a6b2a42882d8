#!/usr/bin/env python3
"""Write seeded random GGUFs of the architectures people run besides llama: sliding-window, hybrid, recurrent.

Like `../shared/tools/make_model.py` (which writes llama only), the tokenizer (vocabulary, scores, token types,
special ids) is copied from an existing GGUF, so the result tokenizes real text; the weights are noise, so it
generates gibberish at the real cost of a model of that shape. Three architectures, each with a tiny preset
(a few MB, for tests) and a bench preset (a real model's shape, for the benchmark):

- `gemma3`: Gemma 3, sliding-window attention with a global layer every 6th (`gemma3.attention.sliding_window`,
  llama.cpp's default pattern of 6); the bench preset is Gemma 3 270M's shape (window 512).
- `lfm2`: LFM2, a hybrid: short-convolution (recurrent) layers with attention layers between them (the
  attention layers are those with `head_count_kv` > 0); the bench preset is LFM2-350M's shape.
- `mamba`: Mamba, purely recurrent (selective state space); the bench preset is mamba-130m's shape.

    python make_shapes.py OUT.gguf --arch gemma3|lfm2|mamba [--preset tiny|bench] [--type f32|f16]
        [--seed 0] [--tokenizer-from X.gguf] [--chat-template FILE] [--window N]

Weights are F16 or F32 (the recurrent models' convolution, A and D stay F32, as llama.cpp's converter keeps
them); no Q8_0, which crashes on AMX hosts (see README.md). Needs numpy and gguf (in the project's .venv).
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, LlamaFileType

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_TOKENIZER = HERE.parent.parent / "shared" / "models" / "llama-2-tiny-random.gguf"
ARCHES = ("gemma3", "lfm2", "mamba")


@dataclass(frozen=True)
class Shape:
    n_embd: int
    n_layer: int
    n_ff: int = 0
    n_head: int = 0
    n_head_kv: int = 0
    head_dim: int = 0
    n_swa: int = 0  # gemma3: the sliding window
    attention_layers: tuple[int, ...] = ()  # lfm2: the layers with attention (the others are convolutions)
    d_state: int = 16  # mamba
    d_conv: int = 4  # mamba's convolution; lfm2's l_cache is 3
    n_ctx: int = 8192


PRESETS: dict[str, dict[str, Shape]] = {
    "gemma3": {
        # 6 layers: 5 sliding-window layers and 1 global one (llama.cpp's pattern of 6)
        "tiny": Shape(n_embd=64, n_layer=6, n_ff=128, n_head=4, n_head_kv=1, head_dim=32, n_swa=64),
        "bench": Shape(n_embd=640, n_layer=18, n_ff=2048, n_head=4, n_head_kv=1, head_dim=256, n_swa=512),
    },
    "lfm2": {
        "tiny": Shape(n_embd=64, n_layer=4, n_ff=128, n_head=4, n_head_kv=2, attention_layers=(1, 3), d_conv=3),
        "bench": Shape(
            n_embd=1024, n_layer=16, n_ff=4608, n_head=16, n_head_kv=8, attention_layers=(2, 5, 8, 10, 12, 14), d_conv=3
        ),
    },
    "mamba": {
        "tiny": Shape(n_embd=64, n_layer=2),
        "bench": Shape(n_embd=768, n_layer=24),
    },
}

TYPES = {
    "f32": (GGMLQuantizationType.F32, LlamaFileType.ALL_F32),
    "f16": (GGMLQuantizationType.F16, LlamaFileType.MOSTLY_F16),
}


def copy_tokenizer(src: pathlib.Path, w: GGUFWriter) -> int:
    """Copy the tokenizer of `src` into `w`; the vocabulary's size."""
    r = GGUFReader(str(src))
    f = r.fields
    tokens = [
        bytes(f["tokenizer.ggml.tokens"].parts[i]).decode("utf-8", "replace") for i in f["tokenizer.ggml.tokens"].data
    ]
    w.add_tokenizer_model(str(f["tokenizer.ggml.model"].contents()))
    w.add_token_list(tokens)
    if "tokenizer.ggml.scores" in f:
        w.add_token_scores([float(f["tokenizer.ggml.scores"].parts[i][0]) for i in f["tokenizer.ggml.scores"].data])
    if "tokenizer.ggml.token_type" in f:
        w.add_token_types(
            [int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data]
        )
    for key, add in (
        ("tokenizer.ggml.bos_token_id", w.add_bos_token_id),
        ("tokenizer.ggml.eos_token_id", w.add_eos_token_id),
        ("tokenizer.ggml.unknown_token_id", w.add_unk_token_id),
    ):
        if key in f:
            add(int(f[key].contents()))
    return len(tokens)


class _Tensors:
    """Adds seeded random tensors to a writer (numpy shapes: ggml's reversed)."""

    def __init__(self, w: GGUFWriter, dtype: GGMLQuantizationType, seed: int) -> None:
        self.w = w
        self.f16 = dtype == GGMLQuantizationType.F16
        self.rng = np.random.default_rng(seed)

    def mat(self, name: str, rows: int, cols: int) -> None:
        x = (self.rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)).astype(np.float32)
        self.w.add_tensor(name, x.astype(np.float16) if self.f16 else x)

    def f32(self, name: str, x: np.ndarray) -> None:
        self.w.add_tensor(name, np.ascontiguousarray(x, dtype=np.float32))

    def ones(self, name: str, n: int) -> None:
        self.f32(name, np.ones(n, dtype=np.float32))


def _gemma3(w: GGUFWriter, t: _Tensors, s: Shape, n_vocab: int) -> None:
    arch = "gemma3"
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_key_length(s.head_dim)
    w.add_value_length(s.head_dim)
    w.add_sliding_window(s.n_swa)
    w.add_rope_freq_base(1_000_000.0)
    w.add_float32(f"{arch}.rope.freq_base_swa", 10_000.0)
    q_dim, kv_dim = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
    t.mat("token_embd.weight", n_vocab, s.n_embd)
    # Gemma ties its output to the embeddings; random tied ones only echo the last token (its embedding, scaled
    # by sqrt(n_embd), outweighs the rest), so the output has its own: the same cost, a varied greedy text.
    t.mat("output.weight", n_vocab, s.n_embd)
    t.ones("output_norm.weight", s.n_embd)
    for i in range(s.n_layer):
        t.ones(f"blk.{i}.attn_norm.weight", s.n_embd)
        t.mat(f"blk.{i}.attn_q.weight", q_dim, s.n_embd)
        t.mat(f"blk.{i}.attn_k.weight", kv_dim, s.n_embd)
        t.mat(f"blk.{i}.attn_v.weight", kv_dim, s.n_embd)
        t.mat(f"blk.{i}.attn_output.weight", s.n_embd, q_dim)
        t.ones(f"blk.{i}.post_attention_norm.weight", s.n_embd)
        t.ones(f"blk.{i}.attn_q_norm.weight", s.head_dim)
        t.ones(f"blk.{i}.attn_k_norm.weight", s.head_dim)
        t.ones(f"blk.{i}.ffn_norm.weight", s.n_embd)
        t.mat(f"blk.{i}.ffn_gate.weight", s.n_ff, s.n_embd)
        t.mat(f"blk.{i}.ffn_up.weight", s.n_ff, s.n_embd)
        t.mat(f"blk.{i}.ffn_down.weight", s.n_embd, s.n_ff)
        t.ones(f"blk.{i}.post_ffw_norm.weight", s.n_embd)


def _lfm2(w: GGUFWriter, t: _Tensors, s: Shape, n_vocab: int) -> None:
    w.add_head_count(s.n_head)
    w.add_head_count_kv([s.n_head_kv if i in s.attention_layers else 0 for i in range(s.n_layer)])
    w.add_rope_freq_base(1_000_000.0)
    w.add_uint32("lfm2.shortconv.l_cache", s.d_conv)
    head_dim = s.n_embd // s.n_head
    kv_dim = s.n_head_kv * head_dim
    t.mat("token_embd.weight", n_vocab, s.n_embd)
    t.ones("token_embd_norm.weight", s.n_embd)  # llama.cpp's name for LFM2's output norm
    for i in range(s.n_layer):
        t.ones(f"blk.{i}.attn_norm.weight", s.n_embd)
        t.ones(f"blk.{i}.ffn_norm.weight", s.n_embd)
        t.mat(f"blk.{i}.ffn_gate.weight", s.n_ff, s.n_embd)
        t.mat(f"blk.{i}.ffn_up.weight", s.n_ff, s.n_embd)
        t.mat(f"blk.{i}.ffn_down.weight", s.n_embd, s.n_ff)
        if i in s.attention_layers:
            t.ones(f"blk.{i}.attn_q_norm.weight", head_dim)
            t.ones(f"blk.{i}.attn_k_norm.weight", head_dim)
            t.mat(f"blk.{i}.attn_q.weight", s.n_embd, s.n_embd)
            t.mat(f"blk.{i}.attn_k.weight", kv_dim, s.n_embd)
            t.mat(f"blk.{i}.attn_v.weight", kv_dim, s.n_embd)
            t.mat(f"blk.{i}.attn_output.weight", s.n_embd, s.n_embd)
        else:
            conv = t.rng.standard_normal((s.n_embd, s.d_conv), dtype=np.float32) / np.sqrt(s.d_conv)
            t.f32(f"blk.{i}.shortconv.conv.weight", conv)
            t.mat(f"blk.{i}.shortconv.in_proj.weight", 3 * s.n_embd, s.n_embd)
            t.mat(f"blk.{i}.shortconv.out_proj.weight", s.n_embd, s.n_embd)


def _mamba(w: GGUFWriter, t: _Tensors, s: Shape, n_vocab: int) -> None:
    arch = "mamba"
    d_inner = 2 * s.n_embd  # llama.cpp supports an expansion factor of 2 only
    dt_rank = -(-s.n_embd // 16)
    w.add_head_count(0)
    w.add_uint32(f"{arch}.ssm.conv_kernel", s.d_conv)
    w.add_uint32(f"{arch}.ssm.inner_size", d_inner)
    w.add_uint32(f"{arch}.ssm.state_size", s.d_state)
    w.add_uint32(f"{arch}.ssm.time_step_rank", dt_rank)
    t.mat("token_embd.weight", n_vocab, s.n_embd)
    t.ones("output_norm.weight", s.n_embd)
    for i in range(s.n_layer):
        t.ones(f"blk.{i}.attn_norm.weight", s.n_embd)
        t.mat(f"blk.{i}.ssm_in.weight", 2 * d_inner, s.n_embd)
        conv = t.rng.standard_normal((d_inner, s.d_conv), dtype=np.float32) / np.sqrt(s.d_conv)
        t.f32(f"blk.{i}.ssm_conv1d.weight", conv)
        t.f32(f"blk.{i}.ssm_conv1d.bias", np.zeros(d_inner))
        t.mat(f"blk.{i}.ssm_x.weight", dt_rank + 2 * s.d_state, d_inner)
        t.mat(f"blk.{i}.ssm_dt.weight", d_inner, dt_rank)
        t.f32(f"blk.{i}.ssm_dt.bias", np.full(d_inner, -4.0))  # softplus(-4) ~ 0.018, a typical step
        # A = -exp(A_log) with A_log = log(1..d_state), as Mamba initialises it
        t.f32(f"blk.{i}.ssm_a", -np.tile(np.arange(1, s.d_state + 1, dtype=np.float32), (d_inner, 1)))
        t.ones(f"blk.{i}.ssm_d", d_inner)
        t.mat(f"blk.{i}.ssm_out.weight", s.n_embd, d_inner)


_WRITERS: dict[str, Callable[[GGUFWriter, _Tensors, Shape, int], None]] = {
    "gemma3": _gemma3,
    "lfm2": _lfm2,
    "mamba": _mamba,
}


def write_model(
    out: pathlib.Path,
    arch: str,
    preset: str = "tiny",
    *,
    dtype: str = "f32",
    seed: int = 0,
    tokenizer_from: pathlib.Path = DEFAULT_TOKENIZER,
    chat_template: str | None = None,
    window: int | None = None,
) -> pathlib.Path:
    """Write a random `arch` model of `preset`'s shape to `out` (`window`: gemma3's sliding window instead of
    the preset's)."""
    shape = PRESETS[arch][preset]
    if window is not None:
        shape = Shape(**{**shape.__dict__, "n_swa": window})
    qtype, ftype = TYPES[dtype]
    w = GGUFWriter(str(out), arch)
    w.add_name(f"random-{arch}-{preset}")
    w.add_context_length(shape.n_ctx)
    w.add_embedding_length(shape.n_embd)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length(shape.n_ff)
    w.add_layer_norm_rms_eps(1e-6 if arch == "gemma3" else 1e-5)
    w.add_file_type(ftype)
    n_vocab = copy_tokenizer(tokenizer_from, w)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    _WRITERS[arch](w, _Tensors(w, qtype, seed), shape, n_vocab)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--arch", choices=ARCHES, required=True)
    ap.add_argument("--preset", choices=("tiny", "bench"), default="bench")
    ap.add_argument("--type", choices=sorted(TYPES), default="f16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer-from", type=pathlib.Path, default=DEFAULT_TOKENIZER)
    ap.add_argument("--chat-template", type=pathlib.Path, help="a Jinja2 chat template to store in the model")
    ap.add_argument("--window", type=int, help="gemma3: the sliding window, instead of the preset's")
    a = ap.parse_args()
    template = a.chat_template.read_text() if a.chat_template else None
    write_model(
        a.out, a.arch, a.preset, dtype=a.type, seed=a.seed, tokenizer_from=a.tokenizer_from,
        chat_template=template, window=a.window,
    )  # fmt: skip
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
