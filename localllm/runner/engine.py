"""One llama.cpp model and context with sequence slots: the only module that imports llama_cpp.

It offers what the decode loop (`batch.py`) needs and nothing more: tokenize, detokenize one token,
stage tokens into a batch for a sequence, decode, sample per sequence with llama.cpp's own sampler
chains, read log-probabilities, and drop a sequence's cache from a position. It runs inside the runner
process (`runner.main`).
"""

from __future__ import annotations

import ctypes
import json
import math
from dataclasses import dataclass
from typing import Any

import llama_cpp
import numpy as np

_BACKEND_READY = False


@dataclass(frozen=True)
class LoadSpec:
    model_path: str
    n_ctx: int  # per sequence
    num_gpu: int = -1  # -1: every layer when llama.cpp can offload, else none
    n_threads: int = 0
    n_batch: int = 512
    use_mmap: bool = True
    n_parallel: int = 1


class LoadError(Exception):
    pass


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = 0xFFFFFFFF  # llama.cpp's "random"
    grammar: str | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()
    ignore_eos: bool = False


_SCHEMA_CHAR = 'char ::= [^"\\\\] |'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def grammar_for(fmt: Any) -> str:
    """The GBNF grammar for Ollama's `format`: "json" (any JSON value) or a JSON schema object."""
    from llama_cpp import llama_grammar

    if fmt == "json":
        return str(llama_grammar.JSON_GBNF)
    if isinstance(fmt, dict):
        grammar = str(llama_grammar.json_schema_to_gbnf(json.dumps(fmt)))
        # llama-cpp-python's converter lets a string hold raw control characters (a newline, a tab), which
        # JSON forbids; llama.cpp's own converter excludes them, and so do we.
        return grammar.replace(_SCHEMA_CHAR, _JSON_CHAR)
    raise ValueError(f'format must be "json" or a JSON schema object, got {fmt!r}')


