"""`localllm keys create|list|revoke`: the API keys and apps of the daemon on this machine.

These commands edit the keys file directly (local administration; no daemon needed) and the daemon
reads it again when it changes. Creating the first key turns authentication on. The file is
`LOCALLLM_KEYS_FILE`, else `keys.json` beside the models directory; for the system service that is
/var/lib/localllm/keys.json, which `sudo localllm keys ...` finds.
"""

from __future__ import annotations

import math
from pathlib import Path

import click

from localllm.auth import keysfile as keystore
from localllm.auth.keysfile import Entry, KeysFile
from localllm.config import Settings
from localllm.config.values import keys_file_from_env
from localllm.domain.errors import ConfigError

from .render import table

_FILE_KEY = "localllm.keys_file"


def _path(ctx: click.Context) -> Path:
    path: Path = ctx.meta[_FILE_KEY]
    return path


def _token_ttl() -> str:
    try:
        seconds = Settings.from_env().token_ttl
    except ConfigError:
        return "LOCALLLM_TOKEN_TTL"
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{math.ceil(seconds)} s"


@click.group()
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The keys file (default: LOCALLLM_KEYS_FILE, else keys.json beside the models directory).",
)
@click.pass_context
def keys(ctx: click.Context, path: Path | None) -> None:
    """Manage API keys: once a key exists, every request to the daemon needs one.

    Clients send a key as 'Authorization: Bearer <key>' (the CLI sends LOCALLLM_API_KEY). The daemon
    notices changes to the keys file without a restart.
    """
    ctx.meta[_FILE_KEY] = path or keys_file_from_env()


@keys.command("create")
@click.option("--name", default="", help="A name to tell the key apart in 'keys list' and 'keys revoke'.")
@click.option(
    "--app",
    metavar="NAME",
    help="Register an app instead: it trades its appid and secret for short-lived access tokens.",
)
@click.option("--quota", type=click.IntRange(min=1), help="Prompt and completion tokens allowed per UTC day.")
@click.pass_context
def create(ctx: click.Context, name: str, app: str | None, quota: int | None) -> None:
    """Make an API key (or register an app) and print it; it is shown only this once."""
    if app is not None and name:
        raise click.UsageError("--app NAME names the app: leave out --name")
    path = _path(ctx)
    was_on = path.exists()
    kind: keystore.Kind = "app" if app is not None else "key"
    try:
        entry, secret = keystore.update(path, lambda f: f.create(kind, app or name, quota=quota))
    except OSError as exc:
        raise _write_error(path, exc) from None
    label = f"{entry.id} ({entry.name})" if entry.name else entry.id
    if kind == "key":
        click.echo(secret)
        click.echo(f"Created the API key {label} in {path}. It is shown only this once.", err=True)
        click.echo("Clients send it as 'Authorization: Bearer <key>'; the CLI reads LOCALLLM_API_KEY.", err=True)
    else:
        click.echo(f"appid: {entry.id}")
        click.echo(f"secret: {secret}")
        click.echo(f"Registered the app {label} in {path}. The secret is shown only this once.", err=True)
        click.echo(
            f"The app gets an access token (valid {_token_ttl()}) from GET /api/v1/token?appid=…&secret=… "
            "and sends it as 'Authorization: Bearer <token>' or ?accessToken=<token>.",
            err=True,
        )
    if not was_on:
        click.echo("Authentication is now on: every request but GET / and /api/version needs a key.", err=True)


@keys.command("list")
@click.pass_context
def list_keys(ctx: click.Context) -> None:
    """List the keys and apps (never the keys themselves: only their last characters)."""
    path = _path(ctx)
    if not path.exists():
        click.echo(f"No keys file at {path}: authentication is off unless LOCALLLM_API_KEYS is set.", err=True)
        return
    entries = KeysFile.load(path).entries
    click.echo(f"Keys file {path}", err=True)
    click.echo(table(["ID", "KIND", "NAME", "KEY", "QUOTA/DAY", "CREATED"], [_row(e) for e in entries]))
    if not entries:
        click.echo("No keys: the daemon refuses every request that needs one until you create a key.", err=True)


def _row(entry: Entry) -> list[str]:
    quota = f"{entry.quota:,}" if entry.quota is not None else "-"
    return [entry.id, entry.kind, entry.name or "-", entry.hint, quota, entry.created]


@keys.command("revoke")
@click.argument("ident", metavar="ID|NAME")
@click.pass_context
def revoke(ctx: click.Context, ident: str) -> None:
    """Revoke a key or app (by id, or by name when only one has it); its tokens stop working at once."""
    path = _path(ctx)
    if not path.exists():
        raise click.ClickException(f"no keys file at {path}: there is nothing to revoke")
    try:
        gone = keystore.update(path, lambda f: f.revoke(ident))
        left = KeysFile.load(path).entries
    except OSError as exc:
        raise _write_error(path, exc) from None
    label = f"{gone.id} ({gone.name})" if gone.name else gone.id
    click.echo(f"Revoked the {gone.kind} {label}.", err=True)
    if not left:
        click.echo(
            f"No keys are left: the daemon refuses every request that needs a key until you create one "
            f"(delete {path} to turn authentication off).",
            err=True,
        )


def _write_error(path: Path, exc: OSError) -> click.ClickException:
    return click.ClickException(
        f"cannot write the keys file {path}: {exc.strerror or exc} "
        "(for the system service, run the command as root: sudo localllm keys ...)"
    )
