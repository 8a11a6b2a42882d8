"""A Hugging Face Hub stand-in for tests: point HF_ENDPOINT at `HubStub(...).url`.

It serves what huggingface_hub's `HfApi.model_info` and `hf_hub_download` use, the way the real Hub answers:

    GET  /api/models/<user>/<repo>[/revision/<rev>][?blobs=true]   JSON: id, sha, siblings (size/blobId/lfs
                                                                   only with blobs=true, as on the Hub)
    HEAD /<user>/<repo>/resolve/<rev>/<path>                       X-Repo-Commit, ETag, X-Linked-Etag and
    GET  /<user>/<repo>/resolve/<rev>/<path>                       X-Linked-Size (sha256 / size of LFS files),
                                                                   Content-Length; GET honours Range
    errors: 404 + X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound;
            401 + X-Error-Code GatedRepo for a gated repository asked without the right token

Files are `.gguf` files stored in LFS (their ETag is the sha256); any other file is a plain git file (its
ETag is the git blob id). Files are served from their paths, never copied; each is hashed once. `rate`
slows every download to that many bytes a second (to make two pulls overlap).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?/?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_CHUNK = 64 * 1024


class HubStub:
    """A Hub on 127.0.0.1 serving `{"user/repo": {"file.gguf": Path}}`; use as a context manager."""

    def __init__(self, repos: dict[str, dict[str, Path]], *, gated: dict[str, str] | None = None) -> None:
        self.repos = repos
        self.gated = dict(gated or {})  # repo id -> the token that may read it
        self.request_log: list[tuple[str, str]] = []  # (method, path without query)
        self.range_log: list[str] = []  # every Range header received
        self.fail_after_bytes: int | None = None  # the next GET of a file drops the connection after N bytes
        self.stall_after_bytes: int | None = None  # the next GET of a file stops sending after N bytes ...
        self.stalled = threading.Event()  # ... sets this ...
        self.release = threading.Event()  # ... and drops the connection once this is set (or after 60 s)
        self.sha256_override: dict[tuple[str, str], str] = {}  # (repo, file) -> the sha256 the Hub claims
        self.rate: int | None = None  # bytes a second every GET of a file is sent at (None: as fast as it goes)
        self._hashes: dict[Path, tuple[str, str]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def commit(self, repo_id: str) -> str:
        """The repository's (fake, stable) commit sha."""
        listing = "\n".join(sorted(self.repos[repo_id]))
        return hashlib.sha1(f"{repo_id}\n{listing}".encode()).hexdigest()

    def sha256(self, repo_id: str, filename: str) -> str:
        """The sha256 the stub announces for a file (the real one unless overridden)."""
        override = self.sha256_override.get((repo_id, filename))
        return override if override is not None else self._hash(self.repos[repo_id][filename])[0]

    def git_oid(self, path: Path) -> str:
        return self._hash(path)[1]

    def _hash(self, path: Path) -> tuple[str, str]:
        with self._lock:
            if path not in self._hashes:
                data = path.read_bytes()
                git = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                self._hashes[path] = (hashlib.sha256(data).hexdigest(), git)
            return self._hashes[path]

    def start(self) -> HubStub:
        stub = self

        class Handler(_Handler):
            hub = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="hubstub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None

    def __enter__(self) -> HubStub:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def downloads(self, filename: str) -> int:
        """How many GETs of a file's content the stub served (or started to serve)."""
        return sum(1 for method, path in self.request_log if method == "GET" and path.endswith(f"/{filename}"))


