"""The one policy for fields the daemon does not know (server/fieldpolicy.py, docs/compat.md), through the real
app on every converted dialect: metadata accepted silently, other unknown fields accepted and reported in
`X-Localllm-Ignored-Fields` and logged once per field and client, fields that would change the answer refused,
and `LOCALLLM_STRICT_FIELDS=1` refusing every unknown one."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from localllm.config import Settings
from localllm.config.values import parse_host
from localllm.domain.names import parse_name
from localllm.modelstore.store import Manifest, Store
from localllm.scheduling.scheduler import Scheduler
from localllm.server import fieldpolicy, wire
from localllm.server.app import create_app
from localllm.server.dialects.anthropic import wire as anthropic_wire
from localllm.service.core import Service

from ..fakes import FakeFactory, write_tiny_gguf

HEADER = "x-localllm-ignored-fields"
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": CHAT,
    "/chat/completions": CHAT,  # llama-server's paths, for a bare base URL
    "/api/chat": {**CHAT, "stream": False},
    "/v1/messages": {**CHAT, "max_tokens": 8},
    "/v1/responses": {"model": "tiny", "input": "hi"},
    "/v1/completions": {"model": "tiny", "prompt": "hi"},
}


def client_for(tmp_path: Path, **settings: Any) -> Iterator[TestClient]:
    config = dataclasses.replace(Settings(host=parse_host(""), models_dir=tmp_path / "models"), **settings)
    store = Store(config.models_dir)
    layer = store.add_blob_file(write_tiny_gguf(tmp_path / "tiny.gguf", template="{{ messages[-1].content }}!"))
    store.write_manifest(parse_name("tiny"), Manifest((layer,)))
    service = Service(config, store, Scheduler(factory=FakeFactory()))
    with TestClient(create_app(config, service=service), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from client_for(tmp_path)


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[TestClient]:
    yield from client_for(tmp_path, strict_fields=True)


@pytest.mark.parametrize("path", list(BODIES))
def test_unknown_fields_are_accepted_and_named_in_the_header(client: TestClient, path: str) -> None:
    body = {**BODIES[path], "client_metadata": {"x": "1"}, "metadata": {}, "zz_novel": 1, "qq_other": {"a": [1]}}
    r = client.post(path, json=body, headers={"user-agent": "agent/1.0"})
    assert r.status_code == 200, r.text
    assert r.headers[HEADER] == "zz_novel, qq_other", "metadata fields are accepted without a word"
    r = client.post(path, json=BODIES[path])
    assert HEADER not in r.headers, "nothing ignored: no header"


@pytest.mark.parametrize("path", list(BODIES))
def test_strict_fields_refuse_an_unknown_field_naming_it(strict: TestClient, path: str) -> None:
    r = strict.post(path, json={**BODIES[path], "user": "u", "zz_novel": 1})
    assert r.status_code == 400, r.text
    assert "unknown field 'zz_novel'" in r.text and "LOCALLLM_STRICT_FIELDS" in r.text
    assert strict.post(path, json={**BODIES[path], "user": "u", "safety_identifier": "s"}).status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {**CHAT, "stream": False}),
        ("/api/generate", {"model": "tiny", "prompt": "hi", "stream": False}),
        ("/v1/chat/completions", CHAT),  # the `options` extension of OpenAI's routes
    ],
)
def test_deprecated_options_are_accepted_and_reported(client: TestClient, path: str, body: dict[str, Any]) -> None:
    options = {"temperature": 0, "use_mlock": True, "tfs_z": 1.0}
    r = client.post(path, json={**body, "options": options})
    assert r.status_code == 200, r.text
    assert r.headers[HEADER] == "options.use_mlock, options.tfs_z"
    r = client.post(path, json={**body, "options": {"temperature": 0}})
    assert HEADER not in r.headers


def test_strict_fields_refuse_a_deprecated_option_saying_it_has_no_effect(strict: TestClient) -> None:
    r = strict.post("/api/chat", json={**CHAT, "stream": False, "options": {"low_vram": True}})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "options.low_vram has no effect (LOCALLLM_STRICT_FIELDS=1)"


def test_a_field_that_would_change_the_answer_is_refused_by_name(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={**CHAT, "web_search_options": {}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "web_search_options", r.text
    r = client.post("/v1/responses", json={"model": "tiny", "input": "hi", "conversation": "conv_1"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "conversation", r.text
    r = client.post("/v1/messages", json={**BODIES["/v1/messages"], "mcp_servers": []})
    assert r.status_code == 400 and "mcp_servers" in r.json()["error"]["message"], r.text


def test_an_ignored_field_is_logged_once_per_field_and_client(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "localllm.server")
    body = {**CHAT, f"field_{time.monotonic_ns()}": 1}
    for agent in ("a/1", "a/1", "b/2"):
        assert client.post("/v1/chat/completions", json=body, headers={"user-agent": agent}).status_code == 200
    said = [r.getMessage() for r in caplog.records if "ignored the request field" in r.getMessage()]
    assert len(said) == 2 and "a/1" in said[0] and "b/2" in said[1], said


def test_hostile_names_cannot_break_the_header_nor_flood_it(client: TestClient) -> None:
    body = {**CHAT, "a\u0016b": 1, "caf\u00e9, x": 2, "y" * 500: 3, **{f"k{i}": i for i in range(100)}}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text  # a control character in a header would be a 500 (h11 refuses it)
    value = r.headers[HEADER]
    assert value.startswith('"a\\u0016b", "caf\\u00e9, x", ' + "y" * 64 + "..., k0, k1")
    assert value.endswith(", +71 more") and value.isascii() and value.isprintable()


def test_the_policy_outside_a_request_accepts_and_records_nothing() -> None:
    fieldpolicy.unknown(["novel"])  # a translator called by a test: no request, no report, no refusal
    with fieldpolicy.begin(strict=False, client="") as report:
        fieldpolicy.unknown(["a", "store", "messages[0].b"])
    assert fieldpolicy.header(report) == "a, messages[0].b"


def test_finding_unknown_fields_is_cheap_on_a_1_kb_body() -> None:
    body = {**BODIES["/v1/messages"], "system": "s" * 850, "context_management": {"edits": []}, "zz": 1}
    raw = json.dumps(body).encode()
    assert 900 < len(raw) < 1200
    model = anthropic_wire.MessagesRequest
    wire.decode(raw, model)
    n = 2000
    started = time.perf_counter()
    for _ in range(n):
        wire.unknown_fields(raw, model)
    each = (time.perf_counter() - started) / n
    started = time.perf_counter()
    for _ in range(n):
        wire.decode(raw, model)
    decode = (time.perf_counter() - started) / n
    assert wire.unknown_fields(raw, model) == ["zz"]
    assert each < 50e-6, f"{each * 1e6:.1f} µs a body (decoding it: {decode * 1e6:.1f} µs)"


def test_openai_routes_answer_without_the_v1_prefix(client: TestClient) -> None:
    models = client.get("/models")
    assert models.status_code == 200 and [m["id"] for m in models.json()["data"]] == ["tiny:latest"]
    assert client.get("/models/tiny").json()["id"] == "tiny:latest"
    r = client.post("/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 2})
    assert r.status_code == 200 and r.json()["object"] == "text_completion"
    r = client.post("/embeddings", json={"input": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model", "OpenAI's error shape"
