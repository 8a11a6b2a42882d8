"""Model management commands: list/ls, show, pull, rm, cp, ps, stop."""

from __future__ import annotations

import contextlib
import shutil
import sys
from datetime import datetime, timezone
from typing import Any

import click

from localllm.client import Client, JSONObject
from localllm.domain.errors import InvalidModelName, ResponseError
from localllm.domain.names import close_match, display, parse_name
from localllm.modelstore import library

from .render import (
    PullProgress,
    human_bytes,
    human_time,
    model_summary,
    parse_timestamp,
    processor,
    short_digest,
    split_lines,
    split_processor,
    table,
    until,
)


def pull_model(client: Client, model: str) -> None:
    """Pull `model`, drawing Ollama-style progress on stderr."""
    tty = sys.stderr.isatty()
    width = shutil.get_terminal_size().columns if tty else 80
    progress = PullProgress(tty=tty, width=width)
    try:
        for event in client.pull(model):
            click.echo(progress.update(event), err=True, nl=False)
    finally:
        click.echo(progress.finish(), err=True, nl=False)


def show_or_pull(client: Client, model: str) -> tuple[str, JSONObject]:
    """The model `run` and `embed` use and its details: `model` itself, the one local `hf.co/…/<repo>` model a
    short name matches, or else `model` pulled first (as Ollama's run does)."""
    try:
        return model, client.show(model)
    except ResponseError as exc:
        if exc.status_code != 404:
            raise
    match = _local_match(client, model)
    if match is not None:
        click.echo(f"using {match}, the one local model of that name", err=True)
        return match, client.show(match)
    pull_model(client, model)
    return model, client.show(model)


def _local_match(client: Client, model: str) -> str | None:
    try:
        wanted = parse_name(model)
    except InvalidModelName:
        return None
    stored = []
    for entry in client.list():
        with contextlib.suppress(InvalidModelName):
            stored.append(parse_name(str(entry.get("name") or entry.get("model") or "")))
    match = close_match(wanted, stored)
    return None if match is None else display(match)


@click.command("list")
@click.option(
    "--library",
    "show_library",
    is_flag=True,
    help="List the model library instead: short names to pull or run, and the Hub file each stands for.",
)
@click.pass_obj
def list_models(client: Client, show_library: bool) -> None:
    """List local models."""
    if show_library:
        click.echo(table(["NAME", "FROM"], [[name, mf.from_] for name, mf in library.entries()]))
        return
    now = datetime.now(timezone.utc)
    rows = []
    damaged = []
    for model in client.list():
        modified = parse_timestamp(model.get("modified_at"))
        name = str(model.get("name") or model.get("model") or "")
        if model.get("damaged"):
            damaged.append(f"{name} is damaged: {model['damaged']}")
        rows.append(
            [
                f"{name} (damaged)" if model.get("damaged") else name,
                short_digest(model.get("digest")),
                human_bytes(int(model.get("size") or 0)),
                human_time(modified, now) if modified else str(model.get("modified_at") or ""),
            ]
        )
    click.echo(table(["NAME", "ID", "SIZE", "MODIFIED"], rows))
    for line in damaged:
        click.echo(line, err=True)


_SHOW_FIELDS = ("license", "modelfile", "parameters", "system", "template")


@click.command()
@click.argument("model")
@click.option("--license", "license_", is_flag=True, help="Show the license of the model.")
@click.option("--modelfile", is_flag=True, help="Show the Modelfile of the model.")
@click.option("--parameters", is_flag=True, help="Show the parameters of the model.")
@click.option("--system", is_flag=True, help="Show the system message of the model.")
@click.option("--template", is_flag=True, help="Show the template of the model.")
@click.option("-v", "--verbose", is_flag=True, help="Also show every metadata key of the model file.")
@click.pass_obj
def show(
    client: Client,
    model: str,
    license_: bool,
    modelfile: bool,
    parameters: bool,
    system: bool,
    template: bool,
    verbose: bool,
) -> None:
    """Show information about a model."""
    flags = (license_, modelfile, parameters, system, template)
    chosen = [name for name, flag in zip(_SHOW_FIELDS, flags, strict=True) if flag]
    if len(chosen) > 1:
        raise click.UsageError("only one of " + ", ".join(f"'--{name}'" for name in _SHOW_FIELDS) + " may be given")
    info = client.show(model)
    if chosen:
        value = info.get(chosen[0]) or ""
        text = "\n".join(str(v) for v in value) if isinstance(value, list) else str(value)
        click.echo(text.rstrip("\n"))
        return
    click.echo(model_summary(info))
    if verbose:
        metadata = sorted((str(k), str(v)) for k, v in (info.get("model_info") or {}).items())
        if metadata:
            click.echo("\n  Metadata")
            width = max(len(k) for k, _ in metadata)
            for key, value in metadata:
                click.echo(f"    {key.ljust(width)}    {value[:200]}")
    click.echo()


