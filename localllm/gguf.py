"""Read what localllm needs from a GGUF file's metadata, through the `gguf` package.

The reader maps the file rather than reading it, so this is quick even for large models; results are
cached by path and modification time.
"""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf as _gguf

# Arrays shown in `/api/show` only with `verbose` (as Ollama does): they hold the whole vocabulary.
_BIG_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")


@dataclass(frozen=True)
class GGUFInfo:
    architecture: str
    name: str
    context_length: int
    block_count: int
    parameter_count: int
    quantization: str
    chat_template: str | None
    bos_token: str
    eos_token: str
    pooling: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)  # every scalar key, and big arrays as None
    fim: tuple[str, str, str] | None = None  # fill-in-the-middle tokens: prefix, suffix, middle

    @property
    def parameter_size(self) -> str:
        return format_parameter_count(self.parameter_count)


def format_parameter_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
    return str(n)


def read_info(path: Path) -> GGUFInfo:
    """The metadata of the GGUF at `path` (for a split model, its first shard)."""
    stat = path.stat()
    return _read_info(str(path), stat.st_mtime_ns, stat.st_size)


def read_metadata(path: Path, *, verbose: bool = False) -> dict[str, Any]:
    """Every metadata key and value; the vocabulary arrays only with `verbose` (else None)."""
    reader = _gguf.GGUFReader(str(path))
    return {key: _value(f, verbose=verbose) for key, f in reader.fields.items() if not key.startswith("GGUF.")}


@functools.lru_cache(maxsize=64)
def _read_info(path: str, _mtime: int, _size: int) -> GGUFInfo:
    reader = _gguf.GGUFReader(path)
    meta = {key: _value(f, verbose=False) for key, f in reader.fields.items() if not key.startswith("GGUF.")}
    arch = str(meta.get("general.architecture", "unknown"))
    tokens = reader.fields.get("tokenizer.ggml.tokens")

    def token_text(key: str) -> str:
        tid = meta.get(key)
        if tokens is None or not isinstance(tid, int) or not 0 <= tid < len(tokens.data):
            return ""
        return bytes(tokens.parts[tokens.data[tid]]).decode("utf-8", "replace")

    fim = tuple(
        token_text(f"tokenizer.ggml.{new}_token_id") or token_text(f"tokenizer.ggml.{old}_token_id")
        for new, old in (("fim_pre", "prefix"), ("fim_suf", "suffix"), ("fim_mid", "middle"))
    )
    return GGUFInfo(
        architecture=arch,
        name=str(meta.get("general.name", "")),
        context_length=int(meta.get(f"{arch}.context_length", 0) or 0),
        block_count=int(meta.get(f"{arch}.block_count", 0) or 0),
        parameter_count=sum(int(t.n_elements) for t in reader.tensors),
        quantization=_quantization(reader, meta),
        chat_template=meta.get("tokenizer.chat_template")
        if isinstance(meta.get("tokenizer.chat_template"), str)
        else None,
        bos_token=token_text("tokenizer.ggml.bos_token_id"),
        eos_token=token_text("tokenizer.ggml.eos_token_id"),
        pooling=f"{arch}.pooling_type" in meta,
        metadata=meta,
        fim=(fim[0], fim[1], fim[2]) if all(fim) else None,
    )


def _value(f: Any, *, verbose: bool) -> Any:
    types = f.types
    if not types:
        return None
    if types[0] == _gguf.GGUFValueType.ARRAY:
        if f.name in _BIG_ARRAYS and not verbose:
            return None
        if len(types) > 1 and types[1] == _gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8", "replace") for i in f.data]
        return [f.parts[i].tolist()[0] for i in f.data]
    if types[0] == _gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8", "replace")
    value = f.parts[f.data[0]].tolist()[0]
    return value


def _quantization(reader: Any, meta: dict[str, Any]) -> str:
    file_type = meta.get("general.file_type")
    if isinstance(file_type, int):
        try:
            name = _gguf.LlamaFileType(file_type).name
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    counts: collections.Counter[str] = collections.Counter(
        t.tensor_type.name for t in reader.tensors if len(t.shape) >= 2
    )
    return counts.most_common(1)[0][0] if counts else "unknown"
