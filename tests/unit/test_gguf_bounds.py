"""The GGUF metadata reader on crafted files: what it does not need is skipped, not loaded; what cannot be
skipped cheaply is bounded; a file that lies about its sizes is refused. Files are written byte by byte."""

from __future__ import annotations

import struct
import time
import tracemalloc
from pathlib import Path

import pytest

from localllm.domain import limits
from localllm.modelstore import gguf as gguf_module
from localllm.modelstore.gguf import read_info, read_metadata

U8, U32, STRING, ARRAY = 0, 4, 8, 9


def string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return string(key) + struct.pack("<I", vtype) + payload


def gguf(path: Path, *kvs: bytes, n_keys: int | None = None, n_tensors: int = 0, tail: int = 0) -> Path:
    """A GGUF with these key/values and no tensors; `tail` zero bytes (a sparse file) follow them."""
    header = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(kvs) if n_keys is None else n_keys)
    with path.open("wb") as f:
        f.write(header + b"".join(kvs))
        if tail:
            f.truncate(f.tell() + tail)
    return path


BASE = (
    kv("general.architecture", STRING, string("llama")),
    kv("llama.context_length", U32, struct.pack("<I", 4096)),
    kv("tokenizer.ggml.bos_token_id", U32, struct.pack("<I", 1)),
    kv(
        "tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, 3) + string("<unk>") + string("<s>") + string("</s>")
    ),
    kv("tokenizer.ggml.eos_token_id", U32, struct.pack("<I", 2)),
)


def measured(path: Path) -> tuple[float, int]:
    """Seconds to read the file's info, and the peak of Python memory allocated meanwhile (a second read, as
    tracing slows every allocation down)."""
    gguf_module._read_info.cache_clear()
    start = time.perf_counter()
    read_info(path)
    seconds = time.perf_counter() - start
    gguf_module._read_info.cache_clear()
    tracemalloc.start()
    try:
        read_info(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return seconds, peak


def test_a_small_file_is_read(tmp_path: Path) -> None:
    info = read_info(gguf(tmp_path / "m.gguf", *BASE, kv("tokenizer.chat_template", STRING, string("{{ x }}"))))
    assert (info.architecture, info.context_length, info.bos_token, info.eos_token) == ("llama", 4096, "<s>", "</s>")
    assert info.chat_template == "{{ x }}" and info.metadata["tokenizer.ggml.tokens"] is None
    assert read_metadata(tmp_path / "m.gguf", verbose=True)["tokenizer.ggml.tokens"] == ["<unk>", "<s>", "</s>"]


def test_a_huge_fixed_size_array_is_skipped_in_one_step(tmp_path: Path) -> None:
    """512 MiB of uint8 metadata (a sparse file): listed, the array not loaded, memory and time small."""
    count = 512 << 20
    path = gguf(tmp_path / "big.gguf", *BASE, kv("junk.bytes", ARRAY, struct.pack("<IQ", U8, count)), tail=count)
    seconds, peak = measured(path)
    assert seconds < 1 and peak < 4 << 20
    info = read_info(path)
    assert info.metadata["junk.bytes"] is None and info.bos_token == "<s>"


def test_sizes_past_the_end_of_the_file_are_refused(tmp_path: Path) -> None:
    lying = [
        kv("junk", ARRAY, struct.pack("<IQ", U32, 1 << 60)),  # 2^60 uint32: would be exabytes
        kv("junk", ARRAY, struct.pack("<IQ", STRING, limits.GGUF_MAX_ARRAY + 1)),  # too many to walk
        kv("tokenizer.chat_template", STRING, struct.pack("<Q", 300 << 20) + b"{{"),  # 300 MiB promised
    ]
    for i, bad in enumerate(lying):
        path = gguf(tmp_path / f"bad{i}.gguf", *BASE, bad)
        start = time.perf_counter()
        with pytest.raises(ValueError, match="ends inside|more than"):
            read_info(path)
        assert time.perf_counter() - start < 0.5
    with pytest.raises(ValueError, match="metadata keys"):
        read_info(gguf(tmp_path / "keys.gguf", *BASE, n_keys=1 << 40))
    with pytest.raises(ValueError, match="tensors"):
        read_info(gguf(tmp_path / "tensors.gguf", *BASE, n_tensors=1 << 40))
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(ValueError, match="ends inside the header"):
        read_info(tmp_path / "empty.gguf")
    (tmp_path / "text.gguf").write_bytes(b"not a model file")
    with pytest.raises(ValueError, match="not a GGUF"):
        read_info(tmp_path / "text.gguf")


def test_a_big_string_array_is_walked_not_loaded(tmp_path: Path) -> None:
    """A million metadata strings (as a crafted vocabulary would have): only their lengths are read."""
    count = 1 << 20
    strings = struct.pack("<IQ", STRING, count) + string("x" * 16) * count
    path = gguf(tmp_path / "strings.gguf", *BASE, kv("junk.strings", ARRAY, strings))
    seconds, peak = measured(path)
    assert seconds < 2 and peak < 4 << 20
    assert read_info(path).metadata["junk.strings"] is None


def test_an_overlong_string_is_skipped_and_noted(tmp_path: Path) -> None:
    template = "x" * (limits.GGUF_MAX_STRING + 1)
    path = gguf(tmp_path / "tpl.gguf", *BASE, kv("tokenizer.chat_template", STRING, string(template)))
    info = read_info(path)
    assert info.chat_template is None and info.skipped == {"tokenizer.chat_template": len(template)}


def test_tensor_data_past_the_end_of_the_file_is_refused(tmp_path: Path) -> None:
    """A download cut short: its tensor infos promise data the file does not hold."""
    tensor = string("t") + struct.pack("<IQIQ", 1, 1000, 0, 0)  # 1000 float32 at offset 0 of the data
    path = gguf(tmp_path / "cut.gguf", *BASE, n_tensors=1)
    path.write_bytes(path.read_bytes() + tensor + b"\0" * 64)
    with pytest.raises(ValueError, match="ends inside the data of tensor 0"):
        read_info(path)
    path.write_bytes(path.read_bytes() + b"\0" * 4000)
    assert read_info(path).parameter_count == 1000
