"""Model output read as llama.cpp reads it: per format family, the reasoning, the answer and the tool calls.

`detect` picks the family from the chat template's text (`registry.py`); `parse` reads a whole output
(`base.py`); the call syntaxes are in `calls.py` and `channels.py`, argument values in `values.py`.
"""

from __future__ import annotations

from .base import Call, Family, Parsed, parse
from .registry import FAMILIES, GENERIC, detect, reasons

__all__ = ["FAMILIES", "GENERIC", "Call", "Family", "Parsed", "detect", "parse", "reasons"]
