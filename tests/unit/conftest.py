"""The unit tier: no llama.cpp and no process (translators, encoders, fields, the store, names, Modelfiles,
templates, the runner's decode loop over a scripted engine, the scheduler and the routes over fake runners).
It runs in seconds: `scripts/test unit`. A test that needs a real daemon or model belongs in tests/e2e."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

from localllm.chat.renderpool import InlineRenderer
from localllm.service import templates

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting a process (a daemon, a runner, a shell) fails the unit test that does it."""

    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError(
            f"a unit test started a process ({args[:1] or kwargs.get('args')}): it belongs in tests/e2e"
        )

    monkeypatch.setattr(subprocess, "Popen", refuse)
    # The daemon renders chat templates in worker processes; here the same sandbox renders in-process.
    monkeypatch.setattr(templates, "RenderPool", InlineRenderer)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Run alone, the unit tier must not have loaded llama.cpp (its modules import only the layers above it)."""
    alone = session.items and all(HERE in Path(str(item.path)).resolve().parents for item in session.items)
    if alone and "llama_cpp" in sys.modules:
        raise pytest.UsageError("a module of the unit tier imported llama_cpp: that test belongs in tests/e2e")
