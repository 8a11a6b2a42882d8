"""The serving dialects' request bodies as wire models (server/wire.py): on each converted route, a body
nesting 2,000 levels deep is refused in the dialect's own error shape (a 400; TGI's routes, and the shared
paths before the dialect is known: TGI's 422), never a 500, and an unknown field is refused naming it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from localllm.server.dialects import DIALECTS
from localllm.server.openapi import document

from ..fakes import FakeFactory
from .test_fieldpolicy import client_for
from .test_server import make_client

Shape = Callable[[Any], str]  # the error body's message, once its shape is checked

DEEP = b"[" * 2000 + b"]" * 2000


def tgi(body: Any) -> str:
    """TGI's `{"error", "error_type"}` (a 422): its message names the field (the shape has no field of its own)."""
    assert set(body) == {"error", "error_type"} and body["error_type"] == "validation", body
    return str(body["error"])


def vllm(body: Any) -> str:
    """vLLM's flat `{"object": "error", "message", "type", "param", "code"}`."""
    assert body["object"] == "error" and body["code"] == 400 and body["type"] == "BadRequestError", body
    return str(body["message"])


def lmdeploy(body: Any) -> str:
    """LMDeploy's `{"object": "error", "message", "code", "param", "type"}`."""
    assert body["object"] == "error" and body["code"] == 400 and body["type"] == "invalid_request_error", body
    return str(body["message"])


def triton(body: Any) -> str:
    """Triton's `{"error"}`."""
    assert set(body) == {"error"}, body
    return str(body["error"])


def openai(body: Any) -> str:
    """OpenAI's `{"error": {"message", "type", "param", "code"}}` (the rerank and llama-server routes')."""
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return str(body["error"]["message"])


def ollama(body: Any) -> str:
    """Ollama's `{"error": "..."}` (the /api/ routes')."""
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    return str(body["error"])


STATUS: dict[Shape, int] = {tgi: 422, vllm: 400, lmdeploy: 400, triton: 400, openai: 400, ollama: 400}
DOCS_DEEP = b'{"model": "tiny", "query": "q", "documents": %s}' % DEEP
TGI_DEEP = b'{"inputs": "x", "parameters": {"grammar": {"type": "json", "value": {"a": %s}}}}' % DEEP
# (path, body, shape): each nests 2,000 deep, at the top and where the model (or the dispatch) takes any JSON
DEEP_BODIES = [
    ("/generate_stream", DEEP, tgi),
    ("/generate_stream", TGI_DEEP, tgi),
    ("/", DEEP, tgi),  # TGI's generation: the model ("tiny") is not an embedding model
    ("/", TGI_DEEP, tgi),
    ("/embed", DEEP, tgi),
    ("/generate", DEEP, tgi),  # the shared paths: TGI's shape until the body says its dialect
    ("/generate", TGI_DEEP, tgi),
    ("/generate", b'{"prompt": %s}' % DEEP, tgi),
    ("/tokenize", DEEP, tgi),
    ("/tokenize", b'{"prompt": %s}' % DEEP, tgi),
    ("/v2/models/tiny/generate", DEEP, triton),
    ("/v2/models/tiny/generate_stream", DEEP, triton),
    ("/v1/rerank", DEEP, openai),
    ("/v1/rerank", DOCS_DEEP, openai),
    ("/rerank", b'{"query": "q", "texts": %s}' % DEEP, openai),  # before the body says its shape: the route's
    ("/v2/rerank", DOCS_DEEP, openai),
    ("/api/rerank", DOCS_DEEP, ollama),
    ("/tokenize", b'{"content": %s}' % DEEP, tgi),
    ("/detokenize", DEEP, openai),
    ("/detokenize", b'{"tokens": %s}' % DEEP, openai),
    ("/api/tokenize", DEEP, ollama),
    ("/api/detokenize", b'{"model": "tiny", "tokens": %s}' % DEEP, ollama),
    ("/v1/chat/interactive", DEEP, lmdeploy),
    ("/v1/chat/interactive", b'{"prompt": "x", "image_url": %s}' % DEEP, lmdeploy),
    ("/generate", b'{"prompt": "x", "session_id": 1, "image_url": %s}' % DEEP, tgi),  # refused as it is read
    ("/v1/encode", DEEP, lmdeploy),
]
# (path, body, the unknown field, shape)
UNKNOWN = [
    ("/generate_stream", {"inputs": "x", "parameters": {"temprature": 1}}, "parameters.temprature", tgi),
    ("/", {"inputs": "x", "nope": 1}, "nope", tgi),
    ("/embed", {"inputs": "x", "normalise": True}, "normalise", tgi),
    ("/generate", {"inputs": "x", "parameters": {"nope": 1}}, "parameters.nope", tgi),
    ("/generate", {"prompt": "x", "temprature": 1}, "temprature", vllm),
    ("/tokenize", {"inputs": "x", "nope": 1}, "nope", tgi),
    ("/tokenize", {"prompt": "x", "add_bos": True}, "add_bos", vllm),
    ("/v2/models/tiny/generate", {"text_input": "x", "parameters": {"nope": 1}}, "parameters.nope", triton),
    ("/v2/models/tiny/generate_stream", {"text_input": "x", "temprature": 1}, "temprature", triton),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "topn": 1}, "topn", openai),
    ("/rerank", {"query": "q", "texts": ["a"], "raw_score": True}, "raw_score", tgi),  # TEI's body: TGI's shape
    ("/v2/rerank", {"query": "q", "documents": ["a"], "nope": 1}, "nope", openai),
    ("/api/rerank", {"model": "m", "query": "q", "documents": ["a"], "nope": 1}, "nope", ollama),
    ("/tokenize", {"content": "x", "add_bos": True}, "add_bos", tgi),  # llama-server's body: /tokenize's shape
    ("/detokenize", {"tokens": [1], "nope": 1}, "nope", openai),
    ("/api/tokenize", {"model": "tiny", "content": "x", "nope": 1}, "nope", ollama),
    ("/api/detokenize", {"model": "tiny", "tokens": [1], "nope": 1}, "nope", ollama),
    ("/v1/chat/interactive", {"prompt": "x", "session_id": 1, "top_q": 1}, "top_q", lmdeploy),
    ("/generate", {"prompt": "x", "session_id": 1, "nope": 1}, "nope", lmdeploy),
    ("/v1/encode", {"input": "x", "add_eos": True}, "add_eos", lmdeploy),
]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from make_client(tmp_path, FakeFactory())


