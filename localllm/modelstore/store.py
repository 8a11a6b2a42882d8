"""The model store: manifests naming content-addressed blobs. Only this module knows paths.

    $LOCALLLM_MODELS/
      manifests/<host>/<namespace>/<model>/<tag>   JSON manifest (layers by digest)
      blobs/sha256-<64 hex>                        content-addressed files, verified on entry
      blobs/sha256-<64 hex>.partial                a blob being downloaded (never read as a blob)
      blobs/sha256-<64 hex>.lock                   flock: held by the one process downloading that blob
      blobs/sha256-<64 hex>.damaged                a blob `verify` found not to hash to its name, moved aside
      runtime/<manifest digest>/                   links that give split GGUFs the names llama.cpp expects
      .lock                                        flock: shared while blobs are added, exclusive to prune
      .daemons.lock                                flock: shared by every daemon serving the store

A blob enters the store by being written to `<blob>.partial` (or a temporary file of its own), hashed,
compared with the expected digest and renamed into place, by the process that wrote it. One process at a
time downloads a blob: it holds `<blob>.lock` (`BlobLock`) from before the first byte until the blob is in
place, so replicas pulling the same model into one store never write the same `.partial`; the others wait,
then find the blob there. The lock dies with its process, and the next puller resumes the `.partial`.

A manifest is written to a temporary file and renamed, and only once every blob it
names is present, so a listed model is always complete.

Several processes may share a store (replicas, or a second daemon started by mistake). Adding blobs and
writing the manifest that names them happens under a shared lock on `.lock`, and pruning takes it
exclusively, so a blob renamed into place but not yet in a manifest is never pruned. A daemon holds
`.daemons.lock` shared for its life and prunes at start only when it could first take it exclusively, that
is when no other daemon is serving the store.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..domain.errors import InvalidRequest, ModelNotFound, StoreUnwritable
from ..domain.names import ModelName, close_match, display

MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_LICENSE = "application/vnd.ollama.image.license"
MEDIA_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_ADAPTER = "application/vnd.ollama.image.adapter"
MEDIA_PROJECTOR = "application/vnd.ollama.image.projector"  # a multimodal projector GGUF (mmproj), as Ollama's
MANIFEST_MEDIA = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA = "application/vnd.docker.container.image.v1+json"

_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
_CHUNK = 1 << 20
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def check_digest(digest: object, *, field: str = "digest") -> str:
    """Return the canonical `sha256:<hex>` form, or raise `InvalidRequest`: digests never reach a path raw."""
    if not isinstance(digest, str) or not (m := _DIGEST.match(digest)):
        raise InvalidRequest(f"{field} must look like 'sha256:<64 hex digits>'", field=field)
    return f"sha256:{m.group(1)}"


Reporter = Callable[[int], None]  # told the bytes done so far (hashing a large file takes a while)


def sha256_file(path: Path, progress: Reporter | None = None) -> str:
    h = hashlib.sha256()
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done)
    return f"sha256:{h.hexdigest()}"


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str
    size: int
    filename: str | None = None  # the file's name on the Hub, kept for split GGUFs and for `show`

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.filename:
            out["filename"] = self.filename
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Layer:
        return cls(raw["mediaType"], check_digest(raw["digest"]), int(raw["size"]), raw.get("filename"))


@dataclass(frozen=True)
class Manifest:
    layers: tuple[Layer, ...]
    config: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        doc = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA,
            "config": {"mediaType": CONFIG_MEDIA, **self.config},
            "layers": [layer.as_dict() for layer in self.layers],
        }
        return json.dumps(doc, indent=2).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        doc = json.loads(data)
        config = {k: v for k, v in doc.get("config", {}).items() if k != "mediaType"}
        return cls(tuple(Layer.from_dict(x) for x in doc["layers"]), config)

    @property
    def digest(self) -> str:
        return f"sha256:{hashlib.sha256(self.to_bytes()).hexdigest()}"

    @property
    def model_layers(self) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if layer.media_type == MEDIA_MODEL)

    @property
    def projector(self) -> Layer | None:
        """The multimodal projector (mmproj) GGUF loaded beside the model, if the model has one."""
        return self.layer(MEDIA_PROJECTOR)

    def layer(self, media_type: str) -> Layer | None:
        return next((layer for layer in self.layers if layer.media_type == media_type), None)

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)


@dataclass(frozen=True)
class StoredModel:
    name: ModelName
    manifest: Manifest
    modified_at: float


class Store:
    """Manifests and blobs under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs"
        self.manifests_dir = root / "manifests"
        self.runtime_dir = root / "runtime"
        self._lock_path = root / ".lock"
        self._daemon_lock: int | None = None  # the fd holding `.daemons.lock` while this process serves

    def ensure(self) -> None:
        with self.writing():
            for d in (self.blobs_dir, self.manifests_dir):
                d.mkdir(parents=True, exist_ok=True)

    def write_error(self, exc: OSError) -> StoreUnwritable | None:
        """The error naming the store for a write its disk refused (full, read-only); None for other errors."""
        if exc.errno in _NO_SPACE:
            return StoreUnwritable(f"no space left on device: the model store {self.root} is full ({exc.strerror})")
        if exc.errno in _NOT_WRITABLE:
            return StoreUnwritable(f"cannot write to the model store {self.root}: {exc.strerror}")
        return None

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Turn a write the disk refuses (full, read-only) into `StoreUnwritable`, the one error every path that
        writes to the store (pull, create, blob upload) answers with."""
        try:
            yield
        except OSError as exc:
            if (error := self.write_error(exc)) is None:
                raise
            raise error from exc

    # -- blobs ---------------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / check_digest(digest).replace(":", "-")

    def partial_path(self, digest: str) -> Path:
        return self.blob_path(digest).with_name(self.blob_path(digest).name + ".partial")

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def blob_lock(self, digest: str) -> BlobLock:
        """The lock that makes one process at a time the downloader of this blob (see `BlobLock`)."""
        blob = self.blob_path(digest)
        return BlobLock(blob.with_name(blob.name + ".lock"))

    def verify_blob(self, digest: str, *, progress: Reporter | None = None) -> str | None:
        """Hash a stored blob again: None when it still hashes to its name, else what is wrong. A blob that
        does not is moved aside to `<blob>.damaged` (never served again; a pull downloads it afresh)."""
        digest = check_digest(digest)
        blob = self.blob_path(digest)
        try:
            actual = sha256_file(blob, progress)
        except FileNotFoundError:
            return f"the blob {blob.name} is missing"
        if actual == digest:
            return None
        aside = blob.with_name(blob.name + ".damaged")
        with self.writing():
            os.replace(blob, aside)
        return f"the blob {blob.name} hashes to {actual}; it was moved aside to {aside.name}"

    def add_blob_file(self, src: Path, digest: str | None = None, *, progress: Reporter | None = None) -> Layer:
        """Bring a file into the store (hard link when possible, else copy), verifying its digest.

        When `digest` is given and the file does not hash to it, nothing is stored and `ValueError`
        is raised. Returns a layer with the model media type; callers replace it as needed.
        """
        self.ensure()
        src = src.resolve()  # a Hugging Face cache entry is a symlink: link the file, not the link
        actual = sha256_file(src, progress)
        if digest is not None and check_digest(digest) != actual:
            raise InvalidRequest(f"{src.name}: sha256 mismatch: expected {digest}, got {actual}", field="digest")
        size = src.stat().st_size
        target = self.blob_path(actual)
        if not target.exists():
            # a name of this call's own, never `<blob>.partial`: another process may be downloading into that
            tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.unlink(missing_ok=True)
            with self.writing():
                try:
                    os.link(src, tmp)
                except OSError:
                    shutil.copyfile(src, tmp)
                os.replace(tmp, target)
        return Layer(MEDIA_MODEL, actual, size)

    def adopt_partial(self, digest: str, *, progress: Reporter | None = None) -> Layer:
        """Move a finished download from `partial_path(digest)` into place, verifying it first; a mismatch
        removes the partial file (a resumed download that went wrong starts over) and raises `InvalidRequest`."""
        digest = check_digest(digest)
        partial = self.partial_path(digest)
        actual = sha256_file(partial, progress)
        if actual != digest:
            partial.unlink(missing_ok=True)
            raise InvalidRequest(f"sha256 mismatch: expected {digest}, got {actual}", field="digest")
        size = partial.stat().st_size
        with self.writing():
            os.replace(partial, self.blob_path(digest))
        return Layer(MEDIA_MODEL, digest, size)

    def upload(self, digest: str) -> BlobUpload:
        """Receive a blob in pieces (`POST /api/blobs/<digest>`): hashed as it is written, kept only when it
        matches `digest`."""
        self.ensure()
        with self.writing():
            return BlobUpload(self, check_digest(digest))

    def add_blob_bytes(self, data: bytes, media_type: str) -> Layer:
        self.ensure()
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        target = self.blob_path(digest)
        if not target.exists():
            with self.writing():
                _atomic_write(target, data)
        return Layer(media_type, digest, len(data))

    def read_blob_text(self, layer: Layer | None) -> str | None:
        return None if layer is None else self.blob_path(layer.digest).read_text(encoding="utf-8")

    # -- manifests -----------------------------------------------------------------------------------

    def _manifest_path(self, name: ModelName) -> Path:
        return self.manifests_dir.joinpath(*name.parts())

    def stamp(self, name: ModelName) -> tuple[str, bytes] | None:
        """The path and bytes of the manifest stored under exactly that name, or None when there is none under
        exactly that name: what the service's cache of read models is keyed by. The bytes, not the file's
        inode and time: a manifest rewritten within one clock tick at the same size would look unchanged.
        Equal bytes are the same model, as every layer they name is named by its digest."""
        path = self._manifest_path(name)
        try:
            return str(path), path.read_bytes()
        except OSError:
            return None

    def write_manifest(self, name: ModelName, manifest: Manifest) -> None:
        missing = [layer.digest for layer in manifest.layers if not self.has_blob(layer.digest)]
        if missing:
            raise RuntimeError(f"manifest names blobs that are not in the store: {missing}")
        existing = self.find(name)
        path = self._manifest_path(existing.name if existing else name)
        with self.writing():
            _atomic_write(path, manifest.to_bytes())

    def find(self, name: ModelName) -> StoredModel | None:
        """The stored model of that name, compared case-insensitively, or None."""
        path: Path | None = self._manifest_path(name)
        if path is None or not path.is_file():
            path = self._find_casefold(name)
            if path is None:
                return None
        rel = path.relative_to(self.manifests_dir).parts
        stored_name = ModelName(*rel)
        return StoredModel(stored_name, Manifest.from_bytes(path.read_bytes()), path.stat().st_mtime)

    def get(self, name: ModelName) -> StoredModel:
        found = self.find(name)
        if found is None:
            match = close_match(name, (m.name for m in self.models()))
            if match is not None:
                raise ModelNotFound(f"model '{display(name)}' not found; did you mean '{display(match)}'?")
            raise ModelNotFound(
                f"model '{display(name)}' not found: pull it first with 'localllm pull {display(name)}'"
            )
        return found

    def _find_casefold(self, name: ModelName) -> Path | None:
        key = name.key()
        for stored in self._manifest_paths():
            if tuple(p.lower() for p in stored.relative_to(self.manifests_dir).parts) == key:
                return stored
        return None

    def _manifest_paths(self) -> Iterator[Path]:
        if not self.manifests_dir.is_dir():
            return
        for path in sorted(self.manifests_dir.glob("*/*/*/*")):
            if path.is_file() and not path.name.startswith("."):
                yield path

    def models(self) -> list[StoredModel]:
        out = []
        for path in self._manifest_paths():
            try:
                manifest = Manifest.from_bytes(path.read_bytes())
            except (ValueError, KeyError):
                continue
            out.append(
                StoredModel(ModelName(*path.relative_to(self.manifests_dir).parts), manifest, path.stat().st_mtime)
            )
        out.sort(key=lambda m: m.modified_at, reverse=True)
        return out

    def copy(self, src: ModelName, dst: ModelName) -> None:
        model = self.get(src)
        self.write_manifest(dst, model.manifest)

    def delete(self, name: ModelName) -> None:
        model = self.get(name)
        self._manifest_path(model.name).unlink()
        for parent in self._manifest_path(model.name).parents:
            if parent == self.manifests_dir:
                break
            with contextlib.suppress(OSError):
                parent.rmdir()
        self.prune()

    # -- sharing the store between processes ----------------------------------------------------------

    @contextlib.contextmanager
    def adding(self) -> Iterator[None]:
        """Hold the store's lock shared while blobs are added and the manifest naming them is written."""
        with contextlib.suppress(OSError):
            self.root.mkdir(parents=True, exist_ok=True)
        fd = _open_lock(self._lock_path)
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            if fd is not None:
                os.close(fd)  # closing releases the lock

    def attach(self) -> list[str] | None:
        """Hold the store for this daemon's life; prune it when no other daemon holds it.

        Returns the pruned blobs, or None when another daemon serves the store (nothing is pruned then).
        """
        if self._daemon_lock is not None:
            return []
        fd = _open_lock(self.root / ".daemons.lock")
        if fd is None:  # a read-only store: nothing can be pruned anyway
            return []
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(fd, fcntl.LOCK_SH)
            self._daemon_lock = fd
            return None
        try:
            removed = self.prune()
        finally:
            fcntl.flock(fd, fcntl.LOCK_SH)
            self._daemon_lock = fd
        return removed

    def detach(self) -> None:
        """Let go of the store (the daemon stops)."""
        if self._daemon_lock is not None:
            os.close(self._daemon_lock)
            self._daemon_lock = None

    def prune(self) -> list[str]:
        """Remove blobs that no manifest references, and leftover partial files; return their names.

        Nothing is removed while any process is adding blobs (`adding`): they are not in a manifest yet.
        """
        if not self.blobs_dir.is_dir():
            return []
        fd = _open_lock(self._lock_path)
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return []  # a pull is adding blobs: what is unused now is pruned another time
            return self._prune()
        finally:
            if fd is not None:
                os.close(fd)

    def _prune(self) -> list[str]:
        used = {layer.digest.replace(":", "-") for m in self.models() for layer in m.manifest.layers}
        removed = []
        for blob in self.blobs_dir.iterdir():
            unfinished = blob.name.endswith((".partial", ".upload"))
            if unfinished or blob.name not in used:
                if unfinished and time.time() - blob.stat().st_mtime < 3600:
                    continue  # maybe a pull or an upload in progress
                blob.unlink(missing_ok=True)
                removed.append(blob.name)
        return removed

    # -- loading -------------------------------------------------------------------------------------

    def model_path(self, manifest: Manifest) -> Path:
        """The path llama.cpp should open: the blob itself, or for split GGUFs the first of a set of links."""
        layers = manifest.model_layers
        if not layers:
            raise ModelNotFound("the model has no GGUF layer")
        if len(layers) == 1:
            return self.blob_path(layers[0].digest)
        folder = self.runtime_dir / manifest.digest.replace(":", "-")
        folder.mkdir(parents=True, exist_ok=True)
        count = len(layers)
        first = folder / f"model-00001-of-{count:05d}.gguf"
        for i, layer in enumerate(layers, start=1):
            link = folder / f"model-{i:05d}-of-{count:05d}.gguf"
            if not link.exists():
                tmp = link.with_suffix(".tmp")
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(self.blob_path(layer.digest))
                os.replace(tmp, link)
        return first

    def projector_path(self, manifest: Manifest) -> Path | None:
        """The projector GGUF llama.cpp's mtmd should open beside the model (its blob), or None."""
        layer = manifest.projector
        return None if layer is None else self.blob_path(layer.digest)


