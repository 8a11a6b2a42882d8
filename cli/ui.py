"""`localllm ui`: the address of the daemon's web chat page, opened in the browser with --open."""

from __future__ import annotations

import webbrowser
from urllib.parse import urlsplit, urlunsplit

import click

from localllm.client import Client
from localllm.domain.errors import DaemonNotRunning

# A daemon listening on every address is reached in a browser through the loopback one.
_ANY = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}


def page_url(base_url: str) -> str:
    """The chat page's URL for a daemon at `base_url` (the client's address, as every command uses)."""
    parts = urlsplit(base_url)
    host = parts.hostname or "127.0.0.1"
    netloc = parts.netloc
    if host in _ANY:
        netloc = f"{_ANY[host]}:{parts.port}" if parts.port else _ANY[host]
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/ui/", "", ""))


@click.command("ui")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the web browser too.")
@click.pass_obj
def ui(client: Client, open_browser: bool) -> None:
    """Print the address of the web chat page (open it with --open).

    The daemon serves the page itself, at /ui/ on its own address: chat with a model, keep conversations in
    the browser, pull, delete and unload models.
    """
    url = page_url(client.base_url)
    click.echo(url)
    try:
        client.heartbeat()
    except DaemonNotRunning:
        raise click.ClickException("the localllm daemon is not running: start it with 'localllm serve'") from None
    if open_browser and not webbrowser.open(url):
        raise click.ClickException(f"could not start a web browser here: open {url} in one")
