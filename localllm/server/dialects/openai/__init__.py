"""OpenAI's API (`/v1/*`): SSE streams ending in `data: [DONE]`, `{"error": {message, type, param, code}}` bodies.

`wire.py` declares the request bodies (parsing, checks and OpenAPI schemas come from it), `replies.py` the
answers (built by the encoders, their OpenAPI schemas generated from them); `requests.py` translates them
onto the service's requests (pure functions); `api.py` the routes, encoders and OpenAPI paths; `embed.py` the
embeddings. A `/v1/` path that no route serves answers in this shape.

Every route also answers without the `/v1` prefix (`/chat/completions`, `/completions`, `/models`,
`/embeddings`), as llama-server serves them, for clients configured with a bare base URL (docs/compat.md);
the OpenAPI document lists the `/v1/` paths only.
"""

from __future__ import annotations

from starlette.routing import Route

from ..contract import Dialect
from . import api, embed, replies, wire

PREFIX = "/v1"
_ROUTES = (*api.routes, *embed.routes)
BARE = tuple(
    Route(r.path.removeprefix(PREFIX), r.endpoint, methods=sorted(r.methods or ()))
    for r in _ROUTES
    if r.path.startswith(PREFIX + "/")
)

DIALECT = Dialect(
    "openai", (*_ROUTES, *BARE), api.ERRORS, api.paths, prefix="/v1/", wire=wire.MODELS, replies=replies.MODELS
)
