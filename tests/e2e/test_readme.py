"""The README followed word for word (issue 18, items 5 and 6): its first commands, pasted in order into a
second terminal while `localllm serve` runs, work; so does its `localllm embed all-minilm …` example.

The Hub stand-in serves the README's repositories with the tiny test models in place of the real files.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import EMBED_FILE, ROOT, model_file
from ..hubstub import HubStub
from .conftest import Daemon, daemon_with

README = (ROOT / "README.md").read_text()


def sh_blocks(heading: str) -> list[list[str]]:
    """The ```sh blocks of a README section, each as its lines."""
    start = README.index(f"\n{heading}\n")
    end = README.find("\n## ", start + 1)
    section = README[start : end if end != -1 else None]
    return [block.strip().splitlines() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def command(line: str) -> list[str]:
    words = shlex.split(line, comments=True)
    assert words[0] == "localllm", line
    return words[1:]


@pytest.fixture(scope="module")
def readme_daemon(tmp_path_factory: pytest.TempPathFactory, stories_chat_gguf: Path) -> Iterator[Daemon]:
    repos = {
        "bartowski/SmolLM2-135M-Instruct-GGUF": {
            "SmolLM2-135M-Instruct-Q4_K_M.gguf": stories_chat_gguf,
            "SmolLM2-135M-Instruct-Q8_0.gguf": stories_chat_gguf,
        },
        "second-state/All-MiniLM-L6-v2-Embedding-GGUF": {
            "all-MiniLM-L6-v2-Embedding-F16.gguf": model_file(EMBED_FILE),
        },
    }
    with HubStub(repos) as hub, daemon_with(tmp_path_factory.mktemp("readme"), hub, []) as d:
        yield d


def test_the_readme_says_serve_runs_in_the_foreground() -> None:
    first = sh_blocks("## Set up and run")[0]
    serve = next(line for line in first if line.startswith("localllm serve"))
    assert "foreground" in serve
    assert "runs in the background" not in README


def test_the_first_commands_work_pasted_in_order_while_serve_runs(readme_daemon: Daemon) -> None:
    blocks = sh_blocks("## Set up and run")
    assert len(blocks) >= 2, "the commands to paste in the second terminal"
    for line in blocks[1]:
        result = readme_daemon.cli(*command(line))
        assert result.returncode == 0, (line, result.stderr)
    assert result.stdout.strip(), "the last command answers"


def test_the_embed_example_works_as_written(readme_daemon: Daemon) -> None:
    line = next(line for block in sh_blocks("## Use it") for line in block if line.startswith("localllm embed"))
    result = readme_daemon.cli(*command(line))
    assert result.returncode == 0, (line, result.stderr)
    vectors = [json.loads(out) for out in result.stdout.splitlines()]
    assert len(vectors) == 2 and len(vectors[0]) == 384
