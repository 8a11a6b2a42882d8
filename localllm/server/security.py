"""Network safety: the Host check against DNS rebinding, and CORS for browsers (pure ASGI middleware).

A request passes, outermost first:

    HostCheck   bound to loopback: the Host header must name a loopback host (or the bound one)  → 403
    Cors        an Origin header must be a loopback origin, an app origin or in LOCALLLM_ORIGINS → 403;
                preflights (OPTIONS) are answered here; allowed answers get Access-Control-* headers
    Auth        (server/auth.py) API keys and access tokens                                      → 401/429
    routes

Both wrap `send` at most, never the body, so streams flow through untouched. Refusals are JSON in the
dialect that owns the path (`dialects.shape_of`, handed to each middleware by the app).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..auth.authenticator import Authenticator
from ..config.values import HostAddress, is_loopback_name
from ..domain.errors import Forbidden, LocalLLMError
from .errors import ErrorShape

log = logging.getLogger("localllm.server")

# Origins of local apps that browsers-in-apps send, as Ollama allows them (envconfig.AllowedOrigins).
APP_ORIGINS = ("app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*")
# Request headers a browser may send (Ollama's list, plus x-api-key for our auth, and the anthropic package's
# `anthropic-version`, `anthropic-beta`, `anthropic-dangerous-direct-browser-access`).
ALLOWED_HEADERS = (
    "authorization",
    "content-type",
    "user-agent",
    "accept",
    "x-requested-with",
    "openai-beta",
    "x-api-key",
    "x-stainless-*",
    "anthropic-*",
)
ALLOWED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
PREFLIGHT_MAX_AGE = 7200  # seconds; what Chromium caps it at

ShapeOf = Callable[[str, str | None], ErrorShape]  # the error shape of the dialect owning a path (and method)


async def reject(scope: Scope, receive: Receive, send: Send, exc: LocalLLMError, errors: ShapeOf) -> None:
    """Answer with the error's status and body, in the shape of the dialect owning the request's path (a
    websocket is closed before it opens, which the server answers with a 403)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": str(exc)[:120]})
        return
    response = errors(str(scope.get("path", "")), scope.get("method")).response(exc)
    await response(scope, receive, send)


def binds_loopback(host: str) -> bool:
    """Whether listening on `host` listens on loopback only (a name counts when all its addresses do)."""
    if is_loopback_name(host):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return False  # 0.0.0.0, ::, or an address of a network interface
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(is_loopback_name(str(a)) for a in addresses)


def host_of(header: str) -> str:
    """The host in a Host header (`name`, `name:port`, `[v6]:port`), lower-cased, without the port."""
    text = header.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        return text[1:end] if end > 0 else text
    if text.count(":") == 1:
        name, _, port = text.partition(":")
        if port.isdigit() or not port:
            return name
    return text


class HostCheck:
    """Refuse requests whose Host header is not loopback while the daemon listens on loopback only.

    A web page can make its own domain resolve to 127.0.0.1 (DNS rebinding) and then talk to the daemon as
    a same-origin site; its requests still carry its domain in Host, which is how they are told apart.
    Beyond loopback the daemon cannot know its names, and API keys are the guard (as in Ollama).
    """

    def __init__(self, app: ASGIApp, *, bound: str, port: int, errors: ShapeOf) -> None:
        self.app = app
        self.errors = errors
        self.active = binds_loopback(bound)
        self.bound = bound.lower().strip("[]").rstrip(".")
        self.port = port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"} or not self.active:
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("host", "")
        host = host_of(header)
        if not header or is_loopback_name(host) or host.rstrip(".") == self.bound:
            await self.app(scope, receive, send)
            return
        log.warning("refused a request for Host %r (not a loopback name: DNS rebinding?)", header[:200])
        message = (
            f"Host {header[:200]!r} is not allowed: this daemon listens on loopback only and answers requests "
            "addressed to localhost, 127.0.0.1 or [::1] (a guard against DNS rebinding); a reverse proxy should "
            f"send 'Host: localhost:{self.port}'"
        )
        await reject(scope, receive, send, Forbidden(message), self.errors)


def _pattern(origin: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in origin.split("*")))


def is_loopback_origin(origin: str) -> bool:
    """http(s) on localhost, a loopback address or 0.0.0.0, any port (what Ollama allows by default)."""
    try:
        parts = urlsplit(origin)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        return False
    if parts.scheme not in {"http", "https"} or parts.path or parts.query or not parts.hostname:
        return False
    return is_loopback_name(parts.hostname) or parts.hostname == "0.0.0.0"


class Cors:
    """Let browsers on allowed origins call the daemon, and refuse the rest with 403.

    Allowed: loopback origins (`is_loopback_origin`), the app schemes of `APP_ORIGINS`, and `origins`
    (LOCALLLM_ORIGINS, `*` wildcards). Requests without an Origin header are not from a browser's
    cross-site fetch and pass untouched.
    """

    def __init__(self, app: ASGIApp, *, errors: ShapeOf, origins: Sequence[str] = ()) -> None:
        self.app = app
        self.errors = errors
        self.patterns = [_pattern(o) for o in (*APP_ORIGINS, *origins)]

    def allowed(self, origin: str) -> bool:
        origin = origin.strip().lower()
        return is_loopback_origin(origin) or any(p.fullmatch(origin) for p in self.patterns)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        if not self.allowed(origin):
            log.info("refused a request from origin %r", origin[:200])
            message = (
                f"origin {origin[:200]!r} is not allowed to call this daemon: add it to LOCALLLM_ORIGINS "
                "(comma-separated, * wildcards, e.g. chrome-extension://*)"
            )
            await reject(scope, receive, send, Forbidden(message), self.errors)
            return
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(scope, receive, send, origin, headers)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                out = MutableHeaders(scope=message)
                out["Access-Control-Allow-Origin"] = origin
                out.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, scope: Scope, receive: Receive, send: Send, origin: str, headers: Headers) -> None:
        method = headers["access-control-request-method"].strip().upper()
        if method not in ALLOWED_METHODS:
            await reject(
                scope, receive, send, Forbidden(f"method {method!r} is not allowed from a browser"), self.errors
            )
            return
        requested = [h.strip().lower() for h in headers.get("access-control-request-headers", "").split(",")]
        requested = [h for h in requested if h]
        refused = [h for h in requested if not _header_allowed(h)]
        if refused:
            allowed = ", ".join(ALLOWED_HEADERS)
            message = f"request header {refused[0]!r} is not allowed from a browser (allowed: {allowed})"
            await reject(scope, receive, send, Forbidden(message), self.errors)
            return
        answer = Response(
            status_code=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ", ".join(ALLOWED_METHODS),
                "Access-Control-Allow-Headers": ", ".join(requested) if requested else "Content-Type",
                "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE),
                "Vary": "Origin",
            },
        )
        await answer(scope, receive, send)


def _header_allowed(name: str) -> bool:
    return any(name == h or (h.endswith("*") and name.startswith(h[:-1])) for h in ALLOWED_HEADERS)


def announce(host: HostAddress, authenticator: Authenticator) -> None:
    """Log how the daemon is guarded; loudly when it listens beyond loopback with no API keys."""
    log.info("authentication: %s", authenticator.describe())
    if binds_loopback(host.host) or authenticator.enabled:
        return
    log.warning(
        "!!! localllm listens on %s, beyond this machine, WITHOUT API KEYS: anyone who can reach this address "
        "can use and change its models. Set LOCALLLM_API_KEYS or run 'localllm keys create', or listen on "
        "127.0.0.1 !!!",
        host.base_url,
    )
