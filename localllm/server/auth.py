"""Authentication middleware (API keys, app access tokens) and the token endpoint for apps.

When authentication is on (LOCALLLM_API_KEYS, or a keys file: see `localllm/auth/`), every request but
the open ones (`GET /`, `/api/version`, `/health`, `/openapi.json`, the token endpoint) carries a key or an
access token, in the first of these places that it has:

    Authorization: Bearer <key or token>      what the openai and ollama packages send
    x-api-key: <key or token>                 Anthropic-style clients
    ?accessToken=<key or token>               gateway-style, for clients that cannot set headers

`GET /api/v1/token?appid=…&secret=…` trades a registered app's secret for a short-lived access token.
The request's principal is made current (`principal.acting_as`, `quota.metering`): the service counts its
tokens against it, and what it keeps (sessions, stored responses) belongs to it.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..auth.authenticator import Authenticator
from ..auth.principal import acting_as
from ..auth.quota import metering
from ..domain.errors import InvalidRequest, Unauthorized
from .security import ShapeOf, reject

TOKEN_PATH = "/api/v1/token"
# Paths anyone may GET (or HEAD): liveness and version checks, and the token endpoint (it checks secrets);
# and the web page's files (server/ui.py), which must load to ask for a key.
OPEN_PATHS = frozenset({"/", "/api/version", "/health", "/openapi.json", TOKEN_PATH, "/ui"})
OPEN_PREFIX = "/ui/"


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIX)


def credential_of(scope: Scope) -> str | None:
    """The key or token a request carries (see the module docstring), or None."""
    headers = Headers(scope=scope)
    authorization = headers.get("authorization", "").strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <key>'")
        return value.strip()
    api_key = headers.get("x-api-key", "").strip()
    if api_key:
        return api_key
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    tokens = [t.strip() for t in query.get("accessToken", []) if t.strip()]
    return tokens[0] if tokens else None


class Auth:
    """Let a request through only with a valid key or access token, while authentication is on."""

    def __init__(self, app: ASGIApp, *, authenticator: Authenticator, errors: ShapeOf) -> None:
        self.app = app
        self.errors = errors
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] not in {"http", "websocket"}
            or (scope.get("method") in {"GET", "HEAD"} and _is_open(scope["path"]))
            or not self.authenticator.enabled
        ):
            await self.app(scope, receive, send)
            return
        try:
            principal = self.authenticator.authenticate(credential_of(scope))
        except Unauthorized as exc:
            await reject(scope, receive, send, exc, self.errors)
            return
        with acting_as(principal), metering(self.authenticator.quotas):
            await self.app(scope, receive, send)


async def token(request: Request) -> Response:
    """Issue an access token to a registered app that proves its secret."""
    authenticator: Authenticator = request.app.state.authenticator
    try:
        appid = _param(request, "appid")
        secret = _param(request, "secret")
        issued = authenticator.issue_token(appid, secret)
    except (InvalidRequest, Unauthorized) as exc:
        errors: ShapeOf = request.app.state.shape_of
        return errors(request.url.path, request.method).response(exc)
    return JSONResponse(
        {
            "access_token": issued.token,
            "token_type": "Bearer",
            "expires_in": int(authenticator.token_ttl),
            "expires_at": issued.expires_at,
        },
        headers={"Cache-Control": "no-store"},
    )


def _param(request: Request, name: str) -> str:
    value = request.query_params.get(name, "").strip()
    if not value:
        raise InvalidRequest(f"{name} is required (GET {TOKEN_PATH}?appid=…&secret=…)", field=name)
    return value


routes = [Route(TOKEN_PATH, token, methods=["GET"])]
