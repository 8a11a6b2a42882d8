"""Hugging Face TGI's API: `POST /generate` (through `compat.py`), `/generate_stream`, `POST /`, `GET /info`,
`GET /health`; errors `{"error", "error_type"}` with 422, 424 or 429.

`wire.py` declares the request body, `replies.py` the answers, `requests.py` translates the body (pure
functions), `regex_grammar.py` turns a `regex` grammar into GBNF, `api.py` holds the routes, the encoders and
the paths of the OpenAPI document.
"""

from __future__ import annotations

from ..contract import Dialect
from . import api, replies, wire

DIALECT = Dialect("tgi", api.routes, api.ERRORS, api.paths, wire=wire.MODELS, replies=replies.MODELS)
