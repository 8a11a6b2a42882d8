"""Two daemons and one store (issue 18, item 1): a second `localllm serve` on a busy port fails before it
touches the store, and a daemon never prunes a store another daemon serves. Two replicas pulling the same
model into one store (issue 26, item 1) download it once and store it whole."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
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


def _pull_lines(d: Daemon, model: str, into: list[list[dict[str, Any]]]) -> None:
    with httpx.stream("POST", d.url + "/api/pull", json={"model": model}, timeout=60) as r:
        into.append([{"http_status": r.status_code}, *(json.loads(line) for line in r.iter_lines() if line.strip())])


def test_two_replicas_pulling_one_model_into_one_store_download_it_once_and_keep_it_whole(
    stories_gguf: Path, tmp_path: Path
) -> None:
    """Both pulls start together on a slowed Hub, three times over: each time one downloads, the other says it
    waits and then takes that blob; the store holds one blob that hashes to its name, and no leftovers."""
    expected = hashlib.sha256(stories_gguf.read_bytes()).hexdigest()
    models = tmp_path / "models"
    model = f"hf.co/{STORIES_REPO}"
    with HubStub({STORIES_REPO: {"stories260K.gguf": stories_gguf}}) as slow:
        slow.rate = 1 << 20  # stories260K (1.2 MB) takes about a second: the two pulls overlap
        replicas = []
        try:
            for name in ("a", "b"):
                (tmp_path / name).mkdir()
                replicas.append(start_daemon(tmp_path / name, slow, LOCALLLM_MODELS=str(models)))
            for round_ in range(1, 4):
                answers: list[list[dict[str, Any]]] = []
                pulls = [threading.Thread(target=_pull_lines, args=(d, model, answers)) for d in replicas]
                for t in pulls:
                    t.start()
                for t in pulls:
                    t.join(60)
                assert len(answers) == 2
                for lines in answers:
                    assert lines[0] == {"http_status": 200} and lines[-1] == {"status": "success"}, lines[-3:]
                waited = [
                    ls for ls in answers if any(str(e.get("status")).startswith("waiting for another") for e in ls)
                ]
                assert len(waited) == 1, "one replica waited for the other's download"
                assert slow.downloads("stories260K.gguf") == round_, "the waiting replica took the other's blob"
                blobs = sorted(p.name for p in (models / "blobs").iterdir())
                assert blobs == [f"sha256-{expected}"], blobs  # no .partial, no .lock, no second blob
                assert hashlib.sha256((models / "blobs" / blobs[0]).read_bytes()).hexdigest() == expected
                for d in replicas:
                    listed = httpx.get(d.url + "/api/tags", timeout=10).json()["models"]
                    assert [m["name"] for m in listed] == [f"{model}:latest"]
                gone = httpx.request("DELETE", replicas[0].url + "/api/delete", json={"model": model}, timeout=30)
                assert gone.status_code == 200
                assert list((models / "blobs").iterdir()) == []  # the next round starts from an empty store
        finally:
            for d in replicas:
                stop_daemon(d)
