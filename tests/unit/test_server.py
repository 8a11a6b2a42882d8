"""Routes and framing over a scripted runner: fast checks of the wire formats and the error rules."""

from __future__ import annotations

import json
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
from localllm.server.app import create_app
from localllm.service.core import Service

from ..fakes import FakeFactory, write_tiny_gguf


def make_client(tmp_path: Path, factory: FakeFactory) -> Iterator[TestClient]:
    settings = Settings(host=parse_host(""), models_dir=tmp_path / "models")
    store = Store(settings.models_dir)
    layer = store.add_blob_file(write_tiny_gguf(tmp_path / "tiny.gguf", template="{{ messages[-1].content }}!"))
    store.write_manifest(parse_name("tiny"), Manifest((layer,)))
    service = Service(settings, store, Scheduler(factory=factory))
    with TestClient(create_app(settings, service=service), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
def factory() -> FakeFactory:
    return FakeFactory()


@pytest.fixture
def client(tmp_path: Path, factory: FakeFactory) -> Iterator[TestClient]:
    yield from make_client(tmp_path, factory)


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line]


def test_generate_stream_and_single(client: TestClient, factory: FakeFactory) -> None:
    r = client.post("/api/generate", json={"model": "tiny", "prompt": "hi", "options": {"temperature": 0}})
    assert r.headers["content-type"] == "application/x-ndjson"
    out = lines(r.text)
    assert [o["response"] for o in out] == ["Hello", ",", " world", ""]
    assert out[-1]["done"] is True and out[-1]["done_reason"] == "stop" and out[-1]["eval_count"] == 3
    job = factory.runners[0].jobs[0]
    assert job.prompt == "hi!", "the model's chat template shapes the prompt"
    assert job.sampling.temperature == 0.0 and job.sampling.top_k == 40, "request options over defaults"
    single = client.post("/api/generate", json={"model": "tiny", "prompt": "hi", "stream": False}).json()
    assert single["response"] == "Hello, world" and single["done"] is True


def test_chat_stream(client: TestClient) -> None:
    r = client.post("/api/chat", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]})
    out = lines(r.text)
    assert "".join(o["message"]["content"] for o in out) == "Hello, world"
    assert out[-1]["done"] is True


def test_empty_prompt_loads_and_keep_alive_zero_unloads(client: TestClient, factory: FakeFactory) -> None:
    load = client.post("/api/generate", json={"model": "tiny"}).json()
    assert load["done_reason"] == "load"
    assert len(client.get("/api/ps").json()["models"]) == 1
    unload = client.post("/api/generate", json={"model": "tiny", "keep_alive": 0}).json()
    assert unload["done_reason"] == "unload"
    assert client.get("/api/ps").json()["models"] == []
    assert factory.runners[0].stopped


@pytest.mark.parametrize("keep_alive", [1e18, "1e18", "99999999999h", 1e300])
def test_a_keep_alive_too_long_for_a_clock_is_forever(client: TestClient, keep_alive: object) -> None:
    # Longer than Go's longest duration (~292 years) is forever, as in Ollama; it was kept as is, and then
    # /api/ps was a 500 for everyone (no date that far off) while the model stayed loaded.
    load = client.post("/api/generate", json={"model": "tiny", "keep_alive": keep_alive})
    assert load.status_code == 200 and load.json()["done_reason"] == "load"
    ps = client.get("/api/ps")
    assert ps.status_code == 200 and ps.json()["models"][0]["expires_at"].startswith("2318-")


@pytest.mark.parametrize("keep_alive", ["NaN", "nan"])
def test_a_keep_alive_that_is_not_a_number_is_a_400(client: TestClient, keep_alive: str) -> None:
    r = client.post("/api/generate", json={"model": "tiny", "keep_alive": keep_alive})
    assert r.status_code == 400 and "keep_alive" in r.json()["error"]
    r = client.post("/api/generate", content=b'{"model": "tiny", "keep_alive": NaN}')
    assert r.status_code == 400 and "keep_alive" in r.json()["error"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/generate", b'{"model": "tiny", "prompt": "x", "options": {"temperature": NaN}}', "options.temperature"),
        ("/api/generate", b'{"model": "tiny", "prompt": "x", "options": {"top_p": Infinity}}', "options.top_p"),
        (
            "/v1/chat/completions",
            b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
            "temperature",
        ),
        (
            "/v1/completions",
            b'{"model": "tiny", "prompt": "x", "grammar": "root ::= \\"a\\"\\u0000 | \\"b\\""}',
            "grammar",
        ),
        ("/api/generate", b'{"model": "tiny", "prompt": "x", "format": {"const": "a\\u0000b"}}', "format"),
        (
            "/generate",
            b'{"inputs": "x", "parameters": {"grammar": {"type": "regex", "value": "a\\u0000"}}}',
            "parameters.grammar.value",
        ),
    ],
)
def test_a_constraint_that_would_be_lost_is_a_400_naming_it(
    client: TestClient, path: str, body: bytes, field: str
) -> None:
    # NaN passed every range check; a NUL cut llama.cpp's grammar short (the output then went unconstrained).
    r = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == (422 if path == "/generate" else 400), r.text  # TGI's validation errors are 422s
    assert field in r.text


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"parameters": {"stop": [f"s{i}" for i in range(100)]}}, "parameters.stop"),
        ({"parameters": {"stop": ["x" * 2000]}}, "parameters.stop"),
        ({"messages": [{"role": "user", "content": "hi"}] * 4097}, "messages"),
    ],
)
def test_create_applies_the_bounds_a_request_would_meet(client: TestClient, extra: dict[str, Any], field: str) -> None:
    # Such a model was stored, and then every use of it was a 400 (or every chat rendered 100,000 messages).
    r = client.post("/api/create", json={"model": "mine", "from": "tiny", "stream": False, **extra})
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]
    assert "mine:latest" not in [m["name"] for m in client.get("/api/tags").json()["models"]]


