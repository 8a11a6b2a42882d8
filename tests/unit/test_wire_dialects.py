"""The serving dialects' request bodies as wire models (server/wire.py): on each converted route, a body
nesting 2,000 levels deep is a 400 (TGI's routes: 422) in the dialect's own error shape, never a 500, and an
unknown field is refused naming it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from ..fakes import FakeFactory
from .test_server import make_client

DEEP = b"[" * 2000 + b"]" * 2000


def tgi_shape(body: Any) -> str | None:
    """TGI's `{"error", "error_type"}`: the message (it names the field; TGI's shape has no field of its own)."""
    assert set(body) == {"error", "error_type"} and body["error_type"] == "validation", body
    return str(body["error"])


@dataclass(frozen=True)
class Route:
    path: str
    status: int
    shape: Callable[[Any], str | None]  # the error body's message, once its shape is checked
    deep: tuple[bytes, ...]  # bodies nesting 2,000 deep: at the top, and where the model takes any JSON
    unknown: dict[str, Any]  # a body with one unknown field
    field: str  # ... which the refusal names


ROUTES = [
    Route(
        "/generate_stream",
        422,
        tgi_shape,
        (DEEP, b'{"inputs": "x", "parameters": {"grammar": {"type": "json", "value": {"a": %s}}}}' % DEEP),
        {"inputs": "x", "parameters": {"temprature": 1}},
        "parameters.temprature",
    ),
    Route(  # TGI's generation: the model ("tiny") is not an embedding model
        "/",
        422,
        tgi_shape,
        (DEEP, b'{"inputs": "x", "parameters": {"grammar": {"type": "json", "value": {"a": %s}}}}' % DEEP),
        {"inputs": "x", "nope": 1},
        "nope",
    ),
    Route("/embed", 422, tgi_shape, (DEEP,), {"inputs": "x", "normalise": True}, "normalise"),
]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from make_client(tmp_path, FakeFactory())


@pytest.mark.parametrize(
    ("route", "body"), [(r, b) for r in ROUTES for b in r.deep], ids=lambda x: getattr(x, "path", "")
)
def test_2000_levels_deep_is_refused_in_the_dialects_shape(client: TestClient, route: Route, body: bytes) -> None:
    r = client.post(route.path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == route.status, r.text
    message = route.shape(r.json())
    if not body.startswith(b"["):  # at the top: not an object, refused as it opens
        assert message is not None and "nests deeper than" in message, message


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.path)
def test_an_unknown_field_is_refused_naming_it(client: TestClient, route: Route) -> None:
    r = client.post(route.path, json=route.unknown)
    assert r.status_code == route.status, r.text
    message = route.shape(r.json())
    assert message is not None and f"unknown field '{route.field}'" in message, message
