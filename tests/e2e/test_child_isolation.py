"""The daemon's Python children ignore the directory it was started in (issue 26, finding 3).

`python -m` puts the working directory first on `sys.path`: a `json.py` or `random.py` where `localllm serve` was
started made every model load fail, and a daemon started inside a checkout ran the checkout's `localllm/` in its
runners. Runners and render workers now start isolated (`python -I`, localllm/domain/child.py).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ..conftest import CHAT_REPO
from ..hubstub import HubStub
from .conftest import start_daemon, stop_daemon

CHAT = f"hf.co/{CHAT_REPO}"
POISON = 'raise RuntimeError("imported {} from the directory the daemon was started in")\n'


def poisoned(folder: Path) -> Path:
    """A directory whose modules shadow the standard library's and localllm itself, each failing when imported."""
    folder.mkdir()
    for name in ("json", "random", "struct", "select"):
        (folder / f"{name}.py").write_text(POISON.format(f"{name}.py"))
    (folder / "localllm").mkdir()
    (folder / "localllm" / "__init__.py").write_text(POISON.format("a fake localllm/"))
    return folder


def test_a_daemon_started_in_a_poisoned_directory_loads_renders_and_answers(
    tmp_path_factory: pytest.TempPathFactory, hub: HubStub
) -> None:
    tmp = tmp_path_factory.mktemp("isolation")
    d = start_daemon(tmp, hub, cwd=str(poisoned(tmp / "poisoned")), LOCALLLM_STREAM_INTERVAL="0")
    try:
        pulled = d.cli("pull", CHAT)
        assert pulled.returncode == 0, pulled.stderr
        body = {
            "model": CHAT,
            "messages": [{"role": "user", "content": "Tell me a story"}],  # rendered by a render worker
            "stream": False,
            "options": {"num_predict": 8, "temperature": 0},
        }
        r = httpx.post(d.url + "/api/chat", json=body, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["done"] and r.json()["eval_count"] > 0
        assert "imported" not in d.log()
    finally:
        stop_daemon(d)