class BlobUpload:
    """A blob being received: `write()` its pieces, then `commit()` (verify and rename into place) or
    `abort()`. A mismatching digest stores nothing and raises `InvalidRequest`."""

    def __init__(self, store: Store, digest: str) -> None:
        self.digest = digest
        self.size = 0
        self._store = store
        self._target = store.blob_path(digest)
        fd, tmp = tempfile.mkstemp(dir=store.blobs_dir, prefix=f".{self._target.name}.", suffix=".upload")
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        """Write a piece; a disk that refuses it (full) removes what was written and raises `StoreUnwritable`."""
        try:
            with self._store.writing():
                self._file.write(data)
        except StoreUnwritable:
            self.abort()
            raise
        self._hash.update(data)
        self.size += len(data)

    def commit(self) -> Layer:
        try:
            with self._store.writing():
                self._file.close()  # flushes the last piece: the disk may refuse it now
        except StoreUnwritable:
            self.abort()
            raise
        actual = f"sha256:{self._hash.hexdigest()}"
        if actual != self.digest:
            self.abort()
            raise InvalidRequest(f"digest mismatch: the body hashes to {actual}, not {self.digest}", field="digest")
        with self._store.writing():
            os.replace(self._tmp, self._target)
        return Layer(MEDIA_MODEL, self.digest, self.size)

    def abort(self) -> None:
        with contextlib.suppress(OSError):  # closing flushes, and a full disk refuses that too
            self._file.close()
        self._tmp.unlink(missing_ok=True)


class BlobLock:
    """Who downloads a blob: an exclusive flock on `blobs/<blob>.lock`, which one holder has at a time, across
    processes and across threads (each `acquire` opens the file anew, and flock locks belong to open files).
    The lock dies with its process. Its holder removes the file as it lets go; a waiter that had opened the
    removed file finds, once it gets the lock, that the path names another file (or none), and tries again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock if no one holds it; False, at once, when someone does."""
        if self._fd is not None:
            return True
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                here = os.stat(self.path)
            except FileNotFoundError:
                here = None
            mine = os.fstat(fd)
            if here is not None and (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino):
                self._fd = fd
                return True
            os.close(fd)  # the file was removed by the holder before us: lock the one there now

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still held, so that no one takes a lock on a file about to go
        os.close(self._fd)
        self._fd = None


def _open_lock(path: Path) -> int | None:
    """A descriptor to flock `path` with (created if need be); None where the store cannot hold one."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # a read-only store that has the file
        except OSError:
            return None


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
