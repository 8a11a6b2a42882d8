"""The store checks its blobs again (issue 26, item 10): `POST /api/verify` finds a blob with a flipped byte,
moves it aside, logs it and lists its model as damaged; a model whose GGUF cannot be read is listed, flagged,
and logged once naming its blob, never dropped from `/api/tags` in silence."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from localllm.domain.names import parse_name
from localllm.modelstore.store import Manifest, Store

from ..fakes import FakeFactory
from .test_server import make_client


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from make_client(tmp_path, FakeFactory())


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line]


def tiny_blob(tmp_path: Path) -> Path:
    store = Store(tmp_path / "models")
    return store.blob_path(store.get(parse_name("tiny")).manifest.layers[0].digest)


def flip_a_byte(path: Path, at: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_verify_passes_a_store_whose_blobs_match(client: TestClient, tmp_path: Path) -> None:
    out = lines(client.post("/api/verify", json={}).text)
    blob = tiny_blob(tmp_path)
    assert out == [
        {"status": "ok", "digest": blob.name.replace("-", ":"), "size": blob.stat().st_size, "models": ["tiny:latest"]},
        {"status": "success", "checked": 1, "damaged": []},
    ]


def test_verify_finds_a_flipped_byte_moves_the_blob_aside_and_the_model_lists_as_damaged(
    client: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert client.post("/api/generate", json={"model": "tiny", "prompt": "hi", "stream": False}).status_code == 200
    blob = tiny_blob(tmp_path)
    flip_a_byte(blob)
    with caplog.at_level(logging.INFO, logger="localllm.service"):
        r = client.post("/api/verify", json={"model": "tiny", "stream": False})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["status"] == "damaged" and answer["damaged"] == ["tiny:latest"] and answer["checked"] == 1
    (line,) = answer["blobs"]
    assert line["status"] == "damaged" and line["models"] == ["tiny:latest"]
    assert f"the blob {blob.name} hashes to sha256:" in line["problem"] and f"{blob.name}.damaged" in line["problem"]
    assert not blob.exists() and blob.with_name(blob.name + ".damaged").exists()
    assert any(r.levelno == logging.ERROR and blob.name.replace("-", ":") in r.getMessage() for r in caplog.records)

    (listed,) = client.get("/api/tags").json()["models"]
    assert listed["name"] == "tiny:latest"
    assert listed["damaged"] == (
        f"its blob {blob.name} failed its sha256 check and was moved aside to {blob.name}.damaged;"
        " pull the model again or delete it"
    )
    generate = client.post("/api/generate", json={"model": "tiny", "prompt": "hi", "stream": False})
    assert generate.status_code >= 400 and blob.name in generate.json()["error"], "never served from the damaged blob"


def test_verify_of_a_model_that_is_not_there_is_a_404(client: TestClient) -> None:
    r = client.post("/api/verify", json={"model": "absent"})
    assert r.status_code == 404 and "absent" in r.json()["error"]


def test_a_model_whose_gguf_header_cannot_be_read_is_listed_flagged_and_logged_once(
    client: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "models")
    data = b"GGUF" + b"\xff" * 64  # the magic, then a header that does not parse
    layer = store.add_blob_file(_write(tmp_path / "bad.gguf", data))
    store.write_manifest(parse_name("broken"), Manifest((layer,)))
    blob = f"sha256-{hashlib.sha256(data).hexdigest()}"
    with caplog.at_level(logging.WARNING, logger="localllm.service"):
        first = client.get("/api/tags").json()["models"]
        again = client.get("/api/tags").json()["models"]
    assert first == again
    names = {m["name"]: m for m in first}
    assert set(names) == {"tiny:latest", "broken:latest"}
    assert "damaged" not in names["tiny:latest"]
    assert blob in names["broken:latest"]["damaged"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # once, not at every listing
    assert "broken:latest" in warnings[0] and blob in warnings[0]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_damaged_text_layer_makes_its_model_damaged_too(client: TestClient, tmp_path: Path) -> None:
    created = client.post(
        "/api/create", json={"model": "brief", "from": "tiny", "system": "Be brief.", "stream": False}
    )
    assert created.status_code == 200, created.text
    assert client.post("/api/generate", json={"model": "brief", "prompt": "hi", "stream": False}).status_code == 200
    system = Store(tmp_path / "models").blob_path(f"sha256:{hashlib.sha256(b'Be brief.').hexdigest()}")
    system.write_bytes(b"Be rude.!")
    answer = client.post("/api/verify", json={"stream": False}).json()
    assert answer["damaged"] == ["brief:latest"] and answer["checked"] == 2  # the GGUF (shared) and the text
    listed = {m["name"]: m.get("damaged") for m in client.get("/api/tags").json()["models"]}
    assert listed["tiny:latest"] is None and system.name in listed["brief:latest"]
