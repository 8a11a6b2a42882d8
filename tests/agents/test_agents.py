"""Each coding agent, installed from its package registry (tools.py), pointed at a real daemon as its docs tell a
user to point it at Ollama or an OpenAI/Anthropic-compatible server, run non-interactively: it must complete one
tool round trip (read a file in a scratch folder, answer with the word in it) and exit 0. Its first requests
are compared with tests/agents/captured/<agent>.json, so a field a new release adds shows up as a diff."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..e2e.conftest import Daemon
from .conftest import MODEL, Script
from .tools import AGENTS, Agent, NotInstalled, Recorder, node_for, program

CAPTURED = Path(__file__).parent / "captured"
WORD = "PAPAYA"  # in the scratch file
ANSWER = f"ANSWER: {WORD}"  # what the scripted model says once the file's text is in its prompt, and only then
TIMEOUT = 180


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "note.txt").write_text(f"The secret word is {WORD}.\n")
    return folder


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A HOME of its own: the agent's config goes here, never into the user's."""
    h = tmp_path / "home"
    h.mkdir()
    return h


def installed(name: str) -> tuple[Agent, Path]:
    agent = AGENTS[name]
    try:
        return agent, program(agent)
    except NotInstalled as exc:
        pytest.skip(f"!!! AGENTS TIER: AGENTS NOT INSTALLED, NOT TESTED: {exc}")


def environment(home: Path, *, node: int = 0, **extra: str) -> dict[str, str]:
    """The agent's environment: a HOME (and XDG folders) of its own, `extra`, and first on PATH a node of at least
    `node` when the agent wants one newer than the system's."""
    keep = ("PATH", "LANG", "TERM", "TMPDIR", "SSL_CERT_FILE")
    env = {k: v for k, v in os.environ.items() if k in keep}
    try:
        folder = node_for(node) if node else None
    except NotInstalled as exc:
        pytest.skip(f"!!! AGENTS TIER: NO NODE {node}, NOT TESTED: {exc}")
    if folder is not None:
        env["PATH"] = f"{folder}{os.pathsep}{env.get('PATH', '')}"
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local/share"))
    env.update(XDG_CACHE_HOME=str(home / ".cache"), XDG_STATE_HOME=str(home / ".local/state"), NO_COLOR="1", CI="1")
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL
    )


def check_captured(agent: Agent, recorder: Recorder) -> None:
    """The agent's first request to each route (method, path, header names, body keys) as recorded in
    captured/<agent>.json; LOCALLLM_RECAPTURE=1 rewrites the file (then review the diff)."""
    now = recorder.dump(agent)
    path = CAPTURED / f"{agent.name}.json"
    if os.environ.get("LOCALLLM_RECAPTURE") or not path.exists():
        path.write_text(now)
    assert json.loads(path.read_text()) == json.loads(now), (
        f"{agent.name} sends something new: diff {path} (LOCALLLM_RECAPTURE=1)"
    )


@pytest.fixture
def daemon(agents_daemon: tuple[Daemon, Script]) -> Iterator[Daemon]:
    yield agents_daemon[0]


@pytest.fixture
def script(agents_daemon: tuple[Daemon, Script]) -> Script:
    return agents_daemon[1]


def answered(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}"
    assert ANSWER in done.stdout, f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}"


def test_llm_with_llm_ollama(daemon: Daemon, script: Script, scratch: Path, home: Path) -> None:
    """`llm` + `llm-ollama` over Ollama's /api/chat: a Python function as the tool (`--functions`)."""
    agent, llm = installed("llm")
    script.tool_round_trip("read_note", {}, ANSWER, "secret word is")
    with Recorder(daemon.url) as recorder:
        env = environment(home, OLLAMA_HOST=recorder.url, LLM_USER_PATH=str(home / "llm"))
        functions = "def read_note() -> str:\n    'The note in this folder.'\n    return open('note.txt').read()\n"
        done = run(
            [str(llm), "-m", f"ollama/{MODEL}", "--functions", functions, "What is the secret word?"], scratch, env
        )
    answered(done)
    chats = [r for r in recorder.requests if r["path"] == "/api/chat"]
    assert len(chats) == 2, recorder.requests  # the call, then the answer after the tool's result
    check_captured(agent, recorder)


