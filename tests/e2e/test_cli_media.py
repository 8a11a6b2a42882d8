"""`localllm run MODEL "what is in ./cat.png"` against a real daemon: the file named in the prompt travels with it
(Ollama's `images`), and a model that cannot take it gets the daemon's refusal, printed, with exit status 1; a
path that names no file is plain text the model answers. The REPL in a real terminal (tmux) does the same and
goes on after the refusal."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import CHAT_REPO
from ..hubstub import HubStub
from ..media import png, wav
from .conftest import Daemon, daemon_with, localllm_command
from .test_repl_tmux import SHELL_PROMPT, Tmux, prompt_count

pytestmark = [pytest.mark.e2e, pytest.mark.model]

CHAT = f"hf.co/{CHAT_REPO}"  # stories260K: a text-only model


@pytest.fixture(scope="module")
def chat_daemon(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    with daemon_with(tmp_path_factory.mktemp("media"), hub, [CHAT_REPO], LOCALLLM_MAX_TOKENS="16") as d:
        yield d


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "cat.png").write_bytes(png(16, 16))
    (tmp_path / "talk.wav").write_bytes(wav(0.25))
    return tmp_path


def refused(message: str) -> bool:
    """Whether an error is the daemon's refusal of media for this model (it names what the model lacks)."""
    return any(word in message.lower() for word in ("vision", "image", "audio"))


def run_in(folder: Path, daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    """`localllm run ...` started in `folder`, so that `./cat.png` is there."""
    return subprocess.run(
        [*localllm_command(), "run", *args], env=daemon.env, cwd=folder, capture_output=True, text=True, timeout=120
    )


def test_an_image_named_in_the_prompt_is_sent_and_refused_by_a_text_model(chat_daemon: Daemon, folder: Path) -> None:
    result = run_in(folder, chat_daemon, CHAT, "what is in ./cat.png")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "Added image './cat.png'"
    assert lines[-1].startswith("Error: ") and refused(lines[-1]), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_an_audio_file_is_sent_too(chat_daemon: Daemon, folder: Path) -> None:
    result = run_in(folder, chat_daemon, CHAT, "transcribe", str(folder / "talk.wav"))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"Added audio '{folder / 'talk.wav'}'"
    assert lines[-1].startswith("Error: ") and refused(lines[-1]), result.stderr


def test_a_path_to_no_file_is_text_the_model_answers(chat_daemon: Daemon, folder: Path) -> None:
    result = run_in(folder, chat_daemon, CHAT, "Once upon a time ./dog.png")
    assert result.returncode == 0, result.stderr
    assert "Added" not in result.stderr
    assert result.stdout.strip(), "the model answered the text"


def test_a_file_that_is_no_image_is_an_error_before_any_request(chat_daemon: Daemon, folder: Path) -> None:
    (folder / "notes.png").write_text("not a picture")
    result = run_in(folder, chat_daemon, CHAT, "what is in ./notes.png")
    assert result.returncode == 1
    assert result.stderr == "Error: couldn't read image './notes.png': the file is not a JPEG, PNG or WebP image\n"


def test_the_repl_sends_a_file_and_goes_on_after_the_refusal(
    chat_daemon: Daemon, folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux): this test drives the REPL in a real terminal")
    term = Tmux(tmp_path_factory.mktemp("tmux"), chat_daemon.env)  # a short path: tmux's socket name is bounded
    try:
        term.wait("the shell", lambda s: s.endswith(SHELL_PROMPT))
        term.type(f"cd {shlex.quote(str(folder))} && {shlex.join(localllm_command())} run {CHAT}")
        screen = term.wait_prompt(0)
        n = prompt_count(screen)
        image = str(folder / "cat.png")
        term.type(f"{image} what is it?")  # a line that starts with a path is a message, not a command
        screen = term.wait_prompt(n)
        assert f"Added image '{image}'" in screen
        assert "Unknown command" not in screen
        refusal = screen.rpartition(f"Added image '{image}'")[2]
        assert "Error: " in refusal and refused(refusal), screen[-2000:]

        n = prompt_count(screen)
        term.type("Once upon a time")
        screen = term.wait_prompt(n)
        answer = screen.rpartition("Once upon a time")[2].rpartition(">>>")[0]
        assert answer.strip() and "Error" not in answer, "the refused turn was not kept: the next one is answered"
        term.type("/bye")
        term.wait("the shell", lambda s: s.endswith(SHELL_PROMPT))
    finally:
        term.kill()
