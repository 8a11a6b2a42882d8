"""Two daemons and one store (issue 18, item 1): a second `localllm serve` on a busy port fails before it
touches the store, and a daemon never prunes a store another daemon serves."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import STORIES_REPO
from ..hubstub import HubStub
from .conftest import Daemon, localllm_command, start_daemon, stop_daemon


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("first"), hub)
    try:
        pulled = d.cli("pull", f"hf.co/{STORIES_REPO}")
        assert pulled.returncode == 0, pulled.stderr
        yield d
    finally:
        stop_daemon(d)


def plant_blob(models: Path, text: str) -> Path:
    """A blob in place but in no manifest yet: what a pull has between its rename and its manifest."""
    data = text.encode()
    blob = models / "blobs" / f"sha256-{hashlib.sha256(data).hexdigest()}"
    blob.write_bytes(data)
    return blob


def test_a_second_daemon_on_the_same_port_fails_before_touching_the_store(first: Daemon) -> None:
    blob = plant_blob(first.models_dir, "being pulled by the first daemon")
    second = subprocess.run([*localllm_command(), "serve"], env=first.env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert f"another localllm is already listening on http://{first.host}" in second.stderr
    assert "pruned" not in second.stderr
    assert blob.exists(), "the second daemon pruned the first one's store"
    assert first.cli("list").returncode == 0  # the first daemon is unharmed


def test_a_daemon_does_not_prune_a_store_another_daemon_serves(first: Daemon, tmp_path: Path, hub: HubStub) -> None:
    blob = plant_blob(first.models_dir, "being pulled by the first daemon, again")
    replica = start_daemon(tmp_path, hub, LOCALLLM_MODELS=str(first.models_dir))
    try:
        assert blob.exists(), "a replica pruned the store the first daemon serves"
        assert "serves the model store" in replica.log() and "not pruning" in replica.log()
        listed = replica.cli("list")
        assert STORIES_REPO.lower() in listed.stdout.lower()
    finally:
        stop_daemon(replica)


def test_a_port_used_by_another_program_is_named(tmp_path: Path, hub: HubStub) -> None:
    import socket

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        env = {**start_env(tmp_path, hub), "LOCALLLM_HOST": f"127.0.0.1:{port}"}
        result = subprocess.run([*localllm_command(), "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"http://127.0.0.1:{port} is already in use by another program" in result.stderr
    assert not (tmp_path / "models").exists(), "the store was touched before the address was known to be free"


def start_env(tmp: Path, hub: HubStub) -> dict[str, str]:
    import os

    return {**os.environ, "LOCALLLM_MODELS": str(tmp / "models"), "HF_ENDPOINT": hub.url}
