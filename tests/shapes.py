"""Random GGUFs of the sliding-window, hybrid and recurrent shapes for the tests: `bench/make_shapes.py`'s tiny
presets (a few MB each), with the real Llama-2 tokenizer of the tiny random test model."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from .testmodels import ROOT

# the architecture -> what it stands for
SHAPES = {
    "gemma3": "sliding-window attention (5 window layers of 64 tokens, 1 global)",
    "lfm2": "hybrid: 2 short-convolution (recurrent) layers, 2 attention layers",
    "mamba": "recurrent (Mamba, 2 layers)",
}


def write_shape(out: Path, arch: str, tokenizer_from: Path, *, chat_template: str | None = None) -> Path:
    """Write `arch`'s tiny random model (F16) to `out`."""
    spec = importlib.util.spec_from_file_location("make_shapes", ROOT / "bench" / "make_shapes.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules.get("make_shapes")
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["make_shapes"] = module  # (its dataclasses look their module up)
        spec.loader.exec_module(module)
    module.write_model(out, arch, "tiny", dtype="f16", tokenizer_from=tokenizer_from, chat_template=chat_template)
    return out
