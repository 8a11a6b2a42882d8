"""The runner's cache of long prompts' tokens: the same text is tokenized once; bounded; BOS kept apart."""

from __future__ import annotations

from localllm.runner.tokencache import MIN_CHARS, TokenCache


class Counting:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, text: str, add_bos: bool) -> list[int]:
        self.calls.append((text, add_bos))
        return ([1] if add_bos else []) + [ord(c) for c in text]


def test_a_long_text_is_tokenized_once_and_its_tokens_come_back_equal() -> None:
    tokenize = Counting()
    cache = TokenCache(tokenize)
    text = "once upon a time " * 40
    first = cache.tokens(text, True)
    again = cache.tokens(text, True)
    assert again == first == tokenize(text, True) and len(tokenize.calls) == 2 and cache.hits == 1
    again.append(5)  # a caller's list is its own
    assert cache.tokens(text, True) == first
    assert cache.tokens(text, False) == first[1:], "with and without BOS are kept apart"


def test_short_texts_are_not_kept() -> None:
    tokenize = Counting()
    cache = TokenCache(tokenize)
    for _ in range(3):
        cache.tokens("x" * (MIN_CHARS - 1), True)
    assert len(tokenize.calls) == 3 and cache.hits == 0


def test_the_bounds_hold_oldest_first() -> None:
    tokenize = Counting()
    cache = TokenCache(tokenize, max_chars=3 * MIN_CHARS, max_texts=10)
    texts = [chr(ord("a") + i) * MIN_CHARS for i in range(4)]
    for text in texts:
        cache.tokens(text, True)
    cache.tokens(texts[0], True)
    assert len(tokenize.calls) == 5, "the oldest went when the fourth came"
    cache.tokens(texts[3], True)
    assert len(tokenize.calls) == 5
    small = TokenCache(tokenize, max_texts=2)
    for text in texts[:3]:
        small.tokens(text, True)
    small.tokens(texts[0], True)
    assert len(tokenize.calls) == 9 and small.hits == 0
