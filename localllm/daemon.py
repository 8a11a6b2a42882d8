"""Run the daemon: logging, the app, uvicorn on `LOCALLLM_HOST`, clean shutdown on SIGINT/SIGTERM, and
systemd's notifications (READY=1 once it listens, STOPPING=1 when it stops) for a `Type=notify` unit."""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import os
import socket
import urllib.request
from collections.abc import Callable

import uvicorn

from . import __version__
from .config import HostAddress, Settings
from .domain.errors import AddressInUse, ConfigError
from .observability import logs
from .server.app import begin_shutdown, create_app

log = logging.getLogger("localllm")


class _Server(uvicorn.Server):
    """uvicorn's server, telling systemd (`Type=notify`) when it is ready and when it stops, and the app when
    it stops (`on_stop`, before uvicorn waits for the requests in flight)."""

    def __init__(self, config: uvicorn.Config, *, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_stop = on_stop

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            notify("READY=1", f"STATUS=listening on {sock_name(sockets)}")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        notify("STOPPING=1")
        self.on_stop()
        await super().shutdown(sockets)


def notify(*fields: str) -> bool:
    """Send `fields` to systemd's notification socket ($NOTIFY_SOCKET, the sd_notify protocol: one datagram of
    `KEY=value` lines); False when not run by systemd with Type=notify, or when the send fails."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address[0] == "@" else address  # '@': an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall("\n".join(fields).encode())
    except OSError as exc:
        log.warning("could not notify systemd at %s: %s", address, exc)
        return False
    return True


def sock_name(sockets: list[socket.socket] | None) -> str:
    with contextlib.suppress(OSError, IndexError, TypeError):
        host, port = (sockets or [])[0].getsockname()[:2]
        return f"{host}:{port}"
    return "its socket"


def serve(settings: Settings) -> None:
    """Serve until interrupted; loaded runners are stopped on the way out.

    The address is taken first, before the store is touched: a second daemon started by mistake on a busy
    port fails at once and leaves the first one's store alone.
    """
    logs.setup(debug=settings.debug, fmt=settings.log_format)
    if not settings.debug:  # one INFO line per HTTP request of a pull (httpx's) is noise: keep it for debug
        for name in ("httpx", "httpx2", "httpcore", "huggingface_hub"):
            logging.getLogger(name).setLevel(logging.WARNING)
    sock = listen(settings.host)
    log.info("localllm %s listening on %s, models in %s", __version__, settings.host.base_url, settings.models_dir)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        log_level="debug" if settings.debug else "warning",
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        lifespan="on",
        # After SIGTERM (or SIGINT) the socket closes and requests not yet answering get 503 (begin_shutdown:
        # a balancer retries them on another replica); requests in flight get LOCALLLM_SHUTDOWN_GRACE to
        # finish; then the streams still running end with an error line and the runners are stopped. The
        # unit's TimeoutStopSec (install.sh) leaves room for both.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace),
    )
    try:
        _Server(config, on_stop=functools.partial(begin_shutdown, app)).run(sockets=[sock])
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
    # IPPROTO_TCP named, not 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets whose protocol
    # says TCP, and with Nagle on, every answer after the first on a kept-alive connection waited for the
    # client's delayed ACK (40 ms on Linux) between its headers and its body.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
