"""`localllm serve`: start the daemon in this process (the only command that imports it)."""

from __future__ import annotations

import os

import click

from localllm.config import VARIABLES, Settings
from localllm.domain.errors import ConfigError


class _ServeCommand(click.Command):
    """A command whose help ends with every environment variable the daemon reads."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(v.name, f"{v.help} (default: {v.shown_default})" if v.shown_default else v.help) for v in VARIABLES]
        with formatter.section("Environment Variables"):
            formatter.write_dl(rows)


@click.command(cls=_ServeCommand)
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Start the localllm daemon.

    It is configured only by the environment variables below.
    """
    environ = dict(os.environ)
    host = ctx.find_root().params.get("host")
    if host:
        environ["LOCALLLM_HOST"] = host
    try:
        settings = Settings.from_env(environ)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    from localllm.daemon import serve as run_daemon

    run_daemon(settings)
