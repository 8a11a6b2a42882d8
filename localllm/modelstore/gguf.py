"""Read what localllm needs from a GGUF file's metadata, within bounds: a model file is untrusted input.

The file is mapped, not read, and walked once: scalars are kept, strings up to `GGUF_MAX_STRING` (longer
ones are skipped and their size noted in `skipped`), arrays up to `GGUF_MAX_KEPT_ARRAY` elements
(`GGUF_MAX_VERBOSE_ARRAY` with `verbose`; bigger ones, and the vocabulary arrays unless `verbose`, are
skipped: a fixed-size array in one step, a string array by walking its lengths). A file that declares more
keys, tensors or strings than the `GGUF_MAX_*` bounds of `limits.py`, or sizes that run past its end, is
refused with a `ValueError` naming what. Results are cached by path, modification time and size.

```
GGUF file:  "GGUF" | version u32 | tensor count u64 | key count u64
            key/value * key count:   key (u64 length + bytes) | type u32 | value
                                     value: scalar | string (u64 length + bytes) | array (type u32, count u64, items)
            tensor info * tensor count: name | n_dims u32 | dims u64 * n_dims | type u32 | offset u64
```
"""

from __future__ import annotations

import collections
import functools
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf as _gguf

from ..domain import limits

# Arrays shown in `/api/show` only with `verbose` (as Ollama does): they hold the whole vocabulary.
_BIG_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")

# GGUF value types: struct format of the fixed-size ones (STRING = 8 and ARRAY = 9 are variable).
_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
PROJECTOR_TYPES = ("mmproj", "projector")  # `general.type` of a projector GGUF: llama.cpp's, Ollama's


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
    skipped: dict[str, int] = field(default_factory=dict)  # strings too long to keep: key -> size in bytes
    chat_templates: dict[str, str] = field(default_factory=dict)  # named variants: `tokenizer.chat_template.<name>`

    @property
    def parameter_size(self) -> str:
        return format_parameter_count(self.parameter_count)

    @property
    def is_projector(self) -> bool:
        """A multimodal projector (mmproj), not a model: `general.type` says so (`mmproj`, as llama.cpp's
        converter writes it; `projector`, as Ollama's) or, in files older than that key, the `clip` architecture."""
        return self.metadata.get("general.type") in PROJECTOR_TYPES or self.architecture == "clip"

    @property
    def media(self) -> tuple[str, ...]:
        """What a projector encodes: `vision` and/or `audio`, from `clip.has_vision_encoder` and
        `clip.has_audio_encoder` (a missing key is false, as llama.cpp's clip loader reads it)."""
        if not self.is_projector:
            return ()
        return tuple(
            kind
            for kind, key in (("vision", "clip.has_vision_encoder"), ("audio", "clip.has_audio_encoder"))
            if self.metadata.get(key) is True
        )


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
    with _Reader(str(path), verbose=verbose) as reader:
        reader.read_metadata()
        return reader.meta


