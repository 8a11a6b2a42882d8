"""`use_mmap` reaches llama.cpp: false reads the weights into the runner's memory, the default maps the file.

(llama.cpp replaced its `use_mmap` field with `load_mode`; setting the old name on the ctypes struct used to
change nothing. `runner/cstruct.py` now refuses a field the binding lacks.)
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ..conftest import STORIES_REPO
from .conftest import Daemon

pytestmark = [pytest.mark.e2e, pytest.mark.model]

STORIES = f"hf.co/{STORIES_REPO}"


def maps_a_model(pid: int) -> bool:
    """Whether process `pid` has a model blob of the store mapped."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
    return any("/blobs/sha256-" in line for line in maps.splitlines())


def generate(d: Daemon, **options: object) -> str:
    body = {"model": STORIES, "prompt": "Once upon a time", "stream": False}
    body["options"] = {"temperature": 0, "num_predict": 12, **options}
    r = httpx.post(d.url + "/api/generate", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return str(r.json()["response"])


def test_the_binding_has_load_mode_not_use_mmap() -> None:
    import llama_cpp

    from localllm.runner.cstruct import field_names

    names = field_names(llama_cpp.llama_model_params)
    assert "load_mode" in names and "use_mmap" not in names


def test_use_mmap_false_reads_the_weights_into_memory(daemon: Daemon) -> None:
    assert daemon.cli("pull", STORIES).returncode == 0
    mapped = generate(daemon)
    pids = daemon.runner_pids()
    assert pids and all(maps_a_model(pid) for pid in pids), "by default llama.cpp maps the model file"

    read = generate(daemon, use_mmap=False)
    unmapped = [pid for pid in daemon.runner_pids() if not maps_a_model(pid)]
    assert unmapped, "use_mmap false: a runner that holds the weights in its own memory"
    assert read == mapped, "the same weights, the same greedy text"
