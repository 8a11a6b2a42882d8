#!/usr/bin/env python3
"""Write a GGUF whose weights are built, not trained, so that its greedy answer copies its prompt.

The bench models of `make_shapes.py` and `../shared/tools/make_model.py` have random weights: their answer never
repeats the prompt, so speculative decoding (prompt lookup, a draft model) never has a draft accepted there, while
a real model asked to rewrite a file copies most of it. A dense model's cost per token does not depend on its
weight values, so a model of the SAME shape whose weights make it copy has the bench model's speed and gives a
workload where the answer really copies the prompt. This tool writes that model (an induction-head "copier").

What it computes (every other weight is zero: the unused layers keep their cost and have no effect):

- the residual stream holds unit-norm codes in separate subspaces: a constant C, each token's identity E (a random
  phase per complex component), the previous token's P1, hashes of the last 2, 4, 8 and 16 tokens, their copies
  shifted by one position, and the copied token O;
- "positional" heads (query and key read only C, so RoPE's rotation alone sets the score) move a code from exactly
  1, 2, 4 or 8 positions back (`llama.rope.freq_base` is 1e38: the first pairs turn fast enough to pick one
  distance, the others barely turn over the context, so they carry content);
- the FFNs compute the hashes: a complex product, component by component, of a code and a permuted earlier one
  (silu(z)*y - silu(-z)*y = z*y makes the SwiGLU FFN exactly bilinear), so a hash keeps unit norm and two hashes
  agree only when every token they cover does;
- three induction heads match the last 16, 4 and 1 tokens against every earlier position (the key at j covers the
  tokens before j, the value is the token at j), each falling back to the BOS token (a zero value) when nothing
  matches, with a small preference for the latest match; their outputs add into O with weights 16, 4 and 1, so
  the longest match decides, and the output matrix reads the token code in O.

So the greedy answer continues the longest earlier match of its last tokens (up to 16): for a prompt holding a
file and asking for it again, it copies the file. Its speed figures stand for a real model of the shape.

    python make_copier.py OUT.gguf [--arch llama] [--preset tiny|bench] [--type q8_0|f16|f32] [--seed 0]
        [--tokenizer-from X.gguf]

The bench preset is SmolLM-135M's shape (the shape of bench-135m); the tiny one (a few tens of MB: the
vocabulary is the Llama-2 tokenizer's 32,000 tokens) is for tests. Needs numpy and gguf (in the project's .venv).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType
from gguf.quants import quantize

HERE = pathlib.Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
from make_shapes import DEFAULT_TOKENIZER, copy_tokenizer  # noqa: E402  (bench/ is not a package)

ARCHES = ("llama",)
FREQ_BASE = 1e38  # near float32's largest: pairs 0-3 turn (positions), pairs 4-31 barely do (content)
SCALES = (16, 4, 1)  # the match lengths of the three induction heads, longest first
VOTES = {16: 16.0, 4: 4.0, 1: 1.0}  # their weights in O: a longer match outvotes the shorter ones
POS_AMPLITUDES = (60.0, 300.0, 300.0, 300.0)  # positional score per fast pair: one distance wins by ~25
MATCH_SCORE = 100.0  # a full match's score (after 1/sqrt(head_dim)); a random code scores ~N(0, 1/dims) of it
SINK = 0.75  # BOS's score, as a fraction of a full match's: below it, nothing counts as a match
RECENCY = 10.0  # the score a match loses from the newest position to the oldest (a tie goes to the latest)
FIRST_CONTENT_PAIR = 5  # the pairs from here on turn less than 0.01 rad over the context
SINK_PAIR = 4
RECENCY_PAIR = 3


@dataclass(frozen=True)
class Shape:
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    token_dims: int  # E, P1 and O: the token code (an even number: complex components)
    hash_dims: int  # the hashes of 2-16 tokens
    n_ctx: int = 8192


PRESETS: dict[str, dict[str, Shape]] = {
    "llama": {
        "tiny": Shape(n_embd=448, n_layer=6, n_head=6, n_head_kv=3, head_dim=64, n_ff=256, token_dims=48, hash_dims=30),
        # SmolLM-135M's shape, as make_model.py's bench-135m
        "bench": Shape(
            n_embd=576, n_layer=30, n_head=9, n_head_kv=3, head_dim=64, n_ff=1536, token_dims=64, hash_dims=38
        ),
    },
}

TYPES = {
    "f32": (GGMLQuantizationType.F32, LlamaFileType.ALL_F32),
    "f16": (GGMLQuantizationType.F16, LlamaFileType.MOSTLY_F16),
    "q8_0": (GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0),
}

# The codes in the residual stream, in order after block 0 (C at 0, the BOS flag at 1, BOS's filler at 2): the
# token codes, then G1-G4 (hashes of the last 2, 4, 8, 16 tokens), T1-T3 (G1-G3 from 2, 4, 8 positions back: a
# hash's second half), K2 and K4 (G2 and G4 from the previous position: the keys of the induction heads).
TOKEN_CODES = ("E", "P1", "O")
HASH_CODES = ("G1", "T1", "G2", "K2", "T2", "G3", "T3", "G4", "K4")
C_DIM, BOS_DIM, FILL_DIM = 0, 1, 2


class Layout:
    """Where each code sits in the residual stream."""

    def __init__(self, s: Shape) -> None:
        self.s = s
        self.at: dict[str, slice] = {}
        pos = 32  # block 0 holds C and the BOS flag alone (Q8_0 scales blocks of 32 by their largest value)
        for name in TOKEN_CODES:
            self.at[name] = slice(pos, pos + s.token_dims)
            pos += s.token_dims
        for name in HASH_CODES:
            self.at[name] = slice(pos, pos + s.hash_dims)
            pos += s.hash_dims
        if pos > s.n_embd:
            raise ValueError(f"the codes need {pos} dimensions, the shape has {s.n_embd}")


def _thetas(head_dim: int) -> np.ndarray:
    """RoPE's angle per position of each pair (2i, 2i+1): llama rotates adjacent dimensions."""
    return np.asarray(FREQ_BASE ** (-2.0 * np.arange(head_dim // 2) / head_dim), dtype=np.float64)


class _Builder:
    """The weights as float32 numpy arrays (numpy shape: ggml's reversed, rows are outputs)."""

    def __init__(self, s: Shape, n_vocab: int, bos: int, special: list[int], seed: int) -> None:
        self.s, self.lay = s, Layout(s)
        self.rng = np.random.default_rng(seed)
        self.th = _thetas(s.head_dim)
        self.t: dict[str, np.ndarray] = {}
        m = s.token_dims // 2
        phases = self.rng.uniform(0, 2 * np.pi, (n_vocab, m))
        self.codes = np.zeros((n_vocab, s.token_dims), dtype=np.float32)  # unit norm: m components of 1/sqrt(m)
        self.codes[:, 0::2] = np.cos(phases) / np.sqrt(m)
        self.codes[:, 1::2] = np.sin(phases) / np.sqrt(m)
        self.codes[bos] = 0.0  # BOS: no identity, so it matches nothing and, as the fallback, copies nothing
        emb = np.zeros((n_vocab, s.n_embd), dtype=np.float32)
        emb[:, C_DIM] = 1.0
        emb[bos, BOS_DIM] = 1.0
        # BOS has no codes; a filler gives it the others' norm at the induction heads (and more before them), so
        # the RMS norm never scales its keys above the others'
        emb[bos, FILL_DIM] = np.sqrt(len(TOKEN_CODES) - 1 + len(HASH_CODES) - 1)
        emb[:, self.lay.at["E"]] = self.codes
        self.t["token_embd.weight"] = emb
        out = np.zeros((n_vocab, s.n_embd), dtype=np.float32)
        out[:, self.lay.at["O"]] = self.codes
        out[special, C_DIM] = -100.0  # BOS, EOS, unknown: never the answer
        self.t["output.weight"] = out
        self.t["output_norm.weight"] = np.ones(s.n_embd, dtype=np.float32)
        self.n_codes = 1.0  # unit-norm codes in the stream so far (E), besides C
        q_dim, kv_dim = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
        for i in range(s.n_layer):
            p = f"blk.{i}."
            for name, rows, cols in (
                ("attn_q", q_dim, s.n_embd),
                ("attn_k", kv_dim, s.n_embd),
                ("attn_v", kv_dim, s.n_embd),
                ("ffn_gate", s.n_ff, s.n_embd),
                ("ffn_up", s.n_ff, s.n_embd),
            ):  # random where unused (the same cost as anything else), but nothing reaches the stream:
                self.t[p + name + ".weight"] = self._noise(rows, cols)
            self.t[p + "attn_output.weight"] = np.zeros((s.n_embd, q_dim), dtype=np.float32)  # ... these are 0
            self.t[p + "ffn_down.weight"] = np.zeros((s.n_embd, s.n_ff), dtype=np.float32)
            self.t[p + "attn_norm.weight"] = np.ones(s.n_embd, dtype=np.float32)
            self.t[p + "ffn_norm.weight"] = np.ones(s.n_embd, dtype=np.float32)

    def _noise(self, rows: int, cols: int) -> np.ndarray:
        x: np.ndarray = self.rng.standard_normal((rows, cols), dtype=np.float32) / np.float32(np.sqrt(cols))
        return x

    def _rms(self) -> float:
        """The residual's root mean square now (C and the BOS flag aside, every code has norm 1)."""
        return float(np.sqrt((1.0 + self.n_codes) / self.s.n_embd))

    def begin_attention(self, layer: int) -> None:
        """Use `layer`'s attention: the norm weight undoes the RMS norm, so its projections read the raw stream."""
        p = f"blk.{layer}."
        self.t[p + "attn_norm.weight"] = np.full(self.s.n_embd, self._rms(), dtype=np.float32)
        for name in ("attn_q", "attn_k", "attn_v"):
            self.t[p + name + ".weight"][:] = 0.0

    def positional(self, layer: int, group: int, heads: list[tuple[int, int, str]], src: str) -> None:
        """KV head `group` carries `src`; each (q head, distance, dst) moves it from `distance` positions back."""
        s, lay, hd = self.s, self.lay, self.s.head_dim
        p = f"blk.{layer}."
        k, v = self.t[p + "attn_k.weight"], self.t[p + "attn_v.weight"]
        q, o = self.t[p + "attn_q.weight"], self.t[p + "attn_output.weight"]
        n = lay.at[src].stop - lay.at[src].start
        v[group * hd : group * hd + n, lay.at[src]] = np.eye(n, dtype=np.float32)
        for i, amp in enumerate(POS_AMPLITUDES):  # q.k / sqrt(hd) = amp * cos(theta_i * (d - distance))
            k[group * hd + 2 * i, C_DIM] = np.sqrt(amp * np.sqrt(hd))
        for head, distance, dst in heads:
            if head // (s.n_head // s.n_head_kv) != group:
                raise ValueError(f"q head {head} does not read KV head {group}")
            for i, amp in enumerate(POS_AMPLITUDES):
                a = np.sqrt(amp * np.sqrt(hd))
                q[head * hd + 2 * i, C_DIM] = a * np.cos(self.th[i] * distance)
                q[head * hd + 2 * i + 1, C_DIM] = -a * np.sin(self.th[i] * distance)
            o[lay.at[dst], head * hd : head * hd + n] = np.eye(n, dtype=np.float32)
            self.n_codes += 1

    def induction(self, layer: int, group: int, head: int, query: str, key: str, vote: float) -> None:
        """KV head `group` and q head `head` copy the token after the latest position whose `key` is `query`."""
        s, lay, hd = self.s, self.lay, self.s.head_dim
        p = f"blk.{layer}."
        k, v = self.t[p + "attn_k.weight"], self.t[p + "attn_v.weight"]
        q, o = self.t[p + "attn_q.weight"], self.t[p + "attn_output.weight"]
        n = min(lay.at[query].stop - lay.at[query].start, hd - 2 * FIRST_CONTENT_PAIR)
        f = np.sqrt(MATCH_SCORE * np.sqrt(hd))
        g = f * np.sqrt((lay.at[query].stop - lay.at[query].start) / n)  # a full match scores MATCH_SCORE on n dims
        content = slice(2 * FIRST_CONTENT_PAIR, 2 * FIRST_CONTENT_PAIR + n)
        qc, kc = lay.at[query].start, lay.at[key].start
        q[head * hd + content.start : head * hd + content.stop, qc : qc + n] = g * np.eye(n, dtype=np.float32)
        k[group * hd + content.start : group * hd + content.stop, kc : kc + n] = g * np.eye(n, dtype=np.float32)
        # the sink: BOS scores SINK of a full match
        k[group * hd + 2 * SINK_PAIR, BOS_DIM] = f
        q[head * hd + 2 * SINK_PAIR, C_DIM] = f * SINK
        # recency: RECENCY * cos(theta * d + phase) falls over the context (cos falls on [0.3, 0.3 + theta * n_ctx])
        th, phase = self.th[RECENCY_PAIR], 0.3
        span = np.cos(phase) - np.cos(phase + th * s.n_ctx)
        r = np.sqrt(RECENCY / span * np.sqrt(hd))
        k[group * hd + 2 * RECENCY_PAIR, C_DIM] = r
        q[head * hd + 2 * RECENCY_PAIR, C_DIM] = r * np.cos(phase)
        q[head * hd + 2 * RECENCY_PAIR + 1, C_DIM] = r * np.sin(phase)
        tok = lay.at["E"]
        v[group * hd : group * hd + s.token_dims, tok] = np.eye(s.token_dims, dtype=np.float32)
        o[lay.at["O"], head * hd : head * hd + s.token_dims] = vote * np.eye(s.token_dims, dtype=np.float32)

    def hash(self, layer: int, a: str, b: str, dst: str) -> None:
        """`layer`'s FFN writes dst[c] = a[c] * b[perm[c]] (complex, component by component), at unit norm."""
        s, lay = self.s, self.lay
        p = f"blk.{layer}."
        self.t[p + "ffn_norm.weight"] = np.full(s.n_embd, self._rms(), dtype=np.float32)
        gate, up, down = self.t[p + "ffn_gate.weight"], self.t[p + "ffn_up.weight"], self.t[p + "ffn_down.weight"]
        gate[:] = 0.0
        up[:] = 0.0
        m = s.hash_dims // 2
        if 8 * m > s.n_ff:
            raise ValueError(f"a hash needs {8 * m} FFN units, the shape has {s.n_ff}")
        perm = self.rng.permutation(m)
        while m > 1 and np.any(perm == np.arange(m)):  # no component with itself: H(x, y) != H(y, x)
            perm = self.rng.permutation(m)
        # a's and b's first m components: magnitude 1/sqrt(len), the product's must be 1/sqrt(m)
        ma, mb = (lay.at[x].stop - lay.at[x].start for x in (a, b))
        gain = float(np.sqrt(ma / 2) * np.sqrt(mb / 2) / np.sqrt(m))
        a0, b0, d0 = lay.at[a].start, lay.at[b].start, lay.at[dst].start
        unit = 0
        for c in range(m):
            ar, ai = a0 + 2 * c, a0 + 2 * c + 1
            br, bi = b0 + 2 * perm[c], b0 + 2 * perm[c] + 1
            # re = ar*br - ai*bi, im = ar*bi + ai*br; each product x*y is silu(x)*y + silu(-x)*(-y)
            for x, y, out, sign in ((ar, br, 0, 1.0), (ai, bi, 0, -1.0), (ar, bi, 1, 1.0), (ai, br, 1, 1.0)):
                for pm in (1.0, -1.0):
                    gate[unit, x] = pm
                    up[unit, y] = pm
                    down[d0 + 2 * c + out, unit] = sign * gain
                    unit += 1
        self.n_codes += 1


def build(s: Shape, n_vocab: int, bos: int, special: list[int], seed: int) -> dict[str, np.ndarray]:
    """The copier's tensors: layers 0-5 move, hash and match; the others have no effect."""
    b = _Builder(s, n_vocab, bos, special, seed)
    b.begin_attention(0)
    b.positional(0, 0, [(0, 1, "P1")], "E")
    b.hash(0, "E", "P1", "G1")  # tokens t, t-1
    b.begin_attention(1)
    b.positional(1, 0, [(0, 2, "T1")], "G1")
    b.hash(1, "G1", "T1", "G2")  # t .. t-3
    b.begin_attention(2)
    b.positional(2, 0, [(0, 1, "K2"), (1, 4, "T2")], "G2")
    b.hash(2, "G2", "T2", "G3")  # t .. t-7
    b.begin_attention(3)
    b.positional(3, 0, [(0, 8, "T3")], "G3")
    b.hash(3, "G3", "T3", "G4")  # t .. t-15
    b.begin_attention(4)
    b.positional(4, 0, [(0, 1, "K4")], "G4")
    b.begin_attention(5)
    per_group = s.n_head // s.n_head_kv
    for group, (scale, query, key) in enumerate(((16, "G4", "K4"), (4, "G2", "K2"), (1, "E", "P1"))):
        b.induction(5, group, group * per_group, query, key, VOTES[scale])
    return b.t


def write_model(
    out: pathlib.Path,
    arch: str = "llama",
    preset: str = "tiny",
    *,
    dtype: str = "q8_0",
    seed: int = 0,
    tokenizer_from: pathlib.Path = DEFAULT_TOKENIZER,
) -> pathlib.Path:
    """Write a copier of `arch` in `preset`'s shape to `out`."""
    s = PRESETS[arch][preset]
    qtype, ftype = TYPES[dtype]
    w = GGUFWriter(str(out), arch)
    w.add_name(f"copier-{arch}-{preset}")
    w.add_context_length(s.n_ctx)
    w.add_embedding_length(s.n_embd)
    w.add_block_count(s.n_layer)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_key_length(s.head_dim)
    w.add_value_length(s.head_dim)
    w.add_rope_dimension_count(s.head_dim)
    w.add_rope_freq_base(FREQ_BASE)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(ftype)
    n_vocab = copy_tokenizer(tokenizer_from, w)
    special = _special_ids(tokenizer_from)
    for name, x in build(s, n_vocab, special[0], special, seed).items():
        if x.ndim == 1 or qtype == GGMLQuantizationType.F32:
            w.add_tensor(name, x.astype(np.float32))
        elif qtype == GGMLQuantizationType.F16:
            w.add_tensor(name, x.astype(np.float16))
        else:
            w.add_tensor(name, quantize(x, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def _special_ids(tokenizer_from: pathlib.Path) -> list[int]:
    """BOS first, then EOS and the unknown token where the tokenizer names them."""
    from gguf import GGUFReader

    f = GGUFReader(str(tokenizer_from)).fields
    ids = [int(f["tokenizer.ggml.bos_token_id"].contents())]
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id"):
        if key in f:
            ids.append(int(f[key].contents()))
    return ids


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--arch", choices=ARCHES, default="llama")
    ap.add_argument("--preset", choices=("tiny", "bench"), default="bench")
    ap.add_argument("--type", choices=sorted(TYPES), default="q8_0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer-from", type=pathlib.Path, default=DEFAULT_TOKENIZER)
    a = ap.parse_args()
    write_model(a.out, a.arch, a.preset, dtype=a.type, seed=a.seed, tokenizer_from=a.tokenizer_from)
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