def test_aider(daemon: Daemon, script: Script, scratch: Path, home: Path) -> None:
    """aider over Ollama's /api/chat (litellm's `ollama_chat/`): aider has no tool calls; its round trip is an edit
    in its `whole` format, which aider applies to the file it was given."""
    agent, aider = installed("aider")
    edited = f"The secret word is {WORD}.\nIt was read and rewritten.\n"
    script.set([{"when": ["note.txt"], "output": f"note.txt\n```\n{edited}```\n"}])
    with Recorder(daemon.url) as recorder:
        env = environment(home, OLLAMA_API_BASE=recorder.url, LITELLM_LOCAL_MODEL_COST_MAP="True")
        flags = ["--yes-always", "--no-git", "--no-check-update", "--analytics-disable", "--no-show-model-warnings"]
        flags += ["--edit-format", "whole", "--no-pretty", "--no-fancy-input", "--map-tokens", "0"]
        message = "Add the line 'It was read and rewritten.' to note.txt"
        done = run(
            [str(aider), "--model", f"ollama_chat/{MODEL}", *flags, "--message", message, "note.txt"], scratch, env
        )
    assert done.returncode == 0, f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}"
    assert (scratch / "note.txt").read_text() == edited, done.stdout[-3000:]
    check_captured(agent, recorder)


CODEX_CONFIG = f"""model = "{MODEL}"
model_provider = "localllm"

[model_providers.localllm]
name = "localllm"
base_url = "BASE/v1"
wire_api = "responses"
env_key = "LOCALLLM_API_KEY"
"""


def test_codex(daemon: Daemon, script: Script, scratch: Path, home: Path) -> None:
    """Codex CLI over the Responses API, configured as docs/agents.md says (~/.codex/config.toml); its shell tool
    reads the file."""
    agent, codex = installed("codex")
    script.tool_round_trip("exec_command", {"cmd": "cat note.txt"}, ANSWER, "secret word is")
    with Recorder(daemon.url) as recorder:
        (home / ".codex").mkdir()
        (home / ".codex" / "config.toml").write_text(CODEX_CONFIG.replace("BASE", recorder.url))
        env = environment(home, LOCALLLM_API_KEY="anything", CODEX_HOME=str(home / ".codex"))
        flags = ["--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", "--color", "never"]
        done = run([str(codex), "exec", *flags, "What is the secret word in note.txt?"], scratch, env)
    answered(done)
    check_captured(agent, recorder)


def test_claude_code(daemon: Daemon, script: Script, scratch: Path, home: Path) -> None:
    """Claude Code over the Anthropic Messages API, configured by the environment docs/agents.md gives; its Read
    tool reads the file."""
    agent, claude = installed("claude-code")
    note = str(scratch / "note.txt")
    script.tool_round_trip("Read", {"file_path": note}, ANSWER, "secret word is")
    with Recorder(daemon.url) as recorder:
        env = environment(
            home,
            ANTHROPIC_BASE_URL=recorder.url,
            ANTHROPIC_AUTH_TOKEN="anything",
            ANTHROPIC_MODEL=MODEL,
            ANTHROPIC_DEFAULT_HAIKU_MODEL=MODEL,
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            DISABLE_AUTOUPDATER="1",
        )
        flags = ["--allowedTools", "Read"]
        done = run([str(claude), "-p", "What is the secret word in note.txt?", *flags], scratch, env)
    answered(done)
    check_captured(agent, recorder)


def opencode_config(base: str) -> str:
    provider = {
        "npm": "@ai-sdk/openai-compatible",
        "name": "localllm",
        "options": {"baseURL": f"{base}/v1"},
        "models": {MODEL: {"name": MODEL, "tool_call": True}},
    }
    return json.dumps({"$schema": "https://opencode.ai/config.json", "provider": {"localllm": provider}}, indent=2)