@click.command()
@click.argument("model")
@click.pass_obj
def pull(client: Client, model: str) -> None:
    """Pull a model from the Hugging Face Hub (e.g. hf.co/user/repo:Q4_K_M)."""
    pull_model(client, model)


@click.command()
@click.argument("model", required=False)
@click.pass_obj
def verify(client: Client, model: str | None) -> None:
    """Check the stored blobs against their sha256 (one model's, or all); exit status 1 if any is damaged.

    A damaged blob is moved aside and its models list as damaged until pulled again or removed."""
    summary: dict[str, object] = {}
    for line in client.verify(model):
        if "digest" not in line:
            summary = line
            continue
        models = ", ".join(str(m) for m in line.get("models") or [])
        if line.get("status") == "ok":
            click.echo(f"ok       {short_digest(line.get('digest'))}  {models}")
        else:
            click.echo(f"DAMAGED  {short_digest(line.get('digest'))}  {models}: {line.get('problem')}")
    damaged = summary.get("damaged") or []
    checked = summary.get("checked", 0)
    if damaged and isinstance(damaged, list):
        raise click.ClickException(
            f"{len(damaged)} damaged model(s): {', '.join(map(str, damaged))}; pull them again or remove them"
        )
    click.echo(f"{checked} blobs verified, none damaged")


@click.command()
@click.argument("models", nargs=-1, required=True)
@click.pass_obj
def rm(client: Client, models: tuple[str, ...]) -> None:
    """Remove one or more models."""
    for model in models:
        client.delete(model)
        click.echo(f"deleted '{model}'")


@click.command()
@click.argument("source")
@click.argument("destination")
@click.pass_obj
def cp(client: Client, source: str, destination: str) -> None:
    """Copy a model under another name."""
    client.copy(source, destination)
    click.echo(f"copied '{source}' to '{destination}'")


@click.command()
@click.pass_obj
def ps(client: Client) -> None:
    """List the models loaded in memory."""
    now = datetime.now(timezone.utc)
    rows = []
    splits = []
    models = client.ps()
    for model in models:
        size, size_vram = int(model.get("size") or 0), int(model.get("size_vram") or 0)
        context = model.get("context_length")
        kv = model.get("kv_cache_type")
        raw = model.get("devices")
        devices: list[Any] = raw if isinstance(raw, list) else []
        split = bool(devices)
        rows.append(
            [
                str(model.get("name") or model.get("model") or ""),
                short_digest(model.get("digest")),
                human_bytes(size),
                split_processor(devices) if split else processor(size, size_vram),
                (f"{context} ({kv})" if kv and kv != "f16" else str(context)) if context else "",
                until(model.get("expires_at"), now),
            ]
        )
        if split:
            splits.append(split_lines(str(rows[-1][0]), devices))
    header = ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    caches = [model.get("prompt_cache") for model in models]
    if any(isinstance(c, dict) for c in caches):  # localllm's daemon: each model's prompt cache
        header.append("PROMPT CACHE")
        for row, cache in zip(rows, caches, strict=False):
            row.append(prompt_cache(cache) if isinstance(cache, dict) else "")
    click.echo(table(header, rows))
    for lines in splits:
        click.echo("")
        click.echo("\n".join(lines))


def prompt_cache(cache: JSONObject) -> str:
    """`12 MB in RAM + 1.2 GB on disk, 75% hits`: the saved states' sizes and the share of prompts that hit."""
    size = human_bytes(int(cache.get("ram_bytes") or 0)) + " in RAM"
    if cache.get("disk_limit"):
        size += f" + {human_bytes(int(cache.get('disk_bytes') or 0))} on disk"
    requests = int(cache.get("requests") or 0)
    rate = f"{round(100 * float(cache.get('hit_rate') or 0))}% hits" if requests else "no prompts yet"
    return f"{size}, {rate}"


@click.command()
@click.argument("model")
@click.pass_obj
def stop(client: Client, model: str) -> None:
    """Unload a running model."""
    try:
        for _ in client.generate(model, "", keep_alive=0):
            pass
    except ResponseError as exc:
        if exc.status_code == 404:
            raise click.ClickException(f"couldn't find model '{model}' to stop") from None
        raise
