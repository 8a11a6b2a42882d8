"""Run the daemon: logging, the app, uvicorn on `LOCALLLM_HOST`, clean shutdown on SIGINT/SIGTERM, and
systemd's notifications (READY=1 once it listens, STOPPING=1 when it stops) for a `Type=notify` unit.

No connection holds a file descriptor for long without sending a request (issue 26, finding 4): uvicorn closes a
kept-alive connection idle for `KEEP_ALIVE_SECONDS`, but has no bound on the time to a request's headers, so a
connection that sends nothing, or drips its headers a byte at a time (slowloris), stayed open for ever, and
1,100 of them used up the 1,024 files a systemd unit may open by default. `_GuardedProtocol` (uvicorn's httptools
protocol) closes a connection whose request line and headers are not all in within `HEADER_SECONDS` of its
opening or of its last answer (1 s for a connection past the cap), and one whose body comes slower than
`BODY_MIN_RATE` after `BODY_SECONDS` (the time the daemon holds the body back, reading it slowly or before
`100 Continue`, does not count). Past `LOCALLLM_MAX_CONNECTIONS` open connections (or requests in progress)
uvicorn answers 503 (plain text, `Connection: close`: before routing, in no dialect's shape), and the log says
so once each time the cap is reached. The soft limit of open files is raised to the hard one at start, and the
cap lowered to fit under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import math
import os
import resource
import socket
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from . import __version__
from .config import Settings
from .config.values import HostAddress
from .domain.errors import AddressInUse, ConfigError
from .domain.limits import BODY_MIN_RATE, BODY_SECONDS, FD_RESERVE, HEADER_SECONDS, KEEP_ALIVE_SECONDS
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


@dataclass
class Connections:
    """What every connection shares: the cap (LOCALLLM_MAX_CONNECTIONS), the time a request's headers get, and
    whether the cap's log line was written for this time it was reached."""

    cap: int
    header_seconds: float = HEADER_SECONDS
    body_seconds: float = BODY_SECONDS
    body_rate: float = BODY_MIN_RATE
    at_cap: bool = False
    refused: int = 0  # requests answered 503 since the cap was reached

    def over(self, connections: int, requests: int) -> bool:
        return connections > self.cap or requests > self.cap

    def refusing(self, connections: int) -> None:
        self.refused += 1
        if not self.at_cap:
            self.at_cap = True
            log.warning(
                "%d connections open, past LOCALLLM_MAX_CONNECTIONS (%d): new requests get 503 until some close",
                connections,
                self.cap,
            )

    def closed(self, connections: int) -> None:
        if self.at_cap and connections < self.cap * 0.9:
            log.info(
                "connections back under LOCALLLM_MAX_CONNECTIONS (%d open); %d requests were refused meanwhile",
                connections,
                self.refused,
            )
            self.at_cap, self.refused = False, 0


class _GuardedProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol (httptools), with a deadline on each request's line and headers, and a least rate
    for its body (see the module)."""

    guard: Connections  # set on the subclass `guarded_protocol` makes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._body_due: float | None = None  # while a body comes: when it must be in, on the loop's clock
        self._body_checked = 0.0

    def _start_clock(self, seconds: float, then: Callable[[], None] | None = None) -> None:
        self._stop_clock()
        self._deadline = self.loop.call_later(seconds, then or self._too_slow)

    def _stop_clock(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        over = self.guard.over(len(self.connections), 0)
        self._start_clock(min(1.0, self.guard.header_seconds) if over else self.guard.header_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        super().connection_lost(exc)
        self.guard.closed(len(self.connections))

    def on_headers_complete(self) -> None:
        self._stop_clock()
        if self.guard.over(len(self.connections), len(self.tasks)):  # uvicorn answers 503 (limit_concurrency)
            self.guard.refusing(len(self.connections))
        super().on_headers_complete()
        self._body_checked = self.loop.time()
        self._body_due = self._body_checked + self.guard.body_seconds
        self._start_clock(self.guard.body_seconds, self._body_check)

    def on_body(self, body: bytes) -> None:
        if self._body_due is not None:
            self._body_due += len(body) / self.guard.body_rate
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._body_due is not None:  # the body is in (else the clock is the next request's, left running)
            self._body_due = None
            self._stop_clock()
        super().on_message_complete()

    def _body_check(self) -> None:
        self._deadline = None
        if self._body_due is None:
            return
        now = self.loop.time()
        if self.flow.read_paused or (self.cycle is not None and self.cycle.waiting_for_100_continue):
            self._body_due += now - self._body_checked  # the daemon holds the body back, not the client
        self._body_checked = now
        if now < self._body_due:
            self._start_clock(self._body_due - now, self._body_check)
        else:
            self._too_slow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:  # waiting for the next request's headers
            self._body_due = None  # (a body still coming after its answer is the next headers' time)
            self._start_clock(self.guard.header_seconds)


def guarded_protocol(guard: Connections) -> type[HttpToolsProtocol]:
    """The protocol class uvicorn makes each connection's protocol from, sharing `guard`."""
    return type("GuardedProtocol", (_GuardedProtocol,), {"guard": guard})


def open_files() -> int:
    """Raise the soft limit of open files to the hard one (logged); the limit then."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("open files: could not raise the limit from %d to %d: %s", soft, target, exc)
            return soft
        log.info("open files: limit raised from %d to %d", soft, target)
        return target
    return soft if soft != resource.RLIM_INFINITY else target


def connection_cap(wanted: int, files: int) -> int:
    """LOCALLLM_MAX_CONNECTIONS, lowered (and logged) so that the connections leave `FD_RESERVE` files free."""
    fits = max(1, files - FD_RESERVE)
    if wanted <= fits:
        return wanted
    log.warning(
        "LOCALLLM_MAX_CONNECTIONS=%d lowered to %d: the daemon may open only %d files (raise LimitNOFILE or ulimit -n)",
        wanted,
        fits,
        files,
    )
    return fits


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
    guard = Connections(connection_cap(settings.max_connections, open_files()))
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        http=guarded_protocol(guard),
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        limit_concurrency=guard.cap + 1,  # uvicorn counts this connection too: `cap` connections are served
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
