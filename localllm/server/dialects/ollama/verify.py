"""`POST /api/verify` (localllm's own, in Ollama's style): hash the store's blobs again, one NDJSON line a blob.

{"model": "<name>"}          only that model's blobs (404 when there is none); without it, every model's
{"stream": false}            one object: the summary with every blob's line under "blobs"

{"status": "ok", "digest": "sha256:…", "size": 1185376, "models": ["hf.co/…:latest"]}
{"status": "damaged", "digest": …, "size": …, "models": […], "problem": "the blob … hashes to …; moved aside"}
{"status": "success" | "damaged", "checked": 3, "damaged": ["hf.co/…:latest"]}     last: the damaged models
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ....service.verify import BlobCheck, verify
from ... import requests as rq
from ...errors import guarded
from ...streaming import EventStream, ndjson_line, until_disconnect
from ..shared import service_of
from . import wire
from .api import ERRORS, ollama_error


def blob_line(check: BlobCheck) -> dict[str, Any]:
    line: dict[str, Any] = {
        "status": "ok" if check.problem is None else "damaged",
        "digest": check.digest,
        "size": check.size,
        "models": list(check.models),
    }
    if check.problem is not None:
        line["problem"] = check.problem
    return line


@guarded(ERRORS)
async def verify_blobs(request: Request) -> Response:
    body = await rq.read_wire(request, wire.VerifyBody)
    name = rq.name_of(body.model) if body.model else None
    stream = body.stream
    service = service_of(request)
    if name is not None:
        service.store.get(name)  # a model that is not there is a 404 before the stream starts

    async def lines() -> AsyncGenerator[dict[str, Any], None]:
        checked, damaged = 0, set[str]()
        async with contextlib.aclosing(verify(service, name)) as checks:
            async for check in checks:
                checked += 1
                if check.problem is not None:
                    damaged.update(check.models)
                yield blob_line(check)
        yield {"status": "damaged" if damaged else "success", "checked": checked, "damaged": sorted(damaged)}

    if stream:
        return EventStream(lines(), frame=ndjson_line, on_error=ollama_error, media_type="application/x-ndjson")

    async def whole() -> dict[str, Any]:
        every = [line async for line in lines()]
        return {**every[-1], "blobs": every[:-1]}

    return JSONResponse(await until_disconnect(whole(), request))


routes = [Route("/api/verify", verify_blobs, methods=["POST"])]
