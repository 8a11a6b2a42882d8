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
from starlette.responses import JSONResponse, Response

from ..config import Settings
from ..keys import Authenticator
from ..runner.process import RunnerProcess
from ..scheduler import Scheduler
from ..service import Service
from ..sessions import Sessions
from ..store import Store
from . import auth, compat_api, create_api, embed_api, ollama_api, openai_api, openapi, security
from .errors import message_of

log = logging.getLogger("localllm.server")


def create_app(settings: Settings, *, service: Service | None = None) -> Starlette:
    """The daemon's ASGI app; pass `service` to drive it with other collaborators (tests)."""
    authenticator = Authenticator(settings.keys_file, settings.api_keys, token_ttl=settings.token_ttl)

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
            removed = svc.store.prune()
            problem = None if os.access(svc.store.blobs_dir, os.W_OK) else "read-only or no write permission"
        except OSError as exc:
            removed, problem = [], str(exc)
        if problem:
            log.warning(
                "model store %s is not writable (%s): pulls, creates and deletes will fail", svc.store.root, problem
            )
        if removed:
            log.info("pruned %d unused blobs", len(removed))
        await svc.scheduler.start()
        app.state.service = svc
        app.state.sessions = Sessions(svc)  # LMDeploy's interactive sessions
        security.announce(settings.host, authenticator)
        try:
            yield
        finally:
            if own:
                await svc.close()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path.startswith("/v1/"):
            kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
            return JSONResponse(
                {"error": {"message": exc.detail, "type": kind, "param": None, "code": None}},
                status_code=exc.status_code,
            )
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    async def server_error(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": message_of(exc)}, status_code=500)

    app = Starlette(
        routes=[
            *ollama_api.routes,
            *create_api.routes,
            *openai_api.routes,
            *embed_api.routes,
            *auth.routes,
            *compat_api.routes,
            *openapi.routes,
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        middleware=[  # outermost first: security.py's docstring draws the order
            Middleware(security.HostCheck, bound=settings.host.host, port=settings.host.port),
            Middleware(security.Cors, origins=settings.origins),
            Middleware(auth.Auth, authenticator=authenticator),
        ],
        lifespan=lifespan,
    )
    app.state.authenticator = authenticator
    app.state.max_body = settings.max_body
    return app
