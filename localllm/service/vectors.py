"""Embedding vectors as a request shapes them: the width a model states, the `dimensions` a request may ask for,
and a vector cut to them (made a unit vector again, as OpenAI's `dimensions` gives)."""

from __future__ import annotations

import math
from typing import Any

from ..domain.errors import InvalidRequest


def stated_width(value: Any) -> int:
    """A model's embedding width from its metadata value (0 where it states none)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def check_dimensions(dimensions: int, width: int) -> None:
    """`dimensions` must be at least 1 and, where the width is known, at most it."""
    if dimensions < 1 or (width and dimensions > width):
        bounds = f"between 1 and {width}" if width else "at least 1"
        raise InvalidRequest(f"dimensions must be {bounds}, got {dimensions}", field="dimensions")


def cut(vector: list[float], dimensions: int) -> list[float]:
    """The first `dimensions` components, as a unit vector."""
    head = vector[:dimensions]
    norm = math.sqrt(math.fsum(x * x for x in head))
    return [x / norm for x in head] if norm > 0 else head
