"""Build the Starlette application: routes of every dialect, error handlers, and state from a lifespan."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from ..auth.authenticator import Authenticator
from ..config import Settings
from ..domain.errors import StoreUnwritable
from ..modelstore.store import Store
from ..observability import metrics
from ..runner.process import RunnerProcess
from ..scheduling.scheduler import Scheduler
from ..service.core import Service
from ..service.sessions import Sessions
from . import auth, dialects, observe, openapi, security, streaming, ui
from .bodydecoder import BodyDecoder
from .errors import RouteError

log = logging.getLogger("localllm.server")


def create_app(settings: Settings, *, service: Service | None = None) -> Starlette:
    """The daemon's ASGI app; pass `service` to drive it with other collaborators (tests)."""
    authenticator = Authenticator(
        settings.keys_file, settings.api_keys, required=settings.keys_file_required, token_ttl=settings.token_ttl
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own = service is None
        svc = service or Service(
            settings,
            Store(settings.models_dir),
            Scheduler(
                max_loaded=settings.max_loaded_models,
                max_queue=settings.max_queue,
                factory=functools.partial(RunnerProcess.start, hang_timeout=settings.runner_timeout),
            ),
        )
        try:  # a read-only store (a shared volume) serves what it holds; writes fail, naming it
            svc.store.ensure()
            removed = svc.store.attach()  # None: another daemon serves this store, so nothing is pruned
            problem = None if os.access(svc.store.blobs_dir, os.W_OK) else "read-only or no write permission"
        except (OSError, StoreUnwritable) as exc:
            removed, problem = [], str(exc)
        if problem:
            log.warning(
                "model store %s is not writable (%s): pulls, creates and deletes will fail", svc.store.root, problem
            )
        if removed is None:
            log.info("another localllm serves the model store %s too: not pruning it", svc.store.root)
        elif removed:
            log.info("pruned %d unused blobs", len(removed))
        await svc.scheduler.start()
        if settings.metrics:
            metrics.enable().watch_scheduler(svc.scheduler.usage)
        app.state.service = svc
        app.state.sessions = Sessions(svc)  # LMDeploy's interactive sessions
        security.announce(settings.host, authenticator)
        try:
            yield
        finally:
            await app.state.body_decoder.close()
            svc.store.detach()
            if own:
                await svc.close()

    async def http_error(request: Request, exc: Exception) -> Response:
        """Starlette's 404 (no such path) and 405 (not with this method), in the path's dialect."""
        assert isinstance(exc, HTTPException)
        shape = dialects.shape_of(request.url.path, request.method)
        return shape.response(RouteError(exc.detail, exc.status_code))

    async def server_error(request: Request, exc: Exception) -> Response:
        return dialects.shape_of(request.url.path, request.method).response(exc)

    app = Starlette(
        routes=[
            *dialects.routes(),
            *auth.routes,
            *openapi.routes,
            *ui.routes,  # the web chat page at /ui/
            *(observe.routes if settings.metrics else []),  # GET /metrics
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        middleware=[  # outermost first: security.py's docstring draws the order
            # a request id for every answer and log line, access lines (INFO in JSON logs, else DEBUG)
            Middleware(
                observe.RequestIds,
                access_level=logging.INFO if settings.log_format == "json" else logging.DEBUG,
                replica=settings.replica,
                strict_fields=settings.strict_fields,
            ),
            Middleware(security.HostCheck, bound=settings.host.host, port=settings.host.port, errors=dialects.shape_of),
            Middleware(security.Cors, origins=settings.origins, errors=dialects.shape_of),
            Middleware(auth.Auth, authenticator=authenticator, errors=dialects.shape_of),
        ],
        lifespan=lifespan,
    )
    app.state.authenticator = authenticator
    app.state.shape_of = dialects.shape_of
    app.state.max_body = settings.max_body
    app.state.body_decoder = BodyDecoder()  # large bodies decoded off the event loop (server/wire.py)
    return app


def begin_shutdown(app: Starlette) -> None:
    """The daemon stops (SIGTERM): requests not yet answering get 503 at once, so that a load balancer retries
    them on another replica (docs/scale-out.md), and streams cut short from now on end with an error line
    saying so. The listening socket closes too (uvicorn), so new connections are refused."""
    streaming.begin_shutdown()
    service: Service | None = getattr(app.state, "service", None)
    if service is not None:
        service.scheduler.stop_taking()
