"""Token ids back to text in the runner: a `Detokenize` request is answered by a `TokenList` whose `pieces`
are each token's bytes with special tokens written out (as llama-server's `/detokenize` and `/tokenize`
`with_pieces` write them); the daemon joins them. An id outside the vocabulary is a "request" failure
(llama.cpp would read past its tables). No llama_cpp here.
"""

from __future__ import annotations

from typing import Protocol

from .protocol import Detokenize, Failure, TokenList


class PieceEngine(Protocol):
    n_vocab: int

    def piece(self, token: int, *, special: bool = False) -> bytes: ...


def answer(engine: PieceEngine, request: Detokenize) -> TokenList | Failure:
    tokens = request.tokens
    bad = next((t for t in tokens if not 0 <= t < engine.n_vocab), None)
    if bad is not None:
        return Failure("request", f"token {bad} is not in the vocabulary (0..{engine.n_vocab - 1})")
    return TokenList(tokens, tuple(engine.piece(t, special=True) for t in tokens))
