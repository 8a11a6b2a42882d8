"""Pull GGUF models from the Hugging Face Hub into the store, with Ollama's progress steps.

    pull(store, hf.co/<user>/<repo>:<tag>)
      pulling manifest          HfApi.model_info(files_metadata=True): the commit and every file's sha256
      waiting for another ...   another process (a replica on the same store) downloads that blob: wait for it
      pulling <digest[:12]>     hf_hub_download into the Hugging Face cache, one chosen file after another
                                (resume, retries; a file already cached, or a blob already stored, is reused)
      verifying sha256 digest   Store.add_blob_file: hash, compare with the Hub's sha256, link into blobs/
      writing manifest          only once every blob is present, so a listed model is always complete
      success

huggingface_hub reads HF_ENDPOINT and HF_HOME once, at import. This module reads them (and HF_HUB_CACHE) on
every pull and passes them explicitly, so the daemon's environment at start-up, or a test's monkeypatch, is
what counts. HF_TOKEN is read by huggingface_hub itself on every request.

The tag picks the file, and a repository with multimodal projectors gets one pulled beside the model, as a
layer of its own (`MEDIA_PROJECTOR`): `hubfiles` says which.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from huggingface_hub import HfApi, constants, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get
from huggingface_hub.hf_api import ModelInfo
from huggingface_hub.utils._headers import build_hf_headers

try:  # huggingface_hub 2.x speaks HTTP through httpx2; 1.x through httpx
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    import httpx as _http  # type: ignore[no-redef]

from ..domain.errors import DownloadError, InvalidRequest, LocalLLMError, ModelNotFound, StoreUnwritable
from ..domain.events import Progress
from ..domain.names import ModelName
from .gguf import read_info
from .hubfiles import choose_files, choose_projector, is_projector_file
from .store import MEDIA_MODEL, MEDIA_PROJECTOR, BlobLock, Layer, Manifest, Store, check_digest

__all__ = ["choose_files", "choose_projector", "hub_endpoint", "pull"]

logger = logging.getLogger(__name__)

_PROGRESS_INTERVAL = 0.2  # seconds between two progress events of one file
_API_TIMEOUT = 30.0  # seconds; huggingface_hub's own client waits forever


def hub_endpoint() -> str:
    """The Hub to pull from: `HF_ENDPOINT` as the environment says now, else huggingface_hub's default."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _cache_dir() -> Path:
    """The Hugging Face cache (`HF_HUB_CACHE`, else `HF_HOME/hub`), read now rather than at import."""
    if cache := os.environ.get("HF_HUB_CACHE"):
        return Path(cache).expanduser()
    if home := os.environ.get("HF_HOME"):
        return Path(home).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


# -- pulling -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RemoteFile:
    filename: str
    digest: str | None  # sha256 from the Hub's LFS metadata; None for a file kept in git itself
    size: int | None
    media_type: str = MEDIA_MODEL  # the layer it becomes: the model (a shard of it), or its projector

    @property
    def status(self) -> str:
        return f"pulling {self.digest.removeprefix('sha256:')[:12]}" if self.digest else f"pulling {self.filename}"


class _Cancelled(Exception):
    """Raised inside huggingface_hub's download loop to stop it between two chunks."""


def pull(store: Store, name: ModelName, *, cancel: threading.Event | None = None) -> Iterator[Progress]:
    """Pull `hf.co/<user>/<repo>:<tag>` into the store, yielding Ollama's progress events.

    A sync generator: the daemon runs it in a thread. Closing it, or setting `cancel`, stops the download
    between two chunks; `cancel` then raises `DownloadError("pull cancelled")`. The store's lock is held
    shared throughout, so no process prunes a blob before its manifest is written.
    """
    with store.adding():
        yield from _pull(store, name, cancel)