class Sampler:
    """A llama.cpp sampler chain for one request."""

    def __init__(self, engine: Engine, params: SamplingParams) -> None:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self._ptr = chain
        add = llama_cpp.llama_sampler_chain_add
        biases = [(tok, bias) for tok, bias in params.logit_bias if 0 <= tok < engine.n_vocab]
        if params.ignore_eos:
            biases += [(tok, -math.inf) for tok in engine.eog_tokens]
        if biases:
            arr = (llama_cpp.llama_logit_bias * len(biases))(
                *(llama_cpp.llama_logit_bias(tok, bias) for tok, bias in biases)
            )
            add(chain, llama_cpp.llama_sampler_init_logit_bias(engine.n_vocab, len(biases), arr))
        if params.grammar:
            grammar = llama_cpp.llama_sampler_init_grammar(engine.vocab, params.grammar.encode(), b"root")
            if not grammar:
                llama_cpp.llama_sampler_free(chain)
                raise ValueError("the grammar does not parse")
            add(chain, grammar)
        last_n = params.repeat_last_n if params.repeat_last_n >= 0 else engine.n_ctx_seq
        if params.repeat_penalty != 1.0 or params.presence_penalty or params.frequency_penalty:
            add(
                chain,
                llama_cpp.llama_sampler_init_penalties(
                    last_n, params.repeat_penalty, params.frequency_penalty, params.presence_penalty
                ),
            )
        if params.temperature <= 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return
        if params.top_k > 0:
            add(chain, llama_cpp.llama_sampler_init_top_k(params.top_k))
        if params.typical_p < 1.0:
            add(chain, llama_cpp.llama_sampler_init_typical(params.typical_p, 1))
        if params.top_p < 1.0:
            add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0.0:
            add(chain, llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
        add(chain, llama_cpp.llama_sampler_init_dist(params.seed & 0xFFFFFFFF))

    def sample(self, engine: Engine, index: int) -> int:
        """Sample (and accept) a token from the `index`-th output of the last decode."""
        return int(llama_cpp.llama_sampler_sample(self._ptr, engine.ctx, index))

    def close(self) -> None:
        if self._ptr:
            llama_cpp.llama_sampler_free(self._ptr)
            self._ptr = None


class Engine:
    """A loaded model and its context of `n_parallel` sequences of `n_ctx` tokens each."""

    def __init__(self, spec: LoadSpec) -> None:
        global _BACKEND_READY
        if not _BACKEND_READY:
            llama_cpp.llama_backend_init()
            _BACKEND_READY = True
        self.gpu = bool(llama_cpp.llama_supports_gpu_offload())
        self.n_gpu_layers = spec.num_gpu if spec.num_gpu >= 0 else (999 if self.gpu else 0)
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = self.n_gpu_layers
        mparams.use_mmap = spec.use_mmap
        model = llama_cpp.llama_model_load_from_file(spec.model_path.encode(), mparams)
        if not model:
            raise LoadError(f"llama.cpp could not load {spec.model_path} (not a GGUF it supports, or out of memory)")
        self.model = model
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_layer = int(llama_cpp.llama_model_n_layer(model))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(model))
        self.n_parallel = max(1, spec.n_parallel)
        self.n_batch = spec.n_batch
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = spec.n_ctx * self.n_parallel
        cparams.n_batch = spec.n_batch
        cparams.n_ubatch = min(spec.n_batch, 512)
        cparams.n_seq_max = self.n_parallel
        cparams.kv_unified = False
        if spec.n_threads > 0:
            cparams.n_threads = spec.n_threads
            cparams.n_threads_batch = spec.n_threads
        ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise LoadError("llama.cpp could not create the context (out of memory? try a smaller num_ctx)")
        self.ctx = ctx
        self.n_ctx_seq = int(llama_cpp.llama_n_ctx(ctx)) // self.n_parallel
        self.memory = llama_cpp.llama_get_memory(ctx)
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.eog_tokens = [t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, t)]
        self._batch = llama_cpp.llama_batch_init(spec.n_batch, 0, 1)
        self._n = 0
        self._piece_buf = ctypes.create_string_buffer(256)
        self._pieces: dict[int, bytes] = {}

    def info(self) -> dict[str, Any]:
        return {
            "n_ctx": self.n_ctx_seq,
            "n_ctx_train": self.n_ctx_train,
            "n_parallel": self.n_parallel,
            "n_vocab": self.n_vocab,
            "gpu_offload": self.gpu and self.n_gpu_layers > 0,
            "n_gpu_layers": min(self.n_gpu_layers, self.n_layer + 1),
            "n_layer": self.n_layer,
        }

    # -- text ----------------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, cap, add_bos and self.add_bos, True)
        if n < 0:
            cap = -n
            buf = (llama_cpp.llama_token * cap)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, cap, add_bos and self.add_bos, True)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes of one token (cached: the per-token path calls this for every token)."""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        buf = self._piece_buf
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        out = buf.raw[:n]
        self._pieces[token] = out
        return out

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    # -- decoding ------------------------------------------------------------------------------------

    def clear_batch(self) -> None:
        self._n = 0

    @property
    def batch_size(self) -> int:
        return self._n

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        """Stage a token; returns its index in the batch (where its logits will be)."""
        b = self._batch
        i = self._n
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits
        self._n = i + 1
        return i

    def decode(self) -> int:
        """Evaluate the staged batch; 0 on success (llama_decode's return code otherwise)."""
        self._batch.n_tokens = self._n
        return int(llama_cpp.llama_decode(self.ctx, self._batch))

    def forget(self, seq: int, from_pos: int) -> bool:
        """Drop the cache of sequence `seq` from `from_pos` on; False if this model cannot cut part of it."""
        if llama_cpp.llama_memory_seq_rm(self.memory, seq, from_pos, -1):
            return True
        llama_cpp.llama_memory_seq_rm(self.memory, seq, -1, -1)
        return False

    def logprobs(self, index: int, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
        """The log-probability of `token` at output `index`, and the `top` most likely tokens."""
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, index), shape=(self.n_vocab,))
        peak = float(logits.max())
        log_z = peak + math.log(float(np.exp(logits - peak).sum()))
        chosen = float(logits[token]) - log_z
        if top <= 0:
            return chosen, []
        idx = np.argpartition(-logits, top)[:top] if top < self.n_vocab else np.arange(self.n_vocab)
        idx = idx[np.argsort(-logits[idx])]
        return chosen, [(int(i), float(logits[i]) - log_z) for i in idx]

    def close(self) -> None:
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)
