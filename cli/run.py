"""`localllm run`: one prompt to stdout, or an interactive chat (REPL) that keeps the conversation."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import click

from localllm.client import Client
from localllm.config import parse_duration, state_dir
from localllm.errors import ClientError, ConfigError, DaemonNotRunning, ResponseError

from .models import pull_model
from .render import model_summary, timings

_HELP = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command

Use \"\"\" to begin a multi-line message."""

_SET_HELP = """Available Commands:
  /set parameter <name> <value>   Set a parameter (temperature, num_ctx, seed, stop, ...)
  /set system <string>            Set the system message
  /set format json                Answer in JSON
  /set noformat                   Answer in free text
  /set verbose                    Show timings after each answer
  /set quiet                      Do not show timings"""

_SHOW_HELP = """Available Commands:
  /show info         Show details for this model
  /show license      Show the model's license
  /show modelfile    Show the Modelfile for this model
  /show parameters   Show the parameters for this model
  /show system       Show the system message
  /show template     Show the prompt template"""


def _check_keepalive(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            parse_duration(value, name="--keepalive")
        except ConfigError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


@click.command()
@click.argument("model")
@click.argument("prompt", nargs=-1)
@click.option("--verbose", is_flag=True, help="Show timings for each response.")
@click.option("--keepalive", callback=_check_keepalive, help="How long to keep the model loaded (e.g. 5m, 1h, -1).")
@click.option("--format", "format_", type=click.Choice(["json"]), help="The response format.")
@click.pass_obj
def run(
    client: Client, model: str, prompt: tuple[str, ...], verbose: bool, keepalive: str | None, format_: str | None
) -> None:
    """Run a model: answer PROMPT (or stdin) once, or chat interactively."""
    try:
        client.show(model)
    except ResponseError as exc:
        if exc.status_code != 404:
            raise
        pull_model(client, model)
    prompts = list(prompt)
    if not _stdin_is_terminal():
        piped = sys.stdin.read()
        if piped:
            prompts.insert(0, piped)
    elif not prompts:
        _Repl(client, model, verbose=verbose, keep_alive=keepalive, format=format_).loop()
        return
    text = " ".join(prompts)
    wrote = False
    done: dict[str, Any] = {}
    for chunk in client.generate(model, text, keep_alive=keepalive, format=format_):
        piece = chunk.get("response") or ""
        if piece:
            click.echo(piece, nl=False)
            wrote = True
        if chunk.get("done"):
            done = chunk
    if wrote:
        click.echo()
    if verbose and done:
        click.echo(timings(done), err=True)


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


@contextlib.contextmanager
def _history() -> Iterator[None]:
    """Keep readline history in state_dir()/history when the REPL reads from a real terminal."""
    if sys.__stdin__ is None or sys.stdin is not sys.__stdin__ or not sys.__stdin__.isatty():
        yield
        return
    try:
        import readline
    except ImportError:
        yield
        return
    path = state_dir() / "history"
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        readline.read_history_file(path)
    readline.set_history_length(1000)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            readline.write_history_file(path)


@dataclass
class _Repl:
    client: Client
    model: str
    verbose: bool = False
    keep_alive: str | None = None
    format: str | None = None
    system: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)

    def loop(self) -> None:
        for _ in self.client.chat(self.model, [], keep_alive=self.keep_alive):
            pass  # load the model before the first prompt, as Ollama does
        with _history():
            while True:
                try:
                    line = self._read()
                except EOFError:
                    click.echo()
                    return
                except KeyboardInterrupt:
                    click.echo("\nUse Ctrl + d or /bye to exit.")
                    continue
                if not line.strip():
                    continue
                if line.startswith("/"):
                    if not self._command(line.strip()):
                        return
                    continue
                self._turn(line)

    def _read(self) -> str:
        line = input(">>> ")
        if not line.lstrip().startswith('"""'):
            return line
        text = line.lstrip()[3:]
        if text.endswith('"""'):
            return text[:-3]
        lines = [text]
        while True:
            more = input("... ")
            if more.rstrip().endswith('"""'):
                lines.append(more.rstrip()[:-3])
                return "\n".join(lines).strip("\n")
            lines.append(more)

    def _turn(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})
        conversation = ([{"role": "system", "content": self.system}] if self.system else []) + self.messages
        parts: list[str] = []
        done: dict[str, Any] = {}
        try:
            for chunk in self.client.chat(
                self.model, conversation, options=self.options or None, keep_alive=self.keep_alive, format=self.format
            ):
                piece = (chunk.get("message") or {}).get("content") or ""
                if piece:
                    click.echo(piece, nl=False)
                    parts.append(piece)
                if chunk.get("done"):
                    done = chunk
        except KeyboardInterrupt:
            self.messages.pop()
            click.echo("\n")
            return
        except DaemonNotRunning:
            raise
        except ClientError as exc:
            self.messages.pop()
            if parts:
                click.echo()
            click.echo(f"Error: {exc}", err=True)
            return
        self.messages.append({"role": "assistant", "content": "".join(parts)})
        click.echo("\n")
        if self.verbose and done:
            click.echo(timings(done) + "\n", err=True)

    def _command(self, line: str) -> bool:
        """Run a slash command; False means leave the REPL."""
        words = line.split()
        name, args = words[0], words[1:]
        if name in {"/bye", "/exit"}:
            return False
        if name in {"/?", "/help"}:
            topic = args[0] if args else ""
            click.echo((_SET_HELP if topic == "set" else _SHOW_HELP if topic == "show" else _HELP) + "\n")
        elif name == "/clear":
            self.messages.clear()
            click.echo("Cleared session context")
        elif name == "/set":
            self._set(line, args)
        elif name == "/show":
            self._show(args)
        else:
            click.echo(f"Unknown command '{name}'. Type /? for help")
        return True

    def _set(self, line: str, args: list[str]) -> None:
        what = args[0] if args else ""
        if what == "verbose":
            self.verbose = True
            click.echo("Set 'verbose' mode.")
        elif what == "quiet":
            self.verbose = False
            click.echo("Set 'quiet' mode.")
        elif what == "format" and args[1:] == ["json"]:
            self.format = "json"
            click.echo("Set format to 'json' mode.")
        elif what == "noformat":
            self.format = None
            click.echo("Disabled format.")
        elif what == "system" and len(args) > 1:
            self.system = line.split(None, 2)[2].strip().strip('"')
            click.echo("Set system message.")
        elif what == "parameter" and len(args) >= 3:
            key, raw = args[1], " ".join(args[2:])
            if key == "stop":
                self.options.setdefault("stop", []).extend(args[2:])
            else:
                self.options[key] = _number(raw)
            click.echo(f"Set parameter '{key}' to '{raw}'")
        else:
            click.echo(_SET_HELP + "\n")

    def _show(self, args: list[str]) -> None:
        what = args[0] if args else ""
        if what not in {"info", "license", "modelfile", "parameters", "system", "template"}:
            click.echo(_SHOW_HELP + "\n")
            return
        try:
            info = self.client.show(self.model)
        except ResponseError as exc:
            click.echo(f"Error: {exc}", err=True)
            return
        if what == "info":
            click.echo(model_summary(info) + "\n")
        elif what == "system" and self.system:
            click.echo(self.system)
        elif what == "parameters" and self.options:
            click.echo("\n".join(f"{k:<30} {v}" for k, v in self.options.items()))
        else:
            value = info.get(what) or f"No {what} was specified for this model."
            click.echo(str(value).rstrip("\n"))


def _number(raw: str) -> int | float | bool | str:
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    if raw.lower() in {"true", "false"}:
        return raw.lower() == "true"
    return raw
