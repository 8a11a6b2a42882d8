#!/usr/bin/env python3
"""Write a GGUF whose weights are built, not trained, so that its greedy answer copies its prompt.

The bench models of `make_shapes.py` and `../shared/tools/make_model.py` have random weights: their answer never
repeats the prompt, so speculative decoding (prompt lookup, a draft model) never has a draft accepted there, while
a real model asked to rewrite a file copies most of it. A dense model's cost per token does not depend on its
weight values, so a model of the SAME shape whose weights make it copy has the bench model's speed and gives a
workload where the answer really copies the prompt. This tool writes that model (an induction-head "copier").

What it computes, in layers 0-5 (every other weight is zero where it would reach the residual stream: the unused
layers keep their cost and have no effect; the file has the bench model's tensors, shapes and types exactly):

- the residual stream holds unit-norm codes in separate subspaces: a constant C, each token's identity E (a random
  phase per complex component), the previous token's P1, hashes of the last 2, 4, 8 and 16 tokens, their copies
  shifted by one position, and the copied token O; each norm weight undoes its RMS norm;
- "positional" heads (query and key read only C, so RoPE's rotation alone sets the score) move a code from exactly
  1, 2, 4 or 8 positions back (the RoPE base is 1e38: the first pairs turn fast enough to pick one distance, the
  others barely turn over the context, so they carry content);
- the FFNs compute the hashes: a complex product, component by component, of a code and a permuted earlier one
  (act(z)*y + act(-z)*(-y) = z*y for SiLU and GELU alike makes the gated FFN exactly bilinear), so a hash keeps
  unit norm and two hashes agree only when every token they cover does;
- three induction heads match the last 16, 4 and 1 tokens against every earlier position (the key at j covers the
  tokens before j, the value is the token at j), each falling back to the BOS token (no value) when nothing
  matches, with a small preference for the latest match; their outputs add into O with weights 16, 4 and 1, so
  the longest match decides, and the output matrix reads the token code in O.

So the greedy answer continues the longest earlier match of its last tokens (up to 16): for a prompt holding a
file and asking for it again, it copies the file. Its speed figures stand for a real model of the shape.

- `--arch llama`: the bench preset is SmolLM-135M's shape (bench-135m's: 30 layers, 576 wide, 9 heads, 3 KV
  heads), Q8_0 by default as bench-135m (F16 for AMX hosts, see README.md);
- `--arch gemma3`: the bench preset is Gemma 3 270M's shape (bench-gemma3's: 18 layers, 640 wide, 4 heads and 1 KV
  head of 256, window 512), F16 as bench-gemma3. The moves are in sliding-window layers, the induction heads in
  layer 5, the first global one (both bases are 1e38); the embedding's sqrt(n_embd) scale, the q/k norms and the
  post-attention and post-FFN norms are undone by their weights; the output matrix is its own, as bench-gemma3's.

    python make_copier.py OUT.gguf [--arch llama|gemma3] [--preset tiny|bench] [--type q8_0|f16|f32] [--seed 0]
        [--tokenizer-from X.gguf] [--check]

`--check` then decodes bench/speculate.py's prompt greedily with llama.cpp and says how many of the first 500
answer tokens equal the file's.

The tiny presets (a few tens of MB: the vocabulary is the Llama-2 tokenizer's 32,000 tokens) are for tests. Needs
numpy and gguf (in the project's .venv).
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

ARCHES = ("llama", "gemma3")
FREQ_BASE = 1e38  # near float32's largest: the first pairs turn (positions), the later ones barely do (content)
VOTES = (16.0, 4.0, 1.0)  # the induction heads' weights in O (matches of 16, 4, 1 tokens): the longest decides
POS_AMPLITUDES = (60.0, 300.0, 300.0, 300.0)  # positional score per fast pair: one distance wins by ~25
MATCH_SCORE = 100.0  # a full match's score (after 1/sqrt(head_dim)); a random code scores ~N(0, 1/dims) of it
SINK = 0.75  # BOS's score, as a fraction of a full match's: below it, nothing counts as a match
RECENCY = 10.0  # the score a match loses from the newest position to the oldest (a tie goes to the latest)
O_NORM = 21.0  # gemma3 normalizes each layer's output: O's norm after the induction heads (16 + 4 + 1 agreeing)
# RoPE pairs, in 64ths of the head (so the angles are the same for any head size): the positional heads use pairs
# 0-3 (1, 0.065, 0.0042 and 0.00027 rad per position), the recency term pair 3, the sink pair 4 (0.07 rad over
# 4,096 positions), the contents the pairs from 5 on (under 0.005 rad over 4,096 positions)
POS_PAIRS, RECENCY_PAIR, SINK_PAIR, FIRST_CONTENT_PAIR = (0, 1, 2, 3), 3, 4, 5


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
    n_swa: int = 0  # gemma3: the sliding window (the induction heads are in layer 5, its first global one)
    n_ctx: int = 8192


PRESETS: dict[str, dict[str, Shape]] = {
    "llama": {
        "tiny": Shape(n_embd=448, n_layer=6, n_head=6, n_head_kv=3, head_dim=64, n_ff=256, token_dims=48, hash_dims=30),
        # SmolLM-135M's shape, as make_model.py's bench-135m
        "bench": Shape(
            n_embd=576, n_layer=30, n_head=9, n_head_kv=3, head_dim=64, n_ff=1536, token_dims=64, hash_dims=38
        ),
    },
    "gemma3": {
        "tiny": Shape(
            n_embd=448, n_layer=6, n_head=4, n_head_kv=1, head_dim=256, n_ff=256, token_dims=48, hash_dims=30, n_swa=64
        ),
        # Gemma 3 270M's shape, as make_shapes.py's bench-gemma3
        "bench": Shape(
            n_embd=640,
            n_layer=18,
            n_head=4,
            n_head_kv=1,
            head_dim=256,
            n_ff=2048,
            token_dims=64,
            hash_dims=38,
            n_swa=512,
        ),  # fmt: skip
    },
}

DEFAULT_TYPES = {"llama": "q8_0", "gemma3": "f16"}  # as bench-135m and bench-gemma3 (make_shapes.py)
TYPES = {
    "f32": (GGMLQuantizationType.F32, LlamaFileType.ALL_F32),
    "f16": (GGMLQuantizationType.F16, LlamaFileType.MOSTLY_F16),
    "q8_0": (GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0),
}

# The codes in the residual stream, in order after block 0 (C at 0, the BOS flag at 1): the token codes, then
# G1-G4 (hashes of the last 2, 4, 8, 16 tokens), T1-T3 (G1-G3 from 2, 4, 8 positions back: a hash's second half),
# K2 and K4 (G2 and G4 from the previous position: the keys of the induction heads).
TOKEN_CODES = ("E", "P1", "O")
HASH_CODES = ("G1", "T1", "G2", "K2", "T2", "G3", "T3", "G4", "K4")
C_DIM, BOS_DIM = 0, 1
# BOS's flag, and its C made smaller to keep its norm: every position's stream then has the same norm, so the RMS
# norms scale none of them differently (the positional heads' scores, ~1,000, are decided by ~25)
FLAG = 0.5


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

    def dims(self, name: str) -> int:
        return int(self.at[name].stop - self.at[name].start)


class _Builder:
    """The weights as float32 numpy arrays (numpy shape: ggml's reversed, rows are outputs)."""

    def __init__(self, arch: str, s: Shape, n_vocab: int, bos: int, special: list[int], seed: int) -> None:
        self.arch, self.s, self.lay = arch, s, Layout(s)
        self.gemma = arch == "gemma3"
        self.rng = np.random.default_rng(seed)
        hd = s.head_dim
        self.th = np.asarray(FREQ_BASE ** (-2.0 * np.arange(hd // 2) / hd), dtype=np.float64)
        self.t: dict[str, np.ndarray] = {}
        m = s.token_dims // 2
        phases = self.rng.uniform(0, 2 * np.pi, (n_vocab, m))
        self.codes = np.zeros((n_vocab, s.token_dims), dtype=np.float32)  # unit norm: m components of 1/sqrt(m)
        self.codes[:, 0::2] = np.cos(phases) / np.sqrt(m)
        self.codes[:, 1::2] = np.sin(phases) / np.sqrt(m)
        self.bos_code = self.codes[bos].copy()  # BOS has a code like any token, but no value (see induction)
        # every code's value at BOS (position 0 sees only itself, so each move copies BOS's own): the induction
        # heads take them out of BOS's key, whose content would otherwise add noise to the sink's score
        self.at_bos: dict[str, np.ndarray] = {"E": self.bos_code.astype(np.float64)}
        emb = np.zeros((n_vocab, s.n_embd), dtype=np.float32)
        emb[:, C_DIM] = 1.0
        emb[bos, C_DIM] = np.sqrt(1.0 - FLAG * FLAG)
        emb[bos, BOS_DIM] = FLAG
        emb[:, self.lay.at["E"]] = self.codes
        # gemma3 scales the embeddings by sqrt(n_embd)
        self.t["token_embd.weight"] = emb / np.float32(np.sqrt(s.n_embd)) if self.gemma else emb
        out = np.zeros((n_vocab, s.n_embd), dtype=np.float32)
        out[:, self.lay.at["O"]] = self.codes
        out[special, C_DIM] = -100.0  # BOS, EOS, unknown: never the answer
        self.t["output.weight"] = out  # (gemma3's own too, as bench-gemma3's: the same cost)
        self.t["output_norm.weight"] = np.ones(s.n_embd, dtype=np.float32)
        self.n_codes = 1.0  # unit-norm codes in the stream so far (E), besides C
        q_dim, kv_dim = s.n_head * hd, s.n_head_kv * hd
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
            norms = ["attn_norm", "ffn_norm"]
            if self.gemma:
                norms += ["post_attention_norm", "post_ffw_norm", "attn_q_norm", "attn_k_norm"]
            for name in norms:
                n = hd if name in ("attn_q_norm", "attn_k_norm") else s.n_embd
                self.t[p + name + ".weight"] = np.ones(n, dtype=np.float32)

    def _noise(self, rows: int, cols: int) -> np.ndarray:
        x: np.ndarray = self.rng.standard_normal((rows, cols), dtype=np.float32) / np.float32(np.sqrt(cols))
        return x

    def _pair(self, i: int) -> tuple[int, int]:
        """The head dimensions RoPE turns together as pair `i` (64ths of the head): adjacent ones in llama,
        the two halves' in gemma3 (NEOX)."""
        k = i * self.s.head_dim // 64
        return (k, k + self.s.head_dim // 2) if self.gemma else (2 * k, 2 * k + 1)

    def _content_dims(self) -> list[int]:
        hd = self.s.head_dim
        first = FIRST_CONTENT_PAIR * hd // 64
        if self.gemma:
            return [d for k in range(first, hd // 2) for d in (k, k + hd // 2)]
        return list(range(2 * first, hd))

    def _rms(self) -> float:
        """The residual's root mean square now (C aside, every code has norm 1)."""
        return float(np.sqrt((1.0 + self.n_codes) / self.s.n_embd))

    def _set(self, layer: int, name: str, value: float) -> None:
        self.t[f"blk.{layer}.{name}.weight"][:] = value

    def begin_attention(self, layer: int) -> None:
        """Use `layer`'s attention: the norm weight undoes the RMS norm, so its projections read the raw stream."""
        self._set(layer, "attn_norm", self._rms())
        for name in ("attn_q", "attn_k", "attn_v"):
            self._set(layer, name, 0.0)

    def _post(self, layer: int, name: str, norm: float) -> None:
        """gemma3 normalizes a layer's output: give it back its norm (`norm`)."""
        if self.gemma:
            self._set(layer, name, norm / np.sqrt(self.s.n_embd))

    def _undo_qk_norm(self, layer: int, q_head: np.ndarray, k_head: np.ndarray) -> None:
        """gemma3 normalizes each head's q and k: scale them back (every head's q has this one's norm)."""
        if self.gemma:
            hd = self.s.head_dim
            self._set(layer, "attn_q_norm", float(np.linalg.norm(q_head) / np.sqrt(hd)))
            self._set(layer, "attn_k_norm", float(np.linalg.norm(k_head) / np.sqrt(hd)))

    def positional(self, layer: int, group: int, heads: list[tuple[int, int, str]], src: str) -> None:
        """KV head `group` carries `src`; each (q head, distance, dst) moves it from `distance` positions back."""
        s, lay, hd = self.s, self.lay, self.s.head_dim
        p = f"blk.{layer}."
        k, v = self.t[p + "attn_k.weight"], self.t[p + "attn_v.weight"]
        q, o = self.t[p + "attn_q.weight"], self.t[p + "attn_output.weight"]
        n = lay.dims(src)
        v[group * hd : group * hd + n, lay.at[src]] = np.eye(n, dtype=np.float32)
        for i, amp in zip(POS_PAIRS, POS_AMPLITUDES, strict=True):  # q.k/sqrt(hd) = amp cos(theta (d - distance))
            k[group * hd + self._pair(i)[0], C_DIM] = np.sqrt(amp * np.sqrt(hd))
        for head, distance, dst in heads:
            if head // (s.n_head // s.n_head_kv) != group:
                raise ValueError(f"q head {head} does not read KV head {group}")
            for i, amp in zip(POS_PAIRS, POS_AMPLITUDES, strict=True):
                a, b = self._pair(i)
                th, x = self.th[i * hd // 64], np.sqrt(amp * np.sqrt(hd))
                q[head * hd + a, C_DIM] = x * np.cos(th * distance)
                q[head * hd + b, C_DIM] = -x * np.sin(th * distance)
            o[lay.at[dst], head * hd : head * hd + n] = np.eye(n, dtype=np.float32)
            self.n_codes += 1
            self.at_bos[dst] = self.at_bos[src]
        self._undo_qk_norm(
            layer, q[heads[0][0] * hd : (heads[0][0] + 1) * hd, C_DIM], k[group * hd : (group + 1) * hd, C_DIM]
        )
        self._post(layer, "post_attention_norm", np.sqrt(len(heads)))

    def induction(self, layer: int, group: int, heads: list[tuple[int, str, str, float]]) -> None:
        """KV head `group`; each (q head, query, key, vote) copies, into O with weight `vote`, the token after the
        latest position whose `key` is `query` (its code: a match scores MATCH_SCORE), else BOS's nothing."""
        s, lay, hd = self.s, self.lay, self.s.head_dim
        p = f"blk.{layer}."
        k, v = self.t[p + "attn_k.weight"], self.t[p + "attn_v.weight"]
        q, o = self.t[p + "attn_q.weight"], self.t[p + "attn_output.weight"]
        g = np.sqrt(MATCH_SCORE * np.sqrt(hd))
        content = self._content_dims()
        start = 0
        for head, query, key, _ in heads:  # each head's match in its own dimensions of the shared key
            n = min(lay.dims(query), len(content) - start)  # (llama's 54 slow dimensions: part of a token code)
            if n < 16:
                raise ValueError(f"the induction heads need more than {len(content)} slow dimensions per head")
            gn = g * np.sqrt(lay.dims(query) / n)  # a match of the part scores a full match
            for c, d in enumerate(content[start : start + n]):
                q[head * hd + d, lay.at[query].start + c] = gn
                k[group * hd + d, lay.at[key].start + c] = gn
                k[group * hd + d, BOS_DIM] = -gn * self.at_bos[key][c] / FLAG  # BOS's key: no content
            start += n
        # recency: RECENCY * cos(theta * d + phase) falls over the context (cos falls on [0.3, 0.3 + theta * n_ctx])
        th, phase = self.th[RECENCY_PAIR * hd // 64], 0.3
        r = np.sqrt(RECENCY / (np.cos(phase) - np.cos(phase + th * s.n_ctx)) * np.sqrt(hd))
        ra, rb = self._pair(RECENCY_PAIR)
        k[group * hd + ra, C_DIM] = r
        for head, *_ in heads:
            q[head * hd + ra, C_DIM] = r * np.cos(phase)
            q[head * hd + rb, C_DIM] = r * np.sin(phase)
        # the sink: BOS scores SINK of a full match. In gemma3 its key is scaled up by the norm (it has the sink's
        # dimension instead of the contents): scale the query down to match.
        sa = self._pair(SINK_PAIR)[0]
        k[group * hd + sa, BOS_DIM] = g / FLAG
        n_keys = len(heads)
        shrink = np.sqrt((n_keys * g * g + r * r) / (g * g + r * r)) if self.gemma else 1.0
        for head, *_ in heads:
            q[head * hd + sa, C_DIM] = SINK * MATCH_SCORE * np.sqrt(hd) / (g * shrink)
        # the value: the token's code, but none for BOS (what a head that finds no match adds)
        tok = lay.at["E"]
        v[group * hd : group * hd + s.token_dims, tok] = np.eye(s.token_dims, dtype=np.float32)
        v[group * hd : group * hd + s.token_dims, BOS_DIM] = -self.bos_code / FLAG
        for head, _, _, vote in heads:
            o[lay.at["O"], head * hd : head * hd + s.token_dims] = vote * np.eye(s.token_dims, dtype=np.float32)
        # gemma3's norms: every head's q has the same norm (a unit code, the sink's and recency's constants), and
        # every key but BOS's (unit codes and recency)
        if self.gemma:
            q_norm = np.sqrt(g * g + q[heads[0][0] * hd + sa, C_DIM] ** 2 + r * r)
            k_norm = np.sqrt(n_keys * g * g + r * r)
            self._set(layer, "attn_q_norm", float(q_norm / np.sqrt(hd)))
            self._set(layer, "attn_k_norm", float(k_norm / np.sqrt(hd)))
        self._post(layer, "post_attention_norm", O_NORM)

    def hash(self, layer: int, a: str, b: str, dst: str) -> None:
        """`layer`'s FFN writes dst[c] = a[c] * b[perm[c]] (complex, component by component), at unit norm."""
        s, lay = self.s, self.lay
        self._set(layer, "ffn_norm", self._rms())
        p = f"blk.{layer}."
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
        gain = float(np.sqrt(lay.dims(a) / 2) * np.sqrt(lay.dims(b) / 2) / np.sqrt(m))
        a0, b0, d0 = lay.at[a].start, lay.at[b].start, lay.at[dst].start
        unit = 0
        for c in range(m):
            ar, ai = a0 + 2 * c, a0 + 2 * c + 1
            br, bi = b0 + 2 * perm[c], b0 + 2 * perm[c] + 1
            # re = ar*br - ai*bi, im = ar*bi + ai*br; each product x*y is act(x)*y + act(-x)*(-y), exactly, for
            # act(x) = x * sigmoid(x) (llama's SiLU) and x * Phi(x) (gemma3's GELU)
            for x, y, out, sign in ((ar, br, 0, 1.0), (ai, bi, 0, -1.0), (ar, bi, 1, 1.0), (ai, br, 1, 1.0)):
                for pm in (1.0, -1.0):
                    gate[unit, x] = pm
                    up[unit, y] = pm
                    down[d0 + 2 * c + out, unit] = sign * gain
                    unit += 1
        self.n_codes += 1
        self._post(layer, "post_ffw_norm", 1.0)
        x, y = self.at_bos[a], self.at_bos[b]
        xc, yc = x[0 : 2 * m : 2] + 1j * x[1 : 2 * m : 2], y[0 : 2 * m : 2] + 1j * y[1 : 2 * m : 2]
        z = gain * xc * yc[perm]
        self.at_bos[dst] = np.stack([z.real, z.imag], axis=1).reshape(-1)


def build(arch: str, s: Shape, n_vocab: int, bos: int, special: list[int], seed: int) -> dict[str, np.ndarray]:
    """The copier's tensors: layers 0-5 move, hash and match; the others have no effect."""
    b = _Builder(arch, s, n_vocab, bos, special, seed)
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
    b.begin_attention(5)  # gemma3's first global layer (the sink is at position 0, out of a window's reach)
    matches = [("G4", "K4"), ("G2", "K2"), ("E", "P1")]
    if s.n_head_kv >= len(matches):  # llama: a KV head each
        per_group = s.n_head // s.n_head_kv
        for group, ((query, key), vote) in enumerate(zip(matches, VOTES, strict=True)):
            b.induction(5, group, [(group * per_group, query, key, vote)])
    else:  # gemma3: one KV head whose key holds the three
        b.induction(
            5, 0, [(h, query, key, vote) for h, ((query, key), vote) in enumerate(zip(matches, VOTES, strict=True))]
        )
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
    w.add_rope_freq_base(FREQ_BASE)
    if arch == "gemma3":
        w.add_sliding_window(s.n_swa)
        w.add_float32(f"{arch}.rope.freq_base_swa", FREQ_BASE)  # the sliding layers' base (else 10,000)
        w.add_layer_norm_rms_eps(1e-6)
    else:
        w.add_rope_dimension_count(s.head_dim)
        w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(ftype)
    n_vocab = copy_tokenizer(tokenizer_from, w)
    special = _special_ids(tokenizer_from)
    for name, x in build(arch, s, n_vocab, special[0], special, seed).items():
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


def check(path: pathlib.Path, n_tokens: int = 500, threads: int = 2) -> tuple[int, int | None]:
    """Greedy-decode `n_tokens` of bench/speculate.py's prompt with `path` (llama.cpp): how many equal the file's
    tokens (as the prompt holds them), and where the first that does not is (None: all do)."""
    import llama_cpp  # (the project's .venv has it; writing a model does not need it)
    from speculate import PROMPT

    m = llama_cpp.Llama(str(path), n_ctx=2048, n_threads=threads, verbose=False)
    head = PROMPT.split("```python\n")[0] + "```python\n"  # the file follows the first fence
    prompt = m.tokenize(PROMPT.encode())
    code = prompt[len(m.tokenize(head.encode())) :]
    answer: list[int] = []
    for token in m.generate(prompt, temp=0.0, top_k=1):
        answer.append(token)
        if len(answer) >= n_tokens:
            break
    same = sum(a == b for a, b in zip(answer, code, strict=False))
    first = next((i for i, (a, b) in enumerate(zip(answer, code, strict=False)) if a != b), None)
    return same, first


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--arch", choices=ARCHES, default="llama")
    ap.add_argument("--preset", choices=("tiny", "bench"), default="bench")
    ap.add_argument("--type", choices=sorted(TYPES), help="default: the bench model's (llama q8_0, gemma3 f16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer-from", type=pathlib.Path, default=DEFAULT_TOKENIZER)
    ap.add_argument("--check", action="store_true", help="then report how much of speculate.py's file it copies")
    a = ap.parse_args()
    dtype = a.type or DEFAULT_TYPES[a.arch]
    write_model(a.out, a.arch, a.preset, dtype=dtype, seed=a.seed, tokenizer_from=a.tokenizer_from)
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e6:.1f} MB)")
    if a.check:
        same, first = check(a.out)
        where = "none differs" if first is None else f"the first that differs is token {first}"
        print(f"speculate.py's prompt: {same} of the first 500 answer tokens equal the file's ({where})")


if __name__ == "__main__":
    main()
