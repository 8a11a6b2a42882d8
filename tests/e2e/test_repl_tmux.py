"""`localllm run` in a real terminal (tmux), against a real daemon and the real tiny chat model.

One session walks through what a person does at the REPL: a multi-line message, /set parameter, /set system,
Ctrl+C in the middle of a long answer and a prompt that still works after it, /save and /bye; then a second
`localllm run` of the saved session shows the conversation again, /load shows it too, and Ctrl+D leaves.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import CHAT_REPO
from ..hubstub import HubStub
from .conftest import Daemon, daemon_with, localllm_command

pytestmark = [pytest.mark.e2e, pytest.mark.model]

CHAT = f"hf.co/{CHAT_REPO}"
SHELL_PROMPT = "$"


class Tmux:
    """A tmux server of our own (its own socket and config) with one 120x40 pane running bash."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.socket = str(tmp / "tmux.sock")
        config = tmp / "tmux.conf"
        config.write_text("set -g history-limit 50000\n")
        self.base = ["tmux", "-S", self.socket, "-f", str(config)]
        rcfile = tmp / "bashrc"
        rcfile.write_text(f"PS1='{SHELL_PROMPT} '\nunset HISTFILE\n")
        env = {**env, "TERM": "xterm-256color"}
        shell = f"bash --noprofile --rcfile {shlex.quote(str(rcfile))}"
        command = ["new-session", "-d", "-s", "repl", "-x", "120", "-y", "40", shell]
        subprocess.run([*self.base, *command], env=env, check=True, timeout=30)

    def tmux(self, *args: str) -> str:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def type(self, text: str) -> None:
        """Type `text` and press Enter."""
        self.tmux("send-keys", "-t", "repl", "-l", "--", text)
        self.tmux("send-keys", "-t", "repl", "Enter")

    def key(self, key: str) -> None:
        self.tmux("send-keys", "-t", "repl", key)

    def screen(self) -> str:
        """Everything the pane has shown, wrapped lines joined, trailing blanks dropped."""
        return self.tmux("capture-pane", "-p", "-J", "-t", "repl", "-S", "-50000").rstrip()

    def wait(self, what: str, check: Callable[[str], bool], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if check(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the terminal shows:\n{screen[-3000:]}")
            time.sleep(0.1)

    def wait_prompt(self, prompts_before: int, timeout: float = 60) -> str:
        """Wait for a `>>>` prompt after the first `prompts_before` of them, with the cursor waiting on it."""

        def ready(screen: str) -> bool:
            return prompt_count(screen) > prompts_before and screen.splitlines()[-1].startswith(">>>")

        return self.wait(f"prompt number {prompts_before + 1}", ready, timeout)

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=30)


def prompt_count(screen: str) -> int:
    return sum(1 for line in screen.splitlines() if line.startswith(">>>"))


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def chat_daemon(tmp_path: Path, hub: HubStub) -> Iterator[Daemon]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux): this test drives the REPL in a real terminal")
    with daemon_with(tmp_path, hub, [CHAT_REPO]) as daemon:
        yield daemon


@pytest.fixture
def term(tmp_path: Path, chat_daemon: Daemon) -> Iterator[Tmux]:
    terminal = Tmux(tmp_path, chat_daemon.env)
    try:
        terminal.wait("the shell", lambda s: s.endswith(SHELL_PROMPT))
        yield terminal
    finally:
        terminal.kill()


def test_a_chat_session_in_a_real_terminal(term: Tmux, chat_daemon: Daemon, tmp_path: Path) -> None:
    localllm = shlex.join(localllm_command())
    term.type(f"{localllm} run {CHAT}")
    screen = term.wait_prompt(0)

    term.type("/set parameter temperature 0")
    term.type("/set parameter num_ctx 4096")
    term.type("/set parameter num_predict 24")
    term.type("/set system There was a little dog.")
    screen = term.wait("the settings", lambda s: "Set system message." in s and s.endswith(">>>"))
    assert "Set parameter 'temperature' to '0'" in screen
    assert "Set parameter 'num_ctx' to '4096'" in screen

    # a message of two lines between """
    n = prompt_count(screen)
    term.type('"""')
    term.wait("the continuation prompt", lambda s: s.splitlines()[-1].startswith("..."))
    term.type("Once upon a time,")
    term.type('there was a cat."""')
    screen = term.wait_prompt(n)
    first_answer = screen.rpartition('there was a cat."""')[2].rpartition(">>>")[0]
    assert words(first_answer), "the model answered nothing"

    # Ctrl+C in the middle of a long answer: the answer stops, the REPL stays
    term.type("/set parameter num_predict 4000")
    screen = term.wait("num_predict", lambda s: "to '4000'" in s and s.endswith(">>>"))
    n = prompt_count(screen)
    term.type("Tell me a long story.")

    def answering(screen: str) -> bool:
        return len(words(screen.rpartition("Tell me a long story.")[2])) > 20

    term.wait("the long answer to begin", answering)
    interrupted = time.monotonic()
    term.key("C-c")
    screen = term.wait_prompt(n, timeout=15)
    assert time.monotonic() - interrupted < 15
    assert "Traceback" not in screen
    assert "Use Ctrl + d or /bye to exit." not in screen  # it stopped the answer, not an empty prompt

    # ... and the next prompt works
    term.type("/set parameter num_predict 12")
    screen = term.wait("num_predict", lambda s: "to '12'" in s and s.endswith(">>>"))
    n = prompt_count(screen)
    term.type("The end.")
    screen = term.wait_prompt(n)
    assert words(screen.rpartition("The end.")[2].rpartition(">>>")[0]), "no answer after Ctrl+C"

    term.type("/save mysession")
    term.wait("the save", lambda s: "Created new model 'mysession'" in s and s.endswith(">>>"))
    term.type("/bye")
    term.wait("the shell", lambda s: s.endswith(SHELL_PROMPT))

    # what /save stored: the conversation without the interrupted turn, the system message, the parameters
    info = httpx.post(chat_daemon.url + "/api/show", json={"model": "mysession"}, timeout=30).json()
    messages = info["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == "Once upon a time,\nthere was a cat."
    assert words(messages[1]["content"]) == words(first_answer)
    assert messages[2]["content"] == "The end."
    assert info["system"] == "There was a little dog."
    assert "temperature" in info["parameters"]

    # a new session of the saved model shows the conversation; so does /load
    mark = len(term.screen())
    term.type(f"{localllm} run mysession")
    screen = term.wait("the saved session", lambda s: s[mark:].rstrip().endswith(">>>"))
    shown = words(screen[mark:])
    conversation = words(f">>> {messages[0]['content']} {messages[1]['content']} >>> The end. {messages[3]['content']}")
    assert conversation in shown
    assert "Tell me a long story." not in screen[mark:]

    mark = len(term.screen())
    term.type("/load mysession")
    screen = term.wait("/load", lambda s: "Loading model 'mysession'" in s[mark:] and s.endswith(">>>"))
    assert conversation in words(screen[mark:])

    mark = len(term.screen())
    term.type("/show system")
    screen = term.wait("/show system", lambda s: "There was a little dog." in s[mark:] and s.endswith(">>>"))

    term.key("C-d")  # Ctrl+D leaves
    term.wait("the shell", lambda s: s.endswith(SHELL_PROMPT))

    history = (tmp_path / "state" / "localllm" / "history").read_text()
    assert "/set parameter temperature 0" in history and "/save mysession" in history
