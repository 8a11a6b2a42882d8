"""`localllm run`: one prompt to stdout, or an interactive chat (REPL, in repl.py) that keeps the conversation.

Image and audio files named in the prompt (`./cat.png`, `/tmp/talk.wav`) are sent with it, as Ollama's CLI
sends them (attachments.py). The model is pulled first when the daemon does not have it, as Ollama does (a
short name that matches exactly one local `hf.co/…/<repo>` model runs that one instead). An embedding model
prints the vector of the prompt (or of each line typed) as a JSON array instead of answering.
"""

from __future__ import annotations

import json
import shutil
import sys
from typing import Any

import click

from localllm.client import Client, JSONObject
from localllm.config.values import parse_duration
from localllm.domain.errors import ClientError, ConfigError, DaemonNotRunning

from .attachments import Attachment, AttachmentError, added, attach
from .models import show_or_pull
from .render import WordWrap, has_limit, stop_note, timings
from .repl import Repl, history


def check_keepalive(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback: `value` must be a duration the daemon reads (`5m`, `1h`, `-1`, `0`)."""
    if value is not None:
        try:
            parse_duration(value, name=f"--{param.name}")
        except ConfigError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


@click.command()
@click.argument("model")
@click.argument("prompt", nargs=-1)
@click.option("--verbose", is_flag=True, help="Show timings for each response.")
@click.option("--keepalive", callback=check_keepalive, help="How long to keep the model loaded (e.g. 5m, 1h, -1).")
@click.option("--format", "format_", type=click.Choice(["json"]), help="The response format.")
@click.option("--nowordwrap", is_flag=True, help="Don't wrap words to the next line automatically.")
@click.option("--dimensions", type=click.IntRange(min=1), help="Embedding models: the length of the vectors.")
@click.pass_obj
def run(
    client: Client,
    model: str,
    prompt: tuple[str, ...],
    verbose: bool,
    keepalive: str | None,
    format_: str | None,
    nowordwrap: bool,
    dimensions: int | None,
) -> None:
    """Run a model: answer PROMPT (or stdin) once, or chat interactively."""
    model, info = show_or_pull(client, model)
    embedding = "embedding" in (info.get("capabilities") or [])
    prompts = list(prompt)
    if not _stdin_is_terminal():
        piped = sys.stdin.read()
        if piped:
            prompts.insert(0, piped)
    elif not prompts:
        if embedding:
            _embed_lines(client, model, keep_alive=keepalive, dimensions=dimensions)
        else:
            wordwrap = not nowordwrap and _stdout_is_terminal()
            repl = Repl(client, model, verbose=verbose, keep_alive=keepalive, format=format_, wordwrap=wordwrap)
            repl.loop(info)
        return
    text = " ".join(prompts)
    if embedding:
        _print_embeddings(client.embed(model, text, keep_alive=keepalive, dimensions=dimensions))
        return
    text, files = _attach(text)
    wrap = WordWrap(shutil.get_terminal_size().columns - 1) if not nowordwrap and _stdout_is_terminal() else None
    wrote = False
    done: dict[str, Any] = {}
    images = [file.base64 for file in files]
    for chunk in client.generate(model, text, keep_alive=keepalive, format=format_, images=images):
        piece = chunk.get("response") or ""
        if piece:
            click.echo(wrap.feed(piece) if wrap else piece, nl=False)
            wrote = True
        if chunk.get("done"):
            done = chunk
    if wrote:
        click.echo(wrap.flush() if wrap else "")
    note = stop_note(done, limited=has_limit(info))
    if note:
        click.echo(note, err=True)
    if verbose and done:
        click.echo(timings(done), err=True)


def _attach(text: str) -> tuple[str, list[Attachment]]:
    """The image and audio files the prompt names (said on stderr, as Ollama says it), or an error and exit 1."""
    try:
        text, files = attach(text)
    except AttachmentError as exc:
        raise click.ClickException(str(exc)) from None
    for file in files:
        click.echo(added(file), err=True)
    return text, files


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _print_embeddings(result: JSONObject) -> None:
    for vector in result.get("embeddings") or []:
        click.echo(json.dumps(vector))


def _embed_lines(client: Client, model: str, *, keep_alive: str | None, dimensions: int | None) -> None:
    """The REPL of an embedding model: each line typed is answered with its vector."""
    with history():
        while True:
            try:
                line = input(">>> ")
            except EOFError:
                click.echo()
                return
            except KeyboardInterrupt:
                click.echo("\nUse Ctrl + d or /bye to exit.")
                continue
            if line.strip() in {"/bye", "/exit"}:
                return
            if not line.strip():
                continue
            try:
                _print_embeddings(client.embed(model, line, keep_alive=keep_alive, dimensions=dimensions))
            except KeyboardInterrupt:
                click.echo()
            except DaemonNotRunning:
                raise
            except ClientError as exc:
                click.echo(f"Error: {exc}", err=True)
