"""The agents tier: real coding agents (installed from their package registries, tools.py) against a real daemon
on loopback.

A tiny model cannot be relied on to call tools, so the daemon's runner answers from a script the test writes
(LOCALLLM_TEST_SCRIPTED_OUTPUT, localllm/runner/scripted.py: test-only) in the syntax of the model's template:
stories260K given Qwen2.5's chat template, so the daemon renders Qwen's prompt and parses Hermes/Qwen
`<tool_call>` blocks exactly as for a real Qwen model. The daemon's templates, parsing, dialects and streaming
all run for real."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import ROOT, model_file
from ..e2e.conftest import Daemon, start_daemon, stop_daemon
from ..ggufcopy import copy_with_metadata
from ..hubstub import HubStub

MODEL = "scripted"  # the name the agents are given (a `localllm cp` alias of the pulled model)
REPO = "testorg/stories260K-qwen-GGUF"
QWEN_TEMPLATE = ROOT / "tests" / "data" / "templates" / "Qwen-Qwen2.5-7B-Instruct.jinja"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/agents/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.agents)


@pytest.fixture(scope="session")
def qwen_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    stories = model_file("stories260K.gguf")
    out = tmp_path_factory.mktemp("gguf") / "stories260K-qwen.gguf"
    meta: dict[str, str | int | list[str]] = {
        "tokenizer.chat_template": QWEN_TEMPLATE.read_text(),
        "llama.context_length": 65536,  # room for an agent's whole system prompt (the script answers, not the model)
    }
    return copy_with_metadata(stories, out, meta)


class Script:
    """The file the runner reads at each generation: rules `{"when": [...], "output": "..."}`, first match wins."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.set([])

    def set(self, rules: list[dict[str, object]]) -> None:
        self.path.write_text(json.dumps({"rules": rules}))

    def tool_round_trip(self, tool: str, arguments: dict[str, object], answer: str, result_mark: str) -> None:
        """First turn: a call of `tool` in Qwen's syntax; once the prompt holds the tool's result (`result_mark`,
        text only the result contains), the answer."""
        call = json.dumps({"name": tool, "arguments": arguments})
        self.set(
            [
                {"when": [result_mark], "output": answer},
                {"when": [], "output": f"<tool_call>\n{call}\n</tool_call>"},
            ]
        )


@pytest.fixture(scope="session")
def agents_daemon(tmp_path_factory: pytest.TempPathFactory, qwen_gguf: Path) -> Iterator[tuple[Daemon, Script]]:
    tmp = tmp_path_factory.mktemp("agents-daemon")
    script = Script(tmp / "script.json")
    with HubStub({REPO: {"stories260K-qwen-F32.gguf": qwen_gguf}}) as hub:
        d = start_daemon(tmp, hub, LOCALLLM_TEST_SCRIPTED_OUTPUT=str(script.path))
        try:
            pulled = d.cli("pull", f"hf.co/{REPO}")
            assert pulled.returncode == 0, pulled.stderr
            copied = d.cli("cp", f"hf.co/{REPO}", MODEL)
            assert copied.returncode == 0, copied.stderr
            yield d, script
        finally:
            stop_daemon(d)
