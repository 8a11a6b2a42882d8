"""The tokens of the long prompts a runner saw last, by their text.

A prompt sent again (a retry, a regeneration, the `n` choices or `best_of` candidates of one request, which
reach the runner as separate jobs) is not tokenized again: llama.cpp takes about a millisecond for a
1,000-token prompt on a small model, as long as the rest of the way to a cached prompt's first token. Short
texts are not kept (tokenizing them costs less than keeping them). No llama.cpp here: the engine's tokenizer
is passed in.
"""

from __future__ import annotations

import collections
from array import array
from collections.abc import Callable

MIN_CHARS = 512  # shorter texts are tokenized every time
MAX_CHARS = 1 << 22  # characters of text kept in all (with their tokens, a few tens of MB at most)
MAX_TEXTS = 64


class TokenCache:
    def __init__(
        self, tokenize: Callable[[str, bool], list[int]], *, max_chars: int = MAX_CHARS, max_texts: int = MAX_TEXTS
    ) -> None:
        self._tokenize = tokenize
        self.max_chars, self.max_texts = max_chars, max_texts
        self._kept: collections.OrderedDict[tuple[str, bool], array[int]] = collections.OrderedDict()
        self._chars = 0
        self.hits = 0

    def tokens(self, text: str, add_bos: bool) -> list[int]:
        """The tokens of `text` (with the model's BOS when `add_bos`), as the engine's tokenizer gives them."""
        if len(text) < MIN_CHARS:
            return self._tokenize(text, add_bos)
        key = (text, add_bos)
        kept = self._kept.get(key)
        if kept is not None:
            self._kept.move_to_end(key)
            self.hits += 1
            return kept.tolist()
        tokens = self._tokenize(text, add_bos)
        if len(text) <= self.max_chars:
            self._kept[key] = array("i", tokens)
            self._chars += len(text)
            while self._chars > self.max_chars or len(self._kept) > self.max_texts:
                (old, _), _ = self._kept.popitem(last=False)
                self._chars -= len(old)
        return tokens
