"""A short run of bench/load.py: 16 clients for 6 s with a queue of 2, so some requests get 503 Server Busy.
It passes when every answer is 2xx or a 429/503 with Retry-After, nothing hangs or loses its connection,
and the daemon's memory settles back (bench/load.py's own verdict)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import MODELS, ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.model]


def test_a_short_load_gets_only_results_or_documented_busy_answers() -> None:
    for name in ("stories260K.gguf", "all-minilm-l6-v2-f16.gguf"):
        if not (MODELS / name).is_file():
            pytest.skip(f"test model {name} not found in {MODELS}")
    args = ["--clients", "16", "--duration", "6", "--settle", "1", "--max-queue", "2", "--timeout", "30"]
    done = subprocess.run(
        [sys.executable, str(Path(ROOT) / "bench" / "load.py"), *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verdict: PASS" in done.stdout
    assert "503" in done.stdout  # the small queue was exercised
