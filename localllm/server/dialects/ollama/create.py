"""Ollama's model-building routes: `HEAD|POST /api/blobs/{digest}` and `POST /api/create`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ....domain.errors import InvalidRequest
from ....domain.types import parse_options
from ....modelstore.store import check_digest
from ....service.create import CreateRequest, create
from ... import requests as rq
from ...errors import guarded
from ..shared import service_of
from .api import ERRORS, _messages, stream_or_whole


@guarded(ERRORS)
async def blob_exists(request: Request) -> Response:
    digest = check_digest(request.path_params["digest"])
    return Response(status_code=200 if service_of(request).store.has_blob(digest) else 404)


@guarded(ERRORS)
async def upload_blob(request: Request) -> Response:
    """Store the body as the blob `digest`, verified: a body that hashes otherwise is a 400, nothing kept."""
    store = service_of(request).store
    digest = check_digest(request.path_params["digest"])
    if store.has_blob(digest):
        return Response(status_code=200)
    upload = store.upload(digest)
    try:
        async for chunk in request.stream():
            upload.write(chunk)
    except ClientDisconnect:
        upload.abort()
        return Response(status_code=499)
    except BaseException:
        upload.abort()
        raise
    upload.commit()
    return Response(status_code=201)


def _files(body: dict[str, Any], key: str) -> dict[str, str]:
    raw = rq.field(body, key, dict, {})
    for filename, digest in raw.items():
        if not isinstance(digest, str):
            raise InvalidRequest(f"{key}.{filename} must be a digest string", field=f"{key}.{filename}")
    return dict(raw)


def _license(body: dict[str, Any]) -> tuple[str, ...] | None:
    value = body.get("license")
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InvalidRequest("license must be a string or a list of strings", field="license")


def to_create_request(body: dict[str, Any]) -> CreateRequest:
    """Ollama's create body: `model`, `from` or `files`, and the layers of the model's own."""
    name = rq.model_name(body, "model" if body.get("model") is not None or body.get("name") is None else "name")
    if body.get("modelfile"):
        raise InvalidRequest(
            "modelfile is the old form of create: send from/files/parameters/... (localllm create -f does)",
            field="modelfile",
        )
    if body.get("quantize"):
        raise InvalidRequest("quantize is not supported: pull the quantization you want", field="quantize")
    return CreateRequest(
        model=name,
        from_=rq.field(body, "from", str),
        files=_files(body, "files"),
        adapters=_files(body, "adapters"),
        template=rq.field(body, "template", str),
        system=rq.field(body, "system", str),
        parameters=parse_options(body["parameters"], field="parameters") if body.get("parameters") else None,
        messages=_messages(body) if body.get("messages") is not None else None,
        license=_license(body),
    )


@guarded(ERRORS)
async def create_model(request: Request) -> Response:
    body = await rq.read_json(request)
    req = to_create_request(body)
    stream = rq.field(body, "stream", bool, True)

    async def lines() -> AsyncGenerator[dict[str, Any], None]:
        async with contextlib.aclosing(create(service_of(request), req)) as progress:
            async for step in progress:
                yield step.as_dict()

    return await stream_or_whole(lines(), request, stream=stream)


routes = [
    Route("/api/blobs/{digest}", blob_exists, methods=["HEAD"]),
    Route("/api/blobs/{digest}", upload_blob, methods=["POST"]),
    Route("/api/create", create_model, methods=["POST"]),
]