class _Handler(BaseHTTPRequestHandler):
    hub: HubStub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)

    def _route(self, *, head: bool) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        self.hub.request_log.append((self.command, path))
        if m := _API.match(path):
            blobs = parse_qs(parts.query).get("blobs", ["false"])[0].lower() in ("1", "true")
            self._model_info(m.group("repo"), m.group("rev"), blobs=blobs, head=head)
        elif m := _RESOLVE.match(path):
            self._resolve(m.group("repo"), m.group("rev"), m.group("path"), head=head)
        else:
            self._error(404, "EntryNotFound", "not a route of the Hub stub", head=head)

    # -- answers -------------------------------------------------------------------------------------

    def _repo(self, repo_id: str, revision: str | None, *, head: bool) -> dict[str, Path] | None:
        files = self.hub.repos.get(repo_id)
        if files is None:
            self._error(404, "RepoNotFound", "Repository not found", head=head)
            return None
        if revision not in (None, "main", self.hub.commit(repo_id)):
            self._error(404, "RevisionNotFound", "Invalid rev id: " + str(revision), head=head)
            return None
        return files

    def _model_info(self, repo_id: str, revision: str | None, *, blobs: bool, head: bool) -> None:
        files = self._repo(repo_id, revision, head=head)
        if files is None:
            return
        siblings: list[dict[str, Any]] = []
        for name, file in sorted(files.items()):
            sibling: dict[str, Any] = {"rfilename": name}
            if blobs:
                size = file.stat().st_size
                sibling["blobId"] = self.hub.git_oid(file)
                sibling["size"] = size
                if _is_lfs(name):
                    sibling["lfs"] = {"sha256": self.hub.sha256(repo_id, name), "size": size, "pointerSize": 134}
            siblings.append(sibling)
        doc = {
            "_id": self.hub.commit(repo_id)[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": self.hub.commit(repo_id),
            "private": False,
            "gated": "auto" if repo_id in self.hub.gated else False,
            "disabled": False,
            "tags": ["gguf"],
            "library_name": "gguf",
            "siblings": siblings,
        }
        body = json.dumps(doc).encode()
        self._send(200, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body, head=head)

    def _resolve(self, repo_id: str, revision: str, filename: str, *, head: bool) -> None:
        files = self._repo(repo_id, revision, head=head)
        if files is None:
            return
        if repo_id in self.hub.gated and self.headers.get("Authorization") != f"Bearer {self.hub.gated[repo_id]}":
            self._error(401, "GatedRepo", "Access to model is restricted", head=head)
            return
        file = files.get(filename)
        if file is None:
            self._error(404, "EntryNotFound", "Entry not found", head=head, commit=self.hub.commit(repo_id))
            return
        size = file.stat().st_size
        headers = {
            "X-Repo-Commit": self.hub.commit(repo_id),
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if _is_lfs(filename):
            sha = self.hub.sha256(repo_id, filename)
            headers.update({"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(size)})
        else:
            headers["ETag"] = f'"{self.hub.git_oid(file)}"'
        start, end, status = 0, size - 1, 200
        if (raw := self.headers.get("Range")) is not None:
            self.hub.range_log.append(raw)
            m = _RANGE.match(raw.strip())
            if m is None or int(m.group(1)) >= size:
                self._error(
                    416,
                    "RangeNotSatisfiable",
                    f"bad range {raw}",
                    head=head,
                    extra={"Content-Range": f"bytes */{size}"},
                )
                return
            start, end, status = int(m.group(1)), int(m.group(2) or size - 1), 206
            end = min(end, size - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(end - start + 1)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if head:
            return
        limit = None
        if self.hub.fail_after_bytes is not None:
            limit, self.hub.fail_after_bytes = self.hub.fail_after_bytes, None
        stall = None
        if self.hub.stall_after_bytes is not None:
            stall, self.hub.stall_after_bytes = self.hub.stall_after_bytes, None
            limit = stall
        self._stream(file, start, end - start + 1, limit)
        if stall is not None:
            self.hub.stalled.set()
            self.hub.release.wait(60)

    def _stream(self, file: Path, start: int, length: int, limit: int | None) -> None:
        sent = 0
        began = time.monotonic()
        rate = self.hub.rate
        size = _CHUNK if rate is None else max(1024, min(_CHUNK, rate // 20))
        with file.open("rb") as f:
            f.seek(start)
            while sent < length:
                chunk = f.read(min(size, length - sent))
                if not chunk:
                    break
                if rate is not None and (early := (sent + len(chunk)) / rate - (time.monotonic() - began)) > 0:
                    time.sleep(early)  # each piece goes once the rate allows it
                if limit is not None and sent + len(chunk) > limit:
                    self.wfile.write(chunk[: limit - sent])
                    self.wfile.flush()
                    self.close_connection = True  # a dropped connection: the body ends short
                    return
                self.wfile.write(chunk)
                sent += len(chunk)

    def _error(
        self,
        status: int,
        code: str,
        message: str,
        *,
        head: bool,
        commit: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps({"error": message}).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), "X-Error-Code": code}
        headers["X-Error-Message"] = message
        if commit is not None:
            headers["X-Repo-Commit"] = commit
        headers.update(extra or {})
        self._send(status, headers, body, head=head)

    def _send(self, status: int, headers: dict[str, str], body: bytes, *, head: bool) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)


def _is_lfs(filename: str) -> bool:
    return filename.lower().endswith((".gguf", ".bin", ".safetensors"))
