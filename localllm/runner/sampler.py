"""What picks each token: a llama.cpp sampler chain per request (or the greedy shortcut), from an output of the
last decode or from logits kept after a prompt; and the grammar of Ollama's `format`. With `engine.py` and
`rpc.py`, the only modules that load llama.cpp.
"""

from __future__ import annotations

import ctypes
import json
import math
from typing import TYPE_CHECKING, Any

import llama_cpp
import numpy as np

from ..domain.options import CallSyntax
from .protocol import Sampling

if TYPE_CHECKING:
    from .engine import Engine, Logits

# llama_sampler_init_penalties takes the vocabulary's size first in some llama.cpp versions (llama-cpp-python
# 0.3.36's), and not in others: the binding's argument list says which
_PENALTIES_TAKE_VOCAB = len(llama_cpp.llama_sampler_init_penalties.argtypes) == 5
# llama.cpp's llama_token_data, as numpy fills an array of candidates at once
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])

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


def call_grammar(calls: CallSyntax) -> str:
    """The GBNF grammar of a tool call in a family's syntax: one of its alternatives, each part written as it
    is (a text) or as a JSON value valid against its schema (by the converter `grammar_for` uses, so every
    schema's rules share one grammar)."""
    from llama_cpp import llama_grammar

    make: Any = llama_grammar.SchemaConverter  # untyped
    converter: Any = make(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    alternatives = []
    for i, alternative in enumerate(calls.alternatives):
        parts = []
        for j, part in enumerate(alternative):
            if isinstance(part, str):
                parts.append(converter._format_literal(part))
            else:
                schema = converter.resolve_refs(part, f"call{i}-{j}")
                parts.append(converter.visit(schema, f"call{i}-{j}"))
        alternatives.append(" ".join(parts) or '""')
    converter._add_rule("root", " | ".join(f"( {a} )" for a in alternatives))
    return str(converter.format_grammar()).replace(_SCHEMA_CHAR, _JSON_CHAR)


def _grammar(engine: Engine, params: Sampling) -> Any:
    """The grammar sampler of `params` (None when there is none): `grammar` from the first token, or the
    tool call of `calls`, lazy when it has triggers."""
    if params.grammar:
        return llama_cpp.llama_sampler_init_grammar(engine.vocab, params.grammar.encode(), b"root")
    if params.calls is None:
        return None
    text = call_grammar(params.calls).encode()
    if not params.calls.triggers:
        return llama_cpp.llama_sampler_init_grammar(engine.vocab, text, b"root")
    patterns = (ctypes.c_char_p * len(params.calls.triggers))(*(t.encode() for t in params.calls.triggers))
    no_tokens = (llama_cpp.llama_token * 0)()
    return llama_cpp.llama_sampler_init_grammar_lazy_patterns(
        engine.vocab, text, b"root", patterns, len(params.calls.triggers), no_tokens, 0
    )


def _plain_greedy(params: Sampling) -> bool:
    """Whether `params` select the most likely token with nothing else in the chain."""
    return (
        params.temperature <= 0
        and not params.grammar
        and params.calls is None
        and not params.logit_bias
        and not params.ignore_eos
        and not params.penalised
    )


class Sampler:
    """A llama.cpp sampler chain for one request."""

    def __init__(self, engine: Engine, params: Sampling) -> None:
        self._ptr: Any = None
        # Plain greedy decoding (the benchmark's and many API clients' temperature 0) needs no chain: the
        # chain would copy all n_vocab logits into a candidate array per token just to take the largest.
        # np.argmax picks the same token (the first of equal maxima, as llama.cpp's greedy sampler does).
        self._greedy_vocab = engine.n_vocab if _plain_greedy(params) else 0
        if self._greedy_vocab:
            return
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
        if params.grammar or params.calls is not None:
            grammar = _grammar(engine, params)
            if not grammar:
                llama_cpp.llama_sampler_free(chain)
                raise ValueError("the grammar does not parse")
            add(chain, grammar)
        last_n = params.repeat_last_n if params.repeat_last_n >= 0 else engine.n_ctx_seq
        if params.penalised:
            penalties = (last_n, params.repeat_penalty, params.frequency_penalty, params.presence_penalty)
            vocab = (engine.n_vocab,) if _PENALTIES_TAKE_VOCAB else ()
            add(chain, llama_cpp.llama_sampler_init_penalties(*vocab, *penalties))
        if params.temperature <= 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return
        seed = 0xFFFFFFFF if params.seed < 0 else params.seed & 0xFFFFFFFF  # llama.cpp's "random" seed
        if params.mirostat in (1, 2):
            add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
            tau, eta = params.mirostat_tau, params.mirostat_eta
            if params.mirostat == 1:
                add(chain, llama_cpp.llama_sampler_init_mirostat(engine.n_vocab, seed, tau, eta, 100))
            else:
                add(chain, llama_cpp.llama_sampler_init_mirostat_v2(seed, tau, eta))
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
        add(chain, llama_cpp.llama_sampler_init_dist(seed))

    def sample(self, engine: Engine, at: int | Logits | bytes) -> int:
        """Sample (and accept) a token from the `at`-th output of the last decode, or from kept logits (a row
        `Engine.keep_logits` copied out of an earlier decode)."""
        if self._greedy_vocab:
            return int(engine.logits(at).argmax())
        if isinstance(at, int):
            return int(llama_cpp.llama_sampler_sample(self._ptr, engine.ctx, at))
        # What llama_sampler_sample does with the context's row, done with the kept one.
        logits = engine.logits(at)
        n = len(logits)
        cur = np.empty(n, dtype=_TOKEN_DATA)
        cur["id"] = np.arange(n, dtype=np.int32)
        cur["logit"] = logits
        cur["p"] = 0.0
        array = llama_cpp.llama_token_data_array(
            cur.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)), n, -1, False
        )
        llama_cpp.llama_sampler_apply(self._ptr, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            raise RuntimeError("the sampler chain selected no token")
        token = int(array.data[array.selected].id)
        llama_cpp.llama_sampler_accept(self._ptr, token)
        return token

    def close(self) -> None:
        if self._ptr:
            llama_cpp.llama_sampler_free(self._ptr)
            self._ptr = None
