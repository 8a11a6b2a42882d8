"""Stop strings in a generation's text: where one begins (`find_stop`), and how much of the text's end must be
held back because it may begin one (`held_back`). Used by the decode loop (batch.py) on each token's text."""

from __future__ import annotations


def find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of `text` could begin a stop string."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if stop.startswith(text[-n:]):
                longest = n
                break
    return longest