@pytest.mark.parametrize(("path", "body", "shape"), DEEP_BODIES)
def test_2000_levels_deep_is_refused_in_the_dialects_shape(
    client: TestClient, path: str, body: bytes, shape: Shape
) -> None:
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == STATUS[shape], r.text
    message = shape(r.json())
    if not body.startswith(b"["):  # at the top: not an object, refused as it opens
        assert "nests deeper than" in message, message


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[TestClient]:
    yield from client_for(tmp_path, strict_fields=True)


@pytest.mark.parametrize(("path", "body", "field", "shape"), UNKNOWN)
def test_an_unknown_field_is_refused_naming_it_under_strict_fields(
    strict: TestClient, path: str, body: dict[str, Any], field: str, shape: Shape
) -> None:
    r = strict.post(path, json=body)
    assert r.status_code == STATUS[shape], r.text
    assert f"unknown field '{field}'" in shape(r.json())


@pytest.mark.parametrize(("path", "body", "field", "shape"), UNKNOWN)
def test_an_unknown_field_is_reported_by_default(
    client: TestClient, path: str, body: dict[str, Any], field: str, shape: Shape
) -> None:
    r = client.post(path, json=body)
    assert r.headers.get("x-localllm-ignored-fields") == field, (r.status_code, r.text)


CONVERTED = ("tgi", "tei", "vllm", "triton", "rerank", "tokenize", "compat", "lmdeploy")


def test_the_converted_dialects_request_bodies_are_their_models_schemas() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    seen = 0
    for dialect in DIALECTS:
        if dialect.name not in CONVERTED:
            continue
        for path, item in dialect.paths().items():
            for operation in item.values():
                if "requestBody" not in operation:
                    continue
                schema = operation["requestBody"]["content"]["application/json"]["schema"]
                refs = schema.get("anyOf", [schema])
                assert all(set(r) == {"$ref"} for r in refs), f"{path}: a hand-written request schema"
                assert all(r["$ref"].rpartition("/")[2] in schemas for r in refs), path
                seen += 1
    assert seen == 15  # every POST of those dialects
