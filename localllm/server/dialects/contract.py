"""The dialect contract: what one wire format declares, in one place, for the app to be built from.

A dialect is a module (or sub-package) under `server/dialects/` that ends with one `DIALECT = Dialect(...)`:
its routes, its error shape (body and statuses, used by its handlers through `errors.guarded` and by the
middleware for the paths it owns), its OpenAPI paths, and its wire models (`wire`: the request bodies its
paths name with `wire.request_body`, and `replies`: its answers' models, which its paths name with
`replies.responses`; the OpenAPI document carries the schemas of both). Its request parsing and
its encoders live in the same package; `docs/dialects.md` has the recipe for a new one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.routing import BaseRoute, Route

from ..errors import ErrorShape


def no_paths() -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Dialect:
    name: str
    routes: Sequence[BaseRoute]
    errors: ErrorShape
    paths: Callable[[], dict[str, Any]] = no_paths  # its part of the OpenAPI document
    prefix: str | None = None  # a path under it that no route serves (a 404) is answered in this shape
    wire: Sequence[type[msgspec.Struct]] = ()  # its request bodies' models (server/wire.py)
    replies: Sequence[Any] = ()  # its answers' models (server/replies.py), or types holding them

    def serves(self, path: str, method: str | None = None) -> bool:
        """Whether one of its routes takes `path` (with `method`, when given)."""
        for route in self.routes:
            if not isinstance(route, Route) or not route.path_regex.match(path):
                continue
            if method is None or route.methods is None or method in route.methods:
                return True
        return False