def test_error_mid_stream_is_the_last_ndjson_line(tmp_path: Path) -> None:
    for client in make_client(tmp_path, FakeFactory(fail_after=2)):
        out = lines(client.post("/api/generate", json={"model": "tiny", "prompt": "hi"}).text)
        assert [o.get("response") for o in out[:2]] == ["Hello", ","]
        assert out[-1] == {"error": "the model runner was killed by SIGKILL"}


def test_error_mid_stream_is_an_sse_error_event(tmp_path: Path) -> None:
    for client in make_client(tmp_path, FakeFactory(fail_after=1)):
        r = client.post(
            "/v1/chat/completions",
            json={"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        )
        events = [e for e in r.text.split("\n\n") if e]
        assert all(e.startswith("data: ") for e in events)
        last = json.loads(events[-1].removeprefix("data: "))
        assert last["error"]["message"] == "the model runner was killed by SIGKILL"
        assert last["error"]["type"] == "server_error"


def test_error_before_first_byte_has_a_status(client: TestClient) -> None:
    r = client.post("/api/generate", json={"model": "missing", "prompt": "hi"})
    assert r.status_code == 404
    assert r.json() == {"error": "model 'missing' not found: pull it first with 'localllm pull missing'"}
    r = client.post("/v1/chat/completions", json={"model": "missing", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_sse_framing(client: TestClient) -> None:
    r = client.post(
        "/v1/chat/completions", json={"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    events = r.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["choices"][0]["delta"] == {}
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "tiny"}, "messages"),
        ({"model": "tiny", "messages": []}, "messages"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": "5"}, "max_tokens"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stop": 5}, "stop"),
        ({"model": "tiny", "messages": [{"content": "x"}]}, "messages[0].role"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature"),
    ],
)
def test_openai_errors_name_the_param(client: TestClient, body: dict[str, Any], param: str) -> None:
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_openai_without_a_model_or_a_default_is_tgis_422(client: TestClient) -> None:
    """No model (or huggingface_hub's "dummy") goes to LOCALLLM_DEFAULT_MODEL, as TGI requests do: none here."""
    for body in ({"messages": [{"role": "user", "content": "x"}]}, {"model": "dummy", "prompt": "x"}):
        path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        r = client.post(path, json=body)
        assert r.status_code == 422
        error = r.json()["error"]
        assert error["param"] == "model" and "LOCALLLM_DEFAULT_MODEL" in error["message"]


def test_unknown_route_and_method(client: TestClient) -> None:
    assert client.get("/api/nope").status_code == 404
    assert client.get("/api/generate").status_code == 405
    assert client.head("/").status_code == 200
    assert client.get("/api/version").json()["version"]


def test_unreadable_model_file_is_a_clear_error(tmp_path: Path) -> None:
    for client in make_client(tmp_path, FakeFactory()):
        store = client.app.state.service.store  # type: ignore[attr-defined]
        bad = tmp_path / "bad.gguf"
        bad.write_bytes(b"GGUF" + b"\xff" * 64)
        store.write_manifest(parse_name("broken"), Manifest((store.add_blob_file(bad),)))
        r = client.post("/api/generate", json={"model": "broken", "prompt": "hi"})
        assert r.status_code == 500
        assert "cannot read the model file of 'broken:latest'" in r.json()["error"]
        listed = {m["name"]: m.get("damaged") for m in client.get("/api/tags").json()["models"]}
        assert listed.keys() == {"tiny:latest", "broken:latest"} and listed["tiny:latest"] is None
        assert "GGUF version" in listed["broken:latest"]  # listed, flagged with what is wrong (issue 26)
