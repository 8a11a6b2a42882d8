"""Token ids back to text in the runner: `{"op": "detokenize", "id", "tokens"}` is answered by
`{"ev": "tokens", "id", "tokens", "pieces"}`, each token's bytes with special tokens written out (as
llama-server's `/detokenize` and `/tokenize` `with_pieces` write them); the daemon joins them. An id outside
the vocabulary is a "request" error (llama.cpp would read past its tables). No llama_cpp here.
"""

from __future__ import annotations

from typing import Any, Protocol

from .protocol import Message


class PieceEngine(Protocol):
    n_vocab: int

    def piece(self, token: int, *, special: bool = False) -> bytes: ...


def answer(engine: Any, message: Message) -> Message:
    rid = str(message.get("id"))
    tokens = message.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        return {"ev": "error", "id": rid, "kind": "request", "message": "tokens must be a list of token ids"}
    vocab: PieceEngine = engine
    bad = next((t for t in tokens if not 0 <= t < vocab.n_vocab), None)
    if bad is not None:
        return {
            "ev": "error",
            "id": rid,
            "kind": "request",
            "message": f"token {bad} is not in the vocabulary (0..{vocab.n_vocab - 1})",
        }
    return {"ev": "tokens", "id": rid, "tokens": tokens, "pieces": [list(vocab.piece(t, special=True)) for t in tokens]}
