"""Ollama's native API (`/api/*`): NDJSON streams, `{"error": ...}` bodies, durations in nanoseconds.

`wire.py` declares the request bodies (parsing, checks and OpenAPI schemas come from it), `replies.py` the
answers (their OpenAPI schemas); `requests.py`
translates them onto the service's requests; `encode.py` turns events into Ollama's objects; `api.py` has
generate, chat, the model routes and the OpenAPI paths; `create.py` blobs and create; `embed.py` the
embeddings; `verify.py` the store's check of its blobs. Paths no other dialect serves answer in this shape.
"""

from __future__ import annotations

from ..contract import Dialect
from . import api, create, embed, replies, verify, wire

DIALECT = Dialect(
    "ollama",
    (*api.routes, *create.routes, *embed.routes, *verify.routes),
    api.ERRORS,
    api.paths,
    wire=wire.MODELS,
    replies=replies.MODELS,
)
