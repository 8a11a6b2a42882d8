"""The `localllm` command group: builds one `Client` for the subcommands and turns errors into messages."""

from __future__ import annotations

import sys
from typing import Any

import click

from localllm import __version__
from localllm.client import Client
from localllm.domain.errors import ClientError, LocalLLMError

from .create import create
from .embed import embed
from .keys import keys
from .models import cp, list_models, ps, pull, rm, show, stop, verify
from .run import run
from .serve import serve
from .ui import ui
from .worker import worker

_ALIASES = {"ls": "list", "start": "serve"}


class _Group(click.Group):
    """Resolve command aliases, and show localllm's errors as `Error: ...` with exit status 1."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, _ALIASES.get(cmd_name, cmd_name))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in the order they were added, like Ollama's help

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LocalLLMError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--host",
    envvar="LOCALLLM_HOST",
    metavar="HOST[:PORT]",
    help="Address of the daemon (default: LOCALLLM_HOST or 127.0.0.1:11434).",
)
@click.option("-v", "--version", "show_version", is_flag=True, help="Show the daemon's and the client's version.")
@click.pass_context
def cli(ctx: click.Context, host: str | None, show_version: bool) -> None:
    """Run large language models locally."""
    if not isinstance(ctx.obj, Client):
        client = Client(host or "")
        ctx.obj = client
        ctx.call_on_close(client.close)
    if show_version:
        _echo_version(ctx.obj)
        ctx.exit()
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


def _echo_version(client: Client) -> None:
    try:
        server = client.version()
    except ClientError:
        server = ""
        click.echo("Warning: could not connect to a running localllm daemon")
    if server:
        click.echo(f"localllm version is {server}")
    if server != __version__:
        click.echo(f"Warning: client version is {__version__}")


for _command in (serve, create, show, run, embed, stop, pull, list_models, ps, cp, rm, verify, keys, ui, worker):
    cli.add_command(_command)


def main() -> None:
    """The `localllm` console script."""
    try:
        cli.main(prog_name="localllm")
    except LocalLLMError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
