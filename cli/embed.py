"""`localllm embed MODEL TEXT...`: the embedding of each text (or of each line of stdin) as a JSON array.

Like `run`, it pulls a model the daemon does not have yet (Ollama's CLI has no `embed`; its `run` pulls).
"""

from __future__ import annotations

import json
import sys

import click

from localllm.client import Client

from .models import show_or_pull
from .run import check_keepalive


@click.command()
@click.argument("model")
@click.argument("texts", nargs=-1)
@click.option(
    "--truncate/--no-truncate",
    default=None,
    help="Cut a text longer than the context to fit (the daemon's default), or refuse it.",
)
@click.option("--dimensions", type=click.IntRange(min=1), help="The length of the vectors (cut and normalised).")
@click.option("--keepalive", callback=check_keepalive, help="How long to keep the model loaded (e.g. 5m, 1h, -1).")
@click.pass_obj
def embed(
    client: Client,
    model: str,
    texts: tuple[str, ...],
    truncate: bool | None,
    dimensions: int | None,
    keepalive: str | None,
) -> None:
    """Print the embedding of each TEXT, or of each line of stdin, one JSON array per line."""
    inputs = list(texts)
    if not inputs:
        if sys.stdin.isatty():
            raise click.UsageError("give the texts as arguments, or one per line on stdin")
        inputs = [line for line in sys.stdin.read().splitlines() if line.strip()]
        if not inputs:
            raise click.UsageError("stdin holds no text to embed")
    model, _ = show_or_pull(client, model)
    result = client.embed(model, inputs, truncate=truncate, dimensions=dimensions, keep_alive=keepalive)
    for vector in result.get("embeddings") or []:
        click.echo(json.dumps(vector))