def _pull(store: Store, name: ModelName, cancel: threading.Event | None) -> Iterator[Progress]:
    if not name.is_hf:
        raise ModelNotFound(
            f"model '{name}' not found: only hf.co/<user>/<repo>[:<quant>] names can be pulled from the Hub"
        )
    endpoint = hub_endpoint()
    _check_cancel(cancel)
    yield Progress("pulling manifest")
    info = _model_info(name.repo_id, endpoint)
    siblings = {s.rfilename: s for s in info.siblings or []}
    try:
        chosen = choose_files(list(siblings), name.tag)
    except InvalidRequest as exc:
        if not any(f.lower().endswith(".gguf") for f in siblings):
            raise ModelNotFound(f"hf.co/{name.repo_id} has no GGUF files: only GGUF models can be pulled") from exc
        raise InvalidRequest(f"hf.co/{name.repo_id}: {exc}", field="model") from exc
    # the projector llama-server's -hf would take beside the model; none when the file asked for is one itself
    projector = None if is_projector_file(chosen[0]) else choose_projector(list(siblings), chosen[0])
    remote = []
    for filename, media_type in [(f, MEDIA_MODEL) for f in chosen] + (
        [(projector, MEDIA_PROJECTOR)] if projector else []
    ):
        sibling = siblings[filename]
        digest = check_digest(f"sha256:{sibling.lfs.sha256}") if sibling.lfs is not None else None
        size = sibling.lfs.size if sibling.lfs is not None else sibling.size
        remote.append(_RemoteFile(filename, digest, size, media_type))
    revision = info.sha or constants.DEFAULT_REVISION

    # Own every blob still to download, from before its first byte until it is in place: a replica pulling
    # the same model into the same store waits here instead of writing the same `.partial`. In digest order,
    # so two pulls that share blobs never wait for each other in a circle.
    with contextlib.ExitStack() as owned:
        for digest in sorted({f.digest for f in remote if f.digest is not None and not store.has_blob(f.digest)}):
            file = next(f for f in remote if f.digest == digest)
            owned.callback((yield from _own(store, file, cancel)).release)
        layers = yield from _fetch(store, name, revision, remote, endpoint, cancel)

    _check_cancel(cancel)
    yield Progress("writing manifest")
    config: dict[str, Any] = {
        "model_format": "gguf",
        "source": f"hf.co/{name.repo_id}",
        "revision": info.sha,
        "files": chosen,
    }
    if projector:
        config["projector"] = projector
    store.write_manifest(name, Manifest(tuple(layers), config))
    logger.info("pulled %s from %s (%s)", name, endpoint, ", ".join(file.filename for file in remote))
    yield Progress("success")


def _fetch(
    store: Store,
    name: ModelName,
    revision: str,
    remote: list[_RemoteFile],
    endpoint: str,
    cancel: threading.Event | None,
) -> Generator[Progress, None, list[Layer]]:
    """Download what the store lacks, then verify it into the store: the layers of the manifest, in order."""
    stored: dict[str, Layer] = {}  # files whose blob the store already holds: nothing to download
    downloaded: dict[str, Path] = {}
    for file in remote:
        _check_cancel(cancel)
        if file.digest is not None and store.has_blob(file.digest):
            size = store.blob_path(file.digest).stat().st_size
            stored[file.filename] = Layer(MEDIA_MODEL, file.digest, size)
            yield Progress(file.status, file.digest, size, size)
        else:
            downloaded[file.filename] = yield from _download(store, name.repo_id, revision, file, endpoint, cancel)

    _check_cancel(cancel)
    yield Progress("verifying sha256 digest")
    layers = []
    for file in remote:
        layer = stored.get(file.filename) or (yield from _verify(store, file, downloaded[file.filename], cancel))
        _check_gguf(store, name, file, layer)
        layers.append(Layer(file.media_type, layer.digest, layer.size, filename=file.filename))
    return layers


def _own(store: Store, file: _RemoteFile, cancel: threading.Event | None) -> Generator[Progress, None, BlobLock]:
    """Become the one process downloading `file`'s blob; while another process is, say so and report the bytes
    it has so far, until it is done (the blob is then in the store) or gone (its `.partial` is resumed)."""
    assert file.digest is not None
    store.ensure()
    lock = store.blob_lock(file.digest)
    with store.writing():
        if lock.acquire():
            return lock
    status = f"waiting for another process downloading {file.digest.replace(':', '-')[:19]}"
    logger.info("%s (%s)", status, file.filename)
    partial = store.partial_path(file.digest)
    last = -1
    while True:
        with store.writing():
            if lock.acquire():
                return lock
        _check_cancel(cancel)
        size = partial.stat().st_size if partial.is_file() else 0
        if size != last:
            last = size
            yield Progress(status, file.digest, file.size, size)
        time.sleep(_PROGRESS_INTERVAL)


def _check_gguf(store: Store, name: ModelName, file: _RemoteFile, layer: Layer) -> None:
    """Refuse a file that is not a readable GGUF (truncated or corrupt at its source), or a projector whose
    metadata says it is none (llama.cpp would refuse to load it), before it is listed."""
    try:
        info = read_info(store.blob_path(layer.digest))
    except Exception as exc:  # the gguf reader raises ValueError, KeyError, IndexError ... on a bad file
        raise DownloadError(
            f"hf.co/{name.repo_id}: {file.filename} is not a valid GGUF file (truncated or corrupt): {exc}"
        ) from None
    if file.media_type == MEDIA_PROJECTOR and not info.is_projector:
        kind = info.metadata.get("general.type")
        raise DownloadError(
            f"hf.co/{name.repo_id}: {file.filename} is named as a multimodal projector (mmproj) but is not one"
            f" (general.type {kind!r}, architecture {info.architecture!r})"
        )


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise DownloadError("pull cancelled")