def test_opencode(daemon: Daemon, script: Script, scratch: Path, home: Path) -> None:
    """OpenCode over OpenAI chat completions (its `@ai-sdk/openai-compatible` provider, in
    ~/.config/opencode/opencode.json); its read tool reads the file."""
    agent, opencode = installed("opencode")
    note = str(scratch / "note.txt")
    script.tool_round_trip("read", {"filePath": note}, ANSWER, "secret word is")
    with Recorder(daemon.url) as recorder:
        config = home / ".config" / "opencode"
        config.mkdir(parents=True)
        (config / "opencode.json").write_text(opencode_config(recorder.url))
        env = environment(home, OPENCODE_DISABLE_AUTOUPDATE="1", OPENCODE_DISABLE_MODELS_FETCH="1")
        done = run(
            [str(opencode), "run", "-m", f"localllm/{MODEL}", "What is the secret word in note.txt?"], scratch, env
        )
    answered(done)
    check_captured(agent, recorder)


def test_qwen_code(daemon: Daemon, script: Script, scratch: Path, home: Path) -> None:
    """Qwen Code over OpenAI chat completions (OPENAI_BASE_URL, OPENAI_API_KEY, OPENAI_MODEL); its read_file tool
    reads the file. It wants node 22."""
    agent, qwen = installed("qwen-code")
    note = str(scratch / "note.txt")
    script.tool_round_trip("read_file", {"file_path": note}, ANSWER, "secret word is")
    with Recorder(daemon.url) as recorder:
        (home / ".qwen").mkdir()
        (home / ".qwen" / "settings.json").write_text(json.dumps({"security": {"auth": {"selectedType": "openai"}}}))
        env = environment(
            home, node=22, OPENAI_BASE_URL=f"{recorder.url}/v1", OPENAI_API_KEY="anything", OPENAI_MODEL=MODEL
        )
        done = run([str(qwen), "-p", "What is the secret word in note.txt?", "--yolo"], scratch, env)
    answered(done)
    check_captured(agent, recorder)


CONTINUE_CONFIG = f"""name: localllm
version: 0.0.1
schema: v1
models:
  - name: {MODEL}
    provider: ollama
    model: {MODEL}
    apiBase: BASE
    roles: [chat, edit, apply]
    capabilities: [tool_use]
"""


def test_continue_cli(daemon: Daemon, script: Script, scratch: Path, home: Path) -> None:
    """Continue's CLI (`cn`) with its Ollama provider in a local config.yaml (`--config`, no hub login); its Read
    tool reads the file."""
    agent, cn = installed("continue")
    note = str(scratch / "note.txt")
    script.tool_round_trip("Read", {"filepath": note}, ANSWER, "secret word is")
    with Recorder(daemon.url) as recorder:
        config = home / ".continue" / "config.yaml"
        config.parent.mkdir()
        config.write_text(CONTINUE_CONFIG.replace("BASE", recorder.url))
        env = environment(home, CONTINUE_TELEMETRY_ENABLED="0")
        prompt = "What is the secret word in note.txt?"
        done = run([str(cn), "--config", str(config), "-p", prompt, "--auto"], scratch, env)
    answered(done)
    check_captured(agent, recorder)


def test_llm_on_the_real_model(daemon: Daemon, script: Script, scratch: Path, home: Path) -> None:
    """No script: the real (tiny) model samples; `llm` reaches it over /api/chat and prints what it wrote."""
    agent, llm = installed("llm")
    script.set([])
    env = environment(home, OLLAMA_HOST=daemon.url, LLM_USER_PATH=str(home / "llm"))
    done = run(
        [str(llm), "-m", f"ollama/{MODEL}", "-o", "num_predict", "16", "-o", "seed", "1", "Once upon"], scratch, env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), done.stderr[-3000:]
