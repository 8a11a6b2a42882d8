"""A model store whose disk is full (issue 26, item 6): `POST /api/blobs` and `/api/create` answer what a pull
answers, 507 and "no space left on device" naming the store, in Ollama's error shape; nothing half-written
is left behind."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from starlette.testclient import TestClient

from ..fakes import FakeFactory
from .test_server import make_client


class _FullDisk:
    """A file on a full disk: every write is refused, as the kernel refuses it (ENOSPC)."""

    def __init__(self, real: IO[Any]) -> None:
        self._real = real

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._real.close()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from make_client(tmp_path, FakeFactory())


@pytest.fixture
def full(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on the store's files (uploads, new layers, manifests: all opened with os.fdopen) are refused."""
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FullDisk(real(fd, *a, **k)))


def _leftovers(tmp_path: Path) -> list[str]:
    """Temporary files a write left in the store (its lock files aside)."""
    return sorted(p.name for p in (tmp_path / "models").rglob("*") if p.name.endswith((".tmp", ".upload")))


def _assert_full(error: str, tmp_path: Path) -> None:
    assert error.startswith("no space left on device: the model store"), error
    assert str(tmp_path / "models") in error


def test_a_blob_upload_to_a_full_disk_is_507_naming_the_store(client: TestClient, tmp_path: Path, full: None) -> None:
    data = b"GGUF" + os.urandom(4096)
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    r = client.post(f"/api/blobs/{digest}", content=data)
    assert r.status_code == 507, r.text
    _assert_full(r.json()["error"], tmp_path)
    assert client.head(f"/api/blobs/{digest}").status_code == 404
    assert _leftovers(tmp_path) == []  # no upload left half-written


def test_a_create_on_a_full_disk_is_507_naming_the_store(client: TestClient, tmp_path: Path, full: None) -> None:
    body = {"model": "brief", "from": "tiny", "system": "Answer in one word.", "stream": False}
    r = client.post("/api/create", json=body)
    assert r.status_code == 507, r.text
    _assert_full(r.json()["error"], tmp_path)
    assert [m["name"] for m in client.get("/api/tags").json()["models"]] == ["tiny:latest"]
    assert _leftovers(tmp_path) == []


def test_a_streamed_create_on_a_full_disk_ends_with_the_same_error(
    client: TestClient, tmp_path: Path, full: None
) -> None:
    r = client.post("/api/create", json={"model": "brief", "from": "tiny", "system": "Answer in one word."})
    out = [json.loads(line) for line in r.text.splitlines() if line]
    assert out[0]["status"].startswith("using existing layer")  # the status was sent before the disk said no
    _assert_full(out[-1]["error"], tmp_path)
