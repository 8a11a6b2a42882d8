"""The dialect registry: which dialect owns a path, and the middleware's errors (401, 403, 413) and Starlette's
404/405 in that dialect's shape, in-process (the app with no runner behind it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from localllm.config import Settings
from localllm.config.values import parse_host
from localllm.modelstore.store import Store
from localllm.scheduling.scheduler import Scheduler
from localllm.server import dialects
from localllm.server.app import create_app
from localllm.service.core import Service


@pytest.mark.parametrize(
    ("path", "method", "name"),
    [
        ("/api/chat", "POST", "ollama"),
        ("/", "GET", "ollama"),
        ("/", "POST", "tei"),  # TEI embeddings for an embedding model, else TGI generation: TGI errors both ways
        ("/embed", "POST", "tei"),
        ("/generate_stream", "POST", "tgi"),
        ("/generate_stream", "GET", "tgi"),
        ("/generate", "POST", "compat"),
        ("/v1/chat/completions", "POST", "openai"),
        ("/v1/embeddings", "POST", "openai"),
        ("/v1/responses", "POST", "responses"),
        ("/v1/responses/resp_1", "DELETE", "responses"),
        ("/v1/responses/resp_1/nope", "GET", "responses"),
        ("/v1/chat/interactive", "POST", "lmdeploy"),
        ("/v1/encode", "POST", "lmdeploy"),
        ("/v1/no-such-route", "GET", "openai"),
        ("/v2/models/m/generate", "POST", "triton"),
        ("/v2/no-such-route", "GET", "triton"),
        ("/api/v1/token", "GET", "ollama"),
        ("/no-such-route", "GET", "ollama"),
    ],
)
def test_every_path_has_one_owner(path: str, method: str, name: str) -> None:
    assert dialects.owner(path, method).name == name


def test_every_route_is_declared_once() -> None:
    seen = [(r.path, tuple(sorted(r.methods or ()))) for r in dialects.routes()]  # type: ignore[attr-defined]
    assert len(seen) == len(set(seen))
    documented = dialects.paths()
    assert {"/api/chat", "/v1/chat/completions", "/generate_stream", "/v1/encode", "/v2/models/{model}"} <= set(
        documented
    )


def app_client(tmp_path: Path, **settings: object) -> Iterator[TestClient]:
    config = Settings(host=parse_host(""), models_dir=tmp_path / "models", **settings)  # type: ignore[arg-type]
    service = Service(config, Store(config.models_dir), Scheduler())
    with TestClient(create_app(config, service=service), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[TestClient]:
    yield from app_client(tmp_path, api_keys=("sekret-sekret-sekret",))


def test_a_401_comes_in_the_shape_of_the_dialect_owning_the_path(keyed: TestClient) -> None:
    tgi = keyed.post("/generate_stream", json={"inputs": "x"})
    assert tgi.status_code == 401 and set(tgi.json()) == {"error", "error_type"}
    assert tgi.json()["error_type"] == "authentication"
    compat = keyed.post("/generate", json={"inputs": "x"})
    assert compat.status_code == 401 and compat.json()["error_type"] == "authentication"
    lmdeploy = keyed.post("/v1/encode", json={"input": "x"})
    assert lmdeploy.status_code == 401 and lmdeploy.json()["object"] == "error" and lmdeploy.json()["code"] == 401
    openai = keyed.post("/v1/chat/completions", json={})
    assert openai.status_code == 401 and openai.json()["error"]["code"] == "invalid_api_key"
    triton = keyed.post("/v2/models/m/generate", json={})
    assert triton.status_code == 401 and set(triton.json()) == {"error"}
    ollama = keyed.post("/api/chat", json={})
    assert ollama.status_code == 401 and set(ollama.json()) == {"error"}


def test_a_403_and_a_413_in_the_dialects_shape(tmp_path: Path) -> None:
    for client in app_client(tmp_path, max_body=64):
        refused = client.post("/generate_stream", json={"inputs": "x"}, headers={"Host": "evil.example"})
        assert refused.status_code == 403 and refused.json()["error_type"] == "authentication"
        big = {"inputs": "x" * 100}
        too_large = client.post("/generate_stream", json=big)
        assert too_large.status_code == 413 and too_large.json()["error_type"] == "validation"
        too_large = client.post("/v1/chat/interactive", json={"prompt": "x" * 100})
        assert too_large.status_code == 413 and too_large.json()["type"] == "invalid_request_error"


def test_404_and_405_in_the_dialects_shape(tmp_path: Path) -> None:
    for client in app_client(tmp_path):
        wrong_method = client.get("/generate_stream")
        assert wrong_method.status_code == 405 and wrong_method.json()["error_type"] == "validation"
        missing = client.get("/v1/nope")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
        assert client.get("/api/nope").json() == {"error": "Not Found"}
