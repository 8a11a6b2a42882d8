"""The disk tier of the prompt cache: saved KV states as files, which outlive the runner and the daemon.

`LOCALLLM_CACHE_DIR` holds one folder per KV layout: the hash of everything a state depends on (the model's
and adapters' digests, the context per sequence and in all, the sequences, the KV cache type, flash
attention, the GPU layers, llama.cpp's version: `Engine.state_layout`), so a state is only ever offered to a
runner whose cache has the same shape and contents; its `layout.json` says what that was. Each file is

    header: magic, layout digest (32 bytes), SHA-256 of the body (32), token count (u32), state bytes (u64),
            the tokens the kept output follows (u32, 0: none), its bytes (u32)
    body:   the tokens (int32, little-endian), the output (the logits after the first tokens, as the
            engine kept them: kvstates.PromptOutput), then llama.cpp's state of the sequence

written to a temporary name and renamed into place (so a file is whole or absent). A file whose header does
not match its layout or its length is deleted when the folder is scanned (at the runner's start); one whose
body does not match its checksum is deleted when it is read, and never loaded. Writes, deletions and the
"last used" times (the file's mtime, which orders the eviction across restarts) go through one background
thread, in order, so the decode loop never waits on the disk; reads are on the decode loop, when a state is
restored. Folders and files are private to the user (0700/0600): they hold the prompts' tokens.

`LOCALLLM_CACHE_DISK` bounds the whole directory: a runner starting makes the other layouts' files fit in half
of it (oldest first), and keeps its own within what is left.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import queue
import sys
import threading
import time
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..domain.limits import PROMPT_CACHE_PREFETCH, PROMPT_CACHE_WRITES

log = logging.getLogger("localllm.runner")

MAGIC = b"LLKVST02"
SUFFIX = ".kvstate"
_TMP = ".tmp-"
_STALE_TMP_S = 3600.0  # a temporary file this old was left by a runner that died while writing it
_HEAD_SIZE = 8 + 32 + 32 + 4 + 8 + 4 + 4


@dataclass(frozen=True)
class _Head:
    key: bytes  # the layout's digest
    checksum: bytes
    n_tokens: int
    size: int  # bytes of the state
    output_n: int  # tokens the kept output follows (0: none)
    output_size: int

    def to_bytes(self) -> bytes:
        numbers = ((self.n_tokens, 4), (self.size, 8), (self.output_n, 4), (self.output_size, 4))
        return MAGIC + self.key + self.checksum + b"".join(n.to_bytes(width, "little") for n, width in numbers)

    @property
    def file_size(self) -> int:
        return _HEAD_SIZE + 4 * self.n_tokens + self.output_size + self.size


def _parse_head(raw: bytes) -> _Head | None:
    """A file's header, None if it is not one."""
    if len(raw) != _HEAD_SIZE or raw[:8] != MAGIC:
        return None

    def number(start: int, width: int) -> int:
        return int.from_bytes(raw[start : start + width], "little")

    return _Head(raw[8:40], raw[40:72], number(72, 4), number(76, 8), number(84, 4), number(88, 4))


def _token_bytes(tokens: array[int]) -> bytes:
    if sys.byteorder == "little":
        return tokens.tobytes()
    swapped = array("i", tokens)
    swapped.byteswap()
    return swapped.tobytes()


def _tokens_of(raw: bytes) -> array[int]:
    tokens = array("i")
    tokens.frombytes(raw)
    if sys.byteorder != "little":
        tokens.byteswap()
    return tokens


def file_identity(path: str) -> str:
    """What names a model or adapter file's contents: the digest of a store blob (`sha256-<hex>`), else its
    real path, size and modification time."""
    name = os.path.basename(path)
    if name.startswith("sha256-") and len(name) == 7 + 64:
        return name.replace("-", ":", 1)
    try:
        st = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"


def layout_digest(layout: Mapping[str, object]) -> bytes:
    return hashlib.sha256(json.dumps(layout, sort_keys=True, separators=(",", ":")).encode()).digest()


