"""The copier for the tests: `bench/make_copier.py`'s tiny preset, a llama or a Gemma 3 (sliding-window) whose built
weights make its greedy answer continue the longest earlier match of its last tokens (so it copies text the prompt
holds), with the real Llama-2 tokenizer of the tiny random test model."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from .testmodels import ROOT


def write_copier(out: Path, tokenizer_from: Path, arch: str = "llama") -> Path:
    """Write the tiny copier of `arch` (llama or gemma3; F16: Q8_0 crashes on AMX hosts) to `out`."""
    module = sys.modules.get("make_copier")
    if module is None:
        spec = importlib.util.spec_from_file_location("make_copier", ROOT / "bench" / "make_copier.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["make_copier"] = module  # (its dataclasses look their module up)
        spec.loader.exec_module(module)
    module.write_model(out, arch, "tiny", dtype="f16", tokenizer_from=tokenizer_from)
    return out
