"""One llama.cpp model and context with sequence slots (with sampler.py and rpc.py, what imports llama_cpp).

It offers what the decode loop (`batch.py`) needs and nothing more: tokenize, detokenize one token,
stage tokens into a batch for a sequence, decode, read an output's logits (or keep a copy) and
log-probabilities, and drop a sequence's cache from a position; and, for a model loaded with `embedding`,
pooled embeddings of whole inputs (`embed`). Sampling, with llama.cpp's sampler chains, is `sampler.py`'s. It
runs inside the runner process (`runner.main`).
"""

from __future__ import annotations

import collections
import ctypes
import math
import os
import re
import sys
from dataclasses import replace
from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt

from ..domain.errors import EngineFailure
from ..domain.options import NUM_DRAFT_MAX, UBATCH_MAX
from . import kvfiles, rpc
from .cstruct import set_fields
from .multimodal import Projector, ProjectorError
from .protocol import LoadSpec, RunnerInfo
from .rerank import RerankFrame
from .speculate import same_vocabulary
from .split import KnownDevice, Split

_BACKEND_READY = False
EMBED_SEQS = 16  # inputs packed into one llama_decode of an embedding model
FA_TILE = 64  # query rows per tile of llama.cpp's CPU flash attention (GGML_FA_TILE_Q)
_FLASH_TYPES = {
    "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}
_KV_TYPES = {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0, "q4_0": llama_cpp.GGML_TYPE_Q4_0}
Logits = npt.NDArray[np.float32]  # one output's logits over the vocabulary


class LoadError(Exception):
    """The model did not load; `kind` is "out_of_memory" when llama.cpp said it could not allocate, "worker" when
    an RPC worker it needs cannot be reached, else "load"."""

    def __init__(self, message: str, kind: EngineFailure | None = None) -> None:
        super().__init__(message)
        self.kind: EngineFailure = kind or ("out_of_memory" if ran_out_of_memory() else "load")


# What llama.cpp logs when an allocation fails (ggml's CPU and GPU backends, the KV cache, compute buffers).
_OUT_OF_MEMORY = re.compile(
    r"out of memory|failed to allocate|unable to allocate|insufficient memory|cudaMalloc failed|alloc\w* failed", re.I
)
_DEBUG = 1  # GGML_LOG_LEVEL_DEBUG (ggml.h of the llama.cpp this binds)
_recent_log: collections.deque[str] = collections.deque(maxlen=64)
_split: Split | None = None  # while a model split across RPC workers loads: reads where its layers go


def _log(level: int, text: bytes, user_data: Any) -> None:
    """llama.cpp's log: kept (its recent lines tell out-of-memory from other failures) and written to stderr;
    but for the lazy grammar's debug lines, one per token while it awaits its trigger ("Grammar still
    awaiting trigger after token …"), which would fill the log."""
    line = text.decode("utf-8", "replace")
    if level == _DEBUG and line.startswith("Grammar "):
        return
    _recent_log.append(line)
    if _split is not None:
        _split.feed(line)
    sys.stderr.write(line)


_log_callback = llama_cpp.llama_log_callback(_log)  # kept here: llama.cpp holds only a pointer to it


def ran_out_of_memory() -> bool:
    """Whether llama.cpp's recent log says an allocation failed."""
    return any(_OUT_OF_MEMORY.search(line) for line in _recent_log)


class Engine:
    """A loaded model and its context of `n_parallel` sequences of `n_ctx` tokens each."""

    def __init__(self, spec: LoadSpec) -> None:
        global _BACKEND_READY
        if not _BACKEND_READY:
            llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            _BACKEND_READY = True
        global _split
        _recent_log.clear()
        kv_type = _KV_TYPES.get(spec.kv_cache_type)
        quantised = spec.kv_cache_type != "f16"
        if kv_type is None:
            raise LoadError(f"unknown KV cache type {spec.kv_cache_type!r} (f16, q8_0 or q4_0)")
        if quantised and spec.flash_attention == "off":
            raise LoadError(
                f"the KV cache type {spec.kv_cache_type} (LOCALLLM_KV_CACHE_TYPE or the kv_cache_type option) "
                "needs flash attention, but LOCALLLM_FLASH_ATTENTION is off"
            )
        # llama_supports_gpu_offload() says yes for any build with the RPC backend: ask for a GPU device.
        self.local_gpu = rpc.local_gpu()
        self.workers_lost: tuple[str, ...] = ()
        known = self._attach_workers(spec) if spec.rpc_servers else []
        self.gpu = self.local_gpu or any(d.where for d in known)
        self.n_gpu_layers = spec.num_gpu if spec.num_gpu >= 0 else (999 if self.gpu else 0)
        mparams = llama_cpp.llama_model_default_params()
        # use_mmap false reads the weights into memory (llama.cpp's load mode "none"); true leaves llama.cpp's "auto"
        # (a memory map where the device supports one).
        load_mode = llama_cpp.LLAMA_LOAD_MODE_AUTO if spec.use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
        set_fields(mparams, n_gpu_layers=self.n_gpu_layers, load_mode=load_mode)
        if spec.main_gpu >= 0 and self.local_gpu and not known:
            # the whole model on that one GPU (llama-server's --split-mode none --main-gpu N); the daemon checked
            # the index against the GPUs nvidia-smi lists (service/loadref.py)
            set_fields(mparams, split_mode=llama_cpp.LLAMA_SPLIT_MODE_NONE, main_gpu=spec.main_gpu)
        _split = Split(known) if known else None
        try:
            model = llama_cpp.llama_model_load_from_file(spec.model_path.encode(), mparams)
        finally:
            self.split, _split = _split, None
        if not model:
            raise LoadError(f"llama.cpp could not load {spec.model_path} (not a GGUF it supports, or out of memory)")
        self.model = model
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_layer = int(llama_cpp.llama_model_n_layer(model))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(model))
        self.embedding = spec.embedding
        self.n_parallel = 1 if spec.embedding else max(1, spec.n_parallel)
        self.n_batch = spec.n_ctx if spec.embedding else spec.n_batch
        cparams = llama_cpp.llama_context_default_params()
        set_fields(
            cparams,
            n_ctx=spec.n_ctx * self.n_parallel,
            n_batch=self.n_batch,
            n_ubatch=min(spec.n_batch, UBATCH_MAX),
            n_seq_max=self.n_parallel,
            kv_unified=False,
            # a speculating sequence has an output for its next token and each drafted one (llama.cpp's default: 1)
            n_outputs_max_per_seq=NUM_DRAFT_MAX + 1,
            # A quantised V cache needs flash attention: under "auto" it is turned on rather than left to llama.cpp,
            # whose "auto" may pick off on a device without the kernel and then refuse the context.
            flash_attn_type=_FLASH_TYPES["on" if quantised else spec.flash_attention],
            type_k=kv_type,
            type_v=kv_type,
            swa_full=spec.swa_full,  # (llama.cpp's own default is a full-size cache; llama-server's is not)
        )
        if spec.embedding:
            # Non-causal models (BERT) need a whole input in one ubatch; several short inputs share a batch,
            # each its own sequence, and the pooling type (mean, cls, last) comes from the model.
            set_fields(cparams, n_ubatch=self.n_batch, n_seq_max=EMBED_SEQS, kv_unified=True, embeddings=True)
        if spec.n_threads > 0:
            set_fields(cparams, n_threads=spec.n_threads, n_threads_batch=spec.n_threads)
        ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            llama_cpp.llama_model_free(model)
            said = [
                line.split(": ", 1)[1].strip() for line in _recent_log if line.startswith("llama_init_from_model: ")
            ]
            why = f": {said[-1]}" if said else " (out of memory? try a smaller num_ctx)"
            raise LoadError(f"llama.cpp could not create the context{why}")
        self.ctx = ctx
        self._adapters = self._apply_lora(spec.lora)
        self.projector = self._load_projector(spec) if spec.projector else None
        # llama.cpp pads the context (to a multiple of 256): the window a request gets is what was asked for.
        self.n_ctx_seq = min(int(llama_cpp.llama_n_ctx(ctx)) // self.n_parallel, spec.n_ctx)
        self.memory = llama_cpp.llama_get_memory(ctx)  # None for models without a cache (BERT)
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.pooling = int(llama_cpp.llama_pooling_type(ctx))
        rank = self.pooling == llama_cpp.LLAMA_POOLING_TYPE_RANK
        self.n_embd = int(llama_cpp.llama_model_n_cls_out(model) if rank else llama_cpp.llama_model_n_embd(model))
        self.eog_tokens = [t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, t)]
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._n = 0
        # llama.cpp's CPU flash attention runs fewer than FA_TILE new tokens of a sequence through a row-by-row
        # path whose cost grows with the cached context: on stories260K, 32 new tokens after 1,000 cached take
        # 54 ms and 64 take 8 ms. `tail_tile` tells the decode loop to round a short prompt tail up to a tile by
        # evaluating some cached tokens again (see `worth_a_tile`). Flash attention is on for CPU models under
        # llama.cpp's "auto"; with it off (LOCALLLM_FLASH_ATTENTION=off) nothing is rounded, and GPU kernels have
        # no such path.
        on_cpu = self.n_gpu_layers == 0 or not self.local_gpu  # (RPC workers run the same CPU kernels)
        recurrent = llama_cpp.llama_model_is_recurrent(model) or llama_cpp.llama_model_is_hybrid(model)
        self.n_swa = int(llama_cpp.llama_model_n_swa(model))
        flash = spec.flash_attention != "off"
        # (not for a model whose cache cannot be cut back: rounding up cuts it; see `checkpoints`). With
        # `swa_full` a sliding window's layers keep every position of a slot, which then can be cut back;
        # the decode loop rounds up only where `cuttable` says so (not a restored checkpoint).
        self.swa_full = spec.swa_full and self.n_swa > 0
        uncut = recurrent or (self.n_swa > 0 and not self.swa_full)
        self.tail_tile = FA_TILE if flash and on_cpu and not uncut and not spec.embedding else 0
        # Saved states (kvstates.py) are restored and then cut to the prompt's common prefix; a recurrent state,
        # or a sliding window's, cannot be cut, so those models keep checkpoints instead (checkpoints.py). Even
        # with `swa_full` llama.cpp saves a window layer's last `n_swa` positions only: a restored state
        # still cannot be cut back, so such a model keeps checkpoints too (its slots can be cut).
        self.saves_states = not spec.embedding and self.memory is not None
        self.checkpoints = recurrent or self.n_swa > 0
        # Speculation drops a rejected draft's tail from the cache, which a recurrent state cannot do.
        self.can_speculate = not recurrent and not spec.embedding and self.memory is not None
        self._spec = spec
        self._attention_per_token = 2.0 * float(llama_cpp.llama_model_n_embd(model)) * self.n_layer
        self._matmul_per_token = 2.0 * max(1.0, float(llama_cpp.llama_model_n_params(model)))
        self._piece_buf = ctypes.create_string_buffer(256)
        self._pieces: dict[int, bytes] = {}
        self.special_suffix = self._special_suffix()
        self.rerank_frame = self._rerank_frame() if rank else None
        _recent_log.clear()  # loaded: what llama.cpp logs from here on is about decoding

    def _attach_workers(self, spec: LoadSpec) -> list[KnownDevice]:
        """Register the devices of the RPC workers in `spec.rpc_servers` (llama.cpp then puts the offloaded
        layers on them, in proportion to their free memory); the devices the load may use.

        A worker that does not answer is left out if the model's weights still fit the free memory of the
        others (or, with none left, of this machine), else the load fails with kind "worker" saying so."""
        if not rpc.supported():
            raise LoadError("this llama.cpp was built without its RPC backend: reinstall with ./install.sh", "worker")
        remote: list[rpc.Device] = []
        lost = []
        for endpoint in spec.rpc_servers:
            why = rpc.reachable(endpoint)
            if why is not None:
                lost.append(f"{endpoint} ({why})")
                continue
            try:
                remote += rpc.add_server(endpoint)
            except rpc.RpcError as exc:
                lost.append(f"{endpoint} ({exc})")
        local = [d for d in rpc.devices() if not d.endpoint]
        if lost:
            weights = sum(os.path.getsize(p) for p in (spec.model_path, *spec.lora) if os.path.exists(p))
            room = sum(d.free for d in remote) if remote else sum(d.free for d in local if d.kind == rpc.DEVICE_CPU)
            where = "the other workers'" if remote else "this machine's"
            if spec.num_gpu < 0 and weights > room:
                raise LoadError(
                    f"the RPC worker{'s' if len(lost) > 1 else ''} {', '.join(lost)} cannot be reached, and the model "
                    f"({weights / 2**20:.0f} MiB of weights) does not fit in {where} free memory "
                    f"({room / 2**20:.0f} MiB): start the worker again, or leave it out of LOCALLLM_RPC_SERVERS",
                    "worker",
                )
            sys.stderr.write(f"runner: loading without the unreachable RPC workers {', '.join(lost)}\n")
            self.workers_lost = tuple(lost)
        return [KnownDevice(d.name, d.endpoint, d.index, d.free, d.total) for d in (*remote, *local)]

    def _rerank_frame(self) -> RerankFrame:
        """The special tokens and template llama-server's rerank format uses (see `rerank.pair_tokens`)."""
        vocab = self.vocab
        eos = int(llama_cpp.llama_vocab_eos(vocab))
        if eos == llama_cpp.LLAMA_TOKEN_NULL:
            eos = int(llama_cpp.llama_vocab_sep(vocab))
        template = llama_cpp.llama_model_chat_template(self.model, b"rerank")
        return RerankFrame(
            bos=int(llama_cpp.llama_vocab_bos(vocab)) if llama_cpp.llama_vocab_get_add_bos(vocab) else None,
            eos=eos if llama_cpp.llama_vocab_get_add_eos(vocab) else None,
            sep=int(llama_cpp.llama_vocab_sep(vocab)) if llama_cpp.llama_vocab_get_add_sep(vocab) else None,
            template=template.decode("utf-8", "replace") if template else None,
        )

    def _apply_lora(self, paths: tuple[str, ...]) -> list[Any]:
        adapters = []
        for path in paths:
            adapter = llama_cpp.llama_adapter_lora_init(self.model, path.encode())
            if not adapter:
                self.close()
                raise LoadError(f"llama.cpp could not load the adapter {path} (not a LoRA GGUF for this model)")
            adapters.append(adapter)
        if adapters:
            array = (llama_cpp.llama_adapter_lora_p_ctypes * len(adapters))(*adapters)
            scales = (ctypes.c_float * len(adapters))(*([1.0] * len(adapters)))
            if llama_cpp.llama_set_adapters_lora(self.ctx, array, len(adapters), scales) != 0:
                self.close()
                raise LoadError("llama.cpp could not apply the LoRA adapters")
        return adapters

    def _load_projector(self, spec: LoadSpec) -> Projector:
        """The projector (mmproj) beside the model, on the GPU when the model's layers are."""
        if spec.embedding:
            self.close()
            raise LoadError("an embedding model takes no projector")
        try:
            return Projector(
                spec.projector,
                self.model,
                self.ctx,
                n_batch=int(llama_cpp.llama_n_ubatch(self.ctx)),
                use_gpu=self.local_gpu and self.n_gpu_layers > 0,
                n_threads=spec.n_threads,
            )
        except ProjectorError as exc:
            self.close()
            raise LoadError(str(exc)) from None

    def info(self) -> RunnerInfo:
        return RunnerInfo(
            n_ctx=self.n_ctx_seq,
            n_ctx_train=self.n_ctx_train,
            n_parallel=self.n_parallel,
            n_vocab=self.n_vocab,
            gpu_offload=self.local_gpu and self.n_gpu_layers > 0,
            n_gpu_layers=min(self.n_gpu_layers, self.n_layer + 1),
            n_layer=self.n_layer,
            embedding=self.embedding,
            n_embd=self.n_embd,
            devices=self.split.shares() if self.split is not None else (),
            workers_lost=self.workers_lost,
            vision=self.projector is not None and self.projector.vision,
            audio=self.projector is not None and self.projector.audio,
        )

    def ran_out_of_memory(self) -> bool:
        """Whether llama.cpp's recent log says an allocation failed (for a decode that failed)."""
        return ran_out_of_memory()

    # -- text ----------------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = True, parse_special: bool = True) -> list[int]:
        """Tokens of `text`; with `add_bos`, the special tokens the model adds (an embedding model: at both
        ends, as BERT's [CLS] ... [SEP]); with `parse_special`, special tokens written in the text are read
        as such."""
        data = text.encode("utf-8")
        special = add_bos and (self.add_bos or self.embedding)
        cap = len(data) + 8
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, cap, special, parse_special)
        if n < 0:
            cap = -n
            buf = (llama_cpp.llama_token * cap)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, cap, special, parse_special)
        return list(buf[:n])

    def _special_suffix(self) -> list[int]:
        """The tokens `tokenize` appends after the text (BERT's [SEP]): kept when an input is truncated."""
        full, bare = self.tokenize("a"), self.tokenize("a", add_bos=False)
        for start in range(len(full) - len(bare) + 1):
            if bare and full[start : start + len(bare)] == bare:
                return full[start + len(bare) :]
        return []

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes of one token (cached: the per-token path calls this for every token); a special token's
        are empty unless `special` (then its text, as llama-server's tokenize and detokenize write it)."""
        cached = None if special else self._pieces.get(token)
        if cached is not None:
            return cached
        buf = self._piece_buf
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        out = buf.raw[:n]
        if not special:
            self._pieces[token] = out
        return out

    def worth_a_tile(self, n_new: int, n_past: int) -> bool:
        """Whether evaluating `n_new` tokens after `n_past` cached ones costs more on the row-by-row path than
        a whole tile does. The row path's cost per token grows with the attention's share of the work,
        r = attention FLOPs (2·n_past·n_embd·n_layer) over weight FLOPs (2·n_params); a tile costs about
        FA_TILE tokens' weights. Fitted on stories260K (r≈2 at 1,000 cached: worth it from 8 new tokens) and
        a 135M llama (r≈0.26: from 34); a 7B model at 1,000 cached tokens needs 57."""
        if not self.tail_tile or n_new >= self.tail_tile or n_past <= 0:
            return False
        share = n_past * self._attention_per_token / self._matmul_per_token
        return n_new * (1.0 + 3.5 * share) >= self.tail_tile

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

    def cuttable(self, seq: int, from_pos: int) -> bool:
        """Whether sequence `seq`'s cache can be cut back to its first `from_pos` positions. A sliding-window
        cache drops its oldest positions (a restored state holds its last `n_swa` only, even with `swa_full`):
        cut back further than its window, it lacks what the next tokens attend to (llama-server's test). Read
        before the cut: a cut that empties the window layers leaves no position to compare."""
        if not self.n_swa or from_pos == 0:
            return True
        pos_min = int(llama_cpp.llama_memory_seq_pos_min(self.memory, seq))
        return pos_min <= max(0, from_pos - self.n_swa)

    def forget(self, seq: int, from_pos: int) -> bool:
        """Drop the cache of sequence `seq` from `from_pos` on; False if this model cannot cut part of it
        (`cuttable`; then all of it is dropped)."""
        if self.cuttable(seq, from_pos) and llama_cpp.llama_memory_seq_rm(self.memory, seq, from_pos, -1):
            return True
        llama_cpp.llama_memory_seq_rm(self.memory, seq, -1, -1)
        return False

    # -- saved states (the prompt cache's, kvstates.py) ----------------------------------------------

    def save_state(self, seq: int) -> bytearray | None:
        """A copy of sequence `seq`'s state (its KV cache), None if llama.cpp gives none."""
        size = int(llama_cpp.llama_state_seq_get_size(self.ctx, seq))
        if size <= 0:
            return None
        data = bytearray(size)
        written = llama_cpp.llama_state_seq_get_data(self.ctx, (ctypes.c_uint8 * size).from_buffer(data), size, seq)
        return data if written == size else None

    def load_state(self, seq: int, data: bytearray) -> bool:
        """Put a saved state into sequence `seq` (replacing what it held); False when llama.cpp refuses it (the
        sequence is then empty)."""
        buf = (ctypes.c_uint8 * len(data)).from_buffer(data)
        if llama_cpp.llama_state_seq_set_data(self.ctx, buf, len(data), seq) > 0:
            return True
        llama_cpp.llama_memory_seq_rm(self.memory, seq, -1, -1)
        return False

    def state_layout(self) -> dict[str, object]:
        """Everything a saved state depends on: a state is restored only into a runner whose layout is equal."""
        spec = self._spec
        # the KV of a media chunk comes from the projector: a state made with another one is not this one's
        media = {"projector": kvfiles.file_identity(spec.projector)} if spec.projector else {}
        return {
            **media,
            "format": 2,  # 2: a state file carries the output kept after its prompt
            "llama_cpp": llama_cpp.__version__,
            "model": kvfiles.file_identity(spec.model_path),
            "lora": [kvfiles.file_identity(p) for p in spec.lora],
            "n_ctx_seq": self.n_ctx_seq,
            "n_ctx": int(llama_cpp.llama_n_ctx(self.ctx)),
            "n_parallel": self.n_parallel,
            "kv_cache_type": spec.kv_cache_type,
            "flash_attention": spec.flash_attention,
            # a full-size window cache: llama.cpp sizes the context's window layers otherwise (absent when off,
            # so the other layouts keep their keys)
            **({"swa_full": True} if self.swa_full else {}),
            "n_gpu_layers": self.n_gpu_layers if self.gpu else 0,
        }

    def logits(self, at: int | Logits | bytes) -> Logits:
        """The logits of the `at`-th output of the last decode (a view: the next decode overwrites them), or
        kept logits (`keep_logits`, or their bytes as a state file gives them back)."""
        if isinstance(at, bytes):
            kept: Logits = np.frombuffer(at, dtype=np.float32)
            return kept
        if not isinstance(at, int):
            return at
        row: Logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, at), shape=(self.n_vocab,))
        return row

    def argmax(self, at: int) -> int:
        """The most likely token at the `at`-th output of the last decode (a draft model's greedy pick)."""
        return int(self.logits(at).argmax())

    def keep_logits(self, index: int) -> Logits:
        """A copy of the `index`-th output's logits, which outlives the next decode."""
        kept: Logits = self.logits(index).copy()
        return kept

    def logprobs(self, at: int | Logits | bytes, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
        """The log-probability of `token` at output `at` (or in kept logits), and the `top` most likely tokens."""
        logits = self.logits(at)
        peak = float(logits.max())
        log_z = peak + math.log(float(np.exp(logits - peak).sum()))
        chosen = float(logits[token]) - log_z
        if top <= 0:
            return chosen, []
        idx = np.argpartition(-logits, top)[:top] if top < self.n_vocab else np.arange(self.n_vocab)
        idx = idx[np.argsort(-logits[idx])]
        return chosen, [(int(i), float(logits[i]) - log_z) for i in idx]

    # -- embeddings ----------------------------------------------------------------------------------

    def embed(self, prompts: list[list[int]], *, normalize: bool = True) -> list[list[float]]:
        """One pooled embedding per prompt (each at most `n_ctx_seq` tokens), L2-normalised with `normalize`.

        Raises ValueError when the model was not loaded for embeddings, RuntimeError when llama.cpp fails.
        """
        if not self.embedding:
            raise ValueError("this model was not loaded for embeddings")
        out: list[list[float]] = []
        i = 0
        while i < len(prompts):
            self.clear_batch()
            sizes: list[int] = []
            while i < len(prompts) and len(sizes) < EMBED_SEQS and self._n + len(prompts[i]) <= self.n_batch:
                for pos, token in enumerate(prompts[i]):
                    self.add(token, pos, len(sizes), True)
                sizes.append(len(prompts[i]))
                i += 1
            if not sizes:
                raise ValueError(f"an input of {len(prompts[i])} tokens does not fit the batch of {self.n_batch}")
            self._batch.n_tokens = self._n
            if self.memory:
                llama_cpp.llama_memory_clear(self.memory, True)
                code = int(llama_cpp.llama_decode(self.ctx, self._batch))
            else:
                code = int(llama_cpp.llama_encode(self.ctx, self._batch))
            if code != 0:
                raise RuntimeError(f"llama.cpp failed to compute the embeddings (code {code})")
            out.extend(self._pooled(sizes, normalize))
        self.clear_batch()
        return out

    def _pooled(self, sizes: list[int], normalize: bool) -> list[list[float]]:
        vectors = []
        if self.pooling == llama_cpp.LLAMA_POOLING_TYPE_NONE:  # per-token outputs: take their mean
            rows = np.ctypeslib.as_array(llama_cpp.llama_get_embeddings(self.ctx), shape=(sum(sizes), self.n_embd))
            start = 0
            for size in sizes:
                vectors.append(rows[start : start + size].mean(axis=0, dtype=np.float64))
                start += size
        else:
            for seq in range(len(sizes)):
                ptr = llama_cpp.llama_get_embeddings_seq(self.ctx, seq)
                if not ptr:
                    raise RuntimeError("llama.cpp returned no embedding")
                vectors.append(np.ctypeslib.as_array(ptr, shape=(self.n_embd,)).astype(np.float64))
        out = []
        for vector in vectors:
            norm = float(np.linalg.norm(vector))
            if normalize and norm > 0:
                vector = vector / norm
            out.append(vector.astype(np.float32).tolist())
        return out

    def load_draft(self) -> Engine | None:
        """The draft model of this engine's spec (None without one), with a context like this one's; LoadError
        when it does not load or its vocabulary is not this model's (its drafts would be other tokens)."""
        spec = self._spec
        if not spec.draft:
            return None
        if not self.can_speculate:
            raise LoadError("a draft model needs a model whose cache can drop a rejected draft (not a recurrent one)")
        draft_spec = replace(
            spec, model_path=spec.draft, lora=(), rpc_servers=(), projector="", draft="", cache_ram=0, cache_dir=""
        )
        draft = Engine(draft_spec)
        why = same_vocabulary(self, draft)
        if why is not None:
            draft.close()
            raise LoadError(f"the draft model {spec.draft} cannot draft for {spec.model_path}: {why}")
        return draft

    def close(self) -> None:
        projector = getattr(self, "projector", None)
        if projector is not None:
            projector.close()
            self.projector = None
        if getattr(self, "_batch", None) is not None:
            llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)