def _model_info(repo_id: str, endpoint: str) -> ModelInfo:
    try:
        return HfApi(endpoint=endpoint).model_info(repo_id, files_metadata=True, timeout=_API_TIMEOUT)
    except (OSError, _http.HTTPError) as exc:  # HfHubHTTPError and OfflineModeIsEnabled are OSErrors
        raise _translate(exc, repo_id, endpoint, "listing the files") from exc


def _download(
    store: Store, repo_id: str, revision: str, file: _RemoteFile, endpoint: str, cancel: threading.Event | None
) -> Generator[Progress, None, Path]:
    """Download one file in a thread and report its byte count; return where it landed.

    A file the Hub stores in LFS (its sha256 known) goes straight to the store's `<blob>.partial`, resumed
    with a Range request from where an earlier attempt stopped (even one whose daemon was killed), unless
    the Hugging Face cache has it already. Other files go through hf_hub_download into the cache.
    """
    counter = _Counter(cancel)
    result: list[Path] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            if file.digest is not None:
                result.append(_resumable(store, repo_id, revision, file, endpoint, counter))
                return
            path = hf_hub_download(
                repo_id,
                file.filename,
                revision=revision,
                cache_dir=_cache_dir(),
                endpoint=endpoint,
                tqdm_class=cast(Any, counter.bar_class()),
            )
            result.append(Path(path))
        except BaseException as exc:  # handed to the generator's thread, which raises it
            failure.append(exc)

    worker = threading.Thread(target=work, name=f"hf-pull {repo_id}/{file.filename}", daemon=True)
    yield Progress(file.status, file.digest, file.size, 0)
    worker.start()
    last = 0
    try:
        while worker.is_alive():
            worker.join(_PROGRESS_INTERVAL)
            _check_cancel(cancel)  # the worker stops at its next chunk; no need to wait for it
            if worker.is_alive() and counter.completed != last:
                last = counter.completed
                yield Progress(file.status, file.digest, file.size, last)
    finally:
        counter.stop.set()  # the generator was closed or cancelled: end the download at the next chunk
    if failure:
        error = failure[0]
        if isinstance(error, _Cancelled):
            raise DownloadError("pull cancelled")
        if isinstance(error, (OSError, _http.HTTPError)):
            raise _translate(error, repo_id, endpoint, f"downloading {file.filename}") from error
        raise error
    size = result[0].stat().st_size
    yield Progress(file.status, file.digest, file.size or size, size)
    return result[0]


def _resumable(store: Store, repo_id: str, revision: str, file: _RemoteFile, endpoint: str, counter: _Counter) -> Path:
    assert file.digest is not None
    cached = try_to_load_from_cache(repo_id, file.filename, cache_dir=_cache_dir(), revision=revision)
    if isinstance(cached, str):
        return Path(cached)
    store.ensure()
    partial = store.partial_path(file.digest)
    url = hf_hub_url(repo_id, file.filename, revision=revision, endpoint=endpoint)
    done = partial.stat().st_size if partial.is_file() else 0
    free = shutil.disk_usage(store.blobs_dir).free
    if file.size is not None and file.size - done > free:  # fail now, not once the disk is full
        raise StoreUnwritable(
            f"no space left on device for {file.filename}: it needs {file.size - done} more bytes and the model"
            f" store {store.root} has {free} bytes free"
        )
    try:
        with partial.open("ab") as out:
            if done:
                logger.info("resuming %s/%s from byte %d", repo_id, file.filename, done)
            http_get(
                url,
                out,
                resume_size=done,
                headers=build_hf_headers(),
                expected_size=file.size,
                displayed_filename=file.filename,
                tqdm_class=cast(Any, counter.bar_class()),
            )
    except OSError as exc:
        error = store.write_error(exc)
        if error is None:
            raise
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # nothing to resume into: give the space back
            partial.unlink(missing_ok=True)
        raise error from exc
    return partial


def _verify(
    store: Store, file: _RemoteFile, path: Path, cancel: threading.Event | None
) -> Generator[Progress, None, Layer]:
    """Hash a downloaded file into the store in a thread, reporting the bytes hashed as it goes: a file of
    several gigabytes takes a while, and the user sees that something happens."""
    counter = _Counter(cancel)
    size = path.stat().st_size
    status = "verifying sha256 digest"
    key = f"verify-{file.digest or file.filename}"  # its own bar, not the download's (same digest)
    result: list[Layer] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.append(_add_blob(store, file, path, counter.set))
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=work, name=f"verify {file.filename}", daemon=True)
    yield Progress(status, key, size, 0)
    worker.start()
    last = 0
    try:
        while worker.is_alive():
            worker.join(_PROGRESS_INTERVAL)
            _check_cancel(cancel)
            if worker.is_alive() and counter.completed != last:
                last = counter.completed
                yield Progress(status, key, size, last)
    finally:
        counter.stop.set()
    if failure:
        if isinstance(failure[0], _Cancelled):
            raise DownloadError("pull cancelled")
        raise failure[0]
    yield Progress(status, key, size, size)
    return result[0]


