"""The outermost middleware: a request id for every request, its closing log line, its count in metrics;
and `GET /metrics` (when `LOCALLLM_METRICS=1`).

The id is the request's `X-Request-Id` when it sends a sane one (`logs.begin`), else a new one; it comes
back in the answer's `X-Request-Id` header, whatever the answer (refusals by the middleware inside this one
included), and in every log line written while the request runs. With `LOCALLLM_REPLICA` set, every answer
also names the daemon in `X-Localllm-Replica` (which replica behind a load balancer answered). The request's
field report opens here too (`fieldpolicy.open_report`): the top-level fields it held that were ignored come back in
`X-Localllm-Ignored-Fields`. `/metrics`
sits behind the API key like every other route when authentication is on (Prometheus sends it with
`authorization` in its scrape config).
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..observability import logs, metrics
from . import fieldpolicy
from .dialects import owner

log = logging.getLogger("localllm.http")

HEADER = "x-request-id"
REPLICA_HEADER = "x-localllm-replica"


class RequestIds:
    def __init__(
        self, app: ASGIApp, *, access_level: int = logging.INFO, replica: str = "", strict_fields: bool = False
    ) -> None:
        self.app = app
        self.access_level = access_level
        self.replica = replica
        self.strict_fields = strict_fields

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "")
        request_headers = Headers(scope=scope)
        info, token = logs.begin(request_headers.get(HEADER), owner(path, method).name)
        status = 500
        report, fields = fieldpolicy.open_report(
            strict=self.strict_fields, client=request_headers.get("user-agent", "")
        )

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = MutableHeaders(scope=message)
                headers[HEADER] = info.id
                if self.replica:
                    headers[REPLICA_HEADER] = self.replica
                ignored = fieldpolicy.header(report)
                if ignored:
                    headers[fieldpolicy.HEADER] = ignored
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            metrics.count_request(status, info.model, info.dialect)
            if log.isEnabledFor(self.access_level):
                log.log(
                    self.access_level,
                    "%s %s %d",
                    method,
                    path,
                    status,
                    extra={
                        "method": method,
                        "path": path,
                        "status": status,
                        "duration_ms": round((time.perf_counter() - info.started) * 1000, 3),
                        "prompt_tokens": info.prompt_tokens,
                        "eval_tokens": info.eval_tokens,
                    },
                )
            fieldpolicy.close_report(fields)
            logs.end(token)


async def scrape(request: Request) -> Response:
    active = metrics.active()
    body = active.exposition() if active is not None else b""
    return Response(body, media_type=metrics.CONTENT_TYPE)


routes = [Route("/metrics", scrape, methods=["GET"])]
