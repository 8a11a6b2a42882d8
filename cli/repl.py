"""The interactive chat of `localllm run`: a conversation kept in memory, sent whole with each turn.

    >>> Why is the sky blue?          a message; \"\"\" opens and closes a message of several lines
    >>> /set parameter temperature 0  session settings (/set, /show, /clear, /load, /save, /bye; /? lists them)
    >>> what is in ./cat.png?         a message with an image (or audio) file attached, as `run` attaches them

Ctrl+C stops the answer being written (the HTTP stream is closed, so the daemon stops generating) and keeps
the chat going; Ctrl+D or /bye leaves. A model's own conversation (its Modelfile MESSAGEs, or a session saved
with /save) is shown when it is loaded and is not sent again: the daemon puts it before every chat itself.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import click

from localllm.client import Client, JSONObject
from localllm.config.values import state_dir
from localllm.domain.errors import ClientError, DaemonNotRunning, InvalidRequest, ResponseError
from localllm.modelstore.modelfile import parse_parameter

from .attachments import AttachmentError, added, attach, file_names
from .render import WordWrap, has_limit, model_summary, stop_note, timings

HINT = "Send a message (/? for help)"

HELP = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command

Use \"\"\" to begin a multi-line message.
Use /path/to/file or ./file to include .jpg, .png or .webp images (.wav, .mp3 or .flac audio)."""

SET_HELP = """Available Commands:
  /set parameter <name> <value>   Set a parameter (temperature, num_ctx, seed, stop, ...)
  /set system <string>            Set the system message (\"\"\" for several lines)
  /set format json                Answer in JSON
  /set noformat                   Answer in free text
  /set verbose                    Show timings after each answer
  /set quiet                      Do not show timings
  /set wordwrap                   Wrap words at the terminal's width
  /set nowordwrap                 Do not wrap words"""

SHOW_HELP = """Available Commands:
  /show info         Show details for this model
  /show license      Show the model's license
  /show modelfile    Show the Modelfile for this model
  /show parameters   Show the parameters for this model
  /show system       Show the system message
  /show template     Show the prompt template"""

_COMMANDS = frozenset({"/bye", "/exit", "/?", "/help", "/clear", "/set", "/show", "/load", "/save"})
_SHOW_WHAT = ("info", "license", "modelfile", "parameters", "system", "template")
_SET_SYSTEM_BLOCK = re.compile(r'(/set\s+system\s+)"""')


@contextlib.contextmanager
def history() -> Iterator[None]:
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


def names_a_file(line: str) -> bool:
    """Whether a line that starts with `/` is a message naming a file (`/tmp/cat.png what is it?`), as Ollama
    tells them apart: its first word is no command, and a path found in the line begins with that word."""
    first = line.split()[0]
    return first not in _COMMANDS and any(name.startswith(first) for name in file_names(line))


def conversation_text(messages: list[dict[str, Any]]) -> str:
    """A stored conversation as the REPL would have shown it: `>>> question`, then the answer."""
    out = []
    for message in messages:
        if message.get("role") == "user":
            out.append(f">>> {message.get('content', '')}\n")
        elif message.get("role") == "assistant":
            out.append(f"{message.get('content', '')}\n\n")
    return "".join(out)


