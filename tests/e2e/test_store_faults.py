"""The store on a disk that refuses writes: full (a pull fails cleanly and leaves the store as it was) and
read-only (the daemon starts and serves what the store holds; a pull fails naming the store). Real daemons on a
tiny tmpfs; skipped where mounting is not allowed (not root, or a container without CAP_SYS_ADMIN)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from localllm.domain.errors import StoreUnwritable
from localllm.domain.names import parse_name
from localllm.modelstore import hub as hubmod
from localllm.modelstore.store import Store

from ..conftest import STORIES_REPO, TINY_REPO
from ..hubstub import HubStub
from .conftest import start_daemon, stop_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.model]


def _mount(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")


def _remount_ro(path: Path) -> None:
    done = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only here: {done.stderr.decode(errors='replace').strip()}")


@pytest.fixture
def models(tmp_path: Path) -> Iterator[Path]:
    """`tmp_path/models`, the directory start_daemon uses as the store; the test mounts it."""
    path = tmp_path / "models"
    yield path
    if os.path.ismount(path):
        subprocess.run(["umount", "-l", str(path)], check=False)


def _pull(url: str, repo: str) -> httpx.Response:
    return httpx.post(url + "/api/pull", json={"model": f"hf.co/{repo}", "stream": False}, timeout=120)


def _listed(url: str) -> list[str]:
    return [m["name"] for m in httpx.get(url + "/api/tags", timeout=10).json()["models"]]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_pull_into_a_full_store_fails_cleanly_and_leaves_it_as_it_was(
    hub: HubStub, tmp_path: Path, models: Path
) -> None:
    _mount(models, "600k")  # stories260K is 1.2 MB
    d = start_daemon(tmp_path, hub)
    try:
        before = _files(models)
        r = _pull(d.url, STORIES_REPO)
        assert r.status_code == 507, r.text
        assert "no space left on device" in r.json()["error"]
        assert str(models) in r.json()["error"]
        assert _listed(d.url) == []
        assert _files(models) == before  # no blob, no partial, no manifest
        assert httpx.get(d.url + "/api/version", timeout=10).status_code == 200  # still serving
    finally:
        stop_daemon(d)


def test_a_disk_that_fills_during_the_download_gives_the_space_back(
    hub: HubStub, tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The free-space check passed (another writer filled the disk after it): the write hits ENOSPC."""
    _mount(models, "600k")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1 << 40))
    store = Store(models)
    with pytest.raises(StoreUnwritable, match="no space left on device") as caught:
        for _ in hubmod.pull(store, parse_name(f"hf.co/{STORIES_REPO}")):
            pass
    assert str(models) in str(caught.value)
    assert [p for p in _files(models) if p.startswith("blobs/")] == []  # the .partial was removed too
    assert store.models() == []


def test_a_read_only_store_serves_what_it_holds_and_refuses_pulls_by_name(
    hub: HubStub, tmp_path: Path, models: Path
) -> None:
    _mount(models, "8m")
    d = start_daemon(tmp_path, hub)
    try:
        assert _pull(d.url, STORIES_REPO).status_code == 200
    finally:
        stop_daemon(d)
    _remount_ro(models)
    before = _files(models)
    d = start_daemon(tmp_path, hub)  # starts: a read-only store (a shared volume) is a valid way to serve
    try:
        assert _listed(d.url) == [f"hf.co/{STORIES_REPO}:latest"]
        g = httpx.post(
            d.url + "/api/generate",
            json={"model": f"hf.co/{STORIES_REPO}", "prompt": "Once", "stream": False, "options": {"num_predict": 4}},
            timeout=120,
        )
        assert g.status_code == 200, g.text
        r = _pull(d.url, TINY_REPO)
        assert r.status_code == 507, r.text
        assert "cannot write to the model store" in r.json()["error"]
        assert str(models) in r.json()["error"]
        assert "read-only" in r.json()["error"].lower()
        assert _files(models) == before
        assert "not writable" in d.log()  # the daemon said so at start
    finally:
        stop_daemon(d)


def test_a_daemon_starts_on_an_empty_read_only_store(hub: HubStub, tmp_path: Path, models: Path) -> None:
    _mount(models, "1m")
    _remount_ro(models)
    d = start_daemon(tmp_path, hub)
    try:
        assert _listed(d.url) == []
        r = _pull(d.url, STORIES_REPO)
        assert r.status_code == 507, r.text
        assert "cannot write to the model store" in r.json()["error"]
        assert str(models) in d.log()
    finally:
        stop_daemon(d)
