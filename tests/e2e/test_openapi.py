"""`GET /openapi.json`, and a bounded schemathesis run against a real daemon: no 500s, no response that
breaks the document (each JSON body, and each SSE event's data, valid against its reply model's schema), no
status the document does not list."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from localllm.domain.options import LOAD_OPTIONS
from localllm.server.dialects import wire_models
from localllm.server.openapi import document
from localllm.server.wire import components

from ..conftest import CHAT_REPO, STORIES_REPO
from .conftest import Daemon, daemon_with

MODELS = [f"hf.co/{STORIES_REPO}:latest", f"hf.co/{CHAT_REPO}:latest", "no-such-model"]
# Fuzzed: the routes that read and validate bodies or answer cheaply. Left out: pull, create, delete, copy
# and blob upload (they change the store or reach the hub) and LMDeploy's sessions (state between calls).
FUZZED = {
    "/",
    "/api/version",
    "/api/tags",
    "/api/ps",
    "/api/show",
    "/api/generate",
    "/api/chat",
    "/api/embed",
    "/api/embeddings",
    "/api/verify",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/v1/models/{model}",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/responses/input_tokens",
    "/v1/responses/{response_id}",
    "/v1/responses/{response_id}/input_items",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/generate",
    "/generate_stream",
    "/tokenize",
    "/info",
    "/health",
    "/v1/encode",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/{model}",
    "/v2/models/{model}/ready",
    "/v2/models/{model}/generate",
}
LENGTHS = (
    "num_predict",
    "max_tokens",
    "max_output_tokens",
    "max_completion_tokens",
    "max_new_tokens",
    "min_tokens",
    "n",
    "best_of",
)


def _narrow(node: Any) -> Any:
    """The document with generation kept cheap: models from MODELS, few tokens, no reloads."""
    if isinstance(node, list):
        return [_narrow(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _narrow(value) for key, value in node.items()}
    props = out.get("properties")
    if isinstance(props, dict):
        for key in LOAD_OPTIONS:
            props.pop(key, None)
        for key in ("model", "name"):
            if key in props:
                props[key] = {"enum": MODELS}
        for key in LENGTHS:
            if key in props:
                props[key] = _capped(props[key], 3 if key in {"n", "best_of"} else 8)
        if "num_predict" in props:
            props["num_predict"]["minimum"] = 1
    return out


def _capped(schema: dict[str, Any], most: int) -> dict[str, Any]:
    """An integer schema (or a wire model's `integer | null`) with `most` as its maximum."""
    if schema.get("type") == "integer":
        return {**schema, "maximum": most}
    if "anyOf" in schema:
        return {**schema, "anyOf": [_capped(member, most) for member in schema["anyOf"]]}
    return schema


@pytest.fixture(scope="module")
def api_daemon(tmp_path_factory: pytest.TempPathFactory, hub: Any) -> Iterator[Daemon]:
    # a request that sets no bound generates at most 8 tokens too (LOCALLLM_MAX_TOKENS), as the capped ones do
    with daemon_with(tmp_path_factory.mktemp("openapi"), hub, [STORIES_REPO, CHAT_REPO], LOCALLLM_MAX_TOKENS="8") as d:
        yield d


def test_openapi_document_is_served_without_a_key(tmp_path: Path, hub: Any) -> None:
    with daemon_with(tmp_path, hub, [], LOCALLLM_API_KEYS="sekret-sekret-sekret") as d:
        doc = httpx.get(d.url + "/openapi.json", timeout=10).json()
        assert doc["openapi"].startswith("3.1")
        assert doc == document()
        assert httpx.get(d.url + "/api/tags", timeout=10).status_code == 401


def _schema() -> Any:
    doc = document()  # the one the daemon serves (test_openapi_document_is_served checks it is served)
    doc["paths"] = {path: _narrow(item) for path, item in doc["paths"].items() if path in FUZZED}
    requests = set(components(wire_models()))  # narrowed: the request bodies' models, not the answers'
    doc["components"]["schemas"] = {
        name: _narrow(schema) if name in requests else schema for name, schema in doc["components"]["schemas"].items()
    }
    return schemathesis.openapi.from_dict(doc)


schema = _schema()


@schema.parametrize()  # type: ignore[untyped-decorator]
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case: Any, api_daemon: Daemon) -> None:
    case.call_and_validate(
        base_url=api_daemon.url,
        checks=[not_a_server_error, response_schema_conformance, status_code_conformance],
        timeout=30,
    )


def test_a_body_over_the_limit_is_413_in_each_dialects_shape(tmp_path: Path, hub: Any) -> None:
    big = b'{"model": "x", "prompt": "' + b"a" * 4096 + b'"}'
    with daemon_with(tmp_path, hub, [], LOCALLLM_MAX_BODY="1KiB") as d:
        ollama = httpx.post(d.url + "/api/generate", content=big, timeout=10)
        assert ollama.status_code == 413 and "1 KiB" in ollama.json()["error"]
        openai = httpx.post(d.url + "/v1/completions", content=big, timeout=10)
        assert openai.status_code == 413 and "1 KiB" in openai.json()["error"]["message"]
        tgi = httpx.post(d.url + "/generate", content=big, timeout=10)
        assert tgi.status_code == 413 and tgi.json()["error_type"] == "validation"
        small = httpx.post(d.url + "/api/generate", json={"model": "no-such-model"}, timeout=10)
        assert small.status_code == 404


def test_a_bad_max_body_stops_the_daemon(tmp_path: Path, hub: Any) -> None:
    with pytest.raises(RuntimeError, match="LOCALLLM_MAX_BODY"):
        with daemon_with(tmp_path, hub, [], LOCALLLM_MAX_BODY="lots"):
            pass