@dataclass
class Repl:
    """One chat session with a model (which `/load` may change)."""

    client: Client
    model: str
    verbose: bool = False
    keep_alive: str | None = None
    format: str | None = None
    wordwrap: bool = False
    width: Callable[[], int] = lambda: shutil.get_terminal_size().columns
    system: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)  # this session's turns (images kept, as base64)
    stored: list[dict[str, Any]] = field(default_factory=list)  # the model's own, put first by the daemon
    info: JSONObject = field(default_factory=dict)  # the model's details (`show`)

    def loop(self, info: JSONObject) -> None:
        """Load the model, show its stored conversation, then chat until /bye or Ctrl+D."""
        self._warm(self.model)
        self._show_stored(info)
        self.info = info
        click.echo(HINT)  # once, as Ollama's placeholder "Send a message (/? for help)"
        with history():
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
                if line.startswith("/") and not names_a_file(line):
                    if not self._command(line.strip()):
                        return
                    continue
                self._turn(line)

    # -- reading --------------------------------------------------------------------------------------

    def _read(self) -> str:
        line = input(">>> ")
        head = line.lstrip()
        block = _SET_SYSTEM_BLOCK.match(head)
        if block:
            prefix, text = block[1], head[block.end() :]
        elif head.startswith('"""'):
            prefix, text = "", head[3:]
        else:
            return line
        if text.rstrip().endswith('"""'):
            return prefix + text.rstrip()[:-3]
        lines = [text]
        while True:
            more = input("... ")
            if more.rstrip().endswith('"""'):
                lines.append(more.rstrip()[:-3])
                return prefix + "\n".join(lines).strip("\n")
            lines.append(more)

    # -- chatting -------------------------------------------------------------------------------------

    def _warm(self, model: str) -> None:
        """Load the model before the first prompt, as Ollama does (an empty chat only loads it)."""
        for _ in self.client.chat(model, [], keep_alive=self.keep_alive):
            pass

    def _show_stored(self, info: JSONObject) -> None:
        self.stored = [dict(m) for m in info.get("messages") or [] if isinstance(m, dict)]
        if self.stored:
            click.echo(conversation_text(self.stored), nl=False)

    def _turn(self, line: str) -> None:
        try:
            text, files = attach(line)
        except AttachmentError as exc:
            click.echo(f"Error: {exc}", err=True)
            return
        for file in files:
            click.echo(added(file), err=True)
        message: dict[str, Any] = {"role": "user", "content": text}
        if files:
            message["images"] = [file.base64 for file in files]
        self.messages.append(message)
        conversation = ([{"role": "system", "content": self.system}] if self.system else []) + self.messages
        wrap = WordWrap(self.width() - 1) if self.wordwrap else None
        parts: list[str] = []
        done: dict[str, Any] = {}
        stream = self.client.chat(
            self.model, conversation, options=self.options or None, keep_alive=self.keep_alive, format=self.format
        )
        try:
            with contextlib.closing(stream):
                for chunk in stream:
                    piece = (chunk.get("message") or {}).get("content") or ""
                    if piece:
                        parts.append(piece)
                        click.echo(wrap.feed(piece) if wrap else piece, nl=False)
                    if chunk.get("done"):
                        done = chunk
        except KeyboardInterrupt:  # Ctrl+C: the stream is closed, so the daemon stops; the chat goes on
            self.messages.pop()
            click.echo("\n")  # a word the wrapping held back stays unshown: the answer stopped before it
            return
        except DaemonNotRunning:
            raise
        except ClientError as exc:
            self.messages.pop()
            if parts:
                click.echo(wrap.flush() if wrap else "")
            click.echo(f"Error: {exc}", err=True)
            return
        self.messages.append({"role": "assistant", "content": "".join(parts)})
        click.echo((wrap.flush() if wrap else "") + "\n")
        note = stop_note(done, limited=has_limit(self.info, self.options))
        if note:
            click.echo(note + "\n", err=True)
        if self.verbose and done:
            click.echo(timings(done) + "\n", err=True)

    # -- commands -------------------------------------------------------------------------------------

    def _command(self, line: str) -> bool:
        """Run a slash command; False means leave the REPL."""
        words = line.split()
        name, args = words[0], words[1:]
        if name in {"/bye", "/exit"}:
            return False
        if name in {"/?", "/help"}:
            topic = args[0] if args else ""
            click.echo((SET_HELP if topic == "set" else SHOW_HELP if topic == "show" else HELP) + "\n")
        elif name == "/clear":
            self.messages.clear()
            click.echo("Cleared session context")
        elif name == "/set":
            self._set(line, args)
        elif name == "/show":
            self._show(args)
        elif name == "/load" and len(args) == 1:
            self._load_model(args[0])
        elif name == "/save" and len(args) == 1:
            self._save(args[0])
        elif name in {"/load", "/save"}:
            click.echo(f"Usage:\n  {name} <modelname>")
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
        elif what == "wordwrap":
            self.wordwrap = True
            click.echo("Set 'wordwrap' mode.")
        elif what == "nowordwrap":
            self.wordwrap = False
            click.echo("Set 'nowordwrap' mode.")
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
            self._set_parameter(args[1], args[2:])
        else:
            click.echo(SET_HELP + "\n")

    def _set_parameter(self, name: str, values: list[str]) -> None:
        key = name.lower()
        raw = " ".join(values)
        try:
            if key == "stop":  # each word is a stop sequence, as in Ollama
                stops = [parse_parameter(key, value) for value in values]
            else:
                value = parse_parameter(key, raw)
        except InvalidRequest as exc:
            click.echo(f"Error: {exc}", err=True)
            return
        if key == "stop":
            self.options["stop"] = stops
        else:
            self.options[key] = value
        click.echo(f"Set parameter '{key}' to '{raw}'")

    def _show(self, args: list[str]) -> None:
        what = args[0] if args else ""
        if what not in _SHOW_WHAT:
            click.echo(SHOW_HELP + "\n")
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
        elif what == "parameters":
            own = str(info.get("parameters") or "")
            session = "\n".join(f"{k:<30} {json.dumps(v)}" for k, v in self.options.items())
            text = "\n".join(t for t in (own, session) if t)
            click.echo(text or "No parameters were specified for this model.")
        else:
            value = info.get(what) or f"No {what} was specified for this model."
            click.echo(str(value).rstrip("\n"))

    def _load_model(self, name: str) -> None:
        """Switch to another model (or a saved session); the session stays as it was when that fails."""
        try:
            info = self.client.show(name)
            click.echo(f"Loading model '{name}'")
            self._warm(name)
        except DaemonNotRunning:
            raise
        except ClientError as exc:
            click.echo(f"Error: {exc}", err=True)
            return
        self.model = name
        self.info = info
        self.messages.clear()
        self._show_stored(info)

    def _save(self, name: str) -> None:
        request: dict[str, Any] = {"model": name, "from": self.model, "messages": self.stored + self.messages}
        if self.options:
            request["parameters"] = dict(self.options)
        if self.system is not None:
            request["system"] = self.system
        try:
            for _ in self.client.create(request):
                pass
        except DaemonNotRunning:
            raise
        except ClientError as exc:
            click.echo(f"Error: {exc}", err=True)
            return
        click.echo(f"Created new model '{name}'")
