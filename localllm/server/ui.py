"""The web chat page: the static files in `ui_static/` served at `/ui/`, under a strict Content-Security-Policy.

    /ui            → 307 to /ui/
    /ui/           index.html
    /ui/<file>     app.js, chat.js, app.css, … (GET and HEAD only; anything else under /ui/ is a 404)

The page is plain HTML, CSS and JavaScript modules shipped in the package (no CDN, no build step). It calls
the daemon's own Ollama API from the same origin, so the host check and CORS rules apply to it as to any
client; the files themselves are open to all (server/auth.py), since the page must load to ask for a key.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

PATH = "/ui"
FILES = Path(__file__).with_name("ui_static")

# Nothing but the daemon's own files and API: no inline script or style, no other origin, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (ETag), so an upgraded daemon serves its new page at once
}


class _Files(StaticFiles):
    """Starlette's static files, with the page's security headers on every answer."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


async def _to_slash(request: Request) -> Response:
    return RedirectResponse("ui/", status_code=307)  # relative: right behind a proxy that adds a prefix too


# check_dir=False: an install without the page's files still starts the daemon (and /ui/ answers 404).
routes = [
    Route(PATH, _to_slash, methods=["GET", "HEAD"]),
    Mount(PATH, app=_Files(directory=FILES, html=True, check_dir=False), name="ui"),
]
