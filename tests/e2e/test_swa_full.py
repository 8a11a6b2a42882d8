"""`LOCALLLM_SWA_FULL` (llama-server's `--swa-full`) on the real daemon and llama.cpp, with the tiny random
Gemma 3 of tests/shapes.py (5 window layers of 64 tokens, 1 global): its window layers keep every position of a
slot, so a slot is cut back to the prefix a later prompt shares, where without it the window layers have reused
the cells of the prompt's beginning and only a checkpoint restores part of it. Greedy: the text is a fresh
evaluation's. Not timed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..hubstub import HubStub
from .conftest import Daemon, shapes_repo
from .test_checkpoints import LONG, OTHERS, complete, shapes_daemon_with, unload

pytestmark = [pytest.mark.e2e, pytest.mark.model]

# A prompt of about 1,600 tokens, and one sharing its first ~790 then going its own way. Without swa_full the
# window layers' cache holds 768 cells a slot (64 + a micro-batch of 512, padded): the first prompt's beginning
# is gone from them, and of its checkpoints (512, 1,024 and before its end) the second restores 512 tokens.
FIRST = LONG * 6
SECOND = LONG * 3 + "Then a purple elephant danced on the roof of the old mill."


def ps_entry(d: Daemon, arch: str) -> dict[str, Any]:
    models = httpx.get(d.url + "/api/ps", timeout=10).json()["models"]
    entry: dict[str, Any] = next(m for m in models if m["name"].split(":latest")[0] == f"hf.co/{shapes_repo(arch)}")
    return entry


def shared_prefix_again(d: Daemon) -> tuple[str, int, int]:
    """The first prompt, other traffic (the other slot), then the second: its text, tokens and cached tokens."""
    unload(d, "gemma3")
    _, n_first, cold = complete(d, "gemma3", FIRST)
    assert cold == 0 and n_first > 1500
    complete(d, "gemma3", OTHERS[0])
    return complete(d, "gemma3", SECOND)


def test_with_swa_full_a_slot_is_cut_back_to_the_shared_prefix(
    tmp_path: Path,
    shapes_hub: HubStub,
) -> None:
    with shapes_daemon_with(tmp_path, shapes_hub, LOCALLLM_SWA_FULL="1") as d:
        text, n_second, cached = shared_prefix_again(d)
        assert n_second > 780 and cached > 700, f"{cached} of {n_second} reused: the slot cut back to the prefix"
        # what is evaluated: the new tail, rounded up to a flash-attention tile (64) with cached tokens
        assert n_second - cached <= 64, f"{n_second - cached} evaluated"
        assert ps_entry(d, "gemma3")["swa_full"] is True
        unload(d, "gemma3")
        fresh, n_fresh, cold = complete(d, "gemma3", SECOND)
        assert cold == 0 and n_fresh == n_second
        assert text == fresh, "the slot cut back gives the text of a fresh evaluation"
        complete(d, "lfm2", "Hello there")
        assert "swa_full" not in ps_entry(d, "lfm2"), "a model without window layers loads as without it"


def test_without_it_the_window_layers_lost_the_prefix_and_a_checkpoint_restores_less(
    tmp_path: Path, shapes_hub: HubStub
) -> None:
    with shapes_daemon_with(tmp_path, shapes_hub) as d:
        _, n_second, cached = shared_prefix_again(d)
        assert cached == 512, f"{cached} of {n_second}: the checkpoint at the first chunk boundary, not the slot"
        assert "swa_full" not in ps_entry(d, "gemma3")


def test_the_state_layout_key_says_swa_full(tmp_path: Path, shapes_hub: HubStub) -> None:
    """A state saved with a full-size window cache is never offered to a runner without one, nor the other
    way round: the disk tier's layout folder differs, and its layout.json says `swa_full` (the option too)."""
    kv = tmp_path / "kv"
    with shapes_daemon_with(tmp_path, shapes_hub, LOCALLLM_SWA_FULL="1", LOCALLLM_CACHE_DIR=str(kv)) as d:
        for swa_full in (None, False):
            options: dict[str, Any] = {"temperature": 0, "num_predict": 4}
            if swa_full is not None:
                options["swa_full"] = swa_full
            r = httpx.post(
                d.url + "/api/generate",
                json={"model": f"hf.co/{shapes_repo('gemma3')}", "prompt": LONG, "stream": False, "raw": True,
                      "options": options},
                timeout=120,
            )  # fmt: skip
            assert r.status_code == 200, r.text
            assert ps_entry(d, "gemma3").get("swa_full", False) is (swa_full is None)
            unload(d, "gemma3")
    layouts = [json.loads(p.read_text()) for p in sorted(kv.glob("*/layout.json"))]
    assert len(layouts) == 2, layouts
    full = [layout for layout in layouts if layout.get("swa_full") is True]
    assert len(full) == 1, layouts
    other = next(layout for layout in layouts if layout is not full[0])
    assert "swa_full" not in other
    assert {k: v for k, v in full[0].items() if k != "swa_full"} == other, "the same model and shape otherwise"
