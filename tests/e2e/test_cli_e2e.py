"""The CLI's model-building commands against a real daemon: `create -f Modelfile` (from a GGUF on this machine,
uploaded as a blob, and from a Hub name), `show` of what it built, `embed`, and `list --library`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import CHAT_REPO, EMBED_FILE, EMBED_REPO, model_file
from ..hubstub import HubStub
from .conftest import Daemon, daemon_with

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODELFILE = '''# a story teller, built from a GGUF file next to this Modelfile
FROM ./weights/stories.gguf
PARAMETER temperature 0
PARAMETER num_predict 16
PARAMETER stop "<|unused|>"
SYSTEM """Once upon a time"""
MESSAGE user there was a cat.
MESSAGE assistant The cat was happy.
LICENSE """MIT"""
'''


@pytest.fixture(scope="module")
def cli_daemon(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    with daemon_with(tmp_path_factory.mktemp("cli"), hub, []) as d:
        yield d


def test_create_from_a_local_gguf_uploads_it_once(cli_daemon: Daemon, tmp_path: Path, stories_chat_gguf: Path) -> None:
    (tmp_path / "weights").mkdir()
    shutil.copyfile(stories_chat_gguf, tmp_path / "weights" / "stories.gguf")
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(MODELFILE)

    result = cli_daemon.cli("create", "teller", "-f", str(modelfile))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "gathering model components"
    assert any(line.startswith("copying file sha256:") and line.endswith(" 100%") for line in lines), lines
    assert lines[-1] == "success"

    show = cli_daemon.cli("show", "teller", "--modelfile")
    assert show.returncode == 0, show.stderr
    for line in ("PARAMETER temperature 0", "PARAMETER num_predict 16", "MESSAGE user", "LICENSE"):
        assert line in show.stdout, show.stdout
    assert cli_daemon.cli("show", "teller", "--system").stdout == "Once upon a time\n"
    assert cli_daemon.cli("show", "teller", "--license").stdout == "MIT\n"

    run = cli_daemon.cli("run", "teller", "and")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip()
    assert cli_daemon.cli("run", "teller", "and").stdout == run.stdout, "PARAMETER temperature 0 holds"

    again = cli_daemon.cli("create", "teller2", "-f", str(modelfile))
    assert again.returncode == 0, again.stderr
    assert "copying file" not in again.stderr  # the daemon has the blob already


def test_create_from_a_hub_name_pulls_it(cli_daemon: Daemon, tmp_path: Path) -> None:
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM hf.co/{CHAT_REPO}\nPARAMETER temperature 0.1\n")
    result = cli_daemon.cli("create", "chat-cool", "-f", str(modelfile))
    assert result.returncode == 0, result.stderr
    assert "success" in result.stderr
    listing = cli_daemon.cli("list")
    assert "chat-cool:latest" in listing.stdout and f"hf.co/{CHAT_REPO}:latest" in listing.stdout


def test_create_refuses_a_go_template_without_asking_the_daemon(cli_daemon: Daemon, tmp_path: Path) -> None:
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text("FROM ./nowhere.gguf\nTEMPLATE {{ .Prompt }}\n")
    result = cli_daemon.cli("create", "bad", "-f", str(modelfile))
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: {modelfile}: line 2: TEMPLATE looks like an Ollama Go template")


def test_list_library(cli_daemon: Daemon) -> None:
    result = cli_daemon.cli("list", "--library")
    assert result.returncode == 0, result.stderr
    assert "qwen2.5:0.5b" in result.stdout and "hf.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M" in result.stdout


def test_embed(cli_daemon: Daemon) -> None:
    model_file(EMBED_FILE)
    pulled = cli_daemon.cli("pull", f"hf.co/{EMBED_REPO}")
    assert pulled.returncode == 0, pulled.stderr
    result = cli_daemon.cli("embed", f"hf.co/{EMBED_REPO}", "a cat", "a kitten", "--dimensions", "8")
    assert result.returncode == 0, result.stderr
    vectors = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(vectors) == 2 and all(len(v) == 8 for v in vectors)
    one = cli_daemon.cli("run", f"hf.co/{EMBED_REPO}", "a cat")
    assert one.returncode == 0, one.stderr
    assert len(json.loads(one.stdout)) == 384
