"""Bad input on a real daemon: each a 4xx naming the field, in the dialect's own error shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..conftest import CHAT_REPO, STORIES_REPO
from ..hubstub import HubStub
from .conftest import Daemon, daemon_with

pytestmark = [pytest.mark.e2e, pytest.mark.model]

STORIES = f"hf.co/{STORIES_REPO}"
CHAT = f"hf.co/{CHAT_REPO}"
MEGABYTE = "Once upon a time " * (1 << 16)  # about 1 MB of text


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    with daemon_with(tmp_path_factory.mktemp("validation"), hub, (STORIES_REPO, CHAT_REPO)) as d:
        yield d


def ollama_error(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    return str(body["error"])


def openai_error(r: httpx.Response) -> str:
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["type"] == "invalid_request_error"
    return f"{error['param']}: {error['message']}"


def tgi_error(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == "validation", body
    return str(body["error"])


GENERATE = {"model": STORIES, "prompt": "Once upon a time", "stream": False}
CHAT_BODY = {"model": CHAT, "messages": [{"role": "user", "content": "Once upon a time"}]}
TGI = {"model": STORIES, "inputs": "Once upon a time"}


@pytest.mark.parametrize(
    ("path", "body", "field", "shape"),
    [
        ("/api/generate", {**GENERATE, "options": {"top_k": -5}}, "options.top_k", ollama_error),
        ("/api/generate", {**GENERATE, "options": {"num_ctx": 10**9}}, "options.num_ctx", ollama_error),
        ("/api/generate", {**GENERATE, "options": {"temprature": 0.5}}, "options.temprature", ollama_error),
        # within the allowed range, but a KV cache larger than the machine: the request's context, not a fault
        ("/api/generate", {**GENERATE, "options": {"num_ctx": 1 << 24}}, "options.num_ctx", ollama_error),
        ("/api/generate", {**GENERATE, "top_logprobs": 50, "logprobs": True}, "top_logprobs", ollama_error),
        ("/api/generate", {**GENERATE, "prompt": MEGABYTE, "truncate": False}, "prompt", ollama_error),
        ("/v1/chat/completions", {**CHAT_BODY, "top_k": -5}, "top_k", openai_error),
        ("/v1/chat/completions", {**CHAT_BODY, "n": 0}, "n", openai_error),
        ("/v1/chat/completions", {**CHAT_BODY, "logprobs": True, "top_logprobs": 50}, "top_logprobs", openai_error),
        ("/v1/chat/completions", {**CHAT_BODY, "options": {"num_ctx": 10**9}}, "options.num_ctx", openai_error),
        (
            "/v1/chat/completions",
            {"model": CHAT, "messages": [{"role": "user", "content": MEGABYTE}]},
            "messages",
            openai_error,
        ),
        ("/generate", {**TGI, "parameters": {"top_k": -5}}, "top_k", tgi_error),
        ("/generate", {**TGI, "parameters": {"top_n_tokens": 50}}, "top_n_tokens", tgi_error),
        ("/generate", {**TGI, "parameters": {"max_new_tokens": 0}}, "max_new_tokens", tgi_error),
    ],
)
def test_bad_values_name_their_field(server: Daemon, path: str, body: dict[str, Any], field: str, shape: Any) -> None:
    r = httpx.post(server.url + path, json=body, timeout=120)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert field in shape(r)


@pytest.mark.parametrize(("path", "shape"), [("/api/generate", ollama_error), ("/v1/completions", openai_error)])
def test_a_body_that_is_not_utf8_is_refused(server: Daemon, path: str, shape: Any) -> None:
    raw = b'{"model": "x", "prompt": "caf\xe9"}'
    r = httpx.post(server.url + path, content=raw, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400 and "UTF-8" in r.text
    shape(r)
