"""Run the daemon: logging, the app, uvicorn on `LOCALLLM_HOST`, clean shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import urllib.request

import uvicorn

from . import __version__
from .config import HostAddress, Settings
from .errors import AddressInUse, ConfigError
from .server.app import create_app

log = logging.getLogger("localllm")


def serve(settings: Settings) -> None:
    """Serve until interrupted; loaded runners are stopped on the way out.

    The address is taken first, before the store is touched: a second daemon started by mistake on a busy
    port fails at once and leaves the first one's store alone.
    """
    logging.basicConfig(
        level=logging.DEBUG if settings.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not settings.debug:  # one INFO line per HTTP request of a pull (httpx's) is noise: keep it for debug
        for name in ("httpx", "httpx2", "httpcore", "huggingface_hub"):
            logging.getLogger(name).setLevel(logging.WARNING)
    sock = listen(settings.host)
    log.info("localllm %s listening on %s, models in %s", __version__, settings.host.base_url, settings.models_dir)
    config = uvicorn.Config(
        create_app(settings),
        log_level="debug" if settings.debug else "warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def listen(address: HostAddress, *, variable: str = "LOCALLLM_HOST") -> socket.socket:
    """A socket bound to `address` and listening; `ConfigError` for a name that does not resolve,
    `AddressInUse` when something listens there already (saying whether it is another localllm)."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET  # as uvicorn chooses
    try:
        socket.getaddrinfo(address.host, address.port, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(
            f"{variable}: no such host {address.host!r}: the name does not resolve ({exc.strerror}); "
            "use an address such as 127.0.0.1:11434 or 0.0.0.0:11434"
        ) from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address.host, address.port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            if _is_localllm(address):
                raise AddressInUse(
                    f"another localllm is already listening on {address.base_url}: use it, stop it first, "
                    f"or set {variable} to another address"
                ) from None
            raise AddressInUse(
                f"{address.base_url} is already in use by another program: stop it, or set {variable} to another "
                "address"
            ) from None
        raise ConfigError(f"{variable}: cannot listen on {address.base_url}: {exc.strerror}") from None
    return sock


def _is_localllm(address: HostAddress) -> bool:
    """Whether what listens at `address` answers `GET /` as a localllm daemon does."""
    host = "127.0.0.1" if address.host in {"0.0.0.0", ""} else "[::1]" if address.host == "::" else address.host
    url = f"http://{f'[{host}]' if ':' in host and not host.startswith('[') else host}:{address.port}/"
    with contextlib.suppress(OSError, ValueError):
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an http_proxy
        with direct.open(url, timeout=2) as answer:
            return bool(answer.read(64).startswith(b"localllm is running"))
    return False