class _Reader:
    def __init__(self, path: str, *, verbose: bool) -> None:
        self.verbose = verbose
        self.meta: dict[str, Any] = {}
        self.skipped: dict[str, int] = {}
        self.arrays: dict[str, tuple[int, int]] = {}  # string arrays not kept: key -> (offset, count)
        self.kept = 0  # bytes of values kept
        self.walked = 0  # array elements walked over
        self._file = open(path, "rb")
        try:
            self.buf: Any = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            self.buf = b""
        self.pos = 0
        self.n_tensors = 0

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        if isinstance(self.buf, mmap.mmap):
            self.buf.close()
        self._file.close()

    def _need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise ValueError(f"the file ends inside {what} (at byte {self.pos}, {n} more bytes declared)")

    def _unpack(self, fmt: str, what: str) -> Any:
        size = struct.calcsize(fmt)
        self._need(size, what)
        value = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value[0] if len(value) == 1 else value

    def _string(self, what: str, cap: int) -> str | None:
        """A string, or None (skipped, not read) when it has more than `cap` bytes."""
        size = self._unpack("<Q", what)
        self._need(size, what)
        start, self.pos = self.pos, self.pos + size
        if size > cap:
            return None
        return bytes(self.buf[start : self.pos]).decode("utf-8", "replace")

    def read_metadata(self) -> None:
        self._need(4, "the header")
        if bytes(self.buf[:4]) != b"GGUF":
            raise ValueError("not a GGUF file (no GGUF magic)")
        self.pos = 4
        version = self._unpack("<I", "the header")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} is not supported (2 and 3 are)")
        self.n_tensors, n_keys = self._unpack("<QQ", "the header")
        if n_keys > limits.GGUF_MAX_KEYS:
            raise ValueError(f"the file declares {n_keys} metadata keys, more than {limits.GGUF_MAX_KEYS}")
        if self.n_tensors > limits.GGUF_MAX_TENSORS:
            raise ValueError(f"the file declares {self.n_tensors} tensors, more than {limits.GGUF_MAX_TENSORS}")
        for _ in range(n_keys):
            key = self._string("a metadata key", 1 << 16)
            if key is None:
                raise ValueError("a metadata key is longer than 64 KiB")
            vtype = self._unpack("<I", f"the type of {key}")
            self.meta[key] = self._value(key, vtype)

    def _value(self, key: str, vtype: int) -> Any:
        if vtype in _FORMATS:
            return self._unpack("<" + _FORMATS[vtype], key)
        if vtype == _STRING:
            start = self.pos
            cap = min(limits.GGUF_MAX_STRING, limits.GGUF_MAX_READ - self.kept)
            value = self._string(key, cap)
            if value is None:
                self.skipped[key] = self.pos - start - 8
            else:
                self.kept += len(value)
            return value
        if vtype == _ARRAY:
            return self._array(key)
        raise ValueError(f"{key} has an unknown value type {vtype}")

    def _array(self, key: str) -> list[Any] | None:
        itype, count = self._unpack("<IQ", key)
        if self.verbose:
            keep = count <= limits.GGUF_MAX_VERBOSE_ARRAY
        else:
            keep = key not in _BIG_ARRAYS and count <= limits.GGUF_MAX_KEPT_ARRAY
        if itype in _FORMATS:
            fmt = f"<{count}{_FORMATS[itype]}"
            size = count * struct.calcsize(_FORMATS[itype])
            self._need(size, key)
            if keep and self.kept + size <= limits.GGUF_MAX_READ:
                self.kept += size
                values = list(struct.unpack_from(fmt, self.buf, self.pos))
                self.pos += size
                return values
            self.pos += size  # skipped in one step, whatever its length
            return None
        if count > limits.GGUF_MAX_ARRAY:  # strings or arrays: each must be walked over
            raise ValueError(f"the metadata array {key} has {count} elements, more than {limits.GGUF_MAX_ARRAY}")
        self.walked += count
        if self.walked > limits.GGUF_MAX_ARRAY:
            raise ValueError(f"the metadata arrays have more than {limits.GGUF_MAX_ARRAY} strings in all")
        if itype == _STRING:
            start = self.pos
            self._skip_strings(count, key)
            if keep and self.kept + (self.pos - start) <= limits.GGUF_MAX_READ:
                self.kept += self.pos - start
                self.pos = start
                return [self._string(key, limits.GGUF_MAX_STRING) for _ in range(count)]
            self.arrays[key] = (start, count)
            return None
        if itype == _ARRAY:
            nested = [self._array(key) for _ in range(count)]
            return nested if keep else None
        raise ValueError(f"the metadata array {key} has an unknown element type {itype}")

    def _skip_strings(self, count: int, what: str) -> None:
        """Walk over `count` strings, reading only their lengths."""
        buf, pos, end = self.buf, self.pos, len(self.buf)
        unpack = struct.Struct("<Q").unpack_from
        for _ in range(count):
            if pos + 8 > end:
                break
            pos += 8 + unpack(buf, pos)[0]
        else:
            if pos <= end:
                self.pos = pos
                return
        raise ValueError(f"the file ends inside {what} (at byte {self.pos})")

    def token(self, index: Any) -> str:
        """The text of token `index` of the vocabulary (walked to, not loaded), or "" when there is none."""
        tokens = self.meta.get("tokenizer.ggml.tokens")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            return ""
        if isinstance(tokens, list):
            return str(tokens[index]) if index < len(tokens) and tokens[index] is not None else ""
        if "tokenizer.ggml.tokens" not in self.arrays:
            return ""
        start, count = self.arrays["tokenizer.ggml.tokens"]
        if index >= count:
            return ""
        saved, self.pos = self.pos, start
        try:
            self._skip_strings(index, "the vocabulary")
            return self._string("the vocabulary", limits.GGUF_MAX_STRING) or ""
        finally:
            self.pos = saved

    def tensors(self) -> list[tuple[int, int, int]]:
        """(element count, number of dimensions, ggml type) of every tensor, each checked to lie within the file
        (a truncated download is refused here, not when llama.cpp loads it)."""
        out, ends = [], []
        for i in range(self.n_tensors):
            what = f"tensor info {i}"
            if self._string(what, 1 << 16) is None:
                raise ValueError(f"the name of {what} is longer than 64 KiB")
            n_dims = self._unpack("<I", what)
            if n_dims > 8:
                raise ValueError(f"{what} has {n_dims} dimensions, more than 8")
            dims = self._unpack(f"<{n_dims}Q", what) if n_dims else ()
            dims = (dims,) if isinstance(dims, int) else dims
            ttype, offset = self._unpack("<IQ", what)
            n = 1
            for d in dims:
                n *= d
            out.append((n, n_dims, ttype))
            block, size = _gguf.GGML_QUANT_SIZES.get(ttype, (1, 0))  # an unknown type: not checked
            ends.append((i, offset + n // block * size))
        align = self.meta.get("general.alignment")
        align = align if isinstance(align, int) and align > 0 else 32
        data = -(-self.pos // align) * align
        for i, end in ends:
            if data + end > len(self.buf):
                raise ValueError(f"the file ends inside the data of tensor {i} (truncated?)")
        return out


@functools.lru_cache(maxsize=64)
def _read_info(path: str, _mtime: int, _size: int) -> GGUFInfo:
    with _Reader(path, verbose=False) as reader:
        reader.read_metadata()
        meta = reader.meta
        tensors = reader.tensors()
        arch = str(meta.get("general.architecture", "unknown"))

        def token_text(key: str) -> str:
            return reader.token(meta.get(key))

        fim = tuple(
            token_text(f"tokenizer.ggml.{new}_token_id") or token_text(f"tokenizer.ggml.{old}_token_id")
            for new, old in (("fim_pre", "prefix"), ("fim_suf", "suffix"), ("fim_mid", "middle"))
        )
        template = meta.get("tokenizer.chat_template")
        return GGUFInfo(
            architecture=arch,
            name=str(meta.get("general.name", "")),
            context_length=_int(meta.get(f"{arch}.context_length")),
            block_count=_int(meta.get(f"{arch}.block_count")),
            parameter_count=sum(n for n, _, _ in tensors),
            quantization=_quantization(tensors, meta),
            chat_template=template if isinstance(template, str) else None,
            bos_token=token_text("tokenizer.ggml.bos_token_id"),
            eos_token=token_text("tokenizer.ggml.eos_token_id"),
            pooling=f"{arch}.pooling_type" in meta,
            metadata=meta,
            fim=(fim[0], fim[1], fim[2]) if all(fim) else None,
            skipped=reader.skipped,
            chat_templates={
                key.removeprefix("tokenizer.chat_template."): value
                for key, value in meta.items()
                if key.startswith("tokenizer.chat_template.") and isinstance(value, str)
            },
        )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _quantization(tensors: list[tuple[int, int, int]], meta: dict[str, Any]) -> str:
    file_type = meta.get("general.file_type")
    if isinstance(file_type, int):
        try:
            name = _gguf.LlamaFileType(file_type).name
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    counts: collections.Counter[str] = collections.Counter(_type_name(t) for _, dims, t in tensors if dims >= 2)
    return counts.most_common(1)[0][0] if counts else "unknown"


def _type_name(ttype: int) -> str:
    try:
        return _gguf.GGMLQuantizationType(ttype).name
    except ValueError:
        return str(ttype)
