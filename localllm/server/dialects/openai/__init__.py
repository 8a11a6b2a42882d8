"""OpenAI's API (`/v1/*`): SSE streams ending in `data: [DONE]`, `{"error": {message, type, param, code}}` bodies.

`wire.py` declares the request bodies (parsing, checks and OpenAPI schemas come from it); `requests.py`
translates them onto the service's requests (pure functions); `api.py` the routes, encoders and OpenAPI
paths; `embed.py` the embeddings. A `/v1/` path that no route serves answers in this shape.
"""

from __future__ import annotations

from ..contract import Dialect
from . import api, embed, wire

DIALECT = Dialect("openai", (*api.routes, *embed.routes), api.ERRORS, api.paths, prefix="/v1/", wire=wire.MODELS)
