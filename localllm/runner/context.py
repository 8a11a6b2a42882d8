"""Fitting an input to the context window: what is kept when it is cut (no llama.cpp here, so the daemon can
use it too)."""

from __future__ import annotations

from typing import Any


def reserve_for_answer(n_ctx: int, num_predict: Any) -> int:
    """Tokens kept free for the answer when an input is cut to fit: a quarter of the context, or less when
    `num_predict` asks for less."""
    quarter = max(1, n_ctx // 4)
    wanted = int(num_predict) if isinstance(num_predict, int) and num_predict > 0 else quarter
    return min(wanted, quarter)


def cut_to_fit(prompt: list[int], n_ctx: int, num_predict: Any) -> tuple[list[int], int]:
    """Keep the head (a quarter: the instructions) and the tail (the latest text) of a prompt too long for
    the context, leaving room for the answer; returns the kept tokens and how many were dropped."""
    room = n_ctx - reserve_for_answer(n_ctx, num_predict)
    head = room // 4
    kept = prompt[:head] + prompt[len(prompt) - (room - head) :]
    return kept, len(prompt) - len(kept)
