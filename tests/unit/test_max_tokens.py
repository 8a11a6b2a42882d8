"""Runaway generations bounded (issue 27: 3): LOCALLLM_MAX_TOKENS when a request sets no bound, a Modelfile's
`num_predict_max` whatever the request asks, and the plain transcript of a model without a chat template
ending at its turn markers. Through the real app and service, on a fake runner that records its jobs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from localllm.chat import prompt
from localllm.config import Settings
from localllm.config.values import parse_host
from localllm.domain.names import parse_name
from localllm.domain.options import Options, bounded, parse_options
from localllm.modelstore.store import MEDIA_PARAMS, Manifest, Store
from localllm.runner.requests import Job
from localllm.scheduling.scheduler import Scheduler
from localllm.server.app import create_app
from localllm.service.core import Service

from ..fakes import FakeFactory, write_tiny_gguf

CHAT: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "stream": False}


def test_bounded_applies_the_default_and_the_cap() -> None:
    none, cap = Options(), Options(num_predict_max=64)
    assert bounded(Options(), none, 8192).num_predict == 8192, "no bound sent: the server's default"
    assert bounded(Options(num_predict=20000), none, 8192).num_predict == 20000, "the client's own is kept"
    assert bounded(Options(num_predict=-1), none, 8192).num_predict == -1, "as is 'until the end', asked for"
    assert bounded(Options(), none, 0).num_predict is None, "0 lifts the default"
    assert bounded(Options(num_predict=32000), cap, 8192).num_predict == 64, "the operator's cap, whatever"
    assert bounded(Options(num_predict=-1), cap, 0).num_predict == 64
    assert bounded(Options(num_predict=10), cap, 8192).num_predict == 10
    lifted = Options(num_predict=500, num_predict_max=1000)
    assert bounded(lifted, cap, 8192).num_predict == 64, "a request's num_predict_max cannot lift the cap"
    assert parse_options({"num_predict_max": 4}).num_predict_max == 4


@pytest.fixture
def factory() -> FakeFactory:
    return FakeFactory()


def client_for(tmp_path: Path, factory: FakeFactory, **settings: Any) -> Iterator[TestClient]:
    config = dataclasses.replace(Settings(host=parse_host(""), models_dir=tmp_path / "models"), **settings)
    store = Store(config.models_dir)
    templated = store.add_blob_file(write_tiny_gguf(tmp_path / "t.gguf", template="{{ messages[-1].content }}!"))
    bare = store.add_blob_file(write_tiny_gguf(tmp_path / "b.gguf"))
    params = store.add_blob_bytes(json.dumps({"num_predict_max": 64}).encode(), MEDIA_PARAMS)
    store.write_manifest(parse_name("tiny"), Manifest((templated,)))
    store.write_manifest(parse_name("capped"), Manifest((templated, params)))
    store.write_manifest(parse_name("bare"), Manifest((bare,)))
    service = Service(config, store, Scheduler(factory=factory))
    with TestClient(create_app(config, service=service), base_url="http://127.0.0.1") as client:
        yield client


def last_job(factory: FakeFactory) -> Job:
    return [job for runner in factory.runners for job in runner.jobs][-1]


def test_the_server_default_applies_when_the_request_sets_no_bound(tmp_path: Path, factory: FakeFactory) -> None:
    for client in client_for(tmp_path, factory):
        assert client.post("/api/chat", json={**CHAT, "model": "tiny"}).status_code == 200
        assert last_job(factory).num_predict == Settings.max_tokens == 8192
        body = {"model": "tiny", "input": "hi"}  # Codex sends no max_output_tokens
        assert client.post("/v1/responses", json=body).status_code == 200
        assert last_job(factory).num_predict == 8192
        chat: dict[str, Any] = {**CHAT, "model": "tiny", "max_tokens": 20000}
        assert client.post("/v1/chat/completions", json=chat).status_code == 200
        assert last_job(factory).num_predict == 20000, "a bound the client sends is its own"


def test_zero_lifts_the_default(tmp_path: Path, factory: FakeFactory) -> None:
    for client in client_for(tmp_path, factory, max_tokens=0):
        assert client.post("/api/chat", json={**CHAT, "model": "tiny"}).status_code == 200
        assert last_job(factory).num_predict == -1


def test_a_modelfile_cap_holds_whatever_the_request_asks(tmp_path: Path, factory: FakeFactory) -> None:
    for client in client_for(tmp_path, factory):
        body = {"model": "capped", "max_tokens": 32000, "messages": [{"role": "user", "content": "hi"}]}
        assert client.post("/v1/messages", json=body).status_code == 200  # Claude Code asks for 32,000
        assert last_job(factory).num_predict == 64
        body = {**CHAT, "model": "capped", "options": {"num_predict": -1, "num_predict_max": 10**6}}
        assert client.post("/api/chat", json=body).status_code == 200
        assert last_job(factory).num_predict == 64


def test_a_model_without_a_template_stops_at_the_next_turn(tmp_path: Path, factory: FakeFactory) -> None:
    for client in client_for(tmp_path, factory):
        body = {**CHAT, "model": "bare", "options": {"stop": ["END"]}}
        assert client.post("/api/chat", json=body).status_code == 200
        job = last_job(factory)
        assert job.prompt.endswith("Assistant:") and job.stop == ("END", *prompt.PLAIN_STOPS)
        assert "\nUser:" in prompt.PLAIN_STOPS
        assert client.post("/api/chat", json={**CHAT, "model": "tiny"}).status_code == 200
        assert not set(last_job(factory).stop) & set(prompt.PLAIN_STOPS), "a template's own turns end it"
