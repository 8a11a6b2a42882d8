"""Ollama's native API (`/api/*`): NDJSON streams, `{"error": ...}` bodies, durations in nanoseconds.

`api.py` generate, chat and the model routes; `create.py` blobs and create; `embed.py` the embeddings;
`verify.py` the store's check of its blobs; `openapi.py` the paths of the OpenAPI document. Paths no other
dialect serves answer in this shape.
"""

from __future__ import annotations

from ..contract import Dialect
from . import api, create, embed, openapi, verify

DIALECT = Dialect("ollama", (*api.routes, *create.routes, *embed.routes, *verify.routes), api.ERRORS, openapi.paths)