def _add_blob(store: Store, file: _RemoteFile, path: Path, progress: Callable[[int], None] | None = None) -> Layer:
    """Bring a downloaded file into the store; a checksum mismatch discards the download too."""
    if file.digest is not None and path == store.partial_path(file.digest):
        try:
            return store.adopt_partial(file.digest, progress=progress)
        except InvalidRequest as exc:
            raise DownloadError(
                f"{file.filename}: the download does not match the Hub's checksum ({exc}); it was discarded, pull again"
            ) from exc
    try:
        # the HF cache file is a symlink to its blob; os.link on Linux would link the symlink itself
        return store.add_blob_file(path.resolve(), file.digest, progress=progress)
    except InvalidRequest as exc:
        _discard_cached(path)
        raise DownloadError(
            f"{file.filename}: the download does not match the Hub's checksum ({exc}); it was discarded, pull again"
        ) from exc


def _discard_cached(path: Path) -> None:
    """Remove a file from the HF cache (its snapshot link and its blob) so the next pull downloads it again."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


class _Counter:
    """The byte count of one download, fed by huggingface_hub through its `tqdm_class` hook."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self.completed = 0
        self.cancel = cancel
        self.stop = threading.Event()

    def set(self, n: int) -> None:
        if self.stop.is_set() or (self.cancel is not None and self.cancel.is_set()):
            raise _Cancelled
        self.completed = n

    def bar_class(self) -> type[_ProgressBar]:
        counter = self

        class Bar(_ProgressBar):
            def _report(self, n: int) -> None:
                counter.set(n)

        return Bar


class _ProgressBar:
    """What huggingface_hub needs of a tqdm class (plain HTTP and Xet downloads); it counts and draws nothing.

    `update_transfer` exists so that a Xet download reports through this one bar: its network bytes are
    ignored and the bytes written to disk (`update`) are the progress.
    """

    def __init__(self, *args: object, total: float | None = None, initial: float = 0, **kwargs: object) -> None:
        self.total = total
        self.n = int(initial)
        self._report(self.n)

    def _report(self, n: int) -> None:
        raise NotImplementedError

    def update(self, n: float | None = 1) -> None:
        self.n += int(n or 0)
        self._report(self.n)

    def update_transfer(self, n: float | None = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def set_transfer_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _translate(exc: OSError | _http.HTTPError, repo_id: str, endpoint: str, doing: str) -> LocalLLMError:
    """Turn a huggingface_hub or network error into ours, saying what failed and where."""
    repo = f"hf.co/{repo_id}"
    if isinstance(exc, GatedRepoError):
        return ModelNotFound(
            f"{repo} is gated: accept its conditions on the Hub with your account, then set HF_TOKEN to a token"
            " of that account"
        )
    if isinstance(exc, RepositoryNotFoundError):
        hint = " (a private repository needs HF_TOKEN)" if _status(exc) == 401 else ""
        return ModelNotFound(f"{repo} not found on {endpoint}{hint}")
    if isinstance(exc, RevisionNotFoundError):
        return ModelNotFound(f"{repo}: the revision was not found on {endpoint} while {doing}")
    if isinstance(exc, OfflineModeIsEnabled):
        return DownloadError(f"cannot pull {repo}: HF_HUB_OFFLINE is set")
    if isinstance(exc, LocalEntryNotFoundError):  # huggingface_hub's word for "could not reach the Hub"
        return DownloadError(f"could not reach {endpoint} while {doing} of {repo}: {_cause(exc)}")
    if isinstance(exc, EntryNotFoundError):
        return ModelNotFound(f"{repo}: file not found on {endpoint} while {doing}")
    if isinstance(exc, HfHubHTTPError):
        status = _status(exc)
        if status in (401, 403):
            return ModelNotFound(f"{repo}: access denied by {endpoint} (HTTP {status}); check HF_TOKEN")
        return DownloadError(f"{endpoint} answered HTTP {status} while {doing} of {repo}")
    if isinstance(exc, _http.HTTPError):
        return DownloadError(f"could not reach {endpoint} while {doing} of {repo}: {exc or type(exc).__name__}")
    return DownloadError(f"{doing} of {repo} from {endpoint} failed: {exc}")


def _status(exc: HfHubHTTPError) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _cause(exc: BaseException) -> str:
    root: BaseException = exc
    while root.__cause__ is not None:
        root = root.__cause__
    return str(root) or type(root).__name__
