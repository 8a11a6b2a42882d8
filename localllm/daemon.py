"""Run the daemon: logging, the app, uvicorn on `LOCALLLM_HOST`, clean shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import logging

import uvicorn

from . import __version__
from .config import Settings
from .server.app import create_app

log = logging.getLogger("localllm")


def serve(settings: Settings) -> None:
    """Serve until interrupted; loaded runners are stopped on the way out."""
    logging.basicConfig(
        level=logging.DEBUG if settings.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log.info("localllm %s listening on %s, models in %s", __version__, settings.host.base_url, settings.models_dir)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host.host,
        port=settings.host.port,
        log_level="debug" if settings.debug else "warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()
