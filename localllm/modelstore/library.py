"""The model library: curated Modelfiles that give short names to GGUF models on the Hugging Face Hub.

    modelfiles/             the checkout's top level, installed as the package `localllm.modelstore.modelfiles`
      qwen2.5/              (setup.py maps it in); its Modelfiles are package data, read with importlib.resources
        0.5b.Modelfile      qwen2.5:0.5b  ->  FROM hf.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M
        latest.Modelfile    qwen2.5, qwen2.5:latest

Only plain names are library names (`qwen2.5:0.5b`; never `user/model` or `hf.co/…`), matched
case-insensitively like every model name.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from ..domain.errors import ModelfileError
from ..domain.names import DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG, ModelName, parse_name
from .modelfile import Modelfile, parse

PACKAGE = "localllm.modelstore.modelfiles"
SUFFIX = ".Modelfile"
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([kmbt])", re.IGNORECASE)
_SCALE = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def library_dir() -> Path | None:
    """The library's folder (the checkout's `modelfiles/` in an editable install); None when it is not installed."""
    try:
        folder = Path(str(resources.files(PACKAGE)))
    except ModuleNotFoundError:
        return None
    return folder if folder.is_dir() else None


def find(name: str | ModelName, *, root: Path | None = None) -> Modelfile | None:
    """The library's Modelfile for `name` (e.g. `qwen2.5:0.5b`), or None when the library has no such name.

    `root` is the library folder (default: `library_dir()`). A malformed name is an `InvalidModelName`.
    """
    ref = parse_name(name) if isinstance(name, str) else name
    if ref.host != DEFAULT_HOST or ref.namespace != DEFAULT_NAMESPACE:
        return None
    folder = root if root is not None else library_dir()
    if folder is None:
        return None
    model_dir = _child(folder, ref.model, directory=True)
    path = _child(model_dir, ref.tag + SUFFIX, directory=False) if model_dir is not None else None
    return None if path is None else _read(path)


def entries(*, root: Path | None = None) -> list[tuple[str, Modelfile]]:
    """Every `(name:tag, Modelfile)` of the library, by name, `latest` first, then from small to large."""
    folder = root if root is not None else library_dir()
    return [(name, _read(path)) for name, path in _files(folder)] if folder is not None else []


def _child(folder: Path, name: str, *, directory: bool) -> Path | None:
    """The entry of `folder` called `name`, whatever its case."""
    wanted = name.casefold()
    for path in folder.iterdir():
        if path.name.casefold() == wanted and (path.is_dir() if directory else path.is_file()):
            return path
    return None


def _files(folder: Path) -> list[tuple[str, Path]]:
    out = []
    for model_dir in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "__pycache__"):
        paths = [p for p in model_dir.iterdir() if p.is_file() and p.name.endswith(SUFFIX)]
        for path in sorted(paths, key=lambda p: _tag_order(p.name[: -len(SUFFIX)])):
            out.append((f"{model_dir.name}:{path.name[: -len(SUFFIX)]}", path))
    return out


def _tag_order(tag: str) -> tuple[int, float, str]:
    size = _SIZE.fullmatch(tag)
    return (tag != DEFAULT_TAG, float(size[1]) * _SCALE[size[2].lower()] if size else float("inf"), tag)


def _read(path: Path) -> Modelfile:
    try:
        return parse(path.read_text(encoding="utf-8"))
    except ModelfileError as exc:
        message = str(exc).partition(": ")[2]
        raise ModelfileError(f"{message} (in the library's {path})", line=exc.line) from None
