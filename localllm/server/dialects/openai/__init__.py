"""OpenAI's API (`/v1/*`): SSE streams ending in `data: [DONE]`, `{"error": {message, type, param, code}}` bodies.

`requests.py` translates bodies onto the service's requests (pure functions); `api.py` the routes and
encoders; `embed.py` the embeddings; `openapi.py` the paths of the OpenAPI document. A `/v1/` path that no
route serves answers in this shape.
"""

from __future__ import annotations

from ..contract import Dialect
from . import api, embed, openapi

DIALECT = Dialect("openai", (*api.routes, *embed.routes), api.ERRORS, openapi.paths, prefix="/v1/")
