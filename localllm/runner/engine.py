"""One llama.cpp model and context, generating text for one request at a time.

This is the only module that imports llama_cpp. It runs inside the runner process (`runner.main`).
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import llama_cpp

log = logging.getLogger("localllm.runner")


@dataclass(frozen=True)
class LoadSpec:
    model_path: str
    n_ctx: int
    num_gpu: int = -1  # -1: every layer when llama.cpp can offload, else none
    n_threads: int = 0
    n_batch: int = 512
    use_mmap: bool = True
    n_parallel: int = 1


class ContextOverflow(Exception):
    def __init__(self, n_tokens: int, n_ctx: int) -> None:
        super().__init__(f"the input is {n_tokens} tokens, longer than the context window of {n_ctx} tokens")
        self.n_tokens = n_tokens
        self.n_ctx = n_ctx


@dataclass
class Piece:
    text: str


@dataclass
class Finished:
    reason: str
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int
    context: list[int]


class Engine:
    """A loaded model: tokenize, and generate with Ollama's options."""

    def __init__(self, spec: LoadSpec) -> None:
        gpu = bool(llama_cpp.llama_supports_gpu_offload())
        n_gpu_layers = spec.num_gpu if spec.num_gpu >= 0 else (-1 if gpu else 0)
        self.llm = llama_cpp.Llama(
            spec.model_path,
            n_ctx=spec.n_ctx,
            n_batch=spec.n_batch,
            n_ubatch=min(spec.n_batch, 512),
            n_gpu_layers=n_gpu_layers,
            n_threads=spec.n_threads or None,
            n_threads_batch=spec.n_threads or None,
            use_mmap=spec.use_mmap,
            verbose=False,
        )
        self.vocab = self.llm._model.vocab
        self.gpu_offload = gpu and n_gpu_layers != 0
        self.n_gpu_layers = n_gpu_layers
        self._buf = ctypes.create_string_buffer(256)

    def info(self) -> dict[str, Any]:
        n_layer = int(self.llm.metadata.get(f"{self.llm.metadata.get('general.architecture', '')}.block_count", 0) or 0)
        return {
            "n_ctx": self.llm.n_ctx(),
            "n_ctx_train": self.llm._model.n_ctx_train(),
            "n_vocab": self.llm.n_vocab(),
            "gpu_offload": self.gpu_offload,
            "n_gpu_layers": (n_layer + 1) if self.n_gpu_layers < 0 else min(self.n_gpu_layers, n_layer + 1),
            "n_layer": n_layer,
        }

    def tokenize(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    def _piece(self, token: int) -> bytes:
        n = llama_cpp.llama_token_to_piece(self.vocab, token, self._buf, len(self._buf), 0, False)
        if n < 0:
            self._buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, self._buf, len(self._buf), 0, False)
        return self._buf.raw[:n]

    def generate(
        self, prompt: str, options: dict[str, Any], cancelled: Callable[[], bool]
    ) -> Iterator[Piece | Finished]:
        """Generate from `prompt`; stops at an end-of-generation token, a stop string, num_predict or n_ctx."""
        tokens = self.tokenize(prompt)
        n_ctx = self.llm.n_ctx()
        if len(tokens) >= n_ctx:
            raise ContextOverflow(len(tokens), n_ctx)
        num_predict = int(options.get("num_predict", -1) or -1)
        if options.get("num_predict") == 0:
            num_predict = 0
        stops = [s for s in options.get("stop", []) if s]
        seed = options.get("seed")
        self.llm.set_seed(int(seed) if seed is not None and seed >= 0 else random.getrandbits(31))
        self.llm.last_n_tokens_size = int(options.get("repeat_last_n", 64))
        if self.llm.last_n_tokens_size < 0:
            self.llm.last_n_tokens_size = n_ctx

        start = time.perf_counter_ns()
        first_at = start
        generated: list[int] = []
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""  # text held back because it may be the start of a stop string
        reason = "length"
        if num_predict == 0:
            yield Finished("length", len(tokens), 0, 0, 0, tokens)
            return
        stream = self.llm.generate(
            tokens,
            temp=float(options.get("temperature", 0.8)),
            top_k=int(options.get("top_k", 40)),
            top_p=float(options.get("top_p", 0.9)),
            min_p=float(options.get("min_p", 0.0)),
            typical_p=float(options.get("typical_p", 1.0)),
            repeat_penalty=float(options.get("repeat_penalty", 1.0)),
            frequency_penalty=float(options.get("frequency_penalty", 0.0)),
            presence_penalty=float(options.get("presence_penalty", 0.0)),
        )
        try:
            for token in stream:
                if not generated:
                    first_at = time.perf_counter_ns()
                if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                    reason = "stop"
                    break
                generated.append(token)
                pending += decoder.decode(self._piece(token))
                if stops:
                    hit = _find_stop(pending, stops)
                    if hit is not None:
                        pending = pending[:hit]
                        reason = "stop"
                        break
                    keep = _held_back(pending, stops)
                else:
                    keep = 0
                if len(pending) > keep:
                    yield Piece(pending[: len(pending) - keep])
                    pending = pending[len(pending) - keep :]
                if cancelled():
                    reason = "cancel"
                    break
                if len(generated) == num_predict or len(tokens) + len(generated) >= n_ctx:
                    reason = "length"
                    break
        finally:
            stream.close()
        pending += decoder.decode(b"", final=True)
        if pending:
            yield Piece(pending)
        end = time.perf_counter_ns()
        yield Finished(reason, len(tokens), first_at - start, len(generated), end - first_at, tokens + generated)


def _find_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of `text` could begin a stop string."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if stop.startswith(text[-n:]):
                longest = n
                break
    return longest