@dataclass(frozen=True)
class StoredState:
    """A state file found by `KVFiles.scan` (its body not read yet)."""

    name: str
    tokens: array[int]
    size: int  # bytes of the state
    file_size: int
    last_used: float  # the file's mtime
    output_n: int = 0  # tokens the output it carries follows (0: none)


@dataclass(frozen=True)
class ReadState:
    """A state file's body, checked: the state, and the output kept after its first `output_n` tokens (if any)."""

    data: bytearray
    output_n: int = 0
    output: bytes = b""


class KVFiles:
    """The state files of one KV layout under `root`, bounded (with the other layouts') by `limit` bytes."""

    def __init__(self, root: Path, layout: Mapping[str, object], limit: int) -> None:
        self.root = root
        self.key = layout_digest(layout)
        self.layout = dict(layout)
        self.dir = root / self.key.hex()[:32]
        self.limit = limit  # for this layout's files, once `scan` has seen the others'
        self._ops: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._pending = 0  # writes queued and not done
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ready: dict[str, ReadState] = {}  # files read back and checked by `prefetch`, not taken yet

    # -- the folder ----------------------------------------------------------------------------------

    def scan(self) -> list[StoredState]:
        """This layout's states on disk, least recently used first; deletes what is not a whole state of this
        layout, and the oldest files while the directory is over its bound."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.dir.mkdir(mode=0o700, exist_ok=True)
        layout_file = self.dir / "layout.json"
        if not layout_file.exists():
            with contextlib.suppress(OSError):
                layout_file.write_text(json.dumps(self.layout, indent=1, sort_keys=True) + "\n")
        others: list[tuple[float, int, Path]] = []
        for folder in self.root.iterdir():
            if folder != self.dir and folder.is_dir():
                others.extend(self._files(folder))
        others.sort()
        other_bytes = sum(size for _, size, _ in others)
        for _, size, path in others:  # other layouts get half of the directory at most
            if other_bytes <= self.limit // 2:
                break
            _unlink(path)
            other_bytes -= size
        self.limit = max(0, self.limit - other_bytes)
        found: list[StoredState] = []
        for mtime, size, path in sorted(self._files(self.dir)):
            state = self._check(path, mtime, size)
            if state is None:
                log.warning("prompt cache: deleting %s: not a whole state of this model and context", path)
                _unlink(path)
            else:
                found.append(state)
        return found

    def _files(self, folder: Path) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of the state files in `folder`; stale temporary files are deleted."""
        out = []
        now = time.time()
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if _TMP in entry.name:
                    if now - st.st_mtime > _STALE_TMP_S:
                        _unlink(Path(entry.path))
                elif entry.name.endswith(SUFFIX) and entry.is_file(follow_symlinks=False):
                    out.append((st.st_mtime, st.st_size, Path(entry.path)))
        return out

    def _check(self, path: Path, mtime: float, size: int) -> StoredState | None:
        try:
            with path.open("rb") as f:
                head = _parse_head(f.read(_HEAD_SIZE))
                if head is None or head.key != self.key or size != head.file_size or head.output_n > head.n_tokens:
                    return None
                tokens = _tokens_of(f.read(4 * head.n_tokens))
        except OSError:
            return None
        return StoredState(path.name, tokens, head.size, size, mtime, head.output_n if head.output_size else 0)

    # -- one file ------------------------------------------------------------------------------------

    def prefetch(self, states: list[StoredState], budget: int) -> None:
        """Read the newest of `states` (at most `PROMPT_CACHE_PREFETCH`, `budget` bytes in all) back in the
        background, checked, for `read` to find: after a restart, what the slots held when the runner stopped
        is at hand before it is asked for (on a 135M model, reading and checking a 1,000-token state took
        40 ms, three times a restore from RAM)."""
        for state in sorted(states, key=lambda s: -s.last_used)[:PROMPT_CACHE_PREFETCH]:
            if state.file_size > budget:
                break
            budget -= state.file_size
            self._queue(functools.partial(self._prefetch, state))

    def _prefetch(self, state: StoredState) -> None:
        read = self._read(state.name, state.tokens)
        if read is not None:
            with self._lock:
                self._ready[state.name] = read

    def read(self, name: str, tokens: array[int]) -> ReadState | None:
        """The state saved as `name` for `tokens` (and its output), checked against its checksum; None (and the
        file deleted, unless it is just missing) when it is not whole."""
        with self._lock:
            ready = self._ready.pop(name, None)
        if ready is not None:
            return ready
        return self._read(name, tokens)

    def _read(self, name: str, tokens: array[int]) -> ReadState | None:
        path = self.dir / name
        try:
            f = path.open("rb")
        except OSError:
            return None
        with f:
            try:
                head = _parse_head(f.read(_HEAD_SIZE))
                raw_tokens = _token_bytes(tokens)
                data = bytearray(head.size) if head is not None and head.size < 1 << 40 else None
                good = (
                    head is not None
                    and data is not None
                    and head.key == self.key
                    and head.n_tokens == len(tokens)
                    and head.output_n <= head.n_tokens
                    and f.read(len(raw_tokens)) == raw_tokens
                )
                output = f.read(head.output_size) if good and head is not None else b""
                if good and data is not None and head is not None and len(output) == head.output_size:
                    if f.readinto(data) == len(data) and not f.read(1):
                        digest = hashlib.sha256(raw_tokens)
                        digest.update(output)
                        digest.update(data)
                        if digest.digest() == head.checksum:
                            return ReadState(data, head.output_n if output else 0, output)
            except (OSError, MemoryError):
                pass
        log.warning("prompt cache: %s is corrupt or truncated; deleted, not loaded", path)
        _unlink(path)
        return None

    def write(
        self, tokens: array[int], data: bytearray, output: tuple[int, bytes] | None = None
    ) -> tuple[str, int] | None:
        """Queue the writing of a state, with the output kept after its first `output[0]` tokens (the logits'
        bytes); its file's name and size, or None when too many writes are queued already (the state stays in
        RAM only)."""
        with self._lock:
            if self._pending >= PROMPT_CACHE_WRITES:
                return None
            self._pending += 1
        raw_tokens = _token_bytes(tokens)
        name = hashlib.sha256(raw_tokens).hexdigest()[:40] + SUFFIX
        output_n, logits = output if output is not None and 0 < output[0] <= len(tokens) else (0, b"")
        self._queue(lambda: self._write(name, raw_tokens, output_n, logits, data))
        return name, _HEAD_SIZE + len(raw_tokens) + len(logits) + len(data)

    def _write(self, name: str, raw_tokens: bytes, output_n: int, output: bytes, data: bytearray) -> None:
        try:
            digest = hashlib.sha256(raw_tokens)
            digest.update(output)
            digest.update(data)
            head = _Head(self.key, digest.digest(), len(raw_tokens) // 4, len(data), output_n, len(output))
            path = self.dir / name
            tmp = self.dir / f"{name}{_TMP}{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(head.to_bytes())
                    f.write(raw_tokens)
                    f.write(output)
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                _unlink(tmp)
                raise
        except OSError as exc:
            log.warning("prompt cache: could not write %s: %s", name, exc)
        finally:
            with self._lock:
                self._pending -= 1

    def delete(self, name: str) -> None:
        with self._lock:
            self._ready.pop(name, None)
        self._queue(lambda: _unlink(self.dir / name))

    def touch(self, name: str) -> None:
        """Mark the file used now (its mtime orders eviction, across restarts too)."""

        def utime() -> None:
            with contextlib.suppress(OSError):
                os.utime(self.dir / name)

        self._queue(utime)

    # -- the writer thread ---------------------------------------------------------------------------

    def _queue(self, op: Callable[[], None]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kvfiles", daemon=True)
            self._thread.start()
        self._ops.put(op)

    def _run(self) -> None:
        while True:
            op = self._ops.get()
            if op is None:
                return
            try:
                op()
            except Exception:  # one failed file operation must not end the others
                log.exception("prompt cache: a file operation failed")

    def close(self) -> None:
        if self._thread is not None:
            self._ops.put(None)
            self._thread.join()
            self._thread = None


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
