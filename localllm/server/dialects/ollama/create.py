"""Ollama's model-building routes: `HEAD|POST /api/blobs/{digest}` and `POST /api/create`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ....modelstore.store import check_digest
from ....service.create import create
from ... import requests as rq
from ...errors import guarded
from ..shared import service_of
from . import wire
from .api import ERRORS, stream_or_whole
from .requests import to_create_request


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


@guarded(ERRORS)
async def create_model(request: Request) -> Response:
    body = await rq.read_wire(request, wire.CreateBody)
    req = to_create_request(body)
    stream = body.stream

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
