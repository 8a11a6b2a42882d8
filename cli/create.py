"""`localllm create NAME -f Modelfile`: build a model from a Modelfile through the daemon's `/api/create`.

The Modelfile is read here (localllm.modelstore.modelfile). A FROM or ADAPTER that names a file on this machine
(relative to the Modelfile's folder; `~` allowed) is hashed and uploaded first, unless the daemon has it already
(`HEAD`, then `POST /api/blobs/sha256:<hex>`), and goes as `files` / `adapters`; any other FROM (a local model,
`hf.co/<user>/<repo>:<quant>`, a library name) goes as `from`, and the daemon pulls it when it must. A second
FROM, the multimodal projector, is always a file: it is uploaded and goes in `files` too.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import click

from localllm.client import Client
from localllm.domain.errors import ModelfileError
from localllm.modelstore.modelfile import Modelfile, parse, to_create_request

from .render import PullProgress

_CHUNK = 1 << 20
_PATH_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")
_FILE_SUFFIXES = (".gguf", ".bin")


@click.command()
@click.argument("model")
@click.option(
    "-f",
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    default="Modelfile",
    show_default=True,
    help="The Modelfile to build the model from.",
)
@click.pass_obj
def create(client: Client, model: str, path: Path) -> None:
    """Create a model from a Modelfile."""
    mf = read_modelfile(path)
    tty = sys.stderr.isatty()
    click.echo("gathering model components", err=True)
    files = upload(client, mf.from_, path.parent, tty=tty)
    adapters: dict[str, str] = {}
    for adapter in mf.adapters:
        uploaded = upload(client, adapter, path.parent, tty=tty)
        if uploaded is None:
            raise click.ClickException(f"ADAPTER {adapter}: no such file")
        adapters.update(uploaded)
    projector = None
    if mf.projector is not None:
        projector = upload(client, mf.projector, path.parent, tty=tty)
        if projector is None or len(projector) != 1:
            raise click.ClickException(f"FROM {mf.projector}: the second FROM must name one projector GGUF file")
        if files and set(files) & set(projector):
            raise click.ClickException(
                f"FROM {mf.projector}: the projector has the same file name as the model; rename one of them"
            )
    request = to_create_request(mf, model=model, files=files, adapters=adapters or None, projector=projector)
    progress = PullProgress(tty=tty, width=shutil.get_terminal_size().columns if tty else 80)
    try:
        for event in client.create(request):
            click.echo(progress.update(event), err=True, nl=False)
    finally:
        click.echo(progress.finish(), err=True, nl=False)


def read_modelfile(path: Path) -> Modelfile:
    """The Modelfile at `path`; a clean error naming the file when it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise click.ClickException(f"{path} is not a UTF-8 text file") from None
    try:
        return parse(text)
    except ModelfileError as exc:
        raise click.ClickException(f"{path}: {exc}") from None


def local_files(argument: str, base: Path) -> list[Path] | None:
    """The files a FROM/ADAPTER argument names on this machine, or None when it is not a path (a model name)."""
    path = Path(argument).expanduser()
    if not path.is_absolute():
        path = base / path
    if path.is_file():
        return [path]
    if path.is_dir():
        ggufs = sorted(p for p in path.glob("*.gguf") if p.is_file())
        if not ggufs:
            raise click.ClickException(f"{argument}: the folder holds no .gguf file")
        return ggufs
    if argument.startswith(_PATH_PREFIXES) or argument.lower().endswith(_FILE_SUFFIXES):
        raise click.ClickException(f"{argument}: no such file (a path is taken from the Modelfile's folder)")
    return None


def sha256_of(path: Path) -> str:
    """`sha256:<hex>` of the file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def upload(client: Client, argument: str, base: Path, *, tty: bool) -> dict[str, str] | None:
    """Make sure the daemon has the files `argument` names: {file name: digest}; None for a model name."""
    paths = local_files(argument, base)
    if paths is None:
        return None
    out: dict[str, str] = {}
    for path in paths:
        digest = sha256_of(path)
        if not client.has_blob(digest):
            _copy(client, digest, path, tty=tty)
        out[path.name] = digest
    return out


def _copy(client: Client, digest: str, path: Path, *, tty: bool) -> None:
    size = max(1, path.stat().st_size)
    label = f"copying file {digest}"
    sent = 0

    def progress(n: int) -> None:
        nonlocal sent
        sent += n
        if tty:
            click.echo(f"\r{label} {sent * 100 // size}%", err=True, nl=False)

    client.create_blob(digest, path, progress=progress)
    click.echo(("\r" if tty else "") + f"{label} 100%", err=True)
